package local

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/interlock-dev/interlock/events"
	"github.com/interlock-dev/interlock/projections"
	"github.com/interlock-dev/interlock/targeting"
)

var (
	// ErrClosed is returned by Run and WaitReady on a client that was closed.
	ErrClosed = errors.New("local: client closed")
	// ErrRunning is returned by a second Run while one is running.
	ErrRunning = errors.New("local: client already running")
	// ErrStreamReplaced is the error of a NoticeError when the stream ends before the sequence
	// the client applied: it was deleted and made again, and the client must be replaced by a
	// new one to follow it.
	ErrStreamReplaced = errors.New("local: stream replaced")
)

// Catching up once ready: events the stream has more events behind are queued and applied
// together (one targeting.Flagset.ApplyAll) when the last of them arrives, when maxBatch are
// queued, or when the next one has not arrived within batchWait. The stream said it had more,
// already on their way: the wait is a safety net for a consumer that stalls, not a delay.
const (
	maxBatch  = 1024
	batchWait = 100 * time.Millisecond
)

// NoticeKind says what a [Notice] is about.
type NoticeKind uint8

// The kinds of notice, in the order a client usually sends them.
const (
	// NoticeReady: the first state is complete; the client evaluates with it from now on.
	NoticeReady NoticeKind = iota + 1
	// NoticeChanged: an event changed the state; Keys are the flags whose evaluation may differ.
	NoticeChanged
	// NoticeStale: contact with the stream is lost; the last-known state is still served.
	NoticeStale
	// NoticeFresh: contact is back after NoticeStale or NoticeError.
	NoticeFresh
	// NoticeError: following the stream fails (Err says why); the last-known state is served.
	NoticeError
)

func (k NoticeKind) String() string {
	switch k {
	case NoticeReady:
		return "ready"
	case NoticeChanged:
		return "changed"
	case NoticeStale:
		return "stale"
	case NoticeFresh:
		return "fresh"
	case NoticeError:
		return "error"
	}
	return fmt.Sprintf("NoticeKind(%d)", uint8(k))
}

// Notice tells an observer what happened to a client's state. Notices start with NoticeReady;
// none comes before it.
type Notice struct {
	Kind NoticeKind
	// Sequence is the stream sequence the client has applied when the notice is sent.
	Sequence uint64
	// Keys are, for NoticeChanged, the flags whose evaluation the event may have changed,
	// sorted: the flag itself, or every flag whose rules name a changed segment. Events the
	// client catches up with (after an outage, or a burst it fell behind on) are applied
	// together and told in one notice: Keys are then those of all of them, and Sequence the
	// last one's.
	Keys []string
	// Err is why, for NoticeError.
	Err error
}

// Stats are counters of what a client received from the stream since it was made.
type Stats struct {
	// Delivered counts the messages the stream delivered to the client.
	Delivered uint64
	// Applied counts the events folded into the state.
	Applied uint64
	// Skipped counts the messages that were not events or that the fold refused, and those
	// that failed verification.
	Skipped uint64
	// Refused counts the messages that failed verification (with Config.VerifyKeys).
	Refused uint64
	// SnapshotSequence is the sequence of the snapshot the state started from; 0 when it was
	// replayed from the start of the stream.
	SnapshotSequence uint64
}

// health is the client's contact with the stream, as last told to observers.
type health uint8

const (
	healthFresh health = iota
	healthStale
	healthError
)

