package source_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/interlock-dev/interlock/guard/source"
	"github.com/interlock-dev/interlock/internal/await"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// expoServer serves a real exposition: a fixture (the real /metrics of Prometheus 2.42 for
// the text format and delimited protobuf, a hand-written OpenMetrics 1.0 document for
// OpenMetrics) followed by the demo's requests and errors counters by variant, negotiating
// the format from Accept as client_golang does.
type expoServer struct {
	mu       sync.Mutex
	requests map[string]float64 // variant -> requests_total
	errors   map[string]float64 // variant -> errors_total
	extra    string             // appended to the text exposition
	status   int
	ctype    string // overrides the negotiated Content-Type when set
	block    bool
	accepts  []string
	text, om []byte
}

func newExpoServer(t *testing.T) (*expoServer, *httptest.Server) {
	t.Helper()
	text, err := os.ReadFile("testdata/scrape-prometheus-2.42.txt")
	if err != nil {
		t.Fatal(err)
	}
	om, err := os.ReadFile("testdata/scrape-openmetrics.txt")
	if err != nil {
		t.Fatal(err)
	}
	om = bytes.TrimSuffix(om, []byte("# EOF\n"))
	es := &expoServer{requests: map[string]float64{}, errors: map[string]float64{}, status: 200, text: text, om: om}
	srv := httptest.NewServer(es)
	t.Cleanup(srv.Close)
	return es, srv
}

func (es *expoServer) set(variant string, requests, errs float64) {
	es.mu.Lock()
	defer es.mu.Unlock()
	es.requests[variant], es.errors[variant] = requests, errs
}

func (es *expoServer) setStatus(status int) {
	es.mu.Lock()
	defer es.mu.Unlock()
	es.status = status
}

func (es *expoServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	es.mu.Lock()
	es.accepts = append(es.accepts, r.Header.Get("Accept"))
	block := es.block
	es.mu.Unlock()
	if block {
		<-r.Context().Done()
		return
	}
	es.mu.Lock()
	defer es.mu.Unlock()
	// OpenMetrics when it is the first choice (as Prometheus asks); a fuller negotiation is
	// client_golang's, tested in scrape_openmetrics_test.go.
	om := strings.HasPrefix(r.Header.Get("Accept"), "application/openmetrics-text")
	var b bytes.Buffer
	if om {
		b.Write(es.om)
		b.WriteString("# HELP requests Requests served, by flag variant.\n# TYPE requests counter\n")
		for _, v := range []string{"on", "off"} {
			if n, ok := es.requests[v]; ok {
				fmt.Fprintf(&b, "requests_total{flag=\"checkout-v2\",variant=%q} %g\nrequests_created{flag=\"checkout-v2\",variant=%q} 1.7e+09\n", v, n, v)
			}
		}
		b.WriteString("# TYPE errors counter\n")
		for _, v := range []string{"on", "off"} {
			if n, ok := es.errors[v]; ok {
				fmt.Fprintf(&b, "errors_total{flag=\"checkout-v2\",variant=%q} %g\n", v, n)
			}
		}
		b.WriteString("# EOF\n")
		w.Header().Set("Content-Type", "application/openmetrics-text; version=1.0.0; charset=utf-8")
	} else {
		b.Write(es.text)
		b.WriteString("# HELP requests_total Requests served, by flag variant.\n# TYPE requests_total counter\n")
		for _, v := range []string{"on", "off"} {
			if n, ok := es.requests[v]; ok {
				fmt.Fprintf(&b, "requests_total{flag=\"checkout-v2\",variant=%q} %g\n", v, n)
			}
		}
		b.WriteString("# TYPE errors_total counter\n")
		for _, v := range []string{"on", "off"} {
			if n, ok := es.errors[v]; ok {
				fmt.Fprintf(&b, "errors_total{flag=\"checkout-v2\",variant=%q} %g\n", v, n)
			}
		}
		b.WriteString(es.extra)
		w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
		if strings.Contains(r.Header.Get("Accept"), "application/vnd.google.protobuf") {
			// Re-encoded as client_golang does; a body its parser refuses is sent as it is.
			if proto, err := textToDelimitedProto(b.Bytes()); err == nil {
				b.Reset()
				b.Write(proto)
			}
			w.Header().Set("Content-Type", string(expfmt.NewFormat(expfmt.TypeProtoDelim)))
		}
	}
	if es.ctype != "" {
		w.Header().Set("Content-Type", es.ctype)
	}
	w.WriteHeader(es.status)
	w.Write(b.Bytes())
}

