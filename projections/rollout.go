package projections

import (
	"time"

	"github.com/interlock-dev/interlock/events"
)

// The statuses of a rollout.
const (
	RolloutCreated   = "created"
	RolloutRunning   = "running"
	RolloutPaused    = "paused"
	RolloutCompleted = "completed"
	RolloutAborted   = "aborted"
)

// Rollout is the state of a flag's latest rollout, folded from its events. A finished rollout
// stays until the next one is created, so its outcome can be read.
type Rollout struct {
	ID     string             `json:"id"`
	Plan   events.RolloutPlan `json:"plan"` // with its defaults filled in
	Status string             `json:"status"`
	// Stage is the index in Plan.Stages of the stage being served (0 before the start).
	Stage int `json:"stage"`
	// StageStartedAt is when the current stage began, or last began afresh: a resume, a re-arm or
	// a change of the flag's configuration restarts the stage.
	StageStartedAt time.Time `json:"stageStartedAt,omitzero"`
	// StageVersion is the flag version that began the current stage (or restarted it).
	StageVersion uint64    `json:"stageVersion"`
	CreatedAt    time.Time `json:"createdAt"`
	CreatedBy    string    `json:"createdBy"`
	EndedAt      time.Time `json:"endedAt,omitzero"`
	// Guard is what the guard last decided about this rollout.
	Guard GuardStatus `json:"guard"`
}

// Active reports whether the rollout is running or paused: it owns the flag's default serve.
func (r *Rollout) Active() bool {
	return r != nil && (r.Status == RolloutRunning || r.Status == RolloutPaused)
}

// Finished reports whether the rollout completed or was aborted.
func (r *Rollout) Finished() bool {
	return r != nil && (r.Status == RolloutCompleted || r.Status == RolloutAborted)
}

// GuardStatus is the guard's latest recorded decision about a rollout.
type GuardStatus struct {
	State string `json:"state,omitempty"`
	// Tripped stays true from a confirmed trip until a person re-arms the guard.
	Tripped  bool      `json:"tripped"`
	Action   string    `json:"action,omitempty"`
	Cause    string    `json:"cause,omitempty"`
	Decision string    `json:"decision,omitempty"` // the id of the decision event
	Stage    int       `json:"stage"`
	At       time.Time `json:"at,omitzero"`
	// RearmedBy is the person who last re-armed the guard, until its next decision.
	RearmedBy string `json:"rearmedBy,omitempty"`
}

// Valve is the state of a safety valve: a flag of kind operational that, open, serves Variant to
// everyone or to the members of Segment, whatever its own configuration says.
type Valve struct {
	Variant string              `json:"variant"`
	Segment string              `json:"segment,omitempty"`
	Policy  *events.ValvePolicy `json:"policy,omitempty"`
	Open    bool                `json:"open"`
	// OpenedAt, OpenedBy, Reason and Expires describe the latest opening; Rollout names the
	// rollout whose trip opened it.
	OpenedAt time.Time `json:"openedAt,omitzero"`
	OpenedBy string    `json:"openedBy,omitempty"`
	Reason   string    `json:"reason,omitempty"`
	Expires  time.Time `json:"expires,omitzero"`
	Rollout  string    `json:"rollout,omitempty"`
	// ClosedAt and Cause describe the latest closing.
	ClosedAt time.Time `json:"closedAt,omitzero"`
	Cause    string    `json:"cause,omitempty"`
}

