package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/interlock-dev/interlock/events"
	"github.com/interlock-dev/interlock/internal/await"
	"github.com/interlock-dev/interlock/internal/command"
	"github.com/interlock-dev/interlock/internal/natstest"
	"github.com/interlock-dev/interlock/projections"
)

// within bounds every asynchronous check.
const within = 20 * time.Second

const (
	env     = "production"
	flagKey = "checkout-v2"
)

var meta = command.Meta{Actor: "test", Reason: "testing the demo"}

// system is the Interlock side, in process: a JetStream server over TCP and the command
// service that appends to its event stream.
type system struct {
	url   string
	token string // an Interlock token, for Interlock's embedded server
	cmds  *command.Service
}

func boot(t *testing.T) *system {
	t.Helper()
	srv := natstest.RunServer(t)
	store, err := events.Open(context.Background(), natstest.JetStream(t, srv), events.StreamConfig{})
	if err != nil {
		t.Fatalf("open store: %v", err)
	}
	return &system{url: srv.ClientURL(), cmds: command.New(store, nil)}
}

// createFlag creates the enabled boolean flag flagKey, split 50/50 between on and off.
func (s *system) createFlag(t *testing.T) {
	t.Helper()
	_, err := flagOf(s.cmds.Handle(context.Background(), command.CreateFlag{Meta: meta, Env: env, Key: flagKey, Config: events.FlagConfig{
		Kind:           events.KindRelease,
		Variants:       map[string]json.RawMessage{"on": json.RawMessage("true"), "off": json.RawMessage("false")},
		DefaultVariant: "off",
		OffVariant:     "off",
		Enabled:        true,
		DefaultServe:   &events.Serve{Split: map[string]int{"on": 50, "off": 50}},
	}}))
	if err != nil {
		t.Fatalf("create flag: %v", err)
	}
}

// demoProc is one run of the program.
type demoProc struct {
	base   string // http://127.0.0.1:port
	stdout *await.Output
	stderr *await.Output
	stop   func() int // cancels the run and returns its exit code
}

var listening = regexp.MustCompile(`msg=listening addr=(\S+)`)

// start runs the program against s on 127.0.0.1:0 with args added, and waits until it listens.
// The run is stopped when the test ends; it must return 0 then.
func start(t *testing.T, s *system, args ...string) *demoProc {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	p := &demoProc{stdout: &await.Output{}, stderr: &await.Output{}}
	code := make(chan int, 1)
	all := append([]string{"--nats-url", s.url, "--listen", "127.0.0.1:0", "--env", env, "--report", "0"}, args...)
	if s.token != "" {
		all = append(all, "--token", s.token)
	}
	go func() { code <- run(ctx, all, p.stdout, p.stderr) }()
	var once sync.Once
	var result int
	p.stop = func() int {
		once.Do(func() {
			cancel()
			select {
			case result = <-code:
			case <-time.After(within):
				t.Errorf("run did not return within %v of its context ending", within)
				result = -1
			}
		})
		return result
	}
	t.Cleanup(func() {
		if c := p.stop(); c != 0 {
			t.Errorf("run returned %d when stopped, want 0; stderr:\n%s", c, p.stderr.String())
		}
	})
	await.Eventually(t, within, func() bool {
		m := listening.FindStringSubmatch(p.stderr.String())
		if m == nil {
			select {
			case c := <-code:
				t.Fatalf("run returned %d before listening; stderr:\n%s", c, p.stderr.String())
			default:
			}
			return false
		}
		p.base = "http://" + m[1]
		return true
	}, "the demo to listen; stderr:\n%s", p.stderr)
	return p
}

// status is GET /.
func (p *demoProc) status(t *testing.T) status {
	t.Helper()
	var st status
	if code := p.getJSON(t, "/", &st); code != http.StatusOK {
		t.Fatalf("GET /: %d", code)
	}
	return st
}

func (p *demoProc) getJSON(t *testing.T, path string, v any) int {
	t.Helper()
	resp, err := http.Get(p.base + path)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
		t.Fatalf("GET %s: decode: %v", path, err)
	}
	return resp.StatusCode
}

