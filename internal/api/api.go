// Package api is Interlock's admin REST API under /api/v1, with /healthz and /readyz.
//
// Reads (flags, history, audit) come from the projections; writes go through the command service
// and wait until this replica's catalog has applied them, so that a client reads its own writes.
// Every route but /healthz and /readyz needs a bearer token whose role allows the route's action,
// and whose environment scope covers the environment the route is about; reads are open to
// anyone only when [Config.PublicRead] is set. The route table (see [API.Routes]) states each
// route's policy. Every error is answered by one function, [API.writeError], as
// {"error": {"code", "message"}} with the matching status.
//
// Request and response bodies are the types of package apiv1, the wire contract that the Go
// client (package client) shares; GET /api/v1/openapi.yaml serves apiv1's OpenAPI document, a
// read like any other. testdata/wire.golden records every JSON answer of one session: a change
// of types must leave it byte for byte the same.
package api

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/interlock-dev/interlock/apiv1"
	"github.com/interlock-dev/interlock/events"
	"github.com/interlock-dev/interlock/internal/auth"
	"github.com/interlock-dev/interlock/internal/command"
	"github.com/interlock-dev/interlock/projections"
)

// Commands is the write path: *command.Service. Every write of a flag or a segment is one
// command value given to Handle.
type Commands interface {
	Handle(ctx context.Context, c command.Command) (command.Result, error)
	// AcknowledgeIntegrity records an acknowledgement of the integrity problems up to a stream
	// sequence (integrity.go). Like a token's events, it is about no flag or segment, and is not
	// a command value yet.
	AcknowledgeIntegrity(ctx context.Context, m command.Meta, through, problems uint64) (events.Event, error)
}

// Catalog is the live read model of the flags: *projections.Catalog.
type Catalog interface {
	Flag(env, key string) (projections.Flag, bool)
	Flags(env string) []projections.Flag
	Environments() []string
	// WaitSequence returns once the catalog has applied the event at stream sequence seq.
	WaitSequence(ctx context.Context, seq uint64) error
	// Segment and Segments read the segments (segments.go).
	Segment(env, key string) (projections.Segment, bool)
	Segments(env string) []projections.Segment
}

// Authenticator tells who a bearer token stands for: *auth.Store.
type Authenticator interface {
	// Authenticate returns an error wrapping auth.ErrUnauthenticated for a token it does not know.
	Authenticate(ctx context.Context, token string) (auth.Principal, error)
}

// healthTimeout bounds a /readyz check of [Config.Health].
const healthTimeout = 2 * time.Second

// Defaults of [Config].
const (
	DefaultMaxBodyBytes = 1 << 20
	DefaultWriteTimeout = 5 * time.Second
)

