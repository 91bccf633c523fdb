package instance

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/go-logr/logr"
)

// runner runs PostgreSQL's tools: each call has a timeout, is logged with its
// arguments (never a password: those go through files or the environment),
// and returns stderr inside its error.
type runner struct {
	binDir string
	// cred runs the tools as another user (tests run as root, PostgreSQL
	// refuses root); nil runs them as this process's user.
	cred *syscall.Credential
	env  []string
	log  logr.Logger
	// children tracks the processes this runner started, so that the
	// zombie reaper leaves them to their own Wait.
	children *childSet
}

func (r *runner) command(ctx context.Context, tool string, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, r.binDir+"/"+tool, args...)
	cmd.Env = append(os.Environ(), r.env...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: r.cred, Setpgid: true}
	return cmd
}

// passwordRE finds passwords in connection strings, to keep them out of
// logs and errors.
var passwordRE = regexp.MustCompile(`password=('(\\.|[^'])*'|\S+)`)

// redact hides the passwords in s.
func redact(s string) string { return passwordRE.ReplaceAllString(s, "password=REDACTED") }

func redactAll(args []string) []string {
	out := make([]string, len(args))
	for i, a := range args {
		out[i] = redact(a)
	}
	return out
}

// withoutPassword splits the password out of a conninfo string, so that it
// reaches a tool through its environment (PGPASSWORD) and never its
// argument list, which every user of the node can read.
func withoutPassword(conninfo string) (rest, password string) {
	m := passwordRE.FindStringSubmatchIndex(conninfo)
	if m == nil {
		return conninfo, ""
	}
	value := conninfo[m[0]+len("password=") : m[1]]
	if strings.HasPrefix(value, "'") {
		value = strings.NewReplacer(`\\`, `\`, `\'`, `'`).Replace(value[1 : len(value)-1])
	}
	before, after := strings.TrimRight(conninfo[:m[0]], " "), strings.TrimLeft(conninfo[m[1]:], " ")
	if before != "" && after != "" {
		return before + " " + after, value
	}
	return before + after, value
}

// runConninfo runs a tool whose flag takes conninfo, the password passed in
// the environment.
func (r *runner) runConninfo(ctx context.Context, timeout time.Duration, tool, flag, conninfo string, args ...string) (string, error) {
	rest, password := withoutPassword(conninfo)
	var env []string
	if password != "" {
		env = []string{"PGPASSWORD=" + password}
	}
	return r.runEnv(ctx, timeout, env, tool, append([]string{flag + "=" + rest}, args...)...)
}

// run runs a tool to completion within timeout.
func (r *runner) run(ctx context.Context, timeout time.Duration, tool string, args ...string) (string, error) {
	return r.runEnv(ctx, timeout, nil, tool, args...)
}

// runEnv is run with extra environment variables for this call.
func (r *runner) runEnv(ctx context.Context, timeout time.Duration, env []string, tool string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	cmd := r.command(ctx, tool, args...)
	cmd.Env = append(cmd.Env, env...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	start := time.Now()
	r.log.Info("Running", "tool", tool, "args", redactAll(args))
	if err := r.children.start(cmd); err != nil {
		return "", fmt.Errorf("%s: %w", tool, err)
	}
	err := r.children.wait(cmd)
	r.log.Info("Ran", "tool", tool, "duration", time.Since(start).Round(time.Millisecond).String(), "ok", err == nil,
		"stderr", redact(lastLines(stderr.String(), 6)))
	if err != nil {
		if ctx.Err() != nil {
			err = fmt.Errorf("timed out after %s", timeout)
		}
		return stdout.String(), fmt.Errorf("%s %s: %w: %s", tool, strings.Join(redactAll(args), " "), err,
			redact(strings.TrimSpace(stderr.String())))
	}
	return stdout.String(), nil
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], " | ")
}

// processChildren are the children of this process that their starters
// wait for. There is one set, and one reaper, per process: a reaper that
// knew only some of the children would steal the others' exit statuses.
var (
	processChildren = newChildSet()
	reaperOnce      sync.Once
)

// childSet knows the processes started through it.
type childSet struct {
	mu   sync.Mutex
	pids map[int]bool
}

func newChildSet() *childSet { return &childSet{pids: map[int]bool{}} }

func (c *childSet) start(cmd *exec.Cmd) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := cmd.Start(); err != nil {
		return err
	}
	c.pids[cmd.Process.Pid] = true
	return nil
}

func (c *childSet) wait(cmd *exec.Cmd) error {
	err := cmd.Wait()
	c.mu.Lock()
	delete(c.pids, cmd.Process.Pid)
	c.mu.Unlock()
	return err
}

func (c *childSet) has(pid int) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.pids[pid]
}

// reapOrphans reaps zombies that are not ours until ctx ends. As PID 1 of
// the container, instance inherits every orphan (PostgreSQL's backends
// when the postmaster dies, say); our own children are left to their
// Wait, or their exit status would be lost. It peeks with WNOWAIT first so
// that it never reaps one of ours.
func reapOrphans(ctx context.Context, children *childSet) {
	sigs := make(chan os.Signal, 8)
	signalNotify(sigs, syscall.SIGCHLD)
	defer signalStop(sigs)
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		for {
			var info siginfo
			if err := waitidPeek(&info); err != nil || info.pid == 0 {
				break
			}
			if children.has(info.pid) {
				// Ours: its Wait reaps it; look again shortly.
				break
			}
			var ws syscall.WaitStatus
			if _, err := syscall.Wait4(info.pid, &ws, syscall.WNOHANG, nil); err != nil && !errors.Is(err, syscall.ECHILD) {
				break
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-sigs:
		case <-t.C:
		}
	}
}

// stream starts a tool whose standard output the caller reads; wait
// returns its exit (stderr inside the error), once stdout is drained.
func (r *runner) stream(ctx context.Context, timeout time.Duration, env []string, tool string, args ...string) (io.Reader, func() error, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	cmd := r.command(ctx, tool, args...)
	cmd.Env = append(cmd.Env, env...)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		cancel()
		return nil, nil, err
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	start := time.Now()
	r.log.Info("Running", "tool", tool, "args", redactAll(args))
	if err := r.children.start(cmd); err != nil {
		cancel()
		return nil, nil, fmt.Errorf("%s: %w", tool, err)
	}
	wait := func() error {
		defer cancel()
		err := r.children.wait(cmd)
		r.log.Info("Ran", "tool", tool, "duration", time.Since(start).Round(time.Millisecond).String(), "ok", err == nil,
			"stderr", redact(lastLines(stderr.String(), 6)))
		if err != nil {
			if ctx.Err() != nil {
				err = fmt.Errorf("timed out after %s", timeout)
			}
			return fmt.Errorf("%s: %w: %s", tool, err, redact(strings.TrimSpace(stderr.String())))
		}
		return nil
	}
	return stdout, wait, nil
}
