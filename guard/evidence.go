package guard

import (
	"errors"
	"fmt"
	"math"
	"strconv"
	"time"

	"github.com/interlock-dev/interlock/guard/source"
)

// ErrEvidence means recorded evidence cannot be replayed: an unknown call, a restart without its
// configuration, or records made under another configuration than the one replaying them.
var ErrEvidence = errors.New("evidence cannot be replayed")

// Call names the Machine method that produced a piece of evidence.
type Call string

// The calls that produce evidence.
const (
	CallDecide      Call = "decide"
	CallConfirm     Call = "confirm"
	CallRestart     Call = "restart"
	CallChangeStage Call = "changeStage"
	CallRearm       Call = "rearm"
)

// Cause says why the state after a decision is what it is.
type Cause string

// The causes of a decision.
const (
	CauseWarmup       Cause = "warmup"        // minimum exposure not reached
	CauseHealthy      Cause = "healthy"       // fresh data, nothing fired, R5 not met
	CauseReady        Cause = "r5"            // R5 met
	CauseSRM          Cause = "srm"           // R4: sample-ratio mismatch
	CauseInconclusive Cause = "inconclusive"  // R5 not met after the maximum extension
	CauseBlind        Cause = "blind"         // unusable readings
	CauseBlindGrace   Cause = "blind-grace"   // unusable readings for longer than the grace period
	CauseR1           Cause = "r1"            // the error-ratio e-process fired
	CauseR2           Cause = "r2"            // the mSPRT fired
	CauseR3           Cause = "r3"            // the absolute floor fired
	CauseLatched      Cause = "latched"       // TRIPPED until re-armed
	CauseRestarted    Cause = "restarted"     // configuration changed: the stage began afresh
	CauseStageChanged Cause = "stage-changed" // the rollout moved to another stage
	CauseRearmed      Cause = "rearmed"       // a person cleared the trip
)

// Evidence is the full record of one decision (docs/guard.md, "Evidence"): who
// and what was judged, the raw readings and their deltas, the cumulative counts of each arm, every
// statistic with its parameters and result, the state before and after and the action. It holds
// the call's whole input, so [Replay] can run it again. It encodes to JSON (non-finite numbers as
// the strings "NaN", "+Inf", "-Inf") and back without loss.
type Evidence struct {
	DecisionID   string         `json:"decisionId"`
	Call         Call           `json:"call"`
	Time         time.Time      `json:"time"` // the tick's time, by the caller's clock
	Rollout      string         `json:"rollout,omitempty"`
	Stage        int            `json:"stage"`
	Flag         string         `json:"flag"`
	Variant      string         `json:"variant"`
	Control      string         `json:"control,omitempty"`
	Segment      string         `json:"segment,omitempty"`
	Share        Float          `json:"share"`
	ConfigDigest string         `json:"configDigest"`
	Config       *MachineConfig `json:"config,omitempty"` // the new configuration, on restart and changeStage only
	StageStart   time.Time      `json:"stageStart"`
	StateBefore  State          `json:"stateBefore"`
	StateAfter   State          `json:"stateAfter"`
	Action       Action         `json:"action"`
	Cause        Cause          `json:"cause"`
	By           string         `json:"by,omitempty"` // who re-armed, on rearm only
	// Exposed: the minimum exposure was reached (WARMUP is over for this stage).
	Exposed bool `json:"exposed"`
	// FreshTicks counts the usable ticks in a row, this one included.
	FreshTicks int `json:"freshTicks"`
	// MinHoldElapsed: the stage's minimum hold time has passed.
	MinHoldElapsed bool `json:"minHoldElapsed"`
	// BlindSince is when the current run of unusable ticks began (zero when not blind).
	BlindSince time.Time        `json:"blindSince,omitzero"`
	Metrics    []MetricEvidence `json:"metrics,omitempty"`
}

// MetricEvidence is one metric's part of a decision. Statistics computed on a BLIND tick are the
// frozen ones of the last usable tick.
type MetricEvidence struct {
	Name  string     `json:"name"`
	Kind  MetricKind `json:"kind"`
	Alpha Float      `json:"alpha"` // this metric's share of the trip α (Bonferroni)
	// Blind says why this metric's readings were unusable ("" if they were usable).
	Blind string `json:"blind,omitempty"`
	// OutsideStage: this tick's deltas began before the stage did (the readings' lag straddles a
	// stage change), so they count for R1, R2, R3 and R5 but not in the stage's counts or R4.
	OutsideStage bool            `json:"outsideStage,omitempty"`
	Treatment    ArmEvidence     `json:"treatment"`
	Control      ArmEvidence     `json:"control,omitzero"`
	R1           RatioEvidence   `json:"r1,omitzero"`
	R5           AdvanceEvidence `json:"r5,omitzero"`
	R2           MSPRTEvidence   `json:"r2,omitzero"`
	R3           FloorEvidence   `json:"r3,omitzero"`
	R4           SRMEvidence     `json:"r4,omitzero"`
}

