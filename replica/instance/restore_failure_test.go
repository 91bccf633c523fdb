package instance

import "testing"

func TestRestoreFailureNamesTheCauseNotTheShutdown(t *testing.T) {
	lines := []string{
		`2026-11-29 10:47:01.000 UTC [10] LOG:  restored log file "000000010000000000000002" from archive`,
		`Error: wal-restore 000000010000000000000003: wal/000000010000000000000003.zst in s3://backups/ns/db at http://127.0.0.1:1: corrupt object: SHA-256 ab, recorded cd`,
		`2026-11-29 10:47:01.100 UTC [10] FATAL:  could not restore file "000000010000000000000003" from archive: child process exited with exit code 126`,
		`2026-11-29 10:47:01.200 UTC [12] FATAL:  archive command was terminated by signal 3: Quit`,
	}
	if got := restoreFailure(lines); got != "wal-restore 000000010000000000000003: wal/000000010000000000000003.zst in s3://backups/ns/db at http://127.0.0.1:1: corrupt object: SHA-256 ab, recorded cd" {
		t.Errorf("restoreFailure = %q", got)
	}
	if got := restoreFailure(lines[2:]); got != `FATAL: could not restore file "000000010000000000000003" from archive: child process exited with exit code 126` {
		t.Errorf("without wal-restore's line: %q", got)
	}
}
