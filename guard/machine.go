package guard

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/interlock-dev/interlock/guard/source"
)

var (
	// ErrMachineConfig means a [MachineConfig] (or a statistic's parameter) is out of range.
	ErrMachineConfig = errors.New("invalid guard configuration")
	// ErrBadInput means a tick or a call's argument is malformed (wrong metrics, no time, no id).
	// Unusable readings are not malformed: they make the guard BLIND.
	ErrBadInput = errors.New("malformed guard input")
	// ErrCallOrder means a call does not follow the machine's state: time going backwards, Decide
	// while a confirmation is pending, Confirm without one, Rearm when not tripped.
	ErrCallOrder = errors.New("guard call out of order")
)

// State is the state of the guard for one rollout stage (docs/guard.md, "States").
type State string

// The states of a guarded rollout stage.
const (
	// StateWarmup: the stage started and has not reached its minimum exposure; only R3 can trip.
	StateWarmup State = "WARMUP"
	// StateHealthy: fresh data, nothing fired, R5 not (yet) met.
	StateHealthy State = "HEALTHY"
	// StateReady: R5 met; the rollout may advance one stage.
	StateReady State = "READY"
	// StateHold: sample-ratio mismatch, or R5 not met after the maximum extension.
	StateHold State = "HOLD"
	// StateBlind: the readings are unusable (errors, missing, NaN, stale, one arm missing).
	StateBlind State = "BLIND"
	// StateTripped: R1, R2 or R3 fired and a re-query confirmed it; latched until Rearm.
	StateTripped State = "TRIPPED"
)

// Action is what the caller should do after a decision. Actions are emitted once, on the call
// that causes them; [Evidence.StateAfter] and [Machine.State] give the level.
type Action string

// The actions a decision can ask for.
const (
	// ActionNone: nothing to do.
	ActionNone Action = "none"
	// ActionConfirm: a trip rule fired; re-query the metrics at once and pass them to Confirm.
	ActionConfirm Action = "confirm"
	// ActionAdvance: R5 is met; advance the rollout one stage (then ChangeStage to it).
	ActionAdvance Action = "advance"
	// ActionHold: keep the stage where it is (SRM, or blind past the grace period with on_blind hold).
	ActionHold Action = "hold"
	// ActionRevert: pull the rollout back (on_blind or on_inconclusive revert).
	ActionRevert Action = "revert"
	// ActionPage: tell a person (on_inconclusive page).
	ActionPage Action = "page"
	// ActionKill: turn the flag off (on_trip kill).
	ActionKill Action = "kill"
	// ActionStepBack: go back one stage (on_trip stepBack).
	ActionStepBack Action = "stepBack"
	// ActionOpenValve: open the rollout's safety valve (on_trip openValve).
	ActionOpenValve Action = "openValve"
	// ActionFreeze: stop the rollout where it is (on_trip freeze).
	ActionFreeze Action = "freeze"
)

// Tick is the input of one decision: the readings of every configured metric, taken at Time by
// the caller's clock. The machine reads no clock of its own.
type Tick struct {
	Time    time.Time        `json:"time"`
	Metrics []MetricReadings `json:"metrics"`
}

// MetricReadings are one metric's readings of both arms.
type MetricReadings struct {
	Name      string      `json:"name"`
	Treatment ArmReadings `json:"treatment"`
	// Control is ignored when the stage has no control arm (Share = 1).
	Control ArmReadings `json:"control"`
}

// ArmReadings are one arm's cumulative counters as a [CounterSource] read them: values of
// monotonic counters (never rates) with their times and statuses. For a metric of kind KindMSPRT,
// Requests counts trials and Errors events.
type ArmReadings struct {
	Requests source.Reading `json:"requests"`
	Errors   source.Reading `json:"errors"`
}

// maxCount is the largest counter value a float64 holds exactly (2^53).
const maxCount = 1 << 53

const (
	armT = 0
	armC = 1
)

// metricState is one metric's part of the machine. Arrays are indexed [arm][requests, errors].
type metricState struct {
	last    [2][2]float64   // the last usable readings
	lastAt  [2][2]time.Time // their times
	hasLast [2]bool         // whether the arm has a baseline
	stage   [2][2]float64   // counts of the ticks inside the stage (exposure, R5's expected errors)
	srm     [2]float64      // exposures of the stage's ticks without a counter reset (R4)
	total   [2][2]float64   // counts since the e-process began (R2)
	mean    meanTest        // R2 of KindMean, since the e-process began
	r1      RatioTest       // kept across stage changes
	r5      RatioTest       // fresh every stage
	floor   window
}

type machineState struct {
	state             State
	lastTime          time.Time // time of the last committed tick
	hasTick           bool
	exposed           bool // minimum exposure reached: WARMUP is over
	freshRun          int  // usable ticks in a row
	blindSince        time.Time
	blindActed        bool
	holdCause         Cause
	inconclusiveActed bool
	metrics           []metricState
}

