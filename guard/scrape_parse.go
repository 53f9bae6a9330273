package guard

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"mime"
	"strconv"
	"strings"
	"unicode/utf8"
)

// The scrape source parses expositions itself: github.com/prometheus/common/expfmt v0.73.1
// imports a module (github.com/pandatix/go-abnf) that the module proxy this project builds
// from does not serve, so expfmt cannot be built here. The parser below reads what a counter
// needs from the text format 0.0.4 (with the quoted UTF-8 names of newer producers) and from
// OpenMetrics 1.0, and rejects what it cannot read.

// expoFormat is an exposition's format.
type expoFormat int

const (
	expoText expoFormat = iota
	expoOpenMetrics
)

func (f expoFormat) String() string {
	if f == expoOpenMetrics {
		return "openmetrics"
	}
	return "text"
}

// errExposition marks a body that is not a well-formed exposition.
var errExposition = errors.New("exposition")

// formatFromContentType picks the parser for a response's Content-Type.
func formatFromContentType(ct string) (expoFormat, error) {
	if strings.TrimSpace(ct) == "" {
		return expoText, nil
	}
	mt, _, err := mime.ParseMediaType(ct)
	if err != nil {
		return 0, fmt.Errorf("content type %q: %w", snippet([]byte(ct)), err)
	}
	switch mt {
	case "text/plain":
		return expoText, nil
	case "application/openmetrics-text":
		return expoOpenMetrics, nil
	}
	return 0, fmt.Errorf("content type %q is neither text/plain nor application/openmetrics-text", snippet([]byte(mt)))
}

// labelPair is one label of an exposed series.
type labelPair struct {
	name, value string
}

// expoSample is one series of an exposition.
type expoSample struct {
	name    string
	labels  []labelPair
	value   float64
	counter bool   // the series counts something: a counter, a histogram or summary's _count, _sum or _bucket, or an untyped series
	typ     string // the family's type, "untyped" when none was declared
	dup     bool   // the series appeared more than once
}

