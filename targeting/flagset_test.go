package targeting_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/interlock-dev/interlock/events"
	"github.com/interlock-dev/interlock/projections"
	"github.com/interlock-dev/interlock/targeting"
)

// stream numbers events as a stream would, tracking each entity's version.
type stream struct {
	t        testing.TB
	seq      uint64
	versions map[string]uint64
}

func newStream(t testing.TB) *stream { return &stream{t: t, versions: map[string]uint64{}} }

// next is the next event of env/key (a flag or a segment, as typ says) with a stream sequence.
func (s *stream) next(typ, env, key string, payload any) events.Event {
	s.t.Helper()
	ev, err := events.NewEvent(typ, env, key, payload)
	if err != nil {
		s.t.Fatal(err)
	}
	id := ev.Entity + "/" + env + "/" + key
	s.versions[id]++
	s.seq++
	ev.Version, ev.Sequence, ev.Actor = s.versions[id], s.seq, "alice"
	return ev
}

// mustApply applies ev and fails the test on an error.
func mustApply(t testing.TB, set *targeting.Flagset, ev events.Event) *targeting.Flagset {
	t.Helper()
	next, err := set.Apply(ev)
	if err != nil {
		t.Fatalf("apply %s %s: %v", ev.Type, ev.Key, err)
	}
	return next
}

func variantOf(set *targeting.Flagset, key string, ctx *targeting.EvalContext) string {
	e := set.Evaluate(key, ctx)
	if e.Variant == nil {
		return string(e.ErrorCode)
	}
	return e.Variant.Name
}

func TestFlagsetApplyFlagLifecycle(t *testing.T) {
	s := newStream(t)
	beta := ctxOf(map[string]any{"role": "beta"})
	v0 := targeting.NewFlagset(env)
	v1 := mustApply(t, v0, s.next(events.TypeFlagCreated, env, "f", events.FlagCreated{Flag: boolConfig()}))
	updated := targeted(cond("role", "eq", "beta"))
	v2 := mustApply(t, v1, s.next(events.TypeFlagUpdated, env, "f", events.FlagUpdated{Flag: updated}))
	v3 := mustApply(t, v2, s.next(events.TypeFlagKilled, env, "f", events.FlagKilled{}))
	v4 := mustApply(t, v3, s.next(events.TypeFlagEnabled, env, "f", events.FlagEnabled{}))
	v5 := mustApply(t, v4, s.next(events.TypeFlagArchived, env, "f", events.FlagArchived{}))
	v6 := mustApply(t, v5, s.next(events.TypeFlagUnarchived, env, "f", events.FlagUnarchived{}))

	steps := []struct {
		set     *targeting.Flagset
		variant string
		reason  targeting.Reason
		keys    []string
	}{
		{v0, "FLAG_NOT_FOUND", targeting.ReasonError, []string{}},
		{v1, "on", targeting.ReasonStatic, []string{"f"}},
		{v2, "on", targeting.ReasonTargetingMatch, []string{"f"}},
		{v3, "off", targeting.ReasonDisabled, []string{"f"}},
		{v4, "on", targeting.ReasonTargetingMatch, []string{"f"}},
		{v5, "FLAG_NOT_FOUND", targeting.ReasonError, []string{}},
		{v6, "on", targeting.ReasonTargetingMatch, []string{"f"}},
	}
	// Every set keeps answering as it did: Apply never changes the set it is called on.
	for i, st := range steps {
		e := st.set.Evaluate("f", beta)
		if got := variantOf(st.set, "f", beta); got != st.variant || e.Reason != st.reason {
			t.Errorf("version %d: %s %s, want %s %s", i, got, e.Reason, st.variant, st.reason)
		}
		if st.set.Sequence() != uint64(i) {
			t.Errorf("version %d at sequence %d", i, st.set.Sequence())
		}
		if i > 0 && e.Reason != targeting.ReasonError && e.Version != uint64(i) {
			t.Errorf("version %d evaluates version %d", i, e.Version)
		}
		if keys := st.set.Keys(); !slices.Equal(keys, st.keys) {
			t.Errorf("version %d keys %v", i, keys)
		}
	}
	if n := len(v5.Flags()); n != 1 {
		t.Errorf("an archived flag is still a document of the set: %d flags", n)
	}
}

