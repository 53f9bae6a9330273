package api

import (
	"context"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/interlock-dev/interlock/events"
	"github.com/interlock-dev/interlock/internal/auth"
)

// Tokens issues, lists and revokes API tokens: *auth.Store.
type Tokens interface {
	// Create issues a token as spec says; errors wrap auth.ErrInvalid or auth.ErrExists.
	Create(ctx context.Context, spec auth.Spec) (auth.TokenInfo, string, error)
	List(ctx context.Context) ([]auth.TokenInfo, error)
	// Revoke errors wrap auth.ErrInvalid or auth.ErrNotFound.
	Revoke(ctx context.Context, name string) (int, error)
}

// errNoTokens answers the token endpoints of an API built without [Config.Tokens].
var errNoTokens = &requestError{kind: errNoRoute, msg: "this server does not manage tokens"}

// issuedToken is the answer to POST /api/v1/tokens: the only time the token is shown.
type issuedToken struct {
	auth.TokenInfo
	Token string `json:"token"`
}

// maxTokenLifetime bounds expiresIn: ten years is "never" for any practical purpose, and bounds
// the arithmetic.
const maxTokenLifetime = 10 * 365 * 24 * time.Hour

func (a *API) createToken(w http.ResponseWriter, r *http.Request, p auth.Principal) error {
	if a.cfg.Tokens == nil {
		return errNoTokens
	}
	var body struct {
		Name        string `json:"name"`
		Role        string `json:"role"`
		Environment string `json:"environment"`
		// ExpiresIn is a lifetime such as "30d", "12h" or "90m"; ExpiresAt an RFC 3339 time.
		// At most one of them; neither for a token that does not expire.
		ExpiresIn string    `json:"expiresIn"`
		ExpiresAt time.Time `json:"expiresAt"`
	}
	if err := a.readJSON(w, r, &body, false); err != nil {
		return err
	}
	role, err := auth.ParseRole(body.Role)
	if err != nil {
		return badRequest(fmt.Sprintf("role %q is not one of admin, writer, oncall, reader", body.Role))
	}
	if body.Environment != "" {
		if err := events.ValidateEnvironment(body.Environment); err != nil {
			return err
		}
	}
	spec := auth.Spec{Name: body.Name, Role: role, Environment: body.Environment, ExpiresAt: body.ExpiresAt}
	if body.ExpiresIn != "" {
		if !body.ExpiresAt.IsZero() {
			return badRequest("give expiresIn or expiresAt, not both")
		}
		d, err := ParseLifetime(body.ExpiresIn)
		if err != nil {
			return badRequest("expiresIn: " + err.Error())
		}
		spec.ExpiresAt = time.Now().Add(d)
	}
	if err := auth.CanMint(p, role, body.Environment); err != nil {
		return err
	}
	info, token, err := a.cfg.Tokens.Create(r.Context(), spec)
	if err != nil {
		return err
	}
	w.Header().Set("Cache-Control", "no-store")
	a.writeJSON(w, r, http.StatusCreated, issuedToken{TokenInfo: info, Token: token})
	return nil
}

// ParseLifetime reads a token lifetime: a Go duration ("12h", "90m") or a whole number of days
// ("30d"), between one minute and ten years.
func ParseLifetime(s string) (time.Duration, error) {
	var d time.Duration
	if days, ok := strings.CutSuffix(s, "d"); ok {
		n, err := strconv.ParseUint(days, 10, 16)
		if err != nil {
			return 0, fmt.Errorf("%q is not a lifetime such as 30d, 12h or 90m", s)
		}
		d = time.Duration(n) * 24 * time.Hour
	} else {
		var err error
		if d, err = time.ParseDuration(s); err != nil {
			return 0, fmt.Errorf("%q is not a lifetime such as 30d, 12h or 90m", s)
		}
	}
	if d < time.Minute || d > maxTokenLifetime {
		return 0, fmt.Errorf("%q: a lifetime is between 1m and 3650d", s)
	}
	return d, nil
}

func (a *API) listTokens(w http.ResponseWriter, r *http.Request, _ auth.Principal) error {
	if a.cfg.Tokens == nil {
		return errNoTokens
	}
	if _, err := query(r, nil); err != nil {
		return err
	}
	list, err := a.cfg.Tokens.List(r.Context())
	if err != nil {
		return err
	}
	w.Header().Set("Cache-Control", "no-store")
	a.writeJSON(w, r, http.StatusOK, struct {
		Tokens []auth.TokenInfo `json:"tokens"`
	}{list})
	return nil
}

func (a *API) revokeToken(w http.ResponseWriter, r *http.Request, _ auth.Principal) error {
	if a.cfg.Tokens == nil {
		return errNoTokens
	}
	if _, err := a.cfg.Tokens.Revoke(r.Context(), r.PathValue("name")); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}
