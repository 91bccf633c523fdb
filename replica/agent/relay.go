package agent

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/regent-dev/regent/internal/leadership"
	"github.com/regent-dev/regent/internal/names"
	"github.com/regent-dev/regent/internal/pipe"
	"github.com/regent-dev/regent/internal/pki"
	"github.com/regent-dev/regent/replica/walarchive"
)

// The relay carries every replication connection between pods
// (docs/data-plane.md). A follower's PostgreSQL connects to its own agent's unix socket; the
// agent dials the Lease holder's agent on <pod IP>:5433 and says which
// epoch it follows; the leader's agent accepts only while it holds the
// Lease at that epoch, and relays to its local PostgreSQL socket. Both ends
// cut their relays when leadership changes, and the leader's end checks
// its lease for every chunk it forwards in either direction.

const (
	handshakePrefix    = "REGENT-RELAY/1"
	walHandshakePrefix = "REGENT-WAL/1"
)

// relaySet tracks open relays so that a leadership change cuts them all.
type relaySet struct {
	mu    sync.Mutex
	conns map[net.Conn]struct{}
}

func newRelaySet() *relaySet { return &relaySet{conns: map[net.Conn]struct{}{}} }

func (s *relaySet) add(c ...net.Conn) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, x := range c {
		s.conns[x] = struct{}{}
	}
}

func (s *relaySet) remove(c ...net.Conn) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, x := range c {
		delete(s.conns, x)
	}
}

func (s *relaySet) closeAll() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for c := range s.conns {
		_ = c.Close()
	}
	clear(s.conns)
}

// serveRelay is the leader's end, on $POD_IP:5433.
func (a *Agent) serveRelay(ctx context.Context) error {
	l, err := net.Listen("tcp", net.JoinHostPort(a.cfg.PodIP, strconv.Itoa(a.cfg.RelayPort)))
	if err != nil {
		return fmt.Errorf("relay listener: %w", err)
	}
	return pipe.Serve(ctx, tls.NewListener(l, a.serverConfig(true)), func(c net.Conn) { a.acceptRelay(ctx, c) })
}

// maxHandshake bounds the handshake line: a peer that sends more, or
// nothing for handshakeTimeout, is refused before anything is allocated
// for it.
const maxHandshake = 256

// handshakeTimeout bounds the TLS handshake and the handshake line
// together (a variable for the tests).
var handshakeTimeout = 5 * time.Second

func (a *Agent) acceptRelay(ctx context.Context, c net.Conn) {
	_ = c.SetDeadline(time.Now().Add(handshakeTimeout))
	// Mutual TLS first: only a member's certificate of the cluster's CA
	// gets as far as the handshake line, which must then name that member.
	certified, err := a.peerOf(ctx, c)
	if err != nil {
		a.relayRefused.WithLabelValues(tlsRefusal(err)).Inc()
		a.log.Info("Refused a relay", "remote", c.RemoteAddr().String(), "reason", err.Error())
		_ = c.Close()
		return
	}
	// A reader no larger than a handshake: ReadSlice fails on a longer
	// line, and the relay's own reads bypass so small a buffer.
	r := bufio.NewReaderSize(c, maxHandshake)
	line, err := r.ReadSlice('\n')
	if errors.Is(err, bufio.ErrBufferFull) {
		a.relayRefused.WithLabelValues("TooLong").Inc()
		a.log.Info("Refused a relay", "reason", "handshake longer than its limit")
		_, _ = fmt.Fprintf(c, "NO handshake too long\n")
		_ = c.Close()
		return
	}
	if err != nil {
		_ = c.Close()
		return
	}
	_ = c.SetDeadline(time.Time{})
	h, err := parseHandshake(string(line))
	epoch, peer := h.epoch, h.peer
	reason := "Malformed"
	if err == nil {
		err, reason = a.member(peer), "NotAMember"
	}
	if err == nil && peer != certified {
		err, reason = fmt.Errorf("the handshake names %s, the certificate %s", peer, certified), "CertificateMismatch"
	}
	if err == nil && h.kind == confirmHandshakePrefix {
		a.answerConfirmation(c, h)
		return
	}
	if err != nil || !a.ls.mayAck(epoch, a.clock.Now()) {
		why := "not the leader of that epoch"
		if err != nil {
			why = err.Error()
		} else {
			reason = "NotTheLeader"
		}
		a.relayRefused.WithLabelValues(reason).Inc()
		a.log.Info("Refused a relay", "peer", peer, "epoch", epoch, "reason", why)
		_, _ = fmt.Fprintf(c, "NO %s\n", why)
		_ = c.Close()
		return
	}
	if h.kind == walHandshakePrefix {
		a.serveWAL(ctx, c, h)
		return
	}
	if err := a.ensureSlot(ctx, peer); err != nil {
		a.log.Info("Could not create the follower's slot", "peer", peer, "error", err.Error())
	}
	local, err := net.Dial("unix", filepath.Join(a.cfg.RunDir, fmt.Sprintf(".s.PGSQL.%d", names.PortPostgres)))
	if err != nil {
		_, _ = fmt.Fprintf(c, "NO local PostgreSQL unreachable\n")
		_ = c.Close()
		return
	}
	if _, err := fmt.Fprintf(c, "OK\n"); err != nil {
		_ = c.Close()
		_ = local.Close()
		return
	}
	a.relays.add(c, local)
	defer a.relays.remove(c, local)
	// Bytes the peer sent after its handshake line are in r's buffer.
	check := func() bool { return a.ls.mayAck(epoch, a.clock.Now()) }
	pipe.Both(&bufferedConn{Conn: c, r: r}, local, check)
}

