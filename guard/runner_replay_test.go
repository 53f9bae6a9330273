package guard_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"testing"

	"github.com/interlock-dev/interlock/events"
	"github.com/interlock-dev/interlock/guard"
	"github.com/interlock-dev/interlock/guard/source"
)

// replayEvent replays one guard.decided event from the event alone: the machine's snapshot
// before the decision and the evidence of its calls. It returns the recorded and the replayed
// calls.
func replayEvent(t *testing.T, d *events.GuardDecided) (recorded, replayed []guard.Evidence, err error) {
	t.Helper()
	if len(d.Before) == 0 {
		t.Fatalf("decision %s → %s (%s) carries no snapshot", d.StateBefore, d.StateAfter, d.Cause)
	}
	var before guard.MachineSnapshot
	if err := json.Unmarshal(d.Before, &before); err != nil {
		t.Fatalf("snapshot: %v\n%s", err, d.Before)
	}
	if err := json.Unmarshal(d.Evidence, &recorded); err != nil {
		t.Fatalf("evidence: %v", err)
	}
	replayed, err = guard.ReplayDecision(before, recorded)
	return recorded, replayed, err
}

// Every decision the runner records replays from its event alone, byte for byte: the first
// stage's decisions, the advance, the decisions of the next stage (whose R1 e-process goes on
// from the first's) and the trip that kills the flag. A tampered reading replays differently.
func TestRunnerDecisionsReplayFromTheEvent(t *testing.T) {
	w := newWorld(t)
	w.createFlag("search")
	plan := w.plan(events.OnTripKill)
	plan.Metrics[0].Ceiling = 0.5 // R3 keeps a window, and never fires
	w.startRollout("search", plan)
	ticks := 0
	for ; ticks < 200 && w.flag("search").Rollout.Stage == 0; ticks++ {
		w.traffic("search", 4000, 0.02, 0.02)
		w.tick()
	}
	if st := w.flag("search").Rollout.Stage; st != 1 {
		t.Fatalf("after %d healthy ticks the rollout is at stage %d, want 1", ticks, st)
	}
	for ticks = 0; ticks < 40 && w.flag("search").Enabled; ticks++ {
		w.traffic("search", 4000, 0.20, 0.02)
		w.tick()
	}
	if w.flag("search").Enabled {
		t.Fatalf("flag still on after %d ticks of a 10× error rate", ticks)
	}

	var trip *events.GuardDecided
	stages := map[int]int{}
	for _, ev := range w.history("search") {
		if ev.Type != events.TypeGuardDecided {
			continue
		}
		p, err := ev.Payload()
		if err != nil {
			t.Fatal(err)
		}
		d := p.(*events.GuardDecided)
		recorded, replayed, err := replayEvent(t, d)
		if err != nil {
			t.Fatalf("decision %s → %s at stage %d: %v", d.StateBefore, d.StateAfter, d.Stage, err)
		}
		if got := mustJSON(t, replayed); !bytes.Equal(got, d.Evidence) {
			t.Fatalf("decision %s → %s at stage %d replays differently:\nrecorded %s\nreplayed %s", d.StateBefore, d.StateAfter, d.Stage, d.Evidence, got)
		}
		if len(recorded) == 0 || string(replayed[len(replayed)-1].StateAfter) != d.StateAfter {
			t.Fatalf("decision %s → %s replayed to %d calls", d.StateBefore, d.StateAfter, len(replayed))
		}
		stages[d.Stage]++
		if d.StateAfter == string(guard.StateTripped) {
			trip = d
		}
	}
	if stages[0] == 0 || stages[1] == 0 {
		t.Fatalf("decisions per stage %v, want some in stages 0 and 1", stages)
	}
	if trip == nil {
		t.Fatal("no trip decision in the history")
	}
	if snap := mustSnapshot(t, trip.Before); len(snap.Metrics[0].Floor) == 0 || snap.Metrics[0].R1.Ticks == 0 {
		t.Fatalf("the trip's snapshot has no R3 window or no R1 e-process: %s", trip.Before)
	}
	recorded, replayed, _ := replayEvent(t, trip)
	last := replayed[len(replayed)-1]
	if len(replayed) != 2 || last.Call != guard.CallConfirm || last.StateAfter != guard.StateTripped || last.Action != guard.ActionKill {
		t.Fatalf("the trip replays to %d calls ending %s %s, %s; want a confirmation that trips and kills", len(replayed), last.Call, last.StateAfter, last.Action)
	}

	// Tampered readings replay differently: the confirmation's treatment errors as the last
	// tick's (no new error), or its re-query failing (BLIND: no trip, no kill).
	tamper := func(f func(ae *guard.ArmEvidence)) []guard.Evidence {
		t.Helper()
		calls := append([]guard.Evidence(nil), recorded...)
		calls[1].Metrics = append([]guard.MetricEvidence(nil), recorded[1].Metrics...)
		f(&calls[1].Metrics[0].Treatment)
		out, err := guard.ReplayDecision(mustSnapshot(t, trip.Before), calls)
		if err != nil {
			t.Fatal(err)
		}
		if bytes.Equal(mustJSON(t, out), trip.Evidence) {
			t.Fatal("a tampered reading replayed to the recorded evidence")
		}
		return out
	}
	out := tamper(func(ae *guard.ArmEvidence) { ae.Errors.Value -= ae.DeltaErrors })
	if got, want := out[1].Metrics[0].Treatment.DeltaErrors, recorded[1].Metrics[0].Treatment.DeltaErrors; got != 0 || want == 0 {
		t.Errorf("tampered errors: delta %v replayed, %v recorded", got, want)
	}
	out = tamper(func(ae *guard.ArmEvidence) { ae.Errors.Status = source.ReadingError })
	if out[1].StateAfter != guard.StateBlind || out[1].Action == guard.ActionKill {
		t.Errorf("a failed re-query replayed to %s, %s; want BLIND and no kill", out[1].StateAfter, out[1].Action)
	}
	// Under a snapshot that is not the one before the decision, its calls are refused.
	pending := mustSnapshot(t, trip.Before)
	pending.Pending, pending.PendingAt = true, recorded[0].Time
	if _, err := guard.ReplayDecision(pending, recorded); !errors.Is(err, guard.ErrCallOrder) {
		t.Fatalf("a decide replayed on a machine awaiting confirmation: %v, want ErrCallOrder", err)
	}
}

func mustSnapshot(t *testing.T, b json.RawMessage) guard.MachineSnapshot {
	t.Helper()
	var s guard.MachineSnapshot
	if err := json.Unmarshal(b, &s); err != nil {
		t.Fatal(err)
	}
	return s
}