// textToDelimitedProto re-encodes a text exposition as delimited protobuf.
func textToDelimitedProto(text []byte) ([]byte, error) {
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(bytes.NewReader(text))
	if err != nil {
		return nil, err
	}
	var b bytes.Buffer
	enc := expfmt.NewEncoder(&b, expfmt.NewFormat(expfmt.TypeProtoDelim))
	for _, mf := range fams {
		if err := enc.Encode(mf); err != nil {
			return nil, err
		}
	}
	return b.Bytes(), nil
}

// scrapeClock is a clock the test moves by hand.
type scrapeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *scrapeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *scrapeClock) advance(d time.Duration) time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
	return c.now
}

func newScrapeForTest(t *testing.T, url string, mutate func(*source.ScrapeOptions)) (*source.ScrapeSource, *scrapeClock) {
	t.Helper()
	clock := &scrapeClock{now: time.Unix(1_700_000_000, 0)}
	opts := source.ScrapeOptions{URL: url, Interval: 15 * time.Second, Now: clock.Now}
	if mutate != nil {
		mutate(&opts)
	}
	src, err := source.NewScrapeSource(opts)
	if err != nil {
		t.Fatal(err)
	}
	return src, clock
}

const (
	qOnRequests  = `requests_total{flag="checkout-v2",variant="on"}`
	qOffRequests = `sum(requests_total{flag="checkout-v2",variant="off"})`
	qAllRequests = `requests_total{flag="checkout-v2"}`
	qOnErrors    = `errors_total{flag="checkout-v2",variant="on"}`
)

func TestScrapeSourceFormats(t *testing.T) {
	for _, format := range []struct {
		name   string
		accept string
	}{
		{"negotiated protobuf", ""},
		{"text", "text/plain;version=0.0.4"},
	} {
		t.Run(format.name, func(t *testing.T) {
			es, srv := newExpoServer(t)
			es.set("on", 120, 3)
			es.set("off", 2400, 12)
			src, clock := newScrapeForTest(t, srv.URL+"/metrics", func(o *source.ScrapeOptions) { o.Accept = format.accept })
			ctx := context.Background()
			for _, q := range []string{qOnRequests, qOffRequests, qAllRequests, qOnErrors} {
				if err := src.Watch(q); err != nil {
					t.Fatal(err)
				}
			}
			t0 := clock.Now()
			if err := src.Scrape(ctx); err != nil {
				t.Fatal(err)
			}
			tests := []struct {
				q     string
				value float64
			}{{qOnRequests, 120}, {qOffRequests, 2400}, {qAllRequests, 2520}, {qOnErrors, 3}}
			for _, tt := range tests {
				r, err := src.Counter(ctx, tt.q, t0)
				if err != nil || r.Status != source.ReadingOK || r.Value != tt.value || !r.At.Equal(t0) {
					t.Errorf("Counter(%s) = %+v, %v; want ok %v", tt.q, r, err, tt.value)
				}
				if r.Endpoint != srv.URL+"/metrics" || r.Query != tt.q {
					t.Errorf("reading does not say what was asked: %+v", r)
				}
			}
			// Metrics of the fixture, read through the same path.
			q := `go_gc_duration_seconds_count`
			if r, err := src.Counter(ctx, q, t0); err != nil || r.Status != source.ReadingOK || r.Value != 3 {
				t.Errorf("fixture counter %s: %+v, %v", q, r, err)
			}
			es.mu.Lock()
			accept := es.accepts[0]
			es.mu.Unlock()
			if format.accept == "" && !strings.HasPrefix(accept, "application/vnd.google.protobuf;") {
				t.Errorf("Accept = %q", accept)
			}
		})
	}
}

