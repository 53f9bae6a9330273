package targeting

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"regexp"
	"slices"
	"time"

	"github.com/interlock-dev/interlock/events"
	"github.com/interlock-dev/interlock/projections"
)

// compiledFlag is one flag ready to evaluate. It never changes once compiled. The fields
// Evaluate reads come first, so that a static flag is read from its first two cache lines.
type compiledFlag struct {
	archived bool
	enabled  bool
	// static says every context gets staticEval: no rules and no split by default.
	static bool
	kind   ValueKind
	// err is why the document did not compile; errMsg says it to the evaluations.
	err        error
	staticEval Evaluation
	key        string
	version    uint64
	rules      []rule
	dflt       serve
	// off is served while the flag is disabled; nil when the variants do not compile.
	off    *Variant
	errMsg string

	variants map[string]*Variant
	// segments are the keys of the segments the conditions name, sorted, without repeats.
	segments []string
	src      projections.Flag
}

// rule is a compiled events.Rule.
type rule struct {
	conds []condition
	serve serve
}

func (r *rule) matches(ctx *EvalContext) bool {
	for i := range r.conds {
		if !r.conds[i].match(ctx) {
			return false
		}
	}
	return true
}

// serve is a compiled events.Serve: a variant, or a split.
type serve struct {
	variant *Variant
	// split holds the variants in name order, each with the end of its bucket range.
	split []splitRange
	total uint64
	// bucketBy is the attribute a split hashes; byTargetingKey when it is the targeting key.
	bucketBy       string
	byTargetingKey bool
	// invalidContext is the message when a context lacks bucketBy.
	invalidContext string
}

type splitRange struct {
	end     uint64
	variant *Variant
}

// compileFlag compiles f. A document that does not compile gives a flag whose evaluations say
// so (and that still serves its off variant while disabled, when it has one).
//
// prev is the flag's current compilation, or nil. When f has the same configuration (events that
// only enable, kill, archive or unarchive a flag keep it, since folds never change a
// configuration in place), its compiled rules are reused. Pass nil to compile again, as when a
// segment the flag uses changed.
func compileFlag(f projections.Flag, segs segmentLookup, prev *compiledFlag) *compiledFlag {
	var c *compiledFlag
	if prev != nil && prev.src.Valve == f.Valve && sameConfig(&prev.src.FlagConfig, &f.FlagConfig) {
		body := *prev
		c = &body
	} else {
		// An open safety valve serves its variant before the flag's own rules.
		cfg := f.Served()
		c = &compiledFlag{segments: segmentRefs(&cfg)}
		if err := c.compile(&cfg, segs); err != nil {
			c.err = fmt.Errorf("%w: flag %s: %w", ErrCompile, f.Key, err)
			c.rules, c.static = nil, false
		}
	}
	c.src, c.key, c.version, c.archived, c.enabled = f, f.Key, f.Version, f.Archived, f.Enabled
	if c.err != nil {
		c.errMsg = "flag configuration cannot be evaluated: " + c.err.Error()
	}
	c.off = c.variants[f.OffVariant]
	c.staticEval = Evaluation{}
	if c.static {
		c.staticEval = c.result(c.dflt.variant, ReasonStatic)
	}
	return c
}

// disabledEval is the evaluation of the flag while disabled.
func (c *compiledFlag) disabledEval() Evaluation {
	if c.off == nil {
		return c.fail(ErrorParseError, c.errMsg)
	}
	return c.result(c.off, ReasonDisabled)
}

// sameConfig reports whether b is a's configuration, as far as evaluation is concerned: the same
// variants, the same rules and default (the same slices and pointers: configurations are
// replaced, never changed in place).
func sameConfig(a, b *events.FlagConfig) bool {
	if a.DefaultVariant != b.DefaultVariant || a.OffVariant != b.OffVariant || a.DefaultServe != b.DefaultServe ||
		len(a.Rules) != len(b.Rules) || len(a.Variants) != len(b.Variants) {
		return false
	}
	if len(a.Rules) > 0 && &a.Rules[0] != &b.Rules[0] {
		return false
	}
	for name, raw := range a.Variants {
		other, ok := b.Variants[name]
		if !ok || !bytes.Equal(raw, other) {
			return false
		}
	}
	return true
}

