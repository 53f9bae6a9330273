package guard

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// PrometheusOptions configures a [PrometheusSource]. Zero durations take their defaults.
type PrometheusOptions struct {
	// URL is the Prometheus server's base URL, e.g. "http://127.0.0.1:9090" or
	// "https://example.org/prometheus"; /api/v1/query is appended. Required.
	URL string
	// Timeout bounds one query, and is passed to Prometheus as its query timeout. 10s by default.
	Timeout time.Duration
	// Lag is how far behind now the guard should read, so that the newest scrape has been
	// ingested: callers ask for Counter(ctx, q, now.Add(-source.Lag())). 30s by default; it
	// must be shorter than StaleAfter would make useless, so at most 1h.
	Lag time.Duration
	// StaleAfter is the age beyond which a sample is stale, measured from the time asked for.
	// It bites on range queries (see [CounterTemplate.Range]) and scalars; an instant vector's
	// timestamp is the evaluation time. 1m by default.
	StaleAfter time.Duration
	// BearerToken, if set, is sent as "Authorization: Bearer …".
	BearerToken string
	// Username and Password, if set, are sent as HTTP basic auth. Exclusive with BearerToken.
	Username, Password string
	// MaxBytes bounds a response body. 8 MiB by default.
	MaxBytes int64
	// Client sends the requests; a client with no timeout of its own over
	// http.DefaultTransport by default.
	Client *http.Client
}

const (
	defaultPromTimeout    = 10 * time.Second
	defaultPromLag        = 30 * time.Second
	defaultPromStaleAfter = time.Minute
	defaultPromMaxBytes   = 8 << 20
	maxPromQueryLen       = 8000
)

func (o *PrometheusOptions) setDefaults() {
	if o.Timeout == 0 {
		o.Timeout = defaultPromTimeout
	}
	if o.Lag == 0 {
		o.Lag = defaultPromLag
	}
	if o.StaleAfter == 0 {
		o.StaleAfter = defaultPromStaleAfter
	}
	if o.MaxBytes == 0 {
		o.MaxBytes = defaultPromMaxBytes
	}
}

// Validate reports every problem with the options, as an error matching [ErrInvalidSource].
// Zero durations are accepted (they take defaults).
func (o PrometheusOptions) Validate() error {
	var errs []error
	if _, _, err := parseEndpoint(o.URL, false); err != nil {
		errs = append(errs, err)
	}
	if o.Timeout < 0 || o.Timeout > 10*time.Minute {
		errs = append(errs, fmt.Errorf("timeout %v is not between 0 and 10m", o.Timeout))
	}
	if o.Lag < 0 || o.Lag > time.Hour {
		errs = append(errs, fmt.Errorf("lag %v is not between 0 and 1h", o.Lag))
	}
	if o.StaleAfter < 0 || o.StaleAfter > 24*time.Hour {
		errs = append(errs, fmt.Errorf("stale after %v is not between 0 and 24h", o.StaleAfter))
	}
	if o.MaxBytes < 0 {
		errs = append(errs, fmt.Errorf("max bytes %d is negative", o.MaxBytes))
	}
	errs = append(errs, httpAuth{o.BearerToken, o.Username, o.Password}.validate()...)
	if len(errs) > 0 {
		return fmt.Errorf("%w: prometheus: %w", ErrInvalidSource, errors.Join(errs...))
	}
	return nil
}

// PrometheusSource reads counter values through the Prometheus HTTP API's instant query
// endpoint, GET /api/v1/query?query=…&time=…. It is safe for concurrent use.
//
// A query must return exactly one series or a scalar: an instant vector (`sum(x{…})`) or a
// range vector of one series (`x{…}[5m]`, whose newest sample at or before the asked time is
// used, with its own timestamp). Use counter values, never rate() or increase(); the guard
// differences values itself with [Delta].
type PrometheusSource struct {
	base       *url.URL
	endpoint   string
	client     *http.Client
	auth       httpAuth
	timeout    time.Duration
	lag        time.Duration
	staleAfter time.Duration
	maxBytes   int64
}

// NewPrometheusSource checks opts and returns a source. It returns an error matching
// [ErrInvalidSource] when the options break a rule.
func NewPrometheusSource(opts PrometheusOptions) (*PrometheusSource, error) {
	opts.setDefaults()
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	base, redacted, _ := parseEndpoint(opts.URL, false)
	base.Path = strings.TrimSuffix(base.Path, "/") + "/api/v1/query"
	base.RawPath = ""
	client := opts.Client
	if client == nil {
		client = &http.Client{}
	}
	return &PrometheusSource{
		base:       base,
		endpoint:   redacted,
		client:     client,
		auth:       httpAuth{opts.BearerToken, opts.Username, opts.Password},
		timeout:    opts.Timeout,
		lag:        opts.Lag,
		staleAfter: opts.StaleAfter,
		maxBytes:   opts.MaxBytes,
	}, nil
}

