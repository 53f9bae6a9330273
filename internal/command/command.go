// Package command is Interlock's write path. A command turns the intent of a person (or of the
// guard) into exactly one event, decided on the folded state of one entity (a flag or a segment)
// and appended with optimistic concurrency: the append names the entity subject's last stream
// sequence, so a lost update is impossible and a stale writer gets a clear error.
//
// The service keeps an in-memory cache of every flag and segment it has touched (the folded
// state and its last stream sequence) and decides on it without reading the stream. The cache is
// only trusted where the append checks it: a command that would write something finds out from
// the append that the cache was stale; a command that would write nothing (a refusal or a no-op)
// reads the events after the cached sequence before it answers, unless the answer cannot depend
// on them.
//
// Segments are managed like flags: each command is one event on the segment's own subject,
// decided on its cached fold and appended with the subject's last sequence. What a flag says
// about segments is checked both ways:
//
//   - a flag create, update or restore whose rules name a segment (inSegment, notInSegment) that
//     does not exist or is archived in the flag's environment is refused. The segment's state is
//     read from its stream subject, so this check is exact at the time it is made.
//   - archiving a segment that live (not archived) flags still name is refused. Which flags name
//     it comes from the catalog given with [WithUsage], after it has caught up with the stream's
//     last sequence, or else from the environment's flags folded from the stream.
//
// No transaction spans a flag and a segment, so the two checks can still cross: a flag change
// that checked the segment a moment before the segment's archive checked the flags. The engine
// treats a condition on a missing or archived segment as never matching, and the flag's next
// change is refused until it stops naming the segment.
//
// Every command returns, besides the errors it documents:
//   - an error wrapping events.ErrInvalid (a *events.ValidationError, or several joined, naming
//     the field at fault) for a bad environment, key, Meta or document; nothing is written;
//   - an error wrapping events.ErrConflict when the flag (or segment) kept changing under the
//     command for 100 decisions in a row (a kill never gives up: it tries until ctx ends);
//   - an error wrapping events.ErrUnavailable when the event store could not take the command:
//     nothing was written;
//   - an error wrapping events.ErrOutcomeUnknown (an *events.OutcomeError naming the event) when
//     the event was sent but no answer came: it may be stored. The same command with the same
//     Meta.EventID settles it;
//   - ctx's error.
//
// # Idempotency
//
// A command whose Meta carries an EventID writes its event under that id. Sent again with the
// same id within the stream's duplicate window (two minutes by default), it writes nothing new
// and succeeds, answering with the entity as of that event or later, whether or not the first
// attempt was stored and however many events were appended since:
//
//   - the service remembers the ids of each entity's last [recentIDs] events, and answers at
//     once when the id is among them;
//   - a command decided again and appended again is answered by the store with the copy it
//     holds (its duplicate detection covers the whole window);
//   - before it refuses a command or decides it is a no-op (a create of a flag that now
//     exists, a stale If-Match, a kill of a flag already off), the service looks for the id
//     among the entity's events stored within the window (and a minute more, for clocks).
//
// After the window, the same id is a new command.
package command

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/interlock-dev/interlock/events"
	"github.com/interlock-dev/interlock/projections"
)

var (
	// ErrNotFound means the flag was never created. Errors that wrap it also match
	// projections.ErrNotFound.
	ErrNotFound = errors.New("flag not found")
	// ErrExists means a flag with that key already exists in that environment.
	ErrExists = errors.New("flag already exists")
	// ErrStale means the caller expected a version of the flag that is not the current one.
	// It is carried by a [*VersionError].
	ErrStale = errors.New("stale version")
	// ErrArchived means the flag is archived and refuses the command until unarchived.
	ErrArchived = errors.New("flag is archived")
	// ErrSegmentNotFound means the segment was never created. Errors that wrap it also match
	// projections.ErrNotFound.
	ErrSegmentNotFound = errors.New("segment not found")
	// ErrInUse means a segment cannot be archived while live flags use it. It is carried by an
	// [*InUseError].
	ErrInUse = errors.New("segment is in use")
)

