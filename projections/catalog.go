package projections

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"

	"github.com/interlock-dev/interlock/events"
)

// Catalog is the live read model of every flag in every environment, folded from the stream.
//
// One goroutine applies events (Apply is serialised internally, so more are safe but pointless)
// while any number read. Reads take a read lock only for a map lookup and a struct copy; the fold
// itself runs outside the lock, so readers never wait behind decoding.
//
// A Flag returned by a read is a copy: folding may go on while it is read. Its maps and slices are
// shared with the catalog and must be treated as read-only (use FlagConfig.Clone to change them).
type Catalog struct {
	// wmu serialises writers, so that the fold of one event sees the result of the previous one.
	wmu sync.Mutex
	// mu guards envs; it is held for writing only to store one folded flag.
	mu       sync.RWMutex
	envs     map[string]map[string]Flag
	segments map[string]map[string]Segment
	pos      Position
	// observers are told of every event that changed a flag or segment, after the change is
	// visible to readers, in stream order, on the applying goroutine.
	observers []func(events.Event)
	// restored are told when the catalog was restored from a checkpoint, on the restoring
	// goroutine, with the writer lock held.
	restored []func(seq uint64)
}

// NewCatalog returns an empty catalog at sequence 0.
func NewCatalog() *Catalog {
	return &Catalog{envs: make(map[string]map[string]Flag), segments: make(map[string]map[string]Segment)}
}

// Observe registers fn to be called with every event that changed a flag or a segment, once the
// change is visible to readers and before the catalog's sequence advances past it (so
// WaitSequence returning means every observer has seen the event), in stream order, on the
// goroutine that applies events. fn must be quick and must not call Apply. Register observers
// before events are applied.
func (c *Catalog) Observe(fn func(events.Event)) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	c.observers = append(c.observers, fn)
}

// OnRestore registers fn to be called with the sequence of the checkpoint the catalog is restored
// from (see [WithCheckpoints]), once the restored state is visible to readers and before the
// sequence advances, on the restoring goroutine. fn must not call Apply.
func (c *Catalog) OnRestore(fn func(seq uint64)) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	c.restored = append(c.restored, fn)
}

// Hold calls fn while no event is applied and no observer runs: what fn reads of the catalog is
// its state after its last event. fn must not call Apply, Observe or OnRestore.
func (c *Catalog) Hold(fn func()) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	fn()
}

// Apply folds one event read from the stream into the flag it belongs to, with [Flag.Apply].
//
// An event whose sequence is not after [Catalog.Sequence] was applied already (a redelivery) and
// is skipped silently. Otherwise the catalog's sequence advances to ev.Sequence whether or not the
// event folds, so that one bad event cannot wedge the catalog; a bad event leaves its flag
// unchanged and Apply returns why.
//
// Errors: [ErrOutOfOrder] when the event does not follow its flag's state, or carries no stream
// sequence (then nothing changes, not even the sequence); an error wrapping events.ErrInvalid
// when its environment or key is not valid; one wrapping events.ErrMalformed when its payload
// does not decode; one wrapping events.ErrUnknownType when an event of a type this version does
// not know would create the flag. Events of unknown types on an existing flag advance its
// version and change nothing else.
func (c *Catalog) Apply(ev events.Event) error {
	if ev.Sequence == 0 {
		return fmt.Errorf("%w: event %q has no stream sequence", ErrOutOfOrder, ev.ID)
	}
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if ev.Sequence <= c.pos.Sequence() {
		return nil
	}
	if events.IsGlobal(ev.Entity) {
		// Token events and integrity acknowledgements change no flag or segment.
		c.advance(ev.Sequence)
		return nil
	}
	var err error
	if ev.Entity == events.EntitySegment {
		err = c.foldSegment(ev)
	} else {
		err = c.fold(ev)
	}
	if err == nil {
		// Before the sequence advances: once WaitSequence returns, every observer has seen the event.
		for _, fn := range c.observers {
			fn(ev)
		}
	}
	c.advance(ev.Sequence)
	if err != nil {
		return fmt.Errorf("apply sequence %d: %w", ev.Sequence, err)
	}
	return nil
}

// foldSegment is fold for a segment event.
func (c *Catalog) foldSegment(ev events.Event) error {
	if err := validateRef(&ev); err != nil {
		return err
	}
	segs := c.segments[ev.Environment]
	s := segs[ev.Key]
	if err := s.Apply(ev); err != nil {
		return err
	}
	c.mu.Lock()
	if segs == nil {
		segs = make(map[string]Segment)
		c.segments[ev.Environment] = segs
	}
	segs[ev.Key] = s
	c.mu.Unlock()
	return nil
}

// Segment returns the current state of one segment, archived or not, and whether it exists.
func (c *Catalog) Segment(env, key string) (Segment, bool) {
	c.mu.RLock()
	s, ok := c.segments[env][key]
	c.mu.RUnlock()
	return s, ok
}

// Segments returns every segment of env, archived ones included, sorted by key.
func (c *Catalog) Segments(env string) []Segment {
	c.mu.RLock()
	segs := c.segments[env]
	out := make([]Segment, 0, len(segs))
	for _, s := range segs {
		out = append(out, s)
	}
	c.mu.RUnlock()
	slices.SortFunc(out, func(a, b Segment) int { return strings.Compare(a.Key, b.Key) })
	return out
}

