package subscribe_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message/router/middleware"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/interlock-dev/interlock/events"
	"github.com/interlock-dev/interlock/events/subscribe"
	"github.com/interlock-dev/interlock/internal/await"
	"github.com/interlock-dev/interlock/internal/natstest"
)

// within bounds every wait for something asynchronous; it is a deadline, not a measurement.
const within = 20 * time.Second

var flagDoc = events.FlagConfig{
	Kind:           events.KindRelease,
	Variants:       map[string]json.RawMessage{"on": json.RawMessage("true"), "off": json.RawMessage("false")},
	DefaultVariant: "on",
	OffVariant:     "off",
	Enabled:        true,
}

// appender writes events through the real store, tracking each subject's version and last
// sequence.
type appender struct {
	t     testing.TB
	store *events.Store
	last  map[string]uint64
	vers  map[string]uint64
	all   []events.Event
}

func newAppender(t testing.TB, js jetstream.JetStream) *appender {
	t.Helper()
	st, err := events.Open(context.Background(), js, events.StreamConfig{})
	if err != nil {
		t.Fatal(err)
	}
	return &appender{t: t, store: st, last: map[string]uint64{}, vers: map[string]uint64{}}
}

func (a *appender) add(typ, env, key string, payload any) events.Event {
	a.t.Helper()
	ev, err := events.NewEvent(typ, env, key, payload)
	if err != nil {
		a.t.Fatal(err)
	}
	subj := ev.Subject()
	ev.Actor, ev.Reason = "alice", "test "+typ
	ev.CorrelationID = "corr-" + strconv.Itoa(len(a.all))
	ev.Version = a.vers[subj] + 1
	seq, err := a.store.Append(context.Background(), &ev, a.last[subj])
	if err != nil {
		a.t.Fatalf("append %s %s: %v", typ, subj, err)
	}
	a.last[subj], a.vers[subj] = seq, ev.Version
	a.all = append(a.all, ev)
	return ev
}

// lifecycle appends a flag's creation and then kill/enable pairs: 1 + 2*pairs events.
func (a *appender) lifecycle(env, key string, pairs int) {
	a.t.Helper()
	a.add(events.TypeFlagCreated, env, key, events.FlagCreated{Flag: flagDoc})
	for range pairs {
		a.add(events.TypeFlagKilled, env, key, events.FlagKilled{})
		a.add(events.TypeFlagEnabled, env, key, events.FlagEnabled{})
	}
}

// where keeps the appended events that match.
func (a *appender) where(keep func(events.Event) bool) []events.Event {
	var out []events.Event
	for _, ev := range a.all {
		if keep(ev) {
			out = append(out, ev)
		}
	}
	return out
}

// handled is one call of the handler.
type handled struct {
	ev        events.Event
	delivered uint64
	msgUUID   string
	ceType    string
	err       error
}

// recorder is a handler that records every call and fails as told.
type recorder struct {
	mu    sync.Mutex
	calls []handled
	fail  func(ctx context.Context, ev events.Event, d subscribe.Delivery, attempt int) error
}

func (r *recorder) handle(ctx context.Context, ev events.Event) error {
	d, ok := subscribe.DeliveryFrom(ctx)
	if !ok {
		return errors.New("no delivery in the context")
	}
	r.mu.Lock()
	attempt := 1
	for _, c := range r.calls {
		if c.ev.ID == ev.ID {
			attempt++
		}
	}
	r.mu.Unlock()
	var err error
	if r.fail != nil {
		err = r.fail(ctx, ev, d, attempt)
	}
	r.mu.Lock()
	r.calls = append(r.calls, handled{ev: ev, delivered: d.NumDelivered, msgUUID: d.Message.UUID,
		ceType: d.Message.Metadata.Get(events.HeaderType), err: err})
	r.mu.Unlock()
	return err
}

// succeeded is every successful call, in order.
func (r *recorder) succeeded() []handled {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []handled
	for _, c := range r.calls {
		if c.err == nil {
			out = append(out, c)
		}
	}
	return out
}

func (r *recorder) attempts(id string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, c := range r.calls {
		if c.ev.ID == id {
			n++
		}
	}
	return n
}

