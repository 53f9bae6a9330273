package guard_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/interlock-dev/interlock/guard"
	"github.com/interlock-dev/interlock/guard/source"
)

var valveT0 = time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)

const valveStep = 15 * time.Second

func valveConfig() guard.ValveConfig {
	return guard.ValveConfig{Valve: "recommendations-degraded", Segment: "eu"}
}

func valveReading(v float64, at time.Time) source.Reading {
	return source.Reading{Value: v, At: at, Requested: at, Status: source.ReadingOK,
		Query: `sum(http_requests_total{route="/recs"})`, Endpoint: "http://prom:9090"}
}

// valveFeed drives a valve on an injected clock, keeping its cumulative counters.
type valveFeed struct {
	t         *testing.T
	v         *guard.Valve
	now       time.Time
	req, errs float64
	n         int
	decs      []guard.ValveDecision
}

// newValveFeed returns a feed whose valve has already taken its baseline at valveT0.
func newValveFeed(t *testing.T, cfg guard.ValveConfig) *valveFeed {
	t.Helper()
	v, err := guard.NewValve(cfg, valveT0)
	if err != nil {
		t.Fatal(err)
	}
	f := &valveFeed{t: t, v: v, now: valveT0}
	if d := f.observe(valveReading(0, f.now), valveReading(0, f.now)); !d.Baseline || d.Cause != guard.CauseBaseline {
		t.Fatalf("first tick: %+v", d)
	}
	return f
}

func (f *valveFeed) id() string {
	f.n++
	return fmt.Sprintf("v%d", f.n)
}

func (f *valveFeed) record(d guard.ValveDecision, err error) guard.ValveDecision {
	f.t.Helper()
	if err != nil {
		f.t.Fatal(err)
	}
	f.decs = append(f.decs, d)
	return d
}

// observe runs one tick at the feed's time with the given readings.
func (f *valveFeed) observe(req, errs source.Reading) guard.ValveDecision {
	f.t.Helper()
	return f.record(f.v.Observe(f.id(), f.now, req, errs))
}

// tick advances the clock one step, adds the deltas and observes.
func (f *valveFeed) tick(dReq, dErr float64) guard.ValveDecision {
	f.t.Helper()
	f.now = f.now.Add(valveStep)
	f.req += dReq
	f.errs += dErr
	return f.observe(valveReading(f.req, f.now), valveReading(f.errs, f.now))
}

// run ticks for d with the same deltas every tick and returns the decisions.
func (f *valveFeed) run(d time.Duration, dReq, dErr float64) []guard.ValveDecision {
	f.t.Helper()
	var out []guard.ValveDecision
	for end := f.now.Add(d); f.now.Before(end); {
		out = append(out, f.tick(dReq, dErr))
	}
	return out
}

// until ticks with the same deltas until a decision asks for action, for at most limit.
func (f *valveFeed) until(action guard.Action, limit time.Duration, dReq, dErr float64) guard.ValveDecision {
	f.t.Helper()
	for end := f.now.Add(limit); f.now.Before(end); {
		if d := f.tick(dReq, dErr); d.Action == action {
			return d
		}
	}
	f.t.Fatalf("no %s within %v (last %+v)", action, limit, f.decs[len(f.decs)-1])
	return guard.ValveDecision{}
}

func TestValveConfigValidate(t *testing.T) {
	if err := valveConfig().Validate(); err != nil {
		t.Fatalf("valid config: %v", err)
	}
	tests := []struct {
		name   string
		mutate func(*guard.ValveConfig)
		want   string
	}{
		{"no valve", func(c *guard.ValveConfig) { c.Valve = "" }, "valve"},
		{"objective 1", func(c *guard.ValveConfig) { c.Objective = 1 }, "objective"},
		{"objective negative", func(c *guard.ValveConfig) { c.Objective = -0.01 }, "objective"},
		{"objective NaN", func(c *guard.ValveConfig) { c.Objective = math.NaN() }, "objective"},
		{"burn negative", func(c *guard.ValveConfig) { c.BurnRate = -1 }, "burnRate"},
		{"burn Inf", func(c *guard.ValveConfig) { c.BurnRate = math.Inf(1) }, "burnRate"},
		{"burn unreachable", func(c *guard.ValveConfig) { c.Objective, c.BurnRate = 0.1, 10 }, "burnRate"},
		{"close above open", func(c *guard.ValveConfig) { c.CloseBurnRate = 20 }, "closeBurnRate"},
		{"close negative", func(c *guard.ValveConfig) { c.CloseBurnRate = -1 }, "closeBurnRate"},
		{"short not shorter", func(c *guard.ValveConfig) { c.ShortWindow = time.Hour }, "shortWindow"},
		{"long negative", func(c *guard.ValveConfig) { c.LongWindow = -time.Hour }, "longWindow"},
		{"long too long", func(c *guard.ValveConfig) { c.LongWindow = 365 * 24 * time.Hour }, "longWindow"},
		{"minRequests NaN", func(c *guard.ValveConfig) { c.MinRequests = math.NaN() }, "minRequests"},
		{"minRequests negative", func(c *guard.ValveConfig) { c.MinRequests = -1 }, "minRequests"},
		{"minOpen negative", func(c *guard.ValveConfig) { c.MinOpen = -time.Second }, "minOpen"},
		{"healthyFor negative", func(c *guard.ValveConfig) { c.HealthyFor = -time.Second }, "healthyFor"},
		{"backoff below 1", func(c *guard.ValveConfig) { c.Backoff = 0.5 }, "backoff"},
		{"maxBackoff", func(c *guard.ValveConfig) { c.MaxBackoff = 100 }, "maxBackoff"},
		{"backoffReset", func(c *guard.ValveConfig) { c.BackoffReset = -time.Minute }, "backoffReset"},
		{"toggles 1", func(c *guard.ValveConfig) { c.MaxTogglesPerHour = 1 }, "maxTogglesPerHour"},
		{"maxAge", func(c *guard.ValveConfig) { c.MaxAge = -time.Second }, "maxAge"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := valveConfig()
			tc.mutate(&c)
			err := c.Validate()
			if !errors.Is(err, guard.ErrValveConfig) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Validate() = %v, want ErrValveConfig about %q", err, tc.want)
			}
			if _, err := guard.NewValve(c, valveT0); !errors.Is(err, guard.ErrValveConfig) {
				t.Errorf("NewValve() = %v, want ErrValveConfig", err)
			}
		})
	}
	// Every problem is reported at once.
	err := guard.ValveConfig{Objective: 2, MaxTogglesPerHour: -1}.Validate()
	for _, want := range []string{"valve", "objective", "maxTogglesPerHour"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("joined error %v lacks %q", err, want)
		}
	}
	if _, err := guard.NewValve(valveConfig(), time.Time{}); !errors.Is(err, guard.ErrBadInput) {
		t.Errorf("NewValve at the zero time = %v, want ErrBadInput", err)
	}
}

