package events_test

import (
	"context"
	"encoding/json"
	"errors"
	"slices"
	"sync"
	"testing"

	"github.com/interlock-dev/interlock/events"
	"github.com/interlock-dev/interlock/internal/natstest"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go/jetstream"
)

func openStore(t *testing.T, s *server.Server, replicas int) *events.Store {
	t.Helper()
	st, err := events.Open(context.Background(), natstest.JetStream(t, s), events.StreamConfig{Replicas: replicas})
	if err != nil {
		t.Fatal(err)
	}
	return st
}

func newEvent(t testing.TB, typ string, version uint64, payload any) events.Event {
	t.Helper()
	ev, err := events.NewEvent(typ, "production", "checkout-v2", payload)
	if err != nil {
		t.Fatal(err)
	}
	ev.Actor, ev.Reason, ev.Version = "alice", "test", version
	return ev
}

var created = events.FlagCreated{Flag: events.FlagConfig{
	Kind:           events.KindRelease,
	Variants:       map[string]json.RawMessage{"on": json.RawMessage("true"), "off": json.RawMessage("false")},
	DefaultVariant: "on",
	OffVariant:     "off",
}}

func TestAppendLoad(t *testing.T) {
	st := openStore(t, natstest.RunServer(t), 1)
	ctx := context.Background()

	ev1 := newEvent(t, events.TypeFlagCreated, 1, created)
	seq1, err := st.Append(ctx, &ev1, 0)
	if err != nil {
		t.Fatal(err)
	}
	ev2 := newEvent(t, events.TypeFlagKilled, 2, events.FlagKilled{})
	if _, err := st.Append(ctx, &ev2, seq1); err != nil {
		t.Fatal(err)
	}
	// A second creation, or an append on a stale sequence, is a conflict.
	ev3 := newEvent(t, events.TypeFlagCreated, 1, created)
	if _, err := st.Append(ctx, &ev3, 0); !errors.Is(err, events.ErrConflict) {
		t.Fatalf("append on existing subject with expected 0: got %v, want ErrConflict", err)
	}
	ev4 := newEvent(t, events.TypeFlagEnabled, 2, events.FlagEnabled{})
	if _, err := st.Append(ctx, &ev4, seq1); !errors.Is(err, events.ErrConflict) {
		t.Fatalf("stale append: got %v, want ErrConflict", err)
	}

	got, err := st.Load(ctx, "production", "checkout-v2")
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0].ID != ev1.ID || got[1].ID != ev2.ID {
		t.Fatalf("load: got %d events %+v", len(got), got)
	}
	if got[1].Actor != "alice" || got[1].Reason != "test" || got[1].Version != 2 || got[1].Sequence != 2 {
		t.Fatalf("envelope not kept: %+v", got[1])
	}
	if !got[0].Time.Equal(ev1.Time) {
		t.Fatalf("time: got %v want %v", got[0].Time, ev1.Time)
	}
	p, err := got[0].Payload()
	if err != nil {
		t.Fatal(err)
	}
	if fc := p.(*events.FlagCreated); fc.Flag.DefaultVariant != "on" {
		t.Fatalf("payload: %+v", fc)
	}
	none, err := st.Load(ctx, "production", "nope")
	if err != nil || len(none) != 0 {
		t.Fatalf("load of unknown flag: %v, %v", none, err)
	}
}

