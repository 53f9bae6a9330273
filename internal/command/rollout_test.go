package command_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/interlock-dev/interlock/events"
	"github.com/interlock-dev/interlock/guard"
	"github.com/interlock-dev/interlock/guard/source"
	"github.com/interlock-dev/interlock/internal/command"
	"github.com/interlock-dev/interlock/internal/natstest"
	"github.com/interlock-dev/interlock/projections"
	"github.com/interlock-dev/interlock/targeting"
)

// guardMeta is how the guard signs what it does: its decision is the causation.
var guardMeta = command.Meta{Actor: "guard", Reason: "stage healthy", CorrelationID: "tick-7", CausationID: "decision-1"}

// rampConfig is an enabled string flag with a control and a treatment, serving the control.
func rampConfig() events.FlagConfig {
	return events.FlagConfig{
		Kind:           events.KindRelease,
		Variants:       map[string]json.RawMessage{"control": json.RawMessage(`"old"`), "treatment": json.RawMessage(`"new"`), "spare": json.RawMessage(`"x"`)},
		DefaultVariant: "control",
		OffVariant:     "control",
		Enabled:        true,
		Rules: []events.Rule{{Name: "staff", Conditions: []events.Condition{{Attribute: "staff", Operator: "eq", Values: []any{true}}},
			Serve: events.Serve{Variant: "treatment"}}},
	}
}

// valveConfig is an operational flag that a valve can degrade.
func valveConfig() events.FlagConfig {
	return events.FlagConfig{
		Kind:           events.KindOperational,
		Variants:       map[string]json.RawMessage{"full": json.RawMessage(`"full"`), "degraded": json.RawMessage(`"degraded"`)},
		DefaultVariant: "full",
		OffVariant:     "degraded",
		Enabled:        true,
	}
}

func rampPlan() events.RolloutPlan {
	return events.RolloutPlan{
		Treatment: "treatment", Control: "control",
		Metrics: []events.RolloutMetric{{Name: "errors", Requests: "requests_total", Errors: "errors_total"}},
		Source:  events.MetricSource{Type: events.SourcePrometheus, URL: "http://prometheus:9090"},
	}
}

func split(t int) *events.Serve {
	return &events.Serve{Split: map[string]int{"treatment": t, "control": 10000 - t}}
}

// unchanged runs fn and fails unless it wrote nothing to the stream.
func unchanged(t *testing.T, st *events.Store, fn func()) {
	t.Helper()
	before := streamLen(t, st)
	fn()
	if after := streamLen(t, st); after != before {
		t.Fatalf("wrote %d events", after-before)
	}
}

// last is the flag's last stored event.
func last(t *testing.T, st *events.Store, key string) events.Event {
	t.Helper()
	evs := load(t, st, key)
	return evs[len(evs)-1]
}

// checkFold fails unless f is the fold of the flag's stored events.
func checkFold(t *testing.T, st *events.Store, f projections.Flag) {
	t.Helper()
	want, err := projections.Fold(load(t, st, f.Key))
	if err != nil {
		t.Fatal(err)
	}
	a, _ := json.Marshal(f)
	b, _ := json.Marshal(want)
	if string(a) != string(b) || f.Sequence != want.Sequence {
		t.Fatalf("returned state is not the fold of the stream:\n got %s\nwant %s", a, b)
	}
}

// newRollout creates the flag key and a rollout of it, and returns the rollout's id.
func newRollout(t *testing.T, svc *command.Service, key string, start bool) string {
	t.Helper()
	ctx := context.Background()
	mustCreate(t, svc, key, rampConfig())
	f, err := flagOf(svc.Handle(ctx, command.CreateRollout{Meta: alice, Env: env, Key: key, ExpectedVersion: 0, Plan: rampPlan()}))
	if err != nil {
		t.Fatal(err)
	}
	if start {
		if _, err := svc.Handle(ctx, command.StartRollout{Meta: alice, RolloutTarget: command.RolloutTarget{Env: env, Key: key, ID: f.Rollout.ID}}); err != nil {
			t.Fatal(err)
		}
	}
	return f.Rollout.ID
}

