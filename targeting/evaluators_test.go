package targeting_test

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/interlock-dev/interlock/events"
	"github.com/interlock-dev/interlock/projections"
	"github.com/interlock-dev/interlock/targeting"
)

// catalogApply applies events to c and fails the test on an error.
func catalogApply(t testing.TB, c *projections.Catalog, evs ...events.Event) {
	t.Helper()
	for _, ev := range evs {
		if err := c.Apply(ev); err != nil {
			t.Fatal(err)
		}
	}
}

// signalled reports whether ch holds a signal, without waiting: the observer runs inside
// Catalog.Apply, so a change has signalled by the time Apply returns.
func signalled(ch <-chan struct{}) bool {
	select {
	case _, ok := <-ch:
		return ok
	default:
		return false
	}
}

func TestEvaluatorsFollowTheCatalog(t *testing.T) {
	c := projections.NewCatalog()
	e := targeting.NewEvaluators(c)
	s := newStream(t)

	if set := e.Flagset(env); set == nil || set.Environment() != env || len(set.Keys()) != 0 {
		t.Fatalf("an environment without flags: %v", set)
	}
	catalogApply(t, c,
		s.next(events.TypeSegmentCreated, env, "beta", events.SegmentCreated{Segment: events.SegmentConfig{Included: []string{"alice"}}}),
		s.next(events.TypeFlagCreated, env, "f", events.FlagCreated{Flag: targeted(cond("targetingKey", "inSegment", "beta"))}),
		s.next(events.TypeFlagCreated, "staging", "f", events.FlagCreated{Flag: boolConfig()}),
	)
	alice := &targeting.EvalContext{TargetingKey: "alice"}
	set := e.Flagset(env)
	if got := variantOf(set, "f", alice); got != "on" || set.Sequence() != 2 {
		t.Errorf("production: %s at %d", got, set.Sequence())
	}
	if got := variantOf(e.Flagset("staging"), "f", nil); got != "on" {
		t.Errorf("staging: %s", got)
	}
	if e.Flagset(env) != set {
		t.Error("a read without changes publishes nothing new")
	}

	catalogApply(t, c, s.next(events.TypeSegmentUpdated, env, "beta", events.SegmentUpdated{Segment: events.SegmentConfig{Included: []string{"bob"}}}))
	next := e.Flagset(env)
	if got := variantOf(next, "f", alice); got != "off" || next.Sequence() != 4 {
		t.Errorf("after the segment changed: %s at %d", got, next.Sequence())
	}
	if got := variantOf(set, "f", alice); got != "on" {
		t.Errorf("the set read before the change changed: %s", got)
	}
	catalogApply(t, c, s.next(events.TypeFlagKilled, env, "f", events.FlagKilled{}))
	if e := e.Flagset(env).Evaluate("f", alice); e.Reason != targeting.ReasonDisabled || e.Version != 2 {
		t.Errorf("after the kill: %+v", e)
	}
}

// TestEvaluatorsStartFromTheCatalog: evaluators made after the catalog was filled compile what it
// holds, segments included, on first use.
func TestEvaluatorsStartFromTheCatalog(t *testing.T) {
	c := projections.NewCatalog()
	s := newStream(t)
	catalogApply(t, c,
		s.next(events.TypeSegmentCreated, env, "beta", events.SegmentCreated{Segment: events.SegmentConfig{Included: []string{"alice"}}}),
		s.next(events.TypeFlagCreated, env, "f", events.FlagCreated{Flag: targeted(cond("targetingKey", "inSegment", "beta"))}),
	)
	e := targeting.NewEvaluators(c)
	if got := variantOf(e.Flagset(env), "f", &targeting.EvalContext{TargetingKey: "alice"}); got != "on" {
		t.Errorf("%s", got)
	}
	catalogApply(t, c, s.next(events.TypeFlagArchived, env, "f", events.FlagArchived{}))
	if got := variantOf(e.Flagset(env), "f", nil); got != "FLAG_NOT_FOUND" {
		t.Errorf("after archiving: %s", got)
	}
}

