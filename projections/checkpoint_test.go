package projections_test

import (
	"errors"
	"reflect"
	"testing"
	"time"

	"github.com/interlock-dev/interlock/events"
	"github.com/interlock-dev/interlock/projections"
)

func sampleCheckpoint() projections.Checkpoint {
	t0 := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	return projections.Checkpoint{
		Format:   projections.CheckpointFormat,
		Sequence: 9,
		Last:     events.Link{Subject: "interlock.qa.flag.x", Sequence: 9, Hash: [32]byte{1, 2, 3}},
		Time:     t0,
		Flags: []projections.Flag{{Key: "a", Environment: "prod", Version: 2, Sequence: 7, CreatedAt: t0, UpdatedAt: t0, UpdatedBy: "me",
			FlagConfig: events.FlagConfig{Kind: events.KindRelease, DefaultVariant: "on", OffVariant: "on"}}},
		Segments: []projections.Segment{{Key: "beta", Environment: "prod", Version: 1, Sequence: 3, CreatedAt: t0, UpdatedAt: t0}},
		Chains: events.Chains{Sequence: 9,
			Heads:   []events.Link{{Subject: "interlock.prod.flag.a", Sequence: 7, Hash: [32]byte{7}}},
			Refused: []*events.IntegrityError{{Sequence: 9, Subject: "interlock.qa.flag.x", Problem: events.ErrBadSignature, Detail: "key k"}},
		},
		Problems:     []projections.Problem{{Sequence: 9, Subject: "interlock.qa.flag.x", Reason: "bad-signature", Seen: t0}},
		ProblemCount: 1,
	}
}

func TestCheckpointRoundTrip(t *testing.T) {
	cp := sampleCheckpoint()
	data, err := cp.Encode()
	if err != nil {
		t.Fatal(err)
	}
	got, err := projections.DecodeCheckpoint(data)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, cp) {
		t.Fatalf("decoded\n%+v\nwant\n%+v", got, cp)
	}
}

func TestDecodeCheckpointRefuses(t *testing.T) {
	good, _ := func() ([]byte, error) { cp := sampleCheckpoint(); return cp.Encode() }()
	tests := map[string]func(*projections.Checkpoint){
		"another format":  func(cp *projections.Checkpoint) { cp.Format = projections.CheckpointFormat + 1 },
		"the previous":    func(cp *projections.Checkpoint) { cp.Format = 1 },
		"no sequence":     func(cp *projections.Checkpoint) { cp.Sequence, cp.Last.Sequence = 0, 0 },
		"last elsewhere":  func(cp *projections.Checkpoint) { cp.Last.Sequence = 8 },
		"flag twice":      func(cp *projections.Checkpoint) { cp.Flags = append(cp.Flags, cp.Flags[0]) },
		"flag after it":   func(cp *projections.Checkpoint) { cp.Flags[0].Sequence = 10 },
		"flag no version": func(cp *projections.Checkpoint) { cp.Flags[0].Version = 0 },
		"bad environment": func(cp *projections.Checkpoint) { cp.Segments[0].Environment = "a b" },
		"head after it":   func(cp *projections.Checkpoint) { cp.Chains.Heads[0].Sequence = 10 },
	}
	for name, spoil := range tests {
		t.Run(name, func(t *testing.T) {
			cp := sampleCheckpoint()
			spoil(&cp)
			data, err := cp.Encode()
			if err != nil {
				t.Fatal(err)
			}
			if _, err := projections.DecodeCheckpoint(data); !errors.Is(err, projections.ErrBadCheckpoint) {
				t.Fatalf("decoded with %v, want ErrBadCheckpoint", err)
			}
		})
	}
	if _, err := projections.DecodeCheckpoint(good[:len(good)/2]); !errors.Is(err, projections.ErrBadCheckpoint) {
		t.Fatalf("a cut checkpoint decoded with %v", err)
	}
}

func FuzzDecodeCheckpoint(f *testing.F) {
	cp := sampleCheckpoint()
	good, _ := cp.Encode()
	f.Add(good)
	f.Add([]byte(`{"format":1,"sequence":1,"last":{"sequence":1,"hash":"00"}}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		cp, err := projections.DecodeCheckpoint(data)
		if err != nil {
			if !errors.Is(err, projections.ErrBadCheckpoint) {
				t.Fatalf("error %v does not wrap ErrBadCheckpoint", err)
			}
			return
		}
		again, err := cp.Encode()
		if err != nil {
			t.Fatal(err)
		}
		if _, err := projections.DecodeCheckpoint(again); err != nil {
			t.Fatalf("a decoded checkpoint does not decode again: %v", err)
		}
	})
}

// TestCheckpointKeepsAcknowledgement: the acknowledgement of integrity problems survives a
// checkpoint, so a replica that starts from one does not report acknowledged problems again.
func TestCheckpointKeepsAcknowledgement(t *testing.T) {
	cp := sampleCheckpoint()
	cp.Acknowledged = projections.Acknowledgement{Through: 9, Sequence: 9, Actor: "ops", Reason: "looked at it", Time: cp.Time}
	data, err := cp.Encode()
	if err != nil {
		t.Fatal(err)
	}
	got, err := projections.DecodeCheckpoint(data)
	if err != nil {
		t.Fatal(err)
	}
	if got.Acknowledged != cp.Acknowledged {
		t.Fatalf("acknowledgement %+v, want %+v", got.Acknowledged, cp.Acknowledged)
	}
}
