package instance

import (
	"slices"
	"testing"
)

// pg_wal of a soak member after 19 failovers, redo in 00000014…22: the copies
// of the segments each timeline ended in are superseded; the only copy of a
// segment, the redo's segment and anything after it, history files, a
// segment of the current timeline and one still to be archived are kept.
func TestSupersededWALIsOnlyWhatALaterTimelineHolds(t *testing.T) {
	const seg = 16 << 20
	history := `1	0/3000000	no recovery target specified
14	0/1B6A2F08	no recovery target specified
15	0/1D123456	no recovery target specified
16	0/1E800000	no recovery target specified
17	0/1F100000	no recovery target specified
18	0/21000000	no recovery target specified
19	0/21400000	no recovery target specified
`
	ends, err := parseHistory(history)
	if err != nil {
		t.Fatal(err)
	}
	files := []string{
		"00000013.history", "00000014.history",
		"0000000E000000000000001B.partial", // TL 14 ended in 1B
		"0000000F000000000000001C",         // the only copy of 1C
		"0000000F000000000000001D",         // TL 15 ended in 1D
		"00000010000000000000001D",         // the only copy of what TL 16 has of 1D
		"00000010000000000000001E",         // TL 16 ended in 1E
		"00000010000000000000001E.partial", // and its partial
		"00000011000000000000001E",
		"00000011000000000000001F.partial", // TL 17 ended in 1F, waiting for the archiver
		"00000012000000000000001F",
		"000000120000000000000020",
		"000000120000000000000021",         // TL 18 ended exactly at 21's start
		"000000130000000000000021.partial", // TL 19 ended in 21
		"000000140000000000000021",
		"000000140000000000000022", // the redo's
		"000000140000000000000023", // recycled ahead
		"0000000F0000000000000024", // an ancestor's, but ahead of the redo
		"archive_status",
	}
	ready := map[string]bool{"00000011000000000000001F.partial": true}
	redo, ok := parseWALFile("000000140000000000000022", seg)
	if !ok || redo.timeline != 20 || redo.segno != 0x22 {
		t.Fatalf("redo parsed as %+v, %v", redo, ok)
	}
	got := supersededWAL(files, seg, ends, redo.segno, ready)
	want := []string{
		"0000000E000000000000001B.partial",
		"0000000F000000000000001D",
		"00000010000000000000001E",
		"00000010000000000000001E.partial",
		"000000120000000000000021",
		"000000130000000000000021.partial",
	}
	if !slices.Equal(got, want) {
		t.Errorf("superseded:\n got %q\nwant %q", got, want)
	}
}

// Segment numbers run across the log files' boundaries (0x100 segments of
// 16 MiB each), and other segment sizes divide a log file differently.
func TestWALFileNamesGiveTheirSegmentNumber(t *testing.T) {
	for _, c := range []struct {
		name  string
		size  uint64
		segno uint64
	}{
		{"0000000300000001000000FF", 16 << 20, 0x1FF},
		{"000000030000000200000000.partial", 16 << 20, 0x200},
		{"000000010000000100000003", 1 << 20, 0x1003},
	} {
		f, ok := parseWALFile(c.name, c.size)
		if !ok || f.segno != c.segno || f.timeline != 1 && f.timeline != 3 {
			t.Errorf("%s: %+v, %v; want segment %#x", c.name, f, ok, c.segno)
		}
	}
	for _, name := range []string{"00000003.history", "000000030000000200000000.backup", "archive_status", "xlogtemp.12"} {
		if _, ok := parseWALFile(name, 16<<20); ok {
			t.Errorf("%s taken for a segment", name)
		}
	}
	if _, err := parseHistory("7\tnot-an-lsn\treason\n"); err == nil {
		t.Error("a history line without a position was read")
	}
}
