package projections

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"

	"github.com/interlock-dev/interlock/events"
)

// DiffSegment returns the fields of the segment document that differ between before and after,
// sorted by path, condition indexes in numeric order. The result is never nil, so it encodes as
// [] when equal.
//
// Paths are "archived", "conditions[i]" (one per condition position: one added at the end shows
// only After, one removed only Before), "description", "excluded" and "included". Each key list
// is one change holding the whole list before and after, however few keys changed. As for [Diff],
// identity and bookkeeping are not changes, and a segment that does not exist has no fields.
func DiffSegment(before, after Segment) []Change {
	d := differ{before: before.Exists(), after: after.Exists(), changes: []Change{}}
	a, b := &before, &after
	d.field("archived", boolJSON(a.Archived), boolJSON(b.Archived))
	for i := range max(len(a.Conditions), len(b.Conditions)) {
		var x, y json.RawMessage
		if i < len(a.Conditions) {
			x = toJSON(&a.Conditions[i])
		}
		if i < len(b.Conditions) {
			y = toJSON(&b.Conditions[i])
		}
		d.field("conditions["+strconv.Itoa(i)+"]", x, y)
	}
	d.field("description", optString(a.Description), optString(b.Description))
	d.field("excluded", optJSON(len(a.Excluded) > 0, a.Excluded), optJSON(len(b.Excluded) > 0, b.Excluded))
	d.field("included", optJSON(len(a.Included) > 0, a.Included), optJSON(len(b.Included) > 0, b.Included))
	return d.changes
}

// applySegment is apply for a segment: [Segment.Apply] after checking the environment and key
// the event names. On error s is unchanged.
func applySegment(s *Segment, ev *events.Event) error {
	if err := validateRef(ev); err != nil {
		return err
	}
	next := *s
	if err := next.Apply(*ev); err != nil {
		return err
	}
	*s = next
	return nil
}

// SegmentHistory returns the whole history of one segment, oldest first, each entry with the
// fields it changed ([DiffSegment]). Messages that are skipped are entries of type
// [TypeUnreadable], as for [FlagHistory].
//
// Errors: one wrapping events.ErrInvalid for a bad environment or key; [ErrNotFound] when the
// segment has no event that folds; otherwise a read error.
func SegmentHistory(ctx context.Context, r Reader, env, key string) ([]Entry, error) {
	if err := validateFlagRef(env, key); err != nil {
		return nil, err
	}
	var s Segment
	entries, err := readHistory(ctx, r, events.EntitySegment, env, key, func(ev *events.Event) ([]Change, error) {
		before := s
		if err := applySegment(&s, ev); err != nil {
			return nil, err
		}
		return DiffSegment(before, s), nil
	})
	if err != nil {
		return nil, fmt.Errorf("history of segment %s/%s: %w", env, key, err)
	}
	return entries, nil
}

// SegmentAt returns the state one segment had at a point in its past (see [Point]: a time, a
// stream sequence or a version of the segment), archived or not. Events the live [Catalog]
// skips are skipped here too.
//
// Errors: one wrapping events.ErrInvalid for a bad environment, key or point; [ErrNotFound] when
// the segment did not exist at that point, or never reached that version; otherwise a read error.
func SegmentAt(ctx context.Context, r Reader, env, key string, at Point) (Segment, error) {
	return entityAt(ctx, r, "segment", events.SegmentSubject(env, key), env, key, at, applySegment,
		func(s *Segment) uint64 { return s.Version })
}