// start runs a subscriber until the returned stop is called (or the test ends); stop returns
// Run's error.
func start(t *testing.T, cfg subscribe.Config, h subscribe.Handler) (stop func() error) {
	t.Helper()
	sub, err := subscribe.New(cfg, h)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- sub.Run(ctx) }()
	var once sync.Once
	var runErr error
	stop = func() error {
		once.Do(func() {
			cancel()
			runErr = <-done
		})
		return runErr
	}
	t.Cleanup(func() { _ = stop() })
	return stop
}

// fast is a configuration whose retries and redeliveries do not slow the tests down.
func fast(url, durable string) subscribe.Config {
	return subscribe.Config{
		URL:                  url,
		Durable:              durable,
		RetryInitialInterval: time.Millisecond,
		RetryMaxInterval:     5 * time.Millisecond,
		RedeliveryDelay:      20 * time.Millisecond,
	}
}

// sameEvents checks that got is want, event for event: ids, types, keys, versions, sequences.
func sameEvents(t *testing.T, got []handled, want []events.Event) {
	t.Helper()
	if len(got) != len(want) {
		seqs := make([]uint64, len(got))
		for i, g := range got {
			seqs[i] = g.ev.Sequence
		}
		t.Fatalf("handled %d events (sequences %v), want %d", len(got), seqs, len(want))
	}
	for i, w := range want {
		g := got[i].ev
		if g.ID != w.ID || g.Type != w.Type || g.Environment != w.Environment || g.Key != w.Key ||
			g.Version != w.Version || g.Sequence != w.Sequence || g.Actor != w.Actor || g.Reason != w.Reason ||
			g.CorrelationID != w.CorrelationID || !g.Time.Equal(w.Time) || string(g.Data) != string(w.Data) {
			t.Fatalf("event %d:\n got %+v\nwant %+v", i, g, w)
		}
		if got[i].msgUUID != w.ID || got[i].ceType != w.Type {
			t.Fatalf("event %d: watermill message uuid %q, ce-type %q", i, got[i].msgUUID, got[i].ceType)
		}
	}
}

func streamConfig(t *testing.T, js jetstream.JetStream) jetstream.StreamConfig {
	t.Helper()
	s, err := js.Stream(context.Background(), events.DefaultStreamName)
	if err != nil {
		t.Fatal(err)
	}
	return s.CachedInfo().Config
}

func consumerInfo(t *testing.T, js jetstream.JetStream, durable string) *jetstream.ConsumerInfo {
	t.Helper()
	c, err := js.Consumer(context.Background(), events.DefaultStreamName, durable)
	if err != nil {
		t.Fatalf("consumer %s: %v", durable, err)
	}
	return c.CachedInfo()
}

func TestEveryEventInOrder(t *testing.T) {
	s := natstest.RunServer(t)
	js := natstest.JetStream(t, s)
	a := newAppender(t, js)
	a.lifecycle("prod", "checkout", 3)
	a.lifecycle("staging", "checkout", 1)
	a.lifecycle("prod", "DeptA.TeamB.66623", 2)
	streamBefore := streamConfig(t, js)

	rec := &recorder{}
	cfg := fast(s.ClientURL(), "billing")
	cfg.Environment = "prod"
	stop := start(t, cfg, rec.handle)

	prod := func(ev events.Event) bool { return ev.Environment == "prod" }
	await.Eventually(t, within, func() bool { return len(rec.succeeded()) == len(a.where(prod)) }, "history delivered")
	// Live events, interleaved across flags, after the subscriber caught up.
	a.lifecycle("prod", "search", 2)
	a.add(events.TypeFlagKilled, "prod", "checkout", events.FlagKilled{})
	a.add(events.TypeFlagKilled, "staging", "checkout", events.FlagKilled{})
	a.add(events.TypeFlagUpdated, "prod", "DeptA.TeamB.66623", events.FlagUpdated{Flag: flagDoc, Patch: json.RawMessage(`{"enabled":true}`)})
	await.Eventually(t, within, func() bool { return len(rec.succeeded()) == len(a.where(prod)) }, "live events delivered")
	if err := stop(); err != nil {
		t.Fatalf("run: %v", err)
	}

	got := rec.succeeded()
	sameEvents(t, got, a.where(prod))
	for i, c := range got {
		if c.delivered != 1 {
			t.Errorf("event %d delivered %d times", i, c.delivered)
		}
	}
	if after := streamConfig(t, js); !reflect.DeepEqual(after, streamBefore) {
		t.Errorf("stream config changed:\n%+v\n%+v", streamBefore, after)
	}
	// The durable outlives the subscriber, with everything acknowledged.
	info := consumerInfo(t, js, "billing")
	last := got[len(got)-1].ev.Sequence
	if info.AckFloor.Stream != last || info.NumAckPending != 0 || info.Config.MaxAckPending != 1 ||
		info.Config.AckPolicy != jetstream.AckExplicitPolicy || info.Config.MaxDeliver != -1 {
		t.Errorf("durable after stop: ack floor %d (want %d), pending %d, config %+v",
			info.AckFloor.Stream, last, info.NumAckPending, info.Config)
	}
}

