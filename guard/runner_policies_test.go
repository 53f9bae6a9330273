package guard_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/interlock-dev/interlock/events"
	"github.com/interlock-dev/interlock/guard"
	"github.com/interlock-dev/interlock/guard/source"
	"github.com/interlock-dev/interlock/internal/command"
	"github.com/interlock-dev/interlock/projections"
	"github.com/interlock-dev/interlock/targeting"
)

// flaky is an exposition endpoint that answers 500 while failing is set, and passes on to next
// otherwise.
type flaky struct {
	next    http.Handler
	failing atomic.Bool
}

func (f *flaky) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if f.failing.Load() {
		http.Error(w, "exposition unavailable", http.StatusInternalServerError)
		return
	}
	f.next.ServeHTTP(w, r)
}

// flakyEndpoint serves the world's counters through a [flaky] endpoint and returns its URL.
func (w *world) flakyEndpoint() (*flaky, string) {
	w.t.Helper()
	f := &flaky{next: w.counters}
	srv := httptest.NewServer(f)
	w.t.Cleanup(srv.Close)
	return f, srv.URL + "/metrics"
}

// get returns the value of a counter.
func (c *counters) get(metric, flag, variant string) float64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.values[fmt.Sprintf("%s{flag=%q,variant=%q}", metric, flag, variant)]
}

// leader is a [guard.Leader] whose answer the test sets.
type leader struct{ held bool }

func (l *leader) Held() (bool, uint64) { return l.held, 1 }

// useGuard replaces the world's guard by one with the world's options changed by set.
func (w *world) useGuard(set func(o *guard.RunnerOptions)) {
	w.t.Helper()
	opts := guard.RunnerOptions{
		Catalog: w.cat, Commands: w.svc, Now: func() time.Time { return w.now },
		OnEvidence: func(env, flag string, ev guard.Evidence) {
			w.evidence[env+"/"+flag] = append(w.evidence[env+"/"+flag], ev)
		},
	}
	set(&opts)
	g, err := guard.NewRunner(opts)
	if err != nil {
		w.t.Fatal(err)
	}
	w.guard = g
}

// judged counts the guard's decide and confirm calls on key: the ticks it judged.
func (w *world) judged(key string) int {
	n := 0
	for _, ev := range w.evidence[testEnv+"/"+key] {
		if ev.Call == guard.CallDecide || ev.Call == guard.CallConfirm {
			n++
		}
	}
	return n
}

// calls returns the evidence of key's calls of kind call, in order.
func (w *world) calls(key string, call guard.Call) []guard.Evidence {
	var out []guard.Evidence
	for _, ev := range w.evidence[testEnv+"/"+key] {
		if ev.Call == call {
			out = append(out, ev)
		}
	}
	return out
}

// ofType returns the events of key's history of type typ.
func (w *world) ofType(key, typ string) []events.Event {
	w.t.Helper()
	var out []events.Event
	for _, ev := range w.history(key) {
		if ev.Type == typ {
			out = append(out, ev)
		}
	}
	return out
}

// decided decodes the payload of a guard decision event.
func decided(t *testing.T, ev events.Event) *events.GuardDecided {
	t.Helper()
	p, err := ev.Payload()
	if err != nil {
		t.Fatal(err)
	}
	return p.(*events.GuardDecided)
}

// advanceByHand moves key's rollout from stage from to the next, as a person.
func (w *world) advanceByHand(key string, from int) {
	w.t.Helper()
	if _, err := w.svc.Handle(w.ctx, command.AdvanceRollout{Meta: person, RolloutTarget: command.RolloutTarget{Env: testEnv, Key: key, ID: w.flag(key).Rollout.ID}, From: from}); err != nil {
		w.t.Fatal(err)
	}
	w.sync()
}

// trip serves key healthy traffic for three ticks, then a 20× error rate on the treatment until
// the guard trips, and returns the decision event that tripped it.
func (w *world) trip(key string) events.Event {
	w.t.Helper()
	for range 3 {
		w.traffic(key, 4000, 0.01, 0.01)
		w.tick()
	}
	for range 40 {
		w.traffic(key, 4000, 0.20, 0.01)
		w.tick()
		if w.flag(key).Rollout.Guard.Tripped {
			evs := w.ofType(key, events.TypeGuardDecided)
			return evs[len(evs)-1]
		}
	}
	w.t.Fatalf("%s: no trip after 40 ticks of a 20× error rate; guard %+v", key, w.flag(key).Rollout.Guard)
	return events.Event{}
}

