package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"math"
	"math/rand/v2"
	"net/http"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	dto "github.com/prometheus/client_model/go"

	"github.com/interlock-dev/interlock/events"
	"github.com/interlock-dev/interlock/targeting"
)

// variantError is the variant label of requests whose evaluation failed (the flag does not exist,
// or the client is not ready): they are counted under it and not failed for that reason.
const variantError = "error"

// Limits on the configuration and the knob.
const (
	maxRate     = 100_000
	maxUsers    = 1 << 31
	maxVariants = 256 // distinct variant labels; more are counted under variantOther
	// variantOther takes the requests of variants beyond maxVariants, so that a flag whose
	// variants keep being renamed cannot grow the exposition without bound.
	variantOther      = "other"
	maxVariantNameLen = 64
	maxKnobBody       = 1 << 10
	// maxLatency and maxSlowFactor bound the knob's latency (seconds) and slow factor.
	maxLatency    = 60
	maxSlowFactor = 100
	// minTick and maxTick bound the load loop's ticker: at high rates a tick issues several
	// requests; at rates below one per second the loop still looks at the clock every second.
	minTick = 5 * time.Millisecond
	maxTick = time.Second
)

// The simulated latency: a request's latency is log-normal, its median the knob's Latency and
// the standard deviation of its logarithm latencyLogSD.
const (
	defaultLatency    = 0.05
	defaultSlowFactor = 1
	latencyLogSD      = 0.5
)

// latencyBounds are the upper bounds (le) of the finite buckets of request_duration_seconds, in
// seconds, ascending; the +Inf bucket follows them.
var latencyBounds = [...]float64{0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10}

var (
	// errBadKnob marks a knob change that is refused: malformed JSON, an unknown field, a value
	// of the wrong type, a rate outside [0, 1], a latency or slow factor out of range, a bad
	// variant name, or nothing to change.
	errBadKnob = errors.New("bad knob")
	// errBodyTooLarge marks a request body over maxKnobBody.
	errBodyTooLarge = errors.New("request body too large")
)

// evaluator evaluates one flag for one context; *local.Client satisfies it.
type evaluator interface {
	Evaluate(key string, ectx *targeting.EvalContext) targeting.Evaluation
}

// syncState is what the status page says about the flag client; *local.Client satisfies it.
type syncState interface {
	Ready() bool
	Stale() bool
	Sequence() uint64
}

// knob is the failure injection: every request fails with probability BaseErrorRate, and those
// served FailVariant with probability FailRate on top (1-(1-base)(1-fail) in all). Every request
// also takes a simulated latency, log-normal with median Latency seconds, SlowFactor times that
// for those served FailVariant.
type knob struct {
	FailVariant   string  `json:"failVariant"`
	FailRate      float64 `json:"failRate"`
	BaseErrorRate float64 `json:"baseErrorRate"`
	// Latency is the median simulated latency of a request, in seconds: in (0, maxLatency].
	Latency float64 `json:"latency"`
	// SlowFactor multiplies the latency of the requests served FailVariant: in [1, maxSlowFactor].
	SlowFactor float64 `json:"slowFactor"`
}

// validate reports every problem with k, joined; each wraps errBadKnob.
func (k knob) validate() error {
	var errs []error
	if err := validateVariantName(k.FailVariant); err != nil {
		errs = append(errs, fmt.Errorf("%w: failVariant: %w", errBadKnob, err))
	}
	if err := validateRate(k.FailRate); err != nil {
		errs = append(errs, fmt.Errorf("%w: failRate: %w", errBadKnob, err))
	}
	if err := validateRate(k.BaseErrorRate); err != nil {
		errs = append(errs, fmt.Errorf("%w: baseErrorRate: %w", errBadKnob, err))
	}
	if l := k.Latency; math.IsNaN(l) || l <= 0 || l > maxLatency {
		errs = append(errs, fmt.Errorf("%w: latency: %v seconds is not above 0 and at most %d", errBadKnob, l, maxLatency))
	}
	if f := k.SlowFactor; math.IsNaN(f) || f < 1 || f > maxSlowFactor {
		errs = append(errs, fmt.Errorf("%w: slowFactor: %v is not between 1 and %d", errBadKnob, f, maxSlowFactor))
	}
	return errors.Join(errs...)
}

