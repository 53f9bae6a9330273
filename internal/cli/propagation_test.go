package cli_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/interlock-dev/interlock/events"
	"github.com/interlock-dev/interlock/internal/app"
	"github.com/interlock-dev/interlock/internal/await"
	"github.com/interlock-dev/interlock/internal/cli"
	"github.com/interlock-dev/interlock/internal/config"
	"github.com/interlock-dev/interlock/local"
)

const wait = 20 * time.Second

type result struct {
	code           int
	stdout, stderr string
}

// waitServer is the real `interlock serve` on :0 with its embedded NATS server listening on
// loopback, and the CLI pointed at it.
type waitServer struct {
	m   *app.Main
	env map[string]string
}

func serve(t *testing.T) *waitServer {
	t.Helper()
	const token = "test-admin-token-0123456789"
	getenv := func(k string) string {
		if k == "INTERLOCK_ADMIN_TOKEN" {
			return token
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
	return &waitServer{m: m, env: map[string]string{"INTERLOCK_SERVER": "http://" + m.HTTPAddr(), "INTERLOCK_TOKEN": token}}
}

func (s *waitServer) run(t *testing.T, args ...string) result {
	t.Helper()
	var stdout, stderr bytes.Buffer
	code := cli.Run(context.Background(), args, strings.NewReader(""), &stdout, &stderr, func(k string) string { return s.env[k] })
	return result{code, stdout.String(), stderr.String()}
}

func (s *waitServer) must(t *testing.T, args ...string) result {
	t.Helper()
	r := s.run(t, args...)
	if r.code != 0 {
		t.Fatalf("interlock %s: exit %d\n%s%s", strings.Join(args, " "), r.code, r.stdout, r.stderr)
	}
	return r
}

// subscriber runs an in-process subscriber of prod over its own connection to the server's NATS.
func (s *waitServer) subscriber(t *testing.T, id, name string, interval time.Duration) (*local.Client, *nats.Conn) {
	t.Helper()
	nc, err := nats.Connect(s.m.NATSURL(), events.TokenAuth(s.env["INTERLOCK_TOKEN"]))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	c, err := local.New(nc, local.Config{Environment: "prod", ID: id, Name: name, HeartbeatInterval: interval})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("subscriber %s: %v", id, err)
		}
		c.Close()
	})
	return c, nc
}

type propagation struct {
	Sequence uint64 `json:"sequence"`
	Applied  int    `json:"applied"`
	Total    int    `json:"total"`
	Pending  []struct {
		ID   string `json:"id"`
		Name string `json:"name"`
	} `json:"pending"`
}

