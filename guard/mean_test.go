package guard_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/interlock-dev/interlock/guard"
)

// R2 on a continuous metric (kind mean): the counters are a histogram's _count and _sum, the
// test compares the arms' means relative to the control's.

// meanConfig guards "errors" (ratio, as every plan must) and "latency" (mean).
func meanConfig(rule guard.MetricRule) guard.MachineConfig {
	cfg := decConfig()
	rule.Name, rule.Kind = "latency", guard.KindMean
	cfg.Metrics = []guard.MetricRule{{Name: "errors", Kind: guard.KindRatio}, rule}
	return cfg
}

// meanFeed drives a machine guarding errors and latency. Each tick, each arm serves n requests
// whose latencies are log-normal with the arm's median and log-sd 0.5, and a healthy 1% of
// them fail.
type meanFeed struct {
	t   testing.TB
	m   *guard.Machine
	rng *rand.Rand
	now time.Time
	// cumulative [arm]: requests, errors, latency count, latency sum
	req, errs, cnt, sum [2]float64
	ids                 int
}

func newMeanFeed(t testing.TB, cfg guard.MachineConfig, seed uint64) *meanFeed {
	t.Helper()
	m, err := guard.NewMachine(cfg, decT0)
	if err != nil {
		t.Fatal(err)
	}
	return &meanFeed{t: t, m: m, rng: rand.New(rand.NewPCG(seed, 7)), now: decT0}
}

func (f *meanFeed) tick() guard.Tick {
	arm := func(x, y float64) guard.ArmReadings {
		return guard.ArmReadings{Requests: okReading(x, f.now), Errors: okReading(y, f.now)}
	}
	return guard.Tick{Time: f.now, Metrics: []guard.MetricReadings{
		{Name: "errors", Treatment: arm(f.req[0], f.errs[0]), Control: arm(f.req[1], f.errs[1])},
		{Name: "latency", Treatment: arm(f.cnt[0], f.sum[0]), Control: arm(f.cnt[1], f.sum[1])},
	}}
}

// serve adds one tick of traffic: n requests per arm, medians in seconds.
func (f *meanFeed) serve(n int, medianT, medianC float64) {
	f.now = f.now.Add(15 * time.Second)
	for a, median := range [2]float64{medianT, medianC} {
		// Bursty: the tick's traffic varies by ±50%.
		k := int(float64(n) * (0.5 + f.rng.Float64()))
		for range k {
			f.sum[a] += median * math.Exp(0.5*f.rng.NormFloat64())
			if f.rng.Float64() < 0.01 {
				f.errs[a]++
			}
		}
		f.req[a] += float64(k)
		f.cnt[a] += float64(k)
	}
}

// decide runs one tick, confirming a pending trip with the same readings.
func (f *meanFeed) decide() guard.Evidence {
	f.t.Helper()
	f.ids++
	ev, err := f.m.Decide(fmt.Sprintf("d%d", f.ids), f.tick())
	if err == nil && ev.Action == guard.ActionConfirm {
		ev, err = f.m.Confirm(fmt.Sprintf("c%d", f.ids), f.tick())
	}
	if err != nil {
		f.t.Fatal(err)
	}
	return ev
}

