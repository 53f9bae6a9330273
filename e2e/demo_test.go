package e2e

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/interlock-dev/interlock/internal/await"
)

// The demo service runs as its own process, built once for the whole package from
// cmd/interlock-demo, and is driven over HTTP as an operator would: its status, its knob, and
// its /metrics in the text format.

// within bounds every asynchronous check of the demo.
const within = 20 * time.Second

const (
	env     = "production"
	flagKey = "checkout-v2"
)

// demoBinary is the demo's executable, built by TestMain.
var demoBinary string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "interlock-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	demoBinary = filepath.Join(dir, "interlock-demo")
	build := exec.Command("go", "build", "-o", demoBinary, "github.com/interlock-dev/interlock/cmd/interlock-demo")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	code := 1
	if err := build.Run(); err != nil {
		fmt.Fprintf(os.Stderr, "build the demo: %v\n", err)
	} else {
		code = m.Run()
	}
	os.RemoveAll(dir)
	os.Exit(code)
}

// system is the Interlock side the demo connects to.
type system struct {
	url   string
	token string // an Interlock token, for Interlock's embedded server
}

// demoProc is one run of the demo.
type demoProc struct {
	base   string // http://127.0.0.1:port
	stderr *await.Output
	stop   func() int // interrupts the process and returns its exit code
}

var listening = regexp.MustCompile(`msg=listening addr=(\S+)`)

// start runs the demo against s on 127.0.0.1:0 with args added, and waits until it listens. The
// process is interrupted when the test ends; it must exit with 0 then.
func start(t *testing.T, s *system, args ...string) *demoProc {
	t.Helper()
	p := &demoProc{stderr: &await.Output{}}
	all := append([]string{"--nats-url", s.url, "--listen", "127.0.0.1:0", "--env", env, "--report", "0", "--token", s.token}, args...)
	cmd := exec.Command(demoBinary, all...)
	cmd.Stdout, cmd.Stderr = io.Discard, p.stderr
	if err := cmd.Start(); err != nil {
		t.Fatalf("start the demo: %v", err)
	}
	exited := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(exited)
	}()
	var once sync.Once
	result := -1
	p.stop = func() int {
		once.Do(func() {
			_ = cmd.Process.Signal(os.Interrupt)
			select {
			case <-exited:
				result = cmd.ProcessState.ExitCode()
			case <-time.After(within):
				t.Errorf("the demo did not exit within %v of an interrupt", within)
				_ = cmd.Process.Kill()
				<-exited
			}
		})
		return result
	}
	t.Cleanup(func() {
		if c := p.stop(); c != 0 {
			t.Errorf("the demo exited with %d when interrupted, want 0; stderr:\n%s", c, p.stderr.String())
		}
	})
	await.Eventually(t, within, func() bool {
		m := listening.FindStringSubmatch(p.stderr.String())
		if m == nil {
			select {
			case <-exited:
				t.Fatalf("the demo exited with %d before listening; stderr:\n%s", cmd.ProcessState.ExitCode(), p.stderr.String())
			default:
			}
			return false
		}
		p.base = "http://" + m[1]
		return true
	}, "the demo to listen; stderr:\n%s", p.stderr)
	return p
}

// status is the part of the demo's GET / the tests read.
type status struct {
	Last *struct {
		FlagVersion uint64 `json:"flagVersion"`
	} `json:"last"`
}

// knobState is the part of the demo's knob the tests read.
type knobState struct {
	FailVariant string `json:"failVariant"`
}

// postKnob posts body to /knob and returns the status code and the decoded answer.
func (p *demoProc) postKnob(t *testing.T, body string) (int, knobState, string) {
	t.Helper()
	resp, err := http.Post(p.base+"/knob", "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	var k knobState
	if resp.StatusCode == http.StatusOK {
		if err := json.Unmarshal(raw, &k); err != nil {
			t.Fatalf("POST /knob: decode %q: %v", raw, err)
		}
	}
	return resp.StatusCode, k, string(raw)
}

// statusUntil polls GET / until cond holds, and returns the status.
func (p *demoProc) statusUntil(t *testing.T, what string, cond func(status) bool) status {
	t.Helper()
	var st status
	await.Eventually(t, within, func() bool {
		st = status{}
		resp, err := http.Get(p.base + "/")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("GET /: %d", resp.StatusCode)
		}
		if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
			t.Fatalf("GET /: decode: %v", err)
		}
		return cond(st)
	}, "%s; last status %+v", what, &st)
	return st
}

// tally is one variant's counters as the demo exposes them.
type tally struct {
	Requests, Errors uint64
	LatencySum       float64
}

// counts are the exposed counters by variant.
type counts map[string]tally

// scrape reads /metrics as Prometheus would (text format): requests_total, errors_total and the
// sum of request_duration_seconds, by variant, of the flag flagKey.
func (p *demoProc) scrape(t *testing.T) counts {
	t.Helper()
	resp, err := http.Get(p.base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /metrics: %d", resp.StatusCode)
	}
	parser := expfmt.NewTextParser(model.LegacyValidation)
	fams, err := parser.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("parse /metrics: %v", err)
	}
	out := counts{}
	each := func(name string, f func(c *tally, m *dto.Metric)) {
		for _, m := range fams[name].GetMetric() {
			labels := map[string]string{}
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			if labels["flag"] != flagKey {
				t.Fatalf("%s has labels %v, want flag=%q and variant", name, labels, flagKey)
			}
			c := out[labels["variant"]]
			f(&c, m)
			out[labels["variant"]] = c
		}
	}
	each("requests_total", func(c *tally, m *dto.Metric) { c.Requests = uint64(m.GetCounter().GetValue()) })
	each("errors_total", func(c *tally, m *dto.Metric) { c.Errors = uint64(m.GetCounter().GetValue()) })
	each("request_duration_seconds", func(c *tally, m *dto.Metric) { c.LatencySum = m.GetHistogram().GetSampleSum() })
	return out
}

// scrapeUntil scrapes until cond holds for the counts, and returns them.
func (p *demoProc) scrapeUntil(t *testing.T, what string, cond func(counts) bool) counts {
	t.Helper()
	var c counts
	await.Eventually(t, within, func() bool {
		c = p.scrape(t)
		return cond(c)
	}, "%s; last scrape %v", what, &c)
	return c
}
