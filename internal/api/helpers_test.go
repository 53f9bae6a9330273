package api_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/interlock-dev/interlock/events"
	"github.com/interlock-dev/interlock/internal/api"
	"github.com/interlock-dev/interlock/internal/auth"
	"github.com/interlock-dev/interlock/internal/command"
	"github.com/interlock-dev/interlock/internal/natstest"
	"github.com/interlock-dev/interlock/projections"
)

// system is the real thing, booted in-process: an embedded JetStream server, the event store,
// the command service, the catalog and its runner, the token store, and the API over HTTP.
type system struct {
	url     string
	client  *http.Client
	store   *events.Store
	catalog *projections.Catalog
	tokens  *auth.Store
	api     *api.API
	runner  *projections.Runner
	// Tokens by role, named after their role ("admin" is the bootstrap token).
	admin, writer, oncall, reader string
}

// boot starts a system; tune changes the API's configuration before it is built.
func boot(t testing.TB, tune ...func(*api.Config)) *system {
	t.Helper()
	return bootStore(t, nil, tune...)
}

// bootStore starts a system whose event store is opened with opts.
func bootStore(t testing.TB, opts []events.Option, tune ...func(*api.Config)) *system {
	t.Helper()
	ctx := context.Background()
	js := natstest.JetStream(t, natstest.RunServer(t))
	store, err := events.Open(ctx, js, events.StreamConfig{}, opts...)
	if err != nil {
		t.Fatalf("open store: %v", err)
	}
	logger := slog.New(slog.DiscardHandler)
	catalog := projections.NewCatalog()
	runner := projections.NewRunner(store, catalog, logger)
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- runner.Run(runCtx) }()
	t.Cleanup(func() {
		stop()
		if err := <-done; err != nil {
			t.Errorf("runner: %v", err)
		}
	})
	waitCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := runner.WaitReady(waitCtx); err != nil {
		t.Fatalf("runner not ready: %v", err)
	}

	tokens, err := auth.Open(ctx, js, 1)
	if err != nil {
		t.Fatalf("open tokens: %v", err)
	}
	s := &system{store: store, catalog: catalog, tokens: tokens, runner: runner}
	if s.admin, err = tokens.Bootstrap(ctx, ""); err != nil || s.admin == "" {
		t.Fatalf("bootstrap = %q, %v", s.admin, err)
	}
	for role, tok := range map[auth.Role]*string{auth.RoleWriter: &s.writer, auth.RoleOncall: &s.oncall, auth.RoleReader: &s.reader} {
		if *tok, err = tokens.Issue(ctx, string(role), role); err != nil {
			t.Fatalf("issue %s: %v", role, err)
		}
	}

	commands := command.New(store, logger)
	cfg := api.Config{
		Commands:    commands,
		TokenEvents: commands,
		Catalog:     catalog,
		Reader:      store,
		Auth:        tokens,
		Ready:       runner.Ready,
		Logger:      logger,
	}
	for _, f := range tune {
		f(&cfg)
	}
	a, err := api.New(cfg)
	if err != nil {
		t.Fatalf("api: %v", err)
	}
	s.api = a
	srv := httptest.NewServer(a.Handler())
	t.Cleanup(srv.Close)
	s.url, s.client = srv.URL, srv.Client()
	return s
}

// response is a response read whole.
type response struct {
	status int
	header http.Header
	body   []byte
}

// req is one request: Content-Type defaults to application/json when there is a body. A GET
// without a token is sent with the reader's, since every read needs one, unless anonymous.
type req struct {
	method, path, token, body string
	header                    map[string]string
	anonymous                 bool
}

