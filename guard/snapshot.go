package guard

import (
	"fmt"
	"time"
)

// SnapshotVersion is the version of the [MachineSnapshot] format this package writes and reads.
const SnapshotVersion = 1

// MachineSnapshot is the complete state of a [Machine] between two calls: its configuration,
// the stage's start, the committed state (the fold of every earlier call: the e-processes, the
// counts, R3's window, the readings used as baselines) and a pending confirmation. A decision
// recorded with the snapshot taken before its first call replays from the record alone
// ([ReplayDecision]).
//
// It encodes to JSON and back without loss: numbers are [Float] (exact for finite values, NaN
// and ±Inf as strings), times are UTC. Arrays indexed by arm are [treatment, control]; those
// indexed by counter are [requests, errors].
type MachineSnapshot struct {
	Version      int           `json:"version"`
	Config       MachineConfig `json:"config"` // with defaults applied
	ConfigDigest string        `json:"configDigest"`
	StageStart   time.Time     `json:"stageStart"`
	State        State         `json:"state"`
	// LastTime is the time of the last committed call (HasTick: there was one since the stage's
	// last reset).
	LastTime          time.Time        `json:"lastTime,omitzero"`
	HasTick           bool             `json:"hasTick,omitempty"`
	Exposed           bool             `json:"exposed,omitempty"`
	FreshRun          int              `json:"freshRun"`
	BlindSince        time.Time        `json:"blindSince,omitzero"`
	BlindActed        bool             `json:"blindActed,omitempty"`
	HoldCause         Cause            `json:"holdCause,omitempty"`
	InconclusiveActed bool             `json:"inconclusiveActed,omitempty"`
	Metrics           []MetricSnapshot `json:"metrics"`
	// Pending: a Decide asked for confirmation at PendingAt; the next call must be Confirm.
	Pending   bool      `json:"pending,omitempty"`
	PendingAt time.Time `json:"pendingAt,omitzero"`
}

// MetricSnapshot is one metric's part of a [MachineSnapshot].
type MetricSnapshot struct {
	Name    string          `json:"name"`
	Last    [2][2]Float     `json:"last"`    // the last usable readings, [arm][counter]
	LastAt  [2][2]time.Time `json:"lastAt"`  // their sample times
	HasLast [2]bool         `json:"hasLast"` // whether the arm has a baseline
	Stage   [2][2]Float     `json:"stage"`   // the stage's counts (exposure, R5's expected errors)
	SRM     [2]Float        `json:"srm"`     // R4's exposures
	Total   [2][2]Float     `json:"total"`   // the counts since the e-process began (R2)
	// Mean is R2's accumulation of a KindMean metric.
	Mean  MeanTestSnapshot `json:"mean,omitzero"`
	R1    RatioSnapshot    `json:"r1"`
	R5    RatioSnapshot    `json:"r5"`
	Floor []FloorSnapshot  `json:"floor,omitempty"` // R3's window, oldest first
}

// RatioSnapshot is the state of an R1 or R5 e-process; its null and grid follow from the
// configuration (r0 for R1, rMax for R5).
type RatioSnapshot struct {
	LogLik [GridSize]Float `json:"logLik"`
	// LateStarts is the weight of the starts after the first (0: the plain mixture); LogS each
	// alternative's mixture over start times, which the e-value sums.
	LateStarts Float           `json:"lateStarts,omitempty"`
	LogS       [GridSize]Float `json:"logS"`
	LogE       Float           `json:"logE"`
	MaxLogE    Float           `json:"maxLogE"`
	Ticks      int             `json:"ticks"`
	// The sums of the informative ticks: treatment and control requests and errors.
	ReqT Float `json:"reqT"`
	ReqC Float `json:"reqC"`
	ErrT Float `json:"errT"`
	ErrC Float `json:"errC"`
}

// MeanTestSnapshot is R2's state for a KindMean metric: each arm's accumulation, and the sums of
// the tick-stratified comparison: W = Σwₖ, WD = Σwₖdₖ, AT = Σwₖ²/n_Tₖ, AC = Σwₖ²/n_Cₖ over Pairs
// ticks with observations on both arms; Late, the same sums from the later starts kept.
type MeanTestSnapshot struct {
	Arms  [2]MeanSnapshot     `json:"arms"`
	W     Float               `json:"w"`
	WD    Float               `json:"wd"`
	AT    Float               `json:"aT"`
	AC    Float               `json:"aC"`
	Pairs Float               `json:"pairs"`
	Late  []MeanStartSnapshot `json:"late,omitempty"`
}

