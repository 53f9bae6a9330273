package source_test

import (
	"context"
	"errors"
	"net/http"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/interlock-dev/interlock/guard/source"
	"github.com/interlock-dev/interlock/internal/await"
	"github.com/interlock-dev/interlock/internal/promtest"
)

func TestPrometheusSourceAgainstRealPrometheus(t *testing.T) {
	es, target := newExpoServer(t)
	es.set("on", 5, 1)
	es.set("off", 50, 2)
	base := promtest.Start(t, []string{strings.TrimPrefix(target.URL, "http://")}, time.Second)

	src, err := source.NewPrometheusSource(source.PrometheusOptions{URL: base, StaleAfter: 3 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	tmpl := source.CounterTemplate{Base: "requests_total", FlagLabel: "flag", VariantLabel: "variant"}
	sumOn, err := tmpl.Sum("checkout-v2", "on")
	if err != nil {
		t.Fatal(err)
	}
	rangeOn, err := tmpl.Range("checkout-v2", "on", time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	readNow := func(q string) source.Reading {
		t.Helper()
		r, err := src.Counter(ctx, q, time.Now())
		if err != nil && r.Status != source.ReadingError && r.Status != source.ReadingTimeout {
			t.Fatalf("Counter(%s): error %v with status %s", q, err, r.Status)
		}
		return r
	}

	// Prometheus scrapes the exposition (it negotiates OpenMetrics, so this also checks that
	// the OpenMetrics fixture is valid for a real parser) and the value shows up.
	var r source.Reading
	await.Eventually(t, 30*time.Second, func() bool {
		r = readNow(sumOn)
		return r.Status == source.ReadingOK && r.Value == 5
	}, "requests_total{variant=on} = 5")
	if up := readNow(`sum(up{job="demo"})`); !up.OK() || up.Value != 1 {
		t.Fatalf("up = %+v: Prometheus could not scrape the exposition", up)
	}
	es.mu.Lock()
	accept := es.accepts[len(es.accepts)-1]
	es.mu.Unlock()
	if !strings.Contains(accept, "application/openmetrics-text") {
		t.Errorf("Prometheus asked for %q", accept)
	}

	// The raw sample, with its own timestamp, through the range template.
	raw := readNow(rangeOn)
	if !raw.OK() || raw.Value != 5 || raw.At.After(time.Now()) {
		t.Fatalf("range reading %+v", raw)
	}
	sampledAt := raw.At

	// The counter grows; the old value stays readable at the old time, and Delta counts
	// exactly the growth.
	es.set("on", 12, 1)
	await.Eventually(t, 30*time.Second, func() bool {
		r = readNow(sumOn)
		return r.Status == source.ReadingOK && r.Value == 12
	}, "requests_total{variant=on} = 12")
	then, err := src.Counter(ctx, sumOn, sampledAt)
	if err != nil || !then.OK() || then.Value != 5 || !then.At.Equal(sampledAt) {
		t.Fatalf("reading at %v = %+v, %v; want 5", sampledAt, then, err)
	}
	if d, st := source.Delta(then, r); d != 7 || st != source.DeltaOK {
		t.Fatalf("Delta = %v, %s; want 7, ok", d, st)
	}

	// The direct scrape of the same exposition agrees with Prometheus.
	direct, err := source.NewScrapeSource(source.ScrapeOptions{URL: target.URL + "/metrics", Interval: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if err := direct.Scrape(ctx); err != nil {
		t.Fatal(err)
	}
	if d, err := direct.Counter(ctx, sumOn, time.Now()); err != nil || !d.OK() || d.Value != 12 {
		t.Fatalf("direct scrape = %+v, %v; Prometheus said 12", d, err)
	}

	// The real text format of a real producer: Prometheus's own /metrics.
	self, err := source.NewScrapeSource(source.ScrapeOptions{URL: base + "/metrics", Interval: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if err := self.Scrape(ctx); err != nil {
		t.Fatal(err)
	}
	if q, err := self.Counter(ctx, `prometheus_http_requests_total{handler="/api/v1/query",code="200"}`, time.Now()); err != nil || !q.OK() || q.Value < 4 {
		t.Fatalf("Prometheus's own query counter = %+v, %v", q, err)
	}

	// Statuses a real server produces.
	tests := []struct {
		name  string
		q     string
		want  source.ReadingStatus
		errIs error
	}{
		{"unknown series is empty", `sum(requests_total{flag="checkout-v2",variant="nope"})`, source.ReadingEmpty, nil},
		{"unknown metric is empty", `sum(nope_total)`, source.ReadingEmpty, nil},
		{"two series are ambiguous", `requests_total{flag="checkout-v2"}`, source.ReadingAmbiguous, nil},
		{"NaN", `0/0`, source.ReadingNaN, nil},
		{"bad query", `sum(requests_total`, source.ReadingError, source.ErrQueryFailed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, err := src.Counter(ctx, tt.q, time.Now())
			if r.Status != tt.want || (tt.errIs == nil) != (err == nil) || (tt.errIs != nil && !errors.Is(err, tt.errIs)) {
				t.Fatalf("Counter(%s) = %+v, %v; want %s", tt.q, r, err, tt.want)
			}
		})
	}
	var pe *source.PrometheusError
	if _, err := src.Counter(ctx, `sum(requests_total`, time.Now()); !errors.As(err, &pe) || pe.Type != "bad_data" || pe.StatusCode != http.StatusBadRequest {
		t.Fatalf("bad query error = %v", err)
	}

	// The target goes away: Prometheus marks its series stale, so the sum is empty at once,
	// and the newest raw sample grows older than the bound.
	target.Close()
	await.Eventually(t, 30*time.Second, func() bool {
		r = readNow(rangeOn)
		return r.Status == source.ReadingStale
	}, "the range reading to go stale")
	if r.Value != 12 || time.Since(r.At) <= 3*time.Second {
		t.Errorf("stale reading %+v", r)
	}
	await.Eventually(t, 30*time.Second, func() bool {
		return readNow(sumOn).Status == source.ReadingEmpty
	}, "the sum to be empty")
}

// The example configuration in deploy/prometheus is valid for the Prometheus CI installs. Its
// syntax only: the Interlock scrape job's token file exists only where Prometheus runs (the
// rules it loads are checked and unit-tested in internal/metrics).
func TestDeployPrometheusConfig(t *testing.T) {
	promtool := promtest.Binary(t, "promtool")
	out, err := exec.Command(promtool, "check", "config", "--syntax-only", "../../deploy/prometheus/prometheus.yml").CombinedOutput()
	if err != nil {
		t.Fatalf("promtool check config: %v\n%s", err, out)
	}
}