func (s *machineState) copyFrom(src *machineState) {
	ms := s.metrics
	*s = *src
	if cap(ms) < len(src.metrics) {
		ms = make([]metricState, len(src.metrics))
	}
	s.metrics = ms[:len(src.metrics)]
	for i := range src.metrics {
		buf, late := s.metrics[i].floor.buf, s.metrics[i].mean.late
		s.metrics[i] = src.metrics[i]
		s.metrics[i].floor.buf = buf
		s.metrics[i].floor.copyFrom(&src.metrics[i].floor)
		s.metrics[i].mean.late = late
		s.metrics[i].mean.copyFrom(&src.metrics[i].mean)
	}
}

// Machine is the guard of one rollout of one (flag, variant, segment), one stage at a time: it
// takes one [Tick] of counter readings at a time, differences the counters itself, runs R1–R5 on
// every metric (one e-process per metric, α split across them) and returns the decision with its
// [Evidence]. It is modelled on Prometheus's alerting rules: a trip is first pending
// (ActionConfirm), fires only when an immediate re-query confirms it, and then stays latched
// (TRIPPED) until a person re-arms it.
//
// The R1 e-processes run for the whole rollout, across stage changes ([Machine.ChangeStage]);
// a change of what is tested ([Machine.Restart]) or a re-arm ([Machine.Rearm]) starts them afresh.
//
// A Machine is deterministic: its only clock is the time passed in with each call, so replaying
// the recorded inputs through a fresh Machine reproduces its decisions exactly ([Replay]), and so
// does running one decision's inputs through a machine restored from the [MachineSnapshot] taken
// before it ([ReplayDecision]). It is not safe for concurrent use.
type Machine struct {
	cfg       MachineConfig
	digest    string
	logTrip   float64 // ln(1/α_metric)
	alphaTrip float64
	floorZ    float64
	start     time.Time
	cur, next *machineState
	bufs      [2]machineState
	pending   bool
	pendingAt time.Time
}

// NewMachine returns the guard of a rollout whose first guarded stage, cfg, starts at start. It returns
// an error wrapping [ErrMachineConfig] if cfg is invalid, or [ErrBadInput] if start is the zero
// time or beyond the year 9999.
func NewMachine(cfg MachineConfig, start time.Time) (*Machine, error) {
	m := &Machine{}
	if err := m.configure(cfg, start); err != nil {
		return nil, err
	}
	m.cur, m.next = &m.bufs[0], &m.bufs[1]
	m.resetStage(m.cur, StateWarmup)
	return m, nil
}

func (m *Machine) configure(cfg MachineConfig, start time.Time) error {
	if start.IsZero() || !recordable(start) {
		return fmt.Errorf("stage start %v: zero or beyond year 9999: %w", start, ErrBadInput)
	}
	if err := cfg.Validate(); err != nil {
		return err
	}
	cfg.setDefaults()
	b, err := json.Marshal(cfg)
	if err != nil {
		return fmt.Errorf("digest configuration: %w", err)
	}
	sum := sha256.Sum256(b)
	m.cfg = cfg
	m.digest = hex.EncodeToString(sum[:16])
	m.alphaTrip = cfg.Alpha / float64(len(cfg.Metrics))
	m.logTrip = -math.Log(m.alphaTrip)
	m.floorZ = NormalQuantile(cfg.FloorConfidence)
	m.start = normTime(start)
	return nil
}

// resetStage gives s a fresh stage and fresh e-processes: no readings, the given state.
func (m *Machine) resetStage(s *machineState, state State) {
	ms := s.metrics
	*s = machineState{state: state}
	if cap(ms) < len(m.cfg.Metrics) {
		ms = make([]metricState, len(m.cfg.Metrics))
	}
	s.metrics = ms[:len(m.cfg.Metrics)]
	for i := range s.metrics {
		buf, late := s.metrics[i].floor.buf[:0], s.metrics[i].mean.late[:0]
		// The parameters were validated, so the constructors cannot fail.
		r1, _ := NewRatioTest(m.cfg.R0)
		if !m.cfg.NoLateStarts {
			r1, _ = r1.WithLateStarts(LateStartWeight)
		}
		r5, _ := NewReverseRatioTest(m.cfg.RMax)
		s.metrics[i] = metricState{r1: r1, r5: r5, floor: window{buf: buf}, mean: meanTest{late: late}}
	}
}

// nextStage begins a new stage on s, keeping what belongs to the rollout rather than the stage:
// the R1 e-processes, R2's counts, R3's window, the readings' baselines and a TRIPPED latch.
func (m *Machine) nextStage(s *machineState) {
	if s.state != StateTripped {
		s.state = StateWarmup
	}
	s.exposed, s.holdCause, s.inconclusiveActed = false, "", false
	for i := range s.metrics {
		ms := &s.metrics[i]
		ms.stage, ms.srm = [2][2]float64{}, [2]float64{}
		ms.r5, _ = NewReverseRatioTest(m.cfg.RMax)
	}
}