// VersionError carries the versions of a stale write: the version the caller expected and the
// entity's actual version. errors.Is(err, ErrStale) holds.
type VersionError struct {
	Expected, Actual uint64
	// Entity is what the versions are of: events.EntityFlag when empty, or events.EntitySegment.
	Entity string
}

// Error says both versions.
func (e *VersionError) Error() string {
	entity := e.Entity
	if entity == "" {
		entity = events.EntityFlag
	}
	return fmt.Sprintf("stale version: expected %d, the %s is at version %d", e.Expected, entity, e.Actual)
}

// Unwrap makes errors.Is(err, ErrStale) hold.
func (e *VersionError) Unwrap() error { return ErrStale }

// notFound is the error behind every "no such flag": it matches both this package's ErrNotFound
// and projections.ErrNotFound.
type notFound struct{}

func (notFound) Error() string   { return ErrNotFound.Error() }
func (notFound) Unwrap() []error { return []error{ErrNotFound, projections.ErrNotFound} }

// segmentNotFound is the error behind every "no such segment": it matches ErrSegmentNotFound and
// projections.ErrNotFound.
type segmentNotFound struct{}

func (segmentNotFound) Error() string   { return ErrSegmentNotFound.Error() }
func (segmentNotFound) Unwrap() []error { return []error{ErrSegmentNotFound, projections.ErrNotFound} }

// entityError tells one of this package's flag sentinels (ErrExists, ErrArchived) about another
// entity: its message names the entity, and errors.Is matches the sentinel.
type entityError struct {
	sentinel error
	msg      string
}

func (e *entityError) Error() string { return e.msg }
func (e *entityError) Unwrap() error { return e.sentinel }

// Meta travels with every command and ends up on its event. Actor comes from the authenticated
// token, never from a request body. Leading and trailing white space is dropped from every field.
type Meta struct {
	Actor         string
	Reason        string
	CorrelationID string
	CausationID   string
	// EventID, when set, is the id of the event the command writes (a UUID): the same command
	// sent again with the same id writes nothing new (see Idempotency above). Callers derive
	// it from an idempotency key; empty gives every event a fresh id.
	EventID string
}

// Store is what the service needs from the event store; *events.Store satisfies it.
type Store interface {
	Append(ctx context.Context, ev *events.Event, expectedSeq uint64) (uint64, error)
	Read(ctx context.Context, q events.Query, h events.Handler) error
	// LastSequence is the sequence of the last event in the stream (0 when empty).
	LastSequence(ctx context.Context) (uint64, error)
	// DuplicateWindow is how long the store recognises an event appended again by its id.
	DuplicateWindow() time.Duration
}

// Bounds on retries.
const (
	// maxAttempts bounds how many times one command re-decides after conflicting appends.
	maxAttempts = 100
	// transportRetries is how many times an append that failed in transit is sent again.
	transportRetries = 2
	// transportBackoff is the pause before the first resend; it doubles for the next one.
	transportBackoff = 50 * time.Millisecond
	// appendTimeout bounds one attempt of an append: an append to a stream leader that just went
	// away is not answered, and is better sent again (same id) to the new one than waited for.
	appendTimeout = 2 * time.Second
)

// Service decides and appends commands. It is safe for concurrent use: commands on one flag (or
// segment) are serialised inside the process, commands on different ones run in parallel.
// Several services (replicas) may write to the same stream; the store's expected sequence keeps
// them consistent.
//
// The flags it returns share their configuration's maps and slices with its cache, as the
// projections' read models do: treat them as read-only (Clone the FlagConfig to change a copy).
// The service never modifies a configuration in place, so what a caller holds does not change.
type Service struct {
	store  Store
	logger *slog.Logger
	// uses tells which flags use a segment, for ArchiveSegment; nil reads the stream instead.
	uses Usage
	// sourceOK vets the metric source URL of a rollout plan or a valve policy; nil accepts any.
	sourceOK func(rawURL string) error
	// observer is told of every command and append; nil for none.
	observer Observer
	// checkPlan and checkPolicy vet what the guard will read of a rollout plan or a valve
	// policy; nil accepts anything.
	checkPlan   func(flag string, plan events.RolloutPlan) error
	checkPolicy func(p *events.ValvePolicy) error
	// handler is Handle's chain of middleware.
	handler Handler

	mu       sync.Mutex
	flags    map[string]*flagEntry    // by flag subject
	segments map[string]*segmentEntry // by segment subject
}

