package events

import (
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"
)

// validPlan is the smallest plan that passes Validate against boolFlag.
func validPlan() RolloutPlan {
	return RolloutPlan{
		Treatment: "on",
		Control:   "off",
		Metrics:   []RolloutMetric{{Name: "errors", Requests: `requests_total{service="checkout"}`, Errors: `errors_total{service="checkout"}`}},
		Source:    MetricSource{Type: SourcePrometheus, URL: "http://prometheus:9090"},
	}
}

// fields lists the Field of every *ValidationError err joins or wraps.
func fields(err error) []string {
	var out []string
	var walk func(error)
	walk = func(err error) {
		if err == nil {
			return
		}
		var ve *ValidationError
		if errors.As(err, &ve) && ve == err {
			out = append(out, ve.Field)
		}
		switch u := err.(type) {
		case interface{ Unwrap() []error }:
			for _, e := range u.Unwrap() {
				walk(e)
			}
		case interface{ Unwrap() error }:
			walk(u.Unwrap())
		}
	}
	walk(err)
	return out
}

func TestRolloutPlanValidate(t *testing.T) {
	flag := boolFlag()
	for _, tc := range []struct {
		name   string
		mutate func(*RolloutPlan)
		field  string // "" means valid
	}{
		{"minimal", func(*RolloutPlan) {}, ""},
		{"scrape source", func(p *RolloutPlan) { p.Source = MetricSource{Type: SourceScrape, URL: "https://app:8443/metrics"} }, ""},
		{"custom stages", func(p *RolloutPlan) {
			p.Stages = []Stage{{Percent: 0.01}, {Percent: 0.07}, {Percent: 0.29, MinHold: Duration(time.Hour)}, {Percent: 4.35}, {Percent: 33.33}, {Percent: 100}}
		}, ""},
		{"one stage", func(p *RolloutPlan) { p.Stages = []Stage{{Percent: 100}} }, ""},
		{"msprt with a ratio", func(p *RolloutPlan) {
			p.Metrics = append(p.Metrics, RolloutMetric{Name: "latency", Kind: "msprt", Requests: "a", Errors: "b"})
		}, ""},
		{"mean with a ratio", func(p *RolloutPlan) {
			p.Metrics = append(p.Metrics, RolloutMetric{Name: "latency", Kind: MetricMean, Count: "d_count", Sum: "d_sum", Margin: 0.1})
		}, ""},
		{"mean: requests", func(p *RolloutPlan) {
			p.Metrics = append(p.Metrics, RolloutMetric{Name: "latency", Kind: MetricMean, Count: "d_count", Sum: "d_sum", Requests: "a"})
		}, "metrics[1].requests"},
		{"mean: no sum", func(p *RolloutPlan) {
			p.Metrics = append(p.Metrics, RolloutMetric{Name: "latency", Kind: MetricMean, Count: "d_count"})
		}, "metrics[1].sum"},
		{"mean: no count", func(p *RolloutPlan) {
			p.Metrics = append(p.Metrics, RolloutMetric{Name: "latency", Kind: MetricMean, Sum: "d_sum"})
		}, "metrics[1].count"},
		{"mean: ceiling", func(p *RolloutPlan) {
			p.Metrics = append(p.Metrics, RolloutMetric{Name: "latency", Kind: MetricMean, Count: "c", Sum: "s", Ceiling: 0.5})
		}, "metrics[1].ceiling"},
		{"mean: negative margin", func(p *RolloutPlan) {
			p.Metrics = append(p.Metrics, RolloutMetric{Name: "latency", Kind: MetricMean, Count: "c", Sum: "s", Margin: -0.1})
		}, "metrics[1].margin"},
		{"mean: tau too big", func(p *RolloutPlan) {
			p.Metrics = append(p.Metrics, RolloutMetric{Name: "latency", Kind: MetricMean, Count: "c", Sum: "s", Tau: 11})
		}, "metrics[1].tau"},
		{"ratio: count", func(p *RolloutPlan) { p.Metrics[0].Count = "c" }, "metrics[0].count"},
		{"ratio: margin", func(p *RolloutPlan) { p.Metrics[0].Margin = 0.1 }, "metrics[0].margin"},
		{"ratio: tau", func(p *RolloutPlan) { p.Metrics[0].Tau = 0.1 }, "metrics[0].tau"},
		{"only mean", func(p *RolloutPlan) { p.Metrics = []RolloutMetric{{Name: "l", Kind: MetricMean, Count: "c", Sum: "s"}} }, "metrics"},
		{"open valve with valve", func(p *RolloutPlan) { p.OnTrip, p.Valve = OnTripOpenValve, &ValveRef{Flag: "search.degrade"} }, ""},
		{"no flag label", func(p *RolloutPlan) { p.Source.FlagLabel = "-" }, ""},
		{"every policy", func(p *RolloutPlan) {
			p.OnTrip, p.OnBlind, p.OnInconclusive, p.Manual = OnTripFreeze, PolicyRevert, PolicyPage, true
		}, ""},

		{"no treatment", func(p *RolloutPlan) { p.Treatment = "" }, "treatment"},
		{"unknown treatment", func(p *RolloutPlan) { p.Treatment = "maybe" }, "treatment"},
		{"no control", func(p *RolloutPlan) { p.Control = "" }, "control"},
		{"unknown control", func(p *RolloutPlan) { p.Control = "maybe" }, "control"},
		{"control is treatment", func(p *RolloutPlan) { p.Control = "on" }, "control"},
		{"too many stages", func(p *RolloutPlan) {
			p.Stages = nil
			for i := range MaxStages + 1 {
				p.Stages = append(p.Stages, Stage{Percent: float64(i+1) * 4})
			}
		}, "stages"},
		{"zero percent", func(p *RolloutPlan) { p.Stages = []Stage{{Percent: 0}, {Percent: 100}} }, "stages[0].percent"},
		{"negative percent", func(p *RolloutPlan) { p.Stages = []Stage{{Percent: -1}} }, "stages[0].percent"},
		{"over 100", func(p *RolloutPlan) { p.Stages = []Stage{{Percent: 50}, {Percent: 100.5}} }, "stages[1].percent"},
		{"three decimals", func(p *RolloutPlan) { p.Stages = []Stage{{Percent: 0.005}, {Percent: 100}} }, "stages[0].percent"},
		{"three decimals later", func(p *RolloutPlan) { p.Stages = []Stage{{Percent: 1}, {Percent: 2.125}} }, "stages[1].percent"},
		{"below a hundredth", func(p *RolloutPlan) { p.Stages = []Stage{{Percent: 1e-9}, {Percent: 100}} }, "stages[0].percent"},
		{"equal in hundredths", func(p *RolloutPlan) { p.Stages = []Stage{{Percent: 1}, {Percent: 1 + 1e-9}} }, "stages[1].percent"},
		{"shrinking", func(p *RolloutPlan) { p.Stages = []Stage{{Percent: 5}, {Percent: 1}, {Percent: 100}} }, "stages[1].percent"},
		{"repeated", func(p *RolloutPlan) { p.Stages = []Stage{{Percent: 5}, {Percent: 5}} }, "stages[1].percent"},
		{"negative hold", func(p *RolloutPlan) { p.Stages = []Stage{{Percent: 5, MinHold: Duration(-time.Second)}} }, "stages[0].minHold"},
		{"long hold", func(p *RolloutPlan) { p.Stages = []Stage{{Percent: 5, MinHold: Duration(721 * time.Hour)}} }, "stages[0].minHold"},
		{"no metrics", func(p *RolloutPlan) { p.Metrics = nil }, "metrics"},
		{"too many metrics", func(p *RolloutPlan) {
			for i := range MaxMetrics {
				p.Metrics = append(p.Metrics, RolloutMetric{Name: "m" + string(rune('a'+i)), Requests: "a", Errors: "b"})
			}
		}, "metrics"},
		{"only msprt", func(p *RolloutPlan) { p.Metrics[0].Kind = "msprt" }, "metrics"},
		{"no metric name", func(p *RolloutPlan) { p.Metrics[0].Name = "" }, "metrics[0].name"},
		{"bad metric name", func(p *RolloutPlan) { p.Metrics[0].Name = "a b" }, "metrics[0].name"},
		{"duplicate metric", func(p *RolloutPlan) { p.Metrics = append(p.Metrics, p.Metrics[0]) }, "metrics[1].name"},
		{"bad kind", func(p *RolloutPlan) { p.Metrics[0].Kind = "ttest" }, "metrics[0].kind"},
		{"no requests", func(p *RolloutPlan) { p.Metrics[0].Requests = "" }, "metrics[0].requests"},
		{"long requests", func(p *RolloutPlan) { p.Metrics[0].Requests = strings.Repeat("a", 1025) }, "metrics[0].requests"},
		{"no errors", func(p *RolloutPlan) { p.Metrics[0].Errors = "" }, "metrics[0].errors"},
		{"ceiling 1", func(p *RolloutPlan) { p.Metrics[0].Ceiling = 1 }, "metrics[0].ceiling"},
		{"negative ceiling", func(p *RolloutPlan) { p.Metrics[0].Ceiling = -0.1 }, "metrics[0].ceiling"},
		{"no source type", func(p *RolloutPlan) { p.Source.Type = "" }, "source.type"},
		{"bad source type", func(p *RolloutPlan) { p.Source.Type = "graphite" }, "source.type"},
		{"no url", func(p *RolloutPlan) { p.Source.URL = "" }, "source.url"},
		{"ftp url", func(p *RolloutPlan) { p.Source.URL = "ftp://prometheus" }, "source.url"},
		{"url without host", func(p *RolloutPlan) { p.Source.URL = "http://" }, "source.url"},
		{"bad variant label", func(p *RolloutPlan) { p.Source.VariantLabel = "0variant" }, "source.variantLabel"},
		{"no variant label", func(p *RolloutPlan) { p.Source.VariantLabel = "-" }, "source.variantLabel"},
		{"bad flag label", func(p *RolloutPlan) { p.Source.FlagLabel = "flag-key" }, "source.flagLabel"},
		{"same labels", func(p *RolloutPlan) { p.Source.FlagLabel = "variant" }, "source.flagLabel"},
		{"short tick", func(p *RolloutPlan) { p.Tick = Duration(time.Millisecond) }, "tick"},
		{"long tick", func(p *RolloutPlan) { p.Tick = Duration(2 * time.Hour) }, "tick"},
		{"negative lag", func(p *RolloutPlan) { p.Source.Lag = Duration(-time.Second) }, "source.lag"},
		{"long interval", func(p *RolloutPlan) { p.Source.Interval = Duration(2 * time.Hour) }, "source.interval"},
		{"negative blind grace", func(p *RolloutPlan) { p.BlindGrace = Duration(-time.Second) }, "blindGrace"},
		{"long extension", func(p *RolloutPlan) { p.MaxExtension = Duration(31 * 24 * time.Hour) }, "maxExtension"},
		{"alpha 1", func(p *RolloutPlan) { p.Alpha = 1 }, "alpha"},
		{"negative alpha", func(p *RolloutPlan) { p.Alpha = -0.01 }, "alpha"},
		{"negative r0", func(p *RolloutPlan) { p.R0 = -1 }, "r0"},
		{"rMax below r0", func(p *RolloutPlan) { p.R0, p.RMax = 1.2, 1.1 }, "rMax"},
		{"r0 above default rMax", func(p *RolloutPlan) { p.R0 = 2 }, "rMax"},
		{"bad onTrip", func(p *RolloutPlan) { p.OnTrip = "panic" }, "onTrip"},
		{"bad onBlind", func(p *RolloutPlan) { p.OnBlind = PolicyPage }, "onBlind"},
		{"bad onInconclusive", func(p *RolloutPlan) { p.OnInconclusive = "ship" }, "onInconclusive"},
		{"open valve without valve", func(p *RolloutPlan) { p.OnTrip = OnTripOpenValve }, "valve"},
		{"bad valve key", func(p *RolloutPlan) { p.Valve = &ValveRef{Flag: "a..b"} }, "valve.flag"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := validPlan()
			tc.mutate(&p)
			before := p.WithDefaults()
			err := p.Validate(&flag)
			if tc.field == "" {
				if err != nil {
					t.Fatalf("unexpected error: %v", err)
				}
			} else {
				if !errors.Is(err, ErrInvalid) {
					t.Fatalf("got %v, want an invalid error", err)
				}
				got := fields(err)
				if len(got) == 0 || !containsString(got, tc.field) {
					t.Fatalf("error %v names %q, want %q", err, got, tc.field)
				}
			}
			if !reflect.DeepEqual(p.WithDefaults(), before) {
				t.Fatal("Validate changed the plan")
			}
		})
	}
}

