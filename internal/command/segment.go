package command

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"time"

	"github.com/interlock-dev/interlock/events"
	"github.com/interlock-dev/interlock/projections"
)

// usageWait bounds how long ArchiveSegment waits for the catalog to catch up with the stream.
const usageWait = 5 * time.Second

// InUseError refuses to archive a segment that live flags use. errors.Is(err, ErrInUse) holds.
type InUseError struct {
	// Segment is the segment, as ENV/KEY.
	Segment string
	// Flags are the keys of the live flags whose rules name the segment, sorted.
	Flags []string
}

// maxNamed bounds how many flags an InUseError's message names.
const maxNamed = 10

// Error names the flags (the first ten of them).
func (e *InUseError) Error() string {
	names, more := e.Flags, ""
	if len(names) > maxNamed {
		names, more = names[:maxNamed], fmt.Sprintf(" and %d more", len(names)-maxNamed)
	}
	return fmt.Sprintf("%v: %s %s%s still %s %s: remove their inSegment/notInSegment conditions on it (or archive them) first",
		ErrInUse, plural(len(e.Flags), "flag", "flags"), strings.Join(names, ", "), more, plural(len(e.Flags), "uses", "use"), e.Segment)
}

// Unwrap makes errors.Is(err, ErrInUse) hold.
func (e *InUseError) Unwrap() error { return ErrInUse }

func plural(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}

// CreateSegment creates a segment from Config, validated and normalised (key lists sorted,
// without repeats). Segment keys follow the flag key rules.
//
// Errors: [ErrExists] (with a message about a segment) if the segment already exists.
type CreateSegment struct {
	Meta
	Env, Key string
	Config   events.SegmentConfig
}

// Name is "create segment".
func (CreateSegment) Name() string { return "create segment" }

func (c CreateSegment) validate(context.Context, *Service) (Command, error) {
	m, cfg, err := validateSegmentCreate(c.Meta, c.Env, c.Key, c.Config)
	if err != nil {
		return nil, fmt.Errorf("create segment %s/%s: %w", c.Env, c.Key, err)
	}
	c.Meta, c.Config = m, cfg
	return c, nil
}

func (c CreateSegment) exec(ctx context.Context, s *Service) (Result, error) {
	return exec(ctx, s, segmentKind, segmentCommand{
		name: c.Name(), env: c.Env, key: c.Key, meta: c.Meta, create: true,
		decide: func(context.Context, *segmentEntry) (decision, error) {
			return decision{typ: events.TypeSegmentCreated, payload: events.SegmentCreated{Segment: c.Config}}, nil
		},
	})
}

// validateSegmentCreate is everything CreateSegment checks before it looks at the stream.
func validateSegmentCreate(m Meta, env, key string, cfg events.SegmentConfig) (Meta, events.SegmentConfig, error) {
	m, err := validateCommand(m, env, key, false)
	if err != nil {
		return Meta{}, events.SegmentConfig{}, err
	}
	cfg = cfg.Clone()
	if err := cfg.Validate(); err != nil {
		return Meta{}, events.SegmentConfig{}, err
	}
	cfg.Normalize()
	return m, cfg, nil
}

// UpdateSegment applies Patch, a JSON Merge Patch (RFC 7396) object, to the segment's
// configuration document (the JSON of events.SegmentConfig: description, included, excluded,
// conditions) and stores the result if it is valid and differs from the current configuration;
// a patch that changes nothing writes nothing. Arrays are replaced whole, as RFC 7396 says. The
// read-only fields (key, environment, version, archived, createdAt, updatedAt, updatedBy) and
// unknown fields are refused.
//
// Errors: [ErrSegmentNotFound]; [*VersionError] when ExpectedVersion is not 0 and not the
// segment's version; [ErrArchived].
type UpdateSegment struct {
	Meta
	Env, Key        string
	ExpectedVersion uint64
	Patch           []byte

	p *patch // Patch, parsed by validate
}

// Name is "update segment".
func (UpdateSegment) Name() string { return "update segment" }

func (c UpdateSegment) validate(context.Context, *Service) (Command, error) {
	m, err := validateCommand(c.Meta, c.Env, c.Key, false)
	if err == nil {
		c.p, err = parseDocumentPatch(c.Patch, segmentDocument)
	}
	if err != nil {
		return nil, fmt.Errorf("update segment %s/%s: %w", c.Env, c.Key, err)
	}
	c.Meta = m
	return c, nil
}