// entry is the cached state of one entity (a flag or a segment) and the lock that serialises its
// commands. A flag and a segment never share an entry, even with the same key: their subjects
// differ.
type entry[T any] struct {
	kind    *kind[T]
	subject string
	sem     chan struct{} // a mutex that a waiter can give up on when its ctx ends
	refs    int           // holders and waiters, guarded by Service.mu
	state   T

	// last is the stream sequence of the last message on the subject, which the next append
	// expects: the last event applied, or a later message that was skipped (one that fails
	// verification, does not decode, or that the fold refuses).
	last uint64

	// recent holds the ids of the last recentIDs events applied, oldest overwritten first, so
	// that a command sent again under the same id recognises its event.
	recent [recentIDs]string
	next   int

	// The encoding of a flag's FlagConfig (see encode), kept across commands so that a patch
	// re-encodes only what it changes. Valid while encSeq is the flag's Sequence.
	enc    encoding
	encSeq uint64
}

// flagEntry and segmentEntry are the entries of a flag and of a segment.
type (
	flagEntry    = entry[projections.Flag]
	segmentEntry = entry[projections.Segment]
)

// recentIDs is how many of an entity's last event ids the service remembers.
const recentIDs = 64

// remember records the id of an event applied to e.
func (e *entry[T]) remember(id string) {
	e.recent[e.next] = id
	e.next = (e.next + 1) % recentIDs
}

// has reports whether an event with id is among e's last applied ones.
func (e *entry[T]) has(id string) bool {
	for _, x := range e.recent {
		if x == id {
			return true
		}
	}
	return false
}

// encodingOf returns the encoding of the flag's configuration.
func encodingOf(e *flagEntry) (encoding, error) {
	if e.enc.canon == nil || e.encSeq != e.state.Sequence {
		enc, err := encode(e.state.FlagConfig)
		if err != nil {
			return encoding{}, err
		}
		e.enc, e.encSeq = enc, e.state.Sequence
	}
	return e.enc, nil
}

// head is the cached entity's version and the stream sequence of the last message on its
// subject (see entry.last).
func (e *entry[T]) head() (version, seq uint64) {
	version, seq = e.kind.head(&e.state)
	return version, max(seq, e.last)
}

// Usage tells which flags use a segment: *projections.Catalog satisfies it. It is eventually
// consistent with the stream; the service waits for it to catch up before it trusts it.
type Usage interface {
	// Flags returns every flag of env, archived ones included.
	Flags(env string) []projections.Flag
	// WaitSequence returns once the stream up to sequence seq has been applied, or ctx's error.
	WaitSequence(ctx context.Context, seq uint64) error
}

// Option configures a [Service].
type Option func(*Service)

// WithUsage makes ArchiveSegment ask u (normally the live *projections.Catalog) which flags use
// the segment, after waiting for u to catch up with the stream's last sequence. Without it (or
// with a nil u) ArchiveSegment folds the environment's flags from the stream, which is exact but
// grows with the environment's history.
func WithUsage(u Usage) Option {
	return func(s *Service) { s.uses = u }
}

// WithSourceCheck makes CreateRollout and ConfigureValve refuse a metric source URL that check
// refuses (events.ErrInvalid naming source.url), so that the guard is never asked to read a URL
// the server may not reach.
func WithSourceCheck(check func(rawURL string) error) Option {
	return func(s *Service) { s.sourceOK = check }
}

