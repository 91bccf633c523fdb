package agent

// The failsafe (docs/protocol.md, rule 1b): a leader that cannot renew its
// Lease may go on acknowledging while every other member confirms, over
// the relay port's mutual TLS, that it still follows this leader's epoch
// and has seen it neither revoked nor sealed. Each confirmation is good
// for failsafeTTL from the start of the request it answers, on the
// leader's clock; the operator revokes the epoch before it seals, and
// seals only once a member that stopped confirming has not confirmed for
// failsafeTTL.

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"sync"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/regent-dev/regent/internal/leadership"
	"github.com/regent-dev/regent/internal/names"
	"github.com/regent-dev/regent/internal/periodic"
	"github.com/regent-dev/regent/replica/api"
)

const (
	confirmHandshakePrefix = "REGENT-CONFIRM/1"
	// failsafeTTL is how long a confirmation holds after its request's
	// start (G in docs/protocol.md).
	failsafeTTL = 2 * time.Second
	// failsafeAfter: the leader asks for confirmations once no renewal
	// has succeeded for this long (one renewal missed, and a half).
	failsafeAfter = 1500 * time.Millisecond
	// failsafePeriod is how often it asks meanwhile.
	failsafePeriod = 250 * time.Millisecond
	// confirmTimeout bounds one request to one member.
	confirmTimeout = time.Second
	// peerRefreshPeriod is how often a leader in contact re-reads its
	// members' pod IPs, which it must know when the API server is gone.
	peerRefreshPeriod = 10 * time.Second
	// peerRetryPeriod: while a member's address is unknown (a pod seconds
	// old has none yet), it is read again this often, so that an outage
	// soon after a cluster starts finds every member's address.
	peerRetryPeriod = time.Second
)

// peerAddresses caches members' pod IPs as last read from the API server:
// the failsafe and a follower's relay need them most when the API server
// cannot answer.
type peerAddresses struct {
	mu   sync.Mutex
	ip   map[string]string
	read time.Time
}

func (p *peerAddresses) get(pod string) string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.ip[pod]
}

func (p *peerAddresses) set(pod, ip string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.ip == nil {
		p.ip = map[string]string{}
	}
	p.ip[pod] = ip
}

// podIP reads pod's IP from the API server, or, when that fails, answers
// the one last read.
func (a *Agent) podIP(ctx context.Context, pod string) (string, error) {
	rctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	p, err := a.cfg.Client.CoreV1().Pods(a.cfg.Namespace).Get(rctx, pod, metav1.GetOptions{})
	if err == nil && p.Status.PodIP != "" {
		a.peers.set(pod, p.Status.PodIP)
		return p.Status.PodIP, nil
	}
	if ip := a.peers.get(pod); ip != "" {
		return ip, nil
	}
	if err == nil {
		err = errors.New("no IP yet")
	}
	return "", fmt.Errorf("pod %s's address: %w", pod, err)
}

// keepFailsafe asks for the members' confirmations while the agent leads
// without a recent renewal, and keeps their addresses fresh otherwise.
func (a *Agent) keepFailsafe(ctx context.Context) {
	periodic.Run(ctx, failsafePeriod, nil, a.failsafeRound)
}

// failsafePeers are the members whose confirmations this leader's failsafe
// needs, or nil when it may not use one: the operator turned it on, the
// Lease this agent last renewed published a member count, and the epoch is
// still its own, unrevoked. The count is the larger of the published one
// and the StatefulSet's: a member added counts at once, one removed only
// after a renewal published the smaller count.
func failsafePeers(s leadership.State, self, cluster string, epoch int64, replicas int32) []string {
	if !s.Failsafe || s.FailsafeReplicas <= 0 || s.Holder != self || s.Epoch != epoch || s.Ending() {
		return nil
	}
	var peers []string
	for i := range int(max(s.FailsafeReplicas, replicas)) {
		if p := names.Pod(cluster, i); p != self {
			peers = append(peers, p)
		}
	}
	return peers
}