func (c *compiledFlag) compile(cfg *events.FlagConfig, segs segmentLookup) error {
	if err := c.compileVariants(cfg); err != nil {
		// With broken variants nothing is served, not even the off variant.
		c.variants, c.kind = nil, KindUnknown
		return err
	}
	if _, ok := c.variants[cfg.OffVariant]; !ok {
		return fmt.Errorf("offVariant %q is not one of the flag's variants", truncate(cfg.OffVariant))
	}
	var err error
	c.rules = make([]rule, len(cfg.Rules))
	for i := range cfg.Rules {
		r := &cfg.Rules[i]
		c.rules[i].conds = make([]condition, len(r.Conditions))
		for j := range r.Conditions {
			if c.rules[i].conds[j], err = compileCondition(&r.Conditions[j], segs, true); err != nil {
				return fmt.Errorf("rules[%d].conditions[%d]: %w", i, j, err)
			}
		}
		if c.rules[i].serve, err = c.compileServe(&r.Serve); err != nil {
			return fmt.Errorf("rules[%d].serve: %w", i, err)
		}
	}
	if cfg.DefaultServe != nil {
		if c.dflt, err = c.compileServe(cfg.DefaultServe); err != nil {
			return fmt.Errorf("defaultServe: %w", err)
		}
	} else {
		v, ok := c.variants[cfg.DefaultVariant]
		if !ok {
			return fmt.Errorf("defaultVariant %q is not one of the flag's variants", truncate(cfg.DefaultVariant))
		}
		c.dflt = serve{variant: v}
	}
	c.static = len(c.rules) == 0 && c.dflt.variant != nil
	return nil
}

func (c *compiledFlag) compileVariants(cfg *events.FlagConfig) error {
	if len(cfg.Variants) == 0 {
		return errors.New("a flag needs at least one variant")
	}
	c.variants = make(map[string]*Variant, len(cfg.Variants))
	names := make([]string, 0, len(cfg.Variants))
	for name := range cfg.Variants {
		names = append(names, name)
	}
	slices.Sort(names)
	for _, name := range names {
		v, err := compileVariant(name, cfg.Variants[name])
		if err != nil {
			return fmt.Errorf("variants.%s: %w", truncate(name), err)
		}
		if c.kind == KindUnknown {
			c.kind = v.Kind
		} else if v.Kind != c.kind {
			return fmt.Errorf("variants.%s: is a %s but other variants are %ss", truncate(name), v.Kind, c.kind)
		}
		c.variants[name] = v
	}
	return nil
}

func compileVariant(name string, raw json.RawMessage) (*Variant, error) {
	raw = bytes.TrimSpace(raw)
	v := &Variant{Name: name, Raw: raw}
	if len(raw) == 0 {
		return nil, errors.New("empty value")
	}
	var err error
	switch raw[0] {
	case 't', 'f':
		v.Kind = KindBool
		switch string(raw) {
		case "true":
			v.Bool = true
		case "false":
		default:
			err = json.Unmarshal(raw, &v.Bool)
		}
	case '"':
		v.Kind = KindString
		err = json.Unmarshal(raw, &v.String)
	case '{':
		v.Kind = KindObject
		err = json.Unmarshal(raw, &v.Object)
	case '-', '0', '1', '2', '3', '4', '5', '6', '7', '8', '9':
		v.Kind = KindNumber
		err = json.Unmarshal(raw, &v.Number)
	default:
		return nil, errors.New("values are booleans, strings, numbers or JSON objects")
	}
	if err != nil {
		return nil, fmt.Errorf("value: %w", err)
	}
	return v, nil
}

// result is the evaluation serving v for reason r.
func (c *compiledFlag) result(v *Variant, r Reason) Evaluation {
	return Evaluation{FlagKey: c.key, Variant: v, Reason: r, Version: c.version, Kind: c.kind}
}

