package command_test

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"testing"

	"github.com/interlock-dev/interlock/events"
	"github.com/interlock-dev/interlock/guard"
	"github.com/interlock-dev/interlock/internal/command"
	"github.com/interlock-dev/interlock/internal/natstest"
	"github.com/interlock-dev/interlock/projections"
	"github.com/nats-io/nats-server/v2/server"
)

const env = "production"

var alice = command.Meta{Actor: "alice", Reason: "test", CorrelationID: "corr-1", CausationID: "cause-1"}

// openStore opens the event store on a new connection to s, as one replica would.
func openStore(tb testing.TB, s *server.Server) *events.Store {
	tb.Helper()
	st, err := events.Open(context.Background(), natstest.JetStream(tb, s), events.StreamConfig{})
	if err != nil {
		tb.Fatal(err)
	}
	return st
}

func newService(tb testing.TB, st command.Store) *command.Service {
	tb.Helper()
	return command.New(st, slog.New(slog.DiscardHandler), command.WithPlanChecks(guard.CheckPlan, guard.CheckValvePolicy))
}

// flagOf and segmentOf take the flag or the segment out of what Handle returns.
func flagOf(r command.Result, err error) (projections.Flag, error) { return r.Flag, err }

func segmentOf(r command.Result, err error) (projections.Segment, error) {
	return r.Segment, err
}

// setup starts a server and returns the store and a service on it.
func setup(tb testing.TB) (*events.Store, *command.Service) {
	tb.Helper()
	st := openStore(tb, natstest.RunServer(tb))
	return st, newService(tb, st)
}

// baseConfig is a release flag with a rule and a default split.
func baseConfig() events.FlagConfig {
	return events.FlagConfig{
		Description:    "checkout redesign",
		Owner:          "team-checkout",
		Tags:           []string{"checkout", "web"},
		Kind:           events.KindRelease,
		Variants:       map[string]json.RawMessage{"on": json.RawMessage("true"), "off": json.RawMessage("false")},
		DefaultVariant: "on",
		OffVariant:     "off",
		Rules: []events.Rule{{
			Name:       "beta",
			Conditions: []events.Condition{{Attribute: "plan", Operator: "in", Values: []any{"beta"}}},
			Serve:      events.Serve{Variant: "on"},
		}},
		DefaultServe: &events.Serve{Split: map[string]int{"on": 50, "off": 50}},
	}
}

// streamLen is the number of events in the stream (nothing is ever deleted from it).
func streamLen(tb testing.TB, st *events.Store) uint64 {
	tb.Helper()
	n, err := st.LastSequence(context.Background())
	if err != nil {
		tb.Fatal(err)
	}
	return n
}

func load(tb testing.TB, st *events.Store, key string) []events.Event {
	tb.Helper()
	evs, err := st.Load(context.Background(), env, key)
	if err != nil {
		tb.Fatal(err)
	}
	return evs
}

// mustCreate creates key from cfg and fails the test on error.
func mustCreate(tb testing.TB, svc *command.Service, key string, cfg events.FlagConfig) projections.Flag {
	tb.Helper()
	f, err := flagOf(svc.Handle(context.Background(), command.CreateFlag{Meta: alice, Env: env, Key: key, Config: cfg}))
	if err != nil {
		tb.Fatalf("create %s: %v", key, err)
	}
	return f
}

// checkErr fails unless err matches want (nil: no error expected).
func checkErr(tb testing.TB, err, want error) {
	tb.Helper()
	switch {
	case want == nil && err != nil:
		tb.Fatalf("unexpected error: %v", err)
	case want != nil && !errors.Is(err, want):
		tb.Fatalf("error %v, want one matching %v", err, want)
	}
}

// checkField fails unless err carries a *events.ValidationError for field.
func checkField(tb testing.TB, err error, field string) {
	tb.Helper()
	if field == "" {
		return
	}
	for _, e := range flatten(err) {
		var ve *events.ValidationError
		if errors.As(e, &ve) && ve.Field == field {
			return
		}
	}
	tb.Fatalf("error %v does not name field %q", err, field)
}

// flatten lists err and every error it joins or wraps.
func flatten(err error) []error {
	if err == nil {
		return nil
	}
	out := []error{err}
	switch u := err.(type) {
	case interface{ Unwrap() []error }:
		for _, e := range u.Unwrap() {
			out = append(out, flatten(e)...)
		}
	case interface{ Unwrap() error }:
		out = append(out, flatten(u.Unwrap())...)
	}
	return out
}

func payload[T any](tb testing.TB, ev events.Event) *T {
	tb.Helper()
	p, err := ev.Payload()
	if err != nil {
		tb.Fatal(err)
	}
	v, ok := p.(*T)
	if !ok {
		tb.Fatalf("payload of %s is %T", ev.Type, p)
	}
	return v
}
