package guard_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"math"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/interlock-dev/interlock/guard"
	"github.com/interlock-dev/interlock/guard/source"
)

func TestFloatJSON(t *testing.T) {
	tests := []struct {
		v    float64
		want string
	}{
		{0, "0"},
		{1.5, "1.5"},
		{-2, "-2"},
		{1e-7, "1e-7"},
		{1e21, "1e+21"},
		{123456789012345680, "123456789012345680"},
		{math.Nextafter(0.3, 1), "0.30000000000000004"},
		{math.NaN(), `"NaN"`},
		{math.Inf(1), `"+Inf"`},
		{math.Inf(-1), `"-Inf"`},
	}
	for _, tc := range tests {
		t.Run(tc.want, func(t *testing.T) {
			b, err := json.Marshal(guard.Float(tc.v))
			if err != nil || string(b) != tc.want {
				t.Fatalf("Marshal(%v) = %s, %v; want %s", tc.v, b, err, tc.want)
			}
			if !math.IsNaN(tc.v) && !math.IsInf(tc.v, 0) {
				// Finite values encode exactly as encoding/json encodes a float64.
				plain, _ := json.Marshal(tc.v)
				if !bytes.Equal(plain, b) {
					t.Errorf("Float %s, float64 %s", b, plain)
				}
			}
			var back guard.Float
			if err := json.Unmarshal(b, &back); err != nil {
				t.Fatal(err)
			}
			if float64(back) != tc.v && !(math.IsNaN(tc.v) && math.IsNaN(float64(back))) {
				t.Errorf("round trip %v → %s → %v", tc.v, b, back)
			}
		})
	}
	for _, bad := range []string{`"1"`, `"nan"`, `true`, `[]`, `{}`, `1e400`} {
		var f guard.Float
		if err := json.Unmarshal([]byte(bad), &f); !errors.Is(err, guard.ErrBadInput) {
			t.Errorf("Unmarshal(%s) = %v, want ErrBadInput", bad, err)
		}
	}
	f := guard.Float(7)
	if err := json.Unmarshal([]byte(`null`), &f); err != nil || f != 7 {
		t.Errorf("null: %v, %v", f, err)
	}
}

func FuzzFloatJSON(f *testing.F) {
	for _, s := range []string{"0", "-1.5e-300", `"NaN"`, `"+Inf"`, `"-Inf"`, `"Inf"`, "1e400", `"x"`, "null"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		var v guard.Float
		if err := json.Unmarshal(b, &v); err != nil {
			return
		}
		out, err := json.Marshal(v)
		if err != nil {
			t.Fatalf("decoded %s to %v, which does not encode: %v", b, v, err)
		}
		var again guard.Float
		if err := json.Unmarshal(out, &again); err != nil {
			t.Fatalf("re-decode %s: %v", out, err)
		}
		if math.Float64bits(float64(again)) != math.Float64bits(float64(v)) && !(math.IsNaN(float64(v)) && math.IsNaN(float64(again))) {
			t.Fatalf("%s → %v → %s → %v", b, v, out, again)
		}
	})
}

// replayScript drives a machine through a random run (decide, confirm, restarts, re-arms) and
// returns its evidence encoded as JSON, one record per call.
func replayScript(t *testing.T, rng *rand.Rand) (guard.MachineConfig, [][]byte) {
	t.Helper()
	g := newDecGen(rng)
	cfg0 := g.cfg
	m, err := guard.NewMachine(cfg0, decT0)
	if err != nil {
		t.Fatal(err)
	}
	var out [][]byte
	record := func(ev guard.Evidence, err error) guard.Evidence {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		b, err := json.Marshal(ev)
		if err != nil {
			t.Fatalf("evidence does not encode: %v\n%+v", err, ev)
		}
		out = append(out, b)
		return ev
	}
	for i := range 150 {
		switch {
		case m.State() == guard.StateTripped && rng.IntN(10) == 0:
			record(m.Rearm("rearm-"+string(rune('a'+i%26)), "oncall@example.com", g.now))
		case rng.IntN(60) == 0:
			cfg := g.cfg
			cfg.Alpha = []float64{0.01, 0.02, 0.005}[rng.IntN(3)]
			g.cfg = cfg
			record(m.Restart("cfg", cfg, g.now))
		case !m.Pending() && rng.IntN(25) == 0:
			cfg := g.cfg
			cfg.Stage++
			cfg.Share = []float64{0.05, 0.5, 0.95, 1}[rng.IntN(4)]
			cfg.MinHold = time.Duration(1+rng.IntN(5)) * time.Minute
			g.cfg = cfg
			record(m.ChangeStage("stage", cfg, g.now))
		}
		tk, _ := g.next()
		ev := record(m.Decide("tick", tk))
		if ev.Action == guard.ActionConfirm {
			tk2, _ := g.reread(tk)
			record(m.Confirm("tick-confirm", tk2))
		}
	}
	return cfg0, out
}

