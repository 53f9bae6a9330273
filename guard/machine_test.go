package guard_test

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/interlock-dev/interlock/guard"
	"github.com/interlock-dev/interlock/guard/source"
)

var decT0 = time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)

func decConfig() guard.MachineConfig {
	return guard.MachineConfig{
		Rollout: "ro-1", Stage: 2, Flag: "checkout", Variant: "new", Control: "old", Segment: "eu",
		Share:        0.5,
		Metrics:      []guard.MetricRule{{Name: "errors", Kind: guard.KindRatio, Ceiling: 0.05}},
		MinHold:      5 * time.Minute,
		MaxExtension: 30 * time.Minute,
	}
}

func okReading(v float64, at time.Time) source.Reading {
	return source.Reading{Value: v, At: at, Requested: at, Status: source.ReadingOK,
		Query: `sum(requests_total{variant="x"})`, Endpoint: "http://prom:9090"}
}

// decCounts are one arm's cumulative requests and errors.
type decCounts struct{ req, errs float64 }

func decArm(c decCounts, at time.Time) guard.ArmReadings {
	return guard.ArmReadings{Requests: okReading(c.req, at), Errors: okReading(c.errs, at)}
}

// decFeed drives a machine with one metric, keeping the cumulative counters of both arms.
type decFeed struct {
	t    *testing.T
	m    *guard.Machine
	now  time.Time
	cum  [2]decCounts
	n    int
	evs  []guard.Evidence
	step time.Duration
}

func newDecFeed(t *testing.T, cfg guard.MachineConfig) *decFeed {
	t.Helper()
	m, err := guard.NewMachine(cfg, decT0)
	if err != nil {
		t.Fatal(err)
	}
	return &decFeed{t: t, m: m, now: decT0, step: 15 * time.Second}
}

func (f *decFeed) tickFor(name string) guard.Tick {
	return guard.Tick{Time: f.now, Metrics: []guard.MetricReadings{{
		Name: name, Treatment: decArm(f.cum[0], f.now), Control: decArm(f.cum[1], f.now),
	}}}
}

func (f *decFeed) id() string {
	f.n++
	return fmt.Sprintf("d%d", f.n)
}

// add advances the clock one step, adds the deltas and runs Decide (and Confirm with the same
// readings if asked). It returns the last evidence.
func (f *decFeed) add(dT, dC decCounts) guard.Evidence {
	f.t.Helper()
	f.now = f.now.Add(f.step)
	f.cum[0].req += dT.req
	f.cum[0].errs += dT.errs
	f.cum[1].req += dC.req
	f.cum[1].errs += dC.errs
	return f.decide(f.tickFor("errors"))
}

func (f *decFeed) decide(tk guard.Tick) guard.Evidence {
	f.t.Helper()
	ev, err := f.m.Decide(f.id(), tk)
	if err != nil {
		f.t.Fatal(err)
	}
	f.evs = append(f.evs, ev)
	if ev.Action == guard.ActionConfirm {
		if ev, err = f.m.Confirm(f.id(), tk); err != nil {
			f.t.Fatal(err)
		}
		f.evs = append(f.evs, ev)
	}
	return ev
}

func TestMachineConfigValidate(t *testing.T) {
	if err := decConfig().Validate(); err != nil {
		t.Fatalf("valid config: %v", err)
	}
	tests := []struct {
		name   string
		mutate func(*guard.MachineConfig)
		want   string
	}{
		{"no flag", func(c *guard.MachineConfig) { c.Flag = "" }, "flag"},
		{"no variant", func(c *guard.MachineConfig) { c.Variant = "" }, "variant"},
		{"share 0", func(c *guard.MachineConfig) { c.Share = -0.1 }, "share"},
		{"share > 1", func(c *guard.MachineConfig) { c.Share = 1.5 }, "share"},
		{"share NaN", func(c *guard.MachineConfig) { c.Share = math.NaN() }, "share"},
		{"no control", func(c *guard.MachineConfig) { c.Control = "" }, "control"},
		{"control is variant", func(c *guard.MachineConfig) { c.Control = "new" }, "control"},
		{"no metrics", func(c *guard.MachineConfig) { c.Metrics = nil }, "metrics"},
		{"only msprt", func(c *guard.MachineConfig) { c.Metrics = []guard.MetricRule{{Name: "conv", Kind: guard.KindMSPRT}} }, "at least one"},
		{"duplicate metric", func(c *guard.MachineConfig) { c.Metrics = append(c.Metrics, c.Metrics[0]) }, "duplicate"},
		{"unnamed metric", func(c *guard.MachineConfig) { c.Metrics[0].Name = "" }, "name"},
		{"bad kind", func(c *guard.MachineConfig) { c.Metrics[0].Kind = "ttest" }, "kind"},
		{"ceiling 1", func(c *guard.MachineConfig) { c.Metrics[0].Ceiling = 1 }, "ceiling"},
		{"alpha 1", func(c *guard.MachineConfig) { c.Alpha = 1 }, "alpha"},
		{"alphaAdvance", func(c *guard.MachineConfig) { c.AlphaAdvance = 2 }, "alphaAdvance"},
		{"r0 negative", func(c *guard.MachineConfig) { c.R0 = -1 }, "r0"},
		{"rMax below r0", func(c *guard.MachineConfig) { c.R0, c.RMax = 1.2, 1.1 }, "rMax"},
		{"tau Inf", func(c *guard.MachineConfig) { c.Tau = math.Inf(1) }, "tau"},
		{"minExposure negative", func(c *guard.MachineConfig) { c.MinExposure = -1 }, "minExposure"},
		{"minExpectedErrors NaN", func(c *guard.MachineConfig) { c.MinExpectedErrors = math.NaN() }, "minExpectedErrors"},
		{"srmAlpha", func(c *guard.MachineConfig) { c.SRMAlpha = 1 }, "srmAlpha"},
		{"negative hold", func(c *guard.MachineConfig) { c.MinHold = -time.Second }, "minHold"},
		{"freshTicks", func(c *guard.MachineConfig) { c.FreshTicks = -1 }, "freshTicks"},
		{"onBlind", func(c *guard.MachineConfig) { c.OnBlind = guard.ActionKill }, "onBlind"},
		{"onInconclusive", func(c *guard.MachineConfig) { c.OnInconclusive = guard.ActionAdvance }, "onInconclusive"},
		{"onTrip", func(c *guard.MachineConfig) { c.OnTrip = guard.ActionHold }, "onTrip"},
		{"floorMinRequests", func(c *guard.MachineConfig) { c.FloorMinRequests = -5 }, "floorMinRequests"},
		{"floorConfidence", func(c *guard.MachineConfig) { c.FloorConfidence = 1 }, "floorConfidence"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := decConfig()
			c.Metrics = append([]guard.MetricRule(nil), c.Metrics...)
			tc.mutate(&c)
			err := c.Validate()
			if !errors.Is(err, guard.ErrMachineConfig) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Validate() = %v, want ErrMachineConfig about %q", err, tc.want)
			}
			if _, err := guard.NewMachine(c, decT0); !errors.Is(err, guard.ErrMachineConfig) {
				t.Errorf("New() = %v, want ErrMachineConfig", err)
			}
		})
	}
	if _, err := guard.NewMachine(decConfig(), time.Time{}); !errors.Is(err, guard.ErrBadInput) {
		t.Errorf("New with zero start = %v, want ErrBadInput", err)
	}
}

