// Command interlock-loadtest measures Interlock's OFREP evaluation under load against a do-nothing Go HTTP
// server that answers the same requests with a fixed body, with the same load generator (wrk) in
// the same run, and writes the numbers as Markdown.
//
// It boots the real server in-process (app.Start: embedded NATS, the event store, projections,
// the token store, the HTTP server with the admin API and OFREP), creates flags through the admin
// API, issues a reader token, and starts the do-nothing server in the same process on a listener
// of its own, so that both run on the same Go runtime, heap and garbage collector pacing (a
// do-nothing server in a process of its own has a tiny heap, collects far more often, and is
// slower: a weaker baseline). Then, for each scenario, it alternates wrk runs against the two
// servers for a number of rounds (the order swaps every round, so drift on a shared machine falls
// on both alike) and reports requests per second, p50 and p99 of both and their ratio.
// Everything listens on loopback; every run is bounded in connections and time.
//
// Usage:
//
//	go run ./cmd/interlock-loadtest [-rounds 5] [-duration 10s] [-connections 64] [-threads 2] [-out docs/bench/ofrep.md]
//
// It needs wrk on the PATH (Debian: apt-get install wrk).
package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"regexp"
	"runtime"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/interlock-dev/interlock/internal/app"
	"github.com/interlock-dev/interlock/internal/auth"
	"github.com/interlock-dev/interlock/internal/config"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "loadtest:", err)
		os.Exit(1)
	}
}

// options of a measurement.
type options struct {
	rounds      int
	duration    time.Duration
	warmup      time.Duration
	connections int
	threads     int
	out         string
	cpuprofile  string
}

// scenario is one kind of request, sent to both servers.
type scenario struct {
	name string
	path string
	body string
}

var scenarios = []scenario{
	{"single flag, targeting rule (role in [beta, alpha])", "/ofrep/v1/evaluate/flags/button-color",
		`{"context":{"targetingKey":"user-1234","role":"beta","country":"NL"}}`},
	{"single flag, static bool", "/ofrep/v1/evaluate/flags/static-bool",
		`{"context":{"targetingKey":"user-1234"}}`},
	{"bulk, 3 flags", "/ofrep/v1/evaluate/flags",
		`{"context":{"targetingKey":"user-1234","role":"beta"}}`},
}

// flags created before measuring, as the admin API takes them.
var flags = []string{
	`{"key":"static-bool","kind":"release","variants":{"on":true,"off":false},"defaultVariant":"on","offVariant":"off","enabled":true}`,
	`{"key":"button-color","kind":"experiment","variants":{"blue":"blue","green":"green"},"defaultVariant":"blue","offVariant":"blue","enabled":true,
	  "rules":[{"name":"beta users","conditions":[{"attribute":"role","operator":"in","values":["beta","alpha"]}],"serve":{"variant":"green"}}]}`,
	`{"key":"new-checkout","kind":"release","variants":{"on":true,"off":false},"defaultVariant":"off","offVariant":"off","enabled":true,
	  "defaultServe":{"split":{"on":25,"off":75}}}`,
}

