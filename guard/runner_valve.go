package guard

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/google/uuid"

	"github.com/interlock-dev/interlock/events"
	"github.com/interlock-dev/interlock/guard/source"
	"github.com/interlock-dev/interlock/internal/command"
	"github.com/interlock-dev/interlock/projections"
)

// trackedValve is the guard's state for one safety valve with a policy.
type trackedValve struct {
	env, key string
	digest   string // of the policy the controller was built from
	v        *Valve
	src      CounterSource
	srcErr   error
	reqQ     string
	errQ     string
	qErr     error
	next     time.Time
	open     bool // the projection's state at the last look
	interval time.Duration
	last     ValveDecision
}

// valveConfig is the controller's configuration for a valve flag's policy.
func valveConfig(key string, v *projections.Valve) ValveConfig {
	p := v.Policy
	return ValveConfig{
		Valve: key, Segment: v.Segment, Objective: p.Objective, BurnRate: p.BurnRate,
		LongWindow: time.Duration(p.Long), ShortWindow: time.Duration(p.Short),
		MinOpen: time.Duration(p.MinOpen), HealthyFor: time.Duration(p.HealthyFor),
		MaxTogglesPerHour: p.MaxTogglesPerHour,
	}
}

// valveQuery renders a valve counter's selector for its source: the selector itself for a
// scrape, its sum for Prometheus.
func valveQuery(src events.MetricSource, sel string) (string, error) {
	s, err := source.ParseSelector(sel)
	if err != nil {
		return "", err
	}
	if src.Type == events.SourcePrometheus {
		return "sum(" + s.String() + ")", nil
	}
	return s.String(), nil
}

// trackValve returns the guard's controller for the valve flag f, built anew when its policy
// changed, and brought in line with what people did to the valve since the last look.
func (r *Runner) trackValve(f *projections.Flag, now time.Time) (*trackedValve, error) {
	id := f.Environment + "/" + f.Key
	b, err := json.Marshal(struct {
		P *events.ValvePolicy
		S string
	}{f.Valve.Policy, f.Valve.Segment})
	if err != nil {
		return nil, err
	}
	digest := string(b)
	t := r.valves[id]
	if t == nil || t.digest != digest {
		cfg := valveConfig(f.Key, f.Valve)
		v, err := NewValve(cfg, now)
		if err != nil {
			return nil, fmt.Errorf("valve %s: %w", id, err)
		}
		src := f.Valve.Policy.Source
		if src.Type == events.SourceScrape && src.Interval == 0 {
			src.Interval = events.Duration(15 * time.Second)
		}
		t = &trackedValve{env: f.Environment, key: f.Key, digest: digest, v: v, next: now, interval: src.Interval.Std(15 * time.Second)}
		t.src, t.srcErr = r.source(sourceKey(src), src)
		t.reqQ, t.qErr = valveQuery(src, f.Valve.Policy.Requests)
		if t.qErr == nil {
			t.errQ, t.qErr = valveQuery(src, f.Valve.Policy.Errors)
		}
		r.valves[id] = t
	}
	// A person (or a rollout's trip) opened or closed the valve: the controller holds it as they
	// left it. Only the controller's own openings are its to close.
	vs := f.Valve
	switch {
	case vs.Open && !t.v.Open() && !(vs.OpenedBy == Actor && vs.Rollout == ""):
		expires := vs.Expires
		if expires.IsZero() || !expires.After(now) {
			expires = now.AddDate(100, 0, 0) // held until a person closes it
		}
		by, reason := vs.OpenedBy, vs.Reason
		if reason == "" {
			reason = "opened"
		}
		if by == "" {
			by = "unknown"
		}
		d, err := t.v.OpenManual(uuid.NewString(), by, reason, now, expires)
		if err != nil {
			return nil, fmt.Errorf("valve %s: %w", id, err)
		}
		t.last = d
	case !vs.Open && t.v.Open():
		d, err := t.v.CloseManual(uuid.NewString(), vs.OpenedBy+"(closed)", "closed: "+vs.Cause, now)
		if err != nil {
			return nil, fmt.Errorf("valve %s: %w", id, err)
		}
		t.last = d
	}
	t.open = vs.Open
	return t, nil
}

// judgeValve observes one valve's counters and opens or closes it as its controller decides.
func (r *Runner) judgeValve(ctx context.Context, t *trackedValve, now time.Time) error {
	var lag time.Duration
	if l, ok := t.src.(interface{ Lag() time.Duration }); ok {
		lag = l.Lag()
	}
	at := now.Add(-lag)
	read := func(q string) source.Reading {
		switch {
		case t.srcErr != nil:
			return source.Reading{Requested: at, Query: q, Status: source.ReadingError, Detail: "metric source: " + t.srcErr.Error()}
		case t.qErr != nil:
			return source.Reading{Requested: at, Query: q, Status: source.ReadingError, Detail: "query: " + t.qErr.Error()}
		}
		rd, _ := t.src.Counter(ctx, q, at)
		return rd
	}
	d, err := t.v.Observe(uuid.NewString(), now, read(t.reqQ), read(t.errQ))
	if err != nil {
		return err
	}
	t.last = d
	if d.Page {
		r.log.Warn("valve stays open: it toggled too often; a person should look", "env", t.env, "valve", t.key,
			"toggles_last_hour", d.TogglesLastHour)
	}
	if d.Action != ActionOpenValve && d.Action != ActionCloseValve {
		return nil
	}
	data, err := json.Marshal(d)
	if err != nil {
		return fmt.Errorf("encode valve evidence: %w", err)
	}
	burn := func(w ValveWindow) string { return short(float64(w.Burn)) }
	var o order
	if d.Action == ActionOpenValve {
		reason := fmt.Sprintf("guard: error budget burning %s× over %v and %s× over %v (threshold %s×)",
			burn(d.Long), d.Long.Window, burn(d.Short), d.Short.Window, short(float64(d.BurnRate)))
		o = order{kindOpenValve, command.OpenValve{Meta: meta(reason, "", d.DecisionID), Env: t.env, Key: t.key, Evidence: data}}
	} else {
		cause := events.ValveClosedHealthy
		if d.Cause == CauseExpired {
			cause = events.ValveClosedExpired
		}
		reason := fmt.Sprintf("guard: %s; burn %s× over %v", d.Cause, burn(d.Short), d.Short.Window)
		o = order{kindCloseValve, command.CloseValve{Meta: meta(reason, "", d.DecisionID), Env: t.env, Key: t.key, Cause: cause, Evidence: data}}
	}
	_, err = r.send(ctx, o.cmd)
	if r.opts.Observer != nil {
		r.opts.Observer.Decided(string(d.Action))
		r.opts.Observer.Acted(o.kind, r.opts.Now().Sub(now), err)
	}
	if err != nil {
		return fmt.Errorf("%s: %w", o.kind, err)
	}
	r.log.Info("guard acted on a valve", "command", o.kind, "env", t.env, "valve", t.key, "cause", d.Cause)
	return nil
}