// Property: the recorded evidence, decoded from JSON and replayed through a fresh machine,
// reproduces every decision byte for byte.
func TestReplayReproducesDecisions(t *testing.T) {
	states := map[guard.State]int{}
	for seed := range uint64(15) {
		rng := rand.New(rand.NewPCG(seed, 5))
		cfg, recorded := replayScript(t, rng)
		evs := make([]guard.Evidence, len(recorded))
		for i, b := range recorded {
			if err := json.Unmarshal(b, &evs[i]); err != nil {
				t.Fatalf("seed %d record %d: %v\n%s", seed, i, err, b)
			}
			states[evs[i].StateAfter]++
		}
		replayed, err := guard.Replay(cfg, decT0, evs)
		if err != nil {
			t.Fatalf("seed %d: %v", seed, err)
		}
		if len(replayed) != len(recorded) {
			t.Fatalf("seed %d: replayed %d of %d", seed, len(replayed), len(recorded))
		}
		for i := range replayed {
			b, err := json.Marshal(replayed[i])
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(b, recorded[i]) {
				t.Fatalf("seed %d record %d differs:\nrecorded %s\nreplayed %s", seed, i, recorded[i], b)
			}
		}
	}
	// The runs must have visited the states worth replaying.
	for _, s := range []guard.State{guard.StateWarmup, guard.StateHealthy, guard.StateBlind, guard.StateTripped, guard.StateHold, guard.StateReady} {
		if states[s] == 0 {
			t.Errorf("no replayed decision ended in %s (%v)", s, states)
		}
	}
}

func TestReplayRejects(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 6))
	cfg, recorded := replayScript(t, rng)
	evs := make([]guard.Evidence, len(recorded))
	for i, b := range recorded {
		if err := json.Unmarshal(b, &evs[i]); err != nil {
			t.Fatal(err)
		}
	}
	other := cfg
	other.Alpha = 0.02
	if _, err := guard.Replay(other, decT0, evs); !errors.Is(err, guard.ErrEvidence) {
		t.Errorf("another configuration: %v, want ErrEvidence", err)
	}
	bad := append([]guard.Evidence(nil), evs...)
	bad[3].Call = "explode"
	if out, err := guard.Replay(cfg, decT0, bad); !errors.Is(err, guard.ErrEvidence) || len(out) != 3 {
		t.Errorf("unknown call: %d records, %v", len(out), err)
	}
	restart := guard.Evidence{Call: guard.CallRestart, DecisionID: "r", Time: decT0.Add(time.Hour)}
	if _, err := guard.Replay(cfg, decT0, []guard.Evidence{restart}); !errors.Is(err, guard.ErrEvidence) {
		t.Errorf("restart without config: %v, want ErrEvidence", err)
	}
	// A tampered reading replays to a different decision record.
	tampered := append([]guard.Evidence(nil), evs...)
	for i := range tampered {
		if tampered[i].Call == guard.CallDecide && len(tampered[i].Metrics) > 0 {
			ms := append([]guard.MetricEvidence(nil), tampered[i].Metrics...)
			ms[0].Treatment.Errors.Value += 1000
			tampered[i].Metrics = ms
			out, _ := guard.Replay(cfg, decT0, tampered[:i+1])
			b1, _ := json.Marshal(out[len(out)-1])
			if bytes.Equal(b1, recorded[i]) {
				t.Error("a tampered reading replayed to the recorded evidence")
			}
			break
		}
	}
	if _, err := guard.Replay(guard.MachineConfig{}, decT0, evs); !errors.Is(err, guard.ErrMachineConfig) {
		t.Errorf("invalid config: %v", err)
	}
}

func TestEvidenceJSONShape(t *testing.T) {
	f := newDecFeed(t, decConfig())
	f.add(decCounts{}, decCounts{})
	ev := f.add(decCounts{1000, 10}, decCounts{1000, 8})
	b, err := json.Marshal(ev)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		`"decisionId":"d2"`, `"call":"decide"`, `"rollout":"ro-1"`, `"stage":2`, `"flag":"checkout"`,
		`"variant":"new"`, `"control":"old"`, `"segment":"eu"`, `"stateBefore":"WARMUP"`, `"stateAfter":`,
		`"query":"sum(requests_total{variant=\"x\"})"`, `"endpoint":"http://prom:9090"`,
		`"deltaErrors":10`, `"stageRequests":1000`, `"statistic":"binomial-mixture-e-process"`,
		`"grid":[1.25,1.5,2,3,5,10]`, `"logLik":[`, `"alpha":0.01`, `"threshold":100`, `"rHat":1.25`,
		`"statistic":"wilson-lower-bound"`, `"statistic":"chi-square-1df"`, `"configDigest":"`,
	} {
		if !strings.Contains(string(b), want) {
			t.Errorf("evidence lacks %s:\n%s", want, b)
		}
	}
	if strings.Contains(string(b), `"r2"`) {
		t.Errorf("a ratio metric's evidence has R2: %s", b)
	}
}

