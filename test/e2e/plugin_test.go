package e2e_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/regent-dev/regent/internal/waitfor"
)

// Every command of `kubectl regent` against a live cluster, as a person
// would use them: status, logs, backup, psql (on real nodes: the process
// kubelet has no exec), and promote, refused on a healthy cluster and
// ending an election that cannot finish (the leader and the follower that
// may hold the only copy of a commit frozen, a Sync ANY 1 cluster).
func TestThePluginOperatesALiveCluster(t *testing.T) {
	const pns = "plugin"
	startS3(t)
	applyArchivingCluster(t, pns, 3, "mode: Sync\n    syncReplicas: 1")
	plugin := func(args ...string) string {
		t.Helper()
		return tool(t, "", "kubectl-regent", append([]string{"-n", pns}, args...)...)
	}
	members := []string{"db-0", "db-1", "db-2"}

	status := plugin("status", "db")
	for _, m := range members {
		if !strings.Contains(status, m) {
			t.Errorf("status does not list %s:\n%s", m, status)
		}
	}

	// logs: every member's PostgreSQL and agent, each line prefixed.
	logs := plugin("logs", "db", "--tail", "5")
	for _, m := range members {
		for _, c := range []string{"postgres", "agent"} {
			if !strings.Contains(logs, "\n"+m+"/"+c+" ") && !strings.HasPrefix(logs, m+"/"+c+" ") {
				t.Errorf("logs have no line of %s/%s:\n%s", m, c, logs)
			}
		}
	}
	if one := plugin("logs", "db", "--pod", "db-1", "--container", "agent", "--tail", "3"); strings.Count(one, "\n") != 3 ||
		strings.Count(one, "db-1/agent ") != 3 {
		t.Errorf("logs of db-1's agent, 3 lines:\n%s", one)
	}

	// backup, waited for.
	out := plugin("backup", "db", "--name", "by-plugin", "--wait", "--timeout", "3m")
	if !strings.Contains(out, "Backup "+pns+"/by-plugin completed") {
		t.Errorf("backup --wait:\n%s", out)
	}
	if phase := strings.TrimSpace(kubectl(t, "-n", pns, "get", "dbbackup", "by-plugin", "-o", "jsonpath={.status.phase}")); phase != "Completed" {
		t.Errorf("the Backup's phase is %q", phase)
	}

	// psql, in the leader's container, and in a follower's.
	if realNodes {
		if who := plugin("psql", "db", "--", "-tAc", "select current_user || ' ' || pg_is_in_recovery()"); strings.TrimSpace(who) != "postgres false" {
			t.Errorf("psql on the leader: %q", who)
		}
		if who := plugin("psql", "db", "--follower", "--", "-tAc", "select pg_is_in_recovery()::text"); strings.TrimSpace(who) != "true" {
			t.Errorf("psql on a follower: %q", who)
		}
	} else {
		t.Log("psql not run: the process kubelet does not serve exec (REGENT_REAL_NODES=1 runs it)")
	}

	leader := fieldIn(t, pns, ".status.leader")
	var followers []string
	for _, m := range members {
		if m != leader {
			followers = append(followers, m)
		}
	}
	// promote on a healthy cluster: the operator refuses and removes the
	// request, the plugin says so.
	if out, err := toolResult(t, "", "kubectl-regent", "-n", pns, "promote", "db", followers[0], "--accept-data-loss", "--timeout", "60s"); err == nil ||
		!strings.Contains(out, "refused") || !strings.Contains(out, "removed the request") {
		t.Errorf("promote on a healthy cluster was not refused and removed: %v\n%s", err, out)
	}
	if a := kubectl(t, "-n", pns, "get", "dbrs/db", "-o", "jsonpath={.metadata.annotations}"); strings.Contains(a, "regent.dev/promote") {
		t.Errorf("the refused request stayed on the ReplicaSet: %s", a)
	}

	// The leader and one follower frozen: the other follower cannot know
	// whether the frozen one holds the only copy of a commit, so the
	// election waits until a person accepts the loss.
	winner, silent := followers[0], followers[1]
	for _, p := range []string{leader, silent} {
		g := podGroupIn(t, pns, p)
		g.freeze(t, true)
		t.Cleanup(func() { g.freeze(t, false) })
	}
	waitfor.Condition(t, 90*time.Second, "the election blocked", func() error {
		if reason := fieldIn(t, pns, `.status.conditions[?(@.type=="Degraded")].reason`); reason != "FailoverBlocked" {
			return fmt.Errorf("Degraded reason %q", reason)
		}
		return nil
	})
	start := time.Now()
	out = plugin("promote", "db", winner, "--accept-data-loss", "--timeout", "2m")
	t.Logf("promote %s after %s:\n%s", winner, time.Since(start).Round(time.Millisecond), out)
	// The receipt (lastFailover) is written with the promotion; the
	// status's leader follows at the next pass.
	waitfor.Condition(t, 30*time.Second, winner+" leads", func() error {
		if got := fieldIn(t, pns, ".status.leader"); got != winner {
			return fmt.Errorf("leader %s", got)
		}
		return nil
	})
	if kind := fieldIn(t, pns, ".status.lastFailover.kind"); kind != "ForcedFailover" {
		t.Errorf("lastFailover.kind %q", kind)
	}
}
