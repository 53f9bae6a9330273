package openfeature_test

import (
	"context"
	"encoding/json"
	"net"
	"reflect"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	of "github.com/open-feature/go-sdk/openfeature"
	"github.com/open-feature/go-sdk/openfeature/memprovider"

	"github.com/interlock-dev/interlock/events"
	"github.com/interlock-dev/interlock/internal/await"
	"github.com/interlock-dev/interlock/internal/command"
	"github.com/interlock-dev/interlock/internal/natstest"
	"github.com/interlock-dev/interlock/local"
	"github.com/interlock-dev/interlock/local/openfeature"
	"github.com/interlock-dev/interlock/projections"
)

const wait = 20 * time.Second

var meta = command.Meta{Actor: "test", Reason: "testing"}

type system struct {
	srv   *server.Server
	js    jetstream.JetStream
	store *events.Store
	cmds  *command.Service
}

func boot(t testing.TB, opts ...natstest.Options) *system {
	t.Helper()
	return attach(t, natstest.RunServer(t, opts...))
}

func attach(t testing.TB, srv *server.Server) *system {
	t.Helper()
	js := natstest.JetStream(t, srv)
	store, err := events.Open(context.Background(), js, events.StreamConfig{})
	if err != nil {
		t.Fatal(err)
	}
	return &system{srv: srv, js: js, store: store, cmds: command.New(store, nil)}
}

func variants(kv ...string) map[string]json.RawMessage {
	m := make(map[string]json.RawMessage)
	for i := 0; i < len(kv); i += 2 {
		m[kv[i]] = json.RawMessage(kv[i+1])
	}
	return m
}

// flags creates one flag of every type in prod.
func (s *system) flags(t testing.TB) {
	t.Helper()
	create := func(key string, cfg events.FlagConfig) {
		if _, err := s.cmds.Handle(context.Background(), command.CreateFlag{Meta: meta, Env: "prod", Key: key, Config: cfg}); err != nil {
			t.Fatalf("create %s: %v", key, err)
		}
	}
	create("dark-mode", events.FlagConfig{Kind: events.KindRelease, Variants: variants("on", "true", "off", "false"), DefaultVariant: "on", OffVariant: "off", Enabled: true})
	create("old-ui", events.FlagConfig{Kind: events.KindRelease, Variants: variants("on", "true", "off", "false"), DefaultVariant: "on", OffVariant: "off"})
	create("color", events.FlagConfig{
		Kind: events.KindExperiment, Variants: variants("red", `"red"`, "blue", `"blue"`), DefaultVariant: "red", OffVariant: "red", Enabled: true,
		Rules: []events.Rule{{Name: "beta", Conditions: []events.Condition{{Attribute: "role", Operator: "eq", Values: []any{"beta"}}}, Serve: events.Serve{Variant: "blue"}}},
	})
	create("ttl", events.FlagConfig{Kind: events.KindConfig, Variants: variants("short", "30", "long", "300"), DefaultVariant: "short", OffVariant: "long", Enabled: true})
	create("ratio", events.FlagConfig{Kind: events.KindConfig, Variants: variants("low", "0.25", "high", "0.75"), DefaultVariant: "low", OffVariant: "low", Enabled: true})
	create("retry", events.FlagConfig{Kind: events.KindConfig, Variants: variants("std", `{"retries":3,"backoff":["1s","2s"]}`, "none", `{"retries":0}`), DefaultVariant: "std", OffVariant: "none", Enabled: true})
	create("ramp", events.FlagConfig{
		Kind: events.KindRelease, Variants: variants("on", "true", "off", "false"), DefaultVariant: "off", OffVariant: "off", Enabled: true,
		DefaultServe: &events.Serve{Split: map[string]int{"on": 50, "off": 50}},
	})
}

// run makes a client of prod and runs it until the test ends.
func run(t testing.TB, nc *nats.Conn, cfg local.Config) *local.Client {
	t.Helper()
	cfg.Environment = "prod"
	c, err := local.New(nc, cfg)
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
	return c
}

