package guard_test

import (
	"flag"
	"fmt"
	"math"
	"math/rand/v2"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/interlock-dev/interlock/guard"
	"github.com/interlock-dev/interlock/guard/source"
)

// The simulation suite of docs/guard.md ("How to test it", "Simulation"). `go test` runs the
// small size with a fixed seed; `go test -run Sim -v -guard.sim=large` runs thousands of runs
// (results in docs/guard.md, "Results").
var simSize = flag.String("guard.sim", "small", "size of the guard simulation: small or large")

type simScale struct {
	healthy int // 24-hour healthy runs
	compare int // 24-hour runs of the comparison scenario
	power   int // runs per row of the power table
}

func simScaleFor(t *testing.T) simScale {
	switch *simSize {
	case "small":
		return simScale{healthy: 150, compare: 40, power: 300}
	case "large":
		return simScale{healthy: 4000, compare: 1000, power: 2000}
	}
	t.Fatalf("-guard.sim=%q: want small or large", *simSize)
	return simScale{}
}

const (
	simSeed  = 20250301
	simTick  = 15 * time.Second
	simDay   = 24 * time.Hour
	simAlpha = 0.01
)

var simT0 = time.Date(2025, 3, 1, 0, 0, 0, 0, time.UTC)

// simPoisson draws from Poisson(lam): multiplication for small means, Hörmann's PTRS
// (transformed rejection with squeeze, as numpy uses) for lam ≥ 10.
func simPoisson(rng *rand.Rand, lam float64) float64 {
	if !(lam > 0) {
		return 0
	}
	if lam < 10 {
		enlam := math.Exp(-lam)
		x, prod := 0.0, 1.0
		for {
			prod *= rng.Float64()
			if prod <= enlam {
				return x
			}
			x++
		}
	}
	slam, loglam := math.Sqrt(lam), math.Log(lam)
	b := 0.931 + 2.53*slam
	a := -0.059 + 0.02483*b
	invalpha := 1.1239 + 1.1328/(b-3.4)
	vr := 0.9277 - 3.6224/(b-2)
	for {
		u := rng.Float64() - 0.5
		v := rng.Float64()
		us := 0.5 - math.Abs(u)
		k := math.Floor((2*a/us+b)*u + lam + 0.43)
		if us >= 0.07 && v <= vr {
			return k
		}
		if k < 0 || (us < 0.013 && v > us) {
			continue
		}
		lg, _ := math.Lgamma(k + 1)
		if math.Log(v)+math.Log(invalpha)-math.Log(a/(us*us)+b) <= -lam+k*loglam-lg {
			return k
		}
	}
}

func TestSimPoisson(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 1))
	for _, lam := range []float64{0.3, 4, 9.9, 10, 75, 15000} {
		const n = 20000
		var sum, sq float64
		for range n {
			x := simPoisson(rng, lam)
			if x < 0 || x != math.Floor(x) {
				t.Fatalf("Poisson(%v) drew %v", lam, x)
			}
			sum += x
			sq += x * x
		}
		mean := sum / n
		variance := sq/n - mean*mean
		// Mean within 5 standard errors; variance within 10%.
		if math.Abs(mean-lam) > 5*math.Sqrt(lam/n) || math.Abs(variance/lam-1) > 0.1 {
			t.Errorf("Poisson(%v): mean %v, variance %v", lam, mean, variance)
		}
	}
}

// simCounter is one arm's cumulative counters as a process exports them.
type simCounter struct{ req, errs float64 }

// simArms generates one tick of Poisson traffic for both arms. A reset of an arm's process loses
// what it counted before the reset in this tick and restarts its counters.
func simArms(rng *rand.Rand, c *[2]simCounter, rate, share, errT, errC float64, reset [2]bool) {
	for a := range 2 {
		s, e := share, errT
		if a == 1 {
			s, e = 1-share, errC
		}
		lam := rate * s * simTick.Seconds()
		if lam == 0 {
			continue
		}
		if !reset[a] {
			n := simPoisson(rng, lam)
			c[a].req += n
			c[a].errs += simPoisson(rng, n*e)
			continue
		}
		post := rng.Float64()
		n := simPoisson(rng, lam*post)
		c[a] = simCounter{req: n, errs: simPoisson(rng, n*e)}
	}
}

func simReading(v float64, at time.Time) source.Reading {
	return source.Reading{Value: v, At: at, Requested: at, Status: source.ReadingOK}
}

