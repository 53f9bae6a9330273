package events

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net/url"
	"slices"
	"strconv"
	"time"
)

// Event types of rollouts, of the guard and of safety valves. They are events of the flag they
// concern, on the flag's subject, so that one expected sequence orders them with every other
// change of the flag: a stage change and the split it writes are one event.
const (
	TypeRolloutCreated     = "io.interlock.rollout.created.v1"
	TypeRolloutStarted     = "io.interlock.rollout.started.v1"
	TypeRolloutPaused      = "io.interlock.rollout.paused.v1"
	TypeRolloutResumed     = "io.interlock.rollout.resumed.v1"
	TypeRolloutAdvanced    = "io.interlock.rollout.advanced.v1"
	TypeRolloutSteppedBack = "io.interlock.rollout.steppedback.v1"
	TypeRolloutCompleted   = "io.interlock.rollout.completed.v1"
	TypeRolloutAborted     = "io.interlock.rollout.aborted.v1"

	TypeGuardDecided = "io.interlock.guard.decided.v1"
	TypeGuardRearmed = "io.interlock.guard.rearmed.v1"

	TypeValveConfigured = "io.interlock.valve.configured.v1"
	TypeValveOpened     = "io.interlock.valve.opened.v1"
	TypeValveClosed     = "io.interlock.valve.closed.v1"
)

// Duration is a time.Duration that encodes to JSON as Go's duration text ("10m", "1h30m") and
// decodes from it. The zero Duration means "the default" wherever one is used.
type Duration time.Duration

// MarshalJSON encodes d as a string such as "15s".
func (d Duration) MarshalJSON() ([]byte, error) {
	return json.Marshal(time.Duration(d).String())
}

// UnmarshalJSON decodes a string such as "15s" or "1h30m". A JSON null leaves d as it is.
func (d *Duration) UnmarshalJSON(b []byte) error {
	if string(b) == "null" {
		return nil
	}
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("a duration is a string such as \"15s\" or \"10m\"")
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return fmt.Errorf("duration %q: %v", truncate(s), err)
	}
	*d = Duration(v)
	return nil
}

// Std returns d as a time.Duration, or def when d is zero.
func (d Duration) Std(def time.Duration) time.Duration {
	if d == 0 {
		return def
	}
	return time.Duration(d)
}

// Stage is one step of a rollout: the treatment's share of the traffic the rollout splits, in
// percent, and how long the stage lasts at least.
type Stage struct {
	Percent float64  `json:"percent"`
	MinHold Duration `json:"minHold,omitempty"`
}

// DefaultStages are the stages of a plan that names none: 1% → 5% → 25% → 50% → 95% (a 5%
// holdback) → 100%, each held ten minutes at least.
func DefaultStages() []Stage {
	ps := []float64{1, 5, 25, 50, 95, 100}
	st := make([]Stage, len(ps))
	for i, p := range ps {
		st[i] = Stage{Percent: p, MinHold: Duration(10 * time.Minute)}
	}
	return st
}

// The policies of a rollout plan.
const (
	OnTripKill      = "kill"
	OnTripStepBack  = "stepBack"
	OnTripOpenValve = "openValve"
	OnTripFreeze    = "freeze"

	PolicyHold   = "hold"
	PolicyRevert = "revert"
	PolicyPage   = "page"
)

// The kinds of metric source.
const (
	SourceScrape     = "scrape"
	SourcePrometheus = "prometheus"
)

// MetricSource says where the guard reads the counters of a plan's metrics: a Prometheus
// server's HTTP API, or an exposition endpoint it scrapes itself.
type MetricSource struct {
	Type string `json:"type"` // "scrape" or "prometheus"
	URL  string `json:"url"`  // the exposition URL, or the Prometheus server's base URL
	// VariantLabel is the label carrying the variant's name; "variant" by default.
	VariantLabel string `json:"variantLabel,omitempty"`
	// FlagLabel is the label carrying the flag's key; "flag" by default, "-" when the
	// counters carry no flag label.
	FlagLabel string `json:"flagLabel,omitempty"`
	// Lag is how far behind now the counters are read; 0 for a scrape, 30s for Prometheus.
	Lag Duration `json:"lag,omitempty"`
	// Interval is the scrape interval (scrape only); the plan's tick by default.
	Interval Duration `json:"interval,omitempty"`
}

