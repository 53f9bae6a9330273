package guard

import (
	"errors"
	"fmt"
	"math"
	"slices"
	"time"
)

// MetricKind says which sequential test guards a metric.
type MetricKind string

// The kinds of guarded metrics.
const (
	// KindRatio: counts of requests and errors, compared by R1 (trip) and R5 (advance).
	KindRatio MetricKind = "ratio"
	// KindMSPRT: counts of trials and events of a non-rare proportion, compared by R2 (trip only).
	KindMSPRT MetricKind = "msprt"
	// KindMean: the count and the sum of a continuous metric's observations (a histogram's or a
	// summary's _count and _sum, such as latency in seconds), whose means R2 compares relative
	// to the control's (trip only; higher is worse).
	KindMean MetricKind = "mean"
)

// MetricRule is one guarded metric of a rollout.
type MetricRule struct {
	// Name identifies the metric; Tick.Metrics must carry the same names in the same order.
	Name string `json:"name"`
	// Kind is the sequential test: KindRatio (R1 and R5), KindMSPRT or KindMean (R2).
	Kind MetricKind `json:"kind"`
	// Ceiling is R3's absolute ceiling of the treatment's error rate, in [0, 1); 0 turns R3 off.
	// Not for KindMean.
	Ceiling float64 `json:"ceiling,omitempty"`
	// Margin (KindMean only) is how much higher, relative to the control's, the treatment's mean
	// may be before it counts as worse: R2 tests μT/μC − 1 ≤ Margin. In [0, 10]; 0 by default.
	Margin float64 `json:"margin,omitempty"`
	// Tau (KindMean only) is R2's mixing scale on the relative difference μT/μC − 1: the size of
	// regression the test is most sensitive to. Default 0.1 (10%).
	Tau float64 `json:"tau,omitempty"`
}

// DefaultMeanTau is R2's mixing scale for a KindMean metric: a 10% regression of the mean.
const DefaultMeanTau = 0.1

// MachineConfig configures the guard of one rollout stage. Zero fields take the defaults listed;
// [MachineConfig.Validate] says what is out of range.
type MachineConfig struct {
	Rollout string `json:"rollout,omitempty"` // rollout id, recorded in the evidence
	Stage   int    `json:"stage"`             // stage index, recorded in the evidence
	Flag    string `json:"flag"`              // required
	Variant string `json:"variant"`           // treatment variant; required
	Control string `json:"control,omitempty"` // control variant; required when Share < 1
	Segment string `json:"segment,omitempty"`
	// Share is the configured treatment share of exposures, in (0, 1]; 1 means no control arm
	// (only R3 applies).
	Share   float64      `json:"share"`
	Metrics []MetricRule `json:"metrics"` // at least one, at least one of KindRatio

	Alpha             float64       `json:"alpha"`             // total α of the trip tests, split across metrics; default 0.01
	AlphaAdvance      float64       `json:"alphaAdvance"`      // α of R5, per metric; default 0.05
	R0                float64       `json:"r0"`                // R1's null ratio; default 1
	RMax              float64       `json:"rMax"`              // R5's null ratio, > R0; default 1.5
	Tau               float64       `json:"tau"`               // R2's mixing scale; default 0.01
	MinExposure       float64       `json:"minExposure"`       // requests per arm and metric that end WARMUP; default 50
	MinHold           time.Duration `json:"minHold"`           // default 10m
	MaxExtension      time.Duration `json:"maxExtension"`      // after MinHold, before HOLD; default 1h
	MinExpectedErrors float64       `json:"minExpectedErrors"` // R5; default 30
	SRMAlpha          float64       `json:"srmAlpha"`          // R4; default 0.001
	MaxAge            time.Duration `json:"maxAge"`            // older samples are stale; default 2m
	FreshTicks        int           `json:"freshTicks"`        // R5: fresh ticks in a row; default 2
	BlindGrace        time.Duration `json:"blindGrace"`        // default 2m
	OnBlind           Action        `json:"onBlind"`           // hold | revert; default hold
	OnInconclusive    Action        `json:"onInconclusive"`    // hold | revert | page; default page
	OnTrip            Action        `json:"onTrip"`            // kill | stepBack | openValve | freeze; default kill
	FloorWindow       time.Duration `json:"floorWindow"`       // R3; default 5m
	FloorMinRequests  float64       `json:"floorMinRequests"`  // R3; default 200
	FloorConfidence   float64       `json:"floorConfidence"`   // R3, one-sided; default 0.999
	// NoLateStarts makes R1 the plain mixture of docs/guard.md, "R1: the error-rate ratio", begun
	// at the rollout's first informative tick, whose e-value does not depend on how errors fall
	// into ticks, and R2 on means the comparison from the first paired tick alone. By default
	// both also mix over later starts
	// (weight [LateStartWeight]; see [RatioTest.WithLateStarts] and meanTest), so that a
	// regression after a long healthy run is not held back by the healthy ticks before it.
	NoLateStarts bool `json:"noLateStarts,omitempty"`
}

