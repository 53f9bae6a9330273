package source

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	promapi "github.com/prometheus/client_golang/api"
	promv1 "github.com/prometheus/client_golang/api/prometheus/v1"
	"github.com/prometheus/common/model"
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
// endpoint (/api/v1/query), with the API client of github.com/prometheus/client_golang for the
// transport and the decoding. It is safe for concurrent use.
//
// A query must return exactly one series or a scalar: an instant vector (`sum(x{…})`) or a
// range vector of one series (`x{…}[5m]`, whose newest sample at or before the asked time is
// used, with its own timestamp). Use counter values, never rate() or increase(); the guard
// differences values itself with [Delta].
type PrometheusSource struct {
	api        promv1.API
	endpoint   string
	timeout    time.Duration
	lag        time.Duration
	staleAfter time.Duration
}

// NewPrometheusSource checks opts and returns a source. It returns an error matching
// [ErrInvalidSource] when the options break a rule.
func NewPrometheusSource(opts PrometheusOptions) (*PrometheusSource, error) {
	opts.setDefaults()
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	base, redacted, _ := parseEndpoint(opts.URL, false)
	client := http.Client{}
	if opts.Client != nil {
		client = *opts.Client
	}
	next := client.Transport
	if next == nil {
		next = http.DefaultTransport
	}
	client.Transport = &promTransport{
		next:     next,
		auth:     httpAuth{opts.BearerToken, opts.Username, opts.Password},
		maxBytes: opts.MaxBytes,
	}
	c, err := promapi.NewClient(promapi.Config{Address: base.String(), Client: &client})
	if err != nil {
		return nil, fmt.Errorf("%w: prometheus: %w", ErrInvalidSource, err)
	}
	return &PrometheusSource{
		api:        promv1.NewAPI(c),
		endpoint:   redacted,
		timeout:    opts.Timeout,
		lag:        opts.Lag,
		staleAfter: opts.StaleAfter,
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
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	var httpStatus int
	ctx = context.WithValue(ctx, promStatusKey{}, &httpStatus)
	value, warnings, infos, err := s.api.Query(ctx, q, at, promv1.WithTimeout(s.timeout))
	if err == nil {
		var res promResult
		if res, err = promResultOf(value); err == nil {
			res.warnings, res.infos = warnings, infos
			judgePromResult(&r, res, at, s.staleAfter)
			if r.Status == ReadingError {
				return r, fmt.Errorf("query %q at %s: %w: %s", truncate(q, 200), formatAPITime(at), ErrQueryFailed, r.Detail)
			}
			return r, nil
		}
	} else {
		err = promFailure(err, httpStatus)
	}
	st := failureStatus(err)
	var pe *PrometheusError
	if errors.As(err, &pe) && (pe.Type == "timeout" || pe.Type == "canceled") {
		st = ReadingTimeout
	}
	r.Status, r.Detail = st, err.Error()
	return r, queryFailure(st, fmt.Errorf("query %q at %s: %w", truncate(q, 200), formatAPITime(at), err))
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

// promStatusKey carries, in a request's context, where promTransport notes the HTTP status of
// the answer: the API client reports errors without it.
type promStatusKey struct{}

// promTransport sends the guard's headers and credentials, bounds the body, and notes the
// status of each answer.
type promTransport struct {
	next     http.RoundTripper
	auth     httpAuth
	maxBytes int64
}

func (t *promTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	req = req.Clone(req.Context())
	req.Header.Set("Accept", "application/json")
	req.Header.Set("User-Agent", "interlock-guard")
	t.auth.apply(req.Header)
	resp, err := t.next.RoundTrip(req)
	if err != nil {
		return nil, err
	}
	if p, ok := req.Context().Value(promStatusKey{}).(*int); ok {
		*p = resp.StatusCode
	}
	resp.Body = &boundedBody{ReadCloser: resp.Body, limit: t.maxBytes}
	return resp, nil
}

// boundedBody fails a read past its limit instead of truncating the body.
type boundedBody struct {
	io.ReadCloser
	limit, read int64
}

func (b *boundedBody) Read(p []byte) (int, error) {
	if b.read > b.limit {
		return 0, fmt.Errorf("body larger than %d bytes", b.limit)
	}
	if room := b.limit - b.read + 1; int64(len(p)) > room {
		p = p[:room]
	}
	n, err := b.ReadCloser.Read(p)
	b.read += int64(n)
	if b.read > b.limit {
		return n, fmt.Errorf("body larger than %d bytes", b.limit)
	}
	return n, err
}

// formatAPITime renders t as Unix seconds with milliseconds, for error messages.
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

// promFailure turns the API client's error into the source's: a *PrometheusError when the
// server answered with an error, ErrMalformedResponse when a 2xx body did not decode, and
// transport errors (including deadlines and a body over the limit) as they are.
func promFailure(err error, httpStatus int) error {
	var ae *promv1.Error
	if !errors.As(err, &ae) {
		return err
	}
	switch ae.Type {
	case promv1.ErrBadResponse:
		if httpStatus/100 == 2 {
			return malformed("%s", ae.Msg)
		}
		return &PrometheusError{StatusCode: httpStatus, Message: ae.Msg}
	case promv1.ErrServer, promv1.ErrClient:
		// A status the client does not expect API errors with (Prometheus answers a timeout
		// with 503, say): the body may still be the API's error, which says what happened.
		var env struct {
			Status    string `json:"status"`
			ErrorType string `json:"errorType"`
			Error     string `json:"error"`
		}
		if ae.Detail != "" {
			if json.Unmarshal([]byte(ae.Detail), &env) == nil && env.Status == "error" {
				return &PrometheusError{StatusCode: httpStatus, Type: env.ErrorType, Message: env.Error}
			}
			return &PrometheusError{StatusCode: httpStatus, Message: snippet([]byte(ae.Detail))}
		}
		return &PrometheusError{StatusCode: httpStatus, Type: string(ae.Type), Message: ae.Msg}
	}
	return &PrometheusError{StatusCode: httpStatus, Type: string(ae.Type), Message: ae.Msg}
}

// promResult is a decoded successful answer.
type promResult struct {
	kind     string // "vector", "scalar" or "matrix"
	series   []promSeries
	warnings []string
	infos    []string
}

type promSeries struct {
	labels    model.Metric
	points    []promPoint
	histogram bool // the series held native histogram samples
}

type promPoint struct {
	t time.Time
	v float64
}

// maxPromTime bounds the timestamps of an answer (in milliseconds: ±1e12 s), beyond which
// the API's decoder may have wrapped around.
const maxPromTime = model.Time(1e15)

// promResultOf flattens the API client's value into series of points. A string result, no
// result, or a timestamp out of range is malformed.
func promResultOf(v model.Value) (promResult, error) {
	point := func(t model.Time, v model.SampleValue) (promPoint, error) {
		if t > maxPromTime || t < -maxPromTime {
			return promPoint{}, malformed("timestamp %d ms out of range", int64(t))
		}
		return promPoint{t: t.Time(), v: float64(v)}, nil
	}
	switch v := v.(type) {
	case *model.Scalar:
		p, err := point(v.Timestamp, v.Value)
		if err != nil {
			return promResult{}, err
		}
		return promResult{kind: "scalar", series: []promSeries{{points: []promPoint{p}}}}, nil
	case model.Vector:
		res := promResult{kind: "vector"}
		for _, s := range v {
			ps := promSeries{labels: s.Metric, histogram: s.Histogram != nil}
			if !ps.histogram {
				p, err := point(s.Timestamp, s.Value)
				if err != nil {
					return promResult{}, err
				}
				ps.points = []promPoint{p}
			}
			res.series = append(res.series, ps)
		}
		return res, nil
	case model.Matrix:
		res := promResult{kind: "matrix"}
		for _, s := range v {
			ps := promSeries{labels: s.Metric, histogram: len(s.Histograms) > 0}
			for _, sp := range s.Values {
				p, err := point(sp.Timestamp, sp.Value)
				if err != nil {
					return promResult{}, err
				}
				ps.points = append(ps.points, p)
			}
			res.series = append(res.series, ps)
		}
		return res, nil
	case nil:
		return promResult{}, malformed("the answer has no result")
	}
	return promResult{}, malformed("result type %q is not vector, scalar or matrix", v.Type())
}

func malformed(format string, args ...any) error {
	return fmt.Errorf("%w: %w: %w", ErrQueryFailed, ErrMalformedResponse, fmt.Errorf(format, args...))
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
			keys = append(keys, string(k))
		}
		sort.Strings(keys)
		var b strings.Builder
		b.WriteByte('{')
		for j, k := range keys {
			if j > 0 {
				b.WriteByte(',')
			}
			b.WriteString(k + "=" + strconv.Quote(string(s.labels[model.LabelName(k)])))
		}
		b.WriteByte('}')
		parts = append(parts, truncate(b.String(), 200))
	}
	return strings.Join(parts, ", ")
}
