package dashboard

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/interlock-dev/interlock/internal/auth"
)

// Names of the session cookie and of the CSRF header and form field.
const (
	cookieName = "interlock_session"
	csrfHeader = "X-CSRF-Token"
	csrfField  = "csrf"
)

// session is one signed-in browser. The token stays in this process's memory, never in the
// cookie: the cookie holds a random id, and the map is keyed by that id's hash.
type session struct {
	key   [sha256.Size]byte
	csrf  string
	token string

	mu        sync.Mutex
	principal auth.Principal
	created   time.Time
	lastUsed  time.Time
	checked   time.Time
}

// Principal is who the session stands for, as of its last check.
func (s *session) Principal() auth.Principal {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.principal
}

// sessions are the live sessions of this replica.
type sessions struct {
	now func() time.Time
	mu  sync.Mutex
	m   map[[sha256.Size]byte]*session
}

func newSessions(now func() time.Time) *sessions {
	return &sessions{now: now, m: make(map[[sha256.Size]byte]*session)}
}

func randomString() string {
	b := make([]byte, 32)
	rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}

// create starts a session for token, which authenticated as p; it returns the cookie value.
func (ss *sessions) create(token string, p auth.Principal) (string, *session) {
	id := randomString()
	now := ss.now()
	s := &session{key: sha256.Sum256([]byte(id)), csrf: randomString(), token: token,
		principal: p, created: now, lastUsed: now, checked: now}
	ss.mu.Lock()
	defer ss.mu.Unlock()
	// Sweep expired sessions now and then: on every creation is often enough.
	for k, old := range ss.m {
		if old.expired(now, 0, 0) {
			delete(ss.m, k)
		}
	}
	ss.m[s.key] = s
	return id, s
}

func (ss *sessions) get(id string) *session {
	key := sha256.Sum256([]byte(id))
	ss.mu.Lock()
	defer ss.mu.Unlock()
	return ss.m[key]
}

func (ss *sessions) drop(s *session) {
	ss.mu.Lock()
	delete(ss.m, s.key)
	ss.mu.Unlock()
}

// expired reports whether the session outlived idle or lifetime (0: only the token's own
// expiry counts, for the sweep, which does not know the configuration).
func (s *session) expired(now time.Time, idle, lifetime time.Duration) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if idle > 0 && now.Sub(s.lastUsed) > idle {
		return true
	}
	if lifetime > 0 && now.Sub(s.created) > lifetime {
		return true
	}
	return tokenExpired(s.principal, now)
}

// errSignedOut means a request needs a session and has none (any more).
var errSignedOut = errors.New("signed out")

// current returns the request's session, checking its token again when the last check is older
// than Recheck. A revoked or expired token ends the session.
func (d *Dashboard) current(ctx context.Context, r *http.Request) (*session, error) {
	c, err := r.Cookie(cookieName)
	if err != nil {
		return nil, errSignedOut
	}
	s := d.sessions.get(c.Value)
	if s == nil {
		return nil, errSignedOut
	}
	if err := d.check(ctx, s); err != nil {
		return nil, err
	}
	s.mu.Lock()
	s.lastUsed = d.cfg.Now()
	s.mu.Unlock()
	return s, nil
}

// check ends the session if it expired, and authenticates its token again when due.
func (d *Dashboard) check(ctx context.Context, s *session) error {
	now := d.cfg.Now()
	if s.expired(now, d.cfg.SessionIdle, d.cfg.SessionLifetime) {
		d.sessions.drop(s)
		return errSignedOut
	}
	s.mu.Lock()
	due := now.Sub(s.checked) >= d.cfg.Recheck
	s.mu.Unlock()
	if !due {
		return nil
	}
	p, err := d.cfg.Auth.Authenticate(ctx, s.token)
	if errors.Is(err, auth.ErrUnauthenticated) {
		d.sessions.drop(s)
		return errSignedOut
	}
	if err != nil {
		return err
	}
	s.mu.Lock()
	s.principal, s.checked = p, now
	s.mu.Unlock()
	return nil
}

