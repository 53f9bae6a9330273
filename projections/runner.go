package projections

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/interlock-dev/interlock/events"
)

// Source is the stream a [Runner] replays and follows; *events.Store satisfies it.
type Source interface {
	// LastSequence is the sequence of the last event in the stream, 0 when it is empty.
	LastSequence(ctx context.Context) (uint64, error)
	// Follow calls h for every event q selects, in stream order, until ctx ends.
	Follow(ctx context.Context, q events.Query, h events.Handler) error
}

// leaderWatcher is a [Source] that tells when the stream elects a leader: *events.Store.
type leaderWatcher interface {
	LeaderChanges(ctx context.Context) (<-chan struct{}, error)
}

// Runner rebuilds a [Catalog] from the stream, then keeps it up to date as events are appended.
type Runner struct {
	src     Source
	catalog *Catalog
	logger  *slog.Logger

	integrity Integrity
	skipped   atomic.Uint64 // messages that were not events, and events the catalog refused

	// checkpoints, when set, is where Run finds the checkpoint to start from.
	checkpoints CheckpointLoader
	// index, when set, records where every message is (see WithIndex).
	index *Index
	// cmu makes what follows consistent with the catalog: it is held while a message is folded
	// and while a checkpoint is taken.
	cmu sync.Mutex
	// last is the last message handled; heads the last accepted message of every subject;
	// refused the messages that failed verification.
	last    events.Link
	heads   map[string]events.Link
	refused []*events.IntegrityError

	// replayed: Run rebuilt the catalog from the stream's start, no checkpoint being usable.
	replayed atomic.Bool
	follower *Follower
	running  atomic.Bool
}

// NewRunner returns a runner that folds src into c. A nil logger discards the logs.
func NewRunner(src Source, c *Catalog, logger *slog.Logger, opts ...RunnerOption) *Runner {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	logger = logger.With("component", "projections")
	r := &Runner{
		src:      src,
		catalog:  c,
		logger:   logger,
		heads:    make(map[string]events.Link),
		follower: NewFollower(logger),
	}
	for _, opt := range opts {
		if opt != nil {
			opt(r)
		}
	}
	return r
}

// errRunning is returned by a second concurrent Run on the same runner.
var errRunning = errors.New("runner already running")

// Run replays the stream into the catalog from the event after the catalog's sequence (the
// beginning, for a new catalog, or the newest checkpoint given by [WithCheckpoints]), then
// follows it until ctx ends, and returns nil then.
//
// The runner is ready (see [Runner.Ready]) once the catalog has caught up with the stream's last
// sequence as it was when Run started. Messages that are not events, and events the catalog
// refuses, are logged with their sequence and skipped. Messages that fail verification are
// skipped too, logged as errors and recorded in [Runner.Integrity]. When following fails (the server went
// away) Run logs the error and resumes from the catalog's sequence after a backoff of 100ms,
// doubling up to 5s. When the source tells of leader elections (*events.Store does), Run follows
// again from the catalog's sequence as soon as the stream elected a leader.
//
// Errors: one when Run is already running on this runner, and one wrapping [ErrOutOfOrder] when
// the stream ends before the catalog's sequence — the stream was replaced, and the catalog has
// to be rebuilt from a new one.
func (r *Runner) Run(ctx context.Context) error {
	if !r.running.CompareAndSwap(false, true) {
		return errRunning
	}
	defer r.running.Store(false)

	target, err := r.lastSequence(ctx)
	if err != nil || ctx.Err() != nil {
		return err
	}
	if r.catalog.Sequence() == 0 && !r.restore(ctx, target) {
		r.replayed.Store(true)
	}
	if ctx.Err() != nil {
		return nil
	}
	r.logger.Info("rebuilding catalog", "from", r.catalog.Sequence()+1, "to", target)
	start := time.Now()
	fold := r.folder(target, start)
	r.checkReady(target, start)

	// A stream that elected a leader is followed again at once: the follow's consumer may have
	// lived on the old leader's server, which only missed heartbeats would tell.
	var elected <-chan struct{}
	if w, ok := r.src.(leaderWatcher); ok {
		if elected, err = w.LeaderChanges(ctx); err != nil {
			r.logger.Warn("not watching the stream's leader: a failover is noticed by missed heartbeats only", "error", err)
		}
	}
	// A stream found to end before the catalog stops the follower: the catalog must be rebuilt.
	ctx, stop := context.WithCancel(ctx)
	defer stop()
	var replaced error
	check := false // check the stream before following: not at first, nor after an election
	r.follower.Follow(ctx, func(ctx context.Context) error {
		if check {
			if _, err := r.lastSequence(ctx); err != nil || ctx.Err() != nil {
				replaced = err
				stop()
				return nil
			}
		}
		check = true
		fctx, cancel := context.WithCancel(ctx)
		changed := make(chan struct{})
		go func() {
			select {
			case <-elected:
				close(changed)
				cancel()
			case <-fctx.Done():
			}
		}()
		err := r.follow(fctx, r.catalog.Sequence()+1, fold)
		cancel()
		select {
		case <-changed:
			if ctx.Err() == nil {
				r.logger.Info("the stream elected a leader: following it", "from", r.catalog.Sequence()+1)
				check = false
				return nil // at once, the backoff starting over
			}
		default:
		}
		return err
	}, r.catalog.Sequence, func(err error, retryIn time.Duration) {
		r.logger.Warn("following the stream stopped; retrying", "from", r.catalog.Sequence()+1, "retry_in", retryIn, "error", err)
	})
	return replaced
}

