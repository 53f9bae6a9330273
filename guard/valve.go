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

// ErrValveConfig means a [ValveConfig] is out of range.
var ErrValveConfig = errors.New("invalid valve configuration")

// The calls of a [Valve] that produce a [ValveDecision].
const (
	CallObserve     Call = "observe"
	CallOpenManual  Call = "openManual"
	CallCloseManual Call = "closeManual"
)

// ActionCloseValve: close the safety valve (turn its operational flag off). A valve asks to open
// with [ActionOpenValve], the action a tripped rollout may also ask for.
const ActionCloseValve Action = "closeValve"

// The causes of a valve decision; [CauseHealthy] and [CauseBlind] serve the valve too. A closed
// valve is "healthy" when the open condition does not hold; an open valve closes as "healthy".
const (
	CauseBurn       Cause = "burn"        // the error budget burns above the threshold (open, or still not healthy)
	CauseLowTraffic Cause = "low-traffic" // both windows burn, but the short one has too few requests to open
	CauseBaseline   Cause = "baseline"    // the first usable readings only set the counters' baseline
	CauseRecovering Cause = "recovering"  // healthy, but not yet for the required healthy period
	CauseMinOpen    Cause = "min-open"    // healthy long enough, but open for less than the minimum time
	CauseManual     Cause = "manual"      // a person opened or closed it, or holds it open until expiry
	CauseExpired    Cause = "expired"     // a person's hold reached its expiry and the valve closed
	CauseToggleCap  Cause = "toggle-cap"  // it would close, but the toggle cap holds it open
)

// maxValveEntries bounds a valve's window of per-tick deltas: when it is full, the two oldest
// entries merge into one (at the newer one's time), so memory stays bounded whatever the tick
// rate.
const maxValveEntries = 4096

// maxValveDuration bounds every duration of a ValveConfig, so that no time arithmetic overflows.
const maxValveDuration = 30 * 24 * time.Hour

// toggleWindow is the period over which MaxTogglesPerHour counts toggles.
const toggleWindow = time.Hour

// ValveConfig configures the controller of one safety valve: an operational flag that degrades a
// non-critical feature for everyone or for one segment (docs/guard.md, "Safety valves"). Zero
// fields take the defaults listed; [ValveConfig.Validate] says what is out of range.
type ValveConfig struct {
	Valve   string `json:"valve"`             // the valve flag's key, recorded in the evidence; required
	Segment string `json:"segment,omitempty"` // the segment it degrades; empty for everyone
	// Objective is the error budget: the error ratio the SLO allows, in (0, 1); default 0.01.
	Objective float64 `json:"objective"`
	// BurnRate is the open threshold on the burn rate, errorRatio/Objective; default 14.4 (the
	// SRE workbook's paging threshold: 2% of a 30-day budget in an hour). BurnRate·Objective must
	// be below 1.
	BurnRate float64 `json:"burnRate"`
	// CloseBurnRate is the hysteresis: a tick is healthy when the short window burns below it. In
	// (0, BurnRate]; default BurnRate/2.
	CloseBurnRate float64 `json:"closeBurnRate"`
	// LongWindow and ShortWindow are the two windows of the open condition; defaults 1h and 5m,
	// ShortWindow < LongWindow.
	LongWindow  time.Duration `json:"longWindow"`
	ShortWindow time.Duration `json:"shortWindow"`
	// MinRequests is the number of requests the short window needs before the valve may open
	// automatically; default 100.
	MinRequests float64 `json:"minRequests"`
	// MinOpen is how long an automatic open lasts at least; default 5m. Backoff multiplies it.
	MinOpen time.Duration `json:"minOpen"`
	// HealthyFor is how long the ticks must be healthy in a row before an automatic close;
	// default 10m. Backoff multiplies it.
	HealthyFor time.Duration `json:"healthyFor"`
	// Backoff multiplies MinOpen and HealthyFor once more each time the valve re-opens within
	// BackoffReset of its last close; ≥ 1 (1 turns backoff off); default 2.
	Backoff float64 `json:"backoff"`
	// MaxBackoff caps the multiplier, in [1, 64]; default 8.
	MaxBackoff float64 `json:"maxBackoff"`
	// BackoffReset is how long the valve must stay closed for the multiplier to drop back to 1;
	// default 1h.
	BackoffReset time.Duration `json:"backoffReset"`
	// MaxTogglesPerHour caps opens plus closes in any hour, at least 2; default 4. An automatic
	// close must leave room for a re-open, so the cap holds the valve open rather than closed.
	MaxTogglesPerHour int `json:"maxTogglesPerHour"`
	// MaxAge is how old a reading may be, by the call's time, before it is stale; default 2m.
	MaxAge time.Duration `json:"maxAge"`
}

