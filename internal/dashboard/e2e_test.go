package dashboard_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/nats-io/nats.go"

	"github.com/interlock-dev/interlock/events"
	"github.com/interlock-dev/interlock/internal/cli"
	"github.com/interlock-dev/interlock/local"
)

const (
	env     = "production"
	xssKey  = "checkout.new-flow"
	flagsAt = "/env/" + env + "/flags"
	// The payloads an attacker with write access might store.
	xssScript = `<script>window.__xss=1</script>`
	xssAttr   = `"><img src=x onerror="window.__xss=2">`
)

// The whole dashboard in a real browser against a real server: sign in, list, search, open a
// flag, kill it from the keyboard with a reason, watch an API change arrive live, travel back in
// time, restore from the history, and the refusals (reader, scoped token, missing CSRF token).
func TestDashboard(t *testing.T) {
	m, base := server(t)
	createFlag(t, base, env, flagDoc(xssKey, "New checkout flow "+xssScript, true,
		map[string]any{"conditions": []map[string]any{{"attribute": "role", "operator": "in", "values": []string{"beta", "alpha" + xssAttr}}}, "serve": map[string]any{"variant": "on"}},
		map[string]any{"conditions": []map[string]any{{"attribute": "country", "operator": "eq", "values": []string{"NL"}}}, "serve": map[string]any{"split": map[string]int{"on": 25, "off": 75}}},
	))
	createFlag(t, base, env, flagDoc("search.v2", "Search backend v2", true))
	createFlag(t, base, env, flagDoc("cache.warmup", "Warm the cache at start", false))
	createFlag(t, base, "staging", flagDoc(xssKey, "New checkout flow (staging)", true))
	reader := issue(t, base, "rita", "reader", "")
	scoped := issue(t, base, "sam", "oncall", "staging")

	// An in-process subscriber of production, counted in "applied on N of M", with a reader token
	// of its own: the embedded NATS server admits Interlock tokens only.
	svc := issue(t, base, "checkout-api", "reader", env)
	nc, err := nats.Connect(m.NATSURL(), events.TokenAuth(svc))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	sub, err := local.New(nc, local.Config{Environment: env, Name: "checkout-api", HeartbeatInterval: 250 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	subCtx, stopSub := context.WithCancel(context.Background())
	defer stopSub()
	go sub.Run(subCtx)

	ctx := browser(t)
	signIn(t, ctx, base, adminToken)
	row := func(key string) string { return `[id="row-` + key + `"]` }

	t.Run("list", func(t *testing.T) {
		do(t, ctx, "list", visible(row(xssKey)), poll(`document.getElementById('conn').dataset.state === 'live'`))
		contains(t, "row", text(t, ctx, row(xssKey)+" .serving"), "on")
		contains(t, "row", text(t, ctx, row(xssKey)+" .serving"), "+2 rules")
		contains(t, "killed flag", text(t, ctx, row("cache.warmup")+" .serving"), "off")
		axe(t, ctx, "flags")
		screenshot(t, ctx, "flags")
	})

	t.Run("xss is inert", func(t *testing.T) {
		var got xssProbe
		got = eval[xssProbe](t, ctx, `({xss: window.__xss || null, imgs: document.querySelectorAll('main img').length, desc: document.querySelector('[id="row-`+xssKey+`"] .desc').textContent})`)
		if got.XSS != nil || got.Imgs != 0 {
			t.Errorf("payload ran or became markup: %+v", got)
		}
		contains(t, "description", got.Desc, xssScript)
		do(t, ctx, "flag page", navigate(base+flagsAt+"/"+xssKey), visible("#summary"))
		got = eval[xssProbe](t, ctx, `({xss: window.__xss || null, imgs: document.querySelectorAll('main img').length, desc: document.querySelector('.rules').textContent})`)
		if got.XSS != nil || got.Imgs != 0 {
			t.Errorf("payload ran or became markup on the flag page: %+v", got)
		}
		contains(t, "rule", got.Desc, xssAttr)
	})

	t.Run("search", func(t *testing.T) {
		do(t, ctx, "search",
			navigate(base+flagsAt),
			visible(row(xssKey)),
			keys("#q", "search"),
			poll(`!document.querySelector('[id="row-`+xssKey+`"]') && !!document.querySelector('[id="row-search.v2"]')`),
		)
		u := get(t, ctx, "url", chromedp.Location())
		contains(t, "pushed url", u, "q=search")
	})

	t.Run("open flag", func(t *testing.T) {
		do(t, ctx, "open",
			navigate(base+flagsAt),
			visible(row(xssKey)+" a.key"),
			click(row(xssKey)+" a.key"),
			visible("#summary"),
		)
		contains(t, "rules", text(t, ctx, ".rules"), "country = NL → off 75% / on 25% by targetingKey")
		contains(t, "rules", text(t, ctx, ".rules"), "role in beta, alpha")
		axe(t, ctx, "flag")
		screenshot(t, ctx, "flag")
	})

	t.Run("live update from the API", func(t *testing.T) {
		do(t, ctx, "page", navigate(base+flagsAt), visible(row("search.v2")),
			poll(`document.getElementById('conn').dataset.state === 'live'`))
		latency := liveKill(t, ctx, base, "search.v2")
		t.Logf("kill through the API: acknowledged → row shows it in the DOM in %v (no reload)", latency)
		contains(t, "live row", text(t, ctx, row("search.v2")+" .serving"), "killed by admin")
	})

	t.Run("live update from the CLI", func(t *testing.T) {
		eval[bool](t, ctx, `window.__back = 0; new MutationObserver(() => {
			const el = document.querySelector('[id="row-search.v2"] .serving');
			if (!window.__back && el && !el.textContent.includes('killed by')) window.__back = Date.now();
		}).observe(document.getElementById('results'), {subtree: true, childList: true, characterData: true}); true`)
		var stdout, stderr strings.Builder
		getenv := func(k string) string {
			return map[string]string{"INTERLOCK_SERVER": base, "INTERLOCK_TOKEN": adminToken}[k]
		}
		if code := cli.Run(context.Background(), []string{"flags", "enable", env + "/search.v2", "--reason", "back on"}, strings.NewReader(""), &stdout, &stderr, getenv); code != 0 {
			t.Fatalf("interlock flags enable: exit %d: %s", code, stderr.String())
		}
		ack := time.Now()
		do(t, ctx, "live row", poll(`window.__back > 0`))
		t.Logf("enable through the CLI: acknowledged → row shows it in the DOM in %v (no reload)",
			time.UnixMilli(int64(eval[float64](t, ctx, `window.__back`))).Sub(ack))
	})

	// The moment before the kill: the time of the flag's last event then.
	var beforeKill string
	t.Run("kill from the keyboard", func(t *testing.T) {
		do(t, ctx, "flag page", navigate(base+flagsAt+"/"+xssKey), visible("#summary [data-kill]"))
		var f struct {
			UpdatedAt time.Time `json:"updatedAt"`
		}
		call(t, base, adminToken, "GET", "/api/v1/environments/"+env+"/flags/"+xssKey, nil, &f)
		beforeKill = f.UpdatedAt.UTC().Format(time.RFC3339Nano)
		do(t, ctx, "shift+K", chromedp.KeyEvent("K"), visible("#dialog textarea[name=reason]"))
		preview := text(t, ctx, "#dialog .change")
		contains(t, "preview", preview, "on, and 2 targeting rule(s)")
		contains(t, "preview", preview, "off for everyone")
		axe(t, ctx, "kill dialog")
		screenshot(t, ctx, "kill-dialog")
		// No reason: refused by the browser's form; the server refuses too (below, forged).
		do(t, ctx, "confirm",
			keys("#dialog textarea[name=reason]", "checkout errors spiking"),
			click("#dialog button[type=submit]"),
			visible("#dialog .done"),
			poll(`(document.getElementById('prop')||{}).textContent.includes('Applied on 1 of 1')`),
		)
		contains(t, "done", text(t, ctx, "#dialog .done"), "Killed")
		do(t, ctx, "summary", poll(`document.querySelector('#summary .now').textContent.includes('killed by admin')`))
		do(t, ctx, "list", navigate(base+flagsAt), visible(row(xssKey)))
		contains(t, "list after kill", text(t, ctx, row(xssKey)+" .serving"), "killed by admin: “checkout errors spiking”")
		do(t, ctx, "history", navigate(base+flagsAt+"/"+xssKey+"/history"), visible(".history"))
		first := text(t, ctx, ".history li")
		contains(t, "history", first, "flag killed")
		contains(t, "history", first, "checkout errors spiking")
		contains(t, "history", first, "enabled")
		axe(t, ctx, "history")
		screenshot(t, ctx, "history")
	})

	t.Run("time travel", func(t *testing.T) {
		at := beforeKill
		do(t, ctx, "the past", navigate(base+flagsAt+"/"+xssKey+"?at="+at), visible(".past"))
		contains(t, "past banner", text(t, ctx, ".past"), "Read-only")
		contains(t, "past state", text(t, ctx, "#summary .now"), "on")
		kills := eval[int](t, ctx, `document.querySelectorAll('[data-kill], .actions button').length`)
		if kills != 0 {
			t.Errorf("the past offers %d actions", kills)
		}
		do(t, ctx, "list in the past", navigate(base+flagsAt+"?at="+at), visible(row(xssKey)))
		contains(t, "past list", text(t, ctx, row(xssKey)+" .serving"), "on")
		screenshot(t, ctx, "time-travel")
	})

	t.Run("restore from the history", func(t *testing.T) {
		do(t, ctx, "history", navigate(base+flagsAt+"/"+xssKey+"/history"), visible("#v1 button"),
			click("#v1 button"), visible("#dialog textarea[name=reason]"))
		contains(t, "restore warning", text(t, ctx, "#dialog .warn"), "turns a killed flag back ON")
		contains(t, "restore diff", text(t, ctx, "#dialog .diff"), "enabled")
		do(t, ctx, "confirm",
			keys("#dialog textarea[name=reason]", "errors were the CDN, not us"),
			click("#dialog button[type=submit]"),
			visible("#dialog .done"))
		var hist struct {
			Entries []struct {
				Type, Reason, Actor string
			} `json:"entries"`
		}
		call(t, base, adminToken, "GET", "/api/v1/environments/"+env+"/flags/"+xssKey+"/history", nil, &hist)
		last := hist.Entries[len(hist.Entries)-1]
		if last.Type != "io.interlock.flag.restored.v1" || last.Reason != "errors were the CDN, not us" || last.Actor != "admin" {
			t.Errorf("last event %+v, want a restore by admin with the reason", last)
		}
	})

	t.Run("csrf", func(t *testing.T) {
		do(t, ctx, "list", navigate(base+flagsAt), visible(row(xssKey)))
		status := eval[int](t, ctx, `fetch('/env/`+env+`/flags/`+xssKey+`/kill', {method: 'POST', body: new URLSearchParams({reason: 'forged'})}).then(r => r.status)`)
		if status != 403 {
			t.Errorf("a POST without CSRF token: %d, want 403", status)
		}
	})

	t.Run("reader", func(t *testing.T) {
		signOut(t, ctx)
		signIn(t, ctx, base, reader)
		do(t, ctx, "list", navigate(base+flagsAt), visible(row(xssKey)))
		n := eval[int](t, ctx, `document.querySelectorAll('[data-kill]').length`)
		if n != 0 {
			t.Errorf("a reader sees %d kill buttons on the list", n)
		}
		do(t, ctx, "flag", navigate(base+flagsAt+"/"+xssKey), visible("#summary"))
		n = eval[int](t, ctx, `document.querySelectorAll('[data-kill]').length`)
		if n != 0 {
			t.Errorf("a reader sees %d kill buttons on the flag page", n)
		}
		status := eval[int](t, ctx, `fetch('/env/`+env+`/flags/`+xssKey+`/kill', {method: 'POST', headers: {'X-CSRF-Token': JSON.parse(document.body.getAttribute('hx-headers'))['X-CSRF-Token']}, body: new URLSearchParams({reason: 'forged'})}).then(r => r.status)`)
		if status != 403 {
			t.Errorf("a reader's forged kill: %d, want 403", status)
		}
		var f struct{ Enabled bool }
		call(t, base, adminToken, "GET", "/api/v1/environments/"+env+"/flags/"+xssKey, nil, &f)
		if !f.Enabled {
			t.Error("the reader's forged kill turned the flag off")
		}
	})

	t.Run("scoped token", func(t *testing.T) {
		signOut(t, ctx)
		signIn(t, ctx, base, scoped)
		do(t, ctx, "envs", navigate(base+"/"), visible(`[id="row-`+xssKey+`"]`))
		envs := eval[[]string](t, ctx, `[...document.querySelectorAll('nav.envs a')].map(a => a.textContent)`)
		if len(envs) != 1 || envs[0] != "staging" {
			t.Errorf("a token scoped to staging sees environments %v", envs)
		}
		status := eval[int](t, ctx, `fetch('/env/production/flags').then(r => r.status)`)
		if status != 403 {
			t.Errorf("a token scoped to staging reads production: %d, want 403", status)
		}
	})
}

// liveKill installs an observer in the page, kills key through the API and returns the time
// from the API's acknowledgement to the row showing the kill.
func liveKill(t testing.TB, ctx context.Context, base, key string) time.Duration {
	t.Helper()
	eval[bool](t, ctx, `window.__seen = 0; new MutationObserver(() => {
		const el = document.querySelector('[id="row-`+key+`"] .serving');
		if (!window.__seen && el && el.textContent.includes('killed by')) window.__seen = Date.now();
	}).observe(document.getElementById('results'), {subtree: true, childList: true, characterData: true}); true`)
	call(t, base, adminToken, "POST", "/api/v1/environments/"+env+"/flags/"+key+"/kill", map[string]string{"reason": "live test"}, &map[string]any{})
	ack := time.Now()
	do(t, ctx, "live row", poll(`window.__seen > 0`))
	seen := eval[float64](t, ctx, `window.__seen`)
	return time.UnixMilli(int64(seen)).Sub(ack)
}

// xssProbe is what the page says about the payloads.
type xssProbe struct {
	XSS  any    `json:"xss"`
	Imgs int    `json:"imgs"`
	Desc string `json:"desc"`
}
