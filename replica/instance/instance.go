package instance

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/go-logr/logr"
	"github.com/jackc/pgx/v5"
	"k8s.io/utils/clock"

	"github.com/regent-dev/regent/internal/lsn"
	"github.com/regent-dev/regent/internal/names"
	"github.com/regent-dev/regent/replica/api"
	"github.com/regent-dev/regent/replica/objectstore"
	"github.com/regent-dev/regent/replica/walarchive"
	"github.com/regent-dev/regent/replica/walship"
)

// Config is what instance needs to know.
type Config struct {
	// PGData is the data directory.
	PGData string
	// BinDir holds initdb, pg_ctl, postgres, pg_basebackup, pg_rewind.
	BinDir string
	// Major is the PostgreSQL major version of BinDir (e.g. "15").
	Major string
	// ArchiveDir is the pod's WAL archive, which Settings.ArchiveCommand
	// fills; instance serves its files to the agent.
	ArchiveDir string
	// Store, when set, is the cluster's object store: while this pod
	// leads, instance ships the archive there (docs/backup.md).
	Store *objectstore.Store
	// Cluster is <namespace>/<name> and ClusterUID the ReplicaSet's UID,
	// recorded in the store.
	Cluster, ClusterUID string
	// Source is the object store a new cluster is restored from
	// (spec.bootstrap.recovery), and SourceRestoreCommand the
	// restore_command that reads its WAL (`regent wal-restore`).
	Source               *objectstore.Store
	SourceRestoreCommand string
	Settings
	// SuperuserPasswordFile holds the postgres role's password: initdb
	// sets it, and instance logs in with it for status.
	SuperuserPasswordFile string
	// Credential runs PostgreSQL as another user (for tests run as root).
	Credential *syscall.Credential
	// Clock drives the watchdog; nil is the real clock.
	Clock clock.Clock
	Log   logr.Logger
}

// Instance supervises one PostgreSQL data directory.
type Instance struct {
	cfg    Config
	clock  clock.Clock
	log    logr.Logger
	tools  *runner
	ops    sync.Mutex // one operation at a time (initdb, start, stop…)
	mu     sync.Mutex // guards the fields below
	pg     *exec.Cmd
	exited chan struct{}
	role   Role
	// deadline is the watchdog's: a leader past it is stopped at once.
	deadline time.Time
	// fenced says why the last leader was stopped by the watchdog.
	fenced   string
	lastExit string
	// missingWAL is the WAL segment the leader last said it no longer
	// has, as this follower's WAL receiver reported it, and when.
	missingWAL   string
	missingWALAt time.Time
	wake         chan struct{}
	// settings are those PostgreSQL was last started with.
	settings Settings
	// gen counts PostgreSQL's starts and exits; changed is closed at each.
	gen     uint64
	changed chan struct{}
	// systemID is the data's system identifier, once read.
	systemID string
	// shipper uploads the archive while this pod leads; nil without a
	// store.
	shipper *walship.Shipper
	// backup is the last base backup asked for.
	backup *api.BackupProgress
	// life ends when Run returns: background work (a backup) stops.
	life    context.Context
	endLife context.CancelFunc
}

// notify tells WaitChange callers that PostgreSQL started or exited.
func (in *Instance) notify() {
	in.mu.Lock()
	defer in.mu.Unlock()
	in.gen++
	close(in.changed)
	in.changed = make(chan struct{})
}

// WaitChange returns the current generation as soon as it differs from
// gen (PostgreSQL started or exited since), or when ctx ends: the agent
// reacts to a dead PostgreSQL at once instead of at its next pass.
func (in *Instance) WaitChange(ctx context.Context, gen uint64) uint64 {
	in.mu.Lock()
	cur, ch := in.gen, in.changed
	in.mu.Unlock()
	if cur != gen {
		return cur
	}
	select {
	case <-ch:
	case <-ctx.Done():
	}
	in.mu.Lock()
	defer in.mu.Unlock()
	return in.gen
}

// New returns an Instance; it starts nothing.
func New(cfg Config) *Instance {
	c := cfg.Clock
	if c == nil {
		c = clock.RealClock{}
	}
	in := &Instance{
		cfg: cfg, clock: c, log: cfg.Log,
		tools: &runner{binDir: cfg.BinDir, cred: cfg.Credential, log: cfg.Log, children: processChildren,
			env: []string{"PGPASSFILE=/dev/null", "LC_ALL=C.UTF-8"}},
		wake:    make(chan struct{}, 1),
		changed: make(chan struct{}),
	}
	in.life, in.endLife = context.WithCancel(context.Background())
	if cfg.Store != nil {
		in.shipper = &walship.Shipper{
			Archive: walarchive.Archive{Dir: cfg.ArchiveDir, Ship: true},
			Store:   cfg.Store, Cluster: cfg.Cluster, ClusterUID: cfg.ClusterUID, Log: cfg.Log.WithName("walship"),
			Leads: func() bool {
				in.mu.Lock()
				defer in.mu.Unlock()
				return in.role == RoleLeader && in.pg != nil
			},
			SystemIdentifier: in.systemIdentifier,
		}
	}
	return in
}

