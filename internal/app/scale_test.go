package app

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/interlock-dev/interlock/events"
	"github.com/interlock-dev/interlock/internal/await"
	"github.com/interlock-dev/interlock/internal/config"
	"github.com/interlock-dev/interlock/internal/embedded"
)

// The restart and query measurements of docs/benchmarks.md. They run only when asked:
//
//	INTERLOCK_SCALE_EVENTS=1000000 go test ./internal/app -run TestScale -v -timeout 0
//
// INTERLOCK_SCALE_DIR keeps the data directory (and reuses one written before, with the same
// number of events); INTERLOCK_SCALE_QUERIES=1 also times the history, as-of and audit queries.
// The history is written as fast as this machine allows: raw asynchronous publishes on an
// embedded server without fsync, signed and chained with the server's own key, one goroutine per
// core, each owning a share of the flags. Every flag gets flagEvents events (created, then
// updated, killed, enabled in turn) by one of scaleActors actors, in two environments.

const (
	flagEvents  = 1000
	scaleActors = 20
)

func TestScaleRestart(t *testing.T) {
	n, _ := strconv.Atoi(os.Getenv("INTERLOCK_SCALE_EVENTS"))
	if n <= 0 {
		t.Skip("set INTERLOCK_SCALE_EVENTS to a number of events to measure restarts at that scale")
	}
	dir := os.Getenv("INTERLOCK_SCALE_DIR")
	if dir == "" {
		dir = t.TempDir()
	}
	cfg := config.Default()
	cfg.Data = dir
	cfg.HTTP = "127.0.0.1:0"
	cfg.NATSListen = "none"
	cfg.AdminToken = restartToken
	marker := filepath.Join(dir, "scale-events")
	var mid time.Time
	if b, err := os.ReadFile(marker); err == nil {
		var m struct {
			Events int
			Mid    time.Time
		}
		if json.Unmarshal(b, &m) != nil || m.Events != n {
			t.Fatalf("%s holds another history: %s", dir, b)
		}
		mid = m.Mid
		t.Logf("reusing the history of %d events in %s", n, dir)
	} else {
		mid = writeHistory(t, cfg, n)
		b, _ := json.Marshal(map[string]any{"Events": n, "Mid": mid})
		if err := os.WriteFile(marker, b, 0o600); err != nil {
			t.Fatal(err)
		}
	}

	first := timeRestart(t, cfg, "first start", os.Getenv("INTERLOCK_SCALE_QUERIES") != "", mid)
	second := timeRestart(t, cfg, "restart", false, mid)
	t.Logf("RESULT events=%d first_start=%v restart=%v", n, first.Round(time.Millisecond), second.Round(time.Millisecond))
}

// writeHistory writes n signed events and returns a time about halfway through them.
func writeHistory(t *testing.T, cfg config.Config, n int) time.Time {
	signing, err := cfg.Signing() // generates the key the server will use
	if err != nil {
		t.Fatal(err)
	}
	ns, err := embedded.Start(embedded.Config{StoreDir: filepath.Join(cfg.Data, "jetstream"), NoSync: true}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Shutdown()
	nc, err := ns.Connect()
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(4096))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if _, err := events.Open(ctx, js, events.StreamConfig{}, events.WithSigner(signing.Signer)); err != nil {
		t.Fatal(err)
	}
	flags := max(n/flagEvents, 1)
	workers := 2
	var written atomic.Int64
	var midNano atomic.Int64
	start := time.Now()
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			var mine []int
			for f := w; f < flags; f += workers {
				mine = append(mine, f)
			}
			prev := make([]*[32]byte, len(mine))
			for round := range flagEvents {
				for i, f := range mine {
					if int(written.Load()) >= n {
						return
					}
					env, key := "prod", fmt.Sprintf("team.svc.flag-%05d", f)
					if f%2 == 1 {
						env = "staging"
					}
					ev := scaleEvent(t, env, key, round, f)
					msg := ev.Msg()
					hash := signing.Signer.Sign(msg, prev[i])
					prev[i] = &hash
					// On a busy machine the acknowledgements may lag: wait for them rather than fail.
					if _, err := js.PublishMsgAsync(msg, jetstream.WithStallWait(time.Minute)); err != nil {
						t.Error(err)
						return
					}
					if c := written.Add(1); int(c) == n/2 {
						midNano.Store(time.Now().UnixNano())
					}
				}
			}
		})
	}
	wg.Wait()
	select {
	case <-js.PublishAsyncComplete():
	case <-time.After(5 * time.Minute):
		t.Fatal("publishes not acknowledged after 5 minutes")
	}
	took := time.Since(start)
	t.Logf("wrote %d events on %d flags in %v (%.0f events/s)", written.Load(), flags, took.Round(time.Millisecond), float64(written.Load())/took.Seconds())
	return time.Unix(0, midNano.Load()).UTC()
}

