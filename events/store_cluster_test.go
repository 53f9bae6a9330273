package events_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/interlock-dev/interlock/events"
	"github.com/interlock-dev/interlock/internal/natstest"
	"github.com/nats-io/nats-server/v2/server"
)

// A read of a 3-replica stream sees every event acknowledged before it began, although its
// consumer may be placed on a follower that has not stored the newest events yet. Each round
// appends one event and reads it back at once: the whole flag, from the event's sequence, from
// its time, and every subject from its sequence.
func TestReadYourWritesR3(t *testing.T) {
	const rounds, flags = 300, 5
	st := openStore(t, natstest.RunCluster(t)[1], 3)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	last := make([]uint64, flags)
	stale := map[string]int{}
	for i := range rounds {
		f := i % flags
		key := fmt.Sprintf("ryw-%d", f)
		typ, payload := events.TypeFlagEnabled, any(events.FlagEnabled{})
		if last[f] == 0 {
			typ, payload = events.TypeFlagCreated, any(created)
		}
		ev, err := events.NewEvent(typ, "production", key, payload)
		if err != nil {
			t.Fatal(err)
		}
		ev.Actor, ev.Version = "a", uint64(i/flags+1)
		seq, err := st.Append(ctx, &ev, last[f])
		if err != nil {
			t.Fatalf("round %d: append: %v", i, err)
		}
		last[f] = seq

		subject := events.FlagSubject("production", key)
		for name, q := range map[string]events.Query{
			"load":          {Subjects: []string{subject}},
			"from sequence": {Subjects: []string{subject}, FromSequence: seq},
			"from time":     {Subjects: []string{subject}, FromTime: time.Now().Add(-time.Minute)},
			"all subjects":  {FromSequence: seq},
		} {
			var got []string
			err := st.Read(ctx, q, func(ev events.Event, err error) error {
				if err != nil {
					return err
				}
				got = append(got, ev.ID)
				return nil
			})
			if err != nil {
				t.Errorf("round %d: read %s: %v", i, name, err)
				stale[name]++
				continue
			}
			if len(got) == 0 || got[len(got)-1] != ev.ID {
				stale[name]++
			}
		}
	}
	for name, n := range stale {
		t.Errorf("%s: %d of %d reads missed the event appended just before", name, n, rounds)
	}
}

// BenchmarkRead loads one flag of 10 events: on one server with a stream of one replica (whose
// read asks nobody first), and on a cluster of three with a stream of three (whose read asks
// the stream leader for the flag's last sequence first).
func BenchmarkRead(b *testing.B) {
	for _, tc := range []struct {
		name     string
		replicas int
		server   func(b *testing.B) *server.Server
	}{
		{"R1", 1, func(b *testing.B) *server.Server { return natstest.RunServer(b) }},
		{"R3", 3, func(b *testing.B) *server.Server { return natstest.RunCluster(b)[1] }},
	} {
		b.Run(tc.name, func(b *testing.B) {
			ctx := context.Background()
			st, err := events.Open(ctx, natstest.JetStream(b, tc.server(b)), events.StreamConfig{Replicas: tc.replicas})
			if err != nil {
				b.Fatal(err)
			}
			var last uint64
			for v := uint64(1); v <= 10; v++ {
				typ, payload := events.TypeFlagEnabled, any(events.FlagEnabled{})
				if v == 1 {
					typ, payload = events.TypeFlagCreated, any(created)
				}
				ev := newEvent(b, typ, v, payload)
				if last, err = st.Append(ctx, &ev, last); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportAllocs()
			for b.Loop() {
				evs, err := st.Load(ctx, "production", "checkout-v2")
				if err != nil {
					b.Fatal(err)
				}
				if len(evs) != 10 {
					b.Fatalf("%d events, want 10", len(evs))
				}
			}
		})
	}
}

// An append sent again after it was stored is answered with the stored copy, on a 3-replica
// stream too: the copy is read from the stream leader, since a follower may not have stored the
// event yet when the duplicate acknowledgement arrives. Each round appends one event and at once
// appends it again with the same id and the same expected sequence. On loopback a follower is
// rarely behind at that moment, so this checks the leader's answer (the stored copy, headers and
// all) more than it reproduces the lag.
func TestAppendAgainAnsweredFromLeaderR3(t *testing.T) {
	const rounds, flags = 300, 5
	st := openStore(t, natstest.RunCluster(t)[1], 3)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	last := make([]uint64, flags)
	failed := 0
	for i := range rounds {
		f := i % flags
		typ, payload := events.TypeFlagEnabled, any(events.FlagEnabled{})
		if last[f] == 0 {
			typ, payload = events.TypeFlagCreated, any(created)
		}
		ev, err := events.NewEvent(typ, "production", fmt.Sprintf("again-%d", f), payload)
		if err != nil {
			t.Fatal(err)
		}
		ev.Actor, ev.Version = "a", uint64(i/flags+1)
		again := ev
		seq, err := st.Append(ctx, &ev, last[f])
		if err != nil {
			t.Fatalf("round %d: append: %v", i, err)
		}
		seq2, err := st.Append(ctx, &again, last[f])
		if err != nil || seq2 != seq || again.ID != ev.ID || again.Sequence != seq {
			failed++
			t.Logf("round %d: sent again: sequence %d (first %d), %v", i, seq2, seq, err)
		}
		last[f] = seq
	}
	if failed > 0 {
		t.Errorf("%d of %d appends sent again were not answered with the stored copy", failed, rounds)
	}
}
