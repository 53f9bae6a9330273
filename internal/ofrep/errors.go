package ofrep

import (
	"errors"
	"fmt"
	"net/http"
	"runtime/debug"
	"strconv"
	"time"

	"github.com/interlock-dev/interlock/internal/auth"
	"github.com/interlock-dev/interlock/targeting"
)

// Errors of a request, each answered with its own status by [Handler]; auth.ErrUnauthenticated
// (401) and auth.ErrForbidden (403) are answered too. Anything else is a 500 with a generic
// message, and is logged.
var (
	// ErrMalformed means the body is not the protocol's JSON request: 400 PARSE_ERROR.
	ErrMalformed = errors.New("malformed request")
	// ErrInvalidContext means the evaluation context is not a JSON object, or its targetingKey is
	// not a string: 400 INVALID_CONTEXT.
	ErrInvalidContext = errors.New("invalid evaluation context")
	// ErrEnvironment means the requested environment is not a valid environment name: 400 GENERAL.
	ErrEnvironment = errors.New("invalid environment")
	// ErrTooLarge means the body is larger than [Config.MaxBodyBytes]: 413.
	ErrTooLarge = errors.New("request body too large")
	// ErrNotReady means the flagsets have not caught up with the stream yet: 503 with Retry-After.
	ErrNotReady = errors.New("not ready: the flags are still being loaded")
	// ErrClosed means the handler was closed (the server is shutting down): 503.
	ErrClosed = errors.New("shutting down")
	// ErrNoRoute means there is no OFREP endpoint at the path: 404.
	ErrNoRoute = errors.New("no such endpoint")
	// ErrMethodNotAllowed means the endpoint does not take the request's method: 405 with Allow.
	ErrMethodNotAllowed = errors.New("method not allowed")
	// ErrRateLimited means the principal made more requests than [Config.RateLimit] allows: 429
	// with Retry-After. It is returned as a *[RateLimitError].
	ErrRateLimited = errors.New("rate limit reached")
)

// RateLimitError says when the principal may try again. It wraps [ErrRateLimited].
type RateLimitError struct {
	RetryAfter time.Duration
}

// Error says when to retry.
func (e *RateLimitError) Error() string {
	return fmt.Sprintf("%v: retry after %ds", ErrRateLimited, retrySeconds(e.RetryAfter))
}

// Unwrap returns [ErrRateLimited].
func (e *RateLimitError) Unwrap() error { return ErrRateLimited }

// methodError carries the Allow header of a 405.
type methodError struct{ allow string }

func errMethod(allow string) error { return &methodError{allow: allow} }

func (e *methodError) Error() string {
	return fmt.Sprintf("%v: this endpoint takes %s", ErrMethodNotAllowed, e.allow)
}

func (e *methodError) Unwrap() error { return ErrMethodNotAllowed }

// The OpenFeature error codes a request-level failure is answered with.
const (
	codeParse          = "PARSE_ERROR"
	codeInvalidContext = "INVALID_CONTEXT"
	codeGeneral        = "GENERAL"
)

// shape is which of the protocol's error bodies an endpoint answers with.
type shape uint8

const (
	// kindGeneral is {"errorDetails"}: the stream, routing, and every status but 400 and 404.
	kindGeneral shape = iota
	// kindSingle is evaluationFailure {"key", "errorCode", "errorDetails"}.
	kindSingle
	// kindBulk is bulkEvaluationFailure {"errorCode", "errorDetails"}.
	kindBulk
)

// classify maps a request error to its status, its OpenFeature error code (400s only) and the
// message the client sees. It is the one place a request error becomes an answer.
func classify(err error) (status int, code, details string) {
	var rl *RateLimitError
	var me *methodError
	switch {
	case errors.Is(err, ErrMalformed):
		return http.StatusBadRequest, codeParse, err.Error()
	case errors.Is(err, ErrInvalidContext):
		return http.StatusBadRequest, codeInvalidContext, err.Error()
	case errors.Is(err, ErrEnvironment):
		return http.StatusBadRequest, codeGeneral, HeaderEnvironment + ": " + err.Error()
	case errors.Is(err, auth.ErrUnauthenticated):
		return http.StatusUnauthorized, "", err.Error()
	case errors.Is(err, auth.ErrForbidden):
		return http.StatusForbidden, "", err.Error()
	case errors.As(err, &rl):
		return http.StatusTooManyRequests, "", err.Error()
	case errors.Is(err, ErrTooLarge):
		return http.StatusRequestEntityTooLarge, "", err.Error()
	case errors.Is(err, ErrNotReady), errors.Is(err, ErrClosed):
		return http.StatusServiceUnavailable, "", err.Error()
	case errors.Is(err, ErrNoRoute):
		return http.StatusNotFound, "", err.Error()
	case errors.As(err, &me):
		return http.StatusMethodNotAllowed, "", err.Error()
	}
	return http.StatusInternalServerError, "", "internal error"
}

