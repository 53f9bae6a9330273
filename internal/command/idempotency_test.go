package command_test

import (
	"context"
	"errors"
	"strconv"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/interlock-dev/interlock/events"
	"github.com/interlock-dev/interlock/internal/await"
	"github.com/interlock-dev/interlock/internal/command"
	"github.com/interlock-dev/interlock/internal/natstest"
	"github.com/interlock-dev/interlock/projections"
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
	_, err := svc.Handle(ctx, command.CreateFlag{Meta: create, Env: env, Key: "again", Config: cfg})
	var oe *events.OutcomeError
	if !errors.As(err, &oe) || oe.EventID != create.EventID {
		t.Fatalf("create: %v, want an unknown outcome naming the event", err)
	}
	// Sent again: the flag exists, but with this create's own event; the answer is a success.
	f, err := flagOf(svc.Handle(ctx, command.CreateFlag{Meta: create, Env: env, Key: "again", Config: cfg}))
	if err != nil || f.Version != 1 {
		t.Fatalf("create again: %+v, %v", f, err)
	}

	// The patch is stored, its answer lost; then somebody else changes the flag. Sent again
	// with its If-Match, now stale, it is recognised, not refused.
	st.lose.Store(3)
	if _, err := svc.Handle(ctx, command.UpdateFlag{Meta: patch, Env: env, Key: "again", ExpectedVersion: 1, Patch: []byte(`{"description":"first"}`)}); !errors.Is(err, events.ErrOutcomeUnknown) {
		t.Fatalf("patch: %v", err)
	}
	other := newService(t, st.Store) // another replica
	if _, err := other.Handle(ctx, command.UpdateFlag{Meta: alice, Env: env, Key: "again", ExpectedVersion: 2, Patch: []byte(`{"description":"second"}`)}); err != nil {
		t.Fatal(err)
	}
	// The answer is the flag as of the patch's own event, or later.
	f, err = flagOf(svc.Handle(ctx, command.UpdateFlag{Meta: patch, Env: env, Key: "again", ExpectedVersion: 1, Patch: []byte(`{"description":"first"}`)}))
	if err != nil || f.Version < 2 {
		t.Fatalf("patch again: %+v, %v", f, err)
	}
	// Without its id the stale patch is refused.
	if _, err := svc.Handle(ctx, command.UpdateFlag{Meta: alice, Env: env, Key: "again", ExpectedVersion: 1, Patch: []byte(`{"description":"first"}`)}); !errors.Is(err, command.ErrStale) {
		t.Fatalf("stale patch: %v", err)
	}

	// A kill whose first attempt never reached the store is written by the second.
	f, err = flagOf(svc.Handle(ctx, command.KillFlag{Meta: kill, Env: env, Key: "again"}))
	if err != nil || f.Enabled {
		t.Fatalf("kill: %+v, %v", f, err)
	}
	if _, err := svc.Handle(ctx, command.KillFlag{Meta: kill, Env: env, Key: "again"}); err != nil {
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
	f, err := flagOf(fresh.Handle(ctx, command.KillFlag{Meta: m, Env: env, Key: "poisoned"}))
	if err != nil || f.Enabled {
		t.Fatalf("kill: %+v, %v", f, err)
	}
	if f, err = flagOf(svc.Handle(ctx, command.EnableFlag{Meta: alice, Env: env, Key: "poisoned", ExpectedVersion: f.Version})); err != nil || !f.Enabled {
		t.Fatalf("enable on the stale cache: %+v, %v", f, err)
	}
}

// A command sent again after more events on its flag than the service remembers ids of, and
// after the NATS server (or the stream's leader) restarted, is still recognised within the
// stream's duplicate window: the same answer as the first time, nothing written. Its refusals
// (a create of a flag that exists, a stale If-Match) are not given, and a kill that would write
// again (the flag was enabled since) writes nothing.
func TestSentAgainAfterManyEvents(t *testing.T) {
	for _, tc := range []struct {
		name     string
		replicas int
	}{{"R1", 1}, {"R3", 3}} {
		t.Run(tc.name, func(t *testing.T) {
			var servers []*server.Server
			if tc.replicas == 1 {
				servers = []*server.Server{natstest.RunServer(t)}
			} else {
				servers = natstest.RunCluster(t)
			}
			ctx := context.Background()
			js := natstest.JetStream(t, servers[0])
			var st *events.Store
			await.Eventually(t, 30*time.Second, func() bool {
				var err error
				st, err = events.Open(ctx, js, events.StreamConfig{Replicas: tc.replicas})
				return err == nil
			}, "the stream opens")
			svc := newService(t, st)
			keyed := func(id string) command.Meta {
				m := alice
				m.EventID = id
				return m
			}
			create := keyed("1c1c3a52-4a4e-5c3e-9d9e-000000000001")
			patch := keyed("1c1c3a52-4a4e-5c3e-9d9e-000000000002")
			kill := keyed("1c1c3a52-4a4e-5c3e-9d9e-000000000003")
			cfg := baseConfig()
			cfg.Enabled = true
			if _, err := flagOf(svc.Handle(ctx, command.CreateFlag{Meta: create, Env: env, Key: "busy", Config: cfg})); err != nil {
				t.Fatal(err)
			}
			if _, err := flagOf(svc.Handle(ctx, command.UpdateFlag{Meta: patch, Env: env, Key: "busy", ExpectedVersion: 1, Patch: []byte(`{"description":"first"}`)})); err != nil {
				t.Fatal(err)
			}
			if _, err := flagOf(svc.Handle(ctx, command.KillFlag{Meta: kill, Env: env, Key: "busy"})); err != nil {
				t.Fatal(err)
			}
			f, err := flagOf(svc.Handle(ctx, command.EnableFlag{Meta: alice, Env: env, Key: "busy"}))
			if err != nil {
				t.Fatal(err)
			}
			// More events than the service remembers ids of.
			for i := range 70 {
				if f, err = flagOf(svc.Handle(ctx, command.UpdateFlag{Meta: alice, Env: env, Key: "busy", ExpectedVersion: f.Version, Patch: []byte(`{"description":"n` + strconv.Itoa(i) + `"}`)})); err != nil {
					t.Fatal(err)
				}
			}
			const stored = 3 + 1 + 70
			count := func() int { t.Helper(); return len(load(t, st, "busy")) }
			if n := count(); n != stored {
				t.Fatalf("%d events, want %d", n, stored)
			}

			// The server holding the stream (its leader, in a cluster) stops and starts again.
			leader := 0
			if tc.replicas == 3 {
				stream, err := js.Stream(ctx, events.DefaultStreamName)
				if err != nil {
					t.Fatal(err)
				}
				info, err := stream.Info(ctx)
				if err != nil {
					t.Fatal(err)
				}
				for i, s := range servers {
					if s.Name() == info.Cluster.Leader {
						leader = i
					}
				}
			}
			servers[leader] = natstest.Restart(t, servers[leader])
			await.Eventually(t, 30*time.Second, func() bool {
				_, err := st.LastSequence(ctx)
				return err == nil
			}, "the store answers again")

			// Sent again, on this replica and on one that never saw them, as a client does: again
			// while the store is unavailable (the cluster settling after the restart).
			for name, s := range map[string]*command.Service{"same replica": svc, "other replica": newService(t, st)} {
				again := func(what string, cmd func() (projections.Flag, error)) {
					t.Helper()
					var err error
					await.Eventually(t, 30*time.Second, func() bool {
						_, err = cmd()
						return !errors.Is(err, events.ErrUnavailable) && !errors.Is(err, events.ErrOutcomeUnknown)
					}, "%s: %s is answered", name, what)
					if err != nil {
						t.Fatalf("%s: %s sent again: %v; want the first answer", name, what, err)
					}
				}
				again("the create", func() (projections.Flag, error) {
					return flagOf(s.Handle(ctx, command.CreateFlag{Meta: create, Env: env, Key: "busy", Config: cfg}))
				})
				again("the patch with its stale If-Match", func() (projections.Flag, error) {
					return flagOf(s.Handle(ctx, command.UpdateFlag{Meta: patch, Env: env, Key: "busy", ExpectedVersion: 1, Patch: []byte(`{"description":"first"}`)}))
				})
				again("the kill", func() (projections.Flag, error) {
					return flagOf(s.Handle(ctx, command.KillFlag{Meta: kill, Env: env, Key: "busy"}))
				})
			}
			if n := count(); n != stored {
				t.Fatalf("%d events after the commands were sent again, want %d: nothing new", n, stored)
			}
			// A new id is a new command: the kill is written.
			if got, err := flagOf(svc.Handle(ctx, command.KillFlag{Meta: keyed("1c1c3a52-4a4e-5c3e-9d9e-000000000004"), Env: env, Key: "busy"})); err != nil || got.Enabled {
				t.Fatalf("a new kill: enabled %v, %v", got.Enabled, err)
			}
		})
	}
}
