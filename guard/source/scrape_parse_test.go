package source

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"net/http"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

func mustReadScrapeFixture(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile("testdata/" + name)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// mustScrapeFormat is the format negotiated for a Content-Type.
func mustScrapeFormat(t testing.TB, ct string) expfmt.Format {
	t.Helper()
	f, err := scrapeFormat(http.Header{"Content-Type": {ct}})
	if err != nil {
		t.Fatal(err)
	}
	return f
}

const (
	ctText  = "text/plain; version=0.0.4; charset=utf-8"
	ctProto = "application/vnd.google.protobuf; proto=io.prometheus.client.MetricFamily; encoding=delimited"
	ctOM    = "application/openmetrics-text; version=1.0.0; charset=utf-8"
)

// textToOpenMetrics re-encodes a text exposition as OpenMetrics 1.0, as client_golang serves it.
// A counter family whose name less _total is another family's (Go's go_memstats_alloc_bytes
// gauge and go_memstats_alloc_bytes_total counter) is left out: OpenMetrics names both
// families go_memstats_alloc_bytes, and the parser refuses the clash.
func textToOpenMetrics(t testing.TB, text []byte) []byte {
	t.Helper()
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(bytes.NewReader(text))
	if err != nil {
		t.Fatal(err)
	}
	names := make([]string, 0, len(fams))
	for name, mf := range fams {
		if base, ok := strings.CutSuffix(name, "_total"); ok && mf.GetType() == dto.MetricType_COUNTER && fams[base] != nil {
			continue
		}
		names = append(names, name)
	}
	slices.Sort(names)
	var b bytes.Buffer
	for _, name := range names {
		if _, err := expfmt.MetricFamilyToOpenMetrics(&b, fams[name]); err != nil {
			t.Fatal(err)
		}
	}
	b.WriteString("# EOF\n")
	return b.Bytes()
}

// textToProto re-encodes a text exposition as delimited protobuf, as client_golang serves it.
func textToProto(t testing.TB, text []byte) []byte {
	t.Helper()
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(bytes.NewReader(text))
	if err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	enc := expfmt.NewEncoder(&b, expfmt.NewFormat(expfmt.TypeProtoDelim))
	for _, mf := range fams {
		if err := enc.Encode(mf); err != nil {
			t.Fatal(err)
		}
	}
	return b.Bytes()
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

func TestDecodeExpositionPrometheusText(t *testing.T) {
	// The real /metrics of Prometheus 2.42 (client_golang's text encoder), format 0.0.4, and
	// the same families as delimited protobuf.
	text := mustReadScrapeFixture(t, "scrape-prometheus-2.42.txt")
	for _, c := range []struct {
		name, ct string
		body     []byte
		series   int
	}{
		{"text", ctText, text, 271}, // grep -vc '^#' testdata/scrape-prometheus-2.42.txt
		{"protobuf", ctProto, textToProto(t, text), 271},
	} {
		t.Run(c.name, func(t *testing.T) {
			e, err := decodeExposition(c.body, mustScrapeFormat(t, c.ct))
			if err != nil {
				t.Fatal(err)
			}
			if got := len(e.samples); got != c.series {
				t.Fatalf("decoded %d series, want %d", got, c.series)
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
		})
	}
}

func TestDecodeExpositionLines(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		wantErr string // empty: must decode
		check   func(t *testing.T, e *exposition)
	}{
		{name: "empty", in: ""},
		{name: "blank lines and comments", in: "\n# just a comment\n\n# HELP x some help\n"},
		{name: "blanks around", in: "x { a = \"b\" , }   7   1700000000000\n", check: func(t *testing.T, e *exposition) {
			if s, ok := findExpoSample(e, "x", "a", "b"); !ok || s.value != 7 {
				t.Errorf("got %+v %v", s, ok)
			}
		}},
		{name: "empty braces", in: "x{} 1\n"},
		{name: "inf and nan", in: "a +Inf\nb -Inf\nc NaN\n", check: func(t *testing.T, e *exposition) {
			a, _ := findExpoSample(e, "a")
			c, _ := findExpoSample(e, "c")
			if !math.IsInf(a.value, 1) || !math.IsNaN(c.value) {
				t.Errorf("a=%v c=%v", a.value, c.value)
			}
		}},
		{name: "quoted names", in: "# TYPE \"my.count\" counter\n{\"my.count\",\"a.b\"=\"c\"} 3\n", check: func(t *testing.T, e *exposition) {
			s, ok := findExpoSample(e, "my.count", "a.b", "c")
			if !ok || !s.counter || s.value != 3 {
				t.Errorf("got %+v %v", s, ok)
			}
		}},
		{name: "duplicate series marked", in: "x{a=\"1\",b=\"2\"} 1\nx{b=\"2\",a=\"1\"} 1\nx{a=\"2\"} 1\n", check: func(t *testing.T, e *exposition) {
			d, _ := findExpoSample(e, "x", "a", "1", "b", "2")
			o, _ := findExpoSample(e, "x", "a", "2")
			if !d.dup || o.dup || len(e.samples) != 2 {
				t.Errorf("dup=%v other=%v n=%d", d.dup, o.dup, len(e.samples))
			}
		}},
		{name: "escapes", in: `x{a="q\"b\\s\nn"} 1` + "\n", check: func(t *testing.T, e *exposition) {
			if _, ok := findExpoSample(e, "x", "a", "q\"b\\s\nn"); !ok {
				t.Error("escaped value not decoded")
			}
		}},
		{name: "kinds", in: "# TYPE g gauge\ng 1\n# TYPE s summary\ns{quantile=\"0.5\"} 1\ns_sum 2\ns_count 3\n# TYPE h histogram\nh_bucket{le=\"1\"} 1\nh_bucket{le=\"+Inf\"} 2\nh_sum 3\nh_count 2\nu 4\n", check: func(t *testing.T, e *exposition) {
			for _, c := range []struct {
				name    string
				labels  []string
				typ     string
				counter bool
			}{
				{"g", nil, "gauge", false},
				{"s", []string{"quantile", "0.5"}, "summary", false},
				{"s_sum", nil, "summary", true},
				{"s_count", nil, "summary", true},
				{"h_bucket", []string{"le", "1"}, "histogram", true},
				{"h_bucket", []string{"le", "+Inf"}, "histogram", true},
				{"h_count", nil, "histogram", true},
				{"u", nil, "untyped", true},
			} {
				s, ok := findExpoSample(e, c.name, c.labels...)
				if !ok || s.typ != c.typ || s.counter != c.counter {
					t.Errorf("%s%v = %+v, %v; want %s/%v", c.name, c.labels, s, ok, c.typ, c.counter)
				}
			}
		}},

		{name: "no value", in: "x\n", wantErr: "line 1"},
		{name: "bad value", in: "x abc\n", wantErr: "line 1"},
		{name: "float timestamp", in: "x 1 1.5\n", wantErr: "timestamp"},
		{name: "trailing garbage", in: "x 1 2 3\n", wantErr: "line 1"},
		{name: "exemplar", in: "x 1 # {a=\"b\"} 1\n", wantErr: "line 1"},
		{name: "unclosed braces", in: "x{a=\"b\" 1\n", wantErr: "line 1"},
		{name: "unquoted value", in: "x{a=b} 1\n", wantErr: "line 1"},
		{name: "bad escape", in: "x{a=\"\\t\"} 1\n", wantErr: "escape"},
		{name: "duplicate label", in: "x{a=\"1\",a=\"2\"} 1\n", wantErr: "duplicate label"},
		{name: "invalid utf8", in: "x{a=\"\xff\"} 1\n", wantErr: "line 1"},
		{name: "unknown type", in: "# TYPE x thing\nx 1\n", wantErr: "unknown metric type"},
		{name: "second type", in: "# TYPE x counter\n# TYPE x gauge\nx 1\n", wantErr: "second TYPE"},
		{name: "openmetrics type", in: "# TYPE x info\nx_info 1\n# EOF\n", wantErr: "unknown metric type"},
	}
	format := mustScrapeFormat(t, ctText)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e, err := decodeExposition([]byte(tt.in), format)
			if tt.wantErr != "" {
				if err == nil {
					t.Fatalf("decoded %q, want an error containing %q", tt.in, tt.wantErr)
				}
				if !errors.Is(err, errExposition) || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("error = %v, want errExposition containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("decode %q: %v", tt.in, err)
			}
			if tt.check != nil {
				tt.check(t, e)
			}
		})
	}
}

