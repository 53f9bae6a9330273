package guard

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"strconv"
	"sync"
	"time"

	"github.com/google/uuid"

	"github.com/interlock-dev/interlock/events"
	"github.com/interlock-dev/interlock/guard/source"
	"github.com/interlock-dev/interlock/internal/command"
	"github.com/interlock-dev/interlock/projections"
)

// Actor is the actor of every command the guard issues.
const Actor = "guard"

// Commands is the write path, as the guard uses it: *command.Service, wired in by the app. The
// guard sends the same command values a person does, as actor [Actor].
type Commands interface {
	Handle(ctx context.Context, c command.Command) (command.Result, error)
}

// order is one command the guard sends, with the name its logs, metrics and live status give it.
type order struct {
	kind string // one of the kinds below
	cmd  command.Command
}

// The kinds of order the guard sends.
const (
	kindRecord     = "record"     // command.RecordDecision
	kindAdvance    = "advance"    // command.AdvanceRollout
	kindStepBack   = "stepBack"   // command.StepBackRollout
	kindAbort      = "abort"      // command.AbortRollout: the flag serves the control
	kindPause      = "pause"      // command.PauseRollout: freeze the rollout where it is
	kindKill       = "kill"       // command.KillFlag
	kindOpenValve  = "openValve"  // command.OpenValve
	kindCloseValve = "closeValve" // command.CloseValve
)

// meta is what every command of the guard carries.
func meta(reason, causation, correlation string) command.Meta {
	return command.Meta{Actor: Actor, Reason: reason, CausationID: causation, CorrelationID: correlation}
}

// Catalog is where the guard finds the rollouts to judge: the live projection of every flag.
type Catalog interface {
	Environments() []string
	Flags(env string) []projections.Flag
}

// Leader tells whether this replica may act (the lease of internal/lease is one). The guard
// judges and acts only while it holds the lease; when it loses it, it forgets its rollouts, and
// judges them afresh when it holds it again.
type Leader interface {
	Held() (held bool, epoch uint64)
}

// CounterSource reads a counter's value at a time, with the contract package source documents:
// the reading's fields are always filled in, and only its Status says whether it may be counted
// ([source.PrometheusSource] and [source.ScrapeSource] are two).
type CounterSource interface {
	Counter(ctx context.Context, q string, at time.Time) (source.Reading, error)
}

var (
	_ CounterSource = (*source.PrometheusSource)(nil)
	_ CounterSource = (*source.ScrapeSource)(nil)
)

// SourceFactory builds the counter source of a plan's metric source.
type SourceFactory func(src events.MetricSource) (CounterSource, error)

// RunnerOptions configures a [Runner]. Zero values take the defaults listed.
type RunnerOptions struct {
	Catalog  Catalog  // required
	Commands Commands // required
	// Lease, when set, lets only its holder act; nil acts always (a single replica).
	Lease Leader
	// Sources builds the counter sources; by default a source.ScrapeSource or a source.PrometheusSource on
	// Now, with the plan's interval and lag.
	Sources SourceFactory
	// AllowSource, when set, vets every source URL before the guard reads it (see
	// [source.AllowSources]); a refused source reads as an error, so its rollouts are BLIND.
	AllowSource func(rawURL string) error
	// Resolution is how often Run looks for rollouts that are due; 1s.
	Resolution time.Duration
	// Now reads the clock; time.Now by default.
	Now func() time.Time
	// NewTicker starts Run's ticker; time.NewTicker by default.
	NewTicker func(d time.Duration) (<-chan time.Time, func())
	// OnEvidence, when set, receives the evidence of every call the guard makes, in order,
	// per rollout: the recorded inputs that replay its decisions.
	OnEvidence func(env, flag string, ev Evidence)
	// Board, when set, shares the live view of every judged rollout with the other replicas,
	// and answers Live for the rollouts this replica does not judge.
	Board  *StatusBoard
	Logger *slog.Logger
	// Observer, when set, is told of every pass, decision and action, for metrics.
	Observer Observer
}