// Client follows one environment's events over a service's own NATS connection and evaluates
// its flags in process. Evaluation reads an immutable [targeting.Flagset] behind an atomic
// pointer: it never blocks, never allocates (beyond what the engine does) and never does I/O, and
// it keeps working with the last-known state while NATS is unreachable.
//
// A client starts from the server's latest snapshot of the environment plus the events after it
// (or replays the environment's history when there is no snapshot), then applies every new event
// as it is appended. It publishes heartbeats with the sequence it has applied so that the server
// can tell how many subscribers have applied a change.
type Client struct {
	nc     *nats.Conn
	js     jetstream.JetStream
	cfg    Config
	logger *slog.Logger

	set atomic.Pointer[targeting.Flagset]
	pos projections.Position // the sequence the published state reflects
	// follower retries, follows again after failures and says when the client is ready.
	follower *projections.Follower

	// Contact with the stream, for Stale.
	lastContact  atomic.Int64 // unix nanoseconds of the last message or successful probe
	behindSince  atomic.Int64 // unix nanoseconds since the probe saw events not yet applied; 0 when not behind
	broken       atomic.Bool  // following failed and is being re-established
	missing      atomic.Bool  // the last probe found no stream (or no JetStream)
	delivered    atomic.Uint64
	appliedCount atomic.Uint64
	skipped      atomic.Uint64
	refused      atomic.Uint64
	// verifier judges events with Config.VerifyKeys; nil without them. Made anew at each cold
	// start, used by the goroutine that follows.
	verifier    *events.Verifier
	snapshotSeq atomic.Uint64

	// The run goroutine's own state (only Run and what it calls touch these).
	handled uint64                         // last sequence handled: applied or skipped
	target  uint64                         // the environment's last sequence when catching up began
	flags   map[string]projections.Flag    // the state being caught up, before the first publish
	segs    map[string]projections.Segment // idem
	restart bool                           // the snapshot did not compile: replay from the start
	// Once ready: events received but not applied yet, because the stream had more behind
	// them, and the last sequence received (applied, queued or skipped).
	batch    []events.Event
	received uint64

	// Observers, called one at a time in the order notices happen.
	obsMu     sync.Mutex
	observers []*func(Notice)
	notifyMu  sync.Mutex
	health    health
	errKind   int // errorKind of the last NoticeError

	// Heartbeats after applying events are rate-limited; the last of a burst is sent late.
	hbMu      sync.Mutex
	lastHB    time.Time
	hbTimer   *time.Timer
	hbStopped bool // no heartbeats: Run is not running, or it is leaving

	mu     sync.Mutex
	cancel context.CancelFunc
	done   chan struct{}
	closed bool
}

// New returns a client following cfg.Environment over nc, which must stay open while the client
// runs (the client never closes it). It does nothing until [Client.Run]. Errors: the
// configuration's problems (see [Config.Validate]), or a nil connection.
func New(nc *nats.Conn, cfg Config) (*Client, error) {
	if nc == nil {
		return nil, errors.New("local: nats connection: required")
	}
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("local: %w", err)
	}
	cfg.setDefaults()
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, fmt.Errorf("local: jetstream: %w", err)
	}
	logger := cfg.Logger.With("component", "local", "environment", cfg.Environment, "id", cfg.ID)
	c := &Client{nc: nc, js: js, cfg: cfg, logger: logger, follower: projections.NewFollower(logger)}
	c.hbStopped = true
	c.set.Store(targeting.NewFlagset(cfg.Environment))
	return c, nil
}

// Environment is the environment the client follows.
func (c *Client) Environment() string { return c.cfg.Environment }

// ID is the client's id in heartbeats.
func (c *Client) ID() string { return c.cfg.ID }

// Evaluate evaluates flag key for ectx with the current state. Before the client is ready every
// flag is FLAG_NOT_FOUND.
func (c *Client) Evaluate(key string, ectx *targeting.EvalContext) targeting.Evaluation {
	return c.set.Load().Evaluate(key, ectx)
}

// Flagset is the current state: immutable, safe to keep and read while newer states replace it.
func (c *Client) Flagset() *targeting.Flagset { return c.set.Load() }

// Sequence is the stream sequence the current state reflects: every event of the environment up
// to it has been applied (or skipped as bad). 0 before the client is ready.
func (c *Client) Sequence() uint64 { return c.pos.Sequence() }

// Ready reports whether the client has caught up with the stream as it was when it started. It
// stays true once it is, even while stale.
func (c *Client) Ready() bool { return c.follower.Ready() }

// WaitReady blocks until the client is ready. Errors: ctx.Err() when ctx ends first; [ErrClosed]
// when the client is closed first.
func (c *Client) WaitReady(ctx context.Context) error { return c.follower.WaitReady(ctx) }

