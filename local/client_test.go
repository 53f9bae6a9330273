package local_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/interlock-dev/interlock/events"
	"github.com/interlock-dev/interlock/internal/await"
	"github.com/interlock-dev/interlock/internal/natstest"
	"github.com/interlock-dev/interlock/internal/snapshot"
	"github.com/interlock-dev/interlock/local"
	"github.com/interlock-dev/interlock/targeting"
)

func TestConfigValidate(t *testing.T) {
	cases := []struct {
		name string
		cfg  local.Config
		want []string // substrings of the error; none means valid
	}{
		{"minimal", local.Config{Environment: "prod"}, nil},
		{"everything", local.Config{Environment: "prod", ID: "svc_1-a", Name: "checkout", StaleAfter: time.Second, HeartbeatInterval: time.Second, HeartbeatGap: time.Millisecond}, nil},
		{"no environment", local.Config{}, []string{"environment"}},
		{"bad environment", local.Config{Environment: "Prod"}, []string{"environment"}},
		{"bad id", local.Config{Environment: "prod", ID: "a.b"}, []string{"id"}},
		{"long name", local.Config{Environment: "prod", Name: strings.Repeat("n", local.MaxNameLen+1)}, []string{"name"}},
		{"every problem", local.Config{Environment: "", ID: "a b", StaleAfter: -1, HeartbeatInterval: time.Millisecond, HeartbeatGap: -1},
			[]string{"environment", "id", "stale after", "heartbeat interval", "heartbeat gap"}},
		{"interval too long", local.Config{Environment: "prod", HeartbeatInterval: time.Hour}, []string{"heartbeat interval"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.cfg.Validate()
			if len(tc.want) == 0 {
				if err != nil {
					t.Fatalf("Validate() = %v, want nil", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("Validate() = nil, want errors about %v", tc.want)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("Validate() = %q, does not mention %q", err, w)
				}
			}
		})
	}
}

func TestNewRefusesBadConfig(t *testing.T) {
	s := boot(t)
	nc := connect(t, s.srv)
	if _, err := local.New(nc, local.Config{Environment: "no such env!"}); err == nil {
		t.Fatal("New accepted an invalid environment")
	}
	if _, err := local.New(nil, local.Config{Environment: "prod"}); err == nil {
		t.Fatal("New accepted a nil connection")
	}
}

// history appends the same story to a system: a flag in another environment, five flags in
// prod, three changes. It returns the sequence of prod's last event.
func history(t *testing.T, s *system) uint64 {
	s.create(t, "dev", "x", boolFlag(true))
	for _, k := range []string{"a", "b", "c", "d", "e"} {
		s.create(t, "prod", k, boolFlag(true))
	}
	s.kill(t, "prod", "a")
	s.enable(t, "prod", "a")
	return s.kill(t, "prod", "b").Sequence
}

func TestColdStart(t *testing.T) {
	cases := []struct {
		name       string
		snapshot   bool
		noSnapshot bool
		garbage    bool
		// fromSnapshot says the client must start from the snapshot, receiving only the events
		// after it.
		fromSnapshot bool
	}{
		{name: "from the snapshot", snapshot: true, fromSnapshot: true},
		{name: "no snapshot: replay"},
		{name: "snapshot turned off: replay", snapshot: true, noSnapshot: true},
		{name: "unusable snapshot: replay", garbage: true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s := boot(t)
			snapSeq := history(t, s)
			if tc.snapshot {
				s.snapshotNow(t)
			}
			if tc.garbage {
				obs, err := snapshot.Bucket(context.Background(), s.js, local.DefaultSnapshotBucket, 1)
				if err != nil {
					t.Fatal(err)
				}
				if _, err := obs.PutBytes(context.Background(), "prod", []byte(`{"format":1,"environment":"prod","sequence":3,"flags":[{"key":"a","environment":"dev","version":1}]}`)); err != nil {
					t.Fatal(err)
				}
			}
			// Events after the snapshot: the client catches up with them.
			s.kill(t, "prod", "c")
			last := s.create(t, "prod", "f", boolFlag(true)).Sequence
			s.create(t, "dev", "y", boolFlag(true))

			c := start(t, connect(t, s.srv), local.Config{Environment: "prod", NoSnapshot: tc.noSnapshot, NoPresence: true})
			waitReady(t, c)

			st := c.Stats()
			if tc.fromSnapshot {
				if st.SnapshotSequence != snapSeq {
					t.Errorf("started from snapshot %d, want %d", st.SnapshotSequence, snapSeq)
				}
				if st.Delivered != 2 {
					t.Errorf("the stream delivered %d events, want the 2 after the snapshot: the client replayed history", st.Delivered)
				}
			} else {
				if st.SnapshotSequence != 0 {
					t.Errorf("started from snapshot %d, want a replay", st.SnapshotSequence)
				}
				if st.Delivered != 10 {
					t.Errorf("the stream delivered %d events, want prod's 10", st.Delivered)
				}
			}
			if c.Sequence() != last {
				t.Errorf("Sequence() = %d, want %d", c.Sequence(), last)
			}
			for key, want := range map[string]string{"a": "on", "b": "off", "c": "off", "d": "on", "e": "on", "f": "on", "x": ""} {
				if got, _ := serves(c, key); got != want {
					t.Errorf("%s serves %q, want %q", key, got, want)
				}
			}
			if ev := c.Evaluate("x", nil); ev.ErrorCode != targeting.ErrorFlagNotFound {
				t.Errorf("a flag of another environment: error %q, want FLAG_NOT_FOUND", ev.ErrorCode)
			}
			if _, reason := serves(c, "b"); reason != targeting.ReasonDisabled {
				t.Errorf("killed flag: reason %s, want DISABLED", reason)
			}
		})
	}
}

