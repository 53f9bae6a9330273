package projections

import (
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"

	"github.com/interlock-dev/interlock/events"
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
type Flagset struct {
	env      string
	seq      uint64
	flags    map[string]*compiledFlag
	segments map[string]*compiledSegment

	keysOnce sync.Once
	keys     []string
}

// NewFlagset returns an empty flag set of env at sequence 0.
func NewFlagset(env string) *Flagset {
	return &Flagset{env: env}
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
	f := s.flags[key]
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
		keys := make([]string, 0, len(s.flags))
		for k, f := range s.flags {
			if !f.archived {
				keys = append(keys, k)
			}
		}
		slices.Sort(keys)
		s.keys = keys
	})
	return slices.Clone(s.keys)
}

// Flags returns the documents of every flag, archived ones included, sorted by key: what a
// snapshot holds. Their maps and slices are shared with the set: treat them as read-only.
func (s *Flagset) Flags() []Flag {
	out := make([]Flag, 0, len(s.flags))
	for _, f := range s.flags {
		out = append(out, f.src)
	}
	slices.SortFunc(out, func(a, b Flag) int { return strings.Compare(a.Key, b.Key) })
	return out
}

// Segments returns the documents of every segment, archived ones included, sorted by key.
// Their maps and slices are shared with the set: treat them as read-only.
func (s *Flagset) Segments() []Segment {
	out := make([]Segment, 0, len(s.segments))
	for _, sg := range s.segments {
		out = append(out, sg.src)
	}
	slices.SortFunc(out, func(a, b Segment) int { return strings.Compare(a.Key, b.Key) })
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
	for k, f := range s.flags {
		if f.err != nil {
			all = append(all, keyed{"flag " + k, f.err})
		}
	}
	for k, sg := range s.segments {
		if sg.err != nil {
			all = append(all, keyed{"segment " + k, sg.err})
		}
	}
	slices.SortFunc(all, func(a, b keyed) int { return strings.Compare(a.key, b.key) })
	out := make([]error, 0, len(all))
	for _, e := range all {
		out = append(out, e.err)
	}
	return out
}

// MissingSegments returns, sorted and without repeats, the segment keys that f's conditions
// refer to and that this set cannot use: they do not exist, are archived, or did not compile. A
// command that changes f should refuse it unless this is empty; evaluation treats a condition on
// such a segment as not matching. Only f's document is read: f need not be in the set.
func (s *Flagset) MissingSegments(f Flag) []string {
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
				if sg := s.segments[key]; sg == nil || !sg.usable() {
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
// changed; everything else is shared with s, which does not change.
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
		return s, fmt.Errorf("%w: event of environment %q applied to the flag set of %q", ErrOutOfOrder, ev.Environment, s.env)
	}
	if ev.Sequence != 0 && ev.Sequence <= s.seq {
		return s, nil
	}
	b := s.edit()
	err := b.fold(&ev)
	b.seq = max(b.seq, ev.Sequence)
	return b.publish(), err
}

