package projections

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/interlock-dev/interlock/events"
)

// Reader reads the events stored in the stream; *events.Store satisfies it.
type Reader interface {
	// Read calls h for every event q selects that was stored when Read began, in stream order.
	Read(ctx context.Context, q events.Query, h events.Handler) error
}

// Point is a moment in the past of a flag, a segment or an environment. Exactly one field is set:
//
//   - Time: the state after every event, in stream order, up to the first event whose time is
//     after Time. The stream's order is the order of time: an event is never folded after a later
//     one was left out, even if a writer's clock put it earlier.
//   - Sequence: the state after every event whose stream sequence is at most Sequence.
//   - Version: the state of one flag (or segment) at that version; not for an environment.
type Point struct {
	Time     time.Time
	Sequence uint64
	Version  uint64
}

// Validate reports an error wrapping events.ErrInvalid unless exactly one field is set.
func (p Point) Validate() error {
	n := 0
	if !p.Time.IsZero() {
		n++
	}
	if p.Sequence != 0 {
		n++
	}
	if p.Version != 0 {
		n++
	}
	if n != 1 {
		return &events.ValidationError{Field: "at", Message: "give exactly one of a time, a stream sequence or a version"}
	}
	return nil
}

// String describes the point for messages: an RFC 3339 time, "sequence N" or "version N".
func (p Point) String() string {
	switch {
	case !p.Time.IsZero():
		return p.Time.Format(time.RFC3339Nano)
	case p.Sequence != 0:
		return "sequence " + strconv.FormatUint(p.Sequence, 10)
	default:
		return "version " + strconv.FormatUint(p.Version, 10)
	}
}

// after reports whether ev lies beyond the point, so that it and everything after it is left out.
// Versions are checked by the caller, per flag or segment.
func (p Point) after(ev *events.Event) bool {
	switch {
	case !p.Time.IsZero():
		return ev.Time.After(p.Time)
	case p.Sequence != 0:
		return ev.Sequence > p.Sequence
	}
	return false
}

// FlagAt returns the state one flag had at a point in its past (see [Point]), archived or not.
// Events the live [Catalog] skips — messages that do not decode, events out of order — are skipped
// here too, so the past shows what the server showed.
//
// Errors: one wrapping events.ErrInvalid for a bad environment, key or point; [ErrNotFound] when
// the flag did not exist at that point, or never reached that version; otherwise a read error.
func FlagAt(ctx context.Context, r Reader, env, key string, at Point) (Flag, error) {
	return entityAt(ctx, r, "flag", events.FlagSubject(env, key), env, key, at, apply,
		func(f *Flag) uint64 { return f.Version })
}

// entityAt folds the events of one flag or segment (what) on subject up to the point at, with the
// live catalog's fold (apply), and says ErrNotFound when the entity did not exist then or never
// reached the version asked for.
func entityAt[T any](ctx context.Context, r Reader, what, subject, env, key string, at Point,
	apply func(*T, *events.Event) error, version func(*T) uint64) (T, error) {
	var zero, x T
	if err := validateFlagRef(env, key); err != nil {
		return zero, err
	}
	if err := at.Validate(); err != nil {
		return zero, err
	}
	err := readSubjects(ctx, r, subject, "", 0, at.Sequence, func(ev events.Event, err error) error {
		if at.after(&ev) {
			return events.ErrStop
		}
		if err != nil {
			return nil
		}
		_ = apply(&x, &ev) // a refused event leaves the entity as it was, as in the live catalog
		if at.Version != 0 && version(&x) >= at.Version {
			return events.ErrStop
		}
		return nil
	})
	if err != nil {
		return zero, fmt.Errorf("%s %s/%s at %v: %w", what, env, key, at, err)
	}
	if v := version(&x); v == 0 || at.Version != 0 && v != at.Version {
		return zero, fmt.Errorf("%s %s/%s at %v: %w", what, env, key, at, ErrNotFound)
	}
	return x, nil
}

