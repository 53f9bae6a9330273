package projections_test

import (
	"context"
	"encoding/json"
	"errors"
	"reflect"
	"sync"
	"testing"
	"time"

	"github.com/interlock-dev/interlock/events"
	"github.com/interlock-dev/interlock/projections"
)

// seqd gives ev a stream sequence, as a read from the stream does.
func seqd(ev events.Event, seq uint64) events.Event {
	ev.Sequence = seq
	return ev
}

func TestCatalogApply(t *testing.T) {
	c := projections.NewCatalog()
	evs := []events.Event{
		seqd(event(t, events.TypeFlagCreated, "production", "checkout-v2", 1, events.FlagCreated{Flag: boolConfig()}), 1),
		seqd(event(t, events.TypeFlagCreated, "staging", "checkout-v2", 1, events.FlagCreated{Flag: boolConfig()}), 2),
		seqd(event(t, events.TypeFlagCreated, "production", "DeptA.TeamB.66623", 1, events.FlagCreated{Flag: boolConfig()}), 3),
		seqd(event(t, events.TypeFlagKilled, "production", "checkout-v2", 2, events.FlagKilled{}), 5),
		seqd(event(t, events.TypeFlagArchived, "production", "DeptA.TeamB.66623", 2, events.FlagArchived{}), 6),
	}
	for _, ev := range evs {
		if err := c.Apply(ev); err != nil {
			t.Fatalf("apply %s at %d: %v", ev.Type, ev.Sequence, err)
		}
	}
	if got := c.Sequence(); got != 6 {
		t.Fatalf("sequence %d, want 6", got)
	}
	f, ok := c.Flag("production", "checkout-v2")
	if !ok || f.Enabled || f.Version != 2 || f.Sequence != 5 || f.UpdatedBy != "alice" || f.Key != "checkout-v2" {
		t.Fatalf("killed flag: ok %v %+v", ok, f)
	}
	if f, _ := c.Flag("staging", "checkout-v2"); !f.Enabled || f.Version != 1 {
		t.Fatalf("staging flag changed by a production event: %+v", f)
	}
	if _, ok := c.Flag("production", "nope"); ok {
		t.Fatal("unknown flag found")
	}
	if _, ok := c.Flag("nope", "checkout-v2"); ok {
		t.Fatal("flag found in unknown environment")
	}
	var keys []string
	for _, f := range c.Flags("production") {
		keys = append(keys, f.Key)
	}
	if want := []string{"DeptA.TeamB.66623", "checkout-v2"}; !reflect.DeepEqual(keys, want) {
		t.Fatalf("flags %v, want %v (sorted, archived included)", keys, want)
	}
	if got := c.Flags("nope"); len(got) != 0 {
		t.Fatalf("flags of unknown environment: %v", got)
	}
	if got, want := c.Environments(), []string{"production", "staging"}; !reflect.DeepEqual(got, want) {
		t.Fatalf("environments %v, want %v", got, want)
	}
}

func TestCatalogSkipsRedelivery(t *testing.T) {
	c := projections.NewCatalog()
	created := seqd(event(t, events.TypeFlagCreated, "production", "a", 1, events.FlagCreated{Flag: boolConfig()}), 1)
	killed := seqd(event(t, events.TypeFlagKilled, "production", "a", 2, events.FlagKilled{}), 2)
	for _, ev := range []events.Event{created, killed} {
		if err := c.Apply(ev); err != nil {
			t.Fatal(err)
		}
	}
	want, _ := c.Flag("production", "a")
	// The same events again (a redelivery after a reconnect) change nothing and are no error:
	// without the skip, both would be refused as out of order.
	for _, ev := range []events.Event{created, killed, killed} {
		if err := c.Apply(ev); err != nil {
			t.Fatalf("redelivery of %d: %v", ev.Sequence, err)
		}
	}
	got, _ := c.Flag("production", "a")
	if !reflect.DeepEqual(got, want) || c.Sequence() != 2 {
		t.Fatalf("redelivery changed the catalog: %+v at %d", got, c.Sequence())
	}
}