func TestValveDefaults(t *testing.T) {
	v, err := guard.NewValve(guard.ValveConfig{Valve: "v"}, valveT0)
	if err != nil {
		t.Fatal(err)
	}
	c := v.Config()
	want := guard.ValveConfig{Valve: "v", Objective: 0.01, BurnRate: 14.4, CloseBurnRate: 7.2, LongWindow: time.Hour,
		ShortWindow: 5 * time.Minute, MinRequests: 100, MinOpen: 5 * time.Minute, HealthyFor: 10 * time.Minute,
		Backoff: 2, MaxBackoff: 8, BackoffReset: time.Hour, MaxTogglesPerHour: 4, MaxAge: 2 * time.Minute}
	if c != want {
		t.Errorf("defaults:\n got %+v\nwant %+v", c, want)
	}
	if v.Open() || len(v.ConfigDigest()) != 32 {
		t.Errorf("open %v, digest %q", v.Open(), v.ConfigDigest())
	}
	v2, err := guard.NewValve(guard.ValveConfig{Valve: "v", BurnRate: 10}, valveT0)
	if err != nil {
		t.Fatal(err)
	}
	if v2.Config().CloseBurnRate != 5 || v2.ConfigDigest() == v.ConfigDigest() {
		t.Errorf("closeBurnRate %v (want half of burnRate), digests %s and %s", v2.Config().CloseBurnRate, v2.ConfigDigest(), v.ConfigDigest())
	}
}

// The open condition needs a burn over both windows: a short spike alone does not open the valve,
// a long burn the short window no longer sees does not re-open it, a burn at low traffic does not
// open it, and a sustained burn does.
func TestValveOpensOnlyWhenBothWindowsBurn(t *testing.T) {
	const rate = 1000 // requests per tick

	t.Run("short spike alone", func(t *testing.T) {
		f := newValveFeed(t, valveConfig())
		f.run(time.Hour, rate, 5) // 0.5% errors: burn 0.5
		ds := f.run(time.Minute, rate, rate)
		ds = append(ds, f.run(10*time.Minute, rate, 5)...)
		spiked := false
		for _, d := range ds {
			if d.Action != guard.ActionNone || d.OpenAfter {
				t.Fatalf("a short spike opened the valve: %+v", d)
			}
			if d.Short.Burn > d.BurnRate {
				spiked = true
				if d.Long.Burn > d.BurnRate {
					t.Fatalf("the long window burns too: %+v", d.Long)
				}
				if d.Cause != guard.CauseHealthy {
					t.Errorf("cause %s, want %s", d.Cause, guard.CauseHealthy)
				}
			}
		}
		if !spiked {
			t.Fatal("the spike never made the short window burn: the test proves nothing")
		}
	})

	t.Run("sustained burn", func(t *testing.T) {
		f := newValveFeed(t, valveConfig())
		f.run(time.Hour, rate, 5)
		var prev guard.ValveDecision
		d := f.until(guard.ActionOpenValve, time.Hour, rate, rate/2) // 50% errors
		prev = f.decs[len(f.decs)-2]
		if d.Cause != guard.CauseBurn || !d.OpenAfter || d.OpenBefore || !f.v.Open() {
			t.Fatalf("open: %+v", d)
		}
		if !(d.Long.Burn > 14.4 && d.Short.Burn > 14.4) || prev.Long.Burn > 14.4 {
			t.Errorf("opened with long %v short %v; the tick before had long %v", d.Long.Burn, d.Short.Burn, prev.Long.Burn)
		}
		if !prev.OpenAfter && prev.Short.Burn <= 14.4 {
			t.Errorf("the short window did not burn before the long one: %+v", prev.Short)
		}
		if !d.OpenedAt.Equal(d.Time) || d.TogglesLastHour != 1 || d.Backoff != 0 {
			t.Errorf("open state: %+v", d)
		}
	})

	t.Run("long burn after the short one ended", func(t *testing.T) {
		f := newValveFeed(t, valveConfig())
		f.run(time.Hour, rate, 0)
		f.until(guard.ActionOpenValve, time.Hour, rate, rate)
		f.run(30*time.Minute, rate, rate)
		closed := f.until(guard.ActionCloseValve, time.Hour, rate, 0)
		if closed.Cause != guard.CauseHealthy || closed.Long.Burn <= 14.4 {
			t.Fatalf("close: cause %s, long burn %v (the test needs it above the threshold)", closed.Cause, closed.Long.Burn)
		}
		burning := 0
		for _, d := range f.run(time.Hour, rate, 0) {
			if d.Action != guard.ActionNone {
				t.Fatalf("re-opened on the long window alone: %+v", d)
			}
			if d.Long.Burn > 14.4 {
				burning++
			}
		}
		if burning == 0 {
			t.Fatal("the long window never burned after the close: the test proves nothing")
		}
	})

	t.Run("low traffic", func(t *testing.T) {
		f := newValveFeed(t, valveConfig())
		// 4 requests a tick: 80 in the short window, below MinRequests; every other one fails.
		for _, d := range f.run(2*time.Hour, 4, 2) {
			if d.Action != guard.ActionNone {
				t.Fatalf("opened at low traffic: %+v", d)
			}
		}
		last := f.decs[len(f.decs)-1]
		if last.Cause != guard.CauseLowTraffic || last.Short.Requests != 80 || last.Long.Burn != 50 {
			t.Errorf("low traffic: cause %s, short %+v, long %+v", last.Cause, last.Short, last.Long)
		}
		// With enough traffic the same error ratio opens it.
		if d := f.tick(60, 30); d.Action != guard.ActionOpenValve {
			t.Errorf("with %v requests in the short window: %s %s", d.Short.Requests, d.Action, d.Cause)
		}
	})
}