func TestRolloutLifecycle(t *testing.T) {
	st, svc := setup(t)
	ctx := context.Background()
	const key = "checkout.redesign"
	mustCreate(t, svc, key, rampConfig())

	f, err := flagOf(svc.Handle(ctx, command.CreateRollout{Meta: alice, Env: env, Key: key, ExpectedVersion: 1, Plan: rampPlan()}))
	if err != nil {
		t.Fatal(err)
	}
	r := f.Rollout
	if r == nil || r.ID == "" || r.Status != projections.RolloutCreated || f.Version != 2 || f.DefaultServe != nil {
		t.Fatalf("created: %+v %+v", f, r)
	}
	id := r.ID
	created := payload[events.RolloutCreated](t, last(t, st, key))
	if created.ID != id || !reflect.DeepEqual(created.Plan, rampPlan().WithDefaults()) {
		t.Fatalf("created event %+v", created)
	}

	f, err = flagOf(svc.Handle(ctx, command.StartRollout{Meta: alice, RolloutTarget: command.RolloutTarget{Env: env, Key: key, ID: id, ExpectedVersion: 2}}))
	if err != nil {
		t.Fatal(err)
	}
	if f.Rollout.Status != projections.RolloutRunning || f.Rollout.Stage != 0 || !reflect.DeepEqual(f.DefaultServe, split(100)) {
		t.Fatalf("started: %+v serving %+v", f.Rollout, f.DefaultServe)
	}
	if f.Rollout.StageVersion != 3 {
		t.Fatalf("stage version %d", f.Rollout.StageVersion)
	}
	unchanged(t, st, func() {
		if g, err := flagOf(svc.Handle(ctx, command.StartRollout{Meta: alice, RolloutTarget: command.RolloutTarget{Env: env, Key: key, ID: id}})); err != nil || g.Version != 3 {
			t.Fatalf("start again: %v at %d", err, g.Version)
		}
	})

	// The guard advances from stage 0; the event says who, why and on which decision.
	f, err = flagOf(svc.Handle(ctx, command.AdvanceRollout{Meta: guardMeta, RolloutTarget: command.RolloutTarget{Env: env, Key: key, ID: id}, From: 0}))
	if err != nil {
		t.Fatal(err)
	}
	if f.Rollout.Stage != 1 || !reflect.DeepEqual(f.DefaultServe, split(500)) {
		t.Fatalf("advanced: %+v serving %+v", f.Rollout, f.DefaultServe)
	}
	ev := last(t, st, key)
	adv := payload[events.RolloutAdvanced](t, ev)
	if ev.Type != events.TypeRolloutAdvanced || ev.Actor != "guard" || ev.Reason != "stage healthy" || ev.CausationID != "decision-1" || ev.CorrelationID != "tick-7" {
		t.Fatalf("advance event %+v", ev)
	}
	if !reflect.DeepEqual(*adv, events.RolloutAdvanced{ID: id, From: 0, To: 1, Serve: *split(500)}) {
		t.Fatalf("advance payload %+v", adv)
	}
	unchanged(t, st, func() {
		if g, err := flagOf(svc.Handle(ctx, command.AdvanceRollout{Meta: guardMeta, RolloutTarget: command.RolloutTarget{Env: env, Key: key, ID: id}, From: 0})); err != nil || g.Rollout.Stage != 1 {
			t.Fatalf("advance from 0 again: %v at stage %d", err, g.Rollout.Stage)
		}
	})

	f, err = flagOf(svc.Handle(ctx, command.PauseRollout{Meta: alice, RolloutTarget: command.RolloutTarget{Env: env, Key: key, ID: id}}))
	if err != nil || f.Rollout.Status != projections.RolloutPaused {
		t.Fatalf("pause: %v %+v", err, f.Rollout)
	}
	unchanged(t, st, func() {
		if _, err := svc.Handle(ctx, command.PauseRollout{Meta: alice, RolloutTarget: command.RolloutTarget{Env: env, Key: key, ID: id}}); err != nil {
			t.Fatal(err)
		}
	})
	// A person may advance a paused rollout by hand; it stays paused.
	f, err = flagOf(svc.Handle(ctx, command.AdvanceRollout{Meta: alice, RolloutTarget: command.RolloutTarget{Env: env, Key: key, ID: id}, From: -1}))
	if err != nil || f.Rollout.Stage != 2 || f.Rollout.Status != projections.RolloutPaused || !reflect.DeepEqual(f.DefaultServe, split(2500)) {
		t.Fatalf("advance while paused: %v %+v", err, f.Rollout)
	}
	f, err = flagOf(svc.Handle(ctx, command.ResumeRollout{Meta: alice, RolloutTarget: command.RolloutTarget{Env: env, Key: key, ID: id}}))
	if err != nil || f.Rollout.Status != projections.RolloutRunning || f.Rollout.StageVersion != f.Version {
		t.Fatalf("resume: %v %+v", err, f.Rollout)
	}
	unchanged(t, st, func() {
		if _, err := svc.Handle(ctx, command.ResumeRollout{Meta: alice, RolloutTarget: command.RolloutTarget{Env: env, Key: key, ID: id}}); err != nil {
			t.Fatal(err)
		}
	})

	f, err = flagOf(svc.Handle(ctx, command.StepBackRollout{Meta: alice, RolloutTarget: command.RolloutTarget{Env: env, Key: key, ID: id}, From: 2}))
	if err != nil || f.Rollout.Stage != 1 || !reflect.DeepEqual(f.DefaultServe, split(500)) {
		t.Fatalf("step back: %v %+v", err, f.Rollout)
	}
	if sb := payload[events.RolloutSteppedBack](t, last(t, st, key)); sb.From != 2 || sb.To != 1 {
		t.Fatalf("step back payload %+v", sb)
	}
	unchanged(t, st, func() {
		if g, err := flagOf(svc.Handle(ctx, command.StepBackRollout{Meta: alice, RolloutTarget: command.RolloutTarget{Env: env, Key: key, ID: id}, From: 2})); err != nil || g.Rollout.Stage != 1 {
			t.Fatalf("step back from 2 again: %v", err)
		}
	})

	// Up to the last stage (100%), then complete.
	for from, want := range []*events.Serve{nil, split(2500), split(5000), split(9500), {Variant: "treatment"}} {
		if from == 0 {
			continue
		}
		f, err = flagOf(svc.Handle(ctx, command.AdvanceRollout{Meta: guardMeta, RolloutTarget: command.RolloutTarget{Env: env, Key: key, ID: id}, From: from}))
		if err != nil || f.Rollout.Stage != from+1 || !reflect.DeepEqual(f.DefaultServe, want) {
			t.Fatalf("advance from %d: %v %+v serving %+v", from, err, f.Rollout, f.DefaultServe)
		}
	}
	f, err = flagOf(svc.Handle(ctx, command.AdvanceRollout{Meta: guardMeta, RolloutTarget: command.RolloutTarget{Env: env, Key: key, ID: id}, From: 5}))
	if err != nil || f.Rollout.Status != projections.RolloutCompleted || !reflect.DeepEqual(f.DefaultServe, &events.Serve{Variant: "treatment"}) {
		t.Fatalf("complete: %v %+v serving %+v", err, f.Rollout, f.DefaultServe)
	}
	if ev := last(t, st, key); ev.Type != events.TypeRolloutCompleted || ev.CausationID != "decision-1" {
		t.Fatalf("completion event %+v", ev)
	}
	unchanged(t, st, func() {
		for _, from := range []int{5, 4, 0, -1} {
			if g, err := flagOf(svc.Handle(ctx, command.AdvanceRollout{Meta: guardMeta, RolloutTarget: command.RolloutTarget{Env: env, Key: key, ID: id}, From: from})); err != nil || g.Rollout.Status != projections.RolloutCompleted {
				t.Fatalf("advance from %d after completion: %v", from, err)
			}
		}
	})
	// The rules of the flag were never touched.
	if !reflect.DeepEqual(f.Rules, rampConfig().Rules) {
		t.Fatalf("rules %+v", f.Rules)
	}
	checkFold(t, st, f)

	// A finished rollout no longer owns the default serve, and a new one may be created.
	if _, err := svc.Handle(ctx, command.UpdateFlag{Meta: alice, Env: env, Key: key, ExpectedVersion: 0, Patch: []byte(`{"defaultServe":null}`)}); err != nil {
		t.Fatal(err)
	}
	f, err = flagOf(svc.Handle(ctx, command.CreateRollout{Meta: alice, Env: env, Key: key, ExpectedVersion: 0, Plan: rampPlan()}))
	if err != nil || f.Rollout.ID == id || f.Rollout.Status != projections.RolloutCreated {
		t.Fatalf("second rollout: %v %+v", err, f.Rollout)
	}
}

func TestRolloutAbort(t *testing.T) {
	st, svc := setup(t)
	ctx := context.Background()

	t.Run("running", func(t *testing.T) {
		id := newRollout(t, svc, "running", true)
		if _, err := svc.Handle(ctx, command.AdvanceRollout{Meta: alice, RolloutTarget: command.RolloutTarget{Env: env, Key: "running", ID: id}, From: 0}); err != nil {
			t.Fatal(err)
		}
		f, err := flagOf(svc.Handle(ctx, command.AbortRollout{Meta: alice, RolloutTarget: command.RolloutTarget{Env: env, Key: "running", ID: id}}))
		if err != nil || f.Rollout.Status != projections.RolloutAborted || !reflect.DeepEqual(f.DefaultServe, &events.Serve{Variant: "control"}) {
			t.Fatalf("abort: %v %+v serving %+v", err, f.Rollout, f.DefaultServe)
		}
		unchanged(t, st, func() {
			if _, err := svc.Handle(ctx, command.AbortRollout{Meta: alice, RolloutTarget: command.RolloutTarget{Env: env, Key: "running", ID: id}}); err != nil {
				t.Fatal(err)
			}
			// Advancing an aborted rollout from where it stopped is refused, not a silent no-op;
			// from an earlier stage it is (that advance happened).
			_, err := svc.Handle(ctx, command.AdvanceRollout{Meta: alice, RolloutTarget: command.RolloutTarget{Env: env, Key: "running", ID: id}, From: 1})
			checkErr(t, err, command.ErrRolloutState)
			if _, err := svc.Handle(ctx, command.AdvanceRollout{Meta: alice, RolloutTarget: command.RolloutTarget{Env: env, Key: "running", ID: id}, From: 0}); err != nil {
				t.Fatal(err)
			}
		})
		checkFold(t, st, f)
	})
	t.Run("paused", func(t *testing.T) {
		id := newRollout(t, svc, "paused", true)
		if _, err := svc.Handle(ctx, command.PauseRollout{Meta: alice, RolloutTarget: command.RolloutTarget{Env: env, Key: "paused", ID: id}}); err != nil {
			t.Fatal(err)
		}
		f, err := flagOf(svc.Handle(ctx, command.AbortRollout{Meta: alice, RolloutTarget: command.RolloutTarget{Env: env, Key: "paused", ID: id}}))
		if err != nil || f.Rollout.Status != projections.RolloutAborted || f.DefaultServe.Variant != "control" {
			t.Fatalf("abort: %v %+v", err, f.Rollout)
		}
	})
	t.Run("before the start", func(t *testing.T) {
		cfg := rampConfig()
		cfg.DefaultServe = &events.Serve{Split: map[string]int{"treatment": 1, "control": 1}}
		mustCreate(t, svc, "created", cfg)
		f, err := flagOf(svc.Handle(ctx, command.CreateRollout{Meta: alice, Env: env, Key: "created", ExpectedVersion: 0, Plan: rampPlan()}))
		if err != nil {
			t.Fatal(err)
		}
		f, err = flagOf(svc.Handle(ctx, command.AbortRollout{Meta: alice, RolloutTarget: command.RolloutTarget{Env: env, Key: "created", ID: f.Rollout.ID}}))
		if err != nil || f.Rollout.Status != projections.RolloutAborted {
			t.Fatalf("abort: %v %+v", err, f.Rollout)
		}
		if !reflect.DeepEqual(f.DefaultServe, cfg.DefaultServe) {
			t.Fatalf("aborting a rollout that never started changed the default serve to %+v", f.DefaultServe)
		}
		checkFold(t, st, f)
	})
	t.Run("completed", func(t *testing.T) {
		mustCreate(t, svc, "done", rampConfig())
		plan := rampPlan()
		plan.Stages = []events.Stage{{Percent: 100}}
		f, err := flagOf(svc.Handle(ctx, command.CreateRollout{Meta: alice, Env: env, Key: "done", ExpectedVersion: 0, Plan: plan}))
		if err != nil {
			t.Fatal(err)
		}
		id := f.Rollout.ID
		if f, err = flagOf(svc.Handle(ctx, command.StartRollout{Meta: alice, RolloutTarget: command.RolloutTarget{Env: env, Key: "done", ID: id}})); err != nil || f.DefaultServe.Variant != "treatment" {
			t.Fatalf("start at 100%%: %v %+v", err, f.DefaultServe)
		}
		if f, err = flagOf(svc.Handle(ctx, command.AdvanceRollout{Meta: alice, RolloutTarget: command.RolloutTarget{Env: env, Key: "done", ID: id}, From: 0})); err != nil || f.Rollout.Status != projections.RolloutCompleted {
			t.Fatalf("complete: %v %+v", err, f.Rollout)
		}
		unchanged(t, st, func() {
			_, err := svc.Handle(ctx, command.AbortRollout{Meta: alice, RolloutTarget: command.RolloutTarget{Env: env, Key: "done", ID: id}})
			checkErr(t, err, command.ErrRolloutState)
		})
	})
}

