package auth

import (
	"errors"
	"testing"

	"github.com/interlock-dev/interlock/internal/natstest"
)

func TestListAndRevoke(t *testing.T) {
	js := natstest.JetStream(t, natstest.RunServer(t))
	s := openStore(t, js)
	admin, err := s.Bootstrap(t.Context(), "")
	if err != nil || admin == "" {
		t.Fatalf("bootstrap = %q, %v", admin, err)
	}
	svc, err := s.IssueScoped(t.Context(), "checkout.svc", RoleReader, "staging")
	if err != nil {
		t.Fatal(err)
	}
	ops, err := s.Issue(t.Context(), "ops_1", RoleOncall)
	if err != nil {
		t.Fatal(err)
	}

	list, err := s.List(t.Context())
	if err != nil {
		t.Fatalf("list: %v", err)
	}
	want := []TokenInfo{
		{Name: "admin", Role: RoleAdmin},
		{Name: "checkout.svc", Role: RoleReader, Environment: "staging"},
		{Name: "ops_1", Role: RoleOncall},
	}
	if len(list) != len(want) {
		t.Fatalf("list = %+v, want %d tokens", list, len(want))
	}
	for i, w := range want {
		got := list[i]
		if got.CreatedAt.IsZero() {
			t.Errorf("token %s has no creation time", got.Name)
		}
		got.CreatedAt = w.CreatedAt
		if got != w {
			t.Errorf("list[%d] = %+v, want %+v", i, got, w)
		}
	}

	// Both tokens are cached; revoking one stops it at once on this store, and on a store that
	// never cached it, and leaves the other working.
	mustAuthenticate(t, s, svc)
	mustAuthenticate(t, s, ops)
	n, err := s.Revoke(t.Context(), "checkout.svc")
	if err != nil || n != 1 {
		t.Fatalf("revoke = %d, %v; want 1, nil", n, err)
	}
	if _, err := s.Authenticate(t.Context(), svc); !errors.Is(err, ErrUnauthenticated) {
		t.Fatalf("revoked token authenticates: %v", err)
	}
	if _, err := openStore(t, js).Authenticate(t.Context(), svc); !errors.Is(err, ErrUnauthenticated) {
		t.Fatalf("revoked token authenticates on another store: %v", err)
	}
	mustAuthenticate(t, s, ops)
	mustAuthenticate(t, s, admin)

	if _, err := s.Revoke(t.Context(), "checkout.svc"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("second revoke = %v, want ErrNotFound", err)
	}
	// The name is free again.
	if _, err := s.IssueScoped(t.Context(), "checkout.svc", RoleReader, "staging"); err != nil {
		t.Fatalf("reissue after revoke: %v", err)
	}
}

func TestRevokeAllOfAName(t *testing.T) {
	s := openStore(t, natstest.JetStream(t, natstest.RunServer(t)))
	// Two tokens of one name, as two racing issues could leave behind.
	var toks []string
	for range 2 {
		tok, _, err := s.issue(t.Context(), Spec{Name: "twin", Role: RoleWriter})
		if err != nil {
			t.Fatal(err)
		}
		mustAuthenticate(t, s, tok)
		toks = append(toks, tok)
	}
	if n, err := s.Revoke(t.Context(), "twin"); err != nil || n != 2 {
		t.Fatalf("revoke = %d, %v; want 2, nil", n, err)
	}
	for _, tok := range toks {
		if _, err := s.Authenticate(t.Context(), tok); !errors.Is(err, ErrUnauthenticated) {
			t.Fatalf("revoked token authenticates: %v", err)
		}
	}
}

func TestIssueDuplicateAndReserved(t *testing.T) {
	s := openStore(t, natstest.JetStream(t, natstest.RunServer(t)))
	if _, err := s.Issue(t.Context(), "alice", RoleWriter); err != nil {
		t.Fatal(err)
	}
	if tok, err := s.Issue(t.Context(), "alice", RoleReader); !errors.Is(err, ErrExists) || tok != "" {
		t.Fatalf("duplicate issue = %q, %v; want ErrExists", tok, err)
	}
	if tok, err := s.IssueScoped(t.Context(), "alice", RoleReader, "prod"); !errors.Is(err, ErrExists) || tok != "" {
		t.Fatalf("duplicate scoped issue = %q, %v; want ErrExists", tok, err)
	}
	if tok, err := s.Issue(t.Context(), "admin", RoleAdmin); !errors.Is(err, ErrInvalid) || tok != "" {
		t.Fatalf("issue named admin = %q, %v; want ErrInvalid", tok, err)
	}
	list, err := s.List(t.Context())
	if err != nil || len(list) != 1 {
		t.Fatalf("list = %+v, %v; want alice only", list, err)
	}
}