func TestKillWait(t *testing.T) {
	s := serve(t)
	s.must(t, "flags", "create", "prod/checkout", "--enabled", "--reason", "launch")

	// No subscribers yet: everybody (nobody) has applied it.
	r := s.must(t, "kill", "prod/checkout", "--reason", "incident 1", "--wait")
	if !strings.Contains(r.stdout, "killed prod/checkout") || !strings.Contains(r.stdout, "no live subscribers") {
		t.Fatalf("kill --wait without subscribers:\n%s", r.stdout)
	}
	s.must(t, "flags", "enable", "prod/checkout")

	// Two subscribers. The slow one announces a long heartbeat interval, so that the server
	// still counts it once its process is gone.
	s.subscriber(t, "svc-fast", "checkout-api", 100*time.Millisecond)
	_, slowConn := s.subscriber(t, "svc-slow", "billing-worker", time.Minute)
	await.Eventually(t, wait, func() bool {
		var p propagation
		r := s.run(t, "flags", "propagation", "prod/checkout", "-o", "json")
		return r.code == 0 && json.Unmarshal([]byte(r.stdout), &p) == nil && p.Total == 2 && p.Applied == 2
	}, "both subscribers applied the enable")
	r = s.must(t, "subscribers", "prod")
	if !strings.Contains(r.stdout, "svc-fast") || !strings.Contains(r.stdout, "billing-worker") {
		t.Fatalf("subscribers:\n%s", r.stdout)
	}

	r = s.must(t, "kill", "prod/checkout", "--reason", "incident 2", "--wait", "--wait-timeout", "10s")
	if !strings.Contains(r.stdout, "applied on 2 of 2 live subscribers") {
		t.Fatalf("kill --wait with both subscribers alive:\n%s", r.stdout)
	}

	s.must(t, "flags", "enable", "prod/checkout")
	await.Eventually(t, wait, func() bool {
		var p propagation
		r := s.run(t, "flags", "propagation", "prod/checkout", "-o", "json")
		return r.code == 0 && json.Unmarshal([]byte(r.stdout), &p) == nil && p.Applied == 2
	}, "both subscribers applied the second enable")
	slowConn.Close() // the slow subscriber's process is gone, without a goodbye

	r = s.run(t, "kill", "prod/checkout", "--reason", "incident 3", "--wait", "--wait-timeout", "2s")
	if r.code != cli.ExitPending {
		t.Fatalf("kill --wait with a dead subscriber: exit %d, want %d\n%s%s", r.code, cli.ExitPending, r.stdout, r.stderr)
	}
	if !strings.Contains(r.stdout, "killed prod/checkout") || !strings.Contains(r.stdout, "applied on 1 of 2 live subscribers") ||
		!strings.Contains(r.stdout, "svc-slow") || !strings.Contains(r.stdout, "billing-worker") || strings.Contains(r.stdout, "svc-fast") {
		t.Fatalf("kill --wait output:\n%s", r.stdout)
	}
	if !strings.Contains(r.stderr, "1 live subscriber of 2 has not applied the kill within 2s") {
		t.Fatalf("kill --wait error:\n%s", r.stderr)
	}

	// The same as JSON: one document with the flag and the propagation.
	r = s.run(t, "flags", "propagation", "prod/checkout")
	if r.code != 0 || !strings.Contains(r.stdout, "applied on 1 of 2") || !strings.Contains(r.stdout, "billing-worker") {
		t.Fatalf("flags propagation: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	s.must(t, "flags", "enable", "prod/checkout")
	r = s.run(t, "kill", "prod/checkout", "--reason", "incident 4", "--wait", "--wait-timeout", "1s", "-o", "json")
	var doc struct {
		Flag struct {
			Key     string `json:"key"`
			Enabled bool   `json:"enabled"`
		} `json:"flag"`
		Propagation propagation `json:"propagation"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &doc); err != nil {
		t.Fatalf("kill --wait -o json is not one JSON document: %v\n%s", err, r.stdout)
	}
	if r.code != cli.ExitPending || doc.Flag.Key != "checkout" || doc.Flag.Enabled || doc.Propagation.Total != 2 || doc.Propagation.Applied != 1 ||
		len(doc.Propagation.Pending) != 1 || doc.Propagation.Pending[0].ID != "svc-slow" {
		t.Fatalf("kill --wait -o json: exit %d %+v", r.code, doc)
	}
}

func TestKillWaitUsage(t *testing.T) {
	s := serve(t)
	s.must(t, "flags", "create", "prod/checkout", "--enabled")
	for _, args := range [][]string{
		{"kill", "prod/checkout", "--reason", "x", "--wait-timeout", "1s"},
		{"kill", "prod/checkout", "--reason", "x", "--wait", "--wait-timeout", "0s"},
		{"flags", "propagation", "prod/checkout", "--sequence", "0"},
		{"flags", "propagation"},
		{"subscribers", "Prod"},
	} {
		if r := s.run(t, args...); r.code != cli.ExitUsage {
			t.Errorf("interlock %s: exit %d, want %d\n%s", strings.Join(args, " "), r.code, cli.ExitUsage, r.stderr)
		}
	}
	if r := s.run(t, "flags", "propagation", "prod/nope"); r.code != cli.ExitNotFound {
		t.Errorf("propagation of a missing flag: exit %d, want %d", r.code, cli.ExitNotFound)
	}
	// Nothing was killed by the refused commands.
	r := s.must(t, "flags", "get", "prod/checkout", "-o", "json")
	var f struct {
		Enabled bool `json:"enabled"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &f); err != nil || !f.Enabled {
		t.Fatalf("the flag after refused commands: %s", r.stdout)
	}
}