func TestEmptyEnvironmentIsReady(t *testing.T) {
	s := boot(t)
	s.create(t, "dev", "x", boolFlag(true))
	c := start(t, connect(t, s.srv), local.Config{Environment: "prod", NoPresence: true})
	waitReady(t, c)
	if c.Sequence() != 0 || c.Stats().Delivered != 0 {
		t.Fatalf("sequence %d, delivered %d; want 0, 0", c.Sequence(), c.Stats().Delivered)
	}
	f := s.create(t, "prod", "late", boolFlag(true))
	waitSequence(t, c, f.Sequence)
	if got, _ := serves(c, "late"); got != "on" {
		t.Fatalf("late serves %q", got)
	}
}

func TestLiveFollow(t *testing.T) {
	s := boot(t)
	s.create(t, "prod", "checkout", boolFlag(true))
	var seen notices
	c := start(t, connect(t, s.srv), local.Config{Environment: "prod", NoPresence: true}, seen.observe)
	waitReady(t, c)

	killed := s.kill(t, "prod", "checkout")
	waitSequence(t, c, killed.Sequence)
	if got, reason := serves(c, "checkout"); got != "off" || reason != targeting.ReasonDisabled {
		t.Fatalf("after the kill: %q %s, want off DISABLED", got, reason)
	}
	if ev := c.Evaluate("checkout", nil); ev.Version != killed.Version {
		t.Errorf("evaluated version %d, want %d", ev.Version, killed.Version)
	}
	enabled := s.enable(t, "prod", "checkout")
	waitSequence(t, c, enabled.Sequence)
	if got, _ := serves(c, "checkout"); got != "on" {
		t.Fatalf("after enabling: %q", got)
	}

	// A segment change names the flags whose rules use it. Each event is applied before the next
	// is appended, so that each is live and told on its own (events a client falls behind on
	// are told together: TestCatchUpInOneBatch).
	seg := s.appendEvent(t, events.TypeSegmentCreated, "prod", "beta", 1, events.SegmentCreated{Segment: events.SegmentConfig{Included: []string{"u1"}}})
	waitSequence(t, c, seg)
	cfg := boolFlag(true)
	cfg.DefaultVariant = "off"
	cfg.Rules = []events.Rule{{Conditions: []events.Condition{{Attribute: "targetingKey", Operator: "inSegment", Values: []any{"beta"}}}, Serve: events.Serve{Variant: "on"}}}
	waitSequence(t, c, s.create(t, "prod", "beta-feature", cfg).Sequence)
	upd := s.appendEvent(t, events.TypeSegmentUpdated, "prod", "beta", 2, events.SegmentUpdated{Segment: events.SegmentConfig{Included: []string{"u2"}}})
	waitSequence(t, c, upd)
	ev := c.Evaluate("beta-feature", &targeting.EvalContext{TargetingKey: "u2"})
	if ev.Variant == nil || ev.Variant.Name != "on" || ev.Reason != targeting.ReasonTargetingMatch {
		t.Fatalf("u2 after joining the segment: %+v", ev)
	}

	// Observers are told just after WaitSequence returns.
	await.Eventually(t, wait, func() bool {
		all := seen.all()
		return len(all) > 0 && all[len(all)-1].Sequence == upd
	}, "the notice of the last event")
	got := seen.all()
	if len(got) == 0 || got[0].Kind != local.NoticeReady {
		t.Fatalf("notices %v: the first is not ready", seen.kinds())
	}
	var changed []local.Notice
	for _, n := range got[1:] {
		if n.Kind == local.NoticeChanged {
			changed = append(changed, n)
		}
	}
	want := []struct {
		seq  uint64
		keys []string
	}{
		{killed.Sequence, []string{"checkout"}},
		{enabled.Sequence, []string{"checkout"}},
		{seg, []string{}},
		{upd - 1, []string{"beta-feature"}},
		{upd, []string{"beta-feature"}},
	}
	if len(changed) != len(want) {
		t.Fatalf("changed notices %+v, want %d", changed, len(want))
	}
	for i, w := range want {
		if changed[i].Sequence != w.seq || !slices.Equal(changed[i].Keys, w.keys) {
			t.Errorf("changed notice %d = sequence %d keys %v, want %d %v", i, changed[i].Sequence, changed[i].Keys, w.seq, w.keys)
		}
	}
}

