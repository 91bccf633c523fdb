package instance

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/regent-dev/regent/internal/lsn"
	"github.com/regent-dev/regent/replica/walarchive"
)

// SocketName is the API socket's name in the run directory.
const SocketName = "instance.sock"

// Request bodies of the API.
type (
	// ConninfoRequest names the leader to copy from or rewind to.
	ConninfoRequest struct {
		Conninfo string `json:"conninfo"`
	}
	// RecloneRequest names the leader to copy from again, and why.
	RecloneRequest struct {
		Conninfo string `json:"conninfo"`
		Reason   string `json:"reason"`
	}
	// StopRequest says how to stop.
	StopRequest struct {
		Mode StopMode `json:"mode"`
	}
	// StopResponse carries the final checkpoint position of a clean stop.
	StopResponse struct {
		LSN lsn.LSN `json:"lsn,omitempty"`
	}
	// DeadlineRequest sets the watchdog deadline (promote, refresh).
	DeadlineRequest struct {
		Deadline time.Time `json:"deadline"`
	}
	// PromoteRequest promotes with a watchdog deadline; Epoch is the
	// leadership epoch the promotion starts, which becomes the new
	// timeline's ID (see reserveTimelines).
	PromoteRequest struct {
		Deadline time.Time `json:"deadline"`
		Epoch    int64     `json:"epoch"`
		// SynchronousStandbyNames are in force before the promotion.
		SynchronousStandbyNames string `json:"synchronousStandbyNames"`
	}
	// ConfigureRequest changes settings of the running PostgreSQL.
	ConfigureRequest struct {
		SynchronousStandbyNames string `json:"synchronousStandbyNames"`
	}
	// TLSRequest carries the pod's key and certificate, PEM-encoded.
	TLSRequest struct {
		Cert, Key []byte
	}
	// WaitResponse is GET /wait's answer.
	WaitResponse struct {
		Gen uint64 `json:"gen"`
	}
	// ErrorResponse is every error's body.
	ErrorResponse struct {
		Error string `json:"error"`
		// Code is ForeignData when the data directory must not be
		// touched.
		Code string `json:"code,omitempty"`
	}
)

// Handler serves the API: the agent's only way to drive PostgreSQL.
func (in *Instance) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /status", func(w http.ResponseWriter, r *http.Request) {
		reply(w, in.Status(r.Context()), nil)
	})
	mux.HandleFunc("POST /initdb", func(w http.ResponseWriter, r *http.Request) {
		reply(w, nil, in.Initdb(r.Context()))
	})
	mux.HandleFunc("POST /basebackup", func(w http.ResponseWriter, r *http.Request) {
		var req ConninfoRequest
		if decode(w, r, &req) {
			reply(w, nil, in.BaseBackup(r.Context(), req.Conninfo))
		}
	})
	mux.HandleFunc("POST /reclone", func(w http.ResponseWriter, r *http.Request) {
		var req RecloneRequest
		if decode(w, r, &req) {
			reply(w, nil, in.Reclone(r.Context(), req.Conninfo, req.Reason))
		}
	})
	mux.HandleFunc("POST /rewind", func(w http.ResponseWriter, r *http.Request) {
		var req ConninfoRequest
		if decode(w, r, &req) {
			reply(w, nil, in.Rewind(r.Context(), req.Conninfo))
		}
	})
	mux.HandleFunc("POST /start", func(w http.ResponseWriter, r *http.Request) {
		var req StartOptions
		if decode(w, r, &req) {
			reply(w, nil, in.Start(r.Context(), req))
		}
	})
	mux.HandleFunc("POST /stop", func(w http.ResponseWriter, r *http.Request) {
		var req StopRequest
		if decode(w, r, &req) {
			if req.Mode != StopFast && req.Mode != StopImmediate {
				reply(w, nil, fmt.Errorf("stop mode %q: want fast or immediate", req.Mode))
				return
			}
			lsn, err := in.Stop(r.Context(), req.Mode)
			reply(w, StopResponse{LSN: lsn}, err)
		}
	})
	mux.HandleFunc("POST /promote", func(w http.ResponseWriter, r *http.Request) {
		var req PromoteRequest
		if decode(w, r, &req) {
			reply(w, nil, in.Promote(r.Context(), req.Deadline, req.Epoch, req.SynchronousStandbyNames))
		}
	})
	mux.HandleFunc("POST /configure", func(w http.ResponseWriter, r *http.Request) {
		var req ConfigureRequest
		if decode(w, r, &req) {
			reply(w, nil, in.Configure(r.Context(), req.SynchronousStandbyNames))
		}
	})
	mux.HandleFunc("POST /restore", func(w http.ResponseWriter, r *http.Request) {
		var req RestoreRequest
		if decode(w, r, &req) {
			reply(w, nil, in.Restore(r.Context(), req))
		}
	})
	mux.HandleFunc("POST /backup", func(w http.ResponseWriter, r *http.Request) {
		var req BackupRequest
		if decode(w, r, &req) {
			reply(w, nil, in.StartBackup(req))
		}
	})
	mux.HandleFunc("POST /tls", func(w http.ResponseWriter, r *http.Request) {
		var req TLSRequest
		if decode(w, r, &req) {
			reply(w, nil, in.SetTLS(r.Context(), req.Cert, req.Key))
		}
	})
	// The archive's files, for the agent to serve to followers that fell
	// behind the WAL this pod still keeps.
	mux.HandleFunc("GET /wal/{name}", func(w http.ResponseWriter, r *http.Request) {
		f, size, err := walarchive.Archive{Dir: in.cfg.ArchiveDir}.Open(r.PathValue("name"))
		switch {
		case errors.Is(err, walarchive.ErrNotFound):
			w.WriteHeader(http.StatusNotFound)
			return
		case err != nil:
			reply(w, nil, err)
			return
		}
		defer f.Close()
		w.Header().Set("Content-Type", "application/octet-stream")
		w.Header().Set("Content-Length", strconv.FormatInt(size, 10))
		_, _ = io.Copy(w, f)
	})
	// A long poll: answers when PostgreSQL started or exited since gen, or
	// after 25 s.
	mux.HandleFunc("GET /wait", func(w http.ResponseWriter, r *http.Request) {
		gen, _ := strconv.ParseUint(r.URL.Query().Get("gen"), 10, 64)
		ctx, cancel := context.WithTimeout(r.Context(), 25*time.Second)
		defer cancel()
		reply(w, WaitResponse{Gen: in.WaitChange(ctx, gen)}, nil)
	})
	mux.HandleFunc("POST /deadline", func(w http.ResponseWriter, r *http.Request) {
		var req DeadlineRequest
		if decode(w, r, &req) {
			reply(w, nil, in.SetDeadline(req.Deadline))
		}
	})
	return mux
}

