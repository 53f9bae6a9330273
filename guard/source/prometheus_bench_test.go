package source

import (
	"context"
	"net/http"
	"testing"
	"time"
)

// BenchmarkPrometheusCounter reads one instant vector through the API client and the judge,
// from an in-memory transport: the cost of the guard's side of a query, without the network.
func BenchmarkPrometheusCounter(b *testing.B) {
	body := []byte(`{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1700000000.5,"1027"]}]}}`)
	src, err := NewPrometheusSource(PrometheusOptions{
		URL:    "http://prometheus.invalid",
		Client: &http.Client{Transport: answering{200, body}},
	})
	if err != nil {
		b.Fatal(err)
	}
	at := time.UnixMilli(1_700_000_000_500)
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		r, err := src.Counter(ctx, "q", at)
		if err != nil || r.Status != ReadingOK {
			b.Fatal(r.Detail, err)
		}
	}
}

func BenchmarkParseSelector(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		if _, err := ParseSelector(`http_requests_total{service="checkout",flag="checkout-v2",variant="on",code=~"5.."}`); err != nil {
			b.Fatal(err)
		}
	}
}
