package plugin

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"math"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"syscall"

	"github.com/spf13/cobra"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	regentv1 "github.com/regent-dev/regent/api/v1alpha1"
	"github.com/regent-dev/regent/internal/names"
)

// psqlScript runs in the postgres container. Its socket asks for a
// password (scram-sha-256, as every local login but replication's), so the
// superuser's is read where the pod mounts it: it never travels through
// kubectl's argv or the API server's logs, and a person needs the right
// to exec, not to read Secrets.
const psqlScript = `PGPASSWORD="$(cat ` + names.SecretsMountPath + `/superuser-password)" && export PGPASSWORD && exec psql "$@"`

func psqlCmd(o *options) *cobra.Command {
	var follower bool
	var pod string
	c := &cobra.Command{
		Use:   "psql CLUSTER [--follower | --pod POD] [-- PSQL-ARGS...]",
		Short: "psql in the leader's postgres container (or a follower's), as postgres, over the local socket",
		Long: "Runs `kubectl exec -i [-t] POD -c postgres -- psql …` on the leader (the pod labelled " + names.LabelRole + "=" +
			names.RoleLeader + "), a ready follower (--follower) or any member (--pod), connected as the postgres role to the " +
			"cluster's database (spec.bootstrap.database) over the unix socket; the arguments after -- go to psql (-d picks another " +
			"database). The password is read in the pod, from its secrets volume. It needs kubectl on PATH and the right to exec " +
			"into the cluster's pods.",
		Example: "  kubectl regent psql db -n shop\n" +
			"  kubectl regent psql db -- -c 'select 1'\n" +
			"  kubectl regent psql db --follower -- -d postgres -c 'select pg_last_wal_replay_lsn()'",
		Args: func(cmd *cobra.Command, args []string) error {
			switch dash := cmd.ArgsLenAtDash(); {
			case len(args) == 0 || dash == 0:
				return errors.New("psql needs the cluster's name: kubectl regent psql CLUSTER [-- PSQL-ARGS...]")
			case dash < 0 && len(args) > 1, dash > 1:
				return fmt.Errorf("psql's arguments go after --: kubectl regent psql %s -- %s", args[0], strings.Join(args[1:], " "))
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			c, rs, err := o.get(cmd, args[0])
			if err != nil {
				return err
			}
			pods, err := memberPods(cmd.Context(), c, rs)
			if err != nil {
				return err
			}
			target, err := pickPod(rs, pods, pod, follower)
			if err != nil {
				return err
			}
			kubectl, err := exec.LookPath("kubectl")
			if err != nil {
				return fmt.Errorf("kubectl regent psql runs kubectl exec, and kubectl is not on PATH (%w)", err)
			}
			argv := o.psqlArgv(rs, target, isTerminal(os.Stdin) && isTerminal(os.Stdout), args[1:])
			// kubectl takes the terminal over, its signals and exit status
			// included, as if run by hand.
			if err := syscall.Exec(kubectl, argv, os.Environ()); err != nil {
				return fmt.Errorf("run %s: %w", kubectl, err)
			}
			return nil
		},
	}
	c.Flags().BoolVar(&follower, "follower", false, "a ready follower rather than the leader")
	c.Flags().StringVar(&pod, "pod", "", "this member rather than the leader")
	c.MarkFlagsMutuallyExclusive("follower", "pod")
	return c
}

// psqlArgv is the kubectl command line that opens psql in pod's postgres
// container, with args for psql. A TTY only when a person is at both ends:
// with one, kubectl merges stderr into stdout and ends lines with \r\n.
func (o *options) psqlArgv(rs *regentv1.ReplicaSet, pod string, tty bool, args []string) []string {
	argv := []string{"kubectl"}
	if o.kubeconfig != "" {
		argv = append(argv, "--kubeconfig", o.kubeconfig)
	}
	if o.context != "" {
		argv = append(argv, "--context", o.context)
	}
	argv = append(argv, "exec", "-i")
	if tty {
		argv = append(argv, "-t")
	}
	// Defaults through the environment, so that psql's own -h, -d, -U win.
	argv = append(argv, "-n", rs.Namespace, pod, "-c", names.ContainerPostgres, "--", "env",
		"PGHOST="+names.SocketDir, "PGPORT="+strconv.Itoa(names.PortPostgres),
		"PGUSER="+names.SuperuserName, "PGDATABASE="+rs.AppDatabase(),
		"sh", "-c", psqlScript, "psql")
	return append(argv, args...)
}

// isTerminal says whether f is a terminal (a character device, as a
// terminal is; /dev/null passes too, and kubectl then says it cannot use a
// TTY).
func isTerminal(f *os.File) bool {
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}

// memberPods lists the cluster's pods by ordinal.
func memberPods(ctx context.Context, c client.Client, rs *regentv1.ReplicaSet) ([]corev1.Pod, error) {
	var list corev1.PodList
	if err := c.List(ctx, &list, client.InNamespace(rs.Namespace), client.MatchingLabels(names.SelectorLabels(rs.Name))); err != nil {
		return nil, fmt.Errorf("list the pods of %s/%s: %w", rs.Namespace, rs.Name, err)
	}
	pods := slices.DeleteFunc(list.Items, func(p corev1.Pod) bool {
		_, ok := names.Ordinal(rs.Name, p.Name)
		return !ok
	})
	slices.SortFunc(pods, func(a, b corev1.Pod) int {
		i, _ := names.Ordinal(rs.Name, a.Name)
		j, _ := names.Ordinal(rs.Name, b.Name)
		return cmp.Compare(i, j)
	})
	if len(pods) == 0 {
		return nil, fmt.Errorf("%s/%s has no pods (phase %s)", rs.Namespace, rs.Name, orDash(string(rs.Status.Phase)))
	}
	return pods, nil
}

// pickPod chooses the member to open psql on: pod when named, else a ready
// follower (the one least behind) or the leader.
func pickPod(rs *regentv1.ReplicaSet, pods []corev1.Pod, pod string, follower bool) (string, error) {
	switch {
	case pod != "":
		if slices.ContainsFunc(pods, func(p corev1.Pod) bool { return p.Name == pod }) {
			return pod, nil
		}
		return "", fmt.Errorf("%s is not a pod of %s/%s (pods: %s)", pod, rs.Namespace, rs.Name, podNames(pods))
	case follower:
		// Least behind first; a lag the status does not know counts as the most.
		lag := func(name string) int64 {
			i := slices.IndexFunc(rs.Status.Members, func(m regentv1.MemberStatus) bool { return m.Name == name })
			if i < 0 || rs.Status.Members[i].LagBytes == nil {
				return math.MaxInt64
			}
			return *rs.Status.Members[i].LagBytes
		}
		var ready []string
		for i := range pods {
			if p := &pods[i]; p.Labels[names.LabelRole] == names.RoleFollower && p.DeletionTimestamp == nil && podReady(p) {
				ready = append(ready, p.Name)
			}
		}
		if len(ready) == 0 {
			return "", fmt.Errorf("%s/%s has no ready follower (kubectl regent status %s -n %s says why)", rs.Namespace, rs.Name, rs.Name, rs.Namespace)
		}
		slices.SortStableFunc(ready, func(a, b string) int { return cmp.Compare(lag(a), lag(b)) })
		return ready[0], nil
	}
	// The label is what the leader Service routes by; the status, or the
	// newest epoch, decides between pods an older epoch left labelled.
	var leader *corev1.Pod
	for i := range pods {
		p := &pods[i]
		if p.Labels[names.LabelRole] != names.RoleLeader || p.DeletionTimestamp != nil {
			continue
		}
		if p.Name == rs.Status.Leader {
			return p.Name, nil
		}
		if leader == nil || labelEpoch(p) > labelEpoch(leader) {
			leader = p
		}
	}
	if leader != nil {
		return leader.Name, nil
	}
	if rs.Status.Leader != "" && slices.ContainsFunc(pods, func(p corev1.Pod) bool { return p.Name == rs.Status.Leader }) {
		return rs.Status.Leader, nil
	}
	return "", fmt.Errorf("%s/%s has no leader (phase %s): --follower or --pod POD opens psql on another member",
		rs.Namespace, rs.Name, orDash(string(rs.Status.Phase)))
}

func labelEpoch(p *corev1.Pod) int64 {
	e, _ := strconv.ParseInt(p.Labels[names.LabelEpoch], 10, 64)
	return e
}

func podReady(p *corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

func podNames(pods []corev1.Pod) string {
	s := make([]string, len(pods))
	for i := range pods {
		s[i] = pods[i].Name
	}
	return strings.Join(s, ", ")
}
