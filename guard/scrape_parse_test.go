package guard

import (
	"errors"
	"math"
	"os"
	"strings"
	"testing"
	"time"
)

func mustReadScrapeFixture(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile("testdata/" + name)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// findExpoSample returns the series with this name and exactly these labels.
func findExpoSample(e *exposition, name string, labels ...string) (expoSample, bool) {
	for _, i := range e.byName[name] {
		s := e.samples[i]
		if len(s.labels)*2 != len(labels) {
			continue
		}
		match := true
		for j := 0; j < len(labels); j += 2 {
			found := false
			for _, l := range s.labels {
				if l.name == labels[j] && l.value == labels[j+1] {
					found = true
				}
			}
			match = match && found
		}
		if match {
			return s, true
		}
	}
	return expoSample{}, false
}

func TestParseExpositionPrometheusText(t *testing.T) {
	// The real /metrics of Prometheus 2.42 (client_golang's text encoder), format 0.0.4.
	e, err := parseExposition(mustReadScrapeFixture(t, "scrape-prometheus-2.42.txt"), expoText)
	if err != nil {
		t.Fatal(err)
	}
	if got := len(e.samples); got != 271 { // grep -vc '^#' testdata/scrape-prometheus-2.42.txt
		t.Fatalf("parsed %d series, want the fixture's 271", got)
	}
	tests := []struct {
		name    string
		labels  []string
		value   float64
		typ     string
		counter bool
	}{
		{"go_gc_duration_seconds_count", nil, 3, "summary", true},
		{"go_gc_duration_seconds_sum", nil, 0.006422536, "summary", true},
		{"go_gc_duration_seconds", []string{"quantile", "0.25"}, 2.3716e-05, "summary", false},
		{"promhttp_metric_handler_requests_total", []string{"code", "200"}, 0, "counter", true},
		{"prometheus_tsdb_compaction_chunk_range_seconds_bucket", []string{"le", "+Inf"}, 0, "histogram", true},
		{"go_goroutines", nil, -1, "gauge", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, ok := findExpoSample(e, tt.name, tt.labels...)
			if !ok {
				t.Fatalf("series %s%v not found", tt.name, tt.labels)
			}
			if tt.value >= 0 && s.value != tt.value {
				t.Errorf("value = %v, want %v", s.value, tt.value)
			}
			if s.typ != tt.typ || s.counter != tt.counter {
				t.Errorf("kind = %s/%v, want %s/%v", s.typ, s.counter, tt.typ, tt.counter)
			}
		})
	}
	nan, ok := findExpoSample(e, "prometheus_engine_query_duration_seconds", "slice", "inner_eval", "quantile", "0.5")
	if !ok || !math.IsNaN(nan.value) {
		t.Errorf("NaN quantile = %v, %v", nan.value, ok)
	}
}

func TestParseExpositionOpenMetrics(t *testing.T) {
	e, err := parseExposition(mustReadScrapeFixture(t, "scrape-openmetrics.txt"), expoOpenMetrics)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		labels  []string
		value   float64
		typ     string
		counter bool
	}{
		{"process_cpu_seconds_total", nil, 0.48, "counter", true},
		{"http_requests_total", []string{"route", "/checkout", "code", "200"}, 1027, "counter", true},
		{"http_requests_created", []string{"route", "/checkout", "code", "200"}, 1699990000.5, "counter", false},
		{"http_request_duration_seconds_bucket", []string{"route", "/checkout", "le", "0.25"}, 1020, "histogram", true},
		{"http_request_duration_seconds_count", []string{"route", "/checkout"}, 1030, "histogram", true},
		{"http_request_duration_seconds_created", []string{"route", "/checkout"}, 1699990000.5, "histogram", false},
		{"rpc_duration_seconds_count", nil, 17, "summary", true},
		{"rpc_duration_seconds", []string{"quantile", "0.5"}, 0.012, "summary", false},
		{"queue_depth", []string{"queue", "sms"}, -1, "gauge", false},
		{"build_info", []string{"version", "1.2.3", "revision", "abc \"quoted\" \\ back\nslash"}, 1, "info", false},
		{"feature_state", []string{"feature_state", "a"}, 1, "stateset", false},
		{"jobs_gcount", nil, 5, "gaugehistogram", false},
		{"jobs_bucket", []string{"le", "+Inf"}, 5, "gaugehistogram", false},
		{"mystery", nil, 42, "unknown", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, ok := findExpoSample(e, tt.name, tt.labels...)
			if !ok {
				t.Fatalf("series %s%q not found", tt.name, tt.labels)
			}
			if s.value != tt.value {
				t.Errorf("value = %v, want %v", s.value, tt.value)
			}
			if s.typ != tt.typ || s.counter != tt.counter {
				t.Errorf("kind = %s/%v, want %s/%v", s.typ, s.counter, tt.typ, tt.counter)
			}
		})
	}
}

