package command

import (
	"context"
	"errors"
	"fmt"

	"github.com/interlock-dev/interlock/events"
)

// AcknowledgeIntegrity appends an [events.IntegrityAcknowledged] event: m's actor acknowledges,
// for m's reason (required), every integrity problem at or below stream sequence through, of
// which the caller counted problems. Every replica's projections apply it, and readiness stops
// reporting those problems. It returns the stored event. Sent again with the same
// Meta.EventID, it writes nothing new and returns the event first stored.
//
// Errors: one wrapping events.ErrInvalid for a bad Meta, a missing reason, a through of 0 or
// one beyond the stream's last sequence (problems not yet stored cannot be acknowledged); one
// wrapping events.ErrConflict when other acknowledgements kept being appended for maxAttempts
// tries; otherwise a read or append error (see the package documentation).
func (s *Service) AcknowledgeIntegrity(ctx context.Context, m Meta, through, problems uint64) (ev events.Event, err error) {
	if s.observer != nil {
		defer func() { s.observer.Commanded("acknowledge integrity", OutcomeOf(err)) }()
	}
	m, err = cleanMeta(m, true)
	if err != nil {
		return events.Event{}, err
	}
	if through == 0 {
		return events.Event{}, &events.ValidationError{Field: "through", Message: "is the stream sequence up to which problems are acknowledged: 1 or more"}
	}
	last, err := s.store.LastSequence(ctx)
	if err != nil {
		return events.Event{}, fmt.Errorf("acknowledge integrity: %w", err)
	}
	if through > last {
		return events.Event{}, &events.ValidationError{Field: "through",
			Message: fmt.Sprintf("%d is beyond the stream's last sequence %d: only stored messages can be acknowledged", through, last)}
	}
	ev, err = events.NewEvent(events.TypeIntegrityAcknowledged, events.GlobalEnvironment, events.IntegrityKey,
		events.IntegrityAcknowledged{Through: through, Problems: problems})
	if err != nil {
		return events.Event{}, err
	}
	if m.EventID != "" {
		ev.ID = m.EventID
	}
	ev.Actor, ev.Reason = m.Actor, m.Reason
	ev.CorrelationID, ev.CausationID = m.CorrelationID, m.CausationID
	for attempt := 1; ; attempt++ {
		version, seq, stored, err := s.acknowledgements(ctx, m.EventID)
		if err != nil {
			return events.Event{}, err
		}
		if stored != nil {
			return *stored, nil // sent again: the first attempt is stored
		}
		ev.Version = version + 1
		err = s.append(ctx, &ev, seq)
		if err == nil {
			return ev, nil
		}
		if !errors.Is(err, events.ErrConflict) || attempt >= maxAttempts {
			return events.Event{}, fmt.Errorf("acknowledge integrity: %w", err)
		}
	}
}

// acknowledgements reads the acknowledgement subject: how many events it has, the sequence of its
// last message, and the event with id, if it is there (id "" finds nothing).
func (s *Service) acknowledgements(ctx context.Context, id string) (version, seq uint64, found *events.Event, err error) {
	err = s.store.Read(ctx, events.Query{Subjects: []string{events.IntegritySubject()}}, func(ev events.Event, err error) error {
		seq = ev.Sequence
		if err != nil {
			return nil // not an event (a forgery, say): skipped, as the projections skip it
		}
		version = ev.Version
		if id != "" && ev.ID == id {
			found = &ev
		}
		return nil
	})
	if err != nil {
		return 0, 0, nil, fmt.Errorf("read %s: %w", events.IntegritySubject(), err)
	}
	return version, seq, found, nil
}
