/*
 * Regent's leadership and fencing protocol (docs/protocol.md)
 * as a Promela model for spin. hack/modelcheck.sh checks it: the protocol as
 * built must hold its invariants; each weakened variant below must not.
 *
 * Scope: one operator; three pods: L (pod 0, leader of epoch 1) and two
 * followers F1, F2 (pods 1, 2); one client committing on L. The model
 * follows epoch 1 to its end and the first commit of epoch 2.
 *
 * Modes (spin -D...):
 *   (default)  Async mode: commits wait for the commit gate (regent_gate,
 *              synchronous_standby_names = 'FIRST 1 (regent_gate)'), which
 *              acknowledges only while now < d.
 *   SYNC       Sync mode, ANY 1 of the 2 followers: a commit waits for one
 *              follower's flush acknowledgement, which travels follower's
 *              PostgreSQL -> follower's relay -> network -> leader's relay ->
 *              leader's PostgreSQL. The operator elects only with
 *              n - k + 1 = 2 sealed reports, and only a follower at the
 *              highest reported position.
 *
 * Weakened variants (each must yield a counterexample):
 *   NO_RELAY_LEASE_CHECK  the leader's relay forwards WAL and flush reports
 *                         regardless of d (Sync: split brain).
 *   NO_GATE               Async without the commit gate: PostgreSQL
 *                         acknowledges a commit as soon as it is flushed
 *                         locally; only the agent's fence and the watchdog,
 *                         both late when the pod was frozen, stop it.
 *   NO_SEAL               (Sync) the operator elects without sealing, from
 *                         the positions the followers' agents serve on
 *                         /status (as of their last pass), and followers
 *                         keep taking WAL of epoch 1 until they see the move.
 *   NO_OCC_SEAL           the operator's seal (and move) is a blind write,
 *                         not conditional on the Lease version it judged: a
 *                         renewal in between is overwritten.
 *   COUNT_SILENT          (Sync) the election counts silent followers: it
 *                         elects with fewer than n - k + 1 = 2 sealed reports.
 *   CONFIRM_WHEN_REVOKED  (failsafe) a follower keeps confirming the leader's
 *                         failsafe after it saw the revocation, and after the
 *                         seal too: it stops only when it sees epoch 2.
 *   NO_FAILSAFE_WAIT      (failsafe) the operator seals as soon as a follower
 *                         reports the revocation, without waiting for that
 *                         follower's last confirmation to expire.
 *
 * The failsafe (FAILSAFE; the two variants above imply it). The leader,
 * cut off from the API server, may go on acknowledging after d while it
 * holds, from EVERY follower, a confirmation that the follower still follows
 * epoch 1 and has seen no revocation: a confirmation answers a request the
 * leader started at r and is good until r + G on the leader's clock. So its
 * effective deadline is max(d, min over the followers of r_i + G). The
 * operator's expiry then ends the epoch in two writes: it REVOKES epoch 1
 * (followers that see it stop confirming at once, and report so on /status
 * with the time of their last confirmation), and only once one follower
 * reported the revocation and G has passed since that follower's last
 * confirmation (no failsafe the leader could hold is left) does it SEAL;
 * the seal and the election are as before. Without FAILSAFE the operator
 * seals directly (the leader published no followers to confirm it: the
 * spec turned the failsafe off, or there is no follower).
 *
 * Other switches:
 *   PROP_B        also assert (b) below.
 *   ONLY_C        assert only (c) (with NO_RELAY_LEASE_CHECK: the leader's
 *                 clock does not matter to (c), "whatever the clocks do").
 *   FRESH_STATUS  (with NO_SEAL) the operator reads every follower's position
 *                 at the moment it elects, instead of its agent's last pass.
 *   ACK_AT_CLIENT place the acknowledgement at the client's receipt of
 *                 PostgreSQL's reply instead of at the last fence (see below):
 *                 a counterexample even as built, which shows what the
 *                 guarantee does NOT cover.
 *   WITNESS       assert that no failover follows MAXC acknowledged commits:
 *                 its counterexample shows the built model is not vacuous.
 *   TMAX, MAXC, L, D  the bounds and timers below.
 *
 * ---------------------------------------------------------------------------
 * Time. A global clock `now` advanced by the process Clock, one tick at a
 * time, up to TMAX. Every other action is an atomic step that may happen at
 * any later time: a process that is not scheduled for a while is frozen (a
 * SIGSTOPped or cgroup-frozen pod, a slow goroutine, a request stuck in the
 * network), and spin explores every such interleaving. Messages in flight
 * (WAL and acknowledgements between relays, a renewal request on its way to
 * the API server) are variables that the receiving step reads whenever it
 * runs: arbitrary delay. All actors read the same clock: clock RATES are
 * assumed equal (the design's assumption is weaker: rates differ by less
 * than the margin L - D; offsets do not matter, as every actor compares
 * times of its own clock only). L = 3 ticks, D = 2 ticks (the renew
 * deadline, 2/3 L).
 *
 * What "acknowledged" means. A commit of epoch e is acknowledged at the
 * step where the last fence on its acknowledgement's path lets it through
 * into the leader's PostgreSQL: the commit gate's reply (Async), the
 * leader's relay forwarding a follower's flush report (Sync), or, where no
 * fence is left (NO_GATE), PostgreSQL's own local commit. What follows
 * (the walsender waking the backend, the reply travelling to the client)
 * involves no further decision; a freeze of the leader's pod there, or a
 * slow network, can make the client RECEIVE the reply late, and no server
 * can prevent that. So the model makes "check d, then let the
 * acknowledgement through" one atomic step, and places the acknowledgement
 * there; see model/README.md.
 *
 * Invariants (asserted at every acknowledgement and at the promotion):
 *   (a) no split-brain acknowledgement: no commit of epoch 1 is
 *       acknowledged once the leader of epoch 2 has made its first commit
 *       (e2), i.e. every acknowledgement of epoch 1 precedes, in real time,
 *       every commit of epoch 2. (The new leader makes its first commit as
 *       soon as it is promoted, its earliest possible moment.)
 *   (b) [with -DPROP_B] a sealed epoch acknowledges nothing: no commit of
 *       epoch 1 is acknowledged once the seal of epoch 1 is written on the
 *       Lease (or the Lease moved). Implies (a).
 *   (c) [Sync] no acknowledged write lost: when the elected follower is
 *       promoted, its WAL (the fork point of epoch 2) holds every commit
 *       acknowledged in epoch 1, and no later acknowledgement of epoch 1
 *       lies beyond that fork point.
 */

