package events_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/interlock-dev/interlock/events"
	"github.com/interlock-dev/interlock/internal/await"
	"github.com/interlock-dev/interlock/internal/natstest"
)

// consumers counts the stream's consumers.
func consumers(t *testing.T, js jetstream.JetStream) int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	st, err := js.Stream(ctx, events.DefaultStreamName)
	if err != nil {
		t.Fatal(err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return info.State.Consumers
}

// A follow's consumer goes when its follower does; a read's when the read ends.
func TestConsumersGoWithTheirClients(t *testing.T) {
	srv := natstest.RunServer(t)
	st := openStore(t, srv, 1)
	js := natstest.JetStream(t, srv)
	ev := newEvent(t, events.TypeFlagCreated, 1, events.FlagCreated{Flag: events.FlagConfig{Kind: events.KindRelease}})
	if _, err := st.Append(context.Background(), &ev, 0); err != nil {
		t.Fatal(err)
	}
	if err := st.Read(context.Background(), events.Query{}, func(events.Event, error) error { return nil }); err != nil {
		t.Fatal(err)
	}
	if n := consumers(t, js); n != 0 {
		t.Fatalf("%d consumers after a read", n)
	}

	ctx, cancel := context.WithCancel(context.Background())
	got := make(chan struct{}, 1)
	done := make(chan error, 1)
	go func() {
		done <- st.Follow(ctx, events.Query{}, func(events.Event, error) error {
			select {
			case got <- struct{}{}:
			default:
			}
			return nil
		})
	}()
	<-got
	if n := consumers(t, js); n != 1 {
		t.Fatalf("%d consumers while following", n)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	await.Eventually(t, 10*time.Second, func() bool { return consumers(t, js) == 0 }, "the follow's consumer is gone")
}

// With the connection down, appends and reads fail at once with ErrUnavailable, and nothing is
// sent later.
func TestUnavailableWhileDisconnected(t *testing.T) {
	dir := t.TempDir()
	srv := natstest.RunServer(t, natstest.Options{StoreDir: dir})
	nc := natstest.Connect(t, srv, nats.ReconnectBufSize(-1), nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond))
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	st, err := events.Open(context.Background(), js, events.StreamConfig{})
	if err != nil {
		t.Fatal(err)
	}
	natstest.Shutdown(srv)
	await.Eventually(t, 10*time.Second, func() bool { return nc.Status() != nats.CONNECTED }, "disconnected")

	ev := newEvent(t, events.TypeFlagCreated, 1, events.FlagCreated{Flag: events.FlagConfig{Kind: events.KindRelease}})
	start := time.Now()
	_, err = st.Append(context.Background(), &ev, 0)
	t.Logf("append while disconnected: %v after %v", err, time.Since(start))
	if !errors.Is(err, events.ErrUnavailable) || errors.Is(err, events.ErrOutcomeUnknown) {
		t.Fatalf("append: %v", err)
	}
	if err := st.Read(context.Background(), events.Query{}, func(events.Event, error) error { return nil }); !errors.Is(err, events.ErrUnavailable) {
		t.Fatalf("read: %v", err)
	}

	natstest.Restart(t, srv)
	await.Eventually(t, 10*time.Second, func() bool { return nc.Status() == nats.CONNECTED }, "reconnected")
	// A round trip after the reconnect: anything the client had held back would be stored by now.
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	if n, err := st.LastSequence(context.Background()); err != nil || n != 0 {
		t.Fatalf("stream at sequence %d (%v), want nothing stored", n, err)
	}
}