// register sets p as the provider of a domain of its own and waits for it to be ready; it
// returns the SDK client of that domain.
func register(t testing.TB, p *openfeature.Provider) *of.Client {
	t.Helper()
	domain := t.Name()
	if err := of.SetNamedProviderAndWait(domain, p); err != nil {
		t.Fatalf("set provider: %v", err)
	}
	t.Cleanup(func() {
		if err := of.SetNamedProviderAndWait(domain, of.NoopProvider{}); err != nil {
			t.Errorf("reset provider: %v", err)
		}
		p.Shutdown()
	})
	return of.NewClient(domain)
}

func connect(t testing.TB, srv *server.Server) *nats.Conn {
	return natstest.Connect(t, srv, nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond))
}

func TestEvaluationThroughTheSDK(t *testing.T) {
	s := boot(t)
	s.flags(t)
	c := run(t, connect(t, s.srv), local.Config{NoPresence: true})
	p, err := openfeature.New(c, openfeature.Config{})
	if err != nil {
		t.Fatal(err)
	}
	client := register(t, p)
	ctx := context.Background()
	beta := of.NewEvaluationContext("user-1", map[string]any{"role": "beta"})
	anon := of.NewEvaluationContext("", nil)

	type result struct {
		value   any
		variant string
		reason  of.Reason
		code    of.ErrorCode
		version int64 // 0: no metadata
	}
	cases := []struct {
		name string
		eval func() (any, of.EvaluationDetails, error)
		want result
	}{
		{"boolean", func() (any, of.EvaluationDetails, error) {
			d, err := client.BooleanValueDetails(ctx, "dark-mode", false, beta)
			return d.Value, d.EvaluationDetails, err
		}, result{true, "on", of.StaticReason, "", 1}},
		{"boolean disabled", func() (any, of.EvaluationDetails, error) {
			d, err := client.BooleanValueDetails(ctx, "old-ui", true, beta)
			return d.Value, d.EvaluationDetails, err
		}, result{false, "off", of.DisabledReason, "", 1}},
		{"string by rule", func() (any, of.EvaluationDetails, error) {
			d, err := client.StringValueDetails(ctx, "color", "none", beta)
			return d.Value, d.EvaluationDetails, err
		}, result{"blue", "blue", of.TargetingMatchReason, "", 1}},
		{"string default", func() (any, of.EvaluationDetails, error) {
			d, err := client.StringValueDetails(ctx, "color", "none", anon)
			return d.Value, d.EvaluationDetails, err
		}, result{"red", "red", of.DefaultReason, "", 1}},
		{"int", func() (any, of.EvaluationDetails, error) {
			d, err := client.IntValueDetails(ctx, "ttl", 1, beta)
			return d.Value, d.EvaluationDetails, err
		}, result{int64(30), "short", of.StaticReason, "", 1}},
		{"float of a whole number", func() (any, of.EvaluationDetails, error) {
			d, err := client.FloatValueDetails(ctx, "ttl", 1, beta)
			return d.Value, d.EvaluationDetails, err
		}, result{30.0, "short", of.StaticReason, "", 1}},
		{"float", func() (any, of.EvaluationDetails, error) {
			d, err := client.FloatValueDetails(ctx, "ratio", 1, beta)
			return d.Value, d.EvaluationDetails, err
		}, result{0.25, "low", of.StaticReason, "", 1}},
		{"int of a fraction", func() (any, of.EvaluationDetails, error) {
			d, err := client.IntValueDetails(ctx, "ratio", 7, beta)
			return d.Value, d.EvaluationDetails, err
		}, result{int64(7), "", of.ErrorReason, of.TypeMismatchCode, 1}},
		{"object", func() (any, of.EvaluationDetails, error) {
			d, err := client.ObjectValueDetails(ctx, "retry", nil, beta)
			return d.Value, d.EvaluationDetails, err
		}, result{map[string]any{"retries": 3.0, "backoff": []any{"1s", "2s"}}, "std", of.StaticReason, "", 1}},
		{"split", func() (any, of.EvaluationDetails, error) {
			d, err := client.BooleanValueDetails(ctx, "ramp", false, of.NewEvaluationContext("user-42", nil))
			return d.Reason, d.EvaluationDetails, err
		}, result{of.SplitReason, "", of.SplitReason, "", 1}},
		{"split without a targeting key", func() (any, of.EvaluationDetails, error) {
			d, err := client.BooleanValueDetails(ctx, "ramp", true, anon)
			return d.Value, d.EvaluationDetails, err
		}, result{true, "", of.ErrorReason, of.TargetingKeyMissingCode, 1}},
		{"missing flag", func() (any, of.EvaluationDetails, error) {
			d, err := client.BooleanValueDetails(ctx, "no-such-flag", true, beta)
			return d.Value, d.EvaluationDetails, err
		}, result{true, "", of.ErrorReason, of.FlagNotFoundCode, 0}},
		{"boolean asked of a string flag", func() (any, of.EvaluationDetails, error) {
			d, err := client.BooleanValueDetails(ctx, "color", true, beta)
			return d.Value, d.EvaluationDetails, err
		}, result{true, "", of.ErrorReason, of.TypeMismatchCode, 1}},
		{"string asked of a boolean flag", func() (any, of.EvaluationDetails, error) {
			d, err := client.StringValueDetails(ctx, "dark-mode", "x", beta)
			return d.Value, d.EvaluationDetails, err
		}, result{"x", "", of.ErrorReason, of.TypeMismatchCode, 1}},
		{"object asked of a number flag", func() (any, of.EvaluationDetails, error) {
			d, err := client.ObjectValueDetails(ctx, "ttl", "dflt", beta)
			return d.Value, d.EvaluationDetails, err
		}, result{"dflt", "", of.ErrorReason, of.TypeMismatchCode, 1}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			value, d, err := tc.eval()
			if (err != nil) != (tc.want.code != "") {
				t.Errorf("error %v, want code %q", err, tc.want.code)
			}
			if tc.name == "split" {
				if d.Variant != "on" && d.Variant != "off" {
					t.Errorf("split served variant %q", d.Variant)
				}
			} else if d.Variant != tc.want.variant {
				t.Errorf("variant %q, want %q", d.Variant, tc.want.variant)
			}
			if !reflect.DeepEqual(value, tc.want.value) {
				t.Errorf("value %#v, want %#v", value, tc.want.value)
			}
			if d.Reason != tc.want.reason || d.ErrorCode != tc.want.code {
				t.Errorf("reason %s code %q (%s), want %s %q", d.Reason, d.ErrorCode, d.ErrorMessage, tc.want.reason, tc.want.code)
			}
			version, verr := d.FlagMetadata.GetInt("version")
			switch {
			case tc.want.version == 0 && verr == nil:
				t.Errorf("metadata version %d on a missing flag", version)
			case tc.want.version != 0 && (verr != nil || version != tc.want.version):
				t.Errorf("metadata version %d (%v), want %d", version, verr, tc.want.version)
			}
			if env, _ := d.FlagMetadata.GetString("environment"); tc.want.version != 0 && env != "prod" {
				t.Errorf("metadata environment %q", env)
			}
		})
	}

	// The object value is the caller's: changing it changes nothing for the next caller.
	v, _ := client.ObjectValue(ctx, "retry", nil, beta)
	v.(map[string]any)["retries"] = 99.0
	v.(map[string]any)["backoff"].([]any)[0] = "changed"
	again, _ := client.ObjectValue(ctx, "retry", nil, beta)
	if want := (map[string]any{"retries": 3.0, "backoff": []any{"1s", "2s"}}); !reflect.DeepEqual(again, want) {
		t.Fatalf("after a caller changed its copy: %v", again)
	}

	// A change reaches evaluations, with the new version in the metadata.
	killed, err := flagOf(s.cmds.Handle(ctx, command.KillFlag{Meta: meta, Env: "prod", Key: "dark-mode"}))
	if err != nil {
		t.Fatal(err)
	}
	waitCtx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	if err := c.WaitSequence(waitCtx, killed.Sequence); err != nil {
		t.Fatal(err)
	}
	d, err := client.BooleanValueDetails(ctx, "dark-mode", true, beta)
	if err != nil || d.Value || d.Reason != of.DisabledReason {
		t.Fatalf("after the kill: %v %s %v", d.Value, d.Reason, err)
	}
	if v, _ := d.FlagMetadata.GetInt("version"); v != int64(killed.Version) {
		t.Fatalf("metadata version %d after the kill, want %d", v, killed.Version)
	}
}

