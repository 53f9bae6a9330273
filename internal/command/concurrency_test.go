package command_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/interlock-dev/interlock/events"
	"github.com/interlock-dev/interlock/internal/await"
	"github.com/interlock-dev/interlock/internal/command"
	"github.com/interlock-dev/interlock/internal/natstest"
	"github.com/interlock-dev/interlock/projections"
)

// countingStore is the real store, counting the conflicts its appends report.
type countingStore struct {
	*events.Store
	conflicts atomic.Int64
}

func (s *countingStore) Append(ctx context.Context, ev *events.Event, expectedSeq uint64) (uint64, error) {
	seq, err := s.Store.Append(ctx, ev, expectedSeq)
	if errors.Is(err, events.ErrConflict) {
		s.conflicts.Add(1)
	}
	return seq, err
}

// TestConcurrentUpdates is the lost-update test: writers race on one flag, each update naming
// the version its writer last saw. Every conflict must come back as a VersionError; every
// update reported as successful must be in the history, at the version it was reported at.
func TestConcurrentUpdates(t *testing.T) {
	const writers, attempts = 8, 500
	for _, replicas := range []int{1, 2} {
		t.Run(fmt.Sprintf("%d replicas", replicas), func(t *testing.T) {
			srv := natstest.RunServer(t)
			ctx := context.Background()
			stores := make([]*countingStore, replicas)
			svcs := make([]*command.Service, replicas)
			for i := range replicas {
				stores[i] = &countingStore{Store: openStore(t, srv)}
				svcs[i] = newService(t, stores[i])
			}
			const key = "contended"
			mustCreate(t, svcs[0], key, baseConfig())

			var (
				mu        sync.Mutex
				succeeded = map[uint64]string{} // version → description written at it
				stale     atomic.Int64
				wg        sync.WaitGroup
			)
			errs := make(chan error, writers)
			for w := range writers {
				svc := svcs[w%replicas]
				wg.Go(func() {
					m := command.Meta{Actor: fmt.Sprintf("writer-%d", w)}
					version := uint64(1)
					for n := range attempts {
						desc := fmt.Sprintf("w%d-%d", w, n)
						f, err := flagOf(svc.Handle(ctx, command.UpdateFlag{Meta: m, Env: env, Key: key, ExpectedVersion: version, Patch: []byte(`{"description":"` + desc + `"}`)}))
						var ve *command.VersionError
						switch {
						case err == nil:
							mu.Lock()
							if prev, dup := succeeded[f.Version]; dup {
								mu.Unlock()
								errs <- fmt.Errorf("version %d reported twice: %s and %s", f.Version, prev, desc)
								return
							}
							succeeded[f.Version] = desc
							mu.Unlock()
							if f.Description != desc || f.Version != version+1 {
								errs <- fmt.Errorf("%s at version %d returned %q at %d", desc, version, f.Description, f.Version)
								return
							}
							version = f.Version
						case errors.As(err, &ve) && errors.Is(err, command.ErrStale):
							if ve.Expected != version || ve.Actual == version {
								errs <- fmt.Errorf("version error %+v for expected %d", ve, version)
								return
							}
							stale.Add(1)
							version = ve.Actual
						default:
							errs <- fmt.Errorf("%s: %w", desc, err)
							return
						}
					}
				})
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				t.Error(err)
			}
			if t.Failed() {
				return
			}

			evs := load(t, st0(stores), key)
			final, err := projections.Fold(evs)
			if err != nil {
				t.Fatal(err)
			}
			if want := uint64(1 + len(succeeded)); final.Version != want || uint64(len(evs)) != want {
				t.Fatalf("final version %d with %d events, want %d: updates were lost or invented", final.Version, len(evs), want)
			}
			for _, ev := range evs[1:] {
				p := payload[events.FlagUpdated](t, ev)
				if want, ok := succeeded[ev.Version]; !ok || p.Flag.Description != want {
					t.Fatalf("version %d holds %q, the writer was told %q", ev.Version, p.Flag.Description, want)
				}
			}
			var conflicts int64
			for _, s := range stores {
				conflicts += s.conflicts.Load()
			}
			t.Logf("%d writers × %d attempts on %d replicas: %d updates, %d stale, %d JetStream conflicts",
				writers, attempts, replicas, len(succeeded), stale.Load(), conflicts)
			if replicas > 1 && conflicts == 0 {
				t.Fatal("no append conflicted: the replicas' caches were never stale, the test proved nothing")
			}
		})
	}
}