func TestRevokeRefused(t *testing.T) {
	s := openStore(t, natstest.JetStream(t, natstest.RunServer(t)))
	admin, err := s.Bootstrap(t.Context(), "")
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, who string
		want      error
	}{
		{"admin", "admin", ErrInvalid},
		{"empty", "", ErrInvalid},
		{"slash", "a/b", ErrInvalid},
		{"too long", string(make([]byte, 65)), ErrInvalid},
		{"unknown", "nobody", ErrNotFound},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if n, err := s.Revoke(t.Context(), tt.who); !errors.Is(err, tt.want) || n != 0 {
				t.Fatalf("revoke = %d, %v; want %v", n, err, tt.want)
			}
		})
	}
	mustAuthenticate(t, s, admin)
}

func TestCheckName(t *testing.T) {
	tests := []struct {
		name string
		ok   bool
	}{
		{"a", true},
		{"svc-checkout_v1.2", true},
		{"A9", true},
		{"", false},
		{"with space", false},
		{"ünïcode", false},
		{"a/b", false},
		{"a*", false},
		{string(make([]byte, 64)), false},
	}
	long := make([]byte, 64)
	for i := range long {
		long[i] = 'x'
	}
	tests = append(tests, struct {
		name string
		ok   bool
	}{string(long), true}, struct {
		name string
		ok   bool
	}{string(long) + "x", false})
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := checkName(tt.name)
			if tt.ok != (err == nil) || (err != nil && !errors.Is(err, ErrInvalid)) {
				t.Fatalf("checkName(%q) = %v, want ok=%v", tt.name, err, tt.ok)
			}
		})
	}
}

// A lookup that began before a revocation and ends after it must not cache what it found.
func TestRevokeStopsLookupInFlightFromCaching(t *testing.T) {
	s := openStore(t, natstest.JetStream(t, natstest.RunServer(t)))
	tok, err := s.Issue(t.Context(), "victim", RoleWriter)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Issue(t.Context(), "other", RoleReader); err != nil {
		t.Fatal(err)
	}
	key := hashKey(tok)
	s.mu.RLock()
	gen := s.revokes // as Authenticate reads it before asking the bucket
	s.mu.RUnlock()
	if _, err := s.Revoke(t.Context(), "other"); err != nil {
		t.Fatal(err)
	}
	s.remember(key, Principal{Name: "victim", Role: RoleWriter}, s.now().Add(cacheTTL), gen)
	s.mu.RLock()
	_, cachedAfter := s.cache[key]
	s.mu.RUnlock()
	if cachedAfter {
		t.Fatal("a lookup that began before a revocation was cached")
	}
	mustAuthenticate(t, s, tok) // and a fresh one is
	s.mu.RLock()
	_, cachedAfter = s.cache[key]
	s.mu.RUnlock()
	if !cachedAfter {
		t.Fatal("a fresh lookup was not cached")
	}
}

func TestCreateReturnsWhatWasStored(t *testing.T) {
	s := openStore(t, natstest.JetStream(t, natstest.RunServer(t)))
	info, tok, err := s.Create(t.Context(), Spec{Name: "svc", Role: RoleReader, Environment: "prod"})
	if err != nil {
		t.Fatal(err)
	}
	list, err := s.List(t.Context())
	if err != nil || len(list) != 1 || list[0] != info {
		t.Fatalf("list = %+v, %v; want [%+v]", list, err, info)
	}
	if p := mustAuthenticate(t, s, tok); p != (Principal{Name: "svc", Role: RoleReader, Environment: "prod"}) {
		t.Fatalf("principal = %+v", p)
	}
}
