package source_test

import (
	"encoding/json"
	"errors"
	"math"
	"testing"
	"time"

	"github.com/interlock-dev/interlock/guard/source"
)

func TestDelta(t *testing.T) {
	t0 := time.Unix(1_700_000_000, 0)
	ok := func(v float64, at time.Time) source.Reading {
		return source.Reading{Value: v, At: at, Status: source.ReadingOK}
	}
	with := func(st source.ReadingStatus) source.Reading {
		return source.Reading{Status: st, At: t0}
	}
	tests := []struct {
		name      string
		prev, cur source.Reading
		want      float64
		status    source.DeltaStatus
		usable    bool
	}{
		{"growth", ok(100, t0), ok(130, t0.Add(15*time.Second)), 30, source.DeltaOK, true},
		{"no growth", ok(100, t0), ok(100, t0.Add(15*time.Second)), 0, source.DeltaOK, true},
		{"same instant", ok(100, t0), ok(100, t0), 0, source.DeltaOK, true},
		{"fractional", ok(0.5, t0), ok(2.25, t0.Add(time.Second)), 1.75, source.DeltaOK, true},
		{"reset", ok(1000, t0), ok(7, t0.Add(15*time.Second)), 7, source.DeltaReset, true},
		{"reset to zero", ok(1000, t0), ok(0, t0.Add(15*time.Second)), 0, source.DeltaReset, true},
		{"out of order", ok(100, t0.Add(time.Second)), ok(130, t0), 0, source.DeltaOutOfOrder, false},
		{"prev empty", with(source.ReadingEmpty), ok(1, t0), 0, source.DeltaStatus("empty"), false},
		{"cur nan", ok(1, t0), with(source.ReadingNaN), 0, source.DeltaStatus("nan"), false},
		{"cur stale", ok(1, t0), with(source.ReadingStale), 0, source.DeltaStatus("stale"), false},
		{"cur error", ok(1, t0), with(source.ReadingError), 0, source.DeltaStatus("error"), false},
		{"cur timeout", ok(1, t0), with(source.ReadingTimeout), 0, source.DeltaStatus("timeout"), false},
		{"cur ambiguous", ok(1, t0), with(source.ReadingAmbiguous), 0, source.DeltaStatus("ambiguous"), false},
		{"cur's status first", with(source.ReadingEmpty), with(source.ReadingTimeout), 0, source.DeltaStatus("timeout"), false},
		{"zero value reading", source.Reading{}, ok(1, t0), 0, source.DeltaInvalid, false},
		{"unknown status", ok(1, t0), source.Reading{Status: "fine", Value: 3, At: t0}, 0, source.DeltaInvalid, false},
		{"ok but NaN", ok(1, t0), ok(math.NaN(), t0.Add(time.Second)), 0, source.DeltaInvalid, false},
		{"ok but +Inf", ok(1, t0), ok(math.Inf(1), t0.Add(time.Second)), 0, source.DeltaInvalid, false},
		{"ok but negative", ok(-5, t0), ok(1, t0.Add(time.Second)), 0, source.DeltaInvalid, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, st := source.Delta(tt.prev, tt.cur)
			if got != tt.want || st != tt.status {
				t.Fatalf("Delta = %v, %q; want %v, %q", got, st, tt.want, tt.status)
			}
			if st.Usable() != tt.usable {
				t.Fatalf("Usable() = %v, want %v", st.Usable(), tt.usable)
			}
			if got < 0 || math.IsNaN(got) || math.IsInf(got, 0) {
				t.Fatalf("Delta returned %v", got)
			}
		})
	}
}

