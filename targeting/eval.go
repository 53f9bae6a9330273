package targeting

import (
	"encoding/json"
	"errors"
	"fmt"
	"hash/maphash"
	"slices"
	"strings"
	"sync"

	"github.com/interlock-dev/interlock/events"
	"github.com/interlock-dev/interlock/projections"
)

// ErrCompile means a flag or segment document cannot be compiled for evaluation: it bypassed
// validation (an unknown operator, a regular expression that does not compile, a serve naming no
// variant...). Such a flag stays in its [Flagset] and evaluates with [ErrorParseError].
var ErrCompile = errors.New("cannot compile for evaluation")

// Reason says why an evaluation served what it served. The values are OpenFeature's.
type Reason string

// The reasons an evaluation gives.
const (
	// ReasonStatic: the flag has no rules and no split by default: everybody gets the same.
	ReasonStatic Reason = "STATIC"
	// ReasonTargetingMatch: a rule matched and served a variant.
	ReasonTargetingMatch Reason = "TARGETING_MATCH"
	// ReasonSplit: a split (of a rule, or of the default) decided the variant.
	ReasonSplit Reason = "SPLIT"
	// ReasonDisabled: the flag is disabled and serves its off variant.
	ReasonDisabled Reason = "DISABLED"
	// ReasonDefault: the flag has rules but none matched; it served its default variant.
	ReasonDefault Reason = "DEFAULT"
	// ReasonError: no variant was served; the error code says why.
	ReasonError Reason = "ERROR"
)

// ErrorCode says why an evaluation failed. The values are OpenFeature's; "" means no error.
type ErrorCode string

// The error codes an evaluation gives. The engine itself never returns [ErrorTypeMismatch] or
// [ErrorGeneral]: they are for callers that check the type a client asked for.
const (
	ErrorFlagNotFound        ErrorCode = "FLAG_NOT_FOUND"
	ErrorTypeMismatch        ErrorCode = "TYPE_MISMATCH"
	ErrorTargetingKeyMissing ErrorCode = "TARGETING_KEY_MISSING"
	ErrorInvalidContext      ErrorCode = "INVALID_CONTEXT"
	ErrorParseError          ErrorCode = "PARSE_ERROR"
	ErrorGeneral             ErrorCode = "GENERAL"
)

// EvalContext is what an evaluation knows about the subject: the targeting key and attributes.
// Attribute values may be strings, booleans, numbers (float64, any int or uint, float32,
// json.Number), or lists of those ([]any, []string). The evaluation only reads the context.
//
// A condition on the attribute "targetingKey" reads TargetingKey, or, when that is empty, the
// attribute named "targetingKey".
type EvalContext struct {
	TargetingKey string
	Attributes   map[string]any
}

// ValueKind is the type of a flag's values.
type ValueKind uint8

// The value kinds. KindUnknown is only seen on evaluations of flags that do not exist or whose
// variants do not compile.
const (
	KindUnknown ValueKind = iota
	KindBool
	KindString
	KindNumber
	KindObject
)

// String is the kind's JSON name: "boolean", "string", "number" or "object".
func (k ValueKind) String() string {
	switch k {
	case KindBool:
		return "boolean"
	case KindString:
		return "string"
	case KindNumber:
		return "number"
	case KindObject:
		return "object"
	}
	return "unknown"
}

// Variant is one compiled value of a flag. Raw is the JSON value as stored; exactly one of Bool,
// String, Number and Object holds it decoded, as Kind says. A Variant belongs to a compiled
// flag set shared by every reader: treat it, Raw and Object as read-only.
type Variant struct {
	Name   string
	Kind   ValueKind
	Raw    json.RawMessage
	Bool   bool
	String string
	Number float64
	Object map[string]any
}

// Evaluation is the result of evaluating one flag for one context.
type Evaluation struct {
	FlagKey string
	// Variant is what was served; nil when Reason is [ReasonError].
	Variant      *Variant
	Reason       Reason
	ErrorCode    ErrorCode
	ErrorMessage string
	// Version is the version of the flag that was evaluated (0 for a flag that was not found).
	Version uint64
	// Kind is the type of the flag's values, also on errors after the flag was found.
	Kind ValueKind
}

// Static error messages: evaluation never formats.
const (
	msgNotFound            = "flag not found"
	msgTargetingKeyMissing = "a targeting key is required to split this flag"
)

