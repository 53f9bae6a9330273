package app_test

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/interlock-dev/interlock/internal/app"
	"github.com/interlock-dev/interlock/internal/config"
	"github.com/interlock-dev/interlock/internal/natstest"
)

// TestReadyzTellsTheTruth: /readyz answers 503 naming the event store while NATS is down, and
// 200 again once it is back; /healthz stays the process's liveness throughout.
func TestReadyzTellsTheTruth(t *testing.T) {
	dir := t.TempDir()
	srv := natstest.RunServer(t, natstest.Options{StoreDir: dir})
	cfg := config.Default()
	cfg.NATSURL = srv.ClientURL()
	cfg.HTTP = "127.0.0.1:0"
	cfg.AdminToken = "ready-admin-token-0123456789"
	cfg.SigningKey = natstest.SigningKeyFile(t)
	m, err := app.Start(context.Background(), cfg, slog.New(slog.DiscardHandler), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	base := "http://" + m.HTTPAddr()
	probe := func(path string) (int, map[string]any) {
		resp, err := http.Get(base + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var body map[string]any
		_ = json.NewDecoder(resp.Body).Decode(&body)
		return resp.StatusCode, body
	}
	natstest.Eventually(t, 10*time.Second, func() bool { s, _ := probe("/readyz"); return s == 200 }, "ready")

	port := srv.Addr().(*net.TCPAddr).Port
	natstest.Shutdown(srv)
	var cause string
	natstest.Eventually(t, 10*time.Second, func() bool {
		s, body := probe("/readyz")
		cause, _ = body["cause"].(string)
		return s == http.StatusServiceUnavailable
	}, "/readyz answers 503 while NATS is down")
	if !strings.Contains(cause, "event store") {
		t.Errorf("cause %q does not name the event store", cause)
	}
	if s, _ := probe("/healthz"); s != 200 {
		t.Errorf("/healthz = %d while NATS is down, want 200: the process lives", s)
	}

	natstest.RunServer(t, natstest.Options{StoreDir: dir, Port: port})
	natstest.Eventually(t, 30*time.Second, func() bool { s, _ := probe("/readyz"); return s == 200 }, "ready again once NATS is back")
}
