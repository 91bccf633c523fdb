package names

import (
	"maps"
	"testing"
)

func TestObjectNames(t *testing.T) {
	tests := []struct {
		name string
		got  string
		want string
	}{
		{"statefulset", StatefulSet("db"), "db"},
		{"pods service", PodsService("db"), "db-pods"},
		{"leader service", LeaderService("db"), "db-leader"},
		{"followers service", FollowersService("db"), "db-followers"},
		{"lease", Lease("db"), "db-leader"},
		{"pdb", PodDisruptionBudget("db"), "db"},
		{"agent", Agent("db"), "db-agent"},
		{"superuser secret", SuperuserSecret("db"), "db-superuser"},
		{"replication secret", ReplicationSecret("db"), "db-replication"},
		{"app secret", AppSecret("db"), "db-app"},
		{"pod", Pod("db", 2), "db-2"},
		{"pvc", PVC("db", 2), "pgdata-db-2"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.got != tt.want {
				t.Errorf("got %q, want %q", tt.got, tt.want)
			}
		})
	}
}

func TestOrdinal(t *testing.T) {
	tests := []struct {
		pod    string
		want   int
		wantOK bool
	}{
		{"db-0", 0, true},
		{"db-8", 8, true},
		{"db-12", 12, true},
		{"db-01", 0, false},
		{"db-", 0, false},
		{"db-+1", 0, false},
		{"db--1", 0, false},
		{"db-x", 0, false},
		{"dbx-1", 0, false},
		{"other-1", 0, false},
		{"db-pods", 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.pod, func(t *testing.T) {
			got, ok := Ordinal("db", tt.pod)
			if got != tt.want || ok != tt.wantOK {
				t.Errorf("Ordinal(db, %q) = %d, %v; want %d, %v", tt.pod, got, ok, tt.want, tt.wantOK)
			}
		})
	}
}

func TestOrdinalRoundTrip(t *testing.T) {
	for _, pod := range AllPods("db") {
		i, ok := Ordinal("db", pod)
		if !ok || Pod("db", i) != pod {
			t.Errorf("Ordinal(db, %q) = %d, %v does not round-trip", pod, i, ok)
		}
	}
	if n := len(AllPods("db")); n != MaxReplicas {
		t.Errorf("AllPods returned %d names, want %d", n, MaxReplicas)
	}
}

func TestSelectors(t *testing.T) {
	all := Labels("db")
	sel := SelectorLabels("db")
	for k, v := range sel {
		if all[k] != v {
			t.Errorf("selector label %s=%s is not among the object labels %v: pods would not match", k, v, all)
		}
	}
	leader := LeaderSelector("db", 7)
	want := map[string]string{LabelName: AppName, LabelCluster: "db", LabelRole: RoleLeader, LabelEpoch: "7"}
	if !maps.Equal(leader, want) {
		t.Errorf("LeaderSelector = %v, want %v", leader, want)
	}
	follower := FollowerSelector("db")
	if follower[LabelRole] != RoleFollower || follower[LabelEpoch] != "" {
		t.Errorf("FollowerSelector = %v: want role=follower and no epoch", follower)
	}
	// Selectors are fresh maps: changing one must not change another.
	leader[LabelCluster] = "changed"
	if SelectorLabels("db")[LabelCluster] != "db" {
		t.Error("selector maps are shared")
	}
}
