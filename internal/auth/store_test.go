package auth

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/interlock-dev/interlock/internal/natstest"
)

func openStore(t *testing.T, js jetstream.JetStream) *Store {
	t.Helper()
	s, err := Open(t.Context(), js, 1)
	if err != nil {
		t.Fatalf("open: %v", err)
	}
	return s
}

func mustAuthenticate(t *testing.T, s *Store, token string) Principal {
	t.Helper()
	p, err := s.Authenticate(t.Context(), token)
	if err != nil {
		t.Fatalf("authenticate: %v", err)
	}
	return p
}

func TestBootstrapGeneratesOnce(t *testing.T) {
	js := natstest.JetStream(t, natstest.RunServer(t))
	s := openStore(t, js)

	token, err := s.Bootstrap(t.Context(), "")
	if err != nil {
		t.Fatalf("bootstrap: %v", err)
	}
	if !strings.HasPrefix(token, TokenPrefix) || len(token) != len(TokenPrefix)+43 {
		t.Fatalf("token %q: want %s and 43 base64url characters", token, TokenPrefix)
	}
	if p := mustAuthenticate(t, s, token); p != (Principal{Name: "admin", Role: RoleAdmin}) {
		t.Fatalf("principal = %+v, want admin/admin", p)
	}

	again, err := s.Bootstrap(t.Context(), "")
	if err != nil || again != "" {
		t.Fatalf("second bootstrap = %q, %v; want \"\", nil", again, err)
	}
	// Another replica on the same bucket does not generate either.
	replica := openStore(t, js)
	if got, err := replica.Bootstrap(t.Context(), ""); err != nil || got != "" {
		t.Fatalf("replica bootstrap = %q, %v; want \"\", nil", got, err)
	}
	if p := mustAuthenticate(t, replica, token); p.Role != RoleAdmin {
		t.Fatalf("replica sees role %q", p.Role)
	}
	// The token itself is stored nowhere: only its hash is a key.
	keys, err := s.kv.Keys(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range keys {
		e, err := s.kv.Get(t.Context(), k)
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(k, token) || strings.Contains(string(e.Value()), token) {
			t.Fatalf("token stored in the clear under %q", k)
		}
	}
}

func TestBootstrapSurvivesRestart(t *testing.T) {
	dir := t.TempDir()
	srv := natstest.RunServer(t, natstest.Options{StoreDir: dir})
	s := openStore(t, natstest.JetStream(t, srv))
	token, err := s.Bootstrap(t.Context(), "")
	if err != nil || token == "" {
		t.Fatalf("bootstrap = %q, %v", token, err)
	}
	natstest.Shutdown(srv)

	srv = natstest.RunServer(t, natstest.Options{StoreDir: dir})
	s = openStore(t, natstest.JetStream(t, srv))
	if got, err := s.Bootstrap(t.Context(), ""); err != nil || got != "" {
		t.Fatalf("bootstrap after restart = %q, %v; want \"\", nil", got, err)
	}
	if p := mustAuthenticate(t, s, token); p.Role != RoleAdmin {
		t.Fatalf("after restart role = %q, want admin", p.Role)
	}
}

func TestBootstrapRace(t *testing.T) {
	srv := natstest.RunServer(t)
	stores := make([]*Store, 4)
	for i := range stores {
		stores[i] = openStore(t, natstest.JetStream(t, srv))
	}
	tokens := make([]string, len(stores))
	errs := make([]error, len(stores))
	var wg sync.WaitGroup
	for i, s := range stores {
		wg.Go(func() { tokens[i], errs[i] = s.Bootstrap(t.Context(), "") })
	}
	wg.Wait()
	var generated []string
	for i := range stores {
		if errs[i] != nil {
			t.Fatalf("bootstrap %d: %v", i, errs[i])
		}
		if tokens[i] != "" {
			generated = append(generated, tokens[i])
		}
	}
	if len(generated) != 1 {
		t.Fatalf("%d replicas generated an admin token, want exactly 1", len(generated))
	}
	keys, err := stores[0].kv.Keys(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if len(keys) != 2 { // the token's hash and the marker; the losers' tokens are deleted
		t.Fatalf("bucket keys = %v, want one token and the marker", keys)
	}
	for _, s := range stores {
		mustAuthenticate(t, s, generated[0])
	}
}

func TestBootstrapEnvToken(t *testing.T) {
	const envToken = "correct-horse-battery-staple"
	js := natstest.JetStream(t, natstest.RunServer(t))
	s := openStore(t, js)

	if got, err := s.Bootstrap(t.Context(), envToken); err != nil || got != "" {
		t.Fatalf("bootstrap = %q, %v; want \"\", nil", got, err)
	}
	if p := mustAuthenticate(t, s, envToken); p != (Principal{Name: "admin", Role: RoleAdmin}) {
		t.Fatalf("principal = %+v, want admin/admin", p)
	}
	for _, wrong := range []string{"correct-horse-battery-stapl", "correct-horse-battery-staple ", "x", ""} {
		if _, err := s.Authenticate(t.Context(), wrong); !errors.Is(err, ErrUnauthenticated) {
			t.Errorf("authenticate %q = %v, want ErrUnauthenticated", wrong, err)
		}
	}
	// With an operator's token nothing is generated or stored.
	if _, err := s.kv.Keys(t.Context()); !errors.Is(err, jetstream.ErrNoKeysFound) {
		t.Fatalf("bucket keys: %v, want none", err)
	}
	// Another replica without the environment token does not know it.
	other := openStore(t, js)
	if _, err := other.Authenticate(t.Context(), envToken); !errors.Is(err, ErrUnauthenticated) {
		t.Fatalf("replica without the env token: %v, want ErrUnauthenticated", err)
	}

	for _, bad := range []string{"short", "has space in the middle", "tab\tin-the-token-here", strings.Repeat("a", 2000)} {
		fresh := openStore(t, js)
		if _, err := fresh.Bootstrap(t.Context(), bad); !errors.Is(err, ErrInvalid) {
			t.Errorf("bootstrap with %q = %v, want ErrInvalid", bad[:min(len(bad), 20)], err)
		}
		if _, err := fresh.Authenticate(t.Context(), bad); !errors.Is(err, ErrUnauthenticated) {
			t.Errorf("rejected env token %q still authenticates: %v", bad[:min(len(bad), 20)], err)
		}
	}
}

func TestIssueAndAuthenticate(t *testing.T) {
	s := openStore(t, natstest.JetStream(t, natstest.RunServer(t)))
	tokens := map[Role]string{}
	for _, r := range []Role{RoleAdmin, RoleWriter, RoleOncall, RoleReader} {
		tok, err := s.Issue(t.Context(), "user-"+string(r), r)
		if err != nil {
			t.Fatalf("issue %s: %v", r, err)
		}
		tokens[r] = tok
	}
	for r, tok := range tokens {
		if p := mustAuthenticate(t, s, tok); p != (Principal{Name: "user-" + string(r), Role: r}) {
			t.Errorf("token for %s authenticates as %+v", r, p)
		}
	}

	tests := []struct {
		name  string
		token string
	}{
		{"empty", ""},
		{"unknown", TokenPrefix + "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"},
		{"prefix of a real one", tokens[RoleAdmin][:len(tokens[RoleAdmin])-1]},
		{"too long", strings.Repeat("x", maxTokenLen+1)},
		{"marker key", bootstrapKey},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := s.Authenticate(t.Context(), tt.token); !errors.Is(err, ErrUnauthenticated) {
				t.Fatalf("authenticate = %v, want ErrUnauthenticated", err)
			}
		})
	}
}

