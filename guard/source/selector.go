package source

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// MatchOp is how a [LabelMatcher] compares a label's value, with PromQL's meaning.
type MatchOp string

// The match operators a [Selector] accepts.
const (
	MatchEqual     MatchOp = "="
	MatchNotEqual  MatchOp = "!="
	MatchRegexp    MatchOp = "=~"
	MatchNotRegexp MatchOp = "!~"
)

// A LabelMatcher constrains one label. A label a series does not carry has the value "", as in
// PromQL: `code!="500"` matches a series without a code label.
type LabelMatcher struct {
	Name  string
	Op    MatchOp
	Value string
	re    *regexp.Regexp
}

// Matches reports whether a label value satisfies the matcher.
func (m LabelMatcher) Matches(value string) bool {
	switch m.Op {
	case MatchEqual:
		return value == m.Value
	case MatchNotEqual:
		return value != m.Value
	case MatchRegexp:
		return m.re != nil && m.re.MatchString(value)
	case MatchNotRegexp:
		return m.re != nil && !m.re.MatchString(value)
	}
	return false
}

// A Selector picks counter series by metric name and label matchers: the subset of PromQL
// `name{label="value", other!="x", code=~"5.."}` that both metric sources understand. Build one
// with [ParseSelector] or [NewSelector]; the zero value matches nothing.
type Selector struct {
	Metric   string
	Matchers []LabelMatcher
}

const (
	maxSelectorLen = 4096
	maxMatchers    = 64
)

// ParseSelector parses `metric` or `metric{l="v",...}`. The metric name is required; label
// names are Prometheus names ([a-zA-Z_][a-zA-Z0-9_]*, not __name__); values are double-quoted
// PromQL strings (Go escapes) holding valid UTF-8; operators are =, !=, =~ and !~ (regular
// expressions are RE2, anchored at both ends and with . matching newlines, as in PromQL). A
// trailing comma is allowed. It returns an error matching [ErrInvalidQuery] for anything else.
func ParseSelector(s string) (Selector, error) {
	if len(s) > maxSelectorLen {
		return Selector{}, fmt.Errorf("%w: selector longer than %d bytes", ErrInvalidQuery, maxSelectorLen)
	}
	if !utf8.ValidString(s) {
		return Selector{}, fmt.Errorf("%w: selector is not valid UTF-8", ErrInvalidQuery)
	}
	p := selectorParser{s: s}
	sel, err := p.parse()
	if err != nil {
		return Selector{}, fmt.Errorf("%w: selector %q: %w", ErrInvalidQuery, truncate(s, 80), err)
	}
	return sel, nil
}

// NewSelector builds a selector from a metric name and matchers, checking them as
// [ParseSelector] does. It returns an error matching [ErrInvalidQuery].
func NewSelector(metric string, matchers ...LabelMatcher) (Selector, error) {
	sel := Selector{Metric: metric}
	if !validMetricName(metric) {
		return Selector{}, fmt.Errorf("%w: metric name %q is not a Prometheus name", ErrInvalidQuery, truncate(metric, 80))
	}
	if len(matchers) > maxMatchers {
		return Selector{}, fmt.Errorf("%w: more than %d matchers", ErrInvalidQuery, maxMatchers)
	}
	for _, m := range matchers {
		cm, err := compileMatcher(m.Name, m.Op, m.Value)
		if err != nil {
			return Selector{}, fmt.Errorf("%w: %w", ErrInvalidQuery, err)
		}
		sel.Matchers = append(sel.Matchers, cm)
	}
	return sel, nil
}

// String renders the selector as PromQL, label values quoted and escaped so that no input can
// change the query's structure.
func (s Selector) String() string {
	var b strings.Builder
	b.WriteString(s.Metric)
	if len(s.Matchers) == 0 {
		return b.String()
	}
	b.WriteByte('{')
	for i, m := range s.Matchers {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(m.Name)
		b.WriteString(string(m.Op))
		b.WriteString(quotePromQL(m.Value))
	}
	b.WriteByte('}')
	return b.String()
}

