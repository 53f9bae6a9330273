// Package metrics is Interlock's own instrumentation: the collectors behind GET /metrics.
//
// Every collector is registered on a [prometheus.Registerer] passed in; nothing here uses the
// default registry. The library packages (events, projections, guard) know nothing of
// Prometheus: they count in plain fields that the collectors read at scrape time, or call a small
// observer interface that the types here implement. What each metric means is listed in
// docs/metrics.md; every name starts with interlock_.
package metrics

import (
	"errors"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// namespace prefixes every metric of the service.
const namespace = "interlock"

// NewRegistry returns a registry holding the Go runtime's and the process's collectors, to which
// the service adds its own.
func NewRegistry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return reg
}

// Handler serves what g gathers in the format the scraper asks for: the text format, protobuf,
// or OpenMetrics (text) when its Accept header prefers it. Errors of a collector are logged and
// answered with what could be gathered.
func Handler(g prometheus.Gatherer, logger *slog.Logger) http.Handler {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return promhttp.HandlerFor(g, promhttp.HandlerOpts{
		ErrorLog:          slog.NewLogLogger(logger.With("component", "metrics").Handler(), slog.LevelWarn),
		ErrorHandling:     promhttp.ContinueOnError,
		EnableOpenMetrics: true,
	})
}

// register registers every collector, and returns the errors joined.
func register(reg prometheus.Registerer, cs ...prometheus.Collector) error {
	var errs []error
	for _, c := range cs {
		if err := reg.Register(c); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// cache is a copy-on-write map: reads take no lock and allocate nothing, and a miss (rare: the
// label values of a metric are a small, fixed set) copies the map under a mutex.
type cache[K comparable, V any] struct {
	mu sync.Mutex
	m  atomic.Pointer[map[K]V]
}

// get returns the value of k, made by mk on the first call for k.
func (c *cache[K, V]) get(k K, mk func(K) V) V {
	if m := c.m.Load(); m != nil {
		if v, ok := (*m)[k]; ok {
			return v
		}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	old := c.m.Load()
	if old != nil {
		if v, ok := (*old)[k]; ok {
			return v
		}
	}
	n := make(map[K]V, 1)
	if old != nil {
		n = make(map[K]V, len(*old)+1)
		for k, v := range *old {
			n[k] = v
		}
	}
	v := mk(k)
	n[k] = v
	c.m.Store(&n)
	return v
}

// label turns a name such as "create rollout" into a label value: create_rollout.
func label(s string) string {
	return strings.ReplaceAll(s, " ", "_")
}