// A retried append of the same event is stored once, on one server and on a cluster of three:
// they answer the retry differently (wrong last sequence, or a duplicate acknowledgement).
func TestAppendRetryWritesOnce(t *testing.T) {
	for _, tc := range []struct {
		name     string
		replicas int
		server   func(t *testing.T) *server.Server
	}{
		{"R1", 1, func(t *testing.T) *server.Server { return natstest.RunServer(t) }},
		{"R3", 3, func(t *testing.T) *server.Server { return natstest.RunCluster(t)[1] }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st := openStore(t, tc.server(t), tc.replicas)
			ctx := context.Background()
			ev := newEvent(t, events.TypeFlagCreated, 1, created)
			seq, err := st.Append(ctx, &ev, 0)
			if err != nil {
				t.Fatal(err)
			}
			for range 3 {
				again := ev
				got, err := st.Append(ctx, &again, 0)
				if err != nil {
					t.Fatalf("retry: %v", err)
				}
				if got != seq {
					t.Fatalf("retry returned sequence %d, want %d", got, seq)
				}
			}
			// After the subject moved on, a late retry of the first event is still recognised.
			ev2 := newEvent(t, events.TypeFlagKilled, 2, events.FlagKilled{})
			seq2, err := st.Append(ctx, &ev2, seq)
			if err != nil {
				t.Fatal(err)
			}
			late := ev
			if got, err := st.Append(ctx, &late, 0); err != nil || got != seq {
				t.Fatalf("late retry: seq %d err %v, want %d", got, err, seq)
			}
			retry2 := ev2
			if got, err := st.Append(ctx, &retry2, seq); err != nil || got != seq2 {
				t.Fatalf("retry of second: seq %d err %v, want %d", got, err, seq2)
			}
			evs, err := st.Load(ctx, "production", "checkout-v2")
			if err != nil {
				t.Fatal(err)
			}
			if len(evs) != 2 {
				t.Fatalf("stored %d events, want 2", len(evs))
			}
		})
	}
}

// Many writers racing on one subject: exactly one wins each sequence; the others get ErrConflict.
func TestAppendRace(t *testing.T) {
	st := openStore(t, natstest.RunServer(t), 1)
	ctx := context.Background()
	first := newEvent(t, events.TypeFlagCreated, 1, created)
	seq, err := st.Append(ctx, &first, 0)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	wins, conflicts := 0, 0
	for range 8 {
		wg.Go(func() {
			ev := newEvent(t, events.TypeFlagEnabled, 2, events.FlagEnabled{})
			_, err := st.Append(ctx, &ev, seq)
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err == nil:
				wins++
			case errors.Is(err, events.ErrConflict):
				conflicts++
			default:
				t.Error(err)
			}
		})
	}
	wg.Wait()
	if wins != 1 || conflicts != 7 {
		t.Fatalf("wins %d conflicts %d, want 1 and 7", wins, conflicts)
	}
}

func TestStreamSettings(t *testing.T) {
	s := natstest.RunServer(t)
	openStore(t, s, 1)
	js := natstest.JetStream(t, s)
	stream, err := js.Stream(context.Background(), events.DefaultStreamName)
	if err != nil {
		t.Fatal(err)
	}
	cfg := stream.CachedInfo().Config
	if !cfg.DenyDelete || !cfg.DenyPurge || cfg.Discard != jetstream.DiscardNew || cfg.MaxAge != 0 ||
		cfg.Storage != jetstream.FileStorage || cfg.Duplicates == 0 {
		t.Fatalf("stream config: %+v", cfg)
	}
	if err := stream.Purge(context.Background()); err == nil {
		t.Fatal("purge allowed")
	}
}