// Matches reports whether a series with this metric name and labels is selected. labels need
// not hold the metric name.
func (s Selector) Matches(metric string, labels map[string]string) bool {
	if s.Metric == "" || metric != s.Metric {
		return false
	}
	for _, m := range s.Matchers {
		if !m.Matches(labels[m.Name]) {
			return false
		}
	}
	return true
}

// matchesPairs is Matches for a label list (the exposition parser's form).
func (s Selector) matchesPairs(metric string, labels []labelPair) bool {
	if s.Metric == "" || metric != s.Metric {
		return false
	}
	for _, m := range s.Matchers {
		v := ""
		for _, l := range labels {
			if l.name == m.Name {
				v = l.value
				break
			}
		}
		if !m.Matches(v) {
			return false
		}
	}
	return true
}

// quotePromQL renders a label value as a double-quoted PromQL string: backslash, double quote
// and control characters are escaped, everything else (valid UTF-8) is written as is, so the
// rendering is never longer than the escaped input it came from.
func quotePromQL(v string) string {
	const hex = "0123456789abcdef"
	b := make([]byte, 0, len(v)+2)
	b = append(b, '"')
	for i := 0; i < len(v); i++ {
		switch c := v[i]; c {
		case '\\', '"':
			b = append(b, '\\', c)
		case '\a':
			b = append(b, '\\', 'a')
		case '\b':
			b = append(b, '\\', 'b')
		case '\f':
			b = append(b, '\\', 'f')
		case '\n':
			b = append(b, '\\', 'n')
		case '\r':
			b = append(b, '\\', 'r')
		case '\t':
			b = append(b, '\\', 't')
		case '\v':
			b = append(b, '\\', 'v')
		default:
			if c < 0x20 || c == 0x7f {
				b = append(b, '\\', 'x', hex[c>>4], hex[c&0xf])
				continue
			}
			b = append(b, c)
		}
	}
	return string(append(b, '"'))
}

func compileMatcher(name string, op MatchOp, value string) (LabelMatcher, error) {
	if !validLabelName(name) {
		return LabelMatcher{}, fmt.Errorf("label name %q is not a Prometheus label name", truncate(name, 80))
	}
	if name == "__name__" {
		return LabelMatcher{}, fmt.Errorf("label __name__: put the metric name before the braces")
	}
	if !utf8.ValidString(value) {
		return LabelMatcher{}, fmt.Errorf("label %s: value is not valid UTF-8", name)
	}
	m := LabelMatcher{Name: name, Op: op, Value: value}
	switch op {
	case MatchEqual, MatchNotEqual:
	case MatchRegexp, MatchNotRegexp:
		// Compiled alone first, so that a value such as `a)|(b` cannot unbalance the anchors.
		if _, err := regexp.Compile(value); err != nil {
			return LabelMatcher{}, fmt.Errorf("label %s: regular expression: %w", name, err)
		}
		re, err := regexp.Compile("^(?s:" + value + ")$")
		if err != nil {
			return LabelMatcher{}, fmt.Errorf("label %s: regular expression: %w", name, err)
		}
		m.re = re
	default:
		return LabelMatcher{}, fmt.Errorf("label %s: unknown operator %q", name, truncate(string(op), 10))
	}
	return m, nil
}

func validMetricName(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c == '_' || c == ':' || ('a' <= c && c <= 'z') || ('A' <= c && c <= 'Z') || (i > 0 && '0' <= c && c <= '9') {
			continue
		}
		return false
	}
	return true
}

func validLabelName(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c == '_' || ('a' <= c && c <= 'z') || ('A' <= c && c <= 'Z') || (i > 0 && '0' <= c && c <= '9') {
			continue
		}
		return false
	}
	return true
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n] + "…"
}

type selectorParser struct {
	s   string
	pos int
}

