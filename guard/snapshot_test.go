package guard_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/interlock-dev/interlock/guard"
)

// roundTrip encodes snap, decodes it and restores a machine from it, failing t if any step does.
func roundTrip(t testing.TB, snap guard.MachineSnapshot) (*guard.Machine, []byte) {
	t.Helper()
	b, err := json.Marshal(snap)
	if err != nil {
		t.Fatalf("snapshot does not encode: %v", err)
	}
	var back guard.MachineSnapshot
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatalf("snapshot does not decode: %v\n%s", err, b)
	}
	m, err := guard.RestoreMachine(back)
	if err != nil {
		t.Fatalf("restore: %v\n%s", err, b)
	}
	return m, b
}

func mustJSON(t testing.TB, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// Property: at every call of random runs (bursts, resets, bad readings, trips and their
// confirmations, re-arms, restarts, stage changes), a machine restored from the JSON of the
// snapshot taken just before the call makes the same call with the same evidence, byte for
// byte, and snapshots to the same bytes; and every decision (a decide and its confirmation)
// replays from the snapshot before it and its evidence alone.
func TestSnapshotRestoresEveryCall(t *testing.T) {
	calls := map[guard.Call]int{}
	states := map[guard.State]int{}
	seen := map[string]int{} // snapshots in which a part of the state is set
	decisions := 0
	for seed := range uint64(8) {
		rng := rand.New(rand.NewPCG(seed, 11))
		g := newDecGen(rng)
		m, err := guard.NewMachine(g.cfg, decT0)
		if err != nil {
			t.Fatal(err)
		}
		// step makes one call on m and on a machine restored from m's snapshot, and compares.
		step := func(i int, call func(m *guard.Machine) (guard.Evidence, error)) guard.Evidence {
			t.Helper()
			before := m.Snapshot()
			clone, b := roundTrip(t, before)
			if again := mustJSON(t, clone.Snapshot()); !bytes.Equal(again, b) {
				t.Fatalf("seed %d call %d: the restored machine snapshots differently:\n%s\n%s", seed, i, b, again)
			}
			seen["pending"] += b2i(before.Pending)
			seen["blindActed"] += b2i(before.BlindActed)
			seen["inconclusiveActed"] += b2i(before.InconclusiveActed)
			seen["holdCause"] += b2i(before.HoldCause != "")
			seen["floor"] += b2i(len(before.Metrics[0].Floor) > 0)
			seen["r5"] += b2i(before.Metrics[0].R5.Ticks > 0)
			ev, err := call(m)
			if err != nil {
				t.Fatalf("seed %d call %d: %v", seed, i, err)
			}
			ev2, err := call(clone)
			if err != nil {
				t.Fatalf("seed %d call %d: the restored machine fails: %v", seed, i, err)
			}
			if a, b := mustJSON(t, ev), mustJSON(t, ev2); !bytes.Equal(a, b) {
				t.Fatalf("seed %d call %d (%s): the restored machine decides differently:\noriginal %s\nrestored %s", seed, i, ev.Call, a, b)
			}
			if a, b := mustJSON(t, m.Snapshot()), mustJSON(t, clone.Snapshot()); !bytes.Equal(a, b) {
				t.Fatalf("seed %d call %d: the states differ after the call:\n%s\n%s", seed, i, a, b)
			}
			calls[ev.Call]++
			states[ev.StateAfter]++
			return ev
		}
		outage := 0
		for i := range 150 {
			switch {
			case m.State() == guard.StateTripped && rng.IntN(10) == 0:
				step(i, func(m *guard.Machine) (guard.Evidence, error) { return m.Rearm("rearm", "oncall@example.com", g.now) })
			case rng.IntN(60) == 0:
				g.cfg.Alpha = []float64{0.01, 0.02, 0.005}[rng.IntN(3)]
				cfg := g.cfg
				step(i, func(m *guard.Machine) (guard.Evidence, error) { return m.Restart("cfg", cfg, g.now) })
			case rng.IntN(25) == 0:
				g.cfg.Stage++
				g.cfg.Share = []float64{0.05, 0.5, 0.95, 1}[rng.IntN(4)]
				g.cfg.MinHold = time.Duration(1+rng.IntN(5)) * time.Minute
				cfg := g.cfg
				step(i, func(m *guard.Machine) (guard.Evidence, error) { return m.ChangeStage("stage", cfg, g.now) })
			}
			before := m.Snapshot()
			tk, _ := g.next()
			if outage > 0 {
				// A long outage, past the grace period.
				outage--
				g.spoil(&tk)
			} else if rng.IntN(50) == 0 {
				outage = 5 + rng.IntN(10)
			}
			ev := step(i, func(m *guard.Machine) (guard.Evidence, error) { return m.Decide("tick", tk) })
			decision := []guard.Evidence{ev}
			if ev.Action == guard.ActionConfirm {
				tk2, _ := g.reread(tk)
				decision = append(decision, step(i, func(m *guard.Machine) (guard.Evidence, error) { return m.Confirm("confirm", tk2) }))
			}
			// The decision as a guard.decided event carries it: the snapshot and the calls, as JSON.
			var rec struct {
				Before guard.MachineSnapshot
				Calls  []guard.Evidence
			}
			recorded := mustJSON(t, decision)
			if err := json.Unmarshal(mustJSON(t, before), &rec.Before); err != nil {
				t.Fatal(err)
			}
			if err := json.Unmarshal(recorded, &rec.Calls); err != nil {
				t.Fatal(err)
			}
			replayed, err := guard.ReplayDecision(rec.Before, rec.Calls)
			if err != nil {
				t.Fatalf("seed %d call %d: replay decision: %v", seed, i, err)
			}
			if got := mustJSON(t, replayed); !bytes.Equal(got, recorded) {
				t.Fatalf("seed %d call %d: the decision replays differently:\nrecorded %s\nreplayed %s", seed, i, recorded, got)
			}
			decisions++
		}
	}
	// The runs must have visited what is worth restoring.
	for _, c := range []guard.Call{guard.CallDecide, guard.CallConfirm, guard.CallRestart, guard.CallChangeStage, guard.CallRearm} {
		if calls[c] == 0 {
			t.Errorf("no %s call (%v)", c, calls)
		}
	}
	for _, s := range []guard.State{guard.StateWarmup, guard.StateHealthy, guard.StateBlind, guard.StateTripped, guard.StateHold, guard.StateReady} {
		if states[s] == 0 {
			t.Errorf("no call ended in %s (%v)", s, states)
		}
	}
	for _, part := range []string{"pending", "blindActed", "inconclusiveActed", "holdCause", "floor", "r5"} {
		if seen[part] == 0 {
			t.Errorf("no snapshot with %s set (%v)", part, seen)
		}
	}
	t.Logf("%d decisions replayed; calls %v; snapshots with a part set %v", decisions, calls, seen)
}

// feedMachine runs ticks healthy ticks of 15 s (1,000 requests and 5 errors per arm) through a
// machine of one metric; with spike, a last tick in which the treatment fails 200 times, which
// must leave a confirmation pending.
func feedMachine(tb testing.TB, cfg guard.MachineConfig, ticks int, spike bool) *guard.Machine {
	tb.Helper()
	m, err := guard.NewMachine(cfg, decT0)
	if err != nil {
		tb.Fatal(err)
	}
	now := decT0
	var cum [2]decCounts
	tick := func() guard.Tick {
		return guard.Tick{Time: now, Metrics: []guard.MetricReadings{{Name: cfg.Metrics[0].Name,
			Treatment: decArm(cum[0], now), Control: decArm(cum[1], now)}}}
	}
	for i := range ticks + 1 {
		now = now.Add(15 * time.Second)
		if i > 0 {
			cum[0], cum[1] = decCounts{cum[0].req + 1000, cum[0].errs + 5}, decCounts{cum[1].req + 1000, cum[1].errs + 5}
		}
		if ev, err := m.Decide(fmt.Sprint("d", i), tick()); err != nil || ev.Action == guard.ActionConfirm {
			tb.Fatalf("tick %d: %v, action %s", i, err, ev.Action)
		}
	}
	if spike {
		now = now.Add(15 * time.Second)
		cum[0], cum[1] = decCounts{cum[0].req + 1000, cum[0].errs + 200}, decCounts{cum[1].req + 1000, cum[1].errs + 5}
		if ev, err := m.Decide("spike", tick()); err != nil || ev.Action != guard.ActionConfirm {
			tb.Fatalf("spike: %v, action %s", err, ev.Action)
		}
	}
	return m
}

// settledMachine returns a machine past WARMUP with a pending confirmation, R3's window filled
// and both e-processes informed.
func settledMachine(tb testing.TB) *guard.Machine { return feedMachine(tb, decConfig(), 4, true) }

func TestSnapshotFloatsExact(t *testing.T) {
	snap := settledMachine(t).Snapshot()
	if !snap.Pending || len(snap.Metrics[0].Floor) == 0 || snap.Metrics[0].R1.Ticks == 0 {
		t.Fatalf("the machine is not in the state the test needs: %+v", snap)
	}
	// Values the machine hardly makes, but which must survive: NaN, ±Inf, −0, subnormals, and
	// numbers that need all 17 digits.
	weird := []float64{math.NaN(), math.Inf(1), math.Inf(-1), math.Copysign(0, -1), 5e-324,
		0.1 + 0.2, 1e300, -1.7976931348623157e308, 1 / 3.0, 2.2250738585072014e-308}
	ms := &snap.Metrics[0]
	for j := range ms.R1.LogLik {
		ms.R1.LogLik[j] = guard.Float(weird[j])
		ms.R5.LogLik[j] = guard.Float(weird[len(weird)-1-j])
	}
	ms.R1.LogE, ms.R1.MaxLogE, ms.R5.ReqT = guard.Float(weird[6]), guard.Float(weird[8]), guard.Float(weird[4])
	ms.Total[0][1], ms.Stage[1][0], ms.Floor[0].Requests = guard.Float(weird[5]), guard.Float(weird[9]), guard.Float(weird[3])
	m, b := roundTrip(t, snap)
	got := m.Snapshot()
	same := func(name string, a, b guard.Float) {
		if math.Float64bits(float64(a)) != math.Float64bits(float64(b)) && !(math.IsNaN(float64(a)) && math.IsNaN(float64(b))) {
			t.Errorf("%s: %v (%#x) came back as %v (%#x)", name, a, math.Float64bits(float64(a)), b, math.Float64bits(float64(b)))
		}
	}
	gm := &got.Metrics[0]
	for j := range ms.R1.LogLik {
		same(fmt.Sprintf("r1.logLik[%d]", j), ms.R1.LogLik[j], gm.R1.LogLik[j])
		same(fmt.Sprintf("r5.logLik[%d]", j), ms.R5.LogLik[j], gm.R5.LogLik[j])
	}
	same("r1.logE", ms.R1.LogE, gm.R1.LogE)
	same("r1.maxLogE", ms.R1.MaxLogE, gm.R1.MaxLogE)
	same("r5.reqT", ms.R5.ReqT, gm.R5.ReqT)
	same("total", ms.Total[0][1], gm.Total[0][1])
	same("stage", ms.Stage[1][0], gm.Stage[1][0])
	same("floor", ms.Floor[0].Requests, gm.Floor[0].Requests)
	if again := mustJSON(t, got); !bytes.Equal(again, b) {
		t.Errorf("snapshot → JSON → restore → snapshot changed the bytes:\n%s\n%s", b, again)
	}

	// Any finite float64 survives, bit for bit.
	rng := rand.New(rand.NewPCG(3, 4))
	for range 5000 {
		v := math.Float64frombits(rng.Uint64())
		if math.IsNaN(v) || math.IsInf(v, 0) {
			continue
		}
		var back guard.RatioSnapshot
		if err := json.Unmarshal(mustJSON(t, guard.RatioSnapshot{ReqT: guard.Float(v)}), &back); err != nil {
			t.Fatal(err)
		}
		if got := float64(back.ReqT); math.Float64bits(got) != math.Float64bits(v) {
			t.Fatalf("%v (%#x) came back as %v (%#x)", v, math.Float64bits(v), got, math.Float64bits(got))
		}
	}
}

func TestRestoreMachineRejects(t *testing.T) {
	good := settledMachine(t).Snapshot()
	if _, err := guard.RestoreMachine(good); err != nil {
		t.Fatalf("a machine's own snapshot: %v", err)
	}
	for _, tc := range []struct {
		name   string
		mutate func(s *guard.MachineSnapshot)
		config bool // the error also wraps ErrMachineConfig
	}{
		{"version", func(s *guard.MachineSnapshot) { s.Version = 2 }, false},
		{"no version", func(s *guard.MachineSnapshot) { s.Version = 0 }, false},
		{"digest", func(s *guard.MachineSnapshot) { s.ConfigDigest = "0123" }, false},
		{"config changed under its digest", func(s *guard.MachineSnapshot) { s.Config.MinHold++ }, false},
		{"invalid config", func(s *guard.MachineSnapshot) { s.Config.Alpha = 2 }, true},
		{"no config", func(s *guard.MachineSnapshot) { s.Config = guard.MachineConfig{} }, true},
		{"no stage start", func(s *guard.MachineSnapshot) { s.StageStart = time.Time{} }, false},
		{"state", func(s *guard.MachineSnapshot) { s.State = "ASLEEP" }, false},
		{"no state", func(s *guard.MachineSnapshot) { s.State = "" }, false},
		{"hold cause", func(s *guard.MachineSnapshot) { s.HoldCause = guard.CauseR1 }, false},
		{"negative fresh run", func(s *guard.MachineSnapshot) { s.FreshRun = -1 }, false},
		{"no metrics", func(s *guard.MachineSnapshot) { s.Metrics = nil }, false},
		{"extra metric", func(s *guard.MachineSnapshot) { s.Metrics = append(s.Metrics, s.Metrics[0]) }, false},
		{"metric name", func(s *guard.MachineSnapshot) { s.Metrics[0].Name = "latency" }, false},
		{"negative ticks", func(s *guard.MachineSnapshot) { s.Metrics[0].R5.Ticks = -3 }, false},
		{"floor out of order", func(s *guard.MachineSnapshot) {
			s.Metrics[0].Floor = append(s.Metrics[0].Floor, guard.FloorSnapshot{At: decT0.Add(-time.Hour), Requests: 1})
		}, false},
		{"pending without its time", func(s *guard.MachineSnapshot) { s.PendingAt = time.Time{} }, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var s guard.MachineSnapshot
			if err := json.Unmarshal(mustJSON(t, good), &s); err != nil {
				t.Fatal(err)
			}
			tc.mutate(&s)
			m, err := guard.RestoreMachine(s)
			if !errors.Is(err, guard.ErrEvidence) || m != nil {
				t.Fatalf("restore: %v, machine %v; want ErrEvidence and no machine", err, m)
			}
			if tc.config != errors.Is(err, guard.ErrMachineConfig) {
				t.Errorf("restore: %v; wraps ErrMachineConfig: %v, want %v", err, errors.Is(err, guard.ErrMachineConfig), tc.config)
			}
		})
	}
}