func TestScrapeSourceHistory(t *testing.T) {
	es, srv := newExpoServer(t)
	src, clock := newScrapeForTest(t, srv.URL, func(o *source.ScrapeOptions) {
		o.Lag = 30 * time.Second
		o.StaleAfter = 45 * time.Second
	})
	ctx := context.Background()
	if src.Lag() != 30*time.Second {
		t.Fatalf("Lag = %v", src.Lag())
	}

	// Asked before any scrape: stale, and the query is followed from now on.
	r, err := src.Counter(ctx, qOnRequests, clock.Now())
	if err != nil || r.Status != source.ReadingStale {
		t.Fatalf("before any scrape: %+v, %v", r, err)
	}

	// Scrape every 15 s; the counter grows by 10 each time.
	var times []time.Time
	for i := range 6 {
		es.set("on", float64(10*(i+1)), 0)
		times = append(times, clock.Now())
		if err := src.Scrape(ctx); err != nil {
			t.Fatal(err)
		}
		clock.advance(15 * time.Second)
	}
	now := clock.Now() // 90 s after the first scrape

	tests := []struct {
		name  string
		at    time.Time
		want  source.ReadingStatus
		value float64
		from  time.Time
	}{
		{"now minus lag", now.Add(-src.Lag()), source.ReadingOK, 50, times[4]},
		{"exactly at a scrape", times[2], source.ReadingOK, 30, times[2]},
		{"just before a scrape", times[2].Add(-time.Millisecond), source.ReadingOK, 20, times[1]},
		{"before the first scrape", times[0].Add(-time.Second), source.ReadingStale, 0, time.Time{}},
		{"far after the last scrape", times[5].Add(46 * time.Second), source.ReadingStale, 60, times[5]},
		{"within the bound after the last", times[5].Add(45 * time.Second), source.ReadingOK, 60, times[5]},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, err := src.Counter(ctx, qOnRequests, tt.at)
			if err != nil || r.Status != tt.want || r.Value != tt.value || !r.At.Equal(tt.from) || !r.Requested.Equal(tt.at) {
				t.Fatalf("Counter at %v = %+v, %v; want %s %v from %v", tt.at, r, err, tt.want, tt.value, tt.from)
			}
		})
	}
	// The deltas between readings a lag apart are exact counts.
	prev, _ := src.Counter(ctx, qOnRequests, times[1])
	cur, _ := src.Counter(ctx, qOnRequests, times[4])
	if d, st := source.Delta(prev, cur); d != 30 || st != source.DeltaOK {
		t.Fatalf("Delta = %v, %s", d, st)
	}

	// A counter reset shows in the history and in Delta.
	es.set("on", 4, 0)
	if err := src.Scrape(ctx); err != nil {
		t.Fatal(err)
	}
	after, _ := src.Counter(ctx, qOnRequests, clock.Now())
	last, _ := src.Counter(ctx, qOnRequests, times[5])
	if d, st := source.Delta(last, after); d != 4 || st != source.DeltaReset {
		t.Fatalf("after a reset: Delta = %v, %s", d, st)
	}
}

func TestScrapeSourceHistoryIsBounded(t *testing.T) {
	es, srv := newExpoServer(t)
	src, clock := newScrapeForTest(t, srv.URL, func(o *source.ScrapeOptions) { o.History = 3 })
	ctx := context.Background()
	if err := src.Watch(qOnRequests); err != nil {
		t.Fatal(err)
	}
	var times []time.Time
	for i := range 5 {
		es.set("on", float64(i), 0)
		times = append(times, clock.Now())
		if err := src.Scrape(ctx); err != nil {
			t.Fatal(err)
		}
		clock.advance(15 * time.Second)
	}
	// Only the last three scrapes are kept: asking for the second one finds nothing at or before it.
	if r, _ := src.Counter(ctx, qOnRequests, times[1]); r.Status != source.ReadingStale {
		t.Fatalf("evicted scrape: %+v", r)
	}
	if r, _ := src.Counter(ctx, qOnRequests, times[2]); r.Status != source.ReadingOK || r.Value != 2 {
		t.Fatalf("oldest kept scrape: %+v", r)
	}
}

