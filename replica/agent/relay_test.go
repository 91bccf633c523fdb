package agent

import (
	"bufio"
	"context"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"k8s.io/utils/clock"

	"github.com/regent-dev/regent/replica/api"
)

// The leader's end of the relay refuses, before anything else, a handshake
// that is too long, malformed, or names a pod that is not a member of its
// cluster: no slot is made, no WAL file is served for a stranger.
func TestRelayRefusesStrangersAndEndlessHandshakes(t *testing.T) {
	a := New(Config{Cluster: "db", Pod: "db-0", RunDir: t.TempDir(), Log: logr.Discard(), Clock: clock.RealClock{}})
	a.ls.mode, a.ls.epoch, a.ls.deadline = api.ModeLeader, 3, time.Now().Add(time.Hour)
	for _, tc := range []struct {
		name, hello, want, reason string
	}{
		{"a pod of another cluster", "REGENT-RELAY/1 epoch=3 pod=other-1\n", `NO "other-1" is not a member of cluster db`, "NotAMember"},
		{"a made-up slot name", "REGENT-RELAY/1 epoch=3 pod=intruder-slot\n", `NO "intruder-slot" is not a member of cluster db`, "NotAMember"},
		{"an ordinal past the largest cluster", "REGENT-RELAY/1 epoch=3 pod=db-9\n", `NO "db-9" is not a member of cluster db`, "NotAMember"},
		{"itself", "REGENT-RELAY/1 epoch=3 pod=db-0\n", `NO "db-0" is not a member of cluster db`, "NotAMember"},
		{"a WAL file for a stranger", "REGENT-WAL/1 epoch=3 pod=intruder file=000000010000000000000002\n",
			`NO "intruder" is not a member of cluster db`, "NotAMember"},
		{"garbage", "GET / HTTP/1.1\n", "NO bad handshake", "Malformed"},
		{"an endless line", strings.Repeat("x", 64<<10), "NO handshake too long", "TooLong"},
		{"a member of an epoch it does not lead", "REGENT-RELAY/1 epoch=2 pod=db-1\n", "NO not the leader of that epoch", "NotTheLeader"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := testutil.ToFloat64(a.relayRefused.WithLabelValues(tc.reason))
			server, client := net.Pipe()
			done := make(chan struct{})
			go func() { defer close(done); a.acceptRelay(context.Background(), server) }()
			go func() { _, _ = client.Write([]byte(tc.hello)) }()
			_ = client.SetReadDeadline(time.Now().Add(10 * time.Second))
			answer, err := bufio.NewReader(client).ReadString('\n')
			if err != nil || strings.TrimSpace(answer) != tc.want {
				t.Errorf("answered %q (%v), want %q", strings.TrimSpace(answer), err, tc.want)
			}
			_ = client.Close()
			<-done
			if n := testutil.ToFloat64(a.relayRefused.WithLabelValues(tc.reason)) - before; n != 1 {
				t.Errorf("regent_agent_relay_refused_total{reason=%q} rose by %v, want 1", tc.reason, n)
			}
		})
	}
}
