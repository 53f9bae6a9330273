package auth

import (
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"
)

var (
	// ErrUnauthenticated means no token was presented, or the token is not one Interlock issued
	// (or was revoked).
	ErrUnauthenticated = errors.New("unauthenticated")
	// ErrForbidden means the token is valid but its role may not do what was asked.
	ErrForbidden = errors.New("forbidden")
	// ErrInvalid means a token, name or role handed to the store breaks a rule; nothing was stored.
	ErrInvalid = errors.New("invalid")
	// ErrExpired means the token was issued with an expiry that has passed. Errors that wrap it
	// also wrap [ErrUnauthenticated].
	ErrExpired = errors.New("expired")
)

// Role is what a token may do, by name. It is stored with the token.
type Role string

// The roles. Admins issue tokens of any role (interlock tokens create NAME --role R).
const (
	// RoleAdmin may do everything.
	RoleAdmin Role = "admin"
	// RoleWriter may read, change flags and kill them, but not administer Interlock.
	RoleWriter Role = "writer"
	// RoleOncall may read and kill flags: the on-call engineer's switch, nothing more.
	RoleOncall Role = "oncall"
	// RoleReader may only read.
	RoleReader Role = "reader"
)

// Action is a class of request that a role may or may not make.
type Action string

// The actions.
const (
	// ActionRead reads flags, history and audit.
	ActionRead Action = "read"
	// ActionWrite creates, updates, enables, archives, unarchives and restores flags.
	ActionWrite Action = "write"
	// ActionKill turns a flag off.
	ActionKill Action = "kill"
	// ActionAdmin manages Interlock itself (tokens, settings).
	ActionAdmin Action = "admin"
)

// permissions is the whole role → action table.
var permissions = map[Role][]Action{
	RoleAdmin:  {ActionRead, ActionWrite, ActionKill, ActionAdmin},
	RoleWriter: {ActionRead, ActionWrite, ActionKill},
	RoleOncall: {ActionRead, ActionKill},
	RoleReader: {ActionRead},
}

// Valid reports whether r is a role Interlock knows.
func (r Role) Valid() bool {
	_, ok := permissions[r]
	return ok
}

// ParseRole returns the role named s, or an error wrapping [ErrInvalid].
func ParseRole(s string) (Role, error) {
	r := Role(s)
	if !r.Valid() {
		return "", fmt.Errorf("%w: role %q is not one of admin, writer, oncall, reader", ErrInvalid, s)
	}
	return r, nil
}

// Principal is who made a request: the name recorded as the actor of its events, and its role.
type Principal struct {
	Name string `json:"name"`
	Role Role   `json:"role"`
	// Environment is the one environment a scoped token is for (see [Store.IssueScoped]); empty
	// for a token valid in every environment.
	Environment string `json:"environment,omitempty"`
	// ExpiresAt is when the token stops working; zero for a token that does not expire.
	ExpiresAt time.Time `json:"expiresAt,omitzero"`
}

// Sees reports whether p's scope covers env: every environment for an unscoped token, its own
// for a scoped one.
func (p Principal) Sees(env string) bool {
	return p.Environment == "" || p.Environment == env
}

// Authorize returns nil if p's role may perform a, and an error wrapping [ErrForbidden] (naming
// the role and the action) otherwise. An unknown role may do nothing.
func Authorize(p Principal, a Action) error {
	if slices.Contains(permissions[p.Role], a) {
		return nil
	}
	return fmt.Errorf("%w: role %q may not %s", ErrForbidden, p.Role, a)
}

// AuthorizeIn is [Authorize] for an action in one environment: p's role must allow a, and p's
// scope must cover env. An empty env stands for an action that is not about one environment
// (listing tokens, say); only an unscoped principal may act on more than one environment at once,
// so a scoped principal is refused it for any action but reading, whose answers the caller
// filters with [Principal.Sees].
//
// Errors: one wrapping [ErrForbidden] that names the role and action, or the scope.
func AuthorizeIn(p Principal, a Action, env string) error {
	if err := Authorize(p, a); err != nil {
		return err
	}
	switch {
	case env != "" && !p.Sees(env):
		return fmt.Errorf("%w: the token is scoped to environment %q, not %q", ErrForbidden, p.Environment, env)
	case env == "" && p.Environment != "" && a != ActionRead:
		return fmt.Errorf("%w: the token is scoped to environment %q; this needs a token of every environment", ErrForbidden, p.Environment)
	}
	return nil
}

// rank orders the roles by what they may do: each may do everything the ones below it may.
var rank = map[Role]int{RoleReader: 0, RoleOncall: 1, RoleWriter: 2, RoleAdmin: 3}

// CanMint returns nil if issuer may create a token of role scoped to env ("" for every
// environment): issuer may administer, the role is no higher than issuer's own, and the scope is
// no wider (a scoped issuer mints only tokens of its own environment). So only an unscoped admin
// creates unscoped admins.
//
// Errors: one wrapping [ErrForbidden] saying which rule was broken.
func CanMint(issuer Principal, role Role, env string) error {
	if err := Authorize(issuer, ActionAdmin); err != nil {
		return err
	}
	if r, ok := rank[role]; !ok || r > rank[issuer.Role] {
		return fmt.Errorf("%w: a %s token cannot create a token of role %q", ErrForbidden, issuer.Role, role)
	}
	if issuer.Environment != "" && env != issuer.Environment {
		scope := "every environment"
		if env != "" {
			scope = fmt.Sprintf("environment %q", env)
		}
		return fmt.Errorf("%w: the token is scoped to environment %q and cannot create a token for %s", ErrForbidden, issuer.Environment, scope)
	}
	return nil
}

// maxLifetime bounds a token's lifetime: ten years is "never" for any practical purpose, and
// bounds the arithmetic.
const maxLifetime = 10 * 365 * 24 * time.Hour

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
	if d < time.Minute || d > maxLifetime {
		return 0, fmt.Errorf("%q: a lifetime is between 1m and 3650d", s)
	}
	return d, nil
}
