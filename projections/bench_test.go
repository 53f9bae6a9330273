package projections_test

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"testing"
	"time"

	"github.com/interlock-dev/interlock/events"
	"github.com/interlock-dev/interlock/internal/natstest"
	"github.com/interlock-dev/interlock/projections"
	"github.com/interlock-dev/interlock/targeting"
	"github.com/nats-io/nats.go/jetstream"
)

var rebuildEvents = flag.Int("rebuild.events", 100_000, "events BenchmarkRebuild writes before replaying them")

// rebuildFlags is how many flags of one environment the benchmark's events are spread over.
const rebuildFlags = 1000

// benchConfig is a realistic release flag: two boolean variants, a targeting rule and a
// percentage rollout by default.
func benchConfig(i int) events.FlagConfig {
	cfg := boolConfig()
	cfg.Description = "new checkout flow, rolled out by region"
	cfg.Owner = "team-checkout"
	cfg.Tags = []string{"checkout", "q3"}
	cfg.Rules = []events.Rule{{
		Name:       "beta testers",
		Conditions: []events.Condition{{Attribute: "groups", Operator: "contains", Values: []any{"beta"}}},
		Serve:      events.Serve{Variant: "on"},
	}}
	pct := i % 101
	cfg.DefaultServe = &events.Serve{Split: map[string]int{"on": pct, "off": 100 - pct}}
	return cfg
}

// rebuildEvent is the type and payload of the i-th event of the rebuild stream, for a flag at
// version: its creation, then in turn an update of its whole configuration, a kill, an enable.
func rebuildEvent(i int, version uint64) (string, any) {
	switch {
	case version == 0:
		return events.TypeFlagCreated, events.FlagCreated{Flag: benchConfig(i)}
	case i%3 == 0:
		return events.TypeFlagUpdated, events.FlagUpdated{Flag: benchConfig(i), Patch: json.RawMessage(`{"defaultServe":{"split":{"on":5,"off":95}}}`)}
	case i%3 == 1:
		return events.TypeFlagKilled, events.FlagKilled{}
	default:
		return events.TypeFlagEnabled, events.FlagEnabled{}
	}
}

// writeRebuildStream publishes n events over rebuildFlags flags in one environment: each flag's
// creation, then updates, kills and enables in turn. It publishes asynchronously (no expected
// sequence) because the events are generated in order on one connection.
func writeRebuildStream(b *testing.B, js jetstream.JetStream, n int) {
	b.Helper()
	versions := make([]uint64, rebuildFlags)
	for i := range n {
		f := i % rebuildFlags
		key := fmt.Sprintf("team-%02d.flag-%04d", f%20, f)
		typ, payload := rebuildEvent(i, versions[f])
		versions[f]++
		ev := event(b, typ, "production", key, versions[f], payload)
		if _, err := js.PublishMsgAsync(ev.Msg()); err != nil {
			b.Fatal(err)
		}
		if i%2000 == 1999 || i == n-1 {
			select {
			case <-js.PublishAsyncComplete():
			case <-time.After(time.Minute):
				b.Fatal("publishing did not complete")
			}
		}
	}
}

// BenchmarkRebuild measures how fast a replica rebuilds its catalog from the stream, against the
// speed at which the stream can merely be read. Set the number of events with -rebuild.events.
//
//	go test -run '^$' -bench BenchmarkRebuild -benchtime 3x ./projections/
func BenchmarkRebuild(b *testing.B) {
	n := *rebuildEvents
	s := natstest.RunServer(b)
	js := natstest.JetStream(b, s)
	ctx := context.Background()
	st, err := events.Open(ctx, js, events.StreamConfig{})
	if err != nil {
		b.Fatal(err)
	}
	writeRebuildStream(b, js, n)
	last, err := st.LastSequence(ctx)
	if err != nil {
		b.Fatal(err)
	}
	if last != uint64(n) {
		b.Fatalf("stream holds %d events, want %d", last, n)
	}

	b.Run("raw", func(b *testing.B) {
		runs := 0
		for b.Loop() {
			cons, err := js.OrderedConsumer(ctx, st.StreamName(), jetstream.OrderedConsumerConfig{})
			if err != nil {
				b.Fatal(err)
			}
			it, err := cons.Messages(jetstream.PullMaxMessages(1000))
			if err != nil {
				b.Fatal(err)
			}
			count := 0
			for count < n {
				if _, err := it.Next(); err != nil {
					b.Fatal(err)
				}
				count++
			}
			it.Stop()
			runs++
		}
		b.ReportMetric(float64(n*runs)/b.Elapsed().Seconds(), "events/s")
	})

	b.Run("catalog", func(b *testing.B) {
		runs := 0
		for b.Loop() {
			c := projections.NewCatalog()
			r := projections.NewRunner(st, c, nil)
			rctx, cancel := context.WithCancel(ctx)
			done := make(chan error, 1)
			go func() { done <- r.Run(rctx) }()
			if err := r.WaitReady(ctx); err != nil {
				b.Fatal(err)
			}
			cancel()
			if err := <-done; err != nil {
				b.Fatal(err)
			}
			if got := len(c.Flags("production")); got != min(n, rebuildFlags) {
				b.Fatalf("catalog holds %d flags", got)
			}
			runs++
		}
		b.ReportMetric(float64(n*runs)/b.Elapsed().Seconds(), "events/s")
	})
}