// ArmEvidence is one arm's readings as received, their deltas and the arm's counts since the
// stage began.
type ArmEvidence struct {
	Requests CounterEvidence `json:"requests"`
	Errors   CounterEvidence `json:"errors"`
	// Baseline: the first usable readings of the stage, which only set the baseline (no delta).
	Baseline      bool  `json:"baseline,omitempty"`
	RequestsReset bool  `json:"requestsReset,omitempty"` // the counter dropped: counted from its new value
	ErrorsReset   bool  `json:"errorsReset,omitempty"`
	DeltaRequests Float `json:"deltaRequests"`
	DeltaErrors   Float `json:"deltaErrors"`
	StageRequests Float `json:"stageRequests"` // since the stage began
	StageErrors   Float `json:"stageErrors"`
}

// CounterEvidence is a [source.Reading] as the machine received it, with its times in UTC and a value
// that survives JSON even when it is NaN.
type CounterEvidence struct {
	Value     Float                `json:"value"`
	At        time.Time            `json:"at"`
	Requested time.Time            `json:"requested,omitzero"`
	Status    source.ReadingStatus `json:"status"`
	Query     string               `json:"query,omitempty"`
	Endpoint  string               `json:"endpoint,omitempty"`
	Detail    string               `json:"detail,omitempty"`
}

func (c *CounterEvidence) record(r *source.Reading) {
	*c = CounterEvidence{
		Value:     Float(r.Value),
		At:        normTime(r.At),
		Requested: normTime(r.Requested),
		Status:    r.Status,
		Query:     r.Query,
		Endpoint:  r.Endpoint,
		Detail:    r.Detail,
	}
}

// Reading returns the reading c records.
func (c *CounterEvidence) Reading() source.Reading {
	return source.Reading{
		Value:     float64(c.Value),
		At:        c.At,
		Requested: c.Requested,
		Status:    c.Status,
		Query:     c.Query,
		Endpoint:  c.Endpoint,
		Detail:    c.Detail,
	}
}

func (a *ArmEvidence) readings() ArmReadings {
	return ArmReadings{Requests: a.Requests.Reading(), Errors: a.Errors.Reading()}
}

// RatioEvidence is the state of an R1 (or R5) e-process after the tick.
type RatioEvidence struct {
	Statistic string          `json:"statistic"`
	Alpha     Float           `json:"alpha"`
	Threshold Float           `json:"threshold"` // 1/α
	Null      Float           `json:"null"`      // r0 (R1) or r_max (R5)
	Grid      [GridSize]Float `json:"grid"`
	LogLik    [GridSize]Float `json:"logLik"` // ℓ_K(r_j), from the first informative tick
	// LateStarts (R1) is the weight of the starts after the first ([RatioTest.WithLateStarts]);
	// LogS each alternative's mixture over start times, ln S_K(r_j), whose mean over the grid is
	// E. Without late starts LogS is LogLik.
	LateStarts Float           `json:"lateStarts,omitempty"`
	LogS       [GridSize]Float `json:"logS"`
	Ticks      int             `json:"ticks"` // informative ticks so far
	// Used: this tick carried information (errors, and exposures on both arms). R1 only.
	Used bool  `json:"used,omitempty"`
	LogE Float `json:"logE"`
	E    Float `json:"e"`
	P    Float `json:"p"` // always-valid p-value, 1/max E
	// RHat is the maximum-likelihood estimate of r under constant per-request error rates:
	// (ΣxT/ΣnT)/(ΣxC/ΣnC) over the informative ticks. RHatGrid is the alternative (or the null)
	// with the largest likelihood in the test's own model.
	RHat     Float `json:"rHat"`
	RHatGrid Float `json:"rHatGrid"`
	Fired    bool  `json:"fired"` // E ≥ 1/α
}