// applyRollout folds the events of rollouts, of the guard and of valves. It replaces f.Rollout,
// f.Valve and f.FlagConfig with new values rather than changing the ones it holds, so copies of
// a flag never see each other's changes.
func (f *Flag) applyRollout(ev events.Event, p any) error {
	var r Rollout
	if f.Rollout != nil {
		r = *f.Rollout
	}
	// An event about another rollout cannot come from the command path, which decides on this
	// fold; should one be stored anyway, it changes nothing but the version, as an event of an
	// unknown type does, so that the flag's later events still apply.
	ours := func(id string) bool { return f.Rollout != nil && f.Rollout.ID == id }
	restart := func() {
		r.StageStartedAt, r.StageVersion = ev.Time, ev.Version
	}
	serve := func(s events.Serve) {
		cfg := f.FlagConfig
		cfg.DefaultServe = &s
		f.FlagConfig = cfg
	}
	switch p := p.(type) {
	case *events.RolloutCreated:
		r = Rollout{ID: p.ID, Plan: p.Plan.WithDefaults(), Status: RolloutCreated, CreatedAt: ev.Time, CreatedBy: ev.Actor}
	case *events.RolloutStarted:
		if !ours(p.ID) {
			return nil
		}
		r.Status, r.Stage = RolloutRunning, p.Stage
		restart()
		serve(p.Serve)
	case *events.RolloutPaused:
		if !ours(p.ID) {
			return nil
		}
		r.Status = RolloutPaused
	case *events.RolloutResumed:
		if !ours(p.ID) {
			return nil
		}
		r.Status = RolloutRunning
		restart()
	case *events.RolloutAdvanced:
		if !ours(p.ID) {
			return nil
		}
		r.Stage = p.To
		restart()
		serve(p.Serve)
	case *events.RolloutSteppedBack:
		if !ours(p.ID) {
			return nil
		}
		r.Stage = p.To
		restart()
		serve(p.Serve)
	case *events.RolloutCompleted:
		if !ours(p.ID) {
			return nil
		}
		r.Status, r.EndedAt = RolloutCompleted, ev.Time
		serve(p.Serve)
	case *events.RolloutAborted:
		if !ours(p.ID) {
			return nil
		}
		r.Status, r.EndedAt = RolloutAborted, ev.Time
		if p.Serve.Variant != "" || p.Serve.Split != nil {
			serve(p.Serve) // empty when it never started: the flag's default serve stays
		}
	case *events.GuardDecided:
		if !ours(p.Rollout) {
			return nil
		}
		r.Guard = GuardStatus{
			State: p.StateAfter, Tripped: r.Guard.Tripped || p.StateAfter == "TRIPPED",
			Action: p.Action, Cause: p.Cause, Decision: ev.ID, Stage: p.Stage, At: ev.Time,
		}
	case *events.GuardRearmed:
		if !ours(p.Rollout) {
			return nil
		}
		r.Guard = GuardStatus{State: "WARMUP", Action: "rearm", Cause: "rearmed", Decision: ev.ID, Stage: r.Stage, At: ev.Time, RearmedBy: ev.Actor}
		restart()
	case *events.ValveConfigured:
		v := Valve{}
		if f.Valve != nil {
			v = *f.Valve
		}
		v.Variant, v.Segment, v.Policy = p.Variant, p.Segment, p.Policy
		f.Valve = &v
		return nil
	case *events.ValveOpened:
		v := Valve{}
		if f.Valve != nil {
			v = *f.Valve
		}
		v.Open, v.Variant, v.Segment = true, p.Variant, p.Segment
		v.OpenedAt, v.OpenedBy, v.Reason, v.Expires, v.Rollout = ev.Time, ev.Actor, ev.Reason, p.Expires, p.Rollout
		f.Valve = &v
		return nil
	case *events.ValveClosed:
		if f.Valve == nil {
			return nil // nothing to close: see ours above
		}
		v := *f.Valve
		v.Open, v.ClosedAt, v.Cause = false, ev.Time, p.Cause
		f.Valve = &v
		return nil
	default:
		return nil
	}
	f.Rollout = &r
	return nil
}

// restartStage notes a change of the flag's configuration during an active rollout: the guard
// judges the stage afresh.
func (f *Flag) restartStage(ev events.Event) {
	if !f.Rollout.Active() {
		return
	}
	r := *f.Rollout
	r.StageStartedAt, r.StageVersion = ev.Time, ev.Version
	f.Rollout = &r
}

// Served returns the configuration the flag serves: its own, or, while its valve is open, one
// that serves the valve's variant first (to the valve's segment, or to everyone). The result
// shares the flag's maps and slices; it must not be changed.
func (f *Flag) Served() events.FlagConfig {
	if f.Valve == nil || !f.Valve.Open {
		return f.FlagConfig
	}
	cfg := f.FlagConfig
	if f.Valve.Segment == "" {
		cfg.Rules = nil
		cfg.DefaultServe = &events.Serve{Variant: f.Valve.Variant}
		return cfg
	}
	rules := make([]events.Rule, 0, len(cfg.Rules)+1)
	rules = append(rules, events.Rule{
		Name:       "valve",
		Conditions: []events.Condition{{Attribute: "targetingKey", Operator: "inSegment", Values: []any{f.Valve.Segment}}},
		Serve:      events.Serve{Variant: f.Valve.Variant},
	})
	cfg.Rules = append(rules, cfg.Rules...)
	return cfg
}
