package lsn

import (
	"encoding/json"
	"testing"
)

func TestParseAndStringAgreeWithPostgres(t *testing.T) {
	for _, tc := range []struct {
		text string
		want LSN
	}{
		{"0/0", 0},
		{"0/3000060", 0x3000060},
		{"16/B374D848", 0x16B374D848},
		{"FFFFFFFF/FFFFFFFF", 1<<64 - 1},
	} {
		got, err := Parse(tc.text)
		if err != nil || got != tc.want {
			t.Errorf("Parse(%q) = %v, %v; want %#x", tc.text, got, err, uint64(tc.want))
		}
		if s := tc.want.String(); s != tc.text {
			t.Errorf("%#x prints %q, want %q", uint64(tc.want), s, tc.text)
		}
	}
	for _, bad := range []string{"", "3000060", "0/", "/1", "G/1", "1/2/3", "100000000/0", "-1/0", " 0/1"} {
		if got, err := Parse(bad); err == nil {
			t.Errorf("Parse(%q) = %v, want an error", bad, got)
		}
	}
}

// /status and instance's reports carry LSNs as X/Y strings, and leave
// unknown positions out.
func TestJSONUsesTheXYFormAndOmitsTheZeroLSN(t *testing.T) {
	type report struct {
		Written  LSN `json:"written,omitempty"`
		Received LSN `json:"received,omitempty"`
	}
	b, err := json.Marshal(report{Written: 0x3000060})
	if err != nil {
		t.Fatal(err)
	}
	if string(b) != `{"written":"0/3000060"}` {
		t.Errorf("marshalled %s", b)
	}
	var r report
	if err := json.Unmarshal([]byte(`{"written":"16/B374D848","received":""}`), &r); err != nil {
		t.Fatal(err)
	}
	if r.Written != 0x16B374D848 || r.Received != 0 {
		t.Errorf("unmarshalled %+v", r)
	}
	if err := json.Unmarshal([]byte(`{"written":"nonsense"}`), &r); err == nil {
		t.Error("an unreadable LSN was accepted")
	}
}

func TestSubNeverWrapsAround(t *testing.T) {
	if got := LSN(0x3000100).Sub(0x3000000); got != 0x100 {
		t.Errorf("ahead by %#x", got)
	}
	if got := LSN(0x3000000).Sub(0x3000100); got != 0 {
		t.Errorf("behind gives %#x, want 0", got)
	}
}