// TestCatchUpInOneBatch: the events appended while a ready client was not following (an outage)
// are applied together when it follows again: one change notice naming every flag they changed,
// with the last sequence; refused events among them are skipped and counted. Live events after
// that are applied and told one by one again.
func TestCatchUpInOneBatch(t *testing.T) {
	s := boot(t)
	s.create(t, "prod", "a", boolFlag(true))
	c, err := local.New(connect(t, s.srv), local.Config{Environment: "prod", NoPresence: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	run := func() (stop func()) {
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- c.Run(ctx) }()
		return func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("run: %v", err)
			}
		}
	}
	stop := run()
	waitReady(t, c)
	stop()
	var seen notices
	c.Observe(seen.observe)

	// While the client does not follow: 30 new flags, a kill, a refused event, a segment and a
	// flag using it.
	want := []string{"a"}
	for i := range 30 {
		key := fmt.Sprintf("f%02d", i)
		s.create(t, "prod", key, boolFlag(i%2 == 0))
		want = append(want, key)
	}
	s.kill(t, "prod", "a")
	s.appendEvent(t, events.TypeFlagEnabled, "prod", "f00", 9, events.FlagEnabled{})
	s.appendEvent(t, events.TypeSegmentCreated, "prod", "beta", 1, events.SegmentCreated{Segment: events.SegmentConfig{Included: []string{"u1"}}})
	cfg := boolFlag(true)
	cfg.DefaultVariant = "off"
	cfg.Rules = []events.Rule{{Conditions: []events.Condition{{Attribute: "targetingKey", Operator: "inSegment", Values: []any{"beta"}}}, Serve: events.Serve{Variant: "on"}}}
	last := s.create(t, "prod", "uses-beta", cfg).Sequence
	want = append(want, "uses-beta")
	before := c.Stats()

	defer run()()
	waitSequence(t, c, last)
	var changed []local.Notice
	await.Eventually(t, wait, func() bool { // observers are told after WaitSequence returns
		changed = changed[:0]
		for _, n := range seen.all() {
			if n.Kind == local.NoticeChanged {
				changed = append(changed, n)
			}
		}
		return len(changed) > 0 && changed[len(changed)-1].Sequence == last
	}, "a notice of the last event")
	if len(changed) != 1 || changed[0].Sequence != last || !slices.Equal(changed[0].Keys, want) {
		t.Fatalf("change notices %+v, want one at sequence %d naming %v", changed, last, want)
	}
	st := c.Stats()
	if applied, skipped := st.Applied-before.Applied, st.Skipped-before.Skipped; applied != 33 || skipped != 1 {
		t.Errorf("caught up with %d applied and %d skipped events, want 33 and 1", applied, skipped)
	}
	if got, reason := serves(c, "a"); got != "off" || reason != targeting.ReasonDisabled {
		t.Errorf("a serves %q %s after its kill", got, reason)
	}
	if got, _ := serves(c, "f29"); got != "off" {
		t.Errorf("f29, created disabled, serves %q", got)
	}
	if ev := c.Evaluate("uses-beta", &targeting.EvalContext{TargetingKey: "u1"}); ev.Variant == nil || ev.Variant.Name != "on" {
		t.Errorf("uses-beta for a member of beta: %+v", ev)
	}

	killed := s.kill(t, "prod", "f02")
	waitSequence(t, c, killed.Sequence)
	var live []local.Notice
	await.Eventually(t, wait, func() bool {
		live = live[:0]
		for _, n := range seen.all() {
			if n.Kind == local.NoticeChanged && n.Sequence > last {
				live = append(live, n)
			}
		}
		return len(live) > 0
	}, "a notice of the live kill")
	if len(live) != 1 || live[0].Sequence != killed.Sequence || !slices.Equal(live[0].Keys, []string{"f02"}) {
		t.Errorf("after catching up, a live kill is told as %+v", live)
	}
}

