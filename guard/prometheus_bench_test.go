package guard

import (
	"testing"
	"time"
)

func BenchmarkDecodePromResponse(b *testing.B) {
	body := []byte(`{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1700000000.5,"1027"]}]}}`)
	at := time.UnixMilli(1_700_000_000_500)
	b.ReportAllocs()
	for b.Loop() {
		res, err := decodePromResponse(body, 200)
		if err != nil {
			b.Fatal(err)
		}
		r := Reading{}
		judgePromResult(&r, res, at, time.Minute)
		if r.Status != ReadingOK {
			b.Fatal(r.Detail)
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
