package projections_test

import (
	"encoding/json"
	"fmt"
	"math"
	"reflect"
	"testing"
	"time"

	"github.com/interlock-dev/interlock/events"
	"github.com/interlock-dev/interlock/projections"
	"github.com/interlock-dev/interlock/targeting"
)

// history builds the events of one flag of env, a minute apart from t0, each with its stream
// sequence (the flag is alone in its stream).
type history struct {
	t   testing.TB
	key string
	evs []events.Event
}

func newHistory(t testing.TB, key string, cfg events.FlagConfig) *history {
	h := &history{t: t, key: key}
	h.add(events.TypeFlagCreated, events.FlagCreated{Flag: cfg})
	return h
}

// add appends the next event of the flag and returns it.
func (h *history) add(typ string, payload any) events.Event {
	h.t.Helper()
	n := uint64(len(h.evs)) + 1
	ev := event(h.t, typ, env, h.key, n, payload)
	ev.Time = t0.Add(time.Duration(n-1) * time.Minute)
	ev.Sequence = n
	h.evs = append(h.evs, ev)
	return ev
}

// next is the event add would append, without appending it.
func (h *history) next(typ string, payload any) events.Event {
	h.t.Helper()
	ev := h.add(typ, payload)
	h.evs = h.evs[:len(h.evs)-1]
	return ev
}

func (h *history) fold() projections.Flag {
	h.t.Helper()
	f, err := projections.Fold(h.evs)
	if err != nil {
		h.t.Fatal(err)
	}
	return f
}

// rampConfig is a string flag with a control and a treatment, serving the control by default.
func rampConfig() events.FlagConfig {
	cfg := stringConfig(map[string]string{"control": "old", "treatment": "new"}, "control")
	cfg.Enabled = true
	return cfg
}

func rampPlan() events.RolloutPlan {
	return events.RolloutPlan{
		Treatment: "treatment", Control: "control",
		Metrics: []events.RolloutMetric{{Name: "errors", Requests: "requests_total", Errors: "errors_total"}},
		Source:  events.MetricSource{Type: events.SourceScrape, URL: "http://app/metrics"},
	}
}

func stageServe(pct float64) events.Serve { return events.StageServe("treatment", "control", pct) }

// snapshot is f as JSON, plus the fields JSON leaves out: a deep copy to compare with later.
func snapshot(t testing.TB, f projections.Flag) string {
	t.Helper()
	b, err := json.Marshal(f)
	if err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("%s seq=%d", b, f.Sequence)
}