// createValve creates an operational flag serving "full" and configures it as a valve serving
// "lite".
func (w *world) createValve(key string) {
	w.t.Helper()
	_, err := flagOf(w.svc.Handle(w.ctx, command.CreateFlag{Meta: person, Env: testEnv, Key: key, Config: events.FlagConfig{
		Kind:           events.KindOperational,
		Variants:       map[string]json.RawMessage{"full": json.RawMessage(`"full"`), "lite": json.RawMessage(`"lite"`)},
		DefaultVariant: "full", OffVariant: "full", Enabled: true,
	}}))
	if err != nil {
		w.t.Fatal(err)
	}
	if _, err := w.svc.Handle(w.ctx, command.ConfigureValve{Meta: person, Env: testEnv, Key: key, ExpectedVersion: 0, Valve: events.ValveConfigured{Variant: "lite"}}); err != nil {
		w.t.Fatal(err)
	}
	w.sync()
}

// serves evaluates key through the catalog's compiled flag sets.
func serves(t *testing.T, ev *targeting.Evaluators, key string) string {
	t.Helper()
	e := ev.Flagset(testEnv).Evaluate(key, &targeting.EvalContext{TargetingKey: "user-1"})
	if e.Variant == nil {
		t.Fatalf("%s: evaluation failed: %s %s", key, e.ErrorCode, e.ErrorMessage)
	}
	return e.Variant.Name
}

// checkCaused fails unless ev is the guard's, caused by decision, in rollout's correlation.
func checkCaused(t *testing.T, ev events.Event, decision events.Event, rollout string) {
	t.Helper()
	if ev.Actor != guard.Actor || ev.CausationID != decision.ID || ev.CorrelationID != rollout || ev.Reason == "" {
		t.Fatalf("%s: actor %q causation %q correlation %q reason %q; want %q, %s, %s and a reason",
			ev.Type, ev.Actor, ev.CausationID, ev.CorrelationID, ev.Reason, guard.Actor, decision.ID, rollout)
	}
}

func TestRunnerTripStepsBackAndLatches(t *testing.T) {
	w := newWorld(t)
	w.createFlag("cart")
	w.startRollout("cart", w.plan(events.OnTripStepBack))
	w.advanceByHand("cart", 0)
	id := w.flag("cart").Rollout.ID

	trip := w.trip("cart")
	if d := decided(t, trip); d.Stage != 1 || d.Action != string(guard.ActionStepBack) || d.StateAfter != string(guard.StateTripped) {
		t.Fatalf("trip decision %+v, want TRIPPED at stage 1 with stepBack", d)
	}
	f := w.flag("cart")
	want := events.StageServe("on", "off", 10)
	if f.Rollout.Stage != 0 || f.Rollout.Status != projections.RolloutRunning || !f.Enabled ||
		f.DefaultServe == nil || !maps.Equal(f.DefaultServe.Split, want.Split) {
		t.Fatalf("after the trip: stage %d, %s, enabled %v, serve %+v; want stage 0's split %v, running, enabled",
			f.Rollout.Stage, f.Rollout.Status, f.Enabled, f.DefaultServe, want.Split)
	}
	back := w.ofType("cart", events.TypeRolloutSteppedBack)
	if len(back) != 1 {
		t.Fatalf("%d step backs, want 1", len(back))
	}
	checkCaused(t, back[0], trip, id)

	// Latched: nothing is judged any more, nothing is decided, the split stays.
	judged, decisions := w.judged("cart"), len(w.ofType("cart", events.TypeGuardDecided))
	for range 20 {
		w.traffic("cart", 4000, 0.01, 0.01)
		w.tick()
	}
	if n := w.judged("cart"); n != judged {
		t.Errorf("a tripped guard judged %d more ticks", n-judged)
	}
	if n := len(w.ofType("cart", events.TypeGuardDecided)); n != decisions {
		t.Errorf("a tripped guard recorded %d more decisions", n-decisions)
	}
	if f := w.flag("cart"); f.Rollout.Stage != 0 || !f.Rollout.Guard.Tripped || !maps.Equal(f.DefaultServe.Split, want.Split) {
		t.Errorf("latched rollout moved: stage %d, guard %+v, serve %+v", f.Rollout.Stage, f.Rollout.Guard, f.DefaultServe)
	}
}

func TestRunnerTripStepBackAtFirstStageAborts(t *testing.T) {
	w := newWorld(t)
	w.createFlag("cart")
	w.startRollout("cart", w.plan(events.OnTripStepBack))
	id := w.flag("cart").Rollout.ID
	trip := w.trip("cart")
	f := w.flag("cart")
	if f.Rollout.Status != projections.RolloutAborted || !f.Enabled || f.DefaultServe == nil || f.DefaultServe.Variant != "off" {
		t.Fatalf("after a trip at stage 0: %s, enabled %v, serve %+v; want aborted, serving the control", f.Rollout.Status, f.Enabled, f.DefaultServe)
	}
	aborted := w.ofType("cart", events.TypeRolloutAborted)
	if len(aborted) != 1 {
		t.Fatalf("%d aborts, want 1", len(aborted))
	}
	checkCaused(t, aborted[0], trip, id)
}