func containsString(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

// Validate(nil) checks everything but the variants.
func TestRolloutPlanValidateWithoutFlag(t *testing.T) {
	p := validPlan()
	p.Treatment, p.Control = "green", "blue"
	if err := p.Validate(nil); err != nil {
		t.Fatal(err)
	}
	p.Control = "green"
	if got := fields(p.Validate(nil)); !reflect.DeepEqual(got, []string{"control"}) {
		t.Fatalf("fields %v", got)
	}
}

// Every problem is reported, not just the first.
func TestRolloutPlanValidateJoins(t *testing.T) {
	var p RolloutPlan
	got := fields(p.Validate(nil))
	for _, want := range []string{"treatment", "control", "metrics", "source.type", "source.url"} {
		if !containsString(got, want) {
			t.Errorf("fields %v lack %q", got, want)
		}
	}
}

func TestRolloutPlanDefaults(t *testing.T) {
	p := validPlan()
	q := p.WithDefaults()
	want := RolloutPlan{
		Treatment: "on", Control: "off",
		Stages: DefaultStages(),
		Metrics: []RolloutMetric{{Name: "errors", Kind: "ratio",
			Requests: `requests_total{service="checkout"}`, Errors: `errors_total{service="checkout"}`}},
		Source: MetricSource{Type: SourcePrometheus, URL: "http://prometheus:9090", VariantLabel: "variant", FlagLabel: "flag",
			Lag: Duration(30 * time.Second)},
		Tick: Duration(15 * time.Second), Alpha: 0.01, R0: 1, RMax: 1.5,
		OnTrip: OnTripKill, OnBlind: PolicyHold, BlindGrace: Duration(2 * time.Minute),
		OnInconclusive: PolicyHold, MaxExtension: Duration(time.Hour),
	}
	if !reflect.DeepEqual(q, want) {
		t.Fatalf("defaults\n got %+v\nwant %+v", q, want)
	}
	if !reflect.DeepEqual(q.WithDefaults(), q) {
		t.Fatal("WithDefaults is not idempotent")
	}
	var pcts []float64
	for _, s := range q.Stages {
		pcts = append(pcts, s.Percent)
		if time.Duration(s.MinHold) != 10*time.Minute {
			t.Errorf("stage %v holds %v", s.Percent, time.Duration(s.MinHold))
		}
	}
	if !reflect.DeepEqual(pcts, []float64{1, 5, 25, 50, 95, 100}) {
		t.Errorf("default stages %v", pcts)
	}

	// A scrape source scrapes every tick and reads without lag.
	p.Source.Type, p.Tick = SourceScrape, Duration(5*time.Second)
	q = p.WithDefaults()
	if q.Source.Interval != Duration(5*time.Second) || q.Source.Lag != 0 {
		t.Errorf("scrape defaults: %+v", q.Source)
	}

	// Set values stay; the copy shares nothing with the original.
	p = validPlan()
	p.Stages = []Stage{{Percent: 10}, {Percent: 100}}
	p.Alpha, p.OnTrip, p.Valve = 0.05, OnTripOpenValve, &ValveRef{Flag: "v"}
	q = p.WithDefaults()
	if q.Alpha != 0.05 || q.OnTrip != OnTripOpenValve {
		t.Errorf("set values replaced: %+v", q)
	}
	q.Stages[0].Percent, q.Metrics[0].Name, q.Valve.Flag = 20, "x", "w"
	if p.Stages[0].Percent != 10 || p.Metrics[0].Name != "errors" || p.Metrics[0].Kind != "" || p.Valve.Flag != "v" {
		t.Fatalf("WithDefaults shares state with the original: %+v", p)
	}
}

func TestDurationJSON(t *testing.T) {
	for _, d := range []time.Duration{0, time.Millisecond, 15 * time.Second, 90 * time.Minute, -time.Second} {
		b, err := json.Marshal(Duration(d))
		if err != nil {
			t.Fatal(err)
		}
		if want := `"` + d.String() + `"`; string(b) != want {
			t.Errorf("%v encodes as %s, want %s", d, b, want)
		}
		var got Duration
		if err := json.Unmarshal(b, &got); err != nil || time.Duration(got) != d {
			t.Errorf("%s decodes to %v, %v", b, time.Duration(got), err)
		}
	}
	for in, want := range map[string]time.Duration{`"10m"`: 10 * time.Minute, `"1h30m"`: 90 * time.Minute, `"250ms"`: 250 * time.Millisecond} {
		var got Duration
		if err := json.Unmarshal([]byte(in), &got); err != nil || time.Duration(got) != want {
			t.Errorf("%s decodes to %v, %v", in, time.Duration(got), err)
		}
	}
	for _, in := range []string{`15`, `"15"`, `"fifteen seconds"`, `""`, `true`, `{}`, `"1d"`, `"` + strings.Repeat("9", 200) + `s"`} {
		var got Duration
		if err := json.Unmarshal([]byte(in), &got); err == nil {
			t.Errorf("%s decodes to %v", in, time.Duration(got))
		}
	}
	// null leaves the value, as encoding/json does for its own types.
	got := Duration(time.Second)
	if err := json.Unmarshal([]byte(`null`), &got); err != nil || got != Duration(time.Second) {
		t.Errorf("null: %v, %v", time.Duration(got), err)
	}
	var s Stage
	if err := json.Unmarshal([]byte(`{"percent": 5, "minHold": null}`), &s); err != nil || s.MinHold != 0 {
		t.Errorf("minHold null: %+v, %v", s, err)
	}

	// In a plan: zero durations are left out, set ones are text.
	p := RolloutPlan{Tick: Duration(20 * time.Second), Stages: []Stage{{Percent: 5}}}
	b, err := json.Marshal(p)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), `"tick":"20s"`) || strings.Contains(string(b), "minHold") || strings.Contains(string(b), "blindGrace") {
		t.Errorf("plan encodes as %s", b)
	}
	var back RolloutPlan
	if err := json.Unmarshal(b, &back); err != nil || !reflect.DeepEqual(back, p) {
		t.Errorf("plan round trip: %+v, %v", back, err)
	}

	if got := Duration(0).Std(time.Minute); got != time.Minute {
		t.Errorf("Std of zero: %v", got)
	}
	if got := Duration(time.Second).Std(time.Minute); got != time.Second {
		t.Errorf("Std of 1s: %v", got)
	}
}