// fail is the evaluation failing with code and a static message.
func (c *compiledFlag) fail(code ErrorCode, msg string) Evaluation {
	return Evaluation{FlagKey: c.key, Reason: ReasonError, ErrorCode: code, ErrorMessage: msg, Version: c.version, Kind: c.kind}
}

// maxTotalWeight is the largest sum of weights of a split, as in flagd.
const maxTotalWeight = math.MaxInt32

func (c *compiledFlag) compileServe(s *events.Serve) (serve, error) {
	switch {
	case s.Variant != "" && s.Split != nil:
		return serve{}, errors.New("serve either a variant or a split, not both")
	case s.Variant != "":
		v, ok := c.variants[s.Variant]
		if !ok {
			return serve{}, fmt.Errorf("variant %q is not one of the flag's variants", truncate(s.Variant))
		}
		return serve{variant: v}, nil
	case s.Split == nil:
		return serve{}, errors.New("serve a variant or a split")
	}
	// The split's variants in name order: the JSON object has no order, and this one is stable,
	// so the first variant's range grows from 0 and the last's from the end as weights change.
	names := make([]string, 0, len(s.Split))
	for name := range s.Split {
		names = append(names, name)
	}
	slices.Sort(names)
	out := serve{bucketBy: s.BucketBy}
	if out.bucketBy == "" || out.bucketBy == targetingKeyAttr {
		out.bucketBy, out.byTargetingKey = targetingKeyAttr, true
	}
	if !out.byTargetingKey {
		out.invalidContext = "attribute " + truncate(out.bucketBy) + " is required (a string or a number) to split this flag"
	}
	var total uint64
	for _, name := range names {
		v, ok := c.variants[name]
		if !ok {
			return serve{}, fmt.Errorf("split.%s: not one of the flag's variants", truncate(name))
		}
		w := s.Split[name]
		if w < 0 || w > maxTotalWeight {
			return serve{}, fmt.Errorf("split.%s: weights are 0-%d", truncate(name), maxTotalWeight)
		}
		total += uint64(w)
		out.split = append(out.split, splitRange{end: total, variant: v})
	}
	if total == 0 || total > maxTotalWeight {
		return serve{}, fmt.Errorf("split: weights must add up to 1-%d", maxTotalWeight)
	}
	out.total = total
	return out, nil
}

// segmentRefs returns the segment keys the conditions of cfg name, sorted, without repeats.
func segmentRefs(cfg *events.FlagConfig) []string {
	var keys []string
	for _, r := range cfg.Rules {
		for _, c := range r.Conditions {
			if c.Operator != opNameInSegment && c.Operator != opNameNotInSegment {
				continue
			}
			for _, v := range c.Values {
				if k, ok := v.(string); ok {
					keys = append(keys, k)
				}
			}
		}
	}
	slices.Sort(keys)
	return slices.Compact(keys)
}

// compiledSegment is one segment ready for membership tests.
type compiledSegment struct {
	src      projections.Segment
	err      error
	included map[string]struct{}
	excluded map[string]struct{}
	conds    []condition
}

// usable reports whether conditions may use the segment: it exists, is not archived and compiled.
func (sg *compiledSegment) usable() bool {
	return sg.err == nil && !sg.src.Archived && sg.src.Exists()
}

func compileSegment(s projections.Segment) *compiledSegment {
	c := &compiledSegment{src: s}
	c.included = keySet(s.Included)
	c.excluded = keySet(s.Excluded)
	c.conds = make([]condition, len(s.Conditions))
	for i := range s.Conditions {
		var err error
		if c.conds[i], err = compileCondition(&s.Conditions[i], nil, false); err != nil {
			c.err = fmt.Errorf("%w: segment %s: conditions[%d]: %w", ErrCompile, s.Key, i, err)
			c.conds = nil
			break
		}
	}
	return c
}

func keySet(keys []string) map[string]struct{} {
	if len(keys) == 0 {
		return nil
	}
	m := make(map[string]struct{}, len(keys))
	for _, k := range keys {
		m[k] = struct{}{}
	}
	return m
}

