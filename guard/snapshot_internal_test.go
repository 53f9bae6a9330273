package guard

import (
	"bytes"
	"encoding/json"
	"testing"
	"time"

	"github.com/interlock-dev/interlock/guard/source"
)

// The runner keeps a copy of each machine before every decision: the copy must not change
// when the machine goes on, and must cost no allocation once its buffers are grown.
func TestCopyToIsIndependent(t *testing.T) {
	t0 := time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)
	cfg := MachineConfig{Flag: "f", Variant: "on", Control: "off", Share: 0.5,
		Metrics: []MetricRule{{Name: "errors", Kind: KindRatio, Ceiling: 0.5}}}
	m, err := NewMachine(cfg, t0)
	if err != nil {
		t.Fatal(err)
	}
	now, reqs, errs := t0, 0.0, 0.0
	decide := func(spike float64) {
		t.Helper()
		now = now.Add(15 * time.Second)
		reqs, errs = reqs+1000, errs+5
		arm := func(e float64) ArmReadings {
			return ArmReadings{Requests: source.Reading{Value: reqs, At: now, Status: source.ReadingOK}, Errors: source.Reading{Value: e, At: now, Status: source.ReadingOK}}
		}
		tk := Tick{Time: now, Metrics: []MetricReadings{{Name: "errors", Treatment: arm(errs + spike), Control: arm(errs)}}}
		ev, err := m.Decide("d", tk)
		if err == nil && ev.Action == ActionConfirm {
			_, err = m.Confirm("c", tk)
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	encode := func(m *Machine) []byte {
		b, err := json.Marshal(m.Snapshot())
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	var c Machine
	for i := range 30 {
		m.copyTo(&c)
		want := encode(m)
		if got := encode(&c); !bytes.Equal(got, want) {
			t.Fatalf("tick %d: the copy snapshots differently:\n%s\n%s", i, want, got)
		}
		// Two calls, so that every buffer of the machine is written after the copy.
		decide(0)
		decide(float64(i / 20 * 1000)) // a spike at the end: confirm, then TRIPPED
		if got := encode(&c); !bytes.Equal(got, want) {
			t.Fatalf("tick %d: the copy changed with the machine:\n%s\n%s", i, want, got)
		}
	}
	if m.State() != StateTripped {
		t.Fatalf("state %s, want the run to end TRIPPED", m.State())
	}
	if n := testing.AllocsPerRun(100, func() { m.copyTo(&c) }); n != 0 {
		t.Errorf("copyTo allocates %v times", n)
	}
}

// BenchmarkMachineCopy is what the runner spends on every decision to keep the state it
// replays from: one metric, R3's window full.
func BenchmarkMachineCopy(b *testing.B) {
	t0 := time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)
	m, err := NewMachine(MachineConfig{Flag: "f", Variant: "on", Control: "off", Share: 0.5,
		Metrics: []MetricRule{{Name: "errors", Kind: KindRatio, Ceiling: 0.5}}}, t0)
	if err != nil {
		b.Fatal(err)
	}
	for i := range 25 {
		now := t0.Add(time.Duration(i) * 15 * time.Second)
		arm := ArmReadings{Requests: source.Reading{Value: float64(i * 1000), At: now, Status: source.ReadingOK},
			Errors: source.Reading{Value: float64(i * 5), At: now, Status: source.ReadingOK}}
		if _, err := m.Decide("d", Tick{Time: now, Metrics: []MetricReadings{{Name: "errors", Treatment: arm, Control: arm}}}); err != nil {
			b.Fatal(err)
		}
	}
	var c Machine
	b.ReportAllocs()
	for b.Loop() {
		m.copyTo(&c)
	}
}
