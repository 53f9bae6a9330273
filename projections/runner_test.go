package projections_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"reflect"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/interlock-dev/interlock/events"
	"github.com/interlock-dev/interlock/internal/natstest"
	"github.com/interlock-dev/interlock/projections"
	"github.com/interlock-dev/interlock/targeting"
	"github.com/nats-io/nats.go"
)

// started runs r until the test ends, and checks that Run returned nil when its context ended.
func started(t *testing.T, r *projections.Runner) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v, want nil when its context ends", err)
		}
	})
}

func waitReady(t *testing.T, r *projections.Runner) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := r.WaitReady(ctx); err != nil {
		t.Fatalf("runner not ready: %v", err)
	}
}

func waitSequence(t *testing.T, c *projections.Catalog, seq uint64) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := c.WaitSequence(ctx, seq); err != nil {
		t.Fatalf("catalog at %d, not at %d: %v", c.Sequence(), seq, err)
	}
}

// gated is the real store with a gate in front of one delivery, to look at the runner mid-replay,
// and a record of where each Follow started. failAt makes the handler fail once at that sequence,
// as a broken connection would.
type gated struct {
	*events.Store
	holdAt  uint64
	held    chan struct{}
	release chan struct{}
	failAt  uint64

	mu      sync.Mutex
	starts  []uint64
	failed  bool
	wasHeld bool
}

var errInjected = errors.New("connection lost")

func (g *gated) Follow(ctx context.Context, q events.Query, h events.Handler) error {
	g.mu.Lock()
	g.starts = append(g.starts, q.FromSequence)
	g.mu.Unlock()
	return g.Store.Follow(ctx, q, func(ev events.Event, err error) error {
		g.mu.Lock()
		hold := ev.Sequence == g.holdAt && !g.wasHeld
		g.wasHeld = g.wasHeld || hold
		g.mu.Unlock()
		if hold {
			close(g.held)
			select {
			case <-g.release:
			case <-ctx.Done():
			}
		}
		g.mu.Lock()
		fail := ev.Sequence == g.failAt && !g.failed
		g.failed = g.failed || fail
		g.mu.Unlock()
		if fail {
			return errInjected
		}
		return h(ev, err)
	})
}

