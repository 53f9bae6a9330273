package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/interlock-dev/interlock/events"
	"github.com/interlock-dev/interlock/projections"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata")

// testNow is the clock of every test run, so that relative times are exact.
var testNow = time.Date(2026, 3, 4, 12, 0, 0, 0, time.UTC)

const testToken = "t0ken-abc"

// recorded is one request as the fake server received it.
type recorded struct {
	Method string
	Path   string
	Query  string
	Header http.Header
	Body   []byte
}

// reply is a canned answer.
type reply struct {
	status int
	header map[string]string
	body   string
	// hang makes the server never answer: it waits until the client goes away.
	hang bool
}

// fakeServer stands in for the Interlock server at the process boundary: it records every request
// and answers with respond.
type fakeServer struct {
	*httptest.Server
	// respond answers the n-th request (from 0).
	respond func(n int, req recorded) reply

	mu   sync.Mutex
	reqs []recorded
}

func newFakeServer(t *testing.T, respond func(n int, req recorded) reply) *fakeServer {
	t.Helper()
	f := &fakeServer{respond: respond}
	f.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(r.Body)
		if err != nil {
			t.Errorf("fake server: read body: %v", err)
		}
		rec := recorded{Method: r.Method, Path: r.URL.Path, Query: r.URL.RawQuery, Header: r.Header.Clone(), Body: body}
		f.mu.Lock()
		n := len(f.reqs)
		f.reqs = append(f.reqs, rec)
		f.mu.Unlock()
		rep := f.respond(n, rec)
		if rep.hang {
			<-r.Context().Done()
			return
		}
		for k, v := range rep.header {
			w.Header().Set(k, v)
		}
		if rep.header["Content-Type"] == "" {
			w.Header().Set("Content-Type", "application/json")
		}
		w.WriteHeader(rep.status)
		io.WriteString(w, rep.body)
	}))
	t.Cleanup(f.Close)
	return f
}

// replies answers requests in turn with rs; a request beyond them fails the test.
func replies(t *testing.T, rs ...reply) func(int, recorded) reply {
	return func(n int, req recorded) reply {
		if n >= len(rs) {
			t.Errorf("unexpected request %d: %s %s", n, req.Method, req.Path)
			return reply{status: 500, body: `{"error":{"code":"internal","message":"unexpected request"}}`}
		}
		return rs[n]
	}
}

func (f *fakeServer) requests() []recorded {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]recorded(nil), f.reqs...)
}

// result is what one run of the CLI produced.
type result struct {
	code           int
	stdout, stderr string
}

// runCLI runs the CLI against srv (through INTERLOCK_SERVER) with the test token and clock.
func runCLI(t *testing.T, srv *fakeServer, stdin string, args ...string) result {
	t.Helper()
	env := map[string]string{"INTERLOCK_TOKEN": testToken}
	if srv != nil {
		env["INTERLOCK_SERVER"] = srv.URL
	}
	return runWithEnv(t, env, stdin, args...)
}

func runWithEnv(t *testing.T, env map[string]string, stdin string, args ...string) result {
	t.Helper()
	var stdout, stderr bytes.Buffer
	r := &runner{
		stdin: strings.NewReader(stdin), stdout: &stdout, stderr: &stderr,
		getenv: func(k string) string { return env[k] },
		now:    func() time.Time { return testNow },
	}
	code := r.run(context.Background(), args)
	return result{code: code, stdout: stdout.String(), stderr: stderr.String()}
}

// golden compares got with testdata/name, or rewrites the file with -update.
func golden(t *testing.T, name, got string) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.MkdirAll("testdata", 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("read golden file (run with -update to create it): %v", err)
	}
	if got != string(want) {
		t.Errorf("output differs from %s (run with -update if the change is intended)\ngot:\n%s\nwant:\n%s", path, got, want)
	}
}