func TestMeanConfig(t *testing.T) {
	if err := meanConfig(guard.MetricRule{}).Validate(); err != nil {
		t.Fatalf("defaults: %v", err)
	}
	m, err := guard.NewMachine(meanConfig(guard.MetricRule{}), decT0)
	if err != nil {
		t.Fatal(err)
	}
	if got := m.Config().Metrics[1].Tau; got != guard.DefaultMeanTau {
		t.Errorf("default tau %v, want %v", got, guard.DefaultMeanTau)
	}
	for _, tc := range []struct {
		name string
		cfg  guard.MachineConfig
		want string
	}{
		{"ceiling on a mean", meanConfig(guard.MetricRule{Ceiling: 0.5}), "metrics[1].ceiling 0.5: R3 bounds an error rate"},
		{"negative margin", meanConfig(guard.MetricRule{Margin: -0.1}), "metrics[1].margin -0.1"},
		{"huge margin", meanConfig(guard.MetricRule{Margin: 11}), "metrics[1].margin 11"},
		{"NaN margin", meanConfig(guard.MetricRule{Margin: math.NaN()}), "metrics[1].margin NaN"},
		{"negative tau", meanConfig(guard.MetricRule{Tau: -1}), "metrics[1].tau -1"},
		{"infinite tau", meanConfig(guard.MetricRule{Tau: math.Inf(1)}), "metrics[1].tau +Inf"},
		{"margin on a ratio", func() guard.MachineConfig {
			c := meanConfig(guard.MetricRule{})
			c.Metrics[0].Margin = 0.1
			return c
		}(), "metrics[0]: margin and tau are for kind \"mean\""},
		{"only a mean", func() guard.MachineConfig {
			c := meanConfig(guard.MetricRule{})
			c.Metrics = c.Metrics[1:]
			return c
		}(), "at least one of kind \"ratio\""},
	} {
		err := tc.cfg.Validate()
		if !errors.Is(err, guard.ErrMachineConfig) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want %q", tc.name, err, tc.want)
		}
	}
}

// A treatment 30% slower trips R2 once each arm has its ticks, with the evidence of the means.
func TestMeanTripsOnSlowerTreatment(t *testing.T) {
	f := newMeanFeed(t, meanConfig(guard.MetricRule{}), 1)
	var ev guard.Evidence
	for i := range 200 {
		ev = f.decide()
		if ev.StateAfter == guard.StateTripped {
			break
		}
		r2 := ev.Metrics[1].R2
		if r2.Active != (r2.TreatmentTicks >= 30 && r2.ControlTicks >= 30) {
			t.Fatalf("tick %d: active %v with %d/%d ticks", i, r2.Active, r2.TreatmentTicks, r2.ControlTicks)
		}
		f.serve(100, 0.065, 0.05)
	}
	if ev.StateAfter != guard.StateTripped || ev.Cause != guard.CauseR2 || ev.Action != guard.ActionKill {
		t.Fatalf("after %d ticks: %s (%s, %s), want TRIPPED by r2: %+v", f.ids, ev.StateAfter, ev.Cause, ev.Action, ev.Metrics[1].R2)
	}
	r2 := ev.Metrics[1].R2
	t.Logf("tripped after %d ticks: ratio %.3f, ln Λ %.2f", f.ids, r2.Ratio, r2.LogLambda)
	if r2.Statistic != "msprt-normal-one-sided-relative-mean" || !r2.Active || !r2.Fired || r2.Tau != guard.DefaultMeanTau {
		t.Errorf("R2 evidence %+v", r2)
	}
	// The recorded numbers are the arms' own: means from the sums; the ratio, compared within
	// ticks, close to theirs; θ from the ratio.
	mT, mC := float64(r2.TreatmentSum)/float64(r2.TreatmentTrials), float64(r2.ControlSum)/float64(r2.ControlTrials)
	if !closeTo(float64(r2.TreatmentMean), mT, 1e-12) || !closeTo(float64(r2.ControlMean), mC, 1e-12) ||
		math.Abs(float64(r2.Ratio)/(mT/mC)-1) > 0.02 || !closeTo(float64(r2.Theta), float64(r2.Ratio)-1, 1e-12) ||
		r2.PairedTicks != r2.TreatmentTicks {
		t.Errorf("means %v/%v ratio %v θ %v over %d paired ticks, from the sums %v/%v", r2.TreatmentMean, r2.ControlMean, r2.Ratio, r2.Theta, r2.PairedTicks, mT, mC)
	}
	if r := float64(r2.Ratio); r < 1.2 || r > 1.4 {
		t.Errorf("estimated ratio %v, the treatment is 1.3× slower", r)
	}
	// A log-normal with log-sd 0.5 has variance (e^0.25 − 1)·e^0.25·median²: the per-tick
	// estimate is within a factor of 1.5 of it.
	wantVar := (math.Exp(0.25) - 1) * math.Exp(0.25) * 0.05 * 0.05
	if v := float64(r2.ControlVariance); v < wantVar/1.5 || v > wantVar*1.5 {
		t.Errorf("control variance %v, the distribution's %v", v, wantVar)
	}
	// Λ mixes the comparison from the first tick (weight 0.95) with the later starts: at least
	// the first's part.
	first := math.Log1p(-guard.LateStartWeight) + guard.LogMSPRT(float64(r2.Theta), float64(r2.V), guard.DefaultMeanTau)
	if float64(r2.LogLambda) < first-1e-12 || r2.LateStarts != guard.LateStartWeight {
		t.Errorf("ln Λ %v, below the first start's part %v; late starts %v", r2.LogLambda, first, r2.LateStarts)
	}

	// Without late starts, Λ is the comparison from the first tick alone.
	cfg := meanConfig(guard.MetricRule{})
	cfg.NoLateStarts = true
	plain := newMeanFeed(t, cfg, 1)
	for range 31 {
		ev = plain.decide()
		plain.serve(100, 0.065, 0.05)
	}
	r2 = ev.Metrics[1].R2
	if want := guard.LogMSPRT(float64(r2.Theta), float64(r2.V), guard.DefaultMeanTau); float64(r2.LogLambda) != want || r2.LateStarts != 0 || r2.LateStartAgo != 0 {
		t.Errorf("no late starts: ln Λ %v, want %v; late starts %v, %d ago", r2.LogLambda, want, r2.LateStarts, r2.LateStartAgo)
	}
}