// Observer is told of a [Runner]'s work as it happens, for metrics. Its methods are called on
// the runner's goroutine and must return quickly.
type Observer interface {
	// Ticked is called after every pass in which this replica acted, with how long it took.
	Ticked(took time.Duration)
	// Decided is called for every decision recorded as an event (of a rollout, or a valve's
	// open or close), with its action: "none" for a change of state alone, "complete", or an
	// [Action].
	Decided(action string)
	// Acted is called after every command sent to carry out a decision, with the time since
	// the decision was made (retries included) and the command's error. kind is one of "advance",
	// "stepBack", "abort", "pause", "kill", "openValve" and "closeValve".
	Acted(kind string, sinceDecision time.Duration, err error)
}

// Census counts the rollouts a replica judges, as of its last pass.
type Census struct {
	// States counts them by the guard's state.
	States map[State]int
	// BlindOverGrace counts the BLIND ones that have been blind longer than their plan's grace.
	BlindOverGrace int
}

// Runner is the guard's loop: on every tick of every running rollout it reads the metrics,
// decides with the rollout's [Machine], records every change of state as an event carrying its
// evidence, and acts (advance, kill, step back, open a valve, freeze) through [Commands] with
// the decision event as causation. It is safe for concurrent use.
type Runner struct {
	opts RunnerOptions
	log  *slog.Logger

	mu       sync.Mutex
	rollouts map[string]*tracked // by env/flag
	valves   map[string]*trackedValve
	sources  map[string]CounterSource
	held     bool

	// live is the status of every rollout this replica judges, as of its last pass, so that
	// Live answers without waiting for a pass in progress.
	liveMu sync.RWMutex
	live   map[string]Status
	census Census
}

// tracked is the guard's state for one rollout.
type tracked struct {
	env, key     string
	rollout      string
	stage        int
	stageVersion uint64
	plan         events.RolloutPlan
	m            *Machine
	cfg          MachineConfig
	queries      []metricQueries
	src          CounterSource
	srcKey       string
	srcErr       error
	next         time.Time
	pending      *order
	last         Evidence
	lastAt       time.Time
	decision     string    // id of the last decision event
	decidedAt    time.Time // when the decision the pending or next action carries out was made
	latched      bool      // the rollout's guard is tripped, as the projection says
	version      uint64    // the flag's version as this pass found it

	before Machine // m as it was before the tick's decision: what its record replays from
}

// metricQueries are the four queries of one metric.
type metricQueries struct {
	reqT, errT, reqC, errC string
	err                    error
}

