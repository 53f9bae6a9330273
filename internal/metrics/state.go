package metrics

import (
	"context"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/interlock-dev/interlock/guard"
	"github.com/interlock-dev/interlock/projections"
)

// Catalog is the live read model: *projections.Catalog.
type Catalog interface {
	// Sequence is the stream sequence of the last event applied.
	Sequence() uint64
	Environments() []string
	Flags(env string) []projections.Flag
}

// Stream tells the event stream's last sequence: *events.Store.
type Stream interface {
	LastSequence(ctx context.Context) (uint64, error)
}

// Runner is the projections' runner: *projections.Runner.
type Runner interface {
	Ready() bool
	// Skipped counts the messages skipped (not events, or refused by the catalog).
	Skipped() uint64
	// Integrity records the messages that failed verification.
	Integrity() *projections.Integrity
}

// Leader tells whether this replica holds the guard's lease: *lease.Lease.
type Leader interface {
	Held() (held bool, epoch uint64)
}

// Tokens counts the token lookups answered from memory and from the bucket: *auth.Store.
type Tokens interface {
	Lookups() (hits, misses uint64)
}

// State is what the state collector reads at every scrape. Every field is optional: a nil one
// gives no metric.
type State struct {
	Catalog Catalog
	Stream  Stream
	Runner  Runner
	// Census counts the guard's rollouts by state: (*guard.Runner).Census.
	Census func() guard.Census
	Lease  Leader
	NATS   *nats.Conn
	Tokens Tokens
	// Streams counts the open Server-Sent Event streams by kind (events, ofrep, dashboard).
	Streams map[string]func() int
	// StreamTimeout bounds the scrape's question to the stream; 2s when 0.
	StreamTimeout time.Duration
}

// The descriptions of the state collector's metrics.
var (
	descApplied = prometheus.NewDesc(namespace+"_projection_applied_sequence",
		"Stream sequence of the last event the projections applied on this replica.", nil, nil)
	descLast = prometheus.NewDesc(namespace+"_event_store_last_sequence",
		"Sequence of the last event in the stream, read at scrape time.", nil, nil)
	descLag = prometheus.NewDesc(namespace+"_projection_lag_events",
		"Events in the stream that the projections of this replica have not applied yet.", nil, nil)
	descStoreUp = prometheus.NewDesc(namespace+"_event_store_up",
		"1 when the event stream answered the scrape's question for its last sequence, 0 when it did not.", nil, nil)
	descReady = prometheus.NewDesc(namespace+"_projection_ready",
		"1 once the projections caught up with the stream at start (the /readyz answer).", nil, nil)
	descSkipped = prometheus.NewDesc(namespace+"_projection_skipped_events_total",
		"Messages the projections skipped: not events, or events the catalog refused.", nil, nil)
	descIntegrity = prometheus.NewDesc(namespace+"_integrity_problems_total",
		"Messages refused because they fail verification (unsigned, unknown key, bad signature, broken chain).", nil, nil)
	descValves = prometheus.NewDesc(namespace+"_valves",
		"Safety valves by state (open, closed), across environments.", []string{"state"}, nil)
	descRollouts = prometheus.NewDesc(namespace+"_guard_rollouts",
		"Rollouts this replica's guard judges, by the guard's state; none while another replica holds the lease.", []string{"state"}, nil)
	descBlindOverGrace = prometheus.NewDesc(namespace+"_guard_blind_over_grace_rollouts",
		"Rollouts BLIND for longer than their plan's blind grace.", nil, nil)
	descLease = prometheus.NewDesc(namespace+"_guard_lease_held",
		"1 when this replica holds the guard's lease (its guard acts), 0 otherwise.", nil, nil)
	descNATSConnected = prometheus.NewDesc(namespace+"_nats_connected",
		"1 while the connection to NATS is up, 0 while it is down or reconnecting.", nil, nil)
	descNATSReconnects = prometheus.NewDesc(namespace+"_nats_reconnects_total",
		"Times the connection to NATS was re-established.", nil, nil)
	descTokenLookups = prometheus.NewDesc(namespace+"_token_lookups_total",
		"Bearer tokens checked, by result: hit (answered from memory), miss (asked the token bucket).", []string{"result"}, nil)
	descSSE = prometheus.NewDesc(namespace+"_sse_clients",
		"Open Server-Sent Event streams, by kind: events (/api/v1/events), ofrep (/ofrep/v1/events), dashboard (live pages).", []string{"stream"}, nil)
)

// guardStates are the guard's states, each reported even when no rollout is in it.
var guardStates = []guard.State{
	guard.StateWarmup, guard.StateHealthy, guard.StateReady, guard.StateHold, guard.StateBlind, guard.StateTripped,
}

type stateCollector struct{ s State }

// RegisterState registers on reg a collector that reads s at every scrape.
func RegisterState(reg prometheus.Registerer, s State) error {
	if s.StreamTimeout == 0 {
		s.StreamTimeout = 2 * time.Second
	}
	return register(reg, stateCollector{s})
}

func (c stateCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descApplied, descLast, descLag, descStoreUp, descReady, descSkipped,
		descIntegrity, descValves, descRollouts, descBlindOverGrace, descLease, descNATSConnected,
		descNATSReconnects, descTokenLookups, descSSE} {
		ch <- d
	}
}

func (c stateCollector) Collect(ch chan<- prometheus.Metric) {
	s := c.s
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	counter := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, v, labels...)
	}
	if s.Catalog != nil {
		applied := s.Catalog.Sequence()
		gauge(descApplied, float64(applied))
		if s.Stream != nil {
			ctx, cancel := context.WithTimeout(context.Background(), s.StreamTimeout)
			last, err := s.Stream.LastSequence(ctx)
			cancel()
			if err != nil {
				gauge(descStoreUp, 0)
			} else {
				gauge(descStoreUp, 1)
				gauge(descLast, float64(last))
				gauge(descLag, float64(last-min(applied, last)))
			}
		}
		open, closed := 0, 0
		for _, env := range s.Catalog.Environments() {
			for _, f := range s.Catalog.Flags(env) {
				switch {
				case f.Valve == nil || f.Archived:
				case f.Valve.Open:
					open++
				default:
					closed++
				}
			}
		}
		gauge(descValves, float64(open), "open")
		gauge(descValves, float64(closed), "closed")
	}
	if s.Runner != nil {
		gauge(descReady, boolean(s.Runner.Ready()))
		counter(descSkipped, float64(s.Runner.Skipped()))
		_, n := s.Runner.Integrity().Problems()
		counter(descIntegrity, float64(n))
	}
	if s.Census != nil {
		census := s.Census()
		for _, st := range guardStates {
			gauge(descRollouts, float64(census.States[st]), string(st))
		}
		gauge(descBlindOverGrace, float64(census.BlindOverGrace))
	}
	if s.Lease != nil {
		held, _ := s.Lease.Held()
		gauge(descLease, boolean(held))
	}
	if s.NATS != nil {
		gauge(descNATSConnected, boolean(s.NATS.Status() == nats.CONNECTED))
		counter(descNATSReconnects, float64(s.NATS.Stats().Reconnects))
	}
	if s.Tokens != nil {
		hits, misses := s.Tokens.Lookups()
		counter(descTokenLookups, float64(hits), "hit")
		counter(descTokenLookups, float64(misses), "miss")
	}
	for name, open := range s.Streams {
		gauge(descSSE, float64(open()), name)
	}
}

func boolean(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