func decode(w http.ResponseWriter, r *http.Request, v any) bool {
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<16))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		w.WriteHeader(http.StatusBadRequest)
		_ = json.NewEncoder(w).Encode(ErrorResponse{Error: "bad request: " + err.Error()})
		return false
	}
	return true
}

func reply(w http.ResponseWriter, v any, err error) {
	w.Header().Set("Content-Type", "application/json")
	if err != nil {
		resp := ErrorResponse{Error: err.Error()}
		status := http.StatusConflict
		var foreign *ErrForeignData
		if errors.As(err, &foreign) {
			resp.Code, status = "ForeignData", http.StatusUnprocessableEntity
		}
		w.WriteHeader(status)
		_ = json.NewEncoder(w).Encode(resp)
		return
	}
	if v == nil {
		v = struct{}{}
	}
	_ = json.NewEncoder(w).Encode(v)
}

// Serve serves the API on the socket in dir until ctx ends.
func (in *Instance) Serve(ctx context.Context, dir string) error {
	path := filepath.Join(dir, SocketName)
	_ = os.Remove(path)
	l, err := net.Listen("unix", path)
	if err != nil {
		return err
	}
	// Only this pod's containers (same user) may drive PostgreSQL.
	if err := os.Chmod(path, 0o600); err != nil {
		return err
	}
	srv := &http.Server{Handler: in.Handler(), ReadHeaderTimeout: 10 * time.Second}
	go func() {
		<-ctx.Done()
		_ = srv.Close()
	}()
	if err := srv.Serve(l); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// Client drives an instance through its socket.
type Client struct {
	http *http.Client
}

// NewClient returns a client for the instance whose socket is in dir.
func NewClient(dir string) *Client {
	path := filepath.Join(dir, SocketName)
	return &Client{http: &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", path)
		},
	}}}
}

// APIError is an error the instance returned.
type APIError struct {
	Status int
	ErrorResponse
}

func (e *APIError) Error() string { return e.ErrorResponse.Error }

func (c *Client) call(ctx context.Context, method, path string, in, out any) error {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, "http://instance"+path, body)
	if err != nil {
		return err
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return fmt.Errorf("instance %s: %w", path, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		e := &APIError{Status: resp.StatusCode}
		_ = json.NewDecoder(resp.Body).Decode(&e.ErrorResponse)
		return e
	}
	if out != nil {
		return json.NewDecoder(resp.Body).Decode(out)
	}
	return nil
}