// NewRunner checks opts and returns a runner.
func NewRunner(opts RunnerOptions) (*Runner, error) {
	var errs []error
	if opts.Catalog == nil {
		errs = append(errs, errors.New("catalog: required"))
	}
	if opts.Commands == nil {
		errs = append(errs, errors.New("commands: required"))
	}
	if opts.Resolution < 0 {
		errs = append(errs, errors.New("resolution: must not be negative"))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("guard runner: %w", err)
	}
	if opts.Resolution == 0 {
		opts.Resolution = time.Second
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.NewTicker == nil {
		opts.NewTicker = func(d time.Duration) (<-chan time.Time, func()) {
			t := time.NewTicker(d)
			return t.C, t.Stop
		}
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	r := &Runner{
		opts:     opts,
		log:      opts.Logger.With("component", "guard"),
		rollouts: map[string]*tracked{},
		valves:   map[string]*trackedValve{},
		sources:  map[string]CounterSource{},
	}
	if r.opts.Sources == nil {
		r.opts.Sources = r.defaultSource
	}
	return r, nil
}

// defaultSource builds a source.ScrapeSource or source.PrometheusSource for src on the runner's clock.
func (r *Runner) defaultSource(src events.MetricSource) (CounterSource, error) {
	switch src.Type {
	case events.SourceScrape:
		// One endpoint often serves every rollout of a service: four queries per rollout.
		return source.NewScrapeSource(source.ScrapeOptions{URL: src.URL, Interval: src.Interval.Std(0), Lag: src.Lag.Std(0),
			MaxQueries: 1 << 16, Now: r.opts.Now, Logger: r.opts.Logger})
	case events.SourcePrometheus:
		return source.NewPrometheusSource(source.PrometheusOptions{URL: src.URL, Lag: src.Lag.Std(0)})
	}
	return nil, fmt.Errorf("%w: source type %q", source.ErrInvalidSource, src.Type)
}

// Run ticks every Resolution until ctx ends, and returns nil then.
func (r *Runner) Run(ctx context.Context) error {
	tick, stop := r.opts.NewTicker(r.opts.Resolution)
	defer stop()
	for {
		if err := r.Tick(ctx); err != nil && ctx.Err() == nil {
			r.log.Warn("guard tick", "error", err)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-tick:
		}
	}
}

// Tick makes one pass: it judges every running rollout that is due, closes the valves whose
// expiry passed, and retries the actions that failed. It returns the errors of the pass joined;
// one rollout's failure does not stop the others.
func (r *Runner) Tick(ctx context.Context) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.opts.Lease != nil {
		if held, _ := r.opts.Lease.Held(); !held {
			if r.held {
				r.log.Info("guard lease lost: another replica acts")
				clear(r.rollouts)
				r.setLive(nil)
				clear(r.valves)
			}
			r.held = false
			return nil
		}
		if !r.held {
			r.log.Info("guard lease held: this replica acts")
		}
	}
	r.held = true
	now := r.opts.Now()
	if r.opts.Observer != nil {
		defer func(start time.Time) { r.opts.Observer.Ticked(r.opts.Now().Sub(start)) }(now)
	}
	var errs []error
	seen := map[string]bool{}
	var due []*tracked
	var dueValves []*trackedValve
	for _, env := range r.opts.Catalog.Environments() {
		for _, f := range r.opts.Catalog.Flags(env) {
			switch v := f.Valve; {
			case v == nil || f.Archived:
			case v.Policy != nil:
				// The valve's controller watches it, its expiry included.
				t, err := r.trackValve(&f, now)
				if err != nil {
					errs = append(errs, err)
				} else if r.due(now, t.next) {
					t.next = now.Add(t.interval)
					dueValves = append(dueValves, t)
				}
				seen["valve "+env+"/"+f.Key] = true
			case v.Open && !v.Expires.IsZero() && !now.Before(v.Expires):
				errs = append(errs, r.expireValve(ctx, f))
			}
			if !f.Rollout.Active() || f.Archived {
				continue
			}
			id := env + "/" + f.Key
			seen[id] = true
			t, err := r.track(id, &f, now)
			if err != nil {
				errs = append(errs, err)
				continue
			}
			// A command that failed is retried whatever the rollout's state: a trip's action
			// latches the rollout, and must still be carried out.
			judged := f.Rollout.Status == projections.RolloutRunning && !f.Rollout.Guard.Tripped && f.Enabled
			if !judged && t.pending == nil || !r.due(now, t.next) {
				continue
			}
			t.next = now.Add(t.plan.Tick.Std(15 * time.Second))
			due = append(due, t)
		}
	}
	for id, t := range r.rollouts {
		if !seen[id] {
			t.unwatch()
			delete(r.rollouts, id)
		}
	}
	for id := range r.valves {
		if !seen["valve "+id] {
			delete(r.valves, id)
		}
	}
	srcs := make([]CounterSource, 0, len(due)+len(dueValves))
	for _, t := range due {
		srcs = append(srcs, t.src)
	}
	for _, t := range dueValves {
		srcs = append(srcs, t.src)
	}
	r.scrape(ctx, srcs)
	// Judge no earlier than the scrapes just taken, so that this tick reads them.
	if len(srcs) > 0 {
		if after := r.opts.Now(); after.After(now) {
			now = after
		}
	}
	for _, t := range due {
		if err := r.judge(ctx, t, now); err != nil {
			errs = append(errs, fmt.Errorf("%s/%s: %w", t.env, t.key, err))
		}
	}
	if r.opts.Board != nil {
		for _, t := range due {
			r.opts.Board.publish(t.env, t.key, t.status(true))
		}
	}
	for _, t := range dueValves {
		if err := r.judgeValve(ctx, t, now); err != nil {
			errs = append(errs, fmt.Errorf("valve %s/%s: %w", t.env, t.key, err))
		}
	}
	live := make(map[string]Status, len(r.rollouts))
	for id, t := range r.rollouts {
		live[id] = t.status(true)
	}
	r.setLive(live)
	return errors.Join(errs...)
}

func (r *Runner) setLive(live map[string]Status) {
	c := Census{States: make(map[State]int, len(live))}
	for id, st := range live {
		c.States[st.State]++
		if st.State != StateBlind || st.Latest == nil || st.Latest.BlindSince.IsZero() {
			continue
		}
		cfg := r.rollouts[id].cfg
		if cfg.setDefaults(); st.Latest.Time.Sub(st.Latest.BlindSince) >= cfg.BlindGrace {
			c.BlindOverGrace++
		}
	}
	r.liveMu.Lock()
	r.live, r.census = live, c
	r.liveMu.Unlock()
}

// Census counts the rollouts this replica judges by state, as of its last pass: none while
// another replica holds the lease.
func (r *Runner) Census() Census {
	r.liveMu.RLock()
	defer r.liveMu.RUnlock()
	c := Census{States: make(map[State]int, len(r.census.States)), BlindOverGrace: r.census.BlindOverGrace}
	for s, n := range r.census.States {
		c.States[s] = n
	}
	return c
}

// due reports whether what is next due at next is due in the pass at now. Run looks every
// Resolution, each time a varying moment late: what falls due a moment after one look would
// wait a whole Resolution more, and a tick as long as Resolution would run every other time.
// So a pass up to half a Resolution early counts.
func (r *Runner) due(now, next time.Time) bool {
	return !now.Add(r.opts.Resolution / 2).Before(next)
}

// scrape reads each scrape source that a due rollout or valve uses once.
func (r *Runner) scrape(ctx context.Context, srcs []CounterSource) {
	done := map[CounterSource]bool{}
	for _, src := range srcs {
		if s, ok := src.(*source.ScrapeSource); ok && !done[s] {
			done[s] = true
			_ = s.Scrape(ctx) // a failure is recorded: the readings say so
		}
	}
}

// track returns the guard's state for the flag's rollout, bringing it in line with the
// rollout's stage: a new rollout gets a new machine; a new stage, a re-arm or a change of the
// flag's configuration is passed to the machine.
func (r *Runner) track(id string, f *projections.Flag, now time.Time) (*tracked, error) {
	ro := f.Rollout
	t := r.rollouts[id]
	if t != nil && t.rollout == ro.ID && t.stageVersion == ro.StageVersion {
		t.latched, t.version = ro.Guard.Tripped, f.Version
		return t, nil
	}
	cfg := StageConfig(f.Key, ro)
	start := ro.StageStartedAt
	if start.IsZero() || start.After(now) {
		start = now
	}
	if t == nil || t.rollout != ro.ID {
		m, err := NewMachine(cfg, start)
		if err != nil {
			return nil, fmt.Errorf("guard of rollout %s: %w", ro.ID, err)
		}
		t = &tracked{env: f.Environment, key: f.Key, rollout: ro.ID, m: m, next: now}
		r.rollouts[id] = t
	} else {
		decision := uuid.NewString()
		var ev Evidence
		var err error
		switch {
		case t.m.State() == StateTripped && !ro.Guard.Tripped:
			by := ro.Guard.RearmedBy
			if by == "" {
				by = f.UpdatedBy
			}
			if ev, err = t.m.Rearm(decision, by, now); err == nil && ro.Stage != t.stage {
				r.evidence(t, ev)
				ev, err = t.m.ChangeStage(uuid.NewString(), cfg, now)
			}
		case ro.Stage != t.stage && !t.m.Pending():
			ev, err = t.m.ChangeStage(decision, cfg, now)
		default:
			ev, err = t.m.Restart(decision, cfg, now)
		}
		if err != nil {
			return nil, fmt.Errorf("guard of rollout %s: %w", ro.ID, err)
		}
		r.evidence(t, ev)
		t.next, t.pending = now, nil
	}
	t.stage, t.stageVersion, t.plan, t.cfg = ro.Stage, ro.StageVersion, ro.Plan, cfg
	t.latched, t.version = ro.Guard.Tripped, f.Version
	t.queries = queriesFor(f.Key, ro.Plan)
	key := sourceKey(ro.Plan.Source)
	if t.srcKey != key {
		t.srcKey = key
		t.src, t.srcErr = r.source(key, ro.Plan.Source)
	}
	return t, nil
}

func sourceKey(s events.MetricSource) string {
	return s.Type + " " + s.URL + " " + time.Duration(s.Interval).String() + " " + time.Duration(s.Lag).String()
}

func (r *Runner) source(key string, s events.MetricSource) (CounterSource, error) {
	if src, ok := r.sources[key]; ok {
		return src, nil
	}
	if r.opts.AllowSource != nil {
		if err := r.opts.AllowSource(s.URL); err != nil {
			return nil, err
		}
	}
	src, err := r.opts.Sources(s)
	if err != nil {
		return nil, err
	}
	r.sources[key] = src
	return src, nil
}

// StageConfig is the guard's configuration for the rollout's current stage: what the runner
// builds its [Machine] from, and what a replay of its recorded evidence starts with.
func StageConfig(flag string, ro *projections.Rollout) MachineConfig {
	p := ro.Plan
	st := p.Stages[min(max(ro.Stage, 0), len(p.Stages)-1)]
	cfg := MachineConfig{
		Rollout: ro.ID, Stage: ro.Stage, Flag: flag, Variant: p.Treatment, Control: p.Control,
		Share: st.Percent / 100, Alpha: p.Alpha, R0: p.R0, RMax: p.RMax,
		MinHold: time.Duration(st.MinHold), MaxExtension: time.Duration(p.MaxExtension),
		BlindGrace: time.Duration(p.BlindGrace), OnBlind: Action(p.OnBlind),
		OnInconclusive: Action(p.OnInconclusive), OnTrip: Action(p.OnTrip),
		MaxAge:       max(2*time.Minute, 3*p.Tick.Std(15*time.Second)),
		NoLateStarts: p.NoLateStarts,
	}
	for _, m := range p.Metrics {
		cfg.Metrics = append(cfg.Metrics, MetricRule{Name: m.Name, Kind: MetricKind(m.Kind), Ceiling: m.Ceiling, Margin: m.Margin, Tau: m.Tau})
	}
	return cfg
}

// queriesFor renders the per-arm queries of every metric of the plan.
func queriesFor(flag string, p events.RolloutPlan) []metricQueries {
	flagLabel := p.Source.FlagLabel
	if flagLabel == "-" {
		flagLabel, flag = "", ""
	}
	qs := make([]metricQueries, len(p.Metrics))
	for i, m := range p.Metrics {
		render := func(base, variant string) string {
			if qs[i].err != nil {
				return ""
			}
			t := source.CounterTemplate{Base: base, VariantLabel: p.Source.VariantLabel, FlagLabel: flagLabel}
			var q string
			var err error
			if p.Source.Type == events.SourcePrometheus {
				q, err = t.Sum(flag, variant)
			} else {
				var sel source.Selector
				if sel, err = t.Selector(flag, variant); err == nil {
					q = sel.String()
				}
			}
			qs[i].err = err
			return q
		}
		first, second := m.Counters()
		qs[i].reqT, qs[i].errT = render(first, p.Treatment), render(second, p.Treatment)
		qs[i].reqC, qs[i].errC = render(first, p.Control), render(second, p.Control)
	}
	return qs
}

// read takes one tick's readings at now.
func (r *Runner) read(ctx context.Context, t *tracked, now time.Time) Tick {
	tick := Tick{Time: now, Metrics: make([]MetricReadings, len(t.queries))}
	var lag time.Duration
	if l, ok := t.src.(interface{ Lag() time.Duration }); ok {
		lag = l.Lag()
	}
	at := now.Add(-lag)
	counter := func(q string, qerr error) source.Reading {
		switch {
		case t.srcErr != nil:
			return source.Reading{Requested: at, Query: q, Status: source.ReadingError, Detail: "metric source: " + t.srcErr.Error()}
		case qerr != nil:
			return source.Reading{Requested: at, Query: q, Status: source.ReadingError, Detail: "query: " + qerr.Error()}
		}
		rd, _ := t.src.Counter(ctx, q, at) // a failed reading says why; it is never healthy
		return rd
	}
	for i, q := range t.queries {
		tick.Metrics[i] = MetricReadings{
			Name:      t.cfg.Metrics[i].Name,
			Treatment: ArmReadings{Requests: counter(q.reqT, q.err), Errors: counter(q.errT, q.err)},
			Control:   ArmReadings{Requests: counter(q.reqC, q.err), Errors: counter(q.errC, q.err)},
		}
	}
	return tick
}

// judge runs one tick of one rollout: retry a failed action, or read, decide, record and act.
func (r *Runner) judge(ctx context.Context, t *tracked, now time.Time) error {
	if t.pending != nil {
		o := *t.pending
		t.pending = nil
		if o.kind == kindRecord {
			return r.record(ctx, t, o)
		}
		return r.act(ctx, t, o)
	}
	tick := r.read(ctx, t, now)
	t.m.copyTo(&t.before) // copied every tick, encoded only when recorded
	ev, err := t.m.Decide(uuid.NewString(), tick)
	if err != nil {
		return err
	}
	r.evidence(t, ev)
	calls := []Evidence{ev}
	if ev.Action == ActionConfirm {
		// Re-query at once: a trip needs two readings in a row that fire.
		if s, ok := t.src.(*source.ScrapeSource); ok {
			_ = s.Scrape(ctx)
		}
		now2 := r.opts.Now()
		if now2.Before(now) {
			now2 = now
		}
		if ev, err = t.m.Confirm(uuid.NewString(), r.read(ctx, t, now2)); err != nil {
			return err
		}
		r.evidence(t, ev)
		calls = append(calls, ev)
	}
	final := t.m.Config().Share >= 1 && t.stage == len(t.plan.Stages)-1
	cfg := t.cfg
	cfg.setDefaults()
	complete := final && ev.StateAfter == StateHealthy && ev.MinHoldElapsed && ev.FreshTicks >= cfg.FreshTicks
	if ev.StateAfter == StateReady && ev.StateBefore == StateReady && ev.Action == ActionNone && !t.plan.Manual {
		// Still READY at this stage: the advance decided earlier did not happen (refused on a
		// state that has changed back since, such as a kill and an enable). Ask again: an advance
		// names the stage it leaves, so it never moves the rollout twice.
		t.decidedAt = r.opts.Now()
		reason := fmt.Sprintf("guard: still READY (r5) at stage %d; advancing", t.stage+1)
		return r.act(ctx, t, order{kindAdvance, command.AdvanceRollout{
			Meta:          meta(reason, t.decision, t.rollout),
			RolloutTarget: command.RolloutTarget{Env: t.env, Key: t.key, ID: t.rollout, ExpectedVersion: t.version},
			From:          t.stage,
		}})
	}
	if ev.StateAfter == ev.StateBefore && ev.Action == ActionNone && !complete {
		return nil
	}
	action := string(ev.Action)
	if complete && ev.Action == ActionNone {
		action = "complete"
	}
	data, err := json.Marshal(calls)
	if err != nil {
		return fmt.Errorf("encode evidence: %w", err)
	}
	snap, err := json.Marshal(t.before.Snapshot())
	if err != nil {
		return fmt.Errorf("encode machine snapshot: %w", err)
	}
	t.decidedAt = r.opts.Now()
	d := &events.GuardDecided{
		Rollout: t.rollout, Stage: t.stage, StateBefore: string(calls[0].StateBefore), StateAfter: string(ev.StateAfter),
		Action: action, Cause: string(ev.Cause), Evidence: data, Before: snap,
	}
	return r.record(ctx, t, order{kindRecord, command.RecordDecision{
		Meta: meta(reasonFor(d, &ev), "", t.rollout), Env: t.env, Key: t.key, Decision: *d,
	}})
}

// record appends the decision rec carries, then runs the action it calls for. A failure to
// record that may pass is kept, like a failed action, to be tried again on the rollout's next
// tick: the machine has moved on, and would not decide it again.
func (r *Runner) record(ctx context.Context, t *tracked, rec order) error {
	f, err := r.send(ctx, rec.cmd)
	if err != nil {
		if ctx.Err() == nil && retryable(err) {
			t.pending = &rec
		}
		return fmt.Errorf("record decision: %w", err)
	}
	if f.Rollout != nil {
		t.decision = f.Rollout.Guard.Decision
	}
	rd := rec.cmd.(command.RecordDecision)
	d := &rd.Decision
	if r.opts.Observer != nil {
		r.opts.Observer.Decided(d.Action)
	}
	m := meta(rd.Reason, t.decision, t.rollout)
	on := command.RolloutTarget{Env: t.env, Key: t.key, ID: t.rollout, ExpectedVersion: f.Version}
	var o order
	switch Action(d.Action) {
	case ActionAdvance:
		if t.plan.Manual {
			return nil
		}
		o = order{kindAdvance, command.AdvanceRollout{Meta: m, RolloutTarget: on, From: d.Stage}}
	case "complete":
		o = order{kindAdvance, command.AdvanceRollout{Meta: m, RolloutTarget: on, From: d.Stage}}
	case ActionKill:
		o = order{kindKill, command.KillFlag{Meta: m, Env: t.env, Key: t.key}}
	case ActionStepBack, ActionRevert:
		o = order{kindStepBack, command.StepBackRollout{Meta: m, RolloutTarget: on, From: d.Stage}}
		if d.Stage == 0 {
			o = order{kindAbort, command.AbortRollout{Meta: m, RolloutTarget: on}}
		}
	case ActionFreeze:
		o = order{kindPause, command.PauseRollout{Meta: m, RolloutTarget: on}}
	case ActionOpenValve:
		if t.plan.Valve == nil {
			return fmt.Errorf("rollout %s trips with openValve but names no valve", t.rollout)
		}
		o = order{kindOpenValve, command.OpenValve{Meta: m, Env: t.env, Key: t.plan.Valve.Flag, Rollout: t.rollout, Evidence: d.Evidence}}
	case ActionPage:
		r.log.Warn("guard pages: a rollout needs a person", "env", t.env, "flag", t.key, "rollout", t.rollout,
			"stage", d.Stage, "cause", d.Cause, "decision", t.decision)
		return nil
	default:
		return nil
	}
	return r.act(ctx, t, o)
}

// act sends o; a failure that may pass is kept to be tried again on the rollout's next tick.
func (r *Runner) act(ctx context.Context, t *tracked, o order) error {
	_, err := r.send(ctx, o.cmd)
	if r.opts.Observer != nil && !t.decidedAt.IsZero() {
		r.opts.Observer.Acted(o.kind, r.opts.Now().Sub(t.decidedAt), err)
	}
	if err == nil {
		r.log.Info("guard acted", "command", o.kind, "env", t.env, "flag", t.key, "rollout", t.rollout,
			"stage", t.stage, "decision", t.decision)
		return nil
	}
	if ctx.Err() == nil && retryable(err) {
		t.pending = &o
	}
	return fmt.Errorf("%s: %w", o.kind, err)
}

// send sends c and returns the flag after it. A refusal on the flag's state wraps [ErrRefused],
// so that the guard judges the new state instead of sending the command again.
func (r *Runner) send(ctx context.Context, c command.Command) (projections.Flag, error) {
	res, err := r.opts.Commands.Handle(ctx, c)
	if err != nil && refused(err) {
		err = fmt.Errorf("%w: %w", ErrRefused, err)
	}
	return res.Flag, err
}

// refused reports whether err is a refusal on the flag's state rather than a failure to write.
func refused(err error) bool {
	for _, target := range []error{
		command.ErrStale, command.ErrNotFound, command.ErrArchived, command.ErrRolloutActive,
		command.ErrNoRollout, command.ErrRolloutState, command.ErrTripped, command.ErrNotValve,
	} {
		if errors.Is(err, target) {
			return true
		}
	}
	return false
}

// ErrRefused marks a command the write path refused on the flag's state (a stale version, a
// rollout that moved on, a tripped guard): the runner wraps it so that the guard does not send
// the command again, and judges the new state on the next tick instead.
var ErrRefused = errors.New("command refused")

// retryable reports whether a failed command of the guard is worth sending again.
func retryable(err error) bool {
	return !errors.Is(err, ErrRefused) && !errors.Is(err, events.ErrInvalid)
}

// reasonFor is the reason the guard gives on its events: what fired, with the numbers.
func reasonFor(d *events.GuardDecided, ev *Evidence) string {
	s := "guard " + d.StateBefore + " → " + d.StateAfter + " (" + d.Cause + ")"
	if d.Action != string(ActionNone) {
		s += ", " + d.Action
	}
	for _, m := range ev.Metrics {
		switch {
		case d.Cause == string(CauseR1) || d.Cause == string(CauseReady):
			e := m.R1.E
			if d.Cause == string(CauseReady) {
				e = m.R5.E
			}
			s += fmt.Sprintf("; %s: e=%s, treatment %s/%s, control %s/%s", m.Name, short(float64(e)),
				short(float64(m.Treatment.StageErrors)), short(float64(m.Treatment.StageRequests)),
				short(float64(m.Control.StageErrors)), short(float64(m.Control.StageRequests)))
		case d.Cause == string(CauseR2) && m.R2.Fired && m.Kind == KindMean:
			s += fmt.Sprintf("; %s: Λ=%s, mean treatment %s vs control %s (×%s)", m.Name, short(math.Exp(float64(m.R2.LogLambda))),
				short(float64(m.R2.TreatmentMean)), short(float64(m.R2.ControlMean)), short(float64(m.R2.Ratio)))
			if m.R2.LateStartAgo > 0 {
				s += fmt.Sprintf(", ×%s over the last %d ticks", short(float64(m.R2.LateStartRatio)), m.R2.LateStartAgo)
			}
		case d.Cause == string(CauseR2) && m.R2.Fired:
			s += fmt.Sprintf("; %s: Λ=%s, treatment %s/%s, control %s/%s", m.Name, short(math.Exp(float64(m.R2.LogLambda))),
				short(float64(m.R2.TreatmentEvents)), short(float64(m.R2.TreatmentTrials)),
				short(float64(m.R2.ControlEvents)), short(float64(m.R2.ControlTrials)))
		case d.Cause == string(CauseR3):
			s += fmt.Sprintf("; %s: error rate lower bound %s > ceiling", m.Name, short(float64(m.R3.Lower)))
		}
	}
	if len(s) > events.MaxReasonLen {
		s = s[:events.MaxReasonLen]
	}
	return s
}

func short(v float64) string {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return fmt.Sprint(v)
	}
	return strconv.FormatFloat(v, 'g', 4, 64)
}

