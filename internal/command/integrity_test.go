package command_test

import (
	"context"
	"errors"
	"testing"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/interlock-dev/interlock/events"
	"github.com/interlock-dev/interlock/internal/natstest"
)

// openSigned opens a signing store on a new connection to s, as one replica would.
func openSigned(tb testing.TB, s *server.Server, signer *events.Signer) *events.Store {
	tb.Helper()
	st, err := events.Open(context.Background(), natstest.JetStream(tb, s), events.StreamConfig{}, events.WithSigner(signer))
	if err != nil {
		tb.Fatal(err)
	}
	return st
}

// TestCommandsAfterForgery: a message forged onto a flag's subject changes nothing for the
// command path: the flag's state ignores it, a kill still goes through (on a replica that had
// the flag cached and on one that had not), and every event after it chains to the last genuine
// one.
func TestCommandsAfterForgery(t *testing.T) {
	srv := natstest.RunServer(t)
	signer := natstest.Signer(t)
	st := openSigned(t, srv, signer)
	svc := newService(t, st)
	ctx := context.Background()
	mustCreate(t, svc, "checkout", baseConfig())
	f, err := svc.Enable(ctx, alice, env, "checkout", 0) // flags are created off
	if err != nil {
		t.Fatal(err)
	}
	js := natstest.JetStream(t, srv)

	// A client with publish rights archives the flag, as "alice".
	forged, err := events.NewEvent(events.TypeFlagArchived, env, "checkout", events.FlagArchived{})
	if err != nil {
		t.Fatal(err)
	}
	forged.Actor, forged.Version = "alice", f.Version+1
	forgedSeq := natstest.Forge(t, js, forged.Msg())

	got, err := svc.Get(ctx, env, "checkout")
	if err != nil {
		t.Fatal(err)
	}
	if got.Archived || got.Version != f.Version {
		t.Fatalf("after the forgery: archived %v, version %d; want the state before it, version %d", got.Archived, got.Version, f.Version)
	}

	killed, err := svc.Kill(ctx, alice, env, "checkout")
	if err != nil {
		t.Fatalf("kill after a forgery: %v", err)
	}
	if killed.Enabled || killed.Version != f.Version+1 || killed.Sequence <= forgedSeq {
		t.Fatalf("kill: enabled %v, version %d, sequence %d", killed.Enabled, killed.Version, killed.Sequence)
	}

	// Another forgery, then a replica that never saw the flag enables it.
	natstest.Forge(t, js, forged.Msg())
	other := newService(t, openSigned(t, srv, signer))
	enabled, err := other.Enable(ctx, alice, env, "checkout", 0)
	if err != nil {
		t.Fatalf("enable on another replica after a forgery: %v", err)
	}
	if !enabled.Enabled || enabled.Version != f.Version+2 {
		t.Fatalf("enable: enabled %v, version %d", enabled.Enabled, enabled.Version)
	}

	rep, err := st.VerifyChains(ctx, events.Query{}, 10)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Events != 4 || rep.Refused != 2 || rep.Problems[0].Sequence != forgedSeq || !errors.Is(rep.Problems[0], events.ErrUnsigned) {
		t.Fatalf("chains: %d verified, %d refused, first %v; want 4, 2, unsigned at %d", rep.Events, rep.Refused, rep.Problems[0], forgedSeq)
	}
}
