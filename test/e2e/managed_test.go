package e2e_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/url"
	"strings"
	"testing"
	"time"

	regentv1 "github.com/regent-dev/regent/api/v1alpha1"
	"github.com/regent-dev/regent/internal/waitfor"
)

// declaredCluster is the ReplicaSet of TestRolesAndDatabasesThroughTheSpec:
// two pods, the roles and databases given.
func declaredCluster(roles, databases string) string {
	return `apiVersion: regent.dev/v1alpha1
kind: ReplicaSet
metadata:
  name: db
spec:
  replicas: 2
  storage:
    size: 1Gi
  failover:
    leaseDurationSeconds: 6
  roles:
` + roles + `
  databases:
` + databases + "\n"
}

// Roles and databases declared in the spec are created, changed and
// dropped on the leader, each with its state in status; each role logs in
// with its Secret's password through the leader Service; a bad spec is
// refused by the API server or reported in status.
func TestRolesAndDatabasesThroughTheSpec(t *testing.T) {
	const rns = "declared"
	ctx := t.Context()
	installOperator(t)
	createNamespace(t, rns)
	dropWhenDone(t, rns)
	kubectl(t, "-n", rns, "create", "secret", "generic", "reporter-pw", "--type=kubernetes.io/basic-auth",
		"--from-literal=username=reporter", "--from-literal=password=first-pw")
	kubectl(t, "-n", rns, "create", "secret", "generic", "writer-pw", "--from-literal=password=writer-pw-1")
	roles := `  - name: reporter
    passwordSecret: {name: reporter-pw, key: password}
    inRoles: [pg_read_all_data]
  - name: writer
    passwordSecret: {name: writer-pw, key: password}
    connectionLimit: 10
  - name: readers
    login: false`
	databases := `  - name: analytics
    owner: reporter
    extensions: [pgcrypto]`
	tool(t, declaredCluster(roles, databases), "kubectl", "-n", rns, "apply", "-f", "-")
	kubectl(t, "-n", rns, "wait", "dbrs/db", "--for=jsonpath={.status.phase}=Healthy", "--timeout=5m")

	// states waits until status.roles and status.databases say want.
	states := func(want map[string]string) map[string]regentv1.ManagedObjectStatus {
		t.Helper()
		got := map[string]regentv1.ManagedObjectStatus{}
		waitfor.Condition(t, 60*time.Second, fmt.Sprintf("status %v", want), func() error {
			var st regentv1.ReplicaSetStatus
			if err := json.Unmarshal([]byte(fieldIn(t, rns, ".status")), &st); err != nil {
				return err
			}
			clear(got)
			for _, it := range append(st.Roles, st.Databases...) {
				got[it.Name] = it
			}
			for name, state := range want {
				if string(got[name].State) != state {
					return fmt.Errorf("%s: %+v, want %s (all: %+v)", name, got[name], state, got)
				}
			}
			if len(got) != len(want) {
				return fmt.Errorf("items %v, want %v", got, want)
			}
			return nil
		})
		return got
	}
	states(map[string]string{"reporter": "Applied", "writer": "Applied", "readers": "Applied", "analytics": "Applied"})

	// Each role logs in, through the leader Service, with its password.
	proxyAddr := serviceProxy(t, rns, "db-leader")
	_, appURI, _ := appDSN(t, rns)
	login := func(user, password, database string) error {
		u, err := url.Parse(appURI)
		if err != nil {
			return err
		}
		u.User, u.Path = url.UserPassword(user, password), "/"+database
		lctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		conn, err := connectVia(lctx, u.String(), proxyAddr)
		if err != nil {
			return err
		}
		defer conn.Close(lctx)
		var who string
		return conn.QueryRow(lctx, "SELECT current_user").Scan(&who)
	}
	for _, l := range []struct{ user, password, db string }{{"reporter", "first-pw", "analytics"}, {"writer", "writer-pw-1", "app"}} {
		waitfor.Condition(t, 30*time.Second, l.user+" logs in to "+l.db, func() error { return login(l.user, l.password, l.db) })
	}
	if err := login("readers", "", "app"); err == nil {
		t.Error("readers (login: false) logged in")
	}

	// A new password in the Secret: the operator sees the Secret change
	// and the old password stops working.
	kubectl(t, "-n", rns, "patch", "secret", "reporter-pw", "--type=merge", "-p", `{"stringData":{"password":"second-pw"}}`)
	waitfor.Condition(t, 30*time.Second, "reporter logs in with the new password", func() error { return login("reporter", "second-pw", "analytics") })
	if err := login("reporter", "first-pw", "analytics"); err == nil {
		t.Error("the old password still logs in")
	}

	// A bad spec: refused by the API server when the CRD can say so…
	if out, err := toolResult(t, declaredCluster("  - name: postgres", databases), "kubectl", "-n", rns, "apply", "-f", "-"); err == nil ||
		!strings.Contains(out, "the role name is reserved") {
		t.Errorf("a role named postgres was not refused with a reason: %v\n%s", err, out)
	}
	// …else reported in status: a password Secret that does not exist.
	tool(t, declaredCluster(roles+`
  - name: ghost
    passwordSecret: {name: no-such-secret, key: password}`, databases), "kubectl", "-n", rns, "apply", "-f", "-")
	got := states(map[string]string{"reporter": "Applied", "writer": "Applied", "readers": "Applied", "ghost": "Failed", "analytics": "Applied"})
	if msg := got["ghost"].Message; !strings.Contains(msg, "password Secret no-such-secret not found") {
		t.Errorf("ghost's message %q", msg)
	}

	// Removed: ensure Absent drops the database and its owner; writer,
	// left out of the list, stays in PostgreSQL as it was.
	tool(t, declaredCluster(`  - name: reporter
    ensure: Absent
  - name: readers
    login: false`, `  - name: analytics
    ensure: Absent`), "kubectl", "-n", rns, "apply", "-f", "-")
	states(map[string]string{"reporter": "Dropped", "readers": "Applied", "analytics": "Dropped"})
	if err := login("reporter", "second-pw", "app"); err == nil {
		t.Error("reporter still logs in after it was dropped")
	}
	if err := login("writer", "writer-pw-1", "app"); err != nil {
		t.Errorf("writer, no longer declared, was not left as it was: %v", err)
	}
}
