package api

import (
	"context"
	"fmt"
	"net/http"

	"github.com/interlock-dev/interlock/events"
	"github.com/interlock-dev/interlock/internal/auth"
)

// Tokens issues, lists and revokes API tokens: *auth.Store.
type Tokens interface {
	// Create issues a token, scoped to env unless it is empty; errors wrap auth.ErrInvalid or
	// auth.ErrExists.
	Create(ctx context.Context, name string, role auth.Role, env string) (auth.TokenInfo, string, error)
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

func (a *API) createToken(w http.ResponseWriter, r *http.Request, _ auth.Principal) error {
	if a.cfg.Tokens == nil {
		return errNoTokens
	}
	var body struct {
		Name        string `json:"name"`
		Role        string `json:"role"`
		Environment string `json:"environment"`
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
	info, token, err := a.cfg.Tokens.Create(r.Context(), body.Name, role, body.Environment)
	if err != nil {
		return err
	}
	w.Header().Set("Cache-Control", "no-store")
	a.writeJSON(w, r, http.StatusCreated, issuedToken{TokenInfo: info, Token: token})
	return nil
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
