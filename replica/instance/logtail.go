package instance

import (
	"bytes"
	"io"
	"sync"
)

// logTail passes PostgreSQL's output through to out (the container's log)
// line by line and remembers the last lines, bounded in count and length,
// for the error of a failed start.
type logTail struct {
	mu      sync.Mutex
	out     io.Writer
	partial []byte
	last    []string
	keep    int
	// onLine, when set, sees every line (without its end) as it passes.
	onLine func(string)
}

// maxLine bounds a remembered line (and a partial one waiting for its end).
const maxLine = 4096

func newLogTail(out io.Writer, keep int) *logTail { return &logTail{out: out, keep: keep} }

// Write implements io.Writer. It never fails: PostgreSQL must not stop on
// a log nobody reads.
func (t *logTail) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	_, _ = t.out.Write(p)
	t.partial = append(t.partial, p...)
	for {
		i := bytes.IndexByte(t.partial, '\n')
		if i < 0 {
			break
		}
		t.remember(t.partial[:i])
		t.partial = t.partial[i+1:]
	}
	if len(t.partial) > maxLine {
		t.remember(t.partial)
		t.partial = nil
	}
	return len(p), nil
}

func (t *logTail) remember(line []byte) {
	t.last = append(t.last, string(line[:min(len(line), maxLine)]))
	if t.onLine != nil {
		t.onLine(t.last[len(t.last)-1])
	}
	if len(t.last) > t.keep {
		t.last = t.last[len(t.last)-t.keep:]
	}
}

// lines are the remembered lines, oldest first.
func (t *logTail) lines() []string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return append([]string(nil), t.last...)
}
