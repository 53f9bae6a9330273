package projections

import (
	"context"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"
)

// Backoff between attempts to reach the stream again after a failure: 100ms, doubling up to 5s.
const (
	minRetry = 100 * time.Millisecond
	maxRetry = 5 * time.Second
)

// Follower is what every reader that replays the stream and then follows it shares — the
// server's [Runner] and the in-process client of package local: retrying with a backoff, the
// loop that follows the stream again after a failure, and readiness (caught up with the stream
// as it was at the start). The reader brings what it folds and where it reads from.
type Follower struct {
	logger    *slog.Logger
	ready     atomic.Bool
	readyCh   chan struct{}
	readyOnce sync.Once
	closeOnce sync.Once
	closed    chan struct{}
	closeErr  error
}

// NewFollower returns a follower that logs its retries to logger (nil discards them).
func NewFollower(logger *slog.Logger) *Follower {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return &Follower{logger: logger, readyCh: make(chan struct{}), closed: make(chan struct{})}
}

// Retry calls try until it returns nil, and reports true then. After each failure it logs what
// (with "; retrying") and waits, 100ms doubling up to 5s. It reports false when ctx ends first.
func (f *Follower) Retry(ctx context.Context, what string, try func(context.Context) error) bool {
	for delay := minRetry; ; delay = min(delay*2, maxRetry) {
		err := try(ctx)
		if err == nil {
			return true
		}
		if ctx.Err() != nil {
			return false
		}
		f.logger.Warn(what+"; retrying", "retry_in", delay, "error", err)
		if !sleep(ctx, delay) {
			return false
		}
	}
}

// Follow calls attempt, which follows the stream from where the reader is, again and again until
// ctx ends. When an attempt fails, failed is told why and how long Follow waits before the next
// one: 100ms, doubling up to 5s, and starting over when position (the reader's sequence) moved
// during the failed attempt. An attempt that returns nil while ctx lives is started again at once,
// the backoff starting over: the reader wants to start over (the stream elected a leader, or the
// state has to be replayed from the beginning).
func (f *Follower) Follow(ctx context.Context, attempt func(context.Context) error, position func() uint64, failed func(err error, retryIn time.Duration)) {
	delay := minRetry
	for {
		before := position()
		err := attempt(ctx)
		if ctx.Err() != nil {
			return
		}
		if err == nil {
			delay = minRetry
			continue
		}
		if position() > before {
			delay = minRetry // it made progress: the backoff starts over
		}
		failed(err, delay)
		if !sleep(ctx, delay) {
			return
		}
		delay = min(delay*2, maxRetry)
	}
}

// MarkReady makes the follower ready, and reports whether it was not ready before.
func (f *Follower) MarkReady() bool {
	first := false
	f.readyOnce.Do(func() {
		f.ready.Store(true)
		close(f.readyCh)
		first = true
	})
	return first
}

// Ready reports whether [Follower.MarkReady] was called.
func (f *Follower) Ready() bool { return f.ready.Load() }

// WaitReady blocks until the follower is ready. Errors: ctx.Err() when ctx ends first; the error
// given to [Follower.Close] when the follower is closed first.
func (f *Follower) WaitReady(ctx context.Context) error {
	select {
	case <-f.readyCh:
		return nil
	default:
	}
	select {
	case <-f.readyCh:
		return nil
	case <-f.closed:
		return f.closeErr
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Close ends the waits of WaitReady with err, now and from now on. Only the first call counts.
func (f *Follower) Close(err error) {
	f.closeOnce.Do(func() {
		f.closeErr = err
		close(f.closed)
	})
}

// Position is the stream sequence a reader has applied: it only moves forward, and goroutines can
// wait for it ([Catalog.WaitSequence], and the in-process client's). The zero value is at 0.
type Position struct {
	seq atomic.Uint64
	// mu guards notify, the channel closed when the sequence next advances (or the position is
	// closed), and err. notify is made only when somebody waits, so advancing costs no allocation.
	mu     sync.Mutex
	notify chan struct{}
	err    error
}

// Sequence is the sequence applied, 0 before any.
func (p *Position) Sequence() uint64 { return p.seq.Load() }

// Advance sets the sequence applied to seq and wakes the waiters.
func (p *Position) Advance(seq uint64) {
	p.seq.Store(seq)
	p.wake(nil)
}

// Close makes every wait for a sequence not reached yet return err, now and from now on.
func (p *Position) Close(err error) { p.wake(err) }

func (p *Position) wake(err error) {
	p.mu.Lock()
	if err != nil {
		p.err = err
	}
	if p.notify != nil {
		close(p.notify)
		p.notify = nil
	}
	p.mu.Unlock()
}

// Wait blocks until the sequence is at least seq. Errors: ctx.Err() when ctx ends first; the
// error given to [Position.Close] when the position is closed first.
func (p *Position) Wait(ctx context.Context, seq uint64) error {
	for {
		p.mu.Lock()
		if p.seq.Load() >= seq {
			p.mu.Unlock()
			return nil
		}
		if p.err != nil {
			p.mu.Unlock()
			return p.err
		}
		if p.notify == nil {
			p.notify = make(chan struct{})
		}
		ch := p.notify
		p.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// sleep waits for d, and reports false if ctx ended first.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}
