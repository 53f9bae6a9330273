package guard_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/interlock-dev/interlock/events"
	"github.com/interlock-dev/interlock/guard"
	"github.com/interlock-dev/interlock/internal/await"
	"github.com/interlock-dev/interlock/internal/command"
)

func TestRunnerValvePolicyOpensOnBurnAndClosesWhenHealthy(t *testing.T) {
	w := newWorld(t)
	_, err := flagOf(w.svc.Handle(w.ctx, command.CreateFlag{Meta: person, Env: testEnv, Key: "search-degraded", Config: events.FlagConfig{
		Kind:           events.KindOperational,
		Variants:       map[string]json.RawMessage{"open": json.RawMessage("true"), "closed": json.RawMessage("false")},
		DefaultVariant: "closed", OffVariant: "closed", Enabled: true,
	}}))
	if err != nil {
		t.Fatal(err)
	}
	_, err = flagOf(w.svc.Handle(w.ctx, command.ConfigureValve{Meta: person, Env: testEnv, Key: "search-degraded", ExpectedVersion: 0, Valve: events.ValveConfigured{
		Variant: "open",
		Policy: &events.ValvePolicy{
			Source:   events.MetricSource{Type: events.SourceScrape, URL: w.url},
			Requests: `requests_total{flag="search"}`, Errors: `errors_total{flag="search"}`,
			Objective: 0.01, BurnRate: 10,
			Long: events.Duration(10 * time.Minute), Short: events.Duration(time.Minute),
			MinOpen: events.Duration(2 * time.Minute), HealthyFor: events.Duration(3 * time.Minute),
		},
	}}))
	if err != nil {
		t.Fatal(err)
	}
	w.sync()
	load := func(errRate float64) {
		w.counters.add("requests_total", "search", "x", 1000)
		w.counters.add("errors_total", "search", "x", 1000*errRate)
		w.tick()
	}
	for range 20 {
		load(0.001)
	}
	if w.flag("search-degraded").Valve.Open {
		t.Fatal("valve opened on a healthy service")
	}
	opened := 0
	for ; opened < 20 && !w.flag("search-degraded").Valve.Open; opened++ {
		load(0.5)
	}
	v := w.flag("search-degraded").Valve
	if !v.Open || v.OpenedBy != guard.Actor {
		t.Fatalf("after %d ticks of 50%% errors the valve is %+v", opened, v)
	}
	t.Logf("opened after %d ticks of 50%% errors", opened)
	closed := 0
	for ; closed < 100 && w.flag("search-degraded").Valve.Open; closed++ {
		load(0)
	}
	v = w.flag("search-degraded").Valve
	if v.Open || v.Cause != events.ValveClosedHealthy {
		t.Fatalf("after %d healthy ticks the valve is %+v", closed, v)
	}
	// It stayed open at least its minimum time and closed only after the healthy period.
	if d := v.ClosedAt.Sub(v.OpenedAt); d < 0 {
		t.Fatalf("closed before it opened: %v", d)
	}
	if closed < int((3*time.Minute)/(15*time.Second)) {
		t.Fatalf("closed after %d healthy ticks, before the 3m healthy period", closed)
	}
	var open, shut *events.Event
	hist := w.history("search-degraded")
	for i := range hist {
		switch hist[i].Type {
		case events.TypeValveOpened:
			open = &hist[i]
		case events.TypeValveClosed:
			shut = &hist[i]
		}
	}
	if open == nil || shut == nil || open.Actor != guard.Actor || open.Reason == "" {
		t.Fatalf("valve events %+v %+v", open, shut)
	}
	p, err := open.Payload()
	if err != nil {
		t.Fatal(err)
	}
	var d guard.ValveDecision
	if err := json.Unmarshal(p.(*events.ValveOpened).Evidence, &d); err != nil {
		t.Fatal(err)
	}
	if d.Action != guard.ActionOpenValve || float64(d.Long.Burn) < 10 || float64(d.Short.Burn) < 10 || d.Requests.Query == "" {
		t.Fatalf("open evidence %+v", d)
	}
}

