package auth

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/interlock-dev/interlock/internal/await"
	"github.com/interlock-dev/interlock/internal/natstest"
)

// runStore runs s's watch until the test ends and waits for its first full delivery.
func runStore(t *testing.T, s *Store) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("run: %v", err)
		}
	})
	await.Eventually(t, 10*time.Second, func() bool {
		s.mu.RLock()
		defer s.mu.RUnlock()
		return s.view.synced
	}, "the token view is synced")
}

func TestViewRevocationReachesEveryReplica(t *testing.T) {
	js := natstest.JetStream(t, natstest.RunServer(t))
	a, b := openStore(t, js), openStore(t, js)
	tok, err := a.Issue(t.Context(), "svc", RoleReader)
	if err != nil {
		t.Fatal(err)
	}
	runStore(t, a)
	runStore(t, b)
	mustAuthenticate(t, a, tok)
	mustAuthenticate(t, b, tok)
	// Issued on a after both watch: a accepts it at once, b once its watch delivers it.
	fresh, err := a.Issue(t.Context(), "fresh", RoleWriter)
	if err != nil {
		t.Fatal(err)
	}
	mustAuthenticate(t, a, fresh)
	await.Eventually(t, 5*time.Second, func() bool {
		_, err := b.Authenticate(t.Context(), fresh)
		return err == nil
	}, "the other replica accepts a new token")
	// Revoked on a: refused by a at once, and by b as soon as its watch delivers the delete,
	// well before any cache lifetime.
	if _, err := a.Revoke(t.Context(), "svc"); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Authenticate(t.Context(), tok); !errors.Is(err, ErrUnauthenticated) {
		t.Fatalf("the revoking replica still accepts the token: %v", err)
	}
	start := time.Now()
	await.Eventually(t, 5*time.Second, func() bool {
		_, err := b.Authenticate(t.Context(), tok)
		return errors.Is(err, ErrUnauthenticated)
	}, "the other replica refuses the revoked token")
	t.Logf("revocation reached the other replica in %v", time.Since(start))
}

func TestViewServesThroughAnOutage(t *testing.T) {
	srv := natstest.RunServer(t)
	s := openStore(t, natstest.JetStream(t, srv))
	tok, err := s.Issue(t.Context(), "svc", RoleReader)
	if err != nil {
		t.Fatal(err)
	}
	runStore(t, s)
	natstest.Shutdown(srv)
	// The event store is gone; the token still authenticates, from the view, without waiting.
	ctx, cancel := context.WithTimeout(t.Context(), time.Second)
	defer cancel()
	if p, err := s.Authenticate(ctx, tok); err != nil || p.Name != "svc" {
		t.Fatalf("authenticate during the outage = %+v, %v", p, err)
	}
	if _, err := s.Authenticate(ctx, TokenPrefix+"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"); !errors.Is(err, ErrUnauthenticated) {
		t.Fatalf("an unknown token during the outage = %v, want ErrUnauthenticated", err)
	}
}
