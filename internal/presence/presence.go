// Package presence tracks the live in-process subscribers of every environment from the
// heartbeats they publish (see package local), and tells how many of them have applied a
// given stream sequence: "applied on N of M".
//
// A subscriber is live from its first valid heartbeat until it says it is leaving or misses
// [Config.Misses] heartbeats in a row (by the interval it announces). Heartbeats are core NATS
// messages outside the event stream; a server that starts learns of every live subscriber within
// one heartbeat interval.
package presence

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/interlock-dev/interlock/apiv1"
	"github.com/interlock-dev/interlock/local"
)

// Defaults of [Config].
const (
	DefaultMisses         = 3
	DefaultMaxSubscribers = 100_000
	// sweepEvery is how often forgotten subscribers are dropped from memory. Reads never show
	// an expired subscriber, whatever the sweep.
	sweepEvery = time.Second
)

// Config tunes a [Tracker]. The zero value is valid.
type Config struct {
	// Logger receives what is dropped and why, with component=presence. Nil discards.
	Logger *slog.Logger
	// Misses is how many heartbeat intervals without a heartbeat make a subscriber gone.
	// DefaultMisses when 0.
	Misses int
	// MaxSubscribers bounds how many subscribers are tracked at once; heartbeats of new ones
	// beyond it are dropped (and logged). DefaultMaxSubscribers when 0.
	MaxSubscribers int
	// Now is the clock; time.Now when nil.
	Now func() time.Time
}

func (c *Config) setDefaults() {
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Misses == 0 {
		c.Misses = DefaultMisses
	}
	if c.MaxSubscribers == 0 {
		c.MaxSubscribers = DefaultMaxSubscribers
	}
	if c.Now == nil {
		c.Now = time.Now
	}
}

// Validate reports every problem with the configuration, joined.
func (c Config) Validate() error {
	var errs []error
	if c.Misses < 0 {
		errs = append(errs, fmt.Errorf("misses: %d is negative", c.Misses))
	}
	if c.MaxSubscribers < 0 {
		errs = append(errs, fmt.Errorf("max subscribers: %d is negative", c.MaxSubscribers))
	}
	return errors.Join(errs...)
}

// Subscriber is one live in-process subscriber as its last heartbeat described it. It is the
// API's type: its JSON is a contract of GET /api/v1/environments/{env}/subscribers.
type Subscriber = apiv1.Subscriber

// Propagation says how many live subscribers of an environment have applied a sequence.
type Propagation struct {
	Environment string `json:"environment"`
	// Sequence is the stream sequence asked about.
	Sequence uint64 `json:"sequence"`
	// Applied of Total live subscribers report a sequence at or after it.
	Applied int `json:"applied"`
	Total   int `json:"total"`
	// Pending are the live subscribers that have not applied it yet, by id.
	Pending []Pending `json:"pending"`
}

// Pending is a live subscriber that has not applied a sequence yet: the API's type.
type Pending = apiv1.Pending

// Tracker keeps the live subscribers. Its reads are safe for concurrent use with Run.
type Tracker struct {
	nc     *nats.Conn
	cfg    Config
	logger *slog.Logger

	mu   sync.Mutex
	subs map[string]map[string]Subscriber // environment → id → subscriber
	n    int
}

// New returns a tracker listening on nc once it runs, or the configuration's problems.
func New(nc *nats.Conn, cfg Config) (*Tracker, error) {
	if nc == nil {
		return nil, errors.New("presence: nats connection: required")
	}
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("presence: %w", err)
	}
	cfg.setDefaults()
	return &Tracker{
		nc:     nc,
		cfg:    cfg,
		logger: cfg.Logger.With("component", "presence"),
		subs:   make(map[string]map[string]Subscriber),
	}, nil
}

// Run listens to heartbeats until ctx ends, then returns nil. Errors: one when the subscription
// cannot be made (the connection is closed).
func (t *Tracker) Run(ctx context.Context) error {
	sub, err := t.nc.Subscribe(local.PresenceSubjects, func(m *nats.Msg) {
		t.receive(m.Subject, m.Data)
	})
	if err != nil {
		return fmt.Errorf("presence: subscribe %s: %w", local.PresenceSubjects, err)
	}
	// Heartbeats are small and frequent; a slow tracker drops some rather than blocking the
	// connection, and the next heartbeat repairs the picture.
	_ = sub.SetPendingLimits(64<<10, 64<<20)
	defer func() { _ = sub.Unsubscribe() }()
	tick := time.NewTicker(sweepEvery)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
			t.sweep()
		}
	}
}

