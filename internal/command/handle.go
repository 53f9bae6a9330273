package command

import (
	"context"
	"log/slog"
	"time"

	"github.com/interlock-dev/interlock/projections"
)

// Command is one command of the write path, a value: [CreateFlag], [UpdateFlag], [EnableFlag],
// [KillFlag], [ArchiveFlag], [UnarchiveFlag], [RestoreFlag], [CreateSegment], [UpdateSegment],
// [ArchiveSegment], [UnarchiveSegment], [CreateRollout], [StartRollout], [PauseRollout],
// [ResumeRollout], [AdvanceRollout], [StepBackRollout], [AbortRollout], [Rearm],
// [RecordDecision], [ConfigureValve], [OpenValve] and [CloseValve]. [Service.Handle] carries
// them out; each type documents what it does and the errors it returns besides the package's.
type Command interface {
	// Name names the command in errors, logs and metrics: "kill", "create segment", ...
	Name() string
	// validate checks what the command carries before it looks at the entity, and returns it
	// with its fields normalised (white space trimmed, defaults filled in).
	validate(ctx context.Context, s *Service) (Command, error)
	// exec decides and appends the command's event on the entity's current state.
	exec(ctx context.Context, s *Service) (Result, error)
}

// Result is the state of the entity a command changed, after it.
type Result struct {
	// Flag is the flag after a flag command (every command but the segments').
	Flag projections.Flag
	// Segment is the segment after a segment command.
	Segment projections.Segment
}

// Handler carries out a command.
type Handler func(ctx context.Context, c Command) (Result, error)

// Middleware wraps a Handler with what every command shares.
type Middleware func(next Handler) Handler

// Handle carries out c, through the service's middleware: logging, validation, then metrics
// around the decide → append loop of the entity c is about.
//
// Authorisation is not a middleware here: the admin API checks the token's role and scope per
// route, before it reads the request's body, and the guard acts as itself.
func (s *Service) Handle(ctx context.Context, c Command) (Result, error) {
	return s.handler(ctx, c)
}

// chain builds the service's handler: the first middleware is the outermost.
func (s *Service) chain(mw ...Middleware) Handler {
	h := Handler(func(ctx context.Context, c Command) (Result, error) { return c.exec(ctx, s) })
	for i := len(mw) - 1; i >= 0; i-- {
		h = mw[i](h)
	}
	return h
}

// logged logs every command at debug level with how it ended.
func (s *Service) logged(next Handler) Handler {
	return func(ctx context.Context, c Command) (Result, error) {
		start := time.Now()
		r, err := next(ctx, c)
		if s.logger.Enabled(ctx, slog.LevelDebug) {
			s.logger.DebugContext(ctx, "command handled", "command", c.Name(), "outcome", OutcomeOf(err),
				"took", time.Since(start), "error", err)
		}
		return r, err
	}
}

// validated refuses a command whose fields are wrong before it reaches the entity, and passes on
// the command normalised.
func (s *Service) validated(next Handler) Handler {
	return func(ctx context.Context, c Command) (Result, error) {
		c, err := c.validate(ctx, s)
		if err != nil {
			return Result{}, err
		}
		return next(ctx, c)
	}
}

// observed tells the observer how every valid command ended.
func (s *Service) observed(next Handler) Handler {
	return func(ctx context.Context, c Command) (Result, error) {
		r, err := next(ctx, c)
		if s.observer != nil {
			s.observer.Commanded(c.Name(), OutcomeOf(err))
		}
		return r, err
	}
}
