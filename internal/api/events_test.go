package api_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/interlock-dev/interlock/events"
	"github.com/interlock-dev/interlock/internal/api"
	"github.com/interlock-dev/interlock/internal/auth"
	"github.com/interlock-dev/interlock/internal/await"
	"github.com/interlock-dev/interlock/internal/command"
	"github.com/interlock-dev/interlock/internal/natstest"
	"github.com/interlock-dev/interlock/projections"
)

// feedWithin bounds every wait on the event feed; a deadline, not a measurement.
const feedWithin = 20 * time.Second

// feedSystem is the API over a real JetStream server, with the event store as its feed, served
// by an http.Server the test controls (for shutdown and socket buffers).
type feedSystem struct {
	api   *api.API
	srv   *http.Server
	url   string
	js    jetstream.JetStream
	store *events.Store
	last  map[string]uint64
	all   []events.Event
}

type feedOptions struct {
	tune func(*api.Config)
	// sendBuffer, when set, is the kernel send buffer of every accepted connection.
	sendBuffer int
}

func feedBoot(t *testing.T, o feedOptions) *feedSystem {
	t.Helper()
	ctx := context.Background()
	js := natstest.JetStream(t, natstest.RunServer(t))
	store, err := events.Open(ctx, js, events.StreamConfig{})
	if err != nil {
		t.Fatal(err)
	}
	tokens, err := auth.Open(ctx, js, 1)
	if err != nil {
		t.Fatal(err)
	}
	logger := slog.New(slog.DiscardHandler)
	cfg := api.Config{
		Commands: command.New(store, logger),
		Catalog:  projections.NewCatalog(),
		Reader:   store,
		Auth:     tokens,
		Ready:    func() bool { return true },
		Logger:   logger,
		Events:   store,
		// These tests are about the feed; who may read it is tested with the route table.
		PublicRead: true,
	}
	if o.tune != nil {
		o.tune(&cfg)
	}
	a, err := api.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if o.sendBuffer > 0 {
		ln = bufferedListener{ln, o.sendBuffer}
	}
	srv := &http.Server{Handler: a.Handler(), ReadHeaderTimeout: 10 * time.Second}
	srv.RegisterOnShutdown(a.StopStreams)
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
		<-served
	})
	return &feedSystem{api: a, srv: srv, url: "http://" + ln.Addr().String(), js: js, store: store, last: map[string]uint64{}}
}

// bufferedListener sets a small send buffer on every connection, so that a client that stops
// reading blocks the server's writes soon.
type bufferedListener struct {
	net.Listener
	size int
}

func (l bufferedListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil {
		_ = c.(*net.TCPConn).SetWriteBuffer(l.size)
	}
	return c, err
}

var feedFlag = events.FlagConfig{
	Kind:           events.KindKillSwitch,
	Variants:       map[string]json.RawMessage{"on": json.RawMessage("true"), "off": json.RawMessage("false")},
	DefaultVariant: "on",
	OffVariant:     "off",
	Enabled:        true,
}

func (f *feedSystem) add(t *testing.T, typ, env, key string, payload any) events.Event {
	t.Helper()
	ev, err := events.NewEvent(typ, env, key, payload)
	if err != nil {
		t.Fatal(err)
	}
	subj := ev.Subject()
	ev.Actor, ev.Reason, ev.CorrelationID = "oncall", "pager", "corr-"+strconv.Itoa(len(f.all))
	var version uint64
	for _, e := range f.all {
		if e.Subject() == subj {
			version = e.Version
		}
	}
	ev.Version = version + 1
	seq, err := f.store.Append(context.Background(), &ev, f.last[subj])
	if err != nil {
		t.Fatal(err)
	}
	f.last[subj] = seq
	f.all = append(f.all, ev)
	return ev
}

