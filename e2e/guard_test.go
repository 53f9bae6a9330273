package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/interlock-dev/interlock/events"
	"github.com/interlock-dev/interlock/guard"
	"github.com/interlock-dev/interlock/guard/source"
	"github.com/interlock-dev/interlock/internal/app"
	"github.com/interlock-dev/interlock/internal/await"
	"github.com/interlock-dev/interlock/internal/config"
	"github.com/interlock-dev/interlock/internal/promtest"
	"github.com/interlock-dev/interlock/projections"
)

// The end-to-end tests of the rollout guard (docs/guard.md, "How to test it"): the real Interlock
// server in process with its embedded NATS, the demo service (cmd/interlock-demo, its own
// process) following the flag over NATS and exposing labelled counters, the guard reading them by a direct scrape or through a real
// Prometheus, a rollout that completes on its own, and an injected error spike that kills the
// flag, with the evidence in the flag's events.

const (
	// rolloutWithin bounds how long a rollout may take to complete or to trip: generous, since
	// the machine is shared; the guard's own timing is not what these tests measure.
	rolloutWithin = 3 * time.Minute
	// adminToken is the server's admin token (INTERLOCK_ADMIN_TOKEN).
	adminToken = "e2e-admin-token-0123456789"
	// promScrape is the real Prometheus's scrape interval.
	promScrape = 500 * time.Millisecond
)

// demoArgs run the demo fast enough that every stage gathers its evidence in seconds, over a
// million users so that the split's buckets hold the configured share of the traffic (a small
// population would miss it by enough for the sample-ratio check to hold the rollout).
var demoArgs = []string{"--flag", flagKey, "--rate", "3000", "--users", "1000000", "--base-error-rate", "0.02", "--seed", "7"}

func TestGuardedRolloutEndToEnd(t *testing.T) {
	for _, src := range []struct {
		name       string
		prometheus bool
	}{{"scrape", false}, {"prometheus", true}} {
		t.Run(src.name, func(t *testing.T) {
			t.Run("healthy rollout completes", func(t *testing.T) { testHealthyRollout(t, src.prometheus) })
			t.Run("error spike kills the flag", func(t *testing.T) { testErrorSpike(t, src.prometheus) })
		})
	}
	// The continuous metric's path is the same for both sources; R2 needs 30 ticks per arm
	// before it runs, so it is tried once, with the direct scrape.
	t.Run("scrape/latency regression kills the flag", testLatencyRegression)
}