func TestRolloutFold(t *testing.T) {
	h := newHistory(t, "ramp", rampConfig())
	plan := rampPlan()
	created := h.add(events.TypeRolloutCreated, events.RolloutCreated{ID: "r1", Plan: plan})
	f := h.fold()
	r := f.Rollout
	switch {
	case r == nil:
		t.Fatal("no rollout")
	case r.ID != "r1" || r.Status != projections.RolloutCreated || r.Stage != 0 || r.Active() || r.Finished():
		t.Fatalf("created: %+v", r)
	case !r.CreatedAt.Equal(created.Time) || r.CreatedBy != "alice":
		t.Fatalf("created at/by: %+v", r)
	case !reflect.DeepEqual(r.Plan, plan.WithDefaults()):
		t.Fatalf("plan without defaults: %+v", r.Plan)
	case f.DefaultServe != nil:
		t.Fatalf("a created rollout serves %+v", f.DefaultServe)
	}

	type want struct {
		status       string
		stage        int
		serve        events.Serve
		stageVersion uint64 // 0: unchanged from the step before
	}
	steps := []struct {
		name    string
		typ     string
		payload any
		want    want
	}{
		{"start", events.TypeRolloutStarted, events.RolloutStarted{ID: "r1", Stage: 0, Serve: stageServe(1)},
			want{projections.RolloutRunning, 0, stageServe(1), 3}},
		{"advance", events.TypeRolloutAdvanced, events.RolloutAdvanced{ID: "r1", From: 0, To: 1, Serve: stageServe(5)},
			want{projections.RolloutRunning, 1, stageServe(5), 4}},
		{"advance again", events.TypeRolloutAdvanced, events.RolloutAdvanced{ID: "r1", From: 1, To: 2, Serve: stageServe(25)},
			want{projections.RolloutRunning, 2, stageServe(25), 5}},
		{"step back", events.TypeRolloutSteppedBack, events.RolloutSteppedBack{ID: "r1", From: 2, To: 1, Serve: stageServe(5)},
			want{projections.RolloutRunning, 1, stageServe(5), 6}},
		{"pause", events.TypeRolloutPaused, events.RolloutPaused{ID: "r1"},
			want{projections.RolloutPaused, 1, stageServe(5), 0}},
		{"resume", events.TypeRolloutResumed, events.RolloutResumed{ID: "r1"},
			want{projections.RolloutRunning, 1, stageServe(5), 8}},
		{"advance to 100", events.TypeRolloutAdvanced, events.RolloutAdvanced{ID: "r1", From: 1, To: 5, Serve: stageServe(100)},
			want{projections.RolloutRunning, 5, events.Serve{Variant: "treatment"}, 9}},
		{"complete", events.TypeRolloutCompleted, events.RolloutCompleted{ID: "r1", Serve: events.Serve{Variant: "treatment"}},
			want{projections.RolloutCompleted, 5, events.Serve{Variant: "treatment"}, 0}},
	}
	prev := *f.Rollout
	for _, s := range steps {
		ev := h.add(s.typ, s.payload)
		f := h.fold()
		r := f.Rollout
		if r.Status != s.want.status || r.Stage != s.want.stage {
			t.Fatalf("%s: status %s stage %d, want %s %d", s.name, r.Status, r.Stage, s.want.status, s.want.stage)
		}
		if f.DefaultServe == nil || !reflect.DeepEqual(*f.DefaultServe, s.want.serve) {
			t.Fatalf("%s: default serve %+v, want %+v", s.name, f.DefaultServe, s.want.serve)
		}
		if s.want.stageVersion == 0 {
			if r.StageVersion != prev.StageVersion || !r.StageStartedAt.Equal(prev.StageStartedAt) {
				t.Fatalf("%s restarted the stage: %+v", s.name, r)
			}
		} else if r.StageVersion != s.want.stageVersion || r.StageVersion != ev.Version || !r.StageStartedAt.Equal(ev.Time) {
			t.Fatalf("%s: stage version %d started %v, want %d at %v", s.name, r.StageVersion, r.StageStartedAt, s.want.stageVersion, ev.Time)
		}
		if f.Version != ev.Version || f.UpdatedBy != ev.Actor {
			t.Fatalf("%s: version %d by %s", s.name, f.Version, f.UpdatedBy)
		}
		// Rollout events change nothing of the configuration but its default serve.
		cfg := f.FlagConfig
		cfg.DefaultServe = nil
		if !reflect.DeepEqual(cfg, rampConfig()) {
			t.Fatalf("%s changed the configuration: %+v", s.name, cfg)
		}
		prev = *r
	}
	f = h.fold()
	if !f.Rollout.Finished() || f.Rollout.Active() || !f.Rollout.EndedAt.Equal(h.evs[len(h.evs)-1].Time) {
		t.Fatalf("completed: %+v", f.Rollout)
	}
}

