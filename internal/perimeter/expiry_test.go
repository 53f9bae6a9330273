package perimeter_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/interlock-dev/interlock/events"
	"github.com/interlock-dev/interlock/internal/auth"
	"github.com/interlock-dev/interlock/internal/await"
	"github.com/interlock-dev/interlock/internal/embedded"
	"github.com/interlock-dev/interlock/internal/perimeter"
)

// TestExpiringToken: the NATS user of an expiring token expires with it: the server closes the
// connection at the expiry, and the token cannot connect again.
func TestExpiringToken(t *testing.T) {
	ns, err := embedded.Start(embedded.Config{StoreDir: t.TempDir(), Listen: "127.0.0.1:0", NoSync: true}, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(ns.Shutdown)
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	own, err := ns.Connect()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(own.Close)
	js, err := jetstream.New(own)
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
	if err := callout.Listen(ctx, own); err != nil {
		t.Fatal(err)
	}
	_, token, err := tokens.Create(ctx, auth.Spec{Name: "brief", Role: auth.RoleReader, ExpiresAt: time.Now().Add(2 * time.Second)})
	if err != nil {
		t.Fatal(err)
	}
	nc, err := nats.Connect(ns.ClientURL(), events.TokenAuth(token), nats.MaxReconnects(0))
	if err != nil {
		t.Fatalf("connect before the expiry: %v", err)
	}
	t.Cleanup(nc.Close)
	await.Eventually(t, wait, nc.IsClosed, "the connection closes at the expiry")
	await.Eventually(t, wait, func() bool {
		again, err := nats.Connect(ns.ClientURL(), events.TokenAuth(token), nats.MaxReconnects(0))
		if err == nil {
			again.Close()
		}
		return errors.Is(err, nats.ErrAuthorization)
	}, "the expired token is refused")
}
