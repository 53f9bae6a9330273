package local_test

import (
	"context"
	"flag"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/interlock-dev/interlock/internal/natstest"
	"github.com/interlock-dev/interlock/local"
)

var (
	measurePropagation = flag.Bool("propagation", false, "measure kill propagation to an in-process subscriber (slow; see docs/bench/propagation.md)")
	propagationKills   = flag.Int("propagation.kills", 10_000, "kills (alternating with enables) to measure")
	propagationFlags   = flag.Int("propagation.flags", 100, "other flags in the environment")
	propagationAuth    = flag.Bool("propagation.perimeter", false, "run as `interlock serve` does: embedded server closed by the auth callout, writer in process, subscriber with a reader token")
)

// TestPropagation measures, on one JetStream server over TCP on loopback with fsync on every
// write (as in production), the time from the acknowledgement of a kill (the command service's
// Kill or Enable returning) to an in-process subscriber on its own connection having applied it
// (its new flag set visible to evaluations), for kills alternating with enables so that every one
// is a change. In the same run it measures raw JetStream: a KV put's acknowledgement to a KV
// watcher receiving it, and a stream publish's acknowledgement to an ordered consumer receiving
// it. It only runs with -propagation and only reports: timings are never asserted.
func TestPropagation(t *testing.T) {
	if !*measurePropagation {
		t.Skip("run with -propagation to measure")
	}
	var s *system
	var subscriberConn func(testing.TB) *nats.Conn
	if *propagationAuth {
		s, subscriberConn = bootPerimeter(t, true)
	} else {
		s = boot(t, natstest.Options{Sync: true})
		subscriberConn = func(t testing.TB) *nats.Conn { return connect(t, s.srv) }
	}
	ctx := context.Background()
	for i := range *propagationFlags {
		s.create(t, "prod", fmt.Sprintf("other-%05d", i), boolFlag(true))
	}
	s.create(t, "prod", "payments", boolFlag(true))

	c := start(t, subscriberConn(t), local.Config{Environment: "prod"})
	applied := make(chan stamp, 64)
	c.Observe(func(n local.Notice) {
		if n.Kind == local.NoticeChanged {
			applied <- stamp{n.Sequence, time.Now()}
		}
	})
	waitReady(t, c)

	n := *propagationKills
	sub := make([]time.Duration, 0, n)
	ack := make([]time.Duration, 0, n)
	early := 0
	for i := range n {
		start := time.Now()
		var seq uint64
		if i%2 == 0 {
			seq = s.kill(t, "prod", "payments").Sequence
		} else {
			seq = s.enable(t, "prod", "payments").Sequence
		}
		acked := time.Now()
		ack = append(ack, acked.Sub(start))
		st := next(t, applied, seq)
		d := st.at.Sub(acked)
		if d < 0 {
			early++ // applied before the acknowledgement reached the writer
			d = 0
		}
		sub = append(sub, d)
	}
	if got, _ := serves(c, "payments"); got != map[bool]string{true: "off", false: "on"}[n%2 == 1] {
		t.Fatalf("payments serves %q after %d alternating kills and enables", got, n)
	}

	kv, err := s.js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: "bench"})
	if err != nil {
		t.Fatal(err)
	}
	kvLat, kvEarly := rawKV(t, kv, n)
	ocLat, ocEarly := rawOrdered(t, s.js, n)

	var b strings.Builder
	setup := "TCP loopback, no auth"
	if *propagationAuth {
		setup = "embedded server with the auth callout: writer in process, subscriber over TCP loopback with a reader token"
	}
	fmt.Fprintf(&b, "\n%d kills and enables of one flag in an environment of %d flags; JetStream fsync on every write; %s\n", n, *propagationFlags+1, setup)
	fmt.Fprintf(&b, "%-58s %9s %9s %9s %9s %9s\n", "path", "p50", "p90", "p99", "p99.9", "max")
	row := func(name string, d []time.Duration) {
		p := percentiles(d)
		fmt.Fprintf(&b, "%-58s %9s %9s %9s %9s %9s\n", name, p[0], p[1], p[2], p[3], p[4])
	}
	row("kill acknowledged → in-process subscriber applied it", sub)
	row("raw: KV put acknowledged → KV watcher received it", kvLat)
	row("raw: stream publish acknowledged → ordered consumer got it", ocLat)
	row("(for scale) the kill command itself, until acknowledged", ack)
	fmt.Fprintf(&b, "received before the writer had its acknowledgement (counted as 0): subscriber %d, KV watcher %d, ordered consumer %d, of %d each\n", early, kvEarly, ocEarly, n)
	t.Log(b.String())
}