// RolloutMetric is one metric guarding a rollout: two counters labelled by variant (requests
// and errors, trials and events, or the count and the sum of a histogram), given as selectors
// without the variant and flag labels, which the guard adds per arm.
type RolloutMetric struct {
	Name string `json:"name"`
	// Kind is "ratio" (the default: R1 trips, R5 advances), "msprt" (R2 on a proportion) or
	// "mean" (R2 on the mean of a continuous metric such as latency; higher is worse).
	Kind     string `json:"kind,omitempty"`
	Requests string `json:"requests,omitempty"` // ratio, msprt: e.g. requests_total{service="checkout"}
	Errors   string `json:"errors,omitempty"`   // ratio, msprt: e.g. errors_total{service="checkout"}
	// Count and Sum (mean) are the counters of the observations and of their sum, e.g.
	// http_request_duration_seconds_count{route="/pay"} and ..._sum{route="/pay"}.
	Count string `json:"count,omitempty"`
	Sum   string `json:"sum,omitempty"`
	// Ceiling is R3's absolute ceiling on the treatment's error rate, in [0, 1); 0 is off.
	// Not for kind mean.
	Ceiling float64 `json:"ceiling,omitempty"`
	// Margin (mean) is how much higher than the control's, relatively, the treatment's mean may
	// be before it counts as worse, in [0, 10]: 0.1 tolerates 10% slower. 0 by default.
	Margin float64 `json:"margin,omitempty"`
	// Tau (mean) is the relative regression the test is most sensitive to, in (0, 10]; 0.1.
	Tau float64 `json:"tau,omitempty"`
}

// Metric kinds.
const (
	MetricRatio = "ratio"
	MetricMSPRT = "msprt"
	MetricMean  = "mean"
)

// Counters returns the metric's two counter selectors: requests and errors, trials and events,
// or count and sum.
func (m RolloutMetric) Counters() (string, string) {
	if m.Kind == MetricMean {
		return m.Count, m.Sum
	}
	return m.Requests, m.Errors
}

// ValveRef names the safety valve a rollout opens when its guard trips with onTrip openValve:
// an operational flag of the same environment.
type ValveRef struct {
	Flag string `json:"flag"`
}

// RolloutPlan is what a person sets about a rollout. Zero fields take the defaults listed.
type RolloutPlan struct {
	Treatment string          `json:"treatment"`
	Control   string          `json:"control"`
	Stages    []Stage         `json:"stages,omitempty"` // DefaultStages()
	Metrics   []RolloutMetric `json:"metrics"`
	Source    MetricSource    `json:"source"`
	Tick      Duration        `json:"tick,omitempty"`   // 15s
	Alpha     float64         `json:"alpha,omitempty"`  // 0.01, split across metrics
	R0        float64         `json:"r0,omitempty"`     // 1
	RMax      float64         `json:"rMax,omitempty"`   // 1.5
	OnTrip    string          `json:"onTrip,omitempty"` // kill
	OnBlind   string          `json:"onBlind,omitempty"`
	// BlindGrace is how long the guard stays blind before onBlind applies; 2m.
	BlindGrace     Duration `json:"blindGrace,omitempty"`
	OnInconclusive string   `json:"onInconclusive,omitempty"` // hold
	// MaxExtension is how long past its minimum hold a stage may stay inconclusive; 1h.
	MaxExtension Duration  `json:"maxExtension,omitempty"`
	Valve        *ValveRef `json:"valve,omitempty"` // required with onTrip openValve
	// Manual makes the guard judge without ever advancing: people advance by hand.
	Manual bool `json:"manual,omitempty"`
	// NoLateStarts makes R1 (and R2 on means) begin at the rollout's first informative tick
	// only; by default they also mix over later starts, so that a regression after a long
	// healthy run trips in minutes rather than hours (docs/guard.md).
	NoLateStarts bool `json:"noLateStarts,omitempty"`
}

// MaxStages bounds a plan's stages; MaxMetrics its metrics.
const (
	MaxStages  = 20
	MaxMetrics = 10
)

