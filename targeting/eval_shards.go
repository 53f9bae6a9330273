package targeting

import (
	"fmt"
	"hash/maphash"
	"slices"

	"github.com/interlock-dev/interlock/events"
	"github.com/interlock-dev/interlock/projections"
)

// The compiled flags of a set (and its segments, and the index of the flags using each segment)
// are spread over shardCount maps by a hash of the key. A change copies the array of shards and
// the one shard holding the key, not the whole environment: with 10,000 flags a shard holds about
// 40 of them. The hash is seeded per lineage of sets (a set and every set made from it share the
// seed), so nothing is global and no key set can be tuned to pile into one shard everywhere.
const (
	shardBits  = 8
	shardCount = 1 << shardBits
)

// shards is a map from keys to values split into shardCount maps. Once published it never
// changes: a change makes a new array sharing every shard but the one it changed.
type shards[V any] [shardCount]map[string]V

// shardOf is the shard holding key in sets hashed with seed.
func shardOf(seed maphash.Seed, key string) int {
	return int(maphash.String(seed, key) & (shardCount - 1))
}

// cow is a [shards] being changed by a builder: it copies the array of shards, then each shard,
// before its first change after a publication, so that what was published never changes.
type cow[V any] struct {
	t *shards[V]
	// tOwned says t was copied since the last publication; owned says the same of each shard
	// (and is only meaningful while tOwned).
	tOwned bool
	owned  [shardCount / 64]uint64
}

// get returns the value of key, which is in shard i.
func (c *cow[V]) get(i int, key string) V {
	if c.t == nil {
		var zero V
		return zero
	}
	return c.t[i][key]
}

// shard returns shard i, owned by the builder and ready to change.
func (c *cow[V]) shard(i int) map[string]V {
	if !c.tOwned {
		next := new(shards[V])
		if c.t != nil {
			*next = *c.t
		}
		c.t, c.tOwned, c.owned = next, true, [shardCount / 64]uint64{}
	}
	word, bit := i/64, uint64(1)<<(i%64)
	if c.owned[word]&bit == 0 {
		m := make(map[string]V, len(c.t[i])+1)
		for k, v := range c.t[i] {
			m[k] = v
		}
		c.t[i] = m
		c.owned[word] |= bit
	}
	return c.t[i]
}

// set stores v under key, which is in shard i.
func (c *cow[V]) set(i int, key string, v V) { c.shard(i)[key] = v }

// del removes key, which is in shard i.
func (c *cow[V]) del(i int, key string) {
	if c.t == nil {
		return
	}
	if _, ok := c.t[i][key]; ok {
		delete(c.shard(i), key)
	}
}

// publish returns the shards as they are, now shared: the next change copies again.
func (c *cow[V]) publish() *shards[V] {
	c.tOwned = false
	return c.t
}

// each calls fn for every key and value, in no particular order.
func (t *shards[V]) each(fn func(key string, v V)) {
	if t == nil {
		return
	}
	for _, m := range t {
		for k, v := range m {
			fn(k, v)
		}
	}
}

// builder makes flag sets. It owns what it copied until it publishes; after that it copies again
// before its next change, so a published set never changes.
type builder struct {
	env  string
	seq  uint64
	seed maphash.Seed

	flags    cow[*compiledFlag]
	segments cow[*compiledSegment]
	// users maps a segment key to the set of flags whose conditions name it, whether or not the
	// segment exists, so that a segment change recompiles exactly those flags without a scan.
	users cow[map[string]struct{}]
	// ownedUsers are the segment keys whose set of users was copied since the last publication,
	// and may be changed in place.
	ownedUsers map[string]struct{}

	nflags, nsegments int
}

// newBuilder returns a builder of an empty set of env, with a new seed.
func newBuilder(env string) *builder {
	return &builder{env: env, seed: maphash.MakeSeed()}
}

// edit returns a builder starting from s.
func (s *Flagset) edit() *builder {
	seed := s.seed
	if seed == (maphash.Seed{}) {
		seed = maphash.MakeSeed() // a zero Flagset: empty, so any seed will do
	}
	return &builder{
		env: s.env, seq: s.seq, seed: seed,
		flags: cow[*compiledFlag]{t: s.flags}, segments: cow[*compiledSegment]{t: s.segments},
		users: cow[map[string]struct{}]{t: s.users}, nflags: s.nflags, nsegments: s.nsegments,
	}
}

// changed reports whether anything was changed since the builder started or last published.
func (b *builder) changed() bool {
	return b.flags.tOwned || b.segments.tOwned || b.users.tOwned
}

