package plugin

import (
	"bytes"
	"errors"
	"io"
	"strings"
	"sync"
	"testing"
	"testing/iotest"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	regentv1 "github.com/regent-dev/regent/api/v1alpha1"
	"github.com/regent-dev/regent/internal/names"
)

func TestLogTargets(t *testing.T) {
	rs := &regentv1.ReplicaSet{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "db"}}
	pods := []corev1.Pod{member("db-0", names.RoleLeader, "1", true), member("db-1", names.RoleFollower, "", true)}
	str := func(ts []logTarget) string {
		var s []string
		for _, t := range ts {
			s = append(s, t.prefix())
		}
		return strings.Join(s, "|")
	}
	for _, tc := range []struct {
		pod, container string
		want           string // the prefixes, or a part of the error
		wantErr        bool
	}{
		{want: "db-0/postgres |db-0/agent |db-1/postgres |db-1/agent "},
		{pod: "db-1", want: "db-1/postgres |db-1/agent "},
		{container: "agent", want: "db-0/agent |db-1/agent "},
		{pod: "db-0", container: "postgres", want: "db-0/postgres "},
		{container: "bootstrap", wantErr: true, want: `--container "bootstrap": the members' containers are postgres and agent`},
		{pod: "db-2", wantErr: true, want: "db-2 is not a pod of shop/db (pods: db-0, db-1)"},
	} {
		got, err := logTargets(rs, pods, tc.pod, tc.container)
		switch {
		case tc.wantErr && (err == nil || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("--pod %q --container %q: %q, %v; want an error saying %q", tc.pod, tc.container, str(got), err, tc.want)
		case !tc.wantErr && (err != nil || str(got) != tc.want):
			t.Errorf("--pod %q --container %q: %q, %v; want %q", tc.pod, tc.container, str(got), err, tc.want)
		}
	}
}

// lockedBuffer is written by mergeLines' goroutines while the test reads.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// Lines are printed as they arrive, each whole after its prefix: half a
// line of one stream waits for its end while the other stream's lines go
// by.
func TestMergeLinesInterleavesWholeLines(t *testing.T) {
	ar, aw := io.Pipe()
	br, bw := io.Pipe()
	var out lockedBuffer
	done := make(chan error, 1)
	go func() {
		done <- mergeLines(&out, []logSource{{prefix: "db-0/postgres ", r: ar}, {prefix: "db-1/agent ", r: br}})
	}()
	waitFor := func(s string) {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for !strings.Contains(out.String(), s) {
			if time.Now().After(deadline) {
				t.Fatalf("%q never printed; got:\n%s", s, out.String())
			}
			time.Sleep(time.Millisecond)
		}
	}
	write := func(w io.Writer, s string) {
		t.Helper()
		if _, err := io.WriteString(w, s); err != nil {
			t.Fatal(err)
		}
	}
	write(aw, "LOG:  database system is ready\nLOG:  checkpoint ")
	waitFor("db-0/postgres LOG:  database system is ready\n")
	write(bw, "renewed the lease\n")
	waitFor("db-1/agent renewed the lease\n")
	write(aw, "starting\n")
	waitFor("db-0/postgres LOG:  checkpoint starting\n")
	write(bw, "no newline at the end")
	_ = bw.Close()
	_ = aw.Close()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	want := "db-0/postgres LOG:  database system is ready\n" +
		"db-1/agent renewed the lease\n" +
		"db-0/postgres LOG:  checkpoint starting\n" +
		"db-1/agent no newline at the end\n"
	if got := out.String(); got != want {
		t.Errorf("merged\n%s\nwant\n%s", got, want)
	}
}

// Many lines of several streams at once: none is cut or mixed, each
// stream's in its order.
func TestMergeLinesKeepsEachStreamsOrder(t *testing.T) {
	var sources []logSource
	for _, p := range []string{"a ", "b ", "c "} {
		var b strings.Builder
		for i := range 500 {
			b.WriteString(strings.Repeat(p[:1], i%97) + "|" + string(rune('0'+i%10)) + "\n")
		}
		// One byte per Read: lines arrive in pieces.
		sources = append(sources, logSource{prefix: p, r: iotest.OneByteReader(strings.NewReader(b.String()))})
	}
	var out lockedBuffer
	if err := mergeLines(&out, sources); err != nil {
		t.Fatal(err)
	}
	next := map[string]int{}
	lines := strings.Split(strings.TrimSuffix(out.String(), "\n"), "\n")
	for _, l := range lines {
		p, rest, _ := strings.Cut(l, " ")
		i := next[p]
		want := strings.Repeat(p, i%97) + "|" + string(rune('0'+i%10))
		if rest != want {
			t.Fatalf("line %d of %s: %q, want %q", i, p, rest, want)
		}
		next[p]++
	}
	if len(lines) != 1500 || next["a"] != 500 || next["b"] != 500 || next["c"] != 500 {
		t.Errorf("%d lines, per stream %v", len(lines), next)
	}
}

// A stream that breaks is named in the error; the others are printed whole.
func TestMergeLinesNamesABrokenStream(t *testing.T) {
	broken := io.MultiReader(strings.NewReader("half a li"), iotest.ErrReader(errors.New("stream reset")))
	var out lockedBuffer
	err := mergeLines(&out, []logSource{{prefix: "db-0/agent ", r: broken}, {prefix: "db-1/agent ", r: strings.NewReader("ok\n")}})
	if err == nil || err.Error() != "db-0/agent stream reset" {
		t.Errorf("error %v, want db-0/agent stream reset", err)
	}
	if got := out.String(); !strings.Contains(got, "db-1/agent ok\n") || !strings.Contains(got, "db-0/agent half a li\n") {
		t.Errorf("printed %q", got)
	}
}
