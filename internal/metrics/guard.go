package metrics

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/interlock-dev/interlock/guard"
)

// Guard counts and times the guard's work. It is the guard runner's observer
// ([guard.RunnerOptions.Observer]).
type Guard struct {
	ticks     prometheus.Histogram
	decisions *prometheus.CounterVec
	actions   *prometheus.CounterVec
	applied   prometheus.Histogram

	byAction cache[string, prometheus.Counter]
	byKind   cache[actionKey, prometheus.Counter]
}

type actionKey struct {
	kind string
	ok   bool
}

// decisionActions are the actions a decision may carry, counted from zero.
var decisionActions = []string{
	string(guard.ActionNone), "complete", string(guard.ActionAdvance), string(guard.ActionHold),
	string(guard.ActionRevert), string(guard.ActionPage), string(guard.ActionKill), string(guard.ActionStepBack),
	string(guard.ActionOpenValve), string(guard.ActionCloseValve), string(guard.ActionFreeze),
}

// actionKinds are the commands the guard sends to carry out a decision, counted from zero.
var actionKinds = []string{"advance", "stepBack", "abort", "pause", "kill", "openValve", "closeValve"}

// NewGuard registers the guard's metrics on reg.
func NewGuard(reg prometheus.Registerer) (*Guard, error) {
	g := &Guard{
		ticks: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: namespace, Subsystem: "guard", Name: "tick_duration_seconds",
			Help:    "Time of one pass of the guard over its rollouts and valves, on the replica that holds the lease (its _count counts the passes).",
			Buckets: []float64{.001, .005, .01, .05, .1, .25, .5, 1, 2.5, 5, 10, 30},
		}),
		decisions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Subsystem: "guard", Name: "decisions_total",
			Help: "Decisions the guard recorded as events, by action.",
		}, []string{"action"}),
		actions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Subsystem: "guard", Name: "actions_total",
			Help: "Commands the guard sent to carry out its decisions, by command and result (ok, error).",
		}, []string{"command", "result"}),
		applied: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: namespace, Subsystem: "guard", Name: "decision_to_applied_seconds",
			Help:    "Time from a guard decision to the command that carries it out succeeding, retries included.",
			Buckets: []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 15, 60, 300},
		}),
	}
	for _, a := range decisionActions {
		g.decisions.WithLabelValues(a)
	}
	for _, k := range actionKinds {
		g.actions.WithLabelValues(k, "ok")
		g.actions.WithLabelValues(k, "error")
	}
	if err := register(reg, g.ticks, g.decisions, g.actions, g.applied); err != nil {
		return nil, err
	}
	return g, nil
}

// Ticked times one pass.
func (g *Guard) Ticked(took time.Duration) { g.ticks.Observe(took.Seconds()) }

// Decided counts one decision.
func (g *Guard) Decided(action string) {
	g.byAction.get(action, func(a string) prometheus.Counter { return g.decisions.WithLabelValues(a) }).Inc()
}

// Acted counts one command, and times it from its decision when it succeeded.
func (g *Guard) Acted(kind string, sinceDecision time.Duration, err error) {
	g.byKind.get(actionKey{kind, err == nil}, func(k actionKey) prometheus.Counter {
		result := "ok"
		if !k.ok {
			result = "error"
		}
		return g.actions.WithLabelValues(k.kind, result)
	}).Inc()
	if err == nil {
		g.applied.Observe(sinceDecision.Seconds())
	}
}