// WithDefaults returns a copy of p with its defaults filled in and slices of its own.
func (p RolloutPlan) WithDefaults() RolloutPlan {
	if len(p.Stages) == 0 {
		p.Stages = DefaultStages()
	} else {
		p.Stages = slices.Clone(p.Stages)
	}
	p.Metrics = slices.Clone(p.Metrics)
	for i := range p.Metrics {
		if p.Metrics[i].Kind == "" {
			p.Metrics[i].Kind = MetricRatio
		}
		if p.Metrics[i].Kind == MetricMean && p.Metrics[i].Tau == 0 {
			p.Metrics[i].Tau = 0.1
		}
	}
	if p.Source.VariantLabel == "" {
		p.Source.VariantLabel = "variant"
	}
	if p.Source.FlagLabel == "" {
		p.Source.FlagLabel = "flag"
	}
	if p.Source.Lag == 0 && p.Source.Type == SourcePrometheus {
		p.Source.Lag = Duration(30 * time.Second)
	}
	if p.Tick == 0 {
		p.Tick = Duration(15 * time.Second)
	}
	if p.Source.Interval == 0 && p.Source.Type == SourceScrape {
		p.Source.Interval = p.Tick
	}
	setF := func(f *float64, v float64) {
		if *f == 0 {
			*f = v
		}
	}
	setF(&p.Alpha, 0.01)
	setF(&p.R0, 1)
	setF(&p.RMax, 1.5)
	if p.OnTrip == "" {
		p.OnTrip = OnTripKill
	}
	if p.OnBlind == "" {
		p.OnBlind = PolicyHold
	}
	if p.BlindGrace == 0 {
		p.BlindGrace = Duration(2 * time.Minute)
	}
	if p.OnInconclusive == "" {
		p.OnInconclusive = PolicyHold
	}
	if p.MaxExtension == 0 {
		p.MaxExtension = Duration(time.Hour)
	}
	if p.Valve != nil {
		v := *p.Valve
		p.Valve = &v
	}
	return p
}