// systemIdentifier is the data's database system identifier, read once
// from pg_control.
func (in *Instance) systemIdentifier(ctx context.Context) string {
	in.mu.Lock()
	id := in.systemID
	in.mu.Unlock()
	if id != "" {
		return id
	}
	control, err := in.controlData(ctx)
	if err != nil || control == nil {
		return ""
	}
	id = control["Database system identifier"]
	in.mu.Lock()
	in.systemID = id
	in.mu.Unlock()
	return id
}

// Run serves the watchdog and reaps orphans until ctx ends, then stops
// PostgreSQL (fast).
func (in *Instance) Run(ctx context.Context) {
	defer in.endLife()
	reaperOnce.Do(func() { go reapOrphans(context.Background(), processChildren) })
	if in.shipper != nil {
		go in.shipper.Run(ctx)
	}
	go in.pruneWAL(ctx)
	in.watchdog(ctx)
	_, _ = in.Stop(context.Background(), StopFast)
}

// watchdog stops a leader whose deadline passed.
func (in *Instance) watchdog(ctx context.Context) {
	for {
		in.mu.Lock()
		deadline, running := in.deadline, in.role == RoleLeader && in.pg != nil
		in.mu.Unlock()
		var timer clock.Timer
		var fire <-chan time.Time
		if running && !deadline.IsZero() {
			d := deadline.Sub(in.clock.Now())
			if d <= 0 {
				in.fence(fmt.Sprintf("the agent did not refresh the leader's deadline %s", deadline.Format(time.RFC3339Nano)))
				continue
			}
			timer = in.clock.NewTimer(d)
			fire = timer.C()
		}
		select {
		case <-ctx.Done():
		case <-in.wake:
		case <-fire:
		}
		if timer != nil {
			timer.Stop()
		}
		if ctx.Err() != nil {
			return
		}
	}
}

// fence stops PostgreSQL immediately: no commit can be acknowledged any
// more. It does not wait for the operation lock, which a stuck operation
// might hold.
func (in *Instance) fence(why string) {
	in.mu.Lock()
	pg := in.pg
	in.fenced = why
	in.deadline = time.Time{}
	in.mu.Unlock()
	if pg == nil {
		return
	}
	in.log.Info("Watchdog: stopping PostgreSQL at once", "reason", why)
	// SIGQUIT is PostgreSQL's immediate shutdown: every backend exits
	// without waiting for anything.
	_ = pg.Process.Signal(syscall.SIGQUIT)
}

func (in *Instance) poke() {
	select {
	case in.wake <- struct{}{}:
	default:
	}
}

// SetDeadline refreshes the watchdog: a leader may serve writes until t.
func (in *Instance) SetDeadline(t time.Time) error {
	in.mu.Lock()
	defer in.mu.Unlock()
	if in.role != RoleLeader || in.pg == nil {
		return errors.New("no leader is running")
	}
	in.deadline = t
	in.poke()
	return nil
}

// Initdb creates a new cluster in an empty data directory.
func (in *Instance) Initdb(ctx context.Context) error {
	in.ops.Lock()
	defer in.ops.Unlock()
	if err := in.prepareEmptyDir("initdb"); err != nil {
		return err
	}
	_, err := in.tools.run(ctx, 2*time.Minute, "initdb",
		"--pgdata="+in.cfg.PGData, "--username=postgres", "--pwfile="+in.cfg.SuperuserPasswordFile,
		"--auth-local=scram-sha-256", "--auth-host=scram-sha-256", "--data-checksums",
		"--encoding=UTF8", "--locale=C.UTF-8")
	if err != nil {
		// What initdb left half-written is ours (the directory was empty):
		// clear it so that a retry can start over.
		in.clearPartial()
	}
	return err
}

// BaseBackup fills an empty data directory from a leader, through conninfo
// (the local agent's relay socket, in a pod).
func (in *Instance) BaseBackup(ctx context.Context, conninfo string) error {
	in.ops.Lock()
	defer in.ops.Unlock()
	if err := in.prepareEmptyDir("base backup"); err != nil {
		return err
	}
	return in.copyLeader(ctx, conninfo)
}