func TestRunnerTripFreezePauses(t *testing.T) {
	w := newWorld(t)
	w.createFlag("cart")
	w.startRollout("cart", w.plan(events.OnTripFreeze))
	id := w.flag("cart").Rollout.ID
	before := *w.flag("cart").DefaultServe
	trip := w.trip("cart")
	f := w.flag("cart")
	if f.Rollout.Status != projections.RolloutPaused || f.Rollout.Stage != 0 || !f.Enabled || !f.Rollout.Guard.Tripped ||
		!maps.Equal(f.DefaultServe.Split, before.Split) {
		t.Fatalf("after a trip with freeze: %s at stage %d, enabled %v, guard %+v, serve %+v; want paused where it was",
			f.Rollout.Status, f.Rollout.Stage, f.Enabled, f.Rollout.Guard, f.DefaultServe)
	}
	paused := w.ofType("cart", events.TypeRolloutPaused)
	if len(paused) != 1 {
		t.Fatalf("%d pauses, want 1", len(paused))
	}
	checkCaused(t, paused[0], trip, id)
}

func TestRunnerTripOpensValve(t *testing.T) {
	w := newWorld(t)
	eval := targeting.NewEvaluators(w.cat)
	w.createValve("search-lite")
	w.createFlag("search")
	p := w.plan(events.OnTripOpenValve)
	p.Valve = &events.ValveRef{Flag: "search-lite"}
	w.startRollout("search", p)
	id := w.flag("search").Rollout.ID
	if got := serves(t, eval, "search-lite"); got != "full" {
		t.Fatalf("closed valve serves %q, want full", got)
	}

	trip := w.trip("search")
	v := w.flag("search-lite")
	if v.Valve == nil || !v.Valve.Open || v.Valve.OpenedBy != guard.Actor || v.Valve.Rollout != id {
		t.Fatalf("valve after the trip: %+v; want open by the guard for rollout %s", v.Valve, id)
	}
	opened := w.ofType("search-lite", events.TypeValveOpened)
	if len(opened) != 1 {
		t.Fatalf("%d valve openings, want 1", len(opened))
	}
	checkCaused(t, opened[0], trip, id)
	p0, err := opened[0].Payload()
	if err != nil {
		t.Fatal(err)
	}
	o := p0.(*events.ValveOpened)
	var calls []guard.Evidence
	if err := json.Unmarshal(o.Evidence, &calls); err != nil {
		t.Fatalf("valve evidence: %v", err)
	}
	if o.Rollout != id || len(calls) != 2 || calls[1].Call != guard.CallConfirm || calls[1].StateAfter != guard.StateTripped {
		t.Fatalf("valve opened for rollout %q with evidence %+v; want %s and the confirmed trip", o.Rollout, calls, id)
	}
	if got := serves(t, eval, "search-lite"); got != "lite" {
		t.Fatalf("open valve serves %q, want lite", got)
	}
	// The rollout itself stays where it was, latched.
	if f := w.flag("search"); !f.Enabled || f.Rollout.Status != projections.RolloutRunning || !f.Rollout.Guard.Tripped {
		t.Fatalf("rollout after opening the valve: enabled %v, %s, guard %+v", f.Enabled, f.Rollout.Status, f.Rollout.Guard)
	}
}