func TestParseExpositionLines(t *testing.T) {
	tests := []struct {
		name    string
		format  expoFormat
		in      string
		wantErr string // empty: must parse
		check   func(t *testing.T, e *exposition)
	}{
		{name: "empty text", format: expoText, in: ""},
		{name: "blank lines and comments", format: expoText, in: "\n# just a comment\n   \n# HELP x some help\n"},
		{name: "blanks around", format: expoText, in: "  x { a = \"b\" , }   7   1700000000000  \n", check: func(t *testing.T, e *exposition) {
			if s, ok := findExpoSample(e, "x", "a", "b"); !ok || s.value != 7 {
				t.Errorf("got %+v %v", s, ok)
			}
		}},
		{name: "crlf", format: expoText, in: "x 1\r\ny 2\r\n"},
		{name: "empty braces", format: expoText, in: "x{} 1\n"},
		{name: "inf and nan", format: expoText, in: "a +Inf\nb -Inf\nc NaN\n", check: func(t *testing.T, e *exposition) {
			a, _ := findExpoSample(e, "a")
			c, _ := findExpoSample(e, "c")
			if !math.IsInf(a.value, 1) || !math.IsNaN(c.value) {
				t.Errorf("a=%v c=%v", a.value, c.value)
			}
		}},
		{name: "quoted names", format: expoText, in: "# TYPE \"my.count\" counter\n{\"my.count\",\"a.b\"=\"c\"} 3\n", check: func(t *testing.T, e *exposition) {
			s, ok := findExpoSample(e, "my.count", "a.b", "c")
			if !ok || !s.counter || s.value != 3 {
				t.Errorf("got %+v %v", s, ok)
			}
		}},
		{name: "duplicate series marked", format: expoText, in: "x{a=\"1\",b=\"2\"} 1\nx{b=\"2\",a=\"1\"} 1\nx{a=\"2\"} 1\n", check: func(t *testing.T, e *exposition) {
			d, _ := findExpoSample(e, "x", "a", "1", "b", "2")
			o, _ := findExpoSample(e, "x", "a", "2")
			if !d.dup || o.dup || len(e.samples) != 2 {
				t.Errorf("dup=%v other=%v n=%d", d.dup, o.dup, len(e.samples))
			}
		}},
		{name: "escapes", format: expoText, in: `x{a="q\"b\\s\nn"} 1` + "\n", check: func(t *testing.T, e *exposition) {
			if _, ok := findExpoSample(e, "x", "a", "q\"b\\s\nn"); !ok {
				t.Error("escaped value not decoded")
			}
		}},
		{name: "om minimal", format: expoOpenMetrics, in: "# EOF\n"},
		{name: "om quoted names", format: expoOpenMetrics, in: "# TYPE \"checkout.errors\" counter\n{\"checkout.errors_total\",variant=\"on\"} 2\n{variant=\"off\",\"checkout.errors_total\"} 1\n# EOF\n", check: func(t *testing.T, e *exposition) {
			on, ok1 := findExpoSample(e, "checkout.errors_total", "variant", "on")
			off, ok2 := findExpoSample(e, "checkout.errors_total", "variant", "off")
			if !ok1 || !ok2 || on.value != 2 || off.value != 1 || !on.counter || on.typ != "counter" {
				t.Errorf("on=%+v off=%+v", on, off)
			}
		}},
		{name: "om eof without newline", format: expoOpenMetrics, in: "a_total 1\n# EOF"},
		{name: "om float timestamp", format: expoOpenMetrics, in: "a 1 1700000000.5\n# EOF\n"},

		{name: "no value", format: expoText, in: "x\n", wantErr: "line 1"},
		{name: "bad value", format: expoText, in: "x abc\n", wantErr: "not a number"},
		{name: "hex value", format: expoText, in: "x 0x10\n", wantErr: "not a number"},
		{name: "float timestamp in text", format: expoText, in: "x 1 1.5\n", wantErr: "timestamp"},
		{name: "trailing garbage", format: expoText, in: "x 1 2 3\n", wantErr: "after the value"},
		{name: "exemplar in text", format: expoText, in: "x 1 # {a=\"b\"} 1\n", wantErr: "after the value"},
		{name: "unclosed braces", format: expoText, in: "x{a=\"b\" 1\n", wantErr: "line 1"},
		{name: "unquoted value", format: expoText, in: "x{a=b} 1\n", wantErr: "line 1"},
		{name: "bad escape", format: expoText, in: "x{a=\"\\t\"} 1\n", wantErr: "invalid escape"},
		{name: "duplicate label", format: expoText, in: "x{a=\"1\",a=\"2\"} 1\n", wantErr: "twice"},
		{name: "second metric name", format: expoText, in: "x{\"y\"} 1\n", wantErr: "second metric name"},
		{name: "no name", format: expoText, in: "{a=\"b\"} 1\n", wantErr: "no metric name"},
		{name: "invalid utf8", format: expoText, in: "x{a=\"\xff\"} 1\n", wantErr: "UTF-8"},
		{name: "unknown type", format: expoText, in: "# TYPE x thing\nx 1\n", wantErr: "unknown type"},
		{name: "second type", format: expoText, in: "# TYPE x counter\n# TYPE x gauge\nx 1\n", wantErr: "second TYPE"},
		{name: "value glued to braces", format: expoText, in: "x{}1\n", wantErr: "blank before the value"},
		{name: "om missing eof", format: expoOpenMetrics, in: "a_total 1\n", wantErr: "EOF"},
		{name: "om empty", format: expoOpenMetrics, in: "", wantErr: "EOF"},
		{name: "om content after eof", format: expoOpenMetrics, in: "# EOF\na 1\n", wantErr: "after # EOF"},
		{name: "om blank line", format: expoOpenMetrics, in: "a 1\n\n# EOF\n", wantErr: "empty line"},
		{name: "om no newline", format: expoOpenMetrics, in: "a 1", wantErr: "newline"},
		{name: "om bad exemplar", format: expoOpenMetrics, in: "a_total 1 # x\n# EOF\n", wantErr: "exemplar"},
		{name: "om nan timestamp", format: expoOpenMetrics, in: "a 1 NaN\n# EOF\n", wantErr: "timestamp"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e, err := parseExposition([]byte(tt.in), tt.format)
			if tt.wantErr != "" {
				if err == nil {
					t.Fatalf("parsed %q, want an error containing %q", tt.in, tt.wantErr)
				}
				if !errors.Is(err, errExposition) || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("error = %v, want errExposition containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("parse %q: %v", tt.in, err)
			}
			if tt.check != nil {
				tt.check(t, e)
			}
		})
	}
}

