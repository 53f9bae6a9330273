package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"reflect"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/interlock-dev/interlock/client"
	"github.com/interlock-dev/interlock/events"
	"github.com/interlock-dev/interlock/internal/app"
	"github.com/interlock-dev/interlock/internal/await"
	"github.com/interlock-dev/interlock/internal/config"
	"github.com/interlock-dev/interlock/projections"
)

// server boots the real `interlock serve` on :0 with an embedded NATS server under dir.
func server(t *testing.T, dir string, env map[string]string) (*app.Main, string) {
	t.Helper()
	getenv := func(k string) string { return env[k] }
	cfg, err := config.Load([]string{"--data", dir, "--http", "127.0.0.1:0", "--nats-listen", "127.0.0.1:0"}, getenv, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	m, err := app.Start(context.Background(), cfg, slog.New(slog.DiscardHandler), &out)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	await.Eventually(t, 10*time.Second, m.Ready, "projections ready")
	return m, out.String()
}

type cliResult struct {
	code           int
	stdout, stderr string
}

// cli runs the interlock binary's client side exactly as a shell would.
func runCLI(t *testing.T, env map[string]string, args ...string) cliResult {
	t.Helper()
	var stdout, stderr bytes.Buffer
	code := run(args, strings.NewReader(""), &stdout, &stderr, func(k string) string { return env[k] })
	return cliResult{code, stdout.String(), stderr.String()}
}

func TestWholeProgram(t *testing.T) {
	dir := t.TempDir()
	m, banner := server(t, dir, nil)
	token := regexp.MustCompile(`export INTERLOCK_TOKEN=(\S+)`).FindStringSubmatch(banner)
	if token == nil {
		t.Fatalf("no token in banner:\n%s", banner)
	}
	base := "http://" + m.HTTPAddr()
	env := map[string]string{"INTERLOCK_SERVER": base, "INTERLOCK_TOKEN": token[1]}
	api := apiClient(t, base, token[1])
	ctx := context.Background()

	// Create through the CLI, read through the API.
	if r := runCLI(t, env, "flags", "create", "production/checkout-v2", "--enabled", "--description", "new checkout", "--reason", "launch"); r.code != 0 {
		t.Fatalf("create: %d %s", r.code, r.stderr)
	}
	resp, err := api.Do(ctx, client.Request{Method: "GET", Path: client.FlagPath("production", "checkout-v2", "")})
	if err != nil {
		t.Fatal(err)
	}
	var flag projections.Flag
	json.Unmarshal(resp.Body, &flag)
	if resp.Status != 200 || !flag.Enabled || flag.Version != 1 || flag.UpdatedBy != "admin" || resp.Header.Get("ETag") != `"1"` {
		t.Fatalf("get: %d %+v etag %s", resp.Status, flag, resp.Header.Get("ETag"))
	}
	beforeKill := time.Now().UTC()

	// The on-call path, twice: the second is a no-op, not an error.
	for range 2 {
		if r := runCLI(t, env, "kill", "production/checkout-v2", "--reason", "checkout errors"); r.code != 0 {
			t.Fatalf("kill: %d %s", r.code, r.stderr)
		}
	}
	r := runCLI(t, env, "flags", "get", "production/checkout-v2", "-o", "json")
	if r.code != 0 {
		t.Fatalf("get: %d %s", r.code, r.stderr)
	}
	if err := json.Unmarshal([]byte(r.stdout), &flag); err != nil || flag.Enabled || flag.Version != 2 {
		t.Fatalf("after kill: %+v %v\n%s", flag, err, r.stdout)
	}

	// History, field by field, with actor and reason from the token and the request.
	r = runCLI(t, env, "flags", "history", "production/checkout-v2", "-o", "json")
	var hist struct{ Entries []projections.Entry }
	if err := json.Unmarshal([]byte(r.stdout), &hist); err != nil || len(hist.Entries) != 2 {
		t.Fatalf("history: %v %s", err, r.stdout)
	}
	kill := hist.Entries[1]
	if kill.Actor != "admin" || kill.Reason != "checkout errors" || len(kill.Changes) != 1 || kill.Changes[0].Path != "enabled" {
		t.Fatalf("kill entry: %+v", kill)
	}
	if r := runCLI(t, env, "flags", "history", "production/checkout-v2"); r.code != 0 || !strings.Contains(r.stdout, "checkout errors") {
		t.Fatalf("history table: %d %s %s", r.code, r.stdout, r.stderr)
	}

	// The flag as it was before the kill, by time and by version.
	flag, err = api.FlagAt(ctx, "production", "checkout-v2", client.Point{Time: beforeKill})
	if err != nil || !flag.Enabled || flag.Version != 1 {
		t.Fatalf("as of %s: %v %+v", beforeKill.Format(time.RFC3339Nano), err, flag)
	}
	if r := runCLI(t, env, "flags", "get", "production/checkout-v2", "--version", "1", "-o", "json"); r.code != 0 || !strings.Contains(r.stdout, `"enabled": true`) {
		t.Fatalf("get --version 1: %d %s %s", r.code, r.stdout, r.stderr)
	}

	// Exit codes scripts rely on.
	noToken := map[string]string{"INTERLOCK_SERVER": base}
	for _, tc := range []struct {
		name string
		env  map[string]string
		args []string
		code int
	}{
		{"not found", env, []string{"flags", "get", "production/nope"}, 3},
		{"stale version", env, []string{"flags", "set", "production/checkout-v2", "--description", "x", "--if-version", "1"}, 4},
		{"no token", noToken, []string{"kill", "production/checkout-v2", "--reason", "x"}, 5},
		{"bad key", env, []string{"flags", "create", "production/bad key"}, 2},
		{"rejected by server", env, []string{"flags", "create", "production/mixed", "--variant", "on=true", "--variant", `off="no"`, "--default", "on", "--off", "off"}, 6},
		{"kill without reason", env, []string{"kill", "production/checkout-v2"}, 2},
		{"unreachable", map[string]string{"INTERLOCK_SERVER": "http://127.0.0.1:1"}, []string{"flags", "list", "production"}, 7},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if r := runCLI(t, tc.env, tc.args...); r.code != tc.code {
				t.Fatalf("exit %d, want %d\nstdout: %s\nstderr: %s", r.code, tc.code, r.stdout, r.stderr)
			}
		})
	}

	// A reader token, issued by the admin: it reads but cannot kill, and the admin can revoke it.
	r = runCLI(t, env, "tokens", "create", "checkout-svc", "--role", "reader", "--environment", "production")
	reader := regexp.MustCompile(`export INTERLOCK_TOKEN=(\S+)`).FindStringSubmatch(r.stdout)
	if r.code != 0 || reader == nil {
		t.Fatalf("tokens create: %d %s %s", r.code, r.stdout, r.stderr)
	}
	readerEnv := map[string]string{"INTERLOCK_SERVER": base, "INTERLOCK_TOKEN": reader[1]}
	if r := runCLI(t, readerEnv, "kill", "production/checkout-v2", "--reason", "x"); r.code != 5 {
		t.Fatalf("kill with a reader token: exit %d, want 5 (%s)", r.code, r.stderr)
	}
	if r := runCLI(t, env, "tokens", "revoke", "checkout-svc"); r.code != 0 {
		t.Fatalf("tokens revoke: %d %s", r.code, r.stderr)
	}

	// Audit across flags and tokens: three flag events, the token's issue and revocation.
	if r := runCLI(t, env, "flags", "create", "staging/DeptA.TeamB.66623"); r.code != 0 {
		t.Fatalf("create: %d %s", r.code, r.stderr)
	}
	r = runCLI(t, env, "audit", "--actor", "admin", "-o", "json")
	var audit struct{ Events []projections.Entry }
	if err := json.Unmarshal([]byte(r.stdout), &audit); err != nil || len(audit.Events) != 5 {
		t.Fatalf("audit: %v %s", err, r.stdout)
	}
	var tokenEvents []string
	for _, ev := range audit.Events {
		if ev.Entity == events.EntityToken {
			tokenEvents = append(tokenEvents, ev.Type+" "+ev.Key)
		}
	}
	if want := []string{events.TypeTokenIssued + " checkout-svc", events.TypeTokenRevoked + " checkout-svc"}; !reflect.DeepEqual(tokenEvents, want) {
		t.Errorf("token events in the audit: %v, want %v", tokenEvents, want)
	}

	// A restart keeps everything: the replayed projections equal the live ones.
	live := listAll(t, api)
	m.Close()
	m2, banner2 := server(t, dir, nil)
	if strings.Contains(banner2, "INTERLOCK_TOKEN=") {
		t.Fatalf("token printed again after restart:\n%s", banner2)
	}
	base2 := "http://" + m2.HTTPAddr()
	if replayed := listAll(t, apiClient(t, base2, token[1])); !reflect.DeepEqual(live, replayed) {
		t.Fatalf("after restart:\n got %+v\nwant %+v", replayed, live)
	}
	env["INTERLOCK_SERVER"] = base2
	if r := runCLI(t, env, "flags", "enable", "production/checkout-v2", "--reason", "fixed"); r.code != 0 {
		t.Fatalf("the generated token survives a restart: %d %s", r.code, r.stderr)
	}
}