// WaitSequence blocks until [Client.Sequence] is at least seq, for example the sequence an
// append returned. Errors: ctx.Err() when ctx ends first; [ErrClosed] when the client is closed.
func (c *Client) WaitSequence(ctx context.Context, seq uint64) error { return c.pos.Wait(ctx, seq) }

// Stale reports whether the client may be serving an outdated state: its NATS connection is not
// connected, following the stream fails, the stream is missing, or it has had no contact with the stream for longer
// than [Config.StaleAfter] (or has known of newer events for that long without receiving them).
func (c *Client) Stale() bool {
	if !c.nc.IsConnected() || c.broken.Load() || c.missing.Load() {
		return true
	}
	now := time.Now().UnixNano()
	limit := int64(c.cfg.StaleAfter)
	if now-c.lastContact.Load() > limit {
		return true
	}
	b := c.behindSince.Load()
	return b != 0 && now-b > limit
}

// Stats returns the client's counters.
func (c *Client) Stats() Stats {
	return Stats{
		Delivered:        c.delivered.Load(),
		Applied:          c.appliedCount.Load(),
		Skipped:          c.skipped.Load(),
		Refused:          c.refused.Load(),
		SnapshotSequence: c.snapshotSeq.Load(),
	}
}

// Observe registers fn to be told of every notice from now on, and returns the function that
// unregisters it. Notices are delivered one at a time, in order, on the client's goroutines: fn
// must be quick and must not call Observe or Close. A client that is already ready sends no
// NoticeReady again; check [Client.Ready].
func (c *Client) Observe(fn func(Notice)) (cancel func()) {
	p := &fn
	c.obsMu.Lock()
	c.observers = append(slices.Clip(c.observers), p)
	c.obsMu.Unlock()
	return func() {
		c.obsMu.Lock()
		c.observers = slices.DeleteFunc(slices.Clone(c.observers), func(q *func(Notice)) bool { return q == p })
		c.obsMu.Unlock()
	}
}

// emit tells every observer of n. The caller holds notifyMu.
func (c *Client) emit(n Notice) {
	c.obsMu.Lock()
	obs := c.observers
	c.obsMu.Unlock()
	for _, fn := range obs {
		(*fn)(n)
	}
}

// errorKind sorts the errors of NoticeError, so that a failure that changes nature (the stream
// is gone, then back but replaced) is told again while the same one is told once.
func errorKind(err error) int {
	switch {
	case err == nil:
		return 0
	case errors.Is(err, ErrStreamReplaced):
		return 1
	case errors.Is(err, jetstream.ErrStreamNotFound):
		return 2
	}
	return 3
}

// setHealth records the client's contact with the stream and tells the observers when it
// changed, once the client is ready.
func (c *Client) setHealth(h health, err error) {
	c.notifyMu.Lock()
	defer c.notifyMu.Unlock()
	kind := errorKind(err)
	if h == c.health && (h != healthError || kind == c.errKind) {
		return
	}
	c.health, c.errKind = h, kind
	if !c.follower.Ready() {
		return
	}
	n := Notice{Sequence: c.pos.Sequence()}
	switch h {
	case healthFresh:
		n.Kind = NoticeFresh
	case healthStale:
		n.Kind = NoticeStale
	case healthError:
		n.Kind, n.Err = NoticeError, err
	}
	c.emit(n)
}