func (s *system) do(t testing.TB, r req) *response {
	t.Helper()
	var body io.Reader
	if r.body != "" {
		body = strings.NewReader(r.body)
	}
	hr, err := http.NewRequest(r.method, s.url+r.path, body)
	if err != nil {
		t.Fatal(err)
	}
	if r.body != "" {
		hr.Header.Set("Content-Type", "application/json")
	}
	if r.token == "" && !r.anonymous && (r.method == "GET" || r.method == "HEAD") {
		r.token = s.reader
	}
	if r.token != "" {
		hr.Header.Set("Authorization", "Bearer "+r.token)
	}
	for k, v := range r.header {
		if v == "" {
			hr.Header.Del(k)
		} else {
			hr.Header.Set(k, v)
		}
	}
	resp, err := s.client.Do(hr)
	if err != nil {
		t.Fatalf("%s %s: %v", r.method, r.path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: read body: %v", r.method, r.path, err)
	}
	return &response{status: resp.StatusCode, header: resp.Header, body: b}
}

func (s *system) get(t testing.TB, path string) *response {
	t.Helper()
	return s.do(t, req{method: "GET", path: path})
}

// must checks the status and decodes the body into v (when not nil).
func (r *response) must(t testing.TB, status int, v any) *response {
	t.Helper()
	if r.status != status {
		t.Fatalf("status %d, want %d; body %s", r.status, status, r.body)
	}
	if v != nil {
		if err := json.Unmarshal(r.body, v); err != nil {
			t.Fatalf("decode %s: %v", r.body, err)
		}
	}
	return r
}

// apiError checks the status and that the body is the API's error document, and returns it.
func (r *response) apiError(t testing.TB, status int, code string) string {
	t.Helper()
	if r.status != status {
		t.Fatalf("status %d, want %d; body %s", r.status, status, r.body)
	}
	msg, gotCode, err := decodeError(r)
	if err != nil {
		t.Fatal(err)
	}
	if gotCode != code {
		t.Fatalf("error code %q, want %q (message %q)", gotCode, code, msg)
	}
	return msg
}

// decodeError reads the error document of a response, and checks that it is one.
func decodeError(r *response) (msg, code string, err error) {
	if ct := r.header.Get("Content-Type"); ct != "application/json" {
		return "", "", errors.New("error with Content-Type " + ct + ": " + string(r.body))
	}
	var doc struct {
		Error *struct {
			Code    string `json:"code"`
			Message string `json:"message"`
		} `json:"error"`
	}
	dec := json.NewDecoder(strings.NewReader(string(r.body)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&doc); err != nil || doc.Error == nil || doc.Error.Code == "" || doc.Error.Message == "" {
		return "", "", errors.New("not an error document: " + string(r.body))
	}
	return doc.Error.Message, doc.Error.Code, nil
}

// lastSequence is the number of events in the stream.
func (s *system) lastSequence(t testing.TB) uint64 {
	t.Helper()
	n, err := s.store.LastSequence(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// unchanged fails the test if the stream grew while f ran.
func (s *system) unchanged(t testing.TB, f func()) {
	t.Helper()
	before := s.lastSequence(t)
	f()
	if after := s.lastSequence(t); after != before {
		t.Fatalf("a refused request wrote %d events", after-before)
	}
}

// flagJSON is a flag as the API returns it, decoded loosely.
type flagJSON struct {
	Key            string                     `json:"key"`
	Environment    string                     `json:"environment"`
	Description    string                     `json:"description"`
	Owner          string                     `json:"owner"`
	Tags           []string                   `json:"tags"`
	Kind           string                     `json:"kind"`
	Variants       map[string]json.RawMessage `json:"variants"`
	DefaultVariant string                     `json:"defaultVariant"`
	OffVariant     string                     `json:"offVariant"`
	Enabled        bool                       `json:"enabled"`
	Archived       bool                       `json:"archived"`
	Rules          []json.RawMessage          `json:"rules"`
	Version        uint64                     `json:"version"`
	CreatedAt      time.Time                  `json:"createdAt"`
	UpdatedAt      time.Time                  `json:"updatedAt"`
	UpdatedBy      string                     `json:"updatedBy"`
}

// boolFlag is the body of a create for a boolean flag.
func boolFlag(key string) string {
	return `{"key":"` + key + `","kind":"release","description":"first","variants":{"on":true,"off":false},` +
		`"defaultVariant":"on","offVariant":"off","enabled":true}`
}

// create creates a boolean flag in env as admin.
func (s *system) create(t testing.TB, env, key string) flagJSON {
	t.Helper()
	var f flagJSON
	s.do(t, req{method: "POST", path: "/api/v1/environments/" + env + "/flags", token: s.admin, body: boolFlag(key)}).
		must(t, http.StatusCreated, &f)
	return f
}

func flagPath(env, key string) string { return "/api/v1/environments/" + env + "/flags/" + key }
