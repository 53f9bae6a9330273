// Command interlock-demo is a service whose traffic depends on one Interlock flag, for trying a
// guarded rollout by hand or in end-to-end tests. It follows the flag's environment over NATS with
// package local and runs a load loop against itself in process: every request picks
// a random user (user-0 … user-N-1) as the targeting key, evaluates the flag, fails with the
// probability the failure knob gives the variant it was served, and takes a simulated latency
// (nothing sleeps): log-normal with the knob's median latency and a log standard deviation of
// 0.5, times the knob's slow factor for the failing variant. It exposes the counts and a latency
// histogram for Prometheus:
//
//	requests_total{flag="checkout-v2",variant="on"} 1027
//	errors_total{flag="checkout-v2",variant="on"} 3
//	request_duration_seconds_bucket{flag="checkout-v2",variant="on",le="0.05"} 512
//	request_duration_seconds_bucket{flag="checkout-v2",variant="on",le="+Inf"} 1027
//	request_duration_seconds_sum{flag="checkout-v2",variant="on"} 58.1
//	request_duration_seconds_count{flag="checkout-v2",variant="on"} 1027
//
// The histogram's buckets are 5ms, 10ms, 25ms, 50ms, 100ms, 250ms, 500ms, 1s, 2.5s, 5s, 10s and
// +Inf; its count is always the variant's requests_total.
//
// A disabled or killed flag serves its off variant and is counted under it. A failed evaluation
// (the flag does not exist) is counted under variant="error" and does not fail the request.
//
// Start it next to `interlock serve` (which runs NATS on 127.0.0.1:4222), then make the flag's
// variant "on" fail for one request in five, and three times slower:
//
//	interlock-demo --flag checkout-v2 --env production --rate 50
//	curl -s -X POST localhost:8081/knob -d '{"failRate":0.2,"slowFactor":3}'
//	curl -s localhost:8081/metrics
//
// Endpoints: GET / (status as JSON, with the mean latency per variant), GET /metrics, GET /readyz
// (200 once the flag client is ready and the load runs, else 503), GET /knob and POST /knob. POST
// /knob takes a JSON object with any of the knob's fields: failVariant, failRate and
// baseErrorRate (probabilities in [0, 1]), latency (the median in seconds, above 0 and at most
// 60) and slowFactor (1 to 100). Absent fields keep their value; anything else is a 400 that
// names the field and changes nothing. The load starts once the client has caught up with the
// environment; --seed makes the users, failures and latencies repeatable, and --report prints the
// traffic per variant on standard output.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"
	"golang.org/x/sync/errgroup"

	"github.com/interlock-dev/interlock/events"
	"github.com/interlock-dev/interlock/local"
	"github.com/interlock-dev/interlock/projections"
	"github.com/interlock-dev/interlock/targeting"
)

// shutdownTimeout bounds how long the HTTP server waits for requests in flight when stopping.
const shutdownTimeout = 5 * time.Second

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// run is the whole program: 0 when stopped by ctx, 1 on a failure, 2 on a usage error. Logs go
// to stderr, the traffic report to stdout.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("interlock-demo", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: interlock-demo --flag KEY [flags]\n\n"+
			"Sends itself requests that evaluate one Interlock flag and fail and take a simulated\n"+
			"latency as the knob says, and exposes requests_total, errors_total and the histogram\n"+
			"request_duration_seconds by variant on /metrics.\n\n")
		fs.PrintDefaults()
	}
	cfg := demoConfig{}
	fs.StringVar(&cfg.NATSURL, "nats-url", "nats://127.0.0.1:4222", "NATS server URL(s), comma-separated")
	fs.StringVar(&cfg.Token, "token", os.Getenv("INTERLOCK_TOKEN"), "Interlock token for the embedded NATS server, a reader's is enough (env INTERLOCK_TOKEN)")
	fs.StringVar(&cfg.Creds, "nats-creds", "", "NATS credentials file, for an operator's NATS cluster")
	fs.StringVar(&cfg.Creds, "creds", "", "same as --nats-creds")
	fs.StringVar(&cfg.Inbox, "nats-inbox", "", "reply subject prefix the NATS user may subscribe to, for an operator's NATS cluster (see deploy/nats-cluster.conf)")
	fs.StringVar(&cfg.Environment, "env", "production", "environment of the flag")
	fs.StringVar(&cfg.Flag, "flag", "", "key of the flag to evaluate (required)")
	fs.StringVar(&cfg.Listen, "listen", "127.0.0.1:8081", "HTTP address (/metrics, /knob, /)")
	fs.Float64Var(&cfg.Rate, "rate", 50, "requests per second")
	fs.IntVar(&cfg.Users, "users", 10000, "distinct users (targeting keys) requests are spread over")
	fs.StringVar(&cfg.Knob.FailVariant, "fail-variant", "on", "variant that fails with probability --fail-rate")
	fs.Float64Var(&cfg.Knob.FailRate, "fail-rate", 0, "probability (0..1) that a request served --fail-variant fails")
	fs.Float64Var(&cfg.Knob.BaseErrorRate, "base-error-rate", 0.001, "probability (0..1) that any request fails")
	fs.Float64Var(&cfg.Knob.Latency, "latency", defaultLatency, "median simulated latency of a request in seconds, log-normal (above 0, at most 60)")
	fs.Float64Var(&cfg.Knob.SlowFactor, "slow-factor", defaultSlowFactor, "multiplier (1..100) of the simulated latency of requests served --fail-variant")
	fs.Uint64Var(&cfg.Seed, "seed", 0, "seed of the random users, failures and latencies (0: random)")
	fs.DurationVar(&cfg.Report, "report", 10*time.Second, "how often to print the traffic per variant on stdout (0: never)")
	verbose := fs.Bool("v", false, "debug logs")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "interlock-demo: unexpected arguments %q\n", fs.Args())
		return 2
	}
	if err := cfg.Validate(); err != nil {
		fmt.Fprintf(stderr, "interlock-demo: %s\n", strings.ReplaceAll(err.Error(), "\n", "\ninterlock-demo: "))
		return 2
	}
	level := slog.LevelInfo
	if *verbose {
		level = slog.LevelDebug
	}
	logger := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))
	if err := serve(ctx, cfg, stdout, logger); err != nil {
		fmt.Fprintf(stderr, "interlock-demo: %v\n", err)
		return 1
	}
	return 0
}