// simTickOf turns the counters into a tick; blind selects how the source fails (0: it does not).
func simTickOf(now time.Time, c *[2]simCounter, blind int) guard.Tick {
	tk := guard.Tick{Time: now, Metrics: []guard.MetricReadings{{Name: "errors",
		Treatment: guard.ArmReadings{Requests: simReading(c[0].req, now), Errors: simReading(c[0].errs, now)},
		Control:   guard.ArmReadings{Requests: simReading(c[1].req, now), Errors: simReading(c[1].errs, now)},
	}}}
	mr := &tk.Metrics[0]
	switch blind {
	case 1:
		mr.Treatment.Errors = source.Reading{Requested: now, Status: source.ReadingError, Detail: "connection refused"}
	case 2:
		mr.Control.Requests = source.Reading{Requested: now, Status: source.ReadingEmpty}
	case 3:
		mr.Treatment.Requests.Value = math.NaN()
	case 4:
		mr.Control.Errors.At = now.Add(-10 * time.Minute)
	case 5:
		mr.Control = guard.ArmReadings{}
	}
	return tk
}

// simDecide runs one tick through the machine, confirming a pending trip with an immediate
// re-query (which reads the same counters: nothing happened in between).
func simDecide(t *testing.T, m *guard.Machine, tk guard.Tick) guard.Evidence {
	ev, err := m.Decide("sim", tk)
	if err != nil {
		t.Error(err)
		return ev
	}
	if ev.Action == guard.ActionConfirm {
		if ev, err = m.Confirm("sim-confirm", tk); err != nil {
			t.Error(err)
		}
	}
	return ev
}

// simStages are a rollout's splits; the last one has no control arm.
var simStages = []float64{0.01, 0.05, 0.25, 0.5, 0.95, 1}

func simConfig(stage int) guard.MachineConfig {
	return guard.MachineConfig{
		Rollout: "sim", Stage: stage, Flag: "sim", Variant: "new", Control: "old",
		Share:          simStages[stage],
		Metrics:        []guard.MetricRule{{Name: "errors", Kind: guard.KindRatio, Ceiling: 0.05}},
		Alpha:          simAlpha,
		MinHold:        10 * time.Minute,
		MaxExtension:   time.Hour,
		OnInconclusive: guard.ActionRevert,
	}
}

// simBaselines are the comparison rules of docs/guard.md ("The comparison scenario and
// baselines"), run on the same readings as the machine.
type simBaselines struct {
	zTripped, strikeTripped bool
	strikes                 int
}

// observe applies them to the machine's evidence of one tick: a one-sided pooled z-test of the
// stage's cumulative error rates at α, and a fixed 1% ceiling on each tick's treatment error
// rate with three strikes per stage.
func (b *simBaselines) observe(me *guard.MetricEvidence) {
	nT, xT := float64(me.Treatment.StageRequests), float64(me.Treatment.StageErrors)
	nC, xC := float64(me.Control.StageRequests), float64(me.Control.StageErrors)
	if nT > 0 && nC > 0 {
		p := (xT + xC) / (nT + nC)
		if se := math.Sqrt(p * (1 - p) * (1/nT + 1/nC)); se > 0 && (xT/nT-xC/nC)/se > 2.3263478740408408 {
			b.zTripped = true
		}
	}
	if d := float64(me.Treatment.DeltaRequests); d > 0 && float64(me.Treatment.DeltaErrors)/d > 0.01 {
		b.strikes++
		if b.strikes >= 3 {
			b.strikeTripped = true
		}
	}
}

type simHealthy struct {
	tripped             bool
	trippedAt           time.Duration
	cause               guard.Cause
	zTripped, strikes   bool
	stageChanges, ready int
	blindTicks, holds   int
	rate, errRate       float64
}