type stamp struct {
	seq uint64
	at  time.Time
}

// next returns the stamp of seq, skipping older ones.
func next(t *testing.T, ch <-chan stamp, seq uint64) stamp {
	t.Helper()
	timeout := time.After(wait)
	for {
		select {
		case st := <-ch:
			if st.seq == seq {
				return st
			}
			if st.seq > seq {
				t.Fatalf("applied %d while waiting for %d", st.seq, seq)
			}
		case <-timeout:
			t.Fatalf("sequence %d not applied within %v", seq, wait)
		}
	}
}

// rawKV measures a KV put's acknowledgement to a watcher receiving the value. It also counts the
// values received before the acknowledgement.
func rawKV(t *testing.T, kv jetstream.KeyValue, n int) ([]time.Duration, int) {
	ctx := context.Background()
	w, err := kv.Watch(ctx, "k", jetstream.UpdatesOnly())
	if err != nil {
		t.Fatal(err)
	}
	defer w.Stop()
	got := make(chan stamp, 64)
	go func() {
		for e := range w.Updates() {
			if e != nil {
				got <- stamp{e.Revision(), time.Now()}
			}
		}
	}()
	out, early := make([]time.Duration, 0, n), 0
	for i := range n {
		rev, err := kv.Put(ctx, "k", []byte(fmt.Sprint(i)))
		if err != nil {
			t.Fatal(err)
		}
		acked := time.Now()
		d := next(t, got, rev).at.Sub(acked)
		if d < 0 {
			early++
		}
		out = append(out, max(d, 0))
	}
	return out, early
}

// rawOrdered measures a stream publish's acknowledgement to an ordered consumer receiving it, and
// counts the messages received before the acknowledgement.
func rawOrdered(t *testing.T, js jetstream.JetStream, n int) ([]time.Duration, int) {
	ctx := context.Background()
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "RAW", Subjects: []string{"raw.>"}}); err != nil {
		t.Fatal(err)
	}
	cons, err := js.OrderedConsumer(ctx, "RAW", jetstream.OrderedConsumerConfig{FilterSubjects: []string{"raw.>"}})
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan stamp, 64)
	cc, err := cons.Consume(func(m jetstream.Msg) {
		at := time.Now()
		if meta, err := m.Metadata(); err == nil {
			got <- stamp{meta.Sequence.Stream, at}
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Stop()
	out, early := make([]time.Duration, 0, n), 0
	for i := range n {
		a, err := js.Publish(ctx, "raw.k", []byte(fmt.Sprint(i)))
		if err != nil {
			t.Fatal(err)
		}
		acked := time.Now()
		d := next(t, got, a.Sequence).at.Sub(acked)
		if d < 0 {
			early++
		}
		out = append(out, max(d, 0))
	}
	return out, early
}

// percentiles are p50, p90, p99, p99.9 and the maximum, rounded to the microsecond.
func percentiles(d []time.Duration) [5]time.Duration {
	s := slices.Clone(d)
	slices.Sort(s)
	at := func(q float64) time.Duration {
		i := int(q * float64(len(s)-1))
		return s[i].Round(time.Microsecond)
	}
	return [5]time.Duration{at(0.50), at(0.90), at(0.99), at(0.999), s[len(s)-1].Round(time.Microsecond)}
}
