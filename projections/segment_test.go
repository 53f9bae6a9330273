package projections_test

import (
	"errors"
	"testing"

	"github.com/interlock-dev/interlock/events"
	"github.com/interlock-dev/interlock/projections"
)

func segmentEvent(t *testing.T, typ, key string, version, seq uint64, payload any) events.Event {
	t.Helper()
	ev, err := events.NewEvent(typ, "production", key, payload)
	if err != nil {
		t.Fatal(err)
	}
	ev.Actor, ev.Version, ev.Sequence = "alice", version, seq
	return ev
}

func TestSegmentFoldAndCatalog(t *testing.T) {
	c := projections.NewCatalog()
	var seen []uint64
	c.Observe(func(ev events.Event) { seen = append(seen, ev.Sequence) })

	beta := events.SegmentConfig{Included: []string{"u1", "u2"}}
	more := events.SegmentConfig{Included: []string{"u1", "u2", "u3"}, Description: "beta testers"}
	for _, ev := range []events.Event{
		segmentEvent(t, events.TypeSegmentCreated, "beta-testers", 1, 1, events.SegmentCreated{Segment: beta}),
		event(t, events.TypeFlagCreated, "production", "beta-testers", 1, events.FlagCreated{Flag: boolConfig()}),
		segmentEvent(t, events.TypeSegmentUpdated, "beta-testers", 2, 3, events.SegmentUpdated{Segment: more}),
		segmentEvent(t, events.TypeSegmentArchived, "beta-testers", 3, 4, events.SegmentArchived{}),
	} {
		if ev.Sequence == 0 {
			ev.Sequence = 2
		}
		if err := c.Apply(ev); err != nil {
			t.Fatal(err)
		}
	}
	s, ok := c.Segment("production", "beta-testers")
	if !ok || s.Version != 3 || !s.Archived || len(s.Included) != 3 || s.Description != "beta testers" || s.UpdatedBy != "alice" {
		t.Fatalf("segment: %+v", s)
	}
	// A flag and a segment may share a key: they are different entities.
	if f, ok := c.Flag("production", "beta-testers"); !ok || f.Version != 1 {
		t.Fatalf("flag with the segment's key: %+v", f)
	}
	if got := c.Segments("production"); len(got) != 1 {
		t.Fatalf("segments: %+v", got)
	}
	if len(seen) != 4 {
		t.Fatalf("observer saw %v", seen)
	}

	// Refusals: a segment event on a flag fold, a gap, an update before the creation.
	var f projections.Flag
	if err := f.Apply(segmentEvent(t, events.TypeSegmentCreated, "x", 1, 9, events.SegmentCreated{})); !errors.Is(err, projections.ErrOutOfOrder) {
		t.Fatalf("segment event on a flag: %v", err)
	}
	var fresh projections.Segment
	if err := fresh.Apply(segmentEvent(t, events.TypeSegmentUpdated, "x", 1, 9, events.SegmentUpdated{})); !errors.Is(err, projections.ErrOutOfOrder) {
		t.Fatalf("update before create: %v", err)
	}
	if err := s.Apply(segmentEvent(t, events.TypeSegmentUnarchived, "beta-testers", 9, 10, events.SegmentUnarchived{})); !errors.Is(err, projections.ErrOutOfOrder) {
		t.Fatalf("gap: %v", err)
	}
}