func TestIssueInvalid(t *testing.T) {
	s := openStore(t, natstest.JetStream(t, natstest.RunServer(t)))
	tests := []struct {
		name, who string
		role      Role
	}{
		{"unknown role", "alice", Role("root")},
		{"empty role", "alice", ""},
		{"empty name", "", RoleReader},
		{"long name", strings.Repeat("a", 257), RoleReader},
		{"control in name", "ali\nce", RoleReader},
		{"invalid utf-8", "ali\xffce", RoleReader},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tok, err := s.Issue(t.Context(), tt.who, tt.role); !errors.Is(err, ErrInvalid) || tok != "" {
				t.Fatalf("issue = %q, %v; want ErrInvalid", tok, err)
			}
		})
	}
	if _, err := s.kv.Keys(t.Context()); !errors.Is(err, jetstream.ErrNoKeysFound) {
		t.Fatalf("refused issues stored something: %v", err)
	}
}

func TestAuthenticateCachesBriefly(t *testing.T) {
	s := openStore(t, natstest.JetStream(t, natstest.RunServer(t)))
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	s.now = func() time.Time { return now }
	tok, err := s.Issue(t.Context(), "bob", RoleWriter)
	if err != nil {
		t.Fatal(err)
	}
	mustAuthenticate(t, s, tok)

	// Deleted behind the store's back: the cached lookup still answers, without the bucket.
	if err := s.kv.Delete(t.Context(), hashKey(tok)); err != nil {
		t.Fatal(err)
	}
	if p := mustAuthenticate(t, s, tok); p.Name != "bob" {
		t.Fatalf("cached principal = %+v", p)
	}
	now = now.Add(cacheTTL)
	if _, err := s.Authenticate(t.Context(), tok); !errors.Is(err, ErrUnauthenticated) {
		t.Fatalf("after the cache expired: %v, want ErrUnauthenticated", err)
	}
}

