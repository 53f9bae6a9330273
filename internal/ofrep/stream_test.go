package ofrep

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/url"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/interlock-dev/interlock/internal/auth"
	"github.com/interlock-dev/interlock/internal/await"
)

func TestStreamRefetchAfterKill(t *testing.T) {
	s := startServer(t)
	s.create("production", "static-bool", boolFlag(true))
	s.create("staging", "static-bool", boolFlag(true))
	hdrs := bearer(s.token)
	_, hdr, _ := s.post(PathEvaluate, `{"context":{"targetingKey":"u1"}}`, hdrs...)
	etag := hdr.Get("ETag")

	st := s.openStream("?environment=production", hdrs...)
	if first := st.next(t, func(string) bool { return true }); !strings.HasPrefix(first, ":") {
		t.Fatalf("first line %q, want a comment", first)
	}
	// A change in another environment is not announced here; the kill after it is.
	s.kill("staging", "static-bool")
	killed := s.kill("production", "static-bool")
	id, data := st.event(t)
	if id != strconv.FormatUint(killed.Sequence, 10) {
		t.Fatalf("event id %s, want the kill's sequence %d", id, killed.Sequence)
	}
	wantTag := `"` + id + `"`
	if data["type"] != "refetchEvaluation" || data["etag"] != wantTag {
		t.Fatalf("event data %v, want refetchEvaluation with etag %s", data, wantTag)
	}

	// The re-fetch the event triggers, with its metadata as the query parameter.
	status, hdr, body := s.post(PathEvaluate+"?flagConfigEtag="+url.QueryEscape(wantTag), `{"context":{"targetingKey":"u1"}}`,
		append(hdrs, "If-None-Match", etag)...)
	if status != http.StatusOK || hdr.Get("ETag") == etag {
		t.Fatalf("re-fetch: %d, ETag %q (was %q)", status, hdr.Get("ETag"), etag)
	}
	var got struct{ Flags []struct{ Reason string } }
	if err := json.Unmarshal(body, &got); err != nil || got.Flags[0].Reason != "DISABLED" {
		t.Fatalf("re-fetch answer %s (%v): want the flag DISABLED", body, err)
	}
}

func TestRefetchWaitsForTheAnnouncedChange(t *testing.T) {
	s := startServer(t, func(c *Config) { c.RefetchWait = within })
	before := s.create("production", "static-bool", boolFlag(true))
	// The next event of the stream is the kill below: ask for its sequence before it exists.
	next := before.Sequence + 1
	type answer struct {
		status int
		body   []byte
	}
	done := make(chan answer, 1)
	go func() {
		status, _, body := s.post(PathEvaluate+"?flagConfigEtag="+strconv.FormatUint(next, 10), `{}`, bearer(s.token)...)
		done <- answer{status, body}
	}()
	if killed := s.kill("production", "static-bool"); killed.Sequence != next {
		t.Fatalf("the kill is at sequence %d, want %d", killed.Sequence, next)
	}
	a := <-done
	var got struct{ Flags []struct{ Reason string } }
	if err := json.Unmarshal(a.body, &got); a.status != 200 || err != nil || got.Flags[0].Reason != "DISABLED" {
		t.Fatalf("re-fetch: %d %s: want the kill applied", a.status, a.body)
	}

	t.Run("a sequence never reached waits only so long", func(t *testing.T) {
		s := startServer(t, func(c *Config) { c.RefetchWait = time.Millisecond })
		s.create("production", "static-bool", boolFlag(true))
		status, _, body := s.post(PathEvaluate+"?flagConfigEtag=%221000000%22", `{}`, bearer(s.token)...)
		if status != 200 {
			t.Fatalf("status %d: %s", status, body)
		}
	})
}

