// Package walship ships a pod's WAL archive to the object store
// (docs/backup.md). PostgreSQL's archive_command (`regent wal-push`) only
// writes the pod's own archive on the data volume, which never fails for
// a store that is down; the leader's instance uploads from there, every
// file once, in parallel when behind, and records what the store holds so
// that wal-push prunes those files first. Followers upload nothing: they
// ask the store which of their files it holds, so that a follower
// promoted while the store was behind still has, and then ships, what its
// old leader had not.
package walship

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/go-logr/logr"
	"golang.org/x/sync/errgroup"

	"github.com/regent-dev/regent/internal/periodic"
	"github.com/regent-dev/regent/replica/api"
	"github.com/regent-dev/regent/replica/objectstore"
	"github.com/regent-dev/regent/replica/walarchive"
)

// WALPrefix is where WAL files live in the store: wal/<name>.zst.
const WALPrefix = "wal/"

// Key is the store's key of the WAL file name.
func Key(name string) string { return WALPrefix + name + ".zst" }

// IdentityKey names the file that binds a store path to one database.
const IdentityKey = "regent.json"

// Identity is what IdentityKey holds.
type Identity struct {
	// SystemIdentifier is the database's (pg_control): WAL of two
	// databases in one path would make both unrecoverable.
	SystemIdentifier string `json:"systemIdentifier"`
	// Cluster is <namespace>/<name> of the ReplicaSet that made it, and
	// ClusterUID its UID: a cluster restored from this path, or recreated
	// under the same name, has the same system identifier, and its
	// timelines would collide with this one's.
	Cluster    string    `json:"cluster,omitempty"`
	ClusterUID string    `json:"clusterUID,omitempty"`
	Created    time.Time `json:"created"`
}

// Status is what the shipper reports (instance's /status, the agent's
// metrics, the ReplicaSet's status).
type Status = api.WALShipping

// Shipper uploads a pod's archive while the pod leads.
type Shipper struct {
	Archive walarchive.Archive
	Store   *objectstore.Store
	// Leads reports whether this pod's PostgreSQL runs as the leader.
	Leads func() bool
	// SystemIdentifier returns the database's, "" while unknown.
	SystemIdentifier func(context.Context) string
	// Cluster is <namespace>/<name> and ClusterUID the ReplicaSet's UID,
	// for the identity file.
	Cluster, ClusterUID string
	// Workers upload in parallel; zero is 4.
	Workers int
	// Every is how often the archive is looked at; zero is 500 ms.
	Every time.Duration
	Log   logr.Logger

	mu       sync.Mutex
	status   Status
	identity string // the system identifier the store was checked for
	wake     chan struct{}
	// checked is when a follower last asked the store about its files.
	checked time.Time
}

// followerEvery spaces a follower's questions to the store: its files are
// shipped by the leader, and it needs to know only before it prunes them.
const followerEvery = 10 * time.Second

// Status returns the shipper's state.
func (s *Shipper) Status() Status {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.status
}

// Wake makes the shipper look at the archive now.
func (s *Shipper) Wake() {
	s.mu.Lock()
	if s.wake == nil {
		s.wake = make(chan struct{}, 1)
	}
	w := s.wake
	s.mu.Unlock()
	select {
	case w <- struct{}{}:
	default:
	}
}

// Run ships until ctx ends.
func (s *Shipper) Run(ctx context.Context) {
	s.Wake()
	s.mu.Lock()
	wake := s.wake
	s.mu.Unlock()
	every := s.Every
	if every <= 0 {
		every = 500 * time.Millisecond
	}
	periodic.Run(ctx, every, wake, s.pass)
}

// pass ships (leader) or checks (follower) every file not yet recorded as
// in the store.
func (s *Shipper) pass(ctx context.Context) {
	files, err := s.Archive.Files()
	if err != nil {
		s.fail(fmt.Errorf("reading the WAL archive: %w", err))
		return
	}
	var todo []walarchive.File
	var bytes int64
	for _, f := range files {
		if !f.Shipped {
			todo = append(todo, f)
			bytes += f.Size
		}
	}
	leading := s.Leads()
	s.mu.Lock()
	s.status.Leading, s.status.Pending, s.status.PendingBytes = leading, len(todo), bytes
	skip := !leading && time.Since(s.checked) < followerEvery
	if !leading && !skip {
		s.checked = time.Now()
	}
	s.mu.Unlock()
	if len(todo) == 0 || skip {
		return
	}
	if leading {
		if err := s.checkIdentity(ctx); err != nil {
			s.fail(err)
			return
		}
	}
	workers := s.Workers
	if workers <= 0 {
		workers = 4
	}
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(workers)
	var mu sync.Mutex
	var errs []error
	for _, f := range todo {
		g.Go(func() error {
			ok, err := s.one(gctx, f, leading)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				errs = append(errs, err)
				return nil
			}
			if ok {
				s.shipped(f)
			}
			return nil
		})
	}
	_ = g.Wait()
	if len(errs) > 0 {
		s.fail(fmt.Errorf("%d of %d files not shipped: %w", len(errs), len(todo), errs[0]))
	}
}