func TestFilters(t *testing.T) {
	s := natstest.RunServer(t)
	js := natstest.JetStream(t, s)
	a := newAppender(t, js)
	a.lifecycle("prod", "checkout", 1)
	a.lifecycle("prod", "search", 1)
	a.lifecycle("staging", "checkout", 1)
	a.add(events.TypeSegmentCreated, "prod", "beta-testers", events.SegmentCreated{Segment: events.SegmentConfig{Included: []string{"u1"}}})

	for _, tc := range []struct {
		name     string
		tune     func(*subscribe.Config)
		subjects []string
		keep     func(events.Event) bool
	}{
		{"everything", func(*subscribe.Config) {}, []string{"interlock.>"},
			func(events.Event) bool { return true }},
		{"one environment", func(c *subscribe.Config) { c.Environment = "staging" }, []string{"interlock.staging.>"},
			func(ev events.Event) bool { return ev.Environment == "staging" }},
		{"segments anywhere", func(c *subscribe.Config) { c.Entity = events.EntitySegment }, []string{"interlock.*.segment.>"},
			func(ev events.Event) bool { return ev.Entity == events.EntitySegment }},
		{"flags of prod", func(c *subscribe.Config) { c.Environment, c.Entity = "prod", events.EntityFlag }, []string{"interlock.prod.flag.>"},
			func(ev events.Event) bool { return ev.Environment == "prod" && ev.Entity == events.EntityFlag }},
		{"one flag everywhere", func(c *subscribe.Config) { c.Entity, c.Keys = events.EntityFlag, []string{"checkout"} },
			[]string{"interlock.*.flag.checkout"},
			func(ev events.Event) bool { return ev.Entity == events.EntityFlag && ev.Key == "checkout" }},
		{"two flags of prod", func(c *subscribe.Config) {
			c.Environment, c.Entity, c.Keys = "prod", events.EntityFlag, []string{"checkout", "search"}
		}, []string{"interlock.prod.flag.checkout", "interlock.prod.flag.search"},
			func(ev events.Event) bool { return ev.Environment == "prod" && ev.Entity == events.EntityFlag }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := fast(s.ClientURL(), strings.ReplaceAll(tc.name, " ", "-"))
			tc.tune(&cfg)
			sub, err := subscribe.New(cfg, func(context.Context, events.Event) error { return nil })
			if err != nil {
				t.Fatal(err)
			}
			if got := sub.FilterSubjects(); !slices.Equal(got, tc.subjects) {
				t.Fatalf("filter %v, want %v", got, tc.subjects)
			}
			rec := &recorder{}
			stop := start(t, cfg, rec.handle)
			want := a.where(tc.keep)
			await.Eventually(t, within, func() bool { return len(rec.succeeded()) >= len(want) }, "events delivered")
			if err := stop(); err != nil {
				t.Fatal(err)
			}
			sameEvents(t, rec.succeeded(), want)
		})
	}
}

// readPoison returns the messages stored on subject.
func readPoison(t *testing.T, js jetstream.JetStream, subject string, n int) []*jetstream.RawStreamMsg {
	t.Helper()
	ctx := context.Background()
	var stream jetstream.Stream
	await.Eventually(t, within, func() bool {
		name, err := js.StreamNameBySubject(ctx, subject)
		if err != nil {
			return false
		}
		stream, err = js.Stream(ctx, name)
		return err == nil && stream.CachedInfo().State.Msgs >= uint64(n)
	}, "%d poisoned events on %s", n, subject)
	var out []*jetstream.RawStreamMsg
	for seq := uint64(1); len(out) < n; seq++ {
		m, err := stream.GetMsg(ctx, seq, jetstream.WithGetMsgSubject(subject))
		if err != nil {
			t.Fatalf("poison message: %v", err)
		}
		out = append(out, m)
		seq = m.Sequence
	}
	return out
}