// postKnob posts body to /knob and returns the status code and the decoded answer.
func (p *demoProc) postKnob(t *testing.T, body string) (int, knobState, string) {
	t.Helper()
	resp, err := http.Post(p.base+"/knob", "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	var k knobState
	if resp.StatusCode == http.StatusOK {
		if err := json.Unmarshal(raw, &k); err != nil {
			t.Fatalf("POST /knob: decode %q: %v", raw, err)
		}
	}
	return resp.StatusCode, k, string(raw)
}

// counts are the exposed counters by variant.
type counts map[string]tally

// scrape reads /metrics as Prometheus would (text format) and checks its shape.
func (p *demoProc) scrape(t *testing.T) counts {
	t.Helper()
	resp, err := http.Get(p.base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /metrics: %d", resp.StatusCode)
	}
	if f := expfmt.ResponseFormat(resp.Header); f.FormatType() != expfmt.TypeTextPlain {
		t.Fatalf("GET /metrics: content type %q is not the text format", resp.Header.Get("Content-Type"))
	}
	parser := expfmt.NewTextParser(model.LegacyValidation)
	fams, err := parser.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("parse /metrics: %v", err)
	}
	return countsOf(t, fams)
}

// countsOf checks the two counter families and the latency histogram, and returns their values
// by variant (with the histogram's sum and buckets).
func countsOf(t *testing.T, fams map[string]*dto.MetricFamily) counts {
	t.Helper()
	out := counts{}
	for _, name := range []string{"requests_total", "errors_total"} {
		mf := fams[name]
		if mf == nil {
			continue // nothing counted yet; checked below
		}
		if mf.GetType() != dto.MetricType_COUNTER {
			t.Fatalf("%s is a %v, want a counter", name, mf.GetType())
		}
		for _, m := range mf.GetMetric() {
			labels := map[string]string{}
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			if len(labels) != 2 || labels["flag"] != flagKey {
				t.Fatalf("%s has labels %v, want flag=%q and variant", name, labels, flagKey)
			}
			v := m.GetCounter().GetValue()
			if v != math.Trunc(v) || v < 0 {
				t.Fatalf("%s%v = %v, not a count", name, labels, v)
			}
			c := out[labels["variant"]]
			if name == "requests_total" {
				c.Requests = uint64(v)
			} else {
				c.Errors = uint64(v)
			}
			out[labels["variant"]] = c
		}
	}
	if (fams["requests_total"] == nil) != (fams["errors_total"] == nil) {
		t.Fatalf("/metrics has one of requests_total and errors_total without the other")
	}
	for v, c := range out {
		if n := len(fams["requests_total"].GetMetric()); n != len(out) || len(fams["errors_total"].GetMetric()) != n {
			t.Fatalf("requests_total and errors_total have different variants")
		}
		if c.Errors > c.Requests {
			t.Fatalf("variant %s: %d errors of %d requests", v, c.Errors, c.Requests)
		}
	}
	// The histogram comes with the counters, its count always the variant's requests_total.
	if (fams["requests_total"] == nil) != (fams[latencyFamily] == nil) {
		t.Fatalf("/metrics has one of requests_total and %s without the other", latencyFamily)
	}
	lat := latenciesOf(t, flagKey, fams)
	if len(lat) != len(out) {
		t.Fatalf("%s has %d variants, requests_total %d", latencyFamily, len(lat), len(out))
	}
	for v, l := range lat {
		c, ok := out[v]
		if !ok || l.Requests != c.Requests {
			t.Fatalf("variant %s: %s_count %d, requests_total %d (exposed: %v)", v, latencyFamily, l.Requests, c.Requests, ok)
		}
		c.LatencySum, c.buckets = l.LatencySum, l.buckets
		out[v] = c
	}
	return out
}

// latencyFamily is the name of the latency histogram.
const latencyFamily = "request_duration_seconds"

