package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"math"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/interlock-dev/interlock/targeting"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
)

// fakeFlags evaluates with a function, in place of a flag client.
type fakeFlags struct {
	eval func(key string, ectx *targeting.EvalContext) targeting.Evaluation
}

func (f fakeFlags) Evaluate(key string, ectx *targeting.EvalContext) targeting.Evaluation {
	return f.eval(key, ectx)
}
func (fakeFlags) Ready() bool      { return true }
func (fakeFlags) Stale() bool      { return false }
func (fakeFlags) Sequence() uint64 { return 1 }

// byUserParity serves "on" to even users and "off" to odd ones.
var byUserParity = fakeFlags{eval: func(key string, ectx *targeting.EvalContext) targeting.Evaluation {
	name := "off"
	if (ectx.TargetingKey[len(ectx.TargetingKey)-1]-'0')%2 == 0 {
		name = "on"
	}
	return targeting.Evaluation{FlagKey: key, Variant: &targeting.Variant{Name: name}, Reason: targeting.ReasonSplit, Version: 1}
}}

// testConfig is a configuration for the load loop; a knob without latency or slow factor gets
// the flags' defaults.
func testConfig(rate float64, k knob) demoConfig {
	if k.Latency == 0 {
		k.Latency = defaultLatency
	}
	if k.SlowFactor == 0 {
		k.SlowFactor = defaultSlowFactor
	}
	return demoConfig{Environment: "production", Flag: "checkout-v2", Listen: "127.0.0.1:0", Rate: rate, Users: 100, Knob: k, Seed: 7}
}

// runFor runs the load loop of d for the virtual duration dur and returns its last snapshot.
func runFor(t *testing.T, d *demo, dur time.Duration) *snapshot {
	t.Helper()
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- d.runLoad(ctx) }()
	time.Sleep(dur)
	synctest.Wait()
	s := d.snap.Load()
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("runLoad: %v", err)
	}
	return s
}

func TestLoadPacing(t *testing.T) {
	for _, tc := range []struct {
		rate float64
		dur  time.Duration
		want uint64
	}{
		{50, 10 * time.Second, 500},
		{2000, time.Second, 2000},
		{1000, 3 * time.Second, 3000},
		{0.5, 10 * time.Second, 5},
		{3, 2 * time.Second, 6},
	} {
		t.Run("", func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				d := newDemo(testConfig(tc.rate, knob{FailVariant: "on"}), byUserParity, byUserParity, slog.New(slog.DiscardHandler))
				s := runFor(t, d, tc.dur)
				if s.Requests != tc.want {
					t.Errorf("rate %v for %v: %d requests, want %d", tc.rate, tc.dur, s.Requests, tc.want)
				}
				if sum := s.Variants["on"].Requests + s.Variants["off"].Requests; sum != s.Requests {
					t.Errorf("variants add up to %d of %d requests", sum, s.Requests)
				}
			})
		})
	}
}

func TestLoadFailures(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		d := newDemo(testConfig(1000, knob{FailVariant: "on", FailRate: 1}), byUserParity, byUserParity, slog.New(slog.DiscardHandler))
		d.declare([]string{"on", "off", "spare"})
		s := runFor(t, d, 2*time.Second)
		on, off := s.Variants["on"], s.Variants["off"]
		if on.Requests == 0 || on.Errors != on.Requests {
			t.Errorf("on with fail rate 1: %+v", on)
		}
		if off.Requests == 0 || off.Errors != 0 {
			t.Errorf("off without base rate: %+v", off)
		}
		// Declared variants are exposed before their first request.
		if spare, ok := s.Variants["spare"]; !ok || spare != (tally{}) {
			t.Errorf("declared variant spare: %+v, %v", spare, ok)
		}
		if s.Last == nil || s.Last.Reason != "SPLIT" || s.KnobVersion != 1 {
			t.Errorf("snapshot %+v", s)
		}
	})
}

func TestLoadEvaluationErrors(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		missing := fakeFlags{eval: func(key string, _ *targeting.EvalContext) targeting.Evaluation {
			return targeting.Evaluation{FlagKey: key, Reason: targeting.ReasonError, ErrorCode: targeting.ErrorFlagNotFound}
		}}
		d := newDemo(testConfig(100, knob{FailVariant: "on", FailRate: 1}), missing, missing, slog.New(slog.DiscardHandler))
		s := runFor(t, d, time.Second)
		if c := s.Variants[variantError]; len(s.Variants) != 1 || c.Requests != 100 || c.Errors != 0 {
			t.Errorf("failed evaluations: %+v, want 100 requests under %q and no errors", s.Variants, variantError)
		}
	})
}