// apiClient is a client of the admin API at base with token: every read needs one.
func apiClient(t *testing.T, base, token string) *client.Client {
	t.Helper()
	c, err := client.New(base, client.WithToken(token))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func listAll(t *testing.T, c *client.Client) map[string][]projections.Flag {
	t.Helper()
	out := map[string][]projections.Flag{}
	for _, env := range []string{"production", "staging"} {
		flags, err := c.Flags(context.Background(), env, client.ListOptions{Archived: true})
		if err != nil {
			t.Fatal(err)
		}
		out[env] = flags
	}
	return out
}

func TestServeEnvToken(t *testing.T) {
	m, banner := server(t, t.TempDir(), map[string]string{"INTERLOCK_ADMIN_TOKEN": "s3cret-token-for-tests"})
	if strings.Contains(banner, "INTERLOCK_TOKEN=") {
		t.Fatalf("generated a token although INTERLOCK_ADMIN_TOKEN was set:\n%s", banner)
	}
	env := map[string]string{"INTERLOCK_SERVER": "http://" + m.HTTPAddr(), "INTERLOCK_TOKEN": "s3cret-token-for-tests"}
	if r := runCLI(t, env, "flags", "create", "production/a"); r.code != 0 {
		t.Fatalf("create with env token: %d %s", r.code, r.stderr)
	}
	env["INTERLOCK_TOKEN"] = "wrong"
	if r := runCLI(t, env, "flags", "create", "production/b"); r.code != 5 {
		t.Fatalf("create with wrong token: exit %d, want 5", r.code)
	}
}

func TestServeUsage(t *testing.T) {
	for _, flag := range []string{"--replicas", "-replicas"} {
		r := runCLI(t, nil, "serve", flag, "3")
		if r.code != 2 || !strings.Contains(r.stderr, "--nats-url") {
			t.Fatalf("%s: exit %d stderr %s", flag, r.code, r.stderr)
		}
	}
	for _, args := range [][]string{{"serve", "--token", "x"}, {"serve", "--bogus"}, {"serve", "extra"}} {
		if r := runCLI(t, nil, args...); r.code != 2 {
			t.Fatalf("%v: exit %d stderr %s", args, r.code, r.stderr)
		}
	}
}

// TestCrossOriginOFREP is what the OpenFeature web provider does from a page on an allowed
// origin: a preflight, then the evaluation, against the real server.
func TestCrossOriginOFREP(t *testing.T) {
	m, banner := server(t, t.TempDir(), map[string]string{"INTERLOCK_CORS_ORIGINS": "https://shop.example.com"})
	token := regexp.MustCompile(`export INTERLOCK_TOKEN=(\S+)`).FindStringSubmatch(banner)[1]
	base := "http://" + m.HTTPAddr()
	env := map[string]string{"INTERLOCK_SERVER": base, "INTERLOCK_TOKEN": token}
	if r := runCLI(t, env, "flags", "create", "production/web-banner", "--enabled", "--reason", "test"); r.code != 0 {
		t.Fatalf("create: %d %s", r.code, r.stderr)
	}
	send := func(method, origin string, header map[string]string, body string) *http.Response {
		req, err := http.NewRequest(method, base+"/ofrep/v1/evaluate/flags/web-banner", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Origin", origin)
		for k, v := range header {
			req.Header.Set(k, v)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp
	}
	pre := map[string]string{"Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "authorization,content-type"}
	if resp := send("OPTIONS", "https://shop.example.com", pre, ""); resp.StatusCode >= 300 ||
		resp.Header.Get("Access-Control-Allow-Origin") != "https://shop.example.com" {
		t.Fatalf("preflight from the allowed origin: %d %v", resp.StatusCode, resp.Header)
	}
	if resp := send("OPTIONS", "https://evil.example.net", pre, ""); resp.Header.Get("Access-Control-Allow-Origin") != "" {
		t.Fatalf("preflight from another origin allowed: %v", resp.Header)
	}
	resp := send("POST", "https://shop.example.com", map[string]string{"Authorization": "Bearer " + token, "Content-Type": "application/json"}, `{"context":{"targetingKey":"u1"}}`)
	if resp.StatusCode != 200 || resp.Header.Get("Access-Control-Allow-Origin") != "https://shop.example.com" ||
		resp.Header.Get("X-Content-Type-Options") != "nosniff" {
		t.Fatalf("evaluation from the allowed origin: %d %v", resp.StatusCode, resp.Header)
	}
}

func TestRefusesASecondServerOnTheSameData(t *testing.T) {
	dir := t.TempDir()
	server(t, dir, nil)
	cfg, err := config.Load([]string{"--data", dir, "--http", "127.0.0.1:0", "--nats-listen", "127.0.0.1:0"}, func(string) string { return "" }, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	m, err := app.Start(context.Background(), cfg, slog.New(slog.DiscardHandler), io.Discard)
	if err == nil {
		m.Close()
		t.Fatal("a second server started on the same data directory")
	}
	if want := fmt.Sprintf("in use by process %d", os.Getpid()); !strings.Contains(err.Error(), want) {
		t.Fatalf("error %q does not say %q", err, want)
	}
}

func TestBusyNATSPortFailsAtOnce(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	cfg, err := config.Load([]string{"--data", t.TempDir(), "--http", "127.0.0.1:0", "--nats-listen", ln.Addr().String()}, func(string) string { return "" }, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	m, err := app.Start(context.Background(), cfg, slog.New(slog.DiscardHandler), io.Discard)
	if err == nil {
		m.Close()
		t.Fatal("started with the NATS port taken")
	}
	if !strings.Contains(err.Error(), ln.Addr().String()) || !strings.Contains(err.Error(), "--nats-listen") {
		t.Fatalf("error %q does not name the address and the flag", err)
	}
}

func TestHelpNamesServe(t *testing.T) {
	if r := runCLI(t, nil, "help"); r.code != 0 || !strings.Contains(r.stdout, "serve ") {
		t.Fatalf("interlock help: %d, does not list serve:\n%s", r.code, r.stdout)
	}
	if r := runCLI(t, nil, "help", "serve"); r.code != 0 || !strings.Contains(r.stdout, "Usage: interlock serve") || !strings.Contains(r.stdout, "-public-read") {
		t.Fatalf("interlock help serve: %d\n%s\n%s", r.code, r.stdout, r.stderr)
	}
}