// Config is what the API needs. Every field without a default is required.
type Config struct {
	// Commands performs writes.
	Commands Commands
	// Catalog answers reads of the current state.
	Catalog Catalog
	// Reader is the event store, read for history, audit and past states.
	Reader projections.Reader
	// Auth checks bearer tokens.
	Auth Authenticator
	// Ready reports whether the catalog has caught up with the stream; until it has, reads of
	// the current state answer 503.
	Ready func() bool
	// RateLimit is how many requests per second each token (anonymous readers count as one) may
	// make to the admin API on this replica, with bursts of RateBurst; beyond it, 429 with
	// Retry-After. Health checks are not counted. 0 means no limit.
	RateLimit float64
	RateBurst int
	// Health, when set, is what /readyz checks after Ready: an error (which names the cause, such
	// as the event store being unreachable or the projections lagging it) makes /readyz answer
	// 503 with that cause. It is given healthTimeout.
	Health func(ctx context.Context) error
	// Logger receives request logs and unexpected errors, with component=api. Nil discards them.
	Logger *slog.Logger
	// MaxBodyBytes bounds request bodies; larger ones get 413. DefaultMaxBodyBytes when 0.
	MaxBodyBytes int64
	// WriteTimeout bounds how long a write waits for the catalog to apply it before answering
	// anyway. DefaultWriteTimeout when 0.
	WriteTimeout time.Duration
	// PublicRead lets reads without a token through, as an anonymous reader of every
	// environment. Off by default: every read needs a token whose role may read, in its scope. A
	// read that does carry a token is checked as usual.
	PublicRead bool
	// Events follows the stream for the live event feed, GET /api/v1/events (events.go); without
	// it that endpoint answers 404.
	Events EventFeed
	// EventsHeartbeat is how often an idle event feed sends a comment to keep proxies from
	// closing it. DefaultEventsHeartbeat when 0.
	EventsHeartbeat time.Duration
	// EventsBuffer is how many events wait for one feed client at most. DefaultEventsBuffer
	// when 0.
	EventsBuffer int
	// EventsSlowTimeout is how long a feed client may leave EventsBuffer events waiting before
	// it is disconnected. DefaultEventsSlowTimeout when 0.
	EventsSlowTimeout time.Duration
	// EventsPerToken caps the event feeds one token (anonymous readers count as one) may have
	// open on this replica, EventsMaxStreams all of them; over either, 429 with Retry-After.
	// DefaultEventsPerToken and DefaultEventsMaxStreams when 0.
	EventsPerToken, EventsMaxStreams int
	// Presence tracks the in-process subscribers, for GET .../subscribers and
	// .../flags/{key}/propagation (propagation.go); without it those endpoints answer 404.
	Presence Presence
	// Tokens issues, lists and revokes tokens for /api/v1/tokens (tokens.go), which need a token
	// whose role may administer; without it those endpoints answer 404.
	Tokens Tokens
	// Integrity is the record of messages the projections refused because they failed
	// verification, shown by /readyz and GET /api/v1/integrity (integrity.go); without it that
	// endpoint answers 404.
	Integrity IntegrityRecord
	// Chains verifies the stream for GET /api/v1/audit/verify and lists the keys for GET
	// /api/v1/signing-keys; without it (or without a signer) those endpoints answer 404.
	Chains Chains
	// TokenEvents records the issue and revocation of tokens as events; required with Tokens.
	TokenEvents TokenEvents
	// Guard gives the guard's live view of a rollout for GET .../flags/{key}/rollout
	// (rollouts.go); without it, or for a rollout it does not follow, "live" is null.
	Guard GuardStatus
	// Metrics serves GET /metrics, the server's own metrics; without it that endpoint answers
	// 404. Like every read it needs a token whose role may read (any scope: the metrics name no
	// environment or flag), unless PublicRead or MetricsPublic is set.
	Metrics http.Handler
	// MetricsPublic lets anyone read /metrics without a token, for a scraper that has none.
	MetricsPublic bool
}

func (c *Config) setDefaults() {
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.MaxBodyBytes == 0 {
		c.MaxBodyBytes = DefaultMaxBodyBytes
	}
	if c.WriteTimeout == 0 {
		c.WriteTimeout = DefaultWriteTimeout
	}
	if c.EventsHeartbeat == 0 {
		c.EventsHeartbeat = DefaultEventsHeartbeat
	}
	if c.EventsBuffer == 0 {
		c.EventsBuffer = DefaultEventsBuffer
	}
	if c.EventsSlowTimeout == 0 {
		c.EventsSlowTimeout = DefaultEventsSlowTimeout
	}
	if c.EventsPerToken == 0 {
		c.EventsPerToken = DefaultEventsPerToken
	}
	if c.EventsMaxStreams == 0 {
		c.EventsMaxStreams = DefaultEventsMaxStreams
	}
}

// Validate reports every problem with the configuration, joined.
func (c Config) Validate() error {
	var errs []error
	if c.Commands == nil {
		errs = append(errs, errors.New("commands: required"))
	}
	if c.Catalog == nil {
		errs = append(errs, errors.New("catalog: required"))
	}
	if c.Reader == nil {
		errs = append(errs, errors.New("reader: required"))
	}
	if c.Auth == nil {
		errs = append(errs, errors.New("auth: required"))
	}
	if c.Ready == nil {
		errs = append(errs, errors.New("ready: required"))
	}
	if c.Tokens != nil && c.TokenEvents == nil {
		errs = append(errs, errors.New("token events: required with tokens"))
	}
	if c.RateLimit < 0 || c.RateBurst < 0 {
		errs = append(errs, errors.New("rate limit and burst: negative"))
	}
	if c.MaxBodyBytes < 0 {
		errs = append(errs, errors.New("max body bytes: negative"))
	}
	if c.WriteTimeout < 0 {
		errs = append(errs, errors.New("write timeout: negative"))
	}
	if c.EventsHeartbeat < 0 || c.EventsBuffer < 0 || c.EventsSlowTimeout < 0 || c.EventsPerToken < 0 || c.EventsMaxStreams < 0 {
		errs = append(errs, errors.New("events heartbeat, buffer and slow timeout: negative"))
	}
	return errors.Join(errs...)
}