func TestRunnerManualValveExpires(t *testing.T) {
	w := newWorld(t)
	_, err := flagOf(w.svc.Handle(w.ctx, command.CreateFlag{Meta: person, Env: testEnv, Key: "recs-off", Config: events.FlagConfig{
		Kind:           events.KindOperational,
		Variants:       map[string]json.RawMessage{"open": json.RawMessage("true"), "closed": json.RawMessage("false")},
		DefaultVariant: "closed", OffVariant: "closed", Enabled: true,
	}}))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.svc.Handle(w.ctx, command.ConfigureValve{Meta: person, Env: testEnv, Key: "recs-off", ExpectedVersion: 0, Valve: events.ValveConfigured{Variant: "open"}}); err != nil {
		t.Fatal(err)
	}
	expires := w.now.Add(time.Minute)
	if _, err := w.svc.Handle(w.ctx, command.OpenValve{Meta: meta("on-call", "db overload"), Env: testEnv, Key: "recs-off", Expires: expires}); err != nil {
		t.Fatal(err)
	}
	w.sync()
	w.tick()
	if !w.flag("recs-off").Valve.Open {
		t.Fatal("valve closed before its expiry")
	}
	for range 4 {
		w.tick()
	}
	v := w.flag("recs-off").Valve
	if v.Open || v.Cause != events.ValveClosedExpired {
		t.Fatalf("valve after its expiry: %+v", v)
	}
}

func meta(actor, reason string) command.Meta { return command.Meta{Actor: actor, Reason: reason} }

// A replica that takes over after a trip (a new runner) shows the rollout tripped and leaves it
// alone until a person re-arms it.
func TestRunnerTakeoverKeepsTripLatched(t *testing.T) {
	w := newWorld(t)
	w.createFlag("pay")
	w.startRollout("pay", w.plan(events.OnTripFreeze))
	for range 3 {
		w.traffic("pay", 4000, 0.01, 0.01)
		w.tick()
	}
	for i := 0; i < 40 && !w.flag("pay").Rollout.Guard.Tripped; i++ {
		w.traffic("pay", 4000, 0.3, 0.01)
		w.tick()
	}
	if !w.flag("pay").Rollout.Guard.Tripped {
		t.Fatal("no trip")
	}
	next, err := guard.NewRunner(guard.RunnerOptions{Catalog: w.cat, Commands: w.svc, Now: func() time.Time { return w.now }})
	if err != nil {
		t.Fatal(err)
	}
	before := len(w.history("pay"))
	for range 3 {
		w.now = w.now.Add(15 * time.Second)
		w.traffic("pay", 4000, 0.3, 0.01)
		if err := next.Tick(w.ctx); err != nil {
			t.Fatal(err)
		}
		w.sync()
	}
	if n := len(w.history("pay")); n != before {
		t.Fatalf("the new runner wrote %d events about a tripped rollout", n-before)
	}
	live, ok := next.Live(testEnv, "pay")
	if !ok || live.(guard.Status).State != guard.StateTripped {
		t.Fatalf("live status after takeover: %+v %v", live, ok)
	}
}