func TestFormatFromContentType(t *testing.T) {
	tests := []struct {
		ct   string
		want expoFormat
		err  bool
	}{
		{"", expoText, false},
		{"text/plain; version=0.0.4; charset=utf-8", expoText, false},
		{"text/plain", expoText, false},
		{"application/openmetrics-text; version=1.0.0; charset=utf-8", expoOpenMetrics, false},
		{"application/vnd.google.protobuf; proto=io.prometheus.client.MetricFamily; encoding=delimited", 0, true},
		{"text/html", 0, true},
		{"text/plain; ===", 0, true},
	}
	for _, tt := range tests {
		t.Run(tt.ct, func(t *testing.T) {
			got, err := formatFromContentType(tt.ct)
			if (err != nil) != tt.err || (!tt.err && got != tt.want) {
				t.Fatalf("formatFromContentType(%q) = %v, %v", tt.ct, got, err)
			}
		})
	}
}

// FuzzParseExposition feeds arbitrary bodies to both parsers: they must never panic, and what
// they accept must hold together (indexed series, no duplicate left unmarked, and a counter
// query over it never reads ok with a negative or non-finite sum).
func FuzzParseExposition(f *testing.F) {
	f.Add(mustReadScrapeFixture(f, "scrape-openmetrics.txt"), true)
	f.Add(mustReadScrapeFixture(f, "scrape-prometheus-2.42.txt")[:4000], false)
	f.Add([]byte("x{a=\"b\"} 1 1700000000000\n"), false)
	f.Add([]byte("{\"a.b\",\"c\"=\"d\"} NaN\n# EOF\n"), true)
	f.Add([]byte("a_total 1 # {t=\"x\"} 1 2\n# EOF"), true)
	sel, err := ParseSelector(`x{a="b"}`)
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, body []byte, om bool) {
		format := expoText
		if om {
			format = expoOpenMetrics
		}
		e, err := parseExposition(body, format)
		if err != nil {
			if !errors.Is(err, errExposition) {
				t.Fatalf("error %v does not match errExposition", err)
			}
			return
		}
		n := 0
		for name, idx := range e.byName {
			for _, i := range idx {
				if e.samples[i].name != name {
					t.Fatalf("index %s points at %s", name, e.samples[i].name)
				}
				n++
			}
		}
		if n != len(e.samples) {
			t.Fatalf("index holds %d series, parsed %d", n, len(e.samples))
		}
		for _, q := range []Selector{sel, {Metric: "x"}} {
			entry := evalScrape(e, q, time.Unix(0, 0))
			if entry.status == ReadingOK && !validCounterValue(entry.value) {
				t.Fatalf("ok reading with value %v", entry.value)
			}
		}
	})
}