// copyLeader runs pg_basebackup into the empty data directory; a partial
// copy is ours (the directory was empty), cleared so that a retry can
// start over. The caller holds in.ops.
func (in *Instance) copyLeader(ctx context.Context, conninfo string) error {
	_, err := in.tools.runConninfo(ctx, 6*time.Hour, "pg_basebackup", "--dbname", conninfo,
		"--pgdata="+in.cfg.PGData, "--wal-method=stream", "--checkpoint=fast", "--no-password")
	if err != nil {
		in.clearPartial()
	}
	return err
}

// Rewind makes a diverged data directory follow the leader at conninfo.
func (in *Instance) Rewind(ctx context.Context, conninfo string) error {
	in.ops.Lock()
	defer in.ops.Unlock()
	if in.running() {
		return errors.New("rewind: PostgreSQL is running; stop it first")
	}
	if _, err := inspect(in.cfg.PGData, in.cfg.Major); err != nil {
		return err
	}
	if _, err := removeStaleLockFiles(in.lockFiles()...); err != nil {
		return fmt.Errorf("rewind: %w", err)
	}
	// Data that needs crash recovery is recovered by pg_rewind itself, in
	// single-user mode, which refuses standby mode: a follower start that
	// failed leaves standby.signal behind. The next start writes the
	// signal its role needs.
	for _, signal := range []string{"standby.signal", "recovery.signal"} {
		if err := os.Remove(filepath.Join(in.cfg.PGData, signal)); err != nil && !errors.Is(err, os.ErrNotExist) {
			return err
		}
	}
	_, err := in.tools.runConninfo(ctx, time.Hour, "pg_rewind", "--source-server", conninfo,
		"--target-pgdata="+in.cfg.PGData, "--progress")
	return err
}

// lockFiles are the lock files a postmaster takes (removeStaleLockFiles).
func (in *Instance) lockFiles() []string {
	return []string{filepath.Join(in.cfg.PGData, "postmaster.pid"),
		filepath.Join(in.cfg.SocketDir, fmt.Sprintf(".s.PGSQL.%d.lock", names.PortPostgres))}
}

// StartOptions say how to start PostgreSQL.
type StartOptions struct {
	Role Role `json:"role"`
	// Deadline bounds a leader's writes (the watchdog). Required for a
	// leader.
	Deadline                time.Time `json:"deadline,omitzero"`
	PrimaryConninfo         string    `json:"primaryConninfo,omitempty"`
	PrimarySlotName         string    `json:"primarySlotName,omitempty"`
	SynchronousStandbyNames string    `json:"synchronousStandbyNames,omitempty"`
	// Epoch is the leadership epoch a leader starts: a follower's data
	// started as a leader is promoted onto timeline Epoch.
	Epoch int64 `json:"epoch,omitempty"`
	// SystemIdentifier is the cluster's database system identifier, when
	// recorded: data of another database is never started.
	SystemIdentifier string `json:"systemIdentifier,omitempty"`
}