// Run follows the environment until ctx ends or the client is closed, and returns nil then.
// Failures to reach the stream are logged and retried with backoff (100ms doubling up to 5s)
// while the last-known state keeps being served.
//
// Errors: [ErrRunning] when Run is already running; [ErrClosed] after Close.
func (c *Client) Run(ctx context.Context) error {
	c.mu.Lock()
	switch {
	case c.closed:
		c.mu.Unlock()
		return ErrClosed
	case c.cancel != nil:
		c.mu.Unlock()
		return ErrRunning
	}
	ctx, cancel := context.WithCancel(ctx)
	c.cancel, c.done = cancel, make(chan struct{})
	c.mu.Unlock()
	defer func() {
		cancel()
		c.mu.Lock()
		c.cancel = nil
		close(c.done)
		c.mu.Unlock()
	}()

	var wg sync.WaitGroup
	wg.Go(func() { c.monitor(ctx) })
	defer func() {
		cancel()
		wg.Wait()
		c.leave()
	}()

	c.hbMu.Lock()
	c.hbStopped = false
	c.hbMu.Unlock()
	if !c.follower.Ready() && c.flags == nil {
		if !c.start(ctx) {
			return nil
		}
	}
	c.follower.Follow(ctx, func(ctx context.Context) error {
		if err := c.follow(ctx); !errors.Is(err, errRestart) {
			return err
		}
		return nil // start over at once
	}, func() uint64 { return c.handled }, func(err error, retryIn time.Duration) {
		c.broken.Store(true)
		c.logger.Warn("following the stream stopped; retrying", "from", c.handled+1, "retry_in", retryIn, "error", err)
		if c.nc.IsConnected() {
			c.setHealth(healthError, err)
		} else {
			c.setHealth(healthStale, nil)
		}
	})
	return nil
}

// start prepares a cold start: the environment's last sequence (the point of readiness) and the
// latest snapshot. It reports false when ctx ended first.
func (c *Client) start(ctx context.Context) bool {
	if !c.follower.Retry(ctx, "reading the stream's last sequence", func(ctx context.Context) (err error) {
		c.target, err = c.lastSequence(ctx)
		return err
	}) {
		return false
	}
	c.flags = make(map[string]projections.Flag)
	c.segs = make(map[string]projections.Segment)
	if !c.cfg.NoSnapshot {
		if snap := c.loadSnapshot(ctx); snap != nil {
			for _, f := range snap.Flags {
				f.Sequence = snap.Sequence
				c.flags[f.Key] = f
			}
			for _, s := range snap.Segments {
				s.Sequence = snap.Sequence
				c.segs[s.Key] = s
			}
			c.handled = snap.Sequence
			c.snapshotSeq.Store(snap.Sequence)
			c.logger.Info("starting from a snapshot", "sequence", snap.Sequence, "flags", len(snap.Flags), "segments", len(snap.Segments), "stream_last", c.target)
		}
	}
	if len(c.cfg.VerifyKeys) > 0 && !c.follower.Retry(ctx, "reading the stream's signing cut-over", func(ctx context.Context) (err error) {
		c.verifier, err = c.newVerifier(ctx)
		return err
	}) {
		return false
	}
	if c.handled >= c.target {
		c.publishCatchup()
	}
	return true
}

// newVerifier returns a verifier with the configured keys and cut-over, for a follow that starts
// after the sequence handled.
func (c *Client) newVerifier(context.Context) (*events.Verifier, error) {
	keys, err := events.NewKeys(c.cfg.VerifyKeys...)
	if err != nil {
		return nil, err
	}
	ver := events.NewVerifier(keys, c.cfg.Cutover)
	if c.handled > 0 {
		ver.ResumeAt(c.handled + 1)
	}
	return ver, nil
}

// lastSequence is the stream sequence of the environment's last event, 0 when it has none. It is
// one direct get of the last message on the environment's subjects (the stream allows direct
// gets), which a user allowed to read only its environment may make. Errors: one wrapping
// jetstream.ErrStreamNotFound when nothing answers (no stream, or no JetStream).
func (c *Client) lastSequence(ctx context.Context) (uint64, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	subject := "$JS.API.DIRECT.GET." + c.cfg.Stream + "." + events.EnvironmentSubjects(c.cfg.Environment)
	msg, err := c.nc.RequestWithContext(ctx, subject, nil)
	if errors.Is(err, nats.ErrNoResponders) {
		return 0, fmt.Errorf("stream %s: %w", c.cfg.Stream, jetstream.ErrStreamNotFound)
	}
	if err != nil {
		return 0, fmt.Errorf("last event of %s: %w", c.cfg.Environment, err)
	}
	switch status := msg.Header.Get("Status"); status {
	case "":
	case "404":
		return 0, nil
	default:
		return 0, fmt.Errorf("last event of %s: status %s %s", c.cfg.Environment, status, msg.Header.Get("Description"))
	}
	seq, err := strconv.ParseUint(msg.Header.Get(jetstream.SequenceHeader), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("last event of %s: sequence header: %w", c.cfg.Environment, err)
	}
	return seq, nil
}

