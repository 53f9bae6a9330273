package projections

import (
	"fmt"
	"time"

	"github.com/interlock-dev/interlock/events"
)

// Segment is the current state of one segment in one environment. The JSON names are a contract.
type Segment struct {
	Key         string `json:"key"`
	Environment string `json:"environment"`
	events.SegmentConfig
	Archived  bool      `json:"archived"`
	Version   uint64    `json:"version"`
	CreatedAt time.Time `json:"createdAt"`
	UpdatedAt time.Time `json:"updatedAt"`
	UpdatedBy string    `json:"updatedBy"`
	// Sequence is the stream sequence of the last event applied.
	Sequence uint64 `json:"-"`
}

// Exists reports whether the segment has been created.
func (s *Segment) Exists() bool { return s.Version > 0 }

// Apply folds one event into the segment, with the same rules as [Flag.Apply]: pure, refusing an
// event that does not follow (ErrOutOfOrder), a payload that does not decode
// (events.ErrMalformed) and an unknown type as the first event (events.ErrUnknownType).
func (s *Segment) Apply(ev events.Event) error {
	if ev.Entity != events.EntitySegment {
		return fmt.Errorf("%w: a %s event applied to segment %s/%s", ErrOutOfOrder, ev.Entity, s.Environment, s.Key)
	}
	if ev.Version != s.Version+1 {
		return fmt.Errorf("%w: segment %s/%s version %d after %d", ErrOutOfOrder, ev.Environment, ev.Key, ev.Version, s.Version)
	}
	if s.Exists() && (ev.Environment != s.Environment || ev.Key != s.Key) {
		return fmt.Errorf("%w: event of segment %s/%s applied to %s/%s", ErrOutOfOrder, ev.Environment, ev.Key, s.Environment, s.Key)
	}
	if !s.Exists() && ev.Type != events.TypeSegmentCreated {
		if !events.Known(ev.Type) {
			return fmt.Errorf("%w: segment %s/%s starts with %q", events.ErrUnknownType, ev.Environment, ev.Key, ev.Type)
		}
		return fmt.Errorf("%w: segment %s/%s starts with %s", ErrOutOfOrder, ev.Environment, ev.Key, ev.Type)
	}
	if events.Known(ev.Type) {
		p, err := ev.Payload()
		if err != nil {
			return err
		}
		switch p := p.(type) {
		case *events.SegmentCreated:
			if s.Exists() {
				return fmt.Errorf("%w: segment %s/%s created twice", ErrOutOfOrder, ev.Environment, ev.Key)
			}
			s.CreatedAt = ev.Time
			s.SegmentConfig = p.Segment
		case *events.SegmentUpdated:
			s.SegmentConfig = p.Segment
		case *events.SegmentArchived:
			s.Archived = true
		case *events.SegmentUnarchived:
			s.Archived = false
		}
	}
	s.Key, s.Environment = ev.Key, ev.Environment
	s.Version = ev.Version
	s.UpdatedAt = ev.Time
	s.UpdatedBy = ev.Actor
	s.Sequence = ev.Sequence
	return nil
}