func TestStageServe(t *testing.T) {
	for _, tc := range []struct {
		percent float64
		want    Serve
	}{
		{1, Serve{Split: map[string]int{"t": 100, "c": 9900}}},
		{0.01, Serve{Split: map[string]int{"t": 1, "c": 9999}}},
		{0.07, Serve{Split: map[string]int{"t": 7, "c": 9993}}},
		{4.35, Serve{Split: map[string]int{"t": 435, "c": 9565}}},
		{50, Serve{Split: map[string]int{"t": 5000, "c": 5000}}},
		{95, Serve{Split: map[string]int{"t": 9500, "c": 500}}},
		{99.99, Serve{Split: map[string]int{"t": 9999, "c": 1}}},
		{100, Serve{Variant: "t"}},
	} {
		got := StageServe("t", "c", tc.percent)
		if !reflect.DeepEqual(got, tc.want) {
			t.Errorf("StageServe(%v) = %+v, want %+v", tc.percent, got, tc.want)
		}
		// Every stage serve is a valid default serve of a flag with both variants.
		cfg := boolFlag()
		cfg.Variants = map[string]json.RawMessage{"t": json.RawMessage("true"), "c": json.RawMessage("false")}
		cfg.DefaultVariant, cfg.OffVariant, cfg.DefaultServe = "c", "c", &got
		if err := cfg.Validate(); err != nil {
			t.Errorf("StageServe(%v) is not a valid serve: %v", tc.percent, err)
		}
	}
	if got := PercentString(2.5); got != "2.5" {
		t.Errorf("PercentString(2.5) = %q", got)
	}
	if got := PercentString(95); got != "95" {
		t.Errorf("PercentString(95) = %q", got)
	}
}

