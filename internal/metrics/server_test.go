package metrics_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/interlock-dev/interlock/internal/app"
	"github.com/interlock-dev/interlock/internal/await"
	"github.com/interlock-dev/interlock/internal/config"
)

const adminToken = "ilk_metrics-test-admin-token-0123456789abcdef"

// server is a real Interlock server on :0 with an embedded NATS server, and a client for it.
type server struct {
	t      *testing.T
	m      *app.Main
	base   string
	client *http.Client
}

func boot(t *testing.T, change func(*config.Config)) *server {
	t.Helper()
	cfg := config.Default()
	cfg.NATSListen = ""
	cfg.Data = t.TempDir()
	cfg.NoSync = true
	cfg.HTTP = "127.0.0.1:0"
	cfg.AdminToken = adminToken
	if change != nil {
		change(&cfg)
	}
	m, err := app.Start(context.Background(), cfg, slog.New(slog.DiscardHandler), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	s := &server{t: t, m: m, base: "http://" + m.HTTPAddr(), client: &http.Client{Timeout: 30 * time.Second}}
	t.Cleanup(func() {
		s.client.CloseIdleConnections()
		if err := m.Close(); err != nil {
			t.Error(err)
		}
	})
	await.Eventually(t, 20*time.Second, m.Ready, "projections ready")
	return s
}

// do sends a request and returns the status, the content type and the body.
func (s *server) do(method, path, token, body string, header map[string]string) (int, string, string) {
	s.t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, s.base+path, rd)
	if err != nil {
		s.t.Fatal(err)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	for k, v := range header {
		req.Header.Set(k, v)
	}
	resp, err := s.client.Do(req)
	if err != nil {
		s.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		s.t.Fatal(err)
	}
	return resp.StatusCode, resp.Header.Get("Content-Type"), string(b)
}

// scrape reads /metrics in the text format.
func (s *server) scrape() families {
	s.t.Helper()
	status, ctype, body := s.do("GET", "/metrics", adminToken, "", map[string]string{"Accept": "text/plain"})
	if status != http.StatusOK {
		s.t.Fatalf("GET /metrics: %d %s", status, body)
	}
	if !strings.HasPrefix(ctype, "text/plain") {
		s.t.Fatalf("content type %q", ctype)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(strings.NewReader(body))
	if err != nil {
		s.t.Fatalf("parse /metrics: %v\n%s", err, body)
	}
	return fams
}

type families map[string]*dto.MetricFamily

// value is the value of the series of name whose labels include want, and whether there is one.
func (f families) value(name string, want map[string]string) (float64, bool) {
	mf, ok := f[name]
	if !ok {
		return 0, false
	}
next:
	for _, m := range mf.GetMetric() {
		got := map[string]string{}
		for _, lp := range m.GetLabel() {
			got[lp.GetName()] = lp.GetValue()
		}
		for k, v := range want {
			if got[k] != v {
				continue next
			}
		}
		switch {
		case m.Counter != nil:
			return m.GetCounter().GetValue(), true
		case m.Gauge != nil:
			return m.GetGauge().GetValue(), true
		case m.Histogram != nil:
			return float64(m.GetHistogram().GetSampleCount()), true
		case m.Untyped != nil:
			return m.GetUntyped().GetValue(), true
		}
	}
	return 0, false
}

// use gives a server something to count of everything it measures: a flag created over the API,
// evaluations over OFREP (one found, one not), an open event feed.
func (s *server) use() (stop func()) {
	s.t.Helper()
	if status, _, body := s.do("POST", "/api/v1/environments/production/flags", adminToken,
		`{"key":"checkout","kind":"release","enabled":true,"variants":{"on":true,"off":false},"defaultVariant":"on","offVariant":"off"}`, map[string]string{"X-Interlock-Reason": "test"}); status != http.StatusCreated {
		s.t.Fatalf("create: %d %s", status, body)
	}
	// A token of the bucket (the environment's admin token is not looked up).
	status, _, body := s.do("POST", "/api/v1/tokens", adminToken, `{"name":"evaluator","role":"reader"}`, map[string]string{"X-Interlock-Reason": "test"})
	var issued struct{ Token string }
	if err := json.Unmarshal([]byte(body), &issued); status != http.StatusCreated || err != nil || issued.Token == "" {
		s.t.Fatalf("issue a token: %d %s", status, body)
	}
	env := map[string]string{"X-Interlock-Environment": "production"}
	for key, want := range map[string]int{"checkout": 200, "missing": 404} {
		await.Eventually(s.t, 10*time.Second, func() bool {
			status, _, _ := s.do("POST", "/ofrep/v1/evaluate/flags/"+key, issued.Token, `{"context":{"targetingKey":"u1"}}`, env)
			return status == want
		}, "evaluate "+key)
	}
	ctx, cancel := context.WithCancel(context.Background())
	req, err := http.NewRequestWithContext(ctx, "GET", s.base+"/api/v1/events", nil)
	if err != nil {
		s.t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+adminToken)
	resp, err := s.client.Do(req)
	if err != nil {
		s.t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK {
		s.t.Fatalf("event feed: %d", resp.StatusCode)
	}
	return func() {
		cancel()
		resp.Body.Close()
	}
}

// TestMetricsCoverTheService boots the real server, uses it, and reads what /metrics says of
// that use.
func TestMetricsCoverTheService(t *testing.T) {
	s := boot(t, nil)
	stop := s.use()
	defer stop()

	type series struct {
		name   string
		labels map[string]string
		ok     func(float64) bool
	}
	atLeast := func(n float64) func(float64) bool { return func(v float64) bool { return v >= n } }
	is := func(n float64) func(float64) bool { return func(v float64) bool { return v == n } }
	want := []series{
		{"interlock_http_requests_total", map[string]string{"route": "POST /api/v1/environments/{env}/flags", "code": "201"}, is(1)},
		{"interlock_http_requests_total", map[string]string{"route": "POST /ofrep/v1/evaluate/flags/{key}", "code": "404"}, atLeast(1)},
		{"interlock_http_request_duration_seconds", map[string]string{"route": "POST /ofrep/v1/evaluate/flags/{key}"}, atLeast(2)},
		{"interlock_ofrep_evaluations_total", map[string]string{"reason": "ERROR", "error_code": "FLAG_NOT_FOUND"}, atLeast(1)},
		{"interlock_ofrep_evaluations_total", map[string]string{"reason": "STATIC", "error_code": ""}, atLeast(1)},
		{"interlock_commands_total", map[string]string{"command": "create", "outcome": "ok"}, is(1)},
		{"interlock_commands_total", map[string]string{"command": "token", "outcome": "ok"}, atLeast(1)},
		{"interlock_event_store_append_duration_seconds", map[string]string{"result": "ok"}, atLeast(1)},
		{"interlock_event_store_up", nil, is(1)},
		{"interlock_projection_lag_events", nil, is(0)},
		{"interlock_projection_applied_sequence", nil, atLeast(1)},
		{"interlock_projection_ready", nil, is(1)},
		{"interlock_projection_skipped_events_total", nil, is(0)},
		{"interlock_integrity_problems_total", nil, is(0)},
		{"interlock_guard_lease_held", nil, is(1)},
		{"interlock_guard_tick_duration_seconds", nil, atLeast(1)},
		{"interlock_guard_rollouts", map[string]string{"state": "TRIPPED"}, is(0)},
		{"interlock_valves", map[string]string{"state": "open"}, is(0)},
		{"interlock_nats_connected", nil, is(1)},
		{"interlock_nats_reconnects_total", nil, is(0)},
		{"interlock_token_lookups_total", map[string]string{"result": "hit"}, atLeast(1)},
		{"interlock_sse_clients", map[string]string{"stream": "events"}, is(1)},
		{"interlock_sse_clients", map[string]string{"stream": "ofrep"}, is(0)},
		{"go_goroutines", nil, atLeast(1)},
	}
	var fams families
	await.Until(t, 20*time.Second, 50*time.Millisecond, func() error {
		fams = s.scrape()
		var missing []string
		for _, w := range want {
			if v, ok := fams.value(w.name, w.labels); !ok || !w.ok(v) {
				missing = append(missing, fmt.Sprintf("%s%s = %v (found: %v)", w.name, labelString(w.labels), v, ok))
			}
		}
		if len(missing) > 0 {
			return fmt.Errorf("not as expected:\n%s", strings.Join(missing, "\n"))
		}
		return nil
	})
	// The route is the pattern, never the raw path.
	for _, m := range fams["interlock_http_requests_total"].GetMetric() {
		for _, lp := range m.GetLabel() {
			if lp.GetName() == "route" && (strings.Contains(lp.GetValue(), "checkout") || strings.Contains(lp.GetValue(), "missing")) {
				t.Errorf("route label %q carries a raw path", lp.GetValue())
			}
		}
	}
}

func labelString(l map[string]string) string {
	if len(l) == 0 {
		return ""
	}
	var parts []string
	for k, v := range l {
		parts = append(parts, k+"="+v)
	}
	return "{" + strings.Join(parts, ",") + "}"
}

// TestMetricsNeedAReaderUnlessPublic: /metrics is a read like any other by default, and open to
// anyone with --metrics-public.
func TestMetricsNeedAReaderUnlessPublic(t *testing.T) {
	s := boot(t, nil)
	if status, _, _ := s.do("GET", "/metrics", "", "", nil); status != http.StatusUnauthorized {
		t.Fatalf("without a token: %d, want 401", status)
	}
	if status, _, _ := s.do("GET", "/metrics", "ilk_not-a-token", "", nil); status != http.StatusUnauthorized {
		t.Fatalf("with an unknown token: %d, want 401", status)
	}
	if status, _, body := s.do("POST", "/metrics", adminToken, "{}", nil); status != http.StatusMethodNotAllowed {
		t.Fatalf("POST: %d %s, want 405", status, body)
	}

	open := boot(t, func(c *config.Config) { c.MetricsPublic = true })
	status, _, body := open.do("GET", "/metrics", "", "", nil)
	if status != http.StatusOK || !strings.Contains(body, "interlock_nats_connected 1") {
		t.Fatalf("public metrics: %d\n%s", status, body)
	}
	// Public metrics open nothing else.
	if status, _, _ := open.do("GET", "/api/v1/environments", "", "", nil); status != http.StatusUnauthorized {
		t.Fatalf("environments without a token: %d, want 401", status)
	}
}

// TestMetricsNegotiateOpenMetrics: a scraper that asks for OpenMetrics gets it; one that asks
// for nothing in particular gets the text format.
func TestMetricsNegotiateOpenMetrics(t *testing.T) {
	s := boot(t, func(c *config.Config) { c.MetricsPublic = true })
	status, ctype, body := s.do("GET", "/metrics", "", "", map[string]string{
		"Accept": "application/openmetrics-text;version=1.0.0;q=0.9,text/plain;version=0.0.4;q=0.5",
	})
	if status != http.StatusOK || !strings.HasPrefix(ctype, "application/openmetrics-text") || !strings.HasSuffix(body, "# EOF\n") {
		t.Fatalf("OpenMetrics: %d %q, body ends %q", status, ctype, body[max(0, len(body)-40):])
	}
	if !strings.Contains(body, "# TYPE interlock_commands counter") && !strings.Contains(body, "# TYPE interlock_nats_reconnects counter") {
		t.Errorf("OpenMetrics counters are typed without _total:\n%s", body)
	}
	status, ctype, _ = s.do("GET", "/metrics", "", "", nil)
	if status != http.StatusOK || !strings.HasPrefix(ctype, "text/plain") {
		t.Fatalf("default: %d %q", status, ctype)
	}
}