// MeanStartSnapshot is the comparison from the Start-th paired tick on.
type MeanStartSnapshot struct {
	Start Float `json:"start"`
	W     Float `json:"w"`
	WD    Float `json:"wd"`
	AT    Float `json:"aT"`
	AC    Float `json:"aC"`
}

// MeanSnapshot is one arm's accumulation of a KindMean metric's observations: N observations
// summing to Sum over Ticks ticks that had any; SuccessiveSquares, the sum of the squared
// differences of successive per-tick means, each over 1/nₖ + 1/nₖ₋₁; and the last tick's mean
// and count of observations.
type MeanSnapshot struct {
	N                 Float `json:"n"`
	Sum               Float `json:"sum"`
	Ticks             Float `json:"ticks"`
	SuccessiveSquares Float `json:"successiveSquares"`
	LastMean          Float `json:"lastMean"`
	LastN             Float `json:"lastN"`
}

// FloorSnapshot is one tick's treatment deltas in R3's window.
type FloorSnapshot struct {
	At       time.Time `json:"at"`
	Requests Float     `json:"requests"`
	Errors   Float     `json:"errors"`
}

// Snapshot returns the machine's complete state. It copies what it returns: the machine may go on.
func (m *Machine) Snapshot() MachineSnapshot {
	s := m.cur
	snap := MachineSnapshot{
		Version:           SnapshotVersion,
		Config:            m.Config(),
		ConfigDigest:      m.digest,
		StageStart:        m.start,
		State:             s.state,
		LastTime:          s.lastTime,
		HasTick:           s.hasTick,
		Exposed:           s.exposed,
		FreshRun:          s.freshRun,
		BlindSince:        s.blindSince,
		BlindActed:        s.blindActed,
		HoldCause:         s.holdCause,
		InconclusiveActed: s.inconclusiveActed,
		Metrics:           make([]MetricSnapshot, len(s.metrics)),
		Pending:           m.pending,
	}
	if m.pending {
		snap.PendingAt = m.pendingAt
	}
	for i := range s.metrics {
		ms, out := &s.metrics[i], &snap.Metrics[i]
		out.Name = m.cfg.Metrics[i].Name
		out.LastAt, out.HasLast = ms.lastAt, ms.hasLast
		for a := range 2 {
			for c := range 2 {
				out.Last[a][c], out.Stage[a][c], out.Total[a][c] = Float(ms.last[a][c]), Float(ms.stage[a][c]), Float(ms.total[a][c])
			}
			out.SRM[a] = Float(ms.srm[a])
			ma := &ms.mean.arm[a]
			out.Mean.Arms[a] = MeanSnapshot{N: Float(ma.n), Sum: Float(ma.s), Ticks: Float(ma.k),
				SuccessiveSquares: Float(ma.q), LastMean: Float(ma.lastMean), LastN: Float(ma.lastN)}
		}
		mt := &ms.mean
		out.Mean.W, out.Mean.WD, out.Mean.AT, out.Mean.AC, out.Mean.Pairs = Float(mt.all.w), Float(mt.all.wd), Float(mt.all.aT), Float(mt.all.aC), Float(mt.pairs)
		for _, c := range mt.late {
			out.Mean.Late = append(out.Mean.Late, MeanStartSnapshot{Start: Float(c.start), W: Float(c.w), WD: Float(c.wd), AT: Float(c.aT), AC: Float(c.aC)})
		}
		out.R1, out.R5 = ratioSnapshot(&ms.r1), ratioSnapshot(&ms.r5)
		if live := ms.floor.buf[ms.floor.head:]; len(live) > 0 {
			out.Floor = make([]FloorSnapshot, len(live))
			for j, e := range live {
				out.Floor[j] = FloorSnapshot{At: e.at, Requests: Float(e.req), Errors: Float(e.err)}
			}
		}
	}
	return snap
}

// copyTo makes dst a copy of m's state between calls, in dst's own buffers: after the first
// copy it allocates nothing, so the runner keeps the state before each decision at little cost
// and takes its [Machine.Snapshot] only when the decision is recorded. The configuration is
// shared: m replaces it, never changes it in place.
func (m *Machine) copyTo(dst *Machine) {
	own := dst.bufs[0]
	*dst = *m
	dst.bufs = [2]machineState{own}
	dst.bufs[0].copyFrom(m.cur)
	dst.cur, dst.next = &dst.bufs[0], &dst.bufs[1]
}