// lastSequence asks the stream for its last sequence, retrying with backoff until it answers or
// ctx ends (then it returns 0 and nil). A stream behind the catalog is an error.
func (r *Runner) lastSequence(ctx context.Context) (uint64, error) {
	var last uint64
	var behind error
	r.follower.Retry(ctx, "reading the stream's last sequence", func(ctx context.Context) error {
		var err error
		if last, err = r.src.LastSequence(ctx); err != nil {
			return err
		}
		if seq := r.catalog.Sequence(); last < seq {
			behind = fmt.Errorf("%w: stream ends at sequence %d but the catalog is at %d: the stream was replaced", ErrOutOfOrder, last, seq)
		}
		return nil
	})
	if behind != nil || ctx.Err() != nil {
		return 0, behind
	}
	return last, nil
}

// foldBuffer is how many delivered messages may wait to be folded.
const foldBuffer = 1024

type delivery struct {
	ev  events.Event
	err error
}

// follow follows the stream from a sequence until it fails or ctx ends. Messages are handed from
// the goroutine that reads and decodes them to one that folds them, so that reading the next
// message overlaps folding (mostly: decoding the payload of) this one. Every message handed over
// is folded before follow returns, so the catalog's sequence is where to resume.
func (r *Runner) follow(ctx context.Context, from uint64, fold func(events.Event, error)) error {
	ch := make(chan delivery, foldBuffer)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for d := range ch {
			fold(d.ev, d.err)
		}
	}()
	err := r.src.Follow(ctx, events.Query{FromSequence: from}, func(ev events.Event, err error) error {
		select {
		case ch <- delivery{ev, err}:
			return nil
		case <-ctx.Done():
			return events.ErrStop
		}
	})
	close(ch)
	<-done
	return err
}