// fold applies ev to a copy of its flag and stores the copy. The caller holds wmu, so the flag
// read here without mu cannot change underneath: only writers change envs.
func (c *Catalog) fold(ev events.Event) error {
	flags := c.envs[ev.Environment]
	f := flags[ev.Key]
	if err := apply(&f, &ev); err != nil {
		return err
	}
	c.mu.Lock()
	if flags == nil {
		flags = make(map[string]Flag)
		c.envs[ev.Environment] = flags
	}
	flags[ev.Key] = f
	c.mu.Unlock()
	return nil
}

// apply is the fold every read model here shares: [Flag.Apply], after checking what it leaves to
// its caller. The event must name a valid environment and key, and an event of a type this
// version does not know cannot bring a flag into existence (it would be a flag without a
// configuration). On error f is unchanged.
func apply(f *Flag, ev *events.Event) error {
	if err := validateRef(ev); err != nil {
		return err
	}
	next := *f
	if err := next.Apply(*ev); err != nil {
		return err
	}
	*f = next
	return nil
}

// validateRef checks the environment and key an event names.
func validateRef(ev *events.Event) error {
	if err := events.ValidateEnvironment(ev.Environment); err != nil {
		return err
	}
	return events.ValidateFlagKey(ev.Key)
}

// skip advances the sequence past a message that is not an event at all (it did not decode), so
// that readiness and WaitSequence see it as handled.
func (c *Catalog) skip(seq uint64) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if seq > c.pos.Sequence() {
		c.advance(seq)
	}
}

// advance publishes the new sequence and wakes the waiters. The caller holds wmu.
func (c *Catalog) advance(seq uint64) { c.pos.Advance(seq) }

// Sequence is the stream sequence of the last event applied (or skipped as bad), 0 before any.
func (c *Catalog) Sequence() uint64 { return c.pos.Sequence() }

// WaitSequence blocks until [Catalog.Sequence] is at least seq, for read-your-writes after an
// append. It returns ctx.Err() if ctx ends first.
func (c *Catalog) WaitSequence(ctx context.Context, seq uint64) error { return c.pos.Wait(ctx, seq) }

// Flag returns the current state of one flag, archived or not, and whether it exists.
func (c *Catalog) Flag(env, key string) (Flag, bool) {
	c.mu.RLock()
	f, ok := c.envs[env][key]
	c.mu.RUnlock()
	return f, ok
}

// Flags returns every flag of env, archived ones included, sorted by key; none for an unknown
// environment.
func (c *Catalog) Flags(env string) []Flag {
	c.mu.RLock()
	flags := c.envs[env]
	out := make([]Flag, 0, len(flags))
	for _, f := range flags {
		out = append(out, f)
	}
	c.mu.RUnlock()
	slices.SortFunc(out, func(a, b Flag) int { return strings.Compare(a.Key, b.Key) })
	return out
}

// Environments returns the names of the environments that hold at least one flag, sorted.
func (c *Catalog) Environments() []string {
	c.mu.RLock()
	out := make([]string, 0, len(c.envs))
	for env := range c.envs {
		out = append(out, env)
	}
	c.mu.RUnlock()
	slices.Sort(out)
	return out
}

// all returns every flag and segment, sorted by environment and key.
func (c *Catalog) all() ([]Flag, []Segment) {
	c.mu.RLock()
	var flags []Flag
	var segs []Segment
	for _, m := range c.envs {
		for _, f := range m {
			flags = append(flags, f)
		}
	}
	for _, m := range c.segments {
		for _, s := range m {
			segs = append(segs, s)
		}
	}
	c.mu.RUnlock()
	slices.SortFunc(flags, func(a, b Flag) int {
		return cmp.Or(strings.Compare(a.Environment, b.Environment), strings.Compare(a.Key, b.Key))
	})
	slices.SortFunc(segs, func(a, b Segment) int {
		return cmp.Or(strings.Compare(a.Environment, b.Environment), strings.Compare(a.Key, b.Key))
	})
	return flags, segs
}

// restore fills an empty catalog with flags and segments at sequence seq (a checkpoint's).
// Errors: one wrapping ErrOutOfOrder when the catalog has applied events already.
func (c *Catalog) restore(flags []Flag, segs []Segment, seq uint64) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if c.pos.Sequence() != 0 {
		return fmt.Errorf("%w: the catalog is at sequence %d already", ErrOutOfOrder, c.pos.Sequence())
	}
	envs := make(map[string]map[string]Flag)
	for _, f := range flags {
		if envs[f.Environment] == nil {
			envs[f.Environment] = make(map[string]Flag)
		}
		envs[f.Environment][f.Key] = f
	}
	segments := make(map[string]map[string]Segment)
	for _, s := range segs {
		if segments[s.Environment] == nil {
			segments[s.Environment] = make(map[string]Segment)
		}
		segments[s.Environment][s.Key] = s
	}
	c.mu.Lock()
	c.envs, c.segments = envs, segments
	c.mu.Unlock()
	for _, fn := range c.restored {
		fn(seq)
	}
	c.advance(seq)
	return nil
}
