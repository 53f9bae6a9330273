package auth

import (
	"errors"
	"testing"
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
