package app

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/interlock-dev/interlock/events"
	"github.com/interlock-dev/interlock/internal/api"
	"github.com/interlock-dev/interlock/internal/await"
	"github.com/interlock-dev/interlock/internal/config"
	"github.com/interlock-dev/interlock/internal/natstest"
)

// Writes across a real NATS outage: a write is done, refused with nothing written
// (store_unavailable), or of unknown outcome with its event id; never answered as failed and
// stored later. A write sent again with the same Idempotency-Key writes nothing new.

const outageToken = "outage-test-admin-token"

// outageServer is `interlock serve` against an external NATS, with a client for its API.
type outageServer struct {
	t      *testing.T
	m      *Main
	base   string
	client *http.Client
	logs   *await.Output
}

func startAgainst(t *testing.T, urls []string, replicas int) *outageServer {
	t.Helper()
	cfg := config.Default()
	cfg.SigningKey = natstest.SigningKeyFile(t)
	cfg.NATSURL = strings.Join(urls, ",")
	cfg.NATSListen = ""
	cfg.Replicas = replicas
	cfg.HTTP = "127.0.0.1:0"
	cfg.AdminToken = outageToken
	logs := &await.Output{}
	logger := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelInfo}))
	// A fresh cluster may not know all its peers yet: placing a 3-replica stream then fails.
	var m *Main
	await.Eventually(t, 20*time.Second, func() bool {
		var err error
		m, err = Start(context.Background(), cfg, logger, io.Discard)
		if err != nil {
			t.Logf("start: %v", err)
		}
		return err == nil
	}, "the server starts")
	s := &outageServer{t: t, m: m, base: "http://" + m.HTTPAddr(), logs: logs,
		client: &http.Client{Transport: &http.Transport{}, Timeout: 60 * time.Second}}
	t.Cleanup(func() {
		s.client.CloseIdleConnections()
		done := make(chan error, 1)
		start := time.Now()
		go func() { done <- m.Close() }()
		select {
		case <-done:
			t.Logf("closed in %v", time.Since(start))

		case <-time.After(30 * time.Second):
			t.Errorf("close did not return within 30s")
		}
		if t.Failed() {
			t.Logf("server logs:\n%s", logs.String())
		}
	})
	await.Eventually(t, 20*time.Second, m.Ready, "ready")
	return s
}

// answer is one API answer.
type answer struct {
	status int
	etag   string
	code   string
	msg    string
	event  string
	body   []byte
	took   time.Duration
}

