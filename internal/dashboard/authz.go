package dashboard

import (
	"time"

	"github.com/interlock-dev/interlock/internal/auth"
)

// authorizeIn checks that p's role may perform a in env and that p's scope covers env.
var authorizeIn = auth.AuthorizeIn

// tokenExpired reports whether p's token has run out.
func tokenExpired(p auth.Principal, now time.Time) bool {
	return !p.ExpiresAt.IsZero() && !now.Before(p.ExpiresAt)
}
