package perimeter_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/interlock-dev/interlock/events"
	"github.com/interlock-dev/interlock/internal/app"
	"github.com/interlock-dev/interlock/internal/await"
	"github.com/interlock-dev/interlock/internal/config"
	"github.com/interlock-dev/interlock/local"
	"github.com/interlock-dev/interlock/targeting"
)

// wait bounds every asynchronous check: generous, since the machine may be busy.
const wait = 20 * time.Second

const adminToken = "test-admin-token-0123456789"

// server is the real `interlock serve` on :0, its embedded NATS server listening on loopback.
type server struct {
	m *app.Main
}

func serve(t *testing.T) *server {
	t.Helper()
	getenv := func(k string) string {
		if k == "INTERLOCK_ADMIN_TOKEN" {
			return adminToken
		}
		return ""
	}
	cfg, err := config.Load([]string{"--data", t.TempDir(), "--http", "127.0.0.1:0", "--nats-listen", "127.0.0.1:0", "--no-sync"}, getenv, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	m, err := app.Start(context.Background(), cfg, slog.New(slog.DiscardHandler), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	await.Eventually(t, wait, m.Ready, "server ready")
	return &server{m: m}
}

// api sends a request with the admin token and decodes the answer into out; it fails the test
// on any status but want.
func (s *server) api(t *testing.T, method, path, body string, want int, out any) {
	t.Helper()
	req, err := http.NewRequest(method, "http://"+s.m.HTTPAddr()+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+adminToken)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("X-Interlock-Reason", "test")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != want {
		t.Fatalf("%s %s: %d, want %d: %s", method, path, resp.StatusCode, want, data)
	}
	if out != nil {
		if err := json.Unmarshal(data, out); err != nil {
			t.Fatalf("%s %s: %v", method, path, err)
		}
	}
}

// token issues a token and returns it.
func (s *server) token(t *testing.T, name, role, env string) string {
	t.Helper()
	body, _ := json.Marshal(map[string]string{"name": name, "role": role, "environment": env})
	var issued struct {
		Token string `json:"token"`
	}
	s.api(t, "POST", "/api/v1/tokens", string(body), http.StatusCreated, &issued)
	return issued.Token
}

func (s *server) createFlag(t *testing.T, env, key string) {
	t.Helper()
	body := `{"key":"` + key + `","kind":"release","variants":{"on":true,"off":false},"defaultVariant":"on","offVariant":"off","enabled":true}`
	s.api(t, "POST", "/api/v1/environments/"+env+"/flags", body, http.StatusCreated, nil)
}

func (s *server) kill(t *testing.T, env, key string) {
	t.Helper()
	s.api(t, "POST", "/api/v1/environments/"+env+"/flags/"+key+"/kill", `{"reason":"test"}`, http.StatusOK, nil)
}

// client is a NATS connection of a token holder that records the errors the server sends it.
type client struct {
	nc *nats.Conn
	js jetstream.JetStream

	mu   sync.Mutex
	errs []error
}

// connect connects with opts, never reconnecting, and records asynchronous errors.
func (s *server) connect(t *testing.T, opts ...nats.Option) (*client, error) {
	t.Helper()
	c := &client{}
	opts = append([]nats.Option{
		nats.MaxReconnects(0),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
			c.mu.Lock()
			c.errs = append(c.errs, err)
			c.mu.Unlock()
		}),
	}, opts...)
	nc, err := nats.Connect(s.m.NATSURL(), opts...)
	if err != nil {
		return nil, err
	}
	t.Cleanup(nc.Close)
	c.nc = nc
	if c.js, err = jetstream.New(nc); err != nil {
		t.Fatal(err)
	}
	return c, nil
}

func (s *server) mustConnect(t *testing.T, token string) *client {
	t.Helper()
	c, err := s.connect(t, events.TokenAuth(token))
	if err != nil {
		t.Fatalf("connect with a token: %v", err)
	}
	return c
}

// refused waits until the server has told c that it may not publish (or subscribe) on subject;
// a "*" token of subject stands for any one token.
func (c *client) refused(t *testing.T, subject string) {
	t.Helper()
	await.Eventually(t, wait, func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		for _, err := range c.errs {
			_, quoted, ok := strings.Cut(err.Error(), `"`)
			if errors.Is(err, nats.ErrPermissionViolation) && ok && sameSubject(subject, strings.TrimSuffix(quoted, `"`)) {
				return true
			}
		}
		return false
	}, "a permissions violation for %s", subject)
}