func TestValveMinOpen(t *testing.T) {
	cfg := valveConfig()
	cfg.MinOpen = 30 * time.Minute
	f := newValveFeed(t, cfg)
	opened := f.until(guard.ActionOpenValve, time.Hour, 1000, 1000)
	var d guard.ValveDecision
	sawMinOpen := false
	for d = f.tick(1000, 0); d.Action == guard.ActionNone; d = f.tick(1000, 0) {
		if d.Cause == guard.CauseMinOpen {
			sawMinOpen = true
			if d.Time.Sub(d.HealthySince) < 10*time.Minute {
				t.Fatalf("min-open before the healthy period ended: %+v", d)
			}
		}
		if d.Time.Sub(opened.Time) > time.Hour {
			t.Fatal("never closed")
		}
	}
	if !sawMinOpen || d.Action != guard.ActionCloseValve {
		t.Fatalf("min-open %v, last %s %s", sawMinOpen, d.Action, d.Cause)
	}
	if held := d.Time.Sub(opened.Time); held < 30*time.Minute || held >= 30*time.Minute+valveStep {
		t.Errorf("closed after %v, want the first tick at or after 30m", held)
	}
}

func TestValveClosesAfterHealthyPeriod(t *testing.T) {
	f := newValveFeed(t, valveConfig())
	f.run(time.Hour, 1000, 1)
	f.until(guard.ActionOpenValve, time.Hour, 1000, 1000)
	f.run(5*time.Minute, 1000, 1000)
	var causes []guard.Cause
	var d guard.ValveDecision
	for d = f.tick(1000, 1); d.Action == guard.ActionNone; d = f.tick(1000, 1) {
		if len(causes) == 0 || causes[len(causes)-1] != d.Cause {
			causes = append(causes, d.Cause)
		}
		if len(f.decs) > 10000 {
			t.Fatal("never closed")
		}
	}
	if d.Action != guard.ActionCloseValve || d.Cause != guard.CauseHealthy || d.OpenAfter || f.v.Open() {
		t.Fatalf("close: %+v", d)
	}
	// First the errors leave the short window (burn), then the healthy period runs (recovering).
	if want := []guard.Cause{guard.CauseBurn, guard.CauseRecovering}; fmt.Sprint(causes) != fmt.Sprint(want) {
		t.Errorf("causes while open %v, want %v", causes, want)
	}
	if healthy := d.Time.Sub(d.HealthySince); healthy < 10*time.Minute || healthy >= 10*time.Minute+valveStep {
		t.Errorf("closed after %v healthy, want the first tick at or after 10m", healthy)
	}
	if d.Short.Burn >= d.CloseBurnRate || d.HealthyFor != 10*time.Minute || !d.ClosedAt.Equal(d.Time) || !d.OpenedAt.IsZero() {
		t.Errorf("close evidence: %+v", d)
	}
	// A burn between the two thresholds is not healthy: the hysteresis keeps the valve open.
	f2 := newValveFeed(t, valveConfig())
	open := f2.until(guard.ActionOpenValve, time.Hour, 1000, 1000)
	for _, d := range f2.run(2*time.Hour, 1000, 100) { // 10%: burn 10, between 7.2 and 14.4
		if d.Action != guard.ActionNone {
			t.Fatalf("burn 10 with hysteresis: %s at %v", d.Action, d.Time)
		}
		if d.Time.Sub(open.Time) > 5*time.Minute && (d.Cause != guard.CauseBurn || d.Short.Burn != 10) {
			t.Fatalf("burn 10 with hysteresis: cause %s, short %+v", d.Cause, d.Short)
		}
	}
}

// blindReadings spoil one tick's readings in every way the valve must treat as blind.
var blindReadings = []struct {
	name  string
	spoil func(req, errs *source.Reading, now time.Time)
	want  string
}{
	{"NaN", func(_, e *source.Reading, _ time.Time) { e.Value = math.NaN() }, "errors: NaN value"},
	{"negative", func(r, _ *source.Reading, _ time.Time) { r.Value = -1 }, "requests: negative value"},
	{"infinite", func(r, _ *source.Reading, _ time.Time) { r.Value = math.Inf(1) }, "requests: infinite value"},
	{"beyond 2^53", func(r, _ *source.Reading, _ time.Time) { r.Value = 1 << 54 }, "requests: value beyond 2^53"},
	{"error", func(r, _ *source.Reading, _ time.Time) { r.Status = source.ReadingError }, "requests: status error"},
	{"empty", func(_, e *source.Reading, _ time.Time) { e.Status = source.ReadingEmpty }, "errors: status empty"},
	{"no status", func(_, e *source.Reading, _ time.Time) { e.Status = "" }, "errors: no status"},
	{"unknown status", func(_, e *source.Reading, _ time.Time) { e.Status = "fine" }, "errors: status fine"},
	{"stale", func(r, _ *source.Reading, now time.Time) { r.At = now.Add(-3 * time.Minute) }, "requests: stale sample"},
	{"no time", func(r, _ *source.Reading, _ time.Time) { r.At = time.Time{} }, "requests: no sample time"},
	{"future", func(_, e *source.Reading, now time.Time) { e.At = now.Add(time.Second) }, "errors: sample time after the call"},
	{"out of order", func(r, _ *source.Reading, now time.Time) { r.At = now.Add(-time.Minute) }, "requests: sample older than the last one used"},
}