// API serves the admin REST API.
type API struct {
	cfg     Config
	logger  *slog.Logger
	handler http.Handler
	feeds   feeds // the open event feeds (events.go)
	limits  *limits
}

// New returns the API for cfg, or the configuration's problems (see [Config.Validate]).
func New(cfg Config) (*API, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg.setDefaults()
	a := &API{cfg: cfg, logger: cfg.Logger.With("component", "api"), limits: newLimits(cfg.RateLimit, cfg.RateBurst)}
	a.handler = a.middleware(a.routes())
	return a, nil
}

// Handler is the http.Handler serving every endpoint, with request logging, correlation ids and
// panic recovery.
func (a *API) Handler() http.Handler { return a.handler }

// Paths of the API.
const (
	pathFlags = "/api/v1/environments/{env}/flags"
	pathFlag  = pathFlags + "/{key}"
	// Segments (segments.go).
	pathSegments = "/api/v1/environments/{env}/segments"
	pathSegment  = pathSegments + "/{key}"
)

// route is one path and what each method on it does.
type route struct {
	path string
	ops  []op
}

// op is one method of a route: who may call it, and its handler. There is no way to put a
// handler in the table without saying who may call it: an op that names no action and is not
// public is refused to everyone.
type op struct {
	method string
	// need is what the caller's role must allow; public ops (health) need nothing.
	need   auth.Action
	public bool
	// ownScope says the handler checks the environment scope itself (tokens); otherwise the
	// scope must cover the {env} of the path, or, for a path without one, the op must be a read
	// whose handler narrows its answer to the scope (see [auth.AuthorizeIn]).
	ownScope bool
	h        func(http.ResponseWriter, *http.Request, auth.Principal) error
}

// get is a read: GET (and HEAD) by any role that may read, in its scope.
func get(h func(http.ResponseWriter, *http.Request) error) op {
	return op{method: "GET", need: auth.ActionRead, h: func(w http.ResponseWriter, r *http.Request, _ auth.Principal) error { return h(w, r) }}
}

// getP is a read whose handler needs the principal (to narrow a cross-environment answer).
func getP(h func(http.ResponseWriter, *http.Request, auth.Principal) error) op {
	return op{method: "GET", need: auth.ActionRead, h: h}
}

// do is a state-changing method by a role that may perform need, in its scope.
func do(method string, need auth.Action, h func(http.ResponseWriter, *http.Request, auth.Principal) error) op {
	return op{method: method, need: need, h: h}
}

// public is a GET anyone may call.
func public(h func(http.ResponseWriter, *http.Request) error) op {
	return op{method: "GET", public: true, h: func(w http.ResponseWriter, r *http.Request, _ auth.Principal) error { return h(w, r) }}
}

// RouteInfo describes one route of the API and who may call it.
type RouteInfo struct {
	Method, Path string
	// Need is the action the caller's role must allow; empty for a public route.
	Need auth.Action
	// Scoped says the route is about the {env} in its path, which a scoped token's scope must
	// cover.
	Scoped bool
	// Unscoped says the route acts on every environment at once: a token scoped to one
	// environment is refused.
	Unscoped bool
}

// Routes lists every route of the API with its policy, in the order they are registered.
func (a *API) Routes() []RouteInfo {
	var out []RouteInfo
	for _, rt := range a.table() {
		for _, o := range rt.ops {
			scoped := strings.Contains(rt.path, "{env}")
			out = append(out, RouteInfo{Method: o.method, Path: rt.path, Need: o.need, Scoped: scoped,
				Unscoped: !scoped && !o.public && !o.ownScope && o.need != auth.ActionRead})
		}
	}
	return out
}