// setDefaults sets zero fields to their defaults.
func (c *ValveConfig) setDefaults() {
	orDefault(&c.Objective, 0.01)
	orDefault(&c.BurnRate, 14.4)
	orDefault(&c.CloseBurnRate, c.BurnRate/2)
	orDefault(&c.LongWindow, time.Hour)
	orDefault(&c.ShortWindow, 5*time.Minute)
	orDefault(&c.MinRequests, 100)
	orDefault(&c.MinOpen, 5*time.Minute)
	orDefault(&c.HealthyFor, 10*time.Minute)
	orDefault(&c.Backoff, 2)
	orDefault(&c.MaxBackoff, 8)
	orDefault(&c.BackoffReset, time.Hour)
	orDefault(&c.MaxTogglesPerHour, 4)
	orDefault(&c.MaxAge, 2*time.Minute)
}

// Validate reports every field of c (with defaults applied) that is out of range, joined; each
// problem wraps [ErrValveConfig].
func (c ValveConfig) Validate() error {
	c.setDefaults()
	var errs []error
	bad := func(format string, args ...any) {
		errs = append(errs, fmt.Errorf(format+": %w", append(args, ErrValveConfig)...))
	}
	finite := func(v float64) bool { return !math.IsNaN(v) && !math.IsInf(v, 0) }
	if c.Valve == "" {
		bad("valve: required")
	}
	if !(c.Objective > 0 && c.Objective < 1) {
		bad("objective %v: must be in (0, 1)", c.Objective)
	}
	if !(c.BurnRate > 0) || !finite(c.BurnRate) {
		bad("burnRate %v: must be a finite number > 0", c.BurnRate)
	} else if c.Objective > 0 && c.Objective < 1 && !(c.BurnRate*c.Objective < 1) {
		bad("burnRate %v: times the objective %v must be below 1, or no error ratio can exceed it", c.BurnRate, c.Objective)
	}
	if !(c.CloseBurnRate > 0 && c.CloseBurnRate <= c.BurnRate) {
		bad("closeBurnRate %v: must be in (0, burnRate]", c.CloseBurnRate)
	}
	if !(c.MinRequests >= 0) || !finite(c.MinRequests) {
		bad("minRequests %v: must be finite and ≥ 0", c.MinRequests)
	}
	if !(c.Backoff >= 1) || !finite(c.Backoff) {
		bad("backoff %v: must be a finite number ≥ 1", c.Backoff)
	}
	if !(c.MaxBackoff >= 1 && c.MaxBackoff <= 64) {
		bad("maxBackoff %v: must be in [1, 64]", c.MaxBackoff)
	}
	if c.MaxTogglesPerHour < 2 {
		bad("maxTogglesPerHour %d: must be ≥ 2 (an open and a close)", c.MaxTogglesPerHour)
	}
	for _, d := range []struct {
		name string
		v    time.Duration
	}{{"longWindow", c.LongWindow}, {"shortWindow", c.ShortWindow}, {"minOpen", c.MinOpen}, {"healthyFor", c.HealthyFor},
		{"backoffReset", c.BackoffReset}, {"maxAge", c.MaxAge}} {
		if d.v <= 0 || d.v > maxValveDuration {
			bad("%s %v: must be in (0, %v]", d.name, d.v, maxValveDuration)
		}
	}
	if c.ShortWindow > 0 && c.ShortWindow >= c.LongWindow {
		bad("shortWindow %v: must be shorter than longWindow %v", c.ShortWindow, c.LongWindow)
	}
	return errors.Join(errs...)
}

