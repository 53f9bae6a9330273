package source_test

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/interlock-dev/interlock/guard/source"
)

// clientGolangEndpoint serves a registry through client_golang's own handler, OpenMetrics
// enabled (with _created samples), as an instrumented service does, and records the
// Content-Type of each answer.
func clientGolangEndpoint(t *testing.T, withGo bool) (*prometheus.CounterVec, *prometheus.CounterVec, *httptest.Server, func() []string) {
	t.Helper()
	reg := prometheus.NewRegistry()
	requests := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "requests_total", Help: "Requests served, by flag variant."}, []string{"flag", "variant"})
	errs := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "errors_total", Help: "Failed requests, by flag variant."}, []string{"flag", "variant"})
	latency := prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "request_duration_seconds", Help: "Latency."}, []string{"variant"})
	queue := prometheus.NewGauge(prometheus.GaugeOpts{Name: "queue_depth", Help: "Items waiting."})
	reg.MustRegister(requests, errs, latency, queue)
	if withGo {
		reg.MustRegister(collectors.NewGoCollector())
	}
	latency.WithLabelValues("on").Observe(0.02)
	queue.Set(7)
	h := promhttp.HandlerFor(reg, promhttp.HandlerOpts{EnableOpenMetrics: true, EnableOpenMetricsTextCreatedSamples: true})
	var mu sync.Mutex
	var types []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h.ServeHTTP(w, r)
		mu.Lock()
		types = append(types, w.Header().Get("Content-Type"))
		mu.Unlock()
	}))
	t.Cleanup(srv.Close)
	return requests, errs, srv, func() []string {
		mu.Lock()
		defer mu.Unlock()
		return append([]string(nil), types...)
	}
}

// The scrape source reads a real client_golang endpoint in OpenMetrics when it asks for it,
// and in protobuf by default; the readings agree, and _created samples are not counted.
func TestScrapeSourceOpenMetricsFromClientGolang(t *testing.T) {
	ctx := context.Background()
	for _, c := range []struct {
		name, accept, wantType string
	}{
		{"openmetrics", "application/openmetrics-text;version=1.0.0", "application/openmetrics-text"},
		{"negotiated", "", "application/vnd.google.protobuf"},
		{"openmetrics preferred", "application/openmetrics-text;version=1.0.0;q=0.9,text/plain;version=0.0.4;q=0.5", "application/openmetrics-text"},
	} {
		t.Run(c.name, func(t *testing.T) {
			requests, errs, srv, served := clientGolangEndpoint(t, false)
			requests.WithLabelValues("checkout-v2", "on").Add(5)
			requests.WithLabelValues("checkout-v2", "off").Add(50)
			errs.WithLabelValues("checkout-v2", "on").Add(1)
			src, clock := newScrapeForTest(t, srv.URL+"/metrics", func(o *source.ScrapeOptions) { o.Accept = c.accept })
			for _, q := range []string{qOnRequests, qAllRequests, qOnErrors, `requests_created`, `queue_depth`, `request_duration_seconds_count`} {
				if err := src.Watch(q); err != nil {
					t.Fatal(err)
				}
			}
			if err := src.Scrape(ctx); err != nil {
				t.Fatal(err)
			}
			types := served()
			if len(types) != 1 || !strings.HasPrefix(types[0], c.wantType) {
				t.Fatalf("served %q, want %s", types, c.wantType)
			}
			read := func(q string) source.Reading {
				t.Helper()
				r, _ := src.Counter(ctx, q, clock.Now())
				return r
			}
			for _, want := range []struct {
				q      string
				status source.ReadingStatus
				value  float64
			}{
				{qOnRequests, source.ReadingOK, 5},
				{qAllRequests, source.ReadingOK, 55},
				{qOnErrors, source.ReadingOK, 1},
				{`request_duration_seconds_count`, source.ReadingOK, 1},
				{`requests_created`, source.ReadingEmpty, 0},
				{`queue_depth`, source.ReadingError, 0},
			} {
				if r := read(want.q); r.Status != want.status || r.Value != want.value {
					t.Errorf("%s = %s %v (%s), want %s %v", want.q, r.Status, r.Value, r.Detail, want.status, want.value)
				}
			}
			// The counter grows; the next scrape sees it.
			requests.WithLabelValues("checkout-v2", "on").Add(3)
			clock.advance(15 * time.Second)
			if err := src.Scrape(ctx); err != nil {
				t.Fatal(err)
			}
			if r := read(qOnRequests); r.Status != source.ReadingOK || r.Value != 8 {
				t.Fatalf("after growth: %+v", r)
			}
		})
	}
}

// client_golang's Go collector exposes go_memstats_alloc_bytes (a gauge) beside
// go_memstats_alloc_bytes_total (a counter); in OpenMetrics both families are named
// go_memstats_alloc_bytes, and the parser refuses the body: one reason the default Accept does
// not ask for OpenMetrics. The default reads such a service; asking for OpenMetrics does not.
func TestScrapeSourceOpenMetricsGoCollector(t *testing.T) {
	ctx := context.Background()
	requests, _, srv, _ := clientGolangEndpoint(t, true)
	requests.WithLabelValues("checkout-v2", "on").Add(5)

	src, clock := newScrapeForTest(t, srv.URL+"/metrics", nil)
	if err := src.Scrape(ctx); err != nil {
		t.Fatalf("default negotiation: %v", err)
	}
	if r, err := src.Counter(ctx, qOnRequests, clock.Now()); err != nil || r.Status != source.ReadingOK || r.Value != 5 {
		t.Fatalf("default negotiation: %+v, %v", r, err)
	}

	om, _ := newScrapeForTest(t, srv.URL+"/metrics", func(o *source.ScrapeOptions) { o.Accept = "application/openmetrics-text;version=1.0.0" })
	if err := om.Scrape(ctx); !errors.Is(err, source.ErrMalformedResponse) || !strings.Contains(err.Error(), "go_memstats_alloc_bytes") {
		t.Fatalf("openmetrics only: %v, want a malformed response naming go_memstats_alloc_bytes", err)
	}
}
