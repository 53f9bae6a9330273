package targeting

import (
	"encoding/json"
	"math"
	"strconv"
	"strings"
)

// The matching rules are documented on Flagset.Evaluate.

// match reports whether the condition holds for ctx.
func (c *condition) match(ctx *EvalContext) bool {
	if c.op == opNever {
		return false
	}
	if c.isTargetingKey && ctx.TargetingKey != "" {
		if c.op == opExists {
			return true
		}
		m, ok := c.matchString(ctx, ctx.TargetingKey)
		return ok && m != c.negate
	}
	v, ok := ctx.Attributes[c.attr]
	if !ok || v == nil {
		return false
	}
	if c.op == opExists {
		return true
	}
	m, ok := c.test(ctx, v)
	return ok && m != c.negate
}

// test compares one attribute value, before negation. ok is false when the value has a type the
// operator does not compare.
func (c *condition) test(ctx *EvalContext, v any) (m, ok bool) {
	switch x := v.(type) {
	case string:
		return c.matchString(ctx, x)
	case bool:
		if c.op == opEq {
			return c.eq.hasBool(x), true
		}
		return false, false
	case []any:
		if c.op == opInSegment {
			return false, false
		}
		for _, e := range x {
			if m, ok := c.element(ctx, e); ok && m {
				return true, true
			}
		}
		return false, true
	case []string:
		if c.op == opInSegment {
			return false, false
		}
		for _, e := range x {
			if c.op == opContains {
				if c.eq.hasString(e) {
					return true, true
				}
			} else if m, ok := c.matchString(ctx, e); ok && m {
				return true, true
			}
		}
		return false, true
	}
	if f, ok := number(v); ok {
		return c.matchNumber(f)
	}
	return false, false
}

// element tests one element of a list attribute: for contains, whether it equals a value.
func (c *condition) element(ctx *EvalContext, e any) (m, ok bool) {
	if c.op != opContains {
		switch e.(type) {
		case []any, []string:
			return false, false
		}
		return c.test(ctx, e)
	}
	switch x := e.(type) {
	case string:
		return c.eq.hasString(x), true
	case bool:
		return c.eq.hasBool(x), true
	}
	if f, ok := number(e); ok {
		return c.eq.hasNumber(f), true
	}
	return false, false
}

func (c *condition) matchString(ctx *EvalContext, s string) (m, ok bool) {
	switch c.op {
	case opEq:
		return c.eq.hasString(s), true
	case opContains:
		for _, x := range c.strs {
			if strings.Contains(s, x) {
				return true, true
			}
		}
		return false, true
	case opStartsWith:
		for _, x := range c.strs {
			if strings.HasPrefix(s, x) {
				return true, true
			}
		}
		return false, true
	case opEndsWith:
		for _, x := range c.strs {
			if strings.HasSuffix(s, x) {
				return true, true
			}
		}
		return false, true
	case opMatches:
		for _, re := range c.res {
			if re.MatchString(s) {
				return true, true
			}
		}
		return false, true
	case opSemverEq, opSemverLt, opSemverGt:
		v, ok := parseSemver(s)
		if !ok {
			return false, false
		}
		for i := range c.vers {
			if cmpOK(c.op, v.compare(&c.vers[i])) {
				return true, true
			}
		}
		return false, true
	case opBefore, opAfter:
		t, ok := parseRFC3339(s)
		if !ok {
			return false, false
		}
		return c.matchInstant(t), true
	case opInSegment:
		for _, sg := range c.segs {
			if sg.contains(ctx, s) {
				return true, true
			}
		}
		return false, true
	}
	return false, false
}

func (c *condition) matchNumber(f float64) (m, ok bool) {
	switch c.op {
	case opEq:
		return c.eq.hasNumber(f), true
	case opLt, opLte, opGt, opGte:
		for _, x := range c.nums {
			if (c.op == opLt && f < x) || (c.op == opLte && f <= x) || (c.op == opGt && f > x) || (c.op == opGte && f >= x) {
				return true, true
			}
		}
		return false, true
	case opBefore, opAfter:
		t, ok := instantOfSeconds(f)
		if !ok {
			return false, false
		}
		return c.matchInstant(t), true
	}
	return false, false
}

func (c *condition) matchInstant(t instant) bool {
	for _, x := range c.ts {
		d := t.compare(x)
		if (c.op == opBefore && d < 0) || (c.op == opAfter && d > 0) {
			return true
		}
	}
	return false
}

// cmpOK reports whether a comparison result satisfies a semver operator.
func cmpOK(op opcode, d int) bool {
	switch op {
	case opSemverEq:
		return d == 0
	case opSemverLt:
		return d < 0
	case opSemverGt:
		return d > 0
	}
	return false
}

