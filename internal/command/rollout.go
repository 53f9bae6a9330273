package command

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"time"

	"github.com/google/uuid"

	"github.com/interlock-dev/interlock/events"
	"github.com/interlock-dev/interlock/guard"
	"github.com/interlock-dev/interlock/projections"
)

var (
	// ErrRolloutActive means the flag already has a running or paused rollout, or a change would
	// take the flag's default serve from the rollout that owns it.
	ErrRolloutActive = errors.New("flag has an active rollout")
	// ErrNoRollout means the flag has no rollout to act on (or not the one named).
	ErrNoRollout = errors.New("no such rollout")
	// ErrRolloutState means the rollout is not in a state that allows the command: starting a
	// started rollout, resuming a finished one, stepping back from the first stage.
	ErrRolloutState = errors.New("rollout state does not allow this")
	// ErrTripped means the rollout's guard tripped: it stays where it is until a person re-arms it.
	ErrTripped = errors.New("guard tripped")
	// ErrNotValve means the flag is not configured as a safety valve.
	ErrNotValve = errors.New("flag is not a safety valve")
)

// rolloutCommand runs a command on the flag's rollout: decide gets the flag and its rollout,
// which exists (any status) and, when id is not empty, is the one named.
func (s *Service) rolloutCommand(ctx context.Context, name string, m Meta, env, key, id string, expected uint64,
	decide func(f *projections.Flag, r *projections.Rollout) (decision, error)) (projections.Flag, error) {
	return s.exec(ctx, command{
		name: name, env: env, key: key, meta: m, expected: expected,
		decide: func(_ context.Context, e *entry) (decision, error) {
			f := &e.flag
			r := f.Rollout
			switch {
			case r == nil:
				return decision{}, fmt.Errorf("%w: the flag never had a rollout", ErrNoRollout)
			case id != "" && r.ID != id:
				return decision{}, fmt.Errorf("%w: rollout %q is not the flag's latest (%s)", ErrNoRollout, id, r.ID)
			}
			return decide(f, r)
		},
	})
}

// CreateRollout records a rollout plan for the flag, with its defaults filled in, under a new
// id. Nothing is split until [Service.StartRollout]. A finished rollout is replaced.
//
// Errors: [ErrNotFound]; [*VersionError]; [ErrArchived]; [ErrRolloutActive] if a rollout is
// running or paused; events.ErrInvalid naming the plan's field at fault (variants are checked
// against the flag's); [ErrNotValve] if the plan's valve is not a valve of the environment.
func (s *Service) CreateRollout(ctx context.Context, m Meta, env, key string, expectedVersion uint64, plan events.RolloutPlan) (projections.Flag, error) {
	m, err := validateCommand(m, env, key, false)
	if err != nil {
		return projections.Flag{}, fmt.Errorf("create rollout %s/%s: %w", env, key, err)
	}
	plan = plan.WithDefaults()
	if err := plan.Validate(nil); err != nil {
		return projections.Flag{}, fmt.Errorf("create rollout %s/%s: %w", env, key, err)
	}
	if err := s.checkSource("source.url", plan.Source.URL); err != nil {
		return projections.Flag{}, fmt.Errorf("create rollout %s/%s: %w", env, key, err)
	}
	if err := guard.CheckPlan(key, plan); err != nil {
		return projections.Flag{}, fmt.Errorf("create rollout %s/%s: %w", env, key, err)
	}
	if plan.Valve != nil {
		v, err := s.Get(ctx, env, plan.Valve.Flag)
		switch {
		case errors.Is(err, ErrNotFound):
			return projections.Flag{}, fmt.Errorf("create rollout %s/%s: valve %s: %w", env, key, plan.Valve.Flag, ErrNotValve)
		case err != nil:
			return projections.Flag{}, fmt.Errorf("create rollout %s/%s: %w", env, key, err)
		case v.Valve == nil || v.Archived:
			return projections.Flag{}, fmt.Errorf("create rollout %s/%s: valve %s: %w: configure it as a valve first", env, key, plan.Valve.Flag, ErrNotValve)
		}
	}
	id, err := uuid.NewV7()
	if err != nil {
		return projections.Flag{}, fmt.Errorf("create rollout %s/%s: %w", env, key, err)
	}
	return s.exec(ctx, command{
		name: "create rollout", env: env, key: key, meta: m, expected: expectedVersion,
		decide: func(_ context.Context, e *entry) (decision, error) {
			f := &e.flag
			switch {
			case f.Archived:
				return decision{}, archived()
			case f.Rollout.Active():
				return decision{}, fmt.Errorf("%w: rollout %s is %s; abort it first", ErrRolloutActive, f.Rollout.ID, f.Rollout.Status)
			}
			if err := plan.Validate(&f.FlagConfig); err != nil {
				return decision{}, err
			}
			return decision{typ: events.TypeRolloutCreated, payload: events.RolloutCreated{ID: id.String(), Plan: plan}}, nil
		},
	})
}