func TestMachineDefaults(t *testing.T) {
	m, err := guard.NewMachine(guard.MachineConfig{Flag: "f", Variant: "on", Control: "off", Share: 0.05,
		Metrics: []guard.MetricRule{{Name: "e", Kind: guard.KindRatio}}}, decT0)
	if err != nil {
		t.Fatal(err)
	}
	c := m.Config()
	if c.Alpha != 0.01 || c.AlphaAdvance != 0.05 || c.R0 != 1 || c.RMax != 1.5 || c.MinExpectedErrors != 30 ||
		c.SRMAlpha != 0.001 || c.FloorMinRequests != 200 || c.FloorConfidence != 0.999 || c.FloorWindow != 5*time.Minute ||
		c.OnBlind != guard.ActionHold || c.OnInconclusive != guard.ActionPage || c.OnTrip != guard.ActionKill ||
		c.MinHold != 10*time.Minute || c.MaxExtension != time.Hour || c.BlindGrace != 2*time.Minute || c.FreshTicks != 2 {
		t.Errorf("defaults: %+v", c)
	}
	if m.State() != guard.StateWarmup || !m.StageStart().Equal(decT0) || len(m.ConfigDigest()) != 32 {
		t.Errorf("state %s, start %v, digest %q", m.State(), m.StageStart(), m.ConfigDigest())
	}
}

// A healthy stage: a baseline tick, WARMUP until the minimum exposure, HEALTHY until R5 holds and
// the minimum hold has passed, then READY with one advance action.
func TestMachineHealthyStageAdvances(t *testing.T) {
	f := newDecFeed(t, decConfig())
	ev := f.add(decCounts{}, decCounts{})
	if ev.StateAfter != guard.StateWarmup || !ev.Metrics[0].Treatment.Baseline || ev.Cause != guard.CauseWarmup {
		t.Fatalf("first tick: %s baseline=%v cause=%s", ev.StateAfter, ev.Metrics[0].Treatment.Baseline, ev.Cause)
	}
	ev = f.add(decCounts{20, 0}, decCounts{20, 0})
	if ev.StateAfter != guard.StateWarmup || ev.Exposed {
		t.Fatalf("below minimum exposure: %s exposed=%v", ev.StateAfter, ev.Exposed)
	}
	advances := 0
	var states []guard.State
	for range 40 { // 10 minutes; 1% errors on both arms, 1000 requests per arm per tick
		ev = f.add(decCounts{1000, 10}, decCounts{1000, 10})
		states = append(states, ev.StateAfter)
		if ev.Action == guard.ActionAdvance {
			advances++
			if ev.StateAfter != guard.StateReady || !ev.MinHoldElapsed || !ev.Metrics[0].R5.Met {
				t.Fatalf("advance without READY: %+v", ev)
			}
			if got := ev.Time.Sub(decT0); got < 5*time.Minute {
				t.Fatalf("advanced after %v, before the minimum hold", got)
			}
		} else if ev.Action != guard.ActionNone {
			t.Fatalf("unexpected action %s at %v", ev.Action, ev.Time)
		}
	}
	if advances != 1 || f.m.State() != guard.StateReady {
		t.Fatalf("advances %d, state %s, states %v", advances, f.m.State(), states)
	}
	if states[0] != guard.StateHealthy {
		t.Errorf("after the minimum exposure: %s, want HEALTHY", states[0])
	}
	me := ev.Metrics[0]
	if me.Treatment.StageRequests != 40020 || me.Control.StageErrors != 400 || me.Treatment.DeltaErrors != 10 {
		t.Errorf("counts: %+v", me.Treatment)
	}
	if me.R1.Fired || me.R1.LogE >= 0 || me.R1.RHat != 1 || me.R4.Mismatch || !me.R4.Tested {
		t.Errorf("R1/R4 on equal arms: %+v %+v", me.R1, me.R4)
	}
}