func run(ctx context.Context, args []string, stdout io.Writer) error {
	var o options
	fs := flag.NewFlagSet("loadtest", flag.ContinueOnError)
	fs.IntVar(&o.rounds, "rounds", 5, "measured rounds per scenario and server")
	fs.DurationVar(&o.duration, "duration", 10*time.Second, "length of each wrk run")
	fs.DurationVar(&o.warmup, "warmup", 3*time.Second, "length of the unmeasured first run against each server")
	fs.IntVar(&o.connections, "connections", 64, "concurrent keep-alive connections")
	fs.IntVar(&o.threads, "threads", 2, "wrk threads")
	fs.StringVar(&o.out, "out", "", "also write the Markdown report to this file")
	fs.StringVar(&o.cpuprofile, "cpuprofile", "", "write a CPU profile of this process (the Interlock server) to this file")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if o.rounds < 1 || o.rounds > 50 || o.duration <= 0 || o.duration > 5*time.Minute || o.connections < 1 || o.connections > 1024 || o.threads < 1 {
		return errors.New("rounds 1-50, duration up to 5m, connections 1-1024, threads ≥ 1")
	}
	wrk, err := exec.LookPath("wrk")
	if err != nil {
		return fmt.Errorf("wrk is needed (apt-get install wrk): %w", err)
	}
	dir, err := os.MkdirTemp("", "interlock-loadtest-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)

	srv, token, err := startReal(ctx, dir)
	if err != nil {
		return err
	}
	defer srv.Close()
	base := "http://" + srv.HTTPAddr()

	if o.cpuprofile != "" {
		f, err := os.Create(o.cpuprofile)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}
	var report bytes.Buffer
	header(&report, o, wrk)
	for _, sc := range scenarios {
		if err := measure(ctx, &report, o, wrk, dir, base, token, sc); err != nil {
			return fmt.Errorf("%s: %w", sc.name, err)
		}
	}
	fmt.Fprintf(&report, "Load average (1, 5, 15 min) when the measurement ended: %s. Other work shared the machine during the run; the rounds alternate so that it falls on both servers alike.\n", loadavg())
	if _, err := stdout.Write(report.Bytes()); err != nil {
		return err
	}
	if o.out != "" {
		return os.WriteFile(o.out, report.Bytes(), 0o644)
	}
	return nil
}

// startReal boots Interlock in-process, creates the flags and issues a reader token.
func startReal(ctx context.Context, dir string) (*app.Main, string, error) {
	var raw [24]byte
	_, _ = rand.Read(raw[:])
	admin := hex.EncodeToString(raw[:])
	cfg := config.Default()
	cfg.Data = filepath.Join(dir, "data")
	cfg.HTTP = "127.0.0.1:0"
	cfg.NATSListen = "127.0.0.1:-1"
	cfg.NoSync = true // nothing is written while measuring; creating the flags need not wait for disks
	cfg.AdminToken = admin
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	// The label marks this server's goroutines in a CPU profile (-cpuprofile; go tool pprof
	// -tagfocus server=interlock).
	var m *app.Main
	var err error
	pprof.Do(ctx, pprof.Labels("server", "interlock"), func(ctx context.Context) {
		m, err = app.Start(ctx, cfg, logger, io.Discard)
	})
	if err != nil {
		return nil, "", fmt.Errorf("start interlock: %w", err)
	}
	base := "http://" + m.HTTPAddr()
	deadline := time.Now().Add(30 * time.Second)
	for !m.Ready() {
		if time.Now().After(deadline) {
			m.Close()
			return nil, "", errors.New("interlock not ready after 30s")
		}
		time.Sleep(20 * time.Millisecond)
	}
	for _, f := range flags {
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, base+"/api/v1/environments/production/flags", strings.NewReader(f))
		if err != nil {
			m.Close()
			return nil, "", err
		}
		req.Header.Set("Authorization", "Bearer "+admin)
		req.Header.Set("Content-Type", "application/json")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			m.Close()
			return nil, "", fmt.Errorf("create flag: %w", err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusCreated {
			m.Close()
			return nil, "", fmt.Errorf("create flag: %d %s", resp.StatusCode, b)
		}
	}
	token, err := issueReader(ctx, m.NATSURL())
	if err != nil {
		m.Close()
		return nil, "", err
	}
	return m, token, nil
}

// issueReader issues a reader token on the server's token bucket, as an operator would.
func issueReader(ctx context.Context, url string) (string, error) {
	nc, err := nats.Connect(url)
	if err != nil {
		return "", fmt.Errorf("connect to nats: %w", err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return "", err
	}
	tokens, err := auth.Open(ctx, js, 1)
	if err != nil {
		return "", err
	}
	return tokens.Issue(ctx, "loadtest", auth.RoleReader)
}

// result is one wrk run.
type result struct {
	rps      float64
	p50, p99 time.Duration
	// cpu is the CPU time this process (the server under test; the other is idle) spent per
	// request: less disturbed by other work on the machine than throughput is.
	cpu time.Duration
	// allocs is the heap allocations per request in this process; gcs the collections per
	// second of the run.
	allocs, gcs float64
}

func measure(ctx context.Context, report *bytes.Buffer, o options, wrk, dir, base, token string, sc scenario) error {
	// The do-nothing server answers with exactly what the real one answers.
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, base+sc.path, strings.NewReader(sc.body))
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	answer, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil || resp.StatusCode != http.StatusOK {
		return fmt.Errorf("probe: %d %s %v", resp.StatusCode, answer, err)
	}
	fixed, stopFixed, err := startFixed(answer)
	if err != nil {
		return err
	}
	defer stopFixed()

	script := filepath.Join(dir, "post.lua")
	lua := fmt.Sprintf("wrk.method = \"POST\"\nwrk.body = %q\nwrk.headers[\"Content-Type\"] = \"application/json\"\nwrk.headers[\"Authorization\"] = \"Bearer \" .. os.getenv(\"OFREP_TOKEN\")\n", sc.body)
	if err := os.WriteFile(script, []byte(lua), 0o600); err != nil {
		return err
	}
	targets := map[string]string{"do-nothing": "http://" + fixed + sc.path, "interlock": base + sc.path}
	wrkRun := func(target string, d time.Duration) (result, error) {
		return runWrk(ctx, wrk, token, o, d, script, targets[target])
	}
	for _, t := range []string{"do-nothing", "interlock"} {
		if _, err := wrkRun(t, o.warmup); err != nil && !errors.Is(err, errStalled) {
			return err
		}
	}
	var rows [][2]result
	repeats := 0
	for r := 0; r < o.rounds; r++ {
		order := []string{"do-nothing", "interlock"}
		if r%2 == 1 {
			order = []string{"interlock", "do-nothing"}
		}
		var row [2]result
		var stalled error
		for _, t := range order {
			res, err := wrkRun(t, o.duration)
			if errors.Is(err, errStalled) {
				stalled = err
				break
			}
			if err != nil {
				return err
			}
			if t == "do-nothing" {
				row[0] = res
			} else {
				row[1] = res
			}
		}
		if stalled != nil {
			// The machine stalled (requests timed out): the round says nothing about either
			// server. It is measured again, both servers, a bounded number of times.
			if repeats++; repeats > o.rounds {
				return stalled
			}
			fmt.Fprintf(os.Stderr, "%s, round %d: %v; measuring the round again\n", sc.name, r+1, stalled)
			r--
			continue
		}
		rows = append(rows, row)
		fmt.Fprintf(os.Stderr, "%s, round %d: do-nothing %.0f rps, interlock %.0f rps (%.1f%%)\n",
			sc.name, r+1, row[0].rps, row[1].rps, 100*row[1].rps/row[0].rps)
	}
	table(report, sc, answer, rows, repeats)
	return nil
}

var (
	reRPS      = regexp.MustCompile(`Requests/sec:\s+([0-9.]+)`)
	reLatency  = regexp.MustCompile(`(?m)^\s+(50|99)%\s+([0-9.]+)(us|ms|s)\s*$`)
	reRequests = regexp.MustCompile(`(\d+) requests in `)
	reErrors   = regexp.MustCompile(`Non-2xx or 3xx responses: (\d+)`)
	reSocket   = regexp.MustCompile(`Socket errors: .*`)
)

// errStalled means wrk saw requests time out or connections fail: on a shared machine, a stall
// of the whole machine rather than an answer from the server.
var errStalled = errors.New("wrk saw socket errors")

func runWrk(ctx context.Context, wrk, token string, o options, d time.Duration, script, url string) (result, error) {
	ctx, cancel := context.WithTimeout(ctx, d+30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, wrk, "-t"+strconv.Itoa(o.threads), "-c"+strconv.Itoa(o.connections),
		"-d"+strconv.Itoa(int(d/time.Second))+"s", "--latency", "-s", script, url)
	cmd.Env = append(os.Environ(), "OFREP_TOKEN="+token)
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	cpuBefore := cpuTime()
	out, err := cmd.CombinedOutput()
	cpuSpent := cpuTime() - cpuBefore
	runtime.ReadMemStats(&after)
	if err != nil {
		return result{}, fmt.Errorf("wrk: %w: %s", err, out)
	}
	if m := reErrors.Find(out); m != nil {
		return result{}, fmt.Errorf("wrk against %s saw errors (%s):\n%s", url, m, out)
	}
	if m := reSocket.Find(out); m != nil {
		return result{}, fmt.Errorf("%w against %s (%s)", errStalled, url, m)
	}
	var res result
	m := reRPS.FindSubmatch(out)
	if m == nil {
		return result{}, fmt.Errorf("no Requests/sec in wrk's output:\n%s", out)
	}
	res.rps, _ = strconv.ParseFloat(string(m[1]), 64)
	for _, l := range reLatency.FindAllSubmatch(out, -1) {
		v, _ := strconv.ParseFloat(string(l[2]), 64)
		unit := map[string]time.Duration{"us": time.Microsecond, "ms": time.Millisecond, "s": time.Second}[string(l[3])]
		dur := time.Duration(v * float64(unit))
		if string(l[1]) == "50" {
			res.p50 = dur
		} else {
			res.p99 = dur
		}
	}
	if res.p50 == 0 || res.p99 == 0 {
		return result{}, fmt.Errorf("no latency distribution in wrk's output:\n%s", out)
	}
	n := reRequests.FindSubmatch(out)
	if n == nil {
		return result{}, fmt.Errorf("no request count in wrk's output:\n%s", out)
	}
	count, _ := strconv.ParseFloat(string(n[1]), 64)
	if count > 0 {
		res.cpu = time.Duration(float64(cpuSpent) / count)
		res.allocs = float64(after.Mallocs-before.Mallocs) / count
	}
	res.gcs = float64(after.NumGC-before.NumGC) / d.Seconds()
	return res, nil
}

// startFixed starts the do-nothing server: every request gets the same JSON body. It is set up
// as app.Start sets up Interlock's server.
func startFixed(body []byte) (string, func(), error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", nil, err
	}
	contentType := []string{"application/json"}
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header()["Content-Type"] = contentType
			_, _ = w.Write(body)
		}),
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
	}
	done := make(chan struct{})
	go pprof.Do(context.Background(), pprof.Labels("server", "do-nothing"), func(context.Context) {
		defer close(done)
		_ = srv.Serve(ln)
	})
	stop := func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
		<-done
	}
	return ln.Addr().String(), stop, nil
}

