package command_test

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/interlock-dev/interlock/events"
	"github.com/interlock-dev/interlock/internal/command"
	"github.com/interlock-dev/interlock/projections"
)

func TestOutcomeOf(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want command.Outcome
	}{
		{nil, command.OutcomeOK},
		{fmt.Errorf("kill prod/a: %w", events.ErrConflict), command.OutcomeConflict},
		{&command.VersionError{Expected: 1, Actual: 2}, command.OutcomeConflict},
		{command.ErrExists, command.OutcomeConflict},
		{fmt.Errorf("create: %w", events.ErrInvalid), command.OutcomeRefused},
		{command.ErrNotFound, command.OutcomeRefused},
		{projections.ErrNotFound, command.OutcomeRefused},
		{command.ErrTripped, command.OutcomeRefused},
		{&command.InUseError{}, command.OutcomeRefused},
		{context.DeadlineExceeded, command.OutcomeUnavailable},
		{errors.New("nats: no responders available for request"), command.OutcomeUnavailable},
	} {
		if got := command.OutcomeOf(tc.err); got != tc.want {
			t.Errorf("%v: %s, want %s", tc.err, got, tc.want)
		}
	}
}