func (p *selectorParser) parse() (Selector, error) {
	p.skipSpace()
	start := p.pos
	for p.pos < len(p.s) && isNameByte(p.s[p.pos], p.pos > start, true) {
		p.pos++
	}
	metric := p.s[start:p.pos]
	if metric == "" {
		return Selector{}, fmt.Errorf("at %d: expected a metric name", p.pos)
	}
	var matchers []LabelMatcher
	p.skipSpace()
	if p.pos < len(p.s) && p.s[p.pos] == '{' {
		p.pos++
		for {
			p.skipSpace()
			if p.pos >= len(p.s) {
				return Selector{}, fmt.Errorf("at %d: unclosed {", p.pos)
			}
			if p.s[p.pos] == '}' {
				p.pos++
				break
			}
			m, err := p.matcher()
			if err != nil {
				return Selector{}, err
			}
			if len(matchers) == maxMatchers {
				return Selector{}, fmt.Errorf("more than %d matchers", maxMatchers)
			}
			matchers = append(matchers, m)
			p.skipSpace()
			if p.pos >= len(p.s) {
				return Selector{}, fmt.Errorf("at %d: unclosed {", p.pos)
			}
			switch p.s[p.pos] {
			case ',':
				p.pos++
			case '}':
			default:
				return Selector{}, fmt.Errorf("at %d: expected , or }", p.pos)
			}
		}
	}
	p.skipSpace()
	if p.pos != len(p.s) {
		return Selector{}, fmt.Errorf("at %d: unexpected %q after the selector", p.pos, truncate(p.s[p.pos:], 20))
	}
	return NewSelector(metric, matchers...)
}

func (p *selectorParser) matcher() (LabelMatcher, error) {
	start := p.pos
	for p.pos < len(p.s) && isNameByte(p.s[p.pos], p.pos > start, false) {
		p.pos++
	}
	name := p.s[start:p.pos]
	if name == "" {
		return LabelMatcher{}, fmt.Errorf("at %d: expected a label name", p.pos)
	}
	p.skipSpace()
	var op MatchOp
	switch {
	case strings.HasPrefix(p.s[p.pos:], "=~"):
		op = MatchRegexp
	case strings.HasPrefix(p.s[p.pos:], "!~"):
		op = MatchNotRegexp
	case strings.HasPrefix(p.s[p.pos:], "!="):
		op = MatchNotEqual
	case strings.HasPrefix(p.s[p.pos:], "="):
		op = MatchEqual
	default:
		return LabelMatcher{}, fmt.Errorf("at %d: expected =, !=, =~ or !~ after %s", p.pos, name)
	}
	p.pos += len(op)
	p.skipSpace()
	value, err := p.quoted()
	if err != nil {
		return LabelMatcher{}, err
	}
	return LabelMatcher{Name: name, Op: op, Value: value}, nil
}

// quoted reads a double-quoted string with Go escapes.
func (p *selectorParser) quoted() (string, error) {
	if p.pos >= len(p.s) || p.s[p.pos] != '"' {
		return "", fmt.Errorf("at %d: expected a double-quoted value", p.pos)
	}
	start := p.pos
	p.pos++
	for p.pos < len(p.s) {
		switch c := p.s[p.pos]; {
		case c == '\\':
			p.pos += 2
			continue
		case c < 0x20 || c == 0x7f:
			return "", fmt.Errorf("at %d: control character in a quoted value: escape it", p.pos)
		case c == '"':
			p.pos++
			v, err := strconv.Unquote(p.s[start:p.pos])
			if err != nil {
				return "", fmt.Errorf("at %d: bad quoted value: %w", start, err)
			}
			return v, nil
		}
		p.pos++
	}
	return "", fmt.Errorf("at %d: unterminated quoted value", start)
}

func (p *selectorParser) skipSpace() {
	for p.pos < len(p.s) && (p.s[p.pos] == ' ' || p.s[p.pos] == '\t' || p.s[p.pos] == '\n' || p.s[p.pos] == '\r') {
		p.pos++
	}
}

func isNameByte(c byte, notFirst, colon bool) bool {
	return c == '_' || (colon && c == ':') || ('a' <= c && c <= 'z') || ('A' <= c && c <= 'Z') || (notFirst && '0' <= c && c <= '9')
}