// Flagset is the compiled, immutable flags and segments of one environment at one stream
// sequence. Any number of goroutines may evaluate on it; a change makes a new Flagset
// ([Flagset.Apply]) sharing what did not change, so readers holding the old one are never
// disturbed and never see half a change.
//
// The flags and segments are spread over 256 shards by a hash of their keys: a change copies the
// shard holding what it changed and the array of shard pointers, whatever the size of the
// environment.
type Flagset struct {
	env  string
	seq  uint64
	seed maphash.Seed
	// flags, segments and users are nil in an empty set.
	flags    *shards[*compiledFlag]
	segments *shards[*compiledSegment]
	// users maps a segment key to the set of keys of the flags whose conditions name it.
	users             *shards[map[string]struct{}]
	nflags, nsegments int

	keysOnce sync.Once
	keys     []string
}

// NewFlagset returns an empty flag set of env at sequence 0.
func NewFlagset(env string) *Flagset {
	return &Flagset{env: env, seed: maphash.MakeSeed()}
}

// flag returns the compiled flag of key, or nil.
func (s *Flagset) flag(key string) *compiledFlag {
	if s.flags == nil {
		return nil
	}
	return s.flags[shardOf(s.seed, key)][key]
}

// segment returns the compiled segment of key, or nil.
func (s *Flagset) segment(key string) *compiledSegment {
	if s.segments == nil {
		return nil
	}
	return s.segments[shardOf(s.seed, key)][key]
}

// Environment is the environment the flags belong to.
func (s *Flagset) Environment() string { return s.env }

// Sequence is the stream sequence of the last event folded in (or of the state the set was
// compiled from).
func (s *Flagset) Sequence() uint64 { return s.seq }

// Evaluate evaluates the flag key for ctx (nil means an empty context). It never fails: problems
// are in the result's Reason, ErrorCode and ErrorMessage. It allocates nothing, takes no lock and
// does no I/O.
//
// A flag that does not exist or is archived gives [ErrorFlagNotFound]; a disabled flag serves its
// off variant ([ReasonDisabled]); an enabled one serves the first rule whose conditions all match
// ([ReasonTargetingMatch], or [ReasonSplit] for a split), else its default ([ReasonStatic] when
// the flag has no rules and no split, [ReasonDefault] when no rule matched, [ReasonSplit] for a
// split default). A split that cannot bucket the context gives [ErrorTargetingKeyMissing] (it
// buckets by targeting key) or [ErrorInvalidContext] (by another attribute); a flag whose
// document does not compile gives [ErrorParseError].
//
// Conditions follow the same rules whatever the operator:
//   - A condition on an attribute the context does not have, or has as null, does not match —
//     neq, notIn and notInSegment included, as in LaunchDarkly: a context that does not say its
//     country is not "outside NL" as far as targeting knows. Only exists tests presence.
//   - An attribute of a type the operator does not compare (a number for startsWith, a string
//     for lt, an object for anything but exists) does not match, negated operators included.
//     Values are never converted: the string "5" does not equal the number 5. Strings compare
//     case-sensitively.
//   - A list attribute matches when one of its elements does; a negated operator (neq, notIn)
//     when none does. contains on a list tests whether the list holds one of the values; on a
//     string, whether it holds one of them as a substring.
//   - A condition with several values matches when the attribute matches one of them;
//     notIn and notInSegment when it matches none.
//   - lt, lte, gt and gte compare numbers; the semver operators compare versions by semver 2.0
//     precedence (a leading "v" and build metadata are ignored); before and after compare an RFC
//     3339 time, or a number of Unix seconds, with the values.
//   - inSegment takes the attribute's value (usually the targeting key) as the key looked up in
//     the segments' included and excluded lists; a context is in a segment when its key is
//     included, else when its key is not excluded and the segment has conditions and all match.
//     A condition naming a segment the set does not have (or has archived) never matches.
//
// A split hashes the flag key followed by the bucketing value with MurmurHash3 (x86, 32 bits,
// seed 0), takes bucket = hash·Σweights >> 32, and serves the variant owning that bucket, the
// variants owning consecutive ranges in name order: flagd's fractional operator with the
// variants listed by name and {"cat": [{"var": "$flagd.flagKey"}, {"var": ATTRIBUTE}]} as the
// bucketing expression (the default, the targeting key, is flagd's default too). A numeric
// bucketing value hashes as its decimal text (12345, 1.5). Growing one variant's weight keeps
// the contexts it had when it is the first or the last by name, which two-variant splits always
// are.
func (s *Flagset) Evaluate(key string, ctx *EvalContext) Evaluation {
	f := s.flag(key)
	if f == nil || f.archived {
		return Evaluation{FlagKey: key, Reason: ReasonError, ErrorCode: ErrorFlagNotFound, ErrorMessage: msgNotFound}
	}
	if !f.enabled {
		return f.disabledEval()
	}
	if f.err != nil {
		return f.fail(ErrorParseError, f.errMsg)
	}
	if f.static {
		return f.staticEval
	}
	if ctx == nil {
		ctx = &EvalContext{}
	}
	for i := range f.rules {
		r := &f.rules[i]
		if r.matches(ctx) {
			return f.serve(&r.serve, ctx, ReasonTargetingMatch)
		}
	}
	return f.serve(&f.dflt, ctx, ReasonDefault)
}