func ratioSnapshot(t *RatioTest) RatioSnapshot {
	r := RatioSnapshot{
		LogE: Float(t.logE), MaxLogE: Float(t.maxLogE), Ticks: t.ticks, LateStarts: Float(t.late),
		ReqT: Float(t.reqT), ReqC: Float(t.reqC), ErrT: Float(t.errT), ErrC: Float(t.errC),
	}
	for j := range t.logLik {
		r.LogLik[j], r.LogS[j] = Float(t.logLik[j]), Float(t.logS[j])
	}
	return r
}

func (r *RatioSnapshot) restore(t *RatioTest) {
	for j := range r.LogLik {
		t.logLik[j], t.logS[j] = float64(r.LogLik[j]), float64(r.LogS[j])
	}
	t.late = float64(r.LateStarts)
	t.logE, t.maxLogE, t.ticks = float64(r.LogE), float64(r.MaxLogE), r.Ticks
	t.reqT, t.reqC, t.errT, t.errC = float64(r.ReqT), float64(r.ReqC), float64(r.ErrT), float64(r.ErrC)
}

// RestoreMachine returns a machine in the state snap records: its calls then decide exactly as
// the snapshotted machine's would.
//
// It returns an error wrapping [ErrEvidence] if snap cannot be restored: another format
// version, a configuration that is invalid (the error also wraps [ErrMachineConfig]) or whose
// digest is not the recorded one, a state or hold cause that does not exist, metrics that are
// not the configured ones, negative counts of ticks, R3's window out of order, or a pending
// confirmation without its time.
func RestoreMachine(snap MachineSnapshot) (*Machine, error) {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("restore machine: "+format+": %w", append(args, ErrEvidence)...)
	}
	if snap.Version != SnapshotVersion {
		return nil, bad("snapshot version %d, want %d", snap.Version, SnapshotVersion)
	}
	m := &Machine{}
	if err := m.configure(snap.Config, snap.StageStart); err != nil {
		return nil, fmt.Errorf("restore machine: %w: %w", ErrEvidence, err)
	}
	if snap.ConfigDigest != m.digest {
		return nil, bad("configuration digest %q, the configuration's is %q", snap.ConfigDigest, m.digest)
	}
	switch snap.State {
	case StateWarmup, StateHealthy, StateReady, StateHold, StateBlind, StateTripped:
	default:
		return nil, bad("state %q", snap.State)
	}
	switch snap.HoldCause {
	case "", CauseSRM, CauseInconclusive:
	default:
		return nil, bad("hold cause %q", snap.HoldCause)
	}
	if snap.FreshRun < 0 {
		return nil, bad("fresh run %d: negative", snap.FreshRun)
	}
	if len(snap.Metrics) != len(m.cfg.Metrics) {
		return nil, bad("%d metrics, the configuration has %d", len(snap.Metrics), len(m.cfg.Metrics))
	}
	if snap.Pending && snap.PendingAt.IsZero() {
		return nil, bad("pending confirmation without its time")
	}
	m.cur, m.next = &m.bufs[0], &m.bufs[1]
	m.resetStage(m.cur, snap.State)
	s := m.cur
	s.lastTime, s.hasTick = normTime(snap.LastTime), snap.HasTick
	s.exposed, s.freshRun = snap.Exposed, snap.FreshRun
	s.blindSince, s.blindActed = normTime(snap.BlindSince), snap.BlindActed
	s.holdCause, s.inconclusiveActed = snap.HoldCause, snap.InconclusiveActed
	for i := range snap.Metrics {
		in, ms := &snap.Metrics[i], &s.metrics[i]
		if in.Name != m.cfg.Metrics[i].Name {
			return nil, bad("metric %d is %q, the configuration's %q", i, in.Name, m.cfg.Metrics[i].Name)
		}
		if in.R1.Ticks < 0 || in.R5.Ticks < 0 {
			return nil, bad("metric %q: negative count of ticks", in.Name)
		}
		ms.hasLast = in.HasLast
		for a := range 2 {
			for c := range 2 {
				ms.last[a][c], ms.stage[a][c], ms.total[a][c] = float64(in.Last[a][c]), float64(in.Stage[a][c]), float64(in.Total[a][c])
				ms.lastAt[a][c] = normTime(in.LastAt[a][c])
			}
			ms.srm[a] = float64(in.SRM[a])
			ma := &in.Mean.Arms[a]
			if ma.N < 0 || ma.Ticks < 0 || ma.SuccessiveSquares < 0 || ma.LastN < 0 {
				return nil, bad("metric %q: negative mean accumulation", in.Name)
			}
			ms.mean.arm[a] = meanAcc{n: float64(ma.N), s: float64(ma.Sum), k: float64(ma.Ticks),
				q: float64(ma.SuccessiveSquares), lastMean: float64(ma.LastMean), lastN: float64(ma.LastN)}
		}
		mt := &in.Mean
		if mt.W < 0 || mt.AT < 0 || mt.AC < 0 || mt.Pairs < 0 {
			return nil, bad("metric %q: negative mean comparison sums", in.Name)
		}
		ms.mean.all = meanStart{start: 1, w: float64(mt.W), wd: float64(mt.WD), aT: float64(mt.AT), aC: float64(mt.AC)}
		ms.mean.pairs = float64(mt.Pairs)
		for j, c := range mt.Late {
			if !(c.Start > 1 && c.Start <= mt.Pairs) || j > 0 && !(c.Start > mt.Late[j-1].Start) || c.W < 0 || c.AT < 0 || c.AC < 0 {
				return nil, bad("metric %q: R2's later start %d at %v is out of order or out of range", in.Name, j, c.Start)
			}
			ms.mean.late = append(ms.mean.late, meanStart{start: float64(c.Start), w: float64(c.W), wd: float64(c.WD), aT: float64(c.AT), aC: float64(c.AC)})
		}
		in.R1.restore(&ms.r1)
		in.R5.restore(&ms.r5)
		for j, e := range in.Floor {
			at := normTime(e.At)
			if j > 0 && at.Before(ms.floor.buf[j-1].at) {
				return nil, bad("metric %q: R3's window out of order at entry %d", in.Name, j)
			}
			ms.floor.buf = append(ms.floor.buf, windowEntry{at: at, req: float64(e.Requests), err: float64(e.Errors)})
		}
	}
	m.pending, m.pendingAt = snap.Pending, normTime(snap.PendingAt)
	return m, nil
}