// testHealthyRollout runs a rollout 20% → 50% → 100% with both variants failing alike: the
// guard advances every stage and completes it, as actor guard, each move caused by a recorded
// decision; the demo then serves the treatment to everyone.
func testHealthyRollout(t *testing.T, prometheus bool) {
	r := newRig(t, prometheus)
	r.createRollout(`[{"percent": 20, "minHold": "3s"}, {"percent": 50, "minHold": "3s"}, {"percent": 100, "minHold": "3s"}]`)
	began := time.Now()
	st := r.rolloutUntil("the rollout to complete", func(st rolloutView) bool {
		if st.Rollout.Guard.Tripped || st.Rollout.Status == projections.RolloutAborted || !st.Enabled {
			r.t.Fatalf("a healthy rollout was stopped: %s", st)
		}
		return st.Rollout.Status == projections.RolloutCompleted
	})
	t.Logf("the guard completed the rollout in %v", time.Since(began).Round(time.Millisecond))
	if st.Split.Variant != "on" || st.Split.Split != nil {
		t.Errorf("a completed rollout serves %+v, want the treatment on", st.Split)
	}

	entries := r.history()
	decisions := map[string]projections.Entry{}
	var moves []projections.Entry
	for _, e := range entries {
		switch e.Type {
		case events.TypeGuardDecided:
			decisions[e.ID] = e
		case events.TypeRolloutAdvanced, events.TypeRolloutCompleted:
			moves = append(moves, e)
		case events.TypeRolloutStarted, events.TypeRolloutCreated:
			if e.Actor != "admin" {
				t.Errorf("%s by %q, want admin", e.Type, e.Actor)
			}
		}
	}
	if len(moves) != 3 {
		t.Fatalf("%d stage changes, want 2 advances and the completion:\n%s", len(moves), showEntries(entries))
	}
	evs := r.flagEvents(entries[len(entries)-1].Sequence)
	for i, e := range moves {
		want := events.TypeRolloutAdvanced
		if i == 2 {
			want = events.TypeRolloutCompleted
		}
		if e.Type != want || e.Actor != guard.Actor || e.CorrelationID != st.Rollout.ID {
			t.Errorf("stage change %d: %s by %q correlated %q; want %s by %s correlated with the rollout %s",
				i, e.Type, e.Actor, e.CorrelationID, want, guard.Actor, st.Rollout.ID)
		}
		// The advances change the split; the last stage already served the treatment alone.
		if i < 2 && !slices.ContainsFunc(e.Changes, func(c projections.Change) bool { return c.Path == "defaultServe" }) {
			t.Errorf("stage change %d (%s) changed %+v, not the default serve", i, e.Type, e.Changes)
		}
		d, ok := decisions[e.CausationID]
		if !ok {
			t.Errorf("stage change %d (%s) is caused by %q, not a guard decision:\n%s", i, e.Type, e.CausationID, showEntries(entries))
			continue
		}
		if d.Sequence >= e.Sequence || d.Actor != guard.Actor {
			t.Errorf("decision %s (sequence %d, by %q) does not precede stage change %d (sequence %d)", d.ID, d.Sequence, d.Actor, i, e.Sequence)
		}
		dec := decidedOf(t, evs, d.ID)
		action := string(guard.ActionAdvance)
		if i == 2 {
			action = "complete"
		}
		if dec.Stage != i || dec.Action != action || dec.Rollout != st.Rollout.ID {
			t.Errorf("stage change %d is caused by a decision %+v, want %s at stage %d", i, dec, action, i)
		}
		calls := evidenceOf(t, dec)
		last := calls[len(calls)-1]
		if i < 2 && (last.StateAfter != guard.StateReady || last.Cause != guard.CauseReady || !last.Metrics[0].R5.Met) {
			t.Errorf("advance from stage %d on evidence %s %s, R5 met %v; want READY on r5", i, last.StateAfter, last.Cause, last.Metrics[0].R5.Met)
		}
		if !last.MinHoldElapsed {
			t.Errorf("stage %d left before its minimum hold: %+v", i, last)
		}
	}

	// The demo follows: everyone is served on, and off stops growing.
	r.servesOnly(st.Version, "on", "off")
}