func TestDecodeExpositionProtobufDuplicates(t *testing.T) {
	// Protobuf may repeat a family; a series in both is a duplicate.
	var b bytes.Buffer
	enc := expfmt.NewEncoder(&b, expfmt.NewFormat(expfmt.TypeProtoDelim))
	for _, v := range []string{"1", "1", "2"} {
		name, label, value, typ := "x_total", "a", v, dto.MetricType_COUNTER
		val := 5.0
		mf := &dto.MetricFamily{Name: &name, Type: &typ, Metric: []*dto.Metric{{
			Label:   []*dto.LabelPair{{Name: &label, Value: &value}},
			Counter: &dto.Counter{Value: &val},
		}}}
		if err := enc.Encode(mf); err != nil {
			t.Fatal(err)
		}
	}
	e, err := decodeExposition(b.Bytes(), mustScrapeFormat(t, ctProto))
	if err != nil {
		t.Fatal(err)
	}
	one, _ := findExpoSample(e, "x_total", "a", "1")
	two, ok := findExpoSample(e, "x_total", "a", "2")
	if !one.dup || !ok || two.dup || len(e.samples) != 2 {
		t.Fatalf("one=%+v two=%+v n=%d", one, two, len(e.samples))
	}
	for _, bad := range [][]byte{
		{0x05, 0xff, 0xff},                   // truncated message
		{0xb6, 0xa4, 0xdd, 0xc7, 0x45, 0x3f}, // a length prefix of gigabytes
		{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01}, // a varint overflow
	} {
		if _, err := decodeExposition(bad, mustScrapeFormat(t, ctProto)); !errors.Is(err, errExposition) {
			t.Fatalf("bad protobuf %x: %v", bad, err)
		}
	}
	// The bogus length is refused before expfmt would allocate it.
	if err := checkDelimited([]byte{0xb6, 0xa4, 0xdd, 0xc7, 0x45, 0x3f}); err == nil || !strings.Contains(err.Error(), "claims") {
		t.Fatalf("checkDelimited of a 18 GB prefix: %v", err)
	}
}

