package main

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/interlock-dev/interlock/events"
	"github.com/interlock-dev/interlock/internal/await"
	"github.com/interlock-dev/interlock/internal/natstest"
)

const within = 20 * time.Second

// output is the program's standard output, split into lines. With blockAt > 0, the write of
// line blockAt waits until release is closed, as a terminal that stopped reading would.
type output struct {
	mu      sync.Mutex
	buf     []byte
	lines   []string
	blockAt int
	blocked chan struct{} // closed when the write of line blockAt starts
	release chan struct{}
}

func (o *output) Write(p []byte) (int, error) {
	o.mu.Lock()
	block := o.blockAt > 0 && len(o.lines)+1 == o.blockAt
	o.mu.Unlock()
	if block {
		close(o.blocked)
		<-o.release
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	o.buf = append(o.buf, p...)
	for {
		i := bytes.IndexByte(o.buf, '\n')
		if i < 0 {
			return len(p), nil
		}
		o.lines = append(o.lines, string(o.buf[:i]))
		o.buf = o.buf[i+1:]
	}
}

func (o *output) printed() []string {
	o.mu.Lock()
	defer o.mu.Unlock()
	return append([]string(nil), o.lines...)
}

// printedLine is one line of output, decoded.
type printedLine struct {
	events.Event
	Deliveries uint64 `json:"deliveries"`
}

func decodeLines(t *testing.T, lines []string) []printedLine {
	t.Helper()
	out := make([]printedLine, len(lines))
	for i, l := range lines {
		dec := json.NewDecoder(strings.NewReader(l))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&out[i]); err != nil {
			t.Fatalf("line %d %q: %v", i+1, l, err)
		}
	}
	return out
}

// samePrinted checks that the printed lines are the appended events, exactly and in order, each
// delivered as many times as deliveries says (1 unless listed).
func samePrinted(t *testing.T, got []printedLine, want []events.Event, redelivered map[int]uint64) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("printed %d events, want %d", len(got), len(want))
	}
	for i, w := range want {
		g := got[i]
		if g.ID != w.ID || g.Type != w.Type || g.Source != w.Source || g.Environment != w.Environment ||
			g.Entity != w.Entity || g.Key != w.Key || g.Version != w.Version || g.Sequence != w.Sequence ||
			g.Actor != w.Actor || g.Reason != w.Reason || g.CorrelationID != w.CorrelationID ||
			!g.Time.Equal(w.Time) || !bytes.Equal(g.Data, w.Data) {
			t.Fatalf("line %d:\n got %+v\nwant %+v", i+1, g.Event, w)
		}
		deliveries := uint64(1)
		if n, ok := redelivered[i]; ok {
			deliveries = n
		}
		if g.Deliveries != deliveries {
			t.Errorf("line %d (sequence %d): delivered %d times, want %d", i+1, g.Sequence, g.Deliveries, deliveries)
		}
	}
}

type appender struct {
	t     *testing.T
	store *events.Store
	last  map[string]uint64
	all   []events.Event
}

func (a *appender) add(typ, env, key string, payload any) {
	a.t.Helper()
	ev, err := events.NewEvent(typ, env, key, payload)
	if err != nil {
		a.t.Fatal(err)
	}
	subj := ev.Subject()
	ev.Actor, ev.Reason, ev.CorrelationID = "oncall", "incident 42", "req-"+subj
	var version uint64
	for _, e := range a.all {
		if e.Subject() == subj {
			version = e.Version
		}
	}
	ev.Version = version + 1
	seq, err := a.store.Append(context.Background(), &ev, a.last[subj])
	if err != nil {
		a.t.Fatal(err)
	}
	a.last[subj] = seq
	a.all = append(a.all, ev)
}

func (a *appender) in(env string) []events.Event {
	var out []events.Event
	for _, ev := range a.all {
		if ev.Environment == env {
			out = append(out, ev)
		}
	}
	return out
}

var flagDoc = events.FlagCreated{Flag: events.FlagConfig{
	Kind:           events.KindKillSwitch,
	Variants:       map[string]json.RawMessage{"on": json.RawMessage("true"), "off": json.RawMessage("false")},
	DefaultVariant: "on",
	OffVariant:     "off",
	Enabled:        true,
}}