func TestRetryThenPoison(t *testing.T) {
	s := natstest.RunServer(t)
	js := natstest.JetStream(t, s)
	a := newAppender(t, js)
	a.lifecycle("prod", "checkout", 2)
	bad := a.all[2] // checkout's first enable
	a.lifecycle("prod", "search", 1)
	streamBefore := streamConfig(t, js)

	rec := &recorder{fail: func(_ context.Context, ev events.Event, _ subscribe.Delivery, attempt int) error {
		if ev.ID == bad.ID {
			return fmt.Errorf("downstream refused attempt %d", attempt)
		}
		return nil
	}}
	cfg := fast(s.ClientURL(), "notifier")
	cfg.MaxRetries = 2
	stop := start(t, cfg, rec.handle)
	await.Eventually(t, within, func() bool { return len(rec.succeeded()) == len(a.all)-1 }, "the other events handled")
	if err := stop(); err != nil {
		t.Fatal(err)
	}

	// The first attempt and MaxRetries more, all within one delivery, then the poison queue.
	if n := rec.attempts(bad.ID); n != 3 {
		t.Fatalf("bad event handled %d times, want 3", n)
	}
	for _, c := range rec.calls {
		if c.delivered != 1 {
			t.Fatalf("%s delivered %d times: retries are in process", c.ev.Type, c.delivered)
		}
	}
	sameEvents(t, rec.succeeded(), a.where(func(ev events.Event) bool { return ev.ID != bad.ID }))

	msgs := readPoison(t, js, "_INTERLOCK.poison.notifier", 1)
	m := msgs[0]
	ev, err := events.Decode(bad.Subject(), m.Header, m.Data)
	if err != nil {
		t.Fatalf("the poisoned event is no longer a CloudEvent: %v", err)
	}
	if ev.ID != bad.ID || ev.Type != bad.Type || ev.Version != bad.Version || string(m.Data) != string(bad.Data) {
		t.Errorf("poisoned %+v, want %+v", ev, bad)
	}
	if got := m.Header.Get(middleware.ReasonForPoisonedKey); got != "downstream refused attempt 3" {
		t.Errorf("reason %q", got)
	}
	if got := m.Header.Get(subscribe.MetadataStreamSequence); got != strconv.FormatUint(bad.Sequence, 10) {
		t.Errorf("stream sequence %q, want %d", got, bad.Sequence)
	}
	if got := m.Header.Get(middleware.CorrelationIDMetadataKey); got != bad.CorrelationID {
		t.Errorf("correlation id %q, want %q", got, bad.CorrelationID)
	}
	if after := streamConfig(t, js); !reflect.DeepEqual(after, streamBefore) {
		t.Errorf("stream config changed")
	}
	if info := consumerInfo(t, js, "notifier"); info.AckFloor.Stream != a.all[len(a.all)-1].Sequence {
		t.Errorf("ack floor %d, want the last event", info.AckFloor.Stream)
	}
}

func TestPanicIsRecoveredAndPoisoned(t *testing.T) {
	s := natstest.RunServer(t)
	js := natstest.JetStream(t, s)
	a := newAppender(t, js)
	a.lifecycle("prod", "checkout", 1)

	rec := &recorder{fail: func(_ context.Context, ev events.Event, _ subscribe.Delivery, _ int) error {
		if ev.Type == events.TypeFlagKilled {
			panic("nil map\nwith a second line")
		}
		return nil
	}}
	cfg := fast(s.ClientURL(), "panicky")
	cfg.MaxRetries = -1
	stop := start(t, cfg, rec.handle)
	await.Eventually(t, within, func() bool { return len(rec.succeeded()) == 2 }, "the other events handled")
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	m := readPoison(t, js, "_INTERLOCK.poison.panicky", 1)[0]
	reason := m.Header.Get(middleware.ReasonForPoisonedKey)
	if !strings.Contains(reason, `panic occurred: "nil map\nwith a second line", stacktrace:`) || strings.ContainsAny(reason, "\r\n") || len(reason) > 1024 {
		t.Errorf("reason %q", reason)
	}
	if m.Header.Get(events.HeaderType) != events.TypeFlagKilled {
		t.Errorf("poisoned %v", m.Header)
	}
}

