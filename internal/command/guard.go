package command

import (
	"context"
	"errors"
	"fmt"

	"github.com/interlock-dev/interlock/events"
	"github.com/interlock-dev/interlock/guard"
	"github.com/interlock-dev/interlock/projections"
)

// Guard returns the service as the guard's [guard.Commander]: the guard's commands go through
// the same path as a person's, as actor guard.
func (s *Service) Guard() guard.Commander { return guardCommands{s} }

type guardCommands struct{ svc *Service }

// Command implements guard.Commander. Refusals on the flag's state wrap guard.ErrRefused, so the
// guard judges the new state instead of sending the command again.
func (g guardCommands) Command(ctx context.Context, c guard.Command) (projections.Flag, error) {
	m := Meta{Actor: guard.Actor, Reason: c.Reason, CausationID: c.Causation, CorrelationID: c.Correlation}
	var f projections.Flag
	var err error
	switch c.Kind {
	case guard.CmdRecord:
		if c.Decision == nil {
			return projections.Flag{}, fmt.Errorf("record: no decision: %w", events.ErrInvalid)
		}
		f, err = g.svc.RecordDecision(ctx, m, c.Env, c.Flag, c.Expected, *c.Decision)
	case guard.CmdAdvance:
		f, err = g.svc.AdvanceRollout(ctx, m, c.Env, c.Flag, c.Rollout, c.From, c.Expected)
	case guard.CmdStepBack:
		f, err = g.svc.StepBackRollout(ctx, m, c.Env, c.Flag, c.Rollout, c.From, c.Expected)
	case guard.CmdAbort:
		f, err = g.svc.AbortRollout(ctx, m, c.Env, c.Flag, c.Rollout, c.Expected)
	case guard.CmdPause:
		f, err = g.svc.PauseRollout(ctx, m, c.Env, c.Flag, c.Rollout, c.Expected)
	case guard.CmdKill:
		f, err = g.svc.Kill(ctx, m, c.Env, c.Flag)
	case guard.CmdOpenValve:
		f, err = g.svc.OpenValve(ctx, m, c.Env, c.Flag, c.Expires, c.Rollout, c.Evidence)
	case guard.CmdCloseValve:
		f, err = g.svc.CloseValve(ctx, m, c.Env, c.Flag, c.Cause, c.Evidence)
	default:
		return projections.Flag{}, fmt.Errorf("unknown guard command %q: %w", c.Kind, events.ErrInvalid)
	}
	if err != nil && refused(err) {
		err = fmt.Errorf("%w: %w", guard.ErrRefused, err)
	}
	return f, err
}

// refused reports whether err is a refusal on the flag's state rather than a failure to write.
func refused(err error) bool {
	for _, target := range []error{
		ErrStale, ErrNotFound, ErrArchived, ErrRolloutActive,
		ErrNoRollout, ErrRolloutState, ErrTripped, ErrNotValve,
	} {
		if errors.Is(err, target) {
			return true
		}
	}
	return false
}