func header(b *bytes.Buffer, o options, wrk string) {
	version, _ := exec.Command(wrk, "-v").CombinedOutput()
	cpu := "unknown"
	if info, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		if m := regexp.MustCompile(`(?m)^model name\s*:\s*(.+)$`).FindSubmatch(info); m != nil {
			cpu = string(m[1])
		}
	}
	fmt.Fprintf(b, "# OFREP under load\n\n")
	fmt.Fprintf(b, "Interlock's OFREP evaluation against a do-nothing Go HTTP server (net/http, a handler that writes a fixed body: the very answer Interlock gives) under the same load generator in the same run.\n")
	fmt.Fprintf(b, "The do-nothing server runs in Interlock's process on a listener of its own, so both have the same runtime, heap and GC pacing; in a process of its own it was slower than Interlock in most rounds of an early run (ratios of 101–109%%), most likely because with its tiny heap it collects garbage far more often: a weaker baseline.\n\n")
	fmt.Fprintf(b, "- Produced by: `go run ./cmd/interlock-loadtest -rounds %d -duration %s -connections %d -threads %d`\n", o.rounds, o.duration, o.connections, o.threads)
	fmt.Fprintf(b, "- Load generator: `%s` — each run is `wrk -t%d -c%d -d%ds --latency -s post.lua URL` (POST with the JSON body and `Authorization: Bearer <reader token>`)\n",
		strings.TrimSpace(strings.SplitN(string(version), "\n", 2)[0]), o.threads, o.connections, int(o.duration/time.Second))
	fmt.Fprintf(b, "- Machine: %d cores (%s), %s, GOMAXPROCS %d; wrk, both servers and everything else share the cores; loopback only\n", runtime.NumCPU(), cpu, runtime.Version(), runtime.GOMAXPROCS(0))
	fmt.Fprintf(b, "- Interlock: the whole server in one process as `interlock serve` runs it (embedded NATS, projections, token store, admin API and OFREP on one listener); the token is an issued reader token, authenticated on every request\n")
	fmt.Fprintf(b, "- Load average (1, 5, 15 min) when the measurement started: %s\n", loadavg())
	fmt.Fprintf(b, "- Each server gets a %s warm-up run first; then %d rounds alternate the two (the order swaps every round)\n\n", o.warmup, o.rounds)
}

