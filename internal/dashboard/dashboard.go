// Package dashboard is Interlock's web dashboard: server-rendered pages (html/template) made
// interactive with htmx, live over Server-Sent Events, served by `interlock serve` at "/".
//
// It reads the same parts the admin API reads (the live catalog, the event store for history,
// past states and the live feed, the presence tracker) and writes through the same command
// service, in process. A person signs in by pasting a token once; the server keeps the token in
// memory behind an opaque session cookie, checks it again every few seconds (so revoking the token
// ends the session), and requires a CSRF token on every state-changing request. Every page and
// action is authorised with the session's role and environment scope; the page shows only what
// the token may do, and the server refuses the rest anyway.
//
// The third-party scripts (htmx, its SSE extension, uPlot) are pinned in ui/package.json and
// copied into static/vendor by `make ui`; nothing is fetched at run time.
package dashboard

import (
	"context"
	"errors"
	"io/fs"
	"log/slog"
	"net/http"
	"slices"
	"time"

	"github.com/interlock-dev/interlock/events"
	"github.com/interlock-dev/interlock/internal/auth"
	"github.com/interlock-dev/interlock/internal/command"
	"github.com/interlock-dev/interlock/internal/presence"
	"github.com/interlock-dev/interlock/projections"
)

// Catalog is the live read model: *projections.Catalog.
type Catalog interface {
	Flag(env, key string) (projections.Flag, bool)
	Flags(env string) []projections.Flag
	Environments() []string
	Segment(env, key string) (projections.Segment, bool)
	Segments(env string) []projections.Segment
	// Sequence is the stream sequence of the last event applied.
	Sequence() uint64
	// WaitSequence returns once the catalog has applied the event at stream sequence seq.
	WaitSequence(ctx context.Context, seq uint64) error
	// Observe registers fn to be told of every event that changed a flag or segment.
	Observe(fn func(events.Event))
}

// Commands is the write path: *command.Service. The dashboard sends it kills, enables,
// restores, rollout moves and valve switches.
type Commands interface {
	Handle(ctx context.Context, c command.Command) (command.Result, error)
}

// send has the write path carry out c on a flag and returns the flag after it.
func (d *Dashboard) send(r *http.Request, c command.Command) (projections.Flag, error) {
	res, err := d.cfg.Commands.Handle(r.Context(), c)
	return res.Flag, err
}

// Authenticator tells who a token stands for: *auth.Store.
type Authenticator interface {
	// Authenticate returns an error wrapping auth.ErrUnauthenticated for a token it does not know.
	Authenticate(ctx context.Context, token string) (auth.Principal, error)
}

// EventFeed follows the event stream for the live updates: *events.Store.
type EventFeed interface {
	Follow(ctx context.Context, q events.Query, h events.Handler) error
	LastSequence(ctx context.Context) (uint64, error)
}

// Presence says how many in-process subscribers applied a sequence: *presence.Tracker.
type Presence interface {
	Propagation(env string, seq uint64) presence.Propagation
}

// Defaults of [Config].
const (
	DefaultSessionIdle     = 30 * time.Minute
	DefaultSessionLifetime = 12 * time.Hour
	DefaultRecheck         = 5 * time.Second
	DefaultPageSize        = 100
	DefaultWriteTimeout    = 5 * time.Second
)

// Config is what the dashboard needs. Every field without a default is required.
type Config struct {
	Catalog  Catalog
	Reader   projections.Reader
	Commands Commands
	Auth     Authenticator
	Events   EventFeed
	// Presence, when set, lets a kill show "applied on N of M subscribers".
	Presence Presence
	// Ready reports whether the catalog has caught up with the stream.
	Ready func() bool
	// Logger receives unexpected errors, with component=dashboard. Nil discards them.
	Logger *slog.Logger
	// Guard, when set, is the guard's live view of the rollouts it judges (the guard panel's
	// current state and statistics); Tape, when set, keeps the ticks between its decisions for
	// the charts. Without them the panel shows the recorded decisions only.
	Guard GuardStatus
	Tape  *Tape
	// CriticalEnvironments ask a person killing a flag there to type its key.
	CriticalEnvironments []string
	// SessionIdle ends a session unused for that long; SessionLifetime ends any session that
	// old. Recheck is how often a session's token is authenticated again.
	SessionIdle     time.Duration
	SessionLifetime time.Duration
	Recheck         time.Duration
	// PageSize is how many flags a page of the list shows. DefaultPageSize when 0.
	PageSize int
	// WriteTimeout bounds how long an action waits for the catalog to apply what it wrote.
	WriteTimeout time.Duration
	// Now is the clock; time.Now when nil.
	Now func() time.Time
}

func (c *Config) setDefaults() {
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.SessionIdle == 0 {
		c.SessionIdle = DefaultSessionIdle
	}
	if c.SessionLifetime == 0 {
		c.SessionLifetime = DefaultSessionLifetime
	}
	if c.Recheck == 0 {
		c.Recheck = DefaultRecheck
	}
	if c.PageSize == 0 {
		c.PageSize = DefaultPageSize
	}
	if c.WriteTimeout == 0 {
		c.WriteTimeout = DefaultWriteTimeout
	}
	if c.Now == nil {
		c.Now = time.Now
	}
}