// rebuildEventList returns n events as writeRebuildStream writes them, with stream sequences.
func rebuildEventList(b *testing.B, n int) []events.Event {
	b.Helper()
	evs := make([]events.Event, 0, n)
	versions := make([]uint64, rebuildFlags)
	for i := range n {
		f := i % rebuildFlags
		key := fmt.Sprintf("team-%02d.flag-%04d", f%20, f)
		typ, payload := rebuildEvent(i, versions[f])
		versions[f]++
		ev := event(b, typ, "production", key, versions[f], payload)
		ev.Sequence = uint64(i + 1)
		evs = append(evs, ev)
	}
	return evs
}

// BenchmarkCatalogApply measures the fold alone, without the stream: the events of the rebuild
// benchmark applied to a fresh catalog.
func BenchmarkCatalogApply(b *testing.B) {
	evs := rebuildEventList(b, 30_000)
	runs := 0
	for b.Loop() {
		c := projections.NewCatalog()
		for _, ev := range evs {
			if err := c.Apply(ev); err != nil {
				b.Fatal(err)
			}
		}
		runs++
	}
	b.ReportMetric(float64(len(evs)*runs)/b.Elapsed().Seconds(), "events/s")
}

func BenchmarkDiff(b *testing.B) {
	before := projections.Flag{Key: "a", Environment: "production", FlagConfig: benchConfig(5), Version: 1}
	after := before
	after.FlagConfig = benchConfig(25)
	after.Enabled = false
	for b.Loop() {
		if len(projections.Diff(before, after)) != 2 {
			b.Fatal("want two changes")
		}
	}
}

// BenchmarkRebuildEvaluators is BenchmarkRebuild with Evaluators attached to
// the catalog, against the speed at which the stream can merely be read. The machine is shared,
// so each iteration runs the three passes back to back — raw read, catalog rebuild, catalog
// rebuild with evaluators and a read of the result — and the benchmark reports each pass's
// events/s and the evaluators' share of raw:
//
//	go test ./projections/ -run '^$' -bench BenchmarkRebuildEvaluators -benchtime 3x -rebuild.events=100000
func BenchmarkRebuildEvaluators(b *testing.B) {
	n := *rebuildEvents
	s := natstest.RunServer(b)
	js := natstest.JetStream(b, s)
	ctx := context.Background()
	st, err := events.Open(ctx, js, events.StreamConfig{})
	if err != nil {
		b.Fatal(err)
	}
	writeRebuildStream(b, js, n)

	raw := func() {
		cons, err := js.OrderedConsumer(ctx, st.StreamName(), jetstream.OrderedConsumerConfig{})
		if err != nil {
			b.Fatal(err)
		}
		it, err := cons.Messages(jetstream.PullMaxMessages(1000))
		if err != nil {
			b.Fatal(err)
		}
		for range n {
			if _, err := it.Next(); err != nil {
				b.Fatal(err)
			}
		}
		it.Stop()
	}
	rebuild := func(attach bool) {
		c := projections.NewCatalog()
		var e *targeting.Evaluators
		if attach {
			e = targeting.NewEvaluators(c)
		}
		r := projections.NewRunner(st, c, nil)
		rctx, cancel := context.WithCancel(ctx)
		done := make(chan error, 1)
		go func() { done <- r.Run(rctx) }()
		if err := r.WaitReady(ctx); err != nil {
			b.Fatal(err)
		}
		if attach {
			set := e.Flagset("production")
			if got := len(set.Keys()); got != min(n, rebuildFlags) || set.Sequence() != uint64(n) {
				b.Fatalf("evaluators hold %d flags at %d", got, set.Sequence())
			}
		}
		cancel()
		if err := <-done; err != nil {
			b.Fatal(err)
		}
	}
	timed := func(f func()) time.Duration {
		start := time.Now()
		f()
		return time.Since(start)
	}
	var tRaw, tCatalog, tEval time.Duration
	for b.Loop() {
		tRaw += timed(raw)
		tCatalog += timed(func() { rebuild(false) })
		tEval += timed(func() { rebuild(true) })
	}
	rate := func(d time.Duration) float64 { return float64(n*b.N) / d.Seconds() }
	b.ReportMetric(rate(tRaw), "raw-events/s")
	b.ReportMetric(rate(tCatalog), "catalog-events/s")
	b.ReportMetric(rate(tEval), "evaluators-events/s")
	b.ReportMetric(100*rate(tEval)/rate(tRaw), "evaluators-%-of-raw")
	b.ReportMetric(0, "ns/op")
}

// BenchmarkCatalogApplyEvaluators is BenchmarkCatalogApply with and without
// Evaluators attached: the cost the evaluators add to the fold of each event, without the
// stream.
func BenchmarkCatalogApplyEvaluators(b *testing.B) {
	evs := rebuildEventList(b, 30_000)
	for _, attach := range []bool{false, true} {
		name := "catalog"
		if attach {
			name = "evaluators"
		}
		b.Run(name, func(b *testing.B) {
			runs := 0
			for b.Loop() {
				c := projections.NewCatalog()
				var e *targeting.Evaluators
				if attach {
					e = targeting.NewEvaluators(c)
				}
				for _, ev := range evs {
					if err := c.Apply(ev); err != nil {
						b.Fatal(err)
					}
				}
				if attach && len(e.Flagset("production").Keys()) != rebuildFlags {
					b.Fatal("evaluators do not hold every flag")
				}
				runs++
			}
			b.ReportMetric(float64(len(evs)*runs)/b.Elapsed().Seconds(), "events/s")
		})
	}
}
