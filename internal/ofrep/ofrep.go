// Package ofrep serves the OpenFeature Remote Evaluation Protocol (OFREP 0.3.0) from the live
// flagsets of [targeting.Evaluators]:
//
//   - POST /ofrep/v1/evaluate/flags/{key} evaluates one flag;
//   - POST /ofrep/v1/evaluate/flags evaluates every flag of the environment, answers with an ETag
//     and honours If-None-Match with 304;
//   - GET /ofrep/v1/events is the change-notification stream (Server-Sent Events, ADR-0008) that
//     bulk answers point to in "eventStreams": a refetchEvaluation event whenever the
//     environment's flags change.
//
// Every request needs a token, as "Authorization: Bearer <token>" or "X-API-Key: <token>", whose
// role may read. The environment is the token's scope when it has one; otherwise the
// X-Interlock-Environment header (the environment query parameter on the stream); otherwise
// [Config.DefaultEnvironment]. A scoped token asking for another environment is refused (403).
//
// Requests and answers are exactly the protocol's shapes. Every protocol error is answered in one
// place (errors.go). The evaluation path decodes the request without encoding/json, evaluates
// without locks and writes the answer by hand into a pooled buffer.
package ofrep

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/interlock-dev/interlock/events"
	"github.com/interlock-dev/interlock/internal/auth"
	"github.com/interlock-dev/interlock/targeting"
)

// Flagsets gives the live flagset of an environment and tells when it changes:
// *targeting.Evaluators.
type Flagsets interface {
	// Flagset is the current flagset of env, never nil.
	Flagset(env string) *targeting.Flagset
	// Watch signals (coalesced) after each change of env's flagset; the func unsubscribes.
	Watch(env string) (<-chan struct{}, func())
}

// Authenticator tells who a token stands for: *auth.Store.
type Authenticator interface {
	// Authenticate returns an error wrapping auth.ErrUnauthenticated for a token it does not know.
	Authenticate(ctx context.Context, token string) (auth.Principal, error)
}

// Paths served.
const (
	PathEvaluate = "/ofrep/v1/evaluate/flags"
	PathEvents   = "/ofrep/v1/events"
)

// HeaderStale marks an answer evaluated from the last-known state while the event store is out
// of reach.
const HeaderStale = "X-Interlock-Stale"

var staleValue = []string{"true"}

// stale reports whether answers are from the last-known state (see [Config.Stale]).
func (h *Handler) stale() bool { return h.cfg.Stale != nil && h.cfg.Stale() }

// HeaderEnvironment names the environment to evaluate in, for tokens without a scope.
const HeaderEnvironment = "X-Interlock-Environment"

// Defaults of [Config].
const (
	DefaultEnvironment     = "production"
	DefaultMaxBodyBytes    = 256 << 10
	DefaultHeartbeat       = 15 * time.Second
	DefaultInactivityDelay = 120 * time.Second
	DefaultRefetchWait     = 2 * time.Second
)

// Config is what the handler needs. Flagsets and Auth are required; everything else has a default.
type Config struct {
	// Flagsets are the live, compiled flags: *targeting.Evaluators.
	Flagsets Flagsets
	// Auth checks tokens: *auth.Store.
	Auth Authenticator
	// Ready reports whether the flagsets have caught up with the stream; until then every request
	// is answered 503 with Retry-After, rather than with evaluations of a half-built state. Nil
	// means always ready.
	Ready func() bool
	// DefaultEnvironment is used when neither the token's scope nor the request names one;
	// [DefaultEnvironment] when empty.
	DefaultEnvironment string
	// Logger receives unexpected errors with component=ofrep. Nil discards them.
	Logger *slog.Logger
	// MaxBodyBytes bounds request bodies; larger ones get 413. [DefaultMaxBodyBytes] when 0.
	MaxBodyBytes int64
	// RateLimit is how many evaluation requests per second each principal (token name) may make
	// on this replica; beyond it requests get 429 with Retry-After. 0 means no limit.
	RateLimit float64
	// RateBurst is how many requests above the steady rate a principal may make at once; 1 when 0.
	RateBurst int
	// PublicURL is the base URL clients reach this server at (such as https://flags.example.com).
	// When set, bulk answers give the event stream as an absolute "url"; otherwise as an
	// "endpoint" with a "requestUri", which providers resolve against their OFREP base URL.
	PublicURL string
	// Heartbeat is the interval of comment lines on an idle event stream, so that proxies keep
	// it open and dead clients are noticed. [DefaultHeartbeat] when 0.
	Heartbeat time.Duration
	// InactivityDelay is advertised to clients as the event stream's inactivityDelaySec.
	// [DefaultInactivityDelay] when 0.
	InactivityDelay time.Duration
	// Stale, when set, says whether the flagsets may be behind the event store because it is out
	// of reach: answers then carry the header X-Interlock-Stale: true and "stale": true in their
	// metadata, and are still the last-known state. It is called on every evaluation: make it
	// cheap (an atomic load).
	Stale func() bool
	// PublicRead lets evaluations without a token through, as an anonymous reader of every
	// environment (the server's --public-read). Off by default: every evaluation needs a token.
	// A request that carries a token is still checked; anonymous requests share one rate limit.
	PublicRead bool
	// RefetchWait bounds how long a bulk evaluation triggered by a change notification
	// (flagConfigEtag query parameter) waits for this replica to apply that change.
	// [DefaultRefetchWait] when 0.
	RefetchWait time.Duration
	// Observer, when set, is told of every flag evaluated, for metrics.
	Observer Observer
}

