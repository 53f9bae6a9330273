package source

import (
	"bytes"
	"fmt"
	"strings"
	"testing"
	"time"
)

func BenchmarkDecodeExposition(b *testing.B) {
	text := mustReadScrapeFixture(b, "scrape-prometheus-2.42.txt")
	for _, c := range []struct {
		name string
		ct   string
		body []byte
	}{
		{"text-prometheus-271-series", ctText, text},
		{"protobuf-prometheus-271-series", ctProto, textToProto(b, text)},
		// A tenth of the fixture: the OpenMetrics parser takes milliseconds per line.
		{"openmetrics-prometheus-4kb", ctOM, textToOpenMetrics(b, text[:bytes.LastIndexByte(text[:4000], '\n')+1])},
	} {
		format := mustScrapeFormat(b, c.ct)
		b.Run(c.name, func(b *testing.B) {
			b.SetBytes(int64(len(c.body)))
			b.ReportAllocs()
			for b.Loop() {
				if _, err := decodeExposition(c.body, format); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// guardedExposition is a service exposing requests and errors for n flags, two variants each
// (4n series), and the 4n queries that guard them.
func guardedExposition(n int) ([]byte, []Selector) {
	var sb strings.Builder
	var sels []Selector
	for _, metric := range []string{"requests_total", "errors_total"} {
		fmt.Fprintf(&sb, "# TYPE %s counter\n", metric)
		for i := range n {
			for _, v := range []string{"on", "off"} {
				fmt.Fprintf(&sb, "%s{flag=\"flag-%04d\",variant=%q,service=\"checkout\"} %d\n", metric, i, v, 1000+i)
				sel, err := ParseSelector(fmt.Sprintf("%s{flag=\"flag-%04d\",variant=%q}", metric, i, v))
				if err != nil {
					panic(err)
				}
				sels = append(sels, sel)
			}
		}
	}
	return []byte(sb.String()), sels
}

// BenchmarkScrapeTick is the work one scrape does for n guarded rollouts: decode the
// exposition and evaluate every followed query (two arms, two counters each).
func BenchmarkScrapeTick(b *testing.B) {
	for _, n := range []int{10, 100, 1000} {
		body, sels := guardedExposition(n)
		at := time.Unix(1_700_000_000, 0)
		format := mustScrapeFormat(b, ctText)
		b.Run(fmt.Sprintf("rollouts-%d", n), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				e, err := decodeExposition(body, format)
				if err != nil {
					b.Fatal(err)
				}
				for _, sel := range sels {
					if entry := evalScrape(e, sel, at); entry.status != ReadingOK {
						b.Fatal(entry.detail)
					}
				}
			}
		})
	}
}
