package api

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
	"strings"

	"github.com/interlock-dev/interlock/apiv1"
	"github.com/interlock-dev/interlock/events"
	"github.com/interlock-dev/interlock/internal/auth"
	"github.com/interlock-dev/interlock/internal/command"
	"github.com/interlock-dev/interlock/projections"
)

// Kinds of request errors found by the API itself, before or around a command or query.
var (
	errBadRequest           = errors.New("bad request")
	errPreconditionRequired = errors.New("precondition required")
	errUnsupportedMediaType = errors.New("unsupported media type")
	errMethodNotAllowed     = errors.New("method not allowed")
	errNoRoute              = errors.New("no route")
	errFlagNotFound         = errors.New("flag not found")
	errSegmentNotFound      = errors.New("segment not found")
	// errNoValve means the flag was never configured nor opened as a safety valve (rollouts.go).
	errNoValve = errors.New("not a valve")
	// errStaleBody marks a stale version that came from a request body, not If-Match: a
	// conflict (409), not a failed precondition (412).
	errStaleBody = errors.New("stale version in body")
	// errTooManyRequests is a request over its token's rate limit (limit.go).
	errTooManyRequests = errors.New("too many requests")
	// errUnavailable is a request that could not be done now, with nothing changed; its message
	// says what to do.
	errUnavailable = errors.New("unavailable")
	// errConflict is a request the server's state refuses as it is; its message says why.
	errConflict = errors.New("conflict")
	// errNotReady means the catalog has not caught up with the stream yet.
	errNotReady = errors.New("projections are catching up with the stream; try again shortly")
)

// requestError is an error of the request with a message for the client.
type requestError struct {
	kind error
	msg  string
}

func (e *requestError) Error() string { return e.msg }
func (e *requestError) Unwrap() error { return e.kind }

func badRequest(msg string) error { return &requestError{kind: errBadRequest, msg: msg} }

// Error codes: apiv1's, as the strings classify returns. Their meaning and status are listed
// there.
const (
	codeInvalidArgument      = string(apiv1.CodeInvalidArgument)
	codeUnauthenticated      = string(apiv1.CodeUnauthenticated)
	codeForbidden            = string(apiv1.CodeForbidden)
	codeNotFound             = string(apiv1.CodeNotFound)
	codeMethodNotAllowed     = string(apiv1.CodeMethodNotAllowed)
	codeAlreadyExists        = string(apiv1.CodeAlreadyExists)
	codeArchived             = string(apiv1.CodeArchived)
	codeConflict             = string(apiv1.CodeConflict)
	codeTripped              = string(apiv1.CodeTripped)
	codePreconditionFailed   = string(apiv1.CodePreconditionFailed)
	codePreconditionRequired = string(apiv1.CodePreconditionRequired)
	codePayloadTooLarge      = string(apiv1.CodePayloadTooLarge)
	codeUnsupportedMediaType = string(apiv1.CodeUnsupportedMediaType)
	codeUnavailable          = string(apiv1.CodeUnavailable)
	codeStoreUnavailable     = string(apiv1.CodeStoreUnavailable)
	codeOutcomeUnknown       = string(apiv1.CodeOutcomeUnknown)
	codeTooManyRequests      = string(apiv1.CodeTooManyRequests)
	codeInternal             = string(apiv1.CodeInternal)
)

// internalMessage is all a client learns about an unexpected error.
const internalMessage = "internal error; the server log has the details"