// Keys returns the keys of the flags that can be evaluated (not archived), sorted. The slice is
// the caller's.
func (s *Flagset) Keys() []string {
	s.keysOnce.Do(func() {
		keys := make([]string, 0, s.nflags)
		s.flags.each(func(k string, f *compiledFlag) {
			if !f.archived {
				keys = append(keys, k)
			}
		})
		slices.Sort(keys)
		s.keys = keys
	})
	return slices.Clone(s.keys)
}

// Flags returns the documents of every flag, archived ones included, sorted by key: what a
// snapshot holds. Their maps and slices are shared with the set: treat them as read-only.
func (s *Flagset) Flags() []projections.Flag {
	out := make([]projections.Flag, 0, s.nflags)
	s.flags.each(func(_ string, f *compiledFlag) { out = append(out, f.src) })
	slices.SortFunc(out, func(a, b projections.Flag) int { return strings.Compare(a.Key, b.Key) })
	return out
}

// Segments returns the documents of every segment, archived ones included, sorted by key.
// Their maps and slices are shared with the set: treat them as read-only.
func (s *Flagset) Segments() []projections.Segment {
	out := make([]projections.Segment, 0, s.nsegments)
	s.segments.each(func(_ string, sg *compiledSegment) { out = append(out, sg.src) })
	slices.SortFunc(out, func(a, b projections.Segment) int { return strings.Compare(a.Key, b.Key) })
	return out
}

// Errors returns why each flag or segment of the set that did not compile did not, sorted by
// key; each error wraps [ErrCompile]. Such flags evaluate with [ErrorParseError] (or serve their
// off variant while disabled); conditions on such segments do not match.
func (s *Flagset) Errors() []error {
	type keyed struct {
		key string
		err error
	}
	var all []keyed
	s.flags.each(func(k string, f *compiledFlag) {
		if f.err != nil {
			all = append(all, keyed{"flag " + k, f.err})
		}
	})
	s.segments.each(func(k string, sg *compiledSegment) {
		if sg.err != nil {
			all = append(all, keyed{"segment " + k, sg.err})
		}
	})
	slices.SortFunc(all, func(a, b keyed) int { return strings.Compare(a.key, b.key) })
	out := make([]error, 0, len(all))
	for _, e := range all {
		out = append(out, e.err)
	}
	return out
}

// FlagsUsing returns the keys of the flags (archived ones included) whose conditions name
// segment, sorted: the flags whose evaluations a change of segment may change. It costs what
// the answer does, not what the set holds. The slice is the caller's.
func (s *Flagset) FlagsUsing(segment string) []string {
	var us map[string]struct{}
	if s.users != nil {
		us = s.users[shardOf(s.seed, segment)][segment]
	}
	out := make([]string, 0, len(us))
	for fk := range us {
		out = append(out, fk)
	}
	slices.Sort(out)
	return out
}

// MissingSegments returns, sorted and without repeats, the segment keys that f's conditions
// refer to and that this set cannot use: they do not exist, are archived, or did not compile. A
// command that changes f should refuse it unless this is empty; evaluation treats a condition on
// such a segment as not matching. Only f's document is read: f need not be in the set.
func (s *Flagset) MissingSegments(f projections.Flag) []string {
	var missing []string
	for _, r := range f.Rules {
		for _, c := range r.Conditions {
			if c.Operator != opNameInSegment && c.Operator != opNameNotInSegment {
				continue
			}
			for _, v := range c.Values {
				key, ok := v.(string)
				if !ok {
					continue
				}
				if sg := s.segment(key); sg == nil || !sg.usable() {
					missing = append(missing, key)
				}
			}
		}
	}
	slices.Sort(missing)
	return slices.Compact(missing)
}