func sameSubject(pattern, subject string) bool {
	p, s := strings.Split(pattern, "."), strings.Split(subject, ".")
	if len(p) != len(s) {
		return false
	}
	for i := range p {
		if p[i] != "*" && p[i] != s[i] {
			return false
		}
	}
	return true
}

// short is a context for a call the server is expected to refuse: the refusal comes as an
// asynchronous error, and the call itself then only ends with its context.
func short(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func TestNoCredentialsRefused(t *testing.T) {
	s := serve(t)
	for name, opt := range map[string]nats.Option{
		"none":                    func(*nats.Options) error { return nil },
		"bogus token":             nats.Token("ilk_not-a-token-anybody-issued"),
		"bogus user and password": nats.UserInfo("admin", "guess-guess-guess"),
		"empty token":             nats.Token(""),
	} {
		t.Run(name, func(t *testing.T) {
			_, err := s.connect(t, opt)
			if !errors.Is(err, nats.ErrAuthorization) {
				t.Fatalf("connect: %v, want an authorization violation", err)
			}
		})
	}
	t.Run("token as password", func(t *testing.T) {
		token := s.token(t, "by-password", "reader", "")
		if _, err := s.connect(t, nats.UserInfo("any-name", token)); err != nil {
			t.Fatalf("connect with the token as password: %v", err)
		}
	})
}

// TestReaderCannotWrite turns each attack on the event store into a test: a token holder, of any
// role, publishes a forged event, writes a token into the token bucket, deletes, changes or
// purges the stream, reads the guard's buckets. The server refuses each, and Interlock still
// works afterwards.
func TestReaderCannotWrite(t *testing.T) {
	s := serve(t)
	s.createFlag(t, "production", "checkout")
	for _, role := range []string{"reader", "admin"} {
		t.Run(role, func(t *testing.T) {
			c := s.mustConnect(t, s.token(t, "attacker-"+role, role, ""))
			ev, err := events.NewEvent(events.TypeFlagKilled, "production", "checkout", events.FlagKilled{})
			if err != nil {
				t.Fatal(err)
			}
			ev.Actor, ev.Version = "mallory", 2
			msg := ev.Msg()
			if _, err := c.js.PublishMsg(short(t), msg); err == nil {
				t.Fatal("a forged event was stored")
			}
			c.refused(t, msg.Subject)

			if _, err := c.js.KeyValue(short(t), "interlock_tokens"); err == nil {
				t.Fatal("the token bucket was opened")
			}
			c.refused(t, "$JS.API.STREAM.INFO.KV_interlock_tokens")
			key := strings.Repeat("ab", 32)
			if err := c.nc.Publish("$KV.interlock_tokens."+key, []byte(`{"name":"x","role":"admin"}`)); err != nil {
				t.Fatal(err)
			}
			c.refused(t, "$KV.interlock_tokens."+key)
			if _, err := c.nc.Request("$JS.API.DIRECT.GET.KV_interlock_tokens.$KV.interlock_tokens."+key, nil, time.Second); err == nil {
				t.Fatal("a token entry was read")
			}
			c.refused(t, "$JS.API.DIRECT.GET.KV_interlock_tokens.$KV.interlock_tokens."+key)
			for _, bucket := range []string{"KV_interlock_guard_lease", "KV_interlock_guard_status"} {
				if _, err := c.js.Stream(short(t), bucket); err == nil {
					t.Fatalf("bucket %s was opened", bucket)
				}
				c.refused(t, "$JS.API.STREAM.INFO."+bucket)
			}

			if err := c.js.DeleteStream(short(t), events.DefaultStreamName); err == nil {
				t.Fatal("the stream was deleted")
			}
			c.refused(t, "$JS.API.STREAM.DELETE."+events.DefaultStreamName)
			if _, err := c.js.UpdateStream(short(t), jetstream.StreamConfig{Name: events.DefaultStreamName, Subjects: []string{"interlock.>"}, MaxMsgs: 1}); err == nil {
				t.Fatal("the stream was changed")
			}
			c.refused(t, "$JS.API.STREAM.UPDATE."+events.DefaultStreamName)
			if _, err := c.nc.Request("$JS.API.STREAM.PURGE."+events.DefaultStreamName, nil, time.Second); err == nil {
				t.Fatal("the stream was purged")
			}
			c.refused(t, "$JS.API.STREAM.PURGE."+events.DefaultStreamName)
			if _, err := c.js.CreateStream(short(t), jetstream.StreamConfig{Name: "SHADOW", Subjects: []string{"shadow.>"}}); err == nil {
				t.Fatal("a stream was created")
			}
			c.refused(t, "$JS.API.STREAM.CREATE.SHADOW")
			if _, err := c.nc.SubscribeSync("_INBOX.>"); err != nil {
				t.Fatal(err)
			}
			c.refused(t, "_INBOX.>")
		})
	}

	// Nothing of that reached the stream: the flag is as the API left it, and a kill through the
	// API still works.
	var flag struct {
		Version uint64 `json:"version"`
		Enabled bool   `json:"enabled"`
	}
	s.api(t, "GET", "/api/v1/environments/production/flags/checkout", "", http.StatusOK, &flag)
	if flag.Version != 1 || !flag.Enabled {
		t.Fatalf("flag after the attacks = %+v, want version 1, enabled", flag)
	}
	s.kill(t, "production", "checkout")
}

// TestScopedReader: a reader scoped to staging follows staging and nothing else.
func TestScopedReader(t *testing.T) {
	s := serve(t)
	s.createFlag(t, "staging", "search")
	s.createFlag(t, "production", "search")
	c := s.mustConnect(t, s.token(t, "staging-reader", "reader", "staging"))

	cons, err := c.js.OrderedConsumer(t.Context(), events.DefaultStreamName, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{events.EnvironmentSubjects("staging")},
	})
	if err != nil {
		t.Fatalf("ordered consumer on staging: %v", err)
	}
	msg, err := cons.Next(jetstream.FetchMaxWait(wait))
	if err != nil {
		t.Fatalf("next staging event: %v", err)
	}
	if msg.Subject() != events.FlagSubject("staging", "search") {
		t.Fatalf("got an event on %s", msg.Subject())
	}

	for _, filter := range []string{events.EnvironmentSubjects("production"), events.AllSubjects, "interlock.*.flag.search", events.FlagSubject("production", "search")} {
		_, err := c.js.OrderedConsumer(short(t), events.DefaultStreamName, jetstream.OrderedConsumerConfig{FilterSubjects: []string{filter}})
		if err == nil {
			t.Fatalf("an ordered consumer on %s was created", filter)
		}
		c.refused(t, "$JS.API.CONSUMER.CREATE."+events.DefaultStreamName+".*."+filter)
	}
	// Several filters travel in the request only: refused, whatever they are.
	_, err = c.js.CreateConsumer(short(t), events.DefaultStreamName, jetstream.ConsumerConfig{
		FilterSubjects: []string{events.EnvironmentSubjects("staging"), events.EnvironmentSubjects("production")},
	})
	if err == nil {
		t.Fatal("a consumer with two filters was created")
	}
	subject := "$JS.API.DIRECT.GET." + events.DefaultStreamName + "." + events.EnvironmentSubjects("production")
	if _, err := c.nc.Request(subject, nil, time.Second); err == nil {
		t.Fatal("the last production event was read")
	}
	c.refused(t, subject)
	if err := c.nc.Publish(local.PresenceSubject("production", "spy"), []byte("{}")); err != nil {
		t.Fatal(err)
	}
	c.refused(t, local.PresenceSubject("production", "spy"))
}

