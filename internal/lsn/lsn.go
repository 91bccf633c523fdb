// Package lsn is PostgreSQL's WAL position as one type for every part of
// Regent: the agents' /status, instance's reports, the Lease and the
// failover decision all carry an LSN, written in PostgreSQL's X/Y form.
package lsn

import (
	"database/sql/driver"
	"fmt"
	"strconv"
	"strings"
)

// LSN is a WAL position. The zero LSN is no position: PostgreSQL's WAL
// starts above it, so it stands for "unknown" wherever one may be missing,
// and is left out of JSON with omitempty.
type LSN uint64

// Parse reads PostgreSQL's X/Y form (two hexadecimal numbers of at most 32
// bits each).
func Parse(s string) (LSN, error) {
	hi, lo, ok := strings.Cut(s, "/")
	if !ok {
		return 0, fmt.Errorf("LSN %q: not of the form X/Y", s)
	}
	h, err := strconv.ParseUint(hi, 16, 32)
	if err != nil {
		return 0, fmt.Errorf("LSN %q: %w", s, err)
	}
	l, err := strconv.ParseUint(lo, 16, 32)
	if err != nil {
		return 0, fmt.Errorf("LSN %q: %w", s, err)
	}
	return LSN(h<<32 | l), nil
}

// String writes PostgreSQL's X/Y form, as pg_lsn prints it.
func (l LSN) String() string { return fmt.Sprintf("%X/%X", uint64(l)>>32, uint64(l)&0xFFFFFFFF) }

// Text is the X/Y form, or "" for the zero LSN (no position), as JSON
// and the ReplicaSet's status carry it.
func (l LSN) Text() string {
	if l == 0 {
		return ""
	}
	return l.String()
}

// MarshalText writes the X/Y form; the zero LSN as "" (no position).
func (l LSN) MarshalText() ([]byte, error) {
	return []byte(l.Text()), nil
}

// UnmarshalText reads the X/Y form; "" is the zero LSN.
func (l *LSN) UnmarshalText(b []byte) error {
	if len(b) == 0 {
		*l = 0
		return nil
	}
	v, err := Parse(string(b))
	if err != nil {
		return err
	}
	*l = v
	return nil
}

// Scan reads a pg_lsn (or NULL, the zero LSN) from a query's result.
func (l *LSN) Scan(src any) error {
	switch v := src.(type) {
	case nil:
		*l = 0
		return nil
	case string:
		return l.UnmarshalText([]byte(v))
	case []byte:
		return l.UnmarshalText(v)
	}
	return fmt.Errorf("LSN: cannot scan %T", src)
}

// Value writes the X/Y form as a query argument (NULL for the zero LSN).
func (l LSN) Value() (driver.Value, error) {
	if l == 0 {
		return nil, nil
	}
	return l.String(), nil
}

// Sub is how many bytes l is ahead of o (0 when it is not).
func (l LSN) Sub(o LSN) uint64 {
	if l <= o {
		return 0
	}
	return uint64(l - o)
}