// StartRollout starts the flag's created rollout at its first stage: the flag's default serve
// becomes the stage's split at once. Starting a running rollout writes nothing.
//
// Errors: [ErrNotFound]; [*VersionError]; [ErrArchived]; [ErrNoRollout]; [ErrRolloutState] if
// the rollout is paused or finished.
func (s *Service) StartRollout(ctx context.Context, m Meta, env, key, id string, expectedVersion uint64) (projections.Flag, error) {
	m, err := validateCommand(m, env, key, false)
	if err != nil {
		return projections.Flag{}, fmt.Errorf("start rollout %s/%s: %w", env, key, err)
	}
	return s.rolloutCommand(ctx, "start rollout", m, env, key, id, expectedVersion, func(f *projections.Flag, r *projections.Rollout) (decision, error) {
		switch {
		case f.Archived:
			return decision{}, archived()
		case r.Status == projections.RolloutRunning:
			return noop, nil
		case r.Status != projections.RolloutCreated:
			return decision{}, fmt.Errorf("%w: rollout %s is %s", ErrRolloutState, r.ID, r.Status)
		}
		// The flag may have changed since the plan was checked against it.
		if err := r.Plan.Validate(&f.FlagConfig); err != nil {
			return decision{}, err
		}
		st := r.Plan.Stages[0]
		return decision{typ: events.TypeRolloutStarted, payload: events.RolloutStarted{
			ID: r.ID, Stage: 0, Serve: events.StageServe(r.Plan.Treatment, r.Plan.Control, st.Percent),
		}}, nil
	})
}

// PauseRollout stops the guard from advancing the rollout; the split stays. Pausing a paused
// rollout writes nothing. The guard pauses a rollout itself when it trips with onTrip freeze.
//
// Errors: [ErrNotFound]; [*VersionError]; [ErrNoRollout]; [ErrRolloutState] unless running.
func (s *Service) PauseRollout(ctx context.Context, m Meta, env, key, id string, expectedVersion uint64) (projections.Flag, error) {
	return s.setPaused(ctx, "pause rollout", m, env, key, id, expectedVersion, true)
}

// ResumeRollout lets a paused rollout go on; its stage begins afresh. Resuming a running rollout
// writes nothing.
//
// Errors: [ErrNotFound]; [*VersionError]; [ErrArchived]; [ErrNoRollout]; [ErrRolloutState]
// unless paused.
func (s *Service) ResumeRollout(ctx context.Context, m Meta, env, key, id string, expectedVersion uint64) (projections.Flag, error) {
	return s.setPaused(ctx, "resume rollout", m, env, key, id, expectedVersion, false)
}

func (s *Service) setPaused(ctx context.Context, name string, m Meta, env, key, id string, expectedVersion uint64, pause bool) (projections.Flag, error) {
	m, err := validateCommand(m, env, key, false)
	if err != nil {
		return projections.Flag{}, fmt.Errorf("%s %s/%s: %w", name, env, key, err)
	}
	return s.rolloutCommand(ctx, name, m, env, key, id, expectedVersion, func(f *projections.Flag, r *projections.Rollout) (decision, error) {
		from, to := projections.RolloutRunning, projections.RolloutPaused
		typ, payload := events.TypeRolloutPaused, any(events.RolloutPaused{ID: r.ID})
		if !pause {
			from, to = to, from
			typ, payload = events.TypeRolloutResumed, events.RolloutResumed{ID: r.ID}
			if f.Archived {
				return decision{}, archived()
			}
		}
		switch r.Status {
		case to:
			return noop, nil
		case from:
			return decision{typ: typ, payload: payload}, nil
		}
		return decision{}, fmt.Errorf("%w: rollout %s is %s", ErrRolloutState, r.ID, r.Status)
	})
}