func TestBadEventsAreSkipped(t *testing.T) {
	s := boot(t)
	s.create(t, "prod", "a", boolFlag(true))
	nc := connect(t, s.srv)
	// A message on an event subject that is not an event at all, then one that skips a version.
	if _, err := s.js.Publish(context.Background(), events.FlagSubject("prod", "junk"), []byte("not an event")); err != nil {
		t.Fatal(err)
	}
	c := start(t, nc, local.Config{Environment: "prod", NoPresence: true})
	waitReady(t, c)
	bad := s.appendEvent(t, events.TypeFlagKilled, "prod", "a", 5, events.FlagKilled{})
	waitSequence(t, c, bad)
	st := c.Stats()
	if st.Skipped != 2 || st.Applied != 1 {
		t.Fatalf("stats %+v, want 1 applied and 2 skipped", st)
	}
	if got, _ := serves(c, "a"); got != "on" {
		t.Fatalf("a serves %q after refused events", got)
	}
}

func TestStaleWhileServerDown(t *testing.T) {
	dir := t.TempDir()
	s := boot(t, natstest.Options{StoreDir: dir})
	port := s.srv.Addr().(*net.TCPAddr).Port
	s.create(t, "prod", "checkout", boolFlag(true))

	nc := connect(t, s.srv)
	var seen notices
	c := start(t, nc, local.Config{Environment: "prod", NoPresence: true, HeartbeatInterval: 100 * time.Millisecond, StaleAfter: time.Second}, seen.observe)
	waitReady(t, c)
	await.Eventually(t, wait, func() bool { return !c.Stale() }, "fresh after start")

	natstest.Shutdown(s.srv)
	await.Eventually(t, wait, c.Stale, "stale once the server is down")
	await.Eventually(t, wait, func() bool { return seen.has(local.NoticeStale) }, "a stale notice")
	if got, _ := serves(c, "checkout"); got != "on" {
		t.Fatalf("while down, checkout serves %q: the last-known state is lost", got)
	}

	// The same server comes back on the same port and data; the client reconnects by itself.
	s2 := attach(t, restart(t, dir, port))
	killed := s2.appendEvent(t, events.TypeFlagKilled, "prod", "checkout", 2, events.FlagKilled{})
	waitSequence(t, c, killed)
	if got, _ := serves(c, "checkout"); got != "off" {
		t.Fatalf("after the restart, checkout serves %q", got)
	}
	await.Eventually(t, wait, func() bool { return !c.Stale() }, "fresh again")
	await.Eventually(t, wait, func() bool { return seen.has(local.NoticeFresh) }, "a fresh notice")
	kinds := seen.kinds()
	if i, j := slices.Index(kinds, local.NoticeStale), slices.Index(kinds, local.NoticeFresh); i < 0 || j < i {
		t.Fatalf("notices %v: want stale, then fresh", kinds)
	}
}

// restart starts a server on the data and port of one that was shut down.
func restart(t *testing.T, dir string, port int) *server.Server {
	t.Helper()
	srv, err := server.NewServer(&server.Options{
		Host: "127.0.0.1", Port: port, JetStream: true, StoreDir: dir, NoSigs: true, NoLog: true,
	})
	if err != nil {
		t.Fatal(err)
	}
	srv.Start()
	t.Cleanup(func() { natstest.Shutdown(srv) })
	if !srv.ReadyForConnections(10 * time.Second) {
		t.Fatal("restarted server not ready")
	}
	return srv
}