// simHealthyRun is one healthy rollout for 24 simulated hours: the treatment's error rate equals
// the control's, Poisson traffic with a daily cycle and bursts, error bursts on both arms,
// source outages, counter resets and stage changes (advance on READY, step back on an
// inconclusive HOLD, and back from 100% to 50% after 30 minutes).
func simHealthyRun(t *testing.T, run int) simHealthy {
	rng := rand.New(rand.NewPCG(simSeed, uint64(run)))
	res := simHealthy{
		rate:    math.Exp(rng.Float64() * math.Log(2000)),               // 1 to 2000 requests/s
		errRate: math.Exp(math.Log(1e-4) + rng.Float64()*math.Log(200)), // 0.01% to 2%
	}
	phase := rng.Float64() * 2 * math.Pi
	stage := 0
	m, err := guard.NewMachine(simConfig(stage), simT0)
	if err != nil {
		t.Error(err)
		return res
	}
	var c [2]simCounter
	var base simBaselines
	var burstT, errBurstT, blindT int
	var burst, errBurst float64
	blindKind := 0
	stageAt := simT0
	changeStage := func(now time.Time, to int) {
		cfg := simConfig(to)
		if _, err := m.ChangeStage("sim-stage", cfg, now); err != nil {
			t.Error(err)
			return
		}
		stage, stageAt = to, now
		res.stageChanges++
		base.strikes = 0
	}
	for k := 0; k <= int(simDay/simTick); k++ {
		now := simT0.Add(time.Duration(k) * simTick)
		if k > 0 {
			if burstT == 0 && rng.Float64() < 15.0/3600 {
				burstT, burst = 4+rng.IntN(37), 2+8*rng.Float64()
			}
			if errBurstT == 0 && rng.Float64() < 15.0/7200 {
				errBurstT, errBurst = 4+rng.IntN(17), 3+17*rng.Float64()
			}
			rate := res.rate * (1 + 0.5*math.Sin(2*math.Pi*now.Sub(simT0).Hours()/24+phase))
			if burstT > 0 {
				rate *= burst
				burstT--
			}
			e := res.errRate
			if errBurstT > 0 {
				e = math.Min(0.03, e*errBurst)
				errBurstT--
			}
			reset := [2]bool{rng.Float64() < 15.0/7200, rng.Float64() < 15.0/7200}
			simArms(rng, &c, rate, simStages[stage], e, e, reset)
		}
		if blindT == 0 && rng.Float64() < 15.0/10800 {
			blindT, blindKind = 1+rng.IntN(20), 1+rng.IntN(5)
		}
		kind := 0
		if blindT > 0 {
			kind = blindKind
			blindT--
		}
		ev := simDecide(t, m, simTickOf(now, &c, kind))
		if ev.StateAfter == guard.StateBlind {
			res.blindTicks++
		}
		if ev.Action == guard.ActionHold && ev.Cause == guard.CauseSRM {
			res.holds++
		}
		if simStages[stage] < 1 && len(ev.Metrics) == 1 && ev.StateAfter != guard.StateBlind {
			base.observe(&ev.Metrics[0])
		}
		if ev.StateAfter == guard.StateTripped && !res.tripped {
			res.tripped, res.trippedAt, res.cause = true, now.Sub(simT0), ev.Cause
		}
		switch {
		case ev.Action == guard.ActionAdvance:
			res.ready++
			changeStage(now, stage+1)
		case ev.Action == guard.ActionRevert:
			changeStage(now, max(0, stage-1))
		case simStages[stage] == 1 && now.Sub(stageAt) >= 30*time.Minute && !res.tripped:
			changeStage(now, 3)
		}
	}
	res.zTripped, res.strikes = base.zTripped, base.strikeTripped
	return res
}

// simCompareRun is the comparison scenario of docs/guard.md ("The comparison scenario and
// baselines"): 100 requests/s, 5% to the treatment (5 treatment requests/s), 0.5% errors on both
// arms, one stage for 24 hours.
func simCompareRun(t *testing.T, run int) simHealthy {
	rng := rand.New(rand.NewPCG(simSeed+1, uint64(run)))
	cfg := simConfig(1)
	m, err := guard.NewMachine(cfg, simT0)
	if err != nil {
		t.Error(err)
		return simHealthy{}
	}
	var c [2]simCounter
	var base simBaselines
	res := simHealthy{rate: 100, errRate: 0.005}
	for k := 0; k <= int(simDay/simTick); k++ {
		now := simT0.Add(time.Duration(k) * simTick)
		if k > 0 {
			simArms(rng, &c, 100, 0.05, 0.005, 0.005, [2]bool{})
		}
		ev := simDecide(t, m, simTickOf(now, &c, 0))
		base.observe(&ev.Metrics[0])
		if ev.StateAfter == guard.StateTripped && !res.tripped {
			res.tripped, res.trippedAt, res.cause = true, now.Sub(simT0), ev.Cause
		}
	}
	res.zTripped, res.strikes = base.zTripped, base.strikeTripped
	return res
}

// simPowerRow is a row of the targets table of docs/guard.md ("Targets").
type simPowerRow struct {
	rate, share, regression float64
	median, p90             time.Duration
}