// State returns the current (committed) state.
func (m *Machine) State() State { return m.cur.state }

// Config returns the configuration in force, with defaults applied.
func (m *Machine) Config() MachineConfig {
	c := m.cfg
	c.Metrics = append([]MetricRule(nil), c.Metrics...)
	return c
}

// StageStart returns when the current stage (or its last restart or re-arm) began.
func (m *Machine) StageStart() time.Time { return m.start }

// ConfigDigest returns the digest of the configuration in force, as recorded in the evidence.
func (m *Machine) ConfigDigest() string { return m.digest }

// Pending reports whether a trip awaits confirmation: the next call must be Confirm.
func (m *Machine) Pending() bool { return m.pending }

func (m *Machine) hasControl() bool { return m.cfg.Share < 1 }

func normTime(t time.Time) time.Time { return t.Round(0).UTC() }

// Decide runs one tick: id is the caller's decision id, t the readings. The machine differences
// each counter against its last usable reading (a drop is a counter reset: it counts from the new
// value); the first usable tick of a stage is only a baseline. If a trip rule fires, Decide
// commits nothing and returns ActionConfirm: the caller must re-query at once and call Confirm.
//
// It returns an error wrapping [ErrBadInput] if id is empty, t has no time, or t's metrics are
// not the configured ones in order; [ErrCallOrder] if a confirmation is pending or t is earlier
// than the last tick or the stage start. On error nothing changes.
func (m *Machine) Decide(id string, t Tick) (Evidence, error) {
	if m.pending {
		return Evidence{}, fmt.Errorf("decide %s: a trip awaits confirmation: %w", id, ErrCallOrder)
	}
	if err := m.checkTick(id, t, m.lastTime()); err != nil {
		return Evidence{}, fmt.Errorf("decide %s: %w", id, err)
	}
	var ev Evidence
	m.next.copyFrom(m.cur)
	if m.step(m.next, CallDecide, id, t, &ev) {
		m.pending = true
		m.pendingAt = normTime(t.Time)
		return ev, nil
	}
	m.cur, m.next = m.next, m.cur
	return ev, nil
}

// Confirm runs the immediate re-query that a Decide returning ActionConfirm asked for: t replaces
// that tick's readings. If a trip rule still fires, the machine latches TRIPPED and returns the
// configured on_trip action; otherwise t is committed as an ordinary tick (which may be BLIND).
//
// It returns an error wrapping [ErrCallOrder] if no confirmation is pending or t is earlier than
// the tick being confirmed, or [ErrBadInput] as Decide does. On error nothing changes.
func (m *Machine) Confirm(id string, t Tick) (Evidence, error) {
	if !m.pending {
		return Evidence{}, fmt.Errorf("confirm %s: no trip awaits confirmation: %w", id, ErrCallOrder)
	}
	if err := m.checkTick(id, t, m.pendingAt); err != nil {
		return Evidence{}, fmt.Errorf("confirm %s: %w", id, err)
	}
	var ev Evidence
	m.next.copyFrom(m.cur)
	m.step(m.next, CallConfirm, id, t, &ev)
	m.cur, m.next = m.next, m.cur
	m.pending = false
	return ev, nil
}

// Restart begins the stage afresh at now under cfg, as a configuration change mid-stage demands:
// fresh e-processes, no readings, WARMUP. A TRIPPED machine stays TRIPPED: only Rearm clears it.
// A pending confirmation is dropped.
//
// It returns an error wrapping [ErrMachineConfig] if cfg is invalid, [ErrBadInput] if id is
// empty or now is the zero time, or [ErrCallOrder] if now is earlier than the last tick. On error
// nothing changes.
func (m *Machine) Restart(id string, cfg MachineConfig, now time.Time) (Evidence, error) {
	if id == "" {
		return Evidence{}, fmt.Errorf("restart: decision id: required: %w", ErrBadInput)
	}
	if err := m.checkTime(now); err != nil {
		return Evidence{}, fmt.Errorf("restart %s: %w", id, err)
	}
	if err := m.configure(cfg, now); err != nil {
		return Evidence{}, fmt.Errorf("restart %s: %w", id, err)
	}
	before := m.cur.state
	after := StateWarmup
	if before == StateTripped {
		after = StateTripped
	}
	m.resetStage(m.cur, after)
	m.pending = false
	cfgCopy := m.Config()
	ev := m.header(CallRestart, id, normTime(now), before)
	ev.Config = &cfgCopy
	ev.StateAfter = after
	ev.Action = ActionNone
	ev.Cause = CauseRestarted
	m.cur.lastTime, m.cur.hasTick = ev.Time, true
	return ev, nil
}