// peerOf completes c's TLS handshake and returns the pod its verified
// certificate names.
func (a *Agent) peerOf(ctx context.Context, c net.Conn) (string, error) {
	tc, ok := c.(*tls.Conn)
	if !ok {
		return "", errors.New("not a TLS connection")
	}
	hctx, cancel := context.WithTimeout(ctx, handshakeTimeout)
	defer cancel()
	if err := tc.HandshakeContext(hctx); err != nil {
		return "", fmt.Errorf("TLS: %w", err)
	}
	return pki.PeerPod(tc.ConnectionState())
}

// tlsRefusal names why a peer failed the TLS handshake, for the refusal
// metric: Certificate when it showed none, or one this cluster's CA did not
// sign or that names no member; TLS when it did not speak TLS 1.3 at all
// (garbage, plain text, a handshake that never ended).
func tlsRefusal(err error) string {
	var verify *tls.CertificateVerificationError
	if errors.As(err, &verify) || strings.Contains(err.Error(), "certificate") {
		return "Certificate"
	}
	return "TLS"
}

// member checks that peer names another pod this cluster can have: slots
// and WAL are only for members. (That the peer is that pod, its
// certificate proves: acceptRelay checks both.)
func (a *Agent) member(peer string) error {
	i, ok := names.Ordinal(a.cfg.Cluster, peer)
	if !ok || i >= names.MaxReplicas || peer == a.cfg.Pod {
		return fmt.Errorf("%q is not a member of cluster %s", peer, a.cfg.Cluster)
	}
	if !a.members.counts(i) {
		return fmt.Errorf("%q is no longer a member of cluster %s (%d members)", peer, a.cfg.Cluster, a.members.replicas.Load())
	}
	return nil
}

// handshake is the first line a follower's agent sends: a replication
// relay (REGENT-RELAY/1 epoch=N pod=P) or an archived WAL file
// (REGENT-WAL/1 epoch=N pod=P file=F).
type handshake struct {
	kind, peer, file string
	epoch            int64
}

func parseHandshake(line string) (handshake, error) {
	f := strings.Fields(line)
	var h handshake
	switch {
	case len(f) == 3 && (f[0] == handshakePrefix || f[0] == confirmHandshakePrefix):
	case len(f) == 4 && f[0] == walHandshakePrefix && strings.HasPrefix(f[3], "file="):
		h.file = strings.TrimPrefix(f[3], "file=")
		if !walarchive.ValidName(h.file) {
			return h, errors.New("bad WAL file name")
		}
	default:
		return h, errors.New("bad handshake")
	}
	h.kind = f[0]
	epoch, err := strconv.ParseInt(strings.TrimPrefix(f[1], "epoch="), 10, 64)
	if err != nil {
		return h, errors.New("bad epoch")
	}
	h.epoch, h.peer = epoch, strings.TrimPrefix(f[2], "pod=")
	return h, nil
}

// serveFollowerRelay is the follower's end: a unix socket named as
// PostgreSQL names a socket for port 5433, so that libpq's
// host=<run dir> port=5433 reaches it.
func (a *Agent) serveFollowerRelay(ctx context.Context) error {
	path := filepath.Join(a.cfg.RunDir, fmt.Sprintf(".s.PGSQL.%d", a.cfg.RelayPort))
	if err := os.MkdirAll(a.cfg.RunDir, 0o755); err != nil { //nolint:gosec // G301: the pod's run directory, shared with the postgres container
		return err
	}
	_ = os.Remove(path)
	l, err := net.Listen("unix", path)
	if err != nil {
		return fmt.Errorf("follower relay socket: %w", err)
	}
	// PostgreSQL connects to it; the run directory is the pod's own.
	if err := os.Chmod(path, 0o666); err != nil { //nolint:gosec // G302: PostgreSQL, another user, connects; the directory is the pod's own
		return err
	}
	return pipe.Serve(ctx, l, func(c net.Conn) { a.dialRelay(ctx, c) })
}

