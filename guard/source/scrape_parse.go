package source

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"slices"
	"strings"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"google.golang.org/protobuf/encoding/protowire"
)

// Expositions are decoded by github.com/prometheus/common/expfmt: the text format (0.0.4, and
// 1.0.0 with the quoted UTF-8 names of newer producers), delimited protobuf, and OpenMetrics
// (1.0 and 2.0). OpenMetrics is read when a server sends it (or ScrapeOptions.Accept asks for
// it) but never asked for by default, for two reasons measured in docs/bench/guard-sources.md:
// expfmt's OpenMetrics parser (a generic ABNF parser) takes milliseconds per line where the
// text parser takes microseconds, and it refuses a whole body that has an info or stateset
// family, or client_golang's Go collector's clashing go_memstats_alloc_bytes families. An
// OpenMetrics body is therefore bounded by maxOpenMetricsBytes, far below MaxBytes.

// maxOpenMetricsBytes bounds an OpenMetrics body: a few hundred lines, which the parser takes
// about a second and a half and 400 MB of allocations to read on a loaded core (4 KiB measured
// 0.3 to 0.75 s and 113 MB).
const maxOpenMetricsBytes = 16 << 10

// errExposition marks a body that is not a well-formed exposition.
var errExposition = errors.New("exposition")

// scrapeFormat picks the decoder for a response's headers: the text format (also when no
// Content-Type is given), delimited protobuf or OpenMetrics, with UTF-8 names allowed.
func scrapeFormat(h http.Header) (expfmt.Format, error) {
	ct := h.Get("Content-Type")
	if strings.TrimSpace(ct) == "" {
		return expfmt.NewFormat(expfmt.TypeTextPlain).WithEscapingScheme(model.NoEscaping), nil
	}
	f := expfmt.ResponseFormat(h)
	if f == expfmt.FmtUnknown {
		if _, _, err := mime.ParseMediaType(ct); err != nil {
			return "", fmt.Errorf("content type %q: %w", snippet([]byte(ct)), err)
		}
		return "", fmt.Errorf("content type %q is neither the text format, delimited protobuf nor OpenMetrics", snippet([]byte(ct)))
	}
	return f.WithEscapingScheme(model.NoEscaping), nil
}

// labelPair is one label of an exposed series.
type labelPair struct {
	name, value string
}

// expoSample is one series of an exposition.
type expoSample struct {
	name    string
	labels  []labelPair // sorted by name
	value   float64
	counter bool   // the series counts something: a counter, a histogram's _bucket, _sum or _count, a summary's _sum or _count, or an untyped series
	typ     string // the family's type, lower case
	dup     bool   // the series appeared more than once
}

// exposition is a decoded body, its series indexed by name and by label.
type exposition struct {
	samples []expoSample
	seen    map[string]int // seriesKey -> index in samples
	byName  map[string][]int
	byLabel map[expoLabelKey][]int
}

// expoLabelKey indexes the series of one metric that carry one label value.
type expoLabelKey struct {
	metric, label, value string
}

// candidates returns the series sel may select: those of its metric, narrowed by the most
// selective of its equality matchers on a non-empty value.
func (e *exposition) candidates(sel Selector) []int {
	best := e.byName[sel.Metric]
	for _, m := range sel.Matchers {
		if m.Op != MatchEqual || m.Value == "" {
			continue
		}
		if c := e.byLabel[expoLabelKey{sel.Metric, m.Name, m.Value}]; len(c) < len(best) {
			best = c
		}
	}
	return best
}