// ChangeStage moves the guard to the rollout's next (or previous) stage under cfg, which may
// change the stage, the split, the hold times, R5's and R3's parameters and the policies, but not
// what is being tested: flag, variant, control, segment, metrics, α, r0 and τ must stay as they
// are (use Restart for that). The R1 e-processes go on: each tick's share of exposures enters
// its likelihood, so a new split does not disturb them, and the whole rollout spends one α. The
// stage itself begins afresh at now: WARMUP, minimum hold, R5's e-process, SRM and R5's counts.
// A TRIPPED machine stays TRIPPED.
//
// It returns an error wrapping [ErrMachineConfig] if cfg is invalid or changes what is tested,
// [ErrBadInput] if id is empty or now is the zero time, or [ErrCallOrder] if a trip awaits
// confirmation or now is earlier than the last tick. On error nothing changes.
func (m *Machine) ChangeStage(id string, cfg MachineConfig, now time.Time) (Evidence, error) {
	if id == "" {
		return Evidence{}, fmt.Errorf("change stage: decision id: required: %w", ErrBadInput)
	}
	if m.pending {
		return Evidence{}, fmt.Errorf("change stage %s: a trip awaits confirmation: %w", id, ErrCallOrder)
	}
	if err := m.checkTime(now); err != nil {
		return Evidence{}, fmt.Errorf("change stage %s: %w", id, err)
	}
	if err := cfg.Validate(); err != nil {
		return Evidence{}, fmt.Errorf("change stage %s: %w", id, err)
	}
	cfg.setDefaults()
	if err := sameTest(m.cfg, cfg); err != nil {
		return Evidence{}, fmt.Errorf("change stage %s: %w", id, err)
	}
	if err := m.configure(cfg, now); err != nil {
		return Evidence{}, fmt.Errorf("change stage %s: %w", id, err)
	}
	before := m.cur.state
	m.nextStage(m.cur)
	cfgCopy := m.Config()
	ev := m.header(CallChangeStage, id, normTime(now), before)
	ev.Config = &cfgCopy
	ev.StateAfter = m.cur.state
	ev.Action = ActionNone
	ev.Cause = CauseStageChanged
	m.cur.lastTime, m.cur.hasTick = ev.Time, true
	return ev, nil
}

// Rearm clears a TRIPPED latch on a person's word: by names them. The stage begins afresh at now
// (fresh e-processes, WARMUP), so the evidence that tripped it cannot trip it again.
//
// It returns an error wrapping [ErrBadInput] if id or by is empty or now is the zero time, or
// [ErrCallOrder] if the machine is not TRIPPED or now is earlier than the last tick. On error
// nothing changes.
func (m *Machine) Rearm(id, by string, now time.Time) (Evidence, error) {
	if id == "" {
		return Evidence{}, fmt.Errorf("rearm: decision id: required: %w", ErrBadInput)
	}
	if by == "" {
		return Evidence{}, fmt.Errorf("rearm %s: by: required: %w", id, ErrBadInput)
	}
	if err := m.checkTime(now); err != nil {
		return Evidence{}, fmt.Errorf("rearm %s: %w", id, err)
	}
	if m.cur.state != StateTripped {
		return Evidence{}, fmt.Errorf("rearm %s: state is %s, not %s: %w", id, m.cur.state, StateTripped, ErrCallOrder)
	}
	now = normTime(now)
	m.start = now
	m.resetStage(m.cur, StateWarmup)
	m.pending = false
	ev := m.header(CallRearm, id, now, StateTripped)
	ev.By = by
	ev.StateAfter = StateWarmup
	ev.Action = ActionNone
	ev.Cause = CauseRearmed
	m.cur.lastTime, m.cur.hasTick = now, true
	return ev, nil
}

func (m *Machine) lastTime() time.Time {
	if m.cur.hasTick && m.cur.lastTime.After(m.start) {
		return m.cur.lastTime
	}
	return m.start
}

func (m *Machine) checkTime(now time.Time) error {
	if now.IsZero() {
		return fmt.Errorf("time: zero: %w", ErrBadInput)
	}
	if !recordable(now) {
		return fmt.Errorf("time: year %d cannot be recorded: %w", now.Year(), ErrBadInput)
	}
	if last := m.lastTime(); normTime(now).Before(last) {
		return fmt.Errorf("time %s is before the last tick %s: %w", normTime(now).Format(time.RFC3339Nano), last.Format(time.RFC3339Nano), ErrCallOrder)
	}
	if m.pending && normTime(now).Before(m.pendingAt) {
		return fmt.Errorf("time %s is before the pending tick %s: %w", normTime(now).Format(time.RFC3339Nano), m.pendingAt.Format(time.RFC3339Nano), ErrCallOrder)
	}
	return nil
}