func TestRolloutFoldAbort(t *testing.T) {
	t.Run("running", func(t *testing.T) {
		h := newHistory(t, "ramp", rampConfig())
		h.add(events.TypeRolloutCreated, events.RolloutCreated{ID: "r1", Plan: rampPlan()})
		h.add(events.TypeRolloutStarted, events.RolloutStarted{ID: "r1", Serve: stageServe(1)})
		h.add(events.TypeRolloutAdvanced, events.RolloutAdvanced{ID: "r1", From: 0, To: 1, Serve: stageServe(5)})
		ev := h.add(events.TypeRolloutAborted, events.RolloutAborted{ID: "r1", Serve: events.Serve{Variant: "control"}})
		f := h.fold()
		if f.Rollout.Status != projections.RolloutAborted || !f.Rollout.Finished() || !f.Rollout.EndedAt.Equal(ev.Time) || f.Rollout.Stage != 1 {
			t.Fatalf("%+v", f.Rollout)
		}
		if !reflect.DeepEqual(f.DefaultServe, &events.Serve{Variant: "control"}) {
			t.Fatalf("aborted serves %+v", f.DefaultServe)
		}
	})
	t.Run("before it started", func(t *testing.T) {
		cfg := rampConfig()
		cfg.DefaultServe = &events.Serve{Split: map[string]int{"control": 3, "treatment": 1}}
		h := newHistory(t, "ramp", cfg)
		h.add(events.TypeRolloutCreated, events.RolloutCreated{ID: "r1", Plan: rampPlan()})
		h.add(events.TypeRolloutAborted, events.RolloutAborted{ID: "r1"})
		f := h.fold()
		if f.Rollout.Status != projections.RolloutAborted || !reflect.DeepEqual(f.DefaultServe, cfg.DefaultServe) {
			t.Fatalf("a rollout that never started changed the default serve to %+v", f.DefaultServe)
		}
	})
	t.Run("next rollout replaces a finished one", func(t *testing.T) {
		h := newHistory(t, "ramp", rampConfig())
		h.add(events.TypeRolloutCreated, events.RolloutCreated{ID: "r1", Plan: rampPlan()})
		h.add(events.TypeRolloutStarted, events.RolloutStarted{ID: "r1", Serve: stageServe(1)})
		h.add(events.TypeGuardDecided, events.GuardDecided{Rollout: "r1", StateAfter: "TRIPPED", Action: "kill"})
		h.add(events.TypeRolloutAborted, events.RolloutAborted{ID: "r1", Serve: events.Serve{Variant: "control"}})
		h.add(events.TypeRolloutCreated, events.RolloutCreated{ID: "r2", Plan: rampPlan()})
		f := h.fold()
		if f.Rollout.ID != "r2" || f.Rollout.Status != projections.RolloutCreated || f.Rollout.Guard != (projections.GuardStatus{}) {
			t.Fatalf("%+v", f.Rollout)
		}
		// Events of the old rollout change nothing now but the version.
		g := f
		if err := g.Apply(h.next(events.TypeRolloutStarted, events.RolloutStarted{ID: "r1", Serve: stageServe(1)})); err != nil {
			t.Fatalf("old rollout's start: %v", err)
		}
		if g.Version != f.Version+1 || !reflect.DeepEqual(g.Rollout, f.Rollout) || !reflect.DeepEqual(g.FlagConfig, f.FlagConfig) {
			t.Fatalf("old rollout's start changed the flag: %+v", g.Rollout)
		}
	})
}

func TestGuardFold(t *testing.T) {
	h := newHistory(t, "ramp", rampConfig())
	h.add(events.TypeRolloutCreated, events.RolloutCreated{ID: "r1", Plan: rampPlan()})
	h.add(events.TypeRolloutStarted, events.RolloutStarted{ID: "r1", Serve: stageServe(1)})
	h.add(events.TypeRolloutAdvanced, events.RolloutAdvanced{ID: "r1", From: 0, To: 1, Serve: stageServe(5)})
	for _, s := range []struct {
		before, after, action string
		tripped               bool
	}{
		{"WARMUP", "HEALTHY", "none", false},
		{"HEALTHY", "READY", "advance", false},
		{"READY", "TRIPPED", "stepBack", true},
		{"TRIPPED", "HEALTHY", "none", true}, // latched until re-armed
		{"HEALTHY", "BLIND", "none", true},
	} {
		ev := h.add(events.TypeGuardDecided, events.GuardDecided{Rollout: "r1", Stage: 1, StateBefore: s.before, StateAfter: s.after,
			Action: s.action, Cause: "because", Evidence: json.RawMessage(`{"e":1}`)})
		g := h.fold().Rollout.Guard
		want := projections.GuardStatus{State: s.after, Tripped: s.tripped, Action: s.action, Cause: "because", Decision: ev.ID, Stage: 1, At: ev.Time}
		if g != want {
			t.Fatalf("after %s: %+v, want %+v", s.after, g, want)
		}
	}
	before := h.fold().Rollout
	ev := h.add(events.TypeGuardRearmed, events.GuardRearmed{Rollout: "r1", Stage: 1})
	f := h.fold()
	g := f.Rollout.Guard
	if g.Tripped || g.State != "WARMUP" || g.Decision != ev.ID || g.Stage != 1 || !g.At.Equal(ev.Time) {
		t.Fatalf("re-armed: %+v", g)
	}
	if f.Rollout.StageVersion != ev.Version || !f.Rollout.StageStartedAt.Equal(ev.Time) || f.Rollout.Stage != 1 {
		t.Fatalf("a re-arm restarts the stage: %+v", f.Rollout)
	}
	if !reflect.DeepEqual(f.DefaultServe, &events.Serve{Split: map[string]int{"treatment": 500, "control": 9500}}) || before.Status != f.Rollout.Status {
		t.Fatalf("a re-arm changed the split or the status: %+v %+v", f.DefaultServe, f.Rollout)
	}
}

