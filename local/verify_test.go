package local_test

import (
	"context"
	"crypto/ed25519"
	"testing"

	"github.com/interlock-dev/interlock/events"
	"github.com/interlock-dev/interlock/internal/await"
	"github.com/interlock-dev/interlock/internal/command"
	"github.com/interlock-dev/interlock/internal/natstest"
	"github.com/interlock-dev/interlock/local"
)

// TestVerifyKeys: a client given the server's public keys refuses a kill forged onto the
// stream, and applies the genuine events before and after it.
func TestVerifyKeys(t *testing.T) {
	srv := natstest.RunServer(t)
	js := natstest.JetStream(t, srv)
	signer := natstest.Signer(t)
	store, err := events.Open(context.Background(), js, events.StreamConfig{}, events.WithSigner(signer))
	if err != nil {
		t.Fatal(err)
	}
	cmds := command.New(store, nil)
	ctx := context.Background()
	meta := command.Meta{Actor: "alice", Reason: "test"}
	if _, err := cmds.Handle(ctx, command.CreateFlag{Meta: meta, Env: "prod", Key: "checkout", Config: boolFlag(true)}); err != nil {
		t.Fatal(err)
	}
	forged, err := events.NewEvent(events.TypeFlagKilled, "prod", "checkout", events.FlagKilled{})
	if err != nil {
		t.Fatal(err)
	}
	forged.Actor, forged.Version = "alice", 2
	natstest.Forge(t, js, forged.Msg())

	c := start(t, natstest.Connect(t, srv), local.Config{Environment: "prod", NoPresence: true, VerifyKeys: []ed25519.PublicKey{signer.Public()}})
	waitReady(t, c)
	if st := c.Stats(); st.Refused != 1 || st.Applied != 1 {
		t.Fatalf("stats: %+v; want 1 applied, 1 refused", st)
	}
	if !enabled(c) {
		t.Fatal("the forged kill was applied")
	}
	// A genuine kill after the forgery is applied.
	kill, err := flagOf(cmds.Handle(ctx, command.KillFlag{Meta: meta, Env: "prod", Key: "checkout"}))
	if err != nil {
		t.Fatal(err)
	}
	await.Eventually(t, wait, func() bool { return c.Sequence() >= kill.Sequence }, "the kill applied")
	if enabled(c) {
		t.Fatal("the genuine kill was not applied")
	}
}

func enabled(c *local.Client) bool {
	for _, f := range c.Flagset().Flags() {
		if f.Key == "checkout" {
			return f.Enabled
		}
	}
	return false
}
