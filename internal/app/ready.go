package app

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
)

// health is what /readyz checks once the projections have caught up at start: the event store
// answers, and the projections are not more than maxLag behind it (the oldest event they have
// not applied was stored longer ago than that). The error names the cause.
func (m *Main) health(maxLag time.Duration) func(context.Context) error {
	return func(ctx context.Context) error {
		if st := m.nc.Status(); st != nats.CONNECTED {
			return fmt.Errorf("event store unreachable (nats connection %s)", st)
		}
		last, err := m.store.LastSequence(ctx)
		if err != nil {
			return fmt.Errorf("event store unavailable (%w)", err)
		}
		applied := m.catalog.Sequence()
		if applied >= last {
			return nil
		}
		stored, err := m.store.StoredAt(ctx, applied+1)
		if err != nil {
			if errors.Is(err, context.DeadlineExceeded) {
				return fmt.Errorf("event store unavailable (%w)", err)
			}
			return nil // a sequence with no message (never for this stream): nothing waits
		}
		if lag := time.Since(stored); lag > maxLag {
			return fmt.Errorf("projections lag the event store: sequence %d of %d applied, the next stored %s ago (limit %s)",
				applied, last, lag.Round(time.Millisecond), maxLag)
		}
		return nil
	}
}

// connectionPoll is how often watchConnection looks at the NATS connection.
const connectionPoll = 250 * time.Millisecond

// watchConnection keeps m.storeDown current until ctx ends: whether the NATS connection is not
// connected, which makes evaluations answer from the last-known state and say they are stale.
// Polling keeps the evaluation path to one atomic load, and leaves the connection's handlers to
// whoever else needs them.
func (m *Main) watchConnection(ctx context.Context) error {
	t := time.NewTicker(connectionPoll)
	defer t.Stop()
	for {
		m.storeDown.Store(m.nc.Status() != nats.CONNECTED)
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}