func TestCatalogRefusesBadEvents(t *testing.T) {
	created := seqd(event(t, events.TypeFlagCreated, "production", "a", 1, events.FlagCreated{Flag: boolConfig()}), 1)
	malformed := event(t, events.TypeFlagUpdated, "production", "a", 2, nil)
	malformed.Data = json.RawMessage(`{"flag": "not a flag"}`)
	badEnv := event(t, events.TypeFlagCreated, "production", "b", 1, events.FlagCreated{Flag: boolConfig()})
	badEnv.Environment = "Not An Env"
	badKey := event(t, events.TypeFlagCreated, "production", "b", 1, events.FlagCreated{Flag: boolConfig()})
	badKey.Key = "a..b"

	for _, tc := range []struct {
		name string
		ev   events.Event
		want error
	}{
		{"gap in versions", event(t, events.TypeFlagKilled, "production", "a", 3, events.FlagKilled{}), projections.ErrOutOfOrder},
		{"created twice", event(t, events.TypeFlagCreated, "production", "a", 1, events.FlagCreated{Flag: boolConfig()}), projections.ErrOutOfOrder},
		{"first event is not a creation", event(t, events.TypeFlagKilled, "production", "b", 1, events.FlagKilled{}), projections.ErrOutOfOrder},
		{"payload does not decode", malformed, events.ErrMalformed},
		{"unknown type cannot create a flag", event(t, "io.interlock.flag.future.v1", "production", "b", 1, nil), events.ErrUnknownType},
		{"bad environment", badEnv, events.ErrInvalid},
		{"bad key", badKey, events.ErrInvalid},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := projections.NewCatalog()
			if err := c.Apply(created); err != nil {
				t.Fatal(err)
			}
			before, _ := c.Flag("production", "a")
			err := c.Apply(seqd(tc.ev, 7))
			if !errors.Is(err, tc.want) {
				t.Fatalf("got %v, want %v", err, tc.want)
			}
			if c.Sequence() != 7 {
				t.Fatalf("sequence %d after a bad event, want 7: one bad event must not wedge the catalog", c.Sequence())
			}
			after, _ := c.Flag("production", "a")
			if !reflect.DeepEqual(before, after) {
				t.Fatalf("bad event changed the flag:\n%+v\n%+v", before, after)
			}
			if _, ok := c.Flag("production", "b"); ok {
				t.Fatal("bad event created a flag")
			}
			if got := c.Environments(); !reflect.DeepEqual(got, []string{"production"}) {
				t.Fatalf("environments %v", got)
			}
			// The flag goes on from where it was.
			next := seqd(event(t, events.TypeFlagKilled, "production", "a", 2, events.FlagKilled{}), 8)
			if err := c.Apply(next); err != nil {
				t.Fatalf("next event after a bad one: %v", err)
			}
		})
	}
}

// An event of a type this version does not know counts as a version of an existing flag, so that
// the events after it still follow.
func TestCatalogCountsUnknownTypes(t *testing.T) {
	c := projections.NewCatalog()
	for _, ev := range []events.Event{
		seqd(event(t, events.TypeFlagCreated, "production", "a", 1, events.FlagCreated{Flag: boolConfig()}), 1),
		seqd(event(t, "io.interlock.flag.future.v1", "production", "a", 2, map[string]int{"x": 1}), 2),
		seqd(event(t, events.TypeFlagKilled, "production", "a", 3, events.FlagKilled{}), 3),
	} {
		if err := c.Apply(ev); err != nil {
			t.Fatal(err)
		}
	}
	if f, _ := c.Flag("production", "a"); f.Version != 3 || f.Enabled {
		t.Fatalf("%+v", f)
	}
}

func TestCatalogRefusesEventWithoutSequence(t *testing.T) {
	c := projections.NewCatalog()
	ev := event(t, events.TypeFlagCreated, "production", "a", 1, events.FlagCreated{Flag: boolConfig()})
	if err := c.Apply(ev); !errors.Is(err, projections.ErrOutOfOrder) {
		t.Fatalf("got %v, want ErrOutOfOrder", err)
	}
	if _, ok := c.Flag("production", "a"); ok || c.Sequence() != 0 {
		t.Fatal("an event without a stream sequence changed the catalog")
	}
}