// Validate reports every problem with the configuration, joined.
func (c Config) Validate() error {
	var errs []error
	if c.Catalog == nil {
		errs = append(errs, errors.New("catalog: required"))
	}
	if c.Reader == nil {
		errs = append(errs, errors.New("reader: required"))
	}
	if c.Commands == nil {
		errs = append(errs, errors.New("commands: required"))
	}
	if c.Auth == nil {
		errs = append(errs, errors.New("auth: required"))
	}
	if c.Events == nil {
		errs = append(errs, errors.New("events: required"))
	}
	if c.Ready == nil {
		errs = append(errs, errors.New("ready: required"))
	}
	if c.SessionIdle < 0 || c.SessionLifetime < 0 || c.Recheck < 0 || c.WriteTimeout < 0 {
		errs = append(errs, errors.New("session idle, lifetime, recheck and write timeout: negative"))
	}
	if c.PageSize < 0 {
		errs = append(errs, errors.New("page size: negative"))
	}
	for _, env := range c.CriticalEnvironments {
		if err := events.ValidateEnvironment(env); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// Dashboard serves the web dashboard.
type Dashboard struct {
	cfg      Config
	logger   *slog.Logger
	sessions *sessions
	notes    *notes
	pages    *pages
	static   fs.FS
	handler  http.Handler
	streams  streams
}

// New returns the dashboard for cfg, or the configuration's problems. It registers an observer
// on the catalog (for who changed each flag last, and why): call it before events are applied.
func New(cfg Config) (*Dashboard, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg.setDefaults()
	pg, err := parsePages()
	if err != nil {
		return nil, err
	}
	static, err := fs.Sub(assets, "static")
	if err != nil {
		return nil, err
	}
	d := &Dashboard{
		cfg:      cfg,
		logger:   cfg.Logger.With("component", "dashboard"),
		sessions: newSessions(cfg.Now),
		notes:    newNotes(),
		pages:    pg,
		static:   static,
	}
	cfg.Catalog.Observe(d.notes.observe)
	d.handler = d.secure(d.routes())
	return d, nil
}

// Handler serves every page of the dashboard.
func (d *Dashboard) Handler() http.Handler { return d.handler }

// critical reports whether env asks for the flag key before a kill.
func (d *Dashboard) critical(env string) bool {
	return slices.Contains(d.cfg.CriticalEnvironments, env)
}

func (d *Dashboard) routes() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /static/", http.StripPrefix("/static/", d.staticHandler()))
	mux.HandleFunc("GET /signin", d.signInPage)
	mux.HandleFunc("POST /signin", d.signIn)
	mux.Handle("POST /signout", d.auth(d.signOut))
	mux.Handle("GET /{$}", d.auth(d.home))
	mux.Handle("GET /env/{env}/flags", d.auth(d.flagList))
	mux.Handle("GET /env/{env}/flags/{key}", d.auth(d.flagPage))
	mux.Handle("GET /env/{env}/flags/{key}/history", d.auth(d.historyPage))
	mux.Handle("GET /env/{env}/flags/{key}/kill", d.auth(d.killDialog))
	mux.Handle("POST /env/{env}/flags/{key}/kill", d.auth(d.kill))
	mux.Handle("GET /env/{env}/flags/{key}/enable", d.auth(d.enableDialog))
	mux.Handle("POST /env/{env}/flags/{key}/enable", d.auth(d.enable))
	mux.Handle("GET /env/{env}/flags/{key}/restore", d.auth(d.restoreDialog))
	mux.Handle("POST /env/{env}/flags/{key}/restore", d.auth(d.restore))
	mux.Handle("GET /env/{env}/flags/{key}/propagation", d.auth(d.propagation))
	mux.Handle("GET /env/{env}/flags/{key}/guard", d.auth(d.guardPage))
	mux.Handle("GET /env/{env}/flags/{key}/guard/data", d.auth(d.guardChart))
	mux.Handle("GET /env/{env}/flags/{key}/rollout/{verb}", d.auth(d.rolloutDialog))
	mux.Handle("POST /env/{env}/flags/{key}/rollout/{verb}", d.auth(d.rolloutAction))
	mux.Handle("GET /env/{env}/valves", d.auth(d.valveList))
	mux.Handle("GET /env/{env}/flags/{key}/valve/{verb}", d.auth(d.valveDialog))
	mux.Handle("POST /env/{env}/flags/{key}/valve/{verb}", d.auth(d.valveAction))
	mux.Handle("GET /env/{env}/live", d.auth(d.live))
	mux.Handle("GET /flag/{key}", d.auth(d.matrix))
	mux.Handle("GET /env/{env}/segments", d.auth(d.segmentList))
	mux.Handle("GET /env/{env}/segments/{key}", d.auth(d.segmentPage))
	mux.Handle("GET /audit", d.auth(d.auditPage))
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		d.renderError(w, r, http.StatusNotFound, "There is no page at "+r.URL.Path+".")
	})
	return mux
}

// secure sets the headers every answer carries: a strict Content-Security-Policy (scripts,
// styles and everything else from this origin only; no inline script), no framing, no sniffing,
// no referrer; and refuses cross-origin state-changing requests.
func (d *Dashboard) secure(next http.Handler) http.Handler {
	cop := http.NewCrossOriginProtection()
	cop.SetDenyHandler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		d.renderError(w, r, http.StatusForbidden, "This request came from another site and was refused.")
	}))
	protected := cop.Handler(next)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Content-Security-Policy", "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
		h.Set("X-Frame-Options", "DENY")
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Referrer-Policy", "no-referrer")
		h.Set("Cross-Origin-Opener-Policy", "same-origin")
		protected.ServeHTTP(w, r)
	})
}
