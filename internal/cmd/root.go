// Package cmd holds regent's cobra commands. main.go only runs NewRoot.
package cmd

import (
	"fmt"

	"github.com/go-logr/logr"
	"github.com/spf13/cobra"
	"go.uber.org/zap/zapcore"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"

	"github.com/regent-dev/regent/internal/version"
)

// ExitError makes the process exit with Code after printing Err.
type ExitError struct {
	Code int
	Err  error
}

func (e ExitError) Error() string { return e.Err.Error() }

// NewRoot returns the regent command with every subcommand.
func NewRoot() *cobra.Command {
	root := &cobra.Command{
		Use:   "regent",
		Short: "Regent runs leader-follower PostgreSQL clusters on Kubernetes",
		Long: "Regent runs leader-follower PostgreSQL clusters on Kubernetes.\n\n" +
			"One binary plays every part: the operator (manager), the sidecar in each\n" +
			"database pod (agent), and PID 1 of the database container (instance).",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.AddCommand(
		newManagerCommand(),
		newAgentCommand(),
		newInstanceCommand(),
		newWALPushCommand(),
		newWALFetchCommand(),
		newWALRestoreCommand(),
		newInstallCommand(),
		newVersionCommand(),
	)
	return root
}

func newVersionCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the version",
		Args:  cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			_, err := fmt.Fprintln(c.OutOrStdout(), version.Version)
			return err
		},
	}
}

// newLogger is the in-pod processes' logger: JSON, with millisecond
// timestamps (a failover's steps are a few hundred milliseconds apart).
func newLogger() logr.Logger {
	return zap.New(func(o *zap.Options) { o.TimeEncoder = zapcore.RFC3339NanoTimeEncoder })
}