func TestEvaluatorsWatch(t *testing.T) {
	c := projections.NewCatalog()
	e := targeting.NewEvaluators(c)
	s := newStream(t)

	// Watching an environment before it has anything.
	ch, stop := e.Watch(env)
	other, stopOther := e.Watch("staging")
	defer stopOther()
	if signalled(ch) {
		t.Fatal("signalled before any change")
	}
	catalogApply(t, c, s.next(events.TypeFlagCreated, env, "f", events.FlagCreated{Flag: boolConfig()}))
	if !signalled(ch) {
		t.Fatal("no signal after the first change")
	}
	if got := variantOf(e.Flagset(env), "f", nil); got != "on" {
		t.Errorf("%s", got)
	}
	// Many changes, one signal: they coalesce.
	for range 5 {
		catalogApply(t, c, s.next(events.TypeFlagKilled, env, "f", events.FlagKilled{}), s.next(events.TypeFlagEnabled, env, "f", events.FlagEnabled{}))
	}
	if len(ch) != 1 || !signalled(ch) || signalled(ch) {
		t.Error("changes do not coalesce into one signal")
	}
	if signalled(other) {
		t.Error("another environment was signalled")
	}
	if got := e.Flagset(env).Evaluate("f", nil).Version; got != 11 {
		t.Errorf("version %d after the burst, want 11", got)
	}
	// Two watchers of one environment are both signalled.
	ch2, stop2 := e.Watch(env)
	catalogApply(t, c, s.next(events.TypeFlagKilled, env, "f", events.FlagKilled{}))
	if !signalled(ch) || !signalled(ch2) {
		t.Error("not every watcher was signalled")
	}
	stop2()
	stop()
	stop() // stopping twice is harmless
	if _, ok := <-ch; ok {
		t.Error("the channel is not closed after stop")
	}
	catalogApply(t, c, s.next(events.TypeFlagEnabled, env, "f", events.FlagEnabled{}))
	if _, ok := <-ch2; ok {
		t.Error("a stopped watcher was signalled")
	}
}

func TestEvaluatorsWaitSequence(t *testing.T) {
	c := projections.NewCatalog()
	e := targeting.NewEvaluators(c)
	s := newStream(t)
	evs := []events.Event{
		s.next(events.TypeFlagCreated, env, "f", events.FlagCreated{Flag: boolConfig()}),
		s.next(events.TypeFlagKilled, env, "f", events.FlagKilled{}),
	}
	done := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		done <- e.WaitSequence(ctx, 2)
	}()
	applied := make(chan error, 1)
	go func() {
		for _, ev := range evs {
			if err := c.Apply(ev); err != nil {
				applied <- err
				return
			}
		}
		applied <- nil
	}()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if err := <-applied; err != nil {
		t.Fatal(err)
	}
	// Read-your-writes: once WaitSequence returns, the evaluators hold the kill.
	if got := e.Flagset(env).Evaluate("f", nil).Reason; got != targeting.ReasonDisabled {
		t.Errorf("%s after WaitSequence", got)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := e.WaitSequence(ctx, 3); err != context.Canceled {
		t.Errorf("%v, want context.Canceled", err)
	}
}

// pairConfig is a string flag whose two variants change together: both hold "v<i>". A reader
// that sees them differ saw half a change.
func pairConfig(i int) events.FlagConfig {
	v, _ := json.Marshal(fmt.Sprintf("v%d", i))
	cfg := events.FlagConfig{Kind: events.KindConfig, Variants: map[string]json.RawMessage{"on": v, "off": v}, DefaultVariant: "off", OffVariant: "off", Enabled: true}
	cfg.Rules = []events.Rule{{Conditions: []events.Condition{cond("targetingKey", "inSegment", "beta")}, Serve: events.Serve{Variant: "on"}}}
	return cfg
}

