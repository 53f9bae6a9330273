package command_test

import (
	"context"
	"errors"
	"testing"

	"github.com/interlock-dev/interlock/events"
	"github.com/interlock-dev/interlock/internal/command"
	"github.com/interlock-dev/interlock/internal/natstest"
)

// A command sent again under the same event id writes nothing new and answers as the first
// attempt did, whether or not the first attempt was stored, and whatever happened since.
func TestSentAgainUnderItsID(t *testing.T) {
	srv := natstest.RunServer(t)
	ctx := context.Background()
	st := &lossyStore{Store: openStore(t, srv)}
	svc := newService(t, st)

	keyed := func(id string) command.Meta {
		m := alice
		m.EventID = id
		return m
	}
	create := keyed("0b0b3a52-4a4e-5c3e-9d9e-000000000001")
	patch := keyed("0b0b3a52-4a4e-5c3e-9d9e-000000000002")
	kill := keyed("0b0b3a52-4a4e-5c3e-9d9e-000000000003")
	kill.Reason = "drill"

	cfg := baseConfig()
	cfg.Enabled = true
	// Every acknowledgement of the create is lost: its outcome is unknown, though it is stored.
	st.lose.Store(3)
	_, err := svc.Create(ctx, create, env, "again", cfg)
	var oe *events.OutcomeError
	if !errors.As(err, &oe) || oe.EventID != create.EventID {
		t.Fatalf("create: %v, want an unknown outcome naming the event", err)
	}
	// Sent again: the flag exists, but with this create's own event; the answer is a success.
	f, err := svc.Create(ctx, create, env, "again", cfg)
	if err != nil || f.Version != 1 {
		t.Fatalf("create again: %+v, %v", f, err)
	}

	// The patch is stored, its answer lost; then somebody else changes the flag. Sent again
	// with its If-Match, now stale, it is recognised, not refused.
	st.lose.Store(3)
	if _, err := svc.Update(ctx, patch, env, "again", 1, []byte(`{"description":"first"}`)); !errors.Is(err, events.ErrOutcomeUnknown) {
		t.Fatalf("patch: %v", err)
	}
	other := newService(t, st.Store) // another replica
	if _, err := other.Update(ctx, alice, env, "again", 2, []byte(`{"description":"second"}`)); err != nil {
		t.Fatal(err)
	}
	// The answer is the flag as of the patch's own event, or later.
	f, err = svc.Update(ctx, patch, env, "again", 1, []byte(`{"description":"first"}`))
	if err != nil || f.Version < 2 {
		t.Fatalf("patch again: %+v, %v", f, err)
	}
	// Without its id the stale patch is refused.
	if _, err := svc.Update(ctx, alice, env, "again", 1, []byte(`{"description":"first"}`)); !errors.Is(err, command.ErrStale) {
		t.Fatalf("stale patch: %v", err)
	}

	// A kill whose first attempt never reached the store is written by the second.
	f, err = svc.Kill(ctx, kill, env, "again")
	if err != nil || f.Enabled {
		t.Fatalf("kill: %+v, %v", f, err)
	}
	if _, err := svc.Kill(ctx, kill, env, "again"); err != nil {
		t.Fatal(err)
	}
	evs := load(t, st.Store, "again")
	if len(evs) != 4 || evs[0].ID != create.EventID || evs[1].ID != patch.EventID || evs[3].ID != kill.EventID {
		t.Fatalf("%d events: %+v", len(evs), evs)
	}
}

// A message on a flag's subject that is not an event blocks nothing: the command path skips it,
// as the projections do.
func TestPoisonMessageDoesNotBlockKill(t *testing.T) {
	srv := natstest.RunServer(t)
	ctx := context.Background()
	st := openStore(t, srv)
	svc := newService(t, st)
	mustCreate(t, svc, "poisoned", baseConfig())
	js := natstest.JetStream(t, srv)
	for _, data := range []string{"{not json", `{"type":"io.interlock.flag.nope"}`} {
		if _, err := js.Publish(ctx, events.FlagSubject(env, "poisoned"), []byte(data)); err != nil {
			t.Fatal(err)
		}
	}
	fresh := newService(t, st) // reads the subject from the start
	m := alice
	m.Reason = "poison drill"
	f, err := fresh.Kill(ctx, m, env, "poisoned")
	if err != nil || f.Enabled {
		t.Fatalf("kill: %+v, %v", f, err)
	}
	if f, err = svc.Enable(ctx, alice, env, "poisoned", f.Version); err != nil || !f.Enabled {
		t.Fatalf("enable on the stale cache: %+v, %v", f, err)
	}
}