func (r simPowerRow) String() string {
	return fmt.Sprintf("%g req/s, %g%% treatment, %g×", r.rate, 100*r.share, r.regression)
}

// simPowerRun returns how long R1 took to trip a regressed treatment (baseline 0.5%, plain Poisson
// traffic, R3 off so that only R1 can trip), or ok=false if it did not within limit.
func simPowerRun(t *testing.T, row simPowerRow, run int, limit time.Duration) (time.Duration, bool) {
	rng := rand.New(rand.NewPCG(simSeed+2, uint64(run)))
	cfg := simConfig(0)
	cfg.Share = row.share
	cfg.Metrics[0].Ceiling = 0
	m, err := guard.NewMachine(cfg, simT0)
	if err != nil {
		t.Error(err)
		return 0, false
	}
	var c [2]simCounter
	for k := 0; k <= int(limit/simTick); k++ {
		now := simT0.Add(time.Duration(k) * simTick)
		if k > 0 {
			simArms(rng, &c, row.rate, row.share, 0.005*row.regression, 0.005, [2]bool{})
		}
		ev := simDecide(t, m, simTickOf(now, &c, 0))
		if ev.StateAfter == guard.StateTripped {
			if ev.Cause != guard.CauseR1 {
				t.Errorf("%v: tripped by %s", row, ev.Cause)
			}
			return now.Sub(simT0), true
		}
	}
	return 0, false
}

// simParallel runs f for 0..n-1 on GOMAXPROCS workers; results are indexed by run, so they do not
// depend on scheduling.
func simParallel[T any](n int, f func(int) T) []T {
	out := make([]T, n)
	var wg sync.WaitGroup
	next := make(chan int)
	for range runtime.GOMAXPROCS(0) {
		wg.Go(func() {
			for i := range next {
				out[i] = f(i)
			}
		})
	}
	for i := range n {
		next <- i
	}
	close(next)
	wg.Wait()
	return out
}

func simBound(n int) float64 { return simAlpha + 3*math.Sqrt(simAlpha*(1-simAlpha)/float64(n)) }

func TestSimFalseTrips(t *testing.T) {
	sc := simScaleFor(t)
	res := simParallel(sc.healthy, func(i int) simHealthy { return simHealthyRun(t, i) })
	var trips, z, strikes, changes, ready, blind, holds int
	causes := map[guard.Cause]int{}
	for _, r := range res {
		if r.tripped {
			trips++
			causes[r.cause]++
			t.Logf("false trip: %s after %v at %.0f req/s, %.3f%% errors", r.cause, r.trippedAt, r.rate, 100*r.errRate)
		}
		z += b2i(r.zTripped)
		strikes += b2i(r.strikes)
		changes += r.stageChanges
		ready += r.ready
		blind += r.blindTicks
		holds += r.holds
	}
	n := float64(sc.healthy)
	bound := simBound(sc.healthy)
	t.Logf("healthy 24 h runs: %d; guard trips %d (%.2f%%, bound α+3σ = %.2f%%) %v", sc.healthy, trips, 100*float64(trips)/n, 100*bound, causes)
	t.Logf("  on the same readings: z-test every tick %.1f%%, 1%% ceiling with 3 strikes %.1f%%", 100*float64(z)/n, 100*float64(strikes)/n)
	t.Logf("  per run: %.1f stage changes, %.1f advances, %.1f SRM holds, %.2f%% of ticks BLIND",
		float64(changes)/n, float64(ready)/n, float64(holds)/n, 100*float64(blind)/(n*float64(simDay/simTick)))
	if float64(trips)/n > bound {
		t.Errorf("false-trip rate %d/%d exceeds α + 3·√(α(1−α)/N) = %.4f", trips, sc.healthy, bound)
	}
	if ready == 0 || changes == 0 || blind == 0 {
		t.Errorf("the runs did not exercise the machine: %d advances, %d stage changes, %d blind ticks", ready, changes, blind)
	}
}

func TestSimComparison(t *testing.T) {
	sc := simScaleFor(t)
	res := simParallel(sc.compare, func(i int) simHealthy { return simCompareRun(t, i) })
	var trips, z, strikes int
	for _, r := range res {
		trips += b2i(r.tripped)
		z += b2i(r.zTripped)
		strikes += b2i(r.strikes)
	}
	n := float64(sc.compare)
	t.Logf("100 req/s, 5%% treatment, 0.5%% errors, 24 h, %d runs: guard %.2f%%, z-test every tick %.1f%%, 1%% ceiling with 3 strikes %.1f%%",
		sc.compare, 100*float64(trips)/n, 100*float64(z)/n, 100*float64(strikes)/n)
	if float64(trips)/n > simBound(sc.compare) {
		t.Errorf("guard false-trip rate %d/%d exceeds the bound %.4f", trips, sc.compare, simBound(sc.compare))
	}
}