// ValveWindow is the burn of one of the two windows after a call: the sums of the per-tick
// deltas counted in (Time − Window, Time].
type ValveWindow struct {
	Window   time.Duration `json:"window"`
	Requests Float         `json:"requests"`
	Errors   Float         `json:"errors"`
	// Ratio is Errors/Requests; 0 when the window has neither requests nor errors (nothing
	// failed), +Inf when it has errors without requests.
	Ratio Float `json:"ratio"`
	// Burn is Ratio/Objective, the rate at which the error budget burns.
	Burn Float `json:"burn"`
}

// ValveDecision is the evidence of one call of a [Valve], recorded as an event by the caller: the
// call's whole input (so that [ReplayValve] can run it again), the readings and their deltas, the
// burn over both windows with the thresholds, the state before and after, the action, its cause
// and the clocks of the hysteresis. It encodes to JSON (non-finite numbers as the strings "NaN",
// "+Inf", "-Inf") and back without loss.
type ValveDecision struct {
	DecisionID   string    `json:"decisionId"`
	Call         Call      `json:"call"`
	Time         time.Time `json:"time"` // the call's time, by the caller's clock
	Valve        string    `json:"valve"`
	Segment      string    `json:"segment,omitempty"`
	ConfigDigest string    `json:"configDigest"`
	// By and Reason: who and why, for a manual call; on an observe, the owner and reason of the
	// manual hold in force before the call (or that expired on it).
	By     string `json:"by,omitempty"`
	Reason string `json:"reason,omitempty"`

	// The readings of an observe as received, and why they could not be used ("" if they could).
	Requests CounterEvidence `json:"requests,omitzero"`
	Errors   CounterEvidence `json:"errors,omitzero"`
	Blind    string          `json:"blind,omitempty"`
	// Baseline: the first usable readings, which only set the counters' baseline (no delta).
	Baseline      bool  `json:"baseline,omitempty"`
	RequestsReset bool  `json:"requestsReset,omitempty"` // the counter dropped: counted from its new value
	ErrorsReset   bool  `json:"errorsReset,omitempty"`
	DeltaRequests Float `json:"deltaRequests"`
	DeltaErrors   Float `json:"deltaErrors"`

	// The thresholds the windows were judged against.
	Objective     Float       `json:"objective"`
	BurnRate      Float       `json:"burnRate"`
	CloseBurnRate Float       `json:"closeBurnRate"`
	MinRequests   Float       `json:"minRequests"`
	Long          ValveWindow `json:"long"`
	Short         ValveWindow `json:"short"`

	OpenBefore bool   `json:"openBefore"`
	OpenAfter  bool   `json:"openAfter"`
	Action     Action `json:"action"` // ActionNone, ActionOpenValve or ActionCloseValve
	Cause      Cause  `json:"cause"`
	// Page: the toggle cap has just begun holding the valve open; tell a person. It is set once
	// per open period; Cause is CauseToggleCap on every tick the cap holds the valve.
	Page bool `json:"page,omitempty"`
	// TogglesLastHour counts the opens and closes in (Time − 1h, Time], this call's included.
	TogglesLastHour int `json:"togglesLastHour"`
	// Manual: a person's hold is in force after the call, until Expires.
	Manual bool `json:"manual,omitempty"`
	// Expires is the manual hold's expiry: the one asked for by an openManual, the one in force,
	// or the one that ended on this call.
	Expires time.Time `json:"expires,omitzero"`
	// HealthySince is the time of the first tick of the current run of healthy ticks (zero when
	// the last tick was not healthy).
	HealthySince time.Time `json:"healthySince,omitzero"`
	OpenedAt     time.Time `json:"openedAt,omitzero"` // when the open valve opened (zero when closed)
	ClosedAt     time.Time `json:"closedAt,omitzero"` // when it last closed
	// Backoff is the backoff level after the call: MinOpen and HealthyFor are multiplied by
	// min(Backoff^level, MaxBackoff), giving the two durations in force.
	Backoff    int           `json:"backoff"`
	MinOpen    time.Duration `json:"minOpen"`
	HealthyFor time.Duration `json:"healthyFor"`
}