func TestRunnerRearm(t *testing.T) {
	w := newWorld(t)
	w.createFlag("search")
	w.startRollout("search", w.plan(events.OnTripKill))
	w.trip("search")
	id := w.flag("search").Rollout.ID

	judged, decisions := w.judged("search"), len(w.ofType("search", events.TypeGuardDecided))
	decides := len(w.calls("search", guard.CallDecide))
	for range 5 {
		w.traffic("search", 4000, 0.01, 0.01)
		w.tick()
	}
	if n := w.judged("search"); n != judged {
		t.Errorf("a tripped guard judged %d more ticks", n-judged)
	}
	if n := len(w.ofType("search", events.TypeGuardDecided)); n != decisions {
		t.Errorf("a tripped guard recorded %d more decisions", n-decisions)
	}
	if _, err := w.svc.Handle(w.ctx, command.AdvanceRollout{Meta: person, RolloutTarget: command.RolloutTarget{Env: testEnv, Key: "search", ID: id}, From: 0}); !errors.Is(err, command.ErrTripped) {
		t.Fatalf("advance by hand while tripped: %v, want ErrTripped", err)
	}

	bob := command.Meta{Actor: "bob", Reason: "fixed the bug"}
	if _, err := w.svc.Handle(w.ctx, command.Rearm{Meta: bob, RolloutTarget: command.RolloutTarget{Env: testEnv, Key: "search", ID: id}}); err != nil {
		t.Fatal(err)
	}
	if _, err := w.svc.Handle(w.ctx, command.EnableFlag{Meta: bob, Env: testEnv, Key: "search"}); err != nil {
		t.Fatal(err)
	}
	w.sync()
	rearmedAt := w.now.Add(15 * time.Second)
	for range 3 {
		w.traffic("search", 4000, 0.01, 0.01)
		w.tick()
	}
	rearms := w.calls("search", guard.CallRearm)
	if len(rearms) != 1 || rearms[0].By != "bob" || rearms[0].StateAfter != guard.StateWarmup || !rearms[0].Time.Equal(rearmedAt) {
		t.Fatalf("rearm calls %+v; want one by bob at %s, to WARMUP", rearms, rearmedAt)
	}
	after := w.calls("search", guard.CallDecide)[decides:]
	if len(after) == 0 || after[0].StateBefore != guard.StateWarmup || !after[0].StageStart.Equal(rearmedAt) {
		t.Fatalf("decisions after the rearm: %+v; want them judged from WARMUP, the stage starting at the rearm", after)
	}
	var again *events.GuardDecided
	for _, ev := range w.ofType("search", events.TypeGuardDecided)[decisions:] {
		again = decided(t, ev)
	}
	if again == nil || again.StateBefore != string(guard.StateWarmup) || w.flag("search").Rollout.Guard.Tripped {
		t.Fatalf("after the rearm: decision %+v, guard %+v; want the guard judging again from WARMUP", again, w.flag("search").Rollout.Guard)
	}
	// Judging again means advancing again.
	for i := 0; i < 40 && w.flag("search").Rollout.Stage == 0; i++ {
		w.traffic("search", 4000, 0.01, 0.01)
		w.tick()
	}
	if f := w.flag("search"); f.Rollout.Stage != 1 {
		t.Fatalf("re-armed rollout still at stage %d, guard %+v", f.Rollout.Stage, f.Rollout.Guard)
	}
}

func TestRunnerBlind(t *testing.T) {
	for _, c := range []struct {
		name      string
		policy    string
		stage     int
		wantStage int
		wantState string
		wantEvent string
	}{
		{"revert steps back", events.PolicyRevert, 1, 0, projections.RolloutRunning, events.TypeRolloutSteppedBack},
		{"revert at first stage aborts", events.PolicyRevert, 0, 0, projections.RolloutAborted, events.TypeRolloutAborted},
		{"hold stays", events.PolicyHold, 1, 1, projections.RolloutRunning, ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			w := newWorld(t)
			endpoint, url := w.flakyEndpoint()
			w.createFlag("cart")
			p := w.plan(events.OnTripKill)
			p.Source.URL = url
			p.OnBlind = c.policy
			p.BlindGrace = events.Duration(time.Minute)
			w.startRollout("cart", p)
			for s := range c.stage {
				w.advanceByHand("cart", s)
			}
			id := w.flag("cart").Rollout.ID
			for range 2 {
				w.traffic("cart", 4000, 0.01, 0.01)
				w.tick()
			}
			decisions := len(w.ofType("cart", events.TypeGuardDecided))

			endpoint.failing.Store(true)
			w.traffic("cart", 4000, 0.01, 0.01)
			w.tick()
			blindAt := w.now
			evs := w.ofType("cart", events.TypeGuardDecided)[decisions:]
			if len(evs) != 1 || decided(t, evs[0]).StateAfter != string(guard.StateBlind) || decided(t, evs[0]).Cause != string(guard.CauseBlind) {
				t.Fatalf("decisions on the first failed scrape: %d; want one to BLIND", len(evs))
			}
			var calls []guard.Evidence
			if err := json.Unmarshal(decided(t, evs[0]).Evidence, &calls); err != nil {
				t.Fatal(err)
			}
			if r := calls[0].Metrics[0].Treatment.Requests; r.Status != source.ReadingError || r.Endpoint == "" {
				t.Fatalf("blind evidence reads %+v; want the failed scrape", r)
			}

			// Blind for ten minutes, far past the stage's minimum hold, with healthy traffic.
			var acted *events.Event
			for range 40 {
				w.traffic("cart", 4000, 0.01, 0.01)
				w.tick()
				f := w.flag("cart")
				if acted == nil && (f.Rollout.Stage != c.stage || f.Rollout.Status != projections.RolloutRunning) {
					all := w.ofType("cart", events.TypeGuardDecided)
					acted = &all[len(all)-1]
					if w.now.Before(blindAt.Add(time.Minute)) {
						t.Fatalf("acted at %s, within the grace period that began at %s", w.now, blindAt)
					}
				}
			}
			if n := len(w.ofType("cart", events.TypeRolloutAdvanced)); n != c.stage {
				t.Fatalf("%d advances, want only the %d by hand: the guard advanced on missing data", n, c.stage)
			}
			f := w.flag("cart")
			if f.Rollout.Stage != c.wantStage || f.Rollout.Status != c.wantState {
				t.Fatalf("after 10 blind minutes: %s at stage %d; want %s at stage %d", f.Rollout.Status, f.Rollout.Stage, c.wantState, c.wantStage)
			}
			var graces []*events.GuardDecided
			for _, ev := range w.ofType("cart", events.TypeGuardDecided) {
				if d := decided(t, ev); d.Cause == string(guard.CauseBlindGrace) {
					graces = append(graces, d)
				}
			}
			if len(graces) == 0 || graces[0].Action != c.policy {
				t.Fatalf("grace decisions %+v; want one acting %s", graces, c.policy)
			}
			if c.wantEvent == "" {
				if acted != nil {
					t.Fatalf("onBlind hold changed the rollout (decision %s)", acted.ID)
				}
				return
			}
			got := w.ofType("cart", c.wantEvent)
			if len(got) != 1 || acted == nil {
				t.Fatalf("%d %s events, want 1", len(got), c.wantEvent)
			}
			checkCaused(t, got[0], *acted, id)
		})
	}
}