// flag appends a flag's creation, or a kill when it exists.
func (f *feedSystem) flag(t *testing.T, env, key string) events.Event {
	t.Helper()
	if f.last[events.FlagSubject(env, key)] == 0 {
		return f.add(t, events.TypeFlagCreated, env, key, events.FlagCreated{Flag: feedFlag})
	}
	return f.add(t, events.TypeFlagKilled, env, key, events.FlagKilled{})
}

func (f *feedSystem) where(keep func(events.Event) bool) []events.Event {
	var out []events.Event
	for _, ev := range f.all {
		if keep(ev) {
			out = append(out, ev)
		}
	}
	return out
}

// sse is one dispatched Server-Sent Event, or a block of comments.
type sse struct {
	id, event, data string
	hasID           bool
	comments        []string
	at              time.Time
}

// feedClient reads a feed as an EventSource would.
type feedClient struct {
	resp   *http.Response
	events chan sse
	done   chan error
	lastID string
	once   sync.Once
}

func openFeed(t testing.TB, base, path string, header map[string]string) *feedClient {
	t.Helper()
	req, err := http.NewRequest("GET", base+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Accept", "text/event-stream")
	for k, v := range header {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultTransport.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "text/event-stream" {
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		t.Fatalf("GET %s: %d %s: %s", path, resp.StatusCode, resp.Header.Get("Content-Type"), b)
	}
	c := &feedClient{resp: resp, events: make(chan sse, 100000), done: make(chan error, 1)}
	go func() { c.done <- parseSSE(resp.Body, c.events) }()
	t.Cleanup(c.close)
	return c
}

// parseSSE follows the HTML standard's event stream interpretation closely enough for tests.
func parseSSE(r io.Reader, out chan<- sse) error {
	br := bufio.NewReader(r)
	var cur sse
	var data []string
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			close(out)
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		}
		line = strings.TrimSuffix(line, "\n")
		switch {
		case line == "":
			cur.data = strings.Join(data, "\n")
			if cur.hasID || cur.event != "" || len(data) > 0 || len(cur.comments) > 0 {
				cur.at = time.Now()
				out <- cur
			}
			cur, data = sse{}, nil
		case strings.HasPrefix(line, ":"):
			cur.comments = append(cur.comments, strings.TrimPrefix(line[1:], " "))
		default:
			field, value, _ := strings.Cut(line, ":")
			value = strings.TrimPrefix(value, " ")
			switch field {
			case "id":
				cur.id, cur.hasID = value, true
			case "event":
				cur.event = value
			case "data":
				data = append(data, value)
			}
		}
	}
}

func (c *feedClient) close() {
	c.once.Do(func() {
		c.resp.Body.Close()
		<-c.done
	})
}

// next returns the next dispatched event (comment blocks skipped), or fails the test.
func (c *feedClient) next(t testing.TB) sse {
	t.Helper()
	deadline := time.After(feedWithin)
	for {
		select {
		case e, ok := <-c.events:
			if !ok {
				t.Fatalf("the feed ended (last id %s)", c.lastID)
			}
			if e.hasID {
				c.lastID = e.id
			}
			if e.hasID || e.event != "" || e.data != "" {
				return e
			}
		case <-deadline:
			t.Fatalf("no event within %v (last id %s)", feedWithin, c.lastID)
		}
	}
}

// expect reads len(want) events and checks they are want, in order.
func (c *feedClient) expect(t testing.TB, want []events.Event) []sse {
	t.Helper()
	got := make([]sse, len(want))
	for i, w := range want {
		got[i] = c.next(t)
		checkFeedEvent(t, got[i], w)
	}
	return got
}