// testErrorSpike holds a rollout at 20% until the guard finds it healthy, then makes the
// treatment fail one request in two: the guard trips, records its evidence, and kills the flag
// as actor guard, caused by that decision.
func testErrorSpike(t *testing.T, prometheus bool) {
	r := newRig(t, prometheus)
	r.createRollout(`[{"percent": 20, "minHold": "1h"}, {"percent": 100}]`)
	healthy := r.rolloutUntil("the guard to find the rollout healthy", func(st rolloutView) bool {
		if st.Rollout.Guard.Tripped || !st.Enabled {
			r.t.Fatalf("the rollout tripped before the spike: %s", st)
		}
		return st.Rollout.Guard.State == string(guard.StateHealthy)
	})
	var live struct {
		Acting bool   `json:"acting"`
		State  string `json:"state"`
	}
	if err := json.Unmarshal(healthy.Live, &live); err != nil || !live.Acting || live.State == "" {
		t.Errorf("the status of a running rollout has no live view of the acting guard: %s", healthy.Live)
	}

	if code, k, body := r.demo.postKnob(t, `{"failRate": 0.5}`); code != http.StatusOK || k.FailVariant != "on" {
		t.Fatalf("POST /knob: %d %s", code, body)
	}
	spiked := time.Now()
	st := r.rolloutUntil("the guard to kill the flag", func(st rolloutView) bool { return !st.Enabled })
	t.Logf("the guard killed the flag %v after the spike", time.Since(spiked).Round(time.Millisecond))
	g := st.Rollout.Guard
	if !g.Tripped || g.State != string(guard.StateTripped) || g.Action != string(guard.ActionKill) || g.Decision == "" {
		t.Errorf("the rollout's guard after the kill: %+v; want tripped with action kill", g)
	}
	if st.Rollout.Status != projections.RolloutRunning {
		t.Errorf("rollout status %s: a trip latches the rollout where it is", st.Rollout.Status)
	}

	entries := r.history()
	i := slices.IndexFunc(entries, func(e projections.Entry) bool { return e.Type == events.TypeFlagKilled })
	if i < 0 {
		t.Fatalf("no %s in the history:\n%s", events.TypeFlagKilled, showEntries(entries))
	}
	kill := entries[i]
	if kill.Actor != guard.Actor || kill.CausationID != g.Decision || kill.CorrelationID != st.Rollout.ID {
		t.Errorf("kill by %q caused by %q correlated %q; want by guard, caused by the decision %s, correlated with the rollout %s",
			kill.Actor, kill.CausationID, kill.CorrelationID, g.Decision, st.Rollout.ID)
	}
	if len(kill.Changes) != 1 || kill.Changes[0].Path != "enabled" || string(kill.Changes[0].After) != "false" {
		t.Errorf("kill changed %+v, want enabled to false", kill.Changes)
	}
	if !strings.Contains(kill.Reason, "TRIPPED") {
		t.Errorf("kill reason %q does not say the guard tripped", kill.Reason)
	}
	j := slices.IndexFunc(entries, func(e projections.Entry) bool { return e.ID == kill.CausationID })
	if j < 0 || j >= i || entries[j].Type != events.TypeGuardDecided || entries[j].Actor != guard.Actor {
		t.Fatalf("the kill's cause %q is not an earlier decision of the guard:\n%s", kill.CausationID, showEntries(entries))
	}

	// The decision's evidence: the queries, the readings and counts of both arms, and the test
	// that fired, confirmed by a re-query.
	dec := decidedOf(t, r.flagEvents(kill.Sequence), kill.CausationID)
	if dec.StateAfter != string(guard.StateTripped) || dec.Action != string(guard.ActionKill) || dec.Rollout != st.Rollout.ID || dec.Stage != 0 {
		t.Errorf("decision %+v; want TRIPPED, kill, stage 0 of %s", dec, st.Rollout.ID)
	}
	calls := evidenceOf(t, dec)
	if len(calls) != 2 || calls[0].Call != guard.CallDecide || calls[1].Call != guard.CallConfirm {
		t.Fatalf("evidence of %d calls, want a decide and its confirmation: %+v", len(calls), calls)
	}
	if calls[0].Action != guard.ActionConfirm {
		t.Errorf("the first call asked for %s, want confirm", calls[0].Action)
	}
	// The trip replays from its event alone: the guard's state before it, and its calls.
	var before guard.MachineSnapshot
	if err := json.Unmarshal(dec.Before, &before); err != nil {
		t.Fatalf("the decision's snapshot %q: %v", dec.Before, err)
	}
	replayed, err := guard.ReplayDecision(before, calls)
	if err != nil {
		t.Fatalf("replay the trip: %v", err)
	}
	got, _ := json.Marshal(replayed)
	want, _ := json.Marshal(calls)
	if !bytes.Equal(got, want) || replayed[1].StateAfter != guard.StateTripped || replayed[1].Action != guard.ActionKill {
		t.Errorf("the trip replays differently:\nrecorded %s\nreplayed %s", want, got)
	}
	last := calls[1]
	if last.StateAfter != guard.StateTripped || last.Action != guard.ActionKill || last.Flag != flagKey || last.Variant != "on" || last.Control != "off" {
		t.Errorf("confirmation %s → %s, action %s, flag %s, %s against %s", last.StateBefore, last.StateAfter, last.Action, last.Flag, last.Variant, last.Control)
	}
	if len(last.Metrics) != 1 {
		t.Fatalf("evidence of %d metrics, want 1", len(last.Metrics))
	}
	m := last.Metrics[0]
	if last.Cause != guard.CauseR1 || !m.R1.Fired || float64(m.R1.E) < float64(m.R1.Threshold) || float64(m.R1.RHat) <= 2 {
		t.Errorf("cause %s, R1 fired %v with e=%v against %v, r̂=%v; want R1 to fire on a large ratio", last.Cause, m.R1.Fired, m.R1.E, m.R1.Threshold, m.R1.RHat)
	}
	for _, c := range []struct {
		arm, counter, variant string
		ev                    guard.CounterEvidence
	}{
		{"treatment", "requests_total", "on", m.Treatment.Requests}, {"treatment", "errors_total", "on", m.Treatment.Errors},
		{"control", "requests_total", "off", m.Control.Requests}, {"control", "errors_total", "off", m.Control.Errors},
	} {
		if !strings.Contains(c.ev.Query, c.counter) || !strings.Contains(c.ev.Query, `variant="`+c.variant+`"`) ||
			!strings.Contains(c.ev.Query, `flag="`+flagKey+`"`) || c.ev.Status != source.ReadingOK || float64(c.ev.Value) <= 0 {
			t.Errorf("%s %s reading %+v", c.arm, c.counter, c.ev)
		}
	}
	if m.Treatment.StageRequests <= 0 || m.Control.StageRequests <= 0 || m.Treatment.StageErrors <= 0 ||
		float64(m.Treatment.StageErrors)/float64(m.Treatment.StageRequests) <= float64(m.Control.StageErrors)/float64(m.Control.StageRequests) {
		t.Errorf("stage counts: treatment %v/%v, control %v/%v", m.Treatment.StageErrors, m.Treatment.StageRequests, m.Control.StageErrors, m.Control.StageRequests)
	}
	if prometheus && m.Treatment.Requests.Endpoint == "" {
		t.Errorf("a Prometheus reading names no endpoint: %+v", m.Treatment.Requests)
	}

	// The kill reaches the demo: everyone is served off.
	r.servesOnly(st.Version, "off", "on")
}

