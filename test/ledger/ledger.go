// Package ledger is what the fault tests (test/dataplane, test/e2e) keep of
// the commits clients saw acknowledged, and the checks they make of them:
// that a frozen and thawed leader acknowledged nothing it executed after the
// freeze, and which acknowledged rows a new leader lacks.
package ledger

import (
	"context"
	"time"

	"github.com/jackc/pgx/v5"
)

// Ack is one commit a client saw acknowledged: the row's id, when the
// acknowledgement arrived, and when the server executed the INSERT (its
// clock_timestamp(): the tests run on one host, so one clock).
type Ack struct {
	ID         int
	At, ExecAt time.Time
}

// Insert is the statement every client runs: it returns the new row's id
// and clock_timestamp() at execution.
const Insert = "INSERT INTO t DEFAULT VALUES RETURNING id, at"

// Client inserts rows back to back, one at a time, as an application
// would, and reports every acknowledgement.
type Client struct {
	// Connect opens a connection, and says where it went.
	Connect func(context.Context) (*pgx.Conn, string, error)
	// QueryTimeout is how long an INSERT may wait before the client drops
	// the connection and connects again.
	QueryTimeout time.Duration
	// Acked receives each acknowledgement, with where it was made.
	Acked func(a Ack, on string)
}

// Run inserts until ctx ends.
func (c Client) Run(ctx context.Context) {
	var conn *pgx.Conn
	var on string
	for ctx.Err() == nil {
		if conn == nil {
			cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
			conn, on, _ = c.Connect(cctx)
			cancel()
			if conn == nil {
				time.Sleep(20 * time.Millisecond)
				continue
			}
		}
		var a Ack
		qctx, cancel := context.WithTimeout(ctx, c.QueryTimeout)
		err := conn.QueryRow(qctx, Insert).Scan(&a.ID, &a.ExecAt)
		cancel()
		if err != nil {
			_ = conn.Close(context.Background())
			conn = nil
			continue
		}
		a.At = time.Now()
		c.Acked(a, on)
	}
	if conn != nil {
		_ = conn.Close(context.Background())
	}
}

// Pinned inserts rows into one server only, as a client that keeps its
// connection (or reconnects to the same address after an error) would,
// until ctx ends, and sends every acknowledgement to acks.
func Pinned(ctx context.Context, connect func(context.Context) (*pgx.Conn, error), acks chan<- Ack) {
	Client{
		Connect: func(ctx context.Context) (*pgx.Conn, string, error) {
			conn, err := connect(ctx)
			return conn, "", err
		},
		// Long enough to outlast a freeze: the client must still be
		// waiting when the leader thaws.
		QueryTimeout: 30 * time.Second,
		Acked:        func(a Ack, _ string) { acks <- a },
	}.Run(ctx)
}

// AfterThaw counts, among the acknowledgements of a leader frozen at
// frozenAt and thawed at thawedAt, the late ones (the commit executed after
// the freeze: a split-brain acknowledgement) and those in flight (decided
// before the freeze, delivered after the thaw: the acknowledgement of a
// follower or of the gate that the frozen walsender had not read yet).
func AfterThaw(acks []Ack, frozenAt, thawedAt time.Time) (late, inFlight int) {
	for _, a := range acks {
		switch {
		case !a.ExecAt.Before(frozenAt):
			late++
		case a.At.After(thawedAt):
			inFlight++
		}
	}
	return late, inFlight
}

// Lost counts the acknowledged rows the new leader does not have, and
// those among them executed after the freeze (none may be: such a commit
// was acknowledged by a deposed leader).
func Lost(acks []Ack, have map[int]bool, frozenAt time.Time) (lost, afterFreeze int) {
	for _, a := range acks {
		if !have[a.ID] {
			lost++
			if !a.ExecAt.Before(frozenAt) {
				afterFreeze++
			}
		}
	}
	return lost, afterFreeze
}