// Lag is how far behind now callers should read: Counter(ctx, q, now.Add(-s.Lag())).
func (s *PrometheusSource) Lag() time.Duration { return s.lag }

// Endpoint is the server's base URL with any password redacted.
func (s *PrometheusSource) Endpoint() string { return s.endpoint }

// Counter runs q as an instant query at time at and returns the counter's value. The reading
// is ok only when exactly one finite, non-negative sample came back no older than the
// staleness bound. An empty result reads [ReadingEmpty], NaN or ±Inf [ReadingNaN], several
// series [ReadingAmbiguous], an old sample [ReadingStale]; all with a nil error. Transport
// failures, HTTP or API errors, and undecodable bodies read [ReadingError] with an error
// matching [ErrQueryFailed] (a [*PrometheusError] when Prometheus said why, and
// [ErrMalformedResponse] for bodies that do not decode); a deadline (ctx's or the source's
// Timeout, or Prometheus's own query timeout) reads [ReadingTimeout] and the error also
// matches context.DeadlineExceeded. An empty or overlong query, one that is not valid UTF-8,
// or a zero at returns [ErrInvalidQuery] with a reading of status [ReadingError].
func (s *PrometheusSource) Counter(ctx context.Context, q string, at time.Time) (Reading, error) {
	r := Reading{Requested: at, Query: q, Endpoint: s.endpoint, Status: ReadingError}
	if err := checkQueryInput(q, at); err != nil {
		r.Detail = err.Error()
		return r, err
	}
	body, status, err := s.get(ctx, q, at)
	if err != nil {
		st := failureStatus(err)
		r.Status, r.Detail = st, err.Error()
		return r, queryFailure(st, fmt.Errorf("query %q at %s: %w", truncate(q, 200), formatAPITime(at), err))
	}
	res, err := decodePromResponse(body, status)
	if err != nil {
		st := ReadingError
		var pe *PrometheusError
		if errors.As(err, &pe) && (pe.Type == "timeout" || pe.Type == "canceled") {
			st = ReadingTimeout
		}
		r.Status, r.Detail = st, err.Error()
		return r, queryFailure(st, fmt.Errorf("query %q at %s: %w", truncate(q, 200), formatAPITime(at), err))
	}
	judgePromResult(&r, res, at, s.staleAfter)
	if r.Status == ReadingError {
		return r, fmt.Errorf("query %q at %s: %w: %s", truncate(q, 200), formatAPITime(at), ErrQueryFailed, r.Detail)
	}
	return r, nil
}

func checkQueryInput(q string, at time.Time) error {
	switch {
	case strings.TrimSpace(q) == "":
		return fmt.Errorf("%w: query is empty", ErrInvalidQuery)
	case len(q) > maxPromQueryLen:
		return fmt.Errorf("%w: query longer than %d bytes", ErrInvalidQuery, maxPromQueryLen)
	case !utf8.ValidString(q):
		return fmt.Errorf("%w: query is not valid UTF-8", ErrInvalidQuery)
	case at.IsZero():
		return fmt.Errorf("%w: query time is zero", ErrInvalidQuery)
	}
	return nil
}

func (s *PrometheusSource) get(ctx context.Context, q string, at time.Time) ([]byte, int, error) {
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	u := *s.base
	u.RawQuery = url.Values{
		"query":   {q},
		"time":    {formatAPITime(at)},
		"timeout": {strconv.FormatInt(s.timeout.Milliseconds(), 10) + "ms"},
	}.Encode()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return nil, 0, err
	}
	req.Header.Set("Accept", "application/json")
	req.Header.Set("User-Agent", "interlock-guard")
	s.auth.apply(req.Header)
	resp, err := s.client.Do(req)
	if err != nil {
		return nil, 0, err
	}
	defer resp.Body.Close()
	body, err := readBounded(resp.Body, s.maxBytes)
	if err != nil {
		return nil, resp.StatusCode, fmt.Errorf("read response (http %d): %w", resp.StatusCode, err)
	}
	return body, resp.StatusCode, nil
}