// Blind ticks never open or close the valve and restart the healthy period.
func TestValveBlind(t *testing.T) {
	for _, tc := range blindReadings {
		t.Run(tc.name, func(t *testing.T) {
			f := newValveFeed(t, valveConfig())
			f.run(time.Hour, 1000, 1)
			// Open, then heal for 8 of the 10 healthy minutes.
			f.until(guard.ActionOpenValve, time.Hour, 1000, 1000)
			f.run(5*time.Minute, 1000, 1000)
			for f.decs[len(f.decs)-1].Cause != guard.CauseRecovering {
				f.tick(1000, 1)
			}
			f.run(8*time.Minute, 1000, 1)
			before := f.decs[len(f.decs)-1]
			if before.HealthySince.IsZero() || before.Cause != guard.CauseRecovering {
				t.Fatalf("setup: %+v", before)
			}

			// Three blind ticks past the end of the healthy period.
			for range 3 {
				f.now = f.now.Add(valveStep)
				f.req += 1000
				f.errs++
				req, errs := valveReading(f.req, f.now), valveReading(f.errs, f.now)
				tc.spoil(&req, &errs, f.now)
				d := f.observe(req, errs)
				if d.Blind != tc.want || d.Cause != guard.CauseBlind || d.Action != guard.ActionNone || !d.OpenAfter {
					t.Fatalf("blind tick: blind %q cause %s action %s open %v; want blind %q", d.Blind, d.Cause, d.Action, d.OpenAfter, tc.want)
				}
				if !d.HealthySince.IsZero() || d.DeltaRequests != 0 {
					t.Fatalf("a blind tick kept the healthy period or counted a delta: %+v", d)
				}
			}
			// The healthy period starts again at the next usable tick.
			resumed := f.tick(1000, 1)
			if resumed.Cause != guard.CauseRecovering || !resumed.HealthySince.Equal(resumed.Time) {
				t.Fatalf("after blind: %+v", resumed)
			}
			// Usable readings after the gap count the whole gap's delta.
			if resumed.DeltaRequests != 4000 {
				t.Errorf("delta after the gap %v, want 4000", resumed.DeltaRequests)
			}
			closed := f.until(guard.ActionCloseValve, time.Hour, 1000, 1)
			if got := closed.Time.Sub(resumed.Time); got != 10*time.Minute {
				t.Errorf("closed %v after the blind run, want 10m", got)
			}
		})
	}

	t.Run("never opens", func(t *testing.T) {
		f := newValveFeed(t, valveConfig())
		f.run(time.Hour, 1000, 1)
		f.until(guard.ActionOpenValve, time.Hour, 1000, 1000)
		// A person closes the valve while both windows still burn; blind ticks do not re-open it.
		if _, err := f.v.CloseManual("close", "oncall", "testing", f.now); err != nil {
			t.Fatal(err)
		}
		for range 10 {
			f.now = f.now.Add(valveStep)
			d := f.observe(source.Reading{Status: source.ReadingTimeout, Requested: f.now}, valveReading(f.errs, f.now))
			if d.Action != guard.ActionNone || d.OpenAfter || d.Cause != guard.CauseBlind || d.Long.Burn <= 14.4 || d.Short.Burn <= 14.4 {
				t.Fatalf("blind tick with burning windows: %+v", d)
			}
		}
		if d := f.tick(1000, 1000); d.Action != guard.ActionOpenValve {
			t.Errorf("the next usable tick: %s %s", d.Action, d.Cause)
		}
	})
}

func TestValveCounterReset(t *testing.T) {
	f := newValveFeed(t, valveConfig())
	f.run(10*time.Minute, 1000, 1)
	// The process restarts: both counters start again from small values.
	f.req, f.errs = 500, 1
	f.now = f.now.Add(valveStep)
	d := f.observe(valveReading(f.req, f.now), valveReading(f.errs, f.now))
	if !d.RequestsReset || !d.ErrorsReset || d.DeltaRequests != 500 || d.DeltaErrors != 1 || d.Blind != "" {
		t.Fatalf("reset: %+v", d)
	}
	if d.Short.Requests != 19*1000+500 || d.Short.Errors != 20 {
		t.Errorf("short window after a reset: %+v", d.Short)
	}
	if d = f.tick(1000, 1); d.RequestsReset || d.DeltaRequests != 1000 {
		t.Errorf("after the reset: %+v", d)
	}
	// A reset does not hide a burn: counting from the new value sees the errors.
	f.req, f.errs = 1000, 1000
	f.now = f.now.Add(valveStep)
	f.observe(valveReading(f.req, f.now), valveReading(f.errs, f.now))
	if d := f.until(guard.ActionOpenValve, time.Hour, 1000, 1000); d.Cause != guard.CauseBurn {
		t.Errorf("open after reset: %+v", d)
	}
}

