package metrics_test

import (
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/interlock-dev/interlock/events"
	"github.com/interlock-dev/interlock/guard"
	"github.com/interlock-dev/interlock/internal/command"
	"github.com/interlock-dev/interlock/internal/metrics"
	"github.com/interlock-dev/interlock/targeting"
)

func TestHTTPLabelsRequestsByPattern(t *testing.T) {
	reg := prometheus.NewRegistry()
	h, err := metrics.NewHTTP(reg)
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /flags/{key}", func(w http.ResponseWriter, r *http.Request) {})
	mux.HandleFunc("POST /flags", func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusCreated) })
	mux.HandleFunc("GET /boom", func(w http.ResponseWriter, r *http.Request) { panic(http.ErrAbortHandler) })
	handler := h.Handler(mux)
	serve := func(method, path string) {
		defer func() {
			if v := recover(); v != nil && v != http.ErrAbortHandler {
				t.Fatal(v)
			}
		}()
		handler.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest(method, path, nil))
	}
	for _, key := range []string{"a", "b", "c"} {
		serve("GET", "/flags/"+key)
	}
	serve("POST", "/flags")
	serve("GET", "/nowhere")
	serve("GET", "/boom")
	want := `
# HELP interlock_http_requests_total HTTP requests answered, by route (the matched pattern) and status code.
# TYPE interlock_http_requests_total counter
interlock_http_requests_total{code="200",route="GET /flags/{key}"} 3
interlock_http_requests_total{code="201",route="POST /flags"} 1
interlock_http_requests_total{code="404",route="unmatched"} 1
interlock_http_requests_total{code="500",route="GET /boom"} 1
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "interlock_http_requests_total"); err != nil {
		t.Fatal(err)
	}
	if n := testutil.CollectAndCount(reg, "interlock_http_request_duration_seconds"); n != 4 {
		t.Fatalf("%d duration series, want one per route", n)
	}
}

// TestEvaluationsCountWithoutAllocating: the observer runs on OFREP's hot path.
func TestEvaluationsCountWithoutAllocating(t *testing.T) {
	reg := prometheus.NewRegistry()
	e, err := metrics.NewEvaluations(reg)
	if err != nil {
		t.Fatal(err)
	}
	if allocs := testing.AllocsPerRun(1000, func() {
		e.Evaluated(targeting.ReasonSplit, "")
		e.Evaluated(targeting.ReasonError, targeting.ErrorFlagNotFound)
	}); allocs != 0 {
		t.Fatalf("%v allocations per evaluation", allocs)
	}
	e.Evaluated("NEW_REASON", "")
	e.Evaluated(targeting.ReasonStatic, targeting.ErrorGeneral) // cannot happen: counted as OTHER
	for _, c := range []struct {
		reason, code string
		want         float64
	}{
		{"SPLIT", "", 1001}, // AllocsPerRun runs once more to warm up
		{"ERROR", "FLAG_NOT_FOUND", 1001},
		{"OTHER", "", 1},
		{"OTHER", "GENERAL", 1},
		{"STATIC", "", 0},
	} {
		if got := gathered(t, reg, "interlock_ofrep_evaluations_total", map[string]string{"reason": c.reason, "error_code": c.code}); got != c.want {
			t.Errorf("%s/%s: %v, want %v", c.reason, c.code, got, c.want)
		}
	}
	if got := gathered(t, reg, "interlock_ofrep_evaluations_total", map[string]string{"reason": "STATIC", "error_code": "GENERAL"}); got != -1 {
		t.Errorf("an impossible pair is exported")
	}
}

func TestCommandsAndAppends(t *testing.T) {
	reg := prometheus.NewRegistry()
	c, err := metrics.NewCommands(reg)
	if err != nil {
		t.Fatal(err)
	}
	c.Commanded("create rollout", command.OutcomeOK)
	c.Commanded("create rollout", command.OutcomeOK)
	c.Commanded("kill", command.OutcomeUnavailable)
	c.Appended(time.Millisecond, nil)
	c.Appended(time.Millisecond, fmt.Errorf("append: %w", events.ErrConflict))
	c.Appended(time.Second, errors.New("nats: timeout"))
	want := `
# HELP interlock_commands_total Commands of the write path, by command and outcome (ok, conflict, refused, unavailable).
# TYPE interlock_commands_total counter
interlock_commands_total{command="create_rollout",outcome="ok"} 2
interlock_commands_total{command="kill",outcome="unavailable"} 1
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "interlock_commands_total"); err != nil {
		t.Fatal(err)
	}
	for _, result := range []string{"ok", "conflict", "error"} {
		if got := gathered(t, reg, "interlock_event_store_append_duration_seconds", map[string]string{"result": result}); got != 1 {
			t.Errorf("appends %s: %v, want 1", result, got)
		}
	}
}

func TestGuardObserver(t *testing.T) {
	reg := prometheus.NewRegistry()
	g, err := metrics.NewGuard(reg)
	if err != nil {
		t.Fatal(err)
	}
	g.Ticked(time.Millisecond)
	g.Decided(string(guard.ActionAdvance))
	g.Acted("advance", 30*time.Millisecond, nil)
	g.Acted("advance", time.Second, errors.New("unavailable"))
	for _, c := range []struct {
		name   string
		labels map[string]string
		want   float64
	}{
		{"interlock_guard_tick_duration_seconds", nil, 1},
		{"interlock_guard_decisions_total", map[string]string{"action": "advance"}, 1},
		{"interlock_guard_decisions_total", map[string]string{"action": "kill"}, 0},
		{"interlock_guard_actions_total", map[string]string{"command": "advance", "result": "ok"}, 1},
		{"interlock_guard_actions_total", map[string]string{"command": "advance", "result": "error"}, 1},
		{"interlock_guard_decision_to_applied_seconds", nil, 1}, // successes only
	} {
		if got := gathered(t, reg, c.name, c.labels); got != c.want {
			t.Errorf("%s%v: %v, want %v", c.name, c.labels, got, c.want)
		}
	}
}

// gathered is the value (a histogram's count) of the series of name with labels, -1 for none.
func gathered(t *testing.T, g prometheus.Gatherer, name string, labels map[string]string) float64 {
	t.Helper()
	mfs, err := g.Gather()
	if err != nil {
		t.Fatal(err)
	}
	fams := families{}
	for _, mf := range mfs {
		fams[mf.GetName()] = mf
	}
	v, ok := fams.value(name, labels)
	if !ok {
		return -1
	}
	return v
}