// latenciesOf checks the latency histogram of flag and returns it by variant: the count as
// Requests, the sum and the buckets (not cumulative). A text exposition has a +Inf bucket, a
// protobuf one may leave it out.
func latenciesOf(t *testing.T, flag string, fams map[string]*dto.MetricFamily) map[string]tally {
	t.Helper()
	out := map[string]tally{}
	mf := fams[latencyFamily]
	if mf == nil {
		return out
	}
	if mf.GetType() != dto.MetricType_HISTOGRAM {
		t.Fatalf("%s is a %v, want a histogram", latencyFamily, mf.GetType())
	}
	for _, m := range mf.GetMetric() {
		labels := map[string]string{}
		for _, l := range m.GetLabel() {
			labels[l.GetName()] = l.GetValue()
		}
		if len(labels) != 2 || labels["flag"] != flag || labels["variant"] == "" {
			t.Fatalf("%s has labels %v, want flag=%q and variant", latencyFamily, labels, flag)
		}
		v := labels["variant"]
		if _, dup := out[v]; dup {
			t.Fatalf("%s{variant=%q} appears twice", latencyFamily, v)
		}
		h := m.GetHistogram()
		c := tally{Requests: h.GetSampleCount(), LatencySum: h.GetSampleSum()}
		if math.IsNaN(c.LatencySum) || math.IsInf(c.LatencySum, 0) || c.LatencySum < 0 || (c.Requests > 0) != (c.LatencySum > 0) {
			t.Fatalf("%s{variant=%q}: sum %v of %d requests", latencyFamily, v, c.LatencySum, c.Requests)
		}
		buckets := h.GetBucket()
		if n := len(buckets); n == len(latencyBounds)+1 {
			if inf := buckets[n-1]; !math.IsInf(inf.GetUpperBound(), 1) || inf.GetCumulativeCount() != c.Requests {
				t.Fatalf("%s{variant=%q}: last bucket le=%v holds %d, want +Inf holding the count %d", latencyFamily, v, inf.GetUpperBound(), inf.GetCumulativeCount(), c.Requests)
			}
			buckets = buckets[:n-1]
		}
		if len(buckets) != len(latencyBounds) {
			t.Fatalf("%s{variant=%q}: %d buckets, want %v and +Inf", latencyFamily, v, len(h.GetBucket()), latencyBounds)
		}
		var prev uint64
		for i, b := range buckets {
			n := b.GetCumulativeCount()
			if b.GetUpperBound() != latencyBounds[i] || n < prev || n > c.Requests {
				t.Fatalf("%s{variant=%q}: bucket %d is le=%v holding %d after %d of %d; want le=%v, cumulative", latencyFamily, v, i, b.GetUpperBound(), n, prev, c.Requests, latencyBounds[i])
			}
			c.buckets[i] = n - prev
			prev = n
		}
		out[v] = c
	}
	return out
}

// scrapeUntil scrapes until cond holds for the counts, and returns them.
func (p *demoProc) scrapeUntil(t *testing.T, what string, cond func(counts) bool) counts {
	t.Helper()
	var c counts
	await.Eventually(t, within, func() bool {
		c = p.scrape(t)
		return cond(c)
	}, "%s; last scrape %v", what, &c)
	return c
}

// statusUntil polls GET / until cond holds, and returns the status.
func (p *demoProc) statusUntil(t *testing.T, what string, cond func(status) bool) status {
	t.Helper()
	var st status
	await.Eventually(t, within, func() bool {
		st = p.status(t)
		return cond(st)
	}, "%s; last status %+v", what, &st)
	return st
}

// errorBound is a generous upper bound on the errors among n requests failing with probability
// p each: the mean plus six standard deviations, plus a few.
func errorBound(n uint64, p float64) uint64 {
	mean := float64(n) * p
	return uint64(mean + 6*math.Sqrt(mean) + 5)
}

