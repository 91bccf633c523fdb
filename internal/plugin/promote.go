package plugin

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/spf13/cobra"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"sigs.k8s.io/controller-runtime/pkg/client"

	regentv1 "github.com/regent-dev/regent/api/v1alpha1"
	"github.com/regent-dev/regent/internal/names"
)

func promoteCmd(o *options) *cobra.Command {
	var timeout time.Duration
	var acceptDataLoss, waitDone bool
	c := &cobra.Command{
		Use:   "promote CLUSTER POD --accept-data-loss",
		Short: "Force POD to lead when an election cannot finish, giving up the writes it lacks",
		Long: "The escape hatch of an election that cannot finish (docs/failover.md): sets " + names.AnnotationPromote +
			"=POD and " + names.AnnotationAcceptDataLoss + "=true, and waits until the operator has promoted POD or refused. " +
			"The operator promotes POD once the lost leader's epoch is sealed and POD reported, whatever the election's rules say; " +
			"it refuses while the leader is not lost. For a healthy cluster, switchover hands leadership over without losing anything.",
		Example: "  kubectl regent promote db db-1 --accept-data-loss -n shop",
		Args:    cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, rs, err := o.get(cmd, args[0])
			if err != nil {
				return err
			}
			target := args[1]
			if err := canForce(cmd.Context(), c, rs, target); err != nil {
				return err
			}
			if !acceptDataLoss {
				return fmt.Errorf("a forced promotion makes %s lead %s/%s whatever the election says: the commits %s lacks are lost, "+
					"even acknowledged ones, even in Sync mode. Add --accept-data-loss if the election cannot finish and that is the price; "+
					"to move a healthy cluster's leadership, kubectl regent switchover %s %s loses nothing",
					target, rs.Namespace, rs.Name, target, rs.Name, target)
			}
			// Refusals seen before the request are not answers to it.
			seen, err := promoteRefusals(cmd.Context(), c, rs)
			if err != nil {
				return err
			}
			known := map[string]string{}
			for _, e := range seen {
				known[e.Name] = e.ResourceVersion
			}
			epoch, start := rs.Status.Epoch, time.Now()
			patch := client.RawPatch("application/merge-patch+json", fmt.Appendf(nil, `{"metadata":{"annotations":{%q:%q,%q:"true"}}}`,
				names.AnnotationPromote, target, names.AnnotationAcceptDataLoss))
			if err := c.Patch(cmd.Context(), rs, patch); err != nil {
				return fmt.Errorf("ask for the forced promotion: %w", err)
			}
			withdraw := fmt.Sprintf("kubectl annotate dbrs/%s -n %s %s- %s-", rs.Name, rs.Namespace, names.AnnotationPromote, names.AnnotationAcceptDataLoss)
			if !waitDone {
				fmt.Fprintf(o.out, "asked the operator to promote %s in %s/%s, accepting data loss (%s withdraws it)\n",
					target, rs.Namespace, rs.Name, withdraw)
				return nil
			}

			key := client.ObjectKeyFromObject(rs)
			var refused *corev1.Event
			err = wait.PollUntilContextTimeout(cmd.Context(), 200*time.Millisecond, timeout, true, func(ctx context.Context) (bool, error) {
				if err := c.Get(ctx, key, rs); err != nil {
					return false, nil //nolint:nilerr // a transient read error: poll again
				}
				if forcedDone(rs, target, epoch) {
					return true, nil
				}
				events, err := promoteRefusals(ctx, c, rs)
				if err != nil {
					return false, nil //nolint:nilerr // as above
				}
				for i := range events {
					if rv, ok := known[events[i].Name]; !ok || rv != events[i].ResourceVersion {
						refused = &events[i]
						return true, nil
					}
				}
				return false, nil
			})
			switch {
			case refused != nil:
				// The operator removes a request it refuses while the leader
				// is not lost; one it left (an older operator) would force
				// a later election, so the plugin withdraws it.
				what := "the operator removed the request"
				if err := c.Get(cmd.Context(), key, rs); err != nil || rs.Annotations[names.AnnotationPromote] == target {
					what = "the request was withdrawn"
					if werr := withdrawPromote(cmd.Context(), c, rs, target); werr != nil {
						what = fmt.Sprintf("the request could not be withdrawn (%v): %s does", werr, withdraw)
					}
				}
				return fmt.Errorf("the operator refused to promote %s: %s (%s)", target, refused.Message, what)
			case err != nil:
				return promoteTimeout(cmd.Context(), c, rs, target, timeout, withdraw)
			}
			// The receipt may come before the status names the leader.
			led, f := rs.Status.Epoch, rs.Status.LastFailover
			if f == nil || f.To != target || f.Epoch <= epoch {
				f = nil
			} else {
				led = f.Epoch
			}
			fmt.Fprintf(o.out, "%s leads %s/%s at epoch %d, forced, %s after the request\n", target, rs.Namespace, rs.Name,
				led, time.Since(start).Round(10*time.Millisecond))
			if f != nil && f.EstimatedLostBytes != nil {
				fmt.Fprintf(o.out, "RPO receipt: %d bytes estimated lost (old leader at %s, %s at %s)\n",
					*f.EstimatedLostBytes, orDash(f.OldLeaderLSN), target, orDash(f.NewLeaderLSN))
			}
			return nil
		},
	}
	c.Flags().BoolVar(&acceptDataLoss, "accept-data-loss", false, "accept that the commits POD lacks are lost (required)")
	c.Flags().BoolVar(&waitDone, "wait", true, "wait until the operator promoted POD or refused")
	c.Flags().DurationVar(&timeout, "timeout", 2*time.Minute, "how long to wait")
	return c
}