// formatAPITime renders t as Unix seconds with milliseconds, as the API takes it.
func formatAPITime(t time.Time) string {
	ms := t.UnixMilli()
	sign := ""
	if ms < 0 {
		sign, ms = "-", -ms
	}
	return fmt.Sprintf("%s%d.%03d", sign, ms/1000, ms%1000)
}

// PrometheusError is an error answer from the Prometheus API. It matches [ErrQueryFailed].
type PrometheusError struct {
	// StatusCode is the HTTP status of the answer.
	StatusCode int
	// Type is the API's errorType: "bad_data", "execution", "timeout", "canceled",
	// "internal", "unavailable", "not_found", or "" when the body gave none.
	Type string
	// Message is the API's error text (or the start of a body that was not the API's JSON).
	Message string
}

func (e *PrometheusError) Error() string {
	t := e.Type
	if t == "" {
		t = "error"
	}
	return fmt.Sprintf("prometheus %s (http %d): %s", t, e.StatusCode, e.Message)
}

// Unwrap makes errors.Is(err, ErrQueryFailed) hold.
func (e *PrometheusError) Unwrap() error { return ErrQueryFailed }

// promResult is a decoded successful answer.
type promResult struct {
	kind     string // "vector", "scalar" or "matrix"
	series   []promSeries
	warnings []string
	infos    []string
}

type promSeries struct {
	labels    map[string]string
	points    []promPoint
	histogram bool // the series held native histogram samples
}

type promPoint struct {
	t time.Time
	v float64
}

type promEnvelope struct {
	Status    string          `json:"status"`
	Data      json.RawMessage `json:"data"`
	ErrorType string          `json:"errorType"`
	Error     string          `json:"error"`
	Warnings  []string        `json:"warnings"`
	Infos     []string        `json:"infos"`
}

type promData struct {
	ResultType string          `json:"resultType"`
	Result     json.RawMessage `json:"result"`
}

type promJSONSeries struct {
	Metric     map[string]string   `json:"metric"`
	Value      json.RawMessage     `json:"value"`
	Values     []json.RawMessage   `json:"values"`
	Histogram  json.RawMessage     `json:"histogram"`
	Histograms [][]json.RawMessage `json:"histograms"`
}

// decodePromResponse decodes an API answer with its HTTP status. Errors match ErrQueryFailed
// (a *PrometheusError for API errors, ErrMalformedResponse for bodies that do not decode).
func decodePromResponse(body []byte, httpStatus int) (promResult, error) {
	var env promEnvelope
	dec := json.NewDecoder(bytes.NewReader(body))
	if err := dec.Decode(&env); err != nil || (env.Status != "success" && env.Status != "error") {
		if httpStatus/100 != 2 {
			return promResult{}, &PrometheusError{StatusCode: httpStatus, Message: snippet(body)}
		}
		if err == nil {
			err = fmt.Errorf("status %q", snippet([]byte(env.Status)))
		}
		return promResult{}, malformed("api envelope: %w", err)
	}
	if env.Status == "error" {
		return promResult{}, &PrometheusError{StatusCode: httpStatus, Type: env.ErrorType, Message: env.Error}
	}
	if httpStatus/100 != 2 {
		return promResult{}, &PrometheusError{StatusCode: httpStatus, Message: "status success with a non-2xx answer"}
	}
	var data promData
	if err := json.Unmarshal(env.Data, &data); err != nil {
		return promResult{}, malformed("data: %w", err)
	}
	res := promResult{kind: data.ResultType, warnings: env.Warnings, infos: env.Infos}
	switch data.ResultType {
	case "scalar":
		p, err := decodePromPoint(data.Result)
		if err != nil {
			return promResult{}, malformed("scalar: %w", err)
		}
		res.series = []promSeries{{points: []promPoint{p}}}
	case "vector", "matrix":
		var raw []promJSONSeries
		if err := json.Unmarshal(data.Result, &raw); err != nil {
			return promResult{}, malformed("%s: %w", data.ResultType, err)
		}
		for i, js := range raw {
			ps := promSeries{labels: js.Metric, histogram: len(js.Histogram) > 0 || len(js.Histograms) > 0}
			if data.ResultType == "vector" && !ps.histogram {
				p, err := decodePromPoint(js.Value)
				if err != nil {
					return promResult{}, malformed("vector series %d: %w", i, err)
				}
				ps.points = []promPoint{p}
			}
			for j, v := range js.Values {
				p, err := decodePromPoint(v)
				if err != nil {
					return promResult{}, malformed("matrix series %d point %d: %w", i, j, err)
				}
				ps.points = append(ps.points, p)
			}
			res.series = append(res.series, ps)
		}
	default:
		return promResult{}, malformed("result type %q is not vector, scalar or matrix", snippet([]byte(data.ResultType)))
	}
	return res, nil
}