// receive records one heartbeat; bad ones are logged and dropped.
func (t *Tracker) receive(subject string, data []byte) {
	h, err := local.DecodeHeartbeat(subject, data)
	if err != nil {
		t.logger.Debug("dropping a presence message", "subject", truncate(subject), "error", err)
		return
	}
	t.Record(h)
}

// Record notes a heartbeat as received now. A leaving heartbeat forgets the subscriber.
// Heartbeats that fail [local.Heartbeat.Validate] are dropped.
func (t *Tracker) Record(h local.Heartbeat) {
	if err := h.Validate(); err != nil {
		t.logger.Debug("dropping an invalid heartbeat", "error", err)
		return
	}
	now := t.cfg.Now()
	t.mu.Lock()
	defer t.mu.Unlock()
	env := t.subs[h.Environment]
	_, known := env[h.ID]
	if h.Leaving {
		if known {
			delete(env, h.ID)
			t.n--
		}
		return
	}
	if !known && t.n >= t.cfg.MaxSubscribers {
		t.sweepLocked(now)
	}
	if !known && t.n >= t.cfg.MaxSubscribers {
		t.logger.Warn("too many subscribers; ignoring a new one", "max", t.cfg.MaxSubscribers, "id", h.ID, "environment", h.Environment)
		return
	}
	if env == nil {
		env = make(map[string]Subscriber)
		t.subs[h.Environment] = env
	}
	if !known {
		t.n++
	}
	env[h.ID] = Subscriber{
		ID: h.ID, Name: h.Name, Environment: h.Environment, Sequence: h.Sequence,
		LastSeen: now, IntervalMillis: h.IntervalMillis, Ready: h.Ready, Stale: h.Stale,
	}
}

// live reports whether s has sent a heartbeat within Misses intervals of now.
func (t *Tracker) live(s *Subscriber, now time.Time) bool {
	return now.Sub(s.LastSeen) <= time.Duration(t.cfg.Misses)*time.Duration(s.IntervalMillis)*time.Millisecond
}

// sweep forgets the subscribers that are no longer live.
func (t *Tracker) sweep() {
	now := t.cfg.Now()
	t.mu.Lock()
	defer t.mu.Unlock()
	t.sweepLocked(now)
}

func (t *Tracker) sweepLocked(now time.Time) {
	for name, env := range t.subs {
		for id, s := range env {
			if !t.live(&s, now) {
				delete(env, id)
				t.n--
			}
		}
		if len(env) == 0 {
			delete(t.subs, name)
		}
	}
}

// Subscribers returns the live subscribers of env, sorted by id; none for an environment nobody
// follows.
func (t *Tracker) Subscribers(env string) []Subscriber {
	now := t.cfg.Now()
	t.mu.Lock()
	out := make([]Subscriber, 0, len(t.subs[env]))
	for _, s := range t.subs[env] {
		if t.live(&s, now) {
			out = append(out, s)
		}
	}
	t.mu.Unlock()
	slices.SortFunc(out, func(a, b Subscriber) int { return strings.Compare(a.ID, b.ID) })
	return out
}

// Propagation says how many live subscribers of env have applied stream sequence seq, and which
// have not.
func (t *Tracker) Propagation(env string, seq uint64) Propagation {
	p := Propagation{Environment: env, Sequence: seq, Pending: []Pending{}}
	for _, s := range t.Subscribers(env) {
		p.Total++
		if s.Sequence >= seq {
			p.Applied++
			continue
		}
		p.Pending = append(p.Pending, Pending{ID: s.ID, Name: s.Name, Sequence: s.Sequence, LastSeen: s.LastSeen})
	}
	return p
}

func truncate(s string) string {
	if len(s) > 64 {
		return s[:64] + "…"
	}
	return s
}
