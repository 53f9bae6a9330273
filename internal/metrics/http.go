package metrics

import (
	"net/http"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// HTTP counts and times the server's requests by route: the pattern the request matched (such
// as "GET /api/v1/environments/{env}/flags/{key}"), never its raw path, so that the number of
// series stays bounded whatever clients send.
type HTTP struct {
	requests *prometheus.CounterVec
	duration *prometheus.HistogramVec

	byRoute cache[string, *routeMetrics]
}

type routeMetrics struct {
	duration prometheus.Observer
	codes    cache[int, prometheus.Counter]
}

// unrouted is the route of a request that no handler gave a pattern to.
const unrouted = "unmatched"

// NewHTTP registers the request metrics on reg.
func NewHTTP(reg prometheus.Registerer) (*HTTP, error) {
	h := &HTTP{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Subsystem: "http", Name: "requests_total",
			Help: "HTTP requests answered, by route (the matched pattern) and status code.",
		}, []string{"route", "code"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: namespace, Subsystem: "http", Name: "request_duration_seconds",
			Help:    "Time to answer an HTTP request, by route; streams count until they end.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
		}, []string{"route"}),
	}
	if err := register(reg, h.requests, h.duration); err != nil {
		return nil, err
	}
	return h, nil
}

// Handler counts and times every request next serves. The route is the request's Pattern once
// next returns: http.ServeMux sets it on the request it is given, and handlers that route by
// themselves set it too. A handler that copies the request (r.WithContext) before its mux must
// copy the pattern back.
func (h *HTTP) Handler(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		// Not pooled: handlers may reach the writer from other goroutines (a feed's deadline
		// set when its context ends) until they return, and a little after.
		rec := &recorder{ResponseWriter: w}
		served := false
		defer func() {
			status := rec.status
			switch {
			case status == 0 && !served:
				status = http.StatusInternalServerError // a panic on its way up
			case status == 0:
				status = http.StatusOK // nothing written: net/http answers 200
			}
			h.observe(r.Pattern, status, time.Since(start))
		}()
		next.ServeHTTP(rec, r)
		served = true
	})
}

func (h *HTTP) observe(route string, status int, d time.Duration) {
	if route == "" {
		route = unrouted
	}
	rm := h.byRoute.get(route, func(route string) *routeMetrics {
		return &routeMetrics{duration: h.duration.WithLabelValues(route)}
	})
	rm.duration.Observe(d.Seconds())
	rm.codes.get(status, func(code int) prometheus.Counter {
		return h.requests.WithLabelValues(route, strconv.Itoa(code))
	}).Inc()
}

// recorder remembers the status of a response.
type recorder struct {
	http.ResponseWriter
	status int
}

func (rec *recorder) WriteHeader(status int) {
	if rec.status == 0 && status >= 200 {
		rec.status = status
	}
	rec.ResponseWriter.WriteHeader(status)
}

func (rec *recorder) Write(b []byte) (int, error) {
	if rec.status == 0 {
		rec.status = http.StatusOK
	}
	return rec.ResponseWriter.Write(b)
}

// Unwrap lets http.ResponseController reach the underlying writer (to flush streams).
func (rec *recorder) Unwrap() http.ResponseWriter { return rec.ResponseWriter }