// serve evaluates a serve: its variant for reason, or the variant its split buckets ctx in.
func (f *compiledFlag) serve(sv *serve, ctx *EvalContext, reason Reason) Evaluation {
	if sv.variant != nil {
		return f.result(sv.variant, reason)
	}
	var h uint32
	if sv.byTargetingKey {
		tk := ctx.TargetingKey
		if tk == "" {
			tk, _ = ctx.Attributes[targetingKeyAttr].(string)
		}
		if tk == "" {
			return f.fail(ErrorTargetingKeyMissing, msgTargetingKeyMissing)
		}
		h = murmur3(0, f.key, tk)
	} else {
		switch v := ctx.Attributes[sv.bucketBy].(type) {
		case string:
			if v == "" {
				return f.fail(ErrorInvalidContext, sv.invalidContext)
			}
			h = murmur3(0, f.key, v)
		case json.Number:
			h = murmur3(0, f.key, string(v))
		default:
			var buf [32]byte
			b, ok := appendNumber(buf[:0], v)
			if !ok {
				return f.fail(ErrorInvalidContext, sv.invalidContext)
			}
			h = murmur3(0, f.key, b)
		}
	}
	return f.result(sv.pick(h), ReasonSplit)
}

// pick maps a hash to a variant as flagd's fractional operator does
// (open-feature/flagd core/pkg/evaluator/fractional.go, distributeValue): the bucket is
// hash·total >> 32, in [0, total), and the variants own consecutive ranges of buckets in order.
func (sv *serve) pick(h uint32) *Variant {
	bucket := (uint64(h) * sv.total) >> 32
	for i := range sv.split {
		if bucket < sv.split[i].end {
			return sv.split[i].variant
		}
	}
	return sv.split[len(sv.split)-1].variant // unreachable: bucket < total
}

// appendNumber formats a numeric bucketing value: integers in decimal, other numbers in the
// shortest decimal form that reads back the same (1.5, 12345).
func appendNumber(dst []byte, v any) ([]byte, bool) {
	switch n := v.(type) {
	case int:
		return strconv.AppendInt(dst, int64(n), 10), true
	case int64:
		return strconv.AppendInt(dst, n, 10), true
	case int32:
		return strconv.AppendInt(dst, int64(n), 10), true
	case int16:
		return strconv.AppendInt(dst, int64(n), 10), true
	case int8:
		return strconv.AppendInt(dst, int64(n), 10), true
	case uint:
		return strconv.AppendUint(dst, uint64(n), 10), true
	case uint64:
		return strconv.AppendUint(dst, n, 10), true
	case uint32:
		return strconv.AppendUint(dst, uint64(n), 10), true
	case uint16:
		return strconv.AppendUint(dst, uint64(n), 10), true
	case uint8:
		return strconv.AppendUint(dst, uint64(n), 10), true
	case float32:
		return appendFloat(dst, float64(n))
	case float64:
		return appendFloat(dst, n)
	}
	return dst, false
}

func appendFloat(dst []byte, f float64) ([]byte, bool) {
	if math.IsNaN(f) || math.IsInf(f, 0) {
		return dst, false
	}
	return strconv.AppendFloat(dst, f, 'f', -1, 64), true
}

// semver is a parsed semantic version. Build metadata is dropped: it does not take part in
// precedence (semver 2.0.0, §10).
type semver struct {
	major, minor, patch uint64
	pre                 string
}

// parseSemver parses MAJOR.MINOR.PATCH with an optional leading 'v', pre-release and build, as
// events.Condition.Validate accepts them. It does not allocate.
func parseSemver(s string) (semver, bool) {
	s = strings.TrimPrefix(s, "v")
	if i := strings.IndexByte(s, '+'); i >= 0 {
		s = s[:i]
	}
	var v semver
	if i := strings.IndexByte(s, '-'); i >= 0 {
		s, v.pre = s[:i], s[i+1:]
	}
	i := strings.IndexByte(s, '.')
	if i < 0 {
		return semver{}, false
	}
	j := strings.IndexByte(s[i+1:], '.')
	if j < 0 {
		return semver{}, false
	}
	j += i + 1
	var ok1, ok2, ok3 bool
	v.major, ok1 = parseDigits(s[:i])
	v.minor, ok2 = parseDigits(s[i+1 : j])
	v.patch, ok3 = parseDigits(s[j+1:])
	if !ok1 || !ok2 || !ok3 {
		return semver{}, false
	}
	return v, true
}

// parseDigits parses a non-empty decimal number that fits in a uint64.
func parseDigits(s string) (uint64, bool) {
	if s == "" {
		return 0, false
	}
	var n uint64
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < '0' || c > '9' {
			return 0, false
		}
		d := uint64(c - '0')
		if n > (math.MaxUint64-d)/10 {
			return 0, false
		}
		n = n*10 + d
	}
	return n, true
}

// compare orders versions by semver 2.0.0 precedence (§11): major, minor and patch numerically,
// then a version with a pre-release before the same version without one, then pre-release
// identifiers one by one.
func (a *semver) compare(b *semver) int {
	for _, d := range [3][2]uint64{{a.major, b.major}, {a.minor, b.minor}, {a.patch, b.patch}} {
		if d[0] != d[1] {
			if d[0] < d[1] {
				return -1
			}
			return 1
		}
	}
	return comparePre(a.pre, b.pre)
}

