package lease

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/interlock-dev/interlock/internal/await"
	"github.com/interlock-dev/interlock/internal/natstest"
)

func TestLeaseOptionsValidate(t *testing.T) {
	ok := Options{Bucket: "leases", Key: "guard", Holder: "replica-1"}
	tests := []struct {
		name string
		edit func(*Options)
		want string // "" for valid
	}{
		{"defaults", func(*Options) {}, ""},
		{"everything set", func(o *Options) {
			*o = Options{Bucket: "b-1_x", Key: "env.prod/guard=1", Holder: "h", TTL: 2 * time.Second,
				Margin: 300 * time.Millisecond, Renew: 500 * time.Millisecond, Timeout: time.Second, Replicas: 3}
		}, ""},
		{"no bucket", func(o *Options) { o.Bucket = "" }, "bucket"},
		{"no key", func(o *Options) { o.Key = "" }, "key"},
		{"no holder", func(o *Options) { o.Holder = "" }, "holder is required"},
		{"holder with a newline", func(o *Options) { o.Holder = "a\nb" }, "unprintable"},
		{"holder not utf-8", func(o *Options) { o.Holder = "\xff" }, "UTF-8"},
		{"holder too long", func(o *Options) { o.Holder = strings.Repeat("h", 257) }, "more than 256"},
		{"bucket with a dot", func(o *Options) { o.Bucket = "a.b" }, "bucket"},
		{"key with a space", func(o *Options) { o.Key = "a b" }, "key"},
		{"key starting with a dot", func(o *Options) { o.Key = ".a" }, "key"},
		{"key with two dots", func(o *Options) { o.Key = "a..b" }, "key"},
		{"key with a wildcard", func(o *Options) { o.Key = "a.*" }, "key"},
		{"ttl below a second", func(o *Options) { o.TTL = 500 * time.Millisecond }, "ttl"},
		{"ttl not whole seconds", func(o *Options) { o.TTL = 1500 * time.Millisecond }, "ttl"},
		{"ttl above an hour", func(o *Options) { o.TTL = 2 * time.Hour }, "ttl"},
		{"negative ttl", func(o *Options) { o.TTL = -time.Second }, "ttl"},
		{"margin as long as the ttl", func(o *Options) { o.TTL, o.Margin = 2*time.Second, 2*time.Second }, "margin"},
		{"negative margin", func(o *Options) { o.Margin = -1 }, "margin"},
		{"renew past ttl - margin", func(o *Options) { o.TTL, o.Margin, o.Renew = 2*time.Second, time.Second, time.Second }, "renew"},
		{"renew too short", func(o *Options) { o.Renew = time.Millisecond }, "renew"},
		{"negative timeout", func(o *Options) { o.Timeout = -1 }, "timeout"},
		{"too many replicas", func(o *Options) { o.Replicas = 7 }, "replicas"},
		{"negative replicas", func(o *Options) { o.Replicas = -1 }, "replicas"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			o := ok
			tc.edit(&o)
			err := o.Validate()
			if tc.want == "" {
				if err != nil {
					t.Fatalf("Validate: %v", err)
				}
				o.setDefaults()
				if o.Renew >= o.TTL-o.Margin || o.Margin <= 0 || o.Timeout <= 0 || o.Replicas < 1 {
					t.Fatalf("defaults break the rules: %+v", o)
				}
				return
			}
			if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Validate = %v, want ErrInvalid mentioning %q", err, tc.want)
			}
		})
	}
}

func TestLeaseValueRoundTrip(t *testing.T) {
	at := time.Date(2025, 3, 4, 5, 6, 7, 8, time.UTC)
	v := leaseValue{Holder: "replica-1", Token: "T0K3N", Epoch: 42, TTLSeconds: 10, Acquired: at, Renewed: at.Add(time.Second)}
	got, err := decodeLeaseValue(encodeLeaseValue(v))
	if err != nil || got != v {
		t.Fatalf("round trip = %+v, %v; want %+v", got, err, v)
	}
	for _, bad := range []string{
		``, `null`, `[]`, `{}`, `{"holder":"h"}`, `{"token":"t"}`, `{"holder":"h","token":"t"} {}`,
		`{"holder":"h","token":"t","ttlSeconds":-1}`, `{"holder":"h","token":"t","epoch":-1}`,
		`{"holder":"h\u0000","token":"t"}`, `{"holder":"h","token":"t","acquired":"yesterday"}`,
	} {
		if _, err := decodeLeaseValue([]byte(bad)); !errors.Is(err, ErrMalformed) {
			t.Errorf("decode %q = %v, want ErrMalformed", bad, err)
		}
	}
	if _, err := decodeLeaseValue([]byte(`{"holder":"h","token":"t","future":true}`)); err != nil {
		t.Errorf("an unknown field is refused: %v", err)
	}
}