func TestSplitAndMetrics(t *testing.T) {
	s := boot(t)
	s.createFlag(t)
	p := start(t, s, "--flag", flagKey, "--rate", "2000", "--seed", "1", "--base-error-rate", "0.01")

	first := p.scrapeUntil(t, "both variants served 200 times", func(c counts) bool {
		return c["on"].Requests >= 200 && c["off"].Requests >= 200
	})
	if len(first) != 2 {
		t.Fatalf("variants %v, want on and off only", first)
	}
	later := p.scrapeUntil(t, "both variants growing", func(c counts) bool {
		return c["on"].Requests >= first["on"].Requests+1000 && c["off"].Requests >= first["off"].Requests+1000
	})
	// Counters never go down, and the split is near 50/50 (the users are fixed by the seed).
	for _, v := range []string{"on", "off"} {
		if later[v].Errors < first[v].Errors {
			t.Errorf("errors_total{variant=%q} went down: %d then %d", v, first[v].Errors, later[v].Errors)
		}
	}
	on, off := later["on"].Requests, later["off"].Requests
	if share := float64(on) / float64(on+off); share < 0.4 || share > 0.6 {
		t.Errorf("on has %.1f%% of %d requests, want about 50%%", 100*share, on+off)
	}
	// The base error rate applies to every variant.
	for _, v := range []string{"on", "off"} {
		if c := later[v]; c.Errors == 0 || c.Errors > errorBound(c.Requests, 0.01) {
			t.Errorf("variant %s: %d errors of %d requests at a base rate of 1%%", v, c.Errors, c.Requests)
		}
	}

	// Protobuf, for a scraper that asks for it.
	req, _ := http.NewRequest(http.MethodGet, p.base+"/metrics", nil)
	req.Header.Set("Accept", `application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=delimited`)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	format := expfmt.ResponseFormat(resp.Header)
	if format.FormatType() != expfmt.TypeProtoDelim {
		t.Errorf("asked for protobuf, got %q", resp.Header.Get("Content-Type"))
	}
	fams := decodeFamilies(t, resp.Body, format)
	resp.Body.Close()
	if pb := countsOf(t, fams); pb["on"].Requests < later["on"].Requests {
		t.Errorf("protobuf scrape has %d on requests, the text one before it %d", pb["on"].Requests, later["on"].Requests)
	}

	st := p.status(t)
	if st.Flag != flagKey || st.Environment != env || st.Rate != 2000 || st.Users != 10000 || !st.Running {
		t.Errorf("status %+v", st)
	}
	if !st.Local.Ready || st.Local.Stale || st.Local.Sequence == 0 {
		t.Errorf("status local %+v, want ready, fresh, at a sequence", st.Local)
	}
	if st.Last == nil || st.Last.FlagVersion != 1 || (st.Last.Variant != "on" && st.Last.Variant != "off") || st.Last.Reason != "SPLIT" {
		t.Errorf("status last %+v", st.Last)
	}
	if st.Knob.FailVariant != "on" || st.Knob.FailRate != 0 || st.Knob.BaseErrorRate != 0.01 || st.Knob.Version != 1 {
		t.Errorf("status knob %+v", st.Knob)
	}
	if st.Requests < on+off {
		t.Errorf("status says %d requests, /metrics before it %d", st.Requests, on+off)
	}
	var ready map[string]bool
	if code := p.getJSON(t, "/readyz", &ready); code != http.StatusOK || !ready["ready"] {
		t.Errorf("GET /readyz: %d %v", code, ready)
	}
}

func TestFailKnob(t *testing.T) {
	s := boot(t)
	s.createFlag(t)
	p := start(t, s, "--flag", flagKey, "--rate", "2000", "--seed", "2", "--base-error-rate", "0.005")
	p.scrapeUntil(t, "traffic", func(c counts) bool { return c["on"].Requests > 0 && c["off"].Requests > 0 })

	code, k, body := p.postKnob(t, `{"failRate":1}`)
	if code != http.StatusOK || k.FailVariant != "on" || k.FailRate != 1 || k.BaseErrorRate != 0.005 || k.Version != 2 {
		t.Fatalf("POST /knob: %d %s", code, body)
	}
	// Once a snapshot made with the new knob is out, every later request of "on" fails.
	p.statusUntil(t, "the knob applied", func(st status) bool { return st.KnobVersion >= k.Version })
	before := p.scrape(t)
	after := p.scrapeUntil(t, "500 more requests of each variant", func(c counts) bool {
		return c["on"].Requests >= before["on"].Requests+500 && c["off"].Requests >= before["off"].Requests+500
	})
	dOn := after["on"].Requests - before["on"].Requests
	if dErr := after["on"].Errors - before["on"].Errors; dErr != dOn {
		t.Errorf("fail rate 1: %d errors of %d requests of on", dErr, dOn)
	}
	dOff := after["off"].Requests - before["off"].Requests
	if dErr := after["off"].Errors - before["off"].Errors; dErr > errorBound(dOff, 0.005) {
		t.Errorf("control: %d errors of %d requests at a base rate of 0.5%%", dErr, dOff)
	}

	// Failing the other variant instead, at half the rate.
	code, k, body = p.postKnob(t, `{"failVariant":"off","failRate":0.5}`)
	if code != http.StatusOK || k.FailVariant != "off" || k.FailRate != 0.5 || k.Version != 3 {
		t.Fatalf("POST /knob: %d %s", code, body)
	}
	var got knobState
	if code := p.getJSON(t, "/knob", &got); code != http.StatusOK || got != k {
		t.Errorf("GET /knob: %d %+v, want %+v", code, got, k)
	}
	p.statusUntil(t, "the knob applied", func(st status) bool { return st.KnobVersion >= k.Version })
	before = p.scrape(t)
	after = p.scrapeUntil(t, "1000 more requests of each variant", func(c counts) bool {
		return c["on"].Requests >= before["on"].Requests+1000 && c["off"].Requests >= before["off"].Requests+1000
	})
	dOn = after["on"].Requests - before["on"].Requests
	if dErr := after["on"].Errors - before["on"].Errors; dErr > errorBound(dOn, 0.005) {
		t.Errorf("on, no longer failing: %d errors of %d requests", dErr, dOn)
	}
	dOff = after["off"].Requests - before["off"].Requests
	if dErr := after["off"].Errors - before["off"].Errors; dErr < dOff/3 || dErr > 2*dOff/3 {
		t.Errorf("off, failing half the time: %d errors of %d requests", dErr, dOff)
	}
}