// loadSnapshot returns the environment's latest snapshot, or nil when there is none or it cannot
// be used (then the stream is replayed from its start).
func (c *Client) loadSnapshot(ctx context.Context) *Snapshot {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	obs, err := c.js.ObjectStore(ctx, c.cfg.SnapshotBucket)
	if err != nil {
		if !errors.Is(err, jetstream.ErrBucketNotFound) {
			c.logger.Warn("no snapshot: replaying the stream", "bucket", c.cfg.SnapshotBucket, "error", err)
		}
		return nil
	}
	data, err := obs.GetBytes(ctx, c.cfg.Environment)
	if err != nil {
		if !errors.Is(err, jetstream.ErrObjectNotFound) {
			c.logger.Warn("no snapshot: replaying the stream", "bucket", c.cfg.SnapshotBucket, "error", err)
		}
		return nil
	}
	snap, err := DecodeSnapshot(c.cfg.Environment, data)
	if err != nil {
		c.logger.Warn("unusable snapshot: replaying the stream", "error", err)
		return nil
	}
	return &snap
}

// follow follows the environment from the event after the last one handled, until it fails or
// ctx ends.
func (c *Client) follow(ctx context.Context) error {
	cons, err := c.js.OrderedConsumer(ctx, c.cfg.Stream, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{events.EnvironmentSubjects(c.cfg.Environment)},
		DeliverPolicy:  jetstream.DeliverByStartSequencePolicy,
		OptStartSeq:    c.handled + 1,
	})
	if err != nil {
		return fmt.Errorf("follow %s: %w", c.cfg.Environment, err)
	}
	it, err := cons.Messages(jetstream.PullMaxMessages(256))
	if err != nil {
		return fmt.Errorf("follow %s: %w", c.cfg.Environment, err)
	}
	defer it.Stop()
	stop := context.AfterFunc(ctx, it.Stop) // also ends a consumer reset that is retrying
	defer stop()
	defer c.flush() // what was received is applied, whatever ends the follow
	c.broken.Store(false)
	c.touch()
	if !c.Stale() {
		c.setHealth(healthFresh, nil)
	}
	for {
		var msg jetstream.Msg
		if c.received > c.handled {
			// Events are queued: the stream said more were coming. Wait for them, a little.
			msg, err = it.Next(jetstream.NextMaxWait(batchWait))
			if errors.Is(err, nats.ErrTimeout) {
				c.flush()
				continue
			}
		} else {
			msg, err = it.Next(jetstream.NextContext(ctx))
		}
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("follow %s: %w", c.cfg.Environment, err)
		}
		meta, err := msg.Metadata()
		if err != nil {
			return fmt.Errorf("follow %s: %w", c.cfg.Environment, err)
		}
		ev, derr := events.Decode(msg.Subject(), msg.Headers(), msg.Data())
		ev.Sequence = meta.Sequence.Stream
		if c.verifier != nil {
			if verr := c.verifier.Check(msg.Subject(), ev.Sequence, msg.Headers(), msg.Data()); verr != nil {
				derr = verr
			}
		}
		c.handle(ev, derr, meta.NumPending > 0)
		if c.restart {
			c.restart = false
			return errRestart
		}
	}
}

// touch records contact with the stream.
func (c *Client) touch() { c.lastContact.Store(time.Now().UnixNano()) }