func (r *RatioEvidence) fill(t *RatioTest, statistic string, alpha float64, fired bool) {
	r.Statistic, r.Alpha, r.Threshold, r.Null = statistic, Float(alpha), Float(1/alpha), Float(t.Null())
	for j := range GridSize {
		r.Grid[j], r.LogLik[j], r.LogS[j] = Float(t.grid[j]), Float(t.logLik[j]), Float(t.logS[j])
	}
	r.LateStarts = Float(t.late)
	r.Ticks = t.Ticks()
	r.LogE, r.E, r.P = Float(t.LogE()), Float(t.E()), Float(t.P())
	r.RHat, r.RHatGrid = Float(t.RatioMLE()), Float(t.GridArgmax())
	r.Fired = fired
}

// AdvanceEvidence is R5: the reverse e-process and the other conditions of one metric.
type AdvanceEvidence struct {
	RatioEvidence
	// ExpectedErrors is the treatment's requests times the control's error rate.
	ExpectedErrors    Float `json:"expectedErrors"`
	MinExpectedErrors Float `json:"minExpectedErrors"`
	// Met: the e-value reached 1/α_adv and the expected errors their minimum. READY also needs
	// the minimum hold, fresh ticks and no SRM ([Evidence.MinHoldElapsed], [Evidence.FreshTicks]).
	Met bool `json:"met"`
}

// MSPRTEvidence is R2: on the cumulative proportions of a KindMSPRT metric, or on the means of a
// KindMean metric (statistic "msprt-normal-one-sided-relative-mean", with the Mean fields).
type MSPRTEvidence struct {
	Statistic string `json:"statistic"`
	Alpha     Float  `json:"alpha"`
	Threshold Float  `json:"threshold"` // 1/α
	Tau       Float  `json:"tau"`
	MinEvents int    `json:"minEvents,omitempty"` // proportions: events each arm needs
	MinTicks  int    `json:"minTicks,omitempty"`  // means: ticks with observations each arm needs
	// The counts since the e-process began (R2 runs across stages, like R1): trials and events
	// of a proportion; of a mean, the observations (trials) and their sum.
	TreatmentTrials Float `json:"treatmentTrials"`
	TreatmentEvents Float `json:"treatmentEvents,omitempty"`
	ControlTrials   Float `json:"controlTrials"`
	ControlEvents   Float `json:"controlEvents,omitempty"`
	TreatmentSum    Float `json:"treatmentSum,omitempty"`
	ControlSum      Float `json:"controlSum,omitempty"`
	// Means only: each arm's mean, the variance of one observation estimated from the spread
	// of the per-tick means, and the number of ticks with observations.
	TreatmentMean     Float `json:"treatmentMean,omitempty"`
	ControlMean       Float `json:"controlMean,omitempty"`
	TreatmentVariance Float `json:"treatmentVariance,omitempty"`
	ControlVariance   Float `json:"controlVariance,omitempty"`
	TreatmentTicks    int   `json:"treatmentTicks,omitempty"`
	ControlTicks      int   `json:"controlTicks,omitempty"`
	// LateStarts (means) is the weight of the comparisons that begin after the first paired
	// tick (0: none). LateStartAgo and LateStartRatio describe the one that weighs most in Λ,
	// when it outweighs the comparison from the first tick: how many paired ticks ago it began,
	// and its estimate of the ratio of the means.
	LateStarts     Float `json:"lateStarts,omitempty"`
	LateStartAgo   int   `json:"lateStartAgo,omitempty"`
	LateStartRatio Float `json:"lateStartRatio,omitempty"`
	// PairedTicks (means) counts the ticks where both arms had observations: the comparison
	// is made within each of them and weighted, so a drift both arms share cancels out.
	PairedTicks int   `json:"pairedTicks,omitempty"`
	Margin      Float `json:"margin,omitempty"` // means: the tolerated relative increase
	// Ratio is the estimate: p̂T/p̂C of a proportion; of a mean, 1 + D/m̄C, D being the
	// tick-weighted difference of the arms' means and m̄C the control's mean.
	Ratio Float `json:"ratio,omitempty"`
	// Theta is p̂T − p̂C of a proportion, D/m̄C − margin of a mean; V its variance.
	Theta Float `json:"theta"`
	V     Float `json:"v"`
	// Active: each arm has at least MinEvents events (proportions) or MinTicks ticks with
	// observations (means), so the test ran.
	Active    bool  `json:"active"`
	LogLambda Float `json:"logLambda"`
	Fired     bool  `json:"fired"`
}

// FloorEvidence is R3 on the treatment's last window.
type FloorEvidence struct {
	Statistic   string        `json:"statistic"`
	Ceiling     Float         `json:"ceiling"`
	Confidence  Float         `json:"confidence"`
	Z           Float         `json:"z"`
	Window      time.Duration `json:"window"`
	MinRequests Float         `json:"minRequests"`
	Requests    Float         `json:"requests"` // treatment requests in the window
	Errors      Float         `json:"errors"`
	Lower       Float         `json:"lower"` // Wilson lower bound of the error rate
	Fired       bool          `json:"fired"`
}

