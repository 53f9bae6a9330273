// Package api is Interlock's admin REST API under /api/v1, with /healthz and /readyz.
//
// Reads (flags, history, audit) come from the projections; writes go through the command service
// and wait until this replica's catalog has applied them, so that a client reads its own writes.
// Writes need a bearer token whose role allows the action; reads are open unless
// [Config.ReadAuth] is set. Every error is answered by one function, [API.writeError], as
// {"error": {"code", "message"}} with the matching status.
package api

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"time"

	"github.com/interlock-dev/interlock/events"
	"github.com/interlock-dev/interlock/internal/auth"
	"github.com/interlock-dev/interlock/internal/command"
	"github.com/interlock-dev/interlock/projections"
)

// Commands is the write path: *command.Service. It is one interface, not several small ones,
// because the API offers every command and nothing else would implement a subset.
type Commands interface {
	Create(ctx context.Context, m command.Meta, env, key string, cfg events.FlagConfig) (projections.Flag, error)
	Update(ctx context.Context, m command.Meta, env, key string, expectedVersion uint64, patch []byte) (projections.Flag, error)
	Enable(ctx context.Context, m command.Meta, env, key string, expectedVersion uint64) (projections.Flag, error)
	Kill(ctx context.Context, m command.Meta, env, key string) (projections.Flag, error)
	Archive(ctx context.Context, m command.Meta, env, key string, expectedVersion uint64) (projections.Flag, error)
	Unarchive(ctx context.Context, m command.Meta, env, key string, expectedVersion uint64) (projections.Flag, error)
	Restore(ctx context.Context, m command.Meta, env, key string, toVersion, expectedVersion uint64) (projections.Flag, error)

	CreateSegment(ctx context.Context, m command.Meta, env, key string, cfg events.SegmentConfig) (projections.Segment, error)
	UpdateSegment(ctx context.Context, m command.Meta, env, key string, expectedVersion uint64, patch []byte) (projections.Segment, error)
	ArchiveSegment(ctx context.Context, m command.Meta, env, key string, expectedVersion uint64) (projections.Segment, error)
	UnarchiveSegment(ctx context.Context, m command.Meta, env, key string, expectedVersion uint64) (projections.Segment, error)

	// Rollouts and safety valves (rollouts.go).
	CreateRollout(ctx context.Context, m command.Meta, env, key string, expectedVersion uint64, plan events.RolloutPlan) (projections.Flag, error)
	StartRollout(ctx context.Context, m command.Meta, env, key, id string, expectedVersion uint64) (projections.Flag, error)
	PauseRollout(ctx context.Context, m command.Meta, env, key, id string, expectedVersion uint64) (projections.Flag, error)
	ResumeRollout(ctx context.Context, m command.Meta, env, key, id string, expectedVersion uint64) (projections.Flag, error)
	AdvanceRollout(ctx context.Context, m command.Meta, env, key, id string, from int, expectedVersion uint64) (projections.Flag, error)
	StepBackRollout(ctx context.Context, m command.Meta, env, key, id string, from int, expectedVersion uint64) (projections.Flag, error)
	AbortRollout(ctx context.Context, m command.Meta, env, key, id string, expectedVersion uint64) (projections.Flag, error)
	Rearm(ctx context.Context, m command.Meta, env, key, id string, expectedVersion uint64) (projections.Flag, error)
	ConfigureValve(ctx context.Context, m command.Meta, env, key string, expectedVersion uint64, v events.ValveConfigured) (projections.Flag, error)
	OpenValve(ctx context.Context, m command.Meta, env, key string, expires time.Time, rollout string, evidence []byte) (projections.Flag, error)
	CloseValve(ctx context.Context, m command.Meta, env, key, cause string, evidence []byte) (projections.Flag, error)
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
	// Logger receives request logs and unexpected errors, with component=api. Nil discards them.
	Logger *slog.Logger
	// MaxBodyBytes bounds request bodies; larger ones get 413. DefaultMaxBodyBytes when 0.
	MaxBodyBytes int64
	// WriteTimeout bounds how long a write waits for the catalog to apply it before answering
	// anyway. DefaultWriteTimeout when 0.
	WriteTimeout time.Duration
	// ReadAuth makes reads require a token whose role may read. Off by default: reads are open,
	// since flags are not secrets and every service evaluating them reads them anyway.
	ReadAuth bool
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
	// Guard gives the guard's live view of a rollout for GET .../flags/{key}/rollout
	// (rollouts.go); without it, or for a rollout it does not follow, "live" is null.
	Guard GuardStatus
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
	if c.MaxBodyBytes < 0 {
		errs = append(errs, errors.New("max body bytes: negative"))
	}
	if c.WriteTimeout < 0 {
		errs = append(errs, errors.New("write timeout: negative"))
	}
	if c.EventsHeartbeat < 0 || c.EventsBuffer < 0 || c.EventsSlowTimeout < 0 {
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
}

// New returns the API for cfg, or the configuration's problems (see [Config.Validate]).
func New(cfg Config) (*API, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg.setDefaults()
	a := &API{cfg: cfg, logger: cfg.Logger.With("component", "api")}
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

// route is one path and the handler of each method on it.
type route struct {
	path    string
	methods []string
	handler []http.Handler
}

func (a *API) routes() *http.ServeMux {
	table := []route{
		{"/healthz", []string{"GET"}, []http.Handler{http.HandlerFunc(a.healthz)}},
		{"/readyz", []string{"GET"}, []http.Handler{a.handle(a.readyz)}},
		{"/api/v1/environments", []string{"GET"}, []http.Handler{a.read(a.listEnvironments)}},
		{pathFlags, []string{"GET", "POST"}, []http.Handler{a.read(a.listFlags), a.write(auth.ActionWrite, createResource(a, flagResource))}},
		{pathFlag, []string{"GET", "PATCH"}, []http.Handler{a.read(getResource(a, flagResource)), a.write(auth.ActionWrite, updateResource(a, flagResource))}},
		{pathFlag + "/history", []string{"GET"}, []http.Handler{a.read(resourceHistory(a, flagResource))}},
		{pathFlag + "/kill", []string{"POST"}, []http.Handler{a.write(auth.ActionKill, a.killFlag)}},
		{pathFlag + "/enable", []string{"POST"}, []http.Handler{a.write(auth.ActionWrite, resourceAction(a, flagResource, Commands.Enable))}},
		{pathFlag + "/archive", []string{"POST"}, []http.Handler{a.write(auth.ActionWrite, resourceAction(a, flagResource, Commands.Archive))}},
		{pathFlag + "/unarchive", []string{"POST"}, []http.Handler{a.write(auth.ActionWrite, resourceAction(a, flagResource, Commands.Unarchive))}},
		{pathFlag + "/restore", []string{"POST"}, []http.Handler{a.write(auth.ActionWrite, a.restoreFlag)}},
		{"/api/v1/audit", []string{"GET"}, []http.Handler{a.read(a.audit)}},
		{"/api/v1/audit/verify", []string{"GET"}, []http.Handler{a.read(a.auditVerify)}},
		{"/api/v1/integrity", []string{"GET"}, []http.Handler{a.read(a.integrity)}},
		{"/api/v1/signing-keys", []string{"GET"}, []http.Handler{a.read(a.signingKeys)}},
		{"/api/v1/environments/{env}/subscribers", []string{"GET"}, []http.Handler{a.read(a.listSubscribers)}},
		{pathFlag + "/propagation", []string{"GET"}, []http.Handler{a.read(a.flagPropagation)}},
		{"/api/v1/events", []string{"GET"}, []http.Handler{a.read(a.eventFeed)}},
		{pathSegments, []string{"GET", "POST"}, []http.Handler{a.read(a.listSegments), a.write(auth.ActionWrite, createResource(a, segmentResource))}},
		{pathSegment, []string{"GET", "PATCH"}, []http.Handler{a.read(getResource(a, segmentResource)), a.write(auth.ActionWrite, updateResource(a, segmentResource))}},
		{pathSegment + "/history", []string{"GET"}, []http.Handler{a.read(resourceHistory(a, segmentResource))}},
		{pathSegment + "/archive", []string{"POST"}, []http.Handler{a.write(auth.ActionWrite, resourceAction(a, segmentResource, Commands.ArchiveSegment))}},
		{pathSegment + "/unarchive", []string{"POST"}, []http.Handler{a.write(auth.ActionWrite, resourceAction(a, segmentResource, Commands.UnarchiveSegment))}},
		{"/api/v1/tokens", []string{"GET", "POST"}, []http.Handler{a.write(auth.ActionAdmin, a.listTokens), a.write(auth.ActionAdmin, a.createToken)}},
		{"/api/v1/tokens/{name}", []string{"DELETE"}, []http.Handler{a.write(auth.ActionAdmin, a.revokeToken)}},
	}
	table = append(table, a.rolloutRoutes()...) // rollouts and valves (rollouts.go)
	mux := http.NewServeMux()
	for _, rt := range table {
		allow := ""
		for i, m := range rt.methods {
			mux.Handle(m+" "+rt.path, rt.handler[i])
			if m == "GET" {
				allow += "GET, HEAD, "
			} else {
				allow += m + ", "
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

// read guards a read: open, or with ReadAuth a token whose role may read.
func (a *API) read(h func(http.ResponseWriter, *http.Request) error) http.Handler {
	if !a.cfg.ReadAuth {
		return a.handle(h)
	}
	return a.handle(func(w http.ResponseWriter, r *http.Request) error {
		if _, err := a.authorize(r, auth.ActionRead); err != nil {
			return err
		}
		return h(w, r)
	})
}

// write guards a write: a token whose role may perform action. The handler gets the principal,
// which is the actor of the command.
func (a *API) write(action auth.Action, h func(http.ResponseWriter, *http.Request, auth.Principal) error) http.Handler {
	return a.handle(func(w http.ResponseWriter, r *http.Request) error {
		p, err := a.authorize(r, action)
		if err != nil {
			return err
		}
		return h(w, r, p)
	})
}

func (a *API) healthz(w http.ResponseWriter, r *http.Request) {
	a.writeJSON(w, r, http.StatusOK, map[string]string{"status": "ok"})
}

// readyz answers 200 once the projections caught up. Integrity problems are listed in the body
// but do not make it 503: one message forged onto the stream must not take every replica out
// of rotation, and evaluation goes on with the events that verify.
func (a *API) readyz(w http.ResponseWriter, r *http.Request) error {
	if !a.cfg.Ready() {
		return errNotReady
	}
	body := map[string]any{"status": "ok"}
	if st := a.integrityStatus(); st != nil {
		body["integrity"] = st
	}
	a.writeJSON(w, r, http.StatusOK, body)
	return nil
}
