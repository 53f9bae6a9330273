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
	decide func(f *projections.Flag, r *projections.Rollout) (decision, error)) (Result, error) {
	return exec(ctx, s, flagKind, flagCommand{
		name: name, env: env, key: key, meta: m, expected: expected,
		decide: func(_ context.Context, e *flagEntry) (decision, error) {
			f := &e.state
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
// id. Nothing is split until [StartRollout]. A finished rollout is replaced.
//
// Errors: [ErrNotFound]; [*VersionError]; [ErrArchived]; [ErrRolloutActive] if a rollout is
// running or paused; events.ErrInvalid naming the plan's field at fault (variants are checked
// against the flag's); [ErrNotValve] if the plan's valve is not a valve of the environment.
type CreateRollout struct {
	Meta
	Env, Key        string
	ExpectedVersion uint64
	Plan            events.RolloutPlan
}

// Name is "create rollout".
func (CreateRollout) Name() string { return "create rollout" }

func (c CreateRollout) validate(ctx context.Context, s *Service) (Command, error) {
	if err := c.check(ctx, s); err != nil {
		return nil, fmt.Errorf("create rollout %s/%s: %w", c.Env, c.Key, err)
	}
	return c, nil
}

// check is validate without the command's name on the error; it fills in c's defaults.
func (c *CreateRollout) check(ctx context.Context, s *Service) error {
	m, err := validateCommand(c.Meta, c.Env, c.Key, false)
	if err != nil {
		return err
	}
	c.Meta, c.Plan = m, c.Plan.WithDefaults()
	if err := c.Plan.Validate(nil); err != nil {
		return err
	}
	if err := s.checkSource("source.url", c.Plan.Source.URL); err != nil {
		return err
	}
	if s.checkPlan != nil {
		if err := s.checkPlan(c.Key, c.Plan); err != nil {
			return err
		}
	}
	if c.Plan.Valve == nil {
		return nil
	}
	v, err := s.Get(ctx, c.Env, c.Plan.Valve.Flag)
	switch {
	case errors.Is(err, ErrNotFound):
		return fmt.Errorf("valve %s: %w", c.Plan.Valve.Flag, ErrNotValve)
	case err != nil:
		return err
	case v.Valve == nil || v.Archived:
		return fmt.Errorf("valve %s: %w: configure it as a valve first", c.Plan.Valve.Flag, ErrNotValve)
	}
	return nil
}

func (c CreateRollout) exec(ctx context.Context, s *Service) (Result, error) {
	id, err := uuid.NewV7()
	if err != nil {
		return Result{}, fmt.Errorf("create rollout %s/%s: %w", c.Env, c.Key, err)
	}
	plan := c.Plan
	return exec(ctx, s, flagKind, flagCommand{
		name: c.Name(), env: c.Env, key: c.Key, meta: c.Meta, expected: c.ExpectedVersion,
		decide: func(_ context.Context, e *flagEntry) (decision, error) {
			f := &e.state
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

// RolloutTarget names the rollout a command acts on: the rollout ID of flag Env/Key (the flag's
// latest when ID is empty), at the flag's ExpectedVersion (0 for any).
type RolloutTarget struct {
	Env, Key        string
	ID              string
	ExpectedVersion uint64
}

// StartRollout starts the flag's created rollout at its first stage: the flag's default serve
// becomes the stage's split at once. Starting a running rollout writes nothing.
//
// Errors: [ErrNotFound]; [*VersionError]; [ErrArchived]; [ErrNoRollout]; [ErrRolloutState] if
// the rollout is paused or finished.
type StartRollout struct {
	Meta
	RolloutTarget
}

// Name is "start rollout".
func (StartRollout) Name() string { return "start rollout" }

func (c StartRollout) validate(context.Context, *Service) (Command, error) {
	err := target(&c.Meta, c.Name(), c.Env, c.Key, false)
	return c, err
}

func (c StartRollout) exec(ctx context.Context, s *Service) (Result, error) {
	return s.rolloutCommand(ctx, c.Name(), c.Meta, c.Env, c.Key, c.ID, c.ExpectedVersion, func(f *projections.Flag, r *projections.Rollout) (decision, error) {
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
type PauseRollout StartRollout

// Name is "pause rollout".
func (PauseRollout) Name() string { return "pause rollout" }

func (c PauseRollout) validate(context.Context, *Service) (Command, error) {
	err := target(&c.Meta, c.Name(), c.Env, c.Key, false)
	return c, err
}

func (c PauseRollout) exec(ctx context.Context, s *Service) (Result, error) {
	return s.setPaused(ctx, c.Name(), c.Meta, c.RolloutTarget, true)
}

// ResumeRollout lets a paused rollout go on; its stage begins afresh. Resuming a running rollout
// writes nothing.
//
// Errors: [ErrNotFound]; [*VersionError]; [ErrArchived]; [ErrNoRollout]; [ErrRolloutState]
// unless paused.
type ResumeRollout StartRollout

// Name is "resume rollout".
func (ResumeRollout) Name() string { return "resume rollout" }

func (c ResumeRollout) validate(context.Context, *Service) (Command, error) {
	err := target(&c.Meta, c.Name(), c.Env, c.Key, false)
	return c, err
}

func (c ResumeRollout) exec(ctx context.Context, s *Service) (Result, error) {
	return s.setPaused(ctx, c.Name(), c.Meta, c.RolloutTarget, false)
}

func (s *Service) setPaused(ctx context.Context, name string, m Meta, t RolloutTarget, pause bool) (Result, error) {
	return s.rolloutCommand(ctx, name, m, t.Env, t.Key, t.ID, t.ExpectedVersion, func(f *projections.Flag, r *projections.Rollout) (decision, error) {
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

// AdvanceRollout moves the rollout from stage From to the next one, or completes it from its
// last stage (the flag then serves the treatment to everyone). It is idempotent: when the
// rollout has already left stage From (by this command sent twice, or by another replica), it
// writes nothing. A negative From means the current stage. Meta.Reason is required.
//
// Errors: [ErrNotFound]; [*VersionError]; [ErrArchived]; [ErrNoRollout]; [ErrRolloutState]
// unless running or paused (or completed from stage From), or when From is ahead of the rollout;
// [ErrTripped] while the guard is tripped.
type AdvanceRollout struct {
	Meta
	RolloutTarget
	From int
}

// Name is "advance rollout".
func (AdvanceRollout) Name() string { return "advance rollout" }

func (c AdvanceRollout) validate(context.Context, *Service) (Command, error) {
	err := target(&c.Meta, c.Name(), c.Env, c.Key, true)
	return c, err
}

func (c AdvanceRollout) exec(ctx context.Context, s *Service) (Result, error) {
	return s.rolloutCommand(ctx, c.Name(), c.Meta, c.Env, c.Key, c.ID, c.ExpectedVersion, func(f *projections.Flag, r *projections.Rollout) (decision, error) {
		stage := c.From
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

// StepBackRollout moves the rollout from stage From back to the one before. Like
// [AdvanceRollout] it is idempotent and a negative From means the current stage. Meta.Reason is
// required.
//
// Errors: [ErrNotFound]; [*VersionError]; [ErrNoRollout]; [ErrRolloutState] unless running or
// paused, at the first stage (abort instead), or when From is not the current stage.
type StepBackRollout AdvanceRollout

// Name is "step back rollout".
func (StepBackRollout) Name() string { return "step back rollout" }

func (c StepBackRollout) validate(context.Context, *Service) (Command, error) {
	err := target(&c.Meta, c.Name(), c.Env, c.Key, true)
	return c, err
}

func (c StepBackRollout) exec(ctx context.Context, s *Service) (Result, error) {
	return s.rolloutCommand(ctx, c.Name(), c.Meta, c.Env, c.Key, c.ID, c.ExpectedVersion, func(f *projections.Flag, r *projections.Rollout) (decision, error) {
		stage := c.From
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
type AbortRollout StartRollout

// Name is "abort rollout".
func (AbortRollout) Name() string { return "abort rollout" }

func (c AbortRollout) validate(context.Context, *Service) (Command, error) {
	err := target(&c.Meta, c.Name(), c.Env, c.Key, true)
	return c, err
}

func (c AbortRollout) exec(ctx context.Context, s *Service) (Result, error) {
	return s.rolloutCommand(ctx, c.Name(), c.Meta, c.Env, c.Key, c.ID, c.ExpectedVersion, func(f *projections.Flag, r *projections.Rollout) (decision, error) {
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

// RecordDecision appends the guard's Decision about the flag's rollout Decision.Rollout, with its
// evidence. The resulting flag's Rollout.Guard.Decision is the decision event's id, the
// causation id of whatever the guard does next.
//
// Errors: [ErrNotFound]; [*VersionError]; [ErrNoRollout] if Decision.Rollout is not the flag's
// rollout; [ErrRolloutState] if it is finished; events.ErrInvalid for an empty state or action.
type RecordDecision struct {
	Meta
	Env, Key        string
	ExpectedVersion uint64
	Decision        events.GuardDecided
}

// Name is "record decision".
func (RecordDecision) Name() string { return "record decision" }

func (c RecordDecision) validate(context.Context, *Service) (Command, error) {
	m, err := validateCommand(c.Meta, c.Env, c.Key, false)
	d := &c.Decision
	if err == nil && (d.StateAfter == "" || d.Action == "" || d.Rollout == "") {
		err = &events.ValidationError{Field: "decision", Message: "rollout, stateAfter and action are required"}
	}
	if err == nil {
		err = validEvidence(d.Evidence)
	}
	if err != nil {
		return nil, fmt.Errorf("record decision %s/%s: %w", c.Env, c.Key, err)
	}
	c.Meta = m
	return c, nil
}

func (c RecordDecision) exec(ctx context.Context, s *Service) (Result, error) {
	return s.rolloutCommand(ctx, c.Name(), c.Meta, c.Env, c.Key, c.Decision.Rollout, c.ExpectedVersion, func(f *projections.Flag, r *projections.Rollout) (decision, error) {
		if r.Finished() {
			return decision{}, fmt.Errorf("%w: rollout %s is %s", ErrRolloutState, r.ID, r.Status)
		}
		return decision{typ: events.TypeGuardDecided, payload: c.Decision}, nil
	})
}

// Rearm clears the tripped guard of the flag's rollout on a person's word; the stage begins
// afresh. Meta.Reason is required.
//
// Errors: [ErrNotFound]; [*VersionError]; [ErrNoRollout]; [ErrRolloutState] if the guard is not
// tripped.
type Rearm StartRollout

// Name is "rearm".
func (Rearm) Name() string { return "rearm" }

func (c Rearm) validate(context.Context, *Service) (Command, error) {
	err := target(&c.Meta, c.Name(), c.Env, c.Key, true)
	return c, err
}

func (c Rearm) exec(ctx context.Context, s *Service) (Result, error) {
	return s.rolloutCommand(ctx, c.Name(), c.Meta, c.Env, c.Key, c.ID, c.ExpectedVersion, func(f *projections.Flag, r *projections.Rollout) (decision, error) {
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
type ConfigureValve struct {
	Meta
	Env, Key        string
	ExpectedVersion uint64
	Valve           events.ValveConfigured
}

// Name is "configure valve".
func (ConfigureValve) Name() string { return "configure valve" }

func (c ConfigureValve) validate(_ context.Context, s *Service) (Command, error) {
	v := c.Valve
	m, err := validateCommand(c.Meta, c.Env, c.Key, false)
	if err == nil {
		err = v.Validate(nil)
	}
	if err == nil && v.Policy != nil {
		err = s.checkSource("policy.source.url", v.Policy.Source.URL)
	}
	if err == nil && s.checkPolicy != nil {
		err = s.checkPolicy(v.Policy)
	}
	if err != nil {
		return nil, fmt.Errorf("configure valve %s/%s: %w", c.Env, c.Key, err)
	}
	c.Meta = m
	return c, nil
}

func (c ConfigureValve) exec(ctx context.Context, s *Service) (Result, error) {
	env, v := c.Env, c.Valve
	return exec(ctx, s, flagKind, flagCommand{
		name: c.Name(), env: env, key: c.Key, meta: c.Meta, expected: c.ExpectedVersion,
		decide: func(ctx context.Context, e *flagEntry) (decision, error) {
			f := &e.state
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
// valve's segment) until closed or, when Expires is not zero, until then (the guard closes it
// at expiry). Meta.Reason is required. Opening an open valve writes nothing unless it changes
// the expiry. Rollout names the rollout whose trip opens it ("" for a person); Evidence is the
// guard's.
//
// Errors: [ErrNotFound]; [ErrNotValve]; events.ErrInvalid for an expiry in the past.
type OpenValve struct {
	Meta
	Env, Key string
	Expires  time.Time
	Rollout  string
	Evidence []byte
}

// Name is "open valve".
func (OpenValve) Name() string { return "open valve" }

func (c OpenValve) validate(context.Context, *Service) (Command, error) {
	m, err := validateCommand(c.Meta, c.Env, c.Key, true)
	if err == nil {
		err = validEvidence(c.Evidence)
	}
	if err != nil {
		return nil, fmt.Errorf("open valve %s/%s: %w", c.Env, c.Key, err)
	}
	c.Meta, c.Expires = m, c.Expires.UTC().Truncate(time.Millisecond)
	return c, nil
}

func (c OpenValve) exec(ctx context.Context, s *Service) (Result, error) {
	expires := c.Expires
	return exec(ctx, s, flagKind, flagCommand{
		name: c.Name(), env: c.Env, key: c.Key, meta: c.Meta,
		decide: func(_ context.Context, e *flagEntry) (decision, error) {
			v := e.state.Valve
			switch {
			case v == nil || v.Variant == "":
				return decision{}, fmt.Errorf("%w: configure the flag as a valve first", ErrNotValve)
			case v.Open && v.Expires.Equal(expires):
				return noop, nil
			case !expires.IsZero() && !expires.After(time.Now()):
				return decision{}, &events.ValidationError{Field: "expires", Message: "is in the past"}
			}
			return decision{typ: events.TypeValveOpened, payload: events.ValveOpened{
				Variant: v.Variant, Segment: v.Segment, Expires: expires, Rollout: c.Rollout, Evidence: c.Evidence,
			}}, nil
		},
	})
}

// CloseValve closes the flag's safety valve; the flag serves its own configuration again.
// Closing a closed valve writes nothing. Cause is events.ValveClosedManual for a person (who
// gives a reason), or what made the guard close it.
//
// Errors: [ErrNotFound]; [ErrNotValve]; events.ErrInvalid for an unknown cause.
type CloseValve struct {
	Meta
	Env, Key string
	Cause    string
	Evidence []byte
}

// Name is "close valve".
func (CloseValve) Name() string { return "close valve" }

func (c CloseValve) validate(context.Context, *Service) (Command, error) {
	m, err := validateCommand(c.Meta, c.Env, c.Key, true)
	if err == nil && c.Cause != events.ValveClosedManual && c.Cause != events.ValveClosedExpired && c.Cause != events.ValveClosedHealthy {
		err = &events.ValidationError{Field: "cause", Message: fmt.Sprintf("%q is not manual, expired or healthy", c.Cause)}
	}
	if err == nil {
		err = validEvidence(c.Evidence)
	}
	if err != nil {
		return nil, fmt.Errorf("close valve %s/%s: %w", c.Env, c.Key, err)
	}
	c.Meta = m
	return c, nil
}

func (c CloseValve) exec(ctx context.Context, s *Service) (Result, error) {
	return exec(ctx, s, flagKind, flagCommand{
		name: c.Name(), env: c.Env, key: c.Key, meta: c.Meta,
		decide: func(_ context.Context, e *flagEntry) (decision, error) {
			v := e.state.Valve
			switch {
			case v == nil:
				return decision{}, fmt.Errorf("%w: it was never configured as one", ErrNotValve)
			case !v.Open:
				return noop, nil
			}
			return decision{typ: events.TypeValveClosed, payload: events.ValveClosed{Cause: c.Cause, Evidence: c.Evidence}}, nil
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