func TestLoadManyVariants(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		n := 0
		renamed := fakeFlags{eval: func(key string, _ *targeting.EvalContext) targeting.Evaluation {
			n++
			return targeting.Evaluation{FlagKey: key, Variant: &targeting.Variant{Name: "v" + strings.Repeat("x", n%1000)}}
		}}
		d := newDemo(testConfig(2000, knob{FailVariant: "on"}), renamed, renamed, slog.New(slog.DiscardHandler))
		s := runFor(t, d, time.Second)
		if len(s.Variants) != maxVariants+1 || s.Variants[variantOther].Requests == 0 {
			t.Errorf("%d variant labels (other: %+v), want %d and the rest under %q", len(s.Variants), s.Variants[variantOther], maxVariants+1, variantOther)
		}
	})
}

func TestKnobChangeAppliesPerTick(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		d := newDemo(testConfig(1000, knob{FailVariant: "on"}), byUserParity, byUserParity, slog.New(slog.DiscardHandler))
		ctx, cancel := context.WithCancel(t.Context())
		defer cancel()
		go func() { _ = d.runLoad(ctx) }()
		time.Sleep(time.Second)
		synctest.Wait()
		before := d.snap.Load()
		k, err := d.setKnob(knobPatch{FailRate: ptr(1.0)})
		if err != nil || k.Version != 2 {
			t.Fatalf("setKnob: %+v, %v", k, err)
		}
		time.Sleep(time.Second)
		synctest.Wait()
		after := d.snap.Load()
		if after.KnobVersion != 2 {
			t.Fatalf("knob version %d applied, want 2", after.KnobVersion)
		}
		dr := after.Variants["on"].Requests - before.Variants["on"].Requests
		de := after.Variants["on"].Errors - before.Variants["on"].Errors
		if dr == 0 || de != dr || before.Variants["on"].Errors != 0 {
			t.Errorf("on: %d errors of %d requests after the knob, %d before", de, dr, before.Variants["on"].Errors)
		}
	})
}

func ptr[T any](v T) *T { return &v }

func TestFailProbability(t *testing.T) {
	k := knob{FailVariant: "on", FailRate: 0.2, BaseErrorRate: 0.01}
	for _, tc := range []struct {
		variant string
		want    float64
	}{
		{"on", 1 - 0.99*0.8},
		{"off", 0.01},
		{variantError, 0.01},
	} {
		if got := k.failProbability(tc.variant); math.Abs(got-tc.want) > 1e-12 {
			t.Errorf("%s: %v, want %v", tc.variant, got, tc.want)
		}
	}
	all := knob{FailVariant: "on", FailRate: 1, BaseErrorRate: 0.3}
	if got := all.failProbability("on"); got != 1 {
		t.Errorf("fail rate 1: %v", got)
	}
}

