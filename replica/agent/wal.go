package agent

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/regent-dev/regent/internal/names"
	"github.com/regent-dev/regent/replica/api"
	"github.com/regent-dev/regent/replica/walarchive"
)

// Archived WAL travels the same path as streamed WAL (docs/data-plane.md): a
// follower's `regent wal-fetch` asks its own agent on the run directory's
// agent.sock; the agent asks the Lease holder's agent on its relay port
// (REGENT-WAL/1 epoch=N pod=P file=F), which reads the file from its
// instance's archive. Both ends apply the relay's checks, for every chunk:
// a sealed or cut-off follower takes no WAL of its epoch this way either,
// and a deposed leader serves none.

// serveWAL is the leader's end: it answers "OK <size>" and the file,
// "NO not found", or "NO <reason>".
func (a *Agent) serveWAL(ctx context.Context, c net.Conn, h handshake) {
	defer c.Close()
	f, size, err := a.instance.FetchWAL(ctx, h.file)
	if errors.Is(err, walarchive.ErrNotFound) {
		_, _ = fmt.Fprintln(c, "NO not found")
		return
	}
	if err != nil {
		_, _ = fmt.Fprintln(c, "NO", strings.ReplaceAll(err.Error(), "\n", " "))
		return
	}
	defer f.Close()
	_ = c.SetWriteDeadline(time.Now().Add(time.Minute))
	if _, err := fmt.Fprintf(c, "OK %d\n", size); err != nil {
		return
	}
	n, err := io.Copy(c, &checkedReader{r: f, ok: func() bool { return a.ls.mayAck(h.epoch, a.clock.Now()) }})
	a.log.V(1).Info("Served archived WAL", "peer", h.peer, "file", h.file, "bytes", n, "error", errString(err))
}

// serveLocalAPI serves the pod's own processes on the run directory's
// agent.sock: GET /wal/{name} for wal-fetch.
func (a *Agent) serveLocalAPI(ctx context.Context) error {
	path := filepath.Join(a.cfg.RunDir, names.AgentSocketName)
	if err := os.MkdirAll(a.cfg.RunDir, 0o755); err != nil { //nolint:gosec // G301: the pod's run directory, shared with the postgres container
		return err
	}
	_ = os.Remove(path)
	l, err := net.Listen("unix", path)
	if err != nil {
		return fmt.Errorf("agent socket: %w", err)
	}
	// PostgreSQL's restore_command runs as the database user; the run
	// directory is the pod's own.
	if err := os.Chmod(path, 0o666); err != nil { //nolint:gosec // G302: wal-fetch runs as PostgreSQL's user; the directory is the pod's own
		return err
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /wal/{name}", a.fetchWAL)
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() { <-ctx.Done(); _ = srv.Close() }()
	if err := srv.Serve(l); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// fetchWAL gets an archived file from the current leader (from the local
// archive when this pod leads: a promotion in progress replays its own).
func (a *Agent) fetchWAL(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	if !walarchive.ValidName(name) {
		http.Error(w, "not a WAL file name", http.StatusBadRequest)
		return
	}
	a.ls.mu.Lock()
	leads := a.ls.mode == api.ModeLeader
	a.ls.mu.Unlock()
	if leads {
		f, size, err := a.instance.FetchWAL(r.Context(), name)
		if !a.answerWAL(w, name, size, err) {
			return
		}
		defer f.Close()
		_, _ = io.Copy(w, f)
		return
	}
	remote, br, epoch, err := a.dialLeader(r.Context(), walHandshakePrefix, "file="+name)
	if err != nil {
		http.Error(w, err.Error(), http.StatusServiceUnavailable)
		return
	}
	defer remote.Close()
	answer, err := br.ReadString('\n')
	answer = strings.TrimSpace(answer)
	switch {
	case err != nil:
		http.Error(w, "leader did not answer: "+err.Error(), http.StatusServiceUnavailable)
		return
	case answer == "NO not found":
		w.WriteHeader(http.StatusNotFound)
		return
	case !strings.HasPrefix(answer, "OK "):
		http.Error(w, "leader refused: "+answer, http.StatusServiceUnavailable)
		return
	}
	size, err := strconv.ParseInt(strings.TrimPrefix(answer, "OK "), 10, 64)
	if err != nil {
		http.Error(w, "bad answer from the leader: "+answer, http.StatusBadGateway)
		return
	}
	_ = remote.SetReadDeadline(time.Now().Add(time.Minute))
	w.Header().Set("Content-Length", strconv.FormatInt(size, 10))
	// A cut transfer leaves a short body, which wal-fetch discards.
	n, err := io.Copy(w, &checkedReader{r: br, ok: func() bool { return a.ls.mayFollow(epoch, a.clock.Now()) }})
	a.log.Info("Fetched archived WAL from the leader", "file", name, "bytes", n, "error", errString(err))
}

func (a *Agent) answerWAL(w http.ResponseWriter, name string, size int64, err error) bool {
	switch {
	case errors.Is(err, walarchive.ErrNotFound):
		w.WriteHeader(http.StatusNotFound)
		return false
	case err != nil:
		http.Error(w, fmt.Sprintf("%s: %v", name, err), http.StatusServiceUnavailable)
		return false
	}
	w.Header().Set("Content-Length", strconv.FormatInt(size, 10))
	return true
}

// checkedReader stops a transfer the moment ok turns false.
type checkedReader struct {
	r  io.Reader
	ok func() bool
}

func (c *checkedReader) Read(p []byte) (int, error) {
	if !c.ok() {
		return 0, errors.New("fenced: the epoch changed or the lease is no longer valid")
	}
	return c.r.Read(p)
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}
