package plugin

import (
	"context"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/spf13/cobra"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"sigs.k8s.io/controller-runtime/pkg/client"

	regentv1 "github.com/regent-dev/regent/api/v1alpha1"
	"github.com/regent-dev/regent/internal/names"
)

func backupCmd(o *options) *cobra.Command {
	var name string
	var waitDone bool
	var timeout time.Duration
	c := &cobra.Command{
		Use:   "backup CLUSTER [--name NAME] [--wait]",
		Short: "Take a base backup now: creates a Backup of the cluster, into its object store",
		Long: "Creates a Backup (kubectl get dbbackup lists them) of CLUSTER, named CLUSTER-<UTC time> unless --name says; " +
			"the operator takes it on the most advanced ready follower (docs/backup.md). With --wait, returns once it completed " +
			"(printing the WAL it spans and its size) or failed.",
		Example: "  kubectl regent backup db -n shop --wait",
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, rs, err := o.get(cmd, args[0])
			if err != nil {
				return err
			}
			if rs.Spec.Backup.ObjectStore == nil {
				return fmt.Errorf("%s/%s has no spec.backup.objectStore, so nowhere to put a backup: set one first (docs/backup.md)", rs.Namespace, rs.Name)
			}
			now := time.Now()
			if name == "" {
				// The scheduled Backups' form: names sort by age.
				name = rs.Name + "-" + strings.ToLower(now.UTC().Format("20060102T150405Z"))
			}
			b := &regentv1.Backup{
				ObjectMeta: metav1.ObjectMeta{Namespace: rs.Namespace, Name: name, Labels: map[string]string{names.LabelCluster: rs.Name}},
				Spec:       regentv1.BackupSpec{Cluster: rs.Name},
			}
			switch err := c.Create(cmd.Context(), b); {
			case apierrors.IsAlreadyExists(err):
				return fmt.Errorf("a Backup %s already exists in namespace %s: --name gives another name", name, rs.Namespace)
			case noRegent(err):
				return fmt.Errorf("this cluster has no Backups of group regent.dev: is Regent's operator up to date?")
			case err != nil:
				return fmt.Errorf("create the Backup %s/%s: %w", rs.Namespace, name, err)
			}
			if !waitDone {
				fmt.Fprintf(o.out, "Backup %s/%s of %s created (kubectl get dbbackup %s -n %s -w follows it)\n", b.Namespace, b.Name, rs.Name, b.Name, b.Namespace)
				return nil
			}
			fmt.Fprintf(o.out, "Backup %s/%s of %s created, waiting for it\n", b.Namespace, b.Name, rs.Name)
			key := client.ObjectKeyFromObject(b)
			var phase regentv1.BackupPhase
			err = wait.PollUntilContextTimeout(cmd.Context(), 500*time.Millisecond, timeout, true, func(ctx context.Context) (bool, error) {
				if err := c.Get(ctx, key, b); err != nil {
					return false, nil //nolint:nilerr // a transient read error: poll again
				}
				if b.Status.Phase == regentv1.BackupRunning && phase != b.Status.Phase {
					fmt.Fprintf(o.out, "running on %s%s\n", b.Status.Member, standby(b))
				}
				phase = b.Status.Phase
				return phase == regentv1.BackupCompleted || phase == regentv1.BackupFailed, nil
			})
			switch {
			case err != nil:
				return fmt.Errorf("the Backup %s/%s has not ended after %s (phase %s): kubectl describe dbbackup %s -n %s says more",
					b.Namespace, b.Name, timeout, orDash(string(b.Status.Phase)), b.Name, b.Namespace)
			case phase == regentv1.BackupFailed:
				return fmt.Errorf("the Backup %s/%s failed: %s", b.Namespace, b.Name, orDash(b.Status.Error))
			}
			printBackup(o.out, b)
			return nil
		},
	}
	c.Flags().StringVar(&name, "name", "", "the Backup's name (default CLUSTER-<UTC time>)")
	c.Flags().BoolVar(&waitDone, "wait", false, "wait until the backup completed or failed")
	c.Flags().DurationVar(&timeout, "timeout", time.Hour, "how long to wait, with --wait")
	return c
}

// printBackup writes what a completed backup holds: what a recovery from
// it reaches and what it costs in the store.
func printBackup(w io.Writer, b *regentv1.Backup) {
	st := b.Status
	fmt.Fprintf(w, "Backup %s/%s completed: ID %s, taken on %s%s", b.Namespace, b.Name, orDash(st.ID), orDash(st.Member), standby(b))
	if st.StartedAt != nil && st.CompletedAt != nil {
		fmt.Fprintf(w, " in %s", st.CompletedAt.Sub(st.StartedAt.Time))
	}
	fmt.Fprintf(w, "\n  WAL: timeline %d, %s to %s (consistent at %s)\n", st.Timeline, orDash(st.StartLSN), orDash(st.EndLSN), orDash(st.EndLSN))
	fmt.Fprintf(w, "  size: %s read, %s stored\n", humanBytes(st.Bytes), humanBytes(st.StoredBytes))
}

func standby(b *regentv1.Backup) string {
	if b.Status.FromStandby {
		return " (a follower)"
	}
	return " (the leader)"
}
