package auth

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// view is the token bucket as a watch last delivered it: every token's hash and record, in
// memory. While [Store.Run] keeps it current, a token is checked against it with no round trip,
// a revocation on any replica takes effect as soon as the watch delivers the delete, and an
// outage of the event store does not stop authentication: the view keeps its last state.
type view struct {
	records map[string]record // by hash key
	// current says the watch delivered everything stored and is still running; once it has, the
	// view answers even after the watch broke (an outage), until the watch is back.
	synced bool
}

// Watch retry bounds of [Store.Run].
const (
	watchRetryMin = 100 * time.Millisecond
	watchRetryMax = 5 * time.Second
)

// Run keeps the in-memory view of the token bucket current until ctx ends, then returns nil.
// Before its first full delivery, and if it never gets one, Authenticate reads the bucket for
// every token it has not cached. When the watch breaks (the event store is unreachable), the view
// keeps its last state, so tokens known then keep working, and Run watches again with backoff.
func (s *Store) Run(ctx context.Context) error {
	logger := s.logger
	wait := watchRetryMin
	for {
		err := s.watch(ctx)
		if ctx.Err() != nil {
			return nil
		}
		logger.Warn("token watch ended; known tokens keep working, watching again", "error", err, "retry_in", wait)
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
		wait = min(2*wait, watchRetryMax)
	}
}

// watch delivers the bucket into a fresh view, swaps it in once complete, then applies updates
// until the watch ends.
func (s *Store) watch(ctx context.Context) error {
	w, err := s.kv.WatchAll(ctx)
	if err != nil {
		return fmt.Errorf("watch tokens: %w", err)
	}
	defer func() { _ = w.Stop() }()
	next := map[string]record{}
	live := false
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case e, ok := <-w.Updates():
			if !ok {
				return fmt.Errorf("watch tokens: the watch ended")
			}
			if e == nil { // everything stored has been delivered
				s.mu.Lock()
				s.view = view{records: next, synced: true}
				s.mu.Unlock()
				live = true
				continue
			}
			if !live {
				apply(next, e, s.logger)
				continue
			}
			s.mu.Lock()
			apply(s.view.records, e, s.logger)
			if e.Operation() != jetstream.KeyValuePut {
				delete(s.cache, e.Key())
				s.revokes++
			}
			s.mu.Unlock()
		}
	}
}

// apply applies one watch entry to records.
func apply(records map[string]record, e jetstream.KeyValueEntry, logger *slog.Logger) {
	if e.Key() == bootstrapKey {
		return
	}
	if e.Operation() != jetstream.KeyValuePut {
		delete(records, e.Key())
		return
	}
	var rec record
	if err := json.Unmarshal(e.Value(), &rec); err != nil {
		logger.Error("corrupt token entry: the token is refused", "revision", e.Revision(), "error", err)
		delete(records, e.Key())
		return
	}
	records[e.Key()] = rec
}