// failProbability is the chance that a request served variant fails.
func (k *knob) failProbability(variant string) float64 {
	if variant == k.FailVariant {
		return 1 - (1-k.BaseErrorRate)*(1-k.FailRate)
	}
	return k.BaseErrorRate
}

// latency draws the simulated latency of a request served variant from rng, in seconds.
func (k *knob) latency(rng *rand.Rand, variant string) float64 {
	l := k.Latency * math.Exp(latencyLogSD*rng.NormFloat64())
	if variant == k.FailVariant {
		l *= k.SlowFactor
	}
	return l
}

func validateRate(r float64) error {
	if math.IsNaN(r) || r < 0 || r > 1 {
		return fmt.Errorf("%v is not between 0 and 1", r)
	}
	return nil
}

// validateVariantName applies the rule of flag variant names: 1-64 letters, digits, '-', '_'
// and '.'.
func validateVariantName(name string) error {
	if name == "" || len(name) > maxVariantNameLen {
		return fmt.Errorf("variant names are 1-%d characters", maxVariantNameLen)
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.') {
			return fmt.Errorf("%q: letters, digits, '-', '_' and '.' only", name)
		}
	}
	return nil
}

// knobPatch is the body of POST /knob: a field that is absent (or null) keeps its value.
type knobPatch struct {
	FailVariant   *string  `json:"failVariant"`
	FailRate      *float64 `json:"failRate"`
	BaseErrorRate *float64 `json:"baseErrorRate"`
	Latency       *float64 `json:"latency"`
	SlowFactor    *float64 `json:"slowFactor"`
}

// knobFields are the names of the knob's fields in JSON, as knobPatch spells them.
var knobFields = []string{"failVariant", "failRate", "baseErrorRate", "latency", "slowFactor"}

// decodeKnobPatch decodes one JSON object with at least one of the knob's fields and nothing
// else; field names are case-sensitive. Errors wrap errBadKnob; one about a field names it.
func decodeKnobPatch(body []byte) (knobPatch, error) {
	// encoding/json matches names without regard to case: the keys are checked first, when
	// the body is an object at all (if not, decoding it below says why).
	var keys map[string]json.RawMessage
	if json.Unmarshal(body, &keys) == nil {
		var unknown []string
		for _, k := range slices.Sorted(maps.Keys(keys)) {
			if !slices.Contains(knobFields, k) {
				unknown = append(unknown, strconv.Quote(k))
			}
		}
		if len(unknown) > 0 {
			what := "unknown field"
			if len(unknown) > 1 {
				what += "s"
			}
			return knobPatch{}, fmt.Errorf("%w: %s %s: the knob's fields are %s (case-sensitive)",
				errBadKnob, what, strings.Join(unknown, ", "), strings.Join(knobFields, ", "))
		}
	}
	var p knobPatch
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&p); err != nil {
		if te, ok := errors.AsType[*json.UnmarshalTypeError](err); ok {
			return knobPatch{}, typeError(te)
		}
		return knobPatch{}, fmt.Errorf("%w: %w", errBadKnob, err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return knobPatch{}, fmt.Errorf("%w: one JSON object expected, found more after it", errBadKnob)
	}
	if p == (knobPatch{}) {
		return knobPatch{}, fmt.Errorf("%w: nothing to change: give any of %s", errBadKnob, strings.Join(knobFields, ", "))
	}
	return p, nil
}

// typeError says which field of a knob patch holds a value of the wrong type (or a number too
// large for it) and what the field takes. It wraps errBadKnob.
func typeError(te *json.UnmarshalTypeError) error {
	if te.Field == "" {
		return fmt.Errorf("%w: a JSON object expected, not %s", errBadKnob, te.Value)
	}
	want := "a number"
	if te.Type != nil && te.Type.Kind() == reflect.String {
		want = "a string"
	}
	if n, ok := strings.CutPrefix(te.Value, "number "); ok && want == "a number" {
		return fmt.Errorf("%w: %s: %s is out of range", errBadKnob, te.Field, n)
	}
	return fmt.Errorf("%w: %s: %s expected, not %s", errBadKnob, te.Field, want, te.Value)
}

