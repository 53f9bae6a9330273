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