func TestScrapeSourceStatuses(t *testing.T) {
	ctx := context.Background()
	tests := []struct {
		name   string
		setup  func(es *expoServer)
		q      string
		want   source.ReadingStatus
		errIs  []error
		detail string
		accept string // "text/plain" when empty
	}{
		{name: "unknown series is empty, not zero", q: `requests_total{variant="beta"}`, want: source.ReadingEmpty},
		{name: "unknown metric", q: `nope_total`, want: source.ReadingEmpty},
		{name: "zero is ok", setup: func(es *expoServer) { es.set("on", 0, 0) }, q: qOnErrors, want: source.ReadingOK},
		{name: "NaN", setup: func(es *expoServer) { es.extra = "odd_total{a=\"1\"} 1\nodd_total{a=\"2\"} NaN\n" }, q: `odd_total`, want: source.ReadingNaN},
		{name: "+Inf", setup: func(es *expoServer) { es.extra = "inf_total +Inf\n" }, q: `inf_total`, want: source.ReadingNaN},
		{name: "negative", setup: func(es *expoServer) { es.extra = "neg_total -1\n" }, q: `neg_total`, want: source.ReadingError, errIs: []error{source.ErrQueryFailed}},
		{name: "a gauge is not a counter", q: `go_goroutines`, want: source.ReadingError, errIs: []error{source.ErrQueryFailed}, detail: "gauge"},
		{name: "summary quantile is not a counter", q: `go_gc_duration_seconds`, want: source.ReadingError, detail: "summary"},
		{name: "summary count is", q: `go_gc_duration_seconds_count`, want: source.ReadingOK},
		{name: "duplicate series", setup: func(es *expoServer) { es.extra = "dup_total{a=\"1\"} 1\ndup_total{a=\"1\"} 1\n" }, q: `dup_total`, want: source.ReadingAmbiguous},
		{name: "http 500", setup: func(es *expoServer) { es.setStatus(500) }, q: qOnRequests, want: source.ReadingError, errIs: []error{source.ErrQueryFailed}, detail: "http 500"},
		{name: "html", setup: func(es *expoServer) { es.ctype = "text/html" }, q: qOnRequests, want: source.ReadingError, errIs: []error{source.ErrQueryFailed, source.ErrMalformedResponse}},
		{name: "text labelled protobuf", setup: func(es *expoServer) {
			es.ctype = "application/vnd.google.protobuf; proto=io.prometheus.client.MetricFamily; encoding=delimited"
		}, q: qOnRequests, want: source.ReadingError, errIs: []error{source.ErrMalformedResponse}},
		{name: "protobuf", accept: "application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=delimited", q: qOnRequests, want: source.ReadingOK},
		{name: "protobuf duplicate series", setup: func(es *expoServer) { es.extra = "dup_total{a=\"1\"} 1\ndup_total{a=\"1\"} 1\n" }, accept: "application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=delimited", q: `dup_total`, want: source.ReadingAmbiguous},
		{name: "openmetrics", setup: func(es *expoServer) { es.om = nil }, accept: "application/openmetrics-text;version=1.0.0", q: qOnRequests, want: source.ReadingOK},
		{name: "openmetrics created is no series", setup: func(es *expoServer) { es.om = nil }, accept: "application/openmetrics-text;version=1.0.0", q: `requests_created`, want: source.ReadingEmpty},
		// The parser has no info or stateset type: such a body is refused whole, not misread.
		{name: "openmetrics with an info family", accept: "application/openmetrics-text;version=1.0.0", q: qOnRequests, want: source.ReadingError, errIs: []error{source.ErrMalformedResponse}, detail: "info"},
		{name: "neither format", setup: func(es *expoServer) { es.ctype = "application/json" }, q: qOnRequests, want: source.ReadingError, errIs: []error{source.ErrMalformedResponse}, detail: "neither"},
		{name: "malformed line", setup: func(es *expoServer) { es.extra = "broken{ 1\n" }, q: qOnRequests, want: source.ReadingError, errIs: []error{source.ErrMalformedResponse}, detail: "line"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			es, srv := newExpoServer(t)
			es.set("on", 5, 0)
			if tt.setup != nil {
				tt.setup(es)
			}
			accept := tt.accept
			if accept == "" {
				accept = "text/plain"
			}
			src, clock := newScrapeForTest(t, srv.URL, func(o *source.ScrapeOptions) { o.Accept = accept })
			if err := src.Watch(tt.q); err != nil {
				t.Fatal(err)
			}
			scrapeErr := src.Scrape(ctx)
			r, err := src.Counter(ctx, tt.q, clock.Now())
			if r.Status != tt.want {
				t.Fatalf("status = %q (%s), want %q", r.Status, r.Detail, tt.want)
			}
			failed := tt.want == source.ReadingError || tt.want == source.ReadingTimeout
			if (err != nil) != failed {
				t.Fatalf("err = %v for a %s reading", err, r.Status)
			}
			for _, target := range tt.errIs {
				if !errors.Is(err, target) {
					t.Errorf("error %v does not match %v", err, target)
				}
			}
			if tt.detail != "" && !strings.Contains(r.Detail, tt.detail) {
				t.Errorf("detail %q lacks %q", r.Detail, tt.detail)
			}
			if r.OK() != (tt.want == source.ReadingOK) || (r.Status != source.ReadingOK && r.Value != 0) {
				t.Errorf("reading %+v", r)
			}
			// Only a failed fetch or parse is a scrape error; a bad series fails its query only.
			if fetchFailed := tt.errIs != nil && (errors.Is(err, source.ErrMalformedResponse) || strings.Contains(r.Detail, "http ")); fetchFailed != (scrapeErr != nil) {
				t.Errorf("Scrape() = %v", scrapeErr)
			}
		})
	}
}

