// Command regent is the one binary of Regent: the operator (manager), the
// in-pod sidecar (agent), the database container's PID 1 (instance), the
// WAL archive hooks PostgreSQL calls (wal-push, wal-fetch), and the helper
// the init container uses to copy the binary (install).
package main

import (
	"errors"
	"fmt"
	"os"

	"github.com/regent-dev/regent/internal/cmd"
)

func main() {
	err := cmd.NewRoot().Execute()
	var exit cmd.ExitError
	switch {
	case err == nil:
	case errors.As(err, &exit):
		if exit.Err.Error() != "" {
			fmt.Fprintln(os.Stderr, "regent:", exit.Err)
		}
		os.Exit(exit.Code)
	default:
		fmt.Fprintln(os.Stderr, "regent:", err)
		os.Exit(1)
	}
}