func (s *outageServer) do(method, path, body string, header map[string]string) answer {
	s.t.Helper()
	req, err := http.NewRequest(method, s.base+path, strings.NewReader(body))
	if err != nil {
		s.t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+outageToken)
	switch {
	case body != "" && method == "PATCH":
		req.Header.Set("Content-Type", "application/merge-patch+json")
	case body != "":
		req.Header.Set("Content-Type", "application/json")
	}
	for k, v := range header {
		req.Header.Set(k, v)
	}
	start := time.Now()
	resp, err := s.client.Do(req)
	if err != nil {
		s.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	a := answer{status: resp.StatusCode, etag: resp.Header.Get("ETag"), took: time.Since(start)}
	a.body, _ = io.ReadAll(resp.Body)
	var e struct {
		Error struct {
			Code, Message, EventID string
		}
	}
	if json.Unmarshal(a.body, &e) == nil {
		a.code, a.msg, a.event = e.Error.Code, e.Error.Message, e.Error.EventID
	}
	return a
}

func (s *outageServer) want(a answer, status int, what string) answer {
	s.t.Helper()
	if a.status != status {
		s.t.Fatalf("%s: %d %s, want %d", what, a.status, a.body, status)
	}
	return a
}

// storedFlagEvents reads every event of the flag from the stream of replicas replicas, with a
// connection of its own.
func storedFlagEvents(t *testing.T, url, key string, replicas int) []events.Event {
	t.Helper()
	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st, err := events.Open(ctx, js, events.StreamConfig{Replicas: replicas})
	if err != nil {
		t.Fatal(err)
	}
	var evs []events.Event
	err = st.Read(ctx, events.Query{Subjects: []string{events.FlagSubject("production", key)}}, func(ev events.Event, err error) error {
		if err != nil {
			return err
		}
		evs = append(evs, ev)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return evs
}

const outageFlag = `{"key":"checkout","kind":"release","variants":{"on":true,"off":false},"defaultVariant":"off","offVariant":"off","enabled":true}`

const outagePath = "/api/v1/environments/production/flags/checkout"

func TestWritesAcrossNATSRestart(t *testing.T) {
	checkOwnGoroutines(t)
	dir := t.TempDir()
	ns := natstest.RunServer(t, natstest.Options{StoreDir: dir})
	url := ns.ClientURL()
	s := startAgainst(t, []string{url}, 1)

	created := s.want(s.do("POST", "/api/v1/environments/production/flags", outageFlag,
		map[string]string{"Idempotency-Key": "create-1"}), http.StatusCreated, "create")
	// The same create again: the original answer, nothing written.
	again := s.want(s.do("POST", "/api/v1/environments/production/flags", outageFlag,
		map[string]string{"Idempotency-Key": "create-1"}), http.StatusCreated, "create again")
	if again.etag != created.etag {
		t.Fatalf("create again: ETag %s, want %s", again.etag, created.etag)
	}

	natstest.Shutdown(ns)
	await.Eventually(t, 10*time.Second, func() bool { return s.m.nc.Status() != nats.CONNECTED }, "the server sees NATS gone")

	patch := map[string]string{"If-Match": created.etag, "Idempotency-Key": "patch-1"}
	a := s.want(s.do("PATCH", outagePath, `{"description":"during the outage"}`, patch), http.StatusServiceUnavailable, "patch during the outage")
	t.Logf("patch during the outage: %d %s in %v: %s", a.status, a.code, a.took, a.msg)
	if a.code != "store_unavailable" || !strings.Contains(a.msg, "event store unavailable") {
		t.Fatalf("patch during the outage: %s %q", a.code, a.msg)
	}
	kill := map[string]string{"Idempotency-Key": "kill-1", "X-Interlock-Reason": "outage drill"}
	a = s.want(s.do("POST", outagePath+"/kill", "", kill), http.StatusServiceUnavailable, "kill during the outage")
	t.Logf("kill during the outage: %d %s in %v: %s", a.status, a.code, a.took, a.msg)
	if a.code != "store_unavailable" {
		t.Fatalf("kill during the outage: %s %q", a.code, a.msg)
	}
	// OFREP keeps evaluating from memory meanwhile.
	ev := s.do("POST", "/ofrep/v1/evaluate/flags/checkout", `{"context":{"targetingKey":"u1"}}`,
		map[string]string{"X-Environment": "production"})
	t.Logf("OFREP during the outage: %d", ev.status)

	natstest.Restart(t, ns)
	await.Eventually(t, 20*time.Second, func() bool { return s.m.nc.Status() == nats.CONNECTED }, "the server reconnects")

	// Nothing of the refused writes reached the stream, then or now.
	if evs := storedFlagEvents(t, url, "checkout", 1); len(evs) != 1 {
		t.Fatalf("%d events after the outage, want the create only: %+v", len(evs), evs)
	}
	// The client retries with the same keys: each is written once.
	var patched answer
	await.Eventually(t, 20*time.Second, func() bool {
		patched = s.do("PATCH", outagePath, `{"description":"during the outage"}`, patch)
		return patched.status == http.StatusOK
	}, "the patch goes through after the outage: %d %s", patched.status, patched.body)
	s.want(s.do("POST", outagePath+"/kill", "", kill), http.StatusOK, "kill after the outage")
	// And again: the patch's If-Match is stale now, the kill finds the flag off; both answer as
	// the first time, and write nothing.
	s.want(s.do("PATCH", outagePath, `{"description":"during the outage"}`, patch), http.StatusOK, "patch sent a third time")
	s.want(s.do("POST", outagePath+"/kill", "", kill), http.StatusOK, "kill sent a third time")
	// Without its key, the stale patch is refused.
	s.want(s.do("PATCH", outagePath, `{"description":"x"}`, map[string]string{"If-Match": created.etag}), http.StatusPreconditionFailed, "stale patch without a key")

	evs := storedFlagEvents(t, url, "checkout", 1)
	types := make([]string, len(evs))
	for i, ev := range evs {
		types[i] = ev.Type
		if d := ev.Stored.Sub(ev.Time); d < 0 || d > time.Second {
			t.Errorf("event %d: time %v, stored %v", ev.Version, ev.Time, ev.Stored)
		}
	}
	if len(evs) != 3 || evs[1].Type != events.TypeFlagUpdated || evs[2].Type != events.TypeFlagKilled {
		t.Fatalf("events %v, want created, updated, killed", types)
	}
	if patched.etag != strconv.Quote("2") && patched.etag != `"2"` {
		t.Logf("patch answered ETag %s", patched.etag)
	}
}

// leaderOf is the server that leads the event stream.
func leaderOf(t *testing.T, servers []*server.Server, js jetstream.JetStream) int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	st, err := js.Stream(ctx, events.DefaultStreamName)
	if err != nil {
		t.Fatal(err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for i, s := range servers {
		if s.Name() == info.Cluster.Leader {
			return i
		}
	}
	t.Fatalf("no server leads the stream (%q)", info.Cluster.Leader)
	return -1
}

func TestWritesAcrossStreamLeaderKill(t *testing.T) {
	checkOwnGoroutines(t)
	servers := natstest.RunCluster(t)
	urls := make([]string, len(servers))
	for i, s := range servers {
		urls[i] = s.ClientURL()
	}
	s := startAgainst(t, urls, 3)
	created := s.want(s.do("POST", "/api/v1/environments/production/flags", outageFlag, nil), http.StatusCreated, "create")

	// One writer patches the flag again and again, each patch under its own key, sent again with
	// that key after a 503 until it is acknowledged, as the CLI does.
	type ack struct {
		n     int
		etag  string
		at    time.Time
		tries int
		took  time.Duration // of the attempt that was acknowledged
	}
	acks := make(chan ack, 1000)
	stop := make(chan struct{})
	statuses := map[string]int{}
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer close(acks)
		etag := created.etag
		for n := 1; ; n++ {
			select {
			case <-stop:
				return
			default:
			}
			h := map[string]string{"If-Match": etag, "Idempotency-Key": "w-" + strconv.Itoa(n)}
			body := `{"description":"n-` + strconv.Itoa(n) + `"}`
			for tries := 1; ; tries++ {
				a := s.do("PATCH", outagePath, body, h)
				statuses[strconv.Itoa(a.status)+" "+a.code]++
				if a.status == http.StatusOK {
					etag = a.etag
					acks <- ack{n: n, etag: a.etag, at: time.Now(), tries: tries, took: a.took}
					break
				}
				if a.status == http.StatusTooManyRequests {
					// Over the admin API's rate limit: wait as told (a few ms), as a client does.
					time.Sleep(20 * time.Millisecond)
					continue
				}
				if a.status != http.StatusServiceUnavailable {
					t.Errorf("patch %d: %d %s", n, a.status, a.body)
					return
				}
				if a.code != "store_unavailable" || tries == 1 {
					t.Logf("patch %d: %d %s (%s) in %v", n, a.status, a.code, a.msg, a.took)
				}
				time.Sleep(20 * time.Millisecond) // the client's pause before it sends again
			}
		}
	}()
	var got []ack
	waitAcks := func(n int) {
		t.Helper()
		deadline := time.After(60 * time.Second)
		for len(got) < n {
			select {
			case a, ok := <-acks:
				if !ok {
					t.Fatalf("the writer stopped after %d acknowledged writes", len(got))
				}
				got = append(got, a)
			case <-deadline:
				t.Fatalf("%d writes acknowledged within 60s, want %d", len(got), n)
			}
		}
	}

	waitAcks(20)
	js := natstest.JetStream(t, servers[(leaderOf(t, servers, natstest.JetStream(t, servers[0]))+1)%3])
	leader := leaderOf(t, servers, js)
	// What the catalog has applied, sampled from the stop on, to tell when it applied what.
	type sample struct {
		at  time.Time
		seq uint64
	}
	samples := make(chan []sample, 1)
	stopSampling := make(chan struct{})
	go func() {
		var ss []sample
		defer func() { samples <- ss }()
		tick := time.NewTicker(2 * time.Millisecond)
		defer tick.Stop()
		for {
			if seq := s.m.catalog.Sequence(); len(ss) == 0 || ss[len(ss)-1].seq != seq {
				ss = append(ss, sample{time.Now(), seq})
			}
			select {
			case <-stopSampling:
				return
			case <-tick.C:
			}
		}
	}()
	logsBefore := len(s.logs.String())
	killed := time.Now()
	killedName := servers[leader].Name()
	natstest.Shutdown(servers[leader])
	t.Logf("stream leader n%d stopped after %d writes", leader+1, len(got))
	var elected time.Duration
	var lastAtElection uint64 // the stream's last sequence when the new leader was seen
	await.Eventually(t, 30*time.Second, func() bool {
		// Short requests: a request the stream cannot answer yet would hide the election.
		ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
		defer cancel()
		st, err := js.Stream(ctx, events.DefaultStreamName)
		if err != nil {
			return false
		}
		info, err := st.Info(ctx)
		if err != nil || info.Cluster == nil || info.Cluster.Leader == "" || info.Cluster.Leader == killedName {
			return false
		}
		elected, lastAtElection = time.Since(killed), info.State.LastSeq
		return true
	}, "a new stream leader")
	for len(got) == 0 || !got[len(got)-1].at.After(killed) {
		waitAcks(len(got) + 1)
	}
	// An acknowledged write was applied by the catalog first (or the log says it was not).
	first := got[len(got)-1].at.Sub(killed)
	t.Logf("new stream leader %v after the leader stopped; first write acknowledged and applied by the catalog %v after (%v after the new leader, %d tries)",
		elected, first, first-elected, got[len(got)-1].tries)
	waitAcks(len(got) + 20)

	// Catch-up: the catalog applies the events the new leader stored. The first of them is
	// after the last sequence seen at the election (a write in flight at the stop may be stored
	// before it).
	ctx := context.Background()
	firstNew := lastAtElection + 1
	await.Eventually(t, 30*time.Second, func() bool { return s.m.catalog.Sequence() >= firstNew }, "the catalog applies sequence %d", firstNew)
	close(stopSampling)
	ss := <-samples
	var applied time.Time
	for _, x := range ss {
		if x.seq >= firstNew {
			applied = x.at
			break
		}
	}
	storedAt, err := s.m.store.StoredAt(ctx, firstNew)
	if err != nil {
		t.Fatal(err)
	}
	// The writes answered before the catalog applied them: each waited the write timeout, no
	// more, and said so.
	waits := strings.Count(s.logs.String()[logsBefore:], "answering a write before the catalog applied it")
	var slowest time.Duration
	for _, l := range strings.Split(s.logs.String()[logsBefore:], "\n") {
		if strings.Contains(l, "answering a write before the catalog applied it") && !strings.Contains(l, "context deadline exceeded") {
			t.Errorf("a write's wait for the catalog ended otherwise than by its timeout: %s", l)
		}
	}
	for _, a := range got {
		if a.at.After(killed) {
			slowest = max(slowest, a.took)
		}
	}
	t.Logf("catalog catch-up: sequence %d (the first the new leader stored) stored %v after the stop, applied %v after the new leader (%v after it was stored); "+
		"%d writes answered before the catalog applied them (each after the %v write timeout); slowest write answer after the stop %v",
		firstNew, storedAt.Sub(killed).Round(time.Millisecond), applied.Sub(killed.Add(elected)).Round(time.Millisecond),
		applied.Sub(storedAt).Round(time.Millisecond), waits, api.DefaultWriteTimeout, slowest.Round(time.Millisecond))
	servers[leader] = natstest.Restart(t, servers[leader])
	t.Logf("n%d back", leader+1)
	waitAcks(len(got) + 20)
	close(stop)
	for a := range acks {
		got = append(got, a)
	}
	<-done
	t.Logf("answers: %v", statuses)
	if n := statuses["500 internal"]; n > 0 {
		t.Errorf("%d answers were 500", n)
	}

	// Read through the server that was not the leader: the read sees every acknowledged write
	// although its consumer may be placed on the restarted server, still catching up.
	evs := storedFlagEvents(t, urls[(leader+1)%3], "checkout", 3)
	if len(evs) != len(got)+1 {
		t.Errorf("%d events for %d acknowledged writes and the create", len(evs), len(got))
	}
	for i, ev := range evs[1:] {
		f, err := ev.Payload()
		if err != nil {
			t.Fatal(err)
		}
		want := "n-" + strconv.Itoa(i+1)
		if u, ok := f.(*events.FlagUpdated); !ok || u.Flag.Description != want {
			t.Errorf("event %d: %+v, want description %s", ev.Version, f, want)
		}
	}
	if strings.Contains(s.logs.String(), "answering a write before the catalog applied it") {
		t.Logf("some writes were answered before the catalog applied them")
	}
}

// closeWithin closes m and logs how long it took; a Close that has not returned after limit is
// a hang, and fails the test.
func closeWithin(t *testing.T, m *Main, limit time.Duration) time.Duration {
	t.Helper()
	done := make(chan struct{})
	start := time.Now()
	go func() {
		defer close(done)
		if err := m.Close(); err != nil {
			t.Logf("close: %v", err)
		}
	}()
	select {
	case <-done:
	case <-time.After(limit):
		t.Fatalf("close has not returned after %v", limit)
	}
	return time.Since(start)
}

func TestCloseWithTheStreamDeleted(t *testing.T) {
	checkOwnGoroutines(t)
	cfg := config.Default()
	cfg.Data = t.TempDir()
	cfg.NATSListen = "none"
	cfg.HTTP = "127.0.0.1:0"
	cfg.AdminToken = outageToken
	logs := &await.Output{}
	logger := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelInfo}))
	m, err := Start(context.Background(), cfg, logger, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = m.Close() })
	await.Eventually(t, 20*time.Second, m.Ready, "ready")

	nc, err := m.ConnectInternal()
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := js.DeleteStream(ctx, events.DefaultStreamName); err != nil {
		t.Fatal(err)
	}
	await.Eventually(t, 30*time.Second, func() bool {
		return strings.Contains(logs.String(), "following the stream stopped")
	}, "the projections notice the stream is gone")
	took := closeWithin(t, m, 30*time.Second)
	t.Logf("closed %v after the stream was deleted", took)
}