// EnvironmentAt returns every flag of env as it was at a point in the past (a time or a stream
// sequence), archived ones included, sorted by key; none when the environment had no flag then.
// Events are folded exactly as the live [Catalog] folds them. Through an [IndexedReader] it starts
// from the newest environment state the index saved at or before the point (see [Index]) and folds
// only the events after it, with the same result.
//
// Errors: one wrapping events.ErrInvalid for a bad environment or point, or a version point;
// otherwise a read error.
func EnvironmentAt(ctx context.Context, r Reader, env string, at Point) ([]Flag, error) {
	if err := events.ValidateEnvironment(env); err != nil {
		return nil, err
	}
	if err := at.Validate(); err != nil {
		return nil, err
	}
	if at.Version != 0 {
		return nil, &events.ValidationError{Field: "at", Message: "a version is a point in one flag's history, not an environment's"}
	}
	c := NewCatalog()
	// Through an index, the fold starts from the newest state it saved that the point reaches.
	var from uint64
	if ir := indexed(r); ir != nil {
		var flags []Flag
		if flags, from = ir.index.stateAt(env, at); from != 0 {
			if err := c.restore(flags, nil, from); err != nil {
				return nil, fmt.Errorf("environment %s at %v: %w", env, at, err)
			}
		}
	}
	filter := events.EntitySubjects(env, events.EntityFlag)
	err := readSubjects(ctx, r, filter, strings.TrimSuffix(filter, ">"), from, at.Sequence, func(ev events.Event, err error) error {
		if at.after(&ev) {
			return events.ErrStop
		}
		if err != nil {
			c.skip(ev.Sequence)
			return nil
		}
		_ = c.Apply(ev) // a refused event leaves its flag as it was, as in the live catalog
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("environment %s at %v: %w", env, at, err)
	}
	return c.Flags(env), nil
}

// FlagHistory returns the whole history of one flag, oldest first, each entry with the fields it
// changed. A message on the flag's subject that the live [Catalog] skips — one that does not
// decode, fails verification, or that the fold refuses — is an entry of type [TypeUnreadable]
// saying why, and changes nothing.
//
// Errors: one wrapping events.ErrInvalid for a bad environment or key; [ErrNotFound] when the flag
// has no event that folds; otherwise a read error.
func FlagHistory(ctx context.Context, r Reader, env, key string) ([]Entry, error) {
	if err := validateFlagRef(env, key); err != nil {
		return nil, err
	}
	var f Flag
	entries, err := readHistory(ctx, r, events.EntityFlag, env, key, func(ev *events.Event) ([]Change, error) {
		before := f
		if err := apply(&f, ev); err != nil {
			f = before
			return nil, err
		}
		return Diff(before, f), nil
	})
	if err != nil {
		return nil, fmt.Errorf("history of %s/%s: %w", env, key, err)
	}
	return entries, nil
}

// readHistory reads the messages of one flag or segment and makes an entry of each: of the
// changes step folds from it, or of type TypeUnreadable. It is ErrNotFound when no event folds.
func readHistory(ctx context.Context, r Reader, entity, env, key string, step func(*events.Event) ([]Change, error)) ([]Entry, error) {
	subject := events.FlagSubject(env, key)
	if entity == events.EntitySegment {
		subject = events.SegmentSubject(env, key)
	}
	var entries []Entry
	folded := false
	err := readSubjects(ctx, r, subject, "", 0, 0, func(ev events.Event, err error) error {
		if err == nil {
			changes, ferr := step(&ev)
			if ferr == nil {
				folded = true
				entries = append(entries, newEntry(&ev, changes))
				return nil
			}
			err = fmt.Errorf("refused by the fold: %w", ferr)
		}
		entries = append(entries, Entry{
			Sequence: ev.Sequence, Environment: env, Entity: entity, Key: key, ID: ev.ID,
			Type: TypeUnreadable, Time: ev.Time, Stored: ev.Stored, Actor: ev.Actor,
			Changes: []Change{}, Unreadable: err.Error(),
		})
		return nil
	})
	if err != nil {
		return nil, err
	}
	if !folded {
		return nil, ErrNotFound
	}
	return entries, nil
}

func validateFlagRef(env, key string) error {
	return errors.Join(events.ValidateEnvironment(env), events.ValidateFlagKey(key))
}