func TestStreamLastEventID(t *testing.T) {
	s := startServer(t)
	created := s.create("production", "static-bool", boolFlag(true))
	killed := s.kill("production", "static-bool")

	// A client that saw the creation missed the kill: it is told at once.
	st := s.openStream("", append(bearer(s.token), "Last-Event-ID", strconv.FormatUint(created.Sequence, 10))...)
	if id, _ := st.event(t); id != strconv.FormatUint(killed.Sequence, 10) {
		t.Fatalf("event id %s, want %d", id, killed.Sequence)
	}
	// A client that saw the kill is not.
	st = s.openStream("", append(bearer(s.token), "Last-Event-ID", strconv.FormatUint(killed.Sequence, 10))...)
	s.create("production", "other", boolFlag(true))
	if id, _ := st.event(t); id == strconv.FormatUint(killed.Sequence, 10) {
		t.Fatal("the kill was announced again to a client that saw it")
	}
}

func TestStreamHeartbeatAndScope(t *testing.T) {
	s := startServer(t, func(c *Config) { c.Heartbeat = 5 * time.Millisecond })
	scoped, err := s.tokens.IssueScoped(t.Context(), "staging-service", auth.RoleReader, "staging")
	if err != nil {
		t.Fatal(err)
	}
	st := s.openStream("", bearer(scoped)...)
	st.next(t, func(l string) bool { return l == ": heartbeat" })
	// The scoped token's stream is staging's, with no parameter to say so.
	s.create("production", "static-bool", boolFlag(true))
	staged := s.create("staging", "static-bool", boolFlag(true))
	if id, _ := st.event(t); id != strconv.FormatUint(staged.Sequence, 10) {
		t.Fatalf("event id %s, want staging's change at %d", id, staged.Sequence)
	}
}

// streamGoroutines counts the goroutines serving an event stream.
func streamGoroutines() int {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			return strings.Count(string(buf[:n]), "ofrep.(*Handler).stream(")
		}
		buf = make([]byte, 2*len(buf))
	}
}

func TestStreamsEndWithoutLeaks(t *testing.T) {
	s := startServer(t)
	streams := []*sse{}
	for range 3 {
		streams = append(streams, s.openStream("", bearer(s.token)...))
	}
	await.Eventually(t, within, func() bool { return s.handler.OpenStreams() == 3 }, "3 open streams")

	// A client going away ends its stream.
	streams[0].close()
	await.Eventually(t, within, func() bool { return s.handler.OpenStreams() == 2 }, "the closed stream to end")

	// Close ends the others, and refuses new ones.
	s.handler.Close()
	streams[1].ended(t)
	streams[2].ended(t)
	await.Eventually(t, within, func() bool { return s.handler.OpenStreams() == 0 && streamGoroutines() == 0 },
		"no stream goroutines (open %d, goroutines %d)", s.handler.OpenStreams(), streamGoroutines())
	status, hdr, _ := s.do(http.MethodGet, PathEvents, "", bearer(s.token)...)
	if status != http.StatusServiceUnavailable || hdr.Get("Retry-After") == "" {
		t.Fatalf("stream after Close: %d, want 503 with Retry-After", status)
	}
	// Evaluations go on.
	if status, _, body := s.post(PathEvaluate, `{}`, bearer(s.token)...); status != 200 {
		t.Fatalf("bulk after Close: %d %s", status, body)
	}
}

func TestStreamEndsWithServerShutdown(t *testing.T) {
	s := startServer(t)
	srv := &http.Server{Handler: s.handler}
	srv.RegisterOnShutdown(s.handler.Close)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()

	req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, "http://"+ln.Addr().String()+PathEvents, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+s.token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	await.Eventually(t, within, func() bool { return s.handler.OpenStreams() == 1 }, "the stream to open")

	ctx, cancel := context.WithTimeout(t.Context(), within)
	defer cancel()
	if err := srv.Shutdown(ctx); err != nil {
		t.Fatalf("shutdown with an open stream: %v", err)
	}
	if err := <-served; !errors.Is(err, http.ErrServerClosed) {
		t.Fatalf("serve: %v", err)
	}
	if _, err := io.ReadAll(resp.Body); err != nil {
		t.Fatalf("the stream did not end cleanly: %v", err)
	}
	await.Eventually(t, within, func() bool { return streamGoroutines() == 0 }, "no stream goroutines")
}