// Apply returns a new flag set with ev folded in: the flag or segment it names is folded with
// [Flag.Apply] or [Segment.Apply] and compiled again, and so is every flag using a segment that
// changed; everything else is shared with s, which does not change. The cost does not grow with
// the number of flags: Apply copies the shards holding what changed (about 1/256 of the flags
// each) and the array of shard pointers.
//
// The returned set is never nil; use it even when err is not nil. An event already folded in
// (its sequence is not after [Flagset.Sequence]) is skipped. An event that does not fold leaves
// the flags and segments as they were and advances the sequence past it (as [Catalog.Apply]
// does, so that one bad event cannot hold the sequence back); the error says why:
// [ErrOutOfOrder] when it does not follow its entity's state or belongs to another environment
// (then the set is returned unchanged), events.ErrMalformed when its payload does not decode,
// events.ErrUnknownType when an unknown type would create an entity, events.ErrInvalid for an
// invalid key. A document that folds but does not compile is not an error of Apply: see
// [Flagset.Errors].
func (s *Flagset) Apply(ev events.Event) (*Flagset, error) {
	if ev.Environment != s.env {
		return s, fmt.Errorf("%w: event of environment %q applied to the flag set of %q", projections.ErrOutOfOrder, ev.Environment, s.env)
	}
	if ev.Sequence != 0 && ev.Sequence <= s.seq {
		return s, nil
	}
	b := s.edit()
	err := b.fold(&ev)
	b.seq = max(b.seq, ev.Sequence)
	return b.publish(), err
}

// ApplyAll is [Flagset.Apply] for a batch of events in stream order, copying each shard it
// changes once however many events change it: what a subscriber catching up wants. The
// returned set is never nil. The error joins the errors of the events that did not fold, each
// naming its sequence; those events change nothing but the sequence (and events of another
// environment not even that).
func (s *Flagset) ApplyAll(evs []events.Event) (*Flagset, error) {
	b := s.edit()
	var errs []error
	for i := range evs {
		ev := &evs[i]
		if ev.Environment != s.env {
			errs = append(errs, fmt.Errorf("sequence %d: %w: event of environment %q applied to the flag set of %q", ev.Sequence, projections.ErrOutOfOrder, ev.Environment, s.env))
			continue
		}
		if ev.Sequence != 0 && ev.Sequence <= b.seq {
			continue
		}
		if err := b.fold(ev); err != nil {
			errs = append(errs, fmt.Errorf("sequence %d: %w", ev.Sequence, err))
		}
		b.seq = max(b.seq, ev.Sequence)
	}
	if len(errs) == 0 && b.seq == s.seq && !b.changed() {
		return s, nil
	}
	return b.publish(), errors.Join(errs...)
}

// CompileFlagset compiles the flags and segments of env as they were at stream sequence seq (a
// snapshot) into a flag set.
//
// A document that does not compile does not fail the call: its flag evaluates with
// [ErrorParseError] (see [Flagset.Errors]). Errors, with a nil set: one wrapping
// events.ErrInvalid when env or a key is not valid or a key is given twice, and one wrapping
// [ErrOutOfOrder] when a flag or segment belongs to another environment.
func CompileFlagset(env string, seq uint64, flags []projections.Flag, segments []projections.Segment) (*Flagset, error) {
	if err := events.ValidateEnvironment(env); err != nil {
		return nil, err
	}
	b := newBuilder(env)
	b.seq = seq
	for _, sg := range segments {
		if err := checkEntity(env, sg.Environment, "segment", sg.Key); err != nil {
			return nil, err
		}
		if b.segment(sg.Key) != nil {
			return nil, fmt.Errorf("%w: segment %q given twice", events.ErrInvalid, sg.Key)
		}
		b.setSegment(sg)
	}
	for _, f := range flags {
		if err := checkEntity(env, f.Environment, "flag", f.Key); err != nil {
			return nil, err
		}
		if b.flags.get(b.shardOf(f.Key), f.Key) != nil {
			return nil, fmt.Errorf("%w: flag %q given twice", events.ErrInvalid, f.Key)
		}
		b.setFlag(f)
	}
	return b.publish(), nil
}

func checkEntity(env, entityEnv, kind, key string) error {
	if err := events.ValidateFlagKey(key); err != nil {
		return fmt.Errorf("%s: %w", kind, err)
	}
	if entityEnv != env {
		return fmt.Errorf("%w: %s %s of environment %q in the flag set of %q", projections.ErrOutOfOrder, kind, key, entityEnv, env)
	}
	return nil
}