// CounterTemplate renders per-arm queries for the usual shape: one counter whose series carry
// the variant (and perhaps the flag) as labels, such as
//
//	http_requests_total{service="checkout",flag="checkout-v2",variant="on"}
//
// Base is the user's selector without the variant and flag matchers; the template adds them,
// quoted and escaped, so a variant or flag name can never inject PromQL.
type CounterTemplate struct {
	// Base is the counter's selector, e.g. `http_requests_total{service="checkout"}` or, for
	// errors, `http_requests_total{service="checkout",code=~"5.."}`.
	Base string
	// VariantLabel is the label holding the variant's name, e.g. "variant". Required.
	VariantLabel string
	// FlagLabel is the label holding the flag's key, e.g. "flag"; empty when the counter is not
	// labelled by flag.
	FlagLabel string
}

// Selector returns Base narrowed to one flag and variant: the query the scrape source takes.
// It returns an error matching [ErrInvalidQuery] when Base does not parse, a label name is
// not valid, Base already constrains the variant or flag label, the variant is empty, or a
// value is not valid UTF-8.
func (t CounterTemplate) Selector(flag, variant string) (Selector, error) {
	base, err := ParseSelector(t.Base)
	if err != nil {
		return Selector{}, fmt.Errorf("template base: %w", err)
	}
	if t.VariantLabel == "" {
		return Selector{}, fmt.Errorf("%w: template: variant label is required", ErrInvalidQuery)
	}
	if variant == "" {
		return Selector{}, fmt.Errorf("%w: template: variant is empty", ErrInvalidQuery)
	}
	if t.FlagLabel == t.VariantLabel {
		return Selector{}, fmt.Errorf("%w: template: flag and variant labels are both %q", ErrInvalidQuery, t.VariantLabel)
	}
	if t.FlagLabel == "" && flag != "" {
		return Selector{}, fmt.Errorf("%w: template: a flag was given but no flag label", ErrInvalidQuery)
	}
	extra := []LabelMatcher{}
	for _, l := range []struct{ name, value string }{{t.FlagLabel, flag}, {t.VariantLabel, variant}} {
		if l.name == "" {
			continue
		}
		for _, m := range base.Matchers {
			if m.Name == l.name {
				return Selector{}, fmt.Errorf("%w: template base already constrains label %q", ErrInvalidQuery, l.name)
			}
		}
		extra = append(extra, LabelMatcher{Name: l.name, Op: MatchEqual, Value: l.value})
	}
	sel, err := NewSelector(base.Metric, append(append([]LabelMatcher{}, base.Matchers...), extra...)...)
	if err != nil {
		return Selector{}, fmt.Errorf("template: %w", err)
	}
	return sel, nil
}

// Sum renders `sum(selector)`: one value per arm from the Prometheus API, summed over
// instances. Prometheus drops a series within its staleness handling (a vanished target's
// series goes at its next failed scrape, any series after five minutes without samples), so a
// dead target reads as [ReadingEmpty]. Errors are those of [CounterTemplate.Selector].
func (t CounterTemplate) Sum(flag, variant string) (string, error) {
	sel, err := t.Selector(flag, variant)
	if err != nil {
		return "", err
	}
	return "sum(" + sel.String() + ")", nil
}

// Range renders `selector[window]`: the raw samples of one series with their own timestamps,
// so the Prometheus source can tell how old the newest one is ([ReadingStale]). It suits a
// counter exported by one instance; several series read as [ReadingAmbiguous]. window must be a
// positive whole number of milliseconds. Errors are those of [CounterTemplate.Selector], and
// [ErrInvalidQuery] for the window.
func (t CounterTemplate) Range(flag, variant string, window time.Duration) (string, error) {
	if window <= 0 || window%time.Millisecond != 0 {
		return "", fmt.Errorf("%w: template: window %v is not a positive number of milliseconds", ErrInvalidQuery, window)
	}
	sel, err := t.Selector(flag, variant)
	if err != nil {
		return "", err
	}
	return sel.String() + "[" + strconv.FormatInt(window.Milliseconds(), 10) + "ms]", nil
}