// Observer is told of every evaluation, on the hot path: its method must not block, and should
// not allocate. A request refused before evaluating (a body that is not the protocol's JSON, a
// bad context) counts as one evaluation with [targeting.ReasonError] and its error code;
// requests refused for their token, rate or readiness are not evaluations.
type Observer interface {
	Evaluated(reason targeting.Reason, code targeting.ErrorCode)
}

func (c *Config) setDefaults() {
	if c.DefaultEnvironment == "" {
		c.DefaultEnvironment = DefaultEnvironment
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.MaxBodyBytes == 0 {
		c.MaxBodyBytes = DefaultMaxBodyBytes
	}
	if c.RateBurst == 0 {
		c.RateBurst = 1
	}
	if c.Heartbeat == 0 {
		c.Heartbeat = DefaultHeartbeat
	}
	if c.InactivityDelay == 0 {
		c.InactivityDelay = DefaultInactivityDelay
	}
	if c.RefetchWait == 0 {
		c.RefetchWait = DefaultRefetchWait
	}
}

// Validate reports every problem with the configuration, joined.
func (c Config) Validate() error {
	var errs []error
	if c.Flagsets == nil {
		errs = append(errs, errors.New("flagsets: required"))
	}
	if c.Auth == nil {
		errs = append(errs, errors.New("auth: required"))
	}
	if c.DefaultEnvironment != "" {
		if err := events.ValidateEnvironment(c.DefaultEnvironment); err != nil {
			errs = append(errs, fmt.Errorf("default environment: %w", err))
		}
	}
	if c.MaxBodyBytes < 0 {
		errs = append(errs, errors.New("max body bytes: negative"))
	}
	if c.RateLimit < 0 {
		errs = append(errs, errors.New("rate limit: negative"))
	}
	if c.RateBurst < 0 {
		errs = append(errs, errors.New("rate burst: negative"))
	}
	if c.PublicURL != "" && !strings.HasPrefix(c.PublicURL, "http://") && !strings.HasPrefix(c.PublicURL, "https://") {
		errs = append(errs, fmt.Errorf("public url %q: an http:// or https:// URL", c.PublicURL))
	}
	if c.Heartbeat < 0 {
		errs = append(errs, errors.New("heartbeat: negative"))
	}
	if c.InactivityDelay < 0 {
		errs = append(errs, errors.New("inactivity delay: negative"))
	}
	if c.RefetchWait < 0 {
		errs = append(errs, errors.New("refetch wait: negative"))
	}
	return errors.Join(errs...)
}

// Handler serves OFREP. It is safe for concurrent use.
type Handler struct {
	cfg     Config
	logger  *slog.Logger
	limiter *limiter // nil without a rate limit
	pool    sync.Pool

	// streams counts open event streams; done is closed by Close to end them.
	streams   atomic.Int64
	done      chan struct{}
	closeOnce sync.Once
}

// New returns the handler for cfg, or the configuration's problems (see [Config.Validate]).
func New(cfg Config) (*Handler, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("ofrep config: %w", err)
	}
	cfg.setDefaults()
	h := &Handler{
		cfg:    cfg,
		logger: cfg.Logger.With("component", "ofrep"),
		done:   make(chan struct{}),
	}
	if cfg.RateLimit > 0 {
		h.limiter = newLimiter(cfg.RateLimit, cfg.RateBurst, time.Now)
	}
	h.pool.New = func() any { return newExchange() }
	return h, nil
}

// Close ends every open event stream and refuses new ones (503); evaluations go on being served.
// Register it with http.Server.RegisterOnShutdown, since Shutdown does not end streaming
// responses by itself. It is safe to call more than once.
func (h *Handler) Close() {
	h.closeOnce.Do(func() { close(h.done) })
}

// OpenStreams is the number of event streams being served.
func (h *Handler) OpenStreams() int { return int(h.streams.Load()) }