// WithPlanChecks makes CreateRollout refuse a plan that plan refuses and ConfigureValve a
// policy that policy refuses (events.ErrInvalid naming the field), so that the guard is never
// given a metric it cannot query. The guard's CheckPlan and CheckValvePolicy are the checks.
func WithPlanChecks(plan func(flag string, p events.RolloutPlan) error, policy func(p *events.ValvePolicy) error) Option {
	return func(s *Service) { s.checkPlan, s.checkPolicy = plan, policy }
}

// Outcome is how a command ended, as an [Observer] is told.
type Outcome string

// The outcomes of a command.
const (
	// OutcomeOK: the command was carried out (or was a no-op).
	OutcomeOK Outcome = "ok"
	// OutcomeConflict: the caller's expected version was stale, the entity already existed, or
	// other writers kept winning the race; nothing was written.
	OutcomeConflict Outcome = "conflict"
	// OutcomeRefused: the input or the entity's state refused the command; nothing was written.
	OutcomeRefused Outcome = "refused"
	// OutcomeUnavailable: the event store did not answer in time; the event may or may not be
	// stored.
	OutcomeUnavailable Outcome = "unavailable"
)

// OutcomeOf classifies the error a command returned.
func OutcomeOf(err error) Outcome {
	switch {
	case err == nil:
		return OutcomeOK
	case errors.Is(err, events.ErrConflict), errors.Is(err, ErrStale), errors.Is(err, ErrExists):
		return OutcomeConflict
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return OutcomeUnavailable
	}
	for _, target := range []error{
		events.ErrInvalid, events.ErrUnknownType, ErrNotFound, ErrArchived, ErrSegmentNotFound, ErrInUse,
		projections.ErrNotFound, ErrRolloutActive, ErrNoRollout, ErrRolloutState, ErrTripped, ErrNotValve,
	} {
		if errors.Is(err, target) {
			return OutcomeRefused
		}
	}
	return OutcomeUnavailable
}

// Observer is told of the service's work as it happens, for metrics. Its methods must return
// quickly: they are called on the write path.
type Observer interface {
	// Commanded is called once per command, after it ended: name is the command's ("kill",
	// "create rollout", "token", ...).
	Commanded(name string, outcome Outcome)
	// Appended is called after each append to the event store, with how long it took and its
	// error (events.ErrConflict for a lost race).
	Appended(took time.Duration, err error)
}

// WithObserver tells o of every command and append.
func WithObserver(o Observer) Option {
	return func(s *Service) { s.observer = o }
}

// New returns a service writing to store. A nil logger discards logs.
func New(store Store, logger *slog.Logger, opts ...Option) *Service {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	s := &Service{
		store:    store,
		logger:   logger.With("component", "command"),
		flags:    make(map[string]*flagEntry),
		segments: make(map[string]*segmentEntry),
	}
	for _, o := range opts {
		if o != nil {
			o(s)
		}
	}
	s.handler = s.chain(s.logged, s.validated, s.observed)
	return s
}

// acquire returns the entry of the entity env/key of kind k, locked. It returns ctx's error if ctx
// ends while waiting.
func acquire[T any](ctx context.Context, s *Service, k *kind[T], env, key string) (*entry[T], error) {
	subject := k.subject(env, key)
	s.mu.Lock()
	cache := k.cache(s)
	e := cache[subject]
	if e == nil {
		e = &entry[T]{kind: k, subject: subject, sem: make(chan struct{}, 1)}
		cache[subject] = e
	}
	e.refs++
	s.mu.Unlock()
	select {
	case e.sem <- struct{}{}:
		return e, nil
	case <-ctx.Done():
		forget(s, e, false)
		return nil, ctx.Err()
	}
}

// release unlocks e. Entries of entities that do not exist are dropped once nobody uses them,
// so that asking about keys that were never created does not grow the cache.
func release[T any](s *Service, e *entry[T]) {
	exists := e.kind.exists(&e.state)
	<-e.sem
	forget(s, e, exists)
}

func forget[T any](s *Service, e *entry[T], exists bool) {
	s.mu.Lock()
	e.refs--
	if e.refs == 0 && !exists {
		delete(e.kind.cache(s), e.subject)
	}
	s.mu.Unlock()
}