func TestScrapeFormat(t *testing.T) {
	tests := []struct {
		ct   string
		want expfmt.FormatType
		err  bool
	}{
		{"", expfmt.TypeTextPlain, false},
		{ctText, expfmt.TypeTextPlain, false},
		{"text/plain", expfmt.TypeTextPlain, false},
		{ctProto, expfmt.TypeProtoDelim, false},
		{"application/openmetrics-text; version=1.0.0; charset=utf-8", expfmt.TypeOpenMetrics, false},
		{"application/openmetrics-text; version=0.0.1", expfmt.TypeOpenMetrics, false},
		{"application/openmetrics-text; version=2.0.0", expfmt.TypeOpenMetrics, false},
		{"application/openmetrics-text; version=9.9.9", 0, true},
		{"application/vnd.google.protobuf; proto=io.prometheus.client.MetricFamily; encoding=text", 0, true},
		{"text/plain; version=1.0.0", expfmt.TypeTextPlain, false},
		{"text/plain; version=2.0.0", 0, true},
		{"text/html", 0, true},
		{"text/plain; ===", 0, true},
	}
	for _, tt := range tests {
		t.Run(tt.ct, func(t *testing.T) {
			got, err := scrapeFormat(http.Header{"Content-Type": {tt.ct}})
			if (err != nil) != tt.err || (!tt.err && got.FormatType() != tt.want) {
				t.Fatalf("scrapeFormat(%q) = %v, %v", tt.ct, got, err)
			}
			if !tt.err && got.ToEscapingScheme() != model.NoEscaping {
				t.Fatalf("scrapeFormat(%q) = %v: UTF-8 names not allowed", tt.ct, got)
			}
		})
	}
}

