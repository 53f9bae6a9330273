package snapshot_test

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/interlock-dev/interlock/events"
	"github.com/interlock-dev/interlock/internal/await"
	"github.com/interlock-dev/interlock/internal/command"
	"github.com/interlock-dev/interlock/internal/natstest"
	"github.com/interlock-dev/interlock/internal/snapshot"
	"github.com/interlock-dev/interlock/local"
	"github.com/interlock-dev/interlock/projections"
)

const wait = 20 * time.Second

func TestConfigValidate(t *testing.T) {
	cat := projections.NewCatalog()
	cases := []struct {
		name string
		cfg  snapshot.Config
		want []string
	}{
		{"minimal", snapshot.Config{State: cat}, nil},
		{"no state", snapshot.Config{}, []string{"state"}},
		{"every problem", snapshot.Config{Replicas: 7, Every: -1, Interval: -time.Second}, []string{"state", "replicas", "every", "interval"}},
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
}

// system is a server with the store, the command service, and the catalog folded by its runner
// with a snapshot writer observing it.
type system struct {
	js      jetstream.JetStream
	store   *events.Store
	cmds    *command.Service
	catalog *projections.Catalog
	runner  *projections.Runner
	writer  *snapshot.Writer
}

func boot(t *testing.T, cfg snapshot.Config, runWriter bool) *system {
	t.Helper()
	ctx := context.Background()
	js := natstest.JetStream(t, natstest.RunServer(t))
	store, err := events.Open(ctx, js, events.StreamConfig{})
	if err != nil {
		t.Fatal(err)
	}
	s := &system{js: js, store: store, cmds: command.New(store, nil), catalog: projections.NewCatalog()}
	cfg.State = s.catalog
	s.runner = projections.NewRunner(store, s.catalog, slog.New(slog.DiscardHandler))
	if cfg.Ready == nil {
		cfg.Ready = s.runner.Ready
	}
	if s.writer, err = snapshot.New(js, cfg); err != nil {
		t.Fatal(err)
	}
	s.catalog.Observe(s.writer.Observe)
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 2)
	n := 1
	go func() { done <- s.runner.Run(runCtx) }()
	if runWriter {
		n++
		go func() { done <- s.writer.Run(runCtx) }()
	}
	t.Cleanup(func() {
		stop()
		for range n {
			if err := <-done; err != nil {
				t.Errorf("run: %v", err)
			}
		}
	})
	waitCtx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	if err := s.runner.WaitReady(waitCtx); err != nil {
		t.Fatal(err)
	}
	return s
}

var meta = command.Meta{Actor: "test", Reason: "testing"}

func flagConfig() events.FlagConfig {
	return events.FlagConfig{
		Kind:           events.KindRelease,
		Variants:       map[string]json.RawMessage{"on": json.RawMessage("true"), "off": json.RawMessage("false")},
		DefaultVariant: "on", OffVariant: "off",
	}
}

func (s *system) create(t *testing.T, env, key string) uint64 {
	t.Helper()
	f, err := flagOf(s.cmds.Handle(context.Background(), command.CreateFlag{Meta: meta, Env: env, Key: key, Config: flagConfig()}))
	if err != nil {
		t.Fatal(err)
	}
	s.waitApplied(t, f.Sequence)
	return f.Sequence
}

func (s *system) waitApplied(t *testing.T, seq uint64) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	if err := s.catalog.WaitSequence(ctx, seq); err != nil {
		t.Fatal(err)
	}
}

// stored reads the snapshot of env; ok is false when there is none.
func (s *system) stored(t *testing.T, env string) (local.Snapshot, bool) {
	t.Helper()
	ctx := context.Background()
	obs, err := s.js.ObjectStore(ctx, local.DefaultSnapshotBucket)
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		return local.Snapshot{}, false
	}
	if err != nil {
		t.Fatal(err)
	}
	data, err := obs.GetBytes(ctx, env)
	if errors.Is(err, jetstream.ErrObjectNotFound) {
		return local.Snapshot{}, false
	}
	if err != nil {
		t.Fatal(err)
	}
	snap, err := local.DecodeSnapshot(env, data)
	if err != nil {
		t.Fatalf("stored snapshot of %s: %v", env, err)
	}
	return snap, true
}