// TestLocalClientWithToken: the in-process client of another service follows its environment
// with a scoped reader token end to end: a cold start from the snapshot, then every new event,
// and heartbeats the server counts.
func TestLocalClientWithToken(t *testing.T) {
	s := serve(t)
	s.createFlag(t, "staging", "search")
	s.createFlag(t, "staging", "banner")
	if err := s.m.FlushSnapshots(t.Context()); err != nil {
		t.Fatal(err)
	}
	token := s.token(t, "search-api", "reader", "staging")
	nc, err := nats.Connect(s.m.NATSURL(), events.TokenAuth(token), nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	c, err := local.New(nc, local.Config{Environment: "staging", ID: "search-api-1", HeartbeatInterval: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("client: %v", err)
		}
		c.Close()
	})
	waitCtx, stop := context.WithTimeout(t.Context(), wait)
	defer stop()
	if err := c.WaitReady(waitCtx); err != nil {
		t.Fatal(err)
	}
	if st := c.Stats(); st.SnapshotSequence == 0 {
		t.Errorf("stats %+v: the client did not start from the snapshot", st)
	}
	if v := variant(c, "search"); v != "on" {
		t.Fatalf("search serves %q before the kill", v)
	}
	s.kill(t, "staging", "search")
	await.Eventually(t, wait, func() bool {
		return variant(c, "search") == "off"
	}, "the kill reaches the client")
	await.Eventually(t, wait, func() bool {
		var subs struct {
			Subscribers []struct {
				ID       string `json:"id"`
				Sequence uint64 `json:"sequence"`
			} `json:"subscribers"`
		}
		s.api(t, "GET", "/api/v1/environments/staging/subscribers", "", http.StatusOK, &subs)
		for _, sub := range subs.Subscribers {
			if sub.ID == "search-api-1" && sub.Sequence == c.Sequence() {
				return true
			}
		}
		return false
	}, "the server counts the client's heartbeats")
	if c.Stale() {
		t.Error("the client is stale")
	}
}

