package promtest

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/interlock-dev/interlock/internal/await"
)

// The configuration Start writes is valid for the installed Prometheus.
func TestConfigIsValid(t *testing.T) {
	promtool := Binary(t, "promtool")
	for _, interval := range []time.Duration{500 * time.Millisecond, time.Second, 90 * time.Second} {
		t.Run(interval.String(), func(t *testing.T) {
			file := filepath.Join(t.TempDir(), "prometheus.yml")
			if err := os.WriteFile(file, []byte(config([]string{"127.0.0.1:1", "127.0.0.1:2"}, interval)), 0o600); err != nil {
				t.Fatal(err)
			}
			if out, err := exec.Command(promtool, "check", "config", file).CombinedOutput(); err != nil {
				t.Fatalf("promtool check config: %v\n%s", err, out)
			}
		})
	}
}

// A started server scrapes its target: the target's counter can be queried.
func TestStartScrapesTargets(t *testing.T) {
	target := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; version=0.0.4")
		fmt.Fprint(w, "# TYPE promtest_total counter\npromtest_total 42\n")
	}))
	defer target.Close()
	base := Start(t, []string{strings.TrimPrefix(target.URL, "http://")}, 500*time.Millisecond)

	await.Until(t, 30*time.Second, 50*time.Millisecond, func() error {
		v, err := query(base, "promtest_total")
		if err == nil && v == "42" {
			return nil
		}
		return fmt.Errorf("promtest_total never read 42 through %s: last %q, %v", base, v, err)
	})
}

// query returns the value of the single sample of an instant query.
func query(base, q string) (string, error) {
	resp, err := http.Get(base + "/api/v1/query?" + url.Values{"query": {q}}.Encode())
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	var body struct {
		Data struct {
			Result []struct {
				Value [2]any `json:"value"`
			} `json:"result"`
		} `json:"data"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		return "", err
	}
	if len(body.Data.Result) != 1 {
		return "", fmt.Errorf("%d samples", len(body.Data.Result))
	}
	v, _ := body.Data.Result[0].Value[1].(string)
	return v, nil
}