// failsafeRound is one of keepFailsafe's rounds.
func (a *Agent) failsafeRound(ctx context.Context) {
	a.ls.mu.Lock()
	lead, lease, epoch, lastRenew := a.ls.mode == api.ModeLeader, a.ls.lease, a.ls.epoch, a.ls.lastRenew
	a.ls.mu.Unlock()
	if !lead || lease == nil {
		return
	}
	peers := failsafePeers(leadership.Of(lease), a.cfg.Pod, a.cfg.Cluster, epoch, a.members.replicas.Load())
	if a.clock.Since(lastRenew) < failsafeAfter {
		a.refreshPeers(ctx, peers)
		return
	}
	if len(peers) == 0 {
		return
	}
	start := a.clock.Now()
	errs := make([]error, len(peers))
	var wg sync.WaitGroup
	for i, p := range peers {
		wg.Go(func() { errs[i] = a.askConfirmation(ctx, p, epoch) })
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		a.log.V(1).Info("No failsafe this round", "error", err.Error())
		return
	}
	until := start.Add(failsafeTTL)
	a.ls.mu.Lock()
	extended := a.ls.mode == api.ModeLeader && a.ls.epoch == epoch && until.After(a.ls.deadline)
	if extended {
		if !a.ls.failsafe {
			a.log.Info("Writing on the failsafe: the Lease cannot be renewed, every member confirms this epoch",
				"epoch", epoch, "members", strings.Join(peers, ","))
		}
		a.ls.deadline, a.ls.failsafe = until, true
	}
	a.ls.mu.Unlock()
	if extended {
		// The watchdog follows the same deadline.
		_ = a.instance.SetDeadline(ctx, until)
	}
}

// refreshPeers re-reads the members' addresses now and then while the API
// server answers.
func (a *Agent) refreshPeers(ctx context.Context, peers []string) {
	a.peers.mu.Lock()
	missing := false
	for _, p := range peers {
		missing = missing || a.peers.ip[p] == ""
	}
	since := a.clock.Since(a.peers.read)
	due := since >= peerRefreshPeriod || (missing && since >= peerRetryPeriod)
	if due {
		a.peers.read = a.clock.Now()
	}
	a.peers.mu.Unlock()
	if !due {
		return
	}
	for _, p := range peers {
		_, _ = a.podIP(ctx, p)
	}
}

// askConfirmation asks peer to confirm epoch, and returns nil only on its
// yes.
func (a *Agent) askConfirmation(ctx context.Context, peer string, epoch int64) error {
	ip := a.peers.get(peer)
	if ip == "" {
		return fmt.Errorf("%s: address unknown", peer)
	}
	config, err := a.clientConfig(peer)
	if err != nil {
		return err
	}
	cctx, cancel := context.WithTimeout(ctx, confirmTimeout)
	defer cancel()
	d := tls.Dialer{Config: config}
	c, err := d.DialContext(cctx, "tcp", net.JoinHostPort(ip, strconv.Itoa(a.cfg.RelayPort)))
	if err != nil {
		return fmt.Errorf("%s: %w", peer, err)
	}
	defer func() { _ = c.Close() }()
	if dl, ok := cctx.Deadline(); ok {
		_ = c.SetDeadline(dl)
	}
	if _, err := fmt.Fprintf(c, "%s epoch=%d pod=%s\n", confirmHandshakePrefix, epoch, a.cfg.Pod); err != nil {
		return fmt.Errorf("%s: %w", peer, err)
	}
	answer, err := bufio.NewReaderSize(c, maxHandshake).ReadString('\n')
	if err != nil {
		return fmt.Errorf("%s: %w", peer, err)
	}
	if answer = strings.TrimSpace(answer); answer != "OK" {
		return fmt.Errorf("%s: %s", peer, answer)
	}
	return nil
}

// answerConfirmation is a follower's end: it confirms only the holder of
// the Lease it last read, at that Lease's epoch, which it follows, and has
// seen neither revoked nor sealed; and it records when, before answering.
func (a *Agent) answerConfirmation(c net.Conn, h handshake) {
	defer func() { _ = c.Close() }()
	why := a.ls.confirm(h.epoch, h.peer, a.clock.Now())
	if why != "" {
		_, _ = fmt.Fprintf(c, "NO %s\n", why)
		return
	}
	_, _ = fmt.Fprintf(c, "OK\n")
}

// confirm decides a confirmation and records it (empty: confirmed).
func (s *leadershipState) confirm(epoch int64, leader string, now time.Time) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case s.lease == nil:
		return "no Lease read yet"
	case s.mode != api.ModeFollower || s.epoch != epoch:
		return fmt.Sprintf("not following epoch %d", epoch)
	case s.revokedEpoch >= epoch:
		return fmt.Sprintf("epoch %d is revoked or sealed", epoch)
	}
	if l := leadership.Of(s.lease); l.Holder != leader || l.Epoch != epoch {
		return fmt.Sprintf("the Lease names %s at epoch %d", l.Holder, l.Epoch)
	}
	s.lastConfirmed, s.confirmedAt = now, now
	return ""
}
