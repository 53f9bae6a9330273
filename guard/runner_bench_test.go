package guard_test

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/interlock-dev/interlock/events"
	"github.com/interlock-dev/interlock/guard"
	"github.com/interlock-dev/interlock/guard/source"
	"github.com/interlock-dev/interlock/internal/command"
	"github.com/interlock-dev/interlock/internal/natstest"
	"github.com/interlock-dev/interlock/local"
	"github.com/interlock-dev/interlock/projections"
	"github.com/interlock-dev/interlock/targeting"
)

var (
	tripBench      = flag.Bool("guard.tripbench", false, "measure trip decision → kill applied by an in-process subscriber (slow; see docs/bench/guard-runner.md)")
	tripBenchFlags = flag.Int("guard.tripbench.flags", 200, "guarded rollouts, each tripped once, one at a time")
)

// bench is an Interlock write path and catalog on a real NATS server, for benchmarks.
type bench struct {
	srv   *server.Server
	ctx   context.Context
	store *events.Store
	svc   *command.Service
	cat   *projections.Catalog
	now   time.Time
}

func newBench(tb testing.TB, opts natstest.Options) *bench {
	tb.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	s := natstest.RunServer(tb, opts)
	store, err := events.Open(ctx, natstest.JetStream(tb, s), events.StreamConfig{})
	if err != nil {
		tb.Fatal(err)
	}
	b := &bench{
		srv: s, ctx: ctx, store: store, svc: command.New(store, nil), cat: projections.NewCatalog(),
		now: time.Now().UTC().Truncate(time.Second).Add(time.Minute),
	}
	run := projections.NewRunner(store, b.cat, slog.New(slog.DiscardHandler))
	done := make(chan struct{})
	go func() { defer close(done); _ = run.Run(ctx) }()
	tb.Cleanup(func() { cancel(); <-done })
	return b
}

// rollouts creates n flags bench-0000… and starts a rollout of each with plan.
func (b *bench) rollouts(tb testing.TB, n int, plan events.RolloutPlan) []string {
	tb.Helper()
	keys := make([]string, n)
	for i := range keys {
		keys[i] = fmt.Sprintf("bench-%04d", i)
		if _, err := flagOf(b.svc.Handle(b.ctx, command.CreateFlag{Meta: person, Env: testEnv, Key: keys[i], Config: events.FlagConfig{
			Kind:           events.KindRelease,
			Variants:       map[string]json.RawMessage{"on": json.RawMessage("true"), "off": json.RawMessage("false")},
			DefaultVariant: "off", OffVariant: "off", Enabled: true,
		}})); err != nil {
			tb.Fatal(err)
		}
		f, err := flagOf(b.svc.Handle(b.ctx, command.CreateRollout{Meta: person, Env: testEnv, Key: keys[i], ExpectedVersion: 0, Plan: plan}))
		if err != nil {
			tb.Fatal(err)
		}
		if _, err := b.svc.Handle(b.ctx, command.StartRollout{Meta: person, RolloutTarget: command.RolloutTarget{Env: testEnv, Key: keys[i], ID: f.Rollout.ID}}); err != nil {
			tb.Fatal(err)
		}
	}
	b.sync(tb)
	return keys
}

