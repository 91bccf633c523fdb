package kubelet

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
	crilogs "k8s.io/cri-client/pkg/logs"
)

// Container logs are kept as a kubelet and its runtime keep them: one file
// per container instance, <state>/logs/<ns>_<pod>_<uid>/<container>/<n>.log
// (n counts restarts), each line in the CRI log format, so that the
// kubelet's own reader serves kubectl logs with every option.

// maxLogLine is where a line without an end is cut into partial records,
// as containerd does.
const maxLogLine = 16 * 1024

// logDir is the directory of a container's log files.
func (w *podWorker) logDir(container string) string {
	return filepath.Join(w.k.cfg.StateDir, "logs",
		w.pod.Namespace+"_"+w.pod.Name+"_"+string(w.pod.UID), container)
}

// logPath is the log file of a container's instance number restart.
func (w *podWorker) logPath(container string, restart int32) string {
	return filepath.Join(w.logDir(container), strconv.Itoa(int(restart))+".log")
}

// criLog writes the stdout and stderr of one container instance to its
// file, each line stamped with the time it was read and its stream.
type criLog struct {
	mu     sync.Mutex
	f      *os.File
	copies sync.WaitGroup
}

func openCRILog(path string) (*criLog, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, err
	}
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	return &criLog{f: f}, nil
}

// stream returns the write end of a pipe for the container's stream: what
// is written to it lands in the log once the container has started.
func (l *criLog) stream(name runtimeapi.LogStreamType) (*os.File, error) {
	r, w, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	l.copies.Go(func() {
		defer r.Close()
		l.copy(bufio.NewReaderSize(r, maxLogLine), name)
	})
	return w, nil
}

// closeWhenDrained closes the file once every stream has reached its end:
// the container's processes, all of them, are gone.
func (l *criLog) closeWhenDrained() {
	go func() {
		l.copies.Wait()
		_ = l.f.Close()
	}()
}

func (l *criLog) copy(r *bufio.Reader, stream runtimeapi.LogStreamType) {
	for {
		line, err := r.ReadSlice('\n')
		if len(line) > 0 {
			tag := runtimeapi.LogTagPartial
			if text, ok := bytes.CutSuffix(line, []byte{'\n'}); ok {
				line, tag = text, runtimeapi.LogTagFull
			}
			l.write(stream, tag, line)
		}
		if err != nil && !errors.Is(err, bufio.ErrBufferFull) {
			return
		}
	}
}

func (l *criLog) write(stream runtimeapi.LogStreamType, tag runtimeapi.LogTag, text []byte) {
	l.mu.Lock()
	defer l.mu.Unlock()
	// A full disk loses log lines, never the container: it must not block.
	_, _ = fmt.Fprintf(l.f, "%s %s %s %s\n", time.Now().UTC().Format(crilogs.RFC3339NanoFixed), stream, tag, text)
}
