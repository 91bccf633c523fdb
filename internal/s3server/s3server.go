// Package s3server runs a real S3-compatible server for tests and
// benchmarks: versitygw, built from its Go module by hack/build-tools.sh
// (docs/backup.md says why this one). It serves a local directory, so a
// test can see, corrupt or remove the very files behind the objects.
package s3server

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"syscall"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"

	"github.com/regent-dev/regent/internal/localcluster/netns"
)

// Default credentials of a test server.
const (
	AccessKey = "regent-test"
	SecretKey = "regent-test-secret" //nolint:gosec // G101: a throwaway test server's key
)

// Server is one running versitygw.
type Server struct {
	// Endpoint is http://<addr>.
	Endpoint string
	// Addr is where it listens, host:port.
	Addr string
	// Dir holds the buckets: <Dir>/data/<bucket>/<key>.
	Dir string
	// Log is the server's output.
	Log string

	// netns, when set, is the network namespace the server runs in.
	netns string
	cmd   *exec.Cmd
	done  chan struct{}
}

// Binary returns the versitygw binary's path, or an error that says how
// to build it.
func Binary() (string, error) {
	dir := os.Getenv("KUBEBUILDER_ASSETS")
	if dir == "" {
		_, file, _, _ := runtime.Caller(0)
		dir = filepath.Join(filepath.Dir(file), "..", "..", "bin")
	}
	p := filepath.Join(dir, "versitygw")
	if _, err := os.Stat(p); err != nil { //nolint:gosec // G703: the test binaries' own directory
		return "", fmt.Errorf("versitygw not found in %s: run the tests with `make test`, or build it with hack/build-tools.sh versitygw", dir)
	}
	return p, nil
}

// Options shape a server.
type Options struct {
	// Addr to listen on; empty picks a free port on 127.0.0.1.
	Addr string
	// NetNS is a network namespace (its name, /run/netns/<name>) to run
	// in; Addr must then be one of its addresses.
	NetNS string
}

// Start runs a server keeping its data under dir, and waits until it
// answers.
func Start(dir string, opts Options) (*Server, error) {
	addr := opts.Addr
	if addr == "" {
		port, err := freePort()
		if err != nil {
			return nil, err
		}
		addr = net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	}
	s := &Server{Endpoint: "http://" + addr, Addr: addr, Dir: dir, Log: filepath.Join(dir, "versitygw.log"), netns: opts.NetNS}
	for _, d := range []string{s.dataDir(), filepath.Join(dir, "meta")} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return nil, err
		}
	}
	if err := s.start(); err != nil {
		return nil, err
	}
	return s, nil
}

func (s *Server) dataDir() string { return filepath.Join(s.Dir, "data") }

// ObjectPath is the file behind an object.
func (s *Server) ObjectPath(bucket, key string) string {
	return filepath.Join(s.dataDir(), bucket, filepath.FromSlash(key))
}

func (s *Server) start() error {
	bin, err := Binary()
	if err != nil {
		return err
	}
	args := []string{"--access", AccessKey, "--secret", SecretKey, "--port", s.Addr, "--quiet",
		"posix", "--sidecar", filepath.Join(s.Dir, "meta"), s.dataDir()}
	name := bin
	if s.netns != "" {
		args = append([]string{"--net=" + netns.Path(s.netns), bin}, args...)
		name = "nsenter"
	}
	logf, err := os.OpenFile(s.Log, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	defer logf.Close()
	cmd := exec.Command(name, args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	// No Pdeathsig: it fires when the thread that forked the server ends,
	// and netns.Dial ends the threads it entered a namespace on, which
	// may be that one. Stop kills the process group.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("versitygw: %w", err)
	}
	s.cmd, s.done = cmd, make(chan struct{})
	go func() { _ = cmd.Wait(); close(s.done) }()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for {
		client, err := s.Client()
		if err == nil {
			_, err = client.ListBuckets(ctx)
		}
		if err == nil {
			return nil
		}
		select {
		case <-s.done:
			out, _ := os.ReadFile(s.Log)
			return fmt.Errorf("versitygw exited: %s", tail(out))
		case <-ctx.Done():
			s.Stop()
			return fmt.Errorf("versitygw did not answer at %s within 30 s: %w", s.Addr, err)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// Client returns a minio client with the server's credentials (dialing
// into its network namespace).
func (s *Server) Client() (*minio.Client, error) {
	transport := http.DefaultTransport.(*http.Transport).Clone()
	if s.netns != "" {
		transport.DialContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
			return netns.Dial(ctx, s.netns, network, addr)
		}
	}
	return minio.New(s.Addr, &minio.Options{Creds: credentials.NewStaticV4(AccessKey, SecretKey, ""),
		BucketLookup: minio.BucketLookupPath, Transport: transport})
}

// MakeBucket creates a bucket.
func (s *Server) MakeBucket(name string) error {
	client, err := s.Client()
	if err != nil {
		return err
	}
	return client.MakeBucket(context.Background(), name, minio.MakeBucketOptions{})
}

// Stop kills the server: the store is down until Restart.
func (s *Server) Stop() {
	if s.cmd == nil {
		return
	}
	_ = syscall.Kill(-s.cmd.Process.Pid, syscall.SIGKILL)
	<-s.done
	s.cmd = nil
}

// Restart starts a stopped server again, at the same address with the
// same data.
func (s *Server) Restart() error {
	s.Stop()
	return s.start()
}

// Pause freezes the server (SIGSTOP): connections are accepted by the
// kernel and never answered, the store's worst way of being down.
func (s *Server) Pause() error { return s.signal(syscall.SIGSTOP) }

// Resume thaws a paused server.
func (s *Server) Resume() error { return s.signal(syscall.SIGCONT) }

func (s *Server) signal(sig syscall.Signal) error {
	if s.cmd == nil {
		return errors.New("versitygw is not running")
	}
	return syscall.Kill(-s.cmd.Process.Pid, sig)
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func tail(b []byte) string {
	if len(b) > 2000 {
		b = b[len(b)-2000:]
	}
	return string(b)
}