// ApplyAll is [Flagset.Apply] for a batch of events in stream order, paying for one copy of the
// set however many events there are: what a subscriber catching up after a snapshot wants. The
// returned set is never nil. The error joins the errors of the events that did not fold, each
// naming its sequence; those events change nothing but the sequence (and events of another
// environment not even that).
func (s *Flagset) ApplyAll(evs []events.Event) (*Flagset, error) {
	b := s.edit()
	for i := range evs {
		if evs[i].Entity == events.EntitySegment {
			b.indexUsers() // so that each segment event finds its flags without a scan
			break
		}
	}
	var errs []error
	for i := range evs {
		ev := &evs[i]
		if ev.Environment != s.env {
			errs = append(errs, fmt.Errorf("sequence %d: %w: event of environment %q applied to the flag set of %q", ev.Sequence, ErrOutOfOrder, ev.Environment, s.env))
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
	if len(errs) == 0 && b.seq == s.seq && b.flagsShared && b.segmentsShared {
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
func CompileFlagset(env string, seq uint64, flags []Flag, segments []Segment) (*Flagset, error) {
	if err := events.ValidateEnvironment(env); err != nil {
		return nil, err
	}
	b := &builder{env: env, seq: seq, flags: make(map[string]*compiledFlag, len(flags)), segments: make(map[string]*compiledSegment, len(segments))}
	for _, sg := range segments {
		if err := checkEntity(env, sg.Environment, "segment", sg.Key); err != nil {
			return nil, err
		}
		if _, dup := b.segments[sg.Key]; dup {
			return nil, fmt.Errorf("%w: segment %q given twice", events.ErrInvalid, sg.Key)
		}
		b.segments[sg.Key] = compileSegment(sg)
	}
	for _, f := range flags {
		if err := checkEntity(env, f.Environment, "flag", f.Key); err != nil {
			return nil, err
		}
		if _, dup := b.flags[f.Key]; dup {
			return nil, fmt.Errorf("%w: flag %q given twice", events.ErrInvalid, f.Key)
		}
		b.flags[f.Key] = compileFlag(f, b.segments, nil)
	}
	return b.publish(), nil
}

func checkEntity(env, entityEnv, kind, key string) error {
	if err := events.ValidateFlagKey(key); err != nil {
		return fmt.Errorf("%s: %w", kind, err)
	}
	if entityEnv != env {
		return fmt.Errorf("%w: %s %s of environment %q in the flag set of %q", ErrOutOfOrder, kind, key, entityEnv, env)
	}
	return nil
}

// builder makes flag sets. It owns its maps until it publishes them; after that it copies a map
// before its next change to it, so a published set never changes.
type builder struct {
	env      string
	seq      uint64
	flags    map[string]*compiledFlag
	segments map[string]*compiledSegment
	// flagsShared and segmentsShared say the map is held by a published set.
	flagsShared, segmentsShared bool
	// users maps a segment key to the flags whose conditions name it. When nil, a segment change
	// finds them by scanning every flag.
	users map[string]map[string]struct{}
}

// edit returns a builder starting from s.
func (s *Flagset) edit() *builder {
	return &builder{env: s.env, seq: s.seq, flags: s.flags, segments: s.segments, flagsShared: true, segmentsShared: true}
}

// publish returns the current state as an immutable set.
func (b *builder) publish() *Flagset {
	b.flagsShared, b.segmentsShared = true, true
	return &Flagset{env: b.env, seq: b.seq, flags: b.flags, segments: b.segments}
}

func (b *builder) ownFlags() {
	if b.flagsShared || b.flags == nil {
		next := make(map[string]*compiledFlag, len(b.flags)+1)
		for k, v := range b.flags {
			next[k] = v
		}
		b.flags, b.flagsShared = next, false
	}
}

func (b *builder) ownSegments() {
	if b.segmentsShared || b.segments == nil {
		next := make(map[string]*compiledSegment, len(b.segments)+1)
		for k, v := range b.segments {
			next[k] = v
		}
		b.segments, b.segmentsShared = next, false
	}
}

// fold folds ev into the flag or segment it names.
func (b *builder) fold(ev *events.Event) error {
	switch ev.Entity {
	case events.EntityFlag:
		return b.foldFlag(ev)
	case events.EntitySegment:
		return b.foldSegment(ev)
	}
	return fmt.Errorf("%w: event %q of unknown entity %q", events.ErrMalformed, ev.ID, ev.Entity)
}

// foldFlag folds ev into the flag it names and compiles the result.
func (b *builder) foldFlag(ev *events.Event) error {
	var f Flag
	if prev := b.flags[ev.Key]; prev != nil {
		f = prev.src
	}
	if err := apply(&f, ev); err != nil {
		return err
	}
	b.setFlag(f)
	return nil
}

// foldSegment folds ev into the segment it names and compiles the result.
func (b *builder) foldSegment(ev *events.Event) error {
	if err := validateRef(ev); err != nil {
		return err
	}
	var sg Segment
	if prev := b.segments[ev.Key]; prev != nil {
		sg = prev.src
	}
	if err := sg.Apply(*ev); err != nil {
		return err
	}
	b.setSegment(sg)
	return nil
}

// setFlag compiles f against the builder's segments and stores it.
func (b *builder) setFlag(f Flag) {
	old := b.flags[f.Key]
	c := compileFlag(f, b.segments, old)
	b.ownFlags()
	b.flags[f.Key] = c
	if b.users == nil {
		return
	}
	if old != nil {
		for _, sk := range old.segments {
			delete(b.users[sk], f.Key)
			if len(b.users[sk]) == 0 {
				delete(b.users, sk)
			}
		}
	}
	for _, sk := range c.segments {
		u := b.users[sk]
		if u == nil {
			u = make(map[string]struct{})
			b.users[sk] = u
		}
		u[f.Key] = struct{}{}
	}
}

// setSegment compiles sg, stores it, and compiles again the flags that use it.
func (b *builder) setSegment(sg Segment) {
	b.ownSegments()
	b.segments[sg.Key] = compileSegment(sg)
	var users []string
	if b.users != nil {
		for fk := range b.users[sg.Key] {
			users = append(users, fk)
		}
	} else {
		for fk, f := range b.flags {
			if slices.Contains(f.segments, sg.Key) {
				users = append(users, fk)
			}
		}
	}
	if len(users) == 0 {
		return
	}
	b.ownFlags()
	for _, fk := range users {
		b.flags[fk] = compileFlag(b.flags[fk].src, b.segments, nil)
	}
}

// indexUsers builds the segment → flags index, so that segment changes no longer scan.
func (b *builder) indexUsers() {
	b.users = make(map[string]map[string]struct{})
	for fk, f := range b.flags {
		for _, sk := range f.segments {
			u := b.users[sk]
			if u == nil {
				u = make(map[string]struct{})
				b.users[sk] = u
			}
			u[fk] = struct{}{}
		}
	}
}