func TestCloseWithNATSStopped(t *testing.T) {
	checkOwnGoroutines(t)
	ns := natstest.RunServer(t)
	s := startAgainst(t, []string{ns.ClientURL()}, 1)
	s.want(s.do("POST", "/api/v1/environments/production/flags", outageFlag, nil), http.StatusCreated, "create")
	natstest.Shutdown(ns)
	await.Eventually(t, 10*time.Second, func() bool { return s.m.nc.Status() != nats.CONNECTED }, "the server sees NATS gone")
	a := s.do("POST", outagePath+"/kill", "", map[string]string{"X-Interlock-Reason": "drill"})
	t.Logf("kill with NATS stopped: %d %s in %v", a.status, a.code, a.took)
	s.client.CloseIdleConnections()
	took := closeWithin(t, s.m, 30*time.Second)
	t.Logf("closed %v after NATS stopped", took)
}

func TestPoisonMessageInHistory(t *testing.T) {
	checkOwnGoroutines(t)
	cfg := config.Default()
	cfg.Data = t.TempDir()
	cfg.NATSListen = "none"
	cfg.HTTP = "127.0.0.1:0"
	cfg.AdminToken = outageToken
	m, err := Start(context.Background(), cfg, slog.New(slog.DiscardHandler), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = m.Close() })
	await.Eventually(t, 20*time.Second, m.Ready, "ready")
	s := &outageServer{t: t, m: m, base: "http://" + m.HTTPAddr(), client: &http.Client{Transport: &http.Transport{}}}
	t.Cleanup(s.client.CloseIdleConnections)
	s.want(s.do("POST", "/api/v1/environments/production/flags", outageFlag, nil), http.StatusCreated, "create")

	// A privileged client puts a message that is not an event on the flag's subject.
	nc, err := m.ConnectInternal()
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ack, err := js.Publish(ctx, events.FlagSubject("production", "checkout"), []byte("{not json"))
	if err != nil {
		t.Fatal(err)
	}

	s.want(s.do("POST", outagePath+"/kill", "", map[string]string{"X-Interlock-Reason": "poison drill"}), http.StatusOK, "kill after the poison")
	h := s.want(s.do("GET", outagePath+"/history", "", nil), http.StatusOK, "history")
	var doc struct {
		Entries []struct {
			Sequence   uint64
			Type       string
			Unreadable string
			Time       time.Time
			Stored     time.Time
		}
	}
	if err := json.Unmarshal(h.body, &doc); err != nil {
		t.Fatal(err)
	}
	if len(doc.Entries) != 3 || doc.Entries[1].Type != "unreadable" || doc.Entries[1].Sequence != ack.Sequence ||
		doc.Entries[1].Unreadable == "" || doc.Entries[2].Type != events.TypeFlagKilled {
		t.Fatalf("history: %s", h.body)
	}
	t.Logf("unreadable entry: sequence %d: %s", doc.Entries[1].Sequence, doc.Entries[1].Unreadable)
	for _, e := range []int{0, 2} {
		t.Logf("entry %d: time %v, stored %v (%v apart)", e, doc.Entries[e].Time, doc.Entries[e].Stored, doc.Entries[e].Stored.Sub(doc.Entries[e].Time))
	}
}