// Repeated flapping doubles MinOpen and HealthyFor up to the cap; staying closed for
// BackoffReset resets them.
func TestValveBackoff(t *testing.T) {
	cfg := valveConfig()
	cfg.MaxTogglesPerHour = 1000 // the cap is tested on its own
	f := newValveFeed(t, cfg)
	f.run(time.Hour, 1000, 0)
	wantLevels := []int{0, 1, 2, 3, 3}
	for i, level := range wantLevels {
		// Ten minutes of full failure each time.
		open := f.until(guard.ActionOpenValve, 10*time.Minute, 1000, 1000)
		mult := time.Duration(1 << level)
		if open.Backoff != level || open.HealthyFor != 10*time.Minute*mult || open.MinOpen != 5*time.Minute*mult {
			t.Fatalf("open %d: backoff %d healthyFor %v minOpen %v, want level %d", i, open.Backoff, open.HealthyFor, open.MinOpen, level)
		}
		for f.now.Sub(open.Time) < 10*time.Minute {
			f.tick(1000, 1000)
		}
		closed := f.until(guard.ActionCloseValve, 3*time.Hour, 1000, 0)
		if healthy := closed.Time.Sub(closed.HealthySince); healthy < 10*time.Minute*mult || healthy >= 10*time.Minute*mult+valveStep {
			t.Errorf("close %d: healthy for %v, want %v", i, healthy, 10*time.Minute*mult)
		}
		if closed.Backoff != level {
			t.Errorf("close %d: backoff %d", i, closed.Backoff)
		}
	}
	// Closed for longer than BackoffReset: the level drops back.
	ds := f.run(time.Hour, 1000, 0)
	if last := ds[len(ds)-1]; last.Backoff != 0 || last.HealthyFor != 10*time.Minute {
		t.Errorf("after an hour closed: backoff %d, healthyFor %v", last.Backoff, last.HealthyFor)
	}
	f.run(time.Hour, 1000, 0) // let the long window forget the old incidents
	if open := f.until(guard.ActionOpenValve, time.Hour, 1000, 1000); open.Backoff != 0 {
		t.Errorf("open after the reset: backoff %d", open.Backoff)
	}
}

// When a close would leave no toggle for a re-open within the hour, the valve stays open and
// pages once; it closes when old toggles leave the hour.
func TestValveToggleCap(t *testing.T) {
	cfg := valveConfig()
	cfg.MinOpen, cfg.HealthyFor, cfg.Backoff = time.Minute, time.Minute, 1
	f := newValveFeed(t, cfg)
	burst := func() guard.ValveDecision {
		t.Helper()
		d := f.until(guard.ActionOpenValve, 10*time.Minute, 1000, 1000)
		f.run(time.Minute, 1000, 1000)
		return d
	}
	first := burst()
	f.until(guard.ActionCloseValve, time.Hour, 1000, 0)
	burst()
	// The next close would be the 4th toggle of the hour and leave none for a re-open.
	var held []guard.ValveDecision
	var d guard.ValveDecision
	for d = f.tick(1000, 0); d.Action == guard.ActionNone; d = f.tick(1000, 0) {
		if d.Cause == guard.CauseToggleCap {
			held = append(held, d)
		}
	}
	if len(held) == 0 {
		t.Fatal("the toggle cap never held the valve")
	}
	if !held[0].Page || held[0].TogglesLastHour != 3 || !held[0].OpenAfter {
		t.Errorf("first held tick: %+v", held[0])
	}
	for _, h := range held[1:] {
		if h.Page {
			t.Fatalf("paged again at %v", h.Time)
		}
	}
	if d.Action != guard.ActionCloseValve || d.Cause != guard.CauseHealthy {
		t.Fatalf("after the hold: %+v", d)
	}
	// It closes on the first tick at which the first open has left the hour, (now − 1h, now].
	if want := first.Time.Add(time.Hour); !d.Time.Equal(want) {
		t.Errorf("closed at %v, want %v", d.Time, want)
	}
	if d.TogglesLastHour != 3 {
		t.Errorf("toggles after the close: %d", d.TogglesLastHour)
	}
}

