package events

import (
	"errors"
	"fmt"
)

var (
	// ErrConflict means the entity changed since the version the writer expected.
	ErrConflict = errors.New("conflict")
	// ErrInvalid means a command, key or document broke a rule; nothing was written.
	ErrInvalid = errors.New("invalid")
	// ErrMalformed means a stored or received message is not a well-formed Interlock event.
	ErrMalformed = errors.New("malformed event")
	// ErrUnknownType means an event's type is not one this version of Interlock knows.
	ErrUnknownType = errors.New("unknown event type")
)

// ValidationError says which field broke which rule. It matches [ErrInvalid] with errors.Is.
type ValidationError struct {
	Field   string
	Message string
}

func (e *ValidationError) Error() string {
	if e.Field == "" {
		return e.Message
	}
	return e.Field + ": " + e.Message
}

// Unwrap makes errors.Is(err, ErrInvalid) hold.
func (e *ValidationError) Unwrap() error { return ErrInvalid }

func invalid(field, format string, args ...any) error {
	return &ValidationError{Field: field, Message: fmt.Sprintf(format, args...)}
}

var (
	// ErrUnavailable means the event store could not take the request: NATS is not connected,
	// the stream has no leader, or the stream is missing. Nothing was written. It is carried by
	// an [*UnavailableError].
	ErrUnavailable = errors.New("event store unavailable")
	// ErrOutcomeUnknown means an append was sent but no answer came back: the event may or may
	// not be stored. It is carried by an [*OutcomeError] that names the event; appending the
	// same event again (same id) settles it.
	ErrOutcomeUnknown = errors.New("outcome unknown")
)

// UnavailableError says why the event store could not take a request. errors.Is matches
// [ErrUnavailable] and the cause.
type UnavailableError struct {
	Err error
}

// Error reads "event store unavailable (nats: no servers available)".
func (e *UnavailableError) Error() string {
	return ErrUnavailable.Error() + " (" + e.Err.Error() + ")"
}

// Unwrap makes errors.Is match ErrUnavailable and the cause.
func (e *UnavailableError) Unwrap() []error { return []error{ErrUnavailable, e.Err} }

// OutcomeError is an append that was sent but not answered: the event with id EventID may or
// may not be stored on Subject. errors.Is matches [ErrOutcomeUnknown] and the cause.
type OutcomeError struct {
	EventID string
	Subject string
	Err     error
}

// Error names the event and what happened to the append.
func (e *OutcomeError) Error() string {
	return fmt.Sprintf("append of event %s on %s: outcome unknown (%v)", e.EventID, e.Subject, e.Err)
}

// Unwrap makes errors.Is match ErrOutcomeUnknown and the cause.
func (e *OutcomeError) Unwrap() []error { return []error{ErrOutcomeUnknown, e.Err} }
