package dashboard

import (
	"bytes"
	"context"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"html/template"
	"io/fs"
	"net/http"
	"strings"
	"time"

	"github.com/interlock-dev/interlock/events"
	"github.com/interlock-dev/interlock/internal/auth"
	"github.com/interlock-dev/interlock/internal/command"
	"github.com/interlock-dev/interlock/projections"
)

//go:embed static templates
var assets embed.FS

// pageNames are the full pages; each is parsed with the layout and the shared fragments.
var pageNames = []string{"signin", "error", "flags", "flag", "history", "matrix", "segments", "segment", "audit", "guard", "valves"}

// pages holds one template set per page.
type pages struct {
	sets map[string]*template.Template
	// version changes when the static files do, so browsers may cache them for long.
	version string
}

var funcs = template.FuncMap{
	"iso": func(t time.Time) string {
		if t.IsZero() {
			return ""
		}
		return t.UTC().Format(time.RFC3339)
	},
	"utc": func(t time.Time) string {
		if t.IsZero() {
			return ""
		}
		return t.UTC().Format("2006-01-02 15:04:05 UTC")
	},
	"since":    func(t time.Time) string { return sinceText(time.Now(), t) },
	"typeText": typeText,
	"lower":    strings.ToLower,
	"join":     strings.Join,
	"rowID":    func(key string) string { return "row-" + key },
	"num":      num,
	"rate":     rate,
	"exp":      expOf,
	"plus1":    func(i int) int { return i + 1 },
	"list":     func(v ...any) []any { return v },
	"dur":      func(d events.Duration) string { return time.Duration(d).String() },
	"why":      func(cause string) string { return causeText[cause] },
}

func parsePages() (*pages, error) {
	p := &pages{sets: make(map[string]*template.Template)}
	for _, name := range pageNames {
		t, err := template.New(name).Funcs(funcs).ParseFS(assets,
			"templates/layout.html", "templates/fragments.html", "templates/"+name+".html")
		if err != nil {
			return nil, fmt.Errorf("template %s: %w", name, err)
		}
		p.sets[name] = t
	}
	h := sha256.New()
	err := fs.WalkDir(assets, "static", func(path string, de fs.DirEntry, err error) error {
		if err != nil || de.IsDir() {
			return err
		}
		b, err := assets.ReadFile(path)
		h.Write([]byte(path))
		h.Write(b)
		return err
	})
	if err != nil {
		return nil, err
	}
	p.version = hex.EncodeToString(h.Sum(nil))[:12]
	return p, nil
}

// pageData is what every page's template gets; Data is the page's own.
type pageData struct {
	Title string
	// Me is the signed-in principal; nil on the sign-in page.
	Me   *auth.Principal
	CSRF string
	// Env is the environment the page is about; Envs those the session may see.
	Env  string
	Envs []string
	// Past says which moment a read-only page of the past shows ("" for now).
	Past string
	// Live is the URL of the page's live event stream ("" for none).
	Live   string
	Next   string
	Error  string
	Static string
	// Charts loads the chart library and the guard panel's script.
	Charts bool
	Data   any
}

// HXHeaders is the hx-headers attribute of the body: htmx sends the CSRF token with every
// request it makes.
func (p pageData) HXHeaders() string {
	b, _ := json.Marshal(map[string]string{csrfHeader: p.CSRF})
	return string(b)
}

// base fills what every page of a session shows.
func (d *Dashboard) base(s *session, title, env string) pageData {
	p := s.Principal()
	return pageData{Title: title, Me: &p, CSRF: s.csrf, Env: env, Envs: d.visibleEnvs(p)}
}

// visibleEnvs are the environments p may read, sorted; a scoped token sees only its own.
func (d *Dashboard) visibleEnvs(p auth.Principal) []string {
	if p.Environment != "" {
		return []string{p.Environment}
	}
	return d.cfg.Catalog.Environments()
}

// render executes a page (the layout around it), or a fragment of it for an htmx request that
// names one, into a buffer first, so that a template error never sends half a page.
func (d *Dashboard) render(w http.ResponseWriter, r *http.Request, status int, page string, data pageData) {
	d.renderNamed(w, r, status, page, "layout", data)
}