func st0(stores []*countingStore) *events.Store { return stores[0].Store }

// TestKillRace kills flags while writers on two replicas keep updating them without a version:
// the kill always lands, once, and the flag stays off.
func TestKillRace(t *testing.T) {
	srv := natstest.RunServer(t)
	ctx := context.Background()
	st := openStore(t, srv)
	a, b, oncall := newService(t, st), newService(t, openStore(t, srv)), newService(t, openStore(t, srv))
	for round := range 3 {
		key := fmt.Sprintf("hot-%d", round)
		cfg := baseConfig()
		cfg.Enabled = true
		mustCreate(t, a, key, cfg)

		stop := make(chan struct{})
		var (
			wg      sync.WaitGroup
			updates atomic.Int64
		)
		errs := make(chan error, 8)
		for w := range 8 {
			svc := []*command.Service{a, b}[w%2]
			wg.Go(func() {
				for n := 0; ; n++ {
					select {
					case <-stop:
						return
					default:
					}
					_, err := svc.Handle(ctx, command.UpdateFlag{Meta: alice, Env: env, Key: key, ExpectedVersion: 0, Patch: []byte(fmt.Sprintf(`{"description":"w%d-%d"}`, w, n))})
					if err != nil && !errors.Is(err, events.ErrConflict) {
						errs <- err
						return
					}
					if err == nil {
						updates.Add(1)
					}
				}
			})
		}
		await.Eventually(t, 10*time.Second, func() bool { return updates.Load() >= 20 }, "writers got going")
		f, kerr := flagOf(oncall.Handle(ctx, command.KillFlag{Meta: command.Meta{Actor: "oncall", Reason: "errors spiking"}, Env: env, Key: key}))
		close(stop)
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Error(err)
		}
		if kerr != nil {
			t.Fatalf("kill: %v", kerr)
		}
		if f.Enabled {
			t.Fatalf("kill returned an enabled flag: %+v", f)
		}
		evs := load(t, st, key)
		kills := 0
		for _, ev := range evs {
			if ev.Type == events.TypeFlagKilled {
				kills++
				if ev.Actor != "oncall" || ev.Reason != "errors spiking" || ev.Version != f.Version {
					t.Fatalf("kill event %+v, kill returned version %d", ev, f.Version)
				}
			}
		}
		final, err := projections.Fold(evs)
		if err != nil {
			t.Fatal(err)
		}
		if kills != 1 || final.Enabled {
			t.Fatalf("%d kill events, enabled at the end: %v", kills, final.Enabled)
		}
		t.Logf("round %d: killed at version %d of %d", round, f.Version, final.Version)
	}
}

// lossyStore is the real store behind a connection that loses acknowledgements: the event is
// stored but the caller hears that the outcome is unknown, as after a network failure.
type lossyStore struct {
	*events.Store
	lose atomic.Int32 // acknowledgements still to lose
}

var errAckLost = errors.New("nats: timeout")

func (s *lossyStore) Append(ctx context.Context, ev *events.Event, expectedSeq uint64) (uint64, error) {
	seq, err := s.Store.Append(ctx, ev, expectedSeq)
	if err == nil && s.lose.Add(-1) >= 0 {
		return 0, &events.OutcomeError{EventID: ev.ID, Subject: ev.Subject(), Err: errAckLost}
	}
	return seq, err
}