func checkFeedEvent(t testing.TB, e sse, want events.Event) {
	t.Helper()
	if e.id != strconv.FormatUint(want.Sequence, 10) || e.event != want.Type {
		t.Fatalf("got id %q event %q, want id %d event %s (%s/%s)", e.id, e.event, want.Sequence, want.Type, want.Environment, want.Key)
	}
	var ev events.Event
	dec := json.NewDecoder(strings.NewReader(e.data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&ev); err != nil {
		t.Fatalf("data %s: %v", e.data, err)
	}
	if ev.ID != want.ID || ev.Type != want.Type || ev.Environment != want.Environment || ev.Entity != want.Entity ||
		ev.Key != want.Key || ev.Version != want.Version || ev.Sequence != want.Sequence || ev.Actor != want.Actor ||
		ev.Reason != want.Reason || ev.CorrelationID != want.CorrelationID || !ev.Time.Equal(want.Time) ||
		!bytes.Equal(ev.Data, want.Data) || ev.Source != events.Source {
		t.Fatalf("data\n got %+v\nwant %+v", ev, want)
	}
}

// ended waits until the feed is closed by the server, and returns the events it still read.
func (c *feedClient) ended(t testing.TB) []sse {
	t.Helper()
	var rest []sse
	deadline := time.After(feedWithin)
	for {
		select {
		case e, ok := <-c.events:
			if !ok {
				return rest
			}
			rest = append(rest, e)
		case <-deadline:
			t.Fatal("the feed did not end")
		}
	}
}

// feedHandlers counts the event feeds being served.
func feedHandlers() int { return countGoroutines("internal/api.(*API).eventFeed(") }

// feedGoroutines counts the goroutines serving event feeds or following the stream for them
// (the catalog's runner follows the stream too, so Store.Follow alone says nothing).
func feedGoroutines() int {
	return countGoroutines("internal/api.(*API).eventFeed", "internal/api.(*API).follow")
}

// countGoroutines counts the goroutines whose stack has any of the frames.
func countGoroutines(frames ...string) int {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			buf = buf[:n]
			break
		}
		buf = make([]byte, 2*len(buf))
	}
	count := 0
	for g := range strings.SplitSeq(string(buf), "\n\n") {
		for _, f := range frames {
			if strings.Contains(g, f) {
				count++
				break
			}
		}
	}
	return count
}

func noFeedGoroutines(t testing.TB) {
	t.Helper()
	await.Eventually(t, feedWithin, func() bool { return feedGoroutines() == 0 }, "feed goroutines still running: %d", feedGoroutines())
}

func TestEventFeedLive(t *testing.T) {
	f := feedBoot(t, feedOptions{})
	f.flag(t, "prod", "checkout")
	f.flag(t, "prod", "checkout")

	// Without a resume point the feed starts with the next event.
	c := openFeed(t, f.url, "/api/v1/events", nil)
	preamble := <-c.events
	if !slices.Contains(preamble.comments, "interlock event feed from sequence 3") {
		t.Fatalf("preamble %+v", preamble)
	}
	var want []events.Event
	want = append(want, f.flag(t, "prod", "search"))
	want = append(want, f.flag(t, "staging", "checkout"))
	want = append(want, f.add(t, events.TypeSegmentCreated, "prod", "beta", events.SegmentCreated{Segment: events.SegmentConfig{Included: []string{"u1"}}}))
	want = append(want, f.add(t, events.TypeFlagUpdated, "prod", "checkout", events.FlagUpdated{Flag: feedFlag, Patch: json.RawMessage(`{"enabled":true}`)}))
	c.expect(t, want)
	c.close()
	noFeedGoroutines(t)
}

