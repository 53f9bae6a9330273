package events_test

import (
	"context"
	"errors"
	"reflect"
	"testing"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/interlock-dev/interlock/events"
	"github.com/interlock-dev/interlock/internal/natstest"
)

// ReadSequences delivers the messages at the sequences asked for, in the order asked for, as a
// read of the stream delivers them: decoded, a message that is not an event as an error.
func TestReadSequences(t *testing.T) {
	s := natstest.RunServer(t)
	st := openStore(t, s, 1)
	ctx := context.Background()
	if _, err := natstest.JetStream(t, s).Publish(ctx, "interlock.production.flag.x", []byte("garbage")); err != nil {
		t.Fatal(err)
	}
	var last uint64
	for v := range uint64(300) { // more than one batch of fetches
		typ, payload := events.TypeFlagKilled, any(events.FlagKilled{})
		if v == 0 {
			typ, payload = events.TypeFlagCreated, created
		}
		ev := newEvent(t, typ, v+1, payload)
		seq, err := st.Append(ctx, &ev, last)
		if err != nil {
			t.Fatal(err)
		}
		last = seq
	}
	read := map[uint64]events.Event{}
	readErr := map[uint64]string{}
	if err := st.Read(ctx, events.Query{}, func(ev events.Event, err error) error {
		read[ev.Sequence] = ev
		if err != nil {
			readErr[ev.Sequence] = err.Error()
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name string
		seqs []uint64
		stop int // stop after this many, 0 for never
	}{
		{"none", nil, 0},
		{"one", []uint64{5}, 0},
		{"not an event", []uint64{1, 2}, 0},
		{"out of order", []uint64{9, 3, 7}, 0},
		{"every message", seqRange(1, last), 0},
		{"stopped early", seqRange(1, last), 70},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var got []uint64
			err := st.ReadSequences(ctx, tc.seqs, func(ev events.Event, err error) error {
				got = append(got, ev.Sequence)
				if msg := readErr[ev.Sequence]; (err == nil) != (msg == "") || err != nil && err.Error() != msg {
					t.Errorf("message %d: error %v, a read gives %q", ev.Sequence, err, msg)
				}
				if err == nil && !reflect.DeepEqual(ev, read[ev.Sequence]) {
					t.Errorf("message %d:\n got %+v\nwant %+v", ev.Sequence, ev, read[ev.Sequence])
				}
				if tc.stop > 0 && len(got) == tc.stop {
					return events.ErrStop
				}
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
			want := tc.seqs
			if tc.stop > 0 {
				want = want[:tc.stop]
			}
			if len(got) != len(want) || len(want) > 0 && !reflect.DeepEqual(got, want) {
				t.Fatalf("delivered %v, want %v", got, want)
			}
		})
	}

	if err := st.ReadSequences(ctx, []uint64{2, last + 1}, func(events.Event, error) error { return nil }); !errors.Is(err, jetstream.ErrMsgNotFound) {
		t.Fatalf("a sequence past the stream: %v, want ErrMsgNotFound", err)
	}
	boom := errors.New("boom")
	if err := st.ReadSequences(ctx, []uint64{2, 3}, func(events.Event, error) error { return boom }); !errors.Is(err, boom) {
		t.Fatalf("the handler's error: got %v", err)
	}
}

func seqRange(from, to uint64) []uint64 {
	var out []uint64
	for s := from; s <= to; s++ {
		out = append(out, s)
	}
	return out
}