func TestReplayDecisionRejects(t *testing.T) {
	m := settledMachine(t)
	before := m.Snapshot()
	tk := guard.Tick{Time: before.PendingAt, Metrics: []guard.MetricReadings{{Name: "errors",
		Treatment: decArm(decCounts{5000, 220}, before.PendingAt), Control: decArm(decCounts{5000, 25}, before.PendingAt)}}}
	ev, err := m.Confirm("confirm", tk)
	if err != nil || ev.StateAfter != guard.StateTripped || ev.Action != guard.ActionKill {
		t.Fatalf("confirm: %v, %s, %s", err, ev.StateAfter, ev.Action)
	}
	recorded := mustJSON(t, []guard.Evidence{ev})
	out, err := guard.ReplayDecision(before, []guard.Evidence{ev})
	if err != nil || !bytes.Equal(mustJSON(t, out), recorded) {
		t.Fatalf("replay: %v\nrecorded %s\nreplayed %s", err, recorded, mustJSON(t, out))
	}

	// A tampered reading replays to another decision: the control's errors grew as much.
	tampered := ev
	tampered.Metrics = append([]guard.MetricEvidence(nil), ev.Metrics...)
	tampered.Metrics[0].Control.Errors.Value += 195
	out, err = guard.ReplayDecision(before, []guard.Evidence{tampered})
	if err != nil {
		t.Fatal(err)
	}
	if out[0].StateAfter == guard.StateTripped || bytes.Equal(mustJSON(t, out), recorded) {
		t.Errorf("a tampered reading replayed to %s (%s)", out[0].StateAfter, out[0].Cause)
	}

	other := ev
	other.ConfigDigest = "feedface"
	if _, err := guard.ReplayDecision(before, []guard.Evidence{other}); !errors.Is(err, guard.ErrEvidence) {
		t.Errorf("another configuration's evidence: %v, want ErrEvidence", err)
	}
	unknown := ev
	unknown.Call = "explode"
	if _, err := guard.ReplayDecision(before, []guard.Evidence{unknown}); !errors.Is(err, guard.ErrEvidence) {
		t.Errorf("unknown call: %v, want ErrEvidence", err)
	}
	// A snapshot that is not the one before the calls: the machine refuses them.
	after := m.Snapshot()
	if _, err := guard.ReplayDecision(after, []guard.Evidence{ev}); !errors.Is(err, guard.ErrCallOrder) {
		t.Errorf("confirm replayed on the state after it: %v, want ErrCallOrder", err)
	}
	bad := before
	bad.Version = 0
	if _, err := guard.ReplayDecision(bad, []guard.Evidence{ev}); !errors.Is(err, guard.ErrEvidence) {
		t.Errorf("bad snapshot: %v, want ErrEvidence", err)
	}
}