func TestKnobRefusals(t *testing.T) {
	s := boot(t)
	s.createFlag(t)
	p := start(t, s, "--flag", flagKey, "--rate", "100", "--fail-rate", "0.25", "--latency", "0.2", "--slow-factor", "2")
	var want knobState
	if code := p.getJSON(t, "/knob", &want); code != http.StatusOK || want.FailRate != 0.25 || want.Latency != 0.2 || want.SlowFactor != 2 || want.Version != 1 {
		t.Fatalf("GET /knob: %d %+v", code, want)
	}
	for _, tc := range []struct {
		name, body string
		code       int
		says       string // in the error message: the field at fault
	}{
		{"not json", `failRate=1`, http.StatusBadRequest, ""},
		{"truncated", `{"failRate":0.`, http.StatusBadRequest, ""},
		{"empty", ``, http.StatusBadRequest, ""},
		{"empty object", `{}`, http.StatusBadRequest, "nothing to change"},
		{"null", `null`, http.StatusBadRequest, "nothing to change"},
		{"array", `[{"failRate":0.1}]`, http.StatusBadRequest, "object"},
		{"rate above 1", `{"failRate":1.5}`, http.StatusBadRequest, "failRate"},
		{"negative rate", `{"failRate":-0.1}`, http.StatusBadRequest, "failRate"},
		{"base rate above 1", `{"baseErrorRate":2}`, http.StatusBadRequest, "baseErrorRate"},
		{"huge number", `{"failRate":1e400}`, http.StatusBadRequest, "failRate"},
		{"rate as string", `{"failRate":"0.1"}`, http.StatusBadRequest, "failRate"},
		{"unknown field", `{"failRate":0.1,"rate":5}`, http.StatusBadRequest, `"rate"`},
		{"field in the wrong case", `{"Latency":0.1}`, http.StatusBadRequest, `"Latency"`},
		{"bad variant", `{"failVariant":"o n","failRate":0.1}`, http.StatusBadRequest, "failVariant"},
		{"empty variant", `{"failVariant":""}`, http.StatusBadRequest, "failVariant"},
		{"one good one bad", `{"failVariant":"off","failRate":7}`, http.StatusBadRequest, "failRate"},
		{"zero latency", `{"latency":0}`, http.StatusBadRequest, "latency"},
		{"negative latency", `{"latency":-1}`, http.StatusBadRequest, "latency"},
		{"latency above a minute", `{"latency":60.5}`, http.StatusBadRequest, "latency"},
		{"latency as string", `{"latency":"0.1"}`, http.StatusBadRequest, "latency"},
		{"huge latency", `{"latency":1e999}`, http.StatusBadRequest, "latency"},
		{"slow factor below 1", `{"slowFactor":0.5}`, http.StatusBadRequest, "slowFactor"},
		{"slow factor above 100", `{"slowFactor":101}`, http.StatusBadRequest, "slowFactor"},
		{"slow factor as bool", `{"slowFactor":true}`, http.StatusBadRequest, "slowFactor"},
		{"good latency, bad slow factor", `{"latency":0.1,"slowFactor":0}`, http.StatusBadRequest, "slowFactor"},
		{"two objects", `{"failRate":0.1}{"failRate":0.2}`, http.StatusBadRequest, ""},
		{"trailing garbage", `{"failRate":0.1} x`, http.StatusBadRequest, ""},
		{"too large", `{"failVariant":"` + strings.Repeat("a", 2000) + `"}`, http.StatusRequestEntityTooLarge, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, _, body := p.postKnob(t, tc.body)
			if code != tc.code {
				t.Errorf("POST /knob %s: %d %s, want %d", tc.body, code, body, tc.code)
			}
			var e map[string]string
			if err := json.Unmarshal([]byte(body), &e); err != nil || e["error"] == "" {
				t.Errorf("body %q is not a JSON error", body)
			} else if !strings.Contains(e["error"], tc.says) {
				t.Errorf("POST /knob %s: error %q does not name %s", tc.body, e["error"], tc.says)
			}
			var got knobState
			if p.getJSON(t, "/knob", &got); got != want {
				t.Errorf("knob changed to %+v by a refused request", got)
			}
		})
	}
	req, _ := http.NewRequest(http.MethodPut, p.base+"/knob", strings.NewReader(`{"failRate":0.1}`))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("PUT /knob: %d, want 405", resp.StatusCode)
	}
}

