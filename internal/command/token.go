package command

import (
	"context"
	"errors"
	"fmt"

	"github.com/interlock-dev/interlock/events"
)

// TokenState is what the token events of one name say: whether the last one issued a token, and
// with which role and scope.
type TokenState struct {
	// Version is how many token events the name has; 0 for none.
	Version uint64
	// Issued says the last event issued a token (it was not revoked since).
	Issued      bool
	Role        string
	Environment string
}

// Token reads the token events of name.
//
// Errors: one wrapping events.ErrInvalid for a name that is not a valid key; otherwise a read
// error.
func (s *Service) Token(ctx context.Context, name string) (TokenState, error) {
	st, _, err := s.token(ctx, name)
	return st, err
}

func (s *Service) token(ctx context.Context, name string) (TokenState, uint64, error) {
	if err := events.ValidateFlagKey(name); err != nil {
		return TokenState{}, 0, err
	}
	var st TokenState
	var seq uint64
	err := s.store.Read(ctx, events.Query{Subjects: []string{events.TokenSubject(name)}}, func(ev events.Event, err error) error {
		seq = ev.Sequence
		if err != nil {
			return nil // not an event: skipped, as the projections skip it
		}
		st.Version = ev.Version
		p, err := ev.Payload()
		if err != nil {
			return nil
		}
		switch p := p.(type) {
		case *events.TokenIssued:
			st.Issued, st.Role, st.Environment = true, p.Role, p.Environment
		case *events.TokenRevoked:
			st.Issued = false
		}
		return nil
	})
	if err != nil {
		return TokenState{}, 0, fmt.Errorf("read token %s: %w", name, err)
	}
	return st, seq, nil
}

// RecordToken appends a token event (typ events.TypeTokenIssued or events.TypeTokenRevoked, with
// its payload) about the tokens named name, with m's actor and reason. It never carries the token.
//
// Errors: one wrapping events.ErrInvalid or events.ErrUnknownType for a bad name, type or Meta;
// one wrapping events.ErrConflict when other token events of the name kept being appended for
// maxAttempts tries; otherwise a read or append error, after which the event may or may not be
// stored.
func (s *Service) RecordToken(ctx context.Context, m Meta, typ, name string, payload any) (err error) {
	if s.observer != nil {
		defer func() { s.observer.Commanded("token", OutcomeOf(err)) }()
	}
	if typ != events.TypeTokenIssued && typ != events.TypeTokenRevoked {
		return fmt.Errorf("%w: %q is not a token event", events.ErrUnknownType, typ)
	}
	m, err = cleanMeta(m, false)
	if err != nil {
		return err
	}
	ev, err := events.NewEvent(typ, events.GlobalEnvironment, name, payload)
	if err != nil {
		return err
	}
	if m.EventID != "" {
		ev.ID = m.EventID
	}
	ev.Actor, ev.Reason = m.Actor, m.Reason
	ev.CorrelationID, ev.CausationID = m.CorrelationID, m.CausationID
	for attempt := 1; ; attempt++ {
		st, seq, err := s.token(ctx, name)
		if err != nil {
			return err
		}
		ev.Version = st.Version + 1
		err = s.append(ctx, &ev, seq)
		if err == nil {
			return nil
		}
		if !errors.Is(err, events.ErrConflict) || attempt >= maxAttempts {
			return fmt.Errorf("record %s of token %s: %w", typ, name, err)
		}
	}
}