func TestEventFeedResume(t *testing.T) {
	f := feedBoot(t, feedOptions{})
	for _, key := range []string{"a", "b", "c"} {
		f.flag(t, "prod", key)
		f.flag(t, "prod", key)
	}
	for _, tc := range []struct {
		name   string
		query  string
		header map[string]string
		from   int // index of the first event
	}{
		{"after", "?after=2", nil, 2},
		{"after zero is the beginning", "?after=0", nil, 0},
		{"Last-Event-ID", "", map[string]string{"Last-Event-ID": "4"}, 4},
		{"Last-Event-ID wins over after", "?after=1", map[string]string{"Last-Event-ID": "5"}, 5},
		{"after the end", "?after=6", nil, 6},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// Every event after the resume point, the live ones of earlier cases included.
			c := openFeed(t, f.url, "/api/v1/events"+tc.query, tc.header)
			c.expect(t, f.all[tc.from:])
			// Then live.
			live := f.flag(t, "prod", "d-"+strings.ReplaceAll(tc.name, " ", "-"))
			c.expect(t, []events.Event{live})
			c.close()
		})
	}

	// Reconnecting as an EventSource does, with the last id it saw: no gap, no repeat.
	f2 := feedBoot(t, feedOptions{})
	for i := range 10 {
		f2.flag(t, "prod", "k"+strconv.Itoa(i%3))
	}
	c := openFeed(t, f2.url, "/api/v1/events?after=0", nil)
	c.expect(t, f2.all[:4])
	c.close()
	more := f2.flag(t, "prod", "k0")
	c = openFeed(t, f2.url, "/api/v1/events?after=0", map[string]string{"Last-Event-ID": c.lastID})
	c.expect(t, append(f2.all[4:10], more))
	c.close()
	noFeedGoroutines(t)
}

func TestEventFeedFilters(t *testing.T) {
	f := feedBoot(t, feedOptions{})
	f.flag(t, "prod", "checkout")
	f.flag(t, "prod", "search")
	f.flag(t, "staging", "checkout")
	f.flag(t, "prod", "checkout")
	f.add(t, events.TypeSegmentCreated, "prod", "beta", events.SegmentCreated{})
	f.add(t, events.TypeSegmentCreated, "staging", "beta", events.SegmentCreated{})
	f.flag(t, "staging", "search")

	for _, tc := range []struct {
		name   string
		query  string
		keep   func(events.Event) bool
		marker func(*testing.T) events.Event // an event the filter keeps, appended last
	}{
		{"environment", "environment=staging", func(ev events.Event) bool { return ev.Environment == "staging" },
			func(t *testing.T) events.Event { return f.flag(t, "staging", "other") }},
		{"flag in every environment", "flag=checkout", func(ev events.Event) bool { return ev.Entity == events.EntityFlag && ev.Key == "checkout" },
			func(t *testing.T) events.Event { return f.flag(t, "staging", "checkout") }},
		{"flag in one environment", "environment=prod&flag=checkout", func(ev events.Event) bool {
			return ev.Environment == "prod" && ev.Entity == events.EntityFlag && ev.Key == "checkout"
		}, func(t *testing.T) events.Event { return f.flag(t, "prod", "checkout") }},
		{"two flags", "environment=prod&flag=checkout&flag=search", func(ev events.Event) bool {
			return ev.Environment == "prod" && ev.Entity == events.EntityFlag && (ev.Key == "checkout" || ev.Key == "search")
		}, func(t *testing.T) events.Event { return f.flag(t, "prod", "search") }},
		{"segments", "entity=segment", func(ev events.Event) bool { return ev.Entity == events.EntitySegment },
			func(t *testing.T) events.Event {
				return f.add(t, events.TypeSegmentArchived, "staging", "beta", events.SegmentArchived{})
			}},
		{"flags of one environment", "entity=flag&environment=prod", func(ev events.Event) bool {
			return ev.Environment == "prod" && ev.Entity == events.EntityFlag
		}, func(t *testing.T) events.Event { return f.flag(t, "prod", "new") }},
		{"flag named like an entity filter", "entity=flag&flag=search", func(ev events.Event) bool {
			return ev.Entity == events.EntityFlag && ev.Key == "search"
		}, func(t *testing.T) events.Event { return f.flag(t, "staging", "search") }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := openFeed(t, f.url, "/api/v1/events?after=0&"+tc.query, nil)
			c.expect(t, f.where(tc.keep))
			// Events the filter drops, then one it keeps: it must come next.
			f.flag(t, "dev", "filler")
			f.flag(t, "dev", "filler")
			c.expect(t, []events.Event{tc.marker(t)})
			c.close()
		})
	}
	noFeedGoroutines(t)
}