func table(b *bytes.Buffer, sc scenario, answer []byte, rows [][2]result, repeats int) {
	fmt.Fprintf(b, "## %s\n\n`POST %s` with `%s`, answer (%d bytes) `%s`\n\n", sc.name, sc.path, sc.body, len(answer), truncate(string(answer), 160))
	fmt.Fprintf(b, "| round | do-nothing rps | Interlock rps | ratio | do-nothing p50 / p99 | Interlock p50 / p99 | server CPU per request: do-nothing / Interlock | allocations per request | GCs per second |\n|---|---|---|---|---|---|---|---|---|\n")
	var ratios []float64
	var sums [2]float64
	for i, r := range rows {
		ratio := r[1].rps / r[0].rps
		ratios = append(ratios, ratio)
		sums[0] += r[0].rps
		sums[1] += r[1].rps
		fmt.Fprintf(b, "| %d | %.0f | %.0f | %.1f%% | %s / %s | %s / %s | %.1f / %.1f µs | %.1f / %.1f | %.1f / %.1f |\n", i+1, r[0].rps, r[1].rps, 100*ratio,
			ms(r[0].p50), ms(r[0].p99), ms(r[1].p50), ms(r[1].p99), us(r[0].cpu), us(r[1].cpu), r[0].allocs, r[1].allocs, r[0].gcs, r[1].gcs)
	}
	slices.Sort(ratios)
	p99s := func(k int) []time.Duration {
		var d []time.Duration
		for _, r := range rows {
			d = append(d, r[k].p99)
		}
		slices.Sort(d)
		return d
	}
	cpus := func(k int) time.Duration {
		var d []time.Duration
		for _, r := range rows {
			d = append(d, r[k].cpu)
		}
		slices.Sort(d)
		return d[len(d)/2]
	}
	fmt.Fprintf(b, "\nMean throughput: do-nothing %.0f rps, Interlock %.0f rps: **%.1f%%** (median of the per-round ratios %.1f%%). Median p99: do-nothing %s, Interlock %s. Median server CPU per request: do-nothing %.1f µs, Interlock %.1f µs (the do-nothing server's is %.1f%% of Interlock's).\n\n",
		sums[0]/float64(len(rows)), sums[1]/float64(len(rows)), 100*sums[1]/sums[0], 100*ratios[len(ratios)/2],
		ms(p99s(0)[len(rows)/2]), ms(p99s(1)[len(rows)/2]), us(cpus(0)), us(cpus(1)), 100*float64(cpus(0))/float64(cpus(1)))
	if repeats > 0 {
		fmt.Fprintf(b, "%d round(s) in which wrk saw requests time out (the shared machine stalled) were measured again and are not in the table.\n\n", repeats)
	}
}

// cpuTime is the user and system CPU time this process has used.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// loadavg is the machine's load average, from /proc/loadavg.
func loadavg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "unknown"
	}
	return strings.Join(f[:3], ", ")
}

func us(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) }

func ms(d time.Duration) string { return fmt.Sprintf("%.2f ms", float64(d)/float64(time.Millisecond)) }

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}