// Status returns the instance's status.
func (c *Client) Status(ctx context.Context) (Status, error) {
	var st Status
	err := c.call(ctx, http.MethodGet, "/status", nil, &st)
	return st, err
}

// Initdb creates a new cluster.
func (c *Client) Initdb(ctx context.Context) error {
	return c.call(ctx, http.MethodPost, "/initdb", struct{}{}, nil)
}

// BaseBackup copies a leader.
func (c *Client) BaseBackup(ctx context.Context, conninfo string) error {
	return c.call(ctx, http.MethodPost, "/basebackup", ConninfoRequest{Conninfo: conninfo}, nil)
}

// Reclone replaces the data with a new clone of the leader; reason is
// logged.
func (c *Client) Reclone(ctx context.Context, conninfo, reason string) error {
	return c.call(ctx, http.MethodPost, "/reclone", RecloneRequest{Conninfo: conninfo, Reason: reason}, nil)
}

// Rewind rewinds to a leader.
func (c *Client) Rewind(ctx context.Context, conninfo string) error {
	return c.call(ctx, http.MethodPost, "/rewind", ConninfoRequest{Conninfo: conninfo}, nil)
}

// Start starts PostgreSQL.
func (c *Client) Start(ctx context.Context, opts StartOptions) error {
	return c.call(ctx, http.MethodPost, "/start", opts, nil)
}

// Stop stops PostgreSQL and returns the final LSN of a clean stop.
func (c *Client) Stop(ctx context.Context, mode StopMode) (lsn.LSN, error) {
	var resp StopResponse
	err := c.call(ctx, http.MethodPost, "/stop", StopRequest{Mode: mode}, &resp)
	return resp.LSN, err
}

// Promote promotes a follower.
func (c *Client) Promote(ctx context.Context, deadline time.Time, epoch int64, synchronousStandbyNames string) error {
	return c.call(ctx, http.MethodPost, "/promote", PromoteRequest{Deadline: deadline, Epoch: epoch,
		SynchronousStandbyNames: synchronousStandbyNames}, nil)
}

// Restore builds the empty data directory from a backup in the source
// store, recovered to the request's target.
func (c *Client) Restore(ctx context.Context, req RestoreRequest) error {
	return c.call(ctx, http.MethodPost, "/restore", req, nil)
}

// StartBackup starts a base backup into the object store; Status reports
// its progress.
func (c *Client) StartBackup(ctx context.Context, req BackupRequest) error {
	return c.call(ctx, http.MethodPost, "/backup", req, nil)
}

// SetTLS installs the pod's key and certificate (and reloads PostgreSQL).
func (c *Client) SetTLS(ctx context.Context, certPEM, keyPEM []byte) error {
	return c.call(ctx, http.MethodPost, "/tls", TLSRequest{Cert: certPEM, Key: keyPEM}, nil)
}

// Configure changes synchronous_standby_names of the running PostgreSQL.
func (c *Client) Configure(ctx context.Context, synchronousStandbyNames string) error {
	return c.call(ctx, http.MethodPost, "/configure", ConfigureRequest{SynchronousStandbyNames: synchronousStandbyNames}, nil)
}

// FetchWAL opens the archived WAL file name and returns its size; a file
// the archive does not hold is walarchive.ErrNotFound.
func (c *Client) FetchWAL(ctx context.Context, name string) (io.ReadCloser, int64, error) {
	if !walarchive.ValidName(name) {
		return nil, 0, fmt.Errorf("%q is not a WAL file name", name)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://instance/wal/"+name, nil)
	if err != nil {
		return nil, 0, err
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, 0, fmt.Errorf("instance /wal: %w", err)
	}
	switch resp.StatusCode {
	case http.StatusOK:
		return resp.Body, resp.ContentLength, nil
	case http.StatusNotFound:
		_ = resp.Body.Close()
		return nil, 0, walarchive.ErrNotFound
	default:
		defer resp.Body.Close()
		e := &APIError{Status: resp.StatusCode}
		_ = json.NewDecoder(resp.Body).Decode(&e.ErrorResponse)
		return nil, 0, e
	}
}

// WaitChange long-polls until PostgreSQL started or exited since gen.
func (c *Client) WaitChange(ctx context.Context, gen uint64) (uint64, error) {
	var resp WaitResponse
	err := c.call(ctx, http.MethodGet, "/wait?gen="+strconv.FormatUint(gen, 10), nil, &resp)
	return resp.Gen, err
}

// SetDeadline refreshes the watchdog.
func (c *Client) SetDeadline(ctx context.Context, deadline time.Time) error {
	return c.call(ctx, http.MethodPost, "/deadline", DeadlineRequest{Deadline: deadline}, nil)
}
