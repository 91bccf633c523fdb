// Command kubectl-regent is the kubectl plugin of Regent: on PATH, it is
// `kubectl regent status|switchover|promote|psql|logs|backup …`.
package main

import (
	"fmt"
	"os"

	"github.com/regent-dev/regent/internal/plugin"
)

func main() {
	if err := plugin.NewRoot().Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "kubectl regent:", err)
		os.Exit(1)
	}
}
