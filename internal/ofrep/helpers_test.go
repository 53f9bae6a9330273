package ofrep

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/interlock-dev/interlock/events"
	"github.com/interlock-dev/interlock/internal/auth"
	"github.com/interlock-dev/interlock/internal/await"
	"github.com/interlock-dev/interlock/internal/command"
	"github.com/interlock-dev/interlock/internal/natstest"
	"github.com/interlock-dev/interlock/projections"
	"github.com/interlock-dev/interlock/targeting"
)

// within bounds every wait of these tests: a deadline for polling, never a timing assertion.
const within = 10 * time.Second

// testServer is the real evaluation path booted in-process: embedded NATS, the event store, the
// command service, the catalog with its runner and evaluators, the token store, and the OFREP
// handler behind an httptest server.
type testServer struct {
	t        testing.TB
	js       jetstream.JetStream
	commands *command.Service
	evals    *targeting.Evaluators
	runner   *projections.Runner
	tokens   *auth.Store
	handler  *Handler
	http     *httptest.Server
	// token is an unscoped reader token.
	token string
}

// startServer boots everything; mod may change the handler's configuration.
func startServer(t testing.TB, mod ...func(*Config)) *testServer {
	t.Helper()
	ctx := t.Context()
	js := natstest.JetStream(t, natstest.RunServer(t))
	store, err := events.Open(ctx, js, events.StreamConfig{})
	if err != nil {
		t.Fatalf("open store: %v", err)
	}
	catalog := projections.NewCatalog()
	evals := targeting.NewEvaluators(catalog)
	runner := projections.NewRunner(store, catalog, nil)
	runCtx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- runner.Run(runCtx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("runner: %v", err)
		}
	})
	tokens, err := auth.Open(ctx, js, 1)
	if err != nil {
		t.Fatalf("open tokens: %v", err)
	}
	token, err := tokens.Issue(ctx, "tester", auth.RoleReader)
	if err != nil {
		t.Fatalf("issue: %v", err)
	}
	cfg := Config{Flagsets: evals, Auth: tokens, Ready: runner.Ready}
	for _, m := range mod {
		m(&cfg)
	}
	h, err := New(cfg)
	if err != nil {
		t.Fatalf("new handler: %v", err)
	}
	hs := httptest.NewServer(h)
	t.Cleanup(func() {
		h.Close() // ends event streams, which httptest's Close would wait for
		hs.Close()
	})
	if err := runner.WaitReady(ctx); err != nil {
		t.Fatalf("runner ready: %v", err)
	}
	return &testServer{t: t, js: js, commands: command.New(store, nil), evals: evals, runner: runner,
		tokens: tokens, handler: h, http: hs, token: token}
}

// create creates a flag and waits until the evaluators serve it.
func (s *testServer) create(env, key string, cfg events.FlagConfig) projections.Flag {
	s.t.Helper()
	f, err := flagOf(s.commands.Handle(s.t.Context(), command.CreateFlag{Meta: command.Meta{Actor: "test"}, Env: env, Key: key, Config: cfg}))
	if err != nil {
		s.t.Fatalf("create %s/%s: %v", env, key, err)
	}
	s.waitApplied(env, f.Sequence)
	return f
}

// kill kills a flag and waits until the evaluators serve the change.
func (s *testServer) kill(env, key string) projections.Flag {
	s.t.Helper()
	f, err := flagOf(s.commands.Handle(s.t.Context(), command.KillFlag{Meta: command.Meta{Actor: "test", Reason: "test kill"}, Env: env, Key: key}))
	if err != nil {
		s.t.Fatalf("kill %s/%s: %v", env, key, err)
	}
	s.waitApplied(env, f.Sequence)
	return f
}

func (s *testServer) waitApplied(env string, seq uint64) {
	s.t.Helper()
	await.Eventually(s.t, within, func() bool { return s.evals.Flagset(env).Sequence() >= seq },
		"evaluators of %s to reach sequence %d", env, seq)
}

// post sends a POST with the given headers (name, value pairs) and returns the status, the
// headers and the body.
func (s *testServer) post(path, body string, headers ...string) (int, http.Header, []byte) {
	s.t.Helper()
	return s.do(http.MethodPost, path, body, headers...)
}

func (s *testServer) do(method, path, body string, headers ...string) (int, http.Header, []byte) {
	s.t.Helper()
	req, err := http.NewRequestWithContext(s.t.Context(), method, s.http.URL+path, strings.NewReader(body))
	if err != nil {
		s.t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Add(headers[i], headers[i+1])
	}
	resp, err := s.http.Client().Do(req)
	if err != nil {
		s.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		s.t.Fatalf("read %s %s: %v", method, path, err)
	}
	return resp.StatusCode, resp.Header, b
}

// bearer is the Authorization header pair for a token.
func bearer(token string) []string { return []string{"Authorization", "Bearer " + token} }