func TestRunnerReadyOnlyAfterCatchUp(t *testing.T) {
	st := openStore(t, natstest.RunServer(t))
	w := newWriter(t, st)
	for _, key := range []string{"a", "b", "c"} {
		w.create("production", key)
		w.kill("production", key)
	}
	w.create("staging", "a")
	last := w.enable("production", "b").Sequence

	held := make(chan struct{})
	src := &gated{Store: st, holdAt: 4, held: held, release: make(chan struct{})}
	c := projections.NewCatalog()
	r := projections.NewRunner(src, c, nil)
	if r.Ready() {
		t.Fatal("ready before running")
	}
	started(t, r)
	<-held
	if r.Ready() {
		t.Fatalf("ready at sequence %d of %d", c.Sequence(), last)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	if err := r.WaitReady(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("WaitReady mid-replay: %v", err)
	}
	cancel()
	close(src.release)
	waitReady(t, r)
	if !r.Ready() || c.Sequence() < last {
		t.Fatalf("ready %v at sequence %d, want caught up to %d", r.Ready(), c.Sequence(), last)
	}
	if f, _ := c.Flag("production", "b"); !f.Enabled || f.Version != 3 {
		t.Fatalf("production/b: %+v", f)
	}
	if f, _ := c.Flag("production", "c"); f.Enabled || f.Version != 2 {
		t.Fatalf("production/c: %+v", f)
	}
	if got := c.Environments(); !reflect.DeepEqual(got, []string{"production", "staging"}) {
		t.Fatalf("environments %v", got)
	}

	// It follows live appends.
	live := w.describe("production", "a", "live")
	waitSequence(t, c, live.Sequence)
	if f, _ := c.Flag("production", "a"); f.Description != "live" || f.Version != 3 {
		t.Fatalf("live update not applied: %+v", f)
	}
	created := w.create("production", "d")
	waitSequence(t, c, created.Sequence)
	if _, ok := c.Flag("production", "d"); !ok {
		t.Fatal("live creation not applied")
	}
}

func TestRunnerEmptyStreamIsReady(t *testing.T) {
	st := openStore(t, natstest.RunServer(t))
	c := projections.NewCatalog()
	r := projections.NewRunner(st, c, nil)
	started(t, r)
	waitReady(t, r)
	ev := newWriter(t, st).create("production", "a")
	waitSequence(t, c, ev.Sequence)
}

// A restart is a fresh replay: a second runner over the same stream builds an equal catalog.
func TestRunnerReplayIsDeterministic(t *testing.T) {
	st := openStore(t, natstest.RunServer(t))
	w := newWriter(t, st)
	for i, key := range []string{"a", "b", "c", "DeptA.TeamB.66623"} {
		w.create("production", key)
		w.describe("production", key, key+" flag")
		if i%2 == 0 {
			w.kill("production", key)
		}
	}
	w.create("staging", "a")
	w.archive("staging", "a")

	first := projections.NewCatalog()
	r1 := projections.NewRunner(st, first, nil)
	started(t, r1)
	waitReady(t, r1)
	last := w.enable("production", "a").Sequence
	waitSequence(t, first, last)

	second := projections.NewCatalog()
	r2 := projections.NewRunner(st, second, nil)
	started(t, r2)
	waitReady(t, r2)
	waitSequence(t, second, last)

	if !reflect.DeepEqual(first.Environments(), second.Environments()) {
		t.Fatalf("environments differ: %v vs %v", first.Environments(), second.Environments())
	}
	for _, env := range first.Environments() {
		a, b := first.Flags(env), second.Flags(env)
		if !reflect.DeepEqual(a, b) {
			t.Fatalf("%s differs after replay:\n%+v\n%+v", env, a, b)
		}
	}
	if f, _ := second.Flag("staging", "a"); !f.Archived {
		t.Fatalf("staging/a not archived: %+v", f)
	}
}

// Messages that are not events are logged with their sequence and skipped, even when the last
// message before the runner starts is one (readiness must not wait for it forever).
func TestRunnerSkipsMalformedMessages(t *testing.T) {
	s := natstest.RunServer(t)
	st := openStore(t, s)
	w := newWriter(t, st)
	w.create("production", "a")
	js := natstest.JetStream(t, s)
	ctx := context.Background()
	bad, err := js.PublishMsg(ctx, &nats.Msg{Subject: "interlock.production.flag.b", Data: []byte("garbage"), Header: nats.Header{}})
	if err != nil {
		t.Fatal(err)
	}

	var logs bytes.Buffer
	c := projections.NewCatalog()
	r := projections.NewRunner(st, c, slog.New(slog.NewJSONHandler(&logs, nil)))
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	waitReady(t, r)
	if c.Sequence() != bad.Sequence {
		t.Fatalf("sequence %d, want %d (past the bad message)", c.Sequence(), bad.Sequence)
	}
	next := w.kill("production", "a")
	waitSequence(t, c, next.Sequence)
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}

	found := false
	for line := range bytes.Lines(logs.Bytes()) {
		var rec struct {
			Component string `json:"component"`
			Sequence  uint64 `json:"sequence"`
			Level     string `json:"level"`
			Error     string `json:"error"`
		}
		if err := json.Unmarshal(line, &rec); err != nil {
			t.Fatalf("log line %q: %v", line, err)
		}
		if rec.Component != "projections" {
			t.Fatalf("log line without component=projections: %s", line)
		}
		if rec.Level == "WARN" && rec.Sequence == bad.Sequence && rec.Error != "" {
			found = true
		}
	}
	if !found {
		t.Fatalf("no warning naming sequence %d in the logs:\n%s", bad.Sequence, logs.String())
	}
}

