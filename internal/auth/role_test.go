package auth

import (
	"errors"
	"testing"
	"time"
)

func TestAuthorize(t *testing.T) {
	all := []Action{ActionRead, ActionWrite, ActionKill, ActionAdmin}
	allowed := map[Role][]Action{
		RoleAdmin:    {ActionRead, ActionWrite, ActionKill, ActionAdmin},
		RoleWriter:   {ActionRead, ActionWrite, ActionKill},
		RoleOncall:   {ActionRead, ActionKill},
		RoleReader:   {ActionRead},
		Role("root"): nil,
		Role(""):     nil,
	}
	for role, actions := range allowed {
		for _, a := range all {
			want := false
			for _, ok := range actions {
				want = want || ok == a
			}
			t.Run(string(role)+"/"+string(a), func(t *testing.T) {
				err := Authorize(Principal{Name: "someone", Role: role}, a)
				switch {
				case want && err != nil:
					t.Fatalf("role %q may %s, got %v", role, a, err)
				case !want && !errors.Is(err, ErrForbidden):
					t.Fatalf("role %q may not %s, got %v", role, a, err)
				}
			})
		}
	}
}

func TestParseRole(t *testing.T) {
	for _, s := range []string{"admin", "writer", "oncall", "reader"} {
		if r, err := ParseRole(s); err != nil || string(r) != s {
			t.Errorf("ParseRole(%q) = %q, %v", s, r, err)
		}
	}
	for _, s := range []string{"", "Admin", "root", "on-call"} {
		if _, err := ParseRole(s); !errors.Is(err, ErrInvalid) {
			t.Errorf("ParseRole(%q) = %v, want ErrInvalid", s, err)
		}
	}
}

func TestAuthorizeIn(t *testing.T) {
	staging := Principal{Name: "s", Role: RoleWriter, Environment: "staging"}
	every := Principal{Name: "e", Role: RoleWriter}
	tests := []struct {
		name string
		p    Principal
		a    Action
		env  string
		ok   bool
	}{
		{"scoped in its environment", staging, ActionWrite, "staging", true},
		{"scoped in another environment", staging, ActionWrite, "production", false},
		{"scoped reads in another environment", staging, ActionRead, "production", false},
		{"scoped reads across environments (filtered)", staging, ActionRead, "", true},
		{"scoped acts across environments", staging, ActionKill, "", false},
		{"unscoped anywhere", every, ActionWrite, "production", true},
		{"unscoped across environments", every, ActionKill, "", true},
		{"role still applies", Principal{Name: "r", Role: RoleReader, Environment: "staging"}, ActionKill, "staging", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := AuthorizeIn(tt.p, tt.a, tt.env)
			if tt.ok && err != nil {
				t.Fatalf("AuthorizeIn = %v, want nil", err)
			}
			if !tt.ok && !errors.Is(err, ErrForbidden) {
				t.Fatalf("AuthorizeIn = %v, want ErrForbidden", err)
			}
		})
	}
}

func TestCanMint(t *testing.T) {
	admin := Principal{Name: "a", Role: RoleAdmin}
	stagingAdmin := Principal{Name: "sa", Role: RoleAdmin, Environment: "staging"}
	tests := []struct {
		name   string
		issuer Principal
		role   Role
		env    string
		ok     bool
	}{
		{"admin mints an unscoped admin", admin, RoleAdmin, "", true},
		{"admin mints a scoped reader", admin, RoleReader, "production", true},
		{"scoped admin mints its own scope", stagingAdmin, RoleAdmin, "staging", true},
		{"scoped admin cannot mint unscoped", stagingAdmin, RoleReader, "", false},
		{"scoped admin cannot mint another scope", stagingAdmin, RoleWriter, "production", false},
		{"writer mints nothing", Principal{Name: "w", Role: RoleWriter}, RoleReader, "", false},
		{"unknown role", admin, Role("root"), "", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := CanMint(tt.issuer, tt.role, tt.env)
			if tt.ok && err != nil {
				t.Fatalf("CanMint = %v, want nil", err)
			}
			if !tt.ok && !errors.Is(err, ErrForbidden) {
				t.Fatalf("CanMint = %v, want ErrForbidden", err)
			}
		})
	}
}

// The ranking CanMint uses must name every role, or a new role could be minted by anyone.
func TestRankCoversEveryRole(t *testing.T) {
	for r := range permissions {
		if _, ok := rank[r]; !ok {
			t.Errorf("role %q has no rank", r)
		}
	}
}

func TestParseLifetime(t *testing.T) {
	good := map[string]time.Duration{"30d": 30 * 24 * time.Hour, "12h": 12 * time.Hour, "90m": 90 * time.Minute, "1m": time.Minute, "3650d": 3650 * 24 * time.Hour}
	for s, want := range good {
		if got, err := ParseLifetime(s); err != nil || got != want {
			t.Errorf("ParseLifetime(%q) = %v, %v; want %v", s, got, err, want)
		}
	}
	for _, s := range []string{"", "d", "-1d", "30s", "0m", "3651d", "1.5d", "99999999999999d", "soon"} {
		if _, err := ParseLifetime(s); err == nil {
			t.Errorf("ParseLifetime(%q) accepted", s)
		}
	}
}

func FuzzParseLifetime(f *testing.F) {
	for _, s := range []string{"30d", "12h", "1m", "-5m", "1e9h", "d"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		d, err := ParseLifetime(s)
		if err == nil && (d < time.Minute || d > maxLifetime) {
			t.Fatalf("ParseLifetime(%q) = %v, out of bounds", s, d)
		}
	})
}