func TestEveryNEvents(t *testing.T) {
	s := boot(t, snapshot.Config{Every: 3, Interval: time.Hour}, true)
	s.create(t, "prod", "a")
	s.create(t, "prod", "b")
	s.create(t, "dev", "x")
	if _, ok := s.stored(t, "prod"); ok {
		t.Fatal("a snapshot of prod after 2 of its events, with Every 3")
	}
	segEv, err := events.NewEvent(events.TypeSegmentCreated, "prod", "beta", events.SegmentCreated{Segment: events.SegmentConfig{Included: []string{"u1"}}})
	if err != nil {
		t.Fatal(err)
	}
	segEv.Actor, segEv.Version = "test", 1
	seq, err := s.store.Append(context.Background(), &segEv, 0)
	if err != nil {
		t.Fatal(err)
	}
	var snap local.Snapshot
	await.Eventually(t, wait, func() bool {
		var ok bool
		snap, ok = s.stored(t, "prod")
		return ok
	}, "a snapshot of prod after its third event")
	if snap.Sequence != seq || len(snap.Flags) != 2 || len(snap.Segments) != 1 {
		t.Fatalf("snapshot at %d with %d flags and %d segments; want %d, 2, 1", snap.Sequence, len(snap.Flags), len(snap.Segments), seq)
	}
	for _, f := range snap.Flags {
		want, _ := s.catalog.Flag("prod", f.Key)
		got, _ := json.Marshal(f)
		wantJSON, _ := json.Marshal(want)
		if string(got) != string(wantJSON) {
			t.Errorf("flag %s in the snapshot:\n%s\nin the catalog:\n%s", f.Key, got, wantJSON)
		}
	}
	if snap.Segments[0].Key != "beta" || len(snap.Segments[0].Included) != 1 {
		t.Errorf("segment %+v", snap.Segments[0])
	}
	if _, err := snap.Compile(); err != nil {
		t.Errorf("the snapshot does not compile: %v", err)
	}
	if _, ok := s.stored(t, "dev"); ok {
		t.Error("a snapshot of dev after 1 event, with Every 3")
	}
}

func TestInterval(t *testing.T) {
	s := boot(t, snapshot.Config{Every: 1000, Interval: 200 * time.Millisecond}, true)
	seq := s.create(t, "prod", "a")
	await.Eventually(t, wait, func() bool {
		snap, ok := s.stored(t, "prod")
		return ok && snap.Sequence == seq
	}, "a snapshot after the interval")
}

func TestNotBeforeReady(t *testing.T) {
	var ready atomic.Bool
	s := boot(t, snapshot.Config{Ready: ready.Load}, false)
	seq := s.create(t, "prod", "a")
	ctx := context.Background()
	if err := s.writer.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if _, ok := s.stored(t, "prod"); ok {
		t.Fatal("a snapshot was written before the catalog was ready")
	}
	ready.Store(true)
	if err := s.writer.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if snap, ok := s.stored(t, "prod"); !ok || snap.Sequence != seq {
		t.Fatalf("after ready: snapshot %v at %d, want %d", ok, snap.Sequence, seq)
	}
}

// TestNeverGoesBack: a writer that knows less than the stored snapshot (a replica behind the
// others) leaves it alone.
func TestNeverGoesBack(t *testing.T) {
	s := boot(t, snapshot.Config{}, false)
	s.create(t, "prod", "a")
	last := s.create(t, "prod", "b")
	ctx := context.Background()
	if err := s.writer.Flush(ctx); err != nil {
		t.Fatal(err)
	}

	behind := projections.NewCatalog()
	w, err := snapshot.New(s.js, snapshot.Config{State: behind})
	if err != nil {
		t.Fatal(err)
	}
	behind.Observe(w.Observe)
	evs, err := s.store.Load(ctx, "prod", "a")
	if err != nil {
		t.Fatal(err)
	}
	if err := behind.Apply(evs[0]); err != nil {
		t.Fatal(err)
	}
	if err := w.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if snap, _ := s.stored(t, "prod"); snap.Sequence != last || len(snap.Flags) != 2 {
		t.Fatalf("stored snapshot went back to sequence %d with %d flags", snap.Sequence, len(snap.Flags))
	}
}

// flagOf takes the flag out of what the command service's Handle returns.
func flagOf(r command.Result, err error) (projections.Flag, error) { return r.Flag, err }
