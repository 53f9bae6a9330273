package dashboard_test

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/interlock-dev/interlock/internal/await"
)

// The operational pages in a real browser: a safety valve opened for a segment and closed again
// with reasons, the segment's page with the flag and the valve that use it, the audit filtered by
// type and time, and the kill switch of a critical environment (set with
// --critical-environments) asking for the flag's key.
func TestOperationsPages(t *testing.T) {
	_, base := server(t, "--critical-environments", env)
	call(t, base, adminToken, "POST", "/api/v1/environments/"+env+"/segments",
		map[string]any{"key": "bad-actors", "description": "Scrapers we throttle", "included": []string{"acct-666", "acct-777"},
			"conditions": []map[string]any{{"attribute": "country", "operator": "in", "values": []string{"XX"}}}}, &map[string]any{})
	const valve = "search.suggestions"
	createFlag(t, base, env, map[string]any{
		"key": valve, "description": "Search suggestions", "kind": "operational",
		"variants": map[string]any{"full": "full", "degraded": "off"}, "defaultVariant": "full", "offVariant": "degraded", "enabled": true,
		"rules": []map[string]any{{"conditions": []map[string]any{{"attribute": "targetingKey", "operator": "inSegment", "values": []string{"bad-actors"}}}, "serve": map[string]any{"variant": "degraded"}}},
	})
	var f struct {
		Version uint64 `json:"version"`
	}
	call(t, base, adminToken, "GET", "/api/v1/environments/"+env+"/flags/"+valve, nil, &f)
	req(t, base, adminToken, "PUT", "/api/v1/environments/"+env+"/flags/"+valve+"/valve", `{"variant": "degraded", "segment": "bad-actors"}`,
		map[string]string{"If-Match": fmt.Sprintf(`"%d"`, f.Version)}, http.StatusOK)
	createFlag(t, base, env, flagDoc("checkout.new-flow", "New checkout flow", true))

	ctx := browser(t)
	signIn(t, ctx, base, adminToken)

	t.Run("valves", func(t *testing.T) {
		do(t, ctx, "valves page", navigate(base+"/env/"+env+"/valves"), visible(`[id="valve-`+valve+`"].closed`))
		do(t, ctx, "open dialog", click(`[id="valve-`+valve+`"] button`), visible("#dialog textarea[name=reason]"))
		contains(t, "open preview", text(t, ctx, "#dialog .change"), "serves degraded = \"off\" to the members of segment bad-actors")
		do(t, ctx, "open it",
			keys("#dialog textarea[name=reason]", "scraper storm"), keys("#dialog input[name=for]", "30m"),
			click("#dialog button[type=submit]"), visible("#dialog .done"))
		do(t, ctx, "reload", navigate(base+"/env/"+env+"/valves"), visible(`[id="valve-`+valve+`"].open`))
		row := text(t, ctx, `[id="valve-`+valve+`"]`)
		for _, want := range []string{"segment bad-actors", "admin", "scraper storm", " min"} {
			contains(t, "open valve", row, want)
		}
		axe(t, ctx, "valves")
		screenshot(t, ctx, "valves")
		do(t, ctx, "close it", click(`[id="valve-`+valve+`"] button`), visible("#dialog textarea[name=reason]"),
			keys("#dialog textarea[name=reason]", "storm over"), click("#dialog button[type=submit]"), visible("#dialog .done"),
			navigate(base+"/env/"+env+"/valves"), visible(`[id="valve-`+valve+`"].closed`))
		contains(t, "closed valve", text(t, ctx, `[id="valve-`+valve+`"]`), "manual")
	})

	t.Run("segment page", func(t *testing.T) {
		do(t, ctx, "segments", navigate(base+"/env/"+env+"/segments"), visible(`#seg-bad-actors h2 a`),
			click(`#seg-bad-actors h2 a`), visible("#h-users"))
		page := text(t, ctx, "main")
		for _, want := range []string{"Scrapers we throttle", "acct-666", "country in XX", "Flags targeting it: " + valve, "Valves serving it: " + valve} {
			contains(t, "segment page", page, want)
		}
		axe(t, ctx, "segment")
	})

	t.Run("kill in a critical environment asks for the key", func(t *testing.T) {
		do(t, ctx, "flag", navigate(base+flagsAt+"/checkout.new-flow"), visible("#summary [data-kill]"),
			click("#summary [data-kill]"), visible("#dialog input[name=confirm]"),
			keys("#dialog textarea[name=reason]", "payments down"), keys("#dialog input[name=confirm]", "checkout.wrong"),
			click("#dialog button[type=submit]"), poll(`document.getElementById('dialog-error').textContent.includes('critical environment')`))
		var fl struct{ Enabled bool }
		call(t, base, adminToken, "GET", "/api/v1/environments/"+env+"/flags/checkout.new-flow", nil, &fl)
		if !fl.Enabled {
			t.Fatal("a kill with the wrong key turned the flag off")
		}
		do(t, ctx, "right key", chromedp.SetValue(chromedp.CSS("#dialog input[name=confirm]"), "checkout.new-flow"),
			click("#dialog button[type=submit]"), visible("#dialog .done"))
	})

	t.Run("audit filters", func(t *testing.T) {
		u := base + "/audit?" + url.Values{"environment": {env}, "type": {"io.interlock.flag.killed.v1"}}.Encode()
		do(t, ctx, "killed only", navigate(u), visible(".history li"))
		types := eval[[]string](t, ctx, `[...document.querySelectorAll('.history .type')].map(e => e.textContent)`)
		if len(types) != 1 || types[0] != "flag killed" {
			t.Errorf("audit of kills shows %q", types)
		}
		future := time.Now().Add(time.Hour).UTC().Format(time.RFC3339)
		do(t, ctx, "since the future", navigate(base+"/audit?environment="+env+"&since="+url.QueryEscape(future)), visible(".history li"))
		contains(t, "empty audit", text(t, ctx, ".history"), "No events match")
		// The form: a type chosen and a local time range, sent as instants.
		do(t, ctx, "form", navigate(base+"/audit?environment="+env), visible("select[name=type]"),
			chromedp.SetValue(chromedp.CSS("select[name=type]"), "io.interlock.valve.opened.v1"),
			chromedp.SetValue(chromedp.CSS("input[name=until]"), time.Now().Add(time.Hour).Format("2006-01-02T15:04:05")),
			click("form.filters button[type=submit]"))
		waitURL(t, ctx, "until=")
		do(t, ctx, "filtered", visible(".history li"))
		u = get(t, ctx, "url", chromedp.Location())
		contains(t, "the local time went as an instant", u, "Z")
		if got := text(t, ctx, ".history"); !strings.Contains(got, "valve opened") || strings.Contains(got, "flag created") {
			t.Errorf("audit filtered to valve opened shows %q", got)
		}
		axe(t, ctx, "audit")
	})
}

// waitURL waits until the page's URL contains part, across a navigation.
func waitURL(t *testing.T, ctx context.Context, part string) {
	t.Helper()
	await.Eventually(t, 15*time.Second, func() bool {
		u, err := chromedp.Run(ctx, chromedp.Location())
		return err == nil && strings.Contains(u, part)
	}, "the page never went to a URL with %q", part)
}
