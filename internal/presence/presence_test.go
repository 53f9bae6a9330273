package presence_test

import (
	"context"
	"encoding/json"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/interlock-dev/interlock/events"
	"github.com/interlock-dev/interlock/internal/await"
	"github.com/interlock-dev/interlock/internal/command"
	"github.com/interlock-dev/interlock/internal/natstest"
	"github.com/interlock-dev/interlock/internal/presence"
	"github.com/interlock-dev/interlock/local"
	"github.com/interlock-dev/interlock/projections"
)

const wait = 20 * time.Second

// clock is a settable clock.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func TestConfigValidate(t *testing.T) {
	cases := []struct {
		name string
		cfg  presence.Config
		want []string
	}{
		{"zero", presence.Config{}, nil},
		{"set", presence.Config{Misses: 5, MaxSubscribers: 10}, nil},
		{"negative", presence.Config{Misses: -1, MaxSubscribers: -1}, []string{"misses", "max subscribers"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.cfg.Validate()
			if (err != nil) != (len(tc.want) > 0) {
				t.Fatalf("Validate() = %v, want errors about %v", err, tc.want)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("Validate() = %q, does not mention %q", err, w)
				}
			}
		})
	}
	if _, err := presence.New(nil, presence.Config{}); err == nil {
		t.Error("New accepted a nil connection")
	}
}

func hb(id, env string, seq uint64) local.Heartbeat {
	return local.Heartbeat{ID: id, Name: id + "-svc", Environment: env, Sequence: seq, Time: time.Now(), IntervalMillis: 1000, Ready: true}
}

func subIDs(s []presence.Subscriber) []string {
	out := make([]string, len(s))
	for i, x := range s {
		out[i] = x.ID
	}
	return out
}

func TestTracker(t *testing.T) {
	nc := natstest.Connect(t, natstest.RunServer(t))
	clk := &clock{t: time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)}
	tr, err := presence.New(nc, presence.Config{Now: clk.Now, MaxSubscribers: 4})
	if err != nil {
		t.Fatal(err)
	}
	tr.Record(hb("b", "prod", 10))
	tr.Record(hb("a", "prod", 12))
	tr.Record(hb("c", "dev", 3))
	if got := subIDs(tr.Subscribers("prod")); !slices.Equal(got, []string{"a", "b"}) {
		t.Fatalf("prod subscribers %v", got)
	}
	p := tr.Propagation("prod", 11)
	if p.Applied != 1 || p.Total != 2 || len(p.Pending) != 1 || p.Pending[0].ID != "b" || p.Pending[0].Name != "b-svc" || p.Pending[0].Sequence != 10 {
		t.Fatalf("propagation of 11: %+v", p)
	}
	if p := tr.Propagation("prod", 10); p.Applied != 2 || p.Total != 2 || len(p.Pending) != 0 || p.Pending == nil {
		t.Fatalf("propagation of 10: %+v (pending must be an empty list, not null)", p)
	}
	if p := tr.Propagation("staging", 1); p.Applied != 0 || p.Total != 0 {
		t.Fatalf("nobody follows staging: %+v", p)
	}

	// a keeps beating; b misses three intervals and is gone.
	clk.Advance(2 * time.Second)
	tr.Record(hb("a", "prod", 13))
	clk.Advance(1500 * time.Millisecond)
	if got := subIDs(tr.Subscribers("prod")); !slices.Equal(got, []string{"a"}) {
		t.Fatalf("after b missed 3 heartbeats: %v", got)
	}
	if p := tr.Propagation("prod", 13); p.Applied != 1 || p.Total != 1 {
		t.Fatalf("propagation without b: %+v", p)
	}

	// A leaving heartbeat forgets at once; an invalid one changes nothing.
	leave := hb("a", "prod", 13)
	leave.Leaving = true
	tr.Record(leave)
	bad := hb("d", "prod", 1)
	bad.IntervalMillis = 1
	tr.Record(bad)
	if got := tr.Subscribers("prod"); len(got) != 0 {
		t.Fatalf("after a left and d was invalid: %v", subIDs(got))
	}

	// The bound is 4 in all. b and c (in dev) missed three heartbeats: they make room.
	for _, id := range []string{"e", "f", "g", "h", "i"} {
		tr.Record(hb(id, "prod", 1))
	}
	if got := subIDs(tr.Subscribers("prod")); !slices.Equal(got, []string{"e", "f", "g", "h"}) {
		t.Fatalf("with a bound of 4: %v", got)
	}
}