// Valve is the controller of one safety valve. Without a control arm to compare with, it judges
// the guarded error ratio by its multi-window burn rate (errorRatio/Objective), and it is a
// deterministic state machine: its only clock is the time passed to each call, so replaying the
// recorded calls through a fresh Valve reproduces its decisions exactly ([ReplayValve]). It is
// not safe for concurrent use.
//
// Windows. Observe takes cumulative counter readings and differences them itself (a counter that
// went down was reset: the delta is its new value, as [source.Delta] documents). Each tick's deltas are
// kept with the tick's time in a bounded ring; a window of length W is the sum of the deltas of
// the ticks in (now − W, now]. A delta that spans a gap (blind ticks in between) counts at the
// tick that ends the gap. Until the valve has seen LongWindow of ticks, the long window holds what
// it has seen.
//
// Blind ticks. Readings that are not ok, NaN, infinite, negative, beyond 2^53, without a sample
// time, newer than the call, older than MaxAge or older than the last reading used make the tick
// blind. A blind tick never opens or closes the valve (no data is not evidence of burn, nor of
// health) and ends the current run of healthy ticks; its decision says why (Cause CauseBlind).
// The first usable tick only sets the baseline (CauseBaseline).
//
// Opening. A closed valve opens automatically when a usable tick burns above BurnRate over both
// windows and the short window holds at least MinRequests requests: a short spike alone does not
// open it, nor does an old burn the short window no longer sees.
//
// Closing. A tick is healthy when it is usable (not a baseline) and the short window burns below
// CloseBurnRate; a window without requests or errors burns 0, so a feature the valve starved of
// traffic can close it again. An automatically open valve closes when the ticks have been healthy
// in a row for HealthyFor and it has been open for MinOpen, both multiplied by the backoff.
//
// Backoff. When the valve re-opens automatically within BackoffReset of its last close (by any
// cause), the backoff level rises by one, up to the level whose multiplier reaches MaxBackoff;
// when it re-opens later, or has stayed closed for BackoffReset, the level drops to 0.
//
// Toggle cap. Opens and closes, manual ones included, are counted over the last hour. An
// automatic close must leave room for the re-open that may follow it (togglesLastHour + 2 ≤
// MaxTogglesPerHour); otherwise the valve stays open, the decision's cause is CauseToggleCap and
// its Page flag is set on the first tick of the hold. An automatic open is never refused: opening
// is the safe side, and by the close rule it fits within the cap unless people toggled the valve
// by hand. So a valve driven by Observe alone never toggles more than MaxTogglesPerHour times in
// any hour.
//
// Manual hold. A person may open the valve with an expiry and a reason ([Valve.OpenManual]).
// Until the expiry the automatic logic never closes it. On the first usable tick at or after the
// expiry the hold ends: if the burn is still above BurnRate over both windows (with MinRequests),
// the valve stays open as if it had opened automatically (CauseBurn) and closes by the automatic
// rules; otherwise it closes (CauseExpired). A blind tick past the expiry leaves the hold in force
// until a usable tick can judge the burn. The expiry's close is the person's scheduled action and
// is not refused by the toggle cap. A person may close the valve at any time
// ([Valve.CloseManual]); if the error budget still burns, the next ticks may open it again.
type Valve struct {
	cfg    ValveConfig
	digest string
	last   time.Time // time of the last call

	hasBase bool
	base    [2]float64   // the last usable readings: requests, errors
	baseAt  [2]time.Time // their sample times
	ring    window

	open         bool
	openedAt     time.Time
	closedAt     time.Time
	healthySince time.Time
	level        int
	capHeld      bool
	toggles      []time.Time

	manual     bool
	by, reason string
	expires    time.Time
}