// TestRevokedTokenClosed: revoking a token closes its NATS connections, and the token cannot
// connect again.
func TestRevokedTokenClosed(t *testing.T) {
	s := serve(t)
	token := s.token(t, "leaver", "reader", "")
	keep := s.mustConnect(t, s.token(t, "stayer", "reader", ""))
	c := s.mustConnect(t, token)
	s.api(t, "DELETE", "/api/v1/tokens/leaver", "", http.StatusNoContent, nil)
	await.Eventually(t, wait, c.nc.IsClosed, "the revoked token's connection is closed")
	if _, err := s.connect(t, events.TokenAuth(token)); !errors.Is(err, nats.ErrAuthorization) {
		t.Fatalf("connect with the revoked token: %v, want an authorization violation", err)
	}
	if !keep.nc.IsConnected() {
		t.Fatal("another token's connection was closed too")
	}
}

// TestDurableOwnership: a token's durables are named after it; one it does not own is deleted
// and its connection closed.
func TestDurableOwnership(t *testing.T) {
	s := serve(t)
	s.createFlag(t, "staging", "search")
	c := s.mustConnect(t, s.token(t, "audit", "reader", "staging"))
	cfg := func(name string) jetstream.ConsumerConfig {
		return jetstream.ConsumerConfig{Durable: name, FilterSubject: events.EnvironmentSubjects("staging"), AckPolicy: jetstream.AckExplicitPolicy}
	}
	for _, name := range []string{"audit", "audit@printer"} {
		cons, err := c.js.CreateOrUpdateConsumer(t.Context(), events.DefaultStreamName, cfg(name))
		if err != nil {
			t.Fatalf("durable %s: %v", name, err)
		}
		batch, err := cons.Fetch(1, jetstream.FetchMaxWait(wait))
		if err != nil {
			t.Fatal(err)
		}
		for m := range batch.Messages() {
			if err := m.Ack(); err != nil {
				t.Fatalf("ack on %s: %v", name, err)
			}
		}
	}
	if !c.nc.IsConnected() {
		t.Fatal("the owner of its durables was disconnected")
	}

	// The warden may close the connection before the answer to the create gets back to it.
	_, err := c.js.CreateOrUpdateConsumer(t.Context(), events.DefaultStreamName, cfg("billing"))
	if err != nil && !errors.Is(err, nats.ErrConnectionClosed) {
		t.Fatalf("durable billing: %v", err)
	}
	await.Eventually(t, wait, c.nc.IsClosed, "the connection that made another's durable is closed")
	other := s.mustConnect(t, s.token(t, "billing", "reader", ""))
	await.Eventually(t, wait, func() bool {
		_, err := other.js.Consumer(t.Context(), events.DefaultStreamName, "billing")
		return errors.Is(err, jetstream.ErrConsumerNotFound)
	}, "the intruder's durable is deleted")
}

func TestPermissionsDoNotLeakBetweenTokens(t *testing.T) {
	s := serve(t)
	a := s.mustConnect(t, s.token(t, "a", "reader", ""))
	b := s.mustConnect(t, s.token(t, "b", "reader", ""))
	if _, err := b.nc.SubscribeSync(events.InboxPrefix("not b's token") + ".>"); err != nil {
		t.Fatal(err)
	}
	b.refused(t, events.InboxPrefix("not b's token")+".>")
	// a's own inbox works: a request through the JetStream API comes back.
	if _, err := a.js.AccountInfo(t.Context()); err != nil {
		t.Fatalf("account info: %v", err)
	}
	if !strings.HasPrefix(a.nc.NewRespInbox(), events.InboxPrefix("")[:len("_INBOX.ilk")]) {
		t.Fatalf("inbox %s", a.nc.NewRespInbox())
	}
}

// variant is what c serves for key.
func variant(c *local.Client, key string) string {
	ev := c.Evaluate(key, &targeting.EvalContext{TargetingKey: "u1"})
	if ev.Variant == nil {
		return ""
	}
	return ev.Variant.Name
}
