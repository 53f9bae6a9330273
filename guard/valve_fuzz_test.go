package guard_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"math"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/interlock-dev/interlock/guard"
	"github.com/interlock-dev/interlock/guard/source"
)

// FuzzValveReplay decodes arbitrary JSON as recorded valve decisions and replays them: it must
// never panic, fail only with the package's errors, and what it produces must itself replay to
// the same bytes.
func FuzzValveReplay(f *testing.F) {
	cfg, recorded := valveScript(f, rand.New(rand.NewPCG(1, 17)))
	for _, n := range []int{1, 3, 12, 40} {
		f.Add([]byte("["+string(bytes.Join(recorded[:n], []byte(",")))+"]"), false)
	}
	f.Add([]byte(`[{"call":"observe","time":"2025-03-01T12:00:15Z","requests":{"value":"NaN","status":"ok"}}]`), true)
	f.Add([]byte(`[{"call":"openManual","time":"2025-03-01T12:00:15Z","by":"a","reason":"r","expires":"9999-12-31T23:59:59Z"}]`), true)
	f.Add([]byte(`[{"call":"closeManual"},{"call":"nope"}]`), true)
	f.Add([]byte(`[{"decisionId":"x","call":"observe","time":"0000-01-01T00:00:00+01:00"}]`), true)
	v, err := guard.NewValve(cfg, valveT0)
	if err != nil {
		f.Fatal(err)
	}
	digest := v.ConfigDigest()
	f.Fuzz(func(t *testing.T, data []byte, fixDigest bool) {
		var recs []guard.ValveDecision
		if err := json.Unmarshal(data, &recs); err != nil {
			return
		}
		if fixDigest {
			for i := range recs {
				recs[i].ConfigDigest = digest
			}
		}
		out, err := guard.ReplayValve(cfg, valveT0, recs)
		if err != nil && !errors.Is(err, guard.ErrEvidence) && !errors.Is(err, guard.ErrBadInput) && !errors.Is(err, guard.ErrCallOrder) {
			t.Fatalf("unexpected error: %v", err)
		}
		encoded := make([][]byte, len(out))
		decoded := make([]guard.ValveDecision, len(out))
		for i := range out {
			if encoded[i], err = json.Marshal(out[i]); err != nil {
				t.Fatalf("decision does not encode: %v\n%+v", err, out[i])
			}
			if err := json.Unmarshal(encoded[i], &decoded[i]); err != nil {
				t.Fatalf("decision does not decode: %v\n%s", err, encoded[i])
			}
		}
		again, err := guard.ReplayValve(cfg, valveT0, decoded)
		if err != nil {
			t.Fatalf("replaying the replay: %v", err)
		}
		for i := range again {
			if b, _ := json.Marshal(again[i]); !bytes.Equal(b, encoded[i]) {
				t.Fatalf("record %d differs:\n%s\n%s", i, encoded[i], b)
			}
		}
	})
}

// FuzzValve drives a valve with arbitrary readings and calls: it must never panic, every
// decision must encode and replay identically, and without manual calls no hour may see more
// toggles than the cap.
func FuzzValve(f *testing.F) {
	f.Add([]byte{1, 2, 3, 4, 5, 6, 7, 8, 9, 10})
	f.Add(bytes.Repeat([]byte{0xff, 0, 0x80, 7, 3}, 60))
	f.Add([]byte("the valve opens and closes"))
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) > 1024 {
			data = data[:1024] // about 300 calls: enough for every path, fast enough to explore
		}
		cfg := valveConfig()
		cfg.MinOpen, cfg.HealthyFor, cfg.MinRequests = time.Minute, time.Minute, 10
		cfg.ShortWindow, cfg.LongWindow = time.Minute, 10*time.Minute
		v, err := guard.NewValve(cfg, valveT0)
		if err != nil {
			t.Fatal(err)
		}
		next := func() byte {
			if len(data) == 0 {
				return 0
			}
			b := data[0]
			data = data[1:]
			return b
		}
		value := func() float64 {
			switch b := next(); b {
			case 250:
				return math.NaN()
			case 251:
				return math.Inf(1)
			case 252:
				return -1
			case 253:
				return 1e300
			default:
				return float64(b) * float64(next())
			}
		}
		reading := func(now time.Time) source.Reading {
			st := []source.ReadingStatus{source.ReadingOK, source.ReadingOK, source.ReadingOK, source.ReadingStale, "", "weird"}[int(next())%6]
			return source.Reading{Value: value(), At: now.Add(-time.Duration(next()) * time.Second), Status: st}
		}
		now := valveT0
		manual := false
		var decs []guard.ValveDecision
		for len(data) > 0 {
			now = now.Add(time.Duration(next()) * time.Second)
			var d guard.ValveDecision
			var err error
			switch op := next() % 16; op {
			case 0:
				manual = true
				d, err = v.OpenManual("o", "fuzz", "why", now, now.Add(time.Duration(next())*time.Minute))
			case 1:
				manual = true
				d, err = v.CloseManual("c", "fuzz", "why", now)
			default:
				d, err = v.Observe("d", now, reading(now), reading(now))
			}
			if err != nil {
				if !errors.Is(err, guard.ErrBadInput) && !errors.Is(err, guard.ErrCallOrder) {
					t.Fatalf("unexpected error: %v", err)
				}
				continue
			}
			if limit := v.Config().MaxTogglesPerHour; !manual && d.TogglesLastHour > limit {
				t.Fatalf("%d toggles in the last hour, cap %d", d.TogglesLastHour, limit)
			}
			if d.OpenAfter != v.Open() || (d.Action == guard.ActionOpenValve) != (!d.OpenBefore && d.OpenAfter) ||
				(d.Action == guard.ActionCloseValve) != (d.OpenBefore && !d.OpenAfter) {
				t.Fatalf("action %s from open=%v to open=%v", d.Action, d.OpenBefore, d.OpenAfter)
			}
			decs = append(decs, d)
		}
		recorded := make([][]byte, len(decs))
		decoded := make([]guard.ValveDecision, len(decs))
		for i := range decs {
			if recorded[i], err = json.Marshal(decs[i]); err != nil {
				t.Fatalf("decision does not encode: %v", err)
			}
			if err := json.Unmarshal(recorded[i], &decoded[i]); err != nil {
				t.Fatalf("decode: %v\n%s", err, recorded[i])
			}
		}
		replayed, err := guard.ReplayValve(cfg, valveT0, decoded)
		if err != nil {
			t.Fatalf("replay: %v", err)
		}
		for i := range replayed {
			if b, _ := json.Marshal(replayed[i]); !bytes.Equal(b, recorded[i]) {
				t.Fatalf("record %d differs:\n%s\n%s", i, recorded[i], b)
			}
		}
	})
}