// recorder keeps the events the SDK hands to a client's handlers.
type recorder struct {
	mu   sync.Mutex
	list []of.EventDetails
	typ  []of.EventType
}

func (r *recorder) handle(c *of.Client, types ...of.EventType) {
	for _, typ := range types {
		cb := func(d of.EventDetails) {
			r.mu.Lock()
			r.list = append(r.list, d)
			r.typ = append(r.typ, typ)
			r.mu.Unlock()
		}
		c.AddHandler(typ, &cb)
	}
}

func (r *recorder) count(typ of.EventType) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, x := range r.typ {
		if x == typ {
			n++
		}
	}
	return n
}

// changed is the union of the flag keys of every configuration change seen.
func (r *recorder) changed() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var keys []string
	for i, x := range r.typ {
		if x == of.ProviderConfigChange {
			keys = append(keys, r.list[i].FlagChanges...)
		}
	}
	slices.Sort(keys)
	return slices.Compact(keys)
}

func TestProviderEvents(t *testing.T) {
	dir := t.TempDir()
	s := boot(t, natstest.Options{StoreDir: dir})
	port := s.srv.Addr().(*net.TCPAddr).Port
	s.flags(t)
	c := run(t, connect(t, s.srv), local.Config{NoPresence: true, HeartbeatInterval: 100 * time.Millisecond, StaleAfter: time.Second})
	p, err := openfeature.New(c, openfeature.Config{})
	if err != nil {
		t.Fatal(err)
	}
	client := register(t, p)
	// Handlers registered once the provider is ready get PROVIDER_READY at once (the SDK does not
	// hand the READY of a synchronous init to the handlers of a named domain).
	var rec recorder
	rec.handle(client, of.ProviderReady, of.ProviderConfigChange, of.ProviderStale, of.ProviderError)
	await.Eventually(t, wait, func() bool { return rec.count(of.ProviderReady) == 1 }, "PROVIDER_READY")
	if client.State() != of.ReadyState {
		t.Fatalf("state %s after init", client.State())
	}

	ctx := context.Background()
	if _, err := s.cmds.Handle(ctx, command.KillFlag{Meta: meta, Env: "prod", Key: "dark-mode"}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.cmds.Handle(ctx, command.EnableFlag{Meta: meta, Env: "prod", Key: "old-ui"}); err != nil {
		t.Fatal(err)
	}
	await.Eventually(t, wait, func() bool { return slices.Equal(rec.changed(), []string{"dark-mode", "old-ui"}) },
		"PROVIDER_CONFIGURATION_CHANGED naming dark-mode and old-ui (got %v)", rec.changed())

	natstest.Shutdown(s.srv)
	await.Eventually(t, wait, func() bool { return rec.count(of.ProviderStale) == 1 }, "PROVIDER_STALE with the server down")
	await.Eventually(t, wait, func() bool { return client.State() == of.StaleState }, "state STALE")
	if v, err := client.BooleanValue(ctx, "dark-mode", true, of.NewEvaluationContext("u", nil)); err != nil || v {
		t.Fatalf("while stale: %v, %v; want the last-known false", v, err)
	}

	srv := restart(t, dir, port)
	await.Eventually(t, wait, func() bool { return rec.count(of.ProviderReady) == 2 }, "PROVIDER_READY once the server is back")
	await.Eventually(t, wait, func() bool { return client.State() == of.ReadyState }, "state READY")

	js := natstest.JetStream(t, srv)
	if err := js.DeleteStream(ctx, events.DefaultStreamName); err != nil {
		t.Fatal(err)
	}
	await.Eventually(t, wait, func() bool { return rec.count(of.ProviderError) == 1 }, "PROVIDER_ERROR once the stream is gone")
	await.Eventually(t, wait, func() bool { return client.State() == of.ErrorState }, "state ERROR")
}

func restart(t *testing.T, dir string, port int) *server.Server {
	t.Helper()
	srv, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: port, JetStream: true, StoreDir: dir, NoSigs: true, NoLog: true})
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

