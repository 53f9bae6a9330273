package perimeter

import (
	"slices"
	"testing"

	"github.com/interlock-dev/interlock/internal/auth"
)

func TestOwnsDurable(t *testing.T) {
	for _, tc := range []struct {
		token, durable string
		want           bool
	}{
		{"audit", "audit", true},
		{"audit", "audit@eu", true},
		{"audit", "audit@", false},
		{"audit", "audit-eu", false},
		{"audit", "auditor", false},
		{"audit-eu", "audit", false},
		{"audit", "billing", false},
		{"a.b", "a", false},
		{"", "", false},
	} {
		if got := OwnsDurable(tc.token, tc.durable); got != tc.want {
			t.Errorf("OwnsDurable(%q, %q) = %v, want %v", tc.token, tc.durable, got, tc.want)
		}
	}
}

func TestPermissionsFollowTheScope(t *testing.T) {
	for _, tc := range []struct {
		name  string
		p     auth.Principal
		allow []string
		never []string
	}{
		{
			name:  "scoped reader",
			p:     auth.Principal{Name: "s", Role: auth.RoleReader, Environment: "staging"},
			allow: []string{"$JS.API.CONSUMER.CREATE.INTERLOCK.*.interlock.staging.>", "$JS.API.DIRECT.GET.INTERLOCK.interlock.staging.>", "_INTERLOCK.presence.staging.*"},
			never: []string{"$JS.API.CONSUMER.CREATE.INTERLOCK.*.interlock.>", "$JS.API.CONSUMER.CREATE.INTERLOCK.*", "_INTERLOCK.presence.*.*"},
		},
		{
			name:  "unscoped admin reads only",
			p:     auth.Principal{Name: "a", Role: auth.RoleAdmin},
			allow: []string{"$JS.API.CONSUMER.CREATE.INTERLOCK.*.interlock.>", "$JS.API.CONSUMER.CREATE.INTERLOCK.*"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			perms := Permissions(tc.p, "_INBOX.ilkx")
			for _, s := range tc.allow {
				if !slices.Contains(perms.Pub.Allow, s) {
					t.Errorf("%s is not allowed", s)
				}
			}
			for _, s := range append(tc.never, "interlock.>", "$JS.API.STREAM.DELETE.INTERLOCK", "$KV.interlock_tokens.>", ">") {
				if slices.Contains(perms.Pub.Allow, s) {
					t.Errorf("%s is allowed", s)
				}
			}
			for _, s := range perms.Pub.Allow {
				if len(s) >= len("interlock.") && s[:len("interlock.")] == "interlock." {
					t.Errorf("an event subject is allowed: %s", s)
				}
			}
			if !slices.Equal(perms.Sub.Allow, []string{"_INBOX.ilkx.>"}) {
				t.Errorf("subscribe allow = %v", perms.Sub.Allow)
			}
			if len(perms.Pub.Deny) != 0 || len(perms.Sub.Deny) != 0 {
				t.Errorf("deny lists: %v %v", perms.Pub.Deny, perms.Sub.Deny)
			}
		})
	}
}
