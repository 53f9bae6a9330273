package local

import (
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/interlock-dev/interlock/events"
	"github.com/interlock-dev/interlock/projections"
	"github.com/interlock-dev/interlock/targeting"
)

// DefaultSnapshotBucket is the JetStream object store bucket holding one snapshot per
// environment, the object named after the environment.
const DefaultSnapshotBucket = "interlock_snapshots"

// SnapshotFormat is the version of the snapshot document written now. Readers refuse other
// versions and fall back to replaying the stream.
const SnapshotFormat = 1

// ErrMalformedSnapshot means a stored snapshot is not one this version can use.
var ErrMalformedSnapshot = errors.New("malformed snapshot")

// Snapshot is the state of one environment at one stream sequence: every flag and segment,
// archived ones included, as the folds of the events up to and including Sequence give them.
// The JSON names are a contract between the server that writes snapshots and every subscriber.
type Snapshot struct {
	Format      int    `json:"format"`
	Environment string `json:"environment"`
	// Sequence is the stream sequence of the last event of the environment folded in; a reader
	// follows the stream from the one after it.
	Sequence uint64 `json:"sequence"`
	// Time is when the snapshot was taken.
	Time     time.Time             `json:"time"`
	Flags    []projections.Flag    `json:"flags"`
	Segments []projections.Segment `json:"segments"`
}

// Encode is the snapshot's JSON.
func (s *Snapshot) Encode() ([]byte, error) {
	data, err := json.Marshal(s)
	if err != nil {
		return nil, fmt.Errorf("encode snapshot of %s: %w", s.Environment, err)
	}
	return data, nil
}

// Compile builds the flag set the snapshot describes. Errors: those of
// targeting.CompileFlagset.
func (s *Snapshot) Compile() (*targeting.Flagset, error) {
	set, err := targeting.CompileFlagset(s.Environment, s.Sequence, s.Flags, s.Segments)
	if err != nil {
		return nil, fmt.Errorf("compile snapshot of %s at sequence %d: %w", s.Environment, s.Sequence, err)
	}
	return set, nil
}

// DecodeSnapshot reads the snapshot of env. It never panics; an invalid env, or a document that is
// not a snapshot of env in [SnapshotFormat] — or that names a flag or segment of another environment, twice, or
// without a version — gives an error wrapping [ErrMalformedSnapshot].
func DecodeSnapshot(env string, data []byte) (Snapshot, error) {
	if err := events.ValidateEnvironment(env); err != nil {
		return Snapshot{}, fmt.Errorf("%w: %v", ErrMalformedSnapshot, err)
	}
	var s Snapshot
	if err := json.Unmarshal(data, &s); err != nil {
		return Snapshot{}, fmt.Errorf("%w: %v", ErrMalformedSnapshot, err)
	}
	if s.Format != SnapshotFormat {
		return Snapshot{}, fmt.Errorf("%w: format %d, want %d", ErrMalformedSnapshot, s.Format, SnapshotFormat)
	}
	if s.Environment != env {
		return Snapshot{}, fmt.Errorf("%w: of environment %q, want %q", ErrMalformedSnapshot, truncate(s.Environment), env)
	}
	if s.Sequence == 0 {
		return Snapshot{}, fmt.Errorf("%w: sequence 0", ErrMalformedSnapshot)
	}
	seen := make(map[string]bool, len(s.Flags))
	for i := range s.Flags {
		f := &s.Flags[i]
		if err := checkEntity("flag", f.Environment, f.Key, f.Version, env, seen); err != nil {
			return Snapshot{}, err
		}
	}
	clear(seen)
	for i := range s.Segments {
		g := &s.Segments[i]
		if err := checkEntity("segment", g.Environment, g.Key, g.Version, env, seen); err != nil {
			return Snapshot{}, err
		}
	}
	return s, nil
}

func checkEntity(kind, gotEnv, key string, version uint64, env string, seen map[string]bool) error {
	switch {
	case gotEnv != env:
		return fmt.Errorf("%w: %s %q of environment %q", ErrMalformedSnapshot, kind, truncate(key), truncate(gotEnv))
	case events.ValidateFlagKey(key) != nil:
		return fmt.Errorf("%w: %s key %q", ErrMalformedSnapshot, kind, truncate(key))
	case version == 0:
		return fmt.Errorf("%w: %s %q has no version", ErrMalformedSnapshot, kind, key)
	case seen[key]:
		return fmt.Errorf("%w: %s %q twice", ErrMalformedSnapshot, kind, key)
	}
	seen[key] = true
	return nil
}