func (c UpdateSegment) exec(ctx context.Context, s *Service) (Result, error) {
	p := c.p
	return exec(ctx, s, segmentKind, segmentCommand{
		name: c.Name(), env: c.Env, key: c.Key, meta: c.Meta, expected: c.ExpectedVersion,
		decide: func(_ context.Context, e *segmentEntry) (decision, error) {
			cur := &e.state
			if cur.Archived {
				return decision{}, segmentArchived()
			}
			next, same, err := applySegmentPatch(p, cur.SegmentConfig)
			if err != nil {
				return decision{}, err
			}
			if same {
				return noop, nil
			}
			return decision{typ: events.TypeSegmentUpdated, payload: events.SegmentUpdated{Segment: next, Patch: p.compact}}, nil
		},
	})
}

// GetSegment reads the segment's latest events from the stream, refreshing the cache, and
// returns its current state, archived or not.
//
// Errors: [ErrSegmentNotFound]; events.ErrInvalid for a bad environment or key; otherwise a read
// error.
func (s *Service) GetSegment(ctx context.Context, env, key string) (projections.Segment, error) {
	return get(ctx, s, segmentKind, "get segment", env, key)
}

// segmentNow returns the segment's current state as the stream has it (the zero Segment when it
// was never created), refreshing the cache.
func (s *Service) segmentNow(ctx context.Context, env, key string) (projections.Segment, error) {
	return current(ctx, s, segmentKind, env, key)
}

func segmentArchived() error {
	return &entityError{ErrArchived, "segment is archived: unarchive it first"}
}

// segmentUse is one condition value naming a segment: the segment's key and the value's path in
// the flag document.
type segmentUse struct{ key, path string }

// segmentUses lists the segments the rules of cfg name, in document order, one entry per
// condition value.
func segmentUses(cfg *events.FlagConfig) []segmentUse {
	var uses []segmentUse
	for i := range cfg.Rules {
		for j, c := range cfg.Rules[i].Conditions {
			if c.Operator != "inSegment" && c.Operator != "notInSegment" {
				continue
			}
			for k, v := range c.Values {
				if key, ok := v.(string); ok {
					uses = append(uses, segmentUse{key, fmt.Sprintf("rules[%d].conditions[%d].values[%d]", i, j, k)})
				}
			}
		}
	}
	return uses
}

// checkSegments refuses a flag configuration whose rules name a segment that does not exist or
// is archived in env, with one *events.ValidationError per such condition value (joined). Each
// segment is read once, from its stream subject.
func (s *Service) checkSegments(ctx context.Context, env string, cfg *events.FlagConfig) error {
	uses := segmentUses(cfg)
	if len(uses) == 0 {
		return nil
	}
	problems := make(map[string]string) // by segment key; "" when usable
	var errs []error
	for _, u := range uses {
		msg, seen := problems[u.key]
		if !seen {
			seg, err := s.segmentNow(ctx, env, u.key)
			if err != nil {
				return fmt.Errorf("read segment %s/%s: %w", env, u.key, err)
			}
			switch {
			case !seg.Exists():
				msg = fmt.Sprintf("segment %q does not exist in %s: create it first", u.key, env)
			case seg.Archived:
				msg = fmt.Sprintf("segment %q is archived in %s: unarchive it or name another", u.key, env)
			}
			problems[u.key] = msg
		}
		if msg != "" {
			errs = append(errs, &events.ValidationError{Field: u.path, Message: msg})
		}
	}
	if len(errs) > maxReported {
		more := len(errs) - maxReported
		errs = append(errs[:maxReported], &events.ValidationError{Field: "rules", Message: fmt.Sprintf("and %d more conditions on missing or archived segments", more)})
	}
	return errors.Join(errs...)
}