// contains reports whether the context whose key attribute is key is in the segment: its key
// is included; else, unless its key is excluded, the segment has conditions and all match.
func (sg *compiledSegment) contains(ctx *EvalContext, key string) bool {
	if _, ok := sg.included[key]; ok {
		return true
	}
	if _, ok := sg.excluded[key]; ok {
		return false
	}
	if len(sg.conds) == 0 {
		return false
	}
	for i := range sg.conds {
		if !sg.conds[i].match(ctx) {
			return false
		}
	}
	return true
}

// Operator names, as in events.Operators.
const (
	opNameInSegment    = "inSegment"
	opNameNotInSegment = "notInSegment"
	targetingKeyAttr   = "targetingKey"
)

type opcode uint8

const (
	opNever opcode = iota // a condition on a segment the set cannot use
	opExists
	opEq // eq, in and their negations
	opContains
	opStartsWith
	opEndsWith
	opMatches
	opLt
	opLte
	opGt
	opGte
	opSemverEq
	opSemverLt
	opSemverGt
	opBefore
	opAfter
	opInSegment
)

var opcodes = map[string]struct {
	op     opcode
	negate bool
}{
	"eq": {opEq, false}, "neq": {opEq, true}, "in": {opEq, false}, "notIn": {opEq, true},
	"contains": {opContains, false}, "startsWith": {opStartsWith, false}, "endsWith": {opEndsWith, false},
	"matches": {opMatches, false}, "lt": {opLt, false}, "lte": {opLte, false}, "gt": {opGt, false},
	"gte": {opGte, false}, "semverEq": {opSemverEq, false}, "semverLt": {opSemverLt, false},
	"semverGt": {opSemverGt, false}, "before": {opBefore, false}, "after": {opAfter, false},
	opNameInSegment: {opInSegment, false}, opNameNotInSegment: {opInSegment, true}, "exists": {opExists, false},
}

// condition is a compiled events.Condition.
type condition struct {
	attr           string
	isTargetingKey bool
	op             opcode
	negate         bool
	// eq holds the values compared for equality (eq, in and a list attribute's contains).
	eq   valueSet
	strs []string
	res  []*regexp.Regexp
	nums []float64
	vers []semver
	ts   []instant
	segs []*compiledSegment
	// unusable says a segment named is missing, archived or broken: the condition never matches.
	unusable bool
}

// valueSet is a set of scalar values compared for equality.
type valueSet struct {
	strs            []string
	strSet          map[string]struct{}
	nums            []float64
	hasTrue, hasFal bool
}

// setThreshold is the number of strings from which a set beats a linear scan.
const setThreshold = 8

func (v *valueSet) add(x any) bool {
	switch x := x.(type) {
	case string:
		v.strs = append(v.strs, x)
	case bool:
		if x {
			v.hasTrue = true
		} else {
			v.hasFal = true
		}
	default:
		f, ok := number(x)
		if !ok {
			return false
		}
		v.nums = append(v.nums, f)
	}
	return true
}

func (v *valueSet) seal() {
	if len(v.strs) >= setThreshold {
		v.strSet = keySet(v.strs)
	}
}

func (v *valueSet) hasString(s string) bool {
	if v.strSet != nil {
		_, ok := v.strSet[s]
		return ok
	}
	for _, x := range v.strs {
		if x == s {
			return true
		}
	}
	return false
}

func (v *valueSet) hasNumber(f float64) bool {
	for _, x := range v.nums {
		if x == f {
			return true
		}
	}
	return false
}

func (v *valueSet) hasBool(b bool) bool {
	if b {
		return v.hasTrue
	}
	return v.hasFal
}

// segmentLookup returns the compiled segment of a key, or nil when there is none.
type segmentLookup func(key string) *compiledSegment

