package loopvol

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// A volume holds what its size allows and no more, grows online, and keeps
// its data across an unmount and a mount.
func TestAVolumeEnforcesItsSizeAndGrows(t *testing.T) {
	if testing.Short() || os.Geteuid() != 0 {
		t.Skip("mounts a loop device: root, and not -short")
	}
	dir := filepath.Join(t.TempDir(), "vol")
	if err := Create(dir, 32<<20); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = Remove(dir) })
	if err := Ready(dir); err != nil {
		t.Fatal(err)
	}
	fill := func(name string) int64 {
		f, err := os.Create(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		chunk := bytes.Repeat([]byte{1}, 1<<20)
		var n int64
		for n < 1<<30 {
			w, err := f.Write(chunk)
			n += int64(w)
			if err != nil {
				if !errors.Is(err, syscall.ENOSPC) {
					t.Fatalf("writing %s: %v, want ENOSPC", name, err)
				}
				return n
			}
		}
		t.Fatalf("wrote 1 GiB to a volume of 32 MiB")
		return n
	}
	first := fill("a")
	if first > 32<<20 || first < 20<<20 {
		t.Errorf("a 32 MiB volume took %d MiB", first>>20)
	}
	switch err := Grow(dir, 64<<20); {
	case err != nil && strings.Contains(err.Error(), "Permission denied"):
		// resize2fs needs CAP_SYS_RESOURCE to grow a mounted filesystem:
		// the growth waits for a moment nothing uses the volume.
		t.Logf("growing online is not permitted on this machine: %v", err)
		if pending, err := GrowPending(dir); err != nil || !pending {
			t.Fatalf("growth pending: %v, %v", pending, err)
		}
		if err := GrowOffline(dir); err != nil {
			t.Fatal(err)
		}
	case err != nil:
		t.Fatal(err)
	}
	if pending, err := GrowPending(dir); err != nil || pending {
		t.Fatalf("growth still pending: %v, %v", pending, err)
	}
	if more := fill("b"); more < 20<<20 {
		t.Errorf("after growing to 64 MiB, only %d MiB more fit", more>>20)
	}
	if err := Unmount(dir); err != nil {
		t.Fatal(err)
	}
	if err := Ready(dir); err == nil {
		t.Error("an unmounted volume was ready for pods")
	}
	if err := EnsureMounted(dir); err != nil {
		t.Fatal(err)
	}
	if st, err := os.Stat(filepath.Join(dir, "a")); err != nil || st.Size() != first {
		t.Errorf("after a remount: %v, %v", st, err)
	}
}