func TestMachineTripNeedsConfirmationAndLatches(t *testing.T) {
	f := newDecFeed(t, decConfig())
	f.add(decCounts{}, decCounts{})
	var ev guard.Evidence
	var err error
	for range 100 {
		f.now = f.now.Add(f.step)
		f.cum[0].req += 1000
		f.cum[0].errs += 30 // 3% against 1%
		f.cum[1].req += 1000
		f.cum[1].errs += 10
		ev, err = f.m.Decide(f.id(), f.tickFor("errors"))
		if err != nil {
			t.Fatal(err)
		}
		if ev.Action == guard.ActionConfirm {
			break
		}
		if ev.StateAfter == guard.StateTripped {
			t.Fatal("tripped without confirmation")
		}
	}
	if ev.Action != guard.ActionConfirm || ev.Cause != guard.CauseR1 || ev.StateAfter != ev.StateBefore || !f.m.Pending() {
		t.Fatalf("want a pending R1 trip, got %s %s %s→%s", ev.Action, ev.Cause, ev.StateBefore, ev.StateAfter)
	}
	if !ev.Metrics[0].R1.Fired || float64(ev.Metrics[0].R1.LogE) < math.Log(100) || ev.Metrics[0].R1.P > 0.01 {
		t.Errorf("R1 evidence: %+v", ev.Metrics[0].R1)
	}
	if _, err := f.m.Decide("again", f.tickFor("errors")); !errors.Is(err, guard.ErrCallOrder) {
		t.Fatalf("Decide while pending = %v, want ErrCallOrder", err)
	}
	confirmed, err := f.m.Confirm("c1", f.tickFor("errors"))
	if err != nil {
		t.Fatal(err)
	}
	if confirmed.StateAfter != guard.StateTripped || confirmed.Action != guard.ActionKill || confirmed.Call != guard.CallConfirm {
		t.Fatalf("confirm: %s %s", confirmed.StateAfter, confirmed.Action)
	}
	if _, err := f.m.Confirm("c2", f.tickFor("errors")); !errors.Is(err, guard.ErrCallOrder) {
		t.Fatalf("Confirm without a pending trip = %v, want ErrCallOrder", err)
	}
	// Healthy, blind and ready-looking ticks leave it TRIPPED, with no further action.
	for i := range 200 {
		f.now = f.now.Add(f.step)
		for a := range 2 {
			f.cum[a].req += 1000
			f.cum[a].errs += 10
		}
		tk := f.tickFor("errors")
		if i%7 == 3 {
			tk.Metrics[0].Treatment.Errors.Value = math.NaN()
		}
		ev := f.decide(tk)
		if ev.StateAfter != guard.StateTripped || ev.Action != guard.ActionNone || ev.Cause != guard.CauseLatched {
			t.Fatalf("tick %d after the trip: %s %s %s", i, ev.StateAfter, ev.Action, ev.Cause)
		}
	}
	// A configuration change keeps the latch; only a person's re-arm clears it.
	if ev, err := f.m.Restart("cfg", decConfig(), f.now); err != nil || ev.StateAfter != guard.StateTripped {
		t.Fatalf("restart while tripped: %v %s", err, ev.StateAfter)
	}
	if _, err := f.m.Rearm("ra", "", f.now); !errors.Is(err, guard.ErrBadInput) {
		t.Fatalf("rearm without a person = %v", err)
	}
	ev, err = f.m.Rearm("ra", "alice", f.now)
	if err != nil || ev.StateAfter != guard.StateWarmup || ev.By != "alice" || ev.Cause != guard.CauseRearmed {
		t.Fatalf("rearm: %v %+v", err, ev)
	}
	if _, err := f.m.Rearm("ra2", "alice", f.now); !errors.Is(err, guard.ErrCallOrder) {
		t.Fatalf("rearm when not tripped = %v, want ErrCallOrder", err)
	}
	// The re-armed stage starts with a fresh e-process: its first usable tick is a baseline.
	ev = f.add(decCounts{1000, 10}, decCounts{1000, 10})
	if !ev.Metrics[0].Treatment.Baseline || ev.Metrics[0].R1.LogE != 0 || ev.Metrics[0].R1.Ticks != 0 {
		t.Errorf("after rearm: %+v", ev.Metrics[0])
	}
}

// A bogus reading fires a trip, but the re-query does not: nothing trips and the bogus value is
// never committed.
func TestMachineConfirmationRejectsGlitch(t *testing.T) {
	f := newDecFeed(t, decConfig())
	f.add(decCounts{}, decCounts{})
	for range 8 {
		f.add(decCounts{1000, 10}, decCounts{1000, 10})
	}
	f.now = f.now.Add(f.step)
	f.cum[0].req += 1000
	f.cum[0].errs += 10
	f.cum[1].req += 1000
	f.cum[1].errs += 10
	glitch := f.tickFor("errors")
	glitch.Metrics[0].Treatment.Errors.Value += 900
	ev, err := f.m.Decide("g", glitch)
	if err != nil {
		t.Fatal(err)
	}
	if ev.Action != guard.ActionConfirm {
		t.Fatalf("glitch: action %s, want confirm", ev.Action)
	}
	ev, err = f.m.Confirm("g-re", f.tickFor("errors"))
	if err != nil {
		t.Fatal(err)
	}
	if ev.StateAfter != guard.StateHealthy || ev.Action != guard.ActionNone || ev.Metrics[0].Treatment.DeltaErrors != 10 {
		t.Fatalf("re-read: %s %s delta %v", ev.StateAfter, ev.Action, ev.Metrics[0].Treatment.DeltaErrors)
	}
	ev = f.add(decCounts{1000, 10}, decCounts{1000, 10})
	if ev.Metrics[0].Treatment.ErrorsReset || ev.Metrics[0].Treatment.DeltaErrors != 10 {
		t.Errorf("the glitch leaked into the next tick: %+v", ev.Metrics[0].Treatment)
	}
}

// During WARMUP only R3 can trip.
func TestMachineWarmupOnlyFloorTrips(t *testing.T) {
	cfg := decConfig()
	cfg.MinExposure = 1e9
	f := newDecFeed(t, cfg)
	f.add(decCounts{}, decCounts{})
	ev := f.add(decCounts{100, 15}, decCounts{100, 0})
	if ev.StateAfter != guard.StateWarmup || !ev.Metrics[0].R1.Fired || ev.Action != guard.ActionNone {
		t.Fatalf("R1 fired in WARMUP: %s %s fired=%v", ev.StateAfter, ev.Action, ev.Metrics[0].R1.Fired)
	}
	ev = f.add(decCounts{200, 60}, decCounts{200, 2}) // 60/300 in the window, far above 5%
	if ev.Action != guard.ActionKill || ev.Cause != guard.CauseR3 || ev.StateAfter != guard.StateTripped {
		t.Fatalf("floor in WARMUP: %s %s %s", ev.StateAfter, ev.Action, ev.Cause)
	}
	if r3 := ev.Metrics[0].R3; !r3.Fired || r3.Requests != 300 || r3.Errors != 75 || r3.Lower <= 0.05 {
		t.Errorf("R3 evidence: %+v", r3)
	}
}

// R3 at a 100% stage: no control arm, a sliding window, at least 200 requests.
func TestMachineFloorWithoutControl(t *testing.T) {
	cfg := decConfig()
	cfg.Share, cfg.Control = 1, ""
	every := func(d decCounts) func(int) decCounts { return func(int) decCounts { return d } }
	tests := []struct {
		name     string
		deltas   func(i int) decCounts
		wantTrip bool
	}{
		{"high errors but too few requests", every(decCounts{9, 3}), false}, // 180 in 5 min
		{"just enough requests", every(decCounts{10, 3}), true},             // 200 in 5 min
		{"at the ceiling", every(decCounts{1000, 50}), false},               // 5% is not above 5%
		{"clearly above the ceiling", every(decCounts{1000, 70}), true},     // 7%
		{"healthy", every(decCounts{1000, 5}), false},                       // 0.5%
		// A burst with too few requests, five quiet minutes, then 200 requests at 5%: the
		// burst has left the window (with it, 350 requests at 31% would trip).
		{"the window forgets", func(i int) decCounts {
			switch {
			case i == 0:
				return decCounts{150, 100}
			case i <= 20:
				return decCounts{}
			}
			return decCounts{100, 5}
		}, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := newDecFeed(t, cfg)
			f.add(decCounts{}, decCounts{})
			tripped := false
			for i := range 30 {
				ev := f.add(tc.deltas(i), decCounts{})
				me := ev.Metrics[0]
				if me.Control.Requests != (guard.CounterEvidence{}) || me.R4.Tested || me.R1.Statistic != "" {
					t.Fatalf("a stage without control ran control-arm rules: %+v", me)
				}
				if ev.StateAfter == guard.StateTripped {
					tripped = true
					break
				}
				if ev.StateAfter == guard.StateReady || ev.StateAfter == guard.StateHold {
					t.Fatalf("state %s without a control", ev.StateAfter)
				}
			}
			if tripped != tc.wantTrip {
				t.Fatalf("tripped = %v, want %v", tripped, tc.wantTrip)
			}
		})
	}
}