func TestDecodeKnobPatch(t *testing.T) {
	cur := knob{FailVariant: "on", FailRate: 0, BaseErrorRate: 0.001, Latency: 0.05, SlowFactor: 1}
	with := func(change func(*knob)) knob {
		k := cur
		change(&k)
		return k
	}
	for _, tc := range []struct {
		body string
		want knob
		// field, for a refused body, is what the error must name.
		field string
	}{
		{`{"failRate":0.2}`, with(func(k *knob) { k.FailRate = 0.2 }), ""},
		{`{"failVariant":"treatment","failRate":1}`, with(func(k *knob) { k.FailVariant, k.FailRate = "treatment", 1 }), ""},
		{` {"baseErrorRate":0} `, with(func(k *knob) { k.BaseErrorRate = 0 }), ""},
		{`{"failRate":null,"baseErrorRate":0.5}`, with(func(k *knob) { k.BaseErrorRate = 0.5 }), ""},
		{`{"failRate":0}`, cur, ""},
		{`{"latency":0.2}`, with(func(k *knob) { k.Latency = 0.2 }), ""},
		{`{"latency":60}`, with(func(k *knob) { k.Latency = 60 }), ""},
		{`{"latency":1e-9}`, with(func(k *knob) { k.Latency = 1e-9 }), ""},
		{`{"slowFactor":3}`, with(func(k *knob) { k.SlowFactor = 3 }), ""},
		{`{"slowFactor":100,"latency":null}`, with(func(k *knob) { k.SlowFactor = 100 }), ""},
		{`{"failVariant":"off","failRate":0.1,"baseErrorRate":0.01,"latency":0.1,"slowFactor":2.5}`,
			knob{FailVariant: "off", FailRate: 0.1, BaseErrorRate: 0.01, Latency: 0.1, SlowFactor: 2.5}, ""},
		{`{"failRate":1.0000001}`, knob{}, "failRate"},
		{`{"failRate":-0.5}`, knob{}, "failRate"},
		{`{"failVariant":"a/b"}`, knob{}, "failVariant"},
		{`{"failVariant":"` + strings.Repeat("v", 65) + `"}`, knob{}, "failVariant"},
		{`{"latency":0}`, knob{}, "latency"},
		{`{"latency":-0.1}`, knob{}, "latency"},
		{`{"latency":60.001}`, knob{}, "latency"},
		{`{"latency":1e400}`, knob{}, "latency"},
		{`{"latency":"0.1"}`, knob{}, "latency"},
		{`{"latency":[0.1]}`, knob{}, "latency"},
		{`{"slowFactor":0.99}`, knob{}, "slowFactor"},
		{`{"slowFactor":0}`, knob{}, "slowFactor"},
		{`{"slowFactor":100.5}`, knob{}, "slowFactor"},
		{`{"slowFactor":true}`, knob{}, "slowFactor"},
		{`{"slowFactor":{"x":1}}`, knob{}, "slowFactor"},
		{`{"failVariant":3}`, knob{}, "failVariant"},
		{`{"slowFactor":2,"latency":0}`, knob{}, "latency"},
		{`{"FailRate ":0.1}`, knob{}, `"FailRate "`},
		{`{"slowfactor":2}`, knob{}, `"slowfactor"`},
		{`{"LATENCY":0.1,"latency":0.1}`, knob{}, `"LATENCY"`},
		{`{"failRate":0.1,"rate":5}`, knob{}, `"rate"`},
		{`{}`, knob{}, "nothing to change"},
		{`{"failRate":null}`, knob{}, "nothing to change"},
		{`null`, knob{}, "nothing to change"},
		{`0.2`, knob{}, "JSON object"},
		{`[{"failRate":0.1}]`, knob{}, "JSON object"},
		{`{"failRate":0.2}]`, knob{}, "one JSON object"},
	} {
		p, err := decodeKnobPatch([]byte(tc.body))
		var got knob
		if err == nil {
			got, err = cur.apply(p)
		}
		ok := tc.field == ""
		if ok != (err == nil) || got != tc.want {
			t.Errorf("%s: %+v, %v; want %+v, ok %v", tc.body, got, err, tc.want, ok)
		}
		if err != nil && (!errors.Is(err, errBadKnob) || !strings.Contains(err.Error(), tc.field)) {
			t.Errorf("%s: error %q does not wrap errBadKnob or does not name %s", tc.body, err, tc.field)
		}
	}
}

func TestKnobFieldsDecode(t *testing.T) {
	// Every name in knobFields is a field of the patch: a body with it alone changes something.
	values := map[string]string{"failVariant": `"x"`, "failRate": "0.5", "baseErrorRate": "0.5", "latency": "0.5", "slowFactor": "5"}
	for _, name := range knobFields {
		p, err := decodeKnobPatch([]byte(`{"` + name + `":` + values[name] + `}`))
		if err != nil || p == (knobPatch{}) {
			t.Errorf("field %s: %+v, %v", name, p, err)
		}
	}
	if len(values) != len(knobFields) {
		t.Errorf("knobFields %v, want the %d fields of the knob", knobFields, len(values))
	}
}

