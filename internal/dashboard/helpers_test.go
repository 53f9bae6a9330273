package dashboard_test

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/interlock-dev/interlock/internal/app"
	"github.com/interlock-dev/interlock/internal/await"
	"github.com/interlock-dev/interlock/internal/config"
	"github.com/interlock-dev/interlock/internal/testdeps"
)

// update writes the screenshots under docs/screenshots (also INTERLOCK_SCREENSHOTS=1).
var update = flag.Bool("update", false, "write the dashboard screenshots under docs/screenshots")

const adminToken = "dashboard-test-admin-token"

// server boots the whole of `interlock serve` on :0 with an embedded NATS server, as a user
// would start it, and returns its base URL.
func server(t testing.TB, extra ...string) (*app.Main, string) {
	t.Helper()
	args := append([]string{"--data", t.TempDir(), "--http", "127.0.0.1:0", "--nats-listen", "127.0.0.1:0"}, extra...)
	env := map[string]string{"INTERLOCK_ADMIN_TOKEN": adminToken}
	cfg, err := config.Load(args, func(k string) string { return env[k] }, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	m, err := app.Start(context.Background(), cfg, slog.New(slog.DiscardHandler), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	await.Eventually(t, 20*time.Second, m.Ready, "projections ready")
	return m, "http://" + m.HTTPAddr()
}

// call makes an API request with a token and decodes a JSON answer into out (when not nil).
func call(t testing.TB, base, token, method, path string, body any, out any) int {
	t.Helper()
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			t.Fatal(err)
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, base+path, rd)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+token)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if out != nil && resp.StatusCode < 300 {
		if err := json.Unmarshal(b, out); err != nil {
			t.Fatalf("%s %s: %v in %s", method, path, err, b)
		}
	}
	if resp.StatusCode >= 300 && out != nil {
		t.Fatalf("%s %s: %d %s", method, path, resp.StatusCode, b)
	}
	return resp.StatusCode
}

// flagDoc is a flag to create through the API.
func flagDoc(key, desc string, enabled bool, rules ...map[string]any) map[string]any {
	doc := map[string]any{
		"key": key, "description": desc, "owner": "team-checkout", "tags": []string{"checkout"},
		"kind": "release", "variants": map[string]any{"on": true, "off": false},
		"defaultVariant": "on", "offVariant": "off", "enabled": enabled,
	}
	if len(rules) > 0 {
		doc["rules"] = rules
	}
	return doc
}

func createFlag(t testing.TB, base, env string, doc map[string]any) {
	t.Helper()
	call(t, base, adminToken, "POST", "/api/v1/environments/"+env+"/flags", doc, &map[string]any{})
}

// issue creates a token of role (scoped to env unless "") and returns it.
func issue(t testing.TB, base, name, role, env string) string {
	t.Helper()
	var out struct {
		Token string `json:"token"`
	}
	call(t, base, adminToken, "POST", "/api/v1/tokens", map[string]string{"name": name, "role": role, "environment": env}, &out)
	return out.Token
}

// browser starts headless Chromium, or skips the test when it is not installed.
func browser(t testing.TB) context.Context {
	t.Helper()
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(testdeps.Program(t, "chromium", "chromium")),
		chromedp.Headless, chromedp.NoSandbox, chromedp.DisableGPU, chromedp.NoFirstRun, chromedp.NoDefaultBrowserCheck,
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1280, 900),
	}
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(actx)
	t.Cleanup(func() { cancel(); cancelAlloc() })
	if err := chromedp.Do(ctx); err != nil {
		t.Fatalf("start chromium: %v", err)
	}
	return ctx
}

// step is a browser action that returns nothing.
type step = chromedp.Action[chromedp.Void]

// do runs browser steps with a deadline, failing the test with what was being done.
func do(t testing.TB, ctx context.Context, what string, steps ...step) {
	t.Helper()
	get(t, ctx, what, chromedp.Steps(steps...))
}

// get runs one browser action with a deadline and returns its value.
func get[T any](t testing.TB, ctx context.Context, what string, a chromedp.Action[T]) T {
	t.Helper()
	tctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	v, err := chromedp.Run(tctx, a)
	if err != nil {
		loc, _ := chromedp.Run(ctx, chromedp.Location())
		t.Fatalf("%s: %v (at %s)", what, err, loc)
	}
	return v
}

