package projections_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/json"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/interlock-dev/interlock/events"
	"github.com/interlock-dev/interlock/internal/await"
	"github.com/interlock-dev/interlock/internal/natstest"
	"github.com/interlock-dev/interlock/projections"
)

// randomStream is a stream written from a seed: flags and segments in two environments, by four
// actors, at times that mostly rise but sometimes go back (a writer's clock behind), with
// events the fold refuses, messages that are not events and, on a signing store, events that
// fail verification.
type randomStream struct {
	t    *testing.T
	rnd  *rand.Rand
	st   *events.Store
	js   publishFunc
	w    *writer
	segs *segments
}

var (
	randomEnvs   = []string{"prod", "staging"}
	randomKeys   = []string{"a", "b", "c", "team.svc.d"}
	randomActors = []string{"alice", "bob", "carol", "guard"}
)

// createFlags creates every flag but the last of randomKeys in each environment, so that most
// of the random events that follow fold (an event on a flag that was not created is refused).
func (s *randomStream) createFlags() {
	for _, env := range randomEnvs {
		for _, key := range randomKeys[:len(randomKeys)-1] {
			s.w.create(env, key)
		}
	}
}

// write appends n random messages.
func (s *randomStream) write(n int) {
	s.t.Helper()
	for range n {
		env := randomEnvs[s.rnd.IntN(len(randomEnvs))]
		key := randomKeys[s.rnd.IntN(len(randomKeys))]
		actor := randomActors[s.rnd.IntN(len(randomActors))]
		switch d := s.rnd.IntN(10); {
		case d == 0:
			s.w.now = s.w.now.Add(-time.Duration(s.rnd.IntN(5)) * time.Minute) // a clock behind
		case d == 1 && s.rnd.IntN(3) == 0:
			s.raw(env, key, actor)
			continue
		}
		if s.rnd.IntN(4) == 0 {
			seg := s.segs.last[env+"/"+key]
			typ, payload := events.TypeSegmentUpdated, any(events.SegmentUpdated{Segment: events.SegmentConfig{Included: []string{actor}}})
			if seg.Version == 0 || s.rnd.IntN(8) == 0 {
				typ, payload = events.TypeSegmentCreated, events.SegmentCreated{Segment: events.SegmentConfig{Description: actor}}
			}
			s.appendSegment(actor, typ, env, key, payload)
			continue
		}
		var typ string
		var payload any
		switch s.rnd.IntN(6) {
		case 0:
			typ, payload = events.TypeFlagCreated, events.FlagCreated{Flag: boolConfig()} // refused when it exists
		case 1:
			typ, payload = events.TypeFlagKilled, events.FlagKilled{}
		case 2:
			typ, payload = events.TypeFlagEnabled, events.FlagEnabled{}
		case 3:
			cfg := boolConfig()
			cfg.Description = fmt.Sprint(s.rnd.IntN(100))
			typ, payload = events.TypeFlagUpdated, events.FlagUpdated{Flag: cfg}
		case 4:
			typ, payload = events.TypeFlagArchived, events.FlagArchived{}
		default:
			typ, payload = events.TypeFlagUnarchived, events.FlagUnarchived{}
		}
		s.w.write(actor, typ, env, key, payload)
	}
}

func (s *randomStream) appendSegment(actor, typ, env, key string, payload any) {
	s.t.Helper()
	prev := s.segs.last[env+"/"+key]
	ev := event(s.t, typ, env, key, prev.Version+1, payload)
	ev.Actor, ev.Time = actor, s.w.now
	s.w.now = s.w.now.Add(time.Minute)
	if _, err := s.st.Append(context.Background(), &ev, prev.Sequence); err != nil {
		s.t.Fatalf("append %s %s/%s: %v", typ, env, key, err)
	}
	s.segs.last[env+"/"+key] = ev
	s.w.all = append(s.w.all, ev)
}

