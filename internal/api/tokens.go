package api

import (
	"context"
	"fmt"
	"net/http"
	"time"

	"github.com/interlock-dev/interlock/apiv1"
	"github.com/interlock-dev/interlock/events"
	"github.com/interlock-dev/interlock/internal/auth"
	"github.com/interlock-dev/interlock/internal/command"
)

// Tokens issues, lists and revokes API tokens: *auth.Store.
type Tokens interface {
	// Create issues a token as spec says; errors wrap auth.ErrInvalid or auth.ErrExists.
	Create(ctx context.Context, spec auth.Spec) (auth.TokenInfo, string, error)
	List(ctx context.Context) ([]auth.TokenInfo, error)
	// Revoke errors wrap auth.ErrInvalid or auth.ErrNotFound.
	Revoke(ctx context.Context, name string) (int, error)
}

// TokenEvents records token events in the stream, for the audit trail: *command.Service.
type TokenEvents interface {
	// RecordToken appends a token issued or revoked event about the tokens named name.
	RecordToken(ctx context.Context, m command.Meta, typ, name string, payload any) error
	// Token says what the token events of name say.
	Token(ctx context.Context, name string) (command.TokenState, error)
}

// errNoTokens answers the token endpoints of an API built without [Config.Tokens].
var errNoTokens = &requestError{kind: errNoRoute, msg: "this server does not manage tokens"}

func (a *API) createToken(w http.ResponseWriter, r *http.Request, p auth.Principal) error {
	if a.cfg.Tokens == nil {
		return errNoTokens
	}
	var body apiv1.CreateTokenRequest
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
		d, err := auth.ParseLifetime(body.ExpiresIn)
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
	issued := events.TokenIssued{Role: string(info.Role), Environment: info.Environment, ExpiresAt: info.ExpiresAt}
	if err := a.cfg.TokenEvents.RecordToken(r.Context(), meta(r, p, ""), events.TypeTokenIssued, info.Name, issued); err != nil {
		// A token nobody can audit must not work: take it back. The revocation is not recorded
		// either, since no issue was.
		_, rerr := a.cfg.Tokens.Revoke(context.WithoutCancel(r.Context()), info.Name)
		a.logger.ErrorContext(r.Context(), "token issued but not recorded: revoked it", "name", info.Name,
			"error", err, "revoke_error", rerr)
		if rerr != nil {
			return fmt.Errorf("token %s issued but its event not recorded (%w), and revoking it failed: %w", info.Name, err, rerr)
		}
		return &requestError{kind: errUnavailable, msg: "the token was not issued: the event store did not record its issue; nothing was changed, try again"}
	}
	w.Header().Set("Cache-Control", "no-store")
	a.writeJSON(w, r, http.StatusCreated, apiv1.IssuedToken{TokenInfo: tokenInfo(info), Token: token})
	return nil
}

func (a *API) listTokens(w http.ResponseWriter, r *http.Request, p auth.Principal) error {
	if a.cfg.Tokens == nil {
		return errNoTokens
	}
	if _, err := query(r, nil); err != nil {
		return err
	}
	all, err := a.cfg.Tokens.List(r.Context())
	if err != nil {
		return err
	}
	list := []apiv1.TokenInfo{}
	for _, t := range all {
		// A scoped admin sees the tokens of its environment only.
		if p.Environment == "" || t.Environment == p.Environment {
			list = append(list, tokenInfo(t))
		}
	}
	w.Header().Set("Cache-Control", "no-store")
	a.writeJSON(w, r, http.StatusOK, apiv1.TokenList{Tokens: list})
	return nil
}

// revokeToken revokes every token of a name that the caller could have issued (see
// auth.CanMint), and records it. A revoke whose record failed earlier is completed by revoking
// again: the token is gone, but its events still say it is issued.
func (a *API) revokeToken(w http.ResponseWriter, r *http.Request, p auth.Principal) error {
	if a.cfg.Tokens == nil {
		return errNoTokens
	}
	name := r.PathValue("name")
	all, err := a.cfg.Tokens.List(r.Context())
	if err != nil {
		return err
	}
	var found *auth.TokenInfo
	for i := range all {
		if all[i].Name == name {
			found = &all[i]
			break
		}
	}
	revoked := events.TokenRevoked{}
	if found != nil {
		if err := auth.CanMint(p, found.Role, found.Environment); err != nil {
			return fmt.Errorf("revoke %s: %w", name, err)
		}
		revoked.Role, revoked.Environment = string(found.Role), found.Environment
		if _, err := a.cfg.Tokens.Revoke(r.Context(), name); err != nil {
			return err
		}
	} else {
		st, err := a.cfg.TokenEvents.Token(r.Context(), name)
		if err != nil || !st.Issued {
			// Not a valid name, never issued, or already revoked and recorded: the store says
			// which.
			_, rerr := a.cfg.Tokens.Revoke(r.Context(), name)
			return rerr
		}
		if err := auth.CanMint(p, auth.Role(st.Role), st.Environment); err != nil {
			return fmt.Errorf("revoke %s: %w", name, err)
		}
		revoked.Role, revoked.Environment = st.Role, st.Environment
	}
	if err := a.cfg.TokenEvents.RecordToken(r.Context(), meta(r, p, ""), events.TypeTokenRevoked, name, revoked); err != nil {
		a.logger.ErrorContext(r.Context(), "token revoked but not recorded", "name", name, "error", err)
		return &requestError{kind: errUnavailable, msg: "the token is revoked and no longer works, but the event store did not record the revocation; revoke it again to record it"}
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// tokenInfo is the wire form of t.
func tokenInfo(t auth.TokenInfo) apiv1.TokenInfo {
	return apiv1.TokenInfo{Name: t.Name, Role: string(t.Role), Environment: t.Environment, CreatedAt: t.CreatedAt, ExpiresAt: t.ExpiresAt}
}