func TestOpenReplicas(t *testing.T) {
	js := natstest.JetStream(t, natstest.RunServer(t))
	for _, n := range []int{-1, 6} {
		if _, err := Open(t.Context(), js, n); !errors.Is(err, ErrInvalid) {
			t.Errorf("open with %d replicas = %v, want ErrInvalid", n, err)
		}
	}
	if _, err := Open(t.Context(), js, 0); err != nil {
		t.Fatalf("open with default replicas: %v", err)
	}
}

func TestAuthenticateTransportError(t *testing.T) {
	srv := natstest.RunServer(t)
	s := openStore(t, natstest.JetStream(t, srv))
	natstest.Shutdown(srv)
	ctx, cancel := context.WithTimeout(t.Context(), 250*time.Millisecond)
	defer cancel()
	_, err := s.Authenticate(ctx, TokenPrefix+"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA")
	if err == nil || errors.Is(err, ErrUnauthenticated) {
		t.Fatalf("authenticate with the server down = %v, want a transport error that is not ErrUnauthenticated", err)
	}
}

func TestIssueScoped(t *testing.T) {
	js := natstest.JetStream(t, natstest.RunServer(t))
	s := openStore(t, js)
	tok, err := s.IssueScoped(t.Context(), "checkout-service", RoleReader, "staging")
	if err != nil {
		t.Fatalf("issue scoped: %v", err)
	}
	want := Principal{Name: "checkout-service", Role: RoleReader, Environment: "staging"}
	if p := mustAuthenticate(t, s, tok); p != want {
		t.Fatalf("principal = %+v, want %+v", p, want)
	}
	// A replica that never cached the token reads the scope from the bucket.
	if p := mustAuthenticate(t, openStore(t, js), tok); p != want {
		t.Fatalf("replica principal = %+v, want %+v", p, want)
	}
	unscoped, err := s.Issue(t.Context(), "ops", RoleReader)
	if err != nil {
		t.Fatal(err)
	}
	if p := mustAuthenticate(t, s, unscoped); p.Environment != "" {
		t.Fatalf("an unscoped token has environment %q", p.Environment)
	}
	tests := []struct {
		name, who, env string
		role           Role
	}{
		{"empty environment", "svc", "", RoleReader},
		{"uppercase environment", "svc", "Production", RoleReader},
		{"environment with a dot", "svc", "prod.eu", RoleReader},
		{"unknown role", "svc", "staging", Role("root")},
		{"empty name", "", "staging", RoleReader},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tok, err := s.IssueScoped(t.Context(), tt.who, tt.role, tt.env); !errors.Is(err, ErrInvalid) || tok != "" {
				t.Fatalf("issue scoped = %q, %v; want ErrInvalid", tok, err)
			}
		})
	}
}

func TestExpiry(t *testing.T) {
	s := openStore(t, natstest.JetStream(t, natstest.RunServer(t)))
	now := time.Date(2026, 12, 7, 12, 0, 0, 0, time.UTC)
	s.now = func() time.Time { return now }
	_, tok, err := s.Create(t.Context(), Spec{Name: "temp", Role: RoleReader, ExpiresAt: now.Add(time.Hour)})
	if err != nil {
		t.Fatalf("create: %v", err)
	}
	if p := mustAuthenticate(t, s, tok); !p.ExpiresAt.Equal(now.Add(time.Hour)) {
		t.Fatalf("expiresAt = %v", p.ExpiresAt)
	}
	// Past the expiry, also from the cache the first lookup filled.
	now = now.Add(time.Hour)
	_, err = s.Authenticate(t.Context(), tok)
	if !errors.Is(err, ErrExpired) || !errors.Is(err, ErrUnauthenticated) || !strings.Contains(err.Error(), "expired") {
		t.Fatalf("authenticate after expiry = %v, want ErrExpired and ErrUnauthenticated", err)
	}
	now = now.Add(time.Minute) // past the cache: from the bucket
	if _, err := s.Authenticate(t.Context(), tok); !errors.Is(err, ErrExpired) {
		t.Fatalf("authenticate from the bucket after expiry = %v, want ErrExpired", err)
	}
	if _, _, err := s.Create(t.Context(), Spec{Name: "late", Role: RoleReader, ExpiresAt: now}); !errors.Is(err, ErrInvalid) {
		t.Fatalf("create with an expiry now = %v, want ErrInvalid", err)
	}
	list, err := s.List(t.Context())
	if err != nil || len(list) != 1 || list[0].ExpiresAt.IsZero() {
		t.Fatalf("list = %+v, %v; want the token with its expiry", list, err)
	}
}

func TestNameDots(t *testing.T) {
	s := openStore(t, natstest.JetStream(t, natstest.RunServer(t)))
	for _, name := range []string{".a", "a.", "a..b", "."} {
		if _, err := s.Issue(t.Context(), name, RoleReader); !errors.Is(err, ErrInvalid) {
			t.Errorf("issue %q = %v, want ErrInvalid", name, err)
		}
	}
}