func TestKnobValidate(t *testing.T) {
	good := knob{FailVariant: "on", FailRate: 0.1, BaseErrorRate: 0.01, Latency: defaultLatency, SlowFactor: defaultSlowFactor}
	for _, tc := range []struct {
		name   string
		change func(*knob)
		fields []string // named by the error; none for a valid knob
	}{
		{"defaults", func(*knob) {}, nil},
		{"longest latency", func(k *knob) { k.Latency = maxLatency }, nil},
		{"tiny latency", func(k *knob) { k.Latency = math.SmallestNonzeroFloat64 }, nil},
		{"slowest", func(k *knob) { k.SlowFactor = maxSlowFactor }, nil},
		{"slow factor 1.5", func(k *knob) { k.SlowFactor = 1.5 }, nil},
		{"zero latency", func(k *knob) { k.Latency = 0 }, []string{"latency"}},
		{"negative latency", func(k *knob) { k.Latency = -1 }, []string{"latency"}},
		{"latency too long", func(k *knob) { k.Latency = math.Nextafter(maxLatency, math.Inf(1)) }, []string{"latency"}},
		{"latency NaN", func(k *knob) { k.Latency = math.NaN() }, []string{"latency"}},
		{"latency Inf", func(k *knob) { k.Latency = math.Inf(1) }, []string{"latency"}},
		{"slow factor below 1", func(k *knob) { k.SlowFactor = math.Nextafter(1, 0) }, []string{"slowFactor"}},
		{"slow factor too large", func(k *knob) { k.SlowFactor = 100.01 }, []string{"slowFactor"}},
		{"slow factor NaN", func(k *knob) { k.SlowFactor = math.NaN() }, []string{"slowFactor"}},
		{"slow factor Inf", func(k *knob) { k.SlowFactor = math.Inf(1) }, []string{"slowFactor"}},
		{"zero value", func(k *knob) { *k = knob{} }, []string{"failVariant", "latency", "slowFactor"}},
		{"all wrong", func(k *knob) { *k = knob{FailVariant: "?", FailRate: 2, BaseErrorRate: -1, Latency: 61, SlowFactor: 0} },
			[]string{"failVariant", "failRate", "baseErrorRate", "latency", "slowFactor"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			k := good
			tc.change(&k)
			err := k.validate()
			if (err == nil) != (len(tc.fields) == 0) {
				t.Fatalf("%+v: %v, want problems with %v", k, err, tc.fields)
			}
			if err == nil {
				return
			}
			if !errors.Is(err, errBadKnob) {
				t.Errorf("error %v does not wrap errBadKnob", err)
			}
			if n := len(strings.Split(err.Error(), "\n")); n != len(tc.fields) {
				t.Errorf("%d problems in %q, want %d", n, err, len(tc.fields))
			}
			for _, f := range tc.fields {
				if !strings.Contains(err.Error(), f+":") {
					t.Errorf("error %q does not name %s", err, f)
				}
			}
		})
	}
}

func TestKnobLatency(t *testing.T) {
	k := knob{FailVariant: "on", Latency: 0.2, SlowFactor: 4}
	// The same draws give the slow variant exactly SlowFactor times the latency.
	a, b := newRand(9), newRand(9)
	for range 100 {
		on, off := k.latency(a, "on"), k.latency(b, "off")
		if !(off > 0) || math.IsInf(off, 0) || math.Abs(on-4*off) > 1e-12*on {
			t.Fatalf("latency on %v, off %v: want off positive and on 4 times off", on, off)
		}
	}
	// The median is Latency: about half the draws fall either side of it.
	rng := newRand(10)
	below := 0
	const n = 10000
	for range n {
		if k.latency(rng, "off") < k.Latency {
			below++
		}
	}
	if below < n*45/100 || below > n*55/100 {
		t.Errorf("%d of %d latencies below the median %v", below, n, k.Latency)
	}
}

func TestObserve(t *testing.T) {
	for _, tc := range []struct {
		latency float64
		bucket  int // index in latencyBounds; len(latencyBounds) for +Inf only
	}{
		{0, 0},
		{0.001, 0},
		{0.005, 0},
		{math.Nextafter(0.005, 1), 1},
		{0.05, 3},
		{0.07, 4},
		{1, 7},
		{10, 10},
		{math.Nextafter(10, 11), len(latencyBounds)},
		{1e9, len(latencyBounds)},
	} {
		var c tally
		c.Requests++
		c.observe(tc.latency)
		var want [len(latencyBounds)]uint64
		if tc.bucket < len(want) {
			want[tc.bucket] = 1
		}
		if c.buckets != want || c.LatencySum != tc.latency {
			t.Errorf("latency %v: buckets %v, sum %v; want %v, %v", tc.latency, c.buckets, c.LatencySum, want, tc.latency)
		}
	}
}