// ServeHTTP routes a request under /ofrep/v1 and recovers from panics, answering 500.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	defer h.recover(w, r)
	// The patterns are the route a mux would give, for the request metrics.
	path := r.URL.Path
	switch {
	case path == PathEvaluate:
		r.Pattern = "POST " + PathEvaluate
		if r.Method != http.MethodPost {
			r.Pattern = PathEvaluate
			h.writeError(w, errMethod("POST"), "", kindGeneral)
			return
		}
		h.evaluateAll(w, r)
	case len(path) > len(PathEvaluate) && path[len(PathEvaluate)] == '/' && path[:len(PathEvaluate)] == PathEvaluate:
		r.Pattern = "POST " + PathEvaluate + "/{key}"
		if r.Method != http.MethodPost {
			r.Pattern = PathEvaluate + "/{key}"
			h.writeError(w, errMethod("POST"), "", kindGeneral)
			return
		}
		h.evaluateOne(w, r, path[len(PathEvaluate)+1:])
	case path == PathEvents:
		r.Pattern = "GET " + PathEvents
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			r.Pattern = PathEvents
			h.writeError(w, errMethod("GET"), "", kindGeneral)
			return
		}
		h.stream(w, r)
	default:
		h.writeError(w, fmt.Errorf("%w: no OFREP endpoint at %s", ErrNoRoute, path), "", kindGeneral)
	}
}

// principal authenticates the request's token and checks that it may read.
func (h *Handler) principal(r *http.Request) (auth.Principal, error) {
	if h.cfg.PublicRead && !hasToken(r.Header) {
		return anonymous, nil
	}
	token, err := tokenOf(r.Header)
	if err != nil {
		return auth.Principal{}, err
	}
	p, err := h.cfg.Auth.Authenticate(r.Context(), token)
	if err != nil {
		return auth.Principal{}, err
	}
	if err := auth.Authorize(p, auth.ActionRead); err != nil {
		return auth.Principal{}, err
	}
	return p, nil
}

// anonymous is who evaluates without a token on a server with public reads.
var anonymous = auth.Principal{Name: "anonymous", Role: auth.RoleReader}

// hasToken reports whether the request sends a token at all, well-formed or not.
func hasToken(hdr http.Header) bool {
	return len(hdr["Authorization"]) > 0 || len(hdr["X-Api-Key"]) > 0
}

// tokenOf finds the token in "Authorization: Bearer <token>" or, failing that, "X-API-Key".
func tokenOf(hdr http.Header) (string, error) {
	if v := hdr["Authorization"]; len(v) > 0 && v[0] != "" {
		scheme, token, ok := strings.Cut(v[0], " ")
		if !ok || !strings.EqualFold(scheme, "Bearer") {
			return "", fmt.Errorf("%w: Authorization: use the Bearer scheme, or the X-API-Key header", auth.ErrUnauthenticated)
		}
		token = strings.TrimSpace(token)
		if token == "" {
			return "", fmt.Errorf("%w: Authorization: Bearer without a token", auth.ErrUnauthenticated)
		}
		return token, nil
	}
	if v := hdr["X-Api-Key"]; len(v) > 0 && strings.TrimSpace(v[0]) != "" {
		return strings.TrimSpace(v[0]), nil
	}
	return "", fmt.Errorf("%w: send a token as Authorization: Bearer <token> or X-API-Key: <token>", auth.ErrUnauthenticated)
}

// environment picks the environment of a request: the token's scope, else asked (the header, or
// the stream's query parameter), else the default. A scoped token asking for another environment
// is forbidden.
func (h *Handler) environment(p auth.Principal, asked string) (string, error) {
	if p.Environment != "" {
		if asked != "" && asked != p.Environment {
			return "", fmt.Errorf("%w: this token is scoped to environment %q, not %q", auth.ErrForbidden, p.Environment, truncate(asked))
		}
		return p.Environment, nil
	}
	if asked == "" {
		return h.cfg.DefaultEnvironment, nil
	}
	if err := events.ValidateEnvironment(asked); err != nil {
		return "", fmt.Errorf("%w: %w", ErrEnvironment, err)
	}
	return asked, nil
}

// admit runs the checks every request passes before its body is read: readiness, the token, the
// environment and the rate limit. It returns the environment to evaluate in.
func (h *Handler) admit(r *http.Request, asked string) (string, error) {
	if h.cfg.Ready != nil && !h.cfg.Ready() {
		return "", ErrNotReady
	}
	p, err := h.principal(r)
	if err != nil {
		return "", err
	}
	env, err := h.environment(p, asked)
	if err != nil {
		return "", err
	}
	if h.limiter != nil {
		if wait := h.limiter.allow(p.Name); wait > 0 {
			return "", &RateLimitError{RetryAfter: wait}
		}
	}
	return env, nil
}

// truncate shortens what a client sent before it is quoted back in an error.
func truncate(s string) string {
	const max = 64
	if len(s) <= max {
		return s
	}
	return s[:max] + "…"
}
