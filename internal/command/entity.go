package command

import (
	"context"
	"fmt"

	"github.com/interlock-dev/interlock/events"
	"github.com/interlock-dev/interlock/projections"
)

// kind is what the service knows of one kind of entity, flags or segments: where its events
// are, how they fold, and how its commands fail. The cache, the decide → append loop ([exec])
// and the checks every command shares are the same for every kind, so another kind of entity
// needs only a kind, its fold (a projections type) and its commands with their validation.
type kind[T any] struct {
	subject func(env, key string) string
	cache   func(s *Service) map[string]*entry[T]
	// exists, archived and head read the folded state; head gives its version and the stream
	// sequence of its last event.
	exists   func(*T) bool
	archived func(*T) bool
	head     func(*T) (version, seq uint64)
	// fold applies an event to the state; cfg is as for the function fold (flags only).
	fold   func(state *T, ev events.Event, cfg *events.FlagConfig) error
	result func(T) Result
	// errExists and errNotFound refuse a create of an entity that exists and a command on one
	// that does not; versionEntity is the Entity of a VersionError about it.
	errExists, errNotFound error
	versionEntity          string
	// archive and unarchive are the events of an archive and an unarchive.
	archive, unarchive decision
	// inUse, when set, refuses to archive an entity that others still use.
	inUse func(ctx context.Context, s *Service, env, key string) error
}

var flagKind = &kind[projections.Flag]{
	subject:     events.FlagSubject,
	cache:       func(s *Service) map[string]*flagEntry { return s.flags },
	exists:      (*projections.Flag).Exists,
	archived:    func(f *projections.Flag) bool { return f.Archived },
	head:        func(f *projections.Flag) (uint64, uint64) { return f.Version, f.Sequence },
	fold:        fold,
	result:      func(f projections.Flag) Result { return Result{Flag: f} },
	errExists:   ErrExists,
	errNotFound: notFound{},
	archive:     decision{typ: events.TypeFlagArchived, payload: events.FlagArchived{}},
	unarchive:   decision{typ: events.TypeFlagUnarchived, payload: events.FlagUnarchived{}},
}

var segmentKind = &kind[projections.Segment]{
	subject:  events.SegmentSubject,
	cache:    func(s *Service) map[string]*segmentEntry { return s.segments },
	exists:   (*projections.Segment).Exists,
	archived: func(seg *projections.Segment) bool { return seg.Archived },
	head:     func(seg *projections.Segment) (uint64, uint64) { return seg.Version, seg.Sequence },
	fold: func(seg *projections.Segment, ev events.Event, _ *events.FlagConfig) error {
		return seg.Apply(ev)
	},
	result:        func(seg projections.Segment) Result { return Result{Segment: seg} },
	errExists:     &entityError{ErrExists, "segment already exists"},
	errNotFound:   segmentNotFound{},
	versionEntity: events.EntitySegment,
	archive:       decision{typ: events.TypeSegmentArchived, payload: events.SegmentArchived{}},
	unarchive:     decision{typ: events.TypeSegmentUnarchived, payload: events.SegmentUnarchived{}},
	inUse: func(ctx context.Context, s *Service, env, key string) error {
		users, err := s.segmentUsers(ctx, env, key)
		if err != nil {
			return err
		}
		if len(users) > 0 {
			return &InUseError{Segment: env + "/" + key, Flags: users}
		}
		return nil
	},
}

type (
	// ArchiveFlag retires the flag; archiving an archived flag writes nothing.
	//
	// Errors: [ErrNotFound]; [*VersionError].
	ArchiveFlag = setArchived[projections.Flag, archiveFlag]
	// UnarchiveFlag brings an archived flag back; unarchiving a flag that is not archived writes
	// nothing.
	//
	// Errors: [ErrNotFound]; [*VersionError].
	UnarchiveFlag = setArchived[projections.Flag, unarchiveFlag]
	// ArchiveSegment retires the segment; archiving an archived segment writes nothing. A
	// segment that live flags still name, in their rules or as the segment their valve serves,
	// is not archived (see [WithUsage] for how they are found).
	//
	// Errors: [ErrSegmentNotFound]; [*VersionError]; [*InUseError] (matching [ErrInUse]); an
	// error wrapping context.DeadlineExceeded when the catalog given with WithUsage did not
	// catch up with the stream within 5 seconds.
	ArchiveSegment = setArchived[projections.Segment, archiveSegment]
	// UnarchiveSegment brings an archived segment back; unarchiving a segment that is not
	// archived writes nothing.
	//
	// Errors: [ErrSegmentNotFound]; [*VersionError].
	UnarchiveSegment = setArchived[projections.Segment, unarchiveSegment]
)

// setArchived archives (or unarchives) an entity: O says its kind, and which of the two.
type setArchived[T any, O archiving[T]] struct {
	Meta
	Env, Key        string
	ExpectedVersion uint64
}

// archiving is what a setArchived does: the kind, its name, and whether it archives.
type archiving[T any] interface {
	op() (k *kind[T], name string, archive bool)
}

type (
	archiveFlag      struct{}
	unarchiveFlag    struct{}
	archiveSegment   struct{}
	unarchiveSegment struct{}
)

func (archiveFlag) op() (*kind[projections.Flag], string, bool) { return flagKind, "archive", true }
func (unarchiveFlag) op() (*kind[projections.Flag], string, bool) {
	return flagKind, "unarchive", false
}
func (archiveSegment) op() (*kind[projections.Segment], string, bool) {
	return segmentKind, "archive segment", true
}
func (unarchiveSegment) op() (*kind[projections.Segment], string, bool) {
	return segmentKind, "unarchive segment", false
}

// Name is "archive", "unarchive", "archive segment" or "unarchive segment".
func (setArchived[T, O]) Name() string {
	var o O
	_, name, _ := o.op()
	return name
}

func (c setArchived[T, O]) validate(context.Context, *Service) (Command, error) {
	err := target(&c.Meta, c.Name(), c.Env, c.Key, false)
	return c, err
}

func (c setArchived[T, O]) exec(ctx context.Context, s *Service) (Result, error) {
	var o O
	k, name, archive := o.op()
	d := k.unarchive
	if archive {
		d = k.archive
	}
	return exec(ctx, s, k, command[T]{
		name: name, env: c.Env, key: c.Key, meta: c.Meta, expected: c.ExpectedVersion,
		decide: func(ctx context.Context, e *entry[T]) (decision, error) {
			if k.archived(&e.state) == archive {
				return noop, nil
			}
			if archive && k.inUse != nil {
				if err := k.inUse(ctx, s, c.Env, c.Key); err != nil {
					return decision{}, err
				}
			}
			return d, nil
		},
	})
}

// get reads the entity env/key of kind k as the stream has it now; name names the read in errors.
func get[T any](ctx context.Context, s *Service, k *kind[T], name, env, key string) (T, error) {
	var zero T
	err := validateTarget(env, key)
	v := zero
	if err == nil {
		v, err = current(ctx, s, k, env, key)
	}
	if err == nil && !k.exists(&v) {
		err = k.errNotFound
	}
	if err != nil {
		return zero, fmt.Errorf("%s %s/%s: %w", name, env, key, err)
	}
	return v, nil
}