// canForce says why target cannot be forced to lead (nil when it can be
// asked for): it must be an existing pod of the cluster that does not lead.
func canForce(ctx context.Context, c client.Client, rs *regentv1.ReplicaSet, target string) error {
	n := int(rs.DesiredReplicas())
	if i, ok := names.Ordinal(rs.Name, target); !ok || i >= n {
		members := make([]string, n)
		for i := range members {
			members[i] = names.Pod(rs.Name, i)
		}
		return fmt.Errorf("%s is not a member of %s/%s (members: %s)", target, rs.Namespace, rs.Name, strings.Join(members, ", "))
	}
	if rs.Status.Leader == target {
		return fmt.Errorf("%s already leads %s/%s (epoch %d)", target, rs.Namespace, rs.Name, rs.Status.Epoch)
	}
	err := c.Get(ctx, client.ObjectKey{Namespace: rs.Namespace, Name: target}, &corev1.Pod{})
	switch {
	case apierrors.IsNotFound(err):
		return fmt.Errorf("%s of %s/%s has no pod: only a member running as a follower can be promoted", target, rs.Namespace, rs.Name)
	case err != nil:
		return fmt.Errorf("read pod %s/%s: %w", rs.Namespace, target, err)
	}
	return nil
}

// forcedDone: the operator promoted target and spent the request. Its
// promotion records lastFailover and clears the annotations before the
// pass writes the leader, so either says it is done.
func forcedDone(rs *regentv1.ReplicaSet, target string, epoch int64) bool {
	if rs.Annotations[names.AnnotationPromote] != "" {
		return false
	}
	f := rs.Status.LastFailover
	return rs.Status.Leader == target || (f != nil && f.To == target && f.Epoch > epoch)
}

// promoteRefusals lists the PromoteRefused events of rs.
func promoteRefusals(ctx context.Context, c client.Client, rs *regentv1.ReplicaSet) ([]corev1.Event, error) {
	var list corev1.EventList
	err := c.List(ctx, &list, client.InNamespace(rs.Namespace), client.MatchingFields{
		"involvedObject.uid": string(rs.UID), "reason": regentv1.EventPromoteRefused,
	})
	if err != nil {
		return nil, fmt.Errorf("list the events of %s/%s: %w", rs.Namespace, rs.Name, err)
	}
	return list.Items, nil
}

// withdrawPromote removes the request for target, unless someone changed it
// meanwhile.
func withdrawPromote(ctx context.Context, c client.Client, rs *regentv1.ReplicaSet, target string) error {
	esc := func(k string) string { return "/metadata/annotations/" + strings.ReplaceAll(k, "/", "~1") }
	patch := client.RawPatch("application/json-patch+json", fmt.Appendf(nil,
		`[{"op":"test","path":%q,"value":%q},{"op":"remove","path":%q},{"op":"remove","path":%q}]`,
		esc(names.AnnotationPromote), target, esc(names.AnnotationPromote), esc(names.AnnotationAcceptDataLoss)))
	return c.Patch(ctx, rs, patch)
}

// promoteTimeout says what the operator is doing with a request it has
// neither carried out nor refused.
func promoteTimeout(ctx context.Context, c client.Client, rs *regentv1.ReplicaSet, target string, timeout time.Duration, withdraw string) error {
	var b strings.Builder
	fmt.Fprintf(&b, "%s does not lead %s/%s after %s: the leader is %q at epoch %d", target, rs.Namespace, rs.Name,
		timeout, rs.Status.Leader, rs.Status.Epoch)
	for _, t := range []string{regentv1.ConditionProgressing, regentv1.ConditionDegraded} {
		if p := meta.FindStatusCondition(rs.Status.Conditions, t); p != nil && p.Status == metav1.ConditionTrue {
			fmt.Fprintf(&b, " (%s: %s: %s)", t, p.Reason, p.Message)
		}
	}
	// The operator says a repeated refusal only once: an older one may be
	// the answer.
	if events, err := promoteRefusals(ctx, c, rs); err == nil && len(events) > 0 {
		last := &events[0]
		for i := range events {
			if eventTime(&events[i]).After(eventTime(last)) {
				last = &events[i]
			}
		}
		fmt.Fprintf(&b, "; the last PromoteRefused event, %s ago: %s", age(time.Now(), eventTime(last)), last.Message)
	}
	if rs.Annotations[names.AnnotationPromote] == target {
		fmt.Fprintf(&b, "; the request stands, and the operator acts on it once it can (%s withdraws it)", withdraw)
	} else {
		fmt.Fprintf(&b, "; the request is no longer on %s/%s", rs.Namespace, rs.Name)
	}
	return errors.New(b.String())
}

// eventTime is when e last happened, whichever API wrote it.
func eventTime(e *corev1.Event) time.Time {
	t := e.LastTimestamp.Time
	if e.Series != nil && e.Series.LastObservedTime.After(t) {
		t = e.Series.LastObservedTime.Time
	}
	if e.EventTime.After(t) {
		t = e.EventTime.Time
	}
	return t
}