func TestValveManualOpenExpires(t *testing.T) {
	t.Run("healthy at expiry", func(t *testing.T) {
		f := newValveFeed(t, valveConfig())
		f.run(time.Hour, 1000, 0)
		expires := f.now.Add(30 * time.Minute)
		d := f.record(f.v.OpenManual("m1", "alice@example.com", "INC-42: shed load", f.now, expires))
		if d.Action != guard.ActionOpenValve || d.Cause != guard.CauseManual || !d.Manual || !d.Expires.Equal(expires) ||
			d.By != "alice@example.com" || d.Reason != "INC-42: shed load" || d.TogglesLastHour != 1 || d.Call != guard.CallOpenManual {
			t.Fatalf("manual open: %+v", d)
		}
		for _, d := range f.run(30*time.Minute-valveStep, 1000, 0) {
			if d.Action != guard.ActionNone || d.Cause != guard.CauseManual || !d.Manual || d.By != "alice@example.com" {
				t.Fatalf("before the expiry: %+v", d)
			}
		}
		d = f.tick(1000, 0)
		if !d.Time.Equal(expires) || d.Action != guard.ActionCloseValve || d.Cause != guard.CauseExpired || d.Manual ||
			!d.Expires.Equal(expires) || d.Reason != "INC-42: shed load" {
			t.Fatalf("at the expiry: %+v", d)
		}
		if d = f.tick(1000, 0); d.Expires != (time.Time{}) || d.By != "" || d.Cause != guard.CauseHealthy {
			t.Errorf("after the expiry: %+v", d)
		}
	})

	t.Run("burning at expiry stays open", func(t *testing.T) {
		f := newValveFeed(t, valveConfig())
		f.run(time.Hour, 1000, 0)
		expires := f.now.Add(10 * time.Minute)
		f.record(f.v.OpenManual("m1", "alice", "pre-emptive", f.now, expires))
		f.run(10*time.Minute-valveStep, 1000, 1000)
		d := f.tick(1000, 1000)
		if d.Action != guard.ActionNone || d.Cause != guard.CauseBurn || d.Manual || !d.OpenAfter {
			t.Fatalf("burning at the expiry: %+v", d)
		}
		// Now it is automatic: it closes by the healthy rules.
		closed := f.until(guard.ActionCloseValve, time.Hour, 1000, 0)
		if closed.Cause != guard.CauseHealthy || closed.Time.Sub(closed.HealthySince) < 10*time.Minute {
			t.Errorf("automatic close after the hold: %+v", closed)
		}
	})

	t.Run("blind at expiry waits", func(t *testing.T) {
		f := newValveFeed(t, valveConfig())
		f.run(10*time.Minute, 1000, 0)
		expires := f.now.Add(time.Minute)
		f.record(f.v.OpenManual("m1", "alice", "maintenance", f.now, expires))
		f.now = f.now.Add(2 * time.Minute)
		d := f.observe(valveReading(math.NaN(), f.now), valveReading(0, f.now))
		if d.Action != guard.ActionNone || d.Cause != guard.CauseBlind || !d.Manual {
			t.Fatalf("blind past the expiry: %+v", d)
		}
		if d = f.tick(1000, 0); d.Action != guard.ActionCloseValve || d.Cause != guard.CauseExpired {
			t.Fatalf("the next usable tick: %+v", d)
		}
	})

	t.Run("holds against the automatic close", func(t *testing.T) {
		f := newValveFeed(t, valveConfig())
		f.until(guard.ActionOpenValve, time.Hour, 1000, 1000)
		d := f.record(f.v.OpenManual("m1", "bob", "keep it off overnight", f.now, f.now.Add(12*time.Hour)))
		if d.Action != guard.ActionNone || !d.Manual || d.TogglesLastHour != 1 {
			t.Fatalf("manual open of an open valve: %+v", d)
		}
		for _, d := range f.run(12*time.Hour-valveStep, 1000, 0) {
			if d.Action != guard.ActionNone {
				t.Fatalf("closed before the expiry: %+v", d)
			}
		}
		if d := f.tick(1000, 0); d.Action != guard.ActionCloseValve || d.Cause != guard.CauseExpired {
			t.Errorf("at the expiry: %+v", d)
		}
	})
}

func TestValveManualClose(t *testing.T) {
	f := newValveFeed(t, valveConfig())
	f.record(f.v.OpenManual("m1", "alice", "incident", f.now, f.now.Add(time.Hour)))
	f.tick(1000, 0)
	f.now = f.now.Add(time.Second)
	d := f.record(f.v.CloseManual("c1", "bob@example.com", "fixed upstream", f.now))
	if d.Action != guard.ActionCloseValve || d.Cause != guard.CauseManual || d.By != "bob@example.com" || d.Reason != "fixed upstream" ||
		d.Call != guard.CallCloseManual || d.OpenAfter || d.Manual || d.TogglesLastHour != 2 || f.v.Open() || !d.ClosedAt.Equal(f.now) {
		t.Fatalf("manual close: %+v", d)
	}
	d = f.record(f.v.CloseManual("c2", "bob@example.com", "again", f.now))
	if d.Action != guard.ActionNone || d.Cause != guard.CauseManual || d.TogglesLastHour != 2 {
		t.Errorf("closing a closed valve: %+v", d)
	}
	// It stays closed while healthy, and opens again on a burn over both windows.
	for _, d := range f.run(30*time.Minute, 1000, 0) {
		if d.Action != guard.ActionNone {
			t.Fatalf("after the manual close: %+v", d)
		}
	}
	if d := f.until(guard.ActionOpenValve, time.Hour, 1000, 1000); d.Backoff != 1 {
		t.Errorf("a re-open within the hour after a manual close: backoff %d", d.Backoff)
	}
}

func TestValveRejectsBadCalls(t *testing.T) {
	f := newValveFeed(t, valveConfig())
	f.tick(1000, 0)
	ok := valveReading(f.req, f.now)
	tests := []struct {
		name string
		call func() error
		want error
	}{
		{"no id", func() error { _, err := f.v.Observe("", f.now, ok, ok); return err }, guard.ErrBadInput},
		{"zero time", func() error { _, err := f.v.Observe("x", time.Time{}, ok, ok); return err }, guard.ErrBadInput},
		{"backwards", func() error { _, err := f.v.Observe("x", f.now.Add(-time.Second), ok, ok); return err }, guard.ErrCallOrder},
		{"year 10000", func() error {
			_, err := f.v.Observe("x", time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC), ok, ok)
			return err
		}, guard.ErrBadInput},
		{"reading year", func() error {
			r := ok
			r.At = time.Date(-1, 1, 1, 0, 0, 0, 0, time.UTC)
			_, err := f.v.Observe("x", f.now, r, ok)
			return err
		}, guard.ErrBadInput},
		{"open without by", func() error { _, err := f.v.OpenManual("x", "", "r", f.now, f.now.Add(time.Hour)); return err }, guard.ErrBadInput},
		{"open without reason", func() error { _, err := f.v.OpenManual("x", "a", "", f.now, f.now.Add(time.Hour)); return err }, guard.ErrBadInput},
		{"open expired", func() error { _, err := f.v.OpenManual("x", "a", "r", f.now, f.now); return err }, guard.ErrBadInput},
		{"open backwards", func() error {
			_, err := f.v.OpenManual("x", "a", "r", f.now.Add(-time.Second), f.now.Add(time.Hour))
			return err
		}, guard.ErrCallOrder},
		{"close without by", func() error { _, err := f.v.CloseManual("x", "", "r", f.now); return err }, guard.ErrBadInput},
		{"close backwards", func() error { _, err := f.v.CloseManual("x", "a", "r", f.now.Add(-time.Second)); return err }, guard.ErrCallOrder},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if err := tc.call(); !errors.Is(err, tc.want) {
				t.Fatalf("got %v, want %v", err, tc.want)
			}
		})
	}
	// Nothing changed: the next tick's delta is measured from the last accepted one.
	if d := f.tick(1000, 0); d.DeltaRequests != 1000 || d.OpenAfter || d.TogglesLastHour != 0 {
		t.Errorf("after rejected calls: %+v", d)
	}
}