func (b *bench) sync(tb testing.TB) {
	tb.Helper()
	seq, err := b.store.LastSequence(b.ctx)
	if err != nil {
		tb.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(b.ctx, time.Minute)
	defer cancel()
	if err := b.cat.WaitSequence(ctx, seq); err != nil {
		tb.Fatal(err)
	}
}

// exposition serves a prerendered text exposition of requests_total and errors_total for every
// flag and both variants; next moves every counter on by one tick of healthy, evenly split
// traffic and renders the body again.
type exposition struct {
	keys []string
	tick float64
	body atomic.Pointer[[]byte]
}

func (e *exposition) next() {
	e.tick++
	buf := make([]byte, 0, 96*4*len(e.keys))
	for _, metric := range []struct {
		name string
		per  float64
	}{{"requests_total", 1000}, {"errors_total", 10}} {
		buf = append(buf, "# TYPE "+metric.name+" counter\n"...)
		for _, k := range e.keys {
			for _, v := range []string{"on", "off"} {
				buf = append(buf, metric.name+`{flag="`+k+`",variant="`+v+`"} `...)
				buf = strconv.AppendFloat(buf, metric.per*e.tick, 'f', -1, 64)
				buf = append(buf, '\n')
			}
		}
	}
	e.body.Store(&buf)
}

func (e *exposition) ServeHTTP(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/plain; version=0.0.4")
	_, _ = w.Write(*e.body.Load())
}

// prescraped is a scrape source the runner does not scrape itself (it is not a
// *source.ScrapeSource): the benchmark scrapes it outside the timer.
type prescraped struct{ *source.ScrapeSource }

// BenchmarkRunnerTick1000 is one guard pass over 1,000 running rollouts, every one due, all
// reading one exposition endpoint of 4,000 counters that move every pass. The rollouts are
// healthy and settled (HEALTHY, a minimum hold they never reach): a pass writes no event.
// "scrape" includes the scrape (HTTP, decoding, evaluating 4,000 queries); "prescraped" only
// the catalog walk, the readings and the decisions.
func BenchmarkRunnerTick1000(b *testing.B) {
	const n = 1000
	for _, scrapeInTick := range []bool{true, false} {
		name := "scrape"
		if !scrapeInTick {
			name = "prescraped"
		}
		b.Run(name, func(b *testing.B) {
			w := newBench(b, natstest.Options{})
			expo := &exposition{}
			srv := httptest.NewServer(expo)
			b.Cleanup(srv.Close)
			plan := events.RolloutPlan{
				Treatment: "on", Control: "off",
				Stages:  []events.Stage{{Percent: 50, MinHold: events.Duration(720 * time.Hour)}},
				Metrics: []events.RolloutMetric{{Name: "errors", Requests: "requests_total", Errors: "errors_total"}},
				Source:  events.MetricSource{Type: events.SourceScrape, URL: srv.URL + "/metrics", Interval: events.Duration(15 * time.Second)},
				Tick:    events.Duration(100 * time.Millisecond), // the shortest a plan allows
			}
			expo.keys = w.rollouts(b, n, plan)
			expo.next()
			var src *source.ScrapeSource
			g, err := guard.NewRunner(guard.RunnerOptions{
				Catalog: w.cat, Commands: w.svc, Now: func() time.Time { return w.now },
				Sources: func(s events.MetricSource) (guard.CounterSource, error) {
					// The default source follows 1,024 queries at most: 256 rollouts.
					var err error
					src, err = source.NewScrapeSource(source.ScrapeOptions{
						URL: s.URL, Interval: s.Interval.Std(0), MaxQueries: 4 * n, Now: func() time.Time { return w.now },
					})
					if scrapeInTick {
						return src, err
					}
					return prescraped{src}, err
				},
			})
			if err != nil {
				b.Fatal(err)
			}
			pass := func() {
				w.now = w.now.Add(100 * time.Millisecond)
				expo.next()
				if !scrapeInTick && src != nil {
					if err := src.Scrape(w.ctx); err != nil {
						b.Fatal(err)
					}
				}
			}
			// Settle: a baseline, then WARMUP → HEALTHY (one decision event per rollout).
			for range 4 {
				pass()
				if err := g.Tick(w.ctx); err != nil {
					b.Fatal(err)
				}
			}
			w.sync(b)
			for _, k := range expo.keys {
				st, ok := g.Live(testEnv, k)
				if !ok || st.(guard.Status).State != guard.StateHealthy {
					b.Fatalf("%s did not settle: %+v", k, st)
				}
			}
			before, err := w.store.LastSequence(w.ctx)
			if err != nil {
				b.Fatal(err)
			}
			b.ReportAllocs()
			for b.Loop() {
				b.StopTimer()
				pass()
				b.StartTimer()
				if err := g.Tick(w.ctx); err != nil {
					b.Fatal(err)
				}
			}
			b.StopTimer()
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/n, "ns/rollout")
			after, err := w.store.LastSequence(w.ctx)
			if err != nil {
				b.Fatal(err)
			}
			if after != before {
				b.Fatalf("settled passes wrote %d events", after-before)
			}
			for _, k := range expo.keys {
				if st, _ := g.Live(testEnv, k); st.(guard.Status).State != guard.StateHealthy {
					b.Fatalf("%s left HEALTHY: %+v", k, st)
				}
			}
		})
	}
}

// stamping is the guard's [guard.Commands] noting when the trip decision and the kill of one
// flag returned: appended and acknowledged.
type stamping struct {
	next             guard.Commands
	mu               sync.Mutex
	key              string
	recorded, killed time.Time
}

