package local_test

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/interlock-dev/interlock/events"
	"github.com/interlock-dev/interlock/internal/auth"
	"github.com/interlock-dev/interlock/internal/command"
	"github.com/interlock-dev/interlock/internal/embedded"
	"github.com/interlock-dev/interlock/internal/perimeter"
)

// bootPerimeter is the server side as `interlock serve` runs it: the embedded NATS server
// listening on loopback, closed by the auth callout, the store and the command service on
// Interlock's own in-process connection, and a reader token issued for the subscriber.
func bootPerimeter(t testing.TB, sync bool) (*system, func(testing.TB) *nats.Conn) {
	t.Helper()
	ns, err := embedded.Start(embedded.Config{StoreDir: t.TempDir(), Listen: "127.0.0.1:0", NoSync: !sync}, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(ns.Shutdown)
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	conn := func() *nats.Conn {
		nc, err := ns.Connect()
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(nc.Close)
		return nc
	}
	js, err := jetstream.New(conn())
	if err != nil {
		t.Fatal(err)
	}
	store, err := events.Open(ctx, js, events.StreamConfig{})
	if err != nil {
		t.Fatal(err)
	}
	tokens, err := auth.Open(ctx, js, 1)
	if err != nil {
		t.Fatal(err)
	}
	callout, err := perimeter.NewCallout(perimeter.CalloutConfig{Auth: tokens, Issuer: ns.Issuer(), Server: ns.ID(), Account: embedded.Account})
	if err != nil {
		t.Fatal(err)
	}
	if err := callout.Listen(ctx, conn()); err != nil {
		t.Fatal(err)
	}
	token, err := tokens.IssueScoped(ctx, "service", auth.RoleReader, "prod")
	if err != nil {
		t.Fatal(err)
	}
	s := &system{js: js, store: store, cmds: command.New(store, nil)}
	return s, func(t testing.TB) *nats.Conn {
		t.Helper()
		nc, err := nats.Connect(ns.ClientURL(), events.TokenAuth(token), nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond))
		if err != nil {
			t.Fatalf("connect with a reader token: %v", err)
		}
		t.Cleanup(nc.Close)
		return nc
	}
}