func TestReadingStatus(t *testing.T) {
	for _, st := range []source.ReadingStatus{source.ReadingOK, source.ReadingEmpty, source.ReadingNaN,
		source.ReadingStale, source.ReadingError, source.ReadingTimeout, source.ReadingAmbiguous} {
		if !st.Valid() {
			t.Errorf("%q not valid", st)
		}
	}
	for _, st := range []source.ReadingStatus{"", "OK", "fine"} {
		if st.Valid() {
			t.Errorf("%q valid", st)
		}
	}
	tests := []struct {
		name string
		r    source.Reading
		ok   bool
	}{
		{"ok", source.Reading{Status: source.ReadingOK, Value: 3}, true},
		{"ok zero", source.Reading{Status: source.ReadingOK}, true},
		{"stale", source.Reading{Status: source.ReadingStale, Value: 3}, false},
		{"ok NaN", source.Reading{Status: source.ReadingOK, Value: math.NaN()}, false},
		{"ok negative", source.Reading{Status: source.ReadingOK, Value: -1}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.r.OK() != tt.ok {
				t.Fatalf("OK() = %v", !tt.ok)
			}
		})
	}
}

// A reading is kept as evidence: every reading a source returns must encode as JSON.
func TestReadingEncodes(t *testing.T) {
	r := source.Reading{Status: source.ReadingNaN, Query: "q", Requested: time.Unix(1, 0), Detail: "value is NaN"}
	b, err := json.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	var back source.Reading
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	if back.Status != r.Status || back.Query != r.Query || !back.Requested.Equal(r.Requested) {
		t.Fatalf("round trip: %+v", back)
	}
}

func TestAllowSources(t *testing.T) {
	allow := source.AllowSources([]string{"http://127.0.0.1:8081/", "https://prom.internal:9090"})
	for _, tc := range []struct {
		url string
		ok  bool
	}{
		{"http://127.0.0.1:8081/metrics", true},
		{"http://127.0.0.1:8081/", true},
		{"http://127.0.0.1:8081/metrics/../admin", false},
		{"http://127.0.0.1:8081/%2e%2e/admin", false},
		{"http://127.0.0.1:8081/./metrics", false},
		{"https://prom.internal:9090", true},
		{"https://prom.internal:9090/api/v1/query", true},
		{"http://127.0.0.1:80810/metrics", false},
		{"http://127.0.0.1:8082/metrics", false},
		{"https://127.0.0.1:8081/metrics", false},
		{"http://169.254.169.254/latest/meta-data/", false},
		{"file:///etc/passwd", false},
		{"not a url", false},
	} {
		err := allow(tc.url)
		if (err == nil) != tc.ok || err != nil && !errors.Is(err, source.ErrInvalidSource) {
			t.Errorf("%s: %v, want ok=%v", tc.url, err, tc.ok)
		}
	}
	under := source.AllowSources([]string{"http://127.0.0.1:8081/metrics"})
	for url, ok := range map[string]bool{
		"http://127.0.0.1:8081/metrics":        true,
		"http://127.0.0.1:8081/metrics/":       true,
		"http://127.0.0.1:8081/metrics/x":      true,
		"http://127.0.0.1:8081/metrics?x=1":    true,
		"http://127.0.0.1:8081/metricsx":       false,
		"http://127.0.0.1:8081/metrics-admin/": false,
		"http://127.0.0.1:8081/":               false,
	} {
		if err := under(url); (err == nil) != ok {
			t.Errorf("prefix .../metrics, %s: %v, want ok=%v", url, err, ok)
		}
	}
	// Without prefixes: loopback only.
	for url, ok := range map[string]bool{
		"http://127.0.0.1:8081/metrics":            true,
		"http://127.9.9.9/metrics":                 true,
		"http://localhost:9090":                    true,
		"http://LOCALHOST:9090":                    true,
		"http://[::1]:9090/api/v1/query":           true,
		"http://[::ffff:127.0.0.1]:9090/":          true,
		"http://anything:1/x":                      false,
		"http://10.0.0.1:9090":                     false,
		"http://169.254.169.254/latest/meta-data/": false,
		"http://0.0.0.0:9090":                      false,
		"http://localhost.evil.example:9090":       false,
		"http://127.0.0.1.nip.io:9090":             false,
	} {
		err := source.AllowSources(nil)(url)
		if (err == nil) != ok || err != nil && !errors.Is(err, source.ErrInvalidSource) {
			t.Errorf("no prefixes, %s: %v, want ok=%v", url, err, ok)
		}
	}
	if err := source.AllowSources(nil)("gopher://x/"); err == nil {
		t.Error("no prefixes still refuses non-HTTP URLs")
	}
}