// apply returns k changed by p, validated. Errors wrap errBadKnob.
func (k knob) apply(p knobPatch) (knob, error) {
	if p.FailVariant != nil {
		k.FailVariant = *p.FailVariant
	}
	if p.FailRate != nil {
		k.FailRate = *p.FailRate
	}
	if p.BaseErrorRate != nil {
		k.BaseErrorRate = *p.BaseErrorRate
	}
	if p.Latency != nil {
		k.Latency = *p.Latency
	}
	if p.SlowFactor != nil {
		k.SlowFactor = *p.SlowFactor
	}
	if err := k.validate(); err != nil {
		return knob{}, err
	}
	return k, nil
}

// knobState is a knob and its version, which goes up by one with every change.
type knobState struct {
	knob
	Version uint64 `json:"version"`
}

// tally counts one variant's requests and the errors among them, and sums up their simulated
// latencies. It is comparable, so that tests can compare tallies with ==.
type tally struct {
	Requests uint64 `json:"requests"`
	Errors   uint64 `json:"errors"`
	// LatencySum is the requests' simulated latencies added up, in seconds.
	LatencySum float64 `json:"latencySumSeconds"`
	// buckets[i] counts the requests whose latency is at most latencyBounds[i] and above the
	// bound before it; those above the last bound are Requests minus all of these.
	buckets [len(latencyBounds)]uint64
}

// observe adds a request's latency to the histogram (the caller counts the request).
func (t *tally) observe(latency float64) {
	t.LatencySum += latency
	if i, _ := slices.BinarySearch(latencyBounds[:], latency); i < len(latencyBounds) {
		t.buckets[i]++
	}
}

// meanLatency is the requests' mean latency in seconds, 0 before the first request.
func (t tally) meanLatency() float64 {
	if t.Requests == 0 {
		return 0
	}
	return t.LatencySum / float64(t.Requests)
}

// MarshalJSON adds the mean latency (meanLatencySeconds, absent before the first request) to the
// tally's fields.
func (t tally) MarshalJSON() ([]byte, error) {
	type plain tally
	var mean *float64
	if t.Requests > 0 {
		m := t.meanLatency()
		mean = &m
	}
	return json.Marshal(struct {
		plain
		MeanLatency *float64 `json:"meanLatencySeconds,omitempty"`
	}{plain(t), mean})
}

// served is what the last request was served.
type served struct {
	Variant     string `json:"variant"`
	Reason      string `json:"reason"`
	ErrorCode   string `json:"errorCode,omitempty"`
	FlagVersion uint64 `json:"flagVersion"`
	User        string `json:"user"`
}

// snapshot is the load loop's counters as of the end of one tick. It is immutable once
// published: every reader sees requests, errors and latencies of the same instant (so a
// histogram's count is always its variant's requests), never more errors than requests, and
// counts made with one knob version (the loop reads the knob once per tick).
type snapshot struct {
	Requests    uint64           `json:"requests"`
	Variants    map[string]tally `json:"variants"`
	Last        *served          `json:"last,omitempty"`
	KnobVersion uint64           `json:"appliedKnobVersion"`
}

// demoConfig is everything the demo does, from the command line.
type demoConfig struct {
	NATSURL string
	// Token is an Interlock token (a reader's is enough), for Interlock's embedded NATS server.
	Token string
	// Creds is a NATS credentials file, and Inbox the reply prefix its user may receive on, for
	// an operator's NATS cluster.
	Creds       string
	Inbox       string
	Environment string
	Flag        string
	Listen      string
	// Rate is requests per second; Users the number of distinct targeting keys.
	Rate  float64
	Users int
	Knob  knob
	// Seed seeds the random choices (user, failure); 0 picks one at random.
	Seed uint64
	// Report is how often a summary line goes to standard output; 0 for never.
	Report time.Duration
}

// Validate reports every problem with the configuration, joined.
func (c demoConfig) Validate() error {
	var errs []error
	if err := events.ValidateEnvironment(c.Environment); err != nil {
		errs = append(errs, fmt.Errorf("env: %w", err))
	}
	if c.Flag == "" {
		errs = append(errs, errors.New("flag: required (the key of the flag to evaluate, like checkout-v2)"))
	} else if err := events.ValidateFlagKey(c.Flag); err != nil {
		errs = append(errs, fmt.Errorf("flag: %w", err))
	}
	if c.Listen == "" {
		errs = append(errs, errors.New("listen: required"))
	}
	if math.IsNaN(c.Rate) || c.Rate <= 0 || c.Rate > maxRate {
		errs = append(errs, fmt.Errorf("rate: %v is not above 0 and at most %d", c.Rate, maxRate))
	}
	if c.Users < 1 || c.Users > maxUsers {
		errs = append(errs, fmt.Errorf("users: %d is not between 1 and %d", c.Users, maxUsers))
	}
	if err := c.Knob.validate(); err != nil {
		errs = append(errs, err)
	}
	if c.Report < 0 {
		errs = append(errs, fmt.Errorf("report: %v is negative", c.Report))
	}
	return errors.Join(errs...)
}