func TestEventFeedRefusesBadRequests(t *testing.T) {
	s := boot(t, func(c *api.Config) { c.Events = c.Reader.(api.EventFeed) })
	for _, tc := range []struct {
		name   string
		query  string
		header map[string]string
		want   string
	}{
		{"environment", "?environment=Prod", nil, "environment"},
		{"entity", "?entity=flags", nil, "entity"},
		{"flag key", "?flag=a%20b", nil, "key"},
		{"flag of segments", "?flag=a&entity=segment", nil, "entity=segment"},
		{"flag twice", "?flag=a&flag=a", nil, "given twice"},
		{"too many flags", "?" + manyFlags(101), nil, "at most 100"},
		{"after", "?after=-1", nil, "after"},
		{"after twice", "?after=1&after=2", nil, "given 2 times"},
		{"after overflow", "?after=18446744073709551615", nil, "after"},
		{"Last-Event-ID", "", map[string]string{"Last-Event-ID": "abc"}, "Last-Event-ID"},
		{"unknown parameter", "?env=prod", nil, "unknown query parameter"},
		{"environment twice", "?environment=a&environment=b", nil, "given 2 times"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			msg := s.do(t, req{method: "GET", path: "/api/v1/events" + tc.query, header: tc.header}).
				apiError(t, http.StatusBadRequest, "invalid_argument")
			if !strings.Contains(msg, tc.want) {
				t.Fatalf("message %q does not say %q", msg, tc.want)
			}
		})
	}
	t.Run("HEAD", func(t *testing.T) {
		r := s.do(t, req{method: "HEAD", path: "/api/v1/events"})
		if r.status != http.StatusOK || r.header.Get("Content-Type") != "text/event-stream" || len(r.body) != 0 {
			t.Fatalf("HEAD: %d %s %q", r.status, r.header.Get("Content-Type"), r.body)
		}
	})
	t.Run("POST", func(t *testing.T) {
		s.do(t, req{method: "POST", path: "/api/v1/events"}).apiError(t, http.StatusMethodNotAllowed, "method_not_allowed")
	})
	t.Run("not configured", func(t *testing.T) {
		boot(t).get(t, "/api/v1/events").apiError(t, http.StatusNotFound, "not_found")
	})
	t.Run("read auth", func(t *testing.T) {
		s := boot(t, func(c *api.Config) { c.Events = c.Reader.(api.EventFeed) })
		s.do(t, req{method: "GET", path: "/api/v1/events", anonymous: true}).apiError(t, http.StatusUnauthorized, "unauthenticated")
	})
	noFeedGoroutines(t)
}

func manyFlags(n int) string {
	q := url.Values{}
	for i := range n {
		q.Add("flag", "f"+strconv.Itoa(i))
	}
	return q.Encode()
}

func TestEventFeedHeartbeatAndMalformed(t *testing.T) {
	f := feedBoot(t, feedOptions{tune: func(c *api.Config) { c.EventsHeartbeat = 20 * time.Millisecond }})
	c := openFeed(t, f.url, "/api/v1/events?after=0", nil)
	beats := 0
	await.Eventually(t, feedWithin, func() bool {
		select {
		case e := <-c.events:
			if slices.Contains(e.comments, "heartbeat") {
				beats++
			}
		default:
		}
		return beats >= 2
	}, "heartbeats")

	// A message on an interlock subject that is not an event: the feed skips it, moving the
	// client's last event id past it, and goes on.
	msg := &nats.Msg{Subject: "interlock.prod.flag.junk", Header: nats.Header{"ce-specversion": {"0.3"}}, Data: []byte("{")}
	ack, err := f.js.PublishMsg(context.Background(), msg)
	if err != nil {
		t.Fatal(err)
	}
	good := f.flag(t, "prod", "after-junk")
	skipped := c.next(t)
	if skipped.id != strconv.FormatUint(ack.Sequence, 10) || skipped.event != "" || skipped.data != "" ||
		!slices.Contains(skipped.comments, fmt.Sprintf("skipped sequence %d: not a well-formed Interlock event", ack.Sequence)) {
		t.Fatalf("skipped message: %+v", skipped)
	}
	c.expect(t, []events.Event{good})
	c.close()
	noFeedGoroutines(t)
}