// NewValve returns the controller of a closed valve, created at now. It returns an error wrapping
// [ErrValveConfig] if cfg is invalid, or [ErrBadInput] if now is the zero time or beyond the year
// 9999.
func NewValve(cfg ValveConfig, now time.Time) (*Valve, error) {
	if now.IsZero() || !recordable(now) {
		return nil, fmt.Errorf("new valve: time %v: zero or beyond year 9999: %w", now, ErrBadInput)
	}
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("new valve: %w", err)
	}
	cfg.setDefaults()
	b, err := json.Marshal(cfg)
	if err != nil {
		return nil, fmt.Errorf("new valve: digest configuration: %w", err)
	}
	sum := sha256.Sum256(b)
	return &Valve{cfg: cfg, digest: hex.EncodeToString(sum[:16]), last: normTime(now)}, nil
}

// Open reports whether the valve is open.
func (v *Valve) Open() bool { return v.open }

// Config returns the configuration, with defaults applied.
func (v *Valve) Config() ValveConfig { return v.cfg }

// ConfigDigest returns the digest of the configuration, as recorded in the decisions.
func (v *Valve) ConfigDigest() string { return v.digest }

// Observe runs one tick: requests and errs are the cumulative counters of the guarded requests
// and of their errors, read by the caller's source for now. It returns the decision; when its
// Action is ActionOpenValve or ActionCloseValve the caller turns the valve's flag on or off.
//
// It returns an error wrapping [ErrBadInput] if id is empty, now is the zero time, or a time
// (now or a reading's) cannot be recorded, or [ErrCallOrder] if now is earlier than the last
// call. Unusable readings are not errors: they make the tick blind. On error nothing changes.
func (v *Valve) Observe(id string, now time.Time, requests, errs source.Reading) (ValveDecision, error) {
	if err := v.checkCall(id, now); err != nil {
		return ValveDecision{}, fmt.Errorf("observe: %w", err)
	}
	for _, r := range []*source.Reading{&requests, &errs} {
		if !recordable(r.At) || !recordable(r.Requested) {
			return ValveDecision{}, fmt.Errorf("observe %s: a reading's time cannot be recorded: %w", id, ErrBadInput)
		}
	}
	now = normTime(now)
	d := v.header(CallObserve, id, now)
	d.Requests.record(&requests)
	d.Errors.record(&errs)
	if p := v.counterProblem(&d.Requests, now, 0); p != "" {
		d.Blind = "requests: " + p
	} else if p := v.counterProblem(&d.Errors, now, 1); p != "" {
		d.Blind = "errors: " + p
	}
	usable := d.Blind == ""
	if usable {
		cur := [2]float64{float64(d.Requests.Value), float64(d.Errors.Value)}
		if !v.hasBase {
			d.Baseline = true
		} else {
			dr, rr := counterDelta(v.base[0], cur[0])
			de, er := counterDelta(v.base[1], cur[1])
			d.DeltaRequests, d.DeltaErrors = Float(dr), Float(de)
			d.RequestsReset, d.ErrorsReset = rr, er
			if dr > 0 || de > 0 {
				v.ring.push(windowEntry{at: now, req: dr, err: de}, maxValveEntries)
			}
		}
		v.base, v.baseAt, v.hasBase = cur, [2]time.Time{d.Requests.At, d.Errors.At}, true
	}
	v.fillWindows(&d, now)
	judged := usable && !d.Baseline
	healthy := judged && float64(d.Short.Burn) < v.cfg.CloseBurnRate
	burning := judged && float64(d.Long.Burn) > v.cfg.BurnRate && float64(d.Short.Burn) > v.cfg.BurnRate
	if healthy {
		if v.healthySince.IsZero() {
			v.healthySince = now
		}
	} else {
		v.healthySince = time.Time{}
	}
	if v.manual {
		d.By, d.Reason, d.Expires = v.by, v.reason, v.expires
	}
	if !v.open && !v.closedAt.IsZero() && now.Sub(v.closedAt) >= v.cfg.BackoffReset {
		v.level = 0
	}
	v.pruneToggles(now)
	minOpen, healthyFor := v.durations()

	switch {
	case !v.open && !usable:
		d.Cause = CauseBlind
	case !v.open && d.Baseline:
		d.Cause = CauseBaseline
	case !v.open && burning && float64(d.Short.Requests) >= v.cfg.MinRequests:
		if !v.closedAt.IsZero() && now.Sub(v.closedAt) < v.cfg.BackoffReset {
			if v.cfg.Backoff > 1 && math.Pow(v.cfg.Backoff, float64(v.level)) < v.cfg.MaxBackoff {
				v.level++
			}
		} else {
			v.level = 0
		}
		v.setOpen(now)
		d.Action, d.Cause = ActionOpenValve, CauseBurn
	case !v.open && burning:
		d.Cause = CauseLowTraffic
	case !v.open:
		d.Cause = CauseHealthy
	case v.manual && now.Before(v.expires):
		d.Cause = CauseManual
	case v.manual && !usable:
		d.Cause = CauseBlind
	case v.manual:
		v.manual, v.by, v.reason, v.expires = false, "", "", time.Time{}
		if burning && float64(d.Short.Requests) >= v.cfg.MinRequests {
			d.Cause = CauseBurn
		} else {
			v.setClosed(now)
			d.Action, d.Cause = ActionCloseValve, CauseExpired
		}
	case !usable:
		d.Cause = CauseBlind
	case d.Baseline:
		d.Cause = CauseBaseline
	case !healthy:
		d.Cause = CauseBurn
	case now.Sub(v.healthySince) < healthyFor:
		d.Cause = CauseRecovering
	case now.Sub(v.openedAt) < minOpen:
		d.Cause = CauseMinOpen
	case len(v.toggles)+2 > v.cfg.MaxTogglesPerHour:
		d.Cause = CauseToggleCap
		d.Page = !v.capHeld
		v.capHeld = true
	default:
		v.setClosed(now)
		d.Action, d.Cause = ActionCloseValve, CauseHealthy
	}
	v.finish(&d, now)
	return d, nil
}