// demo is the service: a load loop evaluating one flag per request, and the HTTP side that
// exposes its counters and takes knob changes. Only the load loop counts; HTTP handlers read the
// last published snapshot and never block it.
type demo struct {
	cfg    demoConfig
	flags  evaluator
	state  syncState
	logger *slog.Logger

	knobMu sync.Mutex // serialises knob changes; readers load the pointer
	knob   atomic.Pointer[knobState]

	// declared are the variants of the flag as last seen by observe; the loop makes a zero
	// tally for each, so that every variant's series exists before its first request.
	declared atomic.Pointer[[]string]

	snap    atomic.Pointer[snapshot]
	running atomic.Bool // the load loop has started
}

func newDemo(cfg demoConfig, flags evaluator, state syncState, logger *slog.Logger) *demo {
	d := &demo{cfg: cfg, flags: flags, state: state, logger: logger}
	d.knob.Store(&knobState{knob: cfg.Knob, Version: 1})
	d.snap.Store(&snapshot{Variants: map[string]tally{}, KnobVersion: 1})
	return d
}

// declare records the flag's variants (nil when the flag does not exist).
func (d *demo) declare(variants []string) {
	v := slices.Sorted(slices.Values(variants))
	d.declared.Store(&v)
}

// setKnob applies p to the knob and returns the new state. Errors wrap errBadKnob; the knob is
// then unchanged.
func (d *demo) setKnob(p knobPatch) (knobState, error) {
	d.knobMu.Lock()
	defer d.knobMu.Unlock()
	cur := d.knob.Load()
	k, err := cur.knob.apply(p)
	if err != nil {
		return knobState{}, err
	}
	next := &knobState{knob: k, Version: cur.Version + 1}
	d.knob.Store(next)
	return *next, nil
}

// runLoad issues cfg.Rate requests per second, evenly spaced on a ticker (several per tick at
// high rates), until ctx ends; it returns nil then. After a pause (the process was stopped) it
// makes up for at most one second of missed requests.
func (d *demo) runLoad(ctx context.Context) error {
	seed := d.cfg.Seed
	if seed == 0 {
		seed = rand.Uint64()
	}
	rng := newRand(seed)
	d.running.Store(true)
	d.logger.Info("load started", "rate", d.cfg.Rate, "users", d.cfg.Users, "seed", seed)

	tick := time.Duration(float64(time.Second) / d.cfg.Rate)
	tick = min(max(tick, minTick), maxTick)
	t := time.NewTicker(tick)
	defer t.Stop()

	counts := make(map[string]*tally)
	var declared *[]string
	start := time.Now()
	var done, total uint64
	burst := uint64(math.Max(1, d.cfg.Rate))
	prev := d.snap.Load()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		// Requests due by now: elapsed × rate, with a little slack for the rounding of
		// durations that are exact multiples of the interval.
		due := uint64(time.Since(start).Seconds()*d.cfg.Rate + 1e-6)
		if due-done > burst {
			done = due - burst
		}
		changed := false
		if p := d.declared.Load(); p != declared {
			declared = p
			for _, v := range *p {
				if counts[v] == nil && len(counts) < maxVariants {
					counts[v] = &tally{}
					changed = true
				}
			}
		}
		k := d.knob.Load()
		n := due - done
		var last served
		for ; done < due; done++ {
			last = d.request(rng, &k.knob, counts)
		}
		total += n
		if n == 0 && !changed && k.Version == prev.KnobVersion {
			continue
		}
		s := &snapshot{Requests: total, Variants: make(map[string]tally, len(counts)), Last: prev.Last, KnobVersion: k.Version}
		for v, c := range counts {
			s.Variants[v] = *c
		}
		if n > 0 {
			s.Last = &last
		}
		d.snap.Store(s)
		prev = s
	}
}

