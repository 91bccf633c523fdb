package plugin

import (
	"fmt"
	"io"
	"strconv"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	regentv1 "github.com/regent-dev/regent/api/v1alpha1"
)

func statusCmd(o *options) *cobra.Command {
	return &cobra.Command{
		Use:     "status CLUSTER",
		Short:   "The cluster's members, roles, epoch, lag and eligibility, its last failover, certificates and archive",
		Example: "  kubectl regent status db -n shop",
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			_, rs, err := o.get(cmd, args[0])
			if err != nil {
				return err
			}
			printStatus(o.out, rs, time.Now())
			return nil
		},
	}
}

// printStatus writes what a person asks first of a cluster: is it serving,
// who leads, who could take over and why not, what the last failover cost.
func printStatus(w io.Writer, rs *regentv1.ReplicaSet, now time.Time) {
	st := rs.Status
	mode := rs.Spec.Replication.Mode
	if mode == "" {
		mode = regentv1.ReplicationAsync
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "Cluster:\t%s/%s\t%s, %s replication, %s ready\n", rs.Namespace, rs.Name, orDash(string(st.Phase)), mode, orDash(st.Ready))
	if st.Leader != "" {
		fmt.Fprintf(tw, "Leader:\t%s\tepoch %d\n", st.Leader, st.Epoch)
	} else {
		fmt.Fprintf(tw, "Leader:\tnone\tepoch %d\n", st.Epoch)
	}
	for _, t := range []string{regentv1.ConditionAvailable, regentv1.ConditionDegraded, regentv1.ConditionProgressing, regentv1.ConditionArchiving} {
		c := meta.FindStatusCondition(st.Conditions, t)
		if c == nil {
			continue
		}
		// What needs a look: not available, degraded, still progressing.
		if (t == regentv1.ConditionAvailable) == (c.Status == metav1.ConditionTrue) && t != regentv1.ConditionProgressing {
			continue
		}
		if t == regentv1.ConditionProgressing && c.Status != metav1.ConditionTrue {
			continue
		}
		fmt.Fprintf(tw, "%s:\t%s\t%s: %s\n", t, c.Status, c.Reason, c.Message)
	}
	if f := st.LastFailover; f != nil {
		fmt.Fprintf(tw, "Last failover:\t%s\n", failoverLine(f, now))
		if f.EstimatedLostBytes != nil {
			fmt.Fprintf(tw, "  RPO receipt:\t%d bytes estimated lost (old leader at %s, new leader at %s)\n",
				*f.EstimatedLostBytes, orDash(f.OldLeaderLSN), orDash(f.NewLeaderLSN))
		}
	}
	if c := st.Certificates; c != nil {
		line := "CA expires " + c.CAExpiresAt.UTC().Format(time.RFC3339)
		if c.ExpiresAt != nil {
			line = fmt.Sprintf("members' expire %s (in %s), %s", c.ExpiresAt.UTC().Format(time.RFC3339), age(c.ExpiresAt.Time, now), line)
		}
		fmt.Fprintf(tw, "Certificates:\t%s\n", line)
	}
	if a := st.Archive; a != nil {
		fmt.Fprintf(tw, "Archive:\t%s\n", archiveLine(a, now))
		if a.Backups > 0 || a.NextScheduledBackup != nil {
			fmt.Fprintf(tw, "Backups:\t%s\n", backupsLine(a, now))
		}
	}
	_ = tw.Flush()

	fmt.Fprintln(w)
	tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "MEMBER\tROLE\tREADY\tTIMELINE\tRECEIVED\tREPLAYED\tLAG\tDISK\tCAN LEAD\tWHY NOT")
	for _, m := range st.Members {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", m.Name, orDash(string(m.Role)), yesNo(&m.Ready),
			int64OrDash(m.Timeline), orDash(m.ReceivedLSN), orDash(m.ReplayedLSN), bytesOrDash(m.LagBytes), disk(m), yesNo(m.Eligible), m.Reason)
	}
	_ = tw.Flush()
}

// failoverLine says what the last failover was, when, and how long it took.
func failoverLine(f *regentv1.FailoverRecord, now time.Time) string {
	line := fmt.Sprintf("%s %s → %s at epoch %d", f.Kind, orDash(f.From), f.To, f.Epoch)
	if f.EndTime != nil {
		line += fmt.Sprintf(", %s ago", age(now, f.EndTime.Time))
		// The times are whole seconds.
		switch {
		case f.StartTime == nil:
		case f.EndTime.Sub(f.StartTime.Time) < time.Second:
			line += ", took under a second"
		default:
			line += fmt.Sprintf(", took about %s", f.EndTime.Sub(f.StartTime.Time))
		}
	}
	if f.Reason != "" {
		line += " (" + f.Reason + ")"
	}
	return line
}

func archiveLine(a *regentv1.ArchiveStatus, now time.Time) string {
	line := "last WAL " + orDash(a.LastArchivedWAL)
	if a.LastArchivedTime != nil {
		line += fmt.Sprintf(" %s ago", age(now, a.LastArchivedTime.Time))
	}
	return line + fmt.Sprintf(", %d pending", a.PendingWAL)
}

func backupsLine(a *regentv1.ArchiveStatus, now time.Time) string {
	line := fmt.Sprintf("%d kept", a.Backups)
	if a.LastBackup != "" {
		line += ", last " + a.LastBackup
		if a.LastBackupTime != nil {
			line += fmt.Sprintf(" %s ago", age(now, a.LastBackupTime.Time))
		}
	}
	if a.NextScheduledBackup != nil {
		line += ", next " + a.NextScheduledBackup.UTC().Format(time.RFC3339)
	}
	return line
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func yesNo(b *bool) string {
	switch {
	case b == nil:
		return "-"
	case *b:
		return "yes"
	}
	return "no"
}

func int64OrDash(v *int64) string {
	if v == nil {
		return "-"
	}
	return strconv.FormatInt(*v, 10)
}

func bytesOrDash(v *int64) string {
	if v == nil {
		return "-"
	}
	return humanBytes(*v)
}

func disk(m regentv1.MemberStatus) string {
	if m.DiskUsedBytes == nil || m.DiskCapacityBytes == nil || *m.DiskCapacityBytes == 0 {
		return "-"
	}
	return fmt.Sprintf("%d%% of %s", *m.DiskUsedBytes*100 / *m.DiskCapacityBytes, humanBytes(*m.DiskCapacityBytes))
}

// humanBytes writes n in the largest binary unit that keeps it at least 1.
func humanBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}

// age is how long from then to now, rounded for a person.
func age(now, then time.Time) string {
	d := now.Sub(then)
	switch {
	case d < time.Hour:
		return d.Round(time.Second).String()
	case d < 48*time.Hour:
		return d.Round(time.Minute).String()
	}
	return fmt.Sprintf("%d days", int(d.Hours()/24))
}