// deltaMean is the mean latency of the requests of variant between two scrapes.
func deltaMean(before, after counts, variant string) float64 {
	return (after[variant].LatencySum - before[variant].LatencySum) / float64(after[variant].Requests-before[variant].Requests)
}

func TestLatencyKnob(t *testing.T) {
	s := boot(t)
	s.createFlag(t)
	p := start(t, s, "--flag", flagKey, "--rate", "4000", "--seed", "4", "--latency", "0.02")
	p.scrapeUntil(t, "traffic", func(c counts) bool { return c["on"].Requests > 0 && c["off"].Requests > 0 })

	// The status shows each variant's mean latency.
	var st struct {
		Variants map[string]struct {
			Requests    uint64   `json:"requests"`
			MeanLatency *float64 `json:"meanLatencySeconds"`
		} `json:"variants"`
	}
	if code := p.getJSON(t, "/", &st); code != http.StatusOK {
		t.Fatalf("GET /: %d", code)
	}
	for _, v := range []string{"on", "off"} {
		if c := st.Variants[v]; c.Requests == 0 || c.MeanLatency == nil || *c.MeanLatency <= 0 || *c.MeanLatency > 1 {
			t.Errorf("status of %s: %d requests, mean latency %v", v, c.Requests, c.MeanLatency)
		}
	}

	// Both variants alike, then on three times slower, then off instead.
	logNormalMean := 0.02 * math.Exp(0.125)
	for _, step := range []struct {
		body           string
		slow           string
		factor         float64
		lowest, higest float64 // of the ratio of the slow variant's mean latency to the other's
	}{
		{`{"baseErrorRate":0}`, "on", 1, 0.8, 1.25},
		{`{"slowFactor":3}`, "on", 3, 2, 4},
		{`{"failVariant":"off","slowFactor":10}`, "off", 10, 6, 15},
	} {
		code, k, body := p.postKnob(t, step.body)
		if code != http.StatusOK || k.Latency != 0.02 || k.SlowFactor != step.factor || k.FailVariant != step.slow {
			t.Fatalf("POST /knob %s: %d %s", step.body, code, body)
		}
		var got knobState
		if code := p.getJSON(t, "/knob", &got); code != http.StatusOK || got != k {
			t.Errorf("GET /knob: %d %+v, want %+v", code, got, k)
		}
		p.statusUntil(t, "the knob applied", func(st status) bool { return st.KnobVersion >= k.Version })
		before := p.scrape(t)
		after := p.scrapeUntil(t, "2000 more requests of each variant", func(c counts) bool {
			return c["on"].Requests >= before["on"].Requests+2000 && c["off"].Requests >= before["off"].Requests+2000
		})
		other := "off"
		if step.slow == "off" {
			other = "on"
		}
		slow, normal := deltaMean(before, after, step.slow), deltaMean(before, after, other)
		if r := slow / normal; r < step.lowest || r > step.higest {
			t.Errorf("%s: mean latency %s %v, %s %v: ratio %.2f, want between %v and %v", step.body, step.slow, slow, other, normal, r, step.lowest, step.higest)
		}
		if math.Abs(normal-logNormalMean) > logNormalMean/4 {
			t.Errorf("%s: mean latency of %s %v, want about %v", step.body, other, normal, logNormalMean)
		}
	}
}