// decodeExposition decodes a body in format into metric families and flattens them into
// series. Errors match errExposition.
func decodeExposition(body []byte, format expfmt.Format) (*exposition, error) {
	if format.FormatType() == expfmt.TypeOpenMetrics && len(body) > maxOpenMetricsBytes {
		return nil, fmt.Errorf("%w: an OpenMetrics body of %d bytes, over the %d its slow parser is given: ask for the text format or protobuf", errExposition, len(body), maxOpenMetricsBytes)
	}
	if format.FormatType() == expfmt.TypeProtoDelim {
		if err := checkDelimited(body); err != nil {
			return nil, fmt.Errorf("%w: %w", errExposition, err)
		}
	}
	e := &exposition{seen: map[string]int{}, byName: map[string][]int{}, byLabel: map[expoLabelKey][]int{}}
	dec := expfmt.NewDecoder(bytes.NewReader(body), format)
	for {
		var mf dto.MetricFamily
		err := dec.Decode(&mf)
		if errors.Is(err, io.EOF) {
			return e, nil
		}
		if err != nil {
			return nil, fmt.Errorf("%w: %w", errExposition, err)
		}
		if err := e.addFamily(&mf); err != nil {
			return nil, fmt.Errorf("%w: %s: %w", errExposition, truncate(mf.GetName(), 80), err)
		}
	}
}

// checkDelimited checks that every length prefix of a delimited protobuf body fits in what
// follows it: expfmt's decoder allocates the size a prefix claims before reading, so a bogus
// prefix would ask for gigabytes.
func checkDelimited(body []byte) error {
	for off := 0; off < len(body); {
		size, n := protowire.ConsumeVarint(body[off:])
		if n < 0 {
			return fmt.Errorf("protobuf length prefix at byte %d: %w", off, protowire.ParseError(n))
		}
		off += n
		if size > uint64(len(body)-off) {
			return fmt.Errorf("protobuf message at byte %d claims %d bytes, %d remain", off, size, len(body)-off)
		}
		off += int(size)
	}
	return nil
}

// addFamily adds the series of one family.
func (e *exposition) addFamily(mf *dto.MetricFamily) error {
	samples, err := expfmt.ExtractSamples(&expfmt.DecodeOptions{}, mf)
	if err != nil {
		return err
	}
	typ := strings.ToLower(mf.GetType().String())
	for _, s := range samples {
		name := string(s.Metric[model.MetricNameLabel])
		labels := make([]labelPair, 0, len(s.Metric)-1)
		for k, v := range s.Metric {
			if k != model.MetricNameLabel {
				labels = append(labels, labelPair{string(k), string(v)})
			}
		}
		slices.SortFunc(labels, func(a, b labelPair) int { return strings.Compare(a.name, b.name) })
		e.add(expoSample{
			name:    name,
			labels:  labels,
			value:   float64(s.Value),
			typ:     typ,
			counter: countsSomething(mf.GetType(), name != mf.GetName()),
		})
	}
	return nil
}

// countsSomething reports whether a series of a family of this type counts something;
// suffixed is whether its name carries a suffix (_sum, _count, _bucket) after the family's.
func countsSomething(t dto.MetricType, suffixed bool) bool {
	switch t {
	case dto.MetricType_COUNTER, dto.MetricType_UNTYPED, dto.MetricType_HISTOGRAM:
		return true
	case dto.MetricType_SUMMARY:
		return suffixed // _sum and _count, not the quantiles
	}
	return false
}

// add indexes a series; a second occurrence marks the first as duplicated instead.
func (e *exposition) add(smp expoSample) {
	key := seriesKey(smp.name, smp.labels)
	if first, dup := e.seen[key]; dup {
		// A producer bug; reading the series would count it twice, so queries that
		// select it read as ambiguous while the others are still served.
		e.samples[first].dup = true
		return
	}
	i := len(e.samples)
	e.seen[key] = i
	e.byName[smp.name] = append(e.byName[smp.name], i)
	for _, l := range smp.labels {
		k := expoLabelKey{smp.name, l.name, l.value}
		e.byLabel[k] = append(e.byLabel[k], i)
	}
	e.samples = append(e.samples, smp)
}

// seriesKey identifies a series by its name and its labels sorted by name. Names and values
// are valid UTF-8, in which the bytes 0xfe and 0xff never occur, so they separate the parts
// unambiguously.
func seriesKey(name string, sorted []labelPair) string {
	n := len(name)
	for _, l := range sorted {
		n += len(l.name) + len(l.value) + 2
	}
	b := make([]byte, 0, n)
	b = append(b, name...)
	for _, l := range sorted {
		b = append(b, 0xff)
		b = append(b, l.name...)
		b = append(b, 0xfe)
		b = append(b, l.value...)
	}
	return string(b)
}