// TestEventFeedSlowClient: a client that stops reading is disconnected once its buffer stays
// full, and a client reading at the same time gets every event.
func TestEventFeedSlowClient(t *testing.T) {
	f := feedBoot(t, feedOptions{
		tune: func(c *api.Config) {
			c.EventsBuffer = 4
			c.EventsSlowTimeout = time.Second
		},
		sendBuffer: 4096,
	})
	fast := openFeed(t, f.url, "/api/v1/events", nil)
	<-fast.events // preamble

	// The slow client: a socket with a small receive buffer, which reads the response head and
	// then nothing more.
	d := net.Dialer{Control: func(_, _ string, rc syscall.RawConn) error {
		var serr error
		err := rc.Control(func(fd uintptr) { serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4096) })
		return errors.Join(err, serr)
	}}
	conn, err := d.Dial("tcp", strings.TrimPrefix(f.url, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprintf(conn, "GET /api/v1/events HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n\r\n")
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("slow client: %v %v", resp, err)
	}

	big := feedFlag
	big.Description = strings.Repeat("d", 4000)
	const n = 80
	var want []events.Event
	for i := range n {
		want = append(want, f.add(t, events.TypeFlagUpdated, "prod", "big", events.FlagUpdated{Flag: big, Patch: json.RawMessage(`{"n":` + strconv.Itoa(i) + `}`)}))
	}
	fast.expect(t, want)

	// Only the fast client's feed is left; the slow one's connection is closed.
	await.Eventually(t, feedWithin, func() bool { return feedHandlers() == 1 }, "the slow feed ends")
	body, err := io.ReadAll(resp.Body)
	got := strings.Count(string(body), "\nevent: ")
	if got >= n {
		t.Fatalf("the slow client got all %d events (err %v): it was never cut off", got, err)
	}
	fast.close()
	noFeedGoroutines(t)
}