func TestRunnerConfigChangeRestartsStage(t *testing.T) {
	w := newWorld(t)
	w.createFlag("cart")
	p := w.plan(events.OnTripKill)
	p.Stages[0].MinHold = events.Duration(2 * time.Minute)
	w.startRollout("cart", p)
	for range 6 {
		w.traffic("cart", 4000, 0.01, 0.01)
		w.tick()
	}
	start := w.calls("cart", guard.CallDecide)[0].StageStart
	if w.flag("cart").Rollout.Stage != 0 {
		t.Fatal("the rollout advanced before the change: the test needs a slower stage")
	}
	if _, err := w.svc.Handle(w.ctx, command.UpdateFlag{Meta: person, Env: testEnv, Key: "cart", ExpectedVersion: 0, Patch: []byte(`{"description":"now with caching"}`)}); err != nil {
		t.Fatal(err)
	}
	w.sync()
	restartAt := w.now.Add(15 * time.Second)
	for i := 0; i < 40 && w.flag("cart").Rollout.Stage == 0; i++ {
		w.traffic("cart", 4000, 0.01, 0.01)
		w.tick()
	}
	if w.flag("cart").Rollout.Stage != 1 {
		t.Fatal("the rollout never advanced after the restart")
	}
	restarts := w.calls("cart", guard.CallRestart)
	if len(restarts) != 1 || !restarts[0].Time.Equal(restartAt) || restarts[0].StateAfter != guard.StateWarmup || restarts[0].Config == nil {
		t.Fatalf("restart calls %+v; want one at %s to WARMUP with its configuration", restarts, restartAt)
	}
	var sawOldHold, advanced bool
	for _, ev := range w.calls("cart", guard.CallDecide) {
		if ev.Time.Before(restartAt) || ev.Stage != 0 {
			continue
		}
		if !ev.StageStart.Equal(restartAt) {
			t.Fatalf("decision at %s counts the stage from %s, want the restart %s", ev.Time, ev.StageStart, restartAt)
		}
		if want := !ev.Time.Before(restartAt.Add(2 * time.Minute)); ev.MinHoldElapsed != want {
			t.Fatalf("decision at %s: minHoldElapsed %v, want %v (the hold counts from the restart)", ev.Time, ev.MinHoldElapsed, want)
		}
		if !ev.Time.Before(start.Add(2*time.Minute)) && ev.Time.Before(restartAt.Add(2*time.Minute)) {
			sawOldHold = true // the hold would have passed from the stage's first start
		}
		if ev.Action == guard.ActionAdvance {
			advanced = true
			if ev.Time.Before(restartAt.Add(2 * time.Minute)) {
				t.Fatalf("advanced at %s, before the hold restarted at %s passed", ev.Time, restartAt)
			}
		}
	}
	if !sawOldHold || !advanced {
		t.Fatalf("the test did not judge between the first start's hold and the restart's (%v), or never advanced (%v)", sawOldHold, advanced)
	}
}