func TestMachineBlind(t *testing.T) {
	bad := []struct {
		name   string
		mutate func(tk *guard.Tick, now, lastGood time.Time)
		want   string
	}{
		{"query error", func(tk *guard.Tick, _, _ time.Time) {
			tk.Metrics[0].Treatment.Errors = source.Reading{Status: source.ReadingError, Detail: "connection refused"}
		}, "treatment errors: status error"},
		{"timeout", func(tk *guard.Tick, _, _ time.Time) { tk.Metrics[0].Control.Requests.Status = source.ReadingTimeout }, "control requests: status timeout"},
		{"empty result", func(tk *guard.Tick, _, _ time.Time) { tk.Metrics[0].Treatment.Requests.Status = source.ReadingEmpty }, "status empty"},
		{"one arm missing", func(tk *guard.Tick, _, _ time.Time) { tk.Metrics[0].Control = guard.ArmReadings{} }, "control requests: no status"},
		{"NaN claimed ok", func(tk *guard.Tick, _, _ time.Time) { tk.Metrics[0].Treatment.Errors.Value = math.NaN() }, "NaN"},
		{"Inf claimed ok", func(tk *guard.Tick, _, _ time.Time) { tk.Metrics[0].Control.Errors.Value = math.Inf(1) }, "infinite"},
		{"negative", func(tk *guard.Tick, _, _ time.Time) { tk.Metrics[0].Control.Errors.Value = -1 }, "negative"},
		{"beyond 2^53", func(tk *guard.Tick, _, _ time.Time) { tk.Metrics[0].Control.Requests.Value = 1e17 }, "2^53"},
		{"stale", func(tk *guard.Tick, now, _ time.Time) {
			tk.Metrics[0].Treatment.Requests.At = now.Add(-3 * time.Minute)
		}, "stale"},
		{"no sample time", func(tk *guard.Tick, _, _ time.Time) { tk.Metrics[0].Treatment.Requests.At = time.Time{} }, "no sample time"},
		{"from the future", func(tk *guard.Tick, now, _ time.Time) { tk.Metrics[0].Control.Errors.At = now.Add(time.Second) }, "after the tick"},
		{"older than the last sample", func(tk *guard.Tick, _, lastGood time.Time) {
			tk.Metrics[0].Control.Errors.At = lastGood.Add(-time.Second)
		}, "older than"},
	}
	for _, tc := range bad {
		t.Run(tc.name, func(t *testing.T) {
			cfg := decConfig()
			cfg.BlindGrace = time.Minute
			cfg.OnBlind = guard.ActionRevert
			f := newDecFeed(t, cfg)
			f.add(decCounts{}, decCounts{})
			for range 30 {
				f.add(decCounts{1000, 10}, decCounts{1000, 10})
			}
			if f.m.State() != guard.StateReady {
				t.Fatalf("setup: %s, want READY", f.m.State())
			}
			var actions []guard.Action
			var blindEv guard.Evidence
			lastGood := f.now
			for i := range 12 { // three minutes of bad data
				f.now = f.now.Add(f.step)
				f.cum[0].req += 1000
				f.cum[0].errs += 10
				f.cum[1].req += 1000
				f.cum[1].errs += 10
				tk := f.tickFor("errors")
				tc.mutate(&tk, f.now, lastGood)
				ev := f.decide(tk)
				if ev.StateAfter != guard.StateBlind {
					t.Fatalf("bad tick %d: %s, want BLIND", i, ev.StateAfter)
				}
				if i == 0 {
					blindEv = ev
				}
				if ev.Action != guard.ActionNone {
					actions = append(actions, ev.Action)
					if got := ev.Time.Sub(ev.BlindSince); got < time.Minute || ev.Cause != guard.CauseBlindGrace {
						t.Errorf("on_blind after %v, cause %s", got, ev.Cause)
					}
				}
			}
			if !strings.Contains(blindEv.Metrics[0].Blind, tc.want) || blindEv.FreshTicks != 0 {
				t.Errorf("blind reason %q (fresh %d), want it to mention %q", blindEv.Metrics[0].Blind, blindEv.FreshTicks, tc.want)
			}
			// The statistics froze: nothing of the bad ticks was counted.
			if blindEv.Metrics[0].Treatment.StageRequests != 30000 || blindEv.Metrics[0].Treatment.DeltaRequests != 0 {
				t.Errorf("blind tick counted: %+v", blindEv.Metrics[0].Treatment)
			}
			if !reflect.DeepEqual(actions, []guard.Action{guard.ActionRevert}) {
				t.Errorf("actions %v, want exactly one revert", actions)
			}
			// Fresh data again: the deltas span the blind period and READY needs fresh ticks.
			ev := f.add(decCounts{1000, 10}, decCounts{1000, 10})
			if ev.StateAfter == guard.StateReady || ev.StateAfter == guard.StateBlind || ev.Metrics[0].Treatment.DeltaRequests != 13000 {
				t.Errorf("first fresh tick: %s delta %v", ev.StateAfter, ev.Metrics[0].Treatment.DeltaRequests)
			}
			ev = f.add(decCounts{1000, 10}, decCounts{1000, 10})
			if ev.StateAfter != guard.StateReady || ev.Action != guard.ActionAdvance {
				t.Errorf("second fresh tick: %s %s", ev.StateAfter, ev.Action)
			}
		})
	}
}

func TestMachineCounterReset(t *testing.T) {
	f := newDecFeed(t, decConfig())
	f.add(decCounts{}, decCounts{})
	f.add(decCounts{1000, 10}, decCounts{1000, 10})
	// The treatment's process restarts: its counters drop to what it counted since.
	f.now = f.now.Add(f.step)
	f.cum[0] = decCounts{400, 3}
	f.cum[1].req += 1000
	f.cum[1].errs += 10
	ev := f.decide(f.tickFor("errors"))
	tr := ev.Metrics[0].Treatment
	if !tr.RequestsReset || !tr.ErrorsReset || tr.DeltaRequests != 400 || tr.DeltaErrors != 3 || tr.StageRequests != 1400 || tr.StageErrors != 13 {
		t.Fatalf("reset: %+v", tr)
	}
	if c := ev.Metrics[0].Control; c.RequestsReset || c.DeltaRequests != 1000 {
		t.Fatalf("control: %+v", c)
	}
	ev = f.add(decCounts{1000, 10}, decCounts{1000, 10})
	if tr := ev.Metrics[0].Treatment; tr.RequestsReset || tr.DeltaRequests != 1000 || tr.StageRequests != 2400 {
		t.Fatalf("after the reset: %+v", tr)
	}
}