func (a *API) table() []route {
	table := []route{
		{"/healthz", []op{public(func(w http.ResponseWriter, r *http.Request) error { a.healthz(w, r); return nil })}},
		{"/readyz", []op{public(a.readyz)}},
		{"/api/v1/environments", []op{getP(a.listEnvironments)}},
		{pathFlags, []op{get(a.listFlags), do("POST", auth.ActionWrite, createResource(a, flagResource))}},
		{pathFlag, []op{get(getResource(a, flagResource)), do("PATCH", auth.ActionWrite, updateResource(a, flagResource))}},
		{pathFlag + "/history", []op{get(resourceHistory(a, flagResource))}},
		{pathFlag + "/kill", []op{do("POST", auth.ActionKill, a.killFlag)}},
		{pathFlag + "/enable", []op{do("POST", auth.ActionWrite, resourceAction(a, flagResource, enableFlag))}},
		{pathFlag + "/archive", []op{do("POST", auth.ActionWrite, resourceAction(a, flagResource, archiveFlag))}},
		{pathFlag + "/unarchive", []op{do("POST", auth.ActionWrite, resourceAction(a, flagResource, unarchiveFlag))}},
		{pathFlag + "/restore", []op{do("POST", auth.ActionWrite, a.restoreFlag)}},
		{"/api/v1/audit", []op{getP(a.audit)}},
		{"/api/v1/audit/verify", []op{getP(a.auditVerify)}},
		{"/api/v1/integrity", []op{getP(a.integrity)}},
		{"/api/v1/integrity/acknowledgements", []op{do("POST", auth.ActionAdmin, a.acknowledgeIntegrity)}},
		{"/api/v1/signing-keys", []op{get(a.signingKeys)}},
		{"/api/v1/environments/{env}/subscribers", []op{get(a.listSubscribers)}},
		{pathFlag + "/propagation", []op{get(a.flagPropagation)}},
		{"/api/v1/events", []op{getP(a.eventFeed)}},
		{pathSegments, []op{get(a.listSegments), do("POST", auth.ActionWrite, createResource(a, segmentResource))}},
		{pathSegment, []op{get(getResource(a, segmentResource)), do("PATCH", auth.ActionWrite, updateResource(a, segmentResource))}},
		{pathSegment + "/history", []op{get(resourceHistory(a, segmentResource))}},
		{pathSegment + "/archive", []op{do("POST", auth.ActionWrite, resourceAction(a, segmentResource, archiveSegment))}},
		{pathSegment + "/unarchive", []op{do("POST", auth.ActionWrite, resourceAction(a, segmentResource, unarchiveSegment))}},
		{"/api/v1/tokens", []op{
			{method: "GET", need: auth.ActionAdmin, ownScope: true, h: a.listTokens},
			{method: "POST", need: auth.ActionAdmin, ownScope: true, h: a.createToken},
		}},
		{"/api/v1/tokens/{name}", []op{{method: "DELETE", need: auth.ActionAdmin, ownScope: true, h: a.revokeToken}}},
		{"/metrics", []op{a.metricsOp()}},
		// The OpenAPI document is a read like any other: it needs a token unless PublicRead.
		{"/api/v1/openapi.yaml", []op{get(a.openAPI)}},
	}
	return append(table, a.rolloutRoutes()...) // rollouts and valves (rollouts.go)
}

func (a *API) routes() *http.ServeMux {
	mux := http.NewServeMux()
	for _, rt := range a.table() {
		allow := ""
		for _, o := range rt.ops {
			mux.Handle(o.method+" "+rt.path, a.guard(rt.path, o))
			if o.method == "GET" {
				allow += "GET, HEAD, "
			} else {
				allow += o.method + ", "
			}
		}
		allow = allow[:len(allow)-2]
		// The same path without a method catches every other method.
		mux.Handle(rt.path, a.handle(func(w http.ResponseWriter, r *http.Request) error {
			w.Header().Set("Allow", allow)
			return &requestError{kind: errMethodNotAllowed, msg: r.Method + " is not allowed here; allowed: " + allow}
		}))
	}
	mux.Handle("/", a.handle(func(w http.ResponseWriter, r *http.Request) error {
		return &requestError{kind: errNoRoute, msg: "no endpoint at " + r.URL.Path}
	}))
	return mux
}

// handle turns a handler that returns an error into an http.Handler answering the error.
func (a *API) handle(h func(http.ResponseWriter, *http.Request) error) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := h(w, r); err != nil {
			a.writeError(w, r, err)
		}
	})
}

// anonymous is the principal of a read without a token on a server with public reads: it reads
// every environment and may do nothing else.
var anonymous = auth.Principal{Name: "anonymous", Role: auth.RoleReader}