// handle folds one delivered message; more says the stream holds more events after it. Before
// the client is ready events are folded into plain maps and compiled once at the end. After, a
// live event (nothing behind it) makes a new flag set at once, while events the client is
// catching up with are queued and applied together by flush.
func (c *Client) handle(ev events.Event, derr error, more bool) {
	c.delivered.Add(1)
	c.touch()
	if ev.Sequence <= max(c.handled, c.received) {
		return // a redelivery
	}
	good := false
	switch {
	case errors.Is(derr, events.ErrIntegrity):
		c.skipped.Add(1)
		c.refused.Add(1)
		c.logger.Error("refusing a message that fails verification", "sequence", ev.Sequence, "error", derr)
	case derr != nil:
		c.skipped.Add(1)
		c.logger.Warn("skipping a message that is not an event", "sequence", ev.Sequence, "error", derr)
	case ev.Environment != c.cfg.Environment:
		c.skipped.Add(1)
		c.logger.Warn("skipping an event of another environment", "sequence", ev.Sequence, "event_environment", ev.Environment)
	default:
		good = true
	}
	if c.follower.Ready() {
		if good {
			c.batch = append(c.batch, ev)
		}
		c.received = ev.Sequence
		if !more || len(c.batch) >= maxBatch {
			c.flush()
		}
		return
	}
	if good {
		if err := c.fold(ev); err != nil {
			c.skipped.Add(1)
			c.logger.Warn("skipping an event the fold refuses", "sequence", ev.Sequence, "key", ev.Key, "type", ev.Type, "error", err)
		} else {
			c.appliedCount.Add(1)
		}
	}
	c.handled = ev.Sequence
	if c.handled >= c.target {
		c.publishCatchup()
	}
}

// flush applies the events received since the last flush, publishes the new flag set and tells
// the observers: one event with Flagset.Apply, several with one Flagset.ApplyAll.
func (c *Client) flush() {
	if c.received <= c.handled {
		return
	}
	evs, end := c.batch, c.received
	c.batch = nil
	var refused []error
	if len(evs) > 0 {
		cur := c.set.Load()
		var next *targeting.Flagset
		var err error
		if len(evs) == 1 {
			ev := &evs[0]
			if next, err = cur.Apply(*ev); err != nil {
				refused = []error{err}
				c.logger.Warn("skipping an event the flag set refuses", "sequence", ev.Sequence, "key", ev.Key, "type", ev.Type, "error", err)
			}
		} else {
			next, err = cur.ApplyAll(evs)
			// ApplyAll joins one error per refused event, each naming its sequence.
			if joined, ok := err.(interface{ Unwrap() []error }); ok {
				refused = joined.Unwrap()
			} else if err != nil {
				refused = []error{err}
			}
			for _, e := range refused {
				c.logger.Warn("skipping an event the flag set refuses", "error", e)
			}
		}
		c.skipped.Add(uint64(len(refused)))
		c.appliedCount.Add(uint64(len(evs) - len(refused)))
		if len(refused) < len(evs) {
			c.set.Store(next)
		}
	}
	c.handled = end
	c.advance(end)
	if len(refused) < len(evs) {
		c.notifyChanged(c.set.Load(), evs, end)
	}
	c.heartbeatSoon()
}

// fold applies ev to the state being caught up, with the rules of projections.Catalog: a bad
// event leaves its flag or segment unchanged.
func (c *Client) fold(ev events.Event) error {
	if err := events.ValidateFlagKey(ev.Key); err != nil {
		return err
	}
	if ev.Entity == events.EntitySegment {
		s := c.segs[ev.Key]
		if err := s.Apply(ev); err != nil {
			return err
		}
		c.segs[ev.Key] = s
		return nil
	}
	f := c.flags[ev.Key]
	if err := f.Apply(ev); err != nil {
		return err
	}
	c.flags[ev.Key] = f
	return nil
}

// errRestart ends a follow so that the next one starts over from the beginning of the stream.
var errRestart = errors.New("restart from the beginning of the stream")