// eval evaluates a script in the page (awaiting it when it is a promise) and returns its value.
func eval[T any](t testing.TB, ctx context.Context, js string) T {
	t.Helper()
	return get(t, ctx, "evaluate "+js, chromedp.Evaluate[T](js, chromedp.EvalAwaitPromise))
}

// poll waits until the expression is true in the page.
func poll(expr string) step {
	return chromedp.Poll[chromedp.Void](expr, chromedp.WithPollingTimeout(15*time.Second), chromedp.WithPollingInterval(20*time.Millisecond))
}

func visible(sel string) step { return chromedp.WaitVisible(chromedp.CSS(sel)) }
func click(sel string) step   { return chromedp.Click(chromedp.CSS(sel)) }
func keys(sel, v string) step { return chromedp.SendKeys(chromedp.CSS(sel), v) }
func navigate(u string) step  { return chromedp.Navigate(u) }
func text(t testing.TB, ctx context.Context, sel string) string {
	t.Helper()
	return get(t, ctx, "text of "+sel, chromedp.Text(chromedp.CSS(sel)))
}

func signIn(t testing.TB, ctx context.Context, base, token string) {
	t.Helper()
	do(t, ctx, "sign in", navigate(base+"/"), visible("#token"), keys("#token", token),
		chromedp.Submit(chromedp.CSS("#token")), visible("header .me"))
}

func signOut(t testing.TB, ctx context.Context) {
	t.Helper()
	do(t, ctx, "sign out", click("form.signout button"), visible("#token"))
}

// axe runs axe-core (from npm, copied by `make ui`) in the page and fails on serious or
// critical violations.
func axe(t testing.TB, ctx context.Context, page string) {
	t.Helper()
	src, err := os.ReadFile(filepath.Join("testdata", "axe.min.js"))
	if err != nil {
		t.Fatalf("axe-core: %v (run make ui)", err)
	}
	var violations []violation
	eval[any](t, ctx, string(src)+"; true")
	violations = eval[[]violation](t, ctx, `axe.run(document, {resultTypes: ['violations']}).then(r => r.violations.map(v => ({id: v.id, impact: v.impact, help: v.help, nodes: v.nodes.map(n => ({target: n.target}))})))`)
	for _, v := range violations {
		if v.Impact == "serious" || v.Impact == "critical" {
			t.Errorf("axe on %s: %s (%s): %s at %v", page, v.ID, v.Impact, v.Help, v.Nodes)
		}
	}
}

type violation struct {
	ID     string `json:"id"`
	Impact string `json:"impact"`
	Help   string `json:"help"`
	Nodes  []struct {
		Target []any `json:"target"`
	} `json:"nodes"`
}

// screenshot saves the page as docs/screenshots/name.png when asked to (-update or
// INTERLOCK_SCREENSHOTS=1), so that a normal run leaves the tree as it was.
func screenshot(t testing.TB, ctx context.Context, name string) {
	t.Helper()
	if !*update && os.Getenv("INTERLOCK_SCREENSHOTS") == "" {
		return
	}
	png := get(t, ctx, "screenshot "+name, chromedp.FullScreenshot(100))
	dir := filepath.Join("..", "..", "docs", "screenshots")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, name+".png"), png, 0o644); err != nil {
		t.Fatal(err)
	}
}

func contains(t testing.TB, what, s, want string) {
	t.Helper()
	if !strings.Contains(s, want) {
		t.Errorf("%s: %q does not contain %q", what, s, want)
	}
}

// req makes an API request with a raw body and headers, checks its status and returns the
// answer's headers.
func req(t testing.TB, base, token, method, path, body string, headers map[string]string, want int) http.Header {
	t.Helper()
	r, err := http.NewRequest(method, base+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	r.Header.Set("Authorization", "Bearer "+token)
	r.Header.Set("Content-Type", "application/json")
	for k, v := range headers {
		r.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(r)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != want {
		t.Fatalf("%s %s: %d %s, want %d", method, path, resp.StatusCode, b, want)
	}
	return resp.Header
}
