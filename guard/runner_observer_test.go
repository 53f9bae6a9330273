package guard_test

import (
	"testing"
	"time"

	"github.com/interlock-dev/interlock/events"
	"github.com/interlock-dev/interlock/guard"
)

// observed records what a runner's observer is told.
type observed struct {
	ticks     int
	decisions []string
	acts      []string
	failed    int
	waits     []time.Duration
}

func (o *observed) Ticked(time.Duration)  { o.ticks++ }
func (o *observed) Decided(action string) { o.decisions = append(o.decisions, action) }
func (o *observed) Acted(kind string, since time.Duration, err error) {
	if err != nil {
		o.failed++
		return
	}
	o.acts = append(o.acts, kind)
	o.waits = append(o.waits, since)
}

// TestRunnerObserverAndCensus: the observer hears of every pass, the trip decision and the kill
// that carries it out; the census counts the rollout as TRIPPED.
func TestRunnerObserverAndCensus(t *testing.T) {
	w := newWorld(t)
	o := &observed{}
	var err error
	w.guard, err = guard.NewRunner(guard.RunnerOptions{
		Catalog: w.cat, Commands: w.svc, Now: func() time.Time { return w.now }, Observer: o,
	})
	if err != nil {
		t.Fatal(err)
	}
	w.createFlag("search")
	w.startRollout("search", w.plan(events.OnTripKill))
	for range 3 {
		w.traffic("search", 4000, 0.01, 0.01)
		w.tick()
	}
	if c := w.guard.Census(); c.States[guard.StateTripped] != 0 || len(c.States) == 0 {
		t.Fatalf("census before the spike: %+v", c)
	}
	ticks := 3
	for ; ticks < 40 && w.flag("search").Enabled; ticks++ {
		w.traffic("search", 4000, 0.20, 0.01)
		w.tick()
	}
	if w.flag("search").Enabled {
		t.Fatal("the spike did not kill the flag")
	}
	w.tick()
	ticks++
	if o.ticks != ticks {
		t.Errorf("%d passes observed, want %d", o.ticks, ticks)
	}
	if n := len(o.decisions); n == 0 || o.decisions[n-1] != string(guard.ActionKill) {
		t.Errorf("decisions %v, want the last to be kill", o.decisions)
	}
	if len(o.acts) != 1 || o.acts[0] != "kill" || o.failed != 0 {
		t.Errorf("acts %v (%d failed), want one kill", o.acts, o.failed)
	}
	if c := w.guard.Census(); c.States[guard.StateTripped] != 1 || c.BlindOverGrace != 0 {
		t.Errorf("census after the trip: %+v, want one TRIPPED", c)
	}
}

// TestCensusCountsBlindPastGrace: a rollout whose metrics never arrive is BLIND, and past its
// grace (2 minutes by default) counted as such.
func TestCensusCountsBlindPastGrace(t *testing.T) {
	w := newWorld(t)
	w.createFlag("search")
	w.startRollout("search", w.plan(events.OnTripKill))
	w.tick()
	if c := w.guard.Census(); c.States[guard.StateBlind] != 1 || c.BlindOverGrace != 0 {
		t.Fatalf("census at the first tick: %+v, want one BLIND within its grace", c)
	}
	for range 10 { // 150 s of 15 s ticks
		w.tick()
	}
	if c := w.guard.Census(); c.States[guard.StateBlind] != 1 || c.BlindOverGrace != 1 {
		t.Fatalf("census after 150 s: %+v, want one BLIND past its grace", c)
	}
}