func (m *Machine) checkTick(id string, t Tick, notBefore time.Time) error {
	if id == "" {
		return fmt.Errorf("decision id: required: %w", ErrBadInput)
	}
	if t.Time.IsZero() {
		return fmt.Errorf("tick time: zero: %w", ErrBadInput)
	}
	if now := normTime(t.Time); now.Before(notBefore) {
		return fmt.Errorf("tick time %s is before %s: %w", now.Format(time.RFC3339Nano), notBefore.Format(time.RFC3339Nano), ErrCallOrder)
	}
	if len(t.Metrics) != len(m.cfg.Metrics) {
		return fmt.Errorf("tick has %d metrics, the guard %d: %w", len(t.Metrics), len(m.cfg.Metrics), ErrBadInput)
	}
	if !recordable(t.Time) {
		return fmt.Errorf("tick time: year %d cannot be recorded: %w", t.Time.Year(), ErrBadInput)
	}
	for i := range t.Metrics {
		mr := &t.Metrics[i]
		if mr.Name != m.cfg.Metrics[i].Name {
			return fmt.Errorf("tick metric %d is %q, want %q: %w", i, mr.Name, m.cfg.Metrics[i].Name, ErrBadInput)
		}
		for _, r := range []*source.Reading{&mr.Treatment.Requests, &mr.Treatment.Errors, &mr.Control.Requests, &mr.Control.Errors} {
			if !recordable(r.At) || !recordable(r.Requested) {
				return fmt.Errorf("tick metric %q: a reading's time cannot be recorded: %w", mr.Name, ErrBadInput)
			}
		}
	}
	return nil
}

// recordable reports whether t survives JSON (encoding/json refuses years outside 0–9999).
func recordable(t time.Time) bool {
	y := t.UTC().Year()
	return y >= 0 && y <= 9999
}

func (m *Machine) header(call Call, id string, now time.Time, before State) Evidence {
	c := &m.cfg
	return Evidence{
		DecisionID:   id,
		Call:         call,
		Time:         now,
		Rollout:      c.Rollout,
		Stage:        c.Stage,
		Flag:         c.Flag,
		Variant:      c.Variant,
		Control:      c.Control,
		Segment:      c.Segment,
		Share:        Float(c.Share),
		ConfigDigest: m.digest,
		StageStart:   m.start,
		StateBefore:  before,
	}
}

// counterProblem says why a counter reading cannot be used, or "" if it can.
func (m *Machine) counterProblem(c *CounterEvidence, now, lastAt time.Time, hasLast bool) string {
	return readingProblem(c, now, m.cfg.MaxAge, lastAt, hasLast, "tick")
}

// readingProblem says why a counter reading taken for a decision at now cannot be counted, or ""
// if it can: the one rule of what a usable reading is, for rollouts and valves alike. lastAt is
// the time of the last reading used (when hasLast); moment names now in the message.
func readingProblem(c *CounterEvidence, now time.Time, maxAge time.Duration, lastAt time.Time, hasLast bool, moment string) string {
	v := float64(c.Value)
	switch {
	case c.Status != source.ReadingOK:
		if c.Status == "" {
			return "no status"
		}
		return "status " + string(c.Status)
	case math.IsNaN(v):
		return "NaN value"
	case math.IsInf(v, 0):
		return "infinite value"
	case v < 0:
		return "negative value"
	case v > maxCount:
		return "value beyond 2^53"
	case c.At.IsZero():
		return "no sample time"
	case c.At.After(now):
		return "sample time after the " + moment
	case now.Sub(c.At) > maxAge:
		return "stale sample"
	case hasLast && c.At.Before(lastAt):
		return "sample older than the last one used"
	}
	return ""
}

// armProblem records an arm's readings in ae and says why they cannot be used, or "".
func (m *Machine) armProblem(ae *ArmEvidence, in *ArmReadings, ms *metricState, arm int, now time.Time) string {
	ae.Requests.record(&in.Requests)
	ae.Errors.record(&in.Errors)
	name := "treatment"
	if arm == armC {
		name = "control"
	}
	if p := m.counterProblem(&ae.Requests, now, ms.lastAt[arm][0], ms.hasLast[arm]); p != "" {
		return name + " requests: " + p
	}
	if p := m.counterProblem(&ae.Errors, now, ms.lastAt[arm][1], ms.hasLast[arm]); p != "" {
		return name + " errors: " + p
	}
	return ""
}

func counterDelta(prev, cur float64) (delta float64, reset bool) {
	if cur < prev {
		return cur, true
	}
	return cur - prev, false
}