// raw publishes, bypassing the store, a message that is not an event or (on a signing store) an
// unsigned event: both are skipped, and shown as unreadable in the history.
func (s *randomStream) raw(env, key, actor string) {
	s.t.Helper()
	msg := &nats.Msg{Subject: events.FlagSubject(env, key), Data: []byte("not an event"), Header: nats.Header{}}
	if s.rnd.IntN(2) == 0 {
		ev := event(s.t, events.TypeFlagKilled, env, key, 99, events.FlagKilled{})
		ev.Actor, ev.Time = actor, s.w.now
		msg = ev.Msg()
	}
	seq, err := s.js(context.Background(), msg)
	if err != nil {
		s.t.Fatal(err)
	}
	// The subject's last message, which the next append expects.
	prev := s.w.last[env+"/"+key]
	prev.Sequence = seq
	s.w.last[env+"/"+key] = prev
}

// indexRun runs a runner keeping an index over st until it has handled every message up to
// seq, then stops it, so that what follows in the stream is after the index.
func indexRun(t *testing.T, st *events.Store, seq uint64, opts ...projections.RunnerOption) (*projections.Runner, *projections.Index, string) {
	t.Helper()
	ix := projections.NewIndex()
	var logs bytes.Buffer
	c := projections.NewCatalog()
	r := projections.NewRunner(st, c, slog.New(slog.NewTextHandler(&logs, nil)), append(opts, projections.WithIndex(ix))...)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	await.Eventually(t, 10*time.Second, func() bool { return c.Sequence() >= seq }, "runner caught up")
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if ix.Sequence() != c.Sequence() {
		t.Fatalf("index at sequence %d, catalog at %d", ix.Sequence(), c.Sequence())
	}
	return r, ix, logs.String()
}

// sameResults runs every history, as-of and audit query on the plain store and through the
// index, and fails on the first that differs.
func sameResults(t *testing.T, st *events.Store, ix *projections.Index, w *writer, rnd *rand.Rand) {
	t.Helper()
	ctx := context.Background()
	ir := projections.NewIndexedReader(st, ix)
	check := func(what string, get func(projections.Reader) (any, error)) {
		t.Helper()
		want, werr := get(st)
		got, gerr := get(ir)
		if fmt.Sprint(werr) != fmt.Sprint(gerr) || !reflect.DeepEqual(got, want) {
			gj, _ := json.Marshal(got)
			wj, _ := json.Marshal(want)
			t.Fatalf("%s through the index:\n got %s %v\nwant %s %v", what, gj, gerr, wj, werr)
		}
	}
	end := w.now.Add(time.Minute)
	var points []projections.Point
	for range 3 {
		points = append(points,
			projections.Point{Time: t0.Add(time.Duration(rnd.Int64N(int64(end.Sub(t0)))))},
			projections.Point{Sequence: 1 + rnd.Uint64N(uint64(len(w.all))+3)})
	}
	for _, env := range randomEnvs {
		// Random points, and those on either side of each state the index saved.
		for _, p := range append(points, projections.StatePoints(ix, env)...) {
			check(fmt.Sprintf("environment %s at %v", env, p), func(r projections.Reader) (any, error) {
				return projections.EnvironmentAt(ctx, r, env, p)
			})
		}
		for _, key := range append(randomKeys, "never") {
			check("history of "+env+"/"+key, func(r projections.Reader) (any, error) { return projections.FlagHistory(ctx, r, env, key) })
			check("history of segment "+env+"/"+key, func(r projections.Reader) (any, error) { return projections.SegmentHistory(ctx, r, env, key) })
			for _, p := range append(points, projections.Point{Version: 1 + rnd.Uint64N(8)}) {
				check(fmt.Sprintf("%s/%s at %v", env, key, p), func(r projections.Reader) (any, error) { return projections.FlagAt(ctx, r, env, key, p) })
				check(fmt.Sprintf("segment %s/%s at %v", env, key, p), func(r projections.Reader) (any, error) {
					return projections.SegmentAt(ctx, r, env, key, p)
				})
			}
		}
	}
	queries := []projections.AuditQuery{{}, {Limit: 2 + rnd.IntN(5)}}
	for _, actor := range append(randomActors, "nobody") {
		queries = append(queries, projections.AuditQuery{Actor: actor, Limit: 3 + rnd.IntN(6)})
	}
	for _, env := range randomEnvs {
		queries = append(queries,
			projections.AuditQuery{Environment: env, Limit: 3 + rnd.IntN(6)},
			projections.AuditQuery{Environment: env, Actor: randomActors[rnd.IntN(len(randomActors))], Limit: 3 + rnd.IntN(6)},
			projections.AuditQuery{Environment: env, Flag: randomKeys[rnd.IntN(len(randomKeys))], Limit: 3 + rnd.IntN(6)},
			projections.AuditQuery{Environment: env, Flag: randomKeys[rnd.IntN(len(randomKeys))], Actor: randomActors[rnd.IntN(len(randomActors))]},
		)
	}
	for range 2 {
		since := t0.Add(time.Duration(rnd.Int64N(int64(end.Sub(t0)))))
		queries = append(queries,
			projections.AuditQuery{Actor: randomActors[rnd.IntN(len(randomActors))], Since: since, Limit: 3 + rnd.IntN(6)},
			projections.AuditQuery{Actor: randomActors[rnd.IntN(len(randomActors))], Types: []string{events.TypeFlagKilled, events.TypeSegmentCreated}},
			projections.AuditQuery{Environment: randomEnvs[rnd.IntN(2)], Since: since, Until: since.Add(20 * time.Minute)},
		)
	}
	for _, q := range queries {
		// Every page, following the cursors.
		for page := 0; page < 1000; page++ {
			var next uint64
			check(fmt.Sprintf("audit %+v", q), func(r projections.Reader) (any, error) {
				p, err := projections.Audit(ctx, r, q)
				next = p.Next
				return p, err
			})
			if next == 0 {
				break
			}
			q.After = next
		}
	}
}

