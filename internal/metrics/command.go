package metrics

import (
	"errors"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/interlock-dev/interlock/events"
	"github.com/interlock-dev/interlock/internal/command"
)

// Commands counts the write path's commands by name and outcome, and times its appends to the
// event store. It is the command service's observer ([command.WithObserver]).
type Commands struct {
	commands *prometheus.CounterVec
	appends  *prometheus.HistogramVec
	byName   cache[commandKey, prometheus.Counter]
	ok       prometheus.Observer
	conflict prometheus.Observer
	failed   prometheus.Observer
}

type commandKey struct {
	name    string
	outcome command.Outcome
}

// NewCommands registers the command and append metrics on reg.
func NewCommands(reg prometheus.Registerer) (*Commands, error) {
	c := &Commands{
		commands: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "commands_total",
			Help: "Commands of the write path, by command and outcome (ok, conflict, refused, unavailable).",
		}, []string{"command", "outcome"}),
		appends: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: namespace, Subsystem: "event_store", Name: "append_duration_seconds",
			Help:    "Time of one append to the event stream, by result (ok, conflict, error).",
			Buckets: []float64{.0005, .001, .002, .005, .01, .02, .05, .1, .25, .5, 1, 2.5, 5},
		}, []string{"result"}),
	}
	c.ok = c.appends.WithLabelValues("ok")
	c.conflict = c.appends.WithLabelValues("conflict")
	c.failed = c.appends.WithLabelValues("error")
	if err := register(reg, c.commands, c.appends); err != nil {
		return nil, err
	}
	return c, nil
}

// Commanded counts one command.
func (c *Commands) Commanded(name string, outcome command.Outcome) {
	c.byName.get(commandKey{name, outcome}, func(k commandKey) prometheus.Counter {
		return c.commands.WithLabelValues(label(k.name), string(k.outcome))
	}).Inc()
}

// Appended times one append.
func (c *Commands) Appended(took time.Duration, err error) {
	o := c.ok
	switch {
	case errors.Is(err, events.ErrConflict):
		o = c.conflict
	case err != nil:
		o = c.failed
	}
	o.Observe(took.Seconds())
}
