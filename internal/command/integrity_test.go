package command_test

import (
	"context"
	"errors"
	"testing"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/interlock-dev/interlock/events"
	"github.com/interlock-dev/interlock/internal/command"
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
	f, err := flagOf(svc.Handle(ctx, command.EnableFlag{Meta: alice, Env: env, Key: "checkout"})) // flags are created off
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

	killed, err := flagOf(svc.Handle(ctx, command.KillFlag{Meta: alice, Env: env, Key: "checkout"}))
	if err != nil {
		t.Fatalf("kill after a forgery: %v", err)
	}
	if killed.Enabled || killed.Version != f.Version+1 || killed.Sequence <= forgedSeq {
		t.Fatalf("kill: enabled %v, version %d, sequence %d", killed.Enabled, killed.Version, killed.Sequence)
	}

	// Another forgery, then a replica that never saw the flag enables it.
	natstest.Forge(t, js, forged.Msg())
	other := newService(t, openSigned(t, srv, signer))
	enabled, err := flagOf(other.Handle(ctx, command.EnableFlag{Meta: alice, Env: env, Key: "checkout"}))
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

// TestAcknowledgeIntegrity: an acknowledgement needs a reason and a sequence that is stored; it
// is an event on its own subject, and sent again under its id it writes nothing new.
func TestAcknowledgeIntegrity(t *testing.T) {
	srv := natstest.RunServer(t)
	st := openSigned(t, srv, natstest.Signer(t))
	svc := newService(t, st)
	ctx := context.Background()
	mustCreate(t, svc, "checkout", baseConfig())

	for name, tc := range map[string]struct {
		m       command.Meta
		through uint64
	}{
		"no reason":           {command.Meta{Actor: "ops"}, 1},
		"no sequence":         {command.Meta{Actor: "ops", Reason: "looked"}, 0},
		"beyond the last one": {command.Meta{Actor: "ops", Reason: "looked"}, 99},
		"no actor":            {command.Meta{Reason: "looked"}, 1},
	} {
		if _, err := svc.AcknowledgeIntegrity(ctx, tc.m, tc.through, 0); !errors.Is(err, events.ErrInvalid) {
			t.Errorf("%s: %v, want a validation error", name, err)
		}
	}
	m := command.Meta{Actor: "ops", Reason: "looked at it", EventID: "2d2d3a52-4a4e-5c3e-9d9e-000000000001"}
	ev, err := svc.AcknowledgeIntegrity(ctx, m, 1, 1)
	if err != nil {
		t.Fatal(err)
	}
	if ev.Subject() != events.IntegritySubject() || ev.Actor != "ops" || ev.Reason != "looked at it" || ev.Version != 1 || ev.Sequence != 2 {
		t.Fatalf("acknowledgement %+v", ev)
	}
	again, err := svc.AcknowledgeIntegrity(ctx, m, 1, 1)
	if err != nil || again.Sequence != ev.Sequence {
		t.Fatalf("sent again: %+v, %v; want the first, at sequence %d", again, err, ev.Sequence)
	}
	if last, err := st.LastSequence(ctx); err != nil || last != 2 {
		t.Fatalf("stream ends at %d (%v), want 2: nothing new", last, err)
	}
	p, err := ev.Payload()
	if err != nil || *p.(*events.IntegrityAcknowledged) != (events.IntegrityAcknowledged{Through: 1, Problems: 1}) {
		t.Fatalf("payload %+v, %v", p, err)
	}
}