// refresh applies the events stored after the cached sequence. Events applied before an error
// stay applied: each of them is real history. A message that fails verification (one that
// reached the stream without the server), one that does not decode, and an event the fold
// refuses are skipped, as the projections skip them: each changes nothing, but the next append
// expects it as the subject's last message. So no message on a subject can block its commands.
func refresh[T any](ctx context.Context, s *Service, e *entry[T]) error {
	_, seq := e.head()
	q := events.Query{Subjects: []string{e.subject}, FromSequence: seq + 1}
	err := s.store.Read(ctx, q, func(ev events.Event, err error) error {
		switch {
		case errors.Is(err, events.ErrIntegrity):
			s.logger.Warn("skipping a message that fails verification", "subject", e.subject, "sequence", ev.Sequence, "error", err)
		case err != nil:
			s.logger.Warn("skipping a message that is not a readable event", "subject", e.subject, "sequence", ev.Sequence, "error", err)
		default:
			if err := e.kind.fold(&e.state, ev, nil); err != nil {
				s.logger.Warn("skipping an event the fold refuses", "subject", e.subject, "sequence", ev.Sequence, "type", ev.Type, "error", err)
			} else {
				e.remember(ev.ID)
			}
		}
		e.last = ev.Sequence
		return nil
	})
	if err != nil {
		return fmt.Errorf("read %s: %w", e.subject, err)
	}
	return nil
}

// current reads the entity's latest events from the stream, refreshing the cache, and returns
// its current state (the zero state when it was never created).
func current[T any](ctx context.Context, s *Service, k *kind[T], env, key string) (T, error) {
	var zero T
	e, err := acquire(ctx, s, k, env, key)
	if err != nil {
		return zero, err
	}
	defer release(s, e)
	if err := refresh(ctx, s, e); err != nil {
		return zero, err
	}
	return e.state, nil
}

// decision is what a command decided on one state of the entity: an event to append, or nothing.
type decision struct {
	typ     string
	payload any
	// data, when set, is the payload already encoded (compact JSON); payload is then unused.
	data json.RawMessage
	noop bool
	// cfg, when set, is the flag configuration the payload carries, so that folding the event
	// into the cache does not decode it again; enc, when set, is its encoding. Segment decisions
	// leave both nil.
	cfg *events.FlagConfig
	enc *encoding
}

var noop = decision{noop: true}

// command describes one command on an entity for [exec].
type command[T any] struct {
	name     string // for error messages and logs: "update", "kill", ...
	env, key string
	meta     Meta
	// expected is the version the caller expects the entity to be at; 0 for no expectation.
	expected uint64
	// create is set for the commands that need the entity not to exist.
	create bool
	// persistent commands (a kill) keep deciding again after conflicting appends until ctx ends,
	// instead of giving up after maxAttempts: they must win against any rate of other writes.
	persistent bool
	// decide looks at the current state (e.state, which it must not modify) and returns the
	// event to append, noop, or an error refusing the command.
	decide func(ctx context.Context, e *entry[T]) (decision, error)
}

// flagCommand and segmentCommand are the commands on flags and on segments.
type (
	flagCommand    = command[projections.Flag]
	segmentCommand = command[projections.Segment]
)

// exec runs the decide → append loop of c under the lock of its entity, of kind k, and returns
// the entity's state afterwards.
func exec[T any](ctx context.Context, s *Service, k *kind[T], c command[T]) (Result, error) {
	e, err := acquire(ctx, s, k, c.env, c.key)
	if err != nil {
		return Result{}, fmt.Errorf("%s %s/%s: %w", c.name, c.env, c.key, err)
	}
	defer release(s, e)
	if err := execLocked(ctx, s, e, c); err != nil {
		return Result{}, fmt.Errorf("%s %s/%s: %w", c.name, c.env, c.key, err)
	}
	return k.result(e.state), nil
}