func TestMachineSRMHolds(t *testing.T) {
	f := newDecFeed(t, decConfig())
	f.add(decCounts{}, decCounts{})
	var holds int
	var ev guard.Evidence
	for range 20 {
		ev = f.add(decCounts{800, 8}, decCounts{1200, 12}) // 40% of exposures against a 50% split
		if ev.Action == guard.ActionHold {
			holds++
		}
	}
	if ev.StateAfter != guard.StateHold || ev.Cause != guard.CauseSRM || holds != 1 {
		t.Fatalf("SRM: %s %s, %d hold actions", ev.StateAfter, ev.Cause, holds)
	}
	if r4 := ev.Metrics[0].R4; !r4.Mismatch || r4.P >= 0.001 || r4.ObservedShare != 0.4 || r4.TreatmentExposures != 16000 {
		t.Errorf("R4: %+v", r4)
	}
	// Still mismatched after the maximum extension (5 + 30 min): on_inconclusive, once.
	var late []guard.Action
	for range 4 * 40 {
		if ev = f.add(decCounts{800, 8}, decCounts{1200, 12}); ev.Action != guard.ActionNone {
			late = append(late, ev.Action)
			if got := ev.Time.Sub(decT0); got < 35*time.Minute {
				t.Fatalf("on_inconclusive after %v", got)
			}
		}
	}
	if !reflect.DeepEqual(late, []guard.Action{guard.ActionPage}) || ev.StateAfter != guard.StateHold || ev.Cause != guard.CauseSRM {
		t.Errorf("after the maximum extension: actions %v, %s %s", late, ev.StateAfter, ev.Cause)
	}
}

func TestMachineInconclusiveHolds(t *testing.T) {
	for _, on := range []guard.Action{guard.ActionPage, guard.ActionRevert, guard.ActionHold} {
		t.Run(string(on), func(t *testing.T) {
			cfg := decConfig()
			cfg.OnInconclusive = on
			f := newDecFeed(t, cfg)
			f.add(decCounts{}, decCounts{})
			var acts []guard.Action
			var ev guard.Evidence
			for range 4 * 40 { // 40 minutes at 0.01%: far from 30 expected errors
				ev = f.add(decCounts{100, 0}, decCounts{100, 0})
				if ev.Action != guard.ActionNone {
					acts = append(acts, ev.Action)
					if got := ev.Time.Sub(decT0); got < 35*time.Minute {
						t.Fatalf("inconclusive after %v", got)
					}
				}
			}
			if ev.StateAfter != guard.StateHold || ev.Cause != guard.CauseInconclusive || !reflect.DeepEqual(acts, []guard.Action{on}) {
				t.Fatalf("%s %s actions %v", ev.StateAfter, ev.Cause, acts)
			}
			if ev.Metrics[0].R5.ExpectedErrors != 0 || ev.Metrics[0].R5.Met {
				t.Errorf("R5: %+v", ev.Metrics[0].R5)
			}
		})
	}
}

func TestMachineRestartIsFresh(t *testing.T) {
	f := newDecFeed(t, decConfig())
	f.add(decCounts{}, decCounts{})
	for range 10 {
		f.add(decCounts{1000, 12}, decCounts{1000, 10})
	}
	if f.m.State() != guard.StateHealthy {
		t.Fatalf("setup: %s", f.m.State())
	}
	cfg := decConfig()
	cfg.Share, cfg.Stage = 0.25, 3
	old := f.m.ConfigDigest()
	ev, err := f.m.Restart("cfg-2", cfg, f.now)
	if err != nil {
		t.Fatal(err)
	}
	if ev.StateBefore != guard.StateHealthy || ev.StateAfter != guard.StateWarmup || ev.Config == nil || ev.Config.Share != 0.25 ||
		ev.ConfigDigest == old || ev.Stage != 3 || !ev.StageStart.Equal(f.now) {
		t.Fatalf("restart evidence: %+v", ev)
	}
	ev = f.add(decCounts{250, 2}, decCounts{750, 6})
	if !ev.Metrics[0].Treatment.Baseline || ev.Metrics[0].R1.Ticks != 0 || ev.Metrics[0].Treatment.StageRequests != 0 {
		t.Errorf("not fresh: %+v", ev.Metrics[0])
	}
	bad := cfg
	bad.Alpha = 5
	if _, err := f.m.Restart("cfg-3", bad, f.now); !errors.Is(err, guard.ErrMachineConfig) || f.m.ConfigDigest() != ev.ConfigDigest {
		t.Errorf("bad restart = %v; digest changed: %v", err, f.m.ConfigDigest() != ev.ConfigDigest)
	}
}