// loadWith runs the load loop at 2000 requests a second for two virtual seconds with k
// (seed 7) and returns its last snapshot.
func loadWith(t *testing.T, k knob) *snapshot {
	t.Helper()
	var s *snapshot
	synctest.Test(t, func(t *testing.T) {
		d := newDemo(testConfig(2000, k), byUserParity, byUserParity, slog.New(slog.DiscardHandler))
		s = runFor(t, d, 2*time.Second)
	})
	return s
}

func TestLoadLatency(t *testing.T) {
	// The mean of a log-normal latency with median m and log-sd 0.5 is m·e^(0.125).
	mean := func(median float64) float64 { return median * math.Exp(latencyLogSD*latencyLogSD/2) }
	for _, tc := range []struct {
		name         string
		k            knob
		ratioAtLeast float64 // of on's mean latency to off's
		ratioAtMost  float64
	}{
		{"alike", knob{FailVariant: "on", Latency: 0.05, SlowFactor: 1}, 0.8, 1.25},
		{"on three times slower", knob{FailVariant: "on", Latency: 0.05, SlowFactor: 3}, 2, 4},
		{"off ten times slower", knob{FailVariant: "off", Latency: 0.01, SlowFactor: 10}, 0.05, 0.2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := loadWith(t, tc.k)
			on, off := s.Variants["on"], s.Variants["off"]
			if on.Requests < 1500 || off.Requests < 1500 {
				t.Fatalf("too few requests: on %+v, off %+v", on, off)
			}
			ratio := on.meanLatency() / off.meanLatency()
			if ratio < tc.ratioAtLeast || ratio > tc.ratioAtMost {
				t.Errorf("mean latency on %v, off %v: ratio %.2f, want between %v and %v", on.meanLatency(), off.meanLatency(), ratio, tc.ratioAtLeast, tc.ratioAtMost)
			}
			// The variant served normally has the log-normal's mean, give or take 10%.
			normal := off
			if tc.k.FailVariant == "off" {
				normal = on
			}
			if want := mean(tc.k.Latency); math.Abs(normal.meanLatency()-want) > want/10 {
				t.Errorf("mean latency %v, want about %v", normal.meanLatency(), want)
			}
		})
	}
}

func TestLoadRepeatable(t *testing.T) {
	k := knob{FailVariant: "on", FailRate: 0.1, BaseErrorRate: 0.01, SlowFactor: 2}
	a, b := loadWith(t, k), loadWith(t, k)
	if !maps.Equal(a.Variants, b.Variants) || a.Requests != b.Requests {
		t.Errorf("the same seed, different counts:\n%+v\n%+v", a.Variants, b.Variants)
	}
	if a.Variants["on"].LatencySum == 0 {
		t.Errorf("no latency recorded: %+v", a.Variants)
	}
	synctest.Test(t, func(t *testing.T) {
		cfg := testConfig(2000, k)
		cfg.Seed = 8
		c := runFor(t, newDemo(cfg, byUserParity, byUserParity, slog.New(slog.DiscardHandler)), 2*time.Second)
		if c.Variants["on"].LatencySum == a.Variants["on"].LatencySum {
			t.Errorf("seeds 7 and 8 drew the same latencies")
		}
	})
}

func TestTallyJSON(t *testing.T) {
	var c tally
	if b, err := json.Marshal(c); err != nil || string(b) != `{"requests":0,"errors":0,"latencySumSeconds":0}` {
		t.Errorf("empty tally: %s, %v", b, err)
	}
	c.Requests, c.Errors = 4, 1
	for _, l := range []float64{0.1, 0.2, 0.3, 0.4} {
		c.observe(l)
	}
	var got map[string]float64
	b, err := json.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &got); err != nil || got["requests"] != 4 || got["errors"] != 1 ||
		math.Abs(got["meanLatencySeconds"]-0.25) > 1e-12 || math.Abs(got["latencySumSeconds"]-1) > 1e-12 || len(got) != 4 {
		t.Errorf("tally %s, %v", b, err)
	}
}

