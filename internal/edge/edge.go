// Package edge is what every HTTP answer of the server passes through: security headers on all
// of them, and CORS for the routes a browser app on another origin may call (OFREP, so that the
// OpenFeature web provider works, and the live event feeds). CORS is off unless origins are
// allowed.
package edge

import (
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"

	"github.com/rs/cors"
)

// Config says which origins may call the cross-origin routes.
type Config struct {
	// CORSOrigins are the origins (scheme://host[:port]) allowed to call OFREP and the event
	// feeds from a browser; "*" allows any. None by default: browsers refuse cross-origin calls.
	CORSOrigins []string
}

// Validate reports every origin that is not scheme://host[:port] or "*".
func (c Config) Validate() error {
	var errs []error
	for _, o := range c.CORSOrigins {
		if o == "*" {
			continue
		}
		u, err := url.Parse(o)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.User != nil {
			errs = append(errs, fmt.Errorf("cors origin %q is not scheme://host[:port]", o))
		}
	}
	return errors.Join(errs...)
}

// crossOrigin reports whether a path is one a browser app on another origin may call.
func crossOrigin(path string) bool {
	return strings.HasPrefix(path, "/ofrep/") || path == "/api/v1/events"
}

// dashboard reports whether a path is the dashboard's, which sets its own Content-Security-Policy.
func dashboard(path string) bool {
	return !strings.HasPrefix(path, "/ofrep/") && !strings.HasPrefix(path, "/api/") && path != "/healthz" && path != "/readyz" && path != "/metrics"
}

// Handler wraps next with the security headers and, for the cross-origin routes, CORS.
func Handler(next http.Handler, cfg Config) http.Handler {
	var withCORS http.Handler
	if len(cfg.CORSOrigins) > 0 {
		withCORS = cors.New(cors.Options{
			AllowedOrigins: cfg.CORSOrigins,
			AllowedMethods: []string{http.MethodGet, http.MethodPost, http.MethodHead},
			AllowedHeaders: []string{"Authorization", "Content-Type", "X-Api-Key", "X-Interlock-Environment",
				"If-None-Match", "Last-Event-Id", "X-Correlation-Id"},
			ExposedHeaders: []string{"ETag", "Retry-After", "X-Correlation-Id"},
			MaxAge:         600,
		}).Handler(next)
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Referrer-Policy", "no-referrer")
		h.Set("X-Frame-Options", "DENY")
		if !dashboard(r.URL.Path) {
			h.Set("Content-Security-Policy", "default-src 'none'; frame-ancestors 'none'")
		}
		if r.TLS != nil {
			h.Set("Strict-Transport-Security", "max-age=31536000")
		}
		if withCORS != nil && crossOrigin(r.URL.Path) {
			withCORS.ServeHTTP(w, r)
			return
		}
		next.ServeHTTP(w, r)
	})
}