func TestSubscribersJSON(t *testing.T) {
	s := presence.Subscriber{ID: "a", Name: "svc", Environment: "prod", Sequence: 7, LastSeen: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC), IntervalMillis: 2000, Ready: true}
	b, err := json.Marshal(s)
	if err != nil {
		t.Fatal(err)
	}
	want := `{"id":"a","name":"svc","environment":"prod","sequence":7,"lastSeen":"2026-01-01T00:00:00Z","intervalMs":2000,"ready":true,"stale":false}`
	if string(b) != want {
		t.Fatalf("JSON %s, want %s", b, want)
	}
}

// TestAppliedOnNofM runs two real in-process subscribers over TCP and the tracker. One of them
// stops (its process dies: no goodbye), so it lags; the propagation of a kill shows 1 of 2 and
// names it.
func TestAppliedOnNofM(t *testing.T) {
	srv := natstest.RunServer(t)
	js := natstest.JetStream(t, srv)
	ctx := context.Background()
	store, err := events.Open(ctx, js, events.StreamConfig{})
	if err != nil {
		t.Fatal(err)
	}
	cmds := command.New(store, nil)
	meta := command.Meta{Actor: "test", Reason: "testing"}
	cfg := events.FlagConfig{
		Kind:           events.KindKillSwitch,
		Variants:       map[string]json.RawMessage{"on": json.RawMessage("true"), "off": json.RawMessage("false")},
		DefaultVariant: "on", OffVariant: "off", Enabled: true,
	}
	created, err := flagOf(cmds.Handle(ctx, command.CreateFlag{Meta: meta, Env: "prod", Key: "payments", Config: cfg}))
	if err != nil {
		t.Fatal(err)
	}

	tr, err := presence.New(natstest.Connect(t, srv), presence.Config{})
	if err != nil {
		t.Fatal(err)
	}
	runCtx, stop := context.WithCancel(ctx)
	trDone := make(chan error, 1)
	go func() { trDone <- tr.Run(runCtx) }()
	defer func() {
		stop()
		if err := <-trDone; err != nil {
			t.Errorf("tracker: %v", err)
		}
	}()

	// The fast one beats often; the one that will die announces a long interval, so that the
	// tracker still counts it as live when the kill comes.
	fast := run(t, natstest.Connect(t, srv), local.Config{Environment: "prod", ID: "fast", Name: "checkout-api", HeartbeatInterval: 100 * time.Millisecond})
	slowConn, err := nats.Connect(srv.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	slow := run(t, slowConn, local.Config{Environment: "prod", ID: "slow", Name: "billing-worker", HeartbeatInterval: time.Minute})
	await.Eventually(t, wait, func() bool {
		p := tr.Propagation("prod", created.Sequence)
		return p.Total == 2 && p.Applied == 2
	}, "both subscribers applied the flag's creation")

	slowConn.Close() // the process is gone without saying goodbye
	killed, err := flagOf(cmds.Handle(ctx, command.KillFlag{Meta: meta, Env: "prod", Key: "payments"}))
	if err != nil {
		t.Fatal(err)
	}
	await.Eventually(t, wait, func() bool { return tr.Propagation("prod", killed.Sequence).Applied == 1 }, "the fast subscriber applied the kill")
	p := tr.Propagation("prod", killed.Sequence)
	if p.Total != 2 || p.Applied != 1 || len(p.Pending) != 1 {
		t.Fatalf("propagation %+v, want 1 of 2", p)
	}
	if got := p.Pending[0]; got.ID != "slow" || got.Name != "billing-worker" || got.Sequence != created.Sequence {
		t.Fatalf("pending %+v, want the slow subscriber at sequence %d", got, created.Sequence)
	}
	if fast.Sequence() != killed.Sequence || slow.Sequence() != created.Sequence {
		t.Fatalf("fast at %d, slow at %d", fast.Sequence(), slow.Sequence())
	}

	// A subscriber that stops cleanly says goodbye and is not counted any more.
	if err := fast.Close(); err != nil {
		t.Fatal(err)
	}
	await.Eventually(t, wait, func() bool { return !slices.Contains(subIDs(tr.Subscribers("prod")), "fast") }, "the fast subscriber is forgotten once it left")
}

// run runs a client until the test ends.
func run(t *testing.T, nc *nats.Conn, cfg local.Config) *local.Client {
	t.Helper()
	c, err := local.New(nc, cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("client %s: %v", cfg.ID, err)
		}
		c.Close()
	})
	waitCtx, cancelWait := context.WithTimeout(context.Background(), wait)
	defer cancelWait()
	if err := c.WaitReady(waitCtx); err != nil {
		t.Fatalf("client %s not ready: %v", cfg.ID, err)
	}
	return c
}

// flagOf takes the flag out of what the command service's Handle returns.
func flagOf(r command.Result, err error) (projections.Flag, error) { return r.Flag, err }