func TestStreamMissingIsAnError(t *testing.T) {
	s := boot(t)
	s.create(t, "prod", "checkout", boolFlag(true))
	var seen notices
	c := start(t, connect(t, s.srv), local.Config{Environment: "prod", NoPresence: true, HeartbeatInterval: 100 * time.Millisecond, StaleAfter: time.Second}, seen.observe)
	waitReady(t, c)
	if err := s.js.DeleteStream(context.Background(), events.DefaultStreamName); err != nil {
		t.Fatal(err)
	}
	await.Eventually(t, wait, func() bool { return seen.has(local.NoticeError) }, "an error notice once the stream is gone")
	for _, n := range seen.all() {
		if n.Kind == local.NoticeError && n.Err == nil {
			t.Error("error notice without an error")
		}
	}
	if got, _ := serves(c, "checkout"); got != "on" {
		t.Fatalf("checkout serves %q: the last-known state is lost", got)
	}
	if !c.Stale() {
		t.Error("Stale() = false without a stream")
	}

	// A new, empty stream of the same name is not the one the client followed.
	if _, err := events.Open(context.Background(), s.js, events.StreamConfig{}); err != nil {
		t.Fatal(err)
	}
	await.Eventually(t, wait, func() bool {
		for _, n := range seen.all() {
			if n.Kind == local.NoticeError && errors.Is(n.Err, local.ErrStreamReplaced) {
				return true
			}
		}
		return false
	}, "an error notice saying the stream was replaced")
	if !c.Stale() {
		t.Error("Stale() = false on a replaced stream")
	}
}

func TestHeartbeats(t *testing.T) {
	s := boot(t)
	f := s.create(t, "prod", "checkout", boolFlag(true))
	sub, err := connect(t, s.srv).SubscribeSync(local.PresenceSubjects)
	if err != nil {
		t.Fatal(err)
	}
	c, err := local.New(connect(t, s.srv), local.Config{Environment: "prod", ID: "svc-1", Name: "checkout-api", HeartbeatInterval: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()

	next := func() local.Heartbeat {
		t.Helper()
		m, err := sub.NextMsg(wait)
		if err != nil {
			t.Fatal(err)
		}
		hb, err := local.DecodeHeartbeat(m.Subject, m.Data)
		if err != nil {
			t.Fatalf("heartbeat %s %s: %v", m.Subject, m.Data, err)
		}
		return hb
	}
	hb := next()
	for !hb.Ready {
		hb = next()
	}
	if hb.ID != "svc-1" || hb.Name != "checkout-api" || hb.Environment != "prod" || hb.Sequence != f.Sequence || hb.IntervalMillis != 100 || hb.Leaving {
		t.Fatalf("heartbeat %+v", hb)
	}
	killed := s.kill(t, "prod", "checkout")
	for hb.Sequence < killed.Sequence {
		hb = next()
	}
	if hb.Sequence != killed.Sequence {
		t.Fatalf("heartbeat sequence %d, want %d", hb.Sequence, killed.Sequence)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	for !hb.Leaving {
		hb = next()
	}
	if hb.Sequence != killed.Sequence {
		t.Fatalf("leaving heartbeat %+v", hb)
	}
}

func TestRunAndClose(t *testing.T) {
	s := boot(t)
	nc := connect(t, s.srv)
	c, err := local.New(nc, local.Config{Environment: "prod", NoPresence: true})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	waitReady(t, c)
	if err := c.Run(ctx); !errors.Is(err, local.ErrRunning) {
		t.Fatalf("second Run = %v, want ErrRunning", err)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatalf("Run after Close = %v, want nil", err)
	}
	if err := c.Run(ctx); !errors.Is(err, local.ErrClosed) {
		t.Fatalf("Run after Close = %v, want ErrClosed", err)
	}
	if err := c.WaitSequence(ctx, 99); !errors.Is(err, local.ErrClosed) {
		t.Fatalf("WaitSequence after Close = %v, want ErrClosed", err)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
}

func TestWaitReadyEndsWithContext(t *testing.T) {
	s := boot(t)
	c, err := local.New(connect(t, s.srv), local.Config{Environment: "prod"})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Millisecond)
	defer cancel()
	if err := c.WaitReady(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("WaitReady without Run = %v, want the deadline", err)
	}
	if c.Ready() {
		t.Fatal("ready without running")
	}
}