// TestEveryEventAcrossARestart runs the subscriber, stops it in the middle of the stream, appends
// more, and runs it again: together the two runs print every event of the environment exactly
// as appended, in order, with one repeat only: the event being printed when it stopped, which it
// had not acknowledged, printed again as its second delivery.
func TestEveryEventAcrossARestart(t *testing.T) {
	s := natstest.RunServer(t)
	store, err := events.Open(context.Background(), natstest.JetStream(t, s), events.StreamConfig{})
	if err != nil {
		t.Fatal(err)
	}
	a := &appender{t: t, store: store, last: map[string]uint64{}}
	for _, key := range []string{"checkout", "search", "DeptA.TeamB.66623"} {
		a.add(events.TypeFlagCreated, "production", key, flagDoc)
		a.add(events.TypeFlagCreated, "staging", key, flagDoc)
	}
	for range 3 {
		for _, key := range []string{"checkout", "search"} {
			a.add(events.TypeFlagKilled, "production", key, events.FlagKilled{})
			a.add(events.TypeFlagEnabled, "production", key, events.FlagEnabled{})
		}
	}
	args := []string{"--nats-url", s.ClientURL(), "--env", "production", "--durable", "audit-printer"}

	// First run: it stops while printing the fifth event.
	const stopAt = 5
	out1 := &output{blockAt: stopAt, blocked: make(chan struct{}), release: make(chan struct{})}
	logs1 := &await.Output{}
	ctx, cancel := context.WithCancel(context.Background())
	code := make(chan int, 1)
	go func() { code <- run(ctx, args, out1, logs1) }()
	select {
	case <-out1.blocked:
	case c := <-code:
		t.Fatalf("exited %d before printing %d events:\n%s", c, stopAt, logs1)
	}
	cancel()
	close(out1.release)
	if c := <-code; c != 0 {
		t.Fatalf("first run exited %d:\n%s", c, logs1)
	}
	first := decodeLines(t, out1.printed())
	samePrinted(t, first, a.in("production")[:stopAt], nil)

	// While it is down, more events, in both environments.
	a.add(events.TypeFlagKilled, "production", "DeptA.TeamB.66623", events.FlagKilled{})
	a.add(events.TypeFlagKilled, "staging", "checkout", events.FlagKilled{})
	a.add(events.TypeFlagArchived, "production", "search", events.FlagArchived{})

	// Second run, same durable: it starts with the unacknowledged fifth event, delivered again.
	out2 := &output{}
	logs2 := &await.Output{}
	ctx, cancel = context.WithCancel(context.Background())
	go func() { code <- run(ctx, args, out2, logs2) }()
	want := a.in("production")[stopAt-1:]
	await.Eventually(t, within, func() bool { return len(out2.printed()) >= len(want) }, "second run prints the rest")
	// And live events, after it caught up.
	a.add(events.TypeFlagEnabled, "production", "DeptA.TeamB.66623", events.FlagEnabled{})
	want = a.in("production")[stopAt-1:]
	await.Eventually(t, within, func() bool { return len(out2.printed()) >= len(want) }, "second run prints live events")
	cancel()
	if c := <-code; c != 0 {
		t.Fatalf("second run exited %d:\n%s", c, logs2)
	}
	samePrinted(t, decodeLines(t, out2.printed()), want, map[int]uint64{0: 2})
}

func TestUsage(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
		code int
		want string
	}{
		{"help", []string{"-h"}, 0, "Usage: interlock-subscriber"},
		{"no durable", []string{"--nats-url", "nats://127.0.0.1:1"}, 2, "durable"},
		{"bad environment", []string{"--durable", "x", "--env", "Prod"}, 2, "environment"},
		{"keys without entity", []string{"--durable", "x", "--keys", "a,b"}, 2, "keys"},
		{"unknown flag", []string{"--durable", "x", "--nope"}, 2, "flag provided but not defined"},
		{"arguments", []string{"--durable", "x", "extra"}, 2, "unexpected arguments"},
		{"no server", []string{"--durable", "x", "--nats-url", "nats://127.0.0.1:1"}, 1, "connect to nats"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var stdout, stderr await.Output
			if c := run(context.Background(), tc.args, &stdout, &stderr); c != tc.code {
				t.Fatalf("exit %d, want %d; stderr:\n%s", c, tc.code, stderr.String())
			}
			if !strings.Contains(stderr.String(), tc.want) {
				t.Fatalf("stderr does not say %q:\n%s", tc.want, stderr.String())
			}
			if stdout.String() != "" {
				t.Fatalf("stdout: %q", stdout.String())
			}
		})
	}
}
