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
	"github.com/interlock-dev/interlock/internal/command"
	"github.com/interlock-dev/interlock/internal/natstest"
)

// within bounds every asynchronous check.
const within = 20 * time.Second

const (
	env     = "production"
	flagKey = "checkout-v2"
)

var meta = command.Meta{Actor: "test", Reason: "testing the demo"}

// syncBuffer is a log sink safe for the demo's goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// system is the Interlock side, in process: a JetStream server over TCP and the command
// service that appends to its event stream.
type system struct {
	url  string
	cmds *command.Service
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
	_, err := s.cmds.Create(context.Background(), meta, env, flagKey, events.FlagConfig{
		Kind:           events.KindRelease,
		Variants:       map[string]json.RawMessage{"on": json.RawMessage("true"), "off": json.RawMessage("false")},
		DefaultVariant: "off",
		OffVariant:     "off",
		Enabled:        true,
		DefaultServe:   &events.Serve{Split: map[string]int{"on": 50, "off": 50}},
	})
	if err != nil {
		t.Fatalf("create flag: %v", err)
	}
}

// demoProc is one run of the program.
type demoProc struct {
	base   string // http://127.0.0.1:port
	stdout *syncBuffer
	stderr *syncBuffer
	stop   func() int // cancels the run and returns its exit code
}

var listening = regexp.MustCompile(`msg=listening addr=(\S+)`)

// start runs the program against s on 127.0.0.1:0 with args added, and waits until it listens.
// The run is stopped when the test ends; it must return 0 then.
func start(t *testing.T, s *system, args ...string) *demoProc {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	p := &demoProc{stdout: &syncBuffer{}, stderr: &syncBuffer{}}
	code := make(chan int, 1)
	all := append([]string{"--nats-url", s.url, "--listen", "127.0.0.1:0", "--env", env, "--report", "0"}, args...)
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
	natstest.Eventually(t, within, func() bool {
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

// countsOf checks the two counter families and returns their values by variant.
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
	return out
}

// scrapeUntil scrapes until cond holds for the counts, and returns them.
func (p *demoProc) scrapeUntil(t *testing.T, what string, cond func(counts) bool) counts {
	t.Helper()
	var c counts
	natstest.Eventually(t, within, func() bool {
		c = p.scrape(t)
		return cond(c)
	}, "%s; last scrape %v", what, &c)
	return c
}

// statusUntil polls GET / until cond holds, and returns the status.
func (p *demoProc) statusUntil(t *testing.T, what string, cond func(status) bool) status {
	t.Helper()
	var st status
	natstest.Eventually(t, within, func() bool {
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
	fams := map[string]*dto.MetricFamily{}
	dec := expfmt.NewDecoder(resp.Body, format)
	for {
		var mf dto.MetricFamily
		if err := dec.Decode(&mf); err == io.EOF {
			break
		} else if err != nil {
			t.Fatalf("decode protobuf: %v", err)
		}
		fams[mf.GetName()] = &mf
	}
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
	p := start(t, s, "--flag", flagKey, "--rate", "100", "--fail-rate", "0.25")
	var want knobState
	if code := p.getJSON(t, "/knob", &want); code != http.StatusOK || want.FailRate != 0.25 || want.Version != 1 {
		t.Fatalf("GET /knob: %d %+v", code, want)
	}
	for _, tc := range []struct {
		name, body string
		code       int
	}{
		{"not json", `failRate=1`, http.StatusBadRequest},
		{"truncated", `{"failRate":0.`, http.StatusBadRequest},
		{"empty", ``, http.StatusBadRequest},
		{"empty object", `{}`, http.StatusBadRequest},
		{"null", `null`, http.StatusBadRequest},
		{"array", `[{"failRate":0.1}]`, http.StatusBadRequest},
		{"rate above 1", `{"failRate":1.5}`, http.StatusBadRequest},
		{"negative rate", `{"failRate":-0.1}`, http.StatusBadRequest},
		{"base rate above 1", `{"baseErrorRate":2}`, http.StatusBadRequest},
		{"huge number", `{"failRate":1e400}`, http.StatusBadRequest},
		{"rate as string", `{"failRate":"0.1"}`, http.StatusBadRequest},
		{"unknown field", `{"failRate":0.1,"rate":5}`, http.StatusBadRequest},
		{"bad variant", `{"failVariant":"o n","failRate":0.1}`, http.StatusBadRequest},
		{"empty variant", `{"failVariant":""}`, http.StatusBadRequest},
		{"one good one bad", `{"failVariant":"off","failRate":7}`, http.StatusBadRequest},
		{"two objects", `{"failRate":0.1}{"failRate":0.2}`, http.StatusBadRequest},
		{"trailing garbage", `{"failRate":0.1} x`, http.StatusBadRequest},
		{"too large", `{"failVariant":"` + strings.Repeat("a", 2000) + `"}`, http.StatusRequestEntityTooLarge},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, _, body := p.postKnob(t, tc.body)
			if code != tc.code {
				t.Errorf("POST /knob %s: %d %s, want %d", tc.body, code, body, tc.code)
			}
			var e map[string]string
			if err := json.Unmarshal([]byte(body), &e); err != nil || e["error"] == "" {
				t.Errorf("body %q is not a JSON error", body)
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

func TestKillServesOff(t *testing.T) {
	s := boot(t)
	s.createFlag(t)
	p := start(t, s, "--flag", flagKey, "--rate", "2000", "--seed", "3", "--fail-rate", "1")
	p.scrapeUntil(t, "both variants served", func(c counts) bool { return c["on"].Requests >= 100 && c["off"].Requests >= 100 })

	killed, err := s.cmds.Kill(context.Background(), meta, env, flagKey)
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
	natstest.Eventually(t, within, func() bool { return re.MatchString(p.stdout.String()) }, "a report line with both variants; stdout:\n%s", p.stdout)
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
	var stderr syncBuffer
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
