package targeting

import (
	"context"
	"slices"
	"sync"
	"sync/atomic"

	"github.com/interlock-dev/interlock/events"
	"github.com/interlock-dev/interlock/projections"
)

// Evaluators holds the live compiled [Flagset] of every environment of a [Catalog], kept up to
// date by the catalog's observer and swapped in atomically: readers never see half a change.
//
// Work is batched so that replaying the stream costs next to nothing per event: the observer only
// records the new state of the flag or segment an event changed; the first read after changes
// compiles what changed, once however many events changed it, and publishes a new set (copying
// only the shards of compiled flags that hold what changed, sharing everything else). A set is
// always the exact state of the catalog after some event: the observer runs while the catalog
// holds its writer lock, in stream order.
type Evaluators struct {
	catalog *projections.Catalog
	// pub serialises publication: the builders are guarded by it.
	pub sync.Mutex
	// obs guards the registry of environments, the pending changes and the watchers. Lock order:
	// pub before obs; the catalog's writer lock before obs.
	obs  sync.Mutex
	envs atomic.Pointer[map[string]*liveEnv]
}

// liveEnv is the state of one environment.
type liveEnv struct {
	env string
	set atomic.Pointer[Flagset]
	// dirty says there are pending changes that set does not have.
	dirty atomic.Bool

	// Guarded by Evaluators.obs: the latest state of every flag and segment changed since the
	// last publication, the sequence that state is at, and the watchers.
	flags    map[string]projections.Flag
	segments map[string]projections.Segment
	seq      uint64
	watchers []chan struct{}

	// Guarded by Evaluators.pub.
	b *builder
}

// NewEvaluators returns evaluators that follow c. It registers an observer on c, and may be
// called before or after c has applied events: an environment is compiled from what c holds the
// first time it is read, watched or changed.
func NewEvaluators(c *projections.Catalog) *Evaluators {
	e := &Evaluators{catalog: c}
	e.envs.Store(&map[string]*liveEnv{})
	c.Observe(e.observe)
	c.OnRestore(e.reload)
	return e
}

// reload takes every registered environment's state afresh from the catalog, which was just
// restored from a checkpoint. The catalog's writer lock is held.
func (e *Evaluators) reload(seq uint64) {
	e.obs.Lock()
	defer e.obs.Unlock()
	for env, le := range *e.envs.Load() {
		for _, f := range e.catalog.Flags(env) {
			le.flags[f.Key] = f
		}
		for _, sg := range e.catalog.Segments(env) {
			le.segments[sg.Key] = sg
		}
		le.seq = max(le.seq, seq)
		le.dirty.Store(true)
		for _, ch := range le.watchers {
			select {
			case ch <- struct{}{}:
			default:
			}
		}
	}
}

// Flagset returns the current flag set of env: never nil, empty for an environment without flags
// or segments. It takes no lock, except on the first read after env changed: that read compiles
// and publishes the changes (and the first read of an environment waits for the catalog's writer
// lock, so do not call it from a catalog observer).
func (e *Evaluators) Flagset(env string) *Flagset {
	le := (*e.envs.Load())[env]
	if le == nil {
		le = e.register(env, false)
		if le == nil {
			return NewFlagset(env)
		}
	}
	if le.dirty.Load() {
		return e.publish(le)
	}
	return le.set.Load()
}

// Watch returns a channel signalled after each change of env's flags or segments. Signals
// coalesce: the channel holds at most one, so a slow reader gets one signal for many changes and
// then reads the current [Evaluators.Flagset]. Call the returned function to stop watching; it
// closes the channel and may be called more than once. Watch waits for the catalog's writer
// lock: do not call it from a catalog observer.
func (e *Evaluators) Watch(env string) (<-chan struct{}, func()) {
	le := e.register(env, true)
	ch := make(chan struct{}, 1)
	e.obs.Lock()
	le.watchers = append(le.watchers, ch)
	e.obs.Unlock()
	var once sync.Once
	return ch, func() {
		once.Do(func() {
			e.obs.Lock()
			le.watchers = slices.DeleteFunc(le.watchers, func(c chan struct{}) bool { return c == ch })
			close(ch)
			e.obs.Unlock()
		})
	}
}