func TestRunnerPausedNotJudgedAndResumesAfresh(t *testing.T) {
	w := newWorld(t)
	w.createFlag("cart")
	w.startRollout("cart", w.plan(events.OnTripKill))
	id := w.flag("cart").Rollout.ID
	for range 3 {
		w.traffic("cart", 4000, 0.01, 0.01)
		w.tick()
	}
	if _, err := w.svc.Handle(w.ctx, command.PauseRollout{Meta: person, RolloutTarget: command.RolloutTarget{Env: testEnv, Key: "cart", ID: id}}); err != nil {
		t.Fatal(err)
	}
	w.sync()
	judged, decisions := w.judged("cart"), len(w.ofType("cart", events.TypeGuardDecided))
	decides := len(w.calls("cart", guard.CallDecide))
	for range 10 {
		w.traffic("cart", 4000, 0.20, 0.01) // even a spike is not judged while paused
		w.tick()
	}
	if n := w.judged("cart"); n != judged {
		t.Fatalf("judged %d ticks of a paused rollout", n-judged)
	}
	if n := len(w.ofType("cart", events.TypeGuardDecided)); n != decisions {
		t.Fatalf("recorded %d decisions on a paused rollout", n-decisions)
	}
	if _, err := w.svc.Handle(w.ctx, command.ResumeRollout{Meta: person, RolloutTarget: command.RolloutTarget{Env: testEnv, Key: "cart", ID: id}}); err != nil {
		t.Fatal(err)
	}
	w.sync()
	resumedAt := w.now.Add(15 * time.Second)
	for range 2 {
		w.traffic("cart", 4000, 0.01, 0.01)
		w.tick()
	}
	restarts := w.calls("cart", guard.CallRestart)
	if len(restarts) != 1 || !restarts[0].Time.Equal(resumedAt) || restarts[0].StateAfter != guard.StateWarmup {
		t.Fatalf("restart calls %+v; want one at the resume %s, to WARMUP", restarts, resumedAt)
	}
	d := w.calls("cart", guard.CallDecide)[decides]
	if d.StateBefore != guard.StateWarmup || !d.StageStart.Equal(resumedAt) || !d.Metrics[0].Treatment.Baseline {
		t.Fatalf("first decision after the resume: before %s, stage start %s, baseline %v; want a fresh stage",
			d.StateBefore, d.StageStart, d.Metrics[0].Treatment.Baseline)
	}
}

func TestRunnerManualPlan(t *testing.T) {
	w := newWorld(t)
	w.createFlag("cart")
	p := w.plan(events.OnTripKill)
	p.Manual = true
	w.startRollout("cart", p)
	ready := -1
	for i := 0; i < 60; i++ {
		w.traffic("cart", 4000, 0.01, 0.01)
		w.tick()
		if ready < 0 && w.flag("cart").Rollout.Guard.State == string(guard.StateReady) {
			ready = i
		}
		if ready >= 0 && i >= ready+10 {
			break
		}
	}
	if ready < 0 {
		t.Fatal("a healthy manual rollout never became READY")
	}
	if n := len(w.ofType("cart", events.TypeRolloutAdvanced)); n != 0 || w.flag("cart").Rollout.Stage != 0 {
		t.Fatalf("a manual rollout advanced by itself (%d advances)", n)
	}
	var sawAdvance bool
	for _, ev := range w.ofType("cart", events.TypeGuardDecided) {
		sawAdvance = sawAdvance || decided(t, ev).Action == string(guard.ActionAdvance)
	}
	if !sawAdvance {
		t.Fatal("no decision recorded that the rollout may advance")
	}
	for i := 0; i < 40 && w.flag("cart").Enabled; i++ {
		w.traffic("cart", 4000, 0.20, 0.01)
		w.tick()
	}
	if f := w.flag("cart"); f.Enabled || !f.Rollout.Guard.Tripped {
		t.Fatalf("a manual rollout did not trip on a 20× error rate: enabled %v, guard %+v", f.Enabled, f.Rollout.Guard)
	}
}