func TestScrapeSourceFailureThenRecovery(t *testing.T) {
	es, srv := newExpoServer(t)
	es.set("on", 10, 0)
	var logs bytes.Buffer
	var logMu sync.Mutex
	logger := slog.New(slog.NewTextHandler(&lockedWriter{w: &logs, mu: &logMu}, nil))
	src, clock := newScrapeForTest(t, srv.URL, func(o *source.ScrapeOptions) { o.Logger = logger })
	ctx := context.Background()
	if err := src.Watch(qOnRequests); err != nil {
		t.Fatal(err)
	}
	t0 := clock.Now()
	if err := src.Scrape(ctx); err != nil {
		t.Fatal(err)
	}
	es.setStatus(503)
	t1 := clock.advance(15 * time.Second)
	for range 3 {
		if err := src.Scrape(ctx); !errors.Is(err, source.ErrQueryFailed) {
			t.Fatalf("Scrape against a 503 = %v", err)
		}
	}
	// The failure is what the source knows at t1: never the older good value.
	if r, err := src.Counter(ctx, qOnRequests, t1); r.Status != source.ReadingError || err == nil {
		t.Fatalf("after a failed scrape: %+v, %v", r, err)
	}
	if r, _ := src.Counter(ctx, qOnRequests, t0); r.Status != source.ReadingOK || r.Value != 10 {
		t.Fatalf("before the failure: %+v", r)
	}
	es.setStatus(200)
	es.set("on", 25, 0)
	t2 := clock.advance(15 * time.Second)
	if err := src.Scrape(ctx); err != nil {
		t.Fatal(err)
	}
	if r, _ := src.Counter(ctx, qOnRequests, t2); r.Status != source.ReadingOK || r.Value != 25 {
		t.Fatalf("after recovery: %+v", r)
	}
	logMu.Lock()
	out := logs.String()
	logMu.Unlock()
	if strings.Count(out, "scrape failed") != 1 || strings.Count(out, "scrape recovered") != 1 || !strings.Contains(out, "component=guard") {
		t.Fatalf("logs (one failure, one recovery expected):\n%s", out)
	}
}

