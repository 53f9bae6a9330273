package guard_test

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/interlock-dev/interlock/events"
	"github.com/interlock-dev/interlock/guard"
	"github.com/interlock-dev/interlock/internal/command"
	"github.com/interlock-dev/interlock/internal/natstest"
	"github.com/interlock-dev/interlock/projections"
)

const testEnv = "production"

// counters is an exposition endpoint whose counters the test moves by hand.
type counters struct {
	mu     sync.Mutex
	values map[string]float64 // "requests_total{flag=\"f\",variant=\"on\"}" → value
}

func (c *counters) add(metric, flag, variant string, v float64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.values[fmt.Sprintf("%s{flag=%q,variant=%q}", metric, flag, variant)] += v
}

func (c *counters) ServeHTTP(w http.ResponseWriter, _ *http.Request) {
	c.mu.Lock()
	defer c.mu.Unlock()
	keys := make([]string, 0, len(c.values))
	for k := range c.values {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	w.Header().Set("Content-Type", "text/plain; version=0.0.4")
	fmt.Fprintln(w, "# TYPE requests_total counter")
	fmt.Fprintln(w, "# TYPE errors_total counter")
	for _, k := range keys {
		fmt.Fprintf(w, "%s %g\n", k, c.values[k])
	}
}

// world is one Interlock write path and projection on a real NATS server, a counters endpoint,
// and a guard on a clock the test moves.
type world struct {
	t        *testing.T
	ctx      context.Context
	store    *events.Store
	svc      *command.Service
	cat      *projections.Catalog
	guard    *guard.Runner
	counters *counters
	url      string
	now      time.Time
	evidence map[string][]guard.Evidence
}

func newWorld(t *testing.T) *world {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	s := natstest.RunServer(t)
	store, err := events.Open(ctx, natstest.JetStream(t, s), events.StreamConfig{})
	if err != nil {
		t.Fatal(err)
	}
	w := &world{
		t: t, ctx: ctx, store: store, svc: command.New(store, nil),
		cat:      projections.NewCatalog(),
		counters: &counters{values: map[string]float64{}},
		now:      time.Now().UTC().Truncate(time.Second).Add(time.Minute),
		evidence: map[string][]guard.Evidence{},
	}
	run := projections.NewRunner(store, w.cat, slog.New(slog.DiscardHandler))
	done := make(chan struct{})
	go func() { defer close(done); _ = run.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	srv := httptest.NewServer(w.counters)
	t.Cleanup(srv.Close)
	w.url = srv.URL + "/metrics"
	w.guard, err = guard.NewRunner(guard.RunnerOptions{
		Catalog: w.cat, Commands: w.svc, Now: func() time.Time { return w.now },
		OnEvidence: func(env, flag string, ev guard.Evidence) {
			w.evidence[env+"/"+flag] = append(w.evidence[env+"/"+flag], ev)
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	return w
}

var person = command.Meta{Actor: "alice", Reason: "test"}

func (w *world) createFlag(key string) {
	w.t.Helper()
	_, err := flagOf(w.svc.Handle(w.ctx, command.CreateFlag{Meta: person, Env: testEnv, Key: key, Config: events.FlagConfig{
		Kind:           events.KindRelease,
		Variants:       map[string]json.RawMessage{"on": json.RawMessage("true"), "off": json.RawMessage("false")},
		DefaultVariant: "off", OffVariant: "off", Enabled: true,
	}}))
	if err != nil {
		w.t.Fatal(err)
	}
}

func (w *world) plan(onTrip string) events.RolloutPlan {
	return events.RolloutPlan{
		Treatment: "on", Control: "off",
		Stages: []events.Stage{
			{Percent: 10, MinHold: events.Duration(time.Minute)},
			{Percent: 50, MinHold: events.Duration(time.Minute)},
			{Percent: 100, MinHold: events.Duration(time.Minute)},
		},
		Metrics: []events.RolloutMetric{{Name: "errors", Requests: "requests_total", Errors: "errors_total"}},
		Source:  events.MetricSource{Type: events.SourceScrape, URL: w.url},
		OnTrip:  onTrip,
	}
}

func (w *world) startRollout(key string, plan events.RolloutPlan) {
	w.t.Helper()
	f, err := flagOf(w.svc.Handle(w.ctx, command.CreateRollout{Meta: person, Env: testEnv, Key: key, ExpectedVersion: 0, Plan: plan}))
	if err != nil {
		w.t.Fatal(err)
	}
	if _, err := w.svc.Handle(w.ctx, command.StartRollout{Meta: person, RolloutTarget: command.RolloutTarget{Env: testEnv, Key: key, ID: f.Rollout.ID}}); err != nil {
		w.t.Fatal(err)
	}
	w.sync()
}

// sync waits until the catalog has applied every event in the stream.
func (w *world) sync() {
	w.t.Helper()
	seq, err := w.store.LastSequence(w.ctx)
	if err != nil {
		w.t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(w.ctx, 10*time.Second)
	defer cancel()
	if err := w.cat.WaitSequence(ctx, seq); err != nil {
		w.t.Fatal(err)
	}
}

func (w *world) flag(key string) projections.Flag {
	w.t.Helper()
	f, ok := w.cat.Flag(testEnv, key)
	if !ok {
		w.t.Fatalf("flag %s not in the catalog", key)
	}
	return f
}

// traffic serves n requests of the flag as its split stands, with the error rates given per arm.
func (w *world) traffic(key string, n float64, errT, errC float64) {
	f := w.flag(key)
	share := 0.0
	switch {
	case !f.Enabled:
	case f.DefaultServe == nil:
	case f.DefaultServe.Variant == "on":
		share = 1
	case f.DefaultServe.Split != nil:
		total := 0
		for _, v := range f.DefaultServe.Split {
			total += v
		}
		share = float64(f.DefaultServe.Split["on"]) / float64(total)
	}
	nT := n * share
	nC := n - nT
	w.counters.add("requests_total", key, "on", nT)
	w.counters.add("errors_total", key, "on", float64(int(nT*errT+0.5)))
	w.counters.add("requests_total", key, "off", nC)
	w.counters.add("errors_total", key, "off", float64(int(nC*errC+0.5)))
}

// tick moves the clock one tick, runs the guard once and waits for its events to be applied.
func (w *world) tick() {
	w.t.Helper()
	w.now = w.now.Add(15 * time.Second)
	if err := w.guard.Tick(w.ctx); err != nil {
		w.t.Fatalf("tick at %s: %v", w.now, err)
	}
	w.sync()
}

func (w *world) history(key string) []events.Event {
	w.t.Helper()
	evs, err := w.store.Load(w.ctx, testEnv, key)
	if err != nil {
		w.t.Fatal(err)
	}
	return evs
}

func TestRunnerHealthyRolloutAdvancesToCompletion(t *testing.T) {
	w := newWorld(t)
	w.createFlag("checkout")
	w.startRollout("checkout", w.plan(events.OnTripKill))
	ticks := 0
	for ; ticks < 400 && w.flag("checkout").Rollout.Status == projections.RolloutRunning; ticks++ {
		w.traffic("checkout", 4000, 0.02, 0.02)
		w.tick()
	}
	f := w.flag("checkout")
	if f.Rollout.Status != projections.RolloutCompleted {
		t.Fatalf("after %d ticks the rollout is %s at stage %d, guard %+v", ticks, f.Rollout.Status, f.Rollout.Stage, f.Rollout.Guard)
	}
	if f.DefaultServe == nil || f.DefaultServe.Variant != "on" || !f.Enabled {
		t.Fatalf("completed rollout serves %+v (enabled %v), want the treatment", f.DefaultServe, f.Enabled)
	}
	t.Logf("completed after %d ticks of 15s", ticks)
	var advances []events.Event
	for _, ev := range w.history("checkout") {
		if ev.Type == events.TypeRolloutAdvanced || ev.Type == events.TypeRolloutCompleted {
			advances = append(advances, ev)
		}
	}
	if len(advances) != 3 {
		t.Fatalf("%d stage changes, want 3 (10→50→100→done)", len(advances))
	}
	for _, ev := range advances {
		if ev.Actor != guard.Actor || ev.CausationID == "" || ev.Reason == "" {
			t.Errorf("%s: actor %q causation %q reason %q; want the guard with its decision as causation", ev.Type, ev.Actor, ev.CausationID, ev.Reason)
		}
	}
}

func TestRunnerErrorSpikeKillsFlagWithEvidence(t *testing.T) {
	w := newWorld(t)
	w.createFlag("search")
	w.startRollout("search", w.plan(events.OnTripKill))
	startedRollout := *w.flag("search").Rollout
	for range 3 {
		w.traffic("search", 4000, 0.01, 0.01)
		w.tick()
	}
	ticks := 0
	for ; ticks < 40 && w.flag("search").Enabled; ticks++ {
		w.traffic("search", 4000, 0.20, 0.01)
		w.tick()
	}
	f := w.flag("search")
	if f.Enabled {
		t.Fatalf("flag still on after %d ticks of a 20× error rate; guard %+v", ticks, f.Rollout.Guard)
	}
	if !f.Rollout.Guard.Tripped || f.Rollout.Guard.State != string(guard.StateTripped) {
		t.Fatalf("guard status %+v, want tripped", f.Rollout.Guard)
	}
	t.Logf("killed after %d ticks of the spike", ticks)

	var decided, killed *events.Event
	hist := w.history("search")
	for i := range hist {
		ev := &hist[i]
		switch ev.Type {
		case events.TypeGuardDecided:
			decided = ev
		case events.TypeFlagKilled:
			killed = ev
		}
	}
	if decided == nil || killed == nil {
		t.Fatal("history has no trip decision or no kill")
	}
	if killed.Actor != guard.Actor || killed.CausationID != decided.ID || killed.CorrelationID != f.Rollout.ID {
		t.Fatalf("kill actor %q causation %q correlation %q; want guard, %s, %s", killed.Actor, killed.CausationID, killed.CorrelationID, decided.ID, f.Rollout.ID)
	}
	p, err := decided.Payload()
	if err != nil {
		t.Fatal(err)
	}
	d := p.(*events.GuardDecided)
	if d.StateAfter != string(guard.StateTripped) || d.Action != string(guard.ActionKill) {
		t.Fatalf("decision %+v", d)
	}
	var calls []guard.Evidence
	if err := json.Unmarshal(d.Evidence, &calls); err != nil {
		t.Fatal(err)
	}
	if len(calls) != 2 || calls[0].Call != guard.CallDecide || calls[1].Call != guard.CallConfirm {
		t.Fatalf("evidence calls %v, want decide then confirm", calls)
	}
	m := calls[1].Metrics[0]
	if m.Treatment.Requests.Query == "" || !strings.Contains(m.Treatment.Requests.Query, `variant="on"`) ||
		m.Treatment.Requests.Endpoint == "" || float64(m.R1.E) < 1/0.01 && float64(m.R3.Lower) == 0 {
		t.Fatalf("evidence lacks queries, endpoint or statistic: %+v", m)
	}

	// Replaying the guard's recorded inputs reproduces its decisions, the trip included.
	rec := w.evidence[testEnv+"/search"]
	replayed, err := guard.Replay(guard.StageConfig("search", &startedRollout), rec[0].StageStart, rec)
	if err != nil {
		t.Fatal(err)
	}
	a, _ := json.Marshal(replayed)
	b, _ := json.Marshal(rec)
	if string(a) != string(b) {
		t.Fatalf("replay differs from the recorded decisions")
	}
}

// flagOf takes the flag out of what the command service's Handle returns.
func flagOf(r command.Result, err error) (projections.Flag, error) { return r.Flag, err }