// expireValve closes a valve whose expiry passed.
func (r *Runner) expireValve(ctx context.Context, f projections.Flag) error {
	_, err := r.send(ctx, command.CloseValve{
		Meta: meta("valve expired at "+f.Valve.Expires.UTC().Format(time.RFC3339), "", ""),
		Env:  f.Environment, Key: f.Key, Cause: events.ValveClosedExpired,
	})
	if err != nil {
		return fmt.Errorf("close expired valve %s/%s: %w", f.Environment, f.Key, err)
	}
	return nil
}

func (r *Runner) evidence(t *tracked, ev Evidence) {
	t.last, t.lastAt = ev, ev.Time
	if r.opts.OnEvidence != nil {
		r.opts.OnEvidence(t.env, t.key, ev)
	}
}

// Status is the guard's live view of one rollout, as the acting replica holds it.
type Status struct {
	Acting   bool      `json:"acting"`
	State    State     `json:"state"`
	Stage    int       `json:"stage"`
	Pending  string    `json:"pendingAction,omitempty"`
	NextTick time.Time `json:"nextTick,omitzero"`
	Decision string    `json:"lastDecisionEvent,omitempty"`
	Latest   *Evidence `json:"latest,omitempty"` // the evidence of the latest call
}

// unwatch stops the rollout's scrape source from following its queries.
func (t *tracked) unwatch() {
	s, ok := t.src.(*source.ScrapeSource)
	if !ok {
		return
	}
	for _, q := range t.queries {
		for _, query := range []string{q.reqT, q.errT, q.reqC, q.errC} {
			if query != "" {
				s.Unwatch(query)
			}
		}
	}
}

// status is the live view of t.
func (t *tracked) status(acting bool) Status {
	last := t.last
	st := Status{Acting: acting, State: t.m.State(), Stage: t.stage, NextTick: t.next, Decision: t.decision}
	if t.latched {
		// A trip recorded before this machine was built (another replica's, or before a restart).
		st.State = StateTripped
	}
	if last.DecisionID != "" {
		st.Latest = &last
	}
	if t.pending != nil {
		st.Pending = t.pending.kind
	}
	return st
}

// Live returns the live status of the rollout of env/flag: this replica's own as of its last pass
// when it judges the rollout (it never waits for a pass in progress), otherwise the acting
// replica's latest from the Board, if any.
func (r *Runner) Live(env, flag string) (any, bool) {
	r.liveMu.RLock()
	st, ok := r.live[env+"/"+flag]
	r.liveMu.RUnlock()
	if ok {
		return st, true
	}
	if r.opts.Board == nil {
		return nil, false
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	st, ok, err := r.opts.Board.Get(ctx, env, flag)
	if err != nil {
		r.log.Warn("read guard status", "env", env, "flag", flag, "error", err)
		return nil, false
	}
	return st, ok
}