type lockedWriter struct {
	w  *bytes.Buffer
	mu *sync.Mutex
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

func TestScrapeSourceTimeout(t *testing.T) {
	es, srv := newExpoServer(t)
	es.block = true
	src, clock := newScrapeForTest(t, srv.URL, func(o *source.ScrapeOptions) { o.Timeout = 50 * time.Millisecond })
	ctx := context.Background()
	if err := src.Watch(qOnRequests); err != nil {
		t.Fatal(err)
	}
	if err := src.Scrape(ctx); !errors.Is(err, context.DeadlineExceeded) || !errors.Is(err, source.ErrQueryFailed) {
		t.Fatalf("Scrape = %v", err)
	}
	r, err := src.Counter(ctx, qOnRequests, clock.Now())
	if r.Status != source.ReadingTimeout || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Counter = %+v, %v", r, err)
	}
	// A scrape cut short by its caller's context ending is not recorded.
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	clock.advance(time.Second)
	if err := src.Scrape(cctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled Scrape = %v", err)
	}
	if r, _ := src.Counter(ctx, qOnRequests, clock.Now()); r.Status != source.ReadingTimeout {
		t.Fatalf("a cancelled scrape was recorded: %+v", r)
	}
}

func TestScrapeSourceLateQuery(t *testing.T) {
	es, srv := newExpoServer(t)
	es.set("on", 7, 1)
	src, clock := newScrapeForTest(t, srv.URL, nil)
	ctx := context.Background()
	t0 := clock.Now()
	if err := src.Scrape(ctx); err != nil {
		t.Fatal(err)
	}
	// A query asked for after the scrape is answered from that scrape.
	r, err := src.Counter(ctx, qOnErrors, t0.Add(time.Second))
	if err != nil || r.Status != source.ReadingOK || r.Value != 1 || !r.At.Equal(t0) {
		t.Fatalf("late query: %+v, %v", r, err)
	}
	// After a failed scrape, a query asked for the first time learns of the failure too.
	es.setStatus(500)
	t1 := clock.advance(15 * time.Second)
	if err := src.Scrape(ctx); err == nil {
		t.Fatal("Scrape against a 500 succeeded")
	}
	if r, err := src.Counter(ctx, qOnRequests, t1); r.Status != source.ReadingError || err == nil {
		t.Fatalf("new query after a failed scrape: %+v, %v", r, err)
	}
	if r, _ := src.Counter(ctx, qOnRequests, t0); r.Status != source.ReadingOK || r.Value != 7 {
		t.Fatalf("new query before the failure: %+v", r)
	}
}

func TestScrapeSourceQueries(t *testing.T) {
	_, srv := newExpoServer(t)
	src, clock := newScrapeForTest(t, srv.URL, func(o *source.ScrapeOptions) { o.MaxQueries = 2 })
	ctx := context.Background()
	for _, q := range []string{`rate(x[5m])`, `x{a="b"} or y`, `sum(x) by (a)`, `x[5m]`, ``} {
		if err := src.Watch(q); !errors.Is(err, source.ErrInvalidQuery) {
			t.Errorf("Watch(%q) = %v", q, err)
		}
		if r, err := src.Counter(ctx, q, clock.Now()); !errors.Is(err, source.ErrInvalidQuery) || r.Status != source.ReadingError {
			t.Errorf("Counter(%q) = %+v, %v", q, r, err)
		}
	}
	if _, err := src.Counter(ctx, "x", time.Time{}); !errors.Is(err, source.ErrInvalidQuery) {
		t.Errorf("zero time: %v", err)
	}
	for _, q := range []string{"a_total", " sum( b_total{x=\"y\"} ) "} {
		if err := src.Watch(q); err != nil {
			t.Fatal(err)
		}
	}
	if err := src.Watch("a_total"); err != nil {
		t.Errorf("watching a followed query again: %v", err)
	}
	if err := src.Watch("c_total"); !errors.Is(err, source.ErrInvalidQuery) {
		t.Errorf("a third query past MaxQueries=2: %v", err)
	}
}