// A change of the flag's configuration during an active rollout restarts its stage; outside one
// it leaves the rollout alone.
func TestRolloutStageRestartsOnConfigChange(t *testing.T) {
	h := newHistory(t, "ramp", rampConfig())
	h.add(events.TypeRolloutCreated, events.RolloutCreated{ID: "r1", Plan: rampPlan()})
	// Not active yet: the update leaves the rollout as created.
	cfg := rampConfig()
	cfg.Description = "before the start"
	h.add(events.TypeFlagUpdated, events.FlagUpdated{Flag: cfg})
	if r := h.fold().Rollout; r.StageVersion != 0 || !r.StageStartedAt.IsZero() {
		t.Fatalf("update before the start: %+v", r)
	}
	h.add(events.TypeRolloutStarted, events.RolloutStarted{ID: "r1", Serve: stageServe(1)})
	cfg = rampConfig()
	cfg.Description = "during the rollout"
	cfg.DefaultServe = ptr(stageServe(1))
	up := h.add(events.TypeFlagUpdated, events.FlagUpdated{Flag: cfg})
	f := h.fold()
	if f.Rollout.StageVersion != up.Version || !f.Rollout.StageStartedAt.Equal(up.Time) || f.Rollout.Stage != 0 || f.Description != "during the rollout" {
		t.Fatalf("update during the rollout: %+v", f.Rollout)
	}
	h.add(events.TypeRolloutPaused, events.RolloutPaused{ID: "r1"})
	cfg.Description = "while paused"
	up = h.add(events.TypeFlagRestored, events.FlagRestored{FromVersion: 2, Flag: cfg})
	if r := h.fold().Rollout; r.StageVersion != up.Version || r.Status != projections.RolloutPaused {
		t.Fatalf("restore while paused: %+v", r)
	}
	// Enabling, killing, archiving: no new configuration, no restart.
	for _, typ := range []string{events.TypeFlagKilled, events.TypeFlagEnabled} {
		h.add(typ, struct{}{})
		if r := h.fold().Rollout; r.StageVersion != up.Version {
			t.Fatalf("%s restarted the stage: %+v", typ, r)
		}
	}
	h.add(events.TypeRolloutAborted, events.RolloutAborted{ID: "r1", Serve: events.Serve{Variant: "control"}})
	before := h.fold().Rollout
	cfg.Description = "after"
	h.add(events.TypeFlagUpdated, events.FlagUpdated{Flag: cfg})
	if r := h.fold().Rollout; !reflect.DeepEqual(r, before) {
		t.Fatalf("update after the end changed the rollout: %+v", r)
	}
}

func ptr[T any](v T) *T { return &v }

// Events of a rollout the flag does not have change nothing but the version, so that one such
// event in the stream cannot stop the flag's later events from applying.
func TestRolloutFoldIgnoresOtherRollouts(t *testing.T) {
	fresh := newHistory(t, "ramp", rampConfig())
	h := newHistory(t, "ramp", rampConfig())
	h.add(events.TypeRolloutCreated, events.RolloutCreated{ID: "r1", Plan: rampPlan()})
	h.add(events.TypeRolloutStarted, events.RolloutStarted{ID: "r1", Serve: stageServe(1)})
	for _, tc := range []struct {
		typ     string
		payload any
	}{
		{events.TypeRolloutStarted, events.RolloutStarted{ID: "r2", Serve: stageServe(5)}},
		{events.TypeRolloutPaused, events.RolloutPaused{ID: "r2"}},
		{events.TypeRolloutResumed, events.RolloutResumed{ID: "r2"}},
		{events.TypeRolloutAdvanced, events.RolloutAdvanced{ID: "r2", From: 0, To: 1, Serve: stageServe(5)}},
		{events.TypeRolloutSteppedBack, events.RolloutSteppedBack{ID: "r2", From: 1, To: 0, Serve: stageServe(1)}},
		{events.TypeRolloutCompleted, events.RolloutCompleted{ID: "r2", Serve: events.Serve{Variant: "treatment"}}},
		{events.TypeRolloutAborted, events.RolloutAborted{ID: "r2", Serve: events.Serve{Variant: "control"}}},
		{events.TypeRolloutAborted, events.RolloutAborted{ID: "", Serve: events.Serve{Variant: "control"}}},
		{events.TypeGuardDecided, events.GuardDecided{Rollout: "r2", StateAfter: "TRIPPED", Action: "kill"}},
		{events.TypeGuardRearmed, events.GuardRearmed{Rollout: "r2"}},
	} {
		t.Run(tc.typ, func(t *testing.T) {
			for name, hist := range map[string]*history{"other rollout": h, "no rollout": fresh} {
				f := hist.fold()
				before := f
				if err := f.Apply(hist.next(tc.typ, tc.payload)); err != nil {
					t.Fatalf("%s: %v", name, err)
				}
				if f.Version != before.Version+1 || !reflect.DeepEqual(f.Rollout, before.Rollout) ||
					!reflect.DeepEqual(f.FlagConfig, before.FlagConfig) || !reflect.DeepEqual(f.Valve, before.Valve) {
					t.Fatalf("%s: an event of another rollout changed the flag: %+v", name, f.Rollout)
				}
			}
		})
	}
	// Closing a valve that was never configured changes nothing either.
	f := fresh.fold()
	if err := f.Apply(fresh.next(events.TypeValveClosed, events.ValveClosed{Cause: events.ValveClosedManual})); err != nil {
		t.Fatalf("close of no valve: %v", err)
	}
	if f.Valve != nil {
		t.Fatal("closing no valve made one")
	}
}

