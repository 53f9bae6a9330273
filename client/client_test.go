package client_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"go.yaml.in/yaml/v2"

	"github.com/interlock-dev/interlock/apiv1"
	"github.com/interlock-dev/interlock/client"
	"github.com/interlock-dev/interlock/events"
	"github.com/interlock-dev/interlock/internal/app"
	"github.com/interlock-dev/interlock/internal/await"
	"github.com/interlock-dev/interlock/internal/config"
	"github.com/interlock-dev/interlock/internal/natstest"
)

const adminToken = "client-test-admin-token-0123456789"

// recorder is a RoundTripper that notes every request it sends.
type recorder struct {
	mu   sync.Mutex
	sent []string // "METHOD /path"
}

func (r *recorder) RoundTrip(req *http.Request) (*http.Response, error) {
	r.mu.Lock()
	r.sent = append(r.sent, req.Method+" "+req.URL.Path)
	r.mu.Unlock()
	return http.DefaultTransport.RoundTrip(req)
}

// start boots the real server (app.Start) on an embedded NATS server, signing its events, and
// returns a client with the admin token whose requests rec notes.
func start(t *testing.T, rec *recorder) *client.Client {
	t.Helper()
	cfg := config.Default()
	cfg.NATSURL = natstest.RunServer(t).ClientURL()
	cfg.HTTP = "127.0.0.1:0"
	cfg.AdminToken = adminToken
	cfg.SigningKey = natstest.SigningKeyFile(t)
	m, err := app.Start(context.Background(), cfg, slog.New(slog.DiscardHandler), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	await.Eventually(t, 10*time.Second, m.Ready, "projections ready")
	c, err := client.New("http://"+m.HTTPAddr(), client.WithToken(adminToken),
		client.WithHTTPClient(&http.Client{Transport: rec}), client.WithTimeout(10*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func must[T any](t *testing.T, what string) func(T, error) T {
	return func(v T, err error) T {
		t.Helper()
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		return v
	}
}

// TestEveryRoute drives the real server through every method of the client, and checks that
// together they sent every operation apiv1/openapi.yaml documents (which a test of internal/api
// holds equal to the route table).
func TestEveryRoute(t *testing.T) {
	rec := &recorder{}
	c := start(t, rec)
	ctx := context.Background()
	const env = "prod"

	if s := must[apiv1.Status](t, "health")(c.Health(ctx)); s.Status != "ok" {
		t.Errorf("health %+v", s)
	}
	if r := must[apiv1.Readiness](t, "ready")(c.Ready(ctx)); r.Status != "ok" || r.Integrity == nil || r.Integrity.KeyID == "" {
		t.Errorf("ready %+v", r)
	}
	if m := must[[]byte](t, "metrics")(c.Metrics(ctx)); !strings.Contains(string(m), "# TYPE") {
		t.Errorf("metrics %.200s", m)
	}
	if doc := must[[]byte](t, "openapi")(c.OpenAPI(ctx)); string(doc) != string(apiv1.OpenAPI) {
		t.Errorf("the served document is not apiv1.OpenAPI")
	}

	feed, err := c.Events(ctx, client.EventsQuery{Environment: env, FromStart: true})
	if err != nil {
		t.Fatal(err)
	}
	defer feed.Close()

	cfg := apiv1.FlagConfig{Kind: events.KindRelease, Variants: map[string]json.RawMessage{"on": json.RawMessage(`true`), "off": json.RawMessage(`false`)},
		DefaultVariant: "on", OffVariant: "off", Enabled: true}
	f := must[apiv1.Flag](t, "create")(c.CreateFlag(ctx, env, "checkout", cfg, "new"))
	if f.Key != "checkout" || f.Version != 1 || !f.Enabled {
		t.Fatalf("created %+v", f)
	}
	if _, err := c.CreateFlag(ctx, env, "checkout", cfg, ""); !errors.Is(err, apiv1.ErrAlreadyExists) {
		t.Errorf("create again: %v", err)
	}
	f = must[apiv1.Flag](t, "update")(c.UpdateFlag(ctx, env, "checkout", 1, map[string]any{"description": "second"}, "describe"))
	if f.Description != "second" || f.Version != 2 {
		t.Errorf("updated %+v", f)
	}
	_, err = c.UpdateFlag(ctx, env, "checkout", 1, map[string]any{"description": "third"}, "")
	var ae *apiv1.Error
	if !errors.As(err, &ae) || ae.Status != http.StatusPreconditionFailed || !errors.Is(err, apiv1.ErrPreconditionFailed) {
		t.Errorf("stale update: %#v", err)
	}
	f = must[apiv1.Flag](t, "kill")(c.KillFlag(ctx, env, "checkout", "incident"))
	if f.Enabled || f.Version != 3 {
		t.Errorf("killed %+v", f)
	}
	f = must[apiv1.Flag](t, "enable")(c.EnableFlag(ctx, env, "checkout", 3, "fixed"))
	f = must[apiv1.Flag](t, "archive")(c.ArchiveFlag(ctx, env, "checkout", f.Version, "gone"))
	if !f.Archived {
		t.Errorf("archived %+v", f)
	}
	if l := must[[]apiv1.Flag](t, "flags")(c.Flags(ctx, env, client.ListOptions{})); len(l) != 0 {
		t.Errorf("archived flag listed: %+v", l)
	}
	f = must[apiv1.Flag](t, "unarchive")(c.UnarchiveFlag(ctx, env, "checkout", 0, "back"))
	f = must[apiv1.Flag](t, "restore")(c.RestoreFlag(ctx, env, "checkout", 1, f.Version, "as it was"))
	if f.Description != "" || f.Version != 7 {
		t.Errorf("restored %+v", f)
	}
	if g := must[apiv1.Flag](t, "flag")(c.Flag(ctx, env, "checkout")); g.Version != 7 {
		t.Errorf("flag %+v", g)
	}
	if g := must[apiv1.Flag](t, "flag at")(c.FlagAt(ctx, env, "checkout", client.Point{Version: 2})); g.Description != "second" {
		t.Errorf("flag at version 2 %+v", g)
	}
	if _, err := c.Flag(ctx, env, "nope"); !errors.Is(err, apiv1.ErrNotFound) {
		t.Errorf("missing flag: %v", err)
	}
	if h := must[[]apiv1.Entry](t, "history")(c.FlagHistory(ctx, env, "checkout")); len(h) != 7 || h[2].Reason != "incident" {
		t.Errorf("history %+v", h)
	}
	if l := must[[]apiv1.Flag](t, "flags")(c.Flags(ctx, env, client.ListOptions{Archived: true})); len(l) != 1 {
		t.Errorf("flags %+v", l)
	}
	if e := must[[]string](t, "environments")(c.Environments(ctx)); len(e) != 1 || e[0] != env {
		t.Errorf("environments %v", e)
	}

	seg := must[apiv1.Segment](t, "create segment")(c.CreateSegment(ctx, env, "beta", apiv1.SegmentConfig{Included: []string{"u1"}}, ""))
	seg = must[apiv1.Segment](t, "update segment")(c.UpdateSegment(ctx, env, "beta", seg.Version, map[string]any{"description": "b"}, ""))
	seg = must[apiv1.Segment](t, "archive segment")(c.ArchiveSegment(ctx, env, "beta", seg.Version, "x"))
	seg = must[apiv1.Segment](t, "unarchive segment")(c.UnarchiveSegment(ctx, env, "beta", 0, "y"))
	if s := must[apiv1.Segment](t, "segment")(c.Segment(ctx, env, "beta")); s.Version != 4 || s.Description != "b" {
		t.Errorf("segment %+v", s)
	}
	if s := must[apiv1.Segment](t, "segment at")(c.SegmentAt(ctx, env, "beta", client.Point{Version: 1})); s.Description != "" {
		t.Errorf("segment at 1 %+v", s)
	}
	if l := must[[]apiv1.Segment](t, "segments")(c.Segments(ctx, env, false)); len(l) != 1 {
		t.Errorf("segments %+v", l)
	}
	if h := must[[]apiv1.Entry](t, "segment history")(c.SegmentHistory(ctx, env, "beta")); len(h) != 4 {
		t.Errorf("segment history %+v", h)
	}

	plan := apiv1.RolloutPlan{Treatment: "on", Control: "off",
		Metrics: []events.RolloutMetric{{Name: "errors", Requests: `requests_total{app="shop"}`, Errors: `errors_total{app="shop"}`}},
		Source:  events.MetricSource{Type: events.SourcePrometheus, URL: "http://127.0.0.1:9"}, Manual: true}
	st := must[apiv1.RolloutStatus](t, "create rollout")(c.CreateRollout(ctx, env, "checkout", 0, plan, "go"))
	if st.Rollout == nil || st.Version != 8 || st.Stage.Count != 6 {
		t.Fatalf("rollout %+v", st)
	}
	// command sends verb at the flag's current version: the guard, which judges the running
	// rollout, records its decisions as events of the flag too, so a version read earlier may
	// be stale by the time the command arrives (412), and is read again.
	command := func(verb client.RolloutVerb, req apiv1.RolloutRequest) (apiv1.RolloutStatus, error) {
		for range 100 {
			cur := must[apiv1.RolloutStatus](t, "rollout")(c.Rollout(ctx, env, "checkout"))
			got, err := c.RolloutCommand(ctx, env, "checkout", verb, cur.Version, req)
			if !errors.Is(err, apiv1.ErrPreconditionFailed) {
				return got, err
			}
		}
		t.Fatalf("%s: the flag's version kept changing", verb)
		return apiv1.RolloutStatus{}, nil
	}
	for _, verb := range []client.RolloutVerb{client.RolloutStart, client.RolloutPause, client.RolloutResume, client.RolloutAdvance,
		client.RolloutStepBack, client.RolloutRearm, client.RolloutAbort} {
		got, err := command(verb, apiv1.RolloutRequest{Reason: "step " + string(verb)})
		if verb == client.RolloutRearm {
			// Nothing tripped: re-arming is refused, and says why.
			if !errors.Is(err, apiv1.ErrConflict) {
				t.Errorf("rearm: %v", err)
			}
			continue
		}
		if err != nil {
			t.Fatalf("%s: %v", verb, err)
		}
		st = got
	}
	if st.Rollout.Status != "aborted" {
		t.Errorf("after abort %+v", st.Rollout)
	}
	if got := must[apiv1.RolloutStatus](t, "rollout")(c.Rollout(ctx, env, "checkout")); got.Rollout.Status != "aborted" || string(got.Live) != "null" {
		t.Errorf("rollout %+v", got)
	}

	ops := apiv1.FlagConfig{Kind: events.KindOperational, Variants: map[string]json.RawMessage{"on": json.RawMessage(`true`), "off": json.RawMessage(`false`)},
		DefaultVariant: "on", OffVariant: "off", Enabled: true}
	must[apiv1.Flag](t, "create valve flag")(c.CreateFlag(ctx, env, "search", ops, ""))
	if _, err := c.Valve(ctx, env, "search"); !errors.Is(err, apiv1.ErrNotFound) {
		t.Errorf("not a valve: %v", err)
	}
	v := must[apiv1.ValveStatus](t, "configure valve")(c.ConfigureValve(ctx, env, "search", 1, apiv1.ValveConfig{Variant: "off"}, "degrade"))
	v = must[apiv1.ValveStatus](t, "open valve")(c.OpenValve(ctx, env, "search", apiv1.OpenValveRequest{Reason: "load", For: "30m"}))
	if !v.Valve.Open || v.Valve.Expires.IsZero() {
		t.Errorf("opened %+v", v.Valve)
	}
	v = must[apiv1.ValveStatus](t, "close valve")(c.CloseValve(ctx, env, "search", "calm"))
	if got := must[apiv1.ValveStatus](t, "valve")(c.Valve(ctx, env, "search")); got.Valve.Open || got.Version != v.Version {
		t.Errorf("valve %+v", got)
	}

	page := must[apiv1.AuditPage](t, "audit")(c.Audit(ctx, client.AuditQuery{Environment: env, Flag: "checkout", Limit: 3}))
	if len(page.Events) != 3 || page.Next == 0 {
		t.Errorf("audit page %+v", page)
	}
	page = must[apiv1.AuditPage](t, "audit")(c.Audit(ctx, client.AuditQuery{Environment: env, Types: []string{events.TypeFlagKilled}, Actor: "admin"}))
	if len(page.Events) != 1 || page.Events[0].Reason != "incident" {
		t.Errorf("audit of kills %+v", page)
	}
	if rep := must[apiv1.VerifyReport](t, "verify")(c.VerifyAudit(ctx, env, "checkout")); rep.Verified == 0 || rep.Refused != 0 {
		t.Errorf("verify %+v", rep)
	}
	if in := must[apiv1.Integrity](t, "integrity")(c.Integrity(ctx)); in.Status != "ok" {
		t.Errorf("integrity %+v", in)
	}
	if _, err := c.AcknowledgeIntegrity(ctx, 0, "drill"); !errors.Is(err, apiv1.ErrConflict) {
		t.Errorf("acknowledge with no problem: %v", err)
	}
	if ack := must[apiv1.Acknowledged](t, "acknowledge")(c.AcknowledgeIntegrity(ctx, 3, "drill")); ack.Acknowledgement.Through != 3 ||
		ack.Integrity == nil || ack.Integrity.Acknowledged == nil || ack.Integrity.Acknowledged.Actor != "admin" {
		t.Errorf("acknowledged %+v", ack)
	}
	if k := must[apiv1.SigningKeys](t, "signing keys")(c.SigningKeys(ctx)); len(k.Keys) != 1 || !k.Keys[0].Current {
		t.Errorf("signing keys %+v", k)
	}
	if s := must[[]apiv1.Subscriber](t, "subscribers")(c.Subscribers(ctx, env)); s == nil {
		t.Errorf("subscribers: nil, want an empty list")
	}
	if p := must[apiv1.Propagation](t, "propagation")(c.Propagation(ctx, env, "checkout", 0)); p.Flag != "checkout" || p.Sequence == 0 {
		t.Errorf("propagation %+v", p)
	}
	must[apiv1.Propagation](t, "propagation of a sequence")(c.Propagation(ctx, env, "checkout", 1))

	issued := must[apiv1.IssuedToken](t, "create token")(c.CreateToken(ctx, apiv1.CreateTokenRequest{Name: "ci", Role: apiv1.RoleReader, Environment: env, ExpiresIn: "1h"}))
	if issued.Token == "" || issued.Role != apiv1.RoleReader || issued.ExpiresAt.IsZero() {
		t.Errorf("issued %+v", issued)
	}
	reader, err := client.New(c.BaseURL().String(), client.WithToken(issued.Token))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := reader.KillFlag(ctx, env, "checkout", "no"); !errors.Is(err, apiv1.ErrForbidden) {
		t.Errorf("a reader's kill: %v", err)
	}
	if l := must[[]apiv1.TokenInfo](t, "tokens")(c.Tokens(ctx)); len(l) != 1 || l[0].Name != "ci" {
		t.Errorf("tokens %+v", l)
	}
	if err := c.RevokeToken(ctx, "ci"); err != nil {
		t.Fatal(err)
	}
	if _, err := reader.Flags(ctx, env, client.ListOptions{}); !errors.Is(err, apiv1.ErrUnauthenticated) {
		t.Errorf("a revoked token: %v", err)
	}
	if err := c.RevokeToken(ctx, "ci"); !errors.Is(err, apiv1.ErrNotFound) {
		t.Errorf("revoke again: %v", err)
	}

	// The feed has seen the flag's first event.
	ev, err := feed.Next()
	if err != nil || ev.Type != events.TypeFlagCreated || ev.Key != "checkout" || feed.Last != ev.Sequence {
		t.Errorf("first event %+v (last %d), %v", ev, feed.Last, err)
	}

	checkCoverage(t, rec)
}

// checkCoverage fails for every operation of the OpenAPI document the client never sent.
func checkCoverage(t *testing.T, rec *recorder) {
	t.Helper()
	var doc struct {
		Paths map[string]map[string]any `yaml:"paths"`
	}
	if err := yaml.Unmarshal(apiv1.OpenAPI, &doc); err != nil {
		t.Fatal(err)
	}
	rec.mu.Lock()
	defer rec.mu.Unlock()
	param := regexp.MustCompile(`\\\{[a-z]+\\\}`)
	n := 0
	for path, ops := range doc.Paths {
		re := regexp.MustCompile("^" + param.ReplaceAllString(regexp.QuoteMeta(path), "[^/]+") + "$")
		for method := range ops {
			switch method {
			case "get", "post", "put", "patch", "delete":
			default:
				continue
			}
			n++
			found := false
			for _, s := range rec.sent {
				m, p, _ := strings.Cut(s, " ")
				if strings.EqualFold(m, method) && re.MatchString(p) {
					found = true
					break
				}
			}
			if !found {
				t.Errorf("the client never sent %s %s", strings.ToUpper(method), path)
			}
		}
	}
	if n < 30 {
		t.Fatalf("only %d operations in the document", n)
	}
}