func comparePre(a, b string) int {
	switch {
	case a == b:
		return 0
	case a == "":
		return 1
	case b == "":
		return -1
	}
	for {
		ai, arest, amore := strings.Cut(a, ".")
		bi, brest, bmore := strings.Cut(b, ".")
		if d := compareIdent(ai, bi); d != 0 {
			return d
		}
		switch {
		case !amore && !bmore:
			return 0
		case !amore:
			return -1 // a larger set of fields has a higher precedence
		case !bmore:
			return 1
		}
		a, b = arest, brest
	}
}

// compareIdent compares pre-release identifiers: numeric ones numerically and below
// alphanumeric ones, which compare in ASCII order.
func compareIdent(a, b string) int {
	an, bn := isNumeric(a), isNumeric(b)
	switch {
	case an && bn:
		a, b = strings.TrimLeft(a, "0"), strings.TrimLeft(b, "0")
		if len(a) != len(b) {
			if len(a) < len(b) {
				return -1
			}
			return 1
		}
		return strings.Compare(a, b)
	case an:
		return -1
	case bn:
		return 1
	}
	return strings.Compare(a, b)
}

func isNumeric(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

// instant is a point in time as Unix seconds and nanoseconds (0-999999999).
type instant struct {
	sec  int64
	nsec int32
}

func (a instant) compare(b instant) int {
	switch {
	case a.sec < b.sec:
		return -1
	case a.sec > b.sec:
		return 1
	case a.nsec < b.nsec:
		return -1
	case a.nsec > b.nsec:
		return 1
	}
	return 0
}

// instantOfSeconds converts Unix seconds, possibly fractional.
func instantOfSeconds(f float64) (instant, bool) {
	if math.IsNaN(f) || f < -1<<62 || f > 1<<62 {
		return instant{}, false
	}
	sec := math.Floor(f)
	return instant{sec: int64(sec), nsec: int32((f - sec) * 1e9)}, true
}

// parseRFC3339 parses a strict RFC 3339 time, 2006-01-02T15:04:05[.999999999](Z|±07:00), the
// same way the fast path of time.Parse(time.RFC3339, s) does, without allocating.
func parseRFC3339(s string) (instant, bool) {
	if len(s) < len("2006-01-02T15:04:05") {
		return instant{}, false
	}
	ok := true
	num := func(s string, lo, hi int) int {
		n := 0
		for i := 0; i < len(s); i++ {
			c := s[i]
			if c < '0' || c > '9' {
				ok = false
				return lo
			}
			n = n*10 + int(c-'0')
		}
		if n < lo || n > hi {
			ok = false
			return lo
		}
		return n
	}
	year := num(s[0:4], 0, 9999)
	month := num(s[5:7], 1, 12)
	day := num(s[8:10], 1, daysIn(month, year))
	hour := num(s[11:13], 0, 23)
	minute := num(s[14:16], 0, 59)
	second := num(s[17:19], 0, 59)
	if !ok || s[4] != '-' || s[7] != '-' || s[10] != 'T' || s[13] != ':' || s[16] != ':' {
		return instant{}, false
	}
	s = s[19:]
	var nsec int
	if len(s) >= 2 && s[0] == '.' && s[1] >= '0' && s[1] <= '9' {
		n := 1
		for n < len(s) && s[n] >= '0' && s[n] <= '9' {
			n++
		}
		digits := s[1:n]
		for i := range 9 {
			nsec *= 10
			if i < len(digits) {
				nsec += int(digits[i] - '0')
			}
		}
		s = s[n:]
	}
	offset := 0
	if len(s) != 1 || s[0] != 'Z' {
		if len(s) != len("-07:00") {
			return instant{}, false
		}
		hh := num(s[1:3], 0, 23)
		mm := num(s[4:6], 0, 59)
		if !ok || (s[0] != '-' && s[0] != '+') || s[3] != ':' {
			return instant{}, false
		}
		offset = (hh*60 + mm) * 60
		if s[0] == '-' {
			offset = -offset
		}
	}
	sec := daysFromCivil(int64(year), int64(month), int64(day))*86400 +
		int64(hour*3600+minute*60+second) - int64(offset)
	return instant{sec: sec, nsec: int32(nsec)}, true
}

func daysIn(month, year int) int {
	switch month {
	case 2:
		if year%4 == 0 && (year%100 != 0 || year%400 == 0) {
			return 29
		}
		return 28
	case 4, 6, 9, 11:
		return 30
	}
	return 31
}

// daysFromCivil is the number of days from 1970-01-01 to a date of the proleptic Gregorian
// calendar (Howard Hinnant's algorithm).
func daysFromCivil(y, m, d int64) int64 {
	if m <= 2 {
		y--
	}
	era := y
	if era < 0 {
		era -= 399
	}
	era /= 400
	yoe := y - era*400
	mp := (m + 9) % 12
	doy := (153*mp+2)/5 + d - 1
	doe := yoe*365 + yoe/4 - yoe/100 + doy
	return era*146097 + doe - 719468
}