// publishCatchup compiles the caught-up state, makes it the current one and marks the client
// ready. A state the engine refuses is not published: if it came from a snapshot the client
// starts over from the beginning of the stream (c.restart); otherwise it logs and tries again
// with the next event.
func (c *Client) publishCatchup() {
	flags := make([]projections.Flag, 0, len(c.flags))
	for _, f := range c.flags {
		flags = append(flags, f)
	}
	segs := make([]projections.Segment, 0, len(c.segs))
	for _, s := range c.segs {
		segs = append(segs, s)
	}
	set, err := targeting.CompileFlagset(c.cfg.Environment, c.handled, flags, segs)
	if err != nil {
		c.logger.Error("the caught-up state does not compile", "sequence", c.handled, "from_snapshot", c.snapshotSeq.Load(), "error", err)
		if c.snapshotSeq.Load() != 0 {
			clear(c.flags)
			clear(c.segs)
			c.handled = 0
			c.snapshotSeq.Store(0)
			c.restart = true
		}
		return
	}
	c.set.Store(set)
	c.flags, c.segs = nil, nil
	c.advance(c.handled)
	c.notifyMu.Lock()
	c.follower.MarkReady()
	c.emit(Notice{Kind: NoticeReady, Sequence: c.handled})
	c.notifyMu.Unlock()
	c.logger.Info("ready", "sequence", c.handled, "flags", len(flags), "segments", len(segs), "snapshot", c.snapshotSeq.Load())
	c.heartbeatSoon()
}

// advance publishes the applied sequence and wakes WaitSequence.
func (c *Client) advance(seq uint64) { c.pos.Advance(seq) }

// notifyChanged tells the observers which flags evs, applied up to sequence end, may have
// changed in set. A single event that set refused is not told.
func (c *Client) notifyChanged(set *targeting.Flagset, evs []events.Event, end uint64) {
	c.obsMu.Lock()
	n := len(c.observers)
	c.obsMu.Unlock()
	if n == 0 {
		return
	}
	keys := []string{}
	for i := range evs {
		if evs[i].Entity == events.EntitySegment {
			keys = append(keys, set.FlagsUsing(evs[i].Key)...)
		} else {
			keys = append(keys, evs[i].Key)
		}
	}
	slices.Sort(keys)
	keys = slices.Compact(keys)
	c.notifyMu.Lock()
	c.emit(Notice{Kind: NoticeChanged, Sequence: end, Keys: keys})
	c.notifyMu.Unlock()
}

// monitor publishes heartbeats and checks the contact with the stream until ctx ends.
func (c *Client) monitor(ctx context.Context) {
	every := min(c.cfg.HeartbeatInterval, c.cfg.StaleAfter/3)
	t := time.NewTicker(every)
	defer t.Stop()
	var behindTarget uint64
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		var perr error
		behindTarget, perr = c.probe(ctx, every, behindTarget)
		switch {
		case perr != nil:
			c.setHealth(healthError, perr)
		case !c.Stale():
			c.setHealth(healthFresh, nil)
		case c.broken.Load() && c.nc.IsConnected():
			// Following fails for another reason than the connection; Run reported it.
		default:
			c.setHealth(healthStale, nil)
		}
		c.hbMu.Lock()
		due := time.Since(c.lastHB) >= c.cfg.HeartbeatInterval-every/2
		c.hbMu.Unlock()
		if due {
			c.heartbeat(false)
		}
	}
}

// probe asks the stream for the environment's last sequence. An answer is contact. An event that
// the probe saw (behindTarget) and that is still not applied at the next probe starts a period of
// being behind, which makes the client stale once it lasts StaleAfter: the consumer is stuck.
// It returns the sequence to check at the next probe (0: none), and an error when the server
// answers that there is no such stream (or no JetStream), or that the stream ends before the
// applied sequence ([ErrStreamReplaced]): then the client is failing, not just out of touch.
func (c *Client) probe(ctx context.Context, timeout time.Duration, behindTarget uint64) (uint64, error) {
	if !c.nc.IsConnected() {
		return behindTarget, nil
	}
	ctx, cancel := context.WithTimeout(ctx, max(timeout, time.Second))
	defer cancel()
	last, err := c.lastSequence(ctx)
	if err != nil {
		c.logger.Debug("probe failed", "error", err)
		missing := errors.Is(err, jetstream.ErrStreamNotFound) || errors.Is(err, jetstream.ErrJetStreamNotEnabled) ||
			errors.Is(err, jetstream.ErrJetStreamNotEnabledForAccount)
		c.missing.Store(missing)
		if missing {
			return behindTarget, err
		}
		return behindTarget, nil
	}
	applied := c.pos.Sequence()
	if last < applied && c.follower.Ready() {
		// The stream ends before what was applied: it was deleted and made again. The state
		// cannot be followed any more; a new client has to start over.
		c.missing.Store(true)
		return behindTarget, fmt.Errorf("%w: the stream ends at sequence %d, before the applied %d: it was replaced", ErrStreamReplaced, last, applied)
	}
	c.missing.Store(false)
	c.touch()
	switch {
	case !c.follower.Ready():
		return 0, nil
	case behindTarget != 0 && applied < behindTarget:
		c.behindSince.CompareAndSwap(0, time.Now().UnixNano())
		return behindTarget, nil
	case last > applied:
		c.behindSince.Store(0)
		return last, nil
	default:
		c.behindSince.Store(0)
		return 0, nil
	}
}