func TestRunnerActsOnlyWithLease(t *testing.T) {
	w := newWorld(t)
	lease := &leader{}
	w.useGuard(func(o *guard.RunnerOptions) { o.Lease = lease })
	w.createFlag("cart")
	w.startRollout("cart", w.plan(events.OnTripKill))
	for range 5 {
		w.traffic("cart", 4000, 0.01, 0.01)
		w.tick()
	}
	if n := len(w.evidence[testEnv+"/cart"]); n != 0 {
		t.Fatalf("without the lease the guard made %d calls", n)
	}
	if n := len(w.ofType("cart", events.TypeGuardDecided)); n != 0 {
		t.Fatalf("without the lease the guard recorded %d decisions", n)
	}
	if _, ok := w.guard.Live(testEnv, "cart"); ok {
		t.Fatal("Live answers without the lease")
	}

	lease.held = true
	for range 3 {
		w.traffic("cart", 4000, 0.01, 0.01)
		w.tick()
	}
	if w.judged("cart") != 3 || len(w.ofType("cart", events.TypeGuardDecided)) == 0 {
		t.Fatalf("with the lease: %d ticks judged, %d decisions; want 3 and some", w.judged("cart"), len(w.ofType("cart", events.TypeGuardDecided)))
	}
	if _, ok := w.guard.Live(testEnv, "cart"); !ok {
		t.Fatal("Live does not answer with the lease")
	}

	// Lost, then held again: the guard forgets and judges afresh from the stage's start.
	lease.held = false
	w.traffic("cart", 4000, 0.01, 0.01)
	w.tick()
	if _, ok := w.guard.Live(testEnv, "cart"); ok || w.judged("cart") != 3 {
		t.Fatalf("after losing the lease: live %v, %d ticks judged", ok, w.judged("cart"))
	}
	lease.held = true
	w.traffic("cart", 4000, 0.01, 0.01)
	w.tick()
	d := w.calls("cart", guard.CallDecide)
	if len(d) != 4 || d[3].StateBefore != guard.StateWarmup || !d[3].Metrics[0].Treatment.Baseline {
		t.Fatalf("after the lease came back: %d decisions, last %+v; want a fresh guard taking a baseline", len(d), d[len(d)-1])
	}
}

func TestRunnerClosesExpiredValve(t *testing.T) {
	w := newWorld(t)
	eval := targeting.NewEvaluators(w.cat)
	w.createValve("banner")
	// OpenValve checks the expiry against the wall clock; the guard against its own, which runs
	// ahead of it here: an expiry 30s ahead of the guard's clock is in the future for both.
	expires := w.now.Add(30 * time.Second)
	if _, err := w.svc.Handle(w.ctx, command.OpenValve{Meta: person, Env: testEnv, Key: "banner", Expires: expires}); err != nil {
		t.Fatal(err)
	}
	w.sync()
	if got := serves(t, eval, "banner"); got != "lite" {
		t.Fatalf("open valve serves %q", got)
	}
	w.tick()
	if v := w.flag("banner").Valve; !v.Open {
		t.Fatalf("valve closed at %s, before its expiry %s", w.now, expires)
	}
	w.tick()
	v := w.flag("banner").Valve
	if v.Open || v.Cause != events.ValveClosedExpired {
		t.Fatalf("valve at %s, past its expiry %s: %+v; want closed as expired", w.now, expires, v)
	}
	closed := w.ofType("banner", events.TypeValveClosed)
	if len(closed) != 1 || closed[0].Actor != guard.Actor || closed[0].Reason == "" {
		t.Fatalf("close events %+v; want one by the guard with a reason", closed)
	}
	if got := serves(t, eval, "banner"); got != "full" {
		t.Fatalf("expired valve serves %q, want full", got)
	}
	w.tick()
	if n := len(w.ofType("banner", events.TypeValveClosed)); n != 1 {
		t.Fatalf("%d close events after another tick, want 1", n)
	}
}

func TestRunnerLive(t *testing.T) {
	w := newWorld(t)
	w.createFlag("cart")
	w.startRollout("cart", w.plan(events.OnTripKill))
	if _, ok := w.guard.Live(testEnv, "cart"); ok {
		t.Fatal("Live answers before the guard saw the rollout")
	}
	for range 3 {
		w.traffic("cart", 4000, 0.01, 0.01)
		w.tick()
	}
	got, ok := w.guard.Live(testEnv, "cart")
	if !ok {
		t.Fatal("Live does not answer for a judged rollout")
	}
	st, isStatus := got.(guard.Status)
	rec := w.evidence[testEnv+"/cart"]
	last := rec[len(rec)-1]
	f := w.flag("cart")
	if !isStatus || !st.Acting || st.State != last.StateAfter || st.Stage != 0 || st.Latest == nil ||
		st.Latest.DecisionID != last.DecisionID || st.Decision != f.Rollout.Guard.Decision || !st.NextTick.Equal(w.now.Add(15*time.Second)) {
		t.Fatalf("Live = %+v; want the latest evidence %s (%s), decision event %s, next tick %s",
			got, last.DecisionID, last.StateAfter, f.Rollout.Guard.Decision, w.now.Add(15*time.Second))
	}
	for _, c := range []struct{ env, flag string }{{testEnv, "nope"}, {"staging", "cart"}} {
		if _, ok := w.guard.Live(c.env, c.flag); ok {
			t.Errorf("Live(%s, %s) answers", c.env, c.flag)
		}
	}
}