func TestKillServesOff(t *testing.T) {
	s := boot(t)
	s.createFlag(t)
	p := start(t, s, "--flag", flagKey, "--rate", "2000", "--seed", "3", "--fail-rate", "1")
	p.scrapeUntil(t, "both variants served", func(c counts) bool { return c["on"].Requests >= 100 && c["off"].Requests >= 100 })

	killed, err := flagOf(s.cmds.Handle(context.Background(), command.KillFlag{Meta: meta, Env: env, Key: flagKey}))
	if err != nil {
		t.Fatal(err)
	}
	// Once a request has been served the killed version, no later one is served "on".
	p.statusUntil(t, "a request served the killed flag", func(st status) bool {
		return st.Last != nil && st.Last.FlagVersion >= killed.Version
	})
	before := p.scrape(t)
	after := p.scrapeUntil(t, "1000 more requests", func(c counts) bool {
		return c["off"].Requests >= before["off"].Requests+1000
	})
	if after["on"] != before["on"] {
		t.Errorf("killed flag still serves on: %+v then %+v", before["on"], after["on"])
	}
	st := p.status(t)
	if st.Last.Variant != "off" || st.Last.Reason != "DISABLED" {
		t.Errorf("last request after the kill: %+v", st.Last)
	}
	if !strings.Contains(p.stderr.String(), `msg="flag changed" component=demo flag=checkout-v2 version=2 enabled=false`) {
		t.Errorf("no log of the kill:\n%s", p.stderr)
	}
}

func TestFlagCreatedLater(t *testing.T) {
	s := boot(t)
	p := start(t, s, "--flag", flagKey, "--rate", "1000", "--base-error-rate", "0")
	c := p.scrapeUntil(t, "failed evaluations counted", func(c counts) bool { return c[variantError].Requests >= 100 })
	if len(c) != 1 || c[variantError].Errors != 0 {
		t.Errorf("before the flag exists: %v, want only variant=error without errors", c)
	}
	if st := p.status(t); st.Last == nil || st.Last.ErrorCode != "FLAG_NOT_FOUND" {
		t.Errorf("status last %+v", st.Last)
	}
	s.createFlag(t)
	p.scrapeUntil(t, "both variants served", func(c counts) bool { return c["on"].Requests > 0 && c["off"].Requests > 0 })
}

func TestReportLines(t *testing.T) {
	s := boot(t)
	s.createFlag(t)
	p := start(t, s, "--flag", flagKey, "--rate", "1000", "--report", "10ms")
	re := regexp.MustCompile(`(?m)^requests=[1-9]\d* off=\d+ \(\d+ errors, \d+\.\d\d%\) on=\d+ \(\d+ errors, \d+\.\d\d%\)$`)
	await.Eventually(t, within, func() bool { return re.MatchString(p.stdout.String()) }, "a report line with both variants; stdout:\n%s", p.stdout)
}

func TestStopsWhenContextEnds(t *testing.T) {
	s := boot(t)
	s.createFlag(t)
	p := start(t, s, "--flag", flagKey, "--rate", "2000")
	p.scrapeUntil(t, "traffic", func(c counts) bool { return c["on"].Requests > 0 })
	if code := p.stop(); code != 0 {
		t.Fatalf("run returned %d, want 0; stderr:\n%s", code, p.stderr)
	}
	if _, err := http.Get(p.base + "/metrics"); err == nil {
		t.Errorf("still serving HTTP after it stopped")
	}
	if !strings.Contains(p.stderr.String(), "msg=stopped") {
		t.Errorf("no stop log:\n%s", p.stderr)
	}
}