// newRand is the load loop's source of users, failures and latencies: the same seed, the same
// sequence.
func newRand(seed uint64) *rand.Rand { return rand.New(rand.NewPCG(seed, 0x1e7e_10c4)) }

// request is one request of the load loop: a random user, the flag evaluated for it, and a
// failure and a latency drawn from the knob. It returns what was served.
func (d *demo) request(rng *rand.Rand, k *knob, counts map[string]*tally) served {
	user := "user-" + strconv.Itoa(rng.IntN(d.cfg.Users))
	ev := d.flags.Evaluate(d.cfg.Flag, &targeting.EvalContext{TargetingKey: user})
	variant := variantError
	if ev.Variant != nil {
		variant = ev.Variant.Name
	}
	c := counts[variant]
	if c == nil {
		if len(counts) >= maxVariants {
			variant = variantOther
		}
		if c = counts[variant]; c == nil {
			c = &tally{}
			counts[variant] = c
		}
	}
	c.Requests++
	if rng.Float64() < k.failProbability(variant) {
		c.Errors++
	}
	c.observe(k.latency(rng, variant))
	return served{Variant: variant, Reason: string(ev.Reason), ErrorCode: string(ev.ErrorCode), FlagVersion: ev.Version, User: user}
}

// handler routes the demo's HTTP endpoints.
func (d *demo) handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", d.handleStatus)
	mux.Handle("GET /metrics", d.metricsHandler())
	mux.HandleFunc("GET /readyz", d.handleReady)
	mux.HandleFunc("GET /knob", d.handleGetKnob)
	mux.HandleFunc("POST /knob", d.handleSetKnob)
	return mux
}

// status is the body of GET /.
type status struct {
	Flag        string    `json:"flag"`
	Environment string    `json:"environment"`
	Rate        float64   `json:"rate"`
	Users       int       `json:"users"`
	Running     bool      `json:"running"`
	Knob        knobState `json:"knob"`
	snapshot
	Local localStatus `json:"local"`
}

// localStatus is the flag client's state.
type localStatus struct {
	Ready    bool   `json:"ready"`
	Stale    bool   `json:"stale"`
	Sequence uint64 `json:"sequence"`
}

func (d *demo) handleStatus(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, status{
		Flag:        d.cfg.Flag,
		Environment: d.cfg.Environment,
		Rate:        d.cfg.Rate,
		Users:       d.cfg.Users,
		Running:     d.running.Load(),
		Knob:        *d.knob.Load(),
		snapshot:    *d.snap.Load(),
		Local:       localStatus{Ready: d.state.Ready(), Stale: d.state.Stale(), Sequence: d.state.Sequence()},
	})
}

// handleReady answers 200 once the flag client is ready and the load loop runs, 503 before.
func (d *demo) handleReady(w http.ResponseWriter, _ *http.Request) {
	ready := d.state.Ready() && d.running.Load()
	code := http.StatusOK
	if !ready {
		code = http.StatusServiceUnavailable
	}
	writeJSON(w, code, map[string]bool{"ready": ready})
}

func (d *demo) handleGetKnob(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, d.knob.Load())
}

func (d *demo) handleSetKnob(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxKnobBody))
	if err != nil {
		if _, ok := errors.AsType[*http.MaxBytesError](err); ok {
			err = fmt.Errorf("%w: over %d bytes", errBodyTooLarge, maxKnobBody)
		}
		d.writeError(w, err)
		return
	}
	p, err := decodeKnobPatch(body)
	if err != nil {
		d.writeError(w, err)
		return
	}
	k, err := d.setKnob(p)
	if err != nil {
		d.writeError(w, err)
		return
	}
	d.logger.Info("knob changed", "fail_variant", k.FailVariant, "fail_rate", k.FailRate, "base_error_rate", k.BaseErrorRate,
		"latency", k.Latency, "slow_factor", k.SlowFactor, "version", k.Version)
	writeJSON(w, http.StatusOK, k)
}

// The demo's metrics: counters requests_total and errors_total and the histogram
// request_duration_seconds, by flag and variant.
var (
	descRequests = prometheus.NewDesc("requests_total",
		"Requests served, by flag and the variant the flag evaluated to (\"error\" when the evaluation failed).",
		[]string{"flag", "variant"}, nil)
	descErrors = prometheus.NewDesc("errors_total",
		"Requests that failed, by flag and the variant they were served.", []string{"flag", "variant"}, nil)
	descLatency = prometheus.NewDesc("request_duration_seconds",
		"Simulated latency of the requests, by flag and the variant they were served.", []string{"flag", "variant"}, nil)
)