// TestRolloutRefusals: every refusal writes nothing and says why.
func TestRolloutRefusals(t *testing.T) {
	st, svc := setup(t)
	ctx := context.Background()
	noReason := command.Meta{Actor: "alice"}
	mustCreate(t, svc, "plain", rampConfig())
	created := newRollout(t, svc, "created", false)
	running := newRollout(t, svc, "running", true)
	if _, err := svc.Handle(ctx, command.AdvanceRollout{Meta: alice, RolloutTarget: command.RolloutTarget{Env: env, Key: "running", ID: running}, From: 0}); err != nil { // at stage 1, version 4
		t.Fatal(err)
	}
	paused := newRollout(t, svc, "paused", true)
	if _, err := svc.Handle(ctx, command.PauseRollout{Meta: alice, RolloutTarget: command.RolloutTarget{Env: env, Key: "paused", ID: paused}}); err != nil {
		t.Fatal(err)
	}
	tripped := newRollout(t, svc, "tripped", true)
	if _, err := svc.Handle(ctx, command.AdvanceRollout{Meta: alice, RolloutTarget: command.RolloutTarget{Env: env, Key: "tripped", ID: tripped}, From: 0}); err != nil {
		t.Fatal(err)
	}
	if _, err := flagOf(svc.Handle(ctx, command.RecordDecision{Meta: guardMeta, Env: env, Key: "tripped", ExpectedVersion: 0, Decision: events.GuardDecided{Rollout: tripped, Stage: 1,
		StateBefore: "HEALTHY", StateAfter: "TRIPPED", Action: "stepBack", Cause: "R1", Evidence: json.RawMessage(`{}`)}})); err != nil {
		t.Fatal(err)
	}
	aborted := newRollout(t, svc, "aborted", true)
	if _, err := svc.Handle(ctx, command.AbortRollout{Meta: alice, RolloutTarget: command.RolloutTarget{Env: env, Key: "aborted", ID: aborted}}); err != nil {
		t.Fatal(err)
	}
	archived := newRollout(t, svc, "archived", true)
	if _, err := svc.Handle(ctx, command.ArchiveFlag{Meta: alice, Env: env, Key: "archived"}); err != nil {
		t.Fatal(err)
	}
	mustCreate(t, svc, "valve", valveConfig())
	badPlan := rampPlan()
	badPlan.Treatment = "nope"
	valvePlan := rampPlan()
	valvePlan.OnTrip, valvePlan.Valve = events.OnTripOpenValve, &events.ValveRef{Flag: "valve"}
	missingValve := rampPlan()
	missingValve.Valve = &events.ValveRef{Flag: "nowhere"}

	for _, tc := range []struct {
		name  string
		run   func() error
		want  error
		field string
	}{
		{"start without rollout", func() error {
			_, err := svc.Handle(ctx, command.StartRollout{Meta: alice, RolloutTarget: command.RolloutTarget{Env: env, Key: "plain", ID: ""}})
			return err
		}, command.ErrNoRollout, ""},
		{"pause without rollout", func() error {
			_, err := svc.Handle(ctx, command.PauseRollout{Meta: alice, RolloutTarget: command.RolloutTarget{Env: env, Key: "plain", ID: ""}})
			return err
		}, command.ErrNoRollout, ""},
		{"resume without rollout", func() error {
			_, err := svc.Handle(ctx, command.ResumeRollout{Meta: alice, RolloutTarget: command.RolloutTarget{Env: env, Key: "plain", ID: ""}})
			return err
		}, command.ErrNoRollout, ""},
		{"advance without rollout", func() error {
			_, err := svc.Handle(ctx, command.AdvanceRollout{Meta: alice, RolloutTarget: command.RolloutTarget{Env: env, Key: "plain", ID: ""}, From: 0})
			return err
		}, command.ErrNoRollout, ""},
		{"step back without rollout", func() error {
			_, err := svc.Handle(ctx, command.StepBackRollout{Meta: alice, RolloutTarget: command.RolloutTarget{Env: env, Key: "plain", ID: ""}, From: 1})
			return err
		}, command.ErrNoRollout, ""},
		{"abort without rollout", func() error {
			_, err := svc.Handle(ctx, command.AbortRollout{Meta: alice, RolloutTarget: command.RolloutTarget{Env: env, Key: "plain", ID: ""}})
			return err
		}, command.ErrNoRollout, ""},
		{"rearm without rollout", func() error {
			_, err := svc.Handle(ctx, command.Rearm{Meta: alice, RolloutTarget: command.RolloutTarget{Env: env, Key: "plain", ID: ""}})
			return err
		}, command.ErrNoRollout, ""},
		{"decision without rollout", func() error {
			_, err := svc.Handle(ctx, command.RecordDecision{Meta: guardMeta, Env: env, Key: "plain", ExpectedVersion: 0, Decision: events.GuardDecided{Rollout: "r", StateAfter: "HEALTHY", Action: "none"}})
			return err
		}, command.ErrNoRollout, ""},
		{"another rollout's id", func() error {
			_, err := svc.Handle(ctx, command.AdvanceRollout{Meta: alice, RolloutTarget: command.RolloutTarget{Env: env, Key: "running", ID: created}, From: 1})
			return err
		}, command.ErrNoRollout, ""},
		{"decision about another rollout", func() error {
			_, err := svc.Handle(ctx, command.RecordDecision{Meta: guardMeta, Env: env, Key: "running", ExpectedVersion: 0, Decision: events.GuardDecided{Rollout: created, StateAfter: "HEALTHY", Action: "none"}})
			return err
		}, command.ErrNoRollout, ""},
		{"no such flag", func() error {
			_, err := svc.Handle(ctx, command.AdvanceRollout{Meta: alice, RolloutTarget: command.RolloutTarget{Env: env, Key: "nothing", ID: ""}, From: 0})
			return err
		}, command.ErrNotFound, ""},

		{"start a paused rollout", func() error {
			_, err := svc.Handle(ctx, command.StartRollout{Meta: alice, RolloutTarget: command.RolloutTarget{Env: env, Key: "paused", ID: paused}})
			return err
		}, command.ErrRolloutState, ""},
		{"start an aborted rollout", func() error {
			_, err := svc.Handle(ctx, command.StartRollout{Meta: alice, RolloutTarget: command.RolloutTarget{Env: env, Key: "aborted", ID: aborted}})
			return err
		}, command.ErrRolloutState, ""},
		{"pause a created rollout", func() error {
			_, err := svc.Handle(ctx, command.PauseRollout{Meta: alice, RolloutTarget: command.RolloutTarget{Env: env, Key: "created", ID: created}})
			return err
		}, command.ErrRolloutState, ""},
		{"pause an aborted rollout", func() error {
			_, err := svc.Handle(ctx, command.PauseRollout{Meta: alice, RolloutTarget: command.RolloutTarget{Env: env, Key: "aborted", ID: ""}})
			return err
		}, command.ErrRolloutState, ""},
		{"resume a created rollout", func() error {
			_, err := svc.Handle(ctx, command.ResumeRollout{Meta: alice, RolloutTarget: command.RolloutTarget{Env: env, Key: "created", ID: created}})
			return err
		}, command.ErrRolloutState, ""},
		{"advance a created rollout", func() error {
			_, err := svc.Handle(ctx, command.AdvanceRollout{Meta: alice, RolloutTarget: command.RolloutTarget{Env: env, Key: "created", ID: created}, From: 0})
			return err
		}, command.ErrRolloutState, ""},
		{"advance from ahead", func() error {
			_, err := svc.Handle(ctx, command.AdvanceRollout{Meta: alice, RolloutTarget: command.RolloutTarget{Env: env, Key: "running", ID: running}, From: 2})
			return err
		}, command.ErrRolloutState, ""},
		{"advance an aborted rollout", func() error {
			_, err := svc.Handle(ctx, command.AdvanceRollout{Meta: alice, RolloutTarget: command.RolloutTarget{Env: env, Key: "aborted", ID: aborted}, From: -1})
			return err
		}, command.ErrRolloutState, ""},
		{"step back from the first stage", func() error {
			_, err := svc.Handle(ctx, command.StepBackRollout{Meta: alice, RolloutTarget: command.RolloutTarget{Env: env, Key: "paused", ID: paused}, From: 0})
			return err
		}, command.ErrRolloutState, ""},
		{"step back from behind", func() error {
			_, err := svc.Handle(ctx, command.StepBackRollout{Meta: alice, RolloutTarget: command.RolloutTarget{Env: env, Key: "running", ID: running}, From: 0})
			return err
		}, command.ErrRolloutState, ""},
		{"step back from a stage the plan lacks", func() error {
			_, err := svc.Handle(ctx, command.StepBackRollout{Meta: alice, RolloutTarget: command.RolloutTarget{Env: env, Key: "running", ID: running}, From: 9})
			return err
		}, command.ErrRolloutState, ""},
		{"step back a created rollout", func() error {
			_, err := svc.Handle(ctx, command.StepBackRollout{Meta: alice, RolloutTarget: command.RolloutTarget{Env: env, Key: "created", ID: created}, From: -1})
			return err
		}, command.ErrRolloutState, ""},
		{"rearm an untripped guard", func() error {
			_, err := svc.Handle(ctx, command.Rearm{Meta: alice, RolloutTarget: command.RolloutTarget{Env: env, Key: "running", ID: running}})
			return err
		}, command.ErrRolloutState, ""},
		{"decision about a finished rollout", func() error {
			_, err := svc.Handle(ctx, command.RecordDecision{Meta: guardMeta, Env: env, Key: "aborted", ExpectedVersion: 0, Decision: events.GuardDecided{Rollout: aborted, StateAfter: "HEALTHY", Action: "none"}})
			return err
		}, command.ErrRolloutState, ""},

		{"advance while tripped", func() error {
			_, err := svc.Handle(ctx, command.AdvanceRollout{Meta: guardMeta, RolloutTarget: command.RolloutTarget{Env: env, Key: "tripped", ID: tripped}, From: 1})
			return err
		}, command.ErrTripped, ""},
		{"advance the current stage while tripped", func() error {
			_, err := svc.Handle(ctx, command.AdvanceRollout{Meta: alice, RolloutTarget: command.RolloutTarget{Env: env, Key: "tripped", ID: ""}, From: -1})
			return err
		}, command.ErrTripped, ""},

		{"second rollout while running", func() error {
			_, err := svc.Handle(ctx, command.CreateRollout{Meta: alice, Env: env, Key: "running", ExpectedVersion: 0, Plan: rampPlan()})
			return err
		}, command.ErrRolloutActive, ""},
		{"second rollout while paused", func() error {
			_, err := svc.Handle(ctx, command.CreateRollout{Meta: alice, Env: env, Key: "paused", ExpectedVersion: 0, Plan: rampPlan()})
			return err
		}, command.ErrRolloutActive, ""},
		{"update the default serve", func() error {
			_, err := svc.Handle(ctx, command.UpdateFlag{Meta: alice, Env: env, Key: "running", ExpectedVersion: 0, Patch: []byte(`{"defaultServe":{"split":null,"variant":"treatment"}}`)})
			return err
		}, command.ErrRolloutActive, ""},
		{"drop the default serve while paused", func() error {
			_, err := svc.Handle(ctx, command.UpdateFlag{Meta: alice, Env: env, Key: "paused", ExpectedVersion: 0, Patch: []byte(`{"defaultServe":null}`)})
			return err
		}, command.ErrRolloutActive, ""},
		{"restore a version before the rollout", func() error {
			_, err := svc.Handle(ctx, command.RestoreFlag{Meta: alice, Env: env, Key: "running", ToVersion: 1})
			return err
		}, command.ErrRolloutActive, ""},

		{"open a flag that is no valve", func() error {
			_, err := svc.Handle(ctx, command.OpenValve{Meta: alice, Env: env, Key: "plain", Expires: time.Time{}})
			return err
		}, command.ErrNotValve, ""},
		{"close a flag that is no valve", func() error {
			_, err := svc.Handle(ctx, command.CloseValve{Meta: alice, Env: env, Key: "plain", Cause: events.ValveClosedManual, Evidence: nil})
			return err
		}, command.ErrNotValve, ""},
		{"plan naming an unconfigured valve", func() error {
			_, err := svc.Handle(ctx, command.CreateRollout{Meta: alice, Env: env, Key: "plain", ExpectedVersion: 0, Plan: valvePlan})
			return err
		}, command.ErrNotValve, ""},
		{"plan naming a missing valve", func() error {
			_, err := svc.Handle(ctx, command.CreateRollout{Meta: alice, Env: env, Key: "plain", ExpectedVersion: 0, Plan: missingValve})
			return err
		}, command.ErrNotValve, ""},

		{"advance without a reason", func() error {
			_, err := svc.Handle(ctx, command.AdvanceRollout{Meta: noReason, RolloutTarget: command.RolloutTarget{Env: env, Key: "running", ID: running}, From: 1})
			return err
		}, events.ErrInvalid, "reason"},
		{"step back without a reason", func() error {
			_, err := svc.Handle(ctx, command.StepBackRollout{Meta: noReason, RolloutTarget: command.RolloutTarget{Env: env, Key: "running", ID: running}, From: 1})
			return err
		}, events.ErrInvalid, "reason"},
		{"abort without a reason", func() error {
			_, err := svc.Handle(ctx, command.AbortRollout{Meta: noReason, RolloutTarget: command.RolloutTarget{Env: env, Key: "running", ID: running}})
			return err
		}, events.ErrInvalid, "reason"},
		{"rearm without a reason", func() error {
			_, err := svc.Handle(ctx, command.Rearm{Meta: noReason, RolloutTarget: command.RolloutTarget{Env: env, Key: "tripped", ID: tripped}})
			return err
		}, events.ErrInvalid, "reason"},
		{"open without a reason", func() error {
			_, err := svc.Handle(ctx, command.OpenValve{Meta: noReason, Env: env, Key: "valve", Expires: time.Time{}})
			return err
		}, events.ErrInvalid, "reason"},
		{"close without a reason", func() error {
			_, err := svc.Handle(ctx, command.CloseValve{Meta: noReason, Env: env, Key: "valve", Cause: events.ValveClosedManual, Evidence: nil})
			return err
		}, events.ErrInvalid, "reason"},
		{"no actor", func() error {
			_, err := svc.Handle(ctx, command.PauseRollout{Meta: command.Meta{}, RolloutTarget: command.RolloutTarget{Env: env, Key: "running", ID: running}})
			return err
		}, events.ErrInvalid, "actor"},
		{"bad plan", func() error {
			_, err := svc.Handle(ctx, command.CreateRollout{Meta: alice, Env: env, Key: "plain", ExpectedVersion: 0, Plan: badPlan})
			return err
		}, events.ErrInvalid, "treatment"},
		{"plan with no metrics", func() error {
			p := rampPlan()
			p.Metrics = nil
			_, err := svc.Handle(ctx, command.CreateRollout{Meta: alice, Env: env, Key: "plain", ExpectedVersion: 0, Plan: p})
			return err
		}, events.ErrInvalid, "metrics"},
		{"decision without a state", func() error {
			_, err := svc.Handle(ctx, command.RecordDecision{Meta: guardMeta, Env: env, Key: "running", ExpectedVersion: 0, Decision: events.GuardDecided{Rollout: running, Action: "none"}})
			return err
		}, events.ErrInvalid, "decision"},
		{"decision with evidence that is not JSON", func() error {
			_, err := svc.Handle(ctx, command.RecordDecision{Meta: guardMeta, Env: env, Key: "running", ExpectedVersion: 0, Decision: events.GuardDecided{Rollout: running, StateAfter: "HEALTHY", Action: "none", Evidence: json.RawMessage(`{"e":`)}})
			return err
		}, events.ErrInvalid, "evidence"},

		{"stale advance", func() error {
			_, err := svc.Handle(ctx, command.AdvanceRollout{Meta: alice, RolloutTarget: command.RolloutTarget{Env: env, Key: "running", ID: running, ExpectedVersion: 3}, From: 1})
			return err
		}, command.ErrStale, ""},
		{"stale create", func() error {
			_, err := svc.Handle(ctx, command.CreateRollout{Meta: alice, Env: env, Key: "plain", ExpectedVersion: 7, Plan: rampPlan()})
			return err
		}, command.ErrStale, ""},
		{"stale start", func() error {
			_, err := svc.Handle(ctx, command.StartRollout{Meta: alice, RolloutTarget: command.RolloutTarget{Env: env, Key: "created", ID: created, ExpectedVersion: 1}})
			return err
		}, command.ErrStale, ""},
		{"stale rearm", func() error {
			_, err := svc.Handle(ctx, command.Rearm{Meta: alice, RolloutTarget: command.RolloutTarget{Env: env, Key: "tripped", ID: tripped, ExpectedVersion: 4}})
			return err
		}, command.ErrStale, ""},

		{"create on an archived flag", func() error {
			_, err := svc.Handle(ctx, command.CreateRollout{Meta: alice, Env: env, Key: "archived", ExpectedVersion: 0, Plan: rampPlan()})
			return err
		}, command.ErrArchived, ""},
		{"advance an archived flag", func() error {
			_, err := svc.Handle(ctx, command.AdvanceRollout{Meta: alice, RolloutTarget: command.RolloutTarget{Env: env, Key: "archived", ID: archived}, From: 0})
			return err
		}, command.ErrArchived, ""},
		{"resume an archived flag", func() error {
			_, err := svc.Handle(ctx, command.ResumeRollout{Meta: alice, RolloutTarget: command.RolloutTarget{Env: env, Key: "archived", ID: archived}})
			return err
		}, command.ErrArchived, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			unchanged(t, st, func() {
				err := tc.run()
				checkErr(t, err, tc.want)
				checkField(t, err, tc.field)
			})
		})
	}

	// A stale version is a *VersionError carrying both versions.
	_, err := svc.Handle(ctx, command.AdvanceRollout{Meta: alice, RolloutTarget: command.RolloutTarget{Env: env, Key: "running", ID: running, ExpectedVersion: 3}, From: 1})
	var ve *command.VersionError
	if !errors.As(err, &ve) || ve.Expected != 3 || ve.Actual != 4 {
		t.Fatalf("stale advance: %v", err)
	}
}