func TestFlagsetApplyRefuses(t *testing.T) {
	s := newStream(t)
	set := mustApply(t, targeting.NewFlagset(env), s.next(events.TypeFlagCreated, env, "f", events.FlagCreated{Flag: boolConfig()}))
	kill := s.next(events.TypeFlagKilled, env, "f", events.FlagKilled{})
	killed := mustApply(t, set, kill)

	t.Run("redelivery", func(t *testing.T) {
		again, err := killed.Apply(kill)
		if err != nil || again != killed {
			t.Errorf("%v, %v: a redelivered event is skipped", again, err)
		}
	})
	t.Run("another environment", func(t *testing.T) {
		ev := newStream(t).next(events.TypeFlagCreated, "staging", "f", events.FlagCreated{Flag: boolConfig()})
		ev.Sequence = 100
		got, err := killed.Apply(ev)
		if !errors.Is(err, projections.ErrOutOfOrder) || got != killed {
			t.Errorf("%v, %v", got, err)
		}
	})
	cases := []struct {
		name   string
		ev     func() events.Event
		target error
	}{
		{"version gap", func() events.Event {
			ev := s.next(events.TypeFlagEnabled, env, "f", events.FlagEnabled{})
			ev.Version += 5
			return ev
		}, projections.ErrOutOfOrder},
		{"starts without creation", func() events.Event {
			return s.next(events.TypeFlagEnabled, env, "g", events.FlagEnabled{})
		}, projections.ErrOutOfOrder},
		{"malformed payload", func() events.Event {
			ev := s.next(events.TypeFlagUpdated, env, "f", events.FlagUpdated{})
			ev.Data = json.RawMessage(`{"flag": 7}`)
			ev.Version = 3 // the next version: only the payload is wrong
			return ev
		}, events.ErrMalformed},
		{"invalid key", func() events.Event {
			return s.next(events.TypeFlagCreated, env, "a b", events.FlagCreated{Flag: boolConfig()})
		}, events.ErrInvalid},
		{"unknown entity", func() events.Event {
			ev := s.next(events.TypeFlagEnabled, env, "f", events.FlagEnabled{})
			ev.Entity = "rollout"
			ev.Version = 3
			return ev
		}, events.ErrMalformed},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			ev := c.ev()
			got, err := killed.Apply(ev)
			if !errors.Is(err, c.target) {
				t.Fatalf("error %v, want %v", err, c.target)
			}
			if got == nil || got.Sequence() != ev.Sequence {
				t.Fatalf("the sequence does not move past a bad event: %v", got)
			}
			if e := got.Evaluate("f", nil); e.Reason != targeting.ReasonDisabled || e.Version != 2 {
				t.Errorf("a bad event changed the flag: %+v", e)
			}
			if len(got.Flags()) != 1 {
				t.Errorf("flags %v", got.Flags())
			}
		})
	}
}

func TestFlagsetApplySegments(t *testing.T) {
	s := newStream(t)
	alice := &targeting.EvalContext{TargetingKey: "alice"}
	bob := &targeting.EvalContext{TargetingKey: "bob", Attributes: map[string]any{"plan": "pro"}}
	flag := targeted(cond("targetingKey", "inSegment", "beta"))
	other := targeted(cond("role", "eq", "x"))

	// The flag arrives before its segment (the write path refuses that; the engine copes).
	v1 := mustApply(t, targeting.NewFlagset(env), s.next(events.TypeFlagCreated, env, "f", events.FlagCreated{Flag: flag}))
	v1 = mustApply(t, v1, s.next(events.TypeFlagCreated, env, "other", events.FlagCreated{Flag: other}))
	if got := v1.MissingSegments(flagOf("f", flag)); !slices.Equal(got, []string{"beta"}) {
		t.Errorf("missing %v", got)
	}
	v2 := mustApply(t, v1, s.next(events.TypeSegmentCreated, env, "beta", events.SegmentCreated{Segment: events.SegmentConfig{Included: []string{"alice"}}}))
	v3 := mustApply(t, v2, s.next(events.TypeSegmentUpdated, env, "beta", events.SegmentUpdated{Segment: events.SegmentConfig{Conditions: []events.Condition{cond("plan", "eq", "pro")}}}))
	v4 := mustApply(t, v3, s.next(events.TypeSegmentArchived, env, "beta", events.SegmentArchived{}))
	v5 := mustApply(t, v4, s.next(events.TypeSegmentUnarchived, env, "beta", events.SegmentUnarchived{}))
	steps := []struct {
		set        *targeting.Flagset
		alice, bob string
		missing    bool
	}{
		{v1, "off", "off", true},
		{v2, "on", "off", false},
		{v3, "off", "on", false},
		{v4, "off", "off", true},
		{v5, "off", "on", false},
	}
	for i, st := range steps {
		if a, b := variantOf(st.set, "f", alice), variantOf(st.set, "f", bob); a != st.alice || b != st.bob {
			t.Errorf("step %d: alice %s bob %s, want %s %s", i+1, a, b, st.alice, st.bob)
		}
		if missing := len(st.set.MissingSegments(flagOf("f", flag))) > 0; missing != st.missing {
			t.Errorf("step %d: missing %v", i+1, missing)
		}
		if e := st.set.Evaluate("other", nil); e.Version != 1 || e.Reason != targeting.ReasonDefault {
			t.Errorf("step %d: other flag %+v", i+1, e)
		}
	}
	if segs := v4.Segments(); len(segs) != 1 || !segs[0].Archived || segs[0].Version != 3 {
		t.Errorf("segments %+v", segs)
	}
	// A segment event that does not fold changes nothing.
	bad := s.next(events.TypeSegmentUpdated, env, "beta", events.SegmentUpdated{})
	bad.Version = 99
	if got, err := v5.Apply(bad); !errors.Is(err, projections.ErrOutOfOrder) || variantOf(got, "f", bob) != "on" {
		t.Errorf("%v", err)
	}
}

