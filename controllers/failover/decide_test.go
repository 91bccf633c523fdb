package failover

import (
	"strings"
	"testing"
	"time"

	"github.com/regent-dev/regent/internal/leadership"
	"github.com/regent-dev/regent/internal/lsn"
	"github.com/regent-dev/regent/replica/api"
)

var t0 = time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)

func spec() Spec {
	return Spec{Enabled: true, Followers: 2, MaxLagBytes: 1 << 20, LeaseDuration: 10 * time.Second, SealWait: 5 * time.Second}
}

// leader is the epoch-1 leader's agent, serving.
func leader(name string, ord int) Member {
	return Member{Name: name, Ordinal: ord, Ready: true, Agent: &api.Status{Pod: name, Mode: api.ModeLeader, Epoch: 1,
		Running: true, Timeline: 1, WriteLSN: 0x5000000}, APIContact: t0}
}

// sealed is a follower that sealed epoch 1 at received position at.
func sealed(name string, ord int, at lsn.LSN) Member {
	return Member{Name: name, Ordinal: ord, Ready: true, Agent: &api.Status{Pod: name, Mode: api.ModeFollower, Epoch: 1,
		Running: true, InRecovery: true, Timeline: 1, ReceivedLSN: at, ReplayedLSN: at, Sealed: true, SealedLSN: at},
		APIContact: t0}
}

func silent(name string, ord int) Member { return Member{Name: name, Ordinal: ord} }

func with(m Member, f func(*Member)) Member { f(&m); return m }

func agent(m Member, f func(*api.Status)) Member {
	a := *m.Agent
	f(&a)
	m.Agent = &a
	return m
}

// contact is m, its agent last in contact with the API server at (by the
// operator's clock).
func contact(m Member, at time.Time) Member {
	m.APIContact = at
	return m
}

// live is an unsealed Lease held by db-0 at epoch 1, renewed just now.
func live() Lease {
	return Lease{Holder: "db-0", FormerHolder: "db-0", Epoch: 1, EverRenewed: true, LastRenewSeen: t0}
}

// sealedLease is epoch 1 sealed at t0, its holder db-0 silent.
func sealedLease() Lease {
	l := live()
	l.LastRenewSeen = t0.Add(-time.Minute)
	l.Sealed, l.SealedAt = true, t0
	return l
}

// following is a follower of epoch 1 that has not sealed.
func following(name string, ord int) Member {
	return Member{Name: name, Ordinal: ord, Ready: true, Agent: &api.Status{Pod: name, Mode: api.ModeFollower, Epoch: 1,
		Running: true, InRecovery: true, Timeline: 1, ReceivedLSN: 0x5000000, ReplayedLSN: 0x5000000, Streaming: true}}
}

// failsafeLease is live() expired, its leader relying on the
// confirmations of db-1 and db-2 (three members), revoked or not.
func failsafeLease(revoked bool) Lease {
	l := live()
	l.FailsafeReplicas, l.Revoked = 3, revoked
	return l
}