// Apply replaces what it changes: a copy of a flag taken before does not see later events.
func TestRolloutFoldDoesNotMutateCopies(t *testing.T) {
	h := newHistory(t, "ramp", rampConfig())
	h.add(events.TypeValveConfigured, events.ValveConfigured{Variant: "control", Segment: "beta"})
	h.add(events.TypeRolloutCreated, events.RolloutCreated{ID: "r1", Plan: rampPlan()})
	h.add(events.TypeRolloutStarted, events.RolloutStarted{ID: "r1", Serve: stageServe(1)})
	cfg := rampConfig()
	cfg.DefaultServe = ptr(stageServe(1))
	for _, tc := range []struct {
		typ     string
		payload any
	}{
		{events.TypeRolloutAdvanced, events.RolloutAdvanced{ID: "r1", From: 0, To: 1, Serve: stageServe(5)}},
		{events.TypeRolloutSteppedBack, events.RolloutSteppedBack{ID: "r1", From: 1, To: 0, Serve: stageServe(1)}},
		{events.TypeRolloutPaused, events.RolloutPaused{ID: "r1"}},
		{events.TypeRolloutResumed, events.RolloutResumed{ID: "r1"}},
		{events.TypeGuardDecided, events.GuardDecided{Rollout: "r1", StateAfter: "TRIPPED", Action: "freeze"}},
		{events.TypeGuardRearmed, events.GuardRearmed{Rollout: "r1"}},
		{events.TypeFlagUpdated, events.FlagUpdated{Flag: cfg}},
		{events.TypeValveOpened, events.ValveOpened{Variant: "control", Segment: "beta"}},
		{events.TypeValveConfigured, events.ValveConfigured{Variant: "treatment"}},
		{events.TypeValveClosed, events.ValveClosed{Cause: events.ValveClosedManual}},
		{events.TypeRolloutCompleted, events.RolloutCompleted{ID: "r1", Serve: events.Serve{Variant: "treatment"}}},
		{events.TypeRolloutCreated, events.RolloutCreated{ID: "r2", Plan: rampPlan()}},
		{events.TypeRolloutAborted, events.RolloutAborted{ID: "r2"}},
	} {
		f := h.fold()
		copyOf := f
		want := snapshot(t, copyOf)
		rollout, valve, served := f.Rollout, f.Valve, f.DefaultServe
		ev := h.add(tc.typ, tc.payload)
		if err := f.Apply(ev); err != nil {
			t.Fatalf("%s: %v", tc.typ, err)
		}
		if got := snapshot(t, copyOf); got != want {
			t.Fatalf("%s changed a copy:\n got %s\nwant %s", tc.typ, got, want)
		}
		if rollout != nil && f.Rollout == rollout && !reflect.DeepEqual(*f.Rollout, *rollout) {
			t.Fatalf("%s changed the rollout in place", tc.typ)
		}
		if valve != nil && f.Valve == valve && !reflect.DeepEqual(*f.Valve, *valve) {
			t.Fatalf("%s changed the valve in place", tc.typ)
		}
		if served != nil && f.DefaultServe == served && !reflect.DeepEqual(*f.DefaultServe, *served) {
			t.Fatalf("%s changed the default serve in place", tc.typ)
		}
	}
	// The fold of the whole history is what the step-by-step applies gave.
	if _, err := projections.Fold(h.evs); err != nil {
		t.Fatal(err)
	}
}