// execLocked decides and appends until the command is done; its outcome is the state in e.
func execLocked[T any](ctx context.Context, s *Service, e *entry[T], c command[T]) error {
	fresh := false // whether e's state was read from the stream during this command
	keyed := c.meta.EventID != ""
	for attempt := 1; ; attempt++ {
		if err := ctx.Err(); err != nil {
			return err
		}
		if keyed && e.has(c.meta.EventID) {
			// Sent again: the event of the first attempt is stored and applied.
			return nil
		}
		version, seq := e.head()
		d, err := c.check(ctx, e)
		if err != nil || d.noop {
			// The cache may be behind the stream (another replica wrote): an answer that writes
			// nothing is only given on fresh state, unless fresh state cannot change it. A
			// command sent again may find its own event there: it always looks.
			if !fresh && (keyed || !definitive(err)) {
				if err := refresh(ctx, s, e); err != nil {
					return err
				}
				fresh = true
				continue
			}
			if keyed {
				// Sent again after more events than the entity's recent ids hold?
				stored, lerr := s.storedWithin(ctx, e.subject, c.meta.EventID)
				if lerr != nil {
					return lerr
				}
				if stored {
					e.remember(c.meta.EventID)
					return nil
				}
			}
			return err
		}

		payload := d.payload
		if d.data != nil {
			payload = nil
		}
		ev, err := events.NewEvent(d.typ, c.env, c.key, payload)
		if err != nil {
			return err
		}
		if d.data != nil {
			ev.Data = d.data
		}
		if keyed {
			ev.ID = c.meta.EventID
		}
		ev.Actor, ev.Reason = c.meta.Actor, c.meta.Reason
		ev.CorrelationID, ev.CausationID = c.meta.CorrelationID, c.meta.CausationID
		ev.Version = version + 1
		err = s.append(ctx, &ev, seq)
		if errors.Is(err, events.ErrConflict) {
			// Somebody else appended since the cached sequence: catch up and decide again. With
			// an expected version the next check answers ErrStale.
			if attempt >= maxAttempts && !c.persistent {
				s.logger.Warn("command gave up after conflicts", "command", c.name,
					"env", c.env, "key", c.key, "attempts", attempt, "actor", c.meta.Actor)
				return fmt.Errorf("%d attempts in a row lost the race: %w", attempt, err)
			}
			if err := refresh(ctx, s, e); err != nil {
				return err
			}
			fresh = true
			continue
		}
		if err != nil {
			return err
		}
		if keyed && ev.Sequence <= seq {
			// The store answered with the copy an earlier attempt stored, before the head this
			// attempt expected: it is already in the cached state.
			e.remember(ev.ID)
			return nil
		}
		cfg := d.cfg
		if keyed {
			// The store may have answered with the copy an earlier attempt stored, which need
			// not be what was decided now: fold what is stored.
			cfg, d.enc = nil, nil
		}
		if err := e.kind.fold(&e.state, ev, cfg); err != nil {
			// Cannot happen for an event decided on this state; start over from the stream.
			var zero T
			e.state, e.last = zero, 0
			return fmt.Errorf("apply appended event %s: %w", ev.ID, err)
		}
		e.remember(ev.ID)
		if d.enc != nil {
			_, e.encSeq = e.kind.head(&e.state)
			e.enc = *d.enc
		}
		level := slog.LevelDebug
		if d.typ == events.TypeFlagKilled {
			level = slog.LevelInfo
		}
		if s.logger.Enabled(ctx, level) {
			s.logger.Log(ctx, level, "event appended", "type", d.typ, "env", c.env, "key", c.key,
				"version", ev.Version, "sequence", ev.Sequence, "actor", c.meta.Actor,
				"correlation_id", c.meta.CorrelationID)
		}
		return nil
	}
}

// clockSlack widens the look-back of storedWithin beyond the duplicate window: the stream finds
// where to start by the time it stored each message, on its own clock.
const clockSlack = time.Minute

