package apiv1

import (
	"fmt"
	"net/http"
)

// Code is the machine-readable kind of an error answer. Clients match codes, never messages.
type Code string

// The codes the API answers with, and the status each comes with.
const (
	CodeInvalidArgument      Code = "invalid_argument"       // 400
	CodeUnauthenticated      Code = "unauthenticated"        // 401
	CodeForbidden            Code = "forbidden"              // 403
	CodeNotFound             Code = "not_found"              // 404
	CodeMethodNotAllowed     Code = "method_not_allowed"     // 405
	CodeAlreadyExists        Code = "already_exists"         // 409
	CodeArchived             Code = "archived"               // 409
	CodeConflict             Code = "conflict"               // 409
	CodeTripped              Code = "tripped"                // 409: the rollout's guard tripped; re-arm it first
	CodePreconditionFailed   Code = "precondition_failed"    // 412
	CodePreconditionRequired Code = "precondition_required"  // 428
	CodePayloadTooLarge      Code = "payload_too_large"      // 413
	CodeUnsupportedMediaType Code = "unsupported_media_type" // 415
	CodeTooManyRequests      Code = "too_many_requests"      // 429
	CodeUnavailable          Code = "unavailable"            // 503
	CodeStoreUnavailable     Code = "store_unavailable"      // 503: nothing was written; retry
	CodeOutcomeUnknown       Code = "outcome_unknown"        // 503: the write may be stored; retry with its key
	CodeInternal             Code = "internal"               // 500
)

// ErrorBody is the body of every error answer: {"error": {"code", "message"}}.
type ErrorBody struct {
	Error Error `json:"error"`
}

// Error is an error answer of the API. It matches, with errors.Is, the sentinel of its code
// (ErrNotFound and the others below).
type Error struct {
	// Status is the HTTP status of the answer; it is not part of the body.
	Status  int    `json:"-"`
	Code    Code   `json:"code"`
	Message string `json:"message"`
	// EventID names the event of a write of unknown outcome (CodeOutcomeUnknown).
	EventID string `json:"eventId,omitempty"`
	// IdempotencyKey is the key a client sent a write with, so that a write of unknown outcome
	// can be settled by sending it again with the same key; it is not part of the body.
	IdempotencyKey string `json:"-"`
}

func (e *Error) Error() string {
	switch {
	case e.Message != "":
		return e.Message
	case e.Code != "":
		return fmt.Sprintf("server answered %d %s (%s)", e.Status, http.StatusText(e.Status), e.Code)
	}
	return fmt.Sprintf("server answered %d %s", e.Status, http.StatusText(e.Status))
}

// Is reports whether target is the sentinel of e's code.
func (e *Error) Is(target error) bool {
	s, ok := target.(*sentinel)
	return ok && s.code == e.Code
}

// sentinel is the error errors.Is matches an *Error of one code with.
type sentinel struct{ code Code }

func (s *sentinel) Error() string { return "interlock api: " + string(s.code) }

// Sentinels, one per code: errors.Is(err, apiv1.ErrNotFound) holds for an *Error whose code is
// not_found.
var (
	ErrInvalidArgument      error = &sentinel{CodeInvalidArgument}
	ErrUnauthenticated      error = &sentinel{CodeUnauthenticated}
	ErrForbidden            error = &sentinel{CodeForbidden}
	ErrNotFound             error = &sentinel{CodeNotFound}
	ErrMethodNotAllowed     error = &sentinel{CodeMethodNotAllowed}
	ErrAlreadyExists        error = &sentinel{CodeAlreadyExists}
	ErrArchived             error = &sentinel{CodeArchived}
	ErrConflict             error = &sentinel{CodeConflict}
	ErrTripped              error = &sentinel{CodeTripped}
	ErrPreconditionFailed   error = &sentinel{CodePreconditionFailed}
	ErrPreconditionRequired error = &sentinel{CodePreconditionRequired}
	ErrPayloadTooLarge      error = &sentinel{CodePayloadTooLarge}
	ErrUnsupportedMediaType error = &sentinel{CodeUnsupportedMediaType}
	ErrTooManyRequests      error = &sentinel{CodeTooManyRequests}
	ErrUnavailable          error = &sentinel{CodeUnavailable}
	ErrStoreUnavailable     error = &sentinel{CodeStoreUnavailable}
	ErrOutcomeUnknown       error = &sentinel{CodeOutcomeUnknown}
	ErrInternal             error = &sentinel{CodeInternal}
)

// Codes lists every code, in the order of the constants.
func Codes() []Code {
	return []Code{CodeInvalidArgument, CodeUnauthenticated, CodeForbidden, CodeNotFound, CodeMethodNotAllowed,
		CodeAlreadyExists, CodeArchived, CodeConflict, CodeTripped, CodePreconditionFailed,
		CodePreconditionRequired, CodePayloadTooLarge, CodeUnsupportedMediaType, CodeTooManyRequests,
		CodeUnavailable, CodeStoreUnavailable, CodeOutcomeUnknown, CodeInternal}
}