// A slowdown after a long healthy run: the comparison from the first tick is diluted by the
// healthy ticks, the late start near the slowdown is not. With late starts R2 trips within a few
// ticks and says where the comparison that weighs most began; without them it takes far longer.
func TestMeanLateStartAfterHealthyHistory(t *testing.T) {
	run := func(noLate bool) (int, guard.MSPRTEvidence) {
		cfg := meanConfig(guard.MetricRule{Margin: 0.05})
		cfg.NoLateStarts = noLate
		f := newMeanFeed(t, cfg, 8)
		for range 480 { // two hours of healthy ticks
			if ev := f.decide(); ev.StateAfter == guard.StateTripped {
				t.Fatalf("tripped while healthy: %+v", ev.Metrics[1].R2)
			}
			f.serve(100, 0.05, 0.05)
		}
		for n := 1; n <= 2000; n++ {
			f.serve(100, 0.065, 0.05)
			if ev := f.decide(); ev.StateAfter == guard.StateTripped {
				return n, ev.Metrics[1].R2
			}
		}
		return -1, guard.MSPRTEvidence{}
	}
	late, r2 := run(false)
	plain, _ := run(true)
	t.Logf("1.3× slower after 2 h healthy: R2 trips in %d ticks with late starts (the comparison from %d ticks ago, ×%.3f), %d without", late, r2.LateStartAgo, r2.LateStartRatio, plain)
	if late < 0 || late > 10 || r2.LateStartAgo == 0 || r2.LateStartAgo > late+1 || float64(r2.LateStartRatio) < 1.15 {
		t.Errorf("with late starts: %d ticks, evidence %+v", late, r2)
	}
	if plain >= 0 && plain < 3*late {
		t.Errorf("without late starts %d ticks, with %d: the test shows nothing", plain, late)
	}
}

// With a margin of 10%, a treatment 5% slower is tolerated; without one it trips.
func TestMeanMargin(t *testing.T) {
	run := func(margin float64) (tripped bool, ticks int) {
		f := newMeanFeed(t, meanConfig(guard.MetricRule{Margin: margin}), 2)
		for range 1000 {
			ev := f.decide()
			if ev.StateAfter == guard.StateTripped {
				return true, f.ids
			}
			f.serve(200, 0.0525, 0.05)
		}
		return false, f.ids
	}
	if tripped, n := run(0); !tripped {
		t.Errorf("no margin: a 5%% slower treatment did not trip in %d ticks", n)
	}
	if tripped, n := run(0.1); tripped {
		t.Errorf("margin 10%%: a 5%% slower treatment tripped after %d ticks", n)
	}
}