#ifndef L
#define L 3          /* lease duration */
#endif
#ifndef D
#define D 2          /* renew deadline after the start of a renewal */
#endif
#ifndef TMAX
#define TMAX 7       /* the clock stops here (finite state space) */
#endif
#ifndef MAXC
#define MAXC 2       /* commits the client makes on L */
#endif
#ifndef G
#define G 2          /* a failsafe confirmation is good for G after its request */
#endif
#define NONE 255
#if defined(CONFIRM_WHEN_REVOKED) || defined(NO_FAILSAFE_WAIT) || defined(WITNESS_FAILSAFE)
#ifndef FAILSAFE
#define FAILSAFE
#endif
#endif
#if defined(FAILSAFE) && defined(NO_SEAL)
#error NO_SEAL and FAILSAFE do not go together
#endif
#if defined(NO_SEAL) && !defined(SYNC)
#error NO_SEAL is a Sync-mode variant: add -DSYNC
#endif

/* ---- the Lease (coordination.k8s.io, optimistic concurrency on ver) ---- */
byte now = 0;
byte holder = 0;     /* 0 = L, 1 = F1, 2 = F2 */
byte epoch = 1;      /* leaseTransitions */
byte renewT = 0;     /* renewTime: the start of the last renewal */
bool sealed = false; /* regent.dev/sealed-epoch = 1 */
bool revoked = false; /* regent.dev/revoked-epoch = 1 (FAILSAFE) */
byte ver = 0;        /* resourceVersion */