// storedWithin reports whether an event with id is stored on subject, among the messages stored
// within the store's duplicate window (and clockSlack more). Messages that fail verification do
// not count: a forged copy of the id is not the command's event.
func (s *Service) storedWithin(ctx context.Context, subject, id string) (bool, error) {
	since := time.Now().Add(-s.store.DuplicateWindow() - clockSlack)
	found := false
	err := s.store.Read(ctx, events.Query{Subjects: []string{subject}, FromTime: since}, func(ev events.Event, err error) error {
		if err == nil && ev.ID == id {
			found = true
			return events.ErrStop
		}
		return nil
	})
	if err != nil {
		return false, fmt.Errorf("look for event %s on %s: %w", id, subject, err)
	}
	return found, nil
}

// fold applies ev to f with the projection's fold. When cfg is set it is the configuration ev's
// payload carries (the command just encoded it): the fold then runs on the envelope alone, which
// saves decoding the payload, and the configuration is cfg. Tests hold the result to the fold of
// the stored events.
func fold(f *projections.Flag, ev events.Event, cfg *events.FlagConfig) error {
	if cfg == nil {
		return f.Apply(ev)
	}
	ev.Data = nil // decodes to the zero payload
	if err := f.Apply(ev); err != nil {
		return err
	}
	f.FlagConfig = *cfg
	return nil
}

// check applies the checks every command shares, in order (existence, expected version), then
// the command's own decision.
func (c *command[T]) check(ctx context.Context, e *entry[T]) (decision, error) {
	k := e.kind
	if c.create {
		if k.exists(&e.state) {
			return decision{}, k.errExists
		}
		return c.decide(ctx, e)
	}
	if !k.exists(&e.state) {
		return decision{}, k.errNotFound
	}
	if version, _ := e.head(); c.expected != 0 && c.expected != version {
		return decision{}, &VersionError{Expected: c.expected, Actual: version, Entity: k.versionEntity}
	}
	return c.decide(ctx, e)
}

// definitive reports whether a refusal cannot change when the cache catches up: flags and
// segments are never deleted and versions only grow, so "exists" and "you expected an older
// version" are final.
func definitive(err error) bool {
	if err == nil {
		return false
	}
	var ve *VersionError
	if errors.As(err, &ve) {
		return ve.Expected < ve.Actual
	}
	return errors.Is(err, ErrExists)
}

// append appends ev, sending the same event again after an append whose outcome is unknown (the
// store recognises the copy by its id, so it is written once). Each attempt carries the time it
// is sent, so that the event's time is the time the store accepted it, give or take one round
// trip. An append the store could not take (events.ErrUnavailable) is not sent again: it fails
// fast, and is reported as of unknown outcome if an earlier attempt may have been stored.
func (s *Service) append(ctx context.Context, ev *events.Event, expectedSeq uint64) error {
	backoff := transportBackoff
	var unknown error // the last attempt that may have been stored
	for try := 0; ; try++ {
		ev.Time = time.Now().UTC()
		start := time.Now()
		actx, cancel := context.WithTimeout(ctx, appendTimeout)
		_, err := s.store.Append(actx, ev, expectedSeq)
		cancel()
		if s.observer != nil {
			s.observer.Appended(time.Since(start), err)
		}
		if errors.Is(err, events.ErrOutcomeUnknown) {
			unknown = err
		}
		if err != nil && unknown != nil && !errors.Is(err, events.ErrOutcomeUnknown) && !errors.Is(err, events.ErrConflict) {
			// This attempt failed in a way that says nothing of the earlier one.
			err = unknown
		}
		if err == nil || try == transportRetries || !transient(ctx, err) {
			return err
		}
		s.logger.Warn("append of unknown outcome, sending again", "subject", ev.Subject(), "id", ev.ID, "err", err)
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
			return err
		case <-t.C:
		}
		backoff *= 2
	}
}

// transient reports whether an append error may be worth sending the same event again for: its
// outcome is unknown, and there is time left.
func transient(ctx context.Context, err error) bool {
	return ctx.Err() == nil && errors.Is(err, events.ErrOutcomeUnknown) &&
		!errors.Is(err, context.Canceled)
}