// valveScript drives a valve through a seeded random run (bursts, calm, blind ticks, resets,
// manual calls) and returns its decisions encoded as JSON, one per call.
func valveScript(t testing.TB, rng *rand.Rand) (guard.ValveConfig, [][]byte) {
	t.Helper()
	cfg := valveConfig()
	cfg.MinOpen, cfg.HealthyFor = 2*time.Minute, 3*time.Minute
	v, err := guard.NewValve(cfg, valveT0)
	if err != nil {
		t.Fatal(err)
	}
	var out [][]byte
	record := func(d guard.ValveDecision, err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		b, err := json.Marshal(d)
		if err != nil {
			t.Fatalf("decision does not encode: %v\n%+v", err, d)
		}
		out = append(out, b)
	}
	now, req, errs, errRate := valveT0, 0.0, 0.0, 0.0
	for i := range 600 {
		now = now.Add(valveStep)
		if rng.IntN(20) == 0 {
			errRate = []float64{0, 0.001, 0.1, 0.5, 1}[rng.IntN(5)]
		}
		n := float64(rng.IntN(2000))
		req += n
		errs += math.Round(n * errRate * rng.Float64() * 2)
		if rng.IntN(200) == 0 {
			req, errs = n, 0
		}
		r, e := valveReading(req, now), valveReading(errs, now)
		switch rng.IntN(30) {
		case 0:
			r.Value = math.NaN()
		case 1:
			e.Status = source.ReadingStale
		case 2:
			r.At = now.Add(-10 * time.Minute)
		}
		id := fmt.Sprintf("d%d", i)
		switch rng.IntN(80) {
		case 0:
			record(v.OpenManual(id+"-open", "alice", "drill", now, now.Add(time.Duration(1+rng.IntN(40))*time.Minute)))
		case 1:
			record(v.CloseManual(id+"-close", "bob", "done", now))
		}
		record(v.Observe(id, now, r, e))
	}
	return cfg, out
}