/* ---- L: agent, relay, PostgreSQL, client ---- */
byte d = D;          /* renew deadline: start of last successful renewal + D */
bool rpend = false;  /* a renewal request on its way */
byte rstart = 0;     /* its start */
byte rver = 0;       /* the Lease version it was read at */
bool running = true; /* L's PostgreSQL runs as leader */
byte lwal = 0;       /* commits written on L (WAL end) */
byte acked = 0;      /* highest commit acknowledged in epoch 1 */
#ifdef ACK_AT_CLIENT
byte passed = 0;     /* highest commit whose acknowledgement a fence let through */
#define PASSED passed
#else
#define PASSED acked
#endif

/* ---- the failsafe (FAILSAFE) ---- */
#ifdef FAILSAFE
/* When Fi last confirmed L's failsafe. In the code a confirmation answers
 * L's request started at r and is good until r + G; here L holds it from
 * the moment Fi gives it, good until that moment + G: later than r + G,
 * and at once rather than after the network's delay, so more behaviours
 * for L, not fewer (and the leader's requests need no modelling). */
byte ans[2] = NONE;
byte rta[2] = NONE;  /* ans as Fi reported it with the revocation (/status) */
/* L holds a failsafe while both followers' confirmations are good. */
#define FS_OK (ans[0] != NONE && ans[1] != NONE && now < (ans[0] < ans[1] -> ans[0] : ans[1]) + G)
#else
#define FS_OK false
#endif
/* L's one safety predicate (mayAck): the renew deadline or the failsafe. */
#define MAY_ACK (now < d || FS_OK)
#ifdef FAILSAFE
#define FAILSAFE_ON true
#else
#define FAILSAFE_ON false
#endif

/* ---- followers (index 0 = F1, 1 = F2) ---- */
#define F_FOLLOW 0   /* follows epoch 1: takes its WAL, confirms its failsafe */
#define F_REVOKED 1  /* saw the revocation: takes WAL, confirms nothing */
#define F_SEALED 2   /* saw the seal: relay cut, position reported */
#define F_MOVED 3    /* saw epoch 2 */
byte fst[2];
byte rep[2] = NONE;  /* sealed report (position) for epoch 1, NONE until made */
#ifdef SYNC
byte sent[2];        /* WAL L's relay let through towards Fi (in flight) */
byte fwal[2];        /* WAL Fi's relay let through and Fi's PostgreSQL flushed */
byte ackin[2];       /* Fi's flush report through Fi's relay, in flight to L */
#endif
#ifdef NO_SEAL
byte obs[2];         /* Fi's position as of its agent's last pass (/status) */
#endif

/* ---- operator ---- */
byte okey = 0;       /* renewTime last seen */
byte oseen = 0;      /* when (operator's clock) it was first seen */
byte ophase = 0;     /* 0 watching, 1 judged expired (write pending), 4 revoked, 2 sealed, 3 moved */
byte over = 0;       /* the Lease version judged */
byte ojudged = 0;    /* the renewTime judged (what a blind write writes back) */
byte w = NONE;       /* the winner */

/* ---- epoch 2 ---- */
bool e2 = false;     /* the leader of epoch 2 has made its first commit */
byte forkpos = 0;    /* the winner's WAL at its promotion */

#ifdef NO_OCC_SEAL
#define BLIND_WRITE true
#else
#define BLIND_WRITE false
#endif

#ifdef NO_RELAY_LEASE_CHECK
#define LEADER_RELAY_OK true
#else
#define LEADER_RELAY_OK MAY_ACK
#endif

