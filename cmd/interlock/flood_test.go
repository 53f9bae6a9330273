package main

import (
	"bufio"
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/interlock-dev/interlock/internal/await"
)

// TestMeasureSSEFlood measures the memory of a real `interlock serve` process before, during and
// after 500 live event-feed clients (16 tokens, under the per-token cap). It is a measurement,
// not a check: run it with INTERLOCK_MEASURE=1 and read the log.
//
//	INTERLOCK_MEASURE=1 go test -count=1 -run TestMeasureSSEFlood -v ./cmd/interlock/
func TestMeasureSSEFlood(t *testing.T) {
	if os.Getenv("INTERLOCK_MEASURE") != "1" {
		t.Skip("a measurement: set INTERLOCK_MEASURE=1")
	}
	dir := t.TempDir()
	bin := filepath.Join(dir, "interlock")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	cmd := exec.Command(bin, "serve", "--data", filepath.Join(dir, "data"), "--http", "127.0.0.1:0", "--nats-listen", "none", "--log-level", "error")
	cmd.Env = append(os.Environ(), "INTERLOCK_ADMIN_TOKEN=flood-admin-token-0123456789")
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Signal(os.Interrupt); _ = cmd.Wait() })
	sc := bufio.NewScanner(stdout)
	var base string
	for sc.Scan() {
		if m := regexp.MustCompile(`serving (http://\S+)`).FindStringSubmatch(sc.Text()); m != nil {
			base = m[1]
			break
		}
	}
	go func() {
		for sc.Scan() {
		}
	}()
	if base == "" {
		t.Fatal("no address in the banner")
	}
	admin := "flood-admin-token-0123456789"
	await.Eventually(t, 20*time.Second, func() bool {
		resp, err := http.Get(base + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == 200
	}, "ready")
	rss := func() int {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", cmd.Process.Pid))
		if err != nil {
			t.Fatal(err)
		}
		m := regexp.MustCompile(`VmRSS:\s+(\d+) kB`).FindSubmatch(b)
		n, _ := strconv.Atoi(string(m[1]))
		return n / 1024
	}
	t.Logf("RSS before: %d MB", rss())

	var tokens []string
	for i := range 16 {
		req, _ := http.NewRequest("POST", base+"/api/v1/tokens", strings.NewReader(fmt.Sprintf(`{"name":"flood-%d","role":"reader"}`, i)))
		req.Header.Set("Authorization", "Bearer "+admin)
		req.Header.Set("Content-Type", "application/json")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b := make([]byte, 4096)
		n, _ := resp.Body.Read(b)
		resp.Body.Close()
		tok := regexp.MustCompile(`"token":"([^"]+)"`).FindSubmatch(b[:n])
		tokens = append(tokens, string(tok[1]))
	}
	ctx, cancel := context.WithCancel(context.Background())
	tr := &http.Transport{MaxConnsPerHost: 0, MaxIdleConnsPerHost: 600}
	var open []*http.Response
	for i := range 500 {
		req, _ := http.NewRequestWithContext(ctx, "GET", base+"/api/v1/events?after=0", nil)
		req.Header.Set("Authorization", "Bearer "+tokens[i%len(tokens)])
		resp, err := tr.RoundTrip(req)
		if err != nil || resp.StatusCode != 200 {
			t.Fatalf("feed %d: %v %v", i, err, resp)
		}
		open = append(open, resp)
	}
	time.Sleep(2 * time.Second) // let the server settle with 500 feeds open: what is measured
	t.Logf("RSS with 500 feeds: %d MB", rss())
	cancel()
	for _, r := range open {
		r.Body.Close()
	}
	tr.CloseIdleConnections()
	time.Sleep(10 * time.Second) // the feeds' consumers go, and the heap is given back in time
	t.Logf("RSS 10 s after they left: %d MB", rss())
}