// testLatencyRegression holds a rollout at 20% until R2 runs on the demo's latency histogram and
// finds nothing wrong, then makes the treatment twice as slow with no more errors: the guard
// trips on R2 and kills the flag, with the means in its evidence.
func testLatencyRegression(t *testing.T) {
	r := newRig(t, false)
	r.createRolloutWith(`[{"percent": 20, "minHold": "1h"}, {"percent": 100}]`, `[`+errorsMetric+`,
		{"name": "latency", "kind": "mean", "count": "request_duration_seconds_count", "sum": "request_duration_seconds_sum", "margin": 0.1}]`)
	var live struct {
		Latest struct {
			Metrics []guard.MetricEvidence `json:"metrics"`
		} `json:"latest"`
	}
	r.rolloutUntil("R2 to run on the latency", func(st rolloutView) bool {
		if st.Rollout.Guard.Tripped || !st.Enabled {
			r.t.Fatalf("the rollout tripped before the slowdown: %s", st)
		}
		return json.Unmarshal(st.Live, &live) == nil && len(live.Latest.Metrics) == 2 && live.Latest.Metrics[1].R2.Active
	})
	if r2 := live.Latest.Metrics[1].R2; r2.Fired || float64(r2.Ratio) < 0.8 || float64(r2.Ratio) > 1.2 {
		t.Fatalf("healthy latency: R2 %+v", r2)
	}

	if code, _, body := r.demo.postKnob(t, `{"slowFactor": 2}`); code != http.StatusOK {
		t.Fatalf("POST /knob: %d %s", code, body)
	}
	slowed := time.Now()
	st := r.rolloutUntil("the guard to kill the flag", func(st rolloutView) bool { return !st.Enabled })
	t.Logf("the guard killed the flag %v after the slowdown", time.Since(slowed).Round(time.Millisecond))
	g := st.Rollout.Guard
	if !g.Tripped || g.Cause != string(guard.CauseR2) || g.Action != string(guard.ActionKill) {
		t.Fatalf("the rollout's guard after the kill: %+v; want tripped by r2 with action kill", g)
	}
	entries := r.history()
	i := slices.IndexFunc(entries, func(e projections.Entry) bool { return e.Type == events.TypeFlagKilled })
	if i < 0 || entries[i].Actor != guard.Actor || entries[i].CausationID != g.Decision {
		t.Fatalf("no kill by the guard caused by %s:\n%s", g.Decision, showEntries(entries))
	}
	calls := evidenceOf(t, decidedOf(t, r.flagEvents(entries[i].Sequence), g.Decision))
	m := calls[len(calls)-1].Metrics[1]
	// The estimate of the comparison that fired: the one begun at the slowdown, when it weighs
	// most, or the one from the start.
	fired := float64(m.R2.Ratio)
	if m.R2.LateStartAgo > 0 {
		fired = float64(m.R2.LateStartRatio)
	}
	if m.Kind != guard.KindMean || !m.R2.Fired || fired <= 1.5 ||
		!strings.Contains(m.Treatment.Requests.Query, `request_duration_seconds_count{flag="`+flagKey+`",variant="on"}`) ||
		!strings.Contains(m.Control.Errors.Query, `request_duration_seconds_sum{flag="`+flagKey+`",variant="off"}`) {
		t.Errorf("latency evidence: kind %s, R2 %+v, queries %q %q", m.Kind, m.R2, m.Treatment.Requests.Query, m.Control.Errors.Query)
	}
	if e := calls[len(calls)-1].Metrics[0]; e.R1.Fired {
		t.Errorf("R1 fired too, on errors that did not change: %+v", e.R1)
	}
	r.servesOnly(st.Version, "off", "on")
}