// step evaluates tick t on s and fills ev. It reports whether a trip needs confirmation (only for
// CallDecide), in which case s must not be committed.
func (m *Machine) step(s *machineState, call Call, id string, t Tick, ev *Evidence) bool {
	now := normTime(t.Time)
	*ev = m.header(call, id, now, s.state)
	cfg := &m.cfg
	ctl := m.hasControl()
	ev.Metrics = make([]MetricEvidence, len(cfg.Metrics))

	// Record the readings and find out whether every one is usable.
	blind := false
	for i := range cfg.Metrics {
		ms, me, in := &s.metrics[i], &ev.Metrics[i], &t.Metrics[i]
		me.Name, me.Kind, me.Alpha = cfg.Metrics[i].Name, cfg.Metrics[i].Kind, Float(m.alphaTrip)
		me.Blind = m.armProblem(&me.Treatment, &in.Treatment, ms, armT, now)
		if ctl {
			if p := m.armProblem(&me.Control, &in.Control, ms, armC, now); me.Blind == "" {
				me.Blind = p
			}
		}
		if me.Blind != "" {
			blind = true
		}
	}

	if !blind {
		s.freshRun++
		s.blindSince, s.blindActed = time.Time{}, false
		for i := range cfg.Metrics {
			m.update(&s.metrics[i], &ev.Metrics[i], &cfg.Metrics[i], now)
		}
		if !s.exposed {
			s.exposed = true
			for i := range s.metrics {
				c := &s.metrics[i].stage
				if c[armT][0] < cfg.MinExposure || (ctl && c[armC][0] < cfg.MinExposure) {
					s.exposed = false
				}
			}
		}
	} else {
		s.freshRun = 0
		if s.blindSince.IsZero() {
			s.blindSince = now
		}
	}

	// Evaluate the rules on the (possibly frozen) statistics, for the record and the decision.
	var r1, r2, r3, srm bool
	ready := ctl && s.exposed
	for i := range cfg.Metrics {
		f := m.evaluate(&s.metrics[i], &ev.Metrics[i], &cfg.Metrics[i], now)
		r1 = r1 || f.r1
		r2 = r2 || f.r2
		r3 = r3 || f.r3
		srm = srm || f.srm
		ready = ready && f.ready
	}
	minHold := !now.Before(m.start.Add(cfg.MinHold))
	extended := !now.Before(m.start.Add(cfg.MinHold + cfg.MaxExtension))
	ready = ready && minHold && s.freshRun >= cfg.FreshTicks
	ev.Exposed, ev.FreshTicks, ev.MinHoldElapsed = s.exposed, s.freshRun, minHold
	ev.BlindSince = s.blindSince

	before := s.state
	after, action, cause := before, ActionNone, Cause("")
	confirm := false
	trip := !blind && (r3 || (s.exposed && (r1 || r2)))
	switch {
	case before == StateTripped:
		after, cause = StateTripped, CauseLatched
	case blind:
		after, cause = StateBlind, CauseBlind
		if !s.blindActed && now.Sub(s.blindSince) >= cfg.BlindGrace {
			s.blindActed = true
			action, cause = cfg.OnBlind, CauseBlindGrace
		}
	case trip:
		switch {
		case s.exposed && r1:
			cause = CauseR1
		case s.exposed && r2:
			cause = CauseR2
		default:
			cause = CauseR3
		}
		if call == CallConfirm {
			after, action = StateTripped, cfg.OnTrip
		} else {
			action, confirm = ActionConfirm, true
		}
	case s.exposed && srm:
		after, cause = StateHold, CauseSRM
		switch {
		case ctl && extended && !s.inconclusiveActed:
			// Still no trustworthy comparison after the maximum extension.
			s.inconclusiveActed = true
			action = cfg.OnInconclusive
		case !(before == StateHold && s.holdCause == CauseSRM):
			action = ActionHold
		}
	case !s.exposed:
		after, cause = StateWarmup, CauseWarmup
	case ready:
		after, cause = StateReady, CauseReady
		if before != StateReady {
			action = ActionAdvance
		}
	case ctl && extended:
		after, cause = StateHold, CauseInconclusive
		if !s.inconclusiveActed {
			s.inconclusiveActed = true
			action = cfg.OnInconclusive
		}
	default:
		after, cause = StateHealthy, CauseHealthy
	}
	if after == StateHold {
		s.holdCause = cause
	} else {
		s.holdCause = ""
	}
	s.state = after
	s.lastTime, s.hasTick = now, true
	ev.StateAfter, ev.Action, ev.Cause = after, action, cause
	return confirm
}