func TestValveFold(t *testing.T) {
	cfg := rampConfig()
	cfg.Kind = events.KindOperational
	h := newHistory(t, "search", cfg)
	policy := &events.ValvePolicy{Source: events.MetricSource{Type: events.SourceScrape, URL: "http://s/metrics"}, Requests: "r", Errors: "e"}
	h.add(events.TypeValveConfigured, events.ValveConfigured{Variant: "control", Policy: policy})
	f := h.fold()
	if f.Valve == nil || f.Valve.Open || f.Valve.Variant != "control" || f.Valve.Segment != "" || !reflect.DeepEqual(f.Valve.Policy, policy) {
		t.Fatalf("configured: %+v", f.Valve)
	}
	if f.Rollout != nil {
		t.Fatalf("a valve event made a rollout: %+v", f.Rollout)
	}
	expires := t0.Add(time.Hour)
	opened := h.add(events.TypeValveOpened, events.ValveOpened{Variant: "control", Expires: expires, Rollout: "r9"})
	f = h.fold()
	want := projections.Valve{Variant: "control", Policy: policy, Open: true, OpenedAt: opened.Time, OpenedBy: "alice", Reason: "test", Expires: expires, Rollout: "r9"}
	if !reflect.DeepEqual(*f.Valve, want) {
		t.Fatalf("opened:\n got %+v\nwant %+v", *f.Valve, want)
	}
	closed := h.add(events.TypeValveClosed, events.ValveClosed{Cause: events.ValveClosedExpired})
	f = h.fold()
	want.Open, want.ClosedAt, want.Cause = false, closed.Time, events.ValveClosedExpired
	if !reflect.DeepEqual(*f.Valve, want) {
		t.Fatalf("closed:\n got %+v\nwant %+v", *f.Valve, want)
	}
	// Reconfigured: the policy and the variant change, the history of openings stays.
	h.add(events.TypeValveConfigured, events.ValveConfigured{Variant: "treatment", Segment: "beta"})
	f = h.fold()
	want.Variant, want.Segment, want.Policy = "treatment", "beta", nil
	if !reflect.DeepEqual(*f.Valve, want) {
		t.Fatalf("reconfigured:\n got %+v\nwant %+v", *f.Valve, want)
	}
	// The configuration itself never changes.
	if !reflect.DeepEqual(f.FlagConfig, cfg) {
		t.Fatalf("valve events changed the configuration: %+v", f.FlagConfig)
	}
}

// The JSON of a flag is what snapshots carry to clients: a rollout and a valve survive it.
func TestRolloutFlagJSONRoundTrip(t *testing.T) {
	h := newHistory(t, "ramp", rampConfig())
	plan := rampPlan()
	plan.Stages = []events.Stage{{Percent: 0.5, MinHold: events.Duration(time.Minute)}, {Percent: 100}}
	h.add(events.TypeRolloutCreated, events.RolloutCreated{ID: "r1", Plan: plan})
	h.add(events.TypeRolloutStarted, events.RolloutStarted{ID: "r1", Serve: events.StageServe("treatment", "control", 0.5)})
	h.add(events.TypeGuardDecided, events.GuardDecided{Rollout: "r1", StateAfter: "HEALTHY", Action: "none"})
	h.add(events.TypeValveConfigured, events.ValveConfigured{Variant: "control", Segment: "beta"})
	h.add(events.TypeValveOpened, events.ValveOpened{Variant: "control", Segment: "beta", Expires: t0.Add(time.Hour)})
	f := h.fold()
	b, err := json.Marshal(f)
	if err != nil {
		t.Fatal(err)
	}
	var back projections.Flag
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	back.Sequence = f.Sequence
	if !reflect.DeepEqual(back, f) {
		t.Fatalf("round trip:\n got %+v\nwant %+v", back, f)
	}
}