// TestFlagsetApplyAll: a batch gives the set that applying its events one by one gives, bad
// events included, and says which events it refused.
func TestFlagsetApplyAll(t *testing.T) {
	s := newStream(t)
	var evs []events.Event
	for i := range 30 {
		key := fmt.Sprintf("f%d", i%7)
		switch {
		case i < 7:
			evs = append(evs, s.next(events.TypeFlagCreated, env, key, events.FlagCreated{Flag: targeted(cond("targetingKey", "inSegment", "beta"))}))
		case i == 9:
			evs = append(evs, s.next(events.TypeSegmentCreated, env, "beta", events.SegmentCreated{Segment: events.SegmentConfig{Included: []string{"alice"}}}))
		case i == 20:
			evs = append(evs, s.next(events.TypeSegmentUpdated, env, "beta", events.SegmentUpdated{Segment: events.SegmentConfig{Included: []string{"bob"}}}))
		case i%3 == 0:
			evs = append(evs, s.next(events.TypeFlagKilled, env, key, events.FlagKilled{}))
		case i%3 == 1:
			evs = append(evs, s.next(events.TypeFlagEnabled, env, key, events.FlagEnabled{}))
		default:
			evs = append(evs, s.next(events.TypeFlagUpdated, env, key, events.FlagUpdated{Flag: targeted(cond("targetingKey", "inSegment", "beta"))}))
		}
	}
	bad := s.next(events.TypeFlagEnabled, env, "f1", events.FlagEnabled{})
	bad.Version = 99
	evs = append(evs, bad, s.next(events.TypeFlagKilled, env, "f2", events.FlagKilled{}))

	one := targeting.NewFlagset(env)
	var oneErrs int
	for _, ev := range evs {
		var err error
		if one, err = one.Apply(ev); err != nil {
			oneErrs++
		}
	}
	all, err := targeting.NewFlagset(env).ApplyAll(evs)
	if oneErrs != 1 || !errors.Is(err, projections.ErrOutOfOrder) || !strings.Contains(err.Error(), fmt.Sprintf("sequence %d", bad.Sequence)) {
		t.Fatalf("one by one: %d errors; batch: %v", oneErrs, err)
	}
	if all.Sequence() != one.Sequence() || all.Sequence() != s.seq {
		t.Errorf("sequence %d, one by one %d", all.Sequence(), one.Sequence())
	}
	for _, ctx := range []*targeting.EvalContext{{TargetingKey: "alice"}, {TargetingKey: "bob"}, nil} {
		for _, key := range one.Keys() {
			a, b := all.Evaluate(key, ctx), one.Evaluate(key, ctx)
			if variantOf(all, key, ctx) != variantOf(one, key, ctx) || a.Reason != b.Reason || a.Version != b.Version {
				t.Errorf("%s: batch %+v, one by one %+v", key, a, b)
			}
		}
	}
	if !slices.Equal(all.Keys(), one.Keys()) {
		t.Errorf("keys %v, %v", all.Keys(), one.Keys())
	}
	// Nothing new: the same set.
	if again, err := all.ApplyAll(evs[:10]); again != all || err != nil {
		t.Errorf("%v %v", again, err)
	}
}