// update differences one metric's usable readings and feeds the deltas to its statistics. An
// arm without a baseline (the stage's first usable tick, or a control arm coming back after a
// stage without one) only sets it: its delta is 0, so R1 skips the tick.
//
// R1, R2, R3 and R5 take every delta: their likelihoods use each tick's own share of exposures.
// The stage's counts (exposure, expected errors) take only deltas that began inside the stage,
// and R4's exposures only those without a counter reset, since a straddling or reset tick does
// not follow the stage's split.
func (m *Machine) update(ms *metricState, me *MetricEvidence, rule *MetricRule, now time.Time) {
	ctl := m.hasControl()
	arms := [2]*ArmEvidence{&me.Treatment, &me.Control}
	var d [2][2]float64
	inStage, reset := true, false
	for a, ae := range arms {
		if a == armC && !ctl {
			ms.hasLast[armC] = false
			break
		}
		cur := [2]float64{float64(ae.Requests.Value), float64(ae.Errors.Value)}
		if !ms.hasLast[a] {
			ae.Baseline, inStage = true, false
		} else {
			var rr, er bool
			d[a][0], rr = counterDelta(ms.last[a][0], cur[0])
			d[a][1], er = counterDelta(ms.last[a][1], cur[1])
			ae.RequestsReset, ae.ErrorsReset = rr, er
			reset = reset || rr || er
			inStage = inStage && !ms.lastAt[a][0].Before(m.start) && !ms.lastAt[a][1].Before(m.start)
		}
		ms.last[a], ms.hasLast[a] = cur, true
		ms.lastAt[a] = [2]time.Time{ae.Requests.At, ae.Errors.At}
		ae.DeltaRequests, ae.DeltaErrors = Float(d[a][0]), Float(d[a][1])
	}
	me.OutsideStage = !inStage
	for a := range 2 {
		for c := range 2 {
			ms.total[a][c] += d[a][c]
			if inStage {
				ms.stage[a][c] += d[a][c]
			}
		}
		if inStage && !reset {
			ms.srm[a] += d[a][0]
		}
	}
	if ctl && rule.Kind == KindMean {
		ms.mean.observe(d[armT][0], d[armT][1], d[armC][0], d[armC][1])
	}
	if ctl && rule.Kind == KindRatio {
		me.R1.Used = ms.r1.Observe(d[armT][0], d[armC][0], d[armT][1], d[armC][1])
		ms.r5.Observe(d[armT][0], d[armC][0], d[armT][1], d[armC][1])
	}
	if rule.Ceiling > 0 && (d[armT][0] > 0 || d[armT][1] > 0) {
		ms.floor.push(windowEntry{at: now, req: d[armT][0], err: d[armT][1]}, 0)
	}
}

type fired struct{ r1, r2, r3, srm, ready bool }

// evaluate computes one metric's rules on its current statistics and records them.
func (m *Machine) evaluate(ms *metricState, me *MetricEvidence, rule *MetricRule, now time.Time) fired {
	cfg := &m.cfg
	ctl := m.hasControl()
	var f fired
	f.ready = true
	for a := range 2 {
		if a == armC && !ctl {
			break
		}
		ae := &me.Treatment
		if a == armC {
			ae = &me.Control
		}
		ae.StageRequests, ae.StageErrors = Float(ms.stage[a][0]), Float(ms.stage[a][1])
	}
	if ctl && rule.Kind == KindRatio {
		f.r1 = ms.r1.Exceeds(m.alphaTrip)
		me.R1.fill(&ms.r1, "binomial-mixture-e-process", m.alphaTrip, f.r1)
		met := ms.r5.Exceeds(cfg.AlphaAdvance)
		me.R5.fill(&ms.r5, "reverse-binomial-mixture-e-process", cfg.AlphaAdvance, met)
		expected := 0.0
		if ms.stage[armC][0] > 0 {
			expected = ms.stage[armT][0] * ms.stage[armC][1] / ms.stage[armC][0]
		}
		me.R5.ExpectedErrors, me.R5.MinExpectedErrors = Float(expected), Float(cfg.MinExpectedErrors)
		me.R5.Met = met && expected >= cfg.MinExpectedErrors
		f.ready = me.R5.Met
	}
	if ctl && rule.Kind == KindMSPRT {
		r := &me.R2
		r.Statistic, r.Alpha, r.Threshold, r.Tau = "msprt-normal-one-sided", Float(m.alphaTrip), Float(1/m.alphaTrip), Float(cfg.Tau)
		r.MinEvents = msprtMinEvents
		tot := &ms.total
		r.TreatmentTrials, r.TreatmentEvents = Float(tot[armT][0]), Float(tot[armT][1])
		r.ControlTrials, r.ControlEvents = Float(tot[armC][0]), Float(tot[armC][1])
		theta, v := ProportionDiff(tot[armT][1], tot[armT][0], tot[armC][1], tot[armC][0])
		r.Theta, r.V = Float(theta), Float(v)
		r.Active = tot[armT][1] >= msprtMinEvents && tot[armC][1] >= msprtMinEvents
		if r.Active {
			l := LogMSPRT(theta, v, cfg.Tau)
			r.LogLambda = Float(l)
			r.Fired = l >= m.logTrip
			f.r2 = r.Fired
		}
		if tot[armT][0] > 0 && tot[armC][0] > 0 && tot[armC][1] > 0 {
			r.Ratio = Float((tot[armT][1] / tot[armT][0]) / (tot[armC][1] / tot[armC][0]))
		}
	}
	if ctl && rule.Kind == KindMean {
		f.r2 = m.evaluateMean(ms, &me.R2, rule)
	}
	if rule.Ceiling > 0 {
		fl := &me.R3
		fl.Statistic, fl.Ceiling, fl.Confidence, fl.Z = "wilson-lower-bound", Float(rule.Ceiling), Float(cfg.FloorConfidence), Float(m.floorZ)
		fl.Window, fl.MinRequests = cfg.FloorWindow, Float(cfg.FloorMinRequests)
		cutoff := now.Add(-cfg.FloorWindow)
		ms.floor.drop(cutoff)
		req, errs := ms.floor.sums(cutoff)
		fl.Requests, fl.Errors = Float(req), Float(errs)
		if req > 0 {
			lower := WilsonLower(errs, req, m.floorZ)
			fl.Lower = Float(lower)
			fl.Fired = req >= cfg.FloorMinRequests && lower > rule.Ceiling
		}
		f.r3 = fl.Fired
	}
	if ctl {
		sr := &me.R4
		sr.Statistic, sr.Share, sr.Alpha = "chi-square-1df", Float(cfg.Share), Float(cfg.SRMAlpha)
		nT, nC := ms.srm[armT], ms.srm[armC]
		sr.TreatmentExposures, sr.ControlExposures = Float(nT), Float(nC)
		n := nT + nC
		if n > 0 {
			sr.ObservedShare = Float(nT / n)
		}
		// Pearson's χ² needs an expected count of at least 5 in each arm.
		if n*min(cfg.Share, 1-cfg.Share) >= 5 {
			chi2, p := SRM(nT, nC, cfg.Share)
			sr.Tested, sr.Chi2, sr.P = true, Float(chi2), Float(p)
			sr.Mismatch = p < cfg.SRMAlpha
		}
		f.srm = sr.Mismatch
	}
	return f
}

