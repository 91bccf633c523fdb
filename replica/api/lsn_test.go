package api

import "testing"

func TestLSN(t *testing.T) {
	for _, s := range []string{"0/0", "0/5000100", "1A/FF000028"} {
		n, err := ParseLSN(s)
		if err != nil || FormatLSN(n) != s {
			t.Errorf("%s → %d, %v → %s", s, n, err, FormatLSN(n))
		}
	}
	if _, err := ParseLSN("nonsense"); err == nil {
		t.Error("nonsense parsed")
	}
}