func malformed(format string, args ...any) error {
	return fmt.Errorf("%w: %w: %w", ErrQueryFailed, ErrMalformedResponse, fmt.Errorf(format, args...))
}

// decodePromPoint decodes [<unix seconds>, "<value>"].
func decodePromPoint(raw json.RawMessage) (promPoint, error) {
	var pair []json.RawMessage
	if err := json.Unmarshal(raw, &pair); err != nil {
		return promPoint{}, err
	}
	if len(pair) != 2 {
		return promPoint{}, fmt.Errorf("sample has %d elements, not 2", len(pair))
	}
	var ts json.Number
	if err := json.Unmarshal(pair[0], &ts); err != nil {
		return promPoint{}, fmt.Errorf("timestamp: %w", err)
	}
	sec, err := ts.Float64()
	if err != nil || math.IsNaN(sec) || math.Abs(sec) > 1e12 {
		return promPoint{}, fmt.Errorf("timestamp %q out of range", snippet([]byte(ts)))
	}
	var vs string
	if err := json.Unmarshal(pair[1], &vs); err != nil {
		return promPoint{}, fmt.Errorf("value: %w", err)
	}
	v, err := strconv.ParseFloat(vs, 64)
	if err != nil {
		return promPoint{}, fmt.Errorf("value %q is not a number", snippet([]byte(vs)))
	}
	return promPoint{t: time.UnixMilli(int64(math.Round(sec * 1000))), v: v}, nil
}

// judgePromResult sets r's status, value, time and detail from a decoded answer.
func judgePromResult(r *Reading, res promResult, at time.Time, staleAfter time.Duration) {
	var details []string
	if len(res.warnings) > 0 {
		details = append(details, "warnings: "+strings.Join(res.warnings, "; "))
	}
	if len(res.infos) > 0 {
		details = append(details, "infos: "+strings.Join(res.infos, "; "))
	}
	set := func(st ReadingStatus, d string) {
		r.Status = st
		if d != "" {
			details = append([]string{d}, details...)
		}
		r.Detail = strings.Join(details, "; ")
	}
	switch len(res.series) {
	case 0:
		set(ReadingEmpty, res.kind+" result has no series")
		return
	case 1:
	default:
		set(ReadingAmbiguous, fmt.Sprintf("%s result has %d series (%s); the query must return one", res.kind, len(res.series), describeSeries(res.series)))
		return
	}
	s := res.series[0]
	if s.histogram {
		set(ReadingError, "native histogram sample, not a counter value")
		return
	}
	// The newest point at or before at (points outside the window cannot be used).
	var p promPoint
	found := false
	for _, q := range s.points {
		if q.t.After(at) && q.t.Sub(at) >= time.Millisecond {
			continue
		}
		if !found || q.t.After(p.t) {
			p, found = q, true
		}
	}
	if !found {
		set(ReadingEmpty, fmt.Sprintf("%s series has no sample at or before the query time", res.kind))
		return
	}
	r.At = p.t
	switch {
	case math.IsNaN(p.v):
		set(ReadingNaN, "value is NaN")
	case math.IsInf(p.v, 0):
		set(ReadingNaN, fmt.Sprintf("value is %v", p.v))
	case p.v < 0:
		set(ReadingError, fmt.Sprintf("value %g is negative: not a counter", p.v))
	case at.Sub(p.t) > staleAfter:
		r.Value = p.v
		set(ReadingStale, fmt.Sprintf("newest sample is %v old, more than %v", at.Sub(p.t).Round(time.Millisecond), staleAfter))
	default:
		r.Value = p.v
		set(ReadingOK, "")
	}
}

func describeSeries(ss []promSeries) string {
	var parts []string
	for i, s := range ss {
		if i == 3 {
			parts = append(parts, "…")
			break
		}
		keys := make([]string, 0, len(s.labels))
		for k := range s.labels {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		var b strings.Builder
		b.WriteByte('{')
		for j, k := range keys {
			if j > 0 {
				b.WriteByte(',')
			}
			b.WriteString(k + "=" + strconv.Quote(s.labels[k]))
		}
		b.WriteByte('}')
		parts = append(parts, truncate(b.String(), 200))
	}
	return strings.Join(parts, ", ")
}