func (s *stamping) Handle(ctx context.Context, c command.Command) (command.Result, error) {
	res, err := s.next.Handle(ctx, c)
	at := time.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	if err == nil && res.Flag.Key == s.key {
		switch c := c.(type) {
		case command.RecordDecision:
			if c.Decision.StateAfter == string(guard.StateTripped) {
				s.recorded = at
			}
		case command.KillFlag:
			s.killed = at
		}
	}
	return res, err
}

// TestRunnerTripPropagation measures, on one JetStream server over TCP on loopback with fsync on
// every write (as in production), the time from the start of the guard pass that confirms a trip
// to an in-process subscriber (package local, on its own connection) evaluating the flag as
// disabled, for rollouts tripped one at a time while the others stay healthy and are judged in
// the same passes. It also splits the path: the trip decision's append acknowledged, the kill's
// append acknowledged. It only runs with -guard.tripbench and only reports: timings are never
// asserted.
func TestRunnerTripPropagation(t *testing.T) {
	if !*tripBench {
		t.Skip("run with -guard.tripbench to measure")
	}
	n := *tripBenchFlags
	w := newBench(t, natstest.Options{Sync: true})
	cnt := &counters{values: map[string]float64{}}
	srv := httptest.NewServer(cnt)
	t.Cleanup(srv.Close)
	plan := events.RolloutPlan{
		Treatment: "on", Control: "off",
		Stages: []events.Stage{{Percent: 10, MinHold: events.Duration(720 * time.Hour)}},
		// R3's ceiling trips a 50% error rate in the first pass that sees it, however long the
		// rollout was healthy before (R1 would take longer and longer: its e-process drifts down
		// while the data are healthy).
		Metrics: []events.RolloutMetric{{Name: "errors", Requests: "requests_total", Errors: "errors_total", Ceiling: 0.02}},
		Source:  events.MetricSource{Type: events.SourceScrape, URL: srv.URL + "/metrics"},
		OnTrip:  events.OnTripKill,
	}
	keys := w.rollouts(t, n, plan)
	cmds := &stamping{next: w.svc}
	g, err := guard.NewRunner(guard.RunnerOptions{
		Catalog: w.cat, Commands: cmds, Now: func() time.Time { return w.now },
		Sources: func(s events.MetricSource) (guard.CounterSource, error) {
			return source.NewScrapeSource(source.ScrapeOptions{URL: s.URL, Interval: s.Interval.Std(0), MaxQueries: 4 * n, Now: func() time.Time { return w.now }})
		},
	})
	if err != nil {
		t.Fatal(err)
	}

	c, err := local.New(natstest.Connect(t, w.srv), local.Config{Environment: testEnv, NoSnapshot: true, NoPresence: true})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("local client: %v", err)
		}
		c.Close()
	})
	var watched atomic.Pointer[string]
	applied := make(chan time.Time, 1)
	c.Observe(func(nt local.Notice) {
		k := watched.Load()
		if nt.Kind != local.NoticeChanged || k == nil || !slices.Contains(nt.Keys, *k) {
			return
		}
		if c.Evaluate(*k, &targeting.EvalContext{TargetingKey: "u"}).Reason == targeting.ReasonDisabled {
			select {
			case applied <- time.Now():
			default:
			}
		}
	})
	wctx, wcancel := context.WithTimeout(ctx, time.Minute)
	defer wcancel()
	if err := c.WaitReady(wctx); err != nil {
		t.Fatal(err)
	}

	// traffic serves every flag one tick of traffic; spike's treatment fails 50 times more.
	traffic := func(spike string) {
		for _, k := range keys {
			if k == spike {
				cnt.add("requests_total", k, "on", 400)
				cnt.add("errors_total", k, "on", 200)
			} else {
				cnt.add("requests_total", k, "on", 400)
				cnt.add("errors_total", k, "on", 4)
			}
			cnt.add("requests_total", k, "off", 3600)
			cnt.add("errors_total", k, "off", 36)
		}
	}
	tick := func() {
		w.now = w.now.Add(15 * time.Second)
		if err := g.Tick(w.ctx); err != nil {
			t.Fatal(err)
		}
	}
	for range 3 {
		traffic("")
		tick()
	}
	w.sync(t)

	var fromTick, fromRecord, fromKill, toRecord, inGuard []time.Duration
	early, passes := 0, 0
	for _, k := range keys {
		cmds.mu.Lock()
		cmds.key, cmds.recorded, cmds.killed = k, time.Time{}, time.Time{}
		cmds.mu.Unlock()
		watched.Store(&k)
		var start time.Time
		for range 10 {
			traffic(k)
			start = time.Now()
			tick()
			passes++
			cmds.mu.Lock()
			killed := !cmds.killed.IsZero()
			cmds.mu.Unlock()
			if killed {
				break
			}
		}
		var at time.Time
		select {
		case at = <-applied:
		case <-time.After(time.Minute):
			f, _ := w.cat.Flag(testEnv, k)
			cmds.mu.Lock()
			t.Fatalf("%s: the kill was not applied by the subscriber within a minute (killed at %v, catalog: enabled %v, guard %+v; subscriber serves %+v)",
				k, cmds.killed, f.Enabled, f.Rollout.Guard, c.Evaluate(k, &targeting.EvalContext{TargetingKey: "u"}))
		}
		cmds.mu.Lock()
		recorded, killed := cmds.recorded, cmds.killed
		cmds.mu.Unlock()
		if killed.IsZero() {
			t.Fatalf("%s did not trip", k)
		}
		if at.Before(killed) {
			early++
		}
		fromTick = append(fromTick, at.Sub(start))
		fromRecord = append(fromRecord, max(at.Sub(recorded), 0))
		fromKill = append(fromKill, max(at.Sub(killed), 0))
		toRecord = append(toRecord, recorded.Sub(start))
		inGuard = append(inGuard, killed.Sub(start))
	}

	var sb strings.Builder
	fmt.Fprintf(&sb, "\n%d rollouts tripped one at a time (the others judged in the same passes); JetStream fsync on every write; TCP loopback\n", n)
	fmt.Fprintf(&sb, "%-62s %9s %9s %9s %9s\n", "path", "p50", "p90", "p99", "max")
	row := func(name string, d []time.Duration) {
		s := slices.Clone(d)
		slices.Sort(s)
		at := func(q float64) time.Duration { return s[int(q*float64(len(s)-1))].Round(time.Microsecond) }
		fmt.Fprintf(&sb, "%-62s %9s %9s %9s %9s\n", name, at(0.5), at(0.9), at(0.99), s[len(s)-1].Round(time.Microsecond))
	}
	row("pass start → subscriber evaluates the flag disabled", fromTick)
	row("trip decision appended (acknowledged) → subscriber disabled", fromRecord)
	row("kill appended (acknowledged) → subscriber disabled", fromKill)
	row("(in the guard) pass start → trip decision acknowledged", toRecord)
	row("(in the guard) pass start → kill acknowledged", inGuard)
	fmt.Fprintf(&sb, "subscriber applied the kill before the guard had its acknowledgement (counted as 0): %d of %d; passes with a spike: %d\n", early, n, passes)
	t.Log(sb.String())
}