func FuzzDecodeLeaseValue(f *testing.F) {
	f.Add([]byte(`{"holder":"replica-1","token":"T0K3N","epoch":42,"ttlSeconds":10,"acquired":"2025-03-04T05:06:07Z","renewed":"2025-03-04T05:06:08Z"}`))
	f.Add([]byte(`{"holder":"h","token":"t"}`))
	f.Add([]byte(`{"holder":"h","token":"t"}x`))
	f.Add([]byte(`{"holder":"\u00e9\u2028","token":"t","ttlSeconds":3600}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		v, err := decodeLeaseValue(data)
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("error %v does not match ErrMalformed", err)
			}
			return
		}
		again, err := decodeLeaseValue(encodeLeaseValue(v))
		if err != nil {
			t.Fatalf("re-encoded value refused: %v", err)
		}
		if again.Holder != v.Holder || again.Token != v.Token || again.Epoch != v.Epoch || again.TTLSeconds != v.TTLSeconds ||
			!again.Acquired.Equal(v.Acquired) || !again.Renewed.Equal(v.Renewed) {
			t.Fatalf("round trip changed %+v into %+v", v, again)
		}
	})
}

// skewClock is the real clock moved by an offset the test controls.
type skewClock struct{ off atomic.Int64 }

func (c *skewClock) Now() time.Time { return time.Now().Add(time.Duration(c.off.Load())) }

// runningLease is a lease whose Run goroutine the test stops.
type runningLease struct {
	*Lease
	name   string
	nc     *nats.Conn
	cancel context.CancelFunc
	done   chan error
	once   sync.Once
}

// startLease connects to s, builds a lease and runs it until the test stops it or ends.
func startLease(t *testing.T, s *server.Server, opts Options) *runningLease {
	t.Helper()
	nc := natstest.Connect(t, s)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	l, err := New(ctx, js, opts)
	if err != nil {
		t.Fatalf("New %s: %v", opts.Holder, err)
	}
	return runLease(t, l, opts.Holder, nc)
}

func runLease(t *testing.T, l *Lease, name string, nc *nats.Conn) *runningLease {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	r := &runningLease{Lease: l, name: name, nc: nc, cancel: cancel, done: make(chan error, 1)}
	go func() { r.done <- l.Run(ctx) }()
	t.Cleanup(func() { r.stop(t) })
	return r
}

// stop ends Run and checks that it returned nil and holds nothing any more.
func (r *runningLease) stop(t *testing.T) {
	t.Helper()
	r.once.Do(func() {
		r.cancel()
		select {
		case err := <-r.done:
			if err != nil {
				t.Errorf("%s: Run = %v, want nil", r.name, err)
			}
		case <-time.After(20 * time.Second):
			t.Errorf("%s: Run did not return after its context ended", r.name)
		}
		if held, _ := r.Held(); held {
			t.Errorf("%s: still held after Run returned", r.name)
		}
	})
}

func leaseOpts(holder string, ttl time.Duration, replicas int) Options {
	return Options{Bucket: "lease_test", Key: "guard", Holder: holder, TTL: ttl, Replicas: replicas}
}

// holderOf waits until exactly one of the leases holds and returns it and its epoch.
func holderOf(t *testing.T, within time.Duration, ls ...*runningLease) (*runningLease, uint64) {
	t.Helper()
	var who *runningLease
	var epoch uint64
	await.Eventually(t, within, func() bool {
		who, epoch = nil, 0
		for _, l := range ls {
			if held, e := l.Held(); held {
				if who != nil {
					return false
				}
				who, epoch = l, e
			}
		}
		return who != nil
	}, "one of %d leases held", len(ls))
	return who, epoch
}

// entryState is what the leader holds under the lease's key.
type entryState int

const (
	entryEmpty   entryState = iota // no message: never written, or expired
	entryDeleted                   // a delete marker: released
	entryLive                      // a holder's entry
)

// leaderRecord reads the lease's entry from the stream leader (not a replica that may lag)
// and returns its state and, when live, its holder and epoch.
func leaderRecord(nc *nats.Conn, bucket, key string) (st entryState, holder string, epoch uint64, err error) {
	req := fmt.Sprintf(`{"last_by_subj":"$KV.%s.%s"}`, bucket, key)
	msg, err := nc.Request("$JS.API.STREAM.MSG.GET.KV_"+bucket, []byte(req), 5*time.Second)
	if err != nil {
		return 0, "", 0, err
	}
	var resp struct {
		Message *struct {
			Seq  uint64 `json:"seq"`
			Hdrs []byte `json:"hdrs"`
			Data []byte `json:"data"`
		} `json:"message"`
		Error *struct {
			Code        int    `json:"code"`
			Description string `json:"description"`
		} `json:"error"`
	}
	if err := json.Unmarshal(msg.Data, &resp); err != nil {
		return 0, "", 0, err
	}
	switch {
	case resp.Error != nil && resp.Error.Code == 404:
		return entryEmpty, "", 0, nil
	case resp.Error != nil:
		return 0, "", 0, fmt.Errorf("msg get: %d %s", resp.Error.Code, resp.Error.Description)
	case resp.Message == nil:
		return 0, "", 0, errors.New("msg get: no message")
	case strings.Contains(string(resp.Message.Hdrs), "KV-Operation"):
		return entryDeleted, "", 0, nil
	}
	v, err := decodeLeaseValue(resp.Message.Data)
	if err != nil {
		return 0, "", 0, err
	}
	return entryLive, v.Holder, epochOf(v, resp.Message.Seq), nil
}

// checker samples the leases while they run, as fast as it can, and records every breach of
// the lease's promises:
//   - two leases never hold at once: x held (epoch e), then y held, then x still held with
//     epoch e means x and y held at the same moment;
//   - a lease that holds across a read of the entry at the stream leader finds its own entry,
//     with its epoch, there;
//   - epochs only grow: a holding seen after another has a greater epoch.
type checker struct {
	t       *testing.T
	leases  func() []*runningLease
	nc      *nats.Conn
	bucket  string
	stopped chan struct{}
	done    chan struct{}
	once    sync.Once

	samples, heldSamples, entryChecks atomic.Int64
	maxEpoch                          uint64
}

func startChecker(t *testing.T, nc *nats.Conn, bucket string, leases func() []*runningLease) *checker {
	c := &checker{t: t, leases: leases, nc: nc, bucket: bucket, stopped: make(chan struct{}), done: make(chan struct{})}
	go c.loop()
	t.Cleanup(func() { c.once.Do(func() { close(c.stopped); <-c.done }) })
	return c
}

func (c *checker) loop() {
	defer close(c.done)
	for i := 0; ; i++ {
		select {
		case <-c.stopped:
			return
		default:
		}
		ls := c.leases()
		for _, x := range ls {
			for _, y := range ls {
				if x == y {
					continue
				}
				c.samples.Add(1)
				hx1, ex1 := x.Held()
				hy, ey := y.Held()
				hx2, ex2 := x.Held()
				if hx1 && hy && hx2 && ex1 == ex2 {
					c.t.Errorf("%s (epoch %d) and %s (epoch %d) held at the same time", x.name, ex1, y.name, ey)
				}
				for _, e := range []struct {
					held  bool
					epoch uint64
				}{{hx1, ex1}, {hy, ey}, {hx2, ex2}} {
					if !e.held {
						continue
					}
					c.heldSamples.Add(1)
					if e.epoch < c.maxEpoch {
						c.t.Errorf("epoch %d held after epoch %d", e.epoch, c.maxEpoch)
					}
					c.maxEpoch = max(c.maxEpoch, e.epoch)
				}
			}
		}
		if i%20 != 0 {
			continue
		}
		for _, x := range ls {
			h1, e1 := x.Held()
			st, holder, epoch, err := leaderRecord(c.nc, c.bucket, "guard")
			h2, e2 := x.Held()
			if err != nil || !h1 || !h2 || e1 != e2 {
				continue
			}
			c.entryChecks.Add(1)
			if st != entryLive || holder != x.name || epoch != e1 {
				c.t.Errorf("%s held epoch %d across a read of the entry, which was (%d) holder %q epoch %d",
					x.name, e1, st, holder, epoch)
			}
		}
	}
}

func (c *checker) stop() {
	c.once.Do(func() { close(c.stopped); <-c.done })
	c.t.Logf("checker: %d paired samples, %d held, %d entry checks", c.samples.Load(), c.heldSamples.Load(), c.entryChecks.Load())
	if c.heldSamples.Load() == 0 || c.entryChecks.Load() == 0 {
		c.t.Errorf("the checker saw no holding (%d) or checked no entry (%d)", c.heldSamples.Load(), c.entryChecks.Load())
	}
}

// noLeaseGoroutines fails when a goroutine is still inside a Lease method.
func noLeaseGoroutines(t *testing.T) {
	t.Helper()
	await.Eventually(t, 10*time.Second, func() bool {
		buf := make([]byte, 1<<20)
		return !strings.Contains(string(buf[:runtime.Stack(buf, true)]), "lease.(*Lease)")
	}, "goroutines left in Lease methods")
}

// TestLeaseHandovers runs two replicas against one bucket, stops the holder gracefully, kills
// another holder's connection, and restarts the stopped ones, while a checker samples both
// all along: never two holders, the holder's own entry at the leader, epochs growing.
func TestLeaseHandovers(t *testing.T) {
	for _, tc := range []struct {
		name     string
		replicas int
	}{{"single server", 1}, {"cluster of three", 3}} {
		t.Run(tc.name, func(t *testing.T) {
			var servers []*server.Server
			if tc.replicas == 1 {
				servers = []*server.Server{natstest.RunServer(t)}
			} else {
				servers = natstest.RunCluster(t)
			}
			const ttl = 2 * time.Second
			var mu sync.Mutex
			ls := map[string]*runningLease{}
			start := func(name string, srv int) {
				l := startLease(t, servers[srv%len(servers)], leaseOpts(name, ttl, tc.replicas))
				mu.Lock()
				ls[name] = l
				mu.Unlock()
			}
			start("a", 0)
			start("b", 1)
			list := func() []*runningLease {
				mu.Lock()
				defer mu.Unlock()
				return []*runningLease{ls["a"], ls["b"]}
			}
			c := startChecker(t, natstest.Connect(t, servers[len(servers)-1]), "lease_test", list)

			_, last := holderOf(t, 10*time.Second, list()...)
			for round := range 4 {
				holder, epoch := holderOf(t, 10*time.Second, list()...)
				if epoch < last {
					t.Fatalf("round %d: epoch %d after %d", round, epoch, last)
				}
				if round == 2 {
					// A crash: the connection goes, nothing is released; the other takes
					// over once the entry expires.
					holder.nc.Close()
				} else {
					holder.stop(t)
				}
				other := ls["a"]
				if holder == other {
					other = ls["b"]
				}
				await.Eventually(t, 15*time.Second, func() bool { h, _ := other.Held(); return h },
					"round %d: %s takes over from %s", round, other.name, holder.name)
				_, next := other.Held()
				if next <= epoch {
					t.Fatalf("round %d: epoch %d after %d", round, next, epoch)
				}
				if h, _ := holder.Held(); h {
					t.Fatalf("round %d: %s still holds after %s took over", round, holder.name, other.name)
				}
				last = next
				holder.stop(t)
				start(holder.name, round+2) // a restart, on another server of the cluster
			}
			c.stop()
			for _, l := range list() {
				l.stop(t)
			}
			noLeaseGoroutines(t)
		})
	}
}

// logRecorder keeps the messages logged through it.
type logRecorder struct {
	mu   sync.Mutex
	msgs []string
}

func (r *logRecorder) Enabled(context.Context, slog.Level) bool { return true }
func (r *logRecorder) Handle(_ context.Context, rec slog.Record) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.msgs = append(r.msgs, rec.Message)
	return nil
}
func (r *logRecorder) WithAttrs([]slog.Attr) slog.Handler { return r }
func (r *logRecorder) WithGroup(string) slog.Handler      { return r }
func (r *logRecorder) has(msg string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, m := range r.msgs {
		if m == msg {
			return true
		}
	}
	return false
}

// TestLeaseGracefulStopHandsOverAtOnce: with a minute's TTL and 20 s between attempts, the
// waiting replica can only take over within the test's deadline because the stopping holder
// deletes its entry and the waiting one watches for that.
func TestLeaseGracefulStopHandsOverAtOnce(t *testing.T) {
	s := natstest.RunServer(t)
	a := startLease(t, s, leaseOpts("a", time.Minute, 1))
	await.Eventually(t, 10*time.Second, func() bool { h, _ := a.Held(); return h }, "a acquires")
	_, epochA := a.Held()

	logs := &logRecorder{}
	o := leaseOpts("b", time.Minute, 1)
	o.Logger = slog.New(logs)
	b := startLease(t, s, o)
	await.Eventually(t, 10*time.Second, func() bool { return logs.has("lease held by another replica") },
		"b tries and finds a holding")
	if h, _ := b.Held(); h {
		t.Fatal("b holds while a does")
	}
	select {
	case st := <-a.Changes():
		if !st.Held || st.Epoch != epochA {
			t.Fatalf("a's change = %+v, want held with epoch %d", st, epochA)
		}
	default:
		t.Fatal("a's acquisition was not delivered on Changes")
	}

	a.stop(t)
	select {
	case st := <-a.Changes():
		if st.Held {
			t.Fatalf("a's change after stopping = %+v, want not held", st)
		}
	default:
		t.Fatal("a's loss was not delivered on Changes")
	}
	await.Eventually(t, 10*time.Second, func() bool { h, _ := b.Held(); return h }, "b takes over")
	if _, epochB := b.Held(); epochB <= epochA {
		t.Fatalf("b's epoch %d is not above a's %d", epochB, epochA)
	}
}

// TestLeaseCrashedHolder: a holder whose connection dies stops believing it holds the lease
// once its validity ends by its own clock, even though it cannot reach NATS; the other
// replica takes over once the entry expires on the server.
func TestLeaseCrashedHolder(t *testing.T) {
	s := natstest.RunServer(t)
	clock := &skewClock{}
	oa := leaseOpts("a", 2*time.Second, 1)
	oa.Now = clock.Now
	a := startLease(t, s, oa)
	await.Eventually(t, 10*time.Second, func() bool { h, _ := a.Held(); return h }, "a acquires")
	_, epochA := a.Held()
	b := startLease(t, s, leaseOpts("b", 2*time.Second, 1))

	a.nc.Close()
	clock.off.Store(int64(2 * time.Second)) // a's clock passes the end of its validity
	if h, _ := a.Held(); h {
		t.Fatal("a still holds a TTL after its last renewal, by its own clock")
	}
	await.Eventually(t, 10*time.Second, func() bool {
		select {
		case st := <-a.Changes():
			return !st.Held
		default:
			return false
		}
	}, "a's loss is delivered on Changes")
	await.Eventually(t, 15*time.Second, func() bool { h, _ := b.Held(); return h }, "b takes over")
	if _, epochB := b.Held(); epochB <= epochA {
		t.Fatalf("b's epoch %d is not above a's %d", epochB, epochA)
	}
}

// TestLeaseCrashNoOverlap: a holder cut off from NATS, whose clock also loses half the margin,
// still stops believing it holds the lease before a replica that tries every 20ms can take it
// over after the entry expires.
func TestLeaseCrashNoOverlap(t *testing.T) {
	s := natstest.RunServer(t)
	clock := &skewClock{}
	oa := leaseOpts("a", 2*time.Second, 1)
	oa.Now = clock.Now
	a := startLease(t, s, oa)
	await.Eventually(t, 10*time.Second, func() bool { h, _ := a.Held(); return h }, "a acquires")
	ob := leaseOpts("b", 2*time.Second, 1)
	ob.Renew = 20 * time.Millisecond
	b := startLease(t, s, ob)
	c := startChecker(t, natstest.Connect(t, s), "lease_test", func() []*runningLease { return []*runningLease{a, b} })

	await.Eventually(t, 10*time.Second, func() bool {
		rec, err := a.Holder(t.Context())
		return err == nil && rec.Revision > rec.Epoch
	}, "a renews")
	clock.off.Store(-int64(a.margin / 2)) // a's clock runs late: it believes longer
	a.nc.Close()
	await.Eventually(t, 15*time.Second, func() bool { h, _ := b.Held(); return h }, "b takes over")
	c.stop()
}

// TestLeaseStopWithoutRelease: a process that stops without deleting its entry (killed)
// leaves no delete marker, and keeps the lease out of reach until the entry expires; then
// another replica acquires it.
func TestLeaseStopWithoutRelease(t *testing.T) {
	s := natstest.RunServer(t)
	nc := natstest.Connect(t, s)
	js, _ := jetstream.New(nc)
	la, err := New(t.Context(), js, leaseOpts("a", time.Second, 1))
	if err != nil {
		t.Fatal(err)
	}
	la.noRelease = true
	a := runLease(t, la, "a", nc)
	await.Eventually(t, 10*time.Second, func() bool { h, _ := a.Held(); return h }, "a acquires")
	_, epochA := a.Held()
	a.stop(t)
	st, holder, epoch, err := leaderRecord(nc, "lease_test", "guard")
	if err != nil || st == entryDeleted || (st == entryLive && (holder != "a" || epoch != epochA)) {
		t.Fatalf("entry after an unreleased stop: state %d holder %q epoch %d, %v; want a's (epoch %d) or none",
			st, holder, epoch, err, epochA)
	}
	b := startLease(t, s, leaseOpts("b", time.Second, 1))
	await.Eventually(t, 10*time.Second, func() bool { h, _ := b.Held(); return h }, "b acquires after a's entry expires")
	if _, epochB := b.Held(); epochB <= epochA {
		t.Fatalf("b's epoch %d is not above a's %d", epochB, epochA)
	}
}

// TestLeaseLosesRemovedEntry: a holder whose entry is removed behind its back (an operator
// deleting the key) stops holding as soon as it sees it, and competes again.
func TestLeaseLosesRemovedEntry(t *testing.T) {
	s := natstest.RunServer(t)
	a := startLease(t, s, leaseOpts("a", 10*time.Second, 1))
	await.Eventually(t, 10*time.Second, func() bool { h, _ := a.Held(); return h }, "a acquires")
	_, epochA := a.Held()
	<-a.Changes()

	if err := a.kv.Delete(t.Context(), "guard"); err != nil {
		t.Fatal(err)
	}
	await.Eventually(t, 10*time.Second, func() bool {
		select {
		case st := <-a.Changes():
			return !st.Held || st.Epoch != epochA
		default:
			return false
		}
	}, "a's loss is delivered")
	await.Eventually(t, 10*time.Second, func() bool { h, e := a.Held(); return h && e > epochA }, "a acquires again, with a new epoch")
}

// TestLeaseAdoptsUnacknowledgedRenewal: a renewal written by the server whose answer never
// reached the holder leaves the entry one revision ahead; the holder recognises it as its own
// by the token and keeps its holding and its epoch.
func TestLeaseAdoptsUnacknowledgedRenewal(t *testing.T) {
	s := natstest.RunServer(t)
	a := startLease(t, s, leaseOpts("a", 10*time.Second, 1))
	await.Eventually(t, 10*time.Second, func() bool { h, _ := a.Held(); return h }, "a acquires")
	_, epochA := a.Held()
	<-a.Changes()

	js, _ := jetstream.New(natstest.Connect(t, s))
	kv, err := js.KeyValue(t.Context(), "lease_test")
	if err != nil {
		t.Fatal(err)
	}
	var written uint64
	await.Eventually(t, 10*time.Second, func() bool {
		e, err := kv.Get(t.Context(), "guard")
		if err != nil {
			return false
		}
		ack, err := js.PublishMsg(t.Context(), &nats.Msg{Subject: "$KV.lease_test.guard", Data: e.Value()},
			jetstream.WithExpectLastSequencePerSubject(e.Revision()), jetstream.WithMsgTTL(10*time.Second))
		if err != nil {
			return false // a renewed in between: again
		}
		written = ack.Sequence
		return true
	}, "write a's own entry again at its revision")
	await.Eventually(t, 10*time.Second, func() bool {
		rec, err := a.Holder(t.Context())
		return err == nil && rec.Revision > written
	}, "a renews after the unacknowledged write")
	rec, _ := a.Holder(t.Context())
	if held, e := a.Held(); !held || e != epochA || rec.Holder != "a" || rec.Epoch != epochA {
		t.Fatalf("after adoption: held=%v epoch=%d, entry %+v; want a holding epoch %d", held, e, rec, epochA)
	}
	select {
	case st := <-a.Changes():
		t.Fatalf("a's state changed: %+v", st)
	default:
	}
}

// TestLeaseAdoptsUnacknowledgedCreate: a create written by the server whose answer never
// reached the replica is recognised by its token; an entry left by an earlier process under
// the same holder name is not (it has another token) and is waited out.
func TestLeaseAdoptsUnacknowledgedCreate(t *testing.T) {
	for _, tc := range []struct {
		name  string
		token string // the token the lease believes its pending create carried
		adopt bool
		ttl   time.Duration
	}{{"same token", "pending", true, 10 * time.Second}, {"earlier process", "other", false, 2 * time.Second}} {
		t.Run(tc.name, func(t *testing.T) {
			s := natstest.RunServer(t)
			nc := natstest.Connect(t, s)
			js, _ := jetstream.New(nc)
			l, err := New(t.Context(), js, leaseOpts("a", tc.ttl, 1))
			if err != nil {
				t.Fatal(err)
			}
			now := time.Now()
			v := leaseValue{Holder: "a", Token: "pending", TTLSeconds: int64(tc.ttl / time.Second), Acquired: now, Renewed: now}
			rev, err := l.kv.Create(t.Context(), "guard", encodeLeaseValue(v), jetstream.KeyTTL(tc.ttl))
			if err != nil {
				t.Fatal(err)
			}
			l.token, l.tokenAt = tc.token, now // as if this lease had sent that create at now
			r := runLease(t, l, "a", nc)
			await.Eventually(t, 10*time.Second, func() bool { h, _ := r.Held(); return h }, "a holds")
			_, epoch := r.Held()
			if tc.adopt && epoch != rev {
				t.Fatalf("epoch %d, want the pending create's revision %d", epoch, rev)
			}
			if !tc.adopt && epoch <= rev {
				t.Fatalf("epoch %d, want a new holding after revision %d", epoch, rev)
			}
		})
	}
}

func TestLeaseHolderAndErrors(t *testing.T) {
	s := natstest.RunServer(t)
	nc := natstest.Connect(t, s)
	js, _ := jetstream.New(nc)
	ctx := t.Context()

	if _, err := New(ctx, js, Options{Bucket: "b", Key: "k"}); !errors.Is(err, ErrInvalid) {
		t.Fatalf("New without a holder = %v, want ErrInvalid", err)
	}
	jsd, _ := jetstream.NewWithDomain(nc, "hub")
	if _, err := New(ctx, jsd, Options{Bucket: "b", Key: "k", Holder: "a"}); !errors.Is(err, ErrInvalid) {
		t.Fatalf("New with a domain = %v, want ErrInvalid", err)
	}

	l, err := New(ctx, js, Options{Bucket: "interlock_guard_lease", Key: "guard", Holder: "a", TTL: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := l.Holder(ctx); !errors.Is(err, ErrVacant) {
		t.Fatalf("Holder before anyone runs = %v, want ErrVacant", err)
	}
	before := time.Now()
	r := runLease(t, l, "a", nc)
	await.Eventually(t, 10*time.Second, func() bool { h, _ := r.Held(); return h }, "a acquires")
	_, epoch := r.Held()
	rec, err := l.Holder(ctx)
	if err != nil || rec.Holder != "a" || rec.Epoch != epoch || rec.TTL != 2*time.Second ||
		rec.Acquired.Before(before) || rec.Renewed.Before(rec.Acquired) {
		t.Fatalf("Holder = %+v, %v; want a's entry, epoch %d", rec, err, epoch)
	}
	if err := l.Run(ctx); err == nil {
		t.Fatal("a second Run was accepted")
	}
	r.stop(t)
	if _, err := l.Holder(ctx); !errors.Is(err, ErrVacant) {
		t.Fatalf("Holder after a graceful stop = %v, want ErrVacant", err)
	}
	if st, _, _, err := leaderRecord(nc, "interlock_guard_lease", "guard"); err != nil || st != entryDeleted {
		t.Fatalf("entry after a graceful stop: state %d, %v; want a delete marker", st, err)
	}

	// Someone else's undecodable entry is reported, and keeps the lease from being taken.
	if _, err := l.kv.Put(ctx, "guard", []byte("not json")); err != nil {
		t.Fatal(err)
	}
	if _, err := l.Holder(ctx); !errors.Is(err, ErrMalformed) {
		t.Fatalf("Holder of garbage = %v, want ErrMalformed", err)
	}
	noLeaseGoroutines(t)
}
