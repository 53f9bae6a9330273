package api

import (
	"bytes"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/interlock-dev/interlock/apiv1"
)

// logBuffer collects log output written from server goroutines.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

// records returns the JSON log records written so far.
func (b *logBuffer) records(t *testing.T) []map[string]any {
	t.Helper()
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []map[string]any
	for line := range strings.SplitSeq(strings.TrimSpace(b.buf.String()), "\n") {
		if line == "" {
			continue
		}
		var rec map[string]any
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			t.Fatalf("log line %q: %v", line, err)
		}
		out = append(out, rec)
	}
	return out
}

func (b *logBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// serve runs h behind the middleware and returns the server and the log. The test's requests
// are complete when the log line of each is written: the server is closed (and waits for its
// handlers) before the log is read.
func serve(t *testing.T, h http.Handler) (*httptest.Server, *logBuffer) {
	t.Helper()
	logs := &logBuffer{}
	a := &API{logger: slog.New(slog.NewJSONHandler(logs, nil)).With("component", "api")}
	srv := httptest.NewServer(a.middleware(h))
	t.Cleanup(srv.Close)
	return srv, logs
}

func TestRecoverPanic(t *testing.T) {
	srv, logs := serve(t, http.HandlerFunc(func(http.ResponseWriter, *http.Request) {
		panic("boom: secret detail")
	}))
	req, _ := http.NewRequest("GET", srv.URL+"/x", nil)
	req.Header.Set("X-Correlation-Id", "c-1")
	resp, err := srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	srv.Close()

	if resp.StatusCode != http.StatusInternalServerError {
		t.Fatalf("status %d, want 500", resp.StatusCode)
	}
	var doc apiv1.ErrorBody
	if err := json.Unmarshal(body, &doc); err != nil || doc.Error.Code != apiv1.CodeInternal || doc.Error.Message == "" {
		t.Fatalf("body %s is not an internal error document", body)
	}
	if strings.Contains(string(body), "secret detail") {
		t.Fatalf("the panic reached the client: %s", body)
	}
	var panicked, logged bool
	for _, rec := range logs.records(t) {
		switch rec["msg"] {
		case "panic serving a request":
			panicked = strings.Contains(rec["panic"].(string), "secret detail") && rec["stack"] != "" && rec["correlation_id"] == "c-1"
		case "request":
			logged = rec["status"] == float64(500) && rec["level"] == "ERROR"
		}
	}
	if !panicked || !logged {
		t.Fatalf("panic logged %v, request logged as 500 %v:\n%s", panicked, logged, logs)
	}
}

func TestRecoverPanicAfterHeader(t *testing.T) {
	srv, logs := serve(t, http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.WriteHeader(http.StatusOK)
		_, _ = w.Write([]byte(`{"partial":`))
		w.(http.Flusher).Flush()
		panic("boom")
	}))
	resp, err := srv.Client().Get(srv.URL + "/x")
	if err == nil {
		_, err = io.ReadAll(resp.Body)
		resp.Body.Close()
	}
	srv.Close()
	if err == nil {
		t.Fatal("a response cut short by a panic read as complete")
	}
	if !strings.Contains(logs.String(), `"status":500`) {
		t.Fatalf("request not logged as failed:\n%s", logs)
	}
}

func TestRequestLog(t *testing.T) {
	const token = "ilk_very-secret-token-value"
	srv, logs := serve(t, http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.WriteHeader(http.StatusTeapot)
	}))
	req, _ := http.NewRequest("POST", srv.URL+"/api/v1/thing?q=1", strings.NewReader(`{}`))
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	srv.Close()
	if strings.Contains(logs.String(), "very-secret") {
		t.Fatalf("the token was logged:\n%s", logs)
	}
	recs := logs.records(t)
	if len(recs) != 1 {
		t.Fatalf("want one log record, got:\n%s", logs)
	}
	rec := recs[0]
	for k, want := range map[string]any{"msg": "request", "component": "api", "method": "POST", "path": "/api/v1/thing", "status": float64(418)} {
		if rec[k] != want {
			t.Errorf("log %s = %v, want %v", k, rec[k], want)
		}
	}
	if _, ok := rec["duration"]; !ok {
		t.Error("no duration in the request log")
	}
	if id := resp.Header.Get(headerCorrelationID); id == "" || rec["correlation_id"] != id {
		t.Errorf("correlation id %q in the response, %v in the log", id, rec["correlation_id"])
	}
}