// FuzzDecodeExposition feeds arbitrary bodies to both decoders: they must never panic, and
// what they accept must hold together (indexed series, and a counter query over it never
// reads ok with a negative or non-finite sum).
func FuzzDecodeExposition(f *testing.F) {
	text := mustReadScrapeFixture(f, "scrape-prometheus-2.42.txt")[:4000]
	text = text[:bytes.LastIndexByte(text, '\n')+1]
	f.Add(text, false)
	f.Add(textToProto(f, text), true)
	f.Add([]byte("x{a=\"b\"} 1 1700000000000\n"), false)
	f.Add([]byte("{\"a.b\",\"c\"=\"d\"} NaN\n"), false)
	f.Add([]byte("x{a=\"b\"} -1\nx{a=\"b\"} 2\n"), false)
	f.Add(textToProto(f, []byte("# TYPE x counter\nx{a=\"b\"} 3\n")), true)
	sel, err := ParseSelector(`x{a="b"}`)
	if err != nil {
		f.Fatal(err)
	}
	textFormat, protoFormat := mustScrapeFormat(f, ctText), mustScrapeFormat(f, ctProto)
	f.Fuzz(func(t *testing.T, body []byte, proto bool) {
		format := textFormat
		if proto {
			format = protoFormat
		}
		e, err := decodeExposition(body, format)
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
		if n != len(e.samples) || len(e.seen) != n {
			t.Fatalf("index holds %d series (%d keys), decoded %d", n, len(e.seen), len(e.samples))
		}
		for _, q := range []Selector{sel, {Metric: "x"}} {
			entry := evalScrape(e, q, time.Unix(0, 0))
			if entry.status == ReadingOK && !validCounterValue(entry.value) {
				t.Fatalf("ok reading with value %v", entry.value)
			}
		}
	})
}