// decodeJSON decodes a JSON object, failing the test if it is not one.
func decodeJSON(t *testing.T, b []byte) map[string]any {
	t.Helper()
	var m map[string]any
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	if err := dec.Decode(&m); err != nil {
		t.Fatalf("body %q is not a JSON object: %v", b, err)
	}
	return m
}

// Flag documents used across the tests.
func boolFlag(enabled bool) events.FlagConfig {
	return events.FlagConfig{
		Kind:           events.KindRelease,
		Variants:       map[string]json.RawMessage{"on": json.RawMessage(`true`), "off": json.RawMessage(`false`)},
		DefaultVariant: "on",
		OffVariant:     "off",
		Enabled:        enabled,
	}
}

func stringFlag() events.FlagConfig {
	return events.FlagConfig{
		Kind:           events.KindExperiment,
		Variants:       map[string]json.RawMessage{"blue": json.RawMessage(`"blue"`), "green": json.RawMessage(`"green"`)},
		DefaultVariant: "blue",
		OffVariant:     "blue",
		Enabled:        true,
		Rules: []events.Rule{{
			Name:       "beta users",
			Conditions: []events.Condition{{Attribute: "role", Operator: "in", Values: []any{"beta", "alpha"}}},
			Serve:      events.Serve{Variant: "green"},
		}},
	}
}

func numberFlag(a, b string) events.FlagConfig {
	return events.FlagConfig{
		Kind:           events.KindConfig,
		Variants:       map[string]json.RawMessage{"low": json.RawMessage(a), "high": json.RawMessage(b)},
		DefaultVariant: "high",
		OffVariant:     "low",
		Enabled:        true,
	}
}

func objectFlag() events.FlagConfig {
	return events.FlagConfig{
		Kind: events.KindConfig,
		Variants: map[string]json.RawMessage{
			"fast": json.RawMessage(`{"ttlSeconds": 30, "mode": "fast", "regions": ["eu", "us"]}`),
			"safe": json.RawMessage(`{"ttlSeconds": 300, "mode": "safe", "regions": []}`),
		},
		DefaultVariant: "fast",
		OffVariant:     "safe",
		Enabled:        true,
	}
}

func splitFlag() events.FlagConfig {
	c := boolFlag(true)
	c.DefaultServe = &events.Serve{Split: map[string]int{"on": 50, "off": 50}}
	return c
}

// sse reads a Server-Sent Events stream: every comment, event and field line, in order.
type sse struct {
	resp  *http.Response
	lines chan string
}

// openStream connects to the event stream and returns once its headers arrived.
func (s *testServer) openStream(query string, headers ...string) *sse {
	s.t.Helper()
	req, err := http.NewRequestWithContext(s.t.Context(), http.MethodGet, s.http.URL+PathEvents+query, nil)
	if err != nil {
		s.t.Fatal(err)
	}
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Add(headers[i], headers[i+1])
	}
	resp, err := s.http.Client().Do(req)
	if err != nil {
		s.t.Fatalf("open stream: %v", err)
	}
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		s.t.Fatalf("open stream: %d %s", resp.StatusCode, b)
	}
	st := &sse{resp: resp, lines: make(chan string, 64)}
	go func() {
		defer close(st.lines)
		sc := bufio.NewScanner(resp.Body)
		for sc.Scan() {
			st.lines <- sc.Text()
		}
	}()
	s.t.Cleanup(st.close)
	return st
}

func (st *sse) close() { st.resp.Body.Close() }

// next returns the next line that satisfies keep, failing the test if the stream ends or
// nothing comes within the deadline.
func (st *sse) next(t *testing.T, keep func(string) bool) string {
	t.Helper()
	deadline := time.After(within)
	for {
		select {
		case line, ok := <-st.lines:
			if !ok {
				t.Fatal("the event stream ended")
			}
			if keep(line) {
				return line
			}
		case <-deadline:
			t.Fatal("nothing on the event stream before the deadline")
		}
	}
}

// event returns the next event's id and data.
func (st *sse) event(t *testing.T) (id string, data map[string]any) {
	t.Helper()
	id = strings.TrimPrefix(st.next(t, func(l string) bool { return strings.HasPrefix(l, "id: ") }), "id: ")
	if ev := st.next(t, func(string) bool { return true }); ev != "event: message" {
		t.Fatalf("after the id: %q, want event: message", ev)
	}
	line := st.next(t, func(string) bool { return true })
	raw, ok := strings.CutPrefix(line, "data: ")
	if !ok {
		t.Fatalf("after the event name: %q, want a data line", line)
	}
	return id, decodeJSON(t, []byte(raw))
}

// ended waits for the stream to end, failing the test if it does not.
func (st *sse) ended(t *testing.T) {
	t.Helper()
	deadline := time.After(within)
	for {
		select {
		case _, ok := <-st.lines:
			if !ok {
				return
			}
		case <-deadline:
			t.Fatal("the event stream did not end")
		}
	}
}

// flagOf takes the flag out of what the command service's Handle returns.
func flagOf(r command.Result, err error) (projections.Flag, error) { return r.Flag, err }