func TestRedeliveryKeepsOrder(t *testing.T) {
	s := natstest.RunServer(t)
	js := natstest.JetStream(t, s)
	a := newAppender(t, js)
	for _, key := range []string{"a", "b", "c"} {
		a.add(events.TypeFlagCreated, "prod", key, events.FlagCreated{Flag: flagDoc})
	}
	for range 4 {
		for _, key := range []string{"a", "b", "c"} {
			a.add(events.TypeFlagKilled, "prod", key, events.FlagKilled{})
		}
	}

	// No retries in process and no poison queue: every third event fails on its first delivery
	// and comes back from the server. Nothing after it may be handled before it.
	rec := &recorder{fail: func(_ context.Context, ev events.Event, d subscribe.Delivery, _ int) error {
		if ev.Sequence%3 == 0 && d.NumDelivered == 1 {
			return errors.New("not yet")
		}
		return nil
	}}
	cfg := fast(s.ClientURL(), "strict")
	cfg.MaxRetries, cfg.NoPoisonQueue = -1, true
	stop := start(t, cfg, rec.handle)
	await.Eventually(t, within, func() bool { return len(rec.succeeded()) == len(a.all) }, "every event handled")
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	got := rec.succeeded()
	sameEvents(t, got, a.all)
	for _, c := range got {
		want := uint64(1)
		if c.ev.Sequence%3 == 0 {
			want = 2
		}
		if c.delivered != want {
			t.Errorf("sequence %d succeeded on delivery %d, want %d", c.ev.Sequence, c.delivered, want)
		}
	}
	// Calls in order of stream sequence, each failed one immediately followed by its redelivery.
	rec.mu.Lock()
	defer rec.mu.Unlock()
	for i := 1; i < len(rec.calls); i++ {
		prev, cur := rec.calls[i-1], rec.calls[i]
		if cur.ev.Sequence < prev.ev.Sequence || (prev.err != nil && cur.ev.ID != prev.ev.ID) {
			t.Fatalf("call %d: sequence %d (err %v) then %d", i, prev.ev.Sequence, prev.err, cur.ev.Sequence)
		}
	}
	if _, err := js.StreamNameBySubject(context.Background(), "_INTERLOCK.poison.strict"); !errors.Is(err, jetstream.ErrStreamNotFound) {
		t.Errorf("without a poison queue no poison stream is made: %v", err)
	}
}

func TestResumeAfterRestart(t *testing.T) {
	s := natstest.RunServer(t)
	js := natstest.JetStream(t, s)
	a := newAppender(t, js)
	a.lifecycle("prod", "checkout", 3) // 7 events
	a.lifecycle("prod", "search", 1)   // 3 events

	// The first run stops while it handles the fifth event: the handler sees its context end.
	const stopAt = 5
	inFifth := make(chan struct{})
	first := &recorder{fail: func(ctx context.Context, ev events.Event, _ subscribe.Delivery, _ int) error {
		if ev.Sequence == stopAt {
			close(inFifth)
			<-ctx.Done()
			return ctx.Err()
		}
		return nil
	}}
	cfg := fast(s.ClientURL(), "resumer")
	// A long ack wait: only the subscriber's own nak brings the interrupted event back quickly.
	cfg.AckWait = time.Minute
	sub, err := subscribe.New(cfg, first.handle)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- sub.Run(ctx) }()
	<-inFifth
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("first run: %v", err)
	}
	sameEvents(t, first.succeeded(), a.all[:stopAt-1])
	if info := consumerInfo(t, js, "resumer"); info.AckFloor.Stream != stopAt-1 {
		t.Fatalf("after the first run the ack floor is %d, want %d", info.AckFloor.Stream, stopAt-1)
	}

	// Meanwhile, more events.
	a.add(events.TypeFlagKilled, "prod", "checkout", events.FlagKilled{})
	a.lifecycle("prod", "payments", 1)

	second := &recorder{}
	stop := start(t, cfg, second.handle)
	// At least: an extra delivery must fail the exact checks below, not time out here.
	await.Eventually(t, within, func() bool { return len(second.succeeded()) >= len(a.all)-(stopAt-1) }, "the rest handled")
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	// No gap, no duplicate: the second run starts with the interrupted event, delivered again.
	got := second.succeeded()
	sameEvents(t, got, a.all[stopAt-1:])
	if got[0].delivered != 2 {
		t.Errorf("the interrupted event: delivery %d, want 2", got[0].delivered)
	}
	for _, c := range got[1:] {
		if c.delivered != 1 {
			t.Errorf("sequence %d delivered %d times", c.ev.Sequence, c.delivered)
		}
	}
}