func TestUsage(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
		code int
		want string
	}{
		{"help", []string{"-h"}, 0, "--fail-rate"},
		{"no flag", nil, 2, "flag: required"},
		{"bad flag key", []string{"--flag", "a b"}, 2, "flag:"},
		{"bad env", []string{"--flag", "f", "--env", "Prod"}, 2, "env:"},
		{"zero rate", []string{"--flag", "f", "--rate", "0"}, 2, "rate:"},
		{"no users", []string{"--flag", "f", "--users", "0"}, 2, "users:"},
		{"fail rate", []string{"--flag", "f", "--fail-rate", "1.5"}, 2, "failRate"},
		{"base rate", []string{"--flag", "f", "--base-error-rate", "-1"}, 2, "baseErrorRate"},
		{"fail variant", []string{"--flag", "f", "--fail-variant", ""}, 2, "failVariant"},
		{"zero latency", []string{"--flag", "f", "--latency", "0"}, 2, "latency: 0 seconds is not above 0"},
		{"negative latency", []string{"--flag", "f", "--latency", "-0.1"}, 2, "latency:"},
		{"latency above a minute", []string{"--flag", "f", "--latency", "61"}, 2, "latency:"},
		{"latency NaN", []string{"--flag", "f", "--latency", "NaN"}, 2, "latency:"},
		{"latency Inf", []string{"--flag", "f", "--latency", "+Inf"}, 2, "latency:"},
		{"latency not a number", []string{"--flag", "f", "--latency", "50ms"}, 2, `invalid value "50ms" for flag -latency`},
		{"slow factor below 1", []string{"--flag", "f", "--slow-factor", "0.9"}, 2, "slowFactor: 0.9 is not between 1 and 100"},
		{"slow factor above 100", []string{"--flag", "f", "--slow-factor", "1000"}, 2, "slowFactor:"},
		{"slow factor NaN", []string{"--flag", "f", "--slow-factor", "nan"}, 2, "slowFactor:"},
		{"slow factor Inf", []string{"--flag", "f", "--slow-factor", "Inf"}, 2, "slowFactor:"},
		{"slow factor not a number", []string{"--flag", "f", "--slow-factor", "x3"}, 2, `invalid value "x3" for flag -slow-factor`},
		{"help names the histogram", []string{"-h"}, 0, "request_duration_seconds"},
		{"help has the latency", []string{"-h"}, 0, "-latency float"},
		{"help has the slow factor", []string{"-h"}, 0, "-slow-factor float"},
		{"several", []string{"--rate", "-1", "--users", "-1"}, 2, "users:"},
		{"arguments", []string{"--flag", "f", "extra"}, 2, "unexpected arguments"},
		{"unknown flag", []string{"--nope"}, 2, "not defined"},
		{"unreachable nats", []string{"--flag", "f", "--nats-url", "nats://127.0.0.1:1"}, 1, "connect to nats"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			code := run(context.Background(), tc.args, &stdout, &stderr)
			if code != tc.code || !strings.Contains(stderr.String(), tc.want) {
				t.Errorf("run %q: %d, stderr:\n%s\nwant %d and %q", tc.args, code, stderr.String(), tc.code, tc.want)
			}
		})
	}
}

func TestListenFailure(t *testing.T) {
	s := boot(t)
	p := start(t, s, "--flag", flagKey)
	addr := strings.TrimPrefix(p.base, "http://")
	var stderr await.Output
	code := run(context.Background(), []string{"--nats-url", s.url, "--flag", flagKey, "--listen", addr}, io.Discard, &stderr)
	if code != 1 || !strings.Contains(stderr.String(), "listen:") {
		t.Errorf("second demo on %s: %d, stderr:\n%s", addr, code, stderr.String())
	}
}

// String makes failure messages readable.
func (c *counts) String() string {
	var b strings.Builder
	for v, t := range *c {
		fmt.Fprintf(&b, "%s=%d/%d ", v, t.Requests, t.Errors)
	}
	return b.String()
}

// flagOf takes the flag out of what the command service's Handle returns.
func flagOf(r command.Result, err error) (projections.Flag, error) { return r.Flag, err }