/* An acknowledgement of epoch 1 up to commit p: the invariants. */
inline acknowledge(p) {
	printf("t=%d   => commit %d acknowledged by L (epoch 1)\n", now, p);
#ifdef SYNC
	if
	:: e2 && p > forkpos ->
		printf("VIOLATION (c): commit %d acknowledged, but the new leader forked at %d: an acknowledged write is lost\n", p, forkpos)
	:: else
	fi;
	assert(!e2 || p <= forkpos);            /* (c) */
#endif
#ifdef WITNESS_FAILSAFE
	assert(now < d);                     /* failsafe reachability witness */
#endif
#ifndef ONLY_C
	if
	:: e2 -> printf("VIOLATION (a): epoch 1 acknowledges commit %d after the leader of epoch 2 committed: split brain\n", p)
	:: else
	fi;
	assert(!e2);                         /* (a) */
#endif
#ifdef PROP_B
	if
	:: sealed || epoch != 1 -> printf("VIOLATION (b): epoch 1 acknowledges commit %d after it was sealed or moved\n", p)
	:: else
	fi;
	assert(!sealed && epoch == 1);       /* (b) */
#endif
	acked = p
}

/* The last fence on the path lets an acknowledgement through into L's
 * PostgreSQL. Normally that is the acknowledgement (see the top); with
 * ACK_AT_CLIENT the acknowledgement is the client receiving PostgreSQL's
 * reply, a separate, later step of L's PostgreSQL. */
inline letThrough(p) {
#ifdef ACK_AT_CLIENT
	passed = p
#else
	acknowledge(p)
#endif
}

active proctype Clock() {
	do
	:: d_step { now < TMAX -> now++ }
	od
}

/* L's agent: renewals (keepLease and the pass), fence and watchdog, relay. */
active proctype LeaderAgent() {
	do
	/* Read the Lease and send a renewal: only the holder, at an unsealed
	 * epoch, at most one renewal started per tick. */
	:: d_step { !rpend && holder == 0 && epoch == 1 && !sealed && !revoked && now > renewT ->
		rpend = true; rstart = now; rver = ver }
	/* The renewal reaches the API server: optimistic concurrency against
	 * the version read. On success the deadline moves to start + D. */
	:: d_step { rpend ->
		if
		:: ver == rver ->
			renewT = rstart; ver++; d = rstart + D;
			printf("t=%d L's agent renewed the Lease (renewal started t=%d): deadline d=%d\n", now, rstart, d)
		:: else ->
			printf("t=%d L's renewal (started t=%d) fails: the Lease changed since it was read\n", now, rstart)
		fi;
		rpend = false; rstart = 0; rver = 0 }
	/* API loss: the renewal never arrives. */
	:: d_step { rpend -> rpend = false; rstart = 0; rver = 0;
		printf("t=%d L's renewal is lost (API server unreachable)\n", now) }
	/* Fence: the agent at d, and instance's watchdog, stop PostgreSQL
	 * (with the failsafe: at the later of d and the failsafe's end). */
	:: d_step { running && !MAY_ACK -> running = false;
		printf("t=%d L's agent/watchdog stops PostgreSQL (d=%d passed, no failsafe)\n", now, d) }
	/* A renewal after an API outage lifts the agent's own fence. (Its
	 * pass may use the Lease it last read, or the renewal's answer, when
	 * the API server is unreachable: so no check of the current Lease.) */
	:: d_step { !running && MAY_ACK -> running = true;
		printf("t=%d L's agent restarts PostgreSQL as leader (d=%d)\n", now, d) }

#ifdef SYNC
	/* L's relay lets WAL through towards a follower (checks d per chunk). */
	:: d_step { sent[0] < lwal && LEADER_RELAY_OK -> sent[0]++ }
	:: d_step { sent[1] < lwal && LEADER_RELAY_OK -> sent[1]++ }
	/* L's relay forwards a follower's flush report to PostgreSQL, which
	 * acknowledges every commit up to it (ANY 1: one report is enough). */
	:: d_step { running && ackin[0] > PASSED && LEADER_RELAY_OK ->
		printf("t=%d L's relay lets F1's flush report %d through to L's PostgreSQL (d=%d)\n", now, ackin[0], d);
		letThrough(ackin[0]) }
	:: d_step { running && ackin[1] > PASSED && LEADER_RELAY_OK ->
		printf("t=%d L's relay lets F2's flush report %d through to L's PostgreSQL (d=%d)\n", now, ackin[1], d);
		letThrough(ackin[1]) }
#endif
	od
}

