package dashboard_test

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"net/http/httptest"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/interlock-dev/interlock/internal/await"
)

const (
	guardedKey  = "checkout.guarded"
	guardedPath = "/api/v1/environments/" + env + "/flags/" + guardedKey
	// stepRequests are the requests of every traffic step, split between the arms as the flag
	// serves them; baseErrorRate fails that share of both arms.
	stepRequests  = 300
	stepEvery     = 100 * time.Millisecond
	baseErrorRate = 0.02
)

// A guarded rollout watched in the browser: the guard scrapes an exposition endpoint whose
// counters follow the flag's split; the panel charts both arms; an error spike on the treatment
// trips the guard, which kills the flag; the panel shows TRIPPED without a reload, the decision
// in its timeline, and its evidence laid out, linked to the kill it caused and back. Then the
// rollout actions: a reader sees none and is refused; a writer re-arms the guard with a reason.
func TestGuardPanel(t *testing.T) {
	_, base := server(t)
	traffic := startTraffic(t, base)
	createFlag(t, base, env, map[string]any{
		"key": guardedKey, "description": "Checkout, guarded", "kind": "release",
		"variants": map[string]any{"on": true, "off": false}, "defaultVariant": "off", "offVariant": "off", "enabled": true,
	})
	plan := map[string]any{
		"treatment": "on", "control": "off", "tick": "1s", "alpha": 0.001,
		"stages":  []map[string]any{{"percent": 20, "minHold": "1h"}, {"percent": 100}},
		"metrics": []map[string]any{{"name": "errors", "requests": "requests_total", "errors": "errors_total"}},
		"source":  map[string]any{"type": "scrape", "url": traffic.url},
	}
	var created struct {
		Version uint64 `json:"version"`
	}
	call(t, base, adminToken, "POST", guardedPath+"/rollout", plan, &created)
	req(t, base, adminToken, "POST", guardedPath+"/rollout/start", `{"reason": "guarded rollout"}`, map[string]string{"If-Match": fmt.Sprintf(`"%d"`, created.Version)}, http.StatusOK)
	waitRollout(t, base, "the guard to find the rollout healthy", func(r rolloutDoc) bool { return r.Rollout.Guard.State == "HEALTHY" })

	ctx := browser(t)
	signIn(t, ctx, base, adminToken)
	page := base + flagsAt + "/" + guardedKey

	t.Run("flag page offers the rollout's actions", func(t *testing.T) {
		do(t, ctx, "flag page", navigate(page), visible("#summary .stages"))
		got := eval[[]string](t, ctx, `[...document.querySelectorAll('#summary .actions button')].map(b => b.textContent.trim())`)
		for _, want := range []string{"Kill switch…", "Pause…", "Advance…", "Abort…"} {
			if !containsString(got, want) {
				t.Errorf("the flag page's actions %q lack %q", got, want)
			}
		}
		do(t, ctx, "advance dialog", click("#summary .verb-advance"), visible("#dialog textarea[name=reason]"))
		contains(t, "advance preview", text(t, ctx, "#dialog .change"), "stage 2/2 · 100% on")
		do(t, ctx, "cancel", click("#dialog [data-close]"), poll(`!document.getElementById('dialog').open`))
	})

	t.Run("charts both arms", func(t *testing.T) {
		do(t, ctx, "guard panel", click("#summary a.guardlink"), visible("#guard-now"),
			poll(`(() => { const f = document.querySelector('figure.chart'); return f && +f.dataset.treatment > 2 && +f.dataset.control > 2; })()`))
		contains(t, "state", text(t, ctx, "#guard-now .now"), "HEALTHY")
		n := eval[int](t, ctx, `document.querySelectorAll('figure.chart canvas').length`)
		if n < 2 {
			t.Errorf("%d canvases: want the rates and the statistic charted", n)
		}
		axe(t, ctx, "guard panel")
	})

	t.Run("an error spike trips the guard", func(t *testing.T) {
		traffic.spike(0.5)
		spiked := time.Now()
		do(t, ctx, "tripped, without a reload", poll(`document.querySelector('#guard-now .now').textContent.includes('TRIPPED')`))
		t.Logf("error spike → the panel shows TRIPPED in %v (guard ticks every 1s; the panel polls every 2s and follows the flag's events)", time.Since(spiked).Round(time.Millisecond))
		do(t, ctx, "decision in the timeline", poll(`!!document.querySelector('#timeline li.tripped a')`))
		do(t, ctx, "its evidence", click("#timeline li.tripped a"), poll(`document.querySelector('#evidence h2').textContent.includes('→ TRIPPED')`))
		ev := text(t, ctx, "#evidence")
		for _, want := range []string{"TRIPPED", "treatment (on)", "control (off)", "R1 trip test", "e-value", "fired", "requests_total", "Resulting action", "kill", "flag killed by guard"} {
			contains(t, "evidence", ev, want)
		}
		raw := eval[string](t, ctx, `(() => { const d = document.querySelector('#evidence details.raw'); d.open = true; return d.querySelector('pre').textContent; })()`)
		contains(t, "raw JSON", raw, `"stateAfter": "TRIPPED"`)
		// Start, the healthy decision, the trip and the kill: the data fetched with them has the spike.
		do(t, ctx, "charts after the spike", poll(`+document.querySelector('figure.chart').dataset.markers >= 4`))
		screenshot(t, ctx, "guard-panel")

		// The decision links to the kill it caused, and the kill back to the decision.
		do(t, ctx, "the caused kill", click("#evidence a.caused"), visible(".history"))
		back := eval[string](t, ctx, `(document.querySelector(location.hash + ' a.causation') || {}).href || ''`)
		contains(t, "kill's causation link", back, "/guard?decision=")
		do(t, ctx, "back to the decision", navigate(back), visible("#evidence .call"))
		contains(t, "decision again", text(t, ctx, "#timeline a[aria-current]"), "TRIPPED")
	})

	t.Run("reader sees no rollout action and is refused", func(t *testing.T) {
		reader := issue(t, base, "rita", "reader", "")
		signOut(t, ctx)
		signIn(t, ctx, base, reader)
		do(t, ctx, "guard panel", navigate(page+"/guard"), visible("#guard-now"))
		if n := eval[int](t, ctx, `document.querySelectorAll('#guard-actions button').length`); n != 0 {
			t.Errorf("a reader sees %d action buttons", n)
		}
		status := eval[int](t, ctx, `fetch('/env/`+env+`/flags/`+guardedKey+`/rollout/rearm', {method: 'POST', headers: {'X-CSRF-Token': JSON.parse(document.body.getAttribute('hx-headers'))['X-CSRF-Token']}, body: new URLSearchParams({reason: 'forged'})}).then(r => r.status)`)
		if status != http.StatusForbidden {
			t.Errorf("a reader's forged re-arm: %d, want 403", status)
		}
		oncall := issue(t, base, "otto", "oncall", "")
		signOut(t, ctx)
		signIn(t, ctx, base, oncall)
		do(t, ctx, "guard panel", navigate(page+"/guard"), visible("#guard-now"))
		got := eval[[]string](t, ctx, `[...document.querySelectorAll('#guard-actions button')].map(b => b.textContent.trim())`)
		if len(got) != 1 || got[0] != "Abort…" {
			t.Errorf("on-call may abort only (kill), not re-arm (write): sees %q", got)
		}
	})

	t.Run("writer re-arms the tripped guard", func(t *testing.T) {
		writer := issue(t, base, "wendy", "writer", "")
		signOut(t, ctx)
		signIn(t, ctx, base, writer)
		do(t, ctx, "guard panel", navigate(page+"/guard"), visible("#guard-actions .verb-rearm"),
			click("#guard-actions .verb-rearm"), visible("#dialog textarea[name=reason]"),
			keys("#dialog textarea[name=reason]", "spike was a bad deploy of the CDN"),
			click("#dialog button[type=submit]"), visible("#dialog .done"))
		var hist struct {
			Entries []struct{ Type, Reason, Actor string } `json:"entries"`
		}
		call(t, base, adminToken, "GET", guardedPath+"/history", nil, &hist)
		found := false
		for _, e := range hist.Entries {
			if e.Type == "io.interlock.guard.rearmed.v1" && e.Actor == "wendy" && e.Reason == "spike was a bad deploy of the CDN" {
				found = true
			}
		}
		if !found {
			t.Errorf("no re-arm by wendy with her reason in the history: %+v", hist.Entries)
		}
	})
}

