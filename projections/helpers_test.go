package projections_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/interlock-dev/interlock/events"
	"github.com/interlock-dev/interlock/internal/natstest"
	"github.com/interlock-dev/interlock/projections"
	"github.com/interlock-dev/interlock/targeting"
	"github.com/nats-io/nats-server/v2/server"
)

// t0 is the time of the first event the tests write; each later one is a minute after the last.
var t0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

func boolConfig() events.FlagConfig {
	return events.FlagConfig{
		Kind:           events.KindRelease,
		Variants:       map[string]json.RawMessage{"on": json.RawMessage("true"), "off": json.RawMessage("false")},
		DefaultVariant: "on",
		OffVariant:     "off",
		Enabled:        true,
	}
}

// event builds a valid event of one flag (no stream sequence). A type this version does not know
// is built as a newer writer would have written it.
func event(t testing.TB, typ, env, key string, version uint64, payload any) events.Event {
	t.Helper()
	known := typ
	if !events.Known(typ) {
		known = events.TypeFlagEnabled
	}
	ev, err := events.NewEvent(known, env, key, payload)
	if err != nil {
		t.Fatal(err)
	}
	ev.Type = typ
	ev.Actor, ev.Reason, ev.Version = "alice", "test", version
	return ev
}

// writer appends events to a real store the way the command side does: each flag's next version
// on its expected subject sequence, at times a minute apart from t0.
type writer struct {
	t     testing.TB
	store *events.Store
	last  map[string]events.Event
	now   time.Time
	all   []events.Event // every event written, in stream order
}

func newWriter(t testing.TB, st *events.Store) *writer {
	return &writer{t: t, store: st, last: make(map[string]events.Event), now: t0}
}

func openStore(t testing.TB, s *server.Server) *events.Store {
	t.Helper()
	st, err := events.Open(context.Background(), natstest.JetStream(t, s), events.StreamConfig{})
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// write appends the next event of env/key with the given actor and returns it as stored.
func (w *writer) write(actor, typ, env, key string, payload any) events.Event {
	w.t.Helper()
	prev := w.last[env+"/"+key]
	ev := event(w.t, typ, env, key, prev.Version+1, payload)
	ev.Actor = actor
	ev.Time = w.now
	w.now = w.now.Add(time.Minute)
	if _, err := w.store.Append(context.Background(), &ev, prev.Sequence); err != nil {
		w.t.Fatalf("append %s %s/%s: %v", typ, env, key, err)
	}
	w.last[env+"/"+key] = ev
	w.all = append(w.all, ev)
	return ev
}

func (w *writer) create(env, key string) events.Event {
	return w.write("alice", events.TypeFlagCreated, env, key, events.FlagCreated{Flag: boolConfig()})
}

func (w *writer) kill(env, key string) events.Event {
	return w.write("bob", events.TypeFlagKilled, env, key, events.FlagKilled{})
}

func (w *writer) enable(env, key string) events.Event {
	return w.write("alice", events.TypeFlagEnabled, env, key, events.FlagEnabled{})
}

func (w *writer) describe(env, key, description string) events.Event {
	cfg := boolConfig()
	cfg.Description = description
	return w.write("carol", events.TypeFlagUpdated, env, key, events.FlagUpdated{Flag: cfg})
}

func (w *writer) archive(env, key string) events.Event {
	return w.write("alice", events.TypeFlagArchived, env, key, events.FlagArchived{})
}

const env = "production"

func variantOf(set *targeting.Flagset, key string, ctx *targeting.EvalContext) string {
	e := set.Evaluate(key, ctx)
	if e.Variant == nil {
		return string(e.ErrorCode)
	}
	return e.Variant.Name
}

// The helpers below build the flags of the evaluation tests of rollouts and valves; the
// targeting package's tests have the same.

func stringConfig(values map[string]string, dflt string) events.FlagConfig {
	cfg := events.FlagConfig{Kind: events.KindConfig, Variants: map[string]json.RawMessage{}, DefaultVariant: dflt, OffVariant: dflt, Enabled: true}
	for k, v := range values {
		raw, _ := json.Marshal(v)
		cfg.Variants[k] = raw
	}
	return cfg
}

// targeted is a bool flag serving "on" when cond holds, "off" otherwise.
func targeted(cond events.Condition) events.FlagConfig {
	cfg := boolConfig()
	cfg.DefaultVariant = "off"
	cfg.Rules = []events.Rule{{Name: "r", Conditions: []events.Condition{cond}, Serve: events.Serve{Variant: "on"}}}
	return cfg
}

func cond(attr, op string, values ...any) events.Condition {
	return events.Condition{Attribute: attr, Operator: op, Values: values}
}

func segmentOf(key string, cfg events.SegmentConfig) projections.Segment {
	return projections.Segment{Key: key, Environment: env, SegmentConfig: cfg, Version: 1}
}

// compileSet compiles flags and segments, failing the test on an error or a document that does
// not compile.
func compileSet(t testing.TB, flags []projections.Flag, segs ...projections.Segment) *targeting.Flagset {
	t.Helper()
	set, err := targeting.CompileFlagset(env, 1, flags, segs)
	if err != nil {
		t.Fatal(err)
	}
	if errs := set.Errors(); len(errs) > 0 {
		t.Fatalf("documents do not compile: %v", errors.Join(errs...))
	}
	return set
}

func users(n int) []*targeting.EvalContext {
	out := make([]*targeting.EvalContext, n)
	for i := range out {
		out[i] = &targeting.EvalContext{TargetingKey: fmt.Sprintf("user-%d", i)}
	}
	return out
}