// compileCondition compiles c. segs resolves segment keys; allowSegments is false inside a
// segment, which cannot refer to segments.
func compileCondition(c *events.Condition, segs segmentLookup, allowSegments bool) (condition, error) {
	if c.Attribute == "" {
		return condition{}, errors.New("attribute is required")
	}
	oc, ok := opcodes[c.Operator]
	if !ok {
		return condition{}, fmt.Errorf("unknown operator %q", truncate(c.Operator))
	}
	out := condition{attr: c.Attribute, isTargetingKey: c.Attribute == targetingKeyAttr, op: oc.op, negate: oc.negate}
	if out.op == opExists {
		return out, nil
	}
	if len(c.Values) == 0 {
		return condition{}, fmt.Errorf("%s needs at least one value", c.Operator)
	}
	for i, v := range c.Values {
		if err := out.addValue(c.Operator, v, segs, allowSegments); err != nil {
			return condition{}, fmt.Errorf("values[%d]: %w", i, err)
		}
	}
	out.eq.seal()
	if out.unusable {
		out.op, out.segs = opNever, nil
	}
	return out, nil
}

func (c *condition) addValue(opName string, v any, segs segmentLookup, allowSegments bool) error {
	switch c.op {
	case opEq:
		if !c.eq.add(v) {
			return errors.New("values are strings, numbers or booleans")
		}
	case opContains:
		if !c.eq.add(v) {
			return errors.New("values are strings, numbers or booleans")
		}
		if s, ok := v.(string); ok {
			c.strs = append(c.strs, s)
		}
	case opStartsWith, opEndsWith:
		// Non-string values pass validation but can never match a string.
		switch v := v.(type) {
		case string:
			c.strs = append(c.strs, v)
		case bool:
		default:
			if _, ok := number(v); !ok {
				return errors.New("values are strings, numbers or booleans")
			}
		}
	case opMatches:
		s, ok := v.(string)
		if !ok {
			return errors.New("matches takes regular expressions as strings")
		}
		re, err := regexp.Compile(s)
		if err != nil {
			return fmt.Errorf("regular expression: %w", err)
		}
		c.res = append(c.res, re)
	case opLt, opLte, opGt, opGte:
		f, ok := number(v)
		if !ok || math.IsNaN(f) {
			return fmt.Errorf("%s compares numbers", opName)
		}
		c.nums = append(c.nums, f)
	case opSemverEq, opSemverLt, opSemverGt:
		s, _ := v.(string)
		ver, ok := parseSemver(s)
		if !ok {
			return fmt.Errorf("%s compares versions such as 1.2.3", opName)
		}
		c.vers = append(c.vers, ver)
	case opBefore, opAfter:
		s, _ := v.(string)
		t, err := time.Parse(time.RFC3339, s)
		if err != nil {
			return fmt.Errorf("%s compares RFC 3339 times such as 2026-01-02T15:04:05Z", opName)
		}
		c.ts = append(c.ts, instant{sec: t.Unix(), nsec: int32(t.Nanosecond())})
	case opInSegment:
		if !allowSegments {
			return errors.New("a segment cannot refer to other segments")
		}
		key, ok := v.(string)
		if !ok {
			return fmt.Errorf("%s takes segment keys", opName)
		}
		sg := segs(key)
		if sg == nil || !sg.usable() {
			// The write path refuses this; should it happen anyway, the condition never matches.
			c.unusable = true
			return nil
		}
		c.segs = append(c.segs, sg)
	}
	return nil
}

// number returns a numeric value as a float64.
func number(v any) (float64, bool) {
	switch n := v.(type) {
	case float64:
		return n, true
	case int:
		return float64(n), true
	case int64:
		return float64(n), true
	case int32:
		return float64(n), true
	case int16:
		return float64(n), true
	case int8:
		return float64(n), true
	case uint:
		return float64(n), true
	case uint64:
		return float64(n), true
	case uint32:
		return float64(n), true
	case uint16:
		return float64(n), true
	case uint8:
		return float64(n), true
	case float32:
		return float64(n), true
	case json.Number:
		f, err := n.Float64()
		return f, err == nil
	}
	return 0, false
}

// truncate shortens s for an error message.
func truncate(s string) string {
	if len(s) > 64 {
		return s[:64] + "…"
	}
	return s
}