// TestValveEvaluation: an open valve serves its variant to everyone, or only to its segment's
// members, whatever the flag's rules say; closed, the flag serves its own configuration again.
func TestValveEvaluation(t *testing.T) {
	cfg := targeted(cond("plan", "eq", "pro")) // "on" for pro, "off" otherwise
	cfg.Kind = events.KindOperational
	seg := events.SegmentConfig{Included: []string{"acme-1", "acme-2"}}
	segEv := event(t, events.TypeSegmentCreated, env, "acme", 1, events.SegmentCreated{Segment: seg})
	segEv.Sequence = 0 // before the flag's events, whose sequences start at 1

	pro := func(key string) *targeting.EvalContext {
		return &targeting.EvalContext{TargetingKey: key, Attributes: map[string]any{"plan": "pro"}}
	}
	free := func(key string) *targeting.EvalContext { return &targeting.EvalContext{TargetingKey: key} }
	type check struct {
		ctx  *targeting.EvalContext
		want string
	}
	own := []check{{pro("acme-1"), "on"}, {free("acme-2"), "off"}, {pro("bob"), "on"}, {free("carol"), "off"}}

	h := newHistory(t, "search", cfg)
	evaluate := func(step string, checks []check) {
		t.Helper()
		set, err := targeting.NewFlagset(env).ApplyAll(append([]events.Event{segEv}, h.evs...))
		if err != nil {
			t.Fatal(err)
		}
		if errs := set.Errors(); len(errs) > 0 {
			t.Fatalf("%s: %v", step, errs)
		}
		for _, c := range checks {
			e := set.Evaluate("search", c.ctx)
			if e.Variant == nil || e.Variant.Name != c.want {
				t.Errorf("%s: %s (%v) gets %+v, want %s", step, c.ctx.TargetingKey, c.ctx.Attributes, e, c.want)
			}
		}
		// The same answers from a set compiled whole, as a snapshot would be, and step by step.
		whole := compileSet(t, []projections.Flag{h.fold()}, segmentOf("acme", seg))
		step2 := targeting.NewFlagset(env)
		for _, ev := range append([]events.Event{segEv}, h.evs...) {
			if step2, err = step2.Apply(ev); err != nil {
				t.Fatal(err)
			}
		}
		for _, c := range checks {
			for name, s := range map[string]*targeting.Flagset{"compiled": whole, "applied": step2} {
				if e := s.Evaluate("search", c.ctx); e.Variant == nil || e.Variant.Name != c.want {
					t.Errorf("%s, %s: %s gets %+v, want %s", step, name, c.ctx.TargetingKey, e, c.want)
				}
			}
		}
	}
	evaluate("no valve", own)
	h.add(events.TypeValveConfigured, events.ValveConfigured{Variant: "off"})
	evaluate("configured, closed", own)
	h.add(events.TypeValveOpened, events.ValveOpened{Variant: "off"})
	evaluate("open for everyone", []check{{pro("acme-1"), "off"}, {free("acme-2"), "off"}, {pro("bob"), "off"}, {free("carol"), "off"}})
	h.add(events.TypeValveClosed, events.ValveClosed{Cause: events.ValveClosedManual})
	evaluate("closed again", own)
	h.add(events.TypeValveConfigured, events.ValveConfigured{Variant: "off", Segment: "acme"})
	h.add(events.TypeValveOpened, events.ValveOpened{Variant: "off", Segment: "acme"})
	evaluate("open for a segment", []check{{pro("acme-1"), "off"}, {free("acme-2"), "off"}, {pro("bob"), "on"}, {free("carol"), "off"}})
	// Reconfigured while open: the valve serves the new variant at once.
	h.add(events.TypeValveConfigured, events.ValveConfigured{Variant: "on", Segment: "acme"})
	evaluate("reconfigured while open", []check{{pro("acme-1"), "on"}, {free("acme-2"), "on"}, {pro("bob"), "on"}, {free("carol"), "off"}})
	h.add(events.TypeValveClosed, events.ValveClosed{Cause: events.ValveClosedHealthy})
	evaluate("closed after the segment", own)

	// Killed, the flag serves its off variant whatever the valve says.
	h.add(events.TypeValveOpened, events.ValveOpened{Variant: "on", Segment: "acme"})
	h.add(events.TypeFlagKilled, events.FlagKilled{})
	evaluate("killed with the valve open", []check{{pro("acme-1"), "off"}, {pro("bob"), "off"}})

	// Served does not change the flag's own rules.
	f := h.fold()
	served := f.Served()
	if len(served.Rules) != 2 || len(f.Rules) != 1 || f.Rules[0].Name != "r" || served.Rules[0].Name != "valve" {
		t.Fatalf("served rules %+v, own rules %+v", served.Rules, f.Rules)
	}
}