// TestEvaluatorsConcurrentReaders runs readers against the evaluators while the catalog folds
// changes, under the race detector: they never block, never see half a change, and never see
// versions go backwards.
func TestEvaluatorsConcurrentReaders(t *testing.T) {
	const changes = 1000
	c := projections.NewCatalog()
	e := targeting.NewEvaluators(c)
	s := newStream(t)
	catalogApply(t, c,
		s.next(events.TypeSegmentCreated, env, "beta", events.SegmentCreated{Segment: events.SegmentConfig{Included: []string{"alice"}}}),
		s.next(events.TypeFlagCreated, env, "pair", events.FlagCreated{Flag: pairConfig(0)}),
	)
	alice, bob := &targeting.EvalContext{TargetingKey: "alice"}, &targeting.EvalContext{TargetingKey: "bob"}

	var stop atomic.Bool
	var wg sync.WaitGroup
	var reads atomic.Int64
	errs := make(chan error, 8)
	for range 4 {
		wg.Go(func() {
			var last uint64
			for !stop.Load() {
				set := e.Flagset(env)
				a, b := set.Evaluate("pair", alice), set.Evaluate("pair", bob)
				if a.Variant == nil || b.Variant == nil {
					errs <- fmt.Errorf("no variant: %+v %+v", a, b)
					return
				}
				if a.Variant.Name != "on" || b.Variant.Name != "off" || a.Variant.String != b.Variant.String || a.Version != b.Version {
					errs <- fmt.Errorf("half a change: %s=%s v%d, %s=%s v%d", a.Variant.Name, a.Variant.String, a.Version, b.Variant.Name, b.Variant.String, b.Version)
					return
				}
				if a.Version < last {
					errs <- fmt.Errorf("version %d after %d", a.Version, last)
					return
				}
				last = a.Version
				reads.Add(1)
			}
		})
	}
	ch, unwatch := e.Watch(env)
	wg.Go(func() {
		for range ch {
			_ = e.Flagset(env).Keys()
		}
	})
	for i := 1; i <= changes; i++ {
		catalogApply(t, c, s.next(events.TypeFlagUpdated, env, "pair", events.FlagUpdated{Flag: pairConfig(i)}))
		if i%100 == 0 {
			// Segment changes recompile the flag too; alice stays in.
			catalogApply(t, c, s.next(events.TypeSegmentUpdated, env, "beta", events.SegmentUpdated{Segment: events.SegmentConfig{Included: []string{"alice", fmt.Sprintf("u%d", i)}}}))
		}
	}
	stop.Store(true)
	unwatch()
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if got := e.Flagset(env).Evaluate("pair", alice); got.Variant.String != fmt.Sprintf("v%d", changes) || got.Version != changes+1 {
		t.Errorf("final %+v %s", got, got.Variant.String)
	}
	t.Logf("%d consistent reads during %d changes", reads.Load(), changes)
}

// TestFlagsetApplyConcurrentReaders: the same guarantee for a chain of Flagset.Apply swapped
// into an atomic pointer, as an in-process subscriber holds it.
func TestFlagsetApplyConcurrentReaders(t *testing.T) {
	const changes = 500
	s := newStream(t)
	var cur atomic.Pointer[targeting.Flagset]
	set := targeting.NewFlagset(env)
	set = mustApply(t, set, s.next(events.TypeSegmentCreated, env, "beta", events.SegmentCreated{Segment: events.SegmentConfig{Included: []string{"alice"}}}))
	set = mustApply(t, set, s.next(events.TypeFlagCreated, env, "pair", events.FlagCreated{Flag: pairConfig(0)}))
	cur.Store(set)
	alice, bob := &targeting.EvalContext{TargetingKey: "alice"}, &targeting.EvalContext{TargetingKey: "bob"}
	var stop atomic.Bool
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	for range 2 {
		wg.Go(func() {
			for !stop.Load() {
				set := cur.Load()
				a, b := set.Evaluate("pair", alice), set.Evaluate("pair", bob)
				if a.Variant.String != b.Variant.String || a.Variant.Name != "on" {
					errs <- fmt.Errorf("half a change: %s %s", a.Variant.String, b.Variant.String)
					return
				}
			}
		})
	}
	for i := 1; i <= changes; i++ {
		set = mustApply(t, set, s.next(events.TypeFlagUpdated, env, "pair", events.FlagUpdated{Flag: pairConfig(i)}))
		cur.Store(set)
	}
	stop.Store(true)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}