// serve runs the demo until ctx ends (nil) or a part fails.
func serve(ctx context.Context, cfg demoConfig, stdout io.Writer, logger *slog.Logger) error {
	opts := []nats.Option{nats.Name("interlock-demo"), nats.MaxReconnects(-1)}
	if cfg.Token != "" {
		opts = append(opts, events.TokenAuth(cfg.Token))
	}
	if cfg.Creds != "" {
		opts = append(opts, nats.UserCredentials(cfg.Creds))
	}
	if cfg.Inbox != "" {
		opts = append(opts, nats.CustomInboxPrefix(cfg.Inbox))
	}
	nc, err := nats.Connect(cfg.NATSURL, opts...)
	if err != nil {
		return fmt.Errorf("connect to nats %s: %w", cfg.NATSURL, err)
	}
	defer nc.Close()
	client, err := local.New(nc, local.Config{Environment: cfg.Environment, Name: "interlock-demo", Logger: logger})
	if err != nil {
		return err
	}
	defer client.Close()

	d := newDemo(cfg, client, client, logger.With("component", "demo"))
	unobserve := client.Observe(func(n local.Notice) {
		if n.Kind == local.NoticeReady || n.Kind == local.NoticeChanged && slices.Contains(n.Keys, cfg.Flag) {
			d.flagChanged(client.Flagset(), n.Kind == local.NoticeReady)
		}
	})
	defer unobserve()

	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	logger.Info("listening", "addr", ln.Addr().String(), "flag", cfg.Flag, "env", cfg.Environment, "nats", cfg.NATSURL)
	srv := &http.Server{Handler: d.handler(), ReadHeaderTimeout: 5 * time.Second, ErrorLog: slog.NewLogLogger(logger.Handler(), slog.LevelWarn)}

	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		if err := client.Run(gctx); err != nil {
			return fmt.Errorf("follow %s: %w", cfg.Environment, err)
		}
		return nil
	})
	g.Go(func() error {
		if err := client.WaitReady(gctx); err != nil {
			return nil // stopping before the client was ready
		}
		return d.runLoad(gctx)
	})
	if cfg.Report > 0 {
		g.Go(func() error { return d.runReport(gctx, stdout, cfg.Report) })
	}
	g.Go(func() error {
		if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
			return fmt.Errorf("serve http: %w", err)
		}
		return nil
	})
	g.Go(func() error {
		<-gctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
		defer cancel()
		if err := srv.Shutdown(sctx); err != nil {
			return fmt.Errorf("shut down http: %w", err)
		}
		return nil
	})
	if err := g.Wait(); err != nil {
		return err
	}
	logger.Info("stopped")
	return nil
}

// flagChanged records the flag's variants from set and logs its state. It runs on the flag
// client's goroutines, once when the client is ready and after every change of the flag.
func (d *demo) flagChanged(set *targeting.Flagset, ready bool) {
	flags := set.Flags()
	i, found := slices.BinarySearchFunc(flags, d.cfg.Flag, func(f projections.Flag, key string) int {
		return strings.Compare(f.Key, key)
	})
	if !found {
		d.declare(nil)
		d.logger.Warn("flag not found: requests are counted under variant=error until it is created",
			"flag", d.cfg.Flag, "env", d.cfg.Environment, "sequence", set.Sequence())
		return
	}
	f := &flags[i]
	variants := make([]string, 0, len(f.Variants))
	for v := range f.Variants {
		variants = append(variants, v)
	}
	d.declare(variants)
	msg := "flag changed"
	if ready {
		msg = "flag found"
	}
	d.logger.Info(msg, "flag", d.cfg.Flag, "version", f.Version, "enabled", f.Enabled, "archived", f.Archived,
		"variants", strings.Join(slices.Sorted(slices.Values(variants)), ","), "off_variant", f.OffVariant)
}