// msprtMinEvents is how many events each arm needs before R2 runs.
const msprtMinEvents = 30

// meanMinTicks is how many ticks with observations each arm of a KindMean metric needs (and how
// many with observations on both) before R2 runs: each arm's variance is estimated from its
// successive per-tick means.
const meanMinTicks = 30

// evaluateMean runs R2 on a KindMean metric: the one-sided normal mSPRT on the relative
// difference of the means, θ = (μT − μC)/μC − margin, estimated by D/m̄C − margin with D the
// tick-stratified difference of [meanTest] and m̄C the control's mean; each arm's variance comes
// from its successive per-tick means ([meanAcc]). Λ mixes the comparison from the first paired
// tick and the later starts kept, each weighted as [meanTest] says. It reports whether R2 fired.
func (m *Machine) evaluateMean(ms *metricState, r *MSPRTEvidence, rule *MetricRule) bool {
	r.Statistic, r.Alpha, r.Threshold = "msprt-normal-one-sided-relative-mean", Float(m.alphaTrip), Float(1/m.alphaTrip)
	r.Tau, r.Margin, r.MinTicks = Float(rule.Tau), Float(rule.Margin), meanMinTicks
	mt := &ms.mean
	t, c := &mt.arm[armT], &mt.arm[armC]
	mT, varT := t.mean()
	mC, varC := c.mean()
	r.TreatmentTrials, r.TreatmentSum, r.TreatmentTicks, r.TreatmentMean, r.TreatmentVariance = Float(t.n), Float(t.s), int(t.k), Float(mT), Float(varT)
	r.ControlTrials, r.ControlSum, r.ControlTicks, r.ControlMean, r.ControlVariance = Float(c.n), Float(c.s), int(c.k), Float(mC), Float(varC)
	r.PairedTicks = int(mt.pairs)
	if !m.cfg.NoLateStarts {
		r.LateStarts = LateStartWeight
	}
	if !(mC > 0) || !(mt.all.w > 0) {
		return false
	}
	// θ̂ and V of the comparison from one start.
	stat := func(cs *meanStart) (theta, v float64) {
		return cs.wd/cs.w/mC - rule.Margin, (varT*cs.aT + varC*cs.aC) / (cs.w * cs.w) / (mC * mC)
	}
	theta, v := stat(&mt.all)
	r.Ratio = Float(1 + theta + rule.Margin)
	r.Theta, r.V = Float(theta), Float(v)
	r.Active = mt.pairs >= meanMinTicks && t.k >= meanMinTicks && c.k >= meanMinTicks &&
		v > 0 && !math.IsInf(v, 0) && !math.IsNaN(theta) && !math.IsInf(theta, 0)
	if !r.Active {
		return false
	}
	first := 1.0
	if !m.cfg.NoLateStarts {
		first = 1 - LateStartWeight
	}
	firstLog := math.Log(first) + LogMSPRT(theta, v, rule.Tau)
	l := firstLog
	best, bestLog := -1, math.Inf(-1)
	for i := range mt.late {
		if m.cfg.NoLateStarts {
			break
		}
		cs := &mt.late[i]
		th, vv := stat(cs)
		if !(vv > 0) || math.IsInf(vv, 0) || math.IsNaN(th) {
			continue
		}
		li := math.Log(LateStartWeight) - math.Log(cs.start-1) - math.Log(cs.start) + LogMSPRT(th, vv, rule.Tau)
		l = logAddExp(l, li)
		if li > bestLog {
			best, bestLog = i, li
		}
	}
	if best >= 0 && bestLog > firstLog {
		cs := &mt.late[best]
		r.LateStartAgo = int(mt.pairs - cs.start + 1)
		r.LateStartRatio = Float(1 + cs.wd/cs.w/mC)
	}
	r.LogLambda = Float(l)
	r.Fired = l >= m.logTrip
	return r.Fired
}