// Start writes the configuration and starts PostgreSQL, waiting until it
// accepts connections.
func (in *Instance) Start(ctx context.Context, opts StartOptions) error {
	in.ops.Lock()
	defer in.ops.Unlock()
	if in.running() {
		return errors.New("start: PostgreSQL is already running")
	}
	if opts.Role == RoleLeader && !opts.Deadline.After(in.clock.Now()) {
		return errors.New("start: a leader needs a watchdog deadline in the future")
	}
	state, err := inspect(in.cfg.PGData, in.cfg.Major)
	if err != nil {
		return err
	}
	if state != DataReady {
		return fmt.Errorf("start: data directory %s is empty: run initdb or a base backup first", in.cfg.PGData)
	}
	control, err := in.controlData(ctx)
	if err != nil {
		return err
	}
	if id := control["Database system identifier"]; opts.SystemIdentifier != "" && id != opts.SystemIdentifier {
		return &ErrForeignData{Dir: in.cfg.PGData, Why: fmt.Sprintf(
			"it holds database system %s, and this cluster's is %s (another database's data)", id, opts.SystemIdentifier)}
	}
	if removed, err := removeStaleLockFiles(in.lockFiles()...); err != nil {
		return fmt.Errorf("start: %w", err)
	} else if len(removed) > 0 {
		in.log.Info("Removed the lock files of a postmaster that is gone (killed with its container)", "files", removed)
	}
	// Data last written by a follower becomes a leader's only through a
	// promotion, which starts a new timeline. Started as a leader directly
	// it would stay on the old timeline, and a deposed leader's writes on
	// that same timeline would look like history to pg_rewind.
	promoteAfterStart := false
	if state := control["Database cluster state"]; opts.Role == RoleLeader &&
		(state == "in archive recovery" || state == "shut down in recovery") {
		promoteAfterStart = true
		in.log.Info("Starting a follower's data in recovery, to promote it", "state", state)
	}
	s := in.cfg.Settings
	s.Role, s.PrimaryConninfo, s.PrimarySlotName = opts.Role, opts.PrimaryConninfo, opts.PrimarySlotName
	if promoteAfterStart {
		s.Role = RoleFollower
	}
	s.SynchronousStandbyNames = opts.SynchronousStandbyNames
	s.TLSDir = in.installedTLS()
	s.PromotingFile = in.promotingFile()
	if err := os.Remove(s.PromotingFile); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("start: %w", err)
	}
	if err := in.writeConfig(s); err != nil {
		return err
	}
	in.mu.Lock()
	in.settings = s
	in.mu.Unlock()
	cmd := in.tools.command(context.Background(), "postgres", "-D", in.cfg.PGData)
	// PostgreSQL's log goes to the container's output (kubectl logs -c
	// postgres), never to a file on the data volume; the tail since this
	// start is kept to say why a start failed.
	tail := newLogTail(os.Stderr, 256)
	tail.onLine = in.noteLogLine
	in.mu.Lock()
	in.missingWAL, in.missingWALAt = "", time.Time{}
	in.mu.Unlock()
	cmd.Stdout, cmd.Stderr = tail, tail
	if err := in.tools.children.start(cmd); err != nil {
		return fmt.Errorf("start postgres: %w", err)
	}
	exited := make(chan struct{})
	in.mu.Lock()
	in.pg, in.exited, in.role, in.fenced = cmd, exited, s.Role, ""
	if s.Role == RoleLeader {
		in.deadline = opts.Deadline
	}
	in.mu.Unlock()
	in.poke()
	in.notify()
	in.log.Info("Started PostgreSQL", "role", opts.Role, "pid", cmd.Process.Pid)
	go func() {
		err := in.tools.children.wait(cmd)
		in.mu.Lock()
		in.pg, in.deadline = nil, time.Time{}
		in.lastExit = fmt.Sprint(err)
		if err == nil {
			in.lastExit = "exit status 0"
		}
		in.mu.Unlock()
		close(exited)
		in.notify()
		in.log.Info("PostgreSQL exited", "result", in.lastExit)
	}()
	if err := in.waitReady(ctx, exited); err != nil {
		if why := lastFatal(tail.lines()); why != "" {
			return fmt.Errorf("%w: %s", err, why)
		}
		return err
	}
	if promoteAfterStart {
		return in.promote(ctx, opts.Deadline, opts.Epoch, opts.SynchronousStandbyNames)
	}
	return nil
}