// A stage change keeps the rollout's R1 e-process (one α for the whole rollout) and the readings'
// baselines, and begins the stage afresh: WARMUP, R5, stage counts, SRM.
func TestMachineChangeStage(t *testing.T) {
	f := newDecFeed(t, decConfig())
	f.add(decCounts{}, decCounts{})
	var ev guard.Evidence
	for range 6 {
		ev = f.add(decCounts{1000, 15}, decCounts{1000, 10})
	}
	r1Before := ev.Metrics[0].R1
	if r1Before.Ticks != 6 || r1Before.LogE <= 0 || r1Before.Fired || ev.Metrics[0].R5.Ticks != 6 {
		t.Fatalf("setup: %+v", r1Before)
	}
	next := decConfig()
	next.Stage, next.Share, next.MinHold = 3, 0.25, time.Minute
	ev, err := f.m.ChangeStage("adv", next, f.now)
	if err != nil {
		t.Fatal(err)
	}
	if ev.Call != guard.CallChangeStage || ev.Cause != guard.CauseStageChanged || ev.StateAfter != guard.StateWarmup ||
		ev.Config == nil || ev.Config.Share != 0.25 || ev.Stage != 3 || !ev.StageStart.Equal(f.now) {
		t.Fatalf("change stage evidence: %+v", ev)
	}
	ev = f.add(decCounts{500, 5}, decCounts{1500, 15})
	me := ev.Metrics[0]
	if me.Treatment.Baseline || me.Treatment.DeltaRequests != 500 || me.Treatment.StageRequests != 500 {
		t.Errorf("the readings' baselines were not kept: %+v", me.Treatment)
	}
	if me.R1.Ticks != 7 || me.R5.Ticks != 1 || !me.R1.Used {
		t.Errorf("R1 ticks %d (want 7: it goes on), R5 ticks %d (want 1: fresh)", me.R1.Ticks, me.R5.Ticks)
	}
	if me.R4.ObservedShare != 0.25 || me.R4.Mismatch {
		t.Errorf("SRM is not the new stage's: %+v", me.R4)
	}

	// What is tested may not change at a stage change.
	for name, mutate := range map[string]func(*guard.MachineConfig){
		"alpha":   func(c *guard.MachineConfig) { c.Alpha = 0.02 },
		"r0":      func(c *guard.MachineConfig) { c.R0 = 1.1 },
		"variant": func(c *guard.MachineConfig) { c.Variant = "newer" },
		"segment": func(c *guard.MachineConfig) { c.Segment = "us" },
		"metrics": func(c *guard.MachineConfig) { c.Metrics = []guard.MetricRule{{Name: "5xx", Kind: guard.KindRatio}} },
		"invalid": func(c *guard.MachineConfig) { c.Share = 2 },
	} {
		c := next
		mutate(&c)
		if _, err := f.m.ChangeStage("bad", c, f.now); !errors.Is(err, guard.ErrMachineConfig) {
			t.Errorf("%s: %v, want ErrMachineConfig", name, err)
		}
	}
	if f.m.Config().Share != 0.25 {
		t.Fatalf("a rejected stage change changed the config")
	}

	// Through a stage without control and back: the control arm starts from a new baseline.
	full := next
	full.Stage, full.Share = 5, 1
	if _, err := f.m.ChangeStage("full", full, f.now); err != nil {
		t.Fatal(err)
	}
	for range 3 {
		f.add(decCounts{2000, 20}, decCounts{})
	}
	back := next
	back.Stage = 4
	if _, err := f.m.ChangeStage("back", back, f.now); err != nil {
		t.Fatal(err)
	}
	f.cum[1].req += 12345 // the control counted while nobody looked
	ev = f.add(decCounts{500, 5}, decCounts{1500, 15})
	me = ev.Metrics[0]
	if !me.Control.Baseline || me.Control.DeltaRequests != 0 || me.Treatment.DeltaRequests != 500 || me.R1.Used {
		t.Errorf("back from 100%%: control %+v, treatment delta %v, R1 used %v", me.Control, me.Treatment.DeltaRequests, me.R1.Used)
	}
	ev = f.add(decCounts{500, 5}, decCounts{1500, 15})
	if me = ev.Metrics[0]; me.Control.DeltaRequests != 1500 || !me.R1.Used || me.R1.Ticks != 8 {
		t.Errorf("second tick back: control delta %v, R1 used %v, ticks %d", me.Control.DeltaRequests, me.R1.Used, me.R1.Ticks)
	}
}

func TestMachineChangeStageWhilePendingOrTripped(t *testing.T) {
	f := newDecFeed(t, decConfig())
	f.add(decCounts{}, decCounts{})
	f.now = f.now.Add(f.step)
	f.cum[0] = decCounts{1000, 100}
	f.cum[1] = decCounts{1000, 1}
	ev, err := f.m.Decide("trip", f.tickFor("errors"))
	if err != nil || ev.Action != guard.ActionConfirm {
		t.Fatalf("setup: %v %s", err, ev.Action)
	}
	next := decConfig()
	next.Share = 0.25
	if _, err := f.m.ChangeStage("adv", next, f.now); !errors.Is(err, guard.ErrCallOrder) {
		t.Fatalf("change stage while pending: %v, want ErrCallOrder", err)
	}
	if ev, err = f.m.Confirm("trip-re", f.tickFor("errors")); err != nil || ev.StateAfter != guard.StateTripped {
		t.Fatalf("confirm: %v %s", err, ev.StateAfter)
	}
	if ev, err = f.m.ChangeStage("back", next, f.now); err != nil || ev.StateAfter != guard.StateTripped {
		t.Fatalf("change stage while tripped: %v %s", err, ev.StateAfter)
	}
}

// Batching through the machine: one tick carrying everything, or the same counts spread over
// several ticks with the same share of exposures, give the same log-likelihoods, and without late
// starts the same R1 and R5 e-values. With late starts (the default) the first start's part of
// R1's e-value is the same; the split run has later starts besides, so its e-value is at least
// the whole run's.
func TestMachineBatchingInvariance(t *testing.T) {
	for seed := range uint64(100) {
		rng := rand.New(rand.NewPCG(seed, 7))
		share := []float64{0.05, 0.25, 0.5}[rng.IntN(3)]
		cfg := decConfig()
		cfg.Share = share
		plain := seed%2 == 0
		cfg.NoLateStarts = plain
		whole, split := newDecFeed(t, cfg), newDecFeed(t, cfg)
		whole.add(decCounts{}, decCounts{})
		split.add(decCounts{}, decCounts{})
		parts := 2 + rng.IntN(6)
		per := float64(100 * (1 + rng.IntN(50))) // requests per part
		var xT, xC float64
		for range parts {
			dT, dC := float64(rng.IntN(8)), float64(rng.IntN(20))
			xT, xC = xT+dT, xC+dC
			split.add(decCounts{per * share, dT}, decCounts{per * (1 - share), dC})
		}
		ev := whole.add(decCounts{float64(parts) * per * share, xT}, decCounts{float64(parts) * per * (1 - share), xC})
		a, b := ev.Metrics[0], split.evs[len(split.evs)-1].Metrics[0]
		for j := range a.R1.LogLik {
			if !closeTo(float64(b.R1.LogLik[j]), float64(a.R1.LogLik[j]), 1e-12) || !closeTo(float64(b.R5.LogLik[j]), float64(a.R5.LogLik[j]), 1e-12) {
				t.Fatalf("seed %d: ℓ whole %v / %v, split in %d %v / %v", seed, a.R1.LogLik, a.R5.LogLik, parts, b.R1.LogLik, b.R5.LogLik)
			}
		}
		if !closeTo(float64(b.R5.LogE), float64(a.R5.LogE), 1e-12) {
			t.Fatalf("seed %d: R5's ln E whole %v, split %v", seed, a.R5.LogE, b.R5.LogE)
		}
		// The plain mixture of the log-likelihoods, and the whole run's e-value from it.
		ls := a.R1.LogLik
		mx := math.Inf(-1)
		for _, l := range ls {
			mx = math.Max(mx, float64(l))
		}
		sum := 0.0
		for _, l := range ls {
			sum += math.Exp(float64(l) - mx)
		}
		logPlain := mx + math.Log(sum/guard.GridSize)
		if plain {
			if !closeTo(float64(b.R1.LogE), float64(a.R1.LogE), 1e-12) || !closeTo(float64(a.R1.LogE), logPlain, 1e-12) {
				t.Fatalf("seed %d, no late starts: ln E whole %v, split %v, plain mixture %v", seed, a.R1.LogE, b.R1.LogE, logPlain)
			}
			continue
		}
		if !closeTo(float64(a.R1.LogE), logPlain+math.Log1p(-guard.LateStartWeight), 1e-12) || float64(b.R1.LogE) < float64(a.R1.LogE)-1e-12 {
			t.Fatalf("seed %d, late starts: ln E whole %v (plain %v), split %v", seed, a.R1.LogE, logPlain, b.R1.LogE)
		}
	}
}