// AdvanceRollout moves the rollout from stage from to the next one, or completes it from its
// last stage (the flag then serves the treatment to everyone). It is idempotent: when the
// rollout has already left stage from (by this command sent twice, or by another replica), it
// writes nothing. A negative from means the current stage. Meta.Reason is required.
//
// Errors: [ErrNotFound]; [*VersionError]; [ErrArchived]; [ErrNoRollout]; [ErrRolloutState]
// unless running or paused (or completed from stage from), or when from is ahead of the rollout;
// [ErrTripped] while the guard is tripped.
func (s *Service) AdvanceRollout(ctx context.Context, m Meta, env, key, id string, from int, expectedVersion uint64) (projections.Flag, error) {
	m, err := validateCommand(m, env, key, true)
	if err != nil {
		return projections.Flag{}, fmt.Errorf("advance rollout %s/%s: %w", env, key, err)
	}
	return s.rolloutCommand(ctx, "advance rollout", m, env, key, id, expectedVersion, func(f *projections.Flag, r *projections.Rollout) (decision, error) {
		stage := from
		if stage < 0 {
			stage = r.Stage
		}
		switch {
		case f.Archived:
			return decision{}, archived()
		case stage < r.Stage && (r.Active() || r.Finished()),
			stage == r.Stage && r.Status == projections.RolloutCompleted:
			return noop, nil // already done (an aborted rollout never left its last stage)
		case !r.Active():
			return decision{}, fmt.Errorf("%w: rollout %s is %s", ErrRolloutState, r.ID, r.Status)
		case stage > r.Stage:
			return decision{}, fmt.Errorf("%w: rollout %s is at stage %d, not %d", ErrRolloutState, r.ID, r.Stage, stage)
		case r.Guard.Tripped:
			return decision{}, fmt.Errorf("%w: re-arm the guard of rollout %s before advancing it", ErrTripped, r.ID)
		}
		if stage == len(r.Plan.Stages)-1 {
			return decision{typ: events.TypeRolloutCompleted, payload: events.RolloutCompleted{
				ID: r.ID, Serve: events.Serve{Variant: r.Plan.Treatment},
			}}, nil
		}
		return decision{typ: events.TypeRolloutAdvanced, payload: events.RolloutAdvanced{
			ID: r.ID, From: stage, To: stage + 1,
			Serve: events.StageServe(r.Plan.Treatment, r.Plan.Control, r.Plan.Stages[stage+1].Percent),
		}}, nil
	})
}

// StepBackRollout moves the rollout from stage from back to the one before. Like
// [Service.AdvanceRollout] it is idempotent and a negative from means the current stage.
// Meta.Reason is required.
//
// Errors: [ErrNotFound]; [*VersionError]; [ErrNoRollout]; [ErrRolloutState] unless running or
// paused, at the first stage (abort instead), or when from is not the current stage.
func (s *Service) StepBackRollout(ctx context.Context, m Meta, env, key, id string, from int, expectedVersion uint64) (projections.Flag, error) {
	m, err := validateCommand(m, env, key, true)
	if err != nil {
		return projections.Flag{}, fmt.Errorf("step back rollout %s/%s: %w", env, key, err)
	}
	return s.rolloutCommand(ctx, "step back rollout", m, env, key, id, expectedVersion, func(f *projections.Flag, r *projections.Rollout) (decision, error) {
		stage := from
		if stage < 0 {
			stage = r.Stage
		}
		switch {
		case r.Active() && stage > r.Stage && stage < len(r.Plan.Stages):
			return noop, nil // already stepped back
		case !r.Active():
			return decision{}, fmt.Errorf("%w: rollout %s is %s", ErrRolloutState, r.ID, r.Status)
		case stage != r.Stage:
			return decision{}, fmt.Errorf("%w: rollout %s is at stage %d, not %d", ErrRolloutState, r.ID, r.Stage, stage)
		case stage == 0:
			return decision{}, fmt.Errorf("%w: rollout %s is at its first stage: abort it instead", ErrRolloutState, r.ID)
		}
		return decision{typ: events.TypeRolloutSteppedBack, payload: events.RolloutSteppedBack{
			ID: r.ID, From: stage, To: stage - 1,
			Serve: events.StageServe(r.Plan.Treatment, r.Plan.Control, r.Plan.Stages[stage-1].Percent),
		}}, nil
	})
}