/* L's PostgreSQL with its client, and (Async) the commit gate. */
active proctype LeaderPostgres() {
	do
	:: d_step { running && lwal < MAXC -> lwal++;
#ifdef NO_GATE
		printf("t=%d client commits %d on L; with no gate, PostgreSQL replies at once (d=%d)\n", now, lwal, d);
		acknowledge(lwal)
#else
		printf("t=%d client commits %d on L: written, waiting for its acknowledgement\n", now, lwal)
#endif
		}
#if !defined(SYNC) && !defined(NO_GATE)
	/* The gate (a replication client of L's PostgreSQL in L's agent)
	 * sends its flush acknowledgement only while mayAck (now < d, or the
	 * failsafe). */
	:: d_step { running && PASSED < lwal && MAY_ACK ->
		printf("t=%d L's commit gate sends its flush acknowledgement of commit %d (d=%d)\n", now, lwal, d);
		letThrough(lwal) }
#endif
#ifdef ACK_AT_CLIENT
	/* PostgreSQL's walsender reads the acknowledgement, the backend
	 * replies, the client receives it: no check on the way. */
	:: d_step { running && passed > acked ->
		printf("t=%d L's PostgreSQL reads that acknowledgement and replies to the client (d=%d)\n", now, d);
		acknowledge(passed) }
#endif
	od
}