// rig is one Interlock server and one demo following its flag, with a real Prometheus scraping
// the demo when the guard reads through one.
type rig struct {
	t      *testing.T
	base   string // Interlock's http://host:port
	client *http.Client
	logs   *await.Output
	demo   *demoProc
	source string // the plan's metric source, JSON
}

// newRig boots Interlock, creates the flag flagKey (on/off, default off) and enables it, runs
// the demo against it, and with prometheus a real Prometheus scraping the demo. Everything stops
// when the test ends: the demo, then Interlock, then Prometheus; and no goroutine is left.
func newRig(t *testing.T, prometheus bool) *rig {
	if prometheus {
		promtest.Binary(t, "prometheus") // skip or fail before starting anything
	}
	r := &rig{t: t, logs: &await.Output{}, client: &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{}}}
	// First, so that it runs after every other cleanup: the goroutines of Interlock, the demo,
	// their NATS connections and HTTP clients must be gone.
	await.Goroutines(t, 30*time.Second, func() {
		r.client.CloseIdleConnections()
		http.DefaultClient.CloseIdleConnections()
	})

	cfg := config.Default()
	cfg.Data = t.TempDir()
	cfg.HTTP = "127.0.0.1:0"
	cfg.NATSListen = "127.0.0.1:0" // the demo connects over TCP
	cfg.NoSync = true
	cfg.AdminToken = adminToken
	m, err := app.Start(context.Background(), cfg, slog.New(slog.NewTextHandler(r.logs, nil)), io.Discard)
	if err != nil {
		t.Fatalf("start interlock: %v", err)
	}
	r.base = "http://" + m.HTTPAddr()
	t.Cleanup(func() {
		if err := m.Close(); err != nil {
			t.Errorf("close interlock: %v", err)
		}
		if t.Failed() {
			t.Logf("interlock logs, without the requests:\n%s", withoutRequests(r.logs.String()))
		}
	})
	await.Eventually(t, 30*time.Second, m.Ready, "interlock ready")

	var f projections.Flag
	h := r.do(http.MethodPost, "/api/v1/environments/"+env+"/flags", nil,
		`{"key": "`+flagKey+`", "kind": "release", "variants": {"on": true, "off": false}, "defaultVariant": "off", "offVariant": "off"}`,
		http.StatusCreated, &f)
	r.do(http.MethodPost, flagPath("/enable"), map[string]string{"If-Match": h.Get("ETag")}, `{"reason": "serve off until the rollout"}`, http.StatusOK, &f)
	if !f.Enabled {
		t.Fatalf("enable: %+v", f)
	}

	r.demo = start(t, &system{url: m.NATSURL(), token: adminToken}, demoArgs...)
	r.demo.scrapeUntil(t, "the demo to serve off and expose on", func(c counts) bool {
		_, on := c["on"]
		return c["off"].Requests > 0 && on
	})
	r.source = fmt.Sprintf(`{"type": "scrape", "url": %q}`, r.demo.base+"/metrics")
	if prometheus {
		prom := promtest.Start(t, []string{strings.TrimPrefix(r.demo.base, "http://")}, promScrape)
		await.Eventually(t, 30*time.Second, func() bool { return r.promHasBothArms(prom) }, "Prometheus to scrape the demo")
		r.source = fmt.Sprintf(`{"type": "prometheus", "url": %q, "lag": "2s"}`, prom)
	}
	// Registered last, so it runs first: the demo, then Interlock; Prometheus stops after both.
	t.Cleanup(func() {
		r.demo.stop()
		m.Close()
	})
	return r
}