// TestEventFeedShutdown: http.Server.Shutdown returns promptly with feeds open, since
// StopStreams ends them, and leaves no goroutine behind.
func TestEventFeedShutdown(t *testing.T) {
	f := feedBoot(t, feedOptions{})
	f.flag(t, "prod", "checkout")
	c1 := openFeed(t, f.url, "/api/v1/events?after=0", nil)
	c2 := openFeed(t, f.url, "/api/v1/events?flag=checkout", nil)
	c1.expect(t, f.all)
	if n := feedHandlers(); n != 2 {
		t.Fatalf("%d feeds served, want 2", n)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := f.srv.Shutdown(ctx); err != nil {
		t.Fatalf("shutdown with feeds open: %v", err)
	}
	c1.ended(t)
	c2.ended(t)
	noFeedGoroutines(t)
}

// latencyFeed is the event feed of one flag, read as fast as it comes, with the time each event
// arrived, by version.
type latencyFeed struct {
	mu      sync.Mutex
	arrived map[uint64]time.Time
	signal  chan struct{}
}

// BenchmarkEventFeedLatency measures, for kills and enables alternating on one flag, how soon an
// SSE client of the event feed (same machine, over TCP, filtered to that flag) has the event:
// from the API's answer to the command (its acknowledgement; the answer waits until this
// replica's catalog applied the event, so the feed often has it first: those count as 0 and in
// %-before-ack), and from the moment the command was sent. send-to-ack is the command itself.
//
//	go test -run '^$' -bench BenchmarkEventFeedLatency -benchtime 4000x ./internal/api/
func BenchmarkEventFeedLatency(b *testing.B) {
	s := boot(b, func(c *api.Config) { c.Events = c.Reader.(api.EventFeed) })
	s.create(b, "prod", "killswitch")
	c := openFeed(b, s.url, "/api/v1/events?environment=prod&flag=killswitch", nil)
	lf := &latencyFeed{arrived: map[uint64]time.Time{}, signal: make(chan struct{}, 1)}
	go func() {
		for e := range c.events {
			if e.event == "" {
				continue
			}
			var ev events.Event
			if json.Unmarshal([]byte(e.data), &ev) != nil {
				continue
			}
			lf.mu.Lock()
			lf.arrived[ev.Version] = e.at
			lf.mu.Unlock()
			select {
			case lf.signal <- struct{}{}:
			default:
			}
		}
	}()

	var fromAck, fromSend, command []time.Duration
	before := 0
	kill := true
	for b.Loop() {
		path := flagPath("prod", "killswitch") + "/enable"
		if kill {
			path = flagPath("prod", "killswitch") + "/kill"
		}
		kill = !kill
		var f flagJSON
		sent := time.Now()
		s.do(b, req{method: "POST", path: path, token: s.admin, body: `{"reason":"bench"}`}).must(b, http.StatusOK, &f)
		acked := time.Now()
		deadline := time.After(feedWithin)
		for {
			lf.mu.Lock()
			at, ok := lf.arrived[f.Version]
			lf.mu.Unlock()
			if ok {
				d := at.Sub(acked)
				if d < 0 {
					before++
					d = 0
				}
				fromAck = append(fromAck, d)
				fromSend = append(fromSend, at.Sub(sent))
				command = append(command, acked.Sub(sent))
				break
			}
			select {
			case <-lf.signal:
			case <-deadline:
				b.Fatalf("version %d never reached the feed", f.Version)
			}
		}
	}
	b.StopTimer()
	report := func(name string, lat []time.Duration) {
		slices.Sort(lat)
		pct := func(p float64) float64 { return float64(lat[int(p*float64(len(lat)-1))].Microseconds()) }
		b.ReportMetric(pct(0.50), name+"-p50-µs")
		b.ReportMetric(pct(0.99), name+"-p99-µs")
	}
	report("ack-to-feed", fromAck)
	report("send-to-feed", fromSend)
	report("send-to-ack", command)
	b.ReportMetric(100*float64(before)/float64(len(fromAck)), "%-before-ack")
}

func TestEventFeedCaps(t *testing.T) {
	s := boot(t, func(c *api.Config) {
		c.Events = c.Reader.(api.EventFeed)
		c.EventsPerToken, c.EventsMaxStreams = 2, 3
	})
	open := func(token string) *http.Response {
		t.Helper()
		ctx, cancel := context.WithCancel(context.Background())
		t.Cleanup(cancel)
		r, err := http.NewRequestWithContext(ctx, "GET", s.url+"/api/v1/events", nil)
		if err != nil {
			t.Fatal(err)
		}
		r.Header.Set("Authorization", "Bearer "+token)
		resp, err := http.DefaultTransport.RoundTrip(r)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { resp.Body.Close() })
		return resp
	}
	var first *http.Response
	for range 2 {
		resp := open(s.reader)
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("feed within the caps: %d", resp.StatusCode)
		}
		first = resp
	}
	over := open(s.reader)
	if over.StatusCode != http.StatusTooManyRequests || over.Header.Get("Retry-After") == "" {
		t.Fatalf("a token's third feed: %d, Retry-After %q; want 429 with Retry-After", over.StatusCode, over.Header.Get("Retry-After"))
	}
	if resp := open(s.writer); resp.StatusCode != http.StatusOK {
		t.Fatalf("another token's feed: %d", resp.StatusCode)
	}
	if resp := open(s.oncall); resp.StatusCode != http.StatusTooManyRequests {
		t.Fatalf("a feed over the server's cap: %d, want 429", resp.StatusCode)
	}
	// A client that leaves frees its place.
	first.Body.Close()
	await.Eventually(t, 5*time.Second, func() bool {
		resp := open(s.oncall)
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	}, "a place frees when a client leaves")
}