// commander is the guard's [guard.Commands] at the boundary of the write path whose fail
// function may fail a command before it reaches the service, as a lost connection would.
type commander struct {
	next guard.Commands
	fail func(c command.Command) error
}

func (c *commander) Handle(ctx context.Context, cmd command.Command) (command.Result, error) {
	if c.fail != nil {
		if err := c.fail(cmd); err != nil {
			return command.Result{}, err
		}
	}
	return c.next.Handle(ctx, cmd)
}

// A clock that moves on between the guard's reads, as a real one does, must not hide the scrape
// the guard takes in the same tick from the decision of that tick.
func TestRunnerReadsItsOwnTicksScrape(t *testing.T) {
	w := newWorld(t)
	var reads int
	w.useGuard(func(o *guard.RunnerOptions) {
		o.Now = func() time.Time {
			reads++
			return w.now.Add(time.Duration(reads) * time.Millisecond)
		}
	})
	w.createFlag("cart")
	w.startRollout("cart", w.plan(events.OnTripKill))
	for range 3 {
		w.traffic("cart", 4000, 0.01, 0.01)
		w.tick()
	}
	for _, ev := range w.calls("cart", guard.CallDecide) {
		if ev.StateAfter == guard.StateBlind {
			t.Fatalf("decision at %s is BLIND: %s", ev.Time, ev.Metrics[0].Blind)
		}
	}
	d := w.calls("cart", guard.CallDecide)
	if last := d[len(d)-1].Metrics[0].Control.Requests.Value; float64(last) != w.counters.get("requests_total", "cart", "off") {
		t.Fatalf("the last decision read %v control requests, the endpoint had %v: it read an older scrape",
			last, w.counters.get("requests_total", "cart", "off"))
	}
}

// A command of a trip that failed on the way to the write path (a lost connection) is sent again
// on the next tick, although the rollout is latched by then: a confirmed trip is never lost.
func TestRunnerRetriesFailedTripCommands(t *testing.T) {
	for _, c := range []struct {
		fail   string // the command's name
		onTrip string
		stage  int
		acted  string
	}{
		{"record decision", events.OnTripKill, 0, events.TypeFlagKilled},
		{"kill", events.OnTripKill, 0, events.TypeFlagKilled},
		{"step back rollout", events.OnTripStepBack, 1, events.TypeRolloutSteppedBack},
		{"pause rollout", events.OnTripFreeze, 0, events.TypeRolloutPaused},
	} {
		t.Run(c.fail, func(t *testing.T) {
			w := newWorld(t)
			failed := 0
			w.useGuard(func(o *guard.RunnerOptions) {
				o.Commands = &commander{next: w.svc, fail: func(cmd command.Command) error {
					rec, isRecord := cmd.(command.RecordDecision)
					if cmd.Name() != c.fail || failed > 0 || isRecord && rec.Decision.StateAfter != string(guard.StateTripped) {
						return nil
					}
					failed++
					return errors.New("nats: connection closed")
				}}
			})
			w.createFlag("search")
			w.startRollout("search", w.plan(c.onTrip))
			for s := range c.stage {
				w.advanceByHand("search", s)
			}
			for range 3 {
				w.traffic("search", 4000, 0.01, 0.01)
				w.tick()
			}
			var tickErr error
			for i := 0; i < 40 && failed == 0; i++ {
				w.traffic("search", 4000, 0.20, 0.01)
				w.now = w.now.Add(15 * time.Second)
				tickErr = w.guard.Tick(w.ctx)
				w.sync()
			}
			if failed == 0 || tickErr == nil {
				t.Fatalf("the trip's %s never failed (tick error %v)", c.fail, tickErr)
			}
			if n := len(w.ofType("search", c.acted)); n != 0 {
				t.Fatalf("%d %s events although the command failed", n, c.acted)
			}
			w.tick()
			f := w.flag("search")
			decisions := w.ofType("search", events.TypeGuardDecided)
			acted := w.ofType("search", c.acted)
			if !f.Rollout.Guard.Tripped || len(acted) != 1 {
				t.Fatalf("the tick after the failure: guard %+v, %d %s events; want the trip recorded and acted on once",
					f.Rollout.Guard, len(acted), c.acted)
			}
			checkCaused(t, acted[0], decisions[len(decisions)-1], f.Rollout.ID)
			if d := decided(t, decisions[len(decisions)-1]); d.StateAfter != string(guard.StateTripped) {
				t.Fatalf("last decision %+v, want the trip", d)
			}
		})
	}
}