// promHasBothArms reports whether Prometheus has scraped the demo's counters of both variants.
func (r *rig) promHasBothArms(prom string) bool {
	q := url.Values{"query": {`count(requests_total{flag="` + flagKey + `",variant=~"on|off"})`}}
	resp, err := r.client.Get(prom + "/api/v1/query?" + q.Encode())
	if err != nil {
		return false
	}
	defer resp.Body.Close()
	var body struct {
		Data struct {
			Result []struct {
				Value [2]any `json:"value"`
			} `json:"result"`
		} `json:"data"`
	}
	if json.NewDecoder(resp.Body).Decode(&body) != nil || len(body.Data.Result) != 1 {
		return false
	}
	return body.Data.Result[0].Value[1] == "2"
}

// flagPath is the API path of the flag, with suffix.
func flagPath(suffix string) string {
	return "/api/v1/environments/" + env + "/flags/" + flagKey + suffix
}

// do sends an admin request and decodes the answer into out; any status but want fails the
// test. It returns the answer's header.
func (r *rig) do(method, path string, header map[string]string, body string, want int, out any) http.Header {
	r.t.Helper()
	req, err := http.NewRequest(method, r.base+path, strings.NewReader(body))
	if err != nil {
		r.t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+adminToken)
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	for k, v := range header {
		req.Header.Set(k, v)
	}
	resp, err := r.client.Do(req)
	if err != nil {
		r.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		r.t.Fatalf("%s %s: read: %v", method, path, err)
	}
	if resp.StatusCode != want {
		r.t.Fatalf("%s %s: %d, want %d: %s", method, path, resp.StatusCode, want, raw)
	}
	if out != nil {
		if err := json.Unmarshal(raw, out); err != nil {
			r.t.Fatalf("%s %s: decode %s: %v", method, path, raw, err)
		}
	}
	return resp.Header
}

// rolloutView is the answer of GET .../rollout.
type rolloutView struct {
	Version uint64               `json:"version"`
	Enabled bool                 `json:"enabled"`
	Rollout *projections.Rollout `json:"rollout"`
	Stage   struct {
		Index   int     `json:"index"`
		Percent float64 `json:"percent"`
	} `json:"stage"`
	Split events.Serve    `json:"split"`
	Live  json.RawMessage `json:"live"`
}

func (st rolloutView) String() string {
	b, _ := json.Marshal(st)
	return string(b)
}

// errorsMetric guards the demo's error ratio.
const errorsMetric = `{"name": "errors", "requests": "requests_total", "errors": "errors_total"}`

// createRollout creates a rollout of on against off over stages (JSON), guarded by the error
// ratio, reading the plan's source every second, and starts it.
func (r *rig) createRollout(stages string) {
	r.t.Helper()
	r.createRolloutWith(stages, "["+errorsMetric+"]")
}

// createRolloutWith creates and starts a rollout as createRollout does, guarded by metrics (JSON).
func (r *rig) createRolloutWith(stages, metrics string) {
	r.t.Helper()
	plan := fmt.Sprintf(`{
		"treatment": "on", "control": "off",
		"stages": %s,
		"metrics": %s,
		"source": %s,
		"tick": "1s",
		"alpha": 0.001
	}`, stages, metrics, r.source)
	var st rolloutView
	h := r.do(http.MethodPost, flagPath("/rollout"), nil, plan, http.StatusCreated, &st)
	if st.Rollout == nil || st.Rollout.Status != projections.RolloutCreated {
		r.t.Fatalf("created rollout: %s", st)
	}
	r.do(http.MethodPost, flagPath("/rollout/start"), map[string]string{"If-Match": h.Get("ETag")}, `{"reason": "guarded rollout"}`, http.StatusOK, &st)
	if st.Rollout.Status != projections.RolloutRunning || st.Stage.Index != 0 || st.Split.Split["on"] != 2000 {
		r.t.Fatalf("started rollout: %s", st)
	}
}

// rolloutUntil polls the rollout until cond holds, and returns the status it held for.
func (r *rig) rolloutUntil(what string, cond func(rolloutView) bool) rolloutView {
	r.t.Helper()
	var st rolloutView
	await.Until(r.t, rolloutWithin, 100*time.Millisecond, func() error { // the guard ticks every second
		st = rolloutView{}
		r.do(http.MethodGet, flagPath("/rollout"), nil, "", http.StatusOK, &st)
		if cond(st) {
			return nil
		}
		return fmt.Errorf("%s; last status %s", what, st)
	})
	return st
}