// dialRelay connects a local client to the current leader's agent.
func (a *Agent) dialRelay(ctx context.Context, c net.Conn) {
	remote, r, epoch, err := a.dialLeader(ctx, handshakePrefix, "")
	if err != nil {
		a.log.V(1).Info("Relay not opened", "reason", err.Error())
		a.holdWhileSealing(ctx)
		_ = c.Close()
		return
	}
	if answer, err := r.ReadString('\n'); err != nil || strings.TrimSpace(answer) != "OK" {
		_ = remote.Close()
		a.log.V(1).Info("Relay not opened", "reason", "leader refused: "+strings.TrimSpace(answer))
		_ = c.Close()
		return
	}
	_ = remote.SetReadDeadline(time.Time{})
	a.relays.add(c, remote)
	defer a.relays.remove(c, remote)
	// Forward only while the agent still follows this epoch, unsealed, and
	// has heard from the API server within the renew deadline.
	pipe.Both(c, &bufferedConn{Conn: remote, r: r}, func() bool { return a.ls.mayFollow(epoch, a.clock.Now()) })
}

// sealHold bounds how long a refused local connection is held while this
// follower seals (holdWhileSealing).
const sealHold = 2 * time.Second

// holdWhileSealing delays the refusal of a local connection while the
// epoch is sealed and this follower has not yet recorded its seal, up to
// sealHold. PostgreSQL's WAL receiver then waits in its connection, and
// the startup process, having replayed all the WAL held, waits for it in a
// state seal() can see. Refused at once, the receiver restarts in a loop
// (restore_command, pg_wal, a new receiver) whose waits are too short to
// be seen, and the seal, which the election waits for, took up to 6 s.
func (a *Agent) holdWhileSealing(ctx context.Context) {
	for deadline := time.Now().Add(sealHold); time.Now().Before(deadline) && ctx.Err() == nil; sleep(ctx, 20*time.Millisecond) {
		a.ls.mu.Lock()
		lease, epoch, recorded := a.ls.lease, a.ls.epoch, a.ls.sealedEpoch
		a.ls.mu.Unlock()
		if lease == nil || leadership.Of(lease).SealedEpoch < epoch || recorded == epoch {
			return
		}
	}
}

// dialLeader opens a connection to the Lease holder's agent and sends the
// handshake (with extra fields, if any); the answer is left for the caller
// to read from the returned reader, under a read deadline.
func (a *Agent) dialLeader(ctx context.Context, prefix, extra string) (net.Conn, *bufio.Reader, int64, error) {
	a.ls.mu.Lock()
	lease, epoch := a.ls.lease, a.ls.epoch
	contact := lease != nil && a.ls.inContact(a.clock.Now())
	a.ls.mu.Unlock()
	if lease == nil {
		return nil, nil, 0, errors.New("no Lease seen yet")
	}
	holder := ptrString(lease.Spec.HolderIdentity)
	switch {
	case holder == "" || holder == a.cfg.Pod:
		return nil, nil, 0, errors.New("no other pod holds the Lease")
	case leadership.Of(lease).SealedEpoch >= epoch:
		return nil, nil, 0, errors.New("the epoch is sealed")
	case !contact:
		// A follower that lost the API server must not keep feeding its
		// PostgreSQL from a leader that may have been replaced (unless it
		// confirms that leader's failsafe).
		return nil, nil, 0, errors.New("no recent contact with the API server")
	}
	ip, err := a.podIP(ctx, holder)
	if err != nil {
		return nil, nil, 0, errors.New("leader pod address unknown")
	}
	config, err := a.clientConfig(holder)
	if err != nil {
		return nil, nil, 0, err
	}
	// The leader's certificate must name the Lease's holder.
	d := tls.Dialer{Config: config}
	dctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	remote, err := d.DialContext(dctx, "tcp", net.JoinHostPort(ip, strconv.Itoa(a.cfg.RelayPort)))
	if err != nil {
		return nil, nil, 0, fmt.Errorf("dial leader: %w", err)
	}
	hello := fmt.Sprintf("%s epoch=%d pod=%s", prefix, epoch, a.cfg.Pod)
	if extra != "" {
		hello += " " + extra
	}
	if _, err := fmt.Fprintln(remote, hello); err != nil {
		_ = remote.Close()
		return nil, nil, 0, fmt.Errorf("handshake: %w", err)
	}
	_ = remote.SetReadDeadline(time.Now().Add(5 * time.Second))
	return remote, bufio.NewReader(remote), epoch, nil
}

// bufferedConn reads through a bufio.Reader that may hold bytes already.
type bufferedConn struct {
	net.Conn
	r *bufio.Reader
}

func (b *bufferedConn) Read(p []byte) (int, error) { return b.r.Read(p) }