func TestSimPower(t *testing.T) {
	sc := simScaleFor(t)
	rows := []simPowerRow{
		{100, 0.05, 2, 10 * time.Minute, 20 * time.Minute},
		{100, 0.05, 5, 75 * time.Second, 138 * time.Second},
		{100, 0.05, 20, 15 * time.Second, 30 * time.Second},
		{1000, 0.05, 2, 75 * time.Second, 138 * time.Second},
		{1000, 0.01, 2, 5 * time.Minute, 10 * time.Minute},
	}
	for _, row := range rows {
		t.Run(strings.ReplaceAll(row.String(), " ", "_"), func(t *testing.T) {
			limit := 3 * row.p90
			type result struct {
				at time.Duration
				ok bool
			}
			res := simParallel(sc.power, func(i int) result {
				at, ok := simPowerRun(t, row, i, limit)
				return result{at, ok}
			})
			times := make([]time.Duration, 0, len(res))
			within := 0
			for _, r := range res {
				at := time.Duration(math.MaxInt64)
				if r.ok {
					at = r.at
				}
				times = append(times, at)
				if r.ok && r.at <= row.p90 {
					within++
				}
			}
			slices.Sort(times)
			q := func(p float64) string {
				d := times[int(math.Ceil(p*float64(len(times))))-1]
				if d == math.MaxInt64 {
					return "> " + limit.String()
				}
				return d.String()
			}
			n := float64(len(res))
			frac := float64(within) / n
			// The table's p90 is the 90th percentile of this very test, so the true chance of a
			// detection within it is about 90%: allow the sampling error, as the false-trip bound
			// does (three standard errors).
			floor := 0.9 - 3*math.Sqrt(0.9*0.1/n)
			t.Logf("%v: %d runs, median %s (target %v), p90 %s (target %v), within the target p90: %.1f%% (must be ≥ %.1f%%)",
				row, len(res), q(0.5), row.median, q(0.9), row.p90, 100*frac, 100*floor)
			if frac < floor {
				t.Errorf("%v: detected within %v in %.1f%% of runs, want ≥ 90%% − 3σ = %.1f%%", row, row.p90, 100*frac, 100*floor)
			}
		})
	}
}

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}

// BenchmarkTick is one tick of guarded rollouts (one metric, both arms, healthy traffic):
// differencing, R1, R5, R3, R4 and the evidence. rollouts=1 is one Decide; rollouts=1000 is one
// Decide on each of 1,000 machines, what a guard loop does every tick for 1,000 rollouts.
func BenchmarkTick(b *testing.B) {
	for _, n := range []int{1, 1000} {
		b.Run(fmt.Sprintf("rollouts=%d", n), func(b *testing.B) {
			const steps = 512
			// Precompute the readings so that the benchmark measures the machines, not the traffic.
			ticks := make([][]guard.Tick, n)
			machines := make([]*guard.Machine, n)
			for r := range n {
				rng := rand.New(rand.NewPCG(1, uint64(r)))
				var c [2]simCounter
				ticks[r] = make([]guard.Tick, steps)
				for k := range ticks[r] {
					simArms(rng, &c, 200, 0.5, 0.005, 0.005, [2]bool{})
					ticks[r][k] = simTickOf(simT0.Add(time.Duration(k+1)*simTick), &c, 0)
				}
			}
			fresh := func() {
				for r := range machines {
					m, err := guard.NewMachine(simConfig(3), simT0)
					if err != nil {
						b.Fatal(err)
					}
					machines[r] = m
				}
			}
			fresh()
			k := 0
			b.ReportAllocs()
			for b.Loop() {
				if k == steps {
					b.StopTimer()
					fresh()
					k = 0
					b.StartTimer()
				}
				for r, m := range machines {
					ev, err := m.Decide("bench", ticks[r][k])
					if err != nil {
						b.Fatal(err)
					}
					if ev.Action == guard.ActionConfirm {
						// A healthy rollout trips now and then (α per rollout): confirm, as
						// the loop would; the machine then stays latched.
						if _, err := m.Confirm("bench", ticks[r][k]); err != nil {
							b.Fatal(err)
						}
					}
				}
				k++
			}
		})
	}
}