func TestDecide(t *testing.T) {
	syncSpec := spec()
	syncSpec.Sync, syncSpec.SyncReplicas = true, 1
	sync3 := syncSpec
	sync3.Followers = 3
	disabled := spec()
	disabled.Enabled = false
	delayed := spec()
	delayed.Delay = 30 * time.Second

	tests := []struct {
		name       string
		in         Input
		want       Kind
		target     string
		reasonHas  string
		until      time.Time
		ineligible map[string]string
	}{
		{
			name: "healthy leader: nothing, look again at expiry",
			in:   Input{Spec: spec(), Lease: live(), Now: t0.Add(time.Second), Members: []Member{leader("db-0", 0), sealed("db-1", 1, 0x5000000)}},
			want: None, until: t0.Add(10 * time.Second),
		},
		{
			name: "new cluster whose first leader never renewed: nothing",
			in: Input{Spec: spec(), Now: t0.Add(time.Hour), Lease: Lease{Holder: "db-0", FormerHolder: "db-0", Epoch: 1, LastRenewSeen: t0},
				Members: []Member{silent("db-0", 0), silent("db-1", 1)}},
			want: None, reasonHas: "has not started yet",
		},
		{
			name: "Lease released: seal at once",
			in: Input{Spec: spec(), Now: t0, Lease: Lease{Holder: "", FormerHolder: "db-0", Epoch: 1, EverRenewed: true, LastRenewSeen: t0},
				Members: []Member{silent("db-0", 0), sealed("db-1", 1, 0x5000000)}},
			want: Seal, reasonHas: "released the Lease",
		},
		{
			name: "both containers of the leader terminated: seal at once, Lease still valid",
			in: Input{Spec: spec(), Now: t0.Add(time.Second), Lease: live(),
				Members: []Member{with(silent("db-0", 0), func(m *Member) { m.ContainersTerminated = true }), sealed("db-1", 1, 0x5000000)}},
			want: Seal, reasonHas: "containers terminated",
		},
		{
			name: "silent leader, Lease still valid by the operator's clock: wait until expiry",
			in:   Input{Spec: spec(), Now: t0.Add(9 * time.Second), Lease: live(), Members: []Member{silent("db-0", 0), sealed("db-1", 1, 0x5000000)}},
			want: None, until: t0.Add(10 * time.Second),
		},
		{
			name: "force-deleted leader pod (no member): wait for the Lease",
			in:   Input{Spec: spec(), Now: t0.Add(3 * time.Second), Lease: live(), Members: []Member{sealed("db-1", 1, 0x5000000)}},
			want: None, until: t0.Add(10 * time.Second),
		},
		{
			name: "Lease expired by the operator's clock: seal",
			in:   Input{Spec: spec(), Now: t0.Add(10 * time.Second), Lease: live(), Members: []Member{silent("db-0", 0), sealed("db-1", 1, 0x5000000)}},
			want: Seal, reasonHas: "no renewal",
		},
		{
			name: "failsafe: an expired leader that may write on its failsafe is revoked first, not sealed",
			in: Input{Spec: spec(), Now: t0.Add(10 * time.Second), Lease: failsafeLease(false),
				Members: []Member{silent("db-0", 0), contact(following("db-1", 1), t0.Add(10*time.Second)), silent("db-2", 2)}},
			want: Revoke, reasonHas: "revoking epoch 1",
		},
		{
			name: "failsafe: no member the failsafe needs reaches the API server: wait, revoking could not help",
			in: Input{Spec: spec(), Now: t0.Add(10 * time.Second), Lease: failsafeLease(false),
				Members: []Member{silent("db-0", 0), following("db-1", 1), silent("db-2", 2),
					contact(following("db-3", 3), t0.Add(10*time.Second))}},
			want: Wait, reasonHas: "no member it needs reaches the API server",
		},
		{
			name: "failsafe: released Lease: seal at once (a release is a promise)",
			in: Input{Spec: spec(), Now: t0, Lease: func() Lease { l := failsafeLease(false); l.Holder = ""; return l }(),
				Members: []Member{silent("db-0", 0), sealed("db-1", 1, 0x5000000)}},
			want: Seal, reasonHas: "released the Lease",
		},
		{
			name: "failsafe: leader's containers terminated: seal at once",
			in: Input{Spec: spec(), Now: t0.Add(time.Second), Lease: failsafeLease(false),
				Members: []Member{with(silent("db-0", 0), func(m *Member) { m.ContainersTerminated = true }), following("db-1", 1)}},
			want: Seal, reasonHas: "containers terminated",
		},
		{
			name: "failsafe: revoked, no member reported it yet: wait",
			in: Input{Spec: spec(), Now: t0.Add(11 * time.Second), Lease: failsafeLease(true),
				Members: []Member{silent("db-0", 0), following("db-1", 1), following("db-2", 2)}},
			want: Wait, reasonHas: "waiting for a member the leader's failsafe needs to report it",
		},
		{
			name: "failsafe: revoked, reported, the last confirmation not yet expired: wait until it is",
			in: Input{Spec: spec(), Now: t0.Add(11 * time.Second), Lease: failsafeLease(true),
				Members: []Member{silent("db-0", 0), with(following("db-1", 1), func(m *Member) { m.FailsafeClear = t0.Add(12 * time.Second) }),
					with(following("db-2", 2), func(m *Member) { m.FailsafeClear = t0.Add(13 * time.Second) })}},
			want: Wait, until: t0.Add(12 * time.Second), reasonHas: "db-1's last confirmation",
		},
		{
			name: "failsafe: only a member the failsafe does not need reported: wait",
			in: Input{Spec: spec(), Now: t0.Add(20 * time.Second), Lease: failsafeLease(true),
				Members: []Member{silent("db-0", 0), following("db-1", 1), following("db-2", 2),
					with(following("db-3", 3), func(m *Member) { m.FailsafeClear = t0.Add(11 * time.Second) })}},
			want: Wait, reasonHas: "to report it",
		},
		{
			name: "failsafe: revoked, one needed member's last confirmation expired: seal",
			in: Input{Spec: spec(), Now: t0.Add(12 * time.Second), Lease: failsafeLease(true),
				Members: []Member{silent("db-0", 0), with(following("db-1", 1), func(m *Member) { m.FailsafeClear = t0.Add(12 * time.Second) }),
					following("db-2", 2)}},
			want: Seal, reasonHas: "no confirmation of its failsafe is left (db-1)",
		},
		{
			name: "failsafe: revoked by an earlier operator, this one just started (renewal seen now): still on the way to the seal",
			in: Input{Spec: spec(), Now: t0.Add(time.Second), Lease: func() Lease { l := failsafeLease(true); l.LastRenewSeen = t0; return l }(),
				Members: []Member{silent("db-0", 0), with(following("db-1", 1), func(m *Member) { m.FailsafeClear = t0 })}},
			want: Seal, reasonHas: "was revoked",
		},
		{
			name: "delaySeconds holds the seal",
			in: Input{Spec: delayed, Now: t0.Add(20 * time.Second), Lease: live(),
				Members: []Member{silent("db-0", 0), sealed("db-1", 1, 0x5000000)}},
			want: Wait, until: t0.Add(40 * time.Second), reasonHas: "delaySeconds",
		},
		{
			name: "failover disabled: refuse",
			in:   Input{Spec: disabled, Now: t0.Add(time.Minute), Lease: live(), Members: []Member{silent("db-0", 0), sealed("db-1", 1, 0x5000000)}},
			want: Refuse, reasonHas: "failover is disabled",
		},
		{
			name: "sealed: candidates ranked by received LSN",
			in: Input{Spec: spec(), Now: t0.Add(time.Second), Lease: sealedLease(),
				Members: []Member{silent("db-0", 0), sealed("db-1", 1, 0x5000000), sealed("db-2", 2, 0x5000100)}},
			want: Promote, target: "db-2",
		},
		{
			name: "equal received LSN: then replayed LSN",
			in: Input{Spec: spec(), Now: t0.Add(time.Second), Lease: sealedLease(),
				Members: []Member{silent("db-0", 0), agent(sealed("db-1", 1, 0x5000100), func(a *api.Status) { a.ReplayedLSN = 0x5000000 }),
					sealed("db-2", 2, 0x5000100)}},
			want: Promote, target: "db-2",
		},
		{
			name: "equal positions: then lowest ordinal",
			in: Input{Spec: spec(), Now: t0.Add(time.Second), Lease: sealedLease(),
				Members: []Member{silent("db-0", 0), sealed("db-2", 2, 0x5000100), sealed("db-1", 1, 0x5000100)}},
			want: Promote, target: "db-1",
		},
		{
			name: "a follower that has not reported yet: wait for it until the seal wait ends",
			in: Input{Spec: spec(), Now: t0.Add(time.Second), Lease: sealedLease(),
				Members: []Member{silent("db-0", 0), sealed("db-1", 1, 0x5000000), silent("db-2", 2)}},
			want: Wait, until: t0.Add(5 * time.Second), reasonHas: "1 of 2 followers reported",
		},
		{
			name: "Async: after the seal wait, elect among those that reported",
			in: Input{Spec: spec(), Now: t0.Add(5 * time.Second), Lease: sealedLease(),
				Members: []Member{silent("db-0", 0), sealed("db-1", 1, 0x5000000), silent("db-2", 2)}},
			want: Promote, target: "db-1",
		},
		{
			name: "Async: a candidate past maxLagBytes is refused",
			in: Input{Spec: spec(), Now: t0.Add(5 * time.Second), Lease: sealedLease(), LeaderLSN: 0x9000000,
				Members: []Member{silent("db-0", 0), sealed("db-1", 1, 0x5000000), sealed("db-2", 2, 0x8F00000)}},
			want: Promote, target: "db-2", ineligible: map[string]string{"db-1": "maxLagBytes"},
		},
		{
			name: "Async: every candidate past maxLagBytes: wait",
			in: Input{Spec: spec(), Now: t0.Add(5 * time.Second), Lease: sealedLease(), LeaderLSN: 0x9000000,
				Members: []Member{silent("db-0", 0), sealed("db-1", 1, 0x5000000)}},
			want: Wait, reasonHas: "no follower can be promoted", ineligible: map[string]string{"db-1": "maxLagBytes"},
		},
		{
			name: "a candidate holding another database's data is never elected, however advanced",
			in: Input{Spec: spec(), Now: t0.Add(5 * time.Second), Lease: sealedLease(), SystemIdentifier: "7300000000000000001",
				Members: []Member{silent("db-0", 0),
					agent(sealed("db-1", 1, 0x9000000), func(a *api.Status) { a.SystemIdentifier = "7300000000000000999" }),
					agent(sealed("db-2", 2, 0x5000000), func(a *api.Status) { a.SystemIdentifier = "7300000000000000001" })}},
			want: Promote, target: "db-2", ineligible: map[string]string{"db-1": "another database's"},
		},
		{
			name: "nor forced",
			in: Input{Spec: spec(), Now: t0.Add(5 * time.Second), Lease: sealedLease(), SystemIdentifier: "7300000000000000001",
				ForcePromote: "db-1", Members: []Member{silent("db-0", 0),
					agent(sealed("db-1", 1, 0x9000000), func(a *api.Status) { a.SystemIdentifier = "7300000000000000999" })}},
			want: Wait, reasonHas: "forced promotion of db-1 refused: its data is another database's",
		},
		{
			name: "a candidate whose agent lost the API server is not eligible",
			in: Input{Spec: spec(), Now: t0.Add(30 * time.Second), Lease: func() Lease { l := sealedLease(); l.SealedAt = t0.Add(20 * time.Second); return l }(),
				Members: []Member{silent("db-0", 0), sealed("db-1", 1, 0x5000100),
					contact(sealed("db-2", 2, 0x5000000), t0.Add(29*time.Second))}},
			want: Promote, target: "db-2", ineligible: map[string]string{"db-1": "API server"},
		},
		{
			name: "a candidate whose volume is full is not eligible",
			in: Input{Spec: spec(), Now: t0.Add(time.Second), Lease: sealedLease(),
				Members: []Member{silent("db-0", 0),
					agent(sealed("db-1", 1, 0x5000100), func(a *api.Status) { a.DiskUsedBytes, a.DiskTotalBytes = 97, 100 }),
					agent(sealed("db-2", 2, 0x5000000), func(a *api.Status) { a.DiskUsedBytes, a.DiskTotalBytes = 94, 100 })}},
			want: Promote, target: "db-2", ineligible: map[string]string{"db-1": "97% full"},
		},
		{
			name: "Sync: the best candidate's volume full: wait, never promote one that may miss a commit",
			in: Input{Spec: syncSpec, Now: t0.Add(time.Second), Lease: sealedLease(),
				Members: []Member{silent("db-0", 0),
					agent(sealed("db-1", 1, 0x5000100), func(a *api.Status) { a.DiskUsedBytes, a.DiskTotalBytes = 99, 100 }),
					sealed("db-2", 2, 0x5000000)}},
			want: Wait, reasonHas: "99% full", ineligible: map[string]string{"db-1": "99% full"},
		},
		{
			name: "Sync: a tie at the highest position: an eligible one of the two wins",
			in: Input{Spec: syncSpec, Now: t0.Add(time.Second), Lease: sealedLease(),
				Members: []Member{silent("db-0", 0),
					agent(sealed("db-1", 1, 0x5000100), func(a *api.Status) { a.DiskUsedBytes, a.DiskTotalBytes = 99, 100 }),
					sealed("db-2", 2, 0x5000100)}},
			want: Promote, target: "db-2", ineligible: map[string]string{"db-1": "99% full"},
		},
		{
			name: "a candidate on an older timeline is not eligible",
			in: Input{Spec: spec(), Now: t0.Add(time.Second), Lease: sealedLease(),
				Members: []Member{silent("db-0", 0), sealed("db-1", 1, 0x5000100),
					agent(sealed("db-2", 2, 0x5000000), func(a *api.Status) { a.Timeline = 2 })}},
			want: Promote, target: "db-2", ineligible: map[string]string{"db-1": "timeline"},
		},
		{
			name: "Sync ANY 1 of 2: both reported, the best wins",
			in: Input{Spec: syncSpec, Now: t0.Add(time.Second), Lease: sealedLease(),
				Members: []Member{silent("db-0", 0), sealed("db-1", 1, 0x5000000), sealed("db-2", 2, 0x5000100)}},
			want: Promote, target: "db-2",
		},
		{
			name: "Sync ANY 1 of 2: one silent follower may hold the only acknowledged commit: wait, never elect the other",
			in: Input{Spec: syncSpec, Now: t0.Add(time.Hour), Lease: sealedLease(),
				Members: []Member{silent("db-0", 0), sealed("db-1", 1, 0x5000000), silent("db-2", 2)}},
			want: Wait, reasonHas: "1 of the 2 followers of ANY 1 (db-1, db-2) reported sealed positions, 2 needed",
		},
		{
			name: "Sync, scaled down from 5 to 3 while the old standbys may still matter: the removed ones' reports are needed, wait",
			in: Input{Spec: syncSpec, Now: t0.Add(time.Hour), Lease: sealedLease(),
				Quorums: []leadership.Standbys{leadership.AnyOf(1, []string{"db-1", "db-2"}), leadership.AnyOf(1, []string{"db-1", "db-2", "db-3", "db-4"})},
				Members: []Member{silent("db-0", 0), sealed("db-1", 1, 0x5000000), sealed("db-2", 2, 0x5000100)}},
			want: Wait, reasonHas: "2 of the 4 followers of ANY 1 (db-1, db-2, db-3, db-4) reported sealed positions, 4 needed",
		},
		{
			name: "Sync, scaled down and settled: the current standbys' reports suffice",
			in: Input{Spec: syncSpec, Now: t0.Add(time.Second), Lease: sealedLease(),
				Quorums: []leadership.Standbys{leadership.AnyOf(1, []string{"db-1", "db-2"})},
				Members: []Member{silent("db-0", 0), sealed("db-1", 1, 0x5000000), sealed("db-2", 2, 0x5000100)}},
			want: Promote, target: "db-2",
		},
		{
			name: "Sync, syncReplicas raised from 1 to 2 of 3, not settled: ANY 1 still needs all three reports",
			in: Input{Spec: func() Spec { s := sync3; s.SyncReplicas = 2; return s }(), Now: t0.Add(time.Hour), Lease: sealedLease(),
				Quorums: []leadership.Standbys{leadership.AnyOf(2, []string{"db-1", "db-2", "db-3"}), leadership.AnyOf(1, []string{"db-1", "db-2", "db-3"})},
				Members: []Member{silent("db-0", 0), sealed("db-1", 1, 0x5000000), sealed("db-2", 2, 0x5000100), silent("db-3", 3)}},
			want: Wait, reasonHas: "2 of the 3 followers of ANY 1 (db-1, db-2, db-3) reported sealed positions, 3 needed",
		},
		{
			name: "Sync ANY 2 of 3: two reports suffice (n-k+1)",
			in: Input{Spec: func() Spec { s := sync3; s.SyncReplicas = 2; return s }(), Now: t0.Add(6 * time.Second), Lease: sealedLease(),
				Members: []Member{silent("db-0", 0), sealed("db-1", 1, 0x5000000), sealed("db-2", 2, 0x5000100), silent("db-3", 3)}},
			want: Promote, target: "db-2",
		},
		{
			name: "Sync: the best reported follower is not eligible: wait, do not elect the second",
			in: Input{Spec: syncSpec, Now: t0.Add(time.Hour), Lease: sealedLease(),
				Members: []Member{silent("db-0", 0), sealed("db-1", 1, 0x5000000),
					agent(sealed("db-2", 2, 0x5000100), func(a *api.Status) { a.Running = false })}},
			want: Wait, reasonHas: "no follower at the highest reported position (0/5000100) can be promoted: db-2: PostgreSQL is not running",
		},
		{
			name: "Sync: the maxLagBytes budget does not apply (nothing acknowledged is lost)",
			in: Input{Spec: syncSpec, Now: t0.Add(time.Second), Lease: sealedLease(), LeaderLSN: 0x9000000,
				Members: []Member{silent("db-0", 0), sealed("db-1", 1, 0x5000000), sealed("db-2", 2, 0x5000000)}},
			want: Promote, target: "db-1",
		},
		{
			name: "no candidate at all: wait",
			in: Input{Spec: spec(), Now: t0.Add(time.Hour), Lease: sealedLease(),
				Members: []Member{silent("db-0", 0), silent("db-1", 1), silent("db-2", 2)}},
			want: Wait, reasonHas: "no follower can be promoted",
		},
		{
			name: "the old leader comes back stopped, no follower can win: it leads again",
			in: Input{Spec: spec(), Now: t0.Add(time.Hour), Lease: func() Lease { l := sealedLease(); l.LastRenewSeen = t0.Add(time.Hour - time.Minute); return l }(),
				Members: []Member{contact(agent(leader("db-0", 0), func(a *api.Status) { a.Running = false }), t0.Add(time.Hour)),
					silent("db-1", 1)}},
			want: Promote, target: "db-0",
		},
		{
			name: "the old leader comes back still running as leader: not re-elected",
			in: Input{Spec: spec(), Now: t0.Add(time.Hour), Lease: sealedLease(),
				Members: []Member{contact(leader("db-0", 0), t0.Add(time.Hour)), silent("db-1", 1)}},
			want: Wait,
		},
		{
			name: "one-pod cluster whose PostgreSQL crashed: the released leader leads again at a new epoch",
			in: Input{Spec: func() Spec { s := spec(); s.Followers = 0; return s }(), Now: t0.Add(time.Second),
				Lease:   func() Lease { l := sealedLease(); l.Holder = ""; return l }(),
				Members: []Member{agent(leader("db-0", 0), func(a *api.Status) { a.Mode, a.Running = api.ModeFollower, false })}},
			want: Promote, target: "db-0",
		},
		{
			name: "two pods run as leader: refuse",
			in: Input{Spec: spec(), Now: t0.Add(time.Second), Lease: live(),
				Members: []Member{leader("db-0", 0), agent(leader("db-1", 1), func(a *api.Status) { a.Epoch = 2 })}},
			want: Refuse, reasonHas: "db-0, db-1 all run as leader",
		},
		{
			name: "switchover: the named follower wins once it holds the final position",
			in: Input{Spec: spec(), Now: t0.Add(time.Second), SwitchoverTo: "db-1",
				Lease:   func() Lease { l := sealedLease(); l.Holder, l.ReleasedLSN = "", 0x5000000; return l }(),
				Members: []Member{silent("db-0", 0), sealed("db-1", 1, 0x5000000), sealed("db-2", 2, 0x5000100)}},
			want: Promote, target: "db-1",
		},
		{
			name: "switchover: the named follower has not received the final position yet: wait",
			in: Input{Spec: spec(), Now: t0.Add(time.Second), SwitchoverTo: "db-1",
				Lease:   func() Lease { l := sealedLease(); l.Holder, l.ReleasedLSN = "", 0x5000100; return l }(),
				Members: []Member{silent("db-0", 0), sealed("db-1", 1, 0x5000000), sealed("db-2", 2, 0x5000100)}},
			want: Wait, reasonHas: "the old leader stopped at 0/5000100",
		},
		{
			name: "switchover: a clean release the target already replayed: promoted without a seal",
			in: Input{Spec: spec(), Now: t0, SwitchoverTo: "db-2",
				Lease: Lease{Holder: "", FormerHolder: "db-0", Epoch: 1, EverRenewed: true, LastRenewSeen: t0, ReleasedLSN: 0x5000000},
				Members: []Member{silent("db-0", 0), sealed("db-1", 1, 0x5000100),
					agent(sealed("db-2", 2, 0x5000000), func(a *api.Status) { a.Sealed, a.SealedLSN = false, 0 })}},
			want: Promote, target: "db-2",
		},
		{
			name: "switchover: the target is still replaying the final position just after the release: wait for it, no seal",
			in: Input{Spec: spec(), Now: t0.Add(time.Second), LostSince: t0, SwitchoverTo: "db-2",
				Lease:   Lease{Holder: "", FormerHolder: "db-0", Epoch: 1, EverRenewed: true, LastRenewSeen: t0, ReleasedLSN: 0x5000100},
				Members: []Member{silent("db-0", 0), sealed("db-2", 2, 0x5000000)}},
			want: Wait, reasonHas: "waiting for db-2 to replay the old leader's final position",
		},
		{
			name: "switchover: the target has not replayed the final position within the grace: seal",
			in: Input{Spec: spec(), Now: t0.Add(SwitchoverGrace), LostSince: t0, SwitchoverTo: "db-2",
				Lease:   Lease{Holder: "", FormerHolder: "db-0", Epoch: 1, EverRenewed: true, LastRenewSeen: t0, ReleasedLSN: 0x5000100},
				Members: []Member{silent("db-0", 0), sealed("db-2", 2, 0x5000000)}},
			want: Seal,
		},
		{
			name: "switchover with failover disabled and a delay: neither holds it",
			in: Input{Spec: func() Spec { s := delayed; s.Enabled = false; return s }(), Now: t0, SwitchoverTo: "db-1",
				Lease:   Lease{Holder: "", FormerHolder: "db-0", Epoch: 1, EverRenewed: true, LastRenewSeen: t0, ReleasedLSN: 0x5000000},
				Members: []Member{silent("db-0", 0), sealed("db-1", 1, 0x5000000)}},
			want: Promote, target: "db-1",
		},
		{
			name: "escape hatch: Sync, a silent follower blocks the election; the person's pod is promoted, data loss accepted",
			in: Input{Spec: syncSpec, Now: t0.Add(6 * time.Second), Lease: sealedLease(), ForcePromote: "db-1",
				Members: []Member{silent("db-0", 0), sealed("db-1", 1, 0x5000000), silent("db-2", 2)}},
			want: Promote, target: "db-1", reasonHas: "forced by a person (regent.dev/promote=db-1, regent.dev/accept-data-loss=true)",
		},
		{
			name: "escape hatch: the person's pod lags beyond maxLagBytes: promoted anyway, and the reason says what the election thought",
			in: Input{Spec: spec(), Now: t0.Add(time.Second), Lease: sealedLease(), ForcePromote: "db-2", LeaderLSN: 0x9000000,
				Members: []Member{silent("db-0", 0), sealed("db-1", 1, 0x9000000), sealed("db-2", 2, 0x5000000)}},
			want: Promote, target: "db-2", reasonHas: "the election would have refused it: lags the leader",
		},
		{
			name: "escape hatch: the person's pod has not sealed: wait for it, never promote it unsealed",
			in: Input{Spec: syncSpec, Now: t0.Add(time.Hour), Lease: sealedLease(), ForcePromote: "db-2",
				Members: []Member{silent("db-0", 0), sealed("db-1", 1, 0x5000000), silent("db-2", 2)}},
			want: Wait, reasonHas: "forced promotion of db-2 waits for it to report a sealed position",
		},
		{
			name: "escape hatch: the leader lost with failover disabled: seal first",
			in: Input{Spec: func() Spec { s := spec(); s.Enabled = false; return s }(), Now: t0.Add(time.Minute),
				Lease: live(), ForcePromote: "db-1",
				Members: []Member{silent("db-0", 0), sealed("db-1", 1, 0x5000000), sealed("db-2", 2, 0x5000000)}},
			want: Seal, reasonHas: "to promote db-1 as a person asked",
		},
		{
			name: "escape hatch: the leader is alive: nothing to force",
			in: Input{Spec: spec(), Now: t0.Add(time.Second), Lease: live(), ForcePromote: "db-1",
				Members: []Member{leader("db-0", 0), sealed("db-1", 1, 0x5000000)}},
			want: None,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := Decide(tt.in)
			if got.Kind != tt.want || got.Target != tt.target {
				t.Fatalf("got %s %q (%s), want %s %q", got.Kind, got.Target, got.Reason, tt.want, tt.target)
			}
			if !strings.Contains(got.Reason, tt.reasonHas) {
				t.Errorf("reason %q does not say %q", got.Reason, tt.reasonHas)
			}
			if !tt.until.IsZero() && !got.Until.Equal(tt.until) {
				t.Errorf("until %s, want %s", got.Until, tt.until)
			}
			for name, why := range tt.ineligible {
				if !strings.Contains(got.Eligibility[name], why) {
					t.Errorf("%s: eligibility %q, want it to say %q", name, got.Eligibility[name], why)
				}
			}
			if got.Kind == Promote && got.Eligibility[got.Target] != "" {
				t.Errorf("promotes %s, which it calls ineligible: %s", got.Target, got.Eligibility[got.Target])
			}
		})
	}
}
