package walarchive

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"testing"
)

func TestPruneKeepsTheNewestSegmentsAndEveryHistoryFile(t *testing.T) {
	dir := t.TempDir()
	a := Archive{Dir: filepath.Join(dir, "archive"), Keep: 3}
	src := filepath.Join(dir, "src")
	push := func(name string) {
		t.Helper()
		if err := os.WriteFile(src, []byte(name), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := a.Push(src, name); err != nil {
			t.Fatal(err)
		}
	}
	push("00000002.history")
	// Timeline 2 continues from segment 5 of timeline 1: by position,
	// 1/4 < 1/5 < 2/5 < 2/6.
	for _, name := range []string{"000000010000000000000004", "000000010000000000000005",
		"000000020000000000000005", "000000020000000000000006"} {
		push(name)
	}
	entries, err := os.ReadDir(a.Dir)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, e := range entries {
		got = append(got, e.Name())
	}
	want := []string{"00000002.history", "000000010000000000000005", "000000020000000000000005", "000000020000000000000006"}
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Fatalf("archive holds %v, want %v", got, want)
	}
	f, size, err := a.Open("000000020000000000000006")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	out := filepath.Join(dir, "RECOVERYXLOG")
	if err := Restore(f, size, out); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(out); string(b) != "000000020000000000000006" {
		t.Fatalf("restored %q", b)
	}
	if _, _, err := a.Open("000000010000000000000004"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("pruned segment: got %v, want ErrNotFound", err)
	}
}

func TestRestoreOfATruncatedTransferLeavesNothing(t *testing.T) {
	out := filepath.Join(t.TempDir(), "RECOVERYXLOG")
	r := io.LimitReader(zeros{}, 10)
	if err := Restore(r, 16, out); err == nil {
		t.Fatal("a short transfer was accepted")
	}
	if _, err := os.Stat(out); !os.IsNotExist(err) {
		t.Fatalf("a short transfer left %s", out)
	}
}

type zeros struct{}

func (zeros) Read(p []byte) (int, error) { clear(p); return len(p), nil }

func TestValidName(t *testing.T) {
	for name, want := range map[string]bool{
		"000000010000000000000001":                 true,
		"000000010000000000000001.partial":         true,
		"000000010000000000000002.00000028.backup": true,
		"00000003.history":                         true,
		"../000000010000000000000001":              false,
		"000000010000000000000001/x":               false,
		"pg_control":                               false,
		fmt.Sprintf("%024d", 1) + "\n":             false,
	} {
		if ValidName(name) != want {
			t.Errorf("ValidName(%q) = %v, want %v", name, !want, want)
		}
	}
}

func TestWithAStorePruneDropsShippedSegmentsFirst(t *testing.T) {
	dir := t.TempDir()
	a := Archive{Dir: filepath.Join(dir, "archive"), Keep: 3, Ship: true}
	src := filepath.Join(dir, "src")
	push := func(name string) {
		t.Helper()
		if err := os.WriteFile(src, []byte(name), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := a.Push(src, name); err != nil {
			t.Fatal(err)
		}
	}
	names := func() []string {
		t.Helper()
		files, err := a.Files()
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, f := range files {
			out = append(out, f.Name)
		}
		return out
	}
	push("000000010000000000000001")
	push("000000010000000000000002")
	push("00000002.history")
	push("000000020000000000000003")
	// The store has 2 and 3, not 1: pushing 4 drops 2, the oldest shipped.
	for _, n := range []string{"000000010000000000000002", "000000020000000000000003"} {
		if err := a.MarkShipped(n); err != nil {
			t.Fatal(err)
		}
	}
	push("000000020000000000000004")
	want := []string{"00000002.history", "000000010000000000000001", "000000020000000000000003", "000000020000000000000004"}
	if got := names(); !slices.Equal(got, want) {
		t.Fatalf("after the first prune: %v, want %v", got, want)
	}
	if a.Shipped("000000010000000000000002") {
		t.Error("the shipped mark outlived its segment")
	}
	// 5 drops 3 (shipped); 6 then has only unshipped segments to drop: the
	// oldest goes, the budget wins.
	push("000000020000000000000005")
	push("000000020000000000000006")
	want = []string{"00000002.history", "000000020000000000000004", "000000020000000000000005", "000000020000000000000006"}
	if got := names(); !slices.Equal(got, want) {
		t.Fatalf("after the store fell behind: %v, want %v", got, want)
	}
}