// FuzzMachine drives a machine with arbitrary readings and calls: it must never panic, every
// piece of evidence must encode, and the run must replay identically.
func FuzzMachine(f *testing.F) {
	f.Add([]byte{1, 2, 3, 4, 5, 6, 7, 8, 9, 10})
	f.Add(bytes.Repeat([]byte{0xff, 0, 0x80, 7}, 40))
	f.Add([]byte("the guard decides"))
	f.Fuzz(func(t *testing.T, data []byte) {
		cfg := decConfig()
		cfg.Metrics = append(cfg.Metrics, guard.MetricRule{Name: "slow", Kind: guard.KindMSPRT, Ceiling: 0.2},
			guard.MetricRule{Name: "latency", Kind: guard.KindMean, Margin: 0.1})
		if len(data) > 0 && data[0]&1 == 1 {
			cfg.Share = 1 // a stage without control (the control variant stays named)
		}
		m, err := guard.NewMachine(cfg, decT0)
		if err != nil {
			t.Fatal(err)
		}
		next := func() byte {
			if len(data) == 0 {
				return 0
			}
			b := data[0]
			data = data[1:]
			return b
		}
		value := func() float64 {
			switch b := next(); b {
			case 250:
				return math.NaN()
			case 251:
				return math.Inf(1)
			case 252:
				return -1
			case 253:
				return 1e300
			default:
				return float64(b) * float64(next())
			}
		}
		reading := func(now time.Time) source.Reading {
			st := []source.ReadingStatus{source.ReadingOK, source.ReadingOK, source.ReadingOK, source.ReadingError, "", "weird"}[int(next())%6]
			return source.Reading{Value: value(), At: now.Add(-time.Duration(next()) * time.Second), Status: st}
		}
		now := decT0
		var evs []guard.Evidence
		for len(data) > 0 {
			now = now.Add(time.Duration(next()) * time.Second)
			tk := guard.Tick{Time: now}
			for _, r := range cfg.Metrics {
				tk.Metrics = append(tk.Metrics, guard.MetricReadings{Name: r.Name,
					Treatment: guard.ArmReadings{Requests: reading(now), Errors: reading(now)},
					Control:   guard.ArmReadings{Requests: reading(now), Errors: reading(now)}})
			}
			var ev guard.Evidence
			var err error
			switch op := next() % 16; {
			case m.Pending():
				ev, err = m.Confirm("c", tk)
			case op == 0:
				ev, err = m.Rearm("r", "fuzz", now)
			case op == 1:
				ev, err = m.Restart("s", cfg, now)
			case op == 2:
				next := cfg
				next.Stage++
				next.Share = []float64{0.01, 0.5, 1}[int(next.Stage)%3]
				ev, err = m.ChangeStage("c", next, now)
			default:
				ev, err = m.Decide("d", tk)
			}
			if err != nil {
				if !errors.Is(err, guard.ErrCallOrder) && !errors.Is(err, guard.ErrBadInput) {
					t.Fatalf("unexpected error: %v", err)
				}
				continue
			}
			for _, me := range ev.Metrics {
				if math.IsNaN(float64(me.R1.LogE)) || math.IsNaN(float64(me.R5.LogE)) {
					t.Fatalf("NaN e-value: %+v", me)
				}
			}
			evs = append(evs, ev)
		}
		var recorded [][]byte
		for _, ev := range evs {
			b, err := json.Marshal(ev)
			if err != nil {
				t.Fatalf("evidence does not encode: %v", err)
			}
			recorded = append(recorded, b)
		}
		decoded := make([]guard.Evidence, len(recorded))
		for i, b := range recorded {
			if err := json.Unmarshal(b, &decoded[i]); err != nil {
				t.Fatalf("decode: %v\n%s", err, b)
			}
		}
		replayed, err := guard.Replay(cfg, decT0, decoded)
		if err != nil {
			t.Fatalf("replay: %v", err)
		}
		for i := range replayed {
			b, _ := json.Marshal(replayed[i])
			if !bytes.Equal(b, recorded[i]) {
				t.Fatalf("record %d differs:\n%s\n%s", i, recorded[i], b)
			}
		}
	})
}

// BenchmarkEvidenceJSON encodes the evidence of one decision (one metric, both arms), as
// recording a decision event does.
func BenchmarkEvidenceJSON(b *testing.B) {
	m, err := guard.NewMachine(decConfig(), decT0)
	if err != nil {
		b.Fatal(err)
	}
	at := decT0.Add(15 * time.Second)
	if _, err := m.Decide("a", guard.Tick{Time: decT0, Metrics: []guard.MetricReadings{{Name: "errors",
		Treatment: decArm(decCounts{}, decT0), Control: decArm(decCounts{}, decT0)}}}); err != nil {
		b.Fatal(err)
	}
	ev, err := m.Decide("b", guard.Tick{Time: at, Metrics: []guard.MetricReadings{{Name: "errors",
		Treatment: decArm(decCounts{1000, 10}, at), Control: decArm(decCounts{1000, 9}, at)}}})
	if err != nil || ev.Metrics[0].Treatment.Baseline || ev.Metrics[0].Blind != "" {
		b.Fatalf("setup: %v %+v", err, ev.Metrics[0])
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := json.Marshal(ev); err != nil {
			b.Fatal(err)
		}
	}
}