// traffic is an exposition endpoint of requests_total and errors_total per variant of the
// guarded flag, moved every step by the share the flag serves, as a service would count them.
type traffic struct {
	url string
	mu  sync.Mutex
	// values by series; rate is the treatment's error rate (the control's stays at the base).
	values map[string]float64
	rate   float64
}

func startTraffic(t *testing.T, base string) *traffic {
	tr := &traffic{values: map[string]float64{}, rate: baseErrorRate}
	srv := httptest.NewServer(tr)
	t.Cleanup(srv.Close)
	tr.url = srv.URL + "/metrics"
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	t.Cleanup(func() { cancel(); <-done })
	go func() {
		defer close(done)
		tick := time.NewTicker(stepEvery)
		defer tick.Stop()
		var requests, errs [2]float64 // on, off
		for {
			share := treatmentShare(base)
			nT := math.Round(stepRequests * share)
			tr.mu.Lock()
			requests[0] += nT
			requests[1] += stepRequests - nT
			errs[0] += math.Round(nT * tr.rate)
			errs[1] += math.Round((stepRequests - nT) * baseErrorRate)
			for i, v := range []string{"on", "off"} {
				tr.values[fmt.Sprintf("requests_total{flag=%q,variant=%q}", guardedKey, v)] = requests[i]
				tr.values[fmt.Sprintf("errors_total{flag=%q,variant=%q}", guardedKey, v)] = errs[i]
			}
			tr.mu.Unlock()
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
		}
	}()
	return tr
}