// classify is the one place that maps an error to a status, a code and a message for the client.
// Unknown errors are 500 with a generic message; the caller logs them.
func classify(err error) (status int, code, msg string) {
	var maxBytes *http.MaxBytesError
	var reqErr *requestError
	var outcome *events.OutcomeError
	var down *events.UnavailableError
	if errors.As(err, &reqErr) {
		msg = reqErr.msg
	}
	switch {
	case errors.Is(err, errBadRequest):
		return http.StatusBadRequest, codeInvalidArgument, msg
	case errors.Is(err, errUnsupportedMediaType):
		return http.StatusUnsupportedMediaType, codeUnsupportedMediaType, msg
	case errors.Is(err, errPreconditionRequired):
		return http.StatusPreconditionRequired, codePreconditionRequired, msg
	case errors.Is(err, errMethodNotAllowed):
		return http.StatusMethodNotAllowed, codeMethodNotAllowed, msg
	case errors.Is(err, errNoRoute):
		return http.StatusNotFound, codeNotFound, msg
	case errors.Is(err, errConflict):
		return http.StatusConflict, codeConflict, msg
	case errors.As(err, &maxBytes):
		return http.StatusRequestEntityTooLarge, codePayloadTooLarge,
			"the request body is larger than " + formatBytes(maxBytes.Limit)
	case errors.Is(err, auth.ErrExpired):
		return http.StatusUnauthorized, codeUnauthenticated, err.Error() + "; ask for a new token"
	case errors.Is(err, auth.ErrUnauthenticated):
		return http.StatusUnauthorized, codeUnauthenticated,
			"a valid token is required: Authorization: Bearer <token>"
	case errors.Is(err, auth.ErrForbidden):
		return http.StatusForbidden, codeForbidden, err.Error()
	case errors.Is(err, auth.ErrInvalid):
		return http.StatusBadRequest, codeInvalidArgument, err.Error()
	case errors.Is(err, auth.ErrExists):
		return http.StatusConflict, codeAlreadyExists, err.Error()
	case errors.Is(err, auth.ErrNotFound):
		return http.StatusNotFound, codeNotFound, err.Error()
	case errors.Is(err, errStaleBody):
		return http.StatusConflict, codeConflict, staleMessage(err)
	case errors.Is(err, command.ErrStale):
		return http.StatusPreconditionFailed, codePreconditionFailed, staleMessage(err)
	case errors.Is(err, events.ErrInvalid):
		return http.StatusBadRequest, codeInvalidArgument, validationMessage(err)
	case errors.Is(err, errFlagNotFound), errors.Is(err, errSegmentNotFound):
		return http.StatusNotFound, codeNotFound, msg
	case errors.Is(err, command.ErrNotFound), errors.Is(err, projections.ErrNotFound):
		return http.StatusNotFound, codeNotFound, err.Error()
	case errors.Is(err, command.ErrExists):
		return http.StatusConflict, codeAlreadyExists, err.Error()
	case errors.Is(err, command.ErrArchived):
		return http.StatusConflict, codeArchived, err.Error()
	case errors.Is(err, command.ErrInUse):
		return http.StatusConflict, codeConflict, err.Error()
	case errors.Is(err, errNoValve), errors.Is(err, command.ErrNoRollout):
		return http.StatusNotFound, codeNotFound, err.Error()
	case errors.Is(err, command.ErrTripped):
		return http.StatusConflict, codeTripped, err.Error()
	case errors.Is(err, command.ErrRolloutActive), errors.Is(err, command.ErrRolloutState), errors.Is(err, command.ErrNotValve):
		return http.StatusConflict, codeConflict, err.Error()
	case errors.Is(err, events.ErrConflict):
		return http.StatusConflict, codeConflict, "the flag kept changing while the command was decided; try again"
	case errors.As(err, &outcome):
		return http.StatusServiceUnavailable, codeOutcomeUnknown, outcomeMessage(outcome)
	case errors.As(err, &down):
		return http.StatusServiceUnavailable, codeStoreUnavailable,
			down.Error() + "; nothing was written, try again"
	case errors.Is(err, errTooManyStreams):
		return http.StatusTooManyRequests, codeTooManyRequests, msg
	case errors.Is(err, errTooManyRequests):
		return http.StatusTooManyRequests, codeTooManyRequests, err.Error()
	case errors.Is(err, errUnavailable):
		return http.StatusServiceUnavailable, codeUnavailable, msg
	case errors.Is(err, errNotReady):
		return http.StatusServiceUnavailable, codeUnavailable, errNotReady.Error()
	case errors.Is(err, context.DeadlineExceeded):
		return http.StatusServiceUnavailable, codeUnavailable, "the request timed out; try again"
	}
	return http.StatusInternalServerError, codeInternal, internalMessage
}