// AbortRollout ends the rollout: the flag serves the control to everyone, unless the rollout
// never started (its default serve is left as it is). Aborting an aborted rollout writes
// nothing. Meta.Reason is required.
//
// Errors: [ErrNotFound]; [*VersionError]; [ErrNoRollout]; [ErrRolloutState] if it completed.
func (s *Service) AbortRollout(ctx context.Context, m Meta, env, key, id string, expectedVersion uint64) (projections.Flag, error) {
	m, err := validateCommand(m, env, key, true)
	if err != nil {
		return projections.Flag{}, fmt.Errorf("abort rollout %s/%s: %w", env, key, err)
	}
	return s.rolloutCommand(ctx, "abort rollout", m, env, key, id, expectedVersion, func(f *projections.Flag, r *projections.Rollout) (decision, error) {
		switch r.Status {
		case projections.RolloutAborted:
			return noop, nil
		case projections.RolloutCompleted:
			return decision{}, fmt.Errorf("%w: rollout %s completed; change the flag instead", ErrRolloutState, r.ID)
		}
		ab := events.RolloutAborted{ID: r.ID, Serve: events.Serve{Variant: r.Plan.Control}}
		if r.Status == projections.RolloutCreated {
			ab.Serve = events.Serve{} // it never owned the default serve: leave it
		}
		return decision{typ: events.TypeRolloutAborted, payload: ab}, nil
	})
}

// RecordDecision appends the guard's decision about the flag's rollout d.Rollout, with its
// evidence. The returned flag's Rollout.Guard.Decision is the decision event's id, the causation
// id of whatever the guard does next.
//
// Errors: [ErrNotFound]; [*VersionError]; [ErrNoRollout] if d.Rollout is not the flag's
// rollout; [ErrRolloutState] if it is finished; events.ErrInvalid for an empty state or action.
func (s *Service) RecordDecision(ctx context.Context, m Meta, env, key string, expectedVersion uint64, d events.GuardDecided) (projections.Flag, error) {
	m, err := validateCommand(m, env, key, false)
	if err == nil && (d.StateAfter == "" || d.Action == "" || d.Rollout == "") {
		err = &events.ValidationError{Field: "decision", Message: "rollout, stateAfter and action are required"}
	}
	if err == nil {
		err = validEvidence(d.Evidence)
	}
	if err != nil {
		return projections.Flag{}, fmt.Errorf("record decision %s/%s: %w", env, key, err)
	}
	return s.rolloutCommand(ctx, "record decision", m, env, key, d.Rollout, expectedVersion, func(f *projections.Flag, r *projections.Rollout) (decision, error) {
		if r.Finished() {
			return decision{}, fmt.Errorf("%w: rollout %s is %s", ErrRolloutState, r.ID, r.Status)
		}
		return decision{typ: events.TypeGuardDecided, payload: d}, nil
	})
}

// Rearm clears the tripped guard of the flag's rollout on a person's word; the stage begins
// afresh. Meta.Reason is required.
//
// Errors: [ErrNotFound]; [*VersionError]; [ErrNoRollout]; [ErrRolloutState] if the guard is not
// tripped.
func (s *Service) Rearm(ctx context.Context, m Meta, env, key, id string, expectedVersion uint64) (projections.Flag, error) {
	m, err := validateCommand(m, env, key, true)
	if err != nil {
		return projections.Flag{}, fmt.Errorf("rearm %s/%s: %w", env, key, err)
	}
	return s.rolloutCommand(ctx, "rearm", m, env, key, id, expectedVersion, func(f *projections.Flag, r *projections.Rollout) (decision, error) {
		if !r.Guard.Tripped {
			return decision{}, fmt.Errorf("%w: the guard of rollout %s is not tripped", ErrRolloutState, r.ID)
		}
		return decision{typ: events.TypeGuardRearmed, payload: events.GuardRearmed{Rollout: r.ID, Stage: r.Stage}}, nil
	})
}

// ConfigureValve makes the flag a safety valve (or changes how it is one): what opening it
// serves, to whom, and, with a policy, when the guard opens and closes it by itself. The flag
// must be of kind operational.
//
// Configuring a valve as it is writes nothing.
//
// Errors: [ErrNotFound]; [*VersionError]; [ErrArchived]; events.ErrInvalid naming the field
// (segment when the segment does not exist or is archived).
func (s *Service) ConfigureValve(ctx context.Context, m Meta, env, key string, expectedVersion uint64, v events.ValveConfigured) (projections.Flag, error) {
	m, err := validateCommand(m, env, key, false)
	if err == nil {
		err = v.Validate(nil)
	}
	if err == nil && v.Policy != nil {
		err = s.checkSource("policy.source.url", v.Policy.Source.URL)
	}
	if err == nil {
		err = guard.CheckValvePolicy(v.Policy)
	}
	if err != nil {
		return projections.Flag{}, fmt.Errorf("configure valve %s/%s: %w", env, key, err)
	}
	return s.exec(ctx, command{
		name: "configure valve", env: env, key: key, meta: m, expected: expectedVersion,
		decide: func(ctx context.Context, e *entry) (decision, error) {
			f := &e.flag
			if f.Archived {
				return decision{}, archived()
			}
			if err := v.Validate(&f.FlagConfig); err != nil {
				return decision{}, err
			}
			if cur := f.Valve; cur != nil && cur.Variant == v.Variant && cur.Segment == v.Segment && reflect.DeepEqual(cur.Policy, v.Policy) {
				return noop, nil
			}
			if v.Segment != "" {
				seg, err := s.segmentNow(ctx, env, v.Segment)
				switch {
				case err != nil:
					return decision{}, fmt.Errorf("read segment %s/%s: %w", env, v.Segment, err)
				case !seg.Exists() || seg.Archived:
					return decision{}, &events.ValidationError{Field: "segment",
						Message: fmt.Sprintf("segment %q does not exist or is archived in %s", v.Segment, env)}
				}
			}
			return decision{typ: events.TypeValveConfigured, payload: v}, nil
		},
	})
}

