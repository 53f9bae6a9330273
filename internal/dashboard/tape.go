package dashboard

import (
	"math"
	"sync"
	"time"

	"github.com/interlock-dev/interlock/guard"
)

// DefaultTapeLength is how many ticks a [Tape] keeps per rollout: 12 hours of 15-second ticks.
const DefaultTapeLength = 2880

// Tape keeps the guard's recent ticks of every rollout it judges in this process, for the guard
// panel's charts: the guard records an event only when its state changes, and the ticks between
// are what show the arms' rates over time. Pass its Record as the guard runner's OnEvidence. It
// is memory only: after a restart the charts start again from the recorded decisions.
type Tape struct {
	mu     sync.RWMutex
	length int
	m      map[string]*reel // by env + "\x00" + flag
}

// reel is one flag's ticks, of its latest rollout, oldest first.
type reel struct {
	rollout string
	ticks   []tick
}

// NewTape returns a tape that keeps length ticks per rollout (DefaultTapeLength when 0).
func NewTape(length int) *Tape {
	if length <= 0 {
		length = DefaultTapeLength
	}
	return &Tape{length: length, m: make(map[string]*reel)}
}

// Record keeps the evidence of one call of the guard about the rollout of flag env/flag. A new
// rollout of the flag starts its reel afresh.
func (t *Tape) Record(env, flag string, ev guard.Evidence) {
	tk := tickOf(&ev)
	k := noteKey(env, flag)
	t.mu.Lock()
	defer t.mu.Unlock()
	r := t.m[k]
	if r == nil || r.rollout != ev.Rollout {
		r = &reel{rollout: ev.Rollout}
		t.m[k] = r
	}
	if len(r.ticks) == t.length {
		copy(r.ticks, r.ticks[1:])
		r.ticks = r.ticks[:len(r.ticks)-1]
	}
	r.ticks = append(r.ticks, tk)
}

// ticks returns a copy of the ticks kept about rollout of flag env/flag.
func (t *Tape) ticks(env, flag, rollout string) []tick {
	if t == nil {
		return nil
	}
	t.mu.RLock()
	defer t.mu.RUnlock()
	r := t.m[noteKey(env, flag)]
	if r == nil || r.rollout != rollout {
		return nil
	}
	return append([]tick(nil), r.ticks...)
}

// tick is what the charts need of one call of the guard.
type tick struct {
	ID      string
	Time    time.Time
	Stage   int
	State   string
	Metrics []tickMetric
}

// tickMetric is one metric's part of a tick: each arm's deltas, and the statistics as log10 of
// their value, with the log10 of their thresholds.
type tickMetric struct {
	Name, Kind           string
	TReq, TErr           float64
	CReq, CErr           float64
	Usable               bool // deltas were taken (not blind, not the stage's baseline)
	Stat, Threshold      float64
	Adv, AdvThreshold    float64
	HasStat, HasAdvancer bool
}

func tickOf(ev *guard.Evidence) tick {
	tk := tick{ID: ev.DecisionID, Time: ev.Time, Stage: ev.Stage, State: string(ev.StateAfter)}
	for i := range ev.Metrics {
		m := &ev.Metrics[i]
		tm := tickMetric{
			Name: m.Name, Kind: string(m.Kind),
			TReq: float64(m.Treatment.DeltaRequests), TErr: float64(m.Treatment.DeltaErrors),
			CReq: float64(m.Control.DeltaRequests), CErr: float64(m.Control.DeltaErrors),
			Usable: m.Blind == "" && !m.Treatment.Baseline,
		}
		switch m.Kind {
		case guard.KindRatio:
			if m.R1.Statistic != "" {
				tm.Stat, tm.Threshold, tm.HasStat = float64(m.R1.LogE)/math.Ln10, log10Threshold(m.R1.Threshold, m.R1.Alpha), true
			}
			if m.R5.Statistic != "" {
				tm.Adv, tm.AdvThreshold, tm.HasAdvancer = float64(m.R5.LogE)/math.Ln10, log10Threshold(m.R5.Threshold, m.R5.Alpha), true
			}
		default:
			if m.R2.Statistic != "" {
				tm.Stat, tm.Threshold, tm.HasStat = float64(m.R2.LogLambda)/math.Ln10, log10Threshold(m.R2.Threshold, m.R2.Alpha), true
			}
		}
		tk.Metrics = append(tk.Metrics, tm)
	}
	return tk
}

// log10Threshold is log10 of a test's threshold, 1/α when the threshold was not recorded.
func log10Threshold(threshold, alpha guard.Float) float64 {
	if threshold > 0 {
		return math.Log10(float64(threshold))
	}
	if alpha > 0 {
		return -math.Log10(float64(alpha))
	}
	return math.NaN()
}