// R2 on a non-rare proportion.
func TestMachineMSPRT(t *testing.T) {
	cfg := decConfig()
	cfg.Metrics = []guard.MetricRule{{Name: "errors", Kind: guard.KindRatio}, {Name: "slow", Kind: guard.KindMSPRT}}
	m, err := guard.NewMachine(cfg, decT0)
	if err != nil {
		t.Fatal(err)
	}
	var cum [2][2]decCounts // [metric][arm]
	now := decT0
	var ev guard.Evidence
	for i := range 200 {
		tk := guard.Tick{Time: now, Metrics: []guard.MetricReadings{
			{Name: "errors", Treatment: decArm(cum[0][0], now), Control: decArm(cum[0][1], now)},
			{Name: "slow", Treatment: decArm(cum[1][0], now), Control: decArm(cum[1][1], now)},
		}}
		ev, err = m.Decide("x", tk)
		if err != nil {
			t.Fatal(err)
		}
		r2 := ev.Metrics[1].R2
		if r2.Active != (cum[1][0].errs >= 30 && cum[1][1].errs >= 30) {
			t.Fatalf("tick %d: active %v with %v/%v events", i, r2.Active, cum[1][0].errs, cum[1][1].errs)
		}
		if ev.Action == guard.ActionConfirm {
			break
		}
		now = now.Add(15 * time.Second)
		for a := range 2 {
			cum[0][a].req += 500
			cum[0][a].errs += 5
			cum[1][a].req += 100
		}
		cum[1][0].errs += 12 // 12% slow against 10%
		cum[1][1].errs += 10
	}
	if ev.Action != guard.ActionConfirm || ev.Cause != guard.CauseR2 {
		t.Fatalf("R2 did not fire: %s %s %+v", ev.Action, ev.Cause, ev.Metrics[1].R2)
	}
	r2 := ev.Metrics[1].R2
	if want := guard.LogMSPRT(float64(r2.Theta), float64(r2.V), 0.01); float64(r2.LogLambda) != want || float64(r2.LogLambda) < math.Log(float64(r2.Threshold)) {
		t.Errorf("R2 evidence %+v, ln Λ want %v", r2, want)
	}
	if ev.Metrics[0].Alpha != 0.005 || r2.Alpha != 0.005 {
		t.Errorf("Bonferroni: α per metric %v, %v, want 0.005", ev.Metrics[0].Alpha, r2.Alpha)
	}
}

func TestMachineRejectsBadCalls(t *testing.T) {
	f := newDecFeed(t, decConfig())
	f.add(decCounts{}, decCounts{})
	f.add(decCounts{1000, 10}, decCounts{1000, 10})
	twin := newDecFeed(t, decConfig())
	twin.add(decCounts{}, decCounts{})
	twin.add(decCounts{1000, 10}, decCounts{1000, 10})

	good := f.tickFor("errors")
	tests := []struct {
		name string
		call func() error
		want error
	}{
		{"empty id", func() error { _, err := f.m.Decide("", good); return err }, guard.ErrBadInput},
		{"zero time", func() error { tk := good; tk.Time = time.Time{}; _, err := f.m.Decide("x", tk); return err }, guard.ErrBadInput},
		{"time backwards", func() error {
			tk := good
			tk.Time = good.Time.Add(-time.Second)
			_, err := f.m.Decide("x", tk)
			return err
		}, guard.ErrCallOrder},
		{"missing metric", func() error { tk := good; tk.Metrics = nil; _, err := f.m.Decide("x", tk); return err }, guard.ErrBadInput},
		{"wrong metric", func() error {
			tk := f.tickFor("latency")
			_, err := f.m.Decide("x", tk)
			return err
		}, guard.ErrBadInput},
		{"confirm without pending", func() error { _, err := f.m.Confirm("x", good); return err }, guard.ErrCallOrder},
		{"rearm when healthy", func() error { _, err := f.m.Rearm("x", "bob", good.Time); return err }, guard.ErrCallOrder},
		{"restart backwards", func() error { _, err := f.m.Restart("x", decConfig(), decT0); return err }, guard.ErrCallOrder},
		{"restart no id", func() error { _, err := f.m.Restart("", decConfig(), good.Time); return err }, guard.ErrBadInput},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if err := tc.call(); !errors.Is(err, tc.want) {
				t.Fatalf("error = %v, want %v", err, tc.want)
			}
		})
	}
	// Nothing changed: both machines decide the next tick identically.
	a := f.add(decCounts{1000, 10}, decCounts{1000, 10})
	b := twin.add(decCounts{1000, 10}, decCounts{1000, 10})
	a.DecisionID, b.DecisionID = "", ""
	if !reflect.DeepEqual(a, b) {
		t.Errorf("a rejected call changed the machine:\n%+v\n%+v", a, b)
	}
}

// Property: a tick with any unusable reading never yields READY or HEALTHY (nor WARMUP or HOLD):
// the machine is BLIND, or stays TRIPPED.
func TestMachineBadInputNeverReady(t *testing.T) {
	for seed := range uint64(300) {
		rng := rand.New(rand.NewPCG(seed, 3))
		g := newDecGen(rng)
		m, err := guard.NewMachine(g.cfg, decT0)
		if err != nil {
			t.Fatal(err)
		}
		for i := range 120 {
			tk, bad := g.next()
			ev, err := m.Decide("p", tk)
			if err != nil {
				t.Fatal(err)
			}
			if ev.Action == guard.ActionConfirm {
				if bad {
					t.Fatalf("seed %d tick %d: a bad tick asked for confirmation", seed, i)
				}
				tk2, bad2 := g.reread(tk)
				if ev, err = m.Confirm("p", tk2); err != nil {
					t.Fatal(err)
				}
				bad = bad2
			}
			if bad && ev.StateAfter != guard.StateBlind && ev.StateAfter != guard.StateTripped {
				t.Fatalf("seed %d tick %d: bad input gave %s (%s)", seed, i, ev.StateAfter, ev.Cause)
			}
			if bad && (ev.Action == guard.ActionAdvance || ev.StateAfter == guard.StateReady) {
				t.Fatalf("seed %d tick %d: bad input gave READY", seed, i)
			}
		}
	}
}