func newRandomStream(t *testing.T, seed uint64, signed bool) *randomStream {
	t.Helper()
	s := natstest.RunServer(t)
	js := natstest.JetStream(t, s)
	var opts []events.Option
	if signed {
		_, key, _ := ed25519.GenerateKey(nil)
		signer, err := events.NewSigner(key)
		if err != nil {
			t.Fatal(err)
		}
		opts = append(opts, events.WithSigner(signer))
	}
	st, err := events.Open(context.Background(), js, events.StreamConfig{}, opts...)
	if err != nil {
		t.Fatal(err)
	}
	w := newWriter(t, st)
	return &randomStream{
		t: t, rnd: rand.New(rand.NewPCG(seed, 1)), st: st, w: w,
		segs: &segments{w: w, last: make(map[string]events.Event)},
		js: func(ctx context.Context, msg *nats.Msg) (uint64, error) {
			ack, err := js.PublishMsg(ctx, msg)
			if err != nil {
				return 0, err
			}
			return ack.Sequence, nil
		},
	}
}

// publishFunc publishes a message past the store and returns its sequence.
type publishFunc func(ctx context.Context, msg *nats.Msg) (uint64, error)

// TestIndexMatchesScan checks, on random streams, that every history, as-of and audit query
// gives through the index what it gives reading the stream: with the index covering the whole
// stream, with events after the index, and with an index restored from a checkpoint.
func TestIndexMatchesScan(t *testing.T) {
	for seed := range uint64(4) {
		t.Run(fmt.Sprint("seed ", seed), func(t *testing.T) {
			if seed%2 == 0 {
				// Every message fetched by its sequence, none read with a filtered read.
				defer projections.SetDense(0, 0)()
			} else {
				// Any dense run of messages read with a filtered read, however short.
				defer projections.SetDense(16, 1)()
			}
			// An environment's state saved every few of its messages, at most four kept: the
			// as-of queries start from them, and thinning runs many times.
			defer projections.SetStates(3+int(seed), 4)()
			s := newRandomStream(t, seed, seed%2 == 1)
			s.createFlags()
			s.write(60 + s.rnd.IntN(60))
			last, err := s.st.LastSequence(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			r, ix, _ := indexRun(t, s.st, last)
			for _, env := range randomEnvs {
				if n, flags := ix.States(env); n < 2 || n > 4 || flags == 0 {
					t.Fatalf("the index keeps %d states of %s (%d flags), want 2 to 4 holding flags", n, env, flags)
				}
			}
			sameResults(t, s.st, ix, s.w, s.rnd)

			// Events after the index: the queries read them from the stream.
			s.write(30 + s.rnd.IntN(30))
			sameResults(t, s.st, ix, s.w, s.rnd)

			// An index restored from the first runner's checkpoint, followed by the events
			// after it.
			cp := r.Checkpoint()
			data, err := cp.Encode()
			if err != nil {
				t.Fatal(err)
			}
			cp, err = projections.DecodeCheckpoint(data)
			if err != nil {
				t.Fatal(err)
			}
			last, _ = s.st.LastSequence(context.Background())
			_, restored, logs := indexRun(t, s.st, last, projections.WithCheckpoints(loader{cp, nil}))
			if !strings.Contains(logs, "starting from a checkpoint") {
				t.Fatalf("the runner did not start from the checkpoint:\n%s", logs)
			}
			_, full, _ := indexRun(t, s.st, last)
			if gs, ga, gb := restored.Len(); true {
				if ws, wa, wb := full.Len(); gs != ws || ga != wa || gb != wb {
					t.Fatalf("restored index holds %d subjects, %d actors, %d bytes; a replay's %d, %d, %d", gs, ga, gb, ws, wa, wb)
				}
			}
			for _, env := range randomEnvs {
				gn, gf := restored.States(env)
				wn, wf := full.States(env)
				if gn != wn || gf != wf || !reflect.DeepEqual(projections.StatePoints(restored, env), projections.StatePoints(full, env)) {
					t.Fatalf("restored index keeps %d states of %s (%d flags), a replay's %d (%d)", gn, env, gf, wn, wf)
				}
			}
			sameResults(t, s.st, restored, s.w, s.rnd)
		})
	}
}

// loader is a CheckpointLoader giving one checkpoint, or an error.
type loader struct {
	cp  projections.Checkpoint
	err error
}

func (l loader) LoadCheckpoint(context.Context) (projections.Checkpoint, error) { return l.cp, l.err }

// TestIndexCheckpointFallsBack checks that a runner keeping an index replays the stream rather
// than start from a checkpoint without one, of the previous format, or with a spoilt list.
func TestIndexCheckpointFallsBack(t *testing.T) {
	s := newRandomStream(t, 42, false)
	s.write(40)
	last, _ := s.st.LastSequence(context.Background())
	plain, _, _ := indexRunPlain(t, s.st, last)
	withIndex, ix, _ := indexRun(t, s.st, last)
	good, err := func() ([]byte, error) { cp := withIndex.Checkpoint(); return cp.Encode() }()
	if err != nil {
		t.Fatal(err)
	}
	spoil := func(f func(doc map[string]any)) []byte {
		var doc map[string]any
		if err := json.Unmarshal(good, &doc); err != nil {
			t.Fatal(err)
		}
		f(doc)
		data, _ := json.Marshal(doc)
		return data
	}
	noIndex := plain.Checkpoint()
	tests := []struct {
		name string
		cp   func() (projections.Checkpoint, error)
		log  string
	}{
		{"without an index", func() (projections.Checkpoint, error) { return noIndex, nil }, "holds no history index"},
		{"the previous format", func() (projections.Checkpoint, error) {
			return projections.DecodeCheckpoint(spoil(func(doc map[string]any) { doc["format"] = 1 }))
		}, "format 1, this version reads 3"},
		{"a list that does not add up", func() (projections.Checkpoint, error) {
			return projections.DecodeCheckpoint(spoil(func(doc map[string]any) {
				l := doc["index"].(map[string]any)["subjects"].([]any)[0].(map[string]any)
				l["n"] = l["n"].(float64) + 1
			}))
		}, "index list"},
		{"a list past the checkpoint", func() (projections.Checkpoint, error) {
			return projections.DecodeCheckpoint(spoil(func(doc map[string]any) {
				l := doc["index"].(map[string]any)["actors"].([]any)[0].(map[string]any)
				l["seqs"], l["n"], l["last"] = "AQ==", 1, 1 // one sequence, 1
				doc["index"].(map[string]any)["sequence"] = last + 1
			}))
		}, "index at sequence"},
		{"missing", func() (projections.Checkpoint, error) {
			return projections.Checkpoint{}, fmt.Errorf("none: %w", projections.ErrNotFound)
		}, "no checkpoint"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cp, err := tc.cp()
			_, replayed, logs := indexRun(t, s.st, last, projections.WithCheckpoints(loader{cp, err}))
			if strings.Contains(logs, "starting from a checkpoint") || !strings.Contains(logs, tc.log) {
				t.Fatalf("want a replay because of %q:\n%s", tc.log, logs)
			}
			if gs, ga, gb := replayed.Len(); true {
				if ws, wa, wb := ix.Len(); gs != ws || ga != wa || gb != wb {
					t.Fatalf("replayed index holds %d subjects, %d actors, %d bytes; want %d, %d, %d", gs, ga, gb, ws, wa, wb)
				}
			}
		})
	}
}

