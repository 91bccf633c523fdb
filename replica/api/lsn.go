package api

import "fmt"

// ParseLSN reads a WAL position in PostgreSQL's X/Y notation, as /status
// reports them.
func ParseLSN(s string) (uint64, error) {
	var hi, lo uint32
	if _, err := fmt.Sscanf(s, "%X/%X", &hi, &lo); err != nil {
		return 0, fmt.Errorf("LSN %q: %w", s, err)
	}
	return uint64(hi)<<32 | uint64(lo), nil
}

// FormatLSN writes a WAL position in PostgreSQL's X/Y notation.
func FormatLSN(lsn uint64) string { return fmt.Sprintf("%X/%X", lsn>>32, uint32(lsn)) }
