package local_test

import (
	"context"
	"encoding/json"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/interlock-dev/interlock/events"
	"github.com/interlock-dev/interlock/internal/command"
	"github.com/interlock-dev/interlock/internal/natstest"
	"github.com/interlock-dev/interlock/internal/snapshot"
	"github.com/interlock-dev/interlock/local"
	"github.com/interlock-dev/interlock/projections"
	"github.com/interlock-dev/interlock/targeting"
)

// wait bounds every asynchronous check.
const wait = 20 * time.Second

// system is the server side, in process: a JetStream server over TCP, the event store and the
// command service that appends to it.
type system struct {
	srv   *server.Server
	js    jetstream.JetStream
	store *events.Store
	cmds  *command.Service
}

func boot(t testing.TB, opts ...natstest.Options) *system {
	t.Helper()
	return attach(t, natstest.RunServer(t, opts...))
}

// attach opens the store and the command service on a running server.
func attach(t testing.TB, srv *server.Server) *system {
	t.Helper()
	js := natstest.JetStream(t, srv)
	store, err := events.Open(context.Background(), js, events.StreamConfig{})
	if err != nil {
		t.Fatalf("open store: %v", err)
	}
	return &system{srv: srv, js: js, store: store, cmds: command.New(store, nil)}
}

// appendEvent appends an event straight to the store (segments have no commands yet, and some
// tests need events that commands would refuse) and returns its sequence.
func (s *system) appendEvent(t testing.TB, typ, env, key string, version uint64, payload any) uint64 {
	t.Helper()
	ev, err := events.NewEvent(typ, env, key, payload)
	if err != nil {
		t.Fatal(err)
	}
	ev.Actor, ev.Version = "test", version
	var last uint64
	err = s.store.Read(context.Background(), events.Query{Subjects: []string{ev.Subject()}}, func(e events.Event, _ error) error {
		last = e.Sequence
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	seq, err := s.store.Append(context.Background(), &ev, last)
	if err != nil {
		t.Fatalf("append %s: %v", typ, err)
	}
	return seq
}

var meta = command.Meta{Actor: "test", Reason: "testing"}

func boolFlag(enabled bool) events.FlagConfig {
	return events.FlagConfig{
		Kind:           events.KindRelease,
		Variants:       map[string]json.RawMessage{"on": json.RawMessage("true"), "off": json.RawMessage("false")},
		DefaultVariant: "on", OffVariant: "off", Enabled: enabled,
	}
}

func (s *system) create(t testing.TB, env, key string, cfg events.FlagConfig) projections.Flag {
	t.Helper()
	f, err := flagOf(s.cmds.Handle(context.Background(), command.CreateFlag{Meta: meta, Env: env, Key: key, Config: cfg}))
	if err != nil {
		t.Fatalf("create %s/%s: %v", env, key, err)
	}
	return f
}

func (s *system) kill(t testing.TB, env, key string) projections.Flag {
	t.Helper()
	f, err := flagOf(s.cmds.Handle(context.Background(), command.KillFlag{Meta: meta, Env: env, Key: key}))
	if err != nil {
		t.Fatalf("kill %s/%s: %v", env, key, err)
	}
	return f
}

func (s *system) enable(t testing.TB, env, key string) projections.Flag {
	t.Helper()
	f, err := flagOf(s.cmds.Handle(context.Background(), command.EnableFlag{Meta: meta, Env: env, Key: key}))
	if err != nil {
		t.Fatalf("enable %s/%s: %v", env, key, err)
	}
	return f
}

// connect opens a client connection over TCP that reconnects for ever, as a service's would.
func connect(t testing.TB, srv *server.Server) *nats.Conn {
	t.Helper()
	return natstest.Connect(t, srv, nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond))
}

// snapshotNow runs the server's projections until they hold every event, and writes the snapshot
// of every environment with the server's snapshot writer.
func (s *system) snapshotNow(t testing.TB) {
	t.Helper()
	ctx := context.Background()
	catalog := projections.NewCatalog()
	w, err := snapshot.New(s.js, snapshot.Config{State: catalog})
	if err != nil {
		t.Fatal(err)
	}
	catalog.Observe(w.Observe)
	runner := projections.NewRunner(s.store, catalog, slog.New(slog.DiscardHandler))
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- runner.Run(runCtx) }()
	defer func() {
		stop()
		if err := <-done; err != nil {
			t.Errorf("runner: %v", err)
		}
	}()
	waitCtx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	if err := runner.WaitReady(waitCtx); err != nil {
		t.Fatalf("runner: %v", err)
	}
	if err := w.Flush(waitCtx); err != nil {
		t.Fatalf("flush snapshots: %v", err)
	}
}

// start makes a client of cfg over nc and runs it until the test ends; the test fails if Run
// returns an error. The observers are registered before it runs, so they see its every notice.
func start(t testing.TB, nc *nats.Conn, cfg local.Config, observers ...func(local.Notice)) *local.Client {
	t.Helper()
	c, err := local.New(nc, cfg)
	if err != nil {
		t.Fatalf("new client: %v", err)
	}
	for _, fn := range observers {
		c.Observe(fn)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("run: %v", err)
		}
		c.Close()
	})
	return c
}

func waitReady(t testing.TB, c *local.Client) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	if err := c.WaitReady(ctx); err != nil {
		t.Fatalf("client not ready: %v", err)
	}
}

func waitSequence(t testing.TB, c *local.Client, seq uint64) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	if err := c.WaitSequence(ctx, seq); err != nil {
		t.Fatalf("client at sequence %d, not %d: %v", c.Sequence(), seq, err)
	}
}

// notices records what a client tells its observers.
type notices struct {
	mu   sync.Mutex
	list []local.Notice
}

func (n *notices) observe(x local.Notice) {
	n.mu.Lock()
	n.list = append(n.list, x)
	n.mu.Unlock()
}

func (n *notices) kinds() []local.NoticeKind {
	n.mu.Lock()
	defer n.mu.Unlock()
	out := make([]local.NoticeKind, len(n.list))
	for i, x := range n.list {
		out[i] = x.Kind
	}
	return out
}

func (n *notices) has(kind local.NoticeKind) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	for _, x := range n.list {
		if x.Kind == kind {
			return true
		}
	}
	return false
}

func (n *notices) all() []local.Notice {
	n.mu.Lock()
	defer n.mu.Unlock()
	return append([]local.Notice(nil), n.list...)
}

// serves evaluates key with no context and returns the served variant's name and the reason.
func serves(c *local.Client, key string) (string, targeting.Reason) {
	ev := c.Evaluate(key, &targeting.EvalContext{})
	if ev.Variant == nil {
		return "", ev.Reason
	}
	return ev.Variant.Name, ev.Reason
}

// flagOf takes the flag out of what the command service's Handle returns.
func flagOf(r command.Result, err error) (projections.Flag, error) { return r.Flag, err }