// writeError answers a request that failed before (or instead of) evaluating. key is the flag
// key of a single evaluation.
func (h *Handler) writeError(w http.ResponseWriter, err error, key string, s shape) {
	status, code, details := classify(err)
	if code != "" && s != kindGeneral && h.cfg.Observer != nil {
		h.cfg.Observer.Evaluated(targeting.ReasonError, targeting.ErrorCode(code))
	}
	hdr := w.Header()
	switch status {
	case http.StatusInternalServerError:
		h.logger.Error("ofrep request failed", "error", err)
	case http.StatusUnauthorized:
		hdr["Www-Authenticate"] = wwwAuthenticate
	case http.StatusTooManyRequests:
		var rl *RateLimitError
		errors.As(err, &rl)
		hdr["Retry-After"] = []string{strconv.Itoa(retrySeconds(rl.RetryAfter))}
	case http.StatusServiceUnavailable:
		hdr["Retry-After"] = retryAfterOne
	case http.StatusMethodNotAllowed:
		var me *methodError
		errors.As(err, &me)
		hdr["Allow"] = []string{me.allow}
	}
	b := make([]byte, 0, 128+len(details))
	switch {
	case status == http.StatusBadRequest && s == kindSingle:
		b = appendFailure(b, key, code, details)
	case status == http.StatusBadRequest:
		b = append(b, `{"errorCode":`...)
		b = appendString(b, code)
		b = append(b, `,"errorDetails":`...)
		b = appendString(b, details)
		b = append(b, '}')
	default:
		b = append(b, `{"errorDetails":`...)
		b = appendString(b, details)
		b = append(b, '}')
	}
	hdr["Content-Type"] = contentTypeJSON
	w.WriteHeader(status)
	_, _ = w.Write(b)
}

// evalStatus is the status of a single evaluation that ended with an OpenFeature error code:
// 404 for a flag that does not exist (or is archived), 500 for the engine's GENERAL error, and
// 400 for everything the request's context caused.
func evalStatus(code targeting.ErrorCode) int {
	switch code {
	case targeting.ErrorFlagNotFound:
		return http.StatusNotFound
	case targeting.ErrorGeneral:
		return http.StatusInternalServerError
	}
	return http.StatusBadRequest
}

// evalDetails is what the client reads about a failed evaluation.
func evalDetails(ev *targeting.Evaluation) string {
	if ev.ErrorMessage != "" {
		return ev.ErrorMessage
	}
	switch ev.ErrorCode {
	case targeting.ErrorFlagNotFound:
		return "flag not found"
	case targeting.ErrorTargetingKeyMissing:
		return "this flag splits by targeting key: the context needs a targetingKey"
	}
	return string(ev.ErrorCode)
}

// recover answers a panic with a 500 and logs it; http.ErrAbortHandler goes on up.
func (h *Handler) recover(w http.ResponseWriter, r *http.Request) {
	v := recover()
	if v == nil {
		return
	}
	if v == http.ErrAbortHandler {
		panic(v)
	}
	h.logger.Error("panic serving an OFREP request", "method", r.Method, "path", r.URL.Path,
		"panic", fmt.Sprint(v), "stack", string(debug.Stack()))
	h.writeError(w, fmt.Errorf("panic: %v", v), "", kindGeneral)
}

// retrySeconds rounds a wait up to whole seconds, at least one.
func retrySeconds(d time.Duration) int {
	s := int((d + time.Second - 1) / time.Second)
	return max(s, 1)
}

// Header values set without allocating. net/http only reads them.
var (
	contentTypeJSON = []string{"application/json"}
	wwwAuthenticate = []string{`Bearer realm="interlock"`}
	retryAfterOne   = []string{"1"}
)
