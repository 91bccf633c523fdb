package agent

import "testing"

func TestLSNBytes(t *testing.T) {
	for lsn, want := range map[string]float64{
		"0/3000060": 0x3000060,
		"1/0":       1 << 32,
		"A/FF":      10<<32 | 0xFF,
		"":          0,
		"garbage":   0,
	} {
		if got := lsnBytes(lsn); got != want {
			t.Errorf("lsnBytes(%q) = %v, want %v", lsn, got, want)
		}
	}
}