// folder returns the function that folds each delivered message into the catalog, logging what
// it skips, and marks the runner ready once it reached target.
func (r *Runner) folder(target uint64, start time.Time) func(events.Event, error) {
	return func(ev events.Event, err error) {
		r.cmu.Lock()
		defer r.cmu.Unlock()
		if ev.Sequence <= r.last.Sequence {
			return // a redelivery after following resumed
		}
		var ie *events.IntegrityError
		if errors.As(err, &ie) {
			r.refused = append(r.refused, ie)
			r.last = events.Link{Subject: ie.Subject, Sequence: ev.Sequence, Hash: ev.Hash}
		} else {
			l := events.Link{Subject: ev.Subject(), Sequence: ev.Sequence, Hash: ev.Hash}
			if ev.Environment != "" {
				r.heads[l.Subject] = l
			}
			r.last = l
		}
		if r.index != nil {
			r.indexMessage(&ev, err, ie)
		}
		if p, ok := ProblemOf(err, time.Now()); ok {
			if r.integrity.record(p) {
				r.logger.Error("refusing a message that fails verification: it was not written by an Interlock server, or was altered",
					"sequence", p.Sequence, "subject", p.Subject, "reason", p.Reason, "detail", p.Detail)
			}
			r.catalog.skip(ev.Sequence)
		} else if err != nil {
			r.logger.Warn("skipping a message that is not an event", "sequence", ev.Sequence, "error", err)
			r.skipped.Add(1)
			r.catalog.skip(ev.Sequence)
		} else {
			if ev.Type == events.TypeIntegrityAcknowledged {
				r.acknowledged(ev)
			}
			if !events.Known(ev.Type) {
				r.logger.Warn("event of an unknown type counts as a version only", "sequence", ev.Sequence, "type", ev.Type, "environment", ev.Environment, "key", ev.Key)
			}
			if err := r.catalog.Apply(ev); err != nil {
				r.skipped.Add(1)
				r.logger.Warn("skipping an event the catalog refuses", "sequence", ev.Sequence, "environment", ev.Environment, "key", ev.Key, "type", ev.Type, "error", err)
			}
		}
		if r.index != nil {
			r.trackMessage(&ev, ie)
		}
		if !r.follower.Ready() {
			r.checkReady(target, start)
		}
	}
}

// acknowledged records an integrity acknowledgement in the runner's integrity record.
func (r *Runner) acknowledged(ev events.Event) {
	p, err := ev.Payload()
	if err != nil {
		return // the catalog skips it too, and says so
	}
	ack := p.(*events.IntegrityAcknowledged)
	r.integrity.acknowledge(Acknowledgement{Through: ack.Through, Sequence: ev.Sequence, Actor: ev.Actor, Reason: ev.Reason, Time: ev.Time})
	r.logger.Info("integrity problems acknowledged", "through", ack.Through, "sequence", ev.Sequence, "actor", ev.Actor, "reason", ev.Reason)
}

// indexMessage records a message in the index: on its subject, whatever it is, and for its actor
// when it is an event (ie is the message's integrity error, when it has one).
func (r *Runner) indexMessage(ev *events.Event, err error, ie *events.IntegrityError) {
	subject, actor := "", ""
	switch {
	case ie != nil:
		subject = ie.Subject
	case ev.Environment != "":
		subject = ev.Subject()
	}
	if err == nil {
		actor = ev.Actor
	}
	r.index.add(subject, actor, ev.Sequence)
}

// trackMessage tells the index of a message on a flag's subject once the catalog folded it, so
// that it saves the environment's state at intervals.
func (r *Runner) trackMessage(ev *events.Event, ie *events.IntegrityError) {
	subject := ""
	switch {
	case ie != nil:
		subject = ie.Subject
	case ev.Environment != "":
		subject = ev.Subject()
	}
	r.index.track(subject, ev.Time, ev.Sequence, r.catalog)
}

// checkReady marks the runner ready once the catalog reached target.
func (r *Runner) checkReady(target uint64, start time.Time) {
	if r.catalog.Sequence() < target {
		return
	}
	if r.follower.MarkReady() {
		r.logger.Info("catalog ready", "sequence", r.catalog.Sequence(), "took", time.Since(start))
	}
}

// Integrity is the record of the messages the runner refused because they failed verification
// (see events.WithSigner): they are logged, counted and not applied.
func (r *Runner) Integrity() *Integrity { return &r.integrity }

// Skipped counts the messages this runner skipped since it was made: those that are not events
// and the events the catalog refused. Messages that fail verification are counted by
// [Runner.Integrity] instead. A message delivered again after Run resumes counts again.
func (r *Runner) Skipped() uint64 { return r.skipped.Load() }

// Replayed reports whether Run rebuilt the catalog by replaying the stream from its start: there
// was no checkpoint, or none it could use.
func (r *Runner) Replayed() bool { return r.replayed.Load() }

// Ready reports whether the catalog has caught up with the stream as it was when Run started. It
// stays true once it is.
func (r *Runner) Ready() bool { return r.follower.Ready() }

// WaitReady blocks until the runner is ready, and returns ctx.Err() if ctx ends first.
func (r *Runner) WaitReady(ctx context.Context) error { return r.follower.WaitReady(ctx) }