// After following fails, the runner resumes from the event after the catalog's sequence, so every
// event is applied once and none is lost.
func TestRunnerResumesAfterFollowError(t *testing.T) {
	st := openStore(t, natstest.RunServer(t))
	w := newWriter(t, st)
	for _, key := range []string{"a", "b", "c"} {
		w.create("production", key)
		w.kill("production", key)
	}
	src := &gated{Store: st, failAt: 4}
	c := projections.NewCatalog()
	r := projections.NewRunner(src, c, nil)
	started(t, r)
	waitReady(t, r)
	last := w.enable("production", "c").Sequence
	waitSequence(t, c, last)

	src.mu.Lock()
	starts := slices.Clone(src.starts)
	src.mu.Unlock()
	if !reflect.DeepEqual(starts, []uint64{1, 4}) {
		t.Fatalf("follow started at %v, want [1 4]: resume from the first event not applied", starts)
	}
	for _, key := range []string{"a", "b"} {
		if f, _ := c.Flag("production", key); f.Version != 2 || f.Enabled {
			t.Fatalf("production/%s: %+v", key, f)
		}
	}
	if f, _ := c.Flag("production", "c"); f.Version != 3 || !f.Enabled {
		t.Fatalf("production/c: %+v", f)
	}
}

func TestRunnerRunsOnce(t *testing.T) {
	st := openStore(t, natstest.RunServer(t))
	r := projections.NewRunner(st, projections.NewCatalog(), nil)
	started(t, r)
	waitReady(t, r)
	if err := r.Run(context.Background()); err == nil {
		t.Fatal("a second concurrent Run returned nil")
	}
}

// A catalog ahead of the stream means the stream was replaced: following it would silently miss
// every event up to the catalog's sequence.
func TestRunnerRefusesStreamBehindCatalog(t *testing.T) {
	st := openStore(t, natstest.RunServer(t))
	c := projections.NewCatalog()
	if err := c.Apply(seqd(event(t, events.TypeFlagCreated, "production", "a", 1, events.FlagCreated{Flag: boolConfig()}), 5)); err != nil {
		t.Fatal(err)
	}
	r := projections.NewRunner(st, c, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := r.Run(ctx); !errors.Is(err, projections.ErrOutOfOrder) {
		t.Fatalf("Run over a stream behind the catalog: %v, want ErrOutOfOrder", err)
	}
}

// TestEvaluatorsWithRunner: the evaluators of a catalog rebuilt and followed by a real runner on
// an embedded JetStream server serve what was written, and a kill as soon as WaitSequence says.
func TestEvaluatorsWithRunner(t *testing.T) {
	srv := natstest.RunServer(t)
	st := openStore(t, srv)
	w := newWriter(t, st)
	w.create(env, "a")
	w.create(env, "b")
	w.kill(env, "b")

	c := projections.NewCatalog()
	e := targeting.NewEvaluators(c)
	r := projections.NewRunner(st, c, nil)
	started(t, r)
	waitReady(t, r)
	set := e.Flagset(env)
	if variantOf(set, "a", nil) != "on" || variantOf(set, "b", nil) != "off" || set.Sequence() != 3 {
		t.Fatalf("after the replay: a %s, b %s at %d", variantOf(set, "a", nil), variantOf(set, "b", nil), set.Sequence())
	}
	ch, stop := e.Watch(env)
	defer stop()
	ev := w.kill(env, "a")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := e.WaitSequence(ctx, ev.Sequence); err != nil {
		t.Fatal(err)
	}
	if got := e.Flagset(env).Evaluate("a", nil); got.Reason != targeting.ReasonDisabled {
		t.Errorf("after the kill: %+v", got)
	}
	select {
	case <-ch:
	case <-ctx.Done():
		t.Fatal("no change notification for the kill")
	}
}