// OpenValve opens the flag's safety valve: it serves the valve's variant to everyone (or to the
// valve's segment) until closed or, when expires is not zero, until then (the guard closes it
// at expiry). Meta.Reason is required. Opening an open valve writes nothing unless it changes
// the expiry. rollout names the rollout whose trip opens it ("" for a person); evidence is the
// guard's.
//
// Errors: [ErrNotFound]; [ErrNotValve]; events.ErrInvalid for an expiry in the past.
func (s *Service) OpenValve(ctx context.Context, m Meta, env, key string, expires time.Time, rollout string, evidence []byte) (projections.Flag, error) {
	m, err := validateCommand(m, env, key, true)
	if err == nil {
		err = validEvidence(evidence)
	}
	if err != nil {
		return projections.Flag{}, fmt.Errorf("open valve %s/%s: %w", env, key, err)
	}
	expires = expires.UTC().Truncate(time.Millisecond)
	return s.exec(ctx, command{
		name: "open valve", env: env, key: key, meta: m,
		decide: func(_ context.Context, e *entry) (decision, error) {
			f := &e.flag
			v := f.Valve
			switch {
			case v == nil || v.Variant == "":
				return decision{}, fmt.Errorf("%w: configure the flag as a valve first", ErrNotValve)
			case v.Open && v.Expires.Equal(expires):
				return noop, nil
			case !expires.IsZero() && !expires.After(time.Now()):
				return decision{}, &events.ValidationError{Field: "expires", Message: "is in the past"}
			}
			return decision{typ: events.TypeValveOpened, payload: events.ValveOpened{
				Variant: v.Variant, Segment: v.Segment, Expires: expires, Rollout: rollout, Evidence: evidence,
			}}, nil
		},
	})
}

// CloseValve closes the flag's safety valve; the flag serves its own configuration again.
// Closing a closed valve writes nothing. cause is events.ValveClosedManual for a person (who
// gives a reason), or what made the guard close it.
//
// Errors: [ErrNotFound]; [ErrNotValve]; events.ErrInvalid for an unknown cause.
func (s *Service) CloseValve(ctx context.Context, m Meta, env, key, cause string, evidence []byte) (projections.Flag, error) {
	m, err := validateCommand(m, env, key, true)
	if err == nil && cause != events.ValveClosedManual && cause != events.ValveClosedExpired && cause != events.ValveClosedHealthy {
		err = &events.ValidationError{Field: "cause", Message: fmt.Sprintf("%q is not manual, expired or healthy", cause)}
	}
	if err == nil {
		err = validEvidence(evidence)
	}
	if err != nil {
		return projections.Flag{}, fmt.Errorf("close valve %s/%s: %w", env, key, err)
	}
	return s.exec(ctx, command{
		name: "close valve", env: env, key: key, meta: m,
		decide: func(_ context.Context, e *entry) (decision, error) {
			v := e.flag.Valve
			switch {
			case v == nil:
				return decision{}, fmt.Errorf("%w: it was never configured as one", ErrNotValve)
			case !v.Open:
				return noop, nil
			}
			return decision{typ: events.TypeValveClosed, payload: events.ValveClosed{Cause: cause, Evidence: evidence}}, nil
		},
	})
}

// validEvidence refuses evidence that is not JSON: it is stored as JSON in the event.
func validEvidence(b []byte) error {
	if len(b) > 0 && !json.Valid(b) {
		return &events.ValidationError{Field: "evidence", Message: "is not JSON"}
	}
	return nil
}

// checkSource vets a metric source URL with the service's source check.
func (s *Service) checkSource(field, rawURL string) error {
	if s.sourceOK == nil {
		return nil
	}
	if err := s.sourceOK(rawURL); err != nil {
		return &events.ValidationError{Field: field, Message: err.Error()}
	}
	return nil
}