func scaleEvent(t *testing.T, env, key string, round, f int) events.Event {
	cfg := events.FlagConfig{
		Kind:           events.KindRelease,
		Variants:       map[string]json.RawMessage{"on": json.RawMessage("true"), "off": json.RawMessage("false")},
		DefaultVariant: "off", OffVariant: "off", Enabled: true,
		Description: "round " + strconv.Itoa(round),
	}
	var typ string
	var payload any
	switch {
	case round == 0:
		typ, payload = events.TypeFlagCreated, events.FlagCreated{Flag: cfg}
	case round%3 == 1:
		typ, payload = events.TypeFlagKilled, events.FlagKilled{}
	case round%3 == 2:
		typ, payload = events.TypeFlagEnabled, events.FlagEnabled{}
	default:
		typ, payload = events.TypeFlagUpdated, events.FlagUpdated{Flag: cfg}
	}
	ev, err := events.NewEvent(typ, env, key, payload)
	if err != nil {
		t.Fatal(err)
	}
	ev.Actor = "user-" + strconv.Itoa((round+f)%scaleActors)
	ev.Reason = "scale test"
	ev.Version = uint64(round + 1)
	return ev
}

// timeRestart starts the server on the history and measures the time from the start until
// /readyz answers 200; with queries, it also times them. The stop writes the checkpoint.
func timeRestart(t *testing.T, cfg config.Config, name string, queries bool, mid time.Time) time.Duration {
	start := time.Now()
	logs := &await.Output{}
	m, err := Start(context.Background(), cfg, slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelInfo})), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if t.Failed() {
			t.Logf("logs:\n%s", logs.String())
		}
	}()
	started := time.Since(start)
	base := "http://" + m.HTTPAddr()
	for {
		resp, err := http.Get(base + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				break
			}
		}
		time.Sleep(5 * time.Millisecond)
	}
	ready := time.Since(start)
	t.Logf("%s: Start returned after %v, /readyz 200 after %v", name, started.Round(time.Millisecond), ready.Round(time.Millisecond))
	for line := range strings.Lines(logs.String()) {
		if strings.Contains(line, "checkpoint") || strings.Contains(line, "catalog ready") {
			t.Logf("%s: %s", name, strings.TrimSpace(line))
		}
	}
	if queries {
		timeQueries(t, base, mid)
	}
	stop := time.Now()
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	t.Logf("%s: stopped (writing the checkpoint) in %v", name, time.Since(stop).Round(time.Millisecond))
	for line := range strings.Lines(logs.String()) {
		if strings.Contains(line, "checkpoint written") {
			t.Logf("%s: %s", name, strings.TrimSpace(line))
		}
	}
	return ready
}

// timeQueries times a flag's history, an environment as of mid, and an audit page filtered by
// actor, over HTTP, each five times; it logs the fastest and the median.
func timeQueries(t *testing.T, base string, mid time.Time) {
	queries := []struct{ name, path string }{
		{"flag history (1000 events)", "/api/v1/environments/prod/flags/team.svc.flag-00000/history"},
		{"environment as of mid-history", "/api/v1/environments/staging/flags?at=" + url.QueryEscape(mid.Format(time.RFC3339Nano))},
		{"audit page of 100 by actor", "/api/v1/audit?actor=user-7&limit=100"},
		{"audit page of 100 by actor, environment", "/api/v1/audit?actor=user-7&environment=prod&limit=100"},
	}
	for _, q := range queries {
		var took []time.Duration
		var size int
		for range 5 {
			req, _ := http.NewRequest("GET", base+q.path, nil)
			req.Header.Set("Authorization", "Bearer "+restartToken)
			start := time.Now()
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			took = append(took, time.Since(start))
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("%s: %d %s", q.path, resp.StatusCode, body)
			}
			size = len(body)
		}
		slices.Sort(took)
		t.Logf("RESULT query=%q min=%v median=%v bytes=%d", q.name, took[0].Round(time.Microsecond), took[len(took)/2].Round(time.Microsecond), size)
	}
}
