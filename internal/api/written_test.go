package api_test

import (
	"context"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/interlock-dev/interlock/internal/api"
	"github.com/interlock-dev/interlock/projections"
)

// laggingCatalog is the real catalog, except that it never confirms that it applied a write:
// every wait for a sequence lasts until the caller gives up.
type laggingCatalog struct{ *projections.Catalog }

func (laggingCatalog) WaitSequence(ctx context.Context, _ uint64) error {
	<-ctx.Done()
	return ctx.Err()
}

// warnings is a log handler that keeps the attributes of every warning (and worse) logged with
// message msg, each record's own attributes only, as strings.
type warnings struct {
	msg  string
	mu   sync.Mutex
	recs []map[string]string
}

func (h *warnings) Enabled(_ context.Context, l slog.Level) bool { return l >= slog.LevelWarn }

func (h *warnings) Handle(_ context.Context, r slog.Record) error {
	if r.Message != h.msg {
		return nil
	}
	rec := map[string]string{}
	r.Attrs(func(a slog.Attr) bool {
		rec[a.Key] = a.Value.String()
		return true
	})
	h.mu.Lock()
	defer h.mu.Unlock()
	h.recs = append(h.recs, rec)
	return nil
}

func (h *warnings) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h *warnings) WithGroup(string) slog.Handler      { return h }

// records returns the warnings kept so far, in the order they were logged.
func (h *warnings) records() []map[string]string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return slices.Clone(h.recs)
}

// TestWriteAnsweredWhileCatalogLags checks that a write is answered, with the written version as
// ETag, when this replica's catalog does not apply it within WriteTimeout, and that the log says
// which flag or segment (and which request) was answered early.
func TestWriteAnsweredWhileCatalogLags(t *testing.T) {
	logs := &warnings{msg: "answering a write before the catalog applied it"}
	s := boot(t, func(cfg *api.Config) {
		cfg.Catalog = laggingCatalog{cfg.Catalog.(*projections.Catalog)}
		cfg.WriteTimeout = time.Millisecond
		cfg.Logger = slog.New(logs)
	})
	writes := []struct {
		name   string
		r      req
		status int
		etag   string
		// keyAttr is the log attribute naming the key.
		keyAttr, key string
	}{
		{"create flag", req{method: "POST", path: "/api/v1/environments/prod/flags", body: boolFlag("checkout")},
			http.StatusCreated, `"1"`, "key", "checkout"},
		{"kill flag", req{method: "POST", path: flagPath("prod", "checkout") + "/kill", body: `{"reason":"incident"}`},
			http.StatusOK, `"2"`, "key", "checkout"},
		{"create segment", req{method: "POST", path: segmentsPath("prod"), body: betaSegment},
			http.StatusCreated, `"1"`, "segment", "beta-testers"},
		{"archive segment", req{method: "POST", path: segmentPath("prod", "beta-testers") + "/archive"},
			http.StatusOK, `"2"`, "segment", "beta-testers"},
	}
	for i, w := range writes {
		w.r.token = s.admin
		id := strings.ReplaceAll(w.name, " ", "-")
		w.r.header = map[string]string{"X-Correlation-Id": id}
		resp := s.do(t, w.r).must(t, w.status, nil)
		if got := resp.header.Get("ETag"); got != w.etag {
			t.Errorf("%s: ETag %s, want %s", w.name, got, w.etag)
		}
		recs := logs.records()
		if len(recs) != i+1 {
			t.Fatalf("%s: %d warnings after %d writes, want one a write", w.name, len(recs), i+1)
		}
		rec := recs[i]
		if rec["environment"] != "prod" || rec[w.keyAttr] != w.key || rec["correlation_id"] != id ||
			rec["sequence"] == "" || rec["error"] != context.DeadlineExceeded.Error() {
			t.Errorf("%s: warning %v, want environment prod, %s %s, correlation_id %q, the sequence and the error",
				w.name, rec, w.keyAttr, w.key, id)
		}
	}
}