func (d *Dashboard) renderNamed(w http.ResponseWriter, r *http.Request, status int, page, name string, data any) {
	if pd, ok := data.(pageData); ok {
		pd.Static = d.pages.version
		data = pd
	}
	var buf bytes.Buffer
	if err := d.pages.sets[page].ExecuteTemplate(&buf, name, data); err != nil {
		d.logger.ErrorContext(r.Context(), "render", "page", page, "template", name, "error", err)
		http.Error(w, "The page could not be rendered.", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	w.Write(buf.Bytes())
}

// renderError answers with a message: a page, or for htmx the flash area of the current page.
func (d *Dashboard) renderError(w http.ResponseWriter, r *http.Request, status int, msg string) {
	if r.Header.Get("HX-Request") == "true" {
		target := "#flash"
		if r.Header.Get("HX-Target") == "dialog-body" {
			target = "#dialog-error" // the dialog covers the page: say it there
		}
		w.Header().Set("HX-Retarget", target)
		w.Header().Set("HX-Reswap", "innerHTML")
		d.renderNamed(w, r, status, "error", "flash", msg)
		return
	}
	d.render(w, r, status, "error", pageData{Title: http.StatusText(status), Error: msg})
}

// fail maps an error to its status and message, in this one place. Unknown errors are logged
// and answered with a generic message.
func (d *Dashboard) fail(w http.ResponseWriter, r *http.Request, err error) {
	status, msg := http.StatusInternalServerError, "Something went wrong on the server; it has been logged."
	var ve *command.VersionError
	switch {
	case errors.Is(err, auth.ErrForbidden):
		status, msg = http.StatusForbidden, "Your token may not do this: "+err.Error()
	case errors.As(err, &ve), errors.Is(err, command.ErrStale):
		status, msg = http.StatusConflict, "The flag changed since this page was loaded: reload and try again."
	case errors.Is(err, events.ErrInvalid):
		status, msg = http.StatusBadRequest, err.Error()
	case errors.Is(err, command.ErrNotFound), errors.Is(err, projections.ErrNotFound):
		status, msg = http.StatusNotFound, "No such flag (or nothing at that point in time)."
	case errors.Is(err, command.ErrArchived):
		status, msg = http.StatusConflict, "The flag is archived."
	case errors.Is(err, errNotApplicable), errors.Is(err, command.ErrRolloutState), errors.Is(err, command.ErrTripped),
		errors.Is(err, command.ErrNoRollout), errors.Is(err, command.ErrNotValve):
		status, msg = http.StatusConflict, "Not now: "+err.Error()+". Reload to see the current state."
	case errors.Is(err, errNoPage), errors.Is(err, command.ErrSegmentNotFound):
		status, msg = http.StatusNotFound, "There is no such page."
	case errors.Is(err, events.ErrConflict):
		status, msg = http.StatusConflict, "The flag kept changing; try again."
	case errors.Is(err, errNotReady):
		status, msg = http.StatusServiceUnavailable, "The server is still catching up with the event stream; try again in a moment."
	case errors.Is(err, context.DeadlineExceeded):
		status, msg = http.StatusGatewayTimeout, "The event store did not answer in time; the outcome is unknown. Reload to see whether it was applied."
	default:
		var bad badInput
		if errors.As(err, &bad) {
			status, msg = http.StatusBadRequest, bad.Error()
			break
		}
		d.logger.ErrorContext(r.Context(), "request failed", "method", r.Method, "path", r.URL.Path, "error", err)
	}
	d.renderError(w, r, status, msg)
}

// badInput is a request a person got wrong; its text says how.
type badInput string

func (b badInput) Error() string { return string(b) }

var (
	// errNotReady means the catalog has not caught up yet.
	errNotReady = errors.New("not ready")
	// errNotApplicable means an action does not apply to the state the flag is in.
	errNotApplicable = errors.New("does not apply")
	// errNoPage means the path names nothing there is a page for.
	errNoPage = errors.New("no such page")
)

// staticHandler serves the embedded assets; the version in their URLs lets browsers cache them.
func (d *Dashboard) staticHandler() http.Handler {
	files := http.FileServerFS(d.static)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasSuffix(r.URL.Path, "/") {
			http.NotFound(w, r)
			return
		}
		if r.URL.Query().Get("v") == d.pages.version {
			w.Header().Set("Cache-Control", "public, max-age=31536000, immutable")
		} else {
			w.Header().Set("Cache-Control", "no-cache")
		}
		files.ServeHTTP(w, r)
	})
}