func TestScrapeSourceRun(t *testing.T) {
	es, srv := newExpoServer(t)
	es.set("on", 1, 0)
	ticks := make(chan time.Time)
	stopped := make(chan struct{})
	src, clock := newScrapeForTest(t, srv.URL, func(o *source.ScrapeOptions) {
		o.NewTicker = func(d time.Duration) (<-chan time.Time, func()) {
			if d != 15*time.Second {
				t.Errorf("ticker interval %v", d)
			}
			return ticks, func() { close(stopped) }
		}
	})
	if err := src.Watch(qOnRequests); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- src.Run(ctx) }()

	waitFor := func(at time.Time, value float64) {
		t.Helper()
		await.Until(t, 10*time.Second, 5*time.Millisecond, func() error {
			r, _ := src.Counter(ctx, qOnRequests, at)
			if r.Status == source.ReadingOK && r.Value == value && r.At.Equal(at) {
				return nil
			}
			return fmt.Errorf("no scrape of %v at %v; last reading %+v", value, at, r)
		})
	}
	// Run scrapes at once, then on every tick.
	waitFor(clock.Now(), 1)
	for i := 2; i <= 4; i++ {
		es.set("on", float64(i), 0)
		at := clock.advance(15 * time.Second)
		ticks <- at
		waitFor(at, float64(i))
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Run returned %v, want nil", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return after its context ended")
	}
	select {
	case <-stopped:
	default:
		t.Fatal("Run did not stop its ticker")
	}
}

func TestScrapeOptionsValidate(t *testing.T) {
	tests := []struct {
		name string
		opts source.ScrapeOptions
		bad  string
	}{
		{"minimal", source.ScrapeOptions{URL: "http://127.0.0.1:8081/metrics"}, ""},
		{"query string allowed", source.ScrapeOptions{URL: "http://x/federate?match[]=up", Interval: time.Second, StaleAfter: 2 * time.Second, Timeout: time.Second}, ""},
		{"no url", source.ScrapeOptions{}, "url is empty"},
		{"bad scheme", source.ScrapeOptions{URL: "unix:///x"}, "scheme"},
		{"tiny interval", source.ScrapeOptions{URL: "http://x", Interval: time.Millisecond}, "interval"},
		{"timeout over interval", source.ScrapeOptions{URL: "http://x", Interval: time.Second, Timeout: 2 * time.Second}, "timeout"},
		{"stale under interval", source.ScrapeOptions{URL: "http://x", Interval: time.Second, StaleAfter: time.Millisecond * 500}, "stale"},
		{"negative lag", source.ScrapeOptions{URL: "http://x", Lag: -1}, "lag"},
		{"negative history", source.ScrapeOptions{URL: "http://x", History: -1}, "history"},
		{"huge history", source.ScrapeOptions{URL: "http://x", History: 1 << 30}, "history"},
		{"history shorter than lag", source.ScrapeOptions{URL: "http://x", Interval: time.Second, History: 10, Lag: 10 * time.Second}, "does not reach back"},
		{"negative queries", source.ScrapeOptions{URL: "http://x", MaxQueries: -1}, "max queries"},
		{"negative bytes", source.ScrapeOptions{URL: "http://x", MaxBytes: -1}, "max bytes"},
		{"accept injection", source.ScrapeOptions{URL: "http://x", Accept: "text/plain\r\nX: y"}, "accept"},
		{"both auths", source.ScrapeOptions{URL: "http://x", BearerToken: "t", Username: "u", Password: "p"}, "exclusive"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			src, err := source.NewScrapeSource(tt.opts)
			if tt.bad == "" {
				if err != nil || src == nil {
					t.Fatalf("NewScrapeSource: %v", err)
				}
				return
			}
			if !errors.Is(err, source.ErrInvalidSource) || !strings.Contains(err.Error(), tt.bad) || src != nil {
				t.Fatalf("NewScrapeSource = %v, %v; want ErrInvalidSource about %q", src, err, tt.bad)
			}
		})
	}
}

func TestScrapeSourceAuth(t *testing.T) {
	var mu sync.Mutex
	var got []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		got = append(got, r.Header.Get("Authorization"))
		mu.Unlock()
		fmt.Fprintln(w, "x_total 1")
	}))
	t.Cleanup(srv.Close)
	for _, opts := range []source.ScrapeOptions{
		{URL: srv.URL, BearerToken: "tok"},
		{URL: srv.URL, Username: "u", Password: "p"},
	} {
		src, err := source.NewScrapeSource(opts)
		if err != nil {
			t.Fatal(err)
		}
		if err := src.Scrape(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if len(got) != 2 || got[0] != "Bearer tok" || got[1] != "Basic dTpw" {
		t.Fatalf("Authorization headers %q", got)
	}
}