// segmentUsers returns the keys of the live flags of env whose rules name segment key, or that
// are valves serving that segment, sorted.
func (s *Service) segmentUsers(ctx context.Context, env, key string) ([]string, error) {
	last, err := s.store.LastSequence(ctx)
	if err != nil {
		return nil, fmt.Errorf("find the flags using the segment: %w", err)
	}
	var flags []projections.Flag
	if s.uses != nil {
		wctx, cancel := context.WithTimeout(ctx, usageWait)
		err := s.uses.WaitSequence(wctx, last)
		cancel()
		if err != nil {
			return nil, fmt.Errorf("find the flags using the segment: the catalog has not caught up with sequence %d: %w", last, err)
		}
		flags = s.uses.Flags(env)
	} else if last > 0 {
		if flags, err = projections.EnvironmentAt(ctx, s.store, env, projections.Point{Sequence: last}); err != nil {
			return nil, fmt.Errorf("find the flags using the segment: %w", err)
		}
	}
	var users []string
	for i := range flags {
		f := &flags[i]
		if f.Archived {
			continue
		}
		if slices.ContainsFunc(segmentUses(&f.FlagConfig), func(u segmentUse) bool { return u.key == key }) ||
			f.Valve != nil && f.Valve.Segment == key {
			users = append(users, f.Key)
		}
	}
	slices.Sort(users)
	return users, nil
}

// segmentReadOnly are the fields of a segment that a patch may not set, and what to do instead.
var segmentReadOnly = []readOnlyField{
	{"key", "a segment's key never changes: create a segment with the new key (and archive this one)"},
	{"environment", "a segment's environment never changes: create the segment in the other environment"},
	{"version", "is read-only: send the version you expect with the command (If-Match), not in the patch"},
	{"archived", "is read-only: use the archive and unarchive commands"},
	{"createdAt", "is read-only: recorded from the segment's events"},
	{"updatedAt", "is read-only: recorded from the segment's events"},
	{"updatedBy", "is read-only: recorded from the segment's events"},
}

// segmentDocument is the segment's configuration document.
var segmentDocument = &document{schema: schemaOf(reflect.TypeFor[events.SegmentConfig]()), readOnly: segmentReadOnly}

// applySegmentPatch merges p into cur and validates and normalises the result, as RFC 7396 does
// on the whole document (FuzzSegmentPatch holds it to that), member by member: the members the
// patch does not touch are copied, not encoded and decoded again. same reports that the result is
// cur's configuration once normalised: nothing changed. cur is not modified. Errors wrap
// events.ErrInvalid.
func applySegmentPatch(p *patch, cur events.SegmentConfig) (next events.SegmentConfig, same bool, err error) {
	next = cur.Clone() // normalising sorts the key lists in place
	fields := reflect.ValueOf(&next).Elem()
	for _, k := range p.names {
		m := p.members[k]
		sf := segmentDocument.schema.fields[k]
		f := fields.FieldByIndex(sf.index)
		f.SetZero() // what a document without the member decodes to
		if m.del {
			continue
		}
		raw := m.raw
		if m.obj != nil {
			// An object merged into a member that is not one: RFC 7396 gives the object.
			if raw, err = json.Marshal(mergePatch(nil, m.obj)); err != nil {
				return events.SegmentConfig{}, false, &events.ValidationError{Field: k, Message: "result does not encode: " + err.Error()}
			}
		}
		if err := decodeMember(raw, f.Addr().Interface(), sf.schema); err != nil {
			var te *json.UnmarshalTypeError
			if errors.As(err, &te) {
				return events.SegmentConfig{}, false, decodeError(k, err)
			}
			return events.SegmentConfig{}, false, &events.ValidationError{Field: k, Message: "is not what a segment document holds here: " + err.Error()}
		}
	}
	if err := next.Validate(); err != nil {
		return events.SegmentConfig{}, false, err
	}
	next.Normalize()

	// Only the members the patch touched can differ from cur's, once both are normalised.
	before := cur.Clone()
	before.Normalize()
	was := reflect.ValueOf(&before).Elem()
	same = true
	for _, k := range p.names {
		sf := segmentDocument.schema.fields[k]
		x, y := was.FieldByIndex(sf.index), fields.FieldByIndex(sf.index)
		if isEmptyValue(x) && isEmptyValue(y) {
			continue
		}
		a, err := json.Marshal(x.Interface())
		if err != nil {
			return events.SegmentConfig{}, false, fmt.Errorf("encode segment %s: %w", k, err)
		}
		b, err := json.Marshal(y.Interface())
		if err != nil {
			return events.SegmentConfig{}, false, &events.ValidationError{Field: k, Message: "does not encode: " + err.Error()}
		}
		if !bytes.Equal(a, b) {
			same = false
			break
		}
	}
	return next, same, nil
}