func TestCatalogWaitSequence(t *testing.T) {
	c := projections.NewCatalog()
	ctx := context.Background()
	done := make(chan error, 1)
	go func() { done <- c.WaitSequence(ctx, 2) }()

	if err := c.Apply(seqd(event(t, events.TypeFlagCreated, "production", "a", 1, events.FlagCreated{Flag: boolConfig()}), 1)); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		t.Fatalf("returned at sequence 1 while waiting for 2: %v", err)
	default:
	}
	if err := c.Apply(seqd(event(t, events.TypeFlagKilled, "production", "a", 2, events.FlagKilled{}), 2)); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("WaitSequence not released by the sequence it waited for")
	}
	if err := c.WaitSequence(ctx, 1); err != nil {
		t.Fatalf("a sequence already reached: %v", err)
	}

	cctx, cancel := context.WithCancel(ctx)
	go func() { done <- c.WaitSequence(cctx, 99) }()
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("after cancel: %v, want context.Canceled", err)
	}
}

// Readers never see a torn flag while one writer folds: every flag they read was enabled at odd
// versions and killed at even ones, and the sequence never goes back. Run with -race.
func TestCatalogConcurrentReaders(t *testing.T) {
	const flags, rounds = 8, 150
	keys := []string{"f0", "f1", "f2", "f3", "f4", "f5", "f6", "f7"}
	var evs []events.Event
	seq := uint64(0)
	for v := uint64(1); v <= rounds; v++ {
		for _, key := range keys[:flags] {
			seq++
			var ev events.Event
			switch {
			case v == 1:
				ev = event(t, events.TypeFlagCreated, "production", key, v, events.FlagCreated{Flag: boolConfig()})
			case v%2 == 0:
				ev = event(t, events.TypeFlagKilled, "production", key, v, events.FlagKilled{})
			default:
				ev = event(t, events.TypeFlagEnabled, "production", key, v, events.FlagEnabled{})
			}
			evs = append(evs, seqd(ev, seq))
		}
	}

	c := projections.NewCatalog()
	stop := make(chan struct{})
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	check := func(f projections.Flag) {
		if f.Enabled != (f.Version%2 == 1) || f.Variants["on"] == nil {
			errs <- errors.New("torn flag")
		}
	}
	for range 4 {
		wg.Go(func() {
			var last uint64
			for {
				select {
				case <-stop:
					return
				default:
				}
				s := c.Sequence()
				if s < last {
					errs <- errors.New("sequence went back")
					return
				}
				last = s
				for _, f := range c.Flags("production") {
					check(f)
				}
				if f, ok := c.Flag("production", "f3"); ok {
					check(f)
				}
				_ = c.Environments()
			}
		})
	}
	wg.Go(func() {
		_ = c.WaitSequence(context.Background(), seq)
	})
	for _, ev := range evs {
		if err := c.Apply(ev); err != nil {
			t.Fatal(err)
		}
	}
	close(stop)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	for _, f := range c.Flags("production") {
		if f.Version != rounds {
			t.Fatalf("%s at version %d, want %d", f.Key, f.Version, rounds)
		}
	}
}

// A reader's copy stays as it was while the catalog folds on.
func TestCatalogCopiesAreStable(t *testing.T) {
	c := projections.NewCatalog()
	if err := c.Apply(seqd(event(t, events.TypeFlagCreated, "production", "a", 1, events.FlagCreated{Flag: boolConfig()}), 1)); err != nil {
		t.Fatal(err)
	}
	held, _ := c.Flag("production", "a")
	cfg := boolConfig()
	cfg.Variants["on"] = json.RawMessage(`false`)
	cfg.Description = "changed"
	if err := c.Apply(seqd(event(t, events.TypeFlagUpdated, "production", "a", 2, events.FlagUpdated{Flag: cfg}), 2)); err != nil {
		t.Fatal(err)
	}
	if held.Description != "" || string(held.Variants["on"]) != "true" || held.Version != 1 {
		t.Fatalf("a held copy changed: %+v", held)
	}
	now, _ := c.Flag("production", "a")
	if now.Description != "changed" || string(now.Variants["on"]) != "false" {
		t.Fatalf("update not applied: %+v", now)
	}
}