// checkOwnGoroutines fails the test if goroutines of Interlock or of the NATS client outlive
// it. The embedded NATS servers' own goroutines are left out: a server stopped while it
// recovers a stream leaves some behind, and the first server of the process starts a timer
// for good.
func checkOwnGoroutines(t *testing.T) {
	t.Cleanup(func() {
		deadline := time.Now().Add(10 * time.Second)
		for {
			left := ownGoroutines()
			if len(left) == 0 {
				return
			}
			if time.Now().After(deadline) {
				t.Errorf("%d goroutines left:\n%s", len(left), strings.Join(left, "\n\n"))
				return
			}
			time.Sleep(20 * time.Millisecond)
		}
	})
}

// ownGoroutines are the stacks of the goroutines running code of Interlock or of the NATS
// client, other than the caller's.
func ownGoroutines() []string {
	buf := make([]byte, 4<<20)
	buf = buf[:runtime.Stack(buf, true)]
	var own []string
	for _, g := range strings.Split(string(buf), "\n\n") {
		if strings.Contains(g, "ownGoroutines") || strings.Contains(g, "testing.tRunner") || strings.Contains(g, "nats-server") {
			continue
		}
		if strings.Contains(g, "github.com/interlock-dev/interlock/") || strings.Contains(g, "github.com/nats-io/nats.go") {
			own = append(own, g)
		}
	}
	return own
}