// history is the flag's history.
func (r *rig) history() []projections.Entry {
	r.t.Helper()
	var h struct{ Entries []projections.Entry }
	r.do(http.MethodGet, flagPath("/history"), nil, "", http.StatusOK, &h)
	return h.Entries
}

// flagEvents reads the flag's events with their payloads from the event feed, from the first
// through the one at sequence through.
func (r *rig) flagEvents(through uint64) []events.Event {
	r.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	q := url.Values{"environment": {env}, "flag": {flagKey}, "after": {"0"}}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, r.base+"/api/v1/events?"+q.Encode(), nil)
	if err != nil {
		r.t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+adminToken)
	resp, err := r.client.Do(req)
	if err != nil {
		r.t.Fatalf("event feed: %v", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		r.t.Fatalf("event feed: %d", resp.StatusCode)
	}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 0, 64<<10), 16<<20)
	var evs []events.Event
	for sc.Scan() {
		data, ok := bytes.CutPrefix(sc.Bytes(), []byte("data: "))
		if !ok {
			continue
		}
		var ev events.Event
		if err := json.Unmarshal(data, &ev); err != nil {
			r.t.Fatalf("event feed: %s: %v", data, err)
		}
		evs = append(evs, ev)
		if ev.Sequence >= through {
			return evs
		}
	}
	r.t.Fatalf("event feed ended before sequence %d (%d events): %v", through, len(evs), sc.Err())
	return nil
}

// decidedOf finds the guard decision with event id id among evs and decodes it.
func decidedOf(t *testing.T, evs []events.Event, id string) events.GuardDecided {
	t.Helper()
	i := slices.IndexFunc(evs, func(ev events.Event) bool { return ev.ID == id })
	if i < 0 || evs[i].Type != events.TypeGuardDecided {
		t.Fatalf("no guard decision %s among the flag's %d events", id, len(evs))
	}
	var d events.GuardDecided
	if err := json.Unmarshal(evs[i].Data, &d); err != nil {
		t.Fatalf("decision %s: %v", id, err)
	}
	return d
}

// evidenceOf decodes a decision's evidence: the calls of the guard that made it, in order.
func evidenceOf(t *testing.T, d events.GuardDecided) []guard.Evidence {
	t.Helper()
	var calls []guard.Evidence
	if err := json.Unmarshal(d.Evidence, &calls); err != nil || len(calls) == 0 {
		t.Fatalf("evidence %s: %v", d.Evidence, err)
	}
	for _, c := range calls {
		if c.Rollout != d.Rollout || c.Stage != d.Stage || c.DecisionID == "" || c.ConfigDigest == "" {
			t.Errorf("evidence call %+v does not belong to decision %+v", c, d)
		}
	}
	return calls
}

// servesOnly waits until the demo evaluates the flag at version or later, then checks that it
// serves variant alone: other stops growing while variant grows.
func (r *rig) servesOnly(version uint64, variant, other string) {
	r.t.Helper()
	r.demo.statusUntil(r.t, fmt.Sprintf("the demo to evaluate version %d", version), func(s status) bool {
		return s.Last != nil && s.Last.FlagVersion >= version
	})
	before := r.demo.scrape(r.t)
	after := r.demo.scrapeUntil(r.t, variant+" to grow", func(c counts) bool {
		return c[variant].Requests >= before[variant].Requests+1000
	})
	if after[other] != before[other] {
		r.t.Errorf("%s still served: %+v, then %+v", other, before[other], after[other])
	}
}

// showEntries lists history entries one a line, for failure messages.
func showEntries(entries []projections.Entry) string {
	var b strings.Builder
	for _, e := range entries {
		fmt.Fprintf(&b, "  %d %s %s by %s caused by %s: %s\n", e.Sequence, e.ID, e.Type, e.Actor, e.CausationID, e.Reason)
	}
	return b.String()
}

// withoutRequests drops the API's request lines from logs.
func withoutRequests(logs string) string {
	var b strings.Builder
	for line := range strings.Lines(logs) {
		if !strings.Contains(line, " msg=request ") {
			b.WriteString(line)
		}
	}
	return b.String()
}