func TestDecodeExpositionOpenMetrics(t *testing.T) {
	// The hand-written OpenMetrics fixture without its info and stateset families, which the
	// parser does not support: exemplars, _created series, units, timestamps with fractions.
	full := mustReadScrapeFixture(t, "scrape-openmetrics.txt")
	var kept []string
	skip := false
	for line := range strings.Lines(string(full)) {
		if strings.HasPrefix(line, "# TYPE ") {
			skip = strings.HasPrefix(line, "# TYPE build info") || strings.HasPrefix(line, "# TYPE feature_state stateset")
		} else if strings.HasPrefix(line, "# HELP ") || line == "# EOF\n" {
			skip = false
		}
		if !skip {
			kept = append(kept, line)
		}
	}
	e, err := decodeExposition([]byte(strings.Join(kept, "")), mustScrapeFormat(t, ctOM))
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name    string
		labels  []string
		value   float64
		typ     string
		counter bool
	}{
		{"process_cpu_seconds_total", nil, 0.48, "counter", true},
		{"http_requests_total", []string{"route", "/checkout", "code", "200"}, 1027, "counter", true},
		{"http_request_duration_seconds_bucket", []string{"route", "/checkout", "le", "+Inf"}, 1030, "histogram", true},
		{"http_request_duration_seconds_count", []string{"route", "/checkout"}, 1030, "histogram", true},
		{"rpc_duration_seconds_count", nil, 17, "summary", true},
		{"rpc_duration_seconds", []string{"quantile", "0.5"}, 0.012, "summary", false},
		{"queue_depth", []string{"queue", "mail"}, 12, "gauge", false},
		{"jobs_bucket", []string{"le", "+Inf"}, 5, "gauge_histogram", false},
		{"mystery", nil, 42, "untyped", true},
	} {
		s, ok := findExpoSample(e, c.name, c.labels...)
		if !ok || s.value != c.value || s.typ != c.typ || s.counter != c.counter {
			t.Errorf("%s%v = %+v, %v; want %v %s/%v", c.name, c.labels, s, ok, c.value, c.typ, c.counter)
		}
	}
	// _created is the counter's start time, not a series of its own.
	if _, ok := findExpoSample(e, "http_requests_created", "route", "/checkout", "code", "200"); ok {
		t.Error("http_requests_created decoded as a series")
	}
	// The whole fixture is refused, naming the unsupported type, rather than misread.
	if _, err := decodeExposition(full, mustScrapeFormat(t, ctOM)); !errors.Is(err, errExposition) || !strings.Contains(err.Error(), "info") {
		t.Fatalf("fixture with an info family: %v", err)
	}
	// An OpenMetrics body over the bound is refused before its slow parser sees it.
	var big strings.Builder
	big.WriteString("# TYPE x counter\n")
	for i := 0; big.Len() <= maxOpenMetricsBytes; i++ {
		fmt.Fprintf(&big, "x_total{i=\"%d\"} 1\n", i)
	}
	big.WriteString("# EOF\n")
	if _, err := decodeExposition([]byte(big.String()), mustScrapeFormat(t, ctOM)); !errors.Is(err, errExposition) || !strings.Contains(err.Error(), fmt.Sprintf("over the %d", maxOpenMetricsBytes)) {
		t.Fatalf("large OpenMetrics body: %v", err)
	}
	// OpenMetrics requires its # EOF.
	if _, err := decodeExposition([]byte("# TYPE x counter\nx_total 1\n"), mustScrapeFormat(t, ctOM)); !errors.Is(err, errExposition) {
		t.Fatalf("body without # EOF: %v", err)
	}
}

// FuzzDecodeOpenMetrics feeds arbitrary bodies to the OpenMetrics decoder, with the same
// invariants as FuzzDecodeExposition.
func FuzzDecodeOpenMetrics(f *testing.F) {
	text := mustReadScrapeFixture(f, "scrape-prometheus-2.42.txt")[:4000]
	text = text[:bytes.LastIndexByte(text, '\n')+1]
	f.Add(textToOpenMetrics(f, text))
	f.Add([]byte("# TYPE x counter\nx_total{a=\"b\"} 3 # {t=\"1\"} 1 1.5\nx_created{a=\"b\"} 1\n# EOF\n"))
	f.Add([]byte("# TYPE x unknown\nx{a=\"b\"} -1\nx{a=\"b\"} 2\n# EOF\n"))
	sel, err := ParseSelector(`x{a="b"}`)
	if err != nil {
		f.Fatal(err)
	}
	format := mustScrapeFormat(f, ctOM)
	f.Fuzz(func(t *testing.T, body []byte) {
		e, err := decodeExposition(body, format)
		if err != nil {
			if !errors.Is(err, errExposition) {
				t.Fatalf("error %v does not match errExposition", err)
			}
			return
		}
		if len(e.seen) != len(e.samples) {
			t.Fatalf("index holds %d keys, decoded %d", len(e.seen), len(e.samples))
		}
		for _, q := range []Selector{sel, {Metric: "x"}, {Metric: "x_total"}} {
			entry := evalScrape(e, q, time.Unix(0, 0))
			if entry.status == ReadingOK && !validCounterValue(entry.value) {
				t.Fatalf("ok reading with value %v", entry.value)
			}
		}
	})
}