// TestHistogramExposition checks the exact text exposition of a known snapshot.
func TestHistogramExposition(t *testing.T) {
	var c tally
	for _, l := range []float64{0.003, 0.005, 0.04, 0.04, 0.3, 12} {
		c.Requests++
		c.observe(l)
	}
	var b strings.Builder
	for _, mf := range families("f", &snapshot{Variants: map[string]tally{"on": c}}) {
		if mf.GetName() != "request_duration_seconds" {
			continue
		}
		if _, err := expfmt.MetricFamilyToText(&b, mf); err != nil {
			t.Fatal(err)
		}
	}
	want := `# HELP request_duration_seconds Simulated latency of the requests, by flag and the variant they were served.
# TYPE request_duration_seconds histogram
request_duration_seconds_bucket{flag="f",variant="on",le="0.005"} 2
request_duration_seconds_bucket{flag="f",variant="on",le="0.01"} 2
request_duration_seconds_bucket{flag="f",variant="on",le="0.025"} 2
request_duration_seconds_bucket{flag="f",variant="on",le="0.05"} 4
request_duration_seconds_bucket{flag="f",variant="on",le="0.1"} 4
request_duration_seconds_bucket{flag="f",variant="on",le="0.25"} 4
request_duration_seconds_bucket{flag="f",variant="on",le="0.5"} 5
request_duration_seconds_bucket{flag="f",variant="on",le="1"} 5
request_duration_seconds_bucket{flag="f",variant="on",le="2.5"} 5
request_duration_seconds_bucket{flag="f",variant="on",le="5"} 5
request_duration_seconds_bucket{flag="f",variant="on",le="10"} 5
request_duration_seconds_bucket{flag="f",variant="on",le="+Inf"} 6
request_duration_seconds_sum{flag="f",variant="on"} ` + fmt.Sprint(c.LatencySum) + `
request_duration_seconds_count{flag="f",variant="on"} 6
`
	if b.String() != want {
		t.Errorf("got\n%s\nwant\n%s", b.String(), want)
	}
}

// TestMetricsHistogram serves a loaded demo over HTTP and reads /metrics in both formats the
// handler offers: the histogram is there for every variant, cumulative, its count the variant's
// requests_total, and the slow variant's mean latency is well above the other's.
func TestMetricsHistogram(t *testing.T) {
	var d *demo
	synctest.Test(t, func(t *testing.T) {
		d = newDemo(testConfig(2000, knob{FailVariant: "on", SlowFactor: 3}), byUserParity, byUserParity, slog.New(slog.DiscardHandler))
		d.declare([]string{"on", "off", "spare"})
		runFor(t, d, 2*time.Second)
	})
	srv := httptest.NewServer(d.handler())
	defer srv.Close()
	snap := d.snap.Load()
	for _, tc := range []struct {
		name, accept string
		format       expfmt.FormatType
	}{
		{"text", "", expfmt.TypeTextPlain},
		{"protobuf", `application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=delimited`, expfmt.TypeProtoDelim},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req, err := http.NewRequest(http.MethodGet, srv.URL+"/metrics", nil)
			if err != nil {
				t.Fatal(err)
			}
			if tc.accept != "" {
				req.Header.Set("Accept", tc.accept)
			}
			resp, err := srv.Client().Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			format := expfmt.ResponseFormat(resp.Header)
			if resp.StatusCode != http.StatusOK || format.FormatType() != tc.format {
				t.Fatalf("GET /metrics: %d %q, want 200 and %v", resp.StatusCode, resp.Header.Get("Content-Type"), tc.format)
			}
			fams := decodeFamilies(t, resp.Body, format)
			got := latenciesOf(t, "checkout-v2", fams)
			if len(got) != 3 {
				t.Fatalf("histograms of %d variants, want on, off and spare", len(got))
			}
			for v, c := range got {
				if want := snap.Variants[v]; c.Requests != want.Requests || c.LatencySum != want.LatencySum {
					t.Errorf("variant %s: count %d, sum %v; the snapshot has %d, %v", v, c.Requests, c.LatencySum, want.Requests, want.LatencySum)
				}
			}
			if got["spare"].Requests != 0 || got["on"].Requests < 1500 || got["off"].Requests < 1500 {
				t.Errorf("histogram counts %+v", got)
			}
			if r := got["on"].meanLatency() / got["off"].meanLatency(); r < 2 {
				t.Errorf("slow factor 3: mean latency on %v, off %v (ratio %.2f), want a ratio above 2", got["on"].meanLatency(), got["off"].meanLatency(), r)
			}
		})
	}
}