// Validate checks a plan (with its defaults applied) against the flag it rolls out and returns
// every problem joined; each wraps [ErrInvalid] and names the field. Selectors are checked by
// the guard, which parses them; here they need only be present and short.
func (p *RolloutPlan) Validate(flag *FlagConfig) error {
	var errs []error
	add := func(field, format string, args ...any) { errs = append(errs, invalid(field, format, args...)) }
	q := p.WithDefaults()
	for _, v := range []struct{ field, name string }{{"treatment", q.Treatment}, {"control", q.Control}} {
		switch {
		case v.name == "":
			add(v.field, "required")
		case flag != nil && flag.Variants[v.name] == nil:
			add(v.field, "%q is not one of the flag's variants", truncate(v.name))
		}
	}
	if q.Treatment != "" && q.Treatment == q.Control {
		add("control", "must differ from the treatment")
	}
	if len(q.Stages) > MaxStages {
		add("stages", "more than %d stages", MaxStages)
	}
	// Stages are compared in hundredths of a percent, the unit of the splits they serve.
	prev := 0.0
	for i, s := range q.Stages {
		field := fmt.Sprintf("stages[%d]", i)
		h := math.Round(s.Percent * 100)
		switch {
		case math.IsNaN(s.Percent) || s.Percent <= 0 || s.Percent > 100:
			add(field+".percent", "must be in (0, 100]")
		case math.Abs(s.Percent*100-h) > 1e-6 || h < 1:
			// Not p*100 != Trunc(p*100): 0.07*100 is 7.000000000000001 in floating point.
			add(field+".percent", "at least 0.01, with at most two decimals")
		case h <= prev:
			add(field+".percent", "stages must grow: %v after %v", s.Percent, prev/100)
		}
		prev = h
		if s.MinHold < 0 || time.Duration(s.MinHold) > 30*24*time.Hour {
			add(field+".minHold", "must be between 0 and 720h")
		}
	}
	switch n := len(q.Metrics); {
	case n == 0:
		add("metrics", "at least one metric guards a rollout")
	case n > MaxMetrics:
		add("metrics", "more than %d metrics", MaxMetrics)
	}
	names := map[string]bool{}
	ratios := 0
	for i, m := range q.Metrics {
		field := fmt.Sprintf("metrics[%d]", i)
		if validateVariantName(m.Name) != nil {
			add(field+".name", "metric names are 1-%d characters: letters, digits, '-', '_' and '.'", maxVariantNameLen)
		} else if names[m.Name] {
			add(field+".name", "duplicate %q", m.Name)
		}
		names[m.Name] = true
		switch m.Kind {
		case MetricRatio:
			ratios++
		case MetricMSPRT, MetricMean:
		default:
			add(field+".kind", "%q is not ratio, msprt or mean", truncate(m.Kind))
		}
		type counter struct{ field, sel string }
		want := []counter{{"requests", m.Requests}, {"errors", m.Errors}}
		other := []counter{{"count", m.Count}, {"sum", m.Sum}}
		if m.Kind == MetricMean {
			want, other = other, want
		}
		for _, s := range want {
			switch {
			case s.sel == "":
				add(field+"."+s.field, "a counter selector is required")
			case len(s.sel) > 1024:
				add(field+"."+s.field, "longer than 1024 bytes")
			}
		}
		for _, s := range other {
			if s.sel != "" {
				add(field+"."+s.field, "is not a counter of a %s metric (use %s and %s)", truncate(m.Kind), want[0].field, want[1].field)
			}
		}
		if math.IsNaN(m.Ceiling) || m.Ceiling < 0 || m.Ceiling >= 1 {
			add(field+".ceiling", "must be in [0, 1)")
		} else if m.Ceiling != 0 && m.Kind == MetricMean {
			add(field+".ceiling", "bounds an error rate: not for a mean metric")
		}
		if m.Kind == MetricMean {
			if !(m.Margin >= 0 && m.Margin <= 10) {
				add(field+".margin", "must be in [0, 10]")
			}
			if !(m.Tau > 0 && m.Tau <= 10) {
				add(field+".tau", "must be in (0, 10]")
			}
		} else {
			if m.Margin != 0 {
				add(field+".margin", "is for mean metrics")
			}
			if m.Tau != 0 {
				add(field+".tau", "is for mean metrics")
			}
		}
	}
	if len(q.Metrics) > 0 && ratios == 0 {
		add("metrics", "at least one metric of kind ratio is needed to advance")
	}
	switch q.Source.Type {
	case SourceScrape, SourcePrometheus:
	default:
		add("source.type", "%q is not scrape or prometheus", truncate(q.Source.Type))
	}
	if u, err := url.Parse(q.Source.URL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		add("source.url", "an http or https URL is required")
	}
	if !validLabel(q.Source.VariantLabel) {
		add("source.variantLabel", "%q is not a Prometheus label name", truncate(q.Source.VariantLabel))
	}
	if q.Source.FlagLabel != "-" && !validLabel(q.Source.FlagLabel) {
		add("source.flagLabel", "%q is not a Prometheus label name (or \"-\" for none)", truncate(q.Source.FlagLabel))
	}
	if q.Source.FlagLabel == q.Source.VariantLabel {
		add("source.flagLabel", "must differ from the variant label")
	}
	for _, d := range []struct {
		field    string
		v        Duration
		min, max time.Duration
	}{
		{"tick", q.Tick, 100 * time.Millisecond, time.Hour},
		{"source.lag", q.Source.Lag, 0, time.Hour},
		{"source.interval", q.Source.Interval, 0, time.Hour},
		{"blindGrace", q.BlindGrace, 0, 24 * time.Hour},
		{"maxExtension", q.MaxExtension, 0, 30 * 24 * time.Hour},
	} {
		if time.Duration(d.v) < d.min || time.Duration(d.v) > d.max {
			add(d.field, "must be between %v and %v", d.min, d.max)
		}
	}
	if !(q.Alpha > 0 && q.Alpha < 1) {
		add("alpha", "must be in (0, 1)")
	}
	if !(q.R0 > 0) || math.IsInf(q.R0, 0) {
		add("r0", "must be a finite number > 0")
	}
	if !(q.RMax > q.R0) || math.IsInf(q.RMax, 0) {
		add("rMax", "must be finite and greater than r0")
	}
	if !slices.Contains([]string{OnTripKill, OnTripStepBack, OnTripOpenValve, OnTripFreeze}, q.OnTrip) {
		add("onTrip", "%q is not kill, stepBack, openValve or freeze", truncate(q.OnTrip))
	}
	if q.OnBlind != PolicyHold && q.OnBlind != PolicyRevert {
		add("onBlind", "%q is not hold or revert", truncate(q.OnBlind))
	}
	if !slices.Contains([]string{PolicyHold, PolicyRevert, PolicyPage}, q.OnInconclusive) {
		add("onInconclusive", "%q is not hold, revert or page", truncate(q.OnInconclusive))
	}
	switch {
	case q.OnTrip == OnTripOpenValve && q.Valve == nil:
		add("valve", "onTrip openValve needs a valve")
	case q.Valve != nil:
		if err := validateKey("valve.flag", q.Valve.Flag); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func validLabel(s string) bool {
	if s == "" || len(s) > 128 {
		return false
	}
	for i, c := range []byte(s) {
		if !(c == '_' || 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || i > 0 && '0' <= c && c <= '9') {
			return false
		}
	}
	return true
}

// StageServe is the split a rollout serves at a stage: the treatment's percent against the
// control, as weights in hundredths of a percent, bucketed on the targeting key so that a user
// stays on the treatment as the rollout grows. At 100% it serves the treatment alone.
func StageServe(treatment, control string, percent float64) Serve {
	w := int(math.Round(percent * 100))
	if w >= 10000 {
		return Serve{Variant: treatment}
	}
	return Serve{Split: map[string]int{treatment: w, control: 10000 - w}}
}

// RolloutCreated records a rollout plan for the flag. The rollout does not split anything until
// it is started.
type RolloutCreated struct {
	ID   string      `json:"id"`
	Plan RolloutPlan `json:"plan"`
}

// RolloutStarted begins the rollout at its first stage: the flag's default serve becomes Serve.
type RolloutStarted struct {
	ID    string `json:"id"`
	Stage int    `json:"stage"`
	Serve Serve  `json:"serve"`
}

// RolloutPaused stops the guard from advancing the rollout; the split stays as it is.
type RolloutPaused struct {
	ID string `json:"id"`
}

// RolloutResumed lets a paused rollout go on; the stage begins afresh.
type RolloutResumed struct {
	ID string `json:"id"`
}

// RolloutAdvanced moves the rollout from stage From to stage To = From+1: the flag's default
// serve becomes Serve. The actor says whether the guard or a person advanced it; a person gives a
// reason; the guard's causation id is its decision event.
type RolloutAdvanced struct {
	ID    string `json:"id"`
	From  int    `json:"from"`
	To    int    `json:"to"`
	Serve Serve  `json:"serve"`
}

// RolloutSteppedBack moves the rollout back from stage From to stage To = From-1.
type RolloutSteppedBack struct {
	ID    string `json:"id"`
	From  int    `json:"from"`
	To    int    `json:"to"`
	Serve Serve  `json:"serve"`
}

// RolloutCompleted ends the rollout: the flag serves the treatment (Serve) to everyone.
type RolloutCompleted struct {
	ID    string `json:"id"`
	Serve Serve  `json:"serve"`
}

// RolloutAborted ends the rollout: the flag serves the control (Serve) to everyone. A rollout
// aborted before it started never owned the flag's default serve: its Serve is empty and the
// flag's default serve stays as it is.
type RolloutAborted struct {
	ID    string `json:"id"`
	Serve Serve  `json:"serve"`
}

// GuardDecided records a change of the guard's state for a rollout, with the evidence that
// caused it: the guard's inputs, statistics and parameters, enough to replay the decision.
type GuardDecided struct {
	Rollout     string          `json:"rollout"`
	Stage       int             `json:"stage"`
	StateBefore string          `json:"stateBefore"`
	StateAfter  string          `json:"stateAfter"`
	Action      string          `json:"action"`
	Cause       string          `json:"cause"`
	Evidence    json.RawMessage `json:"evidence"`
	// Before is the guard's complete state before the decision's first call (a JSON
	// guard.MachineSnapshot): with Evidence, the decision replays from this event alone
	// (guard.ReplayDecision). Absent from decisions recorded before it existed.
	Before json.RawMessage `json:"before,omitempty"`
}

// GuardRearmed clears a tripped guard on a person's word (the actor); the stage begins afresh.
type GuardRearmed struct {
	Rollout string `json:"rollout"`
	Stage   int    `json:"stage"`
}

// ValvePolicy makes the guard open the valve by itself when the guarded error ratio burns its
// budget too fast over both a long and a short window, and close it once healthy again.
type ValvePolicy struct {
	Source   MetricSource `json:"source"`
	Requests string       `json:"requests"` // counter selector, e.g. requests_total{route="/search"}
	Errors   string       `json:"errors"`
	// Objective is the error ratio the service may spend (0.01 = 1%); burn = ratio/objective.
	Objective float64  `json:"objective,omitempty"`
	BurnRate  float64  `json:"burnRate,omitempty"`
	Long      Duration `json:"longWindow,omitempty"`
	Short     Duration `json:"shortWindow,omitempty"`
	MinOpen   Duration `json:"minOpen,omitempty"`
	// HealthyFor is how long the burn must stay low before the valve closes.
	HealthyFor        Duration `json:"healthyFor,omitempty"`
	MaxTogglesPerHour int      `json:"maxTogglesPerHour,omitempty"`
}

// ValveConfigured sets what opening the valve serves (Variant, to everyone or to the members of
// Segment) and, when Policy is set, lets the guard open and close it by itself.
type ValveConfigured struct {
	Variant string       `json:"variant"`
	Segment string       `json:"segment,omitempty"`
	Policy  *ValvePolicy `json:"policy,omitempty"`
}

// ValveOpened opens the valve: the flag serves Variant to everyone, or to the members of Segment,
// until it is closed or, when Expires is set, until then. Evidence is the guard's, when the guard
// opened it; Rollout names the rollout whose trip opened it.
type ValveOpened struct {
	Variant  string          `json:"variant"`
	Segment  string          `json:"segment,omitempty"`
	Expires  time.Time       `json:"expires,omitzero"`
	Rollout  string          `json:"rollout,omitempty"`
	Evidence json.RawMessage `json:"evidence,omitempty"`
}

// The causes of a valve's closing.
const (
	ValveClosedManual  = "manual"
	ValveClosedExpired = "expired"
	ValveClosedHealthy = "healthy"
)

// ValveClosed closes the valve: the flag serves its configuration again.
type ValveClosed struct {
	Cause    string          `json:"cause"`
	Evidence json.RawMessage `json:"evidence,omitempty"`
}

// Validate checks a valve configuration against the flag it configures.
func (v *ValveConfigured) Validate(flag *FlagConfig) error {
	var errs []error
	add := func(field, format string, args ...any) { errs = append(errs, invalid(field, format, args...)) }
	if flag != nil && flag.Kind != KindOperational {
		add("kind", "a valve is a flag of kind operational, not %q", flag.Kind)
	}
	switch {
	case v.Variant == "":
		add("variant", "required: what the open valve serves")
	case flag != nil && flag.Variants[v.Variant] == nil:
		add("variant", "%q is not one of the flag's variants", truncate(v.Variant))
	}
	if v.Segment != "" {
		if err := validateKey("segment", v.Segment); err != nil {
			errs = append(errs, err)
		}
	}
	if p := v.Policy; p != nil {
		if p.Source.Type != SourceScrape && p.Source.Type != SourcePrometheus {
			add("policy.source.type", "%q is not scrape or prometheus", truncate(p.Source.Type))
		}
		if u, err := url.Parse(p.Source.URL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			add("policy.source.url", "an http or https URL is required")
		}
		if p.Requests == "" || len(p.Requests) > 1024 {
			add("policy.requests", "a counter selector of at most 1024 bytes is required")
		}
		if p.Errors == "" || len(p.Errors) > 1024 {
			add("policy.errors", "a counter selector of at most 1024 bytes is required")
		}
		if math.IsNaN(p.Objective) || p.Objective < 0 || p.Objective >= 1 {
			add("policy.objective", "must be in (0, 1) (0 for the default)")
		}
		if math.IsNaN(p.BurnRate) || p.BurnRate < 0 || math.IsInf(p.BurnRate, 0) {
			add("policy.burnRate", "must be a finite number > 0 (0 for the default)")
		}
		if p.MaxTogglesPerHour < 0 || p.MaxTogglesPerHour > 60 {
			add("policy.maxTogglesPerHour", "must be 0-60")
		}
		for _, d := range []struct {
			f string
			v Duration
		}{{"longWindow", p.Long}, {"shortWindow", p.Short}, {"minOpen", p.MinOpen}, {"healthyFor", p.HealthyFor}} {
			if d.v < 0 || time.Duration(d.v) > 7*24*time.Hour {
				add("policy."+d.f, "must be between 0 and 168h")
			}
		}
		if p.Short > 0 && p.Long > 0 && p.Short >= p.Long {
			add("policy.shortWindow", "must be shorter than the long window")
		}
	}
	return errors.Join(errs...)
}

// PercentString renders a stage's percent as people write it: "1", "2.5", "95".
func PercentString(p float64) string { return strconv.FormatFloat(p, 'f', -1, 64) }