// operational is a valve-shaped flag: kind operational, a "degraded" variant.
func operational() FlagConfig {
	return FlagConfig{
		Kind:           KindOperational,
		Variants:       map[string]json.RawMessage{"full": json.RawMessage(`"full"`), "degraded": json.RawMessage(`"degraded"`)},
		DefaultVariant: "full",
		OffVariant:     "degraded",
	}
}

func validPolicy() *ValvePolicy {
	return &ValvePolicy{
		Source:   MetricSource{Type: SourceScrape, URL: "http://search:8080/metrics"},
		Requests: `requests_total{route="/search"}`, Errors: `errors_total{route="/search"}`,
		Objective: 0.01, BurnRate: 14.4, Long: Duration(time.Hour), Short: Duration(5 * time.Minute),
	}
}

func TestValveConfiguredValidate(t *testing.T) {
	for _, tc := range []struct {
		name   string
		flag   func(*FlagConfig)
		mutate func(*ValveConfigured)
		field  string
	}{
		{"minimal", nil, func(*ValveConfigured) {}, ""},
		{"segment and policy", nil, func(v *ValveConfigured) { v.Segment, v.Policy = "tenant.acme", validPolicy() }, ""},
		{"policy defaults", nil, func(v *ValveConfigured) {
			v.Policy = &ValvePolicy{Source: MetricSource{Type: SourcePrometheus, URL: "https://prom"}, Requests: "r", Errors: "e"}
		}, ""},
		{"release flag", func(c *FlagConfig) { c.Kind = KindRelease }, func(*ValveConfigured) {}, "kind"},
		{"no variant", nil, func(v *ValveConfigured) { v.Variant = "" }, "variant"},
		{"unknown variant", nil, func(v *ValveConfigured) { v.Variant = "off" }, "variant"},
		{"bad segment", nil, func(v *ValveConfigured) { v.Segment = "a b" }, "segment"},
		{"policy source type", nil, func(v *ValveConfigured) { v.Policy = validPolicy(); v.Policy.Source.Type = "" }, "policy.source.type"},
		{"policy source url", nil, func(v *ValveConfigured) { v.Policy = validPolicy(); v.Policy.Source.URL = "search:8080" }, "policy.source.url"},
		{"policy requests", nil, func(v *ValveConfigured) { v.Policy = validPolicy(); v.Policy.Requests = "" }, "policy.requests"},
		{"policy errors", nil, func(v *ValveConfigured) { v.Policy = validPolicy(); v.Policy.Errors = strings.Repeat("e", 1025) }, "policy.errors"},
		{"policy objective", nil, func(v *ValveConfigured) { v.Policy = validPolicy(); v.Policy.Objective = 1 }, "policy.objective"},
		{"policy burn", nil, func(v *ValveConfigured) { v.Policy = validPolicy(); v.Policy.BurnRate = -1 }, "policy.burnRate"},
		{"policy toggles", nil, func(v *ValveConfigured) { v.Policy = validPolicy(); v.Policy.MaxTogglesPerHour = 61 }, "policy.maxTogglesPerHour"},
		{"policy long", nil, func(v *ValveConfigured) { v.Policy = validPolicy(); v.Policy.Long = Duration(200 * time.Hour) }, "policy.longWindow"},
		{"policy min open", nil, func(v *ValveConfigured) { v.Policy = validPolicy(); v.Policy.MinOpen = Duration(-1) }, "policy.minOpen"},
		{"policy healthy", nil, func(v *ValveConfigured) { v.Policy = validPolicy(); v.Policy.HealthyFor = Duration(169 * time.Hour) }, "policy.healthyFor"},
		{"short not shorter", nil, func(v *ValveConfigured) { v.Policy = validPolicy(); v.Policy.Short = v.Policy.Long }, "policy.shortWindow"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := operational()
			if tc.flag != nil {
				tc.flag(&cfg)
			}
			v := ValveConfigured{Variant: "degraded"}
			tc.mutate(&v)
			err := v.Validate(&cfg)
			if tc.field == "" {
				if err != nil {
					t.Fatalf("unexpected error: %v", err)
				}
				return
			}
			if got := fields(err); !errors.Is(err, ErrInvalid) || !containsString(got, tc.field) {
				t.Fatalf("error %v names %q, want %q", err, got, tc.field)
			}
		})
	}
	// Without a flag only the valve itself is checked.
	v := ValveConfigured{Variant: "anything"}
	if err := v.Validate(nil); err != nil {
		t.Fatal(err)
	}
}