// OpenManual opens the valve on a person's word until expires: by names them, reason says why.
// Until the expiry the automatic logic does not close it (see [Valve]). On an open valve it
// replaces the hold (or makes an automatic open a manual one) without toggling.
//
// It returns an error wrapping [ErrBadInput] if id, by or reason is empty, now is the zero time,
// expires is not after now, or a time cannot be recorded; or [ErrCallOrder] if now is earlier
// than the last call. On error nothing changes.
func (v *Valve) OpenManual(id, by, reason string, now, expires time.Time) (ValveDecision, error) {
	if err := v.checkCall(id, now); err != nil {
		return ValveDecision{}, fmt.Errorf("open valve manually: %w", err)
	}
	if by == "" || reason == "" {
		return ValveDecision{}, fmt.Errorf("open valve manually %s: by and reason: required: %w", id, ErrBadInput)
	}
	if !recordable(expires) || !normTime(expires).After(normTime(now)) {
		return ValveDecision{}, fmt.Errorf("open valve manually %s: expiry %v: must be after the call's time and recordable: %w", id, expires, ErrBadInput)
	}
	now = normTime(now)
	d := v.header(CallOpenManual, id, now)
	v.fillWindows(&d, now)
	v.pruneToggles(now)
	if !v.open {
		v.setOpen(now)
		d.Action = ActionOpenValve
	}
	v.manual, v.by, v.reason, v.expires = true, by, reason, normTime(expires)
	d.By, d.Reason, d.Expires = by, reason, v.expires
	d.Cause = CauseManual
	v.finish(&d, now)
	return d, nil
}