// ReplayDecision replays one recorded decision from the record alone: it restores the machine
// from before, the snapshot taken before the decision's first call, runs calls (the evidence of
// each call, in order: decide and confirm, or any call [Replay] takes) through it, and returns
// the evidence it produces; for a faithful record it equals calls, byte for byte once encoded.
//
// It returns an error wrapping [ErrEvidence] if before cannot be restored ([RestoreMachine]) or
// a call cannot be replayed (as [Replay]), or the Machine's own error for a call, with the
// evidence produced so far.
func ReplayDecision(before MachineSnapshot, calls []Evidence) ([]Evidence, error) {
	m, err := RestoreMachine(before)
	if err != nil {
		return nil, fmt.Errorf("replay decision: %w", err)
	}
	return replayOn(m, calls)
}

// replayOn runs recorded calls, in order, through m, as [Replay] does through a fresh machine.
func replayOn(m *Machine, records []Evidence) ([]Evidence, error) {
	out := make([]Evidence, 0, len(records))
	for i := range records {
		rec := &records[i]
		if rec.Call != CallRestart && rec.Call != CallChangeStage && rec.ConfigDigest != m.ConfigDigest() {
			return out, fmt.Errorf("replay record %d (%s): recorded under configuration %s, replaying %s: %w",
				i, rec.DecisionID, rec.ConfigDigest, m.ConfigDigest(), ErrEvidence)
		}
		var ev Evidence
		var err error
		switch rec.Call {
		case CallDecide:
			ev, err = m.Decide(rec.DecisionID, rec.Input())
		case CallConfirm:
			ev, err = m.Confirm(rec.DecisionID, rec.Input())
		case CallRearm:
			ev, err = m.Rearm(rec.DecisionID, rec.By, rec.Time)
		case CallRestart, CallChangeStage:
			if rec.Config == nil {
				return out, fmt.Errorf("replay record %d (%s): %s without its configuration: %w", i, rec.DecisionID, rec.Call, ErrEvidence)
			}
			if rec.Call == CallRestart {
				ev, err = m.Restart(rec.DecisionID, *rec.Config, rec.Time)
			} else {
				ev, err = m.ChangeStage(rec.DecisionID, *rec.Config, rec.Time)
			}
		default:
			return out, fmt.Errorf("replay record %d (%s): call %q: %w", i, rec.DecisionID, rec.Call, ErrEvidence)
		}
		if err != nil {
			return out, fmt.Errorf("replay record %d: %w", i, err)
		}
		out = append(out, ev)
	}
	return out, nil
}