// Property: once TRIPPED, nothing but Rearm leaves it: not any readings, not a restart, not a
// stage change.
func TestMachineTrippedStaysTripped(t *testing.T) {
	for seed := range uint64(200) {
		rng := rand.New(rand.NewPCG(seed, 4))
		g := newDecGen(rng)
		m, _ := guard.NewMachine(g.cfg, decT0)
		tripped := false
		for i := range 200 {
			if tripped && rng.IntN(10) == 0 {
				cfg := g.cfg
				cfg.Stage++
				cfg.Share = []float64{0.05, 0.5, 0.95, 1}[rng.IntN(4)]
				var ev guard.Evidence
				var err error
				if rng.IntN(2) == 0 {
					ev, err = m.Restart("r", cfg, g.now)
				} else {
					ev, err = m.ChangeStage("s", cfg, g.now)
				}
				if err != nil || ev.StateAfter != guard.StateTripped {
					t.Fatalf("seed %d: %s while tripped: %v %s", seed, ev.Call, err, ev.StateAfter)
				}
				g.cfg = cfg
			}
			tk, _ := g.next()
			ev, err := m.Decide("p", tk)
			if err != nil {
				t.Fatal(err)
			}
			if ev.Action == guard.ActionConfirm {
				tk2, _ := g.reread(tk)
				if ev, err = m.Confirm("p", tk2); err != nil {
					t.Fatal(err)
				}
			}
			if tripped && (ev.StateAfter != guard.StateTripped || ev.Action != guard.ActionNone) {
				t.Fatalf("seed %d tick %d: left TRIPPED for %s (%s)", seed, i, ev.StateAfter, ev.Action)
			}
			if ev.StateAfter == guard.StateTripped {
				tripped = true
			}
		}
	}
}

// decGen makes random ticks of one or two metrics: bursts, regressions, resets, and now and then a
// bad reading of any kind.
type decGen struct {
	rng      *rand.Rand
	cfg      guard.MachineConfig
	now      time.Time
	cum      [2][2]decCounts // [metric][arm]
	badRate  int
	regress  float64
	baseRate float64
}

func newDecGen(rng *rand.Rand) *decGen {
	cfg := decConfig()
	cfg.Share = []float64{0.05, 0.5, 0.95, 1}[rng.IntN(4)]
	cfg.MinHold = time.Duration(1+rng.IntN(10)) * time.Minute
	cfg.MaxExtension = time.Duration(1+rng.IntN(20)) * time.Minute
	cfg.BlindGrace = time.Duration(rng.IntN(3)) * time.Minute
	if rng.IntN(2) == 0 {
		cfg.Metrics = append(cfg.Metrics, guard.MetricRule{Name: "slow", Kind: guard.KindMSPRT, Ceiling: 0.5})
	}
	return &decGen{rng: rng, cfg: cfg, now: decT0, badRate: 2 + rng.IntN(8),
		regress: []float64{1, 1, 2, 10}[rng.IntN(4)], baseRate: []float64{0.0001, 0.005, 0.05}[rng.IntN(3)]}
}

func (g *decGen) next() (guard.Tick, bool) {
	g.now = g.now.Add(time.Duration(1+g.rng.IntN(30)) * time.Second)
	vol := float64(g.rng.IntN(3000))
	if g.rng.IntN(10) == 0 {
		vol *= 10
	}
	for mi := range g.cfg.Metrics {
		for a := range 2 {
			share := g.cfg.Share
			if a == 1 {
				share = 1 - share
			}
			n := math.Round(vol * share)
			rate := g.baseRate
			if a == 0 {
				rate *= g.regress
			}
			g.cum[mi][a].req += n
			g.cum[mi][a].errs += math.Round(n * math.Min(1, rate*(0.5+g.rng.Float64())))
			if g.rng.IntN(200) == 0 {
				g.cum[mi][a] = decCounts{math.Round(n / 2), 0} // reset
			}
		}
	}
	tk := guard.Tick{Time: g.now}
	for mi, r := range g.cfg.Metrics {
		tk.Metrics = append(tk.Metrics, guard.MetricReadings{Name: r.Name,
			Treatment: decArm(g.cum[mi][0], g.now), Control: decArm(g.cum[mi][1], g.now)})
	}
	bad := false
	if g.rng.IntN(g.badRate) == 0 {
		bad = g.spoil(&tk)
	}
	return tk, bad
}

// spoil makes one reading of tk unusable and reports whether it did (the control of a stage
// without control is ignored, so spoiling it spoils nothing).
func (g *decGen) spoil(tk *guard.Tick) bool {
	mr := &tk.Metrics[g.rng.IntN(len(tk.Metrics))]
	arm, spoilsControl := &mr.Treatment, false
	if g.rng.IntN(2) == 0 {
		arm, spoilsControl = &mr.Control, true
	}
	r := &arm.Requests
	if g.rng.IntN(2) == 0 {
		r = &arm.Errors
	}
	switch g.rng.IntN(9) {
	case 0:
		r.Value = math.NaN()
	case 1:
		*r = source.Reading{Status: source.ReadingError, Detail: "boom"}
	case 2:
		r.Status = source.ReadingEmpty
	case 3:
		r.At = tk.Time.Add(-10 * time.Minute)
	case 4:
		*arm = guard.ArmReadings{}
	case 5:
		r.Value = math.Inf(1)
	case 6:
		r.Status = source.ReadingStale
	case 7:
		r.Value = -3
	case 8:
		r.Status = source.ReadingNaN
	}
	return !(spoilsControl && g.cfg.Share == 1)
}

// reread is the immediate re-query: the same counters, unless the source fails again.
func (g *decGen) reread(tk guard.Tick) (guard.Tick, bool) {
	g.now = g.now.Add(time.Duration(g.rng.IntN(2)) * time.Second)
	out := guard.Tick{Time: g.now}
	for mi, r := range g.cfg.Metrics {
		out.Metrics = append(out.Metrics, guard.MetricReadings{Name: r.Name,
			Treatment: decArm(g.cum[mi][0], g.now), Control: decArm(g.cum[mi][1], g.now)})
	}
	if g.rng.IntN(4) == 0 {
		return out, g.spoil(&out)
	}
	return out, false
}
