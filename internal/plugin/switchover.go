package plugin

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/util/wait"
	"sigs.k8s.io/controller-runtime/pkg/client"

	regentv1 "github.com/regent-dev/regent/api/v1alpha1"
	"github.com/regent-dev/regent/internal/names"
)

func switchoverCmd(o *options) *cobra.Command {
	var timeout time.Duration
	var noWait bool
	c := &cobra.Command{
		Use:   "switchover CLUSTER TARGET",
		Short: "Hand leadership to a follower, cleanly: the leader stops, the target promotes with every commit",
		Long: "Asks the operator to hand the cluster's leadership to TARGET (it sets the " + names.AnnotationSwitchoverTo +
			" annotation) and waits until TARGET leads. TARGET must be a follower the operator reports able to lead.",
		Example: "  kubectl regent switchover db db-1 -n shop",
		Args:    cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, rs, err := o.get(cmd, args[0])
			if err != nil {
				return err
			}
			target := args[1]
			if err := canLead(rs, target); err != nil {
				return err
			}
			epoch, start := rs.Status.Epoch, time.Now()
			patch := client.RawPatch("application/merge-patch+json",
				fmt.Appendf(nil, `{"metadata":{"annotations":{%q:%q}}}`, names.AnnotationSwitchoverTo, target))
			if err := c.Patch(cmd.Context(), rs, patch); err != nil {
				return fmt.Errorf("ask for the switchover: %w", err)
			}
			if noWait {
				fmt.Fprintf(o.out, "asked %s/%s to hand leadership from %s to %s\n", rs.Namespace, rs.Name, rs.Status.Leader, target)
				return nil
			}
			key := client.ObjectKeyFromObject(rs)
			err = wait.PollUntilContextTimeout(cmd.Context(), 200*time.Millisecond, timeout, true, func(ctx context.Context) (bool, error) {
				if err := c.Get(ctx, key, rs); err != nil {
					return false, nil //nolint:nilerr // a transient read error: poll again
				}
				return rs.Status.Leader == target && rs.Status.Epoch > epoch, nil
			})
			if err != nil {
				why := ""
				if p := meta.FindStatusCondition(rs.Status.Conditions, regentv1.ConditionProgressing); p != nil {
					why = fmt.Sprintf(" (Progressing: %s: %s)", p.Reason, p.Message)
				}
				return fmt.Errorf("%s does not lead %s/%s after %s: the leader is %q at epoch %d%s; kubectl get events -n %s says more",
					target, rs.Namespace, rs.Name, timeout, rs.Status.Leader, rs.Status.Epoch, why, rs.Namespace)
			}
			fmt.Fprintf(o.out, "%s leads %s/%s at epoch %d, %s after the request\n", target, rs.Namespace, rs.Name,
				rs.Status.Epoch, time.Since(start).Round(10*time.Millisecond))
			return nil
		},
	}
	c.Flags().DurationVar(&timeout, "timeout", time.Minute, "how long to wait for the target to lead")
	c.Flags().BoolVar(&noWait, "no-wait", false, "ask, and return without waiting")
	return c
}

// canLead says why target cannot take the cluster's leadership over now
// (nil when the operator reports it can).
func canLead(rs *regentv1.ReplicaSet, target string) error {
	st := rs.Status
	i := slices.IndexFunc(st.Members, func(m regentv1.MemberStatus) bool { return m.Name == target })
	switch {
	case i < 0:
		var members []string
		for _, m := range st.Members {
			members = append(members, m.Name)
		}
		return fmt.Errorf("%s is not a member of %s/%s (members: %s)", target, rs.Namespace, rs.Name, strings.Join(members, ", "))
	case st.Leader == target:
		return fmt.Errorf("%s already leads %s/%s (epoch %d)", target, rs.Namespace, rs.Name, st.Epoch)
	case st.Leader == "":
		return fmt.Errorf("%s/%s has no leader to hand over from (phase %s): the operator fails over by itself", rs.Namespace, rs.Name, orDash(string(st.Phase)))
	}
	if m := st.Members[i]; m.Eligible == nil || !*m.Eligible {
		why := m.Reason
		if why == "" {
			why = "the operator does not report it able to lead"
		}
		return fmt.Errorf("%s cannot lead %s/%s now: %s", target, rs.Namespace, rs.Name, why)
	}
	return nil
}