func TestReportLine(t *testing.T) {
	prev := &snapshot{Requests: 10, Variants: map[string]tally{"on": {Requests: 5}, "off": {Requests: 5, Errors: 1}}}
	cur := &snapshot{Requests: 510, Variants: map[string]tally{"on": {Requests: 255, Errors: 50}, "off": {Requests: 255, Errors: 2}, "error": {}}}
	want := "requests=500 error=0 (0 errors, 0.00%) off=250 (1 errors, 0.40%) on=250 (50 errors, 20.00%)\n"
	if got := reportLine(prev, cur); got != want {
		t.Errorf("got  %q\nwant %q", got, want)
	}
}

// FuzzKnobPatch: decoding never panics; what it accepts has only the knob's field names and
// applies to a valid knob or is refused with errBadKnob; an accepted knob encodes to a patch
// that decodes to itself.
func FuzzKnobPatch(f *testing.F) {
	for _, s := range []string{
		`{"failRate":0.2}`, `{"failVariant":"on","failRate":0.2}`, `{"baseErrorRate":1e-3}`,
		`{}`, `null`, `{"failRate":1e400}`, `{"failVariant":"\u00e9"}`, `{"failRate":0.1}{}`, ``,
		`{"latency":0.25}`, `{"slowFactor":3}`, `{"latency":0,"slowFactor":0.5}`, `{"latency":"1"}`,
		`{"slowFactor":1e308}`, `{"latency":60,"slowFactor":100,"failVariant":"off"}`, `{"LATENCY":1}`,
		`{"latency":1e-320}`, `{"slowFactor":null,"latency":-0}`, `[]`, `{"slowFactor":[1]}`,
	} {
		f.Add([]byte(s))
	}
	base := knob{FailVariant: "on", BaseErrorRate: 0.001, Latency: defaultLatency, SlowFactor: defaultSlowFactor}
	f.Fuzz(func(t *testing.T, body []byte) {
		p, err := decodeKnobPatch(body)
		if err != nil {
			if !errors.Is(err, errBadKnob) {
				t.Fatalf("decode error %v does not wrap errBadKnob", err)
			}
			return
		}
		var keys map[string]json.RawMessage
		if err := json.Unmarshal(body, &keys); err != nil || len(keys) == 0 {
			t.Fatalf("accepted %q, which is not an object with fields: %v", body, err)
		}
		for k := range keys {
			if !slices.Contains(knobFields, k) {
				t.Fatalf("accepted the unknown field %q", k)
			}
		}
		k, err := base.apply(p)
		if err != nil {
			if !errors.Is(err, errBadKnob) {
				t.Fatalf("apply error %v does not wrap errBadKnob", err)
			}
			return
		}
		if err := k.validate(); err != nil {
			t.Fatalf("applied knob %+v is invalid: %v", k, err)
		}
		if pr := k.failProbability(k.FailVariant); pr < 0 || pr > 1 || math.IsNaN(pr) {
			t.Fatalf("probability %v", pr)
		}
		if l := k.latency(newRand(1), k.FailVariant); !(l >= 0) || math.IsInf(l, 0) {
			t.Fatalf("latency %v from %+v", l, k)
		}
		enc, err := json.Marshal(k)
		if err != nil {
			t.Fatal(err)
		}
		p2, err := decodeKnobPatch(enc)
		if err != nil {
			t.Fatalf("re-decode %s: %v", enc, err)
		}
		k2, err := knob{FailVariant: "x", Latency: 1, SlowFactor: 1}.apply(p2)
		if err != nil || k2 != k {
			t.Fatalf("round trip %+v -> %s -> %+v, %v", k, enc, k2, err)
		}
	})
}

func BenchmarkRequest(b *testing.B) {
	d := newDemo(testConfig(1000, knob{FailVariant: "on", FailRate: 0.1, BaseErrorRate: 0.001}), byUserParity, byUserParity, slog.New(slog.DiscardHandler))
	rng := newRand(1)
	counts := map[string]*tally{}
	k := d.knob.Load()
	for b.Loop() {
		d.request(rng, &k.knob, counts)
	}
}

// decodeFamilies decodes an exposition in format into its metric families by name.
func decodeFamilies(t *testing.T, body io.Reader, format expfmt.Format) map[string]*dto.MetricFamily {
	t.Helper()
	fams := map[string]*dto.MetricFamily{}
	dec := expfmt.NewDecoder(body, format)
	for {
		var mf dto.MetricFamily
		if err := dec.Decode(&mf); err == io.EOF {
			break
		} else if err != nil {
			t.Fatalf("decode %s: %v", format, err)
		}
		fams[mf.GetName()] = &mf
	}
	return fams
}