// sampleFlag is a flag with every part the renderers show.
func sampleFlag() projections.Flag {
	return projections.Flag{
		Key:         "checkout-v2",
		Environment: "production",
		FlagConfig: events.FlagConfig{
			Description:    "New checkout flow",
			Owner:          "team-payments",
			Tags:           []string{"checkout", "web"},
			Kind:           events.KindRelease,
			Variants:       map[string]json.RawMessage{"on": json.RawMessage("true"), "off": json.RawMessage("false")},
			DefaultVariant: "on",
			OffVariant:     "off",
			Enabled:        true,
			Rules: []events.Rule{
				{Name: "beta", Conditions: []events.Condition{{Attribute: "plan", Operator: "in", Values: []any{"pro", "team"}}}, Serve: events.Serve{Variant: "on"}},
				{Conditions: []events.Condition{{Attribute: "country", Operator: "eq", Values: []any{"NL"}}, {Attribute: "beta", Operator: "exists"}},
					Serve: events.Serve{Split: map[string]int{"on": 25, "off": 75}, BucketBy: "accountId"}},
			},
		},
		Version:   7,
		CreatedAt: time.Date(2026, 1, 2, 15, 4, 5, 0, time.UTC),
		UpdatedAt: time.Date(2026, 3, 1, 9, 30, 0, 0, time.UTC),
		UpdatedBy: "alice",
	}
}

func mustJSON(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// flagReply answers with f and its version as ETag.
func flagReply(t *testing.T, status int, f projections.Flag) reply {
	return reply{status: status, header: map[string]string{"ETag": `"` + itoa(f.Version) + `"`}, body: mustJSON(t, f)}
}

func itoa(v uint64) string {
	b, _ := json.Marshal(v)
	return string(b)
}

func errReply(status int, code, message string) reply {
	b, _ := json.Marshal(map[string]any{"error": map[string]string{"code": code, "message": message}})
	return reply{status: status, body: string(b)}
}

// wantReq is what a request must be; empty fields are not checked except Body, which is checked
// as JSON when not empty and must be empty otherwise.
type wantReq struct {
	method, path, query string
	header              map[string]string
	noHeader            []string
	body                string
}

func checkRequests(t *testing.T, got []recorded, want []wantReq) {
	t.Helper()
	if len(got) != len(want) {
		for _, g := range got {
			t.Logf("got %s %s?%s %s", g.Method, g.Path, g.Query, g.Body)
		}
		t.Fatalf("got %d requests, want %d", len(got), len(want))
	}
	for i, w := range want {
		g := got[i]
		if g.Method != w.method || g.Path != w.path || g.Query != w.query {
			t.Errorf("request %d: got %s %s?%s, want %s %s?%s", i, g.Method, g.Path, g.Query, w.method, w.path, w.query)
		}
		if a := g.Header.Get("Authorization"); a != "Bearer "+testToken {
			t.Errorf("request %d: Authorization %q, want the bearer token", i, a)
		}
		for k, v := range w.header {
			if gv := g.Header.Get(k); gv != v {
				t.Errorf("request %d: header %s = %q, want %q", i, k, gv, v)
			}
		}
		for _, k := range w.noHeader {
			if _, ok := g.Header[http.CanonicalHeaderKey(k)]; ok {
				t.Errorf("request %d: header %s = %q, want none", i, k, g.Header.Get(k))
			}
		}
		if w.body == "" {
			if len(g.Body) != 0 {
				t.Errorf("request %d: body %s, want none", i, g.Body)
			}
			continue
		}
		if !jsonEqual(t, g.Body, []byte(w.body)) {
			t.Errorf("request %d: body\n%s\nwant\n%s", i, g.Body, w.body)
		}
	}
}

func jsonEqual(t *testing.T, a, b []byte) bool {
	t.Helper()
	var x, y any
	if err := json.Unmarshal(a, &x); err != nil {
		t.Errorf("not JSON: %s: %v", a, err)
		return false
	}
	if err := json.Unmarshal(b, &y); err != nil {
		t.Fatalf("bad expectation %s: %v", b, err)
	}
	return mustJSON(t, x) == mustJSON(t, y)
}

// onlyJSON checks that out is one JSON value, pretty-printed, and nothing else.
func onlyJSON(t *testing.T, out string) {
	t.Helper()
	dec := json.NewDecoder(strings.NewReader(out))
	var v any
	if err := dec.Decode(&v); err != nil {
		t.Fatalf("stdout is not JSON: %v\n%s", err, out)
	}
	if _, err := dec.Token(); err != io.EOF {
		t.Fatalf("stdout has more than one JSON value:\n%s", out)
	}
	if !strings.HasSuffix(out, "}\n") && !strings.HasSuffix(out, "]\n") {
		t.Errorf("stdout does not end with the value and a newline: %q", out)
	}
	if strings.Count(out, "\n") < 2 {
		t.Errorf("stdout is not pretty-printed: %q", out)
	}
}