// Property: the recorded decisions, decoded from JSON and replayed through a fresh valve,
// reproduce every decision byte for byte.
func TestValveReplayReproducesDecisions(t *testing.T) {
	causes := map[guard.Cause]int{}
	for seed := range uint64(12) {
		cfg, recorded := valveScript(t, rand.New(rand.NewPCG(seed, 17)))
		decs := make([]guard.ValveDecision, len(recorded))
		for i, b := range recorded {
			if err := json.Unmarshal(b, &decs[i]); err != nil {
				t.Fatalf("seed %d record %d: %v\n%s", seed, i, err, b)
			}
			causes[decs[i].Cause]++
		}
		replayed, err := guard.ReplayValve(cfg, valveT0, decs)
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
	for _, c := range []guard.Cause{guard.CauseBurn, guard.CauseHealthy, guard.CauseBlind, guard.CauseRecovering,
		guard.CauseManual, guard.CauseExpired, guard.CauseBaseline, guard.CauseToggleCap} {
		if causes[c] == 0 {
			t.Errorf("no replayed decision had cause %s (%v)", c, causes)
		}
	}
}

func TestValveReplayRejects(t *testing.T) {
	cfg, recorded := valveScript(t, rand.New(rand.NewPCG(3, 17)))
	decs := make([]guard.ValveDecision, len(recorded))
	for i, b := range recorded {
		if err := json.Unmarshal(b, &decs[i]); err != nil {
			t.Fatal(err)
		}
	}
	other := cfg
	other.BurnRate = 10
	if _, err := guard.ReplayValve(other, valveT0, decs); !errors.Is(err, guard.ErrEvidence) {
		t.Errorf("another configuration: %v, want ErrEvidence", err)
	}
	bad := append([]guard.ValveDecision(nil), decs...)
	bad[5].Call = guard.CallDecide
	if out, err := guard.ReplayValve(cfg, valveT0, bad); !errors.Is(err, guard.ErrEvidence) || len(out) != 5 {
		t.Errorf("unknown call: %d records, %v", len(out), err)
	}
	if _, err := guard.ReplayValve(guard.ValveConfig{}, valveT0, decs); !errors.Is(err, guard.ErrValveConfig) {
		t.Errorf("invalid config: %v", err)
	}
	backwards := append([]guard.ValveDecision(nil), decs[:3]...)
	backwards[2].Time = valveT0.Add(-time.Hour)
	if _, err := guard.ReplayValve(cfg, valveT0, backwards); !errors.Is(err, guard.ErrCallOrder) {
		t.Errorf("time going backwards: %v, want ErrCallOrder", err)
	}
	// A tampered reading replays to a different decision.
	for i := range decs {
		if decs[i].Call == guard.CallObserve && decs[i].Blind == "" && !decs[i].Baseline {
			tampered := append([]guard.ValveDecision(nil), decs[:i+1]...)
			tampered[i].Errors.Value += 1e6
			out, err := guard.ReplayValve(cfg, valveT0, tampered)
			if err != nil {
				t.Fatal(err)
			}
			if b, _ := json.Marshal(out[i]); bytes.Equal(b, recorded[i]) {
				t.Error("a tampered reading replayed to the recorded decision")
			}
			break
		}
	}
}

func TestValveDecisionJSONShape(t *testing.T) {
	f := newValveFeed(t, valveConfig())
	f.run(10*time.Minute, 1000, 10)
	d := f.tick(1000, 0)
	b, err := json.Marshal(d)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		`"decisionId":"v42"`, `"call":"observe"`, `"valve":"recommendations-degraded"`, `"segment":"eu"`, `"configDigest":"`,
		`"requests":{"value":41000,`, `"query":"sum(http_requests_total{route=\"/recs\"})"`, `"endpoint":"http://prom:9090"`,
		`"deltaRequests":1000`, `"deltaErrors":0`, `"objective":0.01`, `"burnRate":14.4`, `"closeBurnRate":7.2`,
		`"long":{"window":3600000000000,"requests":41000,"errors":400,`, `"short":{"window":300000000000,"requests":20000,"errors":190,`,
		`"openBefore":false`, `"openAfter":false`, `"action":"none"`, `"cause":"healthy"`, `"togglesLastHour":0`,
		`"backoff":0`, `"healthyFor":600000000000`,
	} {
		if !strings.Contains(string(b), want) {
			t.Errorf("decision lacks %s:\n%s", want, b)
		}
	}
	for _, absent := range []string{`"page"`, `"manual"`, `"expires"`, `"openedAt"`, `"blind"`, `"by"`} {
		if strings.Contains(string(b), absent) {
			t.Errorf("decision has %s:\n%s", absent, b)
		}
	}
	// An empty window and an infinite ratio survive JSON.
	v, err := guard.NewValve(valveConfig(), valveT0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := v.Observe("a", valveT0, valveReading(0, valveT0), valveReading(0, valveT0)); err != nil {
		t.Fatal(err)
	}
	at := valveT0.Add(valveStep)
	d, err = v.Observe("b", at, valveReading(0, at), valveReading(5, at))
	if err != nil || !math.IsInf(float64(d.Short.Ratio), 1) {
		t.Fatalf("errors without requests: %v %+v", err, d.Short)
	}
	b, _ = json.Marshal(d)
	var back guard.ValveDecision
	if err := json.Unmarshal(b, &back); err != nil || !math.IsInf(float64(back.Short.Burn), 1) {
		t.Errorf("round trip of +Inf: %v %+v", err, back.Short)
	}
}

// Property: whatever the readings, a valve driven by Observe alone never toggles more than
// MaxTogglesPerHour times in any hour, and its count of toggles is right.
func TestValveToggleCapProperty(t *testing.T) {
	capHits, toggles := 0, 0
	for seed := range uint64(20) {
		rng := rand.New(rand.NewPCG(seed, 99))
		cfg := valveConfig()
		cfg.MinOpen, cfg.HealthyFor, cfg.Backoff = 30*time.Second, 30*time.Second, 1
		cfg.ShortWindow, cfg.LongWindow = time.Minute, 5*time.Minute
		cfg.MaxTogglesPerHour = 2 + rng.IntN(5)
		v, err := guard.NewValve(cfg, valveT0)
		if err != nil {
			t.Fatal(err)
		}
		now, req, errs, errRate := valveT0, 0.0, 0.0, 0.0
		var times []time.Time
		for i := range 24 * 60 * 4 { // 24 h of 15 s ticks
			now = now.Add(valveStep)
			// A random walk of the error ratio, reflected at 0 and 1.
			errRate += (rng.Float64() - 0.5) * 0.2
			errRate = math.Abs(errRate)
			if errRate > 1 {
				errRate = 2 - errRate
			}
			n := float64(200 + rng.IntN(1000))
			req += n
			errs += math.Floor(n * errRate)
			r, e := valveReading(req, now), valveReading(errs, now)
			if rng.IntN(50) == 0 {
				e.Status = source.ReadingError
			}
			d, err := v.Observe(fmt.Sprint(i), now, r, e)
			if err != nil {
				t.Fatal(err)
			}
			if d.Action != guard.ActionNone {
				times = append(times, now)
				toggles++
			}
			if d.Page {
				capHits++
			}
			inHour := 0
			for _, at := range times {
				if at.After(now.Add(-time.Hour)) {
					inHour++
				}
			}
			if inHour > cfg.MaxTogglesPerHour || d.TogglesLastHour != inHour {
				t.Fatalf("seed %d at %v: %d toggles in the last hour (decision says %d), cap %d", seed, now, inHour, d.TogglesLastHour, cfg.MaxTogglesPerHour)
			}
		}
	}
	// The walk must have pushed against the cap, or the property proves nothing.
	if capHits == 0 || toggles < 100 {
		t.Fatalf("cap hits %d, toggles %d: the walk did not flap", capHits, toggles)
	}
	t.Logf("toggles %d, pages %d", toggles, capHits)
}

// BenchmarkValveObserve runs one tick on a valve whose long window is full (240 ticks).
func BenchmarkValveObserve(b *testing.B) {
	v, err := guard.NewValve(valveConfig(), valveT0)
	if err != nil {
		b.Fatal(err)
	}
	now, req, errs := valveT0, 0.0, 0.0
	tick := func() guard.ValveDecision {
		now = now.Add(valveStep)
		req += 1000
		errs += 3
		d, err := v.Observe("bench", now, valveReading(req, now), valveReading(errs, now))
		if err != nil {
			b.Fatal(err)
		}
		return d
	}
	for range 300 {
		tick()
	}
	if d := tick(); d.Long.Requests != 240000 {
		b.Fatalf("setup: long window %+v", d.Long)
	}
	b.ReportAllocs()
	for b.Loop() {
		tick()
	}
}