func TestReadFromAndFollow(t *testing.T) {
	st := openStore(t, natstest.RunServer(t), 1)
	ctx := context.Background()
	var last uint64
	appendN := func(key string, n int) {
		for i := range n {
			typ, payload := events.TypeFlagCreated, any(created)
			if i > 0 {
				typ, payload = events.TypeFlagEnabled, events.FlagEnabled{}
			}
			ev, err := events.NewEvent(typ, "production", key, payload)
			if err != nil {
				t.Fatal(err)
			}
			ev.Actor, ev.Version = "a", uint64(i+1)
			var prev uint64
			if i > 0 {
				prev = last
			}
			if last, err = st.Append(ctx, &ev, prev); err != nil {
				t.Fatal(err)
			}
		}
	}
	appendN("a", 3) // sequences 1-3
	appendN("b", 2) // 4-5

	var seqs []uint64
	err := st.Read(ctx, events.Query{FromSequence: 3}, func(ev events.Event, err error) error {
		if err != nil {
			return err
		}
		seqs = append(seqs, ev.Sequence)
		return nil
	})
	if err != nil || !slices.Equal(seqs, []uint64{3, 4, 5}) {
		t.Fatalf("read from 3: %v %v", seqs, err)
	}
	seqs = nil
	err = st.Read(ctx, events.Query{Subjects: []string{events.FlagSubject("production", "b")}}, func(ev events.Event, err error) error {
		seqs = append(seqs, ev.Sequence)
		return events.ErrStop
	})
	if err != nil || !slices.Equal(seqs, []uint64{4}) {
		t.Fatalf("read b, stop after one: %v %v", seqs, err)
	}

	// Follow delivers what is there, then what comes, and returns nil when ctx ends.
	fctx, cancel := context.WithCancel(ctx)
	got := make(chan uint64, 16)
	done := make(chan error, 1)
	go func() {
		done <- st.Follow(fctx, events.Query{FromSequence: 5}, func(ev events.Event, err error) error {
			if err != nil {
				return err
			}
			got <- ev.Sequence
			return nil
		})
	}()
	if s := <-got; s != 5 {
		t.Fatalf("follow first: %d", s)
	}
	appendN("c", 1)
	if s := <-got; s != 6 {
		t.Fatalf("follow live: %d", s)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("follow after cancel: %v", err)
	}
}

// A message published on an Interlock subject by something else is delivered as an error, not a
// crash, and the read goes on.
func TestReadMalformed(t *testing.T) {
	s := natstest.RunServer(t)
	st := openStore(t, s, 1)
	ctx := context.Background()
	if _, err := natstest.JetStream(t, s).Publish(ctx, "interlock.production.flag.x", []byte("garbage")); err != nil {
		t.Fatal(err)
	}
	ev := newEvent(t, events.TypeFlagCreated, 1, created)
	if _, err := st.Append(ctx, &ev, 0); err != nil {
		t.Fatal(err)
	}
	var bad, good int
	err := st.Read(ctx, events.Query{}, func(ev events.Event, err error) error {
		if errors.Is(err, events.ErrMalformed) {
			bad++
		} else if err == nil {
			good++
		}
		return nil
	})
	if err != nil || bad != 1 || good != 1 {
		t.Fatalf("bad %d good %d err %v", bad, good, err)
	}
}

// A read returns what was stored when it began, even while events keep being appended faster
// than it reads them: here the handler itself appends one for every one it reads, so the count
// of pending events never falls to zero. More are stored than one pull fetches (1,000), so the
// later pull sees the appended ones.
func TestReadEndsUnderSteadyAppends(t *testing.T) {
	const stored = 1100
	st := openStore(t, natstest.RunServer(t), 1)
	ctx := context.Background()
	ev := newEvent(t, events.TypeFlagCreated, 1, created)
	last, err := st.Append(ctx, &ev, 0)
	if err != nil {
		t.Fatal(err)
	}
	for v := uint64(2); v <= stored; v++ {
		ev := newEvent(t, events.TypeFlagEnabled, v, events.FlagEnabled{})
		if last, err = st.Append(ctx, &ev, last); err != nil {
			t.Fatal(err)
		}
	}
	version := uint64(stored)
	var seen []uint64
	q := events.Query{Subjects: []string{events.FlagSubject("production", "checkout-v2")}}
	err = st.Read(ctx, q, func(got events.Event, err error) error {
		if err != nil {
			return err
		}
		seen = append(seen, got.Sequence)
		if len(seen) > stored {
			return errors.New("the read goes on past what was stored when it began")
		}
		version++
		more := newEvent(t, events.TypeFlagKilled, version, events.FlagKilled{})
		last, err = st.Append(ctx, &more, last)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(seen) != stored || seen[0] != 1 || seen[stored-1] != stored {
		t.Fatalf("read %d events, sequences %d to %d; want the %d stored when the read began", len(seen), seen[0], seen[len(seen)-1], stored)
	}
}