// WaitSequence blocks until the catalog has applied the event at stream sequence seq and these
// evaluators have seen it, so that a read after a write sees the write. It returns ctx.Err() if
// ctx ends first.
func (e *Evaluators) WaitSequence(ctx context.Context, seq uint64) error {
	// The catalog calls its observers before its sequence advances.
	return e.catalog.WaitSequence(ctx, seq)
}

// register returns the state of env, creating it with everything the catalog holds of env. It
// returns nil for an environment the catalog knows nothing of, unless always: names nobody wrote
// to cost nothing.
func (e *Evaluators) register(env string, always bool) *liveEnv {
	if !always && len(e.catalog.Flags(env)) == 0 && len(e.catalog.Segments(env)) == 0 {
		return nil // checked first without the writer lock: unknown names must stay cheap
	}
	// Held, the catalog's state is exactly that after its last event, and no observer runs.
	var le *liveEnv
	e.catalog.Hold(func() {
		e.obs.Lock()
		defer e.obs.Unlock()
		if le = (*e.envs.Load())[env]; le != nil {
			return
		}
		flags, segs := e.catalog.Flags(env), e.catalog.Segments(env)
		if !always && len(flags) == 0 && len(segs) == 0 {
			return
		}
		le = e.create(env, flags, segs, e.catalog.Sequence())
	})
	return le
}

// create registers a new environment holding flags and segments at seq, to be compiled on the
// first read. The caller holds obs.
func (e *Evaluators) create(env string, flags []projections.Flag, segs []projections.Segment, seq uint64) *liveEnv {
	b := newBuilder(env)
	le := &liveEnv{env: env, b: b, seq: seq, flags: make(map[string]projections.Flag, len(flags)), segments: make(map[string]projections.Segment, len(segs))}
	for _, f := range flags {
		le.flags[f.Key] = f
	}
	for _, sg := range segs {
		le.segments[sg.Key] = sg
	}
	le.set.Store(NewFlagset(env))
	le.dirty.Store(true)
	envs := *e.envs.Load()
	next := make(map[string]*liveEnv, len(envs)+1)
	for k, v := range envs {
		next[k] = v
	}
	next[env] = le
	e.envs.Store(&next)
	return le
}

// publish compiles the pending changes of le into a new flag set, stores it and returns it.
func (e *Evaluators) publish(le *liveEnv) *Flagset {
	e.pub.Lock()
	defer e.pub.Unlock()
	e.obs.Lock()
	if !le.dirty.Load() {
		e.obs.Unlock()
		return le.set.Load()
	}
	flags, segs, seq := le.flags, le.segments, le.seq
	le.flags, le.segments = make(map[string]projections.Flag), make(map[string]projections.Segment)
	e.obs.Unlock()

	// Segments first, so that the flags compile against them.
	for _, sg := range segs {
		le.b.setSegment(sg)
	}
	for _, f := range flags {
		le.b.setFlag(f)
	}
	le.b.seq = seq
	set := le.b.publish()
	le.set.Store(set)
	// Only now is the set clean: until it was stored, readers had to come here and wait, or a
	// read after WaitSequence could have returned the previous set. Changes observed meanwhile
	// keep it dirty.
	e.obs.Lock()
	if len(le.flags) == 0 && len(le.segments) == 0 {
		le.dirty.Store(false)
	}
	e.obs.Unlock()
	return set
}

// observe is the catalog's observer. The catalog calls it with its writer lock held, after ev's
// change is visible, so the state read here is exactly the state after ev.
func (e *Evaluators) observe(ev events.Event) {
	e.obs.Lock()
	defer e.obs.Unlock()
	le := (*e.envs.Load())[ev.Environment]
	if le == nil {
		le = e.create(ev.Environment, e.catalog.Flags(ev.Environment), e.catalog.Segments(ev.Environment), ev.Sequence)
	} else {
		switch ev.Entity {
		case events.EntityFlag:
			if f, ok := e.catalog.Flag(ev.Environment, ev.Key); ok {
				le.flags[ev.Key] = f
			}
		case events.EntitySegment:
			if sg, ok := e.catalog.Segment(ev.Environment, ev.Key); ok {
				le.segments[ev.Key] = sg
			}
		}
		le.seq = max(le.seq, ev.Sequence)
		le.dirty.Store(true)
	}
	for _, ch := range le.watchers {
		select {
		case ch <- struct{}{}:
		default:
		}
	}
}