// waitReady waits until PostgreSQL answers, or exits.
func (in *Instance) waitReady(ctx context.Context, exited <-chan struct{}) error {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	for {
		conn, err := in.connect(ctx)
		if err == nil {
			_ = conn.Close(ctx)
			return nil
		}
		select {
		case <-exited:
			return fmt.Errorf("postgres exited while starting (%s); see the postgres container's log", in.lastExitText())
		case <-ctx.Done():
			return fmt.Errorf("postgres did not accept connections: %w", err)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// lastFatal returns the last FATAL or PANIC message among PostgreSQL's
// log lines, with its DETAIL and HINT, and before it the lines that name
// the parameters a configuration error is about: why a start failed, in
// the error the agent logs and reports, so that nobody has to search the
// log to learn it.
func lastFatal(lines []string) string {
	var last, parameters []string
	inFatal := false
	for _, line := range lines {
		line = strings.TrimSpace(line)
		switch {
		case strings.Contains(line, "FATAL:") || strings.Contains(line, "PANIC:"):
			_, msg, _ := strings.Cut(line, "] ")
			parameters = append(parameters, strings.Join(strings.Fields(msg), " "))
			last, parameters, inFatal = parameters, nil, true
		case strings.Contains(line, `parameter "`):
			_, msg, _ := strings.Cut(line, "] ")
			parameters, inFatal = append(parameters, strings.Join(strings.Fields(msg), " ")), false
		case inFatal && (strings.Contains(line, "DETAIL:") || strings.Contains(line, "HINT:")):
			_, msg, _ := strings.Cut(line, "] ")
			last = append(last, strings.Join(strings.Fields(msg), " "))
		default:
			inFatal = false
		}
	}
	return strings.Join(last, "; ")
}

func (in *Instance) lastExitText() string {
	in.mu.Lock()
	defer in.mu.Unlock()
	return in.lastExit
}

// Configure changes synchronous_standby_names of the running PostgreSQL:
// it rewrites the configuration and reloads it, and returns once
// PostgreSQL reports the new value.
func (in *Instance) Configure(ctx context.Context, synchronousStandbyNames string) error {
	in.ops.Lock()
	defer in.ops.Unlock()
	in.mu.Lock()
	s := in.settings
	in.mu.Unlock()
	s.SynchronousStandbyNames = synchronousStandbyNames
	err := in.reload(ctx, s, 10*time.Second, func(ctx context.Context) bool {
		got, err := in.showSyncNames(ctx)
		return err == nil && got == synchronousStandbyNames
	})
	if err != nil {
		return fmt.Errorf("configure: %w", err)
	}
	in.log.Info("Configured", "synchronousStandbyNames", synchronousStandbyNames)
	return nil
}

// Files of the pod's key and certificate, in the run directory (memory,
// the pod's own): never on the data volume, which base backups copy.
const (
	tlsDirName  = "tls"
	tlsCertFile = "server.crt"
	tlsKeyFile  = "server.key"
)

func (in *Instance) tlsDir() string { return filepath.Join(in.cfg.SocketDir, tlsDirName) }

// installedTLS is the directory of the key and certificate SetTLS
// installed, or "" when there are none yet.
func (in *Instance) installedTLS() string {
	for _, f := range []string{tlsCertFile, tlsKeyFile} {
		if _, err := os.Stat(filepath.Join(in.tlsDir(), f)); err != nil {
			return ""
		}
	}
	return in.tlsDir()
}

// SetTLS installs the pod's key and certificate for PostgreSQL's TLS,
// readable only by PostgreSQL's user, and reloads a running PostgreSQL:
// a renewed certificate needs no restart.
func (in *Instance) SetTLS(ctx context.Context, certPEM, keyPEM []byte) error {
	if _, err := tls.X509KeyPair(certPEM, keyPEM); err != nil {
		return fmt.Errorf("tls: %w", err)
	}
	in.ops.Lock()
	defer in.ops.Unlock()
	dir := in.tlsDir()
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	c := in.cfg.Credential
	if c != nil {
		if err := os.Chown(dir, int(c.Uid), int(c.Gid)); err != nil {
			return err
		}
	}
	for name, content := range map[string][]byte{tlsCertFile: certPEM, tlsKeyFile: keyPEM} {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p+".tmp", content, 0o600); err != nil {
			return err
		}
		if c != nil {
			if err := os.Chown(p+".tmp", int(c.Uid), int(c.Gid)); err != nil {
				return err
			}
		}
		if err := os.Rename(p+".tmp", p); err != nil {
			return err
		}
	}
	in.mu.Lock()
	s, running := in.settings, in.pg != nil
	in.mu.Unlock()
	if !running {
		return nil
	}
	s.TLSDir = dir
	err := in.reload(ctx, s, 10*time.Second, func(ctx context.Context) bool {
		got, err := in.show(ctx, "ssl")
		return err == nil && got == "on"
	})
	if err != nil {
		return fmt.Errorf("tls: %w", err)
	}
	in.log.Info("Loaded the pod's certificate")
	return nil
}

// reload writes s as the running PostgreSQL's configuration, signals it,
// and waits (up to limit) until taken says the new values are in force.
func (in *Instance) reload(ctx context.Context, s Settings, limit time.Duration, taken func(context.Context) bool) error {
	in.mu.Lock()
	pg := in.pg
	in.mu.Unlock()
	if pg == nil {
		return errors.New("PostgreSQL is not running")
	}
	if err := in.writeConfig(s); err != nil {
		return err
	}
	in.mu.Lock()
	in.settings = s
	in.mu.Unlock()
	if err := pg.Process.Signal(syscall.SIGHUP); err != nil {
		return fmt.Errorf("reload: %w", err)
	}
	ctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	for !taken(ctx) {
		select {
		case <-ctx.Done():
			return errors.New("PostgreSQL did not take the new settings")
		case <-time.After(20 * time.Millisecond):
		}
	}
	return nil
}

func (in *Instance) showSyncNames(ctx context.Context) (string, error) {
	return in.show(ctx, "synchronous_standby_names")
}

// show reads a setting of the running PostgreSQL (name is one of ours,
// never input).
func (in *Instance) show(ctx context.Context, name string) (string, error) {
	conn, err := in.connect(ctx)
	if err != nil {
		return "", err
	}
	defer conn.Close(ctx)
	var v string
	err = conn.QueryRow(ctx, "SELECT current_setting($1)", name).Scan(&v)
	return v, err
}

// StopMode is how to stop PostgreSQL.
type StopMode string

const (
	// StopFast disconnects clients and checkpoints: a clean shutdown.
	StopFast StopMode = "fast"
	// StopImmediate kills every backend at once: crash recovery at the
	// next start.
	StopImmediate StopMode = "immediate"
)

// Stop stops PostgreSQL and returns the final checkpoint's LSN after a
// clean stop (0 after an immediate one).
func (in *Instance) Stop(ctx context.Context, mode StopMode) (lsn.LSN, error) {
	in.mu.Lock()
	pg, exited := in.pg, in.exited
	in.mu.Unlock()
	if pg != nil {
		sig := syscall.SIGINT // fast
		if mode == StopImmediate {
			sig = syscall.SIGQUIT
		}
		in.log.Info("Stopping PostgreSQL", "mode", mode)
		_ = pg.Process.Signal(sig)
		select {
		case <-exited:
		case <-ctx.Done():
			_ = pg.Process.Signal(syscall.SIGQUIT)
			<-exited
		}
	}
	if mode == StopImmediate {
		return 0, nil
	}
	in.ops.Lock()
	defer in.ops.Unlock()
	return in.checkpointLSN(ctx)
}

// checkpointLSN reads the latest checkpoint location from pg_control.
func (in *Instance) checkpointLSN(ctx context.Context) (lsn.LSN, error) {
	control, err := in.controlData(ctx)
	if err != nil || control == nil {
		return 0, err
	}
	if at := control["Latest checkpoint location"]; at != "" {
		return lsn.Parse(at)
	}
	return 0, errors.New("pg_controldata printed no checkpoint location")
}

// controlData reads pg_control (nil when there is no data directory).
func (in *Instance) controlData(ctx context.Context) (map[string]string, error) {
	if state, err := inspect(in.cfg.PGData, in.cfg.Major); err != nil || state != DataReady {
		return nil, err
	}
	out, err := in.tools.run(ctx, 30*time.Second, "pg_controldata", "-D", in.cfg.PGData)
	if err != nil {
		return nil, err
	}
	m := map[string]string{}
	for _, line := range strings.Split(out, "\n") {
		if k, v, ok := strings.Cut(line, ":"); ok {
			m[strings.TrimSpace(k)] = strings.TrimSpace(v)
		}
	}
	return m, nil
}

// Promote turns a running follower into a leader with a watchdog deadline,
// on timeline epoch, with the synchronous standbys given.
func (in *Instance) Promote(ctx context.Context, deadline time.Time, epoch int64, synchronousStandbyNames string) error {
	in.ops.Lock()
	defer in.ops.Unlock()
	if !in.running() {
		return errors.New("promote: PostgreSQL is not running")
	}
	if !deadline.After(in.clock.Now()) {
		return errors.New("promote: a leader needs a watchdog deadline in the future")
	}
	return in.promote(ctx, deadline, epoch, synchronousStandbyNames)
}

// promote runs pg_promote; the caller holds the operation lock.
func (in *Instance) promote(ctx context.Context, deadline time.Time, epoch int64, synchronousStandbyNames string) error {
	// Arm the watchdog before the first write can be accepted; the agent
	// keeps refreshing it while the promotion runs.
	in.mu.Lock()
	in.role, in.deadline = RoleLeader, deadline
	in.mu.Unlock()
	in.poke()
	// The startup process may end recovery before it applies the reload
	// that clears restore_command below (it checks for the promotion
	// first), and would then run the command for every timeline history
	// file it probes: the file makes each run end at once.
	if err := os.WriteFile(in.promotingFile(), nil, 0o600); err != nil {
		return fmt.Errorf("promote: %w", err)
	}
	defer func() { _ = os.Remove(in.promotingFile()) }()
	conn, err := in.connect(ctx)
	if err != nil {
		return err
	}
	defer conn.Close(ctx)
	if err := in.configureForPromotion(ctx, conn, synchronousStandbyNames); err != nil {
		return fmt.Errorf("promote: %w", err)
	}
	if err := in.reserveTimelines(ctx, conn, epoch); err != nil {
		return fmt.Errorf("promote: %w", err)
	}
	var ok bool
	if err := conn.QueryRow(ctx, "SELECT pg_promote(wait => true, wait_seconds => 60)").Scan(&ok); err != nil {
		return fmt.Errorf("promote: %w", err)
	}
	if !ok {
		return errors.New("promote: PostgreSQL did not finish promoting within 60s")
	}
	in.log.Info("Promoted")
	// pg_control names the new timeline only after a checkpoint, and
	// pg_rewind of a deposed leader reads it there ("same timeline, no
	// rewind required" otherwise). Writes need not wait for it.
	go func() { //nolint:gosec // G118: the checkpoint outlives the promotion's request on purpose
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		conn, err := in.connect(ctx)
		if err != nil {
			in.log.Error(err, "Checkpoint after promotion")
			return
		}
		defer conn.Close(ctx)
		if _, err := conn.Exec(ctx, "CHECKPOINT"); err != nil {
			in.log.Error(err, "Checkpoint after promotion")
		}
	}()
	return nil
}

// configureForPromotion puts the leader's synchronous standbys in force
// (a standby ignores them until it leads: they are in place before the
// first commit) and clears restore_command, in one reload. Promoting,
// PostgreSQL asks restore_command for every timeline history file it
// probes, each time a process started and a round trip through the agents
// (0.1–0.3 s on a busy node), and gains nothing: the timeline is reserved
// (see reserveTimelines), and the operator promotes a follower only once
// it holds what it must. A leader never restores; a start as a follower
// writes the command again.
func (in *Instance) configureForPromotion(ctx context.Context, conn *pgx.Conn, synchronousStandbyNames string) error {
	in.mu.Lock()
	s := in.settings
	in.mu.Unlock()
	if s.RestoreCommand == "" && s.SynchronousStandbyNames == synchronousStandbyNames {
		return nil
	}
	s.RestoreCommand, s.SynchronousStandbyNames = "", synchronousStandbyNames
	return in.reload(ctx, s, 5*time.Second, func(ctx context.Context) bool {
		var restore, standbys string
		err := conn.QueryRow(ctx, "SELECT current_setting('restore_command'), current_setting('synchronous_standby_names')").
			Scan(&restore, &standbys)
		return err == nil && restore == "" && standbys == synchronousStandbyNames
	})
}

// reserveTimelines makes PostgreSQL promote onto timeline epoch: it picks
// one more than the newest timeline whose history file it finds, so the
// IDs between the current timeline and epoch get placeholder history files
// (comments only; nothing reads a timeline's history but that timeline's
// followers, and no one follows these). Without it, two followers promoted
// in turn (the first dying before anyone streamed from it) would both pick
// the same next ID, and pg_rewind would take the first one's diverged data
// for the second one's timeline: "no rewind required". Epochs are unique
// (the Lease moves with optimistic concurrency) and grow with every
// promotion, so timelines stay unique and below the epoch.
func (in *Instance) reserveTimelines(ctx context.Context, conn *pgx.Conn, epoch int64) error {
	var current int64
	if err := conn.QueryRow(ctx, "SELECT "+followerTimelineSQL).Scan(&current); err != nil {
		return fmt.Errorf("read the timeline: %w", err)
	}
	for tli := current + 1; tli < epoch; tli++ {
		path := filepath.Join(in.cfg.PGData, "pg_wal", fmt.Sprintf("%08X.history", tli))
		f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		if errors.Is(err, os.ErrExist) {
			continue
		}
		if err != nil {
			return fmt.Errorf("reserve timeline %d: %w", tli, err)
		}
		_, err = fmt.Fprintf(f, "# Timeline %d was never used: Regent reserved it so that the promotion of epoch %d gets timeline %d.\n",
			tli, epoch, epoch)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return fmt.Errorf("reserve timeline %d: %w", tli, err)
		}
		if c := in.cfg.Credential; c != nil {
			_ = os.Chown(path, int(c.Uid), int(c.Gid))
		}
	}
	return nil
}

// promotingFile is Settings.PromotingFile, beside the socket: gone with
// the pod, and removed at every start.
func (in *Instance) promotingFile() string { return filepath.Join(in.cfg.SocketDir, "promoting") }

func (in *Instance) running() bool {
	in.mu.Lock()
	defer in.mu.Unlock()
	return in.pg != nil
}

// connect logs in as postgres through the unix socket.
func (in *Instance) connect(ctx context.Context) (*pgx.Conn, error) {
	password, err := os.ReadFile(in.cfg.SuperuserPasswordFile)
	if err != nil {
		return nil, err
	}
	cfg, err := pgx.ParseConfig("")
	if err != nil {
		return nil, err
	}
	cfg.Host, cfg.Port, cfg.User, cfg.Database = in.cfg.SocketDir, 5432, "postgres", "postgres"
	cfg.Password = strings.TrimSpace(string(password))
	cfg.ConnectTimeout = 5 * time.Second
	return pgx.ConnectConfig(ctx, cfg)
}

// prepareEmptyDir makes sure the data directory is empty (foreign data is
// refused, never touched) and ready for op to fill it.
func (in *Instance) prepareEmptyDir(op string) error {
	state, err := inspect(in.cfg.PGData, in.cfg.Major)
	if err != nil {
		return err
	}
	if state != DataEmpty {
		return fmt.Errorf("%s: data directory %s is not empty", op, in.cfg.PGData)
	}
	return in.prepareDir()
}

func (in *Instance) prepareDir() error {
	if err := os.MkdirAll(in.cfg.PGData, 0o700); err != nil {
		return err
	}
	if err := os.Chmod(in.cfg.PGData, 0o700); err != nil { //nolint:gosec // G302: a directory, as PostgreSQL requires it
		return err
	}
	if c := in.cfg.Credential; c != nil {
		if err := os.Chown(in.cfg.PGData, int(c.Uid), int(c.Gid)); err != nil {
			return err
		}
	}
	return nil
}

// clearPartial empties the data directory after a failed copy into it.
func (in *Instance) clearPartial() {
	entries, _ := os.ReadDir(in.cfg.PGData)
	for _, e := range entries {
		_ = os.RemoveAll(filepath.Join(in.cfg.PGData, e.Name()))
	}
}

func (in *Instance) writeConfig(s Settings) error {
	user, ignored := userConf(s.Budget, s.Parameters)
	if len(ignored) > 0 {
		in.log.Info("Ignoring parameters Regent owns", "parameters", ignored)
	}
	files := map[string]string{
		"postgresql.conf": postgresqlConf,
		"user.conf":       user,
		"regent.conf":     regentConf(s),
		"pg_hba.conf":     hbaConf(),
	}
	if s.Recovery != nil {
		files["pg_hba.conf"] = recoveryHBAConf
	}
	for name, content := range files {
		if err := in.writeFile(name, content); err != nil {
			return err
		}
	}
	standby := filepath.Join(in.cfg.PGData, "standby.signal")
	if s.Role == RoleFollower {
		return in.writeFile("standby.signal", "")
	}
	if err := os.Remove(standby); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return nil
}

func (in *Instance) writeFile(name, content string) error {
	p := filepath.Join(in.cfg.PGData, name)
	tmp := p + ".regent-tmp"
	if err := os.WriteFile(tmp, []byte(content), 0o600); err != nil {
		return err
	}
	if c := in.cfg.Credential; c != nil {
		if err := os.Chown(tmp, int(c.Uid), int(c.Gid)); err != nil {
			return err
		}
	}
	return os.Rename(tmp, p)
}

// walRemoved is how a follower's WAL receiver reports that its leader no
// longer has the segment it asks for (the leader's walsender's words).
var walRemoved = regexp.MustCompile(`requested WAL segment ([0-9A-F]{24}) has already been removed`)

// noteLogLine remembers the WAL segment the leader said it no longer has.
func (in *Instance) noteLogLine(line string) {
	if m := walRemoved.FindStringSubmatch(line); m != nil {
		in.mu.Lock()
		in.missingWAL, in.missingWALAt = m[1], in.clock.Now()
		in.mu.Unlock()
	}
}

// Reclone replaces this member's data with a fresh copy of the leader's at
// conninfo: PostgreSQL is stopped, the data directory emptied, and a base
// backup taken. The data is removed, not kept aside: a member that needs
// this has nothing the leader lacks (it is behind the leader's retained
// WAL on the same history, or a deposed leader whose unacknowledged tail
// could not be rewound), and a copy kept beside a new one would need the
// volume twice the data's size, which the storage budget does not keep.
// Data that is not this cluster's is refused, as by every operation.
func (in *Instance) Reclone(ctx context.Context, conninfo, why string) error {
	if _, err := in.Stop(ctx, StopFast); err != nil {
		in.log.Info("Stopping before a new clone failed; going on", "error", err.Error())
	}
	in.ops.Lock()
	defer in.ops.Unlock()
	if in.running() {
		return errors.New("reclone: PostgreSQL is still running")
	}
	if _, err := inspect(in.cfg.PGData, in.cfg.Major); err != nil {
		return err
	}
	in.log.Info("Removing this member's data to clone the leader again", "reason", why)
	in.clearPartial()
	if err := in.prepareDir(); err != nil {
		return err
	}
	return in.copyLeader(ctx, conninfo)
}