func TestTransportRetry(t *testing.T) {
	srv := natstest.RunServer(t)
	ctx := context.Background()
	st := &lossyStore{Store: openStore(t, srv)}
	svc := newService(t, st)
	mustCreate(t, svc, "flaky", baseConfig())

	// Two lost acknowledgements: the resends find the stored event and the command succeeds,
	// having written once.
	st.lose.Store(2)
	f, err := flagOf(svc.Handle(ctx, command.UpdateFlag{Meta: alice, Env: env, Key: "flaky", ExpectedVersion: 1, Patch: []byte(`{"description":"once"}`)}))
	if err != nil {
		t.Fatal(err)
	}
	if f.Version != 2 || len(load(t, st.Store, "flaky")) != 2 {
		t.Fatalf("version %d, events %d: want one event written", f.Version, len(load(t, st.Store, "flaky")))
	}

	// Three lost: the command gives up with the transport error, but the event is stored; the
	// next command finds out and goes on from there.
	st.lose.Store(3)
	if _, err := svc.Handle(ctx, command.EnableFlag{Meta: alice, Env: env, Key: "flaky", ExpectedVersion: 2}); !errors.Is(err, errAckLost) || !errors.Is(err, events.ErrOutcomeUnknown) {
		t.Fatalf("got %v, want the outcome unknown", err)
	}
	if evs := load(t, st.Store, "flaky"); len(evs) != 3 || evs[2].Type != events.TypeFlagEnabled {
		t.Fatalf("want the enable stored once, got %d events", len(evs))
	}
	f, err = flagOf(svc.Handle(ctx, command.UpdateFlag{Meta: alice, Env: env, Key: "flaky", ExpectedVersion: 3, Patch: []byte(`{"description":"after"}`)}))
	if err != nil {
		t.Fatal(err)
	}
	if f.Version != 4 || !f.Enabled {
		t.Fatalf("got %+v", f)
	}
}

// blockingStore holds appends to one flag until released.
type blockingStore struct {
	*events.Store
	key     string
	entered chan struct{}
	release chan struct{}
}

func (s *blockingStore) Append(ctx context.Context, ev *events.Event, expectedSeq uint64) (uint64, error) {
	if ev.Key == s.key {
		s.entered <- struct{}{}
		<-s.release
	}
	return s.Store.Append(ctx, ev, expectedSeq)
}

// TestPerFlagLock shows that commands on one flag wait for each other (and give up when their
// context ends) while commands on other flags go ahead.
func TestPerFlagLock(t *testing.T) {
	srv := natstest.RunServer(t)
	ctx := context.Background()
	st := &blockingStore{Store: openStore(t, srv), key: "slow", entered: make(chan struct{}, 1), release: make(chan struct{})}
	setupSvc := newService(t, st.Store)
	mustCreate(t, setupSvc, "slow", baseConfig())
	mustCreate(t, setupSvc, "fast", baseConfig())
	svc := newService(t, st)

	done := make(chan error, 1)
	go func() {
		_, err := svc.Handle(ctx, command.UpdateFlag{Meta: alice, Env: env, Key: "slow", ExpectedVersion: 0, Patch: []byte(`{"description":"slow"}`)})
		done <- err
	}()
	select {
	case <-st.entered: // the slow update holds its flag's lock, inside the append
	case err := <-done:
		t.Fatalf("the slow update ended before appending: %v", err)
	}

	if _, err := svc.Handle(ctx, command.UpdateFlag{Meta: alice, Env: env, Key: "fast", ExpectedVersion: 0, Patch: []byte(`{"description":"fast"}`)}); err != nil {
		t.Fatalf("another flag: %v", err)
	}
	waiting, cancel := context.WithCancel(ctx)
	waited := make(chan error, 1)
	go func() {
		_, err := svc.Handle(waiting, command.KillFlag{Meta: alice, Env: env, Key: "slow"})
		waited <- err
	}()
	cancel()
	if err := <-waited; !errors.Is(err, context.Canceled) {
		t.Fatalf("waiting command: got %v, want context.Canceled", err)
	}
	close(st.release)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if evs := load(t, st.Store, "slow"); len(evs) != 2 {
		t.Fatalf("%d events on the slow flag, want 2", len(evs))
	}
}