// restrictedServer is a JetStream server with two users: "interlock", who may do anything, and
// "service", who may do exactly what docs/subscribers.md says a subscriber with the durable
// "restricted" needs, and nothing else: in particular nothing that changes the event stream.
func restrictedServer(t *testing.T) (s *server.Server, admin, service string) {
	t.Helper()
	allow := []string{
		"$JS.API.STREAM.INFO.INTERLOCK",
		"$JS.API.STREAM.NAMES",
		"$JS.API.CONSUMER.INFO.INTERLOCK.restricted",
		"$JS.API.CONSUMER.CREATE.INTERLOCK.restricted.>",
		"$JS.API.CONSUMER.MSG.NEXT.INTERLOCK.restricted",
		"$JS.ACK.INTERLOCK.restricted.>",
		"_INTERLOCK.poison.restricted",
		"$JS.API.STREAM.CREATE.INTERLOCK_POISON",
	}
	s, err := server.NewServer(&server.Options{
		Host:      "127.0.0.1",
		Port:      server.RANDOM_PORT,
		JetStream: true,
		StoreDir:  t.TempDir(),
		NoSigs:    true,
		NoLog:     true,
		Users: []*server.User{
			{Username: "interlock", Password: "admin-secret"},
			{Username: "service", Password: "service-secret", Permissions: &server.Permissions{
				Publish:   &server.SubjectPermission{Allow: allow},
				Subscribe: &server.SubjectPermission{Allow: []string{"_INBOX.>"}},
			}},
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	s.Start()
	t.Cleanup(func() { natstest.Shutdown(s) })
	if !s.ReadyForConnections(10 * time.Second) {
		t.Fatal("server not ready")
	}
	url := s.ClientURL()
	return s, strings.Replace(url, "nats://", "nats://interlock:admin-secret@", 1),
		strings.Replace(url, "nats://", "nats://service:service-secret@", 1)
}

func TestNeedsNoRightsOverTheStream(t *testing.T) {
	_, adminURL, serviceURL := restrictedServer(t)
	ctx := context.Background()
	nc, err := nats.Connect(adminURL)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	a := newAppender(t, js)
	a.lifecycle("prod", "checkout", 2)
	streamBefore := streamConfig(t, js)

	// The restriction holds: the service cannot purge.
	violations := make(chan error, 10)
	snc, err := nats.Connect(serviceURL, nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
		violations <- err
	}))
	if err != nil {
		t.Fatal(err)
	}
	defer snc.Close()
	sjs, _ := jetstream.New(snc)
	sctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	if st, err := sjs.Stream(sctx, events.DefaultStreamName); err != nil {
		t.Fatal(err)
	} else if err := st.Purge(sctx); err == nil {
		t.Fatal("the service user could purge: the test proves nothing")
	}
	if err := <-violations; !errors.Is(err, nats.ErrPermissionViolation) || !strings.Contains(err.Error(), "PURGE") {
		t.Fatalf("purge refused with %v, want a permissions violation", err)
	}

	rec := &recorder{fail: func(_ context.Context, ev events.Event, _ subscribe.Delivery, _ int) error {
		if ev.Type == events.TypeFlagKilled && ev.Version == 2 {
			return fmt.Errorf("%w: cannot handle this one", subscribe.ErrPermanent)
		}
		return nil
	}}
	stop := start(t, fast(serviceURL, "restricted"), rec.handle)
	await.Eventually(t, within, func() bool { return len(rec.succeeded()) == len(a.all)-1 }, "events handled")
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	if n := rec.attempts(a.all[1].ID); n != 1 {
		t.Errorf("a permanent failure was tried %d times, want 1", n)
	}
	readPoison(t, js, "_INTERLOCK.poison.restricted", 1)
	if after := streamConfig(t, js); !reflect.DeepEqual(after, streamBefore) {
		t.Errorf("stream config changed")
	}
	consumerInfo(t, js, "restricted") // still there

	// A second run on the existing durable and poison stream needs no more rights.
	a.add(events.TypeFlagKilled, "prod", "checkout", events.FlagKilled{})
	rec2 := &recorder{}
	stop = start(t, fast(serviceURL, "restricted"), rec2.handle)
	await.Eventually(t, within, func() bool { return len(rec2.succeeded()) == 1 }, "the new event handled")
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	sameEvents(t, rec2.succeeded(), a.all[len(a.all)-1:])
}

// serverAt starts a JetStream server storing in dir on port (server.RANDOM_PORT for any).
func serverAt(t *testing.T, dir string, port int) *server.Server {
	t.Helper()
	s, err := server.NewServer(&server.Options{
		Host: "127.0.0.1", Port: port, JetStream: true, StoreDir: dir, NoSigs: true, NoLog: true,
	})
	if err != nil {
		t.Fatal(err)
	}
	s.Start()
	t.Cleanup(func() { natstest.Shutdown(s) })
	if !s.ReadyForConnections(10 * time.Second) {
		t.Fatal("server not ready")
	}
	return s
}

func TestSurvivesServerRestart(t *testing.T) {
	dir := t.TempDir()
	s := serverAt(t, dir, server.RANDOM_PORT)
	url := s.ClientURL()
	a := newAppender(t, natstest.JetStream(t, s))
	a.lifecycle("prod", "checkout", 1)

	rec := &recorder{}
	stop := start(t, fast(url, "survivor"), rec.handle)
	await.Eventually(t, within, func() bool { return len(rec.succeeded()) == 3 }, "first events")

	port := s.Addr().(*net.TCPAddr).Port
	natstest.Shutdown(s)
	s = serverAt(t, dir, port)
	b := newAppender(t, natstest.JetStream(t, s))
	b.last, b.vers, b.all = a.last, a.vers, a.all
	b.add(events.TypeFlagKilled, "prod", "checkout", events.FlagKilled{})
	b.lifecycle("prod", "search", 1)
	await.Eventually(t, within, func() bool { return len(rec.succeeded()) == len(b.all) }, "events after the restart")
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	sameEvents(t, rec.succeeded(), b.all)
	if info := consumerInfo(t, natstest.JetStream(t, s), "survivor"); info.AckFloor.Stream != b.all[len(b.all)-1].Sequence {
		t.Errorf("ack floor %d after the restart", info.AckFloor.Stream)
	}
}

func TestRunErrors(t *testing.T) {
	s := natstest.RunServer(t)
	js := natstest.JetStream(t, s)
	noop := func(context.Context, events.Event) error { return nil }
	ctx := context.Background()

	sub, err := subscribe.New(fast(s.ClientURL(), "early"), noop)
	if err != nil {
		t.Fatal(err)
	}
	if err := sub.Run(ctx); !errors.Is(err, subscribe.ErrNoStream) {
		t.Fatalf("before Interlock made the stream: %v, want ErrNoStream", err)
	}
	newAppender(t, js).lifecycle("prod", "checkout", 0)
	streamBefore := streamConfig(t, js)

	// A consumer of the same name that is not this package's: its ack policy cannot change.
	if _, err := js.CreateConsumer(ctx, events.DefaultStreamName, jetstream.ConsumerConfig{
		Durable: "taken", AckPolicy: jetstream.AckNonePolicy,
	}); err != nil {
		t.Fatal(err)
	}
	sub, err = subscribe.New(fast(s.ClientURL(), "taken"), noop)
	if err != nil {
		t.Fatal(err)
	}
	if err := sub.Run(ctx); err == nil || !strings.Contains(err.Error(), "taken") {
		t.Fatalf("durable with another ack policy: %v", err)
	}
	if info := consumerInfo(t, js, "taken"); info.Config.AckPolicy != jetstream.AckNonePolicy {
		t.Errorf("the other consumer was changed: %+v", info.Config)
	}

	sub, err = subscribe.New(fast("nats://127.0.0.1:1", "nowhere"), noop)
	if err != nil {
		t.Fatal(err)
	}
	if err := sub.Run(ctx); err == nil {
		t.Fatal("no server: no error")
	}
	if after := streamConfig(t, js); !reflect.DeepEqual(after, streamBefore) {
		t.Errorf("stream config changed")
	}
}

func TestConfigValidate(t *testing.T) {
	valid := subscribe.Config{URL: "nats://localhost:4222", Durable: "svc"}
	for _, tc := range []struct {
		name string
		tune func(*subscribe.Config)
		want string // in the error; "" for valid
	}{
		{"minimal", func(*subscribe.Config) {}, ""},
		{"everything", func(c *subscribe.Config) {
			c.Environment, c.Entity, c.Keys = "prod", events.EntityFlag, []string{"a", "DeptA.TeamB.66623"}
			c.AckWait, c.MaxRetries, c.PoisonSubject = time.Second, -1, "svc.dead-letters"
		}, ""},
		{"no url", func(c *subscribe.Config) { c.URL = " " }, "url: required"},
		{"no durable", func(c *subscribe.Config) { c.Durable = "" }, "durable"},
		{"durable with a dot", func(c *subscribe.Config) { c.Durable = "a.b" }, "durable"},
		{"durable too long", func(c *subscribe.Config) { c.Durable = strings.Repeat("x", 65) }, "durable"},
		{"stream wildcard", func(c *subscribe.Config) { c.Stream = "INTER*" }, "stream"},
		{"environment", func(c *subscribe.Config) { c.Environment = "Prod" }, "environment"},
		{"entity", func(c *subscribe.Config) { c.Entity = "flags" }, "entity"},
		{"keys without entity", func(c *subscribe.Config) { c.Keys = []string{"a"} }, "keys: name the entity"},
		{"bad key", func(c *subscribe.Config) { c.Entity, c.Keys = "flag", []string{"a b"} }, "keys[0]"},
		{"key twice", func(c *subscribe.Config) { c.Entity, c.Keys = "flag", []string{"a", "a"} }, "keys[1]"},
		{"ack wait", func(c *subscribe.Config) { c.AckWait = time.Millisecond }, "ack wait"},
		{"retries", func(c *subscribe.Config) { c.MaxRetries = -2 }, "max retries"},
		{"intervals", func(c *subscribe.Config) { c.RetryInitialInterval, c.RetryMaxInterval = time.Second, time.Millisecond }, "max interval"},
		{"redelivery", func(c *subscribe.Config) { c.RedeliveryDelay = -1 }, "redelivery"},
		{"poison in the stream", func(c *subscribe.Config) { c.PoisonSubject = "interlock.poison" }, "inside interlock.>"},
		{"poison wildcard", func(c *subscribe.Config) { c.PoisonSubject = "dead.>" }, "wildcards"},
		{"poison system", func(c *subscribe.Config) { c.PoisonSubject = "$JS.x" }, "system"},
		{"poison empty token", func(c *subscribe.Config) { c.PoisonSubject = "a..b" }, "empty token"},
		{"poison stream", func(c *subscribe.Config) { c.PoisonStream = "a b" }, "poison stream"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := valid
			tc.tune(&cfg)
			err := cfg.Validate()
			if tc.want == "" {
				if err != nil {
					t.Fatalf("valid config: %v", err)
				}
				if _, err := subscribe.New(cfg, func(context.Context, events.Event) error { return nil }); err != nil {
					t.Fatalf("New: %v", err)
				}
				return
			}
			if !errors.Is(err, subscribe.ErrInvalidConfig) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want ErrInvalidConfig about %q", err, tc.want)
			}
			if _, err := subscribe.New(cfg, func(context.Context, events.Event) error { return nil }); !errors.Is(err, subscribe.ErrInvalidConfig) {
				t.Fatalf("New accepted it: %v", err)
			}
		})
	}
	t.Run("joined", func(t *testing.T) {
		err := subscribe.Config{}.Validate()
		if !strings.Contains(err.Error(), "url") || !strings.Contains(err.Error(), "durable") {
			t.Fatalf("every problem should be reported: %v", err)
		}
	})
	t.Run("no handler", func(t *testing.T) {
		if _, err := subscribe.New(valid, nil); !errors.Is(err, subscribe.ErrInvalidConfig) {
			t.Fatalf("nil handler: %v", err)
		}
	})
}