// auth wraps a handler that needs a signed-in session; a state-changing request must also carry
// the session's CSRF token, in the X-CSRF-Token header (htmx sends it) or the csrf form field.
func (d *Dashboard) auth(h func(http.ResponseWriter, *http.Request, *session) error) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s, err := d.current(r.Context(), r)
		if errors.Is(err, errSignedOut) {
			d.toSignIn(w, r)
			return
		}
		if err != nil {
			d.fail(w, r, err)
			return
		}
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			got := r.Header.Get(csrfHeader)
			if got == "" {
				got = r.PostFormValue(csrfField)
			}
			if subtle.ConstantTimeCompare([]byte(got), []byte(s.csrf)) != 1 {
				d.renderError(w, r, http.StatusForbidden, "This request carried no valid CSRF token and was refused. Reload the page and try again.")
				return
			}
		}
		if err := h(w, r, s); err != nil {
			d.fail(w, r, err)
		}
	})
}

// toSignIn sends a signed-out browser to the sign-in page, back to where it was afterwards.
func (d *Dashboard) toSignIn(w http.ResponseWriter, r *http.Request) {
	target := "/signin"
	if r.Method == http.MethodGet && r.URL.Path != "/" {
		target += "?next=" + url.QueryEscape(r.URL.RequestURI())
	}
	if r.Header.Get("HX-Request") == "true" {
		w.Header().Set("HX-Redirect", target)
		w.WriteHeader(http.StatusUnauthorized)
		return
	}
	if r.Method != http.MethodGet {
		d.renderError(w, r, http.StatusUnauthorized, "You are signed out. Sign in again.")
		return
	}
	http.Redirect(w, r, target, http.StatusSeeOther)
}

// safeNext keeps a post-sign-in redirect on this site: a path, not a URL elsewhere.
func safeNext(next string) string {
	if !strings.HasPrefix(next, "/") || strings.HasPrefix(next, "//") || strings.HasPrefix(next, "/\\") {
		return "/"
	}
	return next
}

func (d *Dashboard) signInPage(w http.ResponseWriter, r *http.Request) {
	d.render(w, r, http.StatusOK, "signin", pageData{Title: "Sign in", Next: safeNext(r.URL.Query().Get("next"))})
}

// signIn checks a pasted token and starts a session. The form is protected against other sites
// by the cross-origin check of every POST and by the cookie's SameSite=Strict.
func (d *Dashboard) signIn(w http.ResponseWriter, r *http.Request) {
	token := strings.TrimSpace(r.PostFormValue("token"))
	next := safeNext(r.PostFormValue("next"))
	p, err := d.cfg.Auth.Authenticate(r.Context(), token)
	if errors.Is(err, auth.ErrUnauthenticated) {
		d.render(w, r, http.StatusUnauthorized, "signin", pageData{Title: "Sign in", Next: next,
			Error: "That token is not valid (unknown, revoked or expired)."})
		return
	}
	if err != nil {
		d.fail(w, r, err)
		return
	}
	if err := authorizeIn(p, auth.ActionRead, p.Environment); err != nil {
		d.render(w, r, http.StatusForbidden, "signin", pageData{Title: "Sign in", Next: next, Error: "That token may not read."})
		return
	}
	id, _ := d.sessions.create(token, p)
	http.SetCookie(w, &http.Cookie{
		Name: cookieName, Value: id, Path: "/", HttpOnly: true, Secure: r.TLS != nil,
		SameSite: http.SameSiteStrictMode, MaxAge: int(d.cfg.SessionLifetime.Seconds()),
	})
	http.Redirect(w, r, next, http.StatusSeeOther)
}

func (d *Dashboard) signOut(w http.ResponseWriter, r *http.Request, s *session) error {
	d.sessions.drop(s)
	http.SetCookie(w, &http.Cookie{Name: cookieName, Value: "", Path: "/", HttpOnly: true,
		Secure: r.TLS != nil, SameSite: http.SameSiteStrictMode, MaxAge: -1})
	if r.Header.Get("HX-Request") == "true" {
		w.Header().Set("HX-Redirect", "/signin")
		return nil
	}
	http.Redirect(w, r, "/signin", http.StatusSeeOther)
	return nil
}