// indexRunPlain is indexRun for a runner that keeps no index.
func indexRunPlain(t *testing.T, st *events.Store, seq uint64) (*projections.Runner, *projections.Catalog, error) {
	t.Helper()
	c := projections.NewCatalog()
	r := projections.NewRunner(st, c, nil)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	await.Eventually(t, 10*time.Second, func() bool { return c.Sequence() >= seq }, "runner caught up")
	cancel()
	return r, c, <-done
}

// TestSpoiltStatesFallBack checks that saved states a checkpoint holds which do not add up are
// dropped when first needed, the checkpoint being used all the same: the as-of queries then fold
// from the start, and give what a read of the stream gives.
func TestSpoiltStatesFallBack(t *testing.T) {
	defer projections.SetStates(2, 4)()
	s := newRandomStream(t, 7, false)
	s.createFlags()
	s.write(60)
	last, _ := s.st.LastSequence(context.Background())
	r, ix, _ := indexRun(t, s.st, last)
	good, err := func() ([]byte, error) { cp := r.Checkpoint(); return cp.Encode() }()
	if err != nil {
		t.Fatal(err)
	}
	for _, env := range randomEnvs {
		if n, flags := ix.States(env); n == 0 || flags == 0 {
			t.Fatalf("no saved state of %s holds a flag", env)
		}
	}
	tests := []struct {
		name  string
		spoil func(states []any)
	}{
		{"a state past the checkpoint", func(states []any) { states[len(states)-1].(map[string]any)["sequence"] = last + 1 }},
		{"a flag of another environment", func(states []any) {
			for _, st := range states {
				if flags, _ := st.(map[string]any)["flags"].([]any); len(flags) > 0 {
					flags[0].(map[string]any)["environment"] = "elsewhere"
					return
				}
			}
			t.Fatal("no saved state holds a flag")
		}},
		{"states out of order", func(states []any) { states[0], states[1] = states[1], states[0] }},
		{"not a list", func([]any) {}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var doc map[string]any
			if err := json.Unmarshal(good, &doc); err != nil {
				t.Fatal(err)
			}
			env := doc["index"].(map[string]any)["environments"].([]any)[0].(map[string]any)
			if tc.name == "not a list" {
				env["states"] = "nonsense"
			} else {
				tc.spoil(env["states"].([]any))
			}
			data, _ := json.Marshal(doc)
			cp, err := projections.DecodeCheckpoint(data)
			if err != nil {
				t.Fatal(err)
			}
			_, restored, logs := indexRun(t, s.st, last, projections.WithCheckpoints(loader{cp, nil}))
			if !strings.Contains(logs, "starting from a checkpoint") {
				t.Fatalf("the runner did not start from the checkpoint:\n%s", logs)
			}
			spoilt := env["environment"].(string)
			for _, e := range randomEnvs {
				if n, _ := restored.States(e); (n == 0) != (e == spoilt) {
					t.Fatalf("%d saved states of %s kept, the states of %s spoilt", n, e, spoilt)
				}
			}
			sameResults(t, s.st, restored, s.w, s.rnd)
		})
	}
}
