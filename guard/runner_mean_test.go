package guard_test

import (
	"encoding/json"
	"math"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/interlock-dev/interlock/events"
	"github.com/interlock-dev/interlock/guard"
)

// latency serves the latency of the traffic traffic() just served: each request of an arm takes
// a log-normal time with the arm's median (log-sd 0.5), summed into a histogram's _count and
// _sum as an exposition shows them.
func (w *world) latency(rng *rand.Rand, key string, medianT, medianC float64) {
	for _, arm := range []struct {
		variant string
		median  float64
	}{{"on", medianT}, {"off", medianC}} {
		variant, median := arm.variant, arm.median
		n := w.counters.get("requests_total", key, variant) - w.counters.get("request_duration_seconds_count", key, variant)
		sum := 0.0
		for range int(n) {
			sum += median * math.Exp(0.5*rng.NormFloat64())
		}
		w.counters.add("request_duration_seconds_count", key, variant, float64(int(n)))
		w.counters.add("request_duration_seconds_sum", key, variant, sum)
	}
}

// A treatment that is slower, with no more errors, trips R2 on the latency metric: the flag is
// killed by the guard, the decision carries the means, and it replays from the record.
func TestRunnerLatencyRegressionKills(t *testing.T) {
	w := newWorld(t)
	w.createFlag("pay")
	p := w.plan(events.OnTripKill)
	p.Manual = true // the split stays at 10%: this test is about the latency
	p.Metrics = append(p.Metrics, events.RolloutMetric{Name: "latency", Kind: events.MetricMean,
		Count: "request_duration_seconds_count", Sum: "request_duration_seconds_sum", Margin: 0.05})
	w.startRollout("pay", p)
	rng := rand.New(rand.NewPCG(4, 2))

	// Healthy: the same latency on both arms, long enough for R2 to run.
	for range 45 {
		w.traffic("pay", 2000, 0.01, 0.01)
		w.latency(rng, "pay", 0.05, 0.05)
		w.tick()
	}
	f := w.flag("pay")
	if !f.Enabled || f.Rollout.Guard.Tripped {
		t.Fatalf("a healthy latency tripped the guard: %+v", f.Rollout.Guard)
	}
	evs := w.evidence[testEnv+"/pay"]
	last := evs[len(evs)-1].Metrics[1]
	if last.Kind != guard.KindMean || !last.R2.Active || last.R2.Fired || last.Treatment.Requests.Query != `request_duration_seconds_count{flag="pay",variant="on"}` {
		t.Fatalf("healthy latency evidence: kind %s, R2 %+v, query %q", last.Kind, last.R2, last.Treatment.Requests.Query)
	}

	// The treatment becomes 40% slower; its error rate does not change.
	ticks := 0
	for ; ticks < 40 && w.flag("pay").Enabled; ticks++ {
		w.traffic("pay", 2000, 0.01, 0.01)
		w.latency(rng, "pay", 0.07, 0.05)
		w.tick()
	}
	f = w.flag("pay")
	if f.Enabled || !f.Rollout.Guard.Tripped || f.Rollout.Guard.Cause != string(guard.CauseR2) {
		t.Fatalf("after %d slow ticks: enabled %v, guard %+v; want killed by r2", ticks, f.Enabled, f.Rollout.Guard)
	}
	t.Logf("killed %d ticks after the slowdown", ticks)
	decisions := w.ofType("pay", events.TypeGuardDecided)
	trip := decisions[len(decisions)-1]
	d := decided(t, trip)
	if d.Cause != string(guard.CauseR2) || d.Action != string(guard.ActionKill) || !strings.Contains(trip.Reason, "latency: Λ=") || !strings.Contains(trip.Reason, "mean treatment") || !strings.Contains(trip.Reason, "over the last") {
		t.Fatalf("trip decision %+v, reason %q", d, trip.Reason)
	}
	killed := w.ofType("pay", events.TypeFlagKilled)
	if len(killed) != 1 || killed[0].Actor != guard.Actor || killed[0].CausationID != trip.ID {
		t.Fatalf("kills %+v, want one by the guard caused by %s", killed, trip.ID)
	}
	var calls []guard.Evidence
	if err := json.Unmarshal(d.Evidence, &calls); err != nil {
		t.Fatal(err)
	}
	r2 := calls[len(calls)-1].Metrics[1].R2
	// The means since the rollout began are diluted by the healthy ticks; the comparison that
	// weighs most began at the slowdown and sees about its 1.4×.
	if !r2.Fired || r2.Margin != 0.05 || r2.LateStartAgo == 0 || r2.LateStartAgo > ticks+1 ||
		float64(r2.LateStartRatio) < 1.2 || float64(r2.LateStartRatio) > 1.6 || float64(r2.Ratio) >= float64(r2.LateStartRatio) {
		t.Fatalf("R2 evidence %+v, want fired on a comparison begun at the slowdown %d ticks ago, near 1.4×", r2, ticks)
	}
	var before guard.MachineSnapshot
	if err := json.Unmarshal(d.Before, &before); err != nil {
		t.Fatal(err)
	}
	replayed, err := guard.ReplayDecision(before, calls)
	if err != nil {
		t.Fatal(err)
	}
	got, _ := json.Marshal(replayed)
	want, _ := json.Marshal(calls)
	if string(got) != string(want) {
		t.Fatal("the trip does not replay from its record")
	}
}

// The plan says whether R1 mixes over late starts: by default it does, with noLateStarts it is
// the plain mixture; the evidence records which.
func TestRunnerLateStartsFromPlan(t *testing.T) {
	w := newWorld(t)
	w.createFlag("late")
	w.createFlag("plain")
	w.startRollout("late", w.plan(events.OnTripKill))
	p := w.plan(events.OnTripKill)
	p.NoLateStarts = true
	w.startRollout("plain", p)
	for range 4 {
		w.traffic("late", 2000, 0.01, 0.01)
		w.traffic("plain", 2000, 0.01, 0.01)
		w.tick()
	}
	for key, want := range map[string]float64{"late": guard.LateStartWeight, "plain": 0} {
		evs := w.evidence[testEnv+"/"+key]
		r1 := evs[len(evs)-1].Metrics[0].R1
		if float64(r1.LateStarts) != want || r1.Ticks == 0 {
			t.Errorf("%s: R1 late starts %v after %d ticks, want %v", key, r1.LateStarts, r1.Ticks, want)
		}
		if want == 0 && r1.LogS != r1.LogLik {
			t.Errorf("%s: the plain mixture's ln S %v is not its ℓ %v", key, r1.LogS, r1.LogLik)
		}
	}
}