// exposition is a parsed body, its series indexed by name and by label.
type exposition struct {
	samples []expoSample
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

const maxExpoLine = 1 << 20

// parseExposition parses a body. Errors match errExposition and say which line broke which rule.
func parseExposition(body []byte, format expoFormat) (*exposition, error) {
	e := &exposition{byName: map[string][]int{}, byLabel: map[expoLabelKey][]int{}}
	types := map[string]string{}
	seen := map[string]int{}
	sawEOF := false
	lineNo := 0
	for len(body) > 0 {
		lineNo++
		var line []byte
		if i := bytes.IndexByte(body, '\n'); i >= 0 {
			line, body = body[:i], body[i+1:]
		} else {
			line, body = body, nil
			if format == expoOpenMetrics {
				// OpenMetrics ends every line, "# EOF" included, with a newline.
				if string(line) != "# EOF" {
					return nil, expoErr(lineNo, "last line does not end with a newline")
				}
			}
		}
		if len(line) > maxExpoLine {
			return nil, expoErr(lineNo, "line longer than %d bytes", maxExpoLine)
		}
		line = bytes.TrimSuffix(line, []byte{'\r'})
		if sawEOF {
			return nil, expoErr(lineNo, "content after # EOF")
		}
		if !utf8.Valid(line) {
			return nil, expoErr(lineNo, "not valid UTF-8")
		}
		s := string(line)
		if strings.TrimSpace(s) == "" {
			if format == expoOpenMetrics {
				return nil, expoErr(lineNo, "empty line")
			}
			continue
		}
		if strings.HasPrefix(strings.TrimLeft(s, " \t"), "#") {
			eof, err := parseExpoComment(s, format, types)
			if err != nil {
				return nil, expoErr(lineNo, "%v", err)
			}
			sawEOF = eof
			continue
		}
		smp, err := parseExpoSample(s, format)
		if err != nil {
			return nil, expoErr(lineNo, "%v", err)
		}
		key := seriesKey(smp.name, smp.labels)
		if first, dup := seen[key]; dup {
			// A producer bug; reading the series would count it twice, so queries
			// that select it read as ambiguous while the others are still served.
			e.samples[first].dup = true
			continue
		}
		seen[key] = len(e.samples)
		e.byName[smp.name] = append(e.byName[smp.name], len(e.samples))
		for _, l := range smp.labels {
			k := expoLabelKey{smp.name, l.name, l.value}
			e.byLabel[k] = append(e.byLabel[k], len(e.samples))
		}
		e.samples = append(e.samples, smp)
	}
	if format == expoOpenMetrics && !sawEOF {
		return nil, fmt.Errorf("%w: no # EOF: truncated OpenMetrics", errExposition)
	}
	for i := range e.samples {
		e.samples[i].typ, e.samples[i].counter = sampleKind(e.samples[i].name, types)
	}
	return e, nil
}

func expoErr(line int, format string, args ...any) error {
	return fmt.Errorf("%w: line %d: %s", errExposition, line, fmt.Sprintf(format, args...))
}

var expoTypes = map[string]bool{
	"counter": true, "gauge": true, "histogram": true, "summary": true, "untyped": true,
	"unknown": true, "gaugehistogram": true, "stateset": true, "info": true,
}

// parseExpoComment reads a comment line, recording TYPE lines; it reports # EOF.
func parseExpoComment(s string, format expoFormat, types map[string]string) (bool, error) {
	rest := strings.TrimLeft(strings.TrimLeft(s, " \t")[1:], " \t")
	if format == expoOpenMetrics && s == "# EOF" {
		return true, nil
	}
	keyword, rest, _ := strings.Cut(rest, " ")
	if keyword != "TYPE" {
		// HELP, UNIT and free comments say nothing a counter needs.
		return false, nil
	}
	rest = strings.TrimLeft(rest, " \t")
	name, rest, err := readExpoName(rest)
	if err != nil {
		return false, fmt.Errorf("TYPE: %w", err)
	}
	typ := strings.TrimSpace(rest)
	if !expoTypes[typ] {
		return false, fmt.Errorf("TYPE %s: unknown type %q", name, truncate(typ, 40))
	}
	if _, dup := types[name]; dup {
		return false, fmt.Errorf("second TYPE line for %s", name)
	}
	types[name] = typ
	return false, nil
}

// readExpoName reads a metric name, bare or double-quoted, at the start of s.
func readExpoName(s string) (string, string, error) {
	if strings.HasPrefix(s, `"`) {
		return readExpoQuoted(s)
	}
	i := 0
	for i < len(s) && isNameByte(s[i], i > 0, true) {
		i++
	}
	if i == 0 {
		return "", s, fmt.Errorf("expected a metric name at %q", truncate(s, 20))
	}
	return s[:i], s[i:], nil
}

// readExpoQuoted reads a double-quoted string with the exposition escapes \\, \" and \n.
func readExpoQuoted(s string) (string, string, error) {
	if !strings.HasPrefix(s, `"`) {
		return "", s, fmt.Errorf("expected a double quote at %q", truncate(s, 20))
	}
	var b strings.Builder
	for i := 1; i < len(s); i++ {
		switch c := s[i]; c {
		case '"':
			return b.String(), s[i+1:], nil
		case '\\':
			i++
			if i >= len(s) {
				return "", "", errors.New("unterminated quoted string")
			}
			switch s[i] {
			case '\\':
				b.WriteByte('\\')
			case '"':
				b.WriteByte('"')
			case 'n':
				b.WriteByte('\n')
			default:
				return "", "", fmt.Errorf("invalid escape \\%c", s[i])
			}
		default:
			b.WriteByte(c)
		}
	}
	return "", "", errors.New("unterminated quoted string")
}

func skipBlanks(s string) string { return strings.TrimLeft(s, " \t") }

// parseExpoSample reads `name{labels} value [timestamp] [# exemplar]`.
func parseExpoSample(s string, format expoFormat) (expoSample, error) {
	var smp expoSample
	rest := skipBlanks(s)
	if !strings.HasPrefix(rest, "{") {
		name, r, err := readExpoName(rest)
		if err != nil {
			return smp, err
		}
		if strings.HasPrefix(rest, `"`) {
			return smp, errors.New("a quoted metric name belongs inside the braces")
		}
		smp.name, rest = name, r
	}
	if format == expoText && strings.HasPrefix(skipBlanks(rest), "{") {
		rest = skipBlanks(rest)
	}
	if strings.HasPrefix(rest, "{") {
		var err error
		rest, err = parseExpoLabels(rest[1:], &smp)
		if err != nil {
			return smp, err
		}
	}
	if smp.name == "" {
		return smp, errors.New("no metric name")
	}
	if !strings.HasPrefix(rest, " ") && !strings.HasPrefix(rest, "\t") {
		return smp, fmt.Errorf("expected a blank before the value at %q", truncate(rest, 20))
	}
	fields := strings.Fields(rest)
	if len(fields) == 0 {
		return smp, errors.New("no value")
	}
	v, err := parseExpoFloat(fields[0])
	if err != nil {
		return smp, fmt.Errorf("value: %w", err)
	}
	smp.value = v
	fields = fields[1:]
	if len(fields) > 0 && fields[0] != "#" {
		if format == expoText {
			if _, err := strconv.ParseInt(fields[0], 10, 64); err != nil {
				return smp, fmt.Errorf("timestamp %q is not an integer of milliseconds", truncate(fields[0], 30))
			}
		} else if t, err := parseExpoFloat(fields[0]); err != nil || math.IsNaN(t) || math.IsInf(t, 0) {
			return smp, fmt.Errorf("timestamp %q is not a number of seconds", truncate(fields[0], 30))
		}
		fields = fields[1:]
	}
	if len(fields) > 0 {
		if format != expoOpenMetrics || fields[0] != "#" {
			return smp, fmt.Errorf("unexpected %q after the value", truncate(strings.Join(fields, " "), 30))
		}
		// An OpenMetrics exemplar: `# {labels} value [timestamp]`. Its labels are not read.
		if len(fields) < 3 || !strings.HasPrefix(fields[1], "{") {
			return smp, errors.New("malformed exemplar")
		}
	}
	return smp, nil
}

// parseExpoLabels reads the labels after '{' up to and including '}'.
func parseExpoLabels(s string, smp *expoSample) (string, error) {
	for {
		s = skipBlanks(s)
		if strings.HasPrefix(s, "}") {
			return s[1:], nil
		}
		if s == "" {
			return "", errors.New("unclosed {")
		}
		var name string
		var err error
		quoted := strings.HasPrefix(s, `"`)
		if quoted {
			name, s, err = readExpoQuoted(s)
		} else {
			i := 0
			for i < len(s) && isNameByte(s[i], i > 0, false) {
				i++
			}
			if i == 0 {
				return "", fmt.Errorf("expected a label name at %q", truncate(s, 20))
			}
			name, s = s[:i], s[i:]
		}
		if err != nil {
			return "", err
		}
		s = skipBlanks(s)
		if quoted && (strings.HasPrefix(s, ",") || strings.HasPrefix(s, "}")) {
			// A quoted name without a value is the metric's name.
			if smp.name != "" {
				return "", fmt.Errorf("a second metric name %q", truncate(name, 40))
			}
			if name == "" || !utf8.ValidString(name) {
				return "", errors.New("empty metric name")
			}
			smp.name = name
		} else {
			if !strings.HasPrefix(s, "=") {
				return "", fmt.Errorf("expected = after label %q", truncate(name, 40))
			}
			s = skipBlanks(s[1:])
			var value string
			value, s, err = readExpoQuoted(s)
			if err != nil {
				return "", fmt.Errorf("label %q: %w", truncate(name, 40), err)
			}
			if name == "" {
				return "", errors.New("empty label name")
			}
			for _, l := range smp.labels {
				if l.name == name {
					return "", fmt.Errorf("label %q appears twice", truncate(name, 40))
				}
			}
			smp.labels = append(smp.labels, labelPair{name, value})
		}
		s = skipBlanks(s)
		switch {
		case strings.HasPrefix(s, ","):
			s = s[1:]
		case strings.HasPrefix(s, "}"):
		default:
			return "", fmt.Errorf("expected , or } at %q", truncate(s, 20))
		}
	}
}

// parseExpoFloat parses a sample value as Go does, but only in the spellings the formats use
// (no hexadecimal, no underscores).
func parseExpoFloat(s string) (float64, error) {
	if strings.ContainsAny(s, "_xXpP") {
		return 0, fmt.Errorf("%q is not a number", truncate(s, 30))
	}
	v, err := strconv.ParseFloat(s, 64)
	if err != nil {
		return 0, fmt.Errorf("%q is not a number", truncate(s, 30))
	}
	return v, nil
}

// seriesKey identifies a series regardless of label order. Names and values are valid UTF-8,
// in which the bytes 0xfe and 0xff never occur, so they separate the parts unambiguously.
func seriesKey(name string, labels []labelPair) string {
	ls := labels
	sorted := true
	for i := 1; i < len(ls); i++ {
		if ls[i].name < ls[i-1].name {
			sorted = false
			break
		}
	}
	if !sorted {
		ls = append([]labelPair(nil), labels...)
		for i := 1; i < len(ls); i++ {
			for j := i; j > 0 && ls[j].name < ls[j-1].name; j-- {
				ls[j], ls[j-1] = ls[j-1], ls[j]
			}
		}
	}
	n := len(name)
	for _, l := range ls {
		n += len(l.name) + len(l.value) + 2
	}
	b := make([]byte, 0, n)
	b = append(b, name...)
	for _, l := range ls {
		b = append(b, 0xff)
		b = append(b, l.name...)
		b = append(b, 0xfe)
		b = append(b, l.value...)
	}
	return string(b)
}

// sampleKind finds a series' family type and whether its value counts something.
func sampleKind(name string, types map[string]string) (string, bool) {
	if typ, ok := types[name]; ok {
		switch typ {
		case "counter", "untyped", "unknown":
			return typ, true
		}
		return typ, false
	}
	for _, suffix := range []string{"_total", "_created", "_count", "_sum", "_bucket", "_gcount", "_gsum", "_info"} {
		base, ok := strings.CutSuffix(name, suffix)
		if !ok {
			continue
		}
		typ, ok := types[base]
		if !ok {
			continue
		}
		switch {
		case typ == "counter" && suffix == "_total":
			return typ, true
		case (typ == "histogram" || typ == "summary") && (suffix == "_count" || suffix == "_sum" || suffix == "_bucket"):
			return typ, true
		case typ == "untyped" || typ == "unknown":
			return typ, suffix != "_created"
		}
		return typ, false
	}
	return "untyped", true
}