// SRMEvidence is R4 on the cumulative exposures.
type SRMEvidence struct {
	Statistic string `json:"statistic"`
	Share     Float  `json:"share"` // configured treatment share
	// The stage's exposures, leaving out ticks that began before the stage or saw a counter reset.
	TreatmentExposures Float `json:"treatmentExposures"`
	ControlExposures   Float `json:"controlExposures"`
	ObservedShare      Float `json:"observedShare"`
	Alpha              Float `json:"alpha"`
	// Tested: the expected count of each arm is at least 5, so the χ² test ran.
	Tested   bool  `json:"tested"`
	Chi2     Float `json:"chi2"`
	P        Float `json:"p"`
	Mismatch bool  `json:"mismatch"`
}

// Input returns the input of the call that produced e: the tick of a decide or confirm (time and
// readings; readings the machine ignored, such as the control of a stage without one, are not
// recorded and come back empty).
func (e *Evidence) Input() Tick {
	t := Tick{Time: e.Time}
	if len(e.Metrics) > 0 {
		t.Metrics = make([]MetricReadings, len(e.Metrics))
		for i := range e.Metrics {
			t.Metrics[i] = MetricReadings{
				Name:      e.Metrics[i].Name,
				Treatment: e.Metrics[i].Treatment.readings(),
				Control:   e.Metrics[i].Control.readings(),
			}
		}
	}
	return t
}

// Replay runs recorded calls, in order, through a fresh Machine built from cfg and start, and
// returns the evidence it produces; for records of one machine it equals them, byte for byte once
// encoded. It returns the evidence produced so far and an error wrapping [ErrEvidence] if a record
// cannot be replayed (unknown call, restart without configuration, a configuration digest that is
// not the one in force), or the Machine's own error for the call.
func Replay(cfg MachineConfig, start time.Time, records []Evidence) ([]Evidence, error) {
	m, err := NewMachine(cfg, start)
	if err != nil {
		return nil, fmt.Errorf("replay: %w", err)
	}
	return replayOn(m, records)
}

// Float is a float64 that survives JSON: finite values encode as numbers (as encoding/json writes
// a float64), NaN and ±Inf as the strings "NaN", "+Inf" and "-Inf", as Prometheus's HTTP API does.
// Decoding accepts both forms.
type Float float64

// MarshalJSON implements json.Marshaler. It never fails.
func (f Float) MarshalJSON() ([]byte, error) {
	v := float64(f)
	switch {
	case math.IsNaN(v):
		return []byte(`"NaN"`), nil
	case math.IsInf(v, 1):
		return []byte(`"+Inf"`), nil
	case math.IsInf(v, -1):
		return []byte(`"-Inf"`), nil
	}
	format := byte('f')
	if a := math.Abs(v); a != 0 && (a < 1e-6 || a >= 1e21) {
		format = 'e'
	}
	b := strconv.AppendFloat(make([]byte, 0, 24), v, format, -1, 64)
	if format == 'e' {
		// As encoding/json: e-09 becomes e-9.
		if n := len(b); n >= 4 && b[n-4] == 'e' && b[n-3] == '-' && b[n-2] == '0' {
			b[n-2] = b[n-1]
			b = b[:n-1]
		}
	}
	return b, nil
}

// UnmarshalJSON implements json.Unmarshaler; null leaves f as it is. It returns an error wrapping
// [ErrBadInput] for anything but a JSON number or one of the strings "NaN", "+Inf", "Inf", "-Inf".
func (f *Float) UnmarshalJSON(b []byte) error {
	s := string(b)
	switch s {
	case "null":
		return nil
	case `"NaN"`:
		*f = Float(math.NaN())
		return nil
	case `"+Inf"`, `"Inf"`:
		*f = Float(math.Inf(1))
		return nil
	case `"-Inf"`:
		*f = Float(math.Inf(-1))
		return nil
	}
	if len(s) == 0 || !(s[0] == '-' || (s[0] >= '0' && s[0] <= '9')) {
		return fmt.Errorf("number %.40q: %w", s, ErrBadInput)
	}
	v, err := strconv.ParseFloat(s, 64)
	if err != nil || math.IsInf(v, 0) {
		return fmt.Errorf("number %.40q: %w", s, ErrBadInput)
	}
	*f = Float(v)
	return nil
}