// TestInitTimeout: a provider whose client is not ready in time fails Init, then becomes ready
// (and says so) once the client is.
func TestInitTimeout(t *testing.T) {
	s := boot(t)
	s.flags(t)
	c, err := local.New(connect(t, s.srv), local.Config{Environment: "prod", NoPresence: true})
	if err != nil {
		t.Fatal(err)
	}
	p, err := openfeature.New(c, openfeature.Config{InitTimeout: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	domain := t.Name()
	client := of.NewClient(domain)
	var rec recorder
	rec.handle(client, of.ProviderReady, of.ProviderError)
	// Set without waiting, as a service that must start without its flags does: the SDK reports
	// the failed init as an event and keeps listening to the provider.
	if err := of.SetNamedProvider(domain, p); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = of.SetNamedProviderAndWait(domain, of.NoopProvider{})
		p.Shutdown()
	})
	await.Eventually(t, wait, func() bool { return client.State() == of.ErrorState }, "state ERROR after init timed out")

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	}()
	await.Eventually(t, wait, func() bool { return rec.count(of.ProviderReady) == 1 }, "PROVIDER_READY once the client is ready")
	await.Eventually(t, wait, func() bool { return client.State() == of.ReadyState }, "state READY")
	if v, err := client.BooleanValue(context.Background(), "dark-mode", false, of.NewEvaluationContext("u", nil)); err != nil || !v {
		t.Fatalf("after becoming ready: %v, %v", v, err)
	}
}