// setDefaults sets zero fields to their defaults. c gets its own Metrics slice first, so the
// caller's is never changed.
func (c *MachineConfig) setDefaults() {
	// The rules are copied before a default is written into them, never the caller's slice; a
	// copy only when one is needed keeps the guard's tick free of it.
	copied := false
	for i := range c.Metrics {
		if c.Metrics[i].Kind == KindMean && c.Metrics[i].Tau == 0 {
			if !copied {
				c.Metrics, copied = slices.Clone(c.Metrics), true
			}
			c.Metrics[i].Tau = DefaultMeanTau
		}
	}
	orDefault(&c.Alpha, 0.01)
	orDefault(&c.AlphaAdvance, 0.05)
	orDefault(&c.R0, 1)
	orDefault(&c.RMax, 1.5)
	orDefault(&c.Tau, 0.01)
	orDefault(&c.MinExposure, 50)
	orDefault(&c.MinHold, 10*time.Minute)
	orDefault(&c.MaxExtension, time.Hour)
	orDefault(&c.MinExpectedErrors, 30)
	orDefault(&c.SRMAlpha, 0.001)
	orDefault(&c.MaxAge, 2*time.Minute)
	orDefault(&c.FreshTicks, 2)
	orDefault(&c.BlindGrace, 2*time.Minute)
	orDefault(&c.OnBlind, ActionHold)
	orDefault(&c.OnInconclusive, ActionPage)
	orDefault(&c.OnTrip, ActionKill)
	orDefault(&c.FloorWindow, 5*time.Minute)
	orDefault(&c.FloorMinRequests, 200)
	orDefault(&c.FloorConfidence, 0.999)
}

// orDefault sets *p to v when *p is the zero value.
func orDefault[T comparable](p *T, v T) {
	var zero T
	if *p == zero {
		*p = v
	}
}

