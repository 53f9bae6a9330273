package client_test

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/interlock-dev/interlock/apiv1"
	"github.com/interlock-dev/interlock/client"
	"github.com/interlock-dev/interlock/internal/await"
)

// A write goes with an Idempotency-Key and is sent again under the same key while the event
// store cannot take it or does not confirm it. These tests script the server's answers: the
// server is the process boundary, and the real one cannot be made to answer 503 on cue.

const (
	storeDown = `{"error":{"code":"store_unavailable","message":"event store unavailable (nats: no servers available for connection); nothing was written, try again"}}`
	unknown   = `{"error":{"code":"outcome_unknown","message":"the event store did not confirm event 7d0c (context deadline exceeded): it may or may not be stored","eventId":"7d0c"}}`
	killed    = `{"key":"checkout","environment":"prod","kind":"release","variants":{"off":false,"on":true},"defaultVariant":"on","offVariant":"off","enabled":false,"archived":false,"version":3,"createdAt":"2026-01-02T15:04:05Z","updatedAt":"2026-01-02T15:04:05Z","updatedBy":"oncall"}`
)

type reply struct {
	status int
	body   string
}

// scripted is a server that answers the i-th request with replies[i] (the last one ever after)
// and keeps the requests' headers.
type scripted struct {
	mu      sync.Mutex
	replies []reply
	headers []http.Header
}

func serve(t *testing.T, replies ...reply) (*scripted, *client.Client) {
	t.Helper()
	s := &scripted{replies: replies}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		i := min(len(s.headers), len(s.replies)-1)
		s.headers = append(s.headers, r.Header.Clone())
		s.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(s.replies[i].status)
		_, _ = w.Write([]byte(s.replies[i].body))
	}))
	t.Cleanup(srv.Close)
	c, err := client.New(srv.URL, client.WithToken("tok"), client.WithRetry(client.DefaultWriteAttempts, time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	return s, c
}

func (s *scripted) requests() []http.Header {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.headers
}

func TestWriteRetriesUnderOneKey(t *testing.T) {
	s, c := serve(t, reply{503, storeDown}, reply{503, unknown}, reply{200, killed})
	f, err := c.KillFlag(context.Background(), "prod", "checkout", "drill")
	if err != nil || f.Enabled || f.Version != 3 {
		t.Fatalf("kill = %+v, %v", f, err)
	}
	reqs := s.requests()
	key := reqs[0].Get("Idempotency-Key")
	if len(reqs) != 3 || key == "" {
		t.Fatalf("%d requests, key %q", len(reqs), key)
	}
	for i, h := range reqs {
		if h.Get("Idempotency-Key") != key || h.Get("Authorization") != "Bearer tok" {
			t.Fatalf("request %d: key %q, authorization %q", i, h.Get("Idempotency-Key"), h.Get("Authorization"))
		}
	}
}

func TestWriteOfUnknownOutcome(t *testing.T) {
	s, c := serve(t, reply{503, unknown})
	_, err := c.WithIdempotencyKey("drill-1").KillFlag(context.Background(), "prod", "checkout", "drill")
	var ae *apiv1.Error
	if !errors.As(err, &ae) || !errors.Is(err, apiv1.ErrOutcomeUnknown) || ae.IdempotencyKey != "drill-1" || ae.EventID != "7d0c" || ae.Status != 503 {
		t.Fatalf("error %#v", err)
	}
	reqs := s.requests()
	if len(reqs) != client.DefaultWriteAttempts {
		t.Fatalf("%d requests, want %d", len(reqs), client.DefaultWriteAttempts)
	}
	for _, h := range reqs {
		if h.Get("Idempotency-Key") != "drill-1" {
			t.Fatalf("key %q", h.Get("Idempotency-Key"))
		}
	}

	s, c = serve(t, reply{503, storeDown})
	_, err = c.KillFlag(context.Background(), "prod", "checkout", "drill")
	if !errors.Is(err, apiv1.ErrStoreUnavailable) || errors.Is(err, apiv1.ErrOutcomeUnknown) || len(s.requests()) != client.DefaultWriteAttempts {
		t.Fatalf("error %v after %d requests", err, len(s.requests()))
	}
}

// Only a write the store could not take or confirm is sent again: not a read, not any other 503.
func TestNoRetry(t *testing.T) {
	s, c := serve(t, reply{503, storeDown})
	if _, err := c.Flag(context.Background(), "prod", "checkout"); !errors.Is(err, apiv1.ErrStoreUnavailable) || len(s.requests()) != 1 {
		t.Fatalf("read: %v after %d requests", err, len(s.requests()))
	}
	if k := s.requests()[0].Get("Idempotency-Key"); k != "" {
		t.Errorf("a read sent Idempotency-Key %q", k)
	}
	s, c = serve(t, reply{503, `{"error":{"code":"unavailable","message":"catching up"}}`})
	if _, err := c.KillFlag(context.Background(), "prod", "checkout", "x"); !errors.Is(err, apiv1.ErrUnavailable) || len(s.requests()) != 1 {
		t.Fatalf("write: %v after %d requests", err, len(s.requests()))
	}
}

// The context ends the pauses between attempts.
func TestRetryStopsWithTheContext(t *testing.T) {
	s, c := serve(t, reply{503, unknown})
	c2, err := client.New(c.BaseURL().String(), client.WithRetry(10, time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		_, err := c2.KillFlag(ctx, "prod", "checkout", "x")
		done <- err
	}()
	await.Eventually(t, 10*time.Second, func() bool { return len(s.requests()) > 0 }, "the first attempt")
	cancel()
	if err := <-done; !errors.Is(err, apiv1.ErrOutcomeUnknown) || len(s.requests()) != 1 {
		t.Fatalf("error %v after %d requests", err, len(s.requests()))
	}
}

func TestErrors(t *testing.T) {
	// An answer that is not the API's error document keeps its status.
	_, c := serve(t, reply{502, `<html>bad gateway</html>`})
	_, err := c.Environments(context.Background())
	var ae *apiv1.Error
	if !errors.As(err, &ae) || ae.Status != 502 || ae.Code != "" || err.Error() != "server answered 502 Bad Gateway" {
		t.Fatalf("error %#v: %v", err, err)
	}

	srv := httptest.NewServer(http.NotFoundHandler())
	srv.Close()
	c, err = client.New(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Environments(context.Background()); !errors.Is(err, client.ErrUnreachable) {
		t.Fatalf("a closed server: %v", err)
	}

	for _, bad := range []string{"", "localhost:8080", "ftp://x", "http://"} {
		if _, err := client.New(bad); err == nil {
			t.Errorf("New(%q) took it", bad)
		}
	}
	if _, err := client.New("http://x", client.WithRetry(0, 0), client.WithTimeout(-1)); err == nil {
		t.Error("bad options taken")
	}
}