// writeError answers err. 5xx answers are logged with the error, which the client never sees.
func (a *API) writeError(w http.ResponseWriter, r *http.Request, err error) {
	status, code, msg := classify(err)
	switch {
	case r.Context().Err() != nil && status >= 500:
		// The client went away (or the server is shutting down): nobody reads this answer.
		a.logger.DebugContext(r.Context(), "request ended early", "method", r.Method, "path", r.URL.Path, "error", err)
	case status >= 500:
		a.logger.ErrorContext(r.Context(), "request failed", "method", r.Method, "path", r.URL.Path,
			"correlation_id", correlationID(r.Context()), "error", err)
	}
	detail := apiv1.Error{Code: apiv1.Code(code), Message: msg}
	switch status {
	case http.StatusUnauthorized:
		w.Header().Set("WWW-Authenticate", `Bearer realm="interlock"`)
	case http.StatusTooManyRequests:
		retry := 5
		var rl *rateLimited
		if errors.As(err, &rl) {
			retry = rl.retryAfterSeconds()
		}
		w.Header().Set("Retry-After", strconv.Itoa(retry))
	case http.StatusServiceUnavailable:
		w.Header().Set("Retry-After", "1")
	}
	var outcome *events.OutcomeError
	if errors.As(err, &outcome) {
		detail.EventID = outcome.EventID
	}
	a.writeJSON(w, r, status, apiv1.ErrorBody{Error: detail})
}

// outcomeMessage tells the client that its write may or may not be stored, and how to settle it.
func outcomeMessage(e *events.OutcomeError) string {
	return "the event store did not confirm event " + e.EventID + " (" + e.Err.Error() +
		"): it may or may not be stored; send the same request with the same Idempotency-Key to settle it"
}

// staleMessage names both versions of a stale write.
func staleMessage(err error) string {
	var ve *command.VersionError
	if errors.As(err, &ve) {
		return ve.Error()
	}
	return "the flag changed since the version you expected"
}

// validationMessage collects the rule each field broke, walking the tree of joined and wrapped
// errors. An invalid error that carries no *events.ValidationError is told as it is.
func validationMessage(err error) string {
	var msgs []string
	var walk func(error)
	walk = func(e error) {
		switch e := e.(type) {
		case *events.ValidationError:
			msgs = append(msgs, e.Error())
		case interface{ Unwrap() []error }:
			for _, x := range e.Unwrap() {
				walk(x)
			}
		case interface{ Unwrap() error }:
			walk(e.Unwrap())
		}
	}
	walk(err)
	if len(msgs) == 0 {
		return err.Error()
	}
	return strings.Join(msgs, "; ")
}

func formatBytes(n int64) string {
	switch {
	case n >= 1<<20 && n%(1<<20) == 0:
		return itoa(n>>20) + " MiB"
	case n >= 1<<10 && n%(1<<10) == 0:
		return itoa(n>>10) + " KiB"
	}
	return itoa(n) + " bytes"
}

// writeJSON writes v as the response body with status.
func (a *API) writeJSON(w http.ResponseWriter, r *http.Request, status int, v any) {
	body, err := json.Marshal(v)
	if err != nil {
		a.logger.ErrorContext(r.Context(), "encode response", "method", r.Method, "path", r.URL.Path,
			"correlation_id", correlationID(r.Context()), "error", err)
		status = http.StatusInternalServerError
		body, _ = json.Marshal(apiv1.ErrorBody{Error: apiv1.Error{Code: apiv1.CodeInternal, Message: internalMessage}})
	}
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	_, _ = w.Write(append(body, '\n'))
}