// collector exposes one snapshot of the load loop's counters at each scrape, so that every
// series of a scrape comes from the same instant: a histogram's count is always its variant's
// requests_total, and errors never outnumber requests.
type collector struct {
	flag string
	snap func() *snapshot
}

func (c collector) Describe(ch chan<- *prometheus.Desc) {
	ch <- descRequests
	ch <- descErrors
	ch <- descLatency
}

func (c collector) Collect(ch chan<- prometheus.Metric) {
	s := c.snap()
	for _, v := range slices.Sorted(maps.Keys(s.Variants)) {
		t := s.Variants[v]
		ch <- prometheus.MustNewConstMetric(descRequests, prometheus.CounterValue, float64(t.Requests), c.flag, v)
		ch <- prometheus.MustNewConstMetric(descErrors, prometheus.CounterValue, float64(t.Errors), c.flag, v)
		buckets := make(map[float64]uint64, len(latencyBounds))
		var cum uint64
		for i, le := range latencyBounds {
			cum += t.buckets[i]
			buckets[le] = cum
		}
		ch <- prometheus.MustNewConstHistogram(descLatency, t.Requests, t.LatencySum, buckets, c.flag, v)
	}
}

// metricsHandler serves the demo's metrics in the format the scraper asks for: the text format
// unless it accepts protobuf or OpenMetrics.
func (d *demo) metricsHandler() http.Handler {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collector{flag: d.cfg.Flag, snap: d.snap.Load})
	return promhttp.HandlerFor(reg, promhttp.HandlerOpts{
		ErrorLog:          slog.NewLogLogger(d.logger.Handler(), slog.LevelDebug),
		EnableOpenMetrics: true,
	})
}

// families are the metric families of s, as a scrape gathers them; none before the first
// request of a variant.
func families(flag string, s *snapshot) []*dto.MetricFamily {
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(collector{flag: flag, snap: func() *snapshot { return s }})
	mfs, err := reg.Gather()
	if err != nil {
		panic(err) // the collector's own descriptions and label values: a bug
	}
	return mfs
}

// writeError is the one place errors become HTTP statuses: a refused knob is a 400 that says why,
// an oversized body a 413, anything else a 500 with a generic message, logged.
func (d *demo) writeError(w http.ResponseWriter, err error) {
	switch {
	case errors.Is(err, errBadKnob):
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": err.Error()})
	case errors.Is(err, errBodyTooLarge):
		writeJSON(w, http.StatusRequestEntityTooLarge, map[string]string{"error": err.Error()})
	default:
		d.logger.Error("request failed", "error", err)
		writeJSON(w, http.StatusInternalServerError, map[string]string{"error": "internal error"})
	}
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

// runReport writes a summary line of the traffic since the last one to w every interval, until
// ctx ends; it returns nil then.
func (d *demo) runReport(ctx context.Context, w io.Writer, interval time.Duration) error {
	t := time.NewTicker(interval)
	defer t.Stop()
	prev := d.snap.Load()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		cur := d.snap.Load()
		if _, err := io.WriteString(w, reportLine(prev, cur)); err != nil {
			return fmt.Errorf("write report: %w", err)
		}
		prev = cur
	}
}

// reportLine says what happened between two snapshots, per variant:
//
//	requests=500 off=248 (1 errors, 0.40%) on=252 (0 errors, 0.00%)
func reportLine(prev, cur *snapshot) string {
	var b bytes.Buffer
	fmt.Fprintf(&b, "requests=%d", cur.Requests-prev.Requests)
	for _, v := range slices.Sorted(maps.Keys(cur.Variants)) {
		c, p := cur.Variants[v], prev.Variants[v]
		n, e := c.Requests-p.Requests, c.Errors-p.Errors
		pct := 0.0
		if n > 0 {
			pct = 100 * float64(e) / float64(n)
		}
		fmt.Fprintf(&b, " %s=%d (%d errors, %.2f%%)", v, n, e, pct)
	}
	b.WriteByte('\n')
	return b.String()
}
