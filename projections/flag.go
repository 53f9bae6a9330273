package projections

import (
	"errors"
	"fmt"
	"time"

	"github.com/interlock-dev/interlock/events"
)

// ErrNotFound means no such flag (or no such version, or nothing at that time).
var ErrNotFound = errors.New("not found")

// ErrOutOfOrder means an event does not follow the state it is applied to: a gap or a replay of
// something already applied. Folds refuse it rather than guess.
var ErrOutOfOrder = errors.New("event out of order")

// Flag is the current state of one flag in one environment: its configuration plus what the
// events say about it. The JSON names are a contract.
type Flag struct {
	Key         string `json:"key"`
	Environment string `json:"environment"`
	events.FlagConfig
	Archived bool `json:"archived"`
	// Rollout is the flag's latest rollout, nil if it never had one.
	Rollout *Rollout `json:"rollout,omitempty"`
	// Valve is the flag's safety valve, nil unless it was configured or opened as one.
	Valve     *Valve    `json:"valve,omitempty"`
	Version   uint64    `json:"version"`
	CreatedAt time.Time `json:"createdAt"`
	UpdatedAt time.Time `json:"updatedAt"`
	UpdatedBy string    `json:"updatedBy"`
	// Sequence is the stream sequence of the last event applied.
	Sequence uint64 `json:"-"`
}

// Exists reports whether the flag has been created.
func (f *Flag) Exists() bool { return f.Version > 0 }

// Apply folds one event into the flag. It is pure: the same events in the same order always
// give the same state. It never mutates the maps or slices of the configuration it holds — a new
// configuration replaces the old one — so copies of a Flag may share them safely.
//
// Errors: [ErrOutOfOrder] when ev is not the next version of this flag; an error wrapping
// events.ErrMalformed when its payload does not decode; events.ErrUnknownType when a flag would
// start with an event this version does not know. Later events of unknown types advance the
// version and change nothing else, so that an older reader keeps counting.
func (f *Flag) Apply(ev events.Event) error {
	if ev.Entity != events.EntityFlag {
		return fmt.Errorf("%w: a %s event applied to flag %s/%s", ErrOutOfOrder, ev.Entity, f.Environment, f.Key)
	}
	if ev.Version != f.Version+1 {
		return fmt.Errorf("%w: %s/%s version %d after %d", ErrOutOfOrder, ev.Environment, ev.Key, ev.Version, f.Version)
	}
	if f.Exists() && (ev.Environment != f.Environment || ev.Key != f.Key) {
		return fmt.Errorf("%w: event of %s/%s applied to %s/%s", ErrOutOfOrder, ev.Environment, ev.Key, f.Environment, f.Key)
	}
	if !f.Exists() && ev.Type != events.TypeFlagCreated {
		if !events.Known(ev.Type) {
			return fmt.Errorf("%w: %s/%s starts with %q", events.ErrUnknownType, ev.Environment, ev.Key, ev.Type)
		}
		return fmt.Errorf("%w: %s/%s starts with %s", ErrOutOfOrder, ev.Environment, ev.Key, ev.Type)
	}
	if events.Known(ev.Type) {
		p, err := ev.Payload()
		if err != nil {
			return err
		}
		switch p := p.(type) {
		case *events.FlagCreated:
			if f.Exists() {
				return fmt.Errorf("%w: %s/%s created twice", ErrOutOfOrder, ev.Environment, ev.Key)
			}
			f.Key, f.Environment, f.CreatedAt = ev.Key, ev.Environment, ev.Time
			f.FlagConfig = p.Flag
		case *events.FlagUpdated:
			f.FlagConfig = p.Flag
			f.restartStage(ev)
		case *events.FlagRestored:
			f.FlagConfig = p.Flag
			f.restartStage(ev)
		case *events.FlagEnabled:
			f.Enabled = true
		case *events.FlagKilled:
			f.Enabled = false
		case *events.FlagArchived:
			f.Archived = true
		case *events.FlagUnarchived:
			f.Archived = false
		default:
			if err := f.applyRollout(ev, p); err != nil {
				return err
			}
		}
	}
	f.Key, f.Environment = ev.Key, ev.Environment
	f.Version = ev.Version
	f.UpdatedAt = ev.Time
	f.UpdatedBy = ev.Actor
	f.Sequence = ev.Sequence
	return nil
}

// Fold applies evs, in order, to a new flag.
func Fold(evs []events.Event) (Flag, error) {
	var f Flag
	for _, ev := range evs {
		if err := f.Apply(ev); err != nil {
			return Flag{}, err
		}
	}
	return f, nil
}