// Validate reports every field of c (with defaults applied) that is out of range, joined; each
// problem wraps [ErrMachineConfig].
func (c MachineConfig) Validate() error {
	c.setDefaults()
	var errs []error
	bad := func(format string, args ...any) {
		errs = append(errs, fmt.Errorf(format+": %w", append(args, ErrMachineConfig)...))
	}
	finite := func(v float64) bool { return !math.IsNaN(v) && !math.IsInf(v, 0) }
	open01 := func(v float64) bool { return v > 0 && v < 1 }
	if c.Flag == "" {
		bad("flag: required")
	}
	if c.Variant == "" {
		bad("variant: required")
	}
	if !(c.Share > 0 && c.Share <= 1) {
		bad("share %v: must be in (0, 1]", c.Share)
	}
	if c.Share < 1 && c.Control == "" {
		bad("control: required when share < 1")
	}
	if c.Share < 1 && c.Control == c.Variant {
		bad("control %q: must differ from the variant", c.Control)
	}
	if len(c.Metrics) == 0 {
		bad("metrics: at least one required")
	}
	seen := make(map[string]bool, len(c.Metrics))
	ratios := 0
	for i, mr := range c.Metrics {
		switch {
		case mr.Name == "":
			bad("metrics[%d].name: required", i)
		case seen[mr.Name]:
			bad("metrics[%d].name %q: duplicate", i, mr.Name)
		}
		seen[mr.Name] = true
		switch mr.Kind {
		case KindRatio:
			ratios++
		case KindMSPRT, KindMean:
		default:
			bad("metrics[%d].kind %q: must be %q, %q or %q", i, mr.Kind, KindRatio, KindMSPRT, KindMean)
		}
		if !(mr.Ceiling >= 0 && mr.Ceiling < 1) {
			bad("metrics[%d].ceiling %v: must be in [0, 1)", i, mr.Ceiling)
		}
		if mr.Kind == KindMean {
			if mr.Ceiling != 0 {
				bad("metrics[%d].ceiling %v: R3 bounds an error rate, not a mean: must be 0 for kind %q", i, mr.Ceiling, KindMean)
			}
			if !(mr.Margin >= 0 && mr.Margin <= 10) {
				bad("metrics[%d].margin %v: must be in [0, 10]", i, mr.Margin)
			}
			if !(mr.Tau > 0) || !finite(mr.Tau) {
				bad("metrics[%d].tau %v: must be a finite number > 0", i, mr.Tau)
			}
		} else if mr.Margin != 0 || mr.Tau != 0 {
			bad("metrics[%d]: margin and tau are for kind %q (the machine's tau serves %q)", i, KindMean, KindMSPRT)
		}
	}
	if len(c.Metrics) > 0 && ratios == 0 {
		bad("metrics: at least one of kind %q required (R5 needs it to advance)", KindRatio)
	}
	if !open01(c.Alpha) {
		bad("alpha %v: must be in (0, 1)", c.Alpha)
	}
	if !open01(c.AlphaAdvance) {
		bad("alphaAdvance %v: must be in (0, 1)", c.AlphaAdvance)
	}
	if !(c.R0 > 0) || !finite(c.R0) {
		bad("r0 %v: must be a finite number > 0", c.R0)
	}
	if !(c.RMax > c.R0) || !finite(c.RMax) {
		bad("rMax %v: must be finite and > r0 (%v)", c.RMax, c.R0)
	}
	if !(c.Tau > 0) || !finite(c.Tau) {
		bad("tau %v: must be a finite number > 0", c.Tau)
	}
	if !(c.MinExposure >= 0) || !finite(c.MinExposure) {
		bad("minExposure %v: must be finite and ≥ 0", c.MinExposure)
	}
	if !(c.MinExpectedErrors >= 0) || !finite(c.MinExpectedErrors) {
		bad("minExpectedErrors %v: must be finite and ≥ 0", c.MinExpectedErrors)
	}
	if !open01(c.SRMAlpha) {
		bad("srmAlpha %v: must be in (0, 1)", c.SRMAlpha)
	}
	for _, d := range []struct {
		name string
		v    time.Duration
	}{{"minHold", c.MinHold}, {"maxExtension", c.MaxExtension}, {"maxAge", c.MaxAge}, {"blindGrace", c.BlindGrace}, {"floorWindow", c.FloorWindow}} {
		if d.v < 0 {
			bad("%s %v: must not be negative", d.name, d.v)
		}
	}
	if c.FreshTicks < 1 {
		bad("freshTicks %d: must be ≥ 1", c.FreshTicks)
	}
	if c.OnBlind != ActionHold && c.OnBlind != ActionRevert {
		bad("onBlind %q: must be %q or %q", c.OnBlind, ActionHold, ActionRevert)
	}
	switch c.OnInconclusive {
	case ActionHold, ActionRevert, ActionPage:
	default:
		bad("onInconclusive %q: must be %q, %q or %q", c.OnInconclusive, ActionHold, ActionRevert, ActionPage)
	}
	switch c.OnTrip {
	case ActionKill, ActionStepBack, ActionOpenValve, ActionFreeze:
	default:
		bad("onTrip %q: must be %q, %q, %q or %q", c.OnTrip, ActionKill, ActionStepBack, ActionOpenValve, ActionFreeze)
	}
	if !(c.FloorMinRequests >= 0) || !finite(c.FloorMinRequests) {
		bad("floorMinRequests %v: must be finite and ≥ 0", c.FloorMinRequests)
	}
	if !(c.FloorConfidence >= 0.5 && c.FloorConfidence < 1) {
		bad("floorConfidence %v: must be in [0.5, 1)", c.FloorConfidence)
	}
	return errors.Join(errs...)
}

// sameTest reports, wrapping ErrMachineConfig, a change of what an e-process tests.
func sameTest(a, b MachineConfig) error {
	same := a.Flag == b.Flag && a.Variant == b.Variant && a.Control == b.Control && a.Segment == b.Segment &&
		a.Alpha == b.Alpha && a.R0 == b.R0 && a.Tau == b.Tau && a.NoLateStarts == b.NoLateStarts && len(a.Metrics) == len(b.Metrics)
	for i := 0; same && i < len(a.Metrics); i++ {
		x, y := &a.Metrics[i], &b.Metrics[i]
		same = x.Name == y.Name && x.Kind == y.Kind && x.Margin == y.Margin && x.Tau == y.Tau
	}
	if !same {
		return fmt.Errorf("a stage change may not change the flag, variants, segment, metrics, alpha, r0, tau or late starts (restart instead): %w", ErrMachineConfig)
	}
	return nil
}