// During an active rollout the flag still changes in every way but its default serve, and each
// change restarts the stage.
func TestUpdateDuringRollout(t *testing.T) {
	st, svc := setup(t)
	ctx := context.Background()
	id := newRollout(t, svc, "ramp", true)
	f, err := flagOf(svc.Handle(ctx, command.UpdateFlag{Meta: alice, Env: env, Key: "ramp", ExpectedVersion: 0, Patch: []byte(`{"description":"tuned","rules":[]}`)}))
	if err != nil {
		t.Fatal(err)
	}
	if f.Description != "tuned" || len(f.Rules) != 0 || !reflect.DeepEqual(f.DefaultServe, split(100)) {
		t.Fatalf("update: %+v", f)
	}
	if f.Rollout.StageVersion != f.Version || f.Rollout.Stage != 0 {
		t.Fatalf("an update did not restart the stage: %+v", f.Rollout)
	}
	// The same default serve, written out, is not a change of it.
	if _, err := svc.Handle(ctx, command.UpdateFlag{Meta: alice, Env: env, Key: "ramp", ExpectedVersion: 0, Patch: []byte(`{"owner":"x","defaultServe":{"split":{"treatment":100,"control":9900}}}`)}); err != nil {
		t.Fatal(err)
	}
	// A restore keeping the rollout's default serve passes.
	if f, err = flagOf(svc.Handle(ctx, command.RestoreFlag{Meta: alice, Env: env, Key: "ramp", ToVersion: 4})); err != nil || f.Description != "tuned" || f.Owner != "" {
		t.Fatalf("restore: %v %+v", err, f)
	}
	// A variant the rollout does not use may go; the treatment and the control may not, even
	// at 100% where the default serve names the treatment alone.
	if f, err = flagOf(svc.Handle(ctx, command.UpdateFlag{Meta: alice, Env: env, Key: "ramp", ExpectedVersion: 0, Patch: []byte(`{"variants":{"spare":null}}`)})); err != nil {
		t.Fatalf("dropping a variant the rollout does not use: %v", err)
	}
	for from := range 5 {
		if f, err = flagOf(svc.Handle(ctx, command.AdvanceRollout{Meta: alice, RolloutTarget: command.RolloutTarget{Env: env, Key: "ramp", ID: id}, From: from})); err != nil {
			t.Fatal(err)
		}
	}
	if f.Rollout.Stage != 5 || f.DefaultServe.Variant != "treatment" {
		t.Fatalf("at the last stage: %+v serving %+v", f.Rollout, f.DefaultServe)
	}
	// (Dropping the treatment fails validation already: the default serve names it.)
	for name, want := range map[string]error{"treatment": events.ErrInvalid, "control": command.ErrRolloutActive} {
		other := map[string]string{"treatment": "control", "control": "treatment"}[name]
		unchanged(t, st, func() {
			_, err := svc.Handle(ctx, command.UpdateFlag{Meta: alice, Env: env, Key: "ramp", ExpectedVersion: 0, Patch: []byte(`{"variants":{"` + name + `":null},"defaultVariant":"` + other + `","offVariant":"` + other + `"}`)})
			checkErr(t, err, want)
		})
	}
	checkFold(t, st, f)
}

