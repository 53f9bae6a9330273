package auth

import (
	"errors"
	"fmt"
	"slices"
)

var (
	// ErrUnauthenticated means no token was presented, or the token is not one Interlock issued
	// (or was revoked).
	ErrUnauthenticated = errors.New("unauthenticated")
	// ErrForbidden means the token is valid but its role may not do what was asked.
	ErrForbidden = errors.New("forbidden")
	// ErrInvalid means a token, name or role handed to the store breaks a rule; nothing was stored.
	ErrInvalid = errors.New("invalid")
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
}

// Authorize returns nil if p's role may perform a, and an error wrapping [ErrForbidden] (naming
// the role and the action) otherwise. An unknown role may do nothing.
func Authorize(p Principal, a Action) error {
	if slices.Contains(permissions[p.Role], a) {
		return nil
	}
	return fmt.Errorf("%w: role %q may not %s", ErrForbidden, p.Role, a)
}
