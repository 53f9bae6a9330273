package app

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/interlock-dev/interlock/internal/await"
	"github.com/interlock-dev/interlock/internal/config"
)

// The guard fetches what a writer's plan names, so the server decides which URLs a plan may
// name: by default only this machine's loopback addresses, otherwise the --guard-sources.
func TestGuardSourcesRefusePlansBeforeAnythingIsWritten(t *testing.T) {
	for _, tc := range []struct {
		name    string
		sources []string
		want    map[string]int // source URL → status of the create
	}{
		{"default: loopback only", nil, map[string]int{
			"http://prometheus:9090":                   http.StatusBadRequest,
			"http://169.254.169.254/latest/meta-data/": http.StatusBadRequest,
			"http://10.1.2.3:9090/metrics":             http.StatusBadRequest,
			"http://127.0.0.1:8081/metrics":            http.StatusCreated,
		}},
		{"configured", []string{"http://prometheus:9090"}, map[string]int{
			"http://127.0.0.1:8081/metrics":      http.StatusBadRequest,
			"http://prometheus:9090/../admin":    http.StatusBadRequest,
			"http://prometheus:9090":             http.StatusCreated,
			"http://prometheus:9090/api/v1/read": http.StatusCreated,
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := config.Default()
			cfg.NATSListen = ""
			cfg.Data = t.TempDir()
			cfg.NoSync = true
			cfg.HTTP = "127.0.0.1:0"
			cfg.AdminToken = fleetToken
			cfg.GuardSources = tc.sources
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			m, err := Start(ctx, cfg, slog.New(slog.DiscardHandler), io.Discard)
			if err != nil {
				t.Fatal(err)
			}
			defer func() {
				if err := m.Close(); err != nil {
					t.Error(err)
				}
			}()
			await.Eventually(t, 20*time.Second, m.Ready, "ready")
			base := "http://" + m.HTTPAddr() + "/api/v1/environments/" + fleetEnv + "/flags"
			client := &http.Client{Timeout: 30 * time.Second}
			defer client.CloseIdleConnections()
			do := func(method, url, body string) (int, string) {
				t.Helper()
				req, _ := http.NewRequestWithContext(ctx, method, url, strings.NewReader(body))
				req.Header.Set("Authorization", "Bearer "+fleetToken)
				req.Header.Set("Content-Type", "application/json")
				req.Header.Set("X-Interlock-Reason", "sources test")
				resp, err := client.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				defer resp.Body.Close()
				b, _ := io.ReadAll(resp.Body)
				return resp.StatusCode, string(b)
			}
			i := 0
			for source, want := range tc.want {
				i++
				key := "f" + string(rune('a'+i))
				if code, body := do("POST", base, `{"key":"`+key+`","kind":"release","variants":{"on":true,"off":false},"defaultVariant":"off","offVariant":"off","enabled":true}`); code != http.StatusCreated {
					t.Fatalf("create flag: %d %s", code, body)
				}
				plan := `{"treatment":"on","control":"off","metrics":[{"name":"errors","requests":"requests_total","errors":"errors_total"}],` +
					`"source":{"type":"prometheus","url":"` + source + `"}}`
				code, body := do("POST", base+"/"+key+"/rollout", plan)
				if code != want {
					t.Errorf("%s: %d, want %d: %s", source, code, want, body)
					continue
				}
				if code == http.StatusBadRequest && !strings.Contains(body, "source") {
					t.Errorf("%s: the refusal does not name the source: %s", source, body)
				}
				fl, _ := m.Catalog().Flag(fleetEnv, key)
				if (fl.Rollout != nil) != (code == http.StatusCreated) {
					t.Errorf("%s: answered %d, but the flag's rollout is %+v", source, code, fl.Rollout)
				}
			}
		})
	}
}