// TestRatioTripDelayAfterHealthyHistory reports how many ticks R1 takes to trip a regression
// after a run of healthy ticks, as the plain mixture and with late starts (the machine's
// default): the plain e-process drifts down while the data are healthy, so the longer a rollout
// was healthy, the longer a regression takes to trip it. 15 s ticks of 400 treatment and 3,600
// control requests, 1% errors on both arms, then 2× or 20× on the treatment. It only runs with
// -guard.tripbench and only reports.
func TestRatioTripDelayAfterHealthyHistory(t *testing.T) {
	if !*tripBench {
		t.Skip("run with -guard.tripbench to measure")
	}
	var sb strings.Builder
	fmt.Fprintf(&sb, "\n%-22s %10s %10s %12s %12s\n", "healthy before", "plain 2×", "plain 20×", "late st. 2×", "late st. 20×")
	for _, healthy := range []int{0, 40, 240, 960, 5760} {
		fmt.Fprintf(&sb, "%-22s", fmt.Sprintf("%d ticks (%v)", healthy, time.Duration(healthy)*15*time.Second))
		for _, c := range []struct{ late, xT float64 }{{0, 8}, {0, 80}, {guard.LateStartWeight, 8}, {guard.LateStartWeight, 80}} {
			xT := c.xT
			r, err := guard.NewRatioTest(1)
			if err == nil {
				r, err = r.WithLateStarts(c.late)
			}
			if err != nil {
				t.Fatal(err)
			}
			for range healthy {
				r.Observe(400, 3600, 4, 36)
			}
			n := 0
			for ; !r.Exceeds(0.01) && n < 100_000; n++ {
				r.Observe(400, 3600, xT, 36)
			}
			fmt.Fprintf(&sb, " %11d", n)
		}
		sb.WriteByte('\n')
	}
	t.Log(sb.String())
}