// one ships f, or on a follower checks the store has it; it reports
// whether the store now holds it.
func (s *Shipper) one(ctx context.Context, f walarchive.File, leading bool) (bool, error) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	have, err := s.Store.Stat(ctx, Key(f.Name))
	switch {
	case err == nil:
		if have.RawSize != 0 && have.RawSize != f.Size {
			return false, fmt.Errorf("%s is in the store with %d bytes, not %d: not overwritten", f.Name, have.RawSize, f.Size)
		}
		return true, s.Archive.MarkShipped(f.Name)
	case !errors.Is(err, objectstore.ErrNotFound):
		return false, err
	case !leading:
		return false, nil
	}
	data, err := os.ReadFile(filepath.Join(s.Archive.Dir, f.Name))
	if err != nil {
		return false, err
	}
	if _, err := s.Store.PutSmall(ctx, Key(f.Name), data); err != nil {
		return false, err
	}
	s.Log.V(1).Info("Shipped WAL", "file", f.Name, "bytes", len(data))
	return true, s.Archive.MarkShipped(f.Name)
}

func (s *Shipper) shipped(f walarchive.File) {
	now := time.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	// The newest segment (history files and backup labels sort apart).
	if len(f.Name) == 24 && (s.status.LastShipped == "" || f.Name[8:] > s.status.LastShipped[8:] ||
		f.Name[8:] == s.status.LastShipped[8:] && f.Name > s.status.LastShipped) {
		s.status.LastShipped, s.status.LastShippedAt = f.Name, &now
	}
	s.status.Pending--
	s.status.PendingBytes -= f.Size
	s.status.Error, s.status.FailingSince = "", nil
}

func (s *Shipper) fail(err error) {
	now := time.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.status.Error == "" {
		s.Log.Error(err, "Shipping WAL to the object store failed; retrying")
	}
	s.status.Error = err.Error()
	if s.status.FailingSince == nil {
		s.status.FailingSince = &now
	}
}

// checkIdentity makes sure the store's path is this database's, writing
// the identity file the first time.
func (s *Shipper) checkIdentity(ctx context.Context) error {
	id := s.SystemIdentifier(ctx)
	if id == "" {
		return errors.New("the database's system identifier is not known yet")
	}
	s.mu.Lock()
	done := s.identity == id
	s.mu.Unlock()
	if done {
		return nil
	}
	data, err := s.Store.GetPlain(ctx, IdentityKey)
	switch {
	case errors.Is(err, objectstore.ErrNotFound):
		data, _ = json.Marshal(Identity{SystemIdentifier: id, Cluster: s.Cluster, ClusterUID: s.ClusterUID, Created: time.Now().UTC()})
		if _, err := s.Store.PutPlain(ctx, IdentityKey, data, "application/json"); err != nil {
			return err
		}
	case err != nil:
		return err
	default:
		var have Identity
		if err := json.Unmarshal(data, &have); err != nil {
			return fmt.Errorf("%s in %s: %w", IdentityKey, s.Store.Where(), err)
		}
		if have.SystemIdentifier != id {
			return fmt.Errorf("%s holds the WAL of another database (system identifier %s, cluster %s), not this one's (%s): give this cluster a path of its own",
				s.Store.Where(), have.SystemIdentifier, have.Cluster, id)
		}
		if have.ClusterUID != "" && s.ClusterUID != "" && have.ClusterUID != s.ClusterUID {
			return fmt.Errorf("%s holds the WAL of cluster %s (UID %s), not this one (UID %s): a restored or recreated cluster writes to a path of its own (spec.backup.objectStore.path)",
				s.Store.Where(), have.Cluster, have.ClusterUID, s.ClusterUID)
		}
	}
	s.mu.Lock()
	s.identity = id
	s.mu.Unlock()
	return nil
}