// spike sets the treatment's error rate.
func (tr *traffic) spike(rate float64) {
	tr.mu.Lock()
	tr.rate = rate
	tr.mu.Unlock()
}

func (tr *traffic) ServeHTTP(w http.ResponseWriter, _ *http.Request) {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	keys := make([]string, 0, len(tr.values))
	for k := range tr.values {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	w.Header().Set("Content-Type", "text/plain; version=0.0.4")
	fmt.Fprintln(w, "# TYPE requests_total counter")
	fmt.Fprintln(w, "# TYPE errors_total counter")
	for _, k := range keys {
		fmt.Fprintf(w, "%s %g\n", k, tr.values[k])
	}
}

// treatmentShare is the share of the guarded flag's traffic that gets "on" now, as the API
// says (0 until the flag exists).
func treatmentShare(base string) float64 {
	req, _ := http.NewRequest("GET", base+guardedPath, nil)
	req.Header.Set("Authorization", "Bearer "+adminToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0
	}
	defer resp.Body.Close()
	var f struct {
		Enabled      bool `json:"enabled"`
		DefaultServe *struct {
			Variant string         `json:"variant"`
			Split   map[string]int `json:"split"`
		} `json:"defaultServe"`
	}
	if resp.StatusCode != http.StatusOK || json.NewDecoder(resp.Body).Decode(&f) != nil || !f.Enabled || f.DefaultServe == nil {
		return 0
	}
	if f.DefaultServe.Variant == "on" {
		return 1
	}
	total := 0
	for _, w := range f.DefaultServe.Split {
		total += w
	}
	if total == 0 {
		return 0
	}
	return float64(f.DefaultServe.Split["on"]) / float64(total)
}

// rolloutDoc is the part of GET .../rollout the tests read.
type rolloutDoc struct {
	Rollout struct {
		ID     string `json:"id"`
		Status string `json:"status"`
		Guard  struct {
			State   string `json:"state"`
			Tripped bool   `json:"tripped"`
		} `json:"guard"`
	} `json:"rollout"`
}

// waitRollout polls the rollout's status until cond holds, with a deadline.
func waitRollout(t *testing.T, base, what string, cond func(rolloutDoc) bool) rolloutDoc {
	t.Helper()
	var r rolloutDoc
	await.Until(t, 2*time.Minute, 100*time.Millisecond, func() error {
		r = rolloutDoc{}
		call(t, base, adminToken, "GET", guardedPath+"/rollout", nil, &r)
		if cond(r) {
			return nil
		}
		return fmt.Errorf("waiting for %s: the rollout is %+v", what, r)
	})
	return r
}

func containsString(list []string, s string) bool {
	for _, v := range list {
		if strings.TrimSpace(v) == s {
			return true
		}
	}
	return false
}