// Healthy rollouts of the same latency on both arms trip R2 at most α of the time, however
// long they run, late starts included: the false-trip simulation of docs/guard.md ("How to test
// it") for the mean. 200 seeded runs of 960 ticks (four hours at 15 s) with bursty traffic;
// α = 0.05 on R2 so that false trips are common enough to count. The bound is α plus three
// standard errors of the estimate.
func TestMeanFalseTripRate(t *testing.T) {
	const runs, ticks, alpha = 200, 960, 0.05
	trips := 0
	for seed := range uint64(runs) {
		cfg := meanConfig(guard.MetricRule{})
		cfg.Alpha = 2 * alpha // split over the two metrics: α for R2
		f := newMeanFeed(t, cfg, 1000+seed)
		for range ticks {
			ev := f.decide()
			if ev.Cause == guard.CauseR2 {
				trips++
				break
			}
			if ev.StateAfter == guard.StateTripped {
				break // R1 on the healthy errors: not this test's business
			}
			f.serve(50, 0.05, 0.05)
		}
	}
	rate := float64(trips) / runs
	bound := alpha + 3*math.Sqrt(alpha*(1-alpha)/runs)
	t.Logf("R2 (mean) false trips: %d of %d healthy runs (%.2f%%), bound %.2f%%", trips, runs, 100*rate, 100*bound)
	if rate > bound {
		t.Errorf("false-trip rate %.4f > %.4f", rate, bound)
	}
}

// Missing, NaN or stale latency readings make the guard BLIND, never healthy; and the mean's
// accumulation goes on across a stage change, survives a snapshot and replays exactly.
func TestMeanBlindSnapshotAndReplay(t *testing.T) {
	f := newMeanFeed(t, meanConfig(guard.MetricRule{Margin: 0.05}), 3)
	for range 40 {
		f.decide()
		f.serve(100, 0.05, 0.05)
	}
	tk := f.tick()
	tk.Metrics[1].Control.Errors.Value = math.NaN()
	ev, err := f.m.Decide("nan", tk)
	if err != nil {
		t.Fatal(err)
	}
	if ev.StateAfter != guard.StateBlind || !strings.Contains(ev.Metrics[1].Blind, "control errors: NaN") {
		t.Fatalf("NaN latency sum: %s, blind %q", ev.StateAfter, ev.Metrics[1].Blind)
	}
	before := ev.Metrics[1].R2

	next := f.m.Config()
	next.Stage, next.Share = 3, 0.75
	if _, err := f.m.ChangeStage("stage", next, f.now); err != nil {
		t.Fatal(err)
	}
	changed := next
	changed.Metrics = append([]guard.MetricRule(nil), next.Metrics...)
	changed.Metrics[1].Margin = 0.2
	if _, err := f.m.ChangeStage("margin", changed, f.now); !errors.Is(err, guard.ErrMachineConfig) {
		t.Errorf("a stage change that changes the margin: %v, want a refusal", err)
	}

	snap := f.m.Snapshot()
	b, err := json.Marshal(snap)
	if err != nil {
		t.Fatal(err)
	}
	var back guard.MachineSnapshot
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	f.serve(100, 0.08, 0.05)
	ev, err = f.m.Decide("after", f.tick())
	if err != nil {
		t.Fatal(err)
	}
	if got := ev.Metrics[1].R2; got.TreatmentTicks != before.TreatmentTicks+1 || got.TreatmentTrials <= before.TreatmentTrials {
		t.Errorf("across the stage change: %d ticks, %v observations; before %d, %v",
			got.TreatmentTicks, got.TreatmentTrials, before.TreatmentTicks, before.TreatmentTrials)
	}
	replayed, err := guard.ReplayDecision(back, []guard.Evidence{ev})
	if err != nil {
		t.Fatal(err)
	}
	want, _ := json.Marshal(ev)
	got, _ := json.Marshal(replayed[0])
	if string(got) != string(want) {
		t.Errorf("replay differs:\n%s\n%s", want, got)
	}
	// A tampered latency reading replays differently.
	tampered := ev
	tampered.Metrics = append([]guard.MetricEvidence(nil), ev.Metrics...)
	tampered.Metrics[1].Treatment.Errors.Value *= 2
	replayed, err = guard.ReplayDecision(back, []guard.Evidence{tampered})
	if err != nil {
		t.Fatal(err)
	}
	if got, _ := json.Marshal(replayed[0].Metrics[1].R2); string(got) == string(mustJSON(t, ev.Metrics[1].R2)) {
		t.Error("a doubled latency sum replays to the same R2")
	}
}