// A change of the valve's segment changes what the open valve serves.
func TestValveSegmentChange(t *testing.T) {
	cfg := boolConfig()
	cfg.Kind = events.KindOperational
	h := newHistory(t, "search", cfg)
	h.add(events.TypeValveConfigured, events.ValveConfigured{Variant: "off", Segment: "acme"})
	h.add(events.TypeValveOpened, events.ValveOpened{Variant: "off", Segment: "acme"})
	seg := func(seq, version uint64, typ string, included ...string) events.Event {
		var p any = events.SegmentCreated{Segment: events.SegmentConfig{Included: included}}
		if typ == events.TypeSegmentUpdated {
			p = events.SegmentUpdated{Segment: events.SegmentConfig{Included: included}}
		}
		ev := event(t, typ, env, "acme", version, p)
		ev.Sequence = seq
		return ev
	}
	set, err := targeting.NewFlagset(env).ApplyAll(append([]events.Event{seg(0, 1, events.TypeSegmentCreated, "a")}, h.evs...))
	if err != nil {
		t.Fatal(err)
	}
	if got := set.FlagsUsing("acme"); !reflect.DeepEqual(got, []string{"search"}) {
		t.Fatalf("flags using the valve's segment: %v", got)
	}
	if e := set.Evaluate("search", &targeting.EvalContext{TargetingKey: "b"}); !e.Variant.Bool {
		t.Fatalf("b is not in the segment yet: %+v", e)
	}
	set, err = set.Apply(seg(101, 2, events.TypeSegmentUpdated, "a", "b"))
	if err != nil {
		t.Fatal(err)
	}
	if e := set.Evaluate("search", &targeting.EvalContext{TargetingKey: "b"}); e.Variant.Bool {
		t.Fatalf("b joined the segment but the valve does not serve it: %+v", e)
	}
}

// TestRolloutServesStages: what evaluation serves is each stage's split, bucketed so that a
// user on the treatment stays on it as the rollout grows; completed, everyone gets the
// treatment; aborted, everyone the control.
func TestRolloutServesStages(t *testing.T) {
	const n = 20_000
	ctxs := users(n)
	h := newHistory(t, "ramp", rampConfig())
	h.add(events.TypeRolloutCreated, events.RolloutCreated{ID: "r1", Plan: rampPlan()})
	serve := func() (*targeting.Flagset, []bool, int) {
		t.Helper()
		set, err := targeting.NewFlagset(env).ApplyAll(h.evs)
		if err != nil {
			t.Fatal(err)
		}
		in := make([]bool, n)
		count := 0
		for i, ctx := range ctxs {
			e := set.Evaluate("ramp", ctx)
			if e.Variant == nil {
				t.Fatalf("%+v", e)
			}
			if in[i] = e.Variant.Name == "treatment"; in[i] {
				count++
			}
		}
		return set, in, count
	}
	if _, _, c := serve(); c != 0 {
		t.Fatalf("a created rollout serves the treatment to %d users", c)
	}
	var prev []bool
	for i, pct := range []float64{1, 5, 25, 50, 95} {
		if i == 0 {
			h.add(events.TypeRolloutStarted, events.RolloutStarted{ID: "r1", Serve: stageServe(pct)})
		} else {
			h.add(events.TypeRolloutAdvanced, events.RolloutAdvanced{ID: "r1", From: i - 1, To: i, Serve: stageServe(pct)})
		}
		set, in, count := serve()
		if e := set.Evaluate("ramp", ctxs[0]); e.Reason != targeting.ReasonSplit {
			t.Fatalf("stage %v%%: reason %s", pct, e.Reason)
		}
		// The count is Binomial(n, p): allow five standard deviations.
		p := pct / 100
		mean, sd := n*p, math.Sqrt(n*p*(1-p))
		if math.Abs(float64(count)-mean) > 5*sd {
			t.Errorf("stage %v%%: %d of %d users on the treatment, want %.0f ± %.0f", pct, count, n, mean, 5*sd)
		}
		for j := range prev {
			if prev[j] && !in[j] {
				t.Fatalf("stage %v%%: %s left the treatment", pct, ctxs[j].TargetingKey)
			}
		}
		prev = in
	}
	// Stepping back keeps a subset of the treatment.
	h.add(events.TypeRolloutSteppedBack, events.RolloutSteppedBack{ID: "r1", From: 4, To: 3, Serve: stageServe(50)})
	_, in, _ := serve()
	for j := range in {
		if in[j] && !prev[j] {
			t.Fatalf("stepping back moved %s onto the treatment", ctxs[j].TargetingKey)
		}
	}
	base := len(h.evs)
	h.add(events.TypeRolloutCompleted, events.RolloutCompleted{ID: "r1", Serve: events.Serve{Variant: "treatment"}})
	if set, _, c := serve(); c != n || set.Evaluate("ramp", ctxs[0]).Reason != targeting.ReasonStatic {
		t.Fatalf("completed: %d of %d on the treatment", c, n)
	}
	h.evs = h.evs[:base]
	h.add(events.TypeRolloutAborted, events.RolloutAborted{ID: "r1", Serve: events.Serve{Variant: "control"}})
	if _, _, c := serve(); c != 0 {
		t.Fatalf("aborted: %d users still on the treatment", c)
	}
}