// TestSnapshotSize keeps the snapshot that every decision event carries small: one metric,
// with R3 (a full window of 20 ticks) and without.
func TestSnapshotSize(t *testing.T) {
	b := mustJSON(t, feedMachine(t, decConfig(), 25, false).Snapshot())
	t.Logf("snapshot of a one-metric machine with a full R3 window: %d bytes", len(b))
	cfg := decConfig()
	cfg.Metrics[0].Ceiling = 0
	b2 := mustJSON(t, feedMachine(t, cfg, 25, false).Snapshot())
	t.Logf("snapshot of a one-metric machine without R3: %d bytes", len(b2))
	if len(b) > 8<<10 || len(b2) > 4<<10 {
		t.Errorf("snapshots of %d and %d bytes", len(b), len(b2))
	}
}

// FuzzRestoreMachine restores arbitrary JSON: it must never panic; what restores must snapshot,
// encode, restore again to the same bytes, and take its next calls without panicking.
func FuzzRestoreMachine(f *testing.F) {
	f.Add(mustJSON(f, settledMachine(f).Snapshot()))
	if m, err := guard.NewMachine(decConfig(), decT0); err == nil {
		f.Add(mustJSON(f, m.Snapshot()))
	}
	mean := newMeanFeed(f, meanConfig(guard.MetricRule{Margin: 0.1}), 9)
	for range 35 {
		if _, err := mean.m.Decide("d", mean.tick()); err != nil {
			f.Fatal(err)
		}
		mean.serve(20, 0.05, 0.05)
	}
	f.Add(mustJSON(f, mean.m.Snapshot()))
	f.Add([]byte(`{}`))
	f.Add([]byte(`null`))
	f.Add([]byte(`{"version":1,"config":{"flag":"f","variant":"v","share":1,"metrics":[{"name":"e","kind":"ratio"}]},"stageStart":"2025-01-01T00:00:00+02:00","state":"BLIND","metrics":[{"name":"e","floor":[{"at":"2025-01-01T00:00:00Z","requests":"NaN","errors":"+Inf"}]}]}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		var snap guard.MachineSnapshot
		if json.Unmarshal(data, &snap) != nil {
			return
		}
		m, err := guard.RestoreMachine(snap)
		if err != nil {
			if !errors.Is(err, guard.ErrEvidence) {
				t.Fatalf("restore: %v, want ErrEvidence", err)
			}
			return
		}
		b, err := json.Marshal(m.Snapshot())
		if err != nil {
			t.Fatalf("a restored machine's snapshot does not encode: %v", err)
		}
		m2, b2 := roundTrip(t, m.Snapshot())
		if !bytes.Equal(b, b2) {
			t.Fatalf("restore is not stable:\n%s\n%s", b, b2)
		}
		now := snap.StageStart
		for _, at := range []time.Time{snap.LastTime, snap.PendingAt} {
			if at.After(now) {
				now = at
			}
		}
		now = now.Add(15 * time.Second)
		cfg := m.Config()
		tk := guard.Tick{Time: now}
		for _, r := range cfg.Metrics {
			tk.Metrics = append(tk.Metrics, guard.MetricReadings{Name: r.Name,
				Treatment: decArm(decCounts{1e6, 1e4}, now), Control: decArm(decCounts{1e6, 10}, now)})
		}
		for _, mm := range []*guard.Machine{m, m2} {
			var ev guard.Evidence
			if mm.Pending() {
				ev, err = mm.Confirm("c", tk)
			} else {
				ev, err = mm.Decide("d", tk)
			}
			if err != nil {
				if !errors.Is(err, guard.ErrCallOrder) && !errors.Is(err, guard.ErrBadInput) {
					t.Fatalf("call: %v", err)
				}
				continue
			}
			if _, err := json.Marshal(ev); err != nil {
				t.Fatalf("evidence does not encode: %v", err)
			}
		}
	})
}

// BenchmarkSnapshot takes the snapshot of a one-metric machine, as the runner does before every
// decision, and encodes it, as it does when it records one.
func BenchmarkSnapshot(b *testing.B) {
	m := feedMachine(b, decConfig(), 25, false)
	b.Run("take", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			_ = m.Snapshot()
		}
	})
	b.Run("encode", func(b *testing.B) {
		snap := m.Snapshot()
		b.ReportAllocs()
		for b.Loop() {
			if _, err := json.Marshal(snap); err != nil {
				b.Fatal(err)
			}
		}
	})
}