func TestNewRefusesBadConfig(t *testing.T) {
	if _, err := openfeature.New(nil, openfeature.Config{}); err == nil {
		t.Error("New accepted a nil client")
	}
	s := boot(t)
	c, err := local.New(connect(t, s.srv), local.Config{Environment: "prod"})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := openfeature.New(c, openfeature.Config{InitTimeout: -1, EventBuffer: -1}); err == nil {
		t.Error("New accepted negative settings")
	}
}

// BenchmarkProviderBoolean is an evaluation through the real SDK client: what a service pays for
// client.BooleanValue with the in-process provider.
func BenchmarkProviderBoolean(b *testing.B) {
	s := boot(b)
	s.flags(b)
	c := run(b, connect(b, s.srv), local.Config{NoPresence: true})
	p, err := openfeature.New(c, openfeature.Config{})
	if err != nil {
		b.Fatal(err)
	}
	client := register(b, p)
	ctx := context.Background()
	evalCtx := of.NewEvaluationContext("user-1", map[string]any{"role": "beta"})
	b.Run("sdk-static", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if !client.Boolean(ctx, "dark-mode", false, evalCtx) {
				b.Fatal("dark-mode is off")
			}
		}
	})
	b.Run("sdk-split", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			client.Boolean(ctx, "ramp", false, evalCtx)
		}
	})
	// The same call with the SDK's own in-memory provider: what the SDK costs by itself.
	mem := memprovider.NewInMemoryProvider(map[string]memprovider.InMemoryFlag{
		"dark-mode": {Key: "dark-mode", State: memprovider.Enabled, DefaultVariant: "on", Variants: map[string]any{"on": true, "off": false}},
	})
	memDomain := b.Name() + "-memprovider"
	if err := of.SetNamedProviderAndWait(memDomain, mem); err != nil {
		b.Fatal(err)
	}
	defer func() { _ = of.SetNamedProviderAndWait(memDomain, of.NoopProvider{}) }()
	memClient := of.NewClient(memDomain)
	b.Run("sdk-memprovider-baseline", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if !memClient.Boolean(ctx, "dark-mode", false, evalCtx) {
				b.Fatal("dark-mode is off")
			}
		}
	})
	// The provider alone, as the SDK calls it: the part this package adds.
	flat := of.FlattenedContext{of.TargetingKey: "user-1", "role": "beta"}
	b.Run("provider-static", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if !p.BooleanEvaluation(ctx, "dark-mode", false, flat).Value {
				b.Fatal("dark-mode is off")
			}
		}
	})
	b.Run("provider-split", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			p.BooleanEvaluation(ctx, "ramp", false, flat)
		}
	})
}

// flagOf takes the flag out of what the command service's Handle returns.
func flagOf(r command.Result, err error) (projections.Flag, error) { return r.Flag, err }
