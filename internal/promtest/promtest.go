// Package promtest runs a real Prometheus server for tests: the Debian package's binary, on a
// random loopback port, with its storage in a temporary directory, stopped when the test ends.
//
// A test that needs Prometheus skips, naming the package, when the binary is missing: `make test`
// installs the package where it can (.ci/test-deps) and a missing package never fails the suite.
package promtest

import (
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/common/model"

	"github.com/interlock-dev/interlock/internal/await"
	"github.com/interlock-dev/interlock/internal/testdeps"
)

// Bounds of the waits for the process.
const (
	startTimeout = 30 * time.Second // until it listens and answers /-/ready
	stopTimeout  = 15 * time.Second // after SIGINT, before SIGKILL
)

// Binary returns the path of name, a program of the Debian package prometheus ("prometheus" or
// "promtool"). It skips the test, naming the package, when the program is missing.
func Binary(tb testing.TB, name string) string {
	tb.Helper()
	return testdeps.Program(tb, name, "prometheus")
}

// Start runs a real Prometheus on a random port of 127.0.0.1 that scrapes targets (host:port
// each, path /metrics) every scrapeInterval under the job name "demo", with its storage in a
// temporary directory. It returns the server's base URL, such as "http://127.0.0.1:41234", once
// the server is ready. The process is stopped by its PID when the test ends (SIGINT, then
// SIGKILL after 15s), and its output is logged if the test failed.
func Start(tb testing.TB, targets []string, scrapeInterval time.Duration) string {
	tb.Helper()
	bin := Binary(tb, "prometheus")
	if scrapeInterval < 10*time.Millisecond {
		tb.Fatalf("promtest: scrape interval %v is shorter than 10ms", scrapeInterval)
	}
	dir := tb.TempDir()
	configFile := filepath.Join(dir, "prometheus.yml")
	if err := os.WriteFile(configFile, []byte(config(targets, scrapeInterval)), 0o600); err != nil {
		tb.Fatalf("promtest: write config: %v", err)
	}
	var out await.Output
	cmd := exec.Command(bin,
		"--config.file="+configFile,
		"--storage.tsdb.path="+filepath.Join(dir, "data"),
		"--web.listen-address=127.0.0.1:0",
	)
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		tb.Fatalf("promtest: start prometheus: %v", err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	tb.Cleanup(func() {
		_ = cmd.Process.Signal(os.Interrupt)
		select {
		case <-exited:
		case <-time.After(stopTimeout):
			_ = cmd.Process.Kill()
			<-exited
		}
		if tb.Failed() {
			tb.Logf("prometheus output:\n%s", out.String())
		}
	})

	deadline := time.Now().Add(startTimeout)
	var base string
	for base == "" {
		if m := listening.FindStringSubmatch(out.String()); m != nil {
			base = "http://" + m[1]
			break
		}
		select {
		case err := <-exited:
			tb.Fatalf("promtest: prometheus exited early (%v):\n%s", err, out.String())
		default:
		}
		if time.Now().After(deadline) {
			tb.Fatalf("promtest: prometheus did not say where it listens within %v:\n%s", startTimeout, out.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	client := &http.Client{Timeout: time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	for !ready(client, base) {
		if time.Now().After(deadline) {
			tb.Fatalf("promtest: prometheus at %s not ready within %v:\n%s", base, startTimeout, out.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	return base
}

// listening finds the address in Prometheus's log line
// `msg="Listening on" address=127.0.0.1:41234`.
var listening = regexp.MustCompile(`msg="Listening on" address=(127\.0\.0\.1:[0-9]+)`)

// config is the configuration file of a server scraping targets every interval.
func config(targets []string, interval time.Duration) string {
	quoted := make([]string, len(targets))
	for i, t := range targets {
		quoted[i] = fmt.Sprintf("%q", t)
	}
	return fmt.Sprintf(`global:
  scrape_interval: %s
  scrape_timeout: %s
scrape_configs:
  - job_name: demo
    static_configs:
      - targets: [%s]
`, model.Duration(interval), model.Duration(interval*9/10), strings.Join(quoted, ", "))
}

func ready(client *http.Client, base string) bool {
	resp, err := client.Get(base + "/-/ready")
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}