// TestRolloutEventsRoundTrip: every rollout, guard and valve event survives NewEvent, Msg,
// Decode and Payload unchanged, on its flag's subject.
func TestRolloutEventsRoundTrip(t *testing.T) {
	plan := validPlan().WithDefaults()
	plan.OnTrip, plan.Valve = OnTripOpenValve, &ValveRef{Flag: "search.degrade"}
	expires := time.Date(2026, 3, 1, 12, 30, 0, 0, time.UTC)
	evidence := json.RawMessage(`{"e":12.5,"counts":{"t":[10,3],"c":[990,4]}}`)
	for _, tc := range []struct {
		typ     string
		payload any
	}{
		{TypeRolloutCreated, &RolloutCreated{ID: "r1", Plan: plan}},
		{TypeRolloutStarted, &RolloutStarted{ID: "r1", Stage: 0, Serve: StageServe("on", "off", 1)}},
		{TypeRolloutPaused, &RolloutPaused{ID: "r1"}},
		{TypeRolloutResumed, &RolloutResumed{ID: "r1"}},
		{TypeRolloutAdvanced, &RolloutAdvanced{ID: "r1", From: 0, To: 1, Serve: StageServe("on", "off", 5)}},
		{TypeRolloutSteppedBack, &RolloutSteppedBack{ID: "r1", From: 1, To: 0, Serve: StageServe("on", "off", 1)}},
		{TypeRolloutCompleted, &RolloutCompleted{ID: "r1", Serve: Serve{Variant: "on"}}},
		{TypeRolloutAborted, &RolloutAborted{ID: "r1", Serve: Serve{Variant: "off"}}},
		{TypeGuardDecided, &GuardDecided{Rollout: "r1", Stage: 2, StateBefore: "HEALTHY", StateAfter: "TRIPPED",
			Action: "kill", Cause: "R1", Evidence: evidence}},
		{TypeGuardRearmed, &GuardRearmed{Rollout: "r1", Stage: 2}},
		{TypeValveConfigured, &ValveConfigured{Variant: "degraded", Segment: "tenant.acme", Policy: validPolicy()}},
		{TypeValveOpened, &ValveOpened{Variant: "degraded", Segment: "tenant.acme", Expires: expires, Rollout: "r1", Evidence: evidence}},
		{TypeValveOpened, &ValveOpened{Variant: "degraded"}},
		{TypeValveClosed, &ValveClosed{Cause: ValveClosedHealthy, Evidence: evidence}},
	} {
		t.Run(tc.typ, func(t *testing.T) {
			if !Known(tc.typ) || !containsString(Types(), tc.typ) {
				t.Fatalf("%s is not a known type", tc.typ)
			}
			ev, err := NewEvent(tc.typ, "production", "checkout.redesign", tc.payload)
			if err != nil {
				t.Fatal(err)
			}
			ev.Actor, ev.Reason, ev.CausationID, ev.Version = "guard", "stage healthy", "decision-1", 9
			if ev.Entity != EntityFlag {
				t.Fatalf("entity %q", ev.Entity)
			}
			if err := ev.Validate(); err != nil {
				t.Fatal(err)
			}
			msg := ev.Msg()
			if msg.Subject != FlagSubject("production", "checkout.redesign") {
				t.Fatalf("subject %q", msg.Subject)
			}
			got, err := Decode(msg.Subject, msg.Header, msg.Data)
			if err != nil {
				t.Fatal(err)
			}
			if got.Type != tc.typ || got.Actor != "guard" || got.Reason != "stage healthy" || got.CausationID != "decision-1" || got.Version != 9 {
				t.Fatalf("envelope %+v", got)
			}
			p, err := got.Payload()
			if err != nil {
				t.Fatal(err)
			}
			if reflect.TypeOf(p) != reflect.TypeOf(tc.payload) {
				t.Fatalf("payload %T, want %T", p, tc.payload)
			}
			// Compare through JSON: raw evidence is compacted the same way on both sides.
			a, _ := json.Marshal(p)
			b, _ := json.Marshal(tc.payload)
			if string(a) != string(b) {
				t.Fatalf("payload\n got %s\nwant %s", a, b)
			}
			if !reflect.DeepEqual(normalizeRaw(t, p), normalizeRaw(t, tc.payload)) {
				t.Fatalf("payload %+v, want %+v", p, tc.payload)
			}
		})
	}
	// A rollout event is a flag event: it cannot be put on a segment subject.
	ev, _ := NewEvent(TypeRolloutPaused, "production", "k", RolloutPaused{ID: "r"})
	ev.Actor, ev.Version = "a", 1
	msg := ev.Msg()
	if _, err := Decode(SegmentSubject("production", "k"), msg.Header, msg.Data); !errors.Is(err, ErrMalformed) {
		t.Fatalf("a rollout event on a segment subject: %v", err)
	}
	// Malformed payloads are refused.
	for _, typ := range []string{TypeRolloutCreated, TypeRolloutAdvanced, TypeValveOpened, TypeValveConfigured} {
		bad := Event{Type: typ, Data: []byte(`{"id": 3, "from": "x", "expires": "soon", "variant": 1, "plan": {"tick": 15}}`)}
		if _, err := bad.Payload(); !errors.Is(err, ErrMalformed) {
			t.Errorf("%s with bad data: %v", typ, err)
		}
	}
}

// normalizeRaw re-decodes the payload so that times compare by value.
func normalizeRaw(t *testing.T, p any) any {
	t.Helper()
	switch v := p.(type) {
	case *ValveOpened:
		c := *v
		c.Expires = c.Expires.UTC()
		c.Evidence = nil
		return c
	case *GuardDecided:
		c := *v
		c.Evidence = nil
		return c
	case *ValveClosed:
		c := *v
		c.Evidence = nil
		return c
	}
	return p
}