/* A follower: its agent's pass (seal, move, promotion) and its relay. */
inline follower(i) {
	do
	/* The agent sees the seal: cuts its relays, waits for replay to reach
	 * the end of the WAL on disk, and reports that position as sealed. */
	:: d_step { fst[i] <= F_REVOKED && sealed ->
#ifdef FAILSAFE
		if
		:: fst[i] == F_FOLLOW -> rta[i] = ans[i]
		:: else
		fi;
#endif
		fst[i] = F_SEALED;
#ifdef SYNC
		rep[i] = fwal[i];
#else
		rep[i] = 0;
#endif
		printf("t=%d F%d sees the seal of epoch 1, cuts its relay, reports position %d\n", now, i + 1, rep[i]) }
	/* The agent sees epoch 2: re-points; the winner promotes and its
	 * PostgreSQL makes the first commit of epoch 2. */
	:: d_step { fst[i] != F_MOVED && epoch == 2 ->
		fst[i] = F_MOVED;
		if
		:: holder == i + 1 ->
#ifdef SYNC
			forkpos = fwal[i];
#endif
			e2 = true;
			printf("t=%d F%d sees the Lease: promotes at position %d and commits in epoch 2\n", now, i + 1, forkpos);
#ifdef SYNC
			if
			:: acked > forkpos ->
				printf("VIOLATION (c): commit %d was acknowledged in epoch 1, the new leader has only %d: an acknowledged write is lost\n", acked, forkpos)
			:: else
			fi;
			assert(acked <= forkpos);         /* (c) */
#endif
#ifdef WITNESS
			assert(acked < MAXC);             /* reachability witness */
#endif
			skip
		:: else -> printf("t=%d F%d sees epoch 2 and follows F%d\n", now, i + 1, holder)
		fi }
#ifdef SYNC
	/* The follower's relay takes WAL of epoch 1 only while its agent has
	 * seen epoch 1 unsealed (revoked or not); its PostgreSQL flushes it. */
	:: d_step { fst[i] <= F_REVOKED && fwal[i] < sent[i] -> fwal[i]++;
		printf("t=%d F%d receives and flushes commit %d\n", now, i + 1, fwal[i]) }
	/* Its flush report goes back through its relay (same check), then is
	 * in flight to L (TCP, kernel buffers: delivered whenever L reads). */
	:: d_step { fst[i] <= F_REVOKED && ackin[i] < fwal[i] -> ackin[i] = fwal[i];
		printf("t=%d F%d's relay sends its flush report %d to L\n", now, i + 1, ackin[i]) }
#endif
#ifdef FAILSAFE
	/* The agent sees the revocation: it confirms nothing more, and
	 * reports, on /status, the revocation and when it last confirmed. */
	:: d_step { fst[i] == F_FOLLOW && revoked ->
		fst[i] = F_REVOKED; rta[i] = ans[i];
		printf("t=%d F%d sees the revocation of epoch 1: confirms nothing more (last confirmed at t=%d, 255 = never)\n", now, i + 1, rta[i]) }
	/* It confirms L's failsafe while it follows epoch 1 and has seen no
	 * revocation (CONFIRM_WHEN_REVOKED: until it sees epoch 2). */
#ifdef CONFIRM_WHEN_REVOKED
	:: d_step { fst[i] != F_MOVED && ans[i] != now ->
#else
	:: d_step { fst[i] == F_FOLLOW && ans[i] != now ->
#endif
		ans[i] = now;
		printf("t=%d F%d confirms L's failsafe (good until %d)\n", now, i + 1, now + G) }
#endif
#ifdef NO_SEAL
	/* A pass records PostgreSQL's position; /status serves it until the
	 * next pass (the HTTP server answers while a pass is stuck, e.g. in a
	 * slow API call). */
	:: d_step { fst[i] == 0 && obs[i] != fwal[i] -> obs[i] = fwal[i] }
#endif
	od
}

/* The operator: expiry by its own clock, seal, election, move. */
active proctype Operator() {
	do
	/* A pass reads the Lease: a new renewTime is "seen" now; with no
	 * renewal seen for L, the leader is lost. */
	:: d_step { ophase == 0 && (renewT != okey || now >= oseen + L) ->
		if
		:: renewT != okey -> okey = renewT; oseen = now
		:: else
		fi;
		if
		:: now >= oseen + L ->
			ophase = 1; over = ver; ojudged = renewT;
			printf("t=%d operator: no renewal seen since t=%d: leader lost (judged Lease v%d)\n", now, oseen, ver)
		:: else
		fi }
#ifdef FAILSAFE
	/* Phase one with the failsafe: revoke, with an update against the
	 * version judged (as the seal below). Nobody renews a revoked epoch. */
	:: d_step { ophase == 1 ->
		if
		:: ver == over || BLIND_WRITE ->
			printf("t=%d operator revokes epoch 1 (Lease v%d)\n", now, ver);
			renewT = ojudged; revoked = true; ver++; ophase = 4
		:: else -> printf("t=%d operator's revocation fails: the Lease changed since it judged it; looks again\n", now);
			ophase = 0
		fi;
		over = 0; ojudged = 0 }
	/* Then the seal, once a follower reported the revocation and its last
	 * confirmation (as it reported it) has expired: L cannot hold a
	 * confirmation from every follower any more, nor get a new one. */
#ifdef NO_FAILSAFE_WAIT
	:: d_step { ophase == 4 && (fst[0] >= F_REVOKED || fst[1] >= F_REVOKED) ->
#else
	:: d_step { ophase == 4 &&
		((fst[0] >= F_REVOKED && (rta[0] == NONE || now >= rta[0] + G)) ||
		 (fst[1] >= F_REVOKED && (rta[1] == NONE || now >= rta[1] + G))) ->
#endif
		printf("t=%d operator seals epoch 1 (revocation reported; last confirmations F1=%d F2=%d expired)\n", now, rta[0], rta[1]);
		sealed = true; ver++; ophase = 2 }
#endif
#ifndef NO_SEAL
	/* Phase one: seal, with an update against the version judged (a
	 * renewal in between makes it fail, and the operator looks again). The
	 * update writes the Lease as judged, plus the seal. */
	:: d_step { ophase == 1 && !FAILSAFE_ON ->
		if
		:: ver == over || BLIND_WRITE ->
			if
			:: ver != over ->
				printf("t=%d operator seals epoch 1 with a blind write over Lease v%d (it judged v%d): the renewal in between is overwritten\n", now, ver, over)
			:: else -> printf("t=%d operator seals epoch 1 (Lease v%d)\n", now, ver)
			fi;
			renewT = ojudged; sealed = true; ver++; ophase = 2; oseen = 0; okey = 0
		:: else -> printf("t=%d operator's seal fails: the Lease changed since it judged it; looks again\n", now);
			ophase = 0
		fi;
		over = 0; ojudged = 0 }
	/* Phase two: elect among the sealed reports and move the Lease (the
	 * sealed Lease cannot change any more: nobody renews a sealed epoch). */
#ifdef SYNC
	/* Any follower at the highest reported position may win: at a tie,
	 * either (the operator takes the first eligible one). */
	:: d_step { ophase == 2 &&
#ifdef COUNT_SILENT
		(rep[0] != NONE || rep[1] != NONE) &&    /* silent followers counted */
#else
		(rep[0] != NONE && rep[1] != NONE) &&    /* n - k + 1 = 2 reports */
#endif
		rep[0] != NONE && (rep[1] == NONE || rep[0] >= rep[1]) ->
		w = 0; holder = w + 1; epoch = 2; ver++; ophase = 3;
		printf("t=%d operator elects F%d (reports F1=%d F2=%d, 255 = none) and moves the Lease to it at epoch 2\n", now, w + 1, rep[0], rep[1]) }
	:: d_step { ophase == 2 &&
#ifdef COUNT_SILENT
		(rep[0] != NONE || rep[1] != NONE) &&
#else
		(rep[0] != NONE && rep[1] != NONE) &&
#endif
		rep[1] != NONE && (rep[0] == NONE || rep[1] >= rep[0]) ->
		w = 1; holder = w + 1; epoch = 2; ver++; ophase = 3;
		printf("t=%d operator elects F%d (reports F1=%d F2=%d, 255 = none) and moves the Lease to it at epoch 2\n", now, w + 1, rep[0], rep[1]) }
#else
	/* Async: any follower that reported (maxLagBytes not modelled). */
	:: d_step { ophase == 2 && rep[0] != NONE -> w = 0; holder = 1; epoch = 2; ver++; ophase = 3;
		printf("t=%d operator elects F1 and moves the Lease to it at epoch 2\n", now) }
	:: d_step { ophase == 2 && rep[1] != NONE -> w = 1; holder = 2; epoch = 2; ver++; ophase = 3;
		printf("t=%d operator elects F2 and moves the Lease to it at epoch 2\n", now) }
#endif
#else
	/* NO_SEAL: elect from the followers' /status and move at once.
	 * Note: with L's relay check in place, the scenario docs/protocol.md
	 * gives for the seal (a follower that has not seen the new epoch
	 * acknowledges a thawed leader's commit) cannot happen here: L's relay
	 * stops at d, before the operator may act (with FRESH_STATUS no
	 * counterexample exists). What breaks without the seal is that the
	 * positions compared are not final: /status is the agent's last pass,
	 * which may predate the last acknowledged flush. With the relay check
	 * also gone (L's clock wrong), the docs' scenario appears. */
	:: d_step { ophase == 1 ->
		if
		:: ver == over || BLIND_WRITE ->
#ifdef FRESH_STATUS
			obs[0] = fwal[0]; obs[1] = fwal[1];
#endif
			if
			:: obs[0] >= obs[1] -> w = 0
			:: else -> w = 1
			fi;
			holder = w + 1; epoch = 2; ver++; ophase = 3; oseen = 0; okey = 0;
			printf("t=%d operator elects F%d without a seal (/status: F1=%d F2=%d) and moves the Lease at epoch 2\n", now, w + 1, obs[0], obs[1])
		:: else -> printf("t=%d operator's move fails: the Lease changed since it judged it\n", now);
			ophase = 0
		fi;
		over = 0; ojudged = 0 }
#endif
	od
}

active proctype F1() { follower(0) }
active proctype F2() { follower(1) }