// guard enforces o's policy on every request to path, then calls o's handler with the principal,
// which is the actor of any command the handler issues.
func (a *API) guard(path string, o op) http.Handler {
	if o.public {
		return a.handle(func(w http.ResponseWriter, r *http.Request) error { return o.h(w, r, auth.Principal{}) })
	}
	envInPath := strings.Contains(path, "{env}")
	return a.handle(func(w http.ResponseWriter, r *http.Request) error {
		var p auth.Principal
		if a.cfg.PublicRead && o.need == auth.ActionRead && r.Header.Get("Authorization") == "" {
			p = anonymous
		} else {
			var err error
			if p, err = a.authenticate(r); err != nil {
				return err
			}
		}
		var err error
		switch {
		case o.ownScope:
			err = auth.Authorize(p, o.need)
		case envInPath:
			err = auth.AuthorizeIn(p, o.need, r.PathValue("env"))
		default:
			err = auth.AuthorizeIn(p, o.need, "")
		}
		if err != nil {
			return err
		}
		if err := a.limits.allow(p.Name); err != nil {
			return err
		}
		if o.method != "GET" {
			if err := checkIdempotencyKey(r); err != nil {
				return err
			}
		}
		return o.h(w, r, p)
	})
}

// scopeEnvironment narrows a cross-environment read to what p may see: the environment asked for
// (empty for all) when p's scope covers it, p's own environment when p is scoped and asked for
// all, and an error wrapping auth.ErrForbidden when p asked for an environment outside its scope.
func scopeEnvironment(p auth.Principal, asked string) (string, error) {
	if p.Environment == "" {
		return asked, nil
	}
	if asked == "" {
		return p.Environment, nil
	}
	if err := auth.AuthorizeIn(p, auth.ActionRead, asked); err != nil {
		return "", err
	}
	return asked, nil
}

// metricsOp serves the server's metrics: a read, or public with MetricsPublic.
func (a *API) metricsOp() op {
	serve := func(w http.ResponseWriter, r *http.Request) error {
		if a.cfg.Metrics == nil {
			return &requestError{kind: errNoRoute, msg: "this server does not serve metrics"}
		}
		a.cfg.Metrics.ServeHTTP(w, r)
		return nil
	}
	if a.cfg.MetricsPublic {
		return public(serve)
	}
	return get(serve)
}

// openAPI serves the API's OpenAPI document, apiv1.OpenAPI.
func (a *API) openAPI(w http.ResponseWriter, r *http.Request) error {
	if _, err := query(r, nil); err != nil {
		return err
	}
	h := w.Header()
	h.Set("Content-Type", apiv1.MediaYAML)
	h.Set("X-Content-Type-Options", "nosniff")
	_, _ = w.Write(apiv1.OpenAPI)
	return nil
}

func (a *API) healthz(w http.ResponseWriter, r *http.Request) {
	a.writeJSON(w, r, http.StatusOK, apiv1.Status{Status: "ok"})
}

// readyz answers 200 once the projections caught up, while the event store answers and the
// projections keep up with it (Config.Health), and no integrity problem waits for an operator's
// acknowledgement. Otherwise it answers 503 with the cause. A forged message takes the replicas
// out of rotation only until an admin acknowledges it (POST /api/v1/integrity/acknowledgements);
// evaluation goes on meanwhile with the events that verify.
func (a *API) readyz(w http.ResponseWriter, r *http.Request) error {
	if !a.cfg.Ready() {
		return errNotReady
	}
	if a.cfg.Health != nil {
		ctx, cancel := context.WithTimeout(r.Context(), healthTimeout)
		defer cancel()
		if err := a.cfg.Health(ctx); err != nil {
			a.writeJSON(w, r, http.StatusServiceUnavailable, apiv1.Readiness{Status: "unavailable", Cause: err.Error()})
			return nil
		}
	}
	body := apiv1.Readiness{Status: "ok"}
	status := http.StatusOK
	if st := a.integrityStatus(nil); st != nil {
		body.Integrity = st
		if st.Status == integrityProblems {
			status = http.StatusServiceUnavailable
			body.Status = "unavailable"
			body.Cause = fmt.Sprintf("integrity problems: %d messages on the event stream failed verification and are not acknowledged (the latest at sequence %d); "+
				"see GET /api/v1/integrity, and acknowledge them with POST /api/v1/integrity/acknowledgements", st.Unacknowledged, st.Latest)
		}
	}
	a.writeJSON(w, r, status, body)
	return nil
}