// serveShare adds one tick of n requests split by share between the arms, with the medians
// given; no burst, so that the test sets the weights.
func (f *meanFeed) serveShare(n int, share, medianT, medianC float64) {
	f.now = f.now.Add(15 * time.Second)
	for a, arm := range [2]struct{ n, median float64 }{{float64(n) * share, medianT}, {float64(n) * (1 - share), medianC}} {
		k := int(arm.n)
		for range k {
			f.sum[a] += arm.median * math.Exp(0.5*f.rng.NormFloat64())
			if f.rng.Float64() < 0.01 {
				f.errs[a]++
			}
		}
		f.req[a] += float64(k)
		f.cnt[a] += float64(k)
	}
}

// Latency rises for everyone in the evening, when the rollout has moved from 5% to 50%: the
// treatment's observations are mostly evening ones, so its overall mean is far above the
// control's, yet the arms are alike tick by tick. R2 compares within ticks: no trip, and its
// estimate stays near 1, across seeded runs at a false-trip rate within α.
func TestMeanIgnoresDriftAcrossStages(t *testing.T) {
	const runs, alpha = 200, 0.05
	trips := 0
	var last guard.MSPRTEvidence
	for seed := range uint64(runs) {
		cfg := meanConfig(guard.MetricRule{})
		cfg.Alpha, cfg.Share = 2*alpha, 0.05
		f := newMeanFeed(t, cfg, 5000+seed)
		tripped := false
		for i := range 240 {
			if i == 120 {
				next := f.m.Config()
				next.Share = 0.5
				if _, err := f.m.ChangeStage(fmt.Sprintf("stage-%d", seed), next, f.now); err != nil {
					t.Fatal(err)
				}
			}
			ev := f.decide()
			if ev.Cause == guard.CauseR2 {
				tripped = true
				break
			}
			last = ev.Metrics[1].R2
			share, median := 0.05, 0.05
			if i >= 120 {
				share, median = 0.5, 0.08
			}
			f.serveShare(400, share, median, median)
		}
		if tripped {
			trips++
		}
	}
	pooled := float64(last.TreatmentMean) / float64(last.ControlMean)
	t.Logf("last run: overall means %.4f/%.4f (×%.3f), within ticks ×%.3f; R2 trips %d of %d", last.TreatmentMean, last.ControlMean, pooled, last.Ratio, trips, runs)
	if pooled < 1.2 {
		t.Fatalf("the drift does not separate the overall means (×%.3f): the test shows nothing", pooled)
	}
	if r := float64(last.Ratio); r < 0.95 || r > 1.05 {
		t.Errorf("the within-tick estimate ×%.3f, want near 1", r)
	}
	if bound := alpha + 3*math.Sqrt(alpha*(1-alpha)/runs); float64(trips)/runs > bound {
		t.Errorf("false-trip rate %d/%d > %.4f", trips, runs, bound)
	}
}

// BenchmarkTickWithMean is one Decide of a machine guarding errors (ratio) and latency (mean):
// what a latency metric adds to BenchmarkTick/rollouts=1.
func BenchmarkTickWithMean(b *testing.B) {
	const steps = 512
	f := newMeanFeed(b, meanConfig(guard.MetricRule{Margin: 0.1}), 1)
	ticks := make([]guard.Tick, steps)
	for k := range ticks {
		f.serve(100, 0.05, 0.05)
		ticks[k] = f.tick()
	}
	fresh := func() *guard.Machine {
		m, err := guard.NewMachine(meanConfig(guard.MetricRule{Margin: 0.1}), decT0)
		if err != nil {
			b.Fatal(err)
		}
		return m
	}
	m, k := fresh(), 0
	b.ReportAllocs()
	for b.Loop() {
		if k == steps {
			b.StopTimer()
			m, k = fresh(), 0
			b.StartTimer()
		}
		if _, err := m.Decide("bench", ticks[k]); err != nil {
			b.Fatal(err)
		}
		k++
	}
}