// CloseManual closes the valve on a person's word, ending any manual hold: by names them, reason
// says why. Closing a closed valve is recorded and changes nothing. If the error budget still
// burns, the next ticks may open the valve again.
//
// It returns an error wrapping [ErrBadInput] if id, by or reason is empty, now is the zero time
// or cannot be recorded, or [ErrCallOrder] if now is earlier than the last call. On error nothing
// changes.
func (v *Valve) CloseManual(id, by, reason string, now time.Time) (ValveDecision, error) {
	if err := v.checkCall(id, now); err != nil {
		return ValveDecision{}, fmt.Errorf("close valve manually: %w", err)
	}
	if by == "" || reason == "" {
		return ValveDecision{}, fmt.Errorf("close valve manually %s: by and reason: required: %w", id, ErrBadInput)
	}
	now = normTime(now)
	d := v.header(CallCloseManual, id, now)
	v.fillWindows(&d, now)
	v.pruneToggles(now)
	if v.manual {
		d.Expires = v.expires
	}
	v.manual, v.by, v.reason, v.expires = false, "", "", time.Time{}
	if v.open {
		v.setClosed(now)
		d.Action = ActionCloseValve
	}
	d.By, d.Reason, d.Cause = by, reason, CauseManual
	v.finish(&d, now)
	return d, nil
}

func (v *Valve) checkCall(id string, now time.Time) error {
	if id == "" {
		return fmt.Errorf("decision id: required: %w", ErrBadInput)
	}
	if now.IsZero() {
		return fmt.Errorf("%s: time: zero: %w", id, ErrBadInput)
	}
	if !recordable(now) {
		return fmt.Errorf("%s: time: year %d cannot be recorded: %w", id, now.Year(), ErrBadInput)
	}
	if n := normTime(now); n.Before(v.last) {
		return fmt.Errorf("%s: time %s is before the last call %s: %w", id, n.Format(time.RFC3339Nano), v.last.Format(time.RFC3339Nano), ErrCallOrder)
	}
	return nil
}

func (v *Valve) header(call Call, id string, now time.Time) ValveDecision {
	c := &v.cfg
	return ValveDecision{
		DecisionID:    id,
		Call:          call,
		Time:          now,
		Valve:         c.Valve,
		Segment:       c.Segment,
		ConfigDigest:  v.digest,
		Objective:     Float(c.Objective),
		BurnRate:      Float(c.BurnRate),
		CloseBurnRate: Float(c.CloseBurnRate),
		MinRequests:   Float(c.MinRequests),
		OpenBefore:    v.open,
		Action:        ActionNone,
	}
}

// counterProblem says why a reading cannot be used, or "" if it can; i is 0 for requests, 1 for
// errors.
func (v *Valve) counterProblem(c *CounterEvidence, now time.Time, i int) string {
	return readingProblem(c, now, v.cfg.MaxAge, v.baseAt[i], v.hasBase, "call")
}