// heartbeatSoon sends a heartbeat after events were applied: at once, unless one went out less
// than HeartbeatGap ago; then one more is sent when the gap has passed, with the latest sequence.
func (c *Client) heartbeatSoon() {
	if c.cfg.NoPresence {
		return
	}
	c.hbMu.Lock()
	defer c.hbMu.Unlock()
	if c.hbTimer != nil || c.hbStopped {
		return
	}
	wait := c.cfg.HeartbeatGap - time.Since(c.lastHB)
	if wait <= 0 {
		c.publishLocked(false)
		return
	}
	c.hbTimer = time.AfterFunc(wait, func() {
		c.hbMu.Lock()
		defer c.hbMu.Unlock()
		c.hbTimer = nil
		if !c.hbStopped {
			c.publishLocked(false)
		}
	})
}

// heartbeat sends one heartbeat now.
func (c *Client) heartbeat(leaving bool) {
	if c.cfg.NoPresence {
		return
	}
	c.hbMu.Lock()
	defer c.hbMu.Unlock()
	if !c.hbStopped {
		c.publishLocked(leaving)
	}
}

// leave stops heartbeats and says goodbye, so that the server stops counting this client at once
// rather than after three missed heartbeats.
func (c *Client) leave() {
	if c.cfg.NoPresence {
		return
	}
	c.hbMu.Lock()
	if c.hbTimer != nil {
		c.hbTimer.Stop()
		c.hbTimer = nil
	}
	c.publishLocked(true)
	c.hbStopped = true
	c.hbMu.Unlock()
	if c.nc.IsConnected() {
		_ = c.nc.FlushTimeout(time.Second)
	}
}

// publishLocked publishes the heartbeat. The caller holds hbMu.
func (c *Client) publishLocked(leaving bool) {
	hb := Heartbeat{
		ID:             c.cfg.ID,
		Name:           c.cfg.Name,
		Environment:    c.cfg.Environment,
		Sequence:       c.pos.Sequence(),
		Time:           time.Now().UTC(),
		IntervalMillis: c.cfg.HeartbeatInterval.Milliseconds(),
		Ready:          c.follower.Ready(),
		Stale:          c.Stale(),
		Leaving:        leaving,
	}
	data, err := hb.encode()
	if err != nil {
		c.logger.Error("encode heartbeat", "error", err)
		return
	}
	c.lastHB = time.Now()
	if err := c.nc.Publish(PresenceSubject(c.cfg.Environment, c.cfg.ID), data); err != nil {
		c.logger.Debug("heartbeat not sent", "error", err)
	}
}

// Close stops Run (and waits for it to return) and ends WaitReady and WaitSequence with
// [ErrClosed]. The last state stays readable. Close is safe to call more than once; it never
// fails.
func (c *Client) Close() error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil
	}
	c.closed = true
	c.follower.Close(ErrClosed)
	c.pos.Close(ErrClosed)
	cancel, done := c.cancel, c.done
	c.mu.Unlock()
	if cancel != nil {
		cancel()
		<-done
	}
	return nil
}