// Run looks every Resolution, each time a moment early or late: a rollout whose tick equals the
// resolution is judged on every pass, not on every other one.
func TestRunnerJudgesEveryPassWhenTickEqualsResolution(t *testing.T) {
	w := newWorld(t)
	var err error
	w.guard, err = guard.NewRunner(guard.RunnerOptions{
		Catalog: w.cat, Commands: w.svc, Resolution: time.Second, Now: func() time.Time { return w.now },
		OnEvidence: func(env, flag string, ev guard.Evidence) {
			w.evidence[env+"/"+flag] = append(w.evidence[env+"/"+flag], ev)
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	w.createFlag("tick")
	plan := w.plan(events.OnTripKill)
	plan.Tick = events.Duration(time.Second)
	w.startRollout("tick", plan)
	for i := range 20 {
		w.traffic("tick", 1000, 0.01, 0.01)
		step := 990 * time.Millisecond // a pass slightly early ...
		if i%2 == 1 {
			step = 1010 * time.Millisecond // ... then slightly late
		}
		w.now = w.now.Add(step)
		if err := w.guard.Tick(w.ctx); err != nil {
			t.Fatal(err)
		}
		w.sync()
	}
	decides := 0
	for _, ev := range w.evidence[testEnv+"/tick"] {
		if ev.Call == guard.CallDecide {
			decides++
		}
	}
	if decides != 20 {
		t.Fatalf("%d decisions in 20 passes one tick apart", decides)
	}
}

// blockingCommands holds the guard's commands until released, once armed.
type blockingCommands struct {
	guard.Commands
	armed   chan struct{} // closed: block the next command
	entered chan struct{}
	release chan struct{}
}

func (b *blockingCommands) Handle(ctx context.Context, c command.Command) (command.Result, error) {
	select {
	case <-b.armed:
		b.entered <- struct{}{}
		<-b.release
	default:
	}
	return b.Commands.Handle(ctx, c)
}

// Live answers from the last pass while a pass waits on a command.
func TestRunnerLiveDoesNotWaitForAPass(t *testing.T) {
	w := newWorld(t)
	cmds := &blockingCommands{Commands: w.svc, armed: make(chan struct{}), entered: make(chan struct{}, 8), release: make(chan struct{})}
	var err error
	w.guard, err = guard.NewRunner(guard.RunnerOptions{Catalog: w.cat, Commands: cmds, Now: func() time.Time { return w.now }})
	if err != nil {
		t.Fatal(err)
	}
	w.createFlag("live")
	w.startRollout("live", w.plan(events.OnTripKill))
	w.traffic("live", 4000, 0.01, 0.01)
	w.tick() // baseline: nothing to record
	if _, ok := w.guard.Live(testEnv, "live"); !ok {
		t.Fatal("no live status after a pass")
	}
	close(cmds.armed)
	w.traffic("live", 4000, 0.01, 0.01)
	w.now = w.now.Add(15 * time.Second)
	done := make(chan error, 1)
	go func() { done <- w.guard.Tick(w.ctx) }()
	<-cmds.entered // the pass is now inside a command
	answered := make(chan bool, 1)
	go func() { _, ok := w.guard.Live(testEnv, "live"); answered <- ok }()
	await.Eventually(t, 30*time.Second, func() bool { return len(answered) == 1 }, "Live waited for the pass")
	close(cmds.release)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if !<-answered {
		t.Fatal("Live had no status during the pass")
	}
}

// refuseFirstAdvance refuses the guard's first advance, as the write path does when the flag
// changed under it.
type refuseFirstAdvance struct {
	guard.Commands
	refused int
}

func (c *refuseFirstAdvance) Handle(ctx context.Context, cmd command.Command) (command.Result, error) {
	if _, ok := cmd.(command.AdvanceRollout); ok && c.refused == 0 {
		c.refused++
		return command.Result{}, fmt.Errorf("%w: the flag changed", guard.ErrRefused)
	}
	return c.Commands.Handle(ctx, cmd)
}

// A READY rollout whose advance was refused asks again on its next tick, and advances once.
func TestRunnerAdvancesAgainWhenStillReady(t *testing.T) {
	w := newWorld(t)
	cmds := &refuseFirstAdvance{Commands: w.svc}
	var err error
	w.guard, err = guard.NewRunner(guard.RunnerOptions{Catalog: w.cat, Commands: cmds, Now: func() time.Time { return w.now }})
	if err != nil {
		t.Fatal(err)
	}
	w.createFlag("again")
	w.startRollout("again", w.plan(events.OnTripKill))
	for i := 0; i < 100 && w.flag("again").Rollout.Stage == 0; i++ {
		w.traffic("again", 4000, 0.02, 0.02)
		w.now = w.now.Add(15 * time.Second)
		if err := w.guard.Tick(w.ctx); err != nil && !errors.Is(err, guard.ErrRefused) {
			t.Fatal(err)
		}
		w.sync()
	}
	if cmds.refused != 1 || w.flag("again").Rollout.Stage != 1 {
		t.Fatalf("refused %d advances; rollout at stage %d", cmds.refused, w.flag("again").Rollout.Stage)
	}
	advances := 0
	for _, ev := range w.history("again") {
		if ev.Type == events.TypeRolloutAdvanced {
			advances++
		}
	}
	if advances != 1 {
		t.Fatalf("%d advance events, want 1", advances)
	}
}