// fillWindows forgets the deltas older than the long window and records both windows in d.
func (v *Valve) fillWindows(d *ValveDecision, now time.Time) {
	v.ring.drop(now.Add(-v.cfg.LongWindow))
	fill := func(w *ValveWindow, length time.Duration) {
		req, errs := v.ring.sums(now.Add(-length))
		ratio := errs / req
		switch {
		case req == 0 && errs == 0:
			ratio = 0
		case req == 0:
			ratio = math.Inf(1)
		}
		*w = ValveWindow{Window: length, Requests: Float(req), Errors: Float(errs), Ratio: Float(ratio),
			Burn: Float(ratio / v.cfg.Objective)}
	}
	fill(&d.Long, v.cfg.LongWindow)
	fill(&d.Short, v.cfg.ShortWindow)
}

// durations returns MinOpen and HealthyFor multiplied by the backoff in force.
func (v *Valve) durations() (minOpen, healthyFor time.Duration) {
	m := math.Min(math.Pow(v.cfg.Backoff, float64(v.level)), v.cfg.MaxBackoff)
	return time.Duration(float64(v.cfg.MinOpen) * m), time.Duration(float64(v.cfg.HealthyFor) * m)
}

// pruneToggles forgets the toggles at or before now − 1h.
func (v *Valve) pruneToggles(now time.Time) {
	cutoff := now.Add(-toggleWindow)
	i := 0
	for i < len(v.toggles) && !v.toggles[i].After(cutoff) {
		i++
	}
	if i > 0 {
		n := copy(v.toggles, v.toggles[i:])
		v.toggles = v.toggles[:n]
	}
}

func (v *Valve) setOpen(now time.Time) {
	v.open, v.openedAt, v.capHeld = true, now, false
	v.toggles = append(v.toggles, now)
}

func (v *Valve) setClosed(now time.Time) {
	v.open, v.openedAt, v.closedAt, v.capHeld = false, time.Time{}, now, false
	v.toggles = append(v.toggles, now)
}

// finish records the state after the call in d and commits the call's time.
func (v *Valve) finish(d *ValveDecision, now time.Time) {
	d.OpenAfter = v.open
	d.TogglesLastHour = len(v.toggles)
	d.Manual = v.manual
	d.HealthySince, d.OpenedAt, d.ClosedAt = v.healthySince, v.openedAt, v.closedAt
	d.Backoff = v.level
	d.MinOpen, d.HealthyFor = v.durations()
	v.last = now
}

// ReplayValve runs recorded calls, in order, through a fresh Valve built from cfg and start, and
// returns the decisions it produces; for the records of one valve they equal them, byte for byte
// once encoded. It returns the decisions produced so far and an error wrapping [ErrEvidence] if a
// record cannot be replayed (an unknown call, or a configuration digest that is not cfg's), or
// the Valve's own error for the call.
func ReplayValve(cfg ValveConfig, start time.Time, records []ValveDecision) ([]ValveDecision, error) {
	v, err := NewValve(cfg, start)
	if err != nil {
		return nil, fmt.Errorf("replay valve: %w", err)
	}
	out := make([]ValveDecision, 0, len(records))
	for i := range records {
		rec := &records[i]
		if rec.ConfigDigest != v.digest {
			return out, fmt.Errorf("replay valve record %d (%.64s): recorded under configuration %.64s, replaying %s: %w",
				i, rec.DecisionID, rec.ConfigDigest, v.digest, ErrEvidence)
		}
		var d ValveDecision
		switch rec.Call {
		case CallObserve:
			d, err = v.Observe(rec.DecisionID, rec.Time, rec.Requests.Reading(), rec.Errors.Reading())
		case CallOpenManual:
			d, err = v.OpenManual(rec.DecisionID, rec.By, rec.Reason, rec.Time, rec.Expires)
		case CallCloseManual:
			d, err = v.CloseManual(rec.DecisionID, rec.By, rec.Reason, rec.Time)
		default:
			return out, fmt.Errorf("replay valve record %d (%.64s): call %.64q: %w", i, rec.DecisionID, rec.Call, ErrEvidence)
		}
		if err != nil {
			return out, fmt.Errorf("replay valve record %d: %w", i, err)
		}
		out = append(out, d)
	}
	return out, nil
}