// TestAdvanceIdempotentAcrossReplicas: the guards of two replicas (and their retries) all ask to
// advance from the same stage at once; the rollout advances once per stage.
func TestAdvanceIdempotentAcrossReplicas(t *testing.T) {
	srv := natstest.RunServer(t)
	st := openStore(t, srv)
	svcs := []*command.Service{newService(t, st), newService(t, openStore(t, srv))}
	ctx := context.Background()
	id := newRollout(t, svcs[0], "ramp", true)
	// Both replicas have the flag cached before the race.
	for _, svc := range svcs {
		if _, err := svc.Get(ctx, env, "ramp"); err != nil {
			t.Fatal(err)
		}
	}
	const senders = 8
	stages := len(events.DefaultStages())
	for from := range stages {
		var wg sync.WaitGroup
		errs := make(chan error, senders)
		for i := range senders {
			svc := svcs[i%len(svcs)]
			wg.Go(func() {
				m := guardMeta
				m.Actor = fmt.Sprintf("guard-%d", i)
				f, err := flagOf(svc.Handle(ctx, command.AdvanceRollout{Meta: m, RolloutTarget: command.RolloutTarget{Env: env, Key: "ramp", ID: id}, From: from}))
				switch {
				case err != nil:
					errs <- err
				case from == stages-1 && f.Rollout.Status != projections.RolloutCompleted,
					from < stages-1 && f.Rollout.Stage != from+1:
					errs <- fmt.Errorf("sender %d from %d: %+v", i, from, f.Rollout)
				}
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatal(err)
		}
	}
	var advanced, completed []int
	for _, ev := range load(t, st, "ramp") {
		switch ev.Type {
		case events.TypeRolloutAdvanced:
			advanced = append(advanced, payload[events.RolloutAdvanced](t, ev).From)
		case events.TypeRolloutCompleted:
			completed = append(completed, 0)
		}
	}
	if !reflect.DeepEqual(advanced, []int{0, 1, 2, 3, 4}) || len(completed) != 1 {
		t.Fatalf("advanced from %v, completed %d times", advanced, len(completed))
	}
	f, err := svcs[1].Get(ctx, env, "ramp")
	if err != nil {
		t.Fatal(err)
	}
	checkFold(t, st, f)
}

// A replica with a stale cache finds out before it answers a no-op or a refusal.
func TestRolloutStaleReplica(t *testing.T) {
	srv := natstest.RunServer(t)
	st := openStore(t, srv)
	a, b := newService(t, st), newService(t, openStore(t, srv))
	ctx := context.Background()
	id := newRollout(t, a, "ramp", true) // a caches the running rollout at stage 0
	if _, err := b.Handle(ctx, command.AdvanceRollout{Meta: alice, RolloutTarget: command.RolloutTarget{Env: env, Key: "ramp", ID: id}, From: 0}); err != nil {
		t.Fatal(err)
	}
	// a thinks stage 0: "advance from 0" is already done, "step back from 1" is possible.
	unchanged(t, st, func() {
		f, err := flagOf(a.Handle(ctx, command.AdvanceRollout{Meta: alice, RolloutTarget: command.RolloutTarget{Env: env, Key: "ramp", ID: id}, From: 0}))
		if err != nil || f.Rollout.Stage != 1 {
			t.Fatalf("stale advance: %v %+v", err, f.Rollout)
		}
	})
	if _, err := b.Handle(ctx, command.RecordDecision{Meta: guardMeta, Env: env, Key: "ramp", ExpectedVersion: 0, Decision: events.GuardDecided{Rollout: id, Stage: 1, StateAfter: "TRIPPED", Action: "freeze"}}); err != nil {
		t.Fatal(err)
	}
	unchanged(t, st, func() {
		_, err := a.Handle(ctx, command.AdvanceRollout{Meta: alice, RolloutTarget: command.RolloutTarget{Env: env, Key: "ramp", ID: id}, From: 1})
		checkErr(t, err, command.ErrTripped)
	})
	f, err := flagOf(a.Handle(ctx, command.Rearm{Meta: alice, RolloutTarget: command.RolloutTarget{Env: env, Key: "ramp", ID: id}}))
	if err != nil || f.Rollout.Guard.Tripped {
		t.Fatalf("rearm: %v %+v", err, f.Rollout.Guard)
	}
}

func TestGuardDecisionAndRearm(t *testing.T) {
	st, svc := setup(t)
	ctx := context.Background()
	id := newRollout(t, svc, "ramp", true)
	d := events.GuardDecided{Rollout: id, Stage: 0, StateBefore: "WARMUP", StateAfter: "HEALTHY", Action: "none", Cause: "exposure",
		Evidence: json.RawMessage(`{"counts":{"treatment":[120,0],"control":[11880,9]}}`)}
	f, err := flagOf(svc.Handle(ctx, command.RecordDecision{Meta: guardMeta, Env: env, Key: "ramp", ExpectedVersion: 0, Decision: d}))
	if err != nil {
		t.Fatal(err)
	}
	ev := last(t, st, "ramp")
	if f.Rollout.Guard.Decision != ev.ID || f.Rollout.Guard.State != "HEALTHY" || f.Rollout.Guard.Tripped {
		t.Fatalf("guard %+v, decision event %s", f.Rollout.Guard, ev.ID)
	}
	if got := payload[events.GuardDecided](t, ev); string(got.Evidence) != string(d.Evidence) || got.Cause != "exposure" {
		t.Fatalf("stored decision %+v", got)
	}
	// A trip latches; later decisions do not clear it.
	d.StateBefore, d.StateAfter, d.Action = "HEALTHY", "TRIPPED", "freeze"
	if f, err = flagOf(svc.Handle(ctx, command.RecordDecision{Meta: guardMeta, Env: env, Key: "ramp", ExpectedVersion: 0, Decision: d})); err != nil || !f.Rollout.Guard.Tripped {
		t.Fatalf("trip: %v %+v", err, f.Rollout.Guard)
	}
	trip := f.Rollout.Guard.Decision
	d.StateBefore, d.StateAfter, d.Action = "TRIPPED", "HEALTHY", "none"
	if f, err = flagOf(svc.Handle(ctx, command.RecordDecision{Meta: guardMeta, Env: env, Key: "ramp", ExpectedVersion: 0, Decision: d})); err != nil || !f.Rollout.Guard.Tripped {
		t.Fatalf("after the trip: %v %+v", err, f.Rollout.Guard)
	}
	// The guard's own step back goes through while tripped... but there is no stage before 0.
	unchanged(t, st, func() {
		_, err := svc.Handle(ctx, command.StepBackRollout{Meta: command.Meta{Actor: "guard", Reason: "tripped", CausationID: trip}, RolloutTarget: command.RolloutTarget{Env: env, Key: "ramp", ID: id}, From: 0})
		checkErr(t, err, command.ErrRolloutState)
	})
	f, err = flagOf(svc.Handle(ctx, command.Rearm{Meta: alice, RolloutTarget: command.RolloutTarget{Env: env, Key: "ramp", ID: id, ExpectedVersion: f.Version}}))
	if err != nil {
		t.Fatal(err)
	}
	if g := f.Rollout.Guard; g.Tripped || g.State != "WARMUP" || f.Rollout.StageVersion != f.Version {
		t.Fatalf("re-armed: %+v %+v", g, f.Rollout)
	}
	if ev := last(t, st, "ramp"); ev.Type != events.TypeGuardRearmed || ev.Actor != "alice" || ev.Reason != "test" {
		t.Fatalf("rearm event %+v", ev)
	}
	unchanged(t, st, func() {
		_, err := svc.Handle(ctx, command.Rearm{Meta: alice, RolloutTarget: command.RolloutTarget{Env: env, Key: "ramp", ID: id}})
		checkErr(t, err, command.ErrRolloutState)
	})
	if _, err := svc.Handle(ctx, command.AdvanceRollout{Meta: alice, RolloutTarget: command.RolloutTarget{Env: env, Key: "ramp", ID: id}, From: 0}); err != nil {
		t.Fatalf("advance after the re-arm: %v", err)
	}
	// Stepping back while tripped is what the guard does on a trip.
	d.StateBefore, d.StateAfter, d.Action, d.Stage = "HEALTHY", "TRIPPED", "stepBack", 1
	if _, err := svc.Handle(ctx, command.RecordDecision{Meta: guardMeta, Env: env, Key: "ramp", ExpectedVersion: 0, Decision: d}); err != nil {
		t.Fatal(err)
	}
	f, err = flagOf(svc.Handle(ctx, command.StepBackRollout{Meta: guardMeta, RolloutTarget: command.RolloutTarget{Env: env, Key: "ramp", ID: id}, From: 1}))
	if err != nil || f.Rollout.Stage != 0 || !f.Rollout.Guard.Tripped || !reflect.DeepEqual(f.DefaultServe, split(100)) {
		t.Fatalf("step back while tripped: %v %+v", err, f.Rollout)
	}
	checkFold(t, st, f)
}

func TestCreateRolloutWithValve(t *testing.T) {
	_, svc := setup(t)
	ctx := context.Background()
	mustCreate(t, svc, "ramp", rampConfig())
	mustCreate(t, svc, "search.degrade", valveConfig())
	if _, err := svc.Handle(ctx, command.ConfigureValve{Meta: alice, Env: env, Key: "search.degrade", ExpectedVersion: 0, Valve: events.ValveConfigured{Variant: "degraded"}}); err != nil {
		t.Fatal(err)
	}
	plan := rampPlan()
	plan.OnTrip, plan.Valve = events.OnTripOpenValve, &events.ValveRef{Flag: "search.degrade"}
	f, err := flagOf(svc.Handle(ctx, command.CreateRollout{Meta: alice, Env: env, Key: "ramp", ExpectedVersion: 0, Plan: plan}))
	if err != nil || f.Rollout.Plan.Valve.Flag != "search.degrade" {
		t.Fatalf("%v %+v", err, f.Rollout)
	}
	// An archived valve is no valve.
	if _, err := svc.Handle(ctx, command.AbortRollout{Meta: alice, RolloutTarget: command.RolloutTarget{Env: env, Key: "ramp", ID: f.Rollout.ID}}); err != nil {
		t.Fatal(err)
	}
	if _, err := svc.Handle(ctx, command.ArchiveFlag{Meta: alice, Env: env, Key: "search.degrade"}); err != nil {
		t.Fatal(err)
	}
	_, err = svc.Handle(ctx, command.CreateRollout{Meta: alice, Env: env, Key: "ramp", ExpectedVersion: 0, Plan: plan})
	checkErr(t, err, command.ErrNotValve)
}

// A rollout started after its flag lost a variant of the plan is refused: its split would name
// a variant the flag does not have.
func TestStartRolloutChecksVariants(t *testing.T) {
	st, svc := setup(t)
	ctx := context.Background()
	id := newRollout(t, svc, "ramp", false)
	if _, err := svc.Handle(ctx, command.UpdateFlag{Meta: alice, Env: env, Key: "ramp", ExpectedVersion: 0, Patch: []byte(`{"variants":{"treatment":null},"rules":[]}`)}); err != nil {
		t.Fatal(err)
	}
	unchanged(t, st, func() {
		_, err := svc.Handle(ctx, command.StartRollout{Meta: alice, RolloutTarget: command.RolloutTarget{Env: env, Key: "ramp", ID: id}})
		checkErr(t, err, events.ErrInvalid)
		checkField(t, err, "treatment")
	})
}

func TestValveCommands(t *testing.T) {
	st, svc := setup(t)
	ctx := context.Background()
	mustCreate(t, svc, "search", valveConfig())
	mustCreate(t, svc, "release", rampConfig())
	if _, err := svc.Handle(ctx, command.CreateSegment{Meta: alice, Env: env, Key: "tenant.acme", Config: events.SegmentConfig{Included: []string{"acme-1"}}}); err != nil {
		t.Fatal(err)
	}
	if _, err := svc.Handle(ctx, command.CreateSegment{Meta: alice, Env: env, Key: "old", Config: events.SegmentConfig{Included: []string{"x"}}}); err != nil {
		t.Fatal(err)
	}
	if _, err := svc.Handle(ctx, command.ArchiveSegment{Meta: alice, Env: env, Key: "old"}); err != nil {
		t.Fatal(err)
	}

	for _, tc := range []struct {
		name  string
		key   string
		v     events.ValveConfigured
		field string
	}{
		{"release flag", "release", events.ValveConfigured{Variant: "control"}, "kind"},
		{"no variant", "search", events.ValveConfigured{}, "variant"},
		{"unknown variant", "search", events.ValveConfigured{Variant: "off"}, "variant"},
		{"missing segment", "search", events.ValveConfigured{Variant: "degraded", Segment: "nobody"}, "segment"},
		{"archived segment", "search", events.ValveConfigured{Variant: "degraded", Segment: "old"}, "segment"},
		{"bad policy", "search", events.ValveConfigured{Variant: "degraded", Policy: &events.ValvePolicy{}}, "policy.requests"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			unchanged(t, st, func() {
				_, err := svc.Handle(ctx, command.ConfigureValve{Meta: alice, Env: env, Key: tc.key, ExpectedVersion: 0, Valve: tc.v})
				checkErr(t, err, events.ErrInvalid)
				checkField(t, err, tc.field)
			})
		})
	}

	cfg := events.ValveConfigured{Variant: "degraded", Segment: "tenant.acme", Policy: &events.ValvePolicy{
		Source:   events.MetricSource{Type: events.SourceScrape, URL: "http://search/metrics"},
		Requests: "requests_total", Errors: "errors_total", Long: events.Duration(time.Hour), Short: events.Duration(5 * time.Minute),
	}}
	f, err := flagOf(svc.Handle(ctx, command.ConfigureValve{Meta: alice, Env: env, Key: "search", ExpectedVersion: 1, Valve: cfg}))
	if err != nil || f.Valve == nil || f.Valve.Open || f.Valve.Segment != "tenant.acme" || !reflect.DeepEqual(f.Valve.Policy, cfg.Policy) {
		t.Fatalf("configure: %v %+v", err, f.Valve)
	}
	unchanged(t, st, func() {
		if _, err := svc.Handle(ctx, command.ConfigureValve{Meta: alice, Env: env, Key: "search", ExpectedVersion: 0, Valve: cfg}); err != nil {
			t.Fatalf("configure again: %v", err)
		}
	})
	// A stale version is refused even when the configuration is the same.
	unchanged(t, st, func() {
		_, err := svc.Handle(ctx, command.ConfigureValve{Meta: alice, Env: env, Key: "search", ExpectedVersion: 1, Valve: cfg})
		checkErr(t, err, command.ErrStale)
	})
	// The segment the valve serves cannot be archived from under it.
	unchanged(t, st, func() {
		_, err := svc.Handle(ctx, command.ArchiveSegment{Meta: alice, Env: env, Key: "tenant.acme"})
		checkErr(t, err, command.ErrInUse)
		var inUse *command.InUseError
		if !errors.As(err, &inUse) || !slices.Equal(inUse.Flags, []string{"search"}) {
			t.Fatalf("archive the valve's segment: %v, want it in use by search", err)
		}
	})

	// Open: expiry in the past refused; then open with an expiry; the same again writes nothing.
	unchanged(t, st, func() {
		_, err := svc.Handle(ctx, command.OpenValve{Meta: alice, Env: env, Key: "search", Expires: time.Now().Add(-time.Minute)})
		checkErr(t, err, events.ErrInvalid)
		checkField(t, err, "expires")
		_, err = svc.Handle(ctx, command.OpenValve{Meta: alice, Env: env, Key: "search", Expires: time.Time{}, Rollout: "", Evidence: []byte("not json")})
		checkErr(t, err, events.ErrInvalid)
		checkField(t, err, "evidence")
	})
	expires := time.Now().Add(time.Hour)
	m := command.Meta{Actor: "oncall", Reason: "search is melting"}
	f, err = flagOf(svc.Handle(ctx, command.OpenValve{Meta: m, Env: env, Key: "search", Expires: expires, Rollout: "", Evidence: []byte(`{"burn":14}`)}))
	if err != nil {
		t.Fatal(err)
	}
	v := f.Valve
	if !v.Open || v.OpenedBy != "oncall" || v.Reason != "search is melting" || !v.Expires.Equal(expires.Truncate(time.Millisecond)) || v.Variant != "degraded" || v.Segment != "tenant.acme" {
		t.Fatalf("opened: %+v", v)
	}
	opened := payload[events.ValveOpened](t, last(t, st, "search"))
	if opened.Variant != "degraded" || opened.Segment != "tenant.acme" || string(opened.Evidence) != `{"burn":14}` {
		t.Fatalf("opened event %+v", opened)
	}
	unchanged(t, st, func() {
		if _, err := svc.Handle(ctx, command.OpenValve{Meta: m, Env: env, Key: "search", Expires: expires}); err != nil {
			t.Fatal(err)
		}
	})
	// A new expiry is a new opening.
	if f, err = flagOf(svc.Handle(ctx, command.OpenValve{Meta: m, Env: env, Key: "search", Expires: time.Time{}, Rollout: "rollout-1", Evidence: nil})); err != nil || !f.Valve.Expires.IsZero() || f.Valve.Rollout != "rollout-1" {
		t.Fatalf("reopen: %v %+v", err, f.Valve)
	}
	// The variant the valve serves cannot be dropped from the flag.
	unchanged(t, st, func() {
		_, err := svc.Handle(ctx, command.UpdateFlag{Meta: alice, Env: env, Key: "search", ExpectedVersion: 0, Patch: []byte(`{"variants":{"degraded":null},"offVariant":"full"}`)})
		checkErr(t, err, events.ErrInvalid)
		checkField(t, err, "variants")
	})

	// Close: the cause is checked.
	for _, cause := range []string{"", "bored", "Manual"} {
		unchanged(t, st, func() {
			_, err := svc.Handle(ctx, command.CloseValve{Meta: m, Env: env, Key: "search", Cause: cause, Evidence: nil})
			checkErr(t, err, events.ErrInvalid)
			checkField(t, err, "cause")
		})
	}
	f, err = flagOf(svc.Handle(ctx, command.CloseValve{Meta: m, Env: env, Key: "search", Cause: events.ValveClosedHealthy, Evidence: []byte(`{"burn":0.2}`)}))
	if err != nil || f.Valve.Open || f.Valve.Cause != events.ValveClosedHealthy || f.Valve.ClosedAt.IsZero() {
		t.Fatalf("close: %v %+v", err, f.Valve)
	}
	unchanged(t, st, func() {
		if _, err := svc.Handle(ctx, command.CloseValve{Meta: m, Env: env, Key: "search", Cause: events.ValveClosedManual, Evidence: nil}); err != nil {
			t.Fatal(err)
		}
	})
	checkFold(t, st, f)

	// Reconfigured without the segment, the next opening degrades everyone.
	if _, err := svc.Handle(ctx, command.ConfigureValve{Meta: alice, Env: env, Key: "search", ExpectedVersion: 0, Valve: events.ValveConfigured{Variant: "degraded"}}); err != nil {
		t.Fatal(err)
	}
	if f, err = flagOf(svc.Handle(ctx, command.OpenValve{Meta: m, Env: env, Key: "search", Expires: time.Time{}})); err != nil || f.Valve.Segment != "" {
		t.Fatalf("open for everyone: %v %+v", err, f.Valve)
	}
	set, err := targeting.CompileFlagset(env, 1, []projections.Flag{f}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if e := set.Evaluate("search", &targeting.EvalContext{TargetingKey: "anyone"}); e.Variant == nil || e.Variant.Name != "degraded" {
		t.Fatalf("open valve serves %+v", e)
	}
}

// A server told where metrics live refuses plans and valve policies that read elsewhere.
func TestSourceCheck(t *testing.T) {
	st := openStore(t, natstest.RunServer(t))
	svc := command.New(st, nil, command.WithSourceCheck(source.AllowSources([]string{"http://prometheus:9090"})))
	ctx := context.Background()
	mustCreate(t, svc, "ramp", rampConfig())
	mustCreate(t, svc, "valve", valveConfig())
	plan := rampPlan()
	plan.Source.URL = "http://169.254.169.254/latest/meta-data"
	unchanged(t, st, func() {
		_, err := svc.Handle(ctx, command.CreateRollout{Meta: alice, Env: env, Key: "ramp", ExpectedVersion: 0, Plan: plan})
		var ve *events.ValidationError
		if !errors.As(err, &ve) || ve.Field != "source.url" {
			t.Fatalf("plan reading elsewhere: %v", err)
		}
	})
	if _, err := svc.Handle(ctx, command.CreateRollout{Meta: alice, Env: env, Key: "ramp", ExpectedVersion: 0, Plan: rampPlan()}); err != nil {
		t.Fatalf("plan reading the allowed server: %v", err)
	}
	policy := &events.ValvePolicy{Source: events.MetricSource{Type: events.SourceScrape, URL: "http://10.0.0.1/metrics"},
		Requests: "requests_total", Errors: "errors_total"}
	unchanged(t, st, func() {
		_, err := svc.Handle(ctx, command.ConfigureValve{Meta: alice, Env: env, Key: "valve", ExpectedVersion: 0, Valve: events.ValveConfigured{Variant: "degraded", Policy: policy}})
		var ve *events.ValidationError
		if !errors.As(err, &ve) || ve.Field != "policy.source.url" {
			t.Fatalf("valve policy reading elsewhere: %v", err)
		}
	})
}

// A selector the guard could not query is refused when the plan or the policy is written, not
// found BLIND at the first tick.
func TestQueriesCheckedOnWrite(t *testing.T) {
	st := openStore(t, natstest.RunServer(t))
	svc := command.New(st, nil, command.WithPlanChecks(guard.CheckPlan, guard.CheckValvePolicy))
	ctx := context.Background()
	mustCreate(t, svc, "ramp", rampConfig())
	mustCreate(t, svc, "valve", valveConfig())
	for _, tc := range []struct {
		name   string
		mutate func(p *events.RolloutPlan)
		field  string
	}{
		{"unclosed brace", func(p *events.RolloutPlan) { p.Metrics[0].Requests = `requests_total{route="/"` }, "metrics[0].requests"},
		{"not a metric name", func(p *events.RolloutPlan) { p.Metrics[0].Errors = "0errors" }, "metrics[0].errors"},
		{"variant already constrained", func(p *events.RolloutPlan) { p.Metrics[0].Requests = `requests_total{variant="on"}` }, "metrics[0].requests"},
		{"flag already constrained", func(p *events.RolloutPlan) { p.Metrics[0].Errors = `errors_total{flag="other"}` }, "metrics[0].errors"},
		{"bad regexp", func(p *events.RolloutPlan) { p.Metrics[0].Requests = `requests_total{route=~"("}` }, "metrics[0].requests"},
		{"mean: bad sum", func(p *events.RolloutPlan) {
			p.Metrics = append(p.Metrics, events.RolloutMetric{Name: "latency", Kind: events.MetricMean,
				Count: "request_duration_seconds_count", Sum: "request_duration_seconds_sum{"})
		}, "metrics[1].sum"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			plan := rampPlan()
			plan.Metrics = slices.Clone(plan.Metrics)
			tc.mutate(&plan)
			unchanged(t, st, func() {
				_, err := svc.Handle(ctx, command.CreateRollout{Meta: alice, Env: env, Key: "ramp", ExpectedVersion: 0, Plan: plan})
				checkErr(t, err, events.ErrInvalid)
				checkField(t, err, tc.field)
			})
		})
	}
	mean := rampPlan()
	mean.Metrics = append(slices.Clone(mean.Metrics), events.RolloutMetric{Name: "latency", Kind: events.MetricMean,
		Count: `request_duration_seconds_count{route="/pay"}`, Sum: `request_duration_seconds_sum{route="/pay"}`, Margin: 0.1})
	f, err := flagOf(svc.Handle(ctx, command.CreateRollout{Meta: alice, Env: env, Key: "ramp", ExpectedVersion: 0, Plan: mean}))
	if err != nil {
		t.Fatalf("a plan with a mean metric: %v", err)
	}
	if got := f.Rollout.Plan.Metrics[1]; got.Tau != 0.1 || got.Margin != 0.1 || got.Kind != events.MetricMean {
		t.Errorf("recorded mean metric %+v, want tau 0.1 filled in", got)
	}

	policy := &events.ValvePolicy{Source: events.MetricSource{Type: events.SourceScrape, URL: "http://127.0.0.1/metrics"},
		Requests: "requests_total", Errors: `errors_total{code=~"5.."`}
	unchanged(t, st, func() {
		_, err := svc.Handle(ctx, command.ConfigureValve{Meta: alice, Env: env, Key: "valve", ExpectedVersion: 0, Valve: events.ValveConfigured{Variant: "degraded", Policy: policy}})
		checkErr(t, err, events.ErrInvalid)
		checkField(t, err, "policy.errors")
	})
}
