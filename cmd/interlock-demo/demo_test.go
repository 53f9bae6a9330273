package main

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"math"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/interlock-dev/interlock/projections"
)

// fakeFlags evaluates with a function, in place of a flag client.
type fakeFlags struct {
	eval func(key string, ectx *projections.EvalContext) projections.Evaluation
}

func (f fakeFlags) Evaluate(key string, ectx *projections.EvalContext) projections.Evaluation {
	return f.eval(key, ectx)
}
func (fakeFlags) Ready() bool      { return true }
func (fakeFlags) Stale() bool      { return false }
func (fakeFlags) Sequence() uint64 { return 1 }

// byUserParity serves "on" to even users and "off" to odd ones.
var byUserParity = fakeFlags{eval: func(key string, ectx *projections.EvalContext) projections.Evaluation {
	name := "off"
	if (ectx.TargetingKey[len(ectx.TargetingKey)-1]-'0')%2 == 0 {
		name = "on"
	}
	return projections.Evaluation{FlagKey: key, Variant: &projections.Variant{Name: name}, Reason: projections.ReasonSplit, Version: 1}
}}

func testConfig(rate float64, k knob) demoConfig {
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
		missing := fakeFlags{eval: func(key string, _ *projections.EvalContext) projections.Evaluation {
			return projections.Evaluation{FlagKey: key, Reason: projections.ReasonError, ErrorCode: projections.ErrorFlagNotFound}
		}}
		d := newDemo(testConfig(100, knob{FailVariant: "on", FailRate: 1}), missing, missing, slog.New(slog.DiscardHandler))
		s := runFor(t, d, time.Second)
		if len(s.Variants) != 1 || s.Variants[variantError] != (tally{Requests: 100}) {
			t.Errorf("failed evaluations: %+v, want 100 requests under %q and no errors", s.Variants, variantError)
		}
	})
}

func TestLoadManyVariants(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		n := 0
		renamed := fakeFlags{eval: func(key string, _ *projections.EvalContext) projections.Evaluation {
			n++
			return projections.Evaluation{FlagKey: key, Variant: &projections.Variant{Name: "v" + strings.Repeat("x", n%1000)}}
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
	cur := knob{FailVariant: "on", FailRate: 0, BaseErrorRate: 0.001}
	for _, tc := range []struct {
		body string
		want knob
		ok   bool
	}{
		{`{"failRate":0.2}`, knob{"on", 0.2, 0.001}, true},
		{`{"failVariant":"treatment","failRate":1}`, knob{"treatment", 1, 0.001}, true},
		{` {"baseErrorRate":0} `, knob{"on", 0, 0}, true},
		{`{"failRate":null,"baseErrorRate":0.5}`, knob{"on", 0, 0.5}, true},
		{`{"failRate":0}`, cur, true},
		{`{"failRate":1.0000001}`, knob{}, false},
		{`{"failRate":-0.5}`, knob{}, false},
		{`{"failVariant":"a/b"}`, knob{}, false},
		{`{"failVariant":"` + strings.Repeat("v", 65) + `"}`, knob{}, false},
		{`{"FailRate ":0.1}`, knob{}, false},
		{`{}`, knob{}, false},
		{`{"failRate":null}`, knob{}, false},
		{`0.2`, knob{}, false},
		{`{"failRate":0.2}]`, knob{}, false},
	} {
		p, err := decodeKnobPatch([]byte(tc.body))
		var got knob
		if err == nil {
			got, err = cur.apply(p)
		}
		if tc.ok != (err == nil) || got != tc.want {
			t.Errorf("%s: %+v, %v; want %+v, ok %v", tc.body, got, err, tc.want, tc.ok)
		}
		if err != nil && !errors.Is(err, errBadKnob) {
			t.Errorf("%s: error %v does not wrap errBadKnob", tc.body, err)
		}
	}
}

func TestReportLine(t *testing.T) {
	prev := &snapshot{Requests: 10, Variants: map[string]tally{"on": {5, 0}, "off": {5, 1}}}
	cur := &snapshot{Requests: 510, Variants: map[string]tally{"on": {255, 50}, "off": {255, 2}, "error": {0, 0}}}
	want := "requests=500 error=0 (0 errors, 0.00%) off=250 (1 errors, 0.40%) on=250 (50 errors, 20.00%)\n"
	if got := reportLine(prev, cur); got != want {
		t.Errorf("got  %q\nwant %q", got, want)
	}
}

// FuzzKnobPatch: decoding never panics; what it accepts applies to a valid knob or is refused
// with errBadKnob; an accepted knob encodes to a patch that decodes to itself.
func FuzzKnobPatch(f *testing.F) {
	for _, s := range []string{
		`{"failRate":0.2}`, `{"failVariant":"on","failRate":0.2}`, `{"baseErrorRate":1e-3}`,
		`{}`, `null`, `{"failRate":1e400}`, `{"failVariant":"\u00e9"}`, `{"failRate":0.1}{}`, ``,
	} {
		f.Add([]byte(s))
	}
	base := knob{FailVariant: "on", BaseErrorRate: 0.001}
	f.Fuzz(func(t *testing.T, body []byte) {
		p, err := decodeKnobPatch(body)
		if err != nil {
			if !errors.Is(err, errBadKnob) {
				t.Fatalf("decode error %v does not wrap errBadKnob", err)
			}
			return
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
		enc, err := json.Marshal(k)
		if err != nil {
			t.Fatal(err)
		}
		p2, err := decodeKnobPatch(enc)
		if err != nil {
			t.Fatalf("re-decode %s: %v", enc, err)
		}
		k2, err := knob{FailVariant: "x"}.apply(p2)
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