// TestWritesWithoutAStreamLeader: two of the three servers stop, so the R3 stream has no leader
// (no quorum). Writes answer 503, store_unavailable or, when the publish went out unanswered,
// outcome_unknown — never 500 — and nothing is stored. Once the servers are back, the same
// write sent again with its Idempotency-Key is stored once.
func TestWritesWithoutAStreamLeader(t *testing.T) {
	checkOwnGoroutines(t)
	servers := natstest.RunCluster(t)
	urls := make([]string, len(servers))
	for i, s := range servers {
		urls[i] = s.ClientURL()
	}
	s := startAgainst(t, urls, 3)
	created := s.want(s.do("POST", "/api/v1/environments/production/flags", outageFlag, nil), http.StatusCreated, "create")

	// Keep the server Interlock is connected to; stop the other two.
	var kept int
	for i, srv := range servers {
		if strings.HasSuffix(s.m.nc.ConnectedUrl(), ":"+strconv.Itoa(srv.Addr().(*net.TCPAddr).Port)) {
			kept = i
		}
	}
	var stopped []int
	for i := range servers {
		if i != kept {
			natstest.Shutdown(servers[i])
			stopped = append(stopped, i)
		}
	}
	t.Logf("stopped n%d and n%d; n%d alone has no quorum", stopped[0]+1, stopped[1]+1, kept+1)

	h := map[string]string{"If-Match": created.etag, "Idempotency-Key": "leaderless-1"}
	codes := map[string]int{}
	for range 3 {
		a := s.do("PATCH", outagePath, `{"description":"while leaderless"}`, h)
		if a.status != http.StatusServiceUnavailable || (a.code != "store_unavailable" && a.code != "outcome_unknown") {
			t.Fatalf("a write without a stream leader: %d %s, want 503 store_unavailable or outcome_unknown", a.status, a.body)
		}
		codes[a.code]++
	}
	t.Logf("answers without a leader: %v", codes)

	for _, i := range stopped {
		servers[i] = natstest.Restart(t, servers[i])
	}
	var done answer
	await.Eventually(t, 60*time.Second, func() bool {
		done = s.do("PATCH", outagePath, `{"description":"while leaderless"}`, h)
		return done.status == http.StatusOK
	}, "the same write is taken once the stream has a leader again")
	evs := storedFlagEvents(t, servers[kept].ClientURL(), "checkout", 3)
	if len(evs) != 2 {
		t.Fatalf("%d events stored, want the create and the one write", len(evs))
	}
}