// publish returns the current state as an immutable set.
func (b *builder) publish() *Flagset {
	clear(b.ownedUsers)
	return &Flagset{
		env: b.env, seq: b.seq, seed: b.seed,
		flags: b.flags.publish(), segments: b.segments.publish(), users: b.users.publish(),
		nflags: b.nflags, nsegments: b.nsegments,
	}
}

func (b *builder) shardOf(key string) int { return shardOf(b.seed, key) }

// segment returns the compiled segment of key, or nil: the builder's [segmentLookup].
func (b *builder) segment(key string) *compiledSegment {
	return b.segments.get(b.shardOf(key), key)
}

// fold folds ev into the flag or segment it names.
func (b *builder) fold(ev *events.Event) error {
	switch ev.Entity {
	case events.EntityFlag:
		return b.foldFlag(ev)
	case events.EntitySegment:
		return b.foldSegment(ev)
	}
	return fmt.Errorf("%w: event %q of unknown entity %q", events.ErrMalformed, ev.ID, ev.Entity)
}

// foldFlag folds ev into the flag it names and compiles the result.
func (b *builder) foldFlag(ev *events.Event) error {
	var f projections.Flag
	if prev := b.flags.get(b.shardOf(ev.Key), ev.Key); prev != nil {
		f = prev.src
	}
	if err := validateRef(ev); err != nil {
		return err
	}
	if err := f.Apply(*ev); err != nil {
		return err
	}
	b.setFlag(f)
	return nil
}

// foldSegment folds ev into the segment it names and compiles the result.
func (b *builder) foldSegment(ev *events.Event) error {
	if err := validateRef(ev); err != nil {
		return err
	}
	var sg projections.Segment
	if prev := b.segment(ev.Key); prev != nil {
		sg = prev.src
	}
	if err := sg.Apply(*ev); err != nil {
		return err
	}
	b.setSegment(sg)
	return nil
}

// setFlag compiles f against the builder's segments and stores it.
func (b *builder) setFlag(f projections.Flag) {
	i := b.shardOf(f.Key)
	old := b.flags.get(i, f.Key)
	c := compileFlag(f, b.segment, old)
	b.flags.set(i, f.Key, c)
	var was []string
	if old == nil {
		b.nflags++
	} else {
		was = old.segments
	}
	if slices.Equal(was, c.segments) {
		return
	}
	for _, sk := range was {
		if _, found := slices.BinarySearch(c.segments, sk); !found {
			b.unlink(sk, f.Key)
		}
	}
	for _, sk := range c.segments {
		if _, found := slices.BinarySearch(was, sk); !found {
			b.link(sk, f.Key)
		}
	}
}

// ownUsers returns the set of flags using segment sk, owned by the builder (copied once per
// publication), creating it when create is true; nil when there is none and create is false.
func (b *builder) ownUsers(sk string, create bool) map[string]struct{} {
	i := b.shardOf(sk)
	us := b.users.get(i, sk)
	if us == nil && !create {
		return nil
	}
	if _, owned := b.ownedUsers[sk]; owned && us != nil {
		return us
	}
	next := make(map[string]struct{}, len(us)+1)
	for fk := range us {
		next[fk] = struct{}{}
	}
	b.users.set(i, sk, next)
	if b.ownedUsers == nil {
		b.ownedUsers = make(map[string]struct{})
	}
	b.ownedUsers[sk] = struct{}{}
	return next
}

// link records that flag fk uses segment sk.
func (b *builder) link(sk, fk string) {
	b.ownUsers(sk, true)[fk] = struct{}{}
}

// unlink records that flag fk no longer uses segment sk.
func (b *builder) unlink(sk, fk string) {
	us := b.ownUsers(sk, false)
	if us == nil {
		return
	}
	delete(us, fk)
	if len(us) == 0 {
		b.users.del(b.shardOf(sk), sk)
		delete(b.ownedUsers, sk)
	}
}

// setSegment compiles sg, stores it, and compiles again the flags that use it.
func (b *builder) setSegment(sg projections.Segment) {
	i := b.shardOf(sg.Key)
	if b.segments.get(i, sg.Key) == nil {
		b.nsegments++
	}
	b.segments.set(i, sg.Key, compileSegment(sg))
	for fk := range b.users.get(i, sg.Key) {
		j := b.shardOf(fk)
		b.flags.set(j, fk, compileFlag(b.flags.get(j, fk).src, b.segment, nil))
	}
}

// validateRef checks the environment and key an event names, as the catalog does before folding.
func validateRef(ev *events.Event) error {
	if err := events.ValidateEnvironment(ev.Environment); err != nil {
		return err
	}
	return events.ValidateFlagKey(ev.Key)
}
