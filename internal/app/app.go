// Package app wires Interlock's parts into one running server: NATS (embedded or external), the
// event store, the projections, the command path, auth and the HTTP API. Tests boot it whole.
package app

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"golang.org/x/sync/errgroup"

	"github.com/google/uuid"

	"github.com/interlock-dev/interlock/events"
	"github.com/interlock-dev/interlock/events/subscribe"
	"github.com/interlock-dev/interlock/guard"
	"github.com/interlock-dev/interlock/guard/source"
	"github.com/interlock-dev/interlock/internal/api"
	"github.com/interlock-dev/interlock/internal/auth"
	"github.com/interlock-dev/interlock/internal/command"
	"github.com/interlock-dev/interlock/internal/config"
	"github.com/interlock-dev/interlock/internal/dashboard"
	"github.com/interlock-dev/interlock/internal/edge"
	"github.com/interlock-dev/interlock/internal/embedded"
	"github.com/interlock-dev/interlock/internal/lease"
	"github.com/interlock-dev/interlock/internal/metrics"
	"github.com/interlock-dev/interlock/internal/ofrep"
	"github.com/interlock-dev/interlock/internal/perimeter"
	"github.com/interlock-dev/interlock/internal/presence"
	"github.com/interlock-dev/interlock/internal/snapshot"
	"github.com/interlock-dev/interlock/projections"
	"github.com/interlock-dev/interlock/targeting"
)

// Main is a running Interlock server.
type Main struct {
	cfg    config.Config
	logger *slog.Logger
	tls    config.TLS

	ns *embedded.Server // nil with an external cluster
	// dataLock holds the data directory for this process (lock_unix.go); nil with an external
	// cluster.
	dataLock *os.File
	// storeDown says the NATS connection is not connected (ready.go): evaluations are stale.
	storeDown atomic.Bool
	nc        *nats.Conn
	authNC    *nats.Conn // the auth callout's own connection, with the embedded server
	store     *events.Store
	catalog   *projections.Catalog
	runner    *projections.Runner
	history   *projections.IndexedReader // the store, read through the runner's history index
	signing   config.Signing
	lease     *lease.Lease
	snaps     *snapshot.Writer
	checks    *snapshot.Checkpoints
	httpSrv   *http.Server
	httpLn    net.Listener

	cancel    context.CancelFunc
	group     *errgroup.Group
	closeOnce sync.Once
	closeErr  error
}

// Start brings the server up: it returns once NATS is connected, the stream exists and the HTTP
// listener is bound (so bind errors surface at once and ":0" works). Projections catch up in the
// background; /readyz says when they have. What to tell the person starting it (where it listens,
// the admin token when one was generated) goes to out.
func Start(ctx context.Context, cfg config.Config, logger *slog.Logger, out io.Writer) (_ *Main, err error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	m := &Main{cfg: cfg, logger: logger}
	defer func() {
		if err != nil {
			m.shutdown()
		}
	}()
	if m.tls, err = cfg.TLS(); err != nil {
		return nil, err
	}

	if err := m.connect(); err != nil {
		return nil, err
	}
	js, err := jetstream.New(m.nc)
	if err != nil {
		return nil, fmt.Errorf("jetstream: %w", err)
	}
	setupCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	signing, err := cfg.Signing()
	if err != nil {
		return nil, err
	}
	if signing.Generated {
		logger.Info("generated a signing key: keep it, and give it to every replica", "file", signing.KeyFile, "key", signing.Signer.KeyID())
	}
	m.store, err = events.Open(setupCtx, js, events.StreamConfig{Replicas: cfg.Replicas},
		events.WithSigner(signing.Signer), events.WithVerifyKeys(signing.Verify...))
	if err != nil {
		return nil, err
	}
	m.signing = signing
	tokens, err := auth.Open(setupCtx, js, cfg.Replicas, auth.WithLogger(logger))
	if err != nil {
		return nil, err
	}
	generated, err := tokens.Bootstrap(setupCtx, cfg.AdminToken)
	if err != nil {
		return nil, err
	}
	// Subscribers whose users may not create streams find their poison queue's stream made.
	if err := subscribe.CreatePoisonStream(setupCtx, js, cfg.Replicas); err != nil {
		return nil, err
	}
	var callout *perimeter.Callout
	var revocations *perimeter.Revocations
	var warden *perimeter.Warden
	if m.ns != nil {
		if callout, revocations, err = m.perimeter(setupCtx, js, tokens); err != nil {
			return nil, err
		}
		warden = perimeter.NewWarden(js, m.ns, tokens, logger)
	}

	m.catalog = projections.NewCatalog()
	// A restart starts from the newest checkpoint of the projections, checked against the
	// stream, and reads only the events after it.
	// The history index, kept by the runner and held in its checkpoints, lets the history, as-of
	// and audit queries read the events they need by sequence instead of scanning the stream.
	index := projections.NewIndex()
	m.history = projections.NewIndexedReader(m.store, index)
	m.runner = projections.NewRunner(m.store, m.catalog, logger, projections.WithCheckpoints(lazyCheckpoints{m}), projections.WithIndex(index))
	m.checks, err = snapshot.NewCheckpoints(js, snapshot.CheckpointConfig{
		Runner: m.runner, Signer: signing.Signer, Keys: m.store.Verifier().Keys(), Replicas: cfg.Replicas, Logger: logger,
	})
	if err != nil {
		return nil, err
	}
	// Before the runner starts: the evaluators observe the catalog from its first event.
	evaluators := targeting.NewEvaluators(m.catalog)
	// In-process subscribers (package local): who they are and what they applied, and the
	// snapshots they start from; the writer observes the catalog, so it too comes before the runner.
	tracker, err := presence.New(m.nc, presence.Config{Logger: logger})
	if err != nil {
		return nil, err
	}
	snapshots, err := snapshot.New(js, snapshot.Config{State: m.catalog, Ready: m.runner.Ready, Replicas: cfg.Replicas, Logger: logger})
	if err != nil {
		return nil, err
	}
	m.catalog.Observe(snapshots.Observe)
	m.snaps = snapshots
	// The server's own metrics, on a registry of this server's alone.
	reg := metrics.NewRegistry()
	httpMetrics, err := metrics.NewHTTP(reg)
	if err != nil {
		return nil, err
	}
	commandMetrics, err := metrics.NewCommands(reg)
	if err != nil {
		return nil, err
	}
	guardMetrics, err := metrics.NewGuard(reg)
	if err != nil {
		return nil, err
	}
	evaluations, err := metrics.NewEvaluations(reg)
	if err != nil {
		return nil, err
	}
	allowSource := source.AllowSources(cfg.GuardSources)
	commands := command.New(m.store, logger, command.WithUsage(m.catalog), command.WithSourceCheck(allowSource),
		command.WithPlanChecks(guard.CheckPlan, guard.CheckValvePolicy), command.WithObserver(commandMetrics))
	if generated != "" {
		// The bootstrap admin token enters the audit trail like any other. The token works
		// whether or not this is recorded; a failure is logged, not fatal, since the token is
		// printed only now.
		issued := events.TokenIssued{Role: string(auth.RoleAdmin)}
		meta := command.Meta{Actor: "interlock", Reason: "admin token generated at first start"}
		if err := commands.RecordToken(setupCtx, meta, events.TypeTokenIssued, "admin", issued); err != nil {
			logger.Error("the bootstrap admin token's issue was not recorded", "error", err)
		}
	}
	// Every replica runs the guard; only the holder of the lease acts.
	hostname, _ := os.Hostname()
	m.lease, err = lease.New(setupCtx, js, lease.Options{
		Bucket: "interlock_guard_lease", Key: "guard", Holder: hostname + "-" + uuid.NewString(),
		Replicas: cfg.Replicas, Logger: logger.With("component", "guard"),
	})
	if err != nil {
		return nil, err
	}
	board, err := guard.NewStatusBoard(setupCtx, js, cfg.Replicas, 0, logger)
	if err != nil {
		return nil, err
	}
	// The guard's ticks between its decisions, for the dashboard's charts.
	tape := dashboard.NewTape(0)
	guardRunner, err := guard.NewRunner(guard.RunnerOptions{
		OnEvidence:  tape.Record,
		Catalog:     m.catalog,
		Commands:    commands,
		Lease:       m.lease,
		AllowSource: allowSource,
		Board:       board,
		Logger:      logger,
		Observer:    guardMetrics,
	})
	if err != nil {
		return nil, err
	}
	handler, err := api.New(api.Config{
		Commands:    commands,
		Catalog:     m.catalog,
		Reader:      m.history,
		Auth:        tokens,
		RateLimit:   cfg.APIRateLimit,
		RateBurst:   cfg.APIRateBurst,
		Health:      m.health(time.Duration(cfg.ReadyMaxLag)),
		Ready:       m.runner.Ready,
		Logger:      logger,
		Events:      m.store,
		Presence:    tracker,
		Tokens:      tokens,
		TokenEvents: commands,
		PublicRead:  cfg.PublicRead,
		Guard:       guardRunner,

		Integrity: m.runner.Integrity(),
		Chains:    m.store,

		Metrics:       metrics.Handler(reg, logger),
		MetricsPublic: cfg.MetricsPublic,
	})
	if err != nil {
		return nil, err
	}
	ofrepHandler, err := ofrep.New(ofrep.Config{
		Flagsets:           evaluators,
		Auth:               tokens,
		Ready:              m.runner.Ready,
		DefaultEnvironment: cfg.DefaultEnvironment,
		PublicURL:          cfg.PublicURL,
		RateLimit:          cfg.OFREPRateLimit,
		RateBurst:          cfg.OFREPRateBurst,
		PublicRead:         cfg.PublicRead,
		Stale:              m.storeDown.Load,
		Logger:             logger,
		Observer:           evaluations,
	})
	if err != nil {
		return nil, err
	}
	dash, err := dashboard.New(dashboard.Config{
		Catalog:  m.catalog,
		Reader:   m.history,
		Commands: commands,
		Auth:     tokens,
		Events:   m.store,
		Presence: tracker,
		Ready:    m.runner.Ready,
		Logger:   logger,
		Guard:    guardRunner,
		Tape:     tape,
		// The kill switch asks for the flag's key there.
		CriticalEnvironments: cfg.CriticalEnvironments,
	})
	if err != nil {
		return nil, err
	}
	err = metrics.RegisterState(reg, metrics.State{
		Catalog: m.catalog,
		Stream:  m.store,
		Runner:  m.runner,
		Census:  guardRunner.Census,
		Lease:   m.lease,
		NATS:    m.nc,
		Tokens:  tokens,
		Streams: map[string]func() int{
			"events":    handler.OpenFeeds,
			"ofrep":     ofrepHandler.OpenStreams,
			"dashboard": dash.OpenStreams,
		},
	})
	if err != nil {
		return nil, err
	}
	admin, ui := handler.Handler(), dash.Handler()
	// OFREP evaluation is the hot path: it is dispatched by prefix, without the mux's matching.
	// The API owns /api/ and the health endpoints; the dashboard every other path.
	root := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p := r.URL.Path
		switch {
		case strings.HasPrefix(p, "/ofrep/"):
			ofrepHandler.ServeHTTP(w, r)
		case strings.HasPrefix(p, "/api/"), p == "/healthz", p == "/readyz", p == "/metrics":
			admin.ServeHTTP(w, r)
		default:
			ui.ServeHTTP(w, r)
		}
	})
	if m.httpLn, err = net.Listen("tcp", cfg.HTTP); err != nil {
		return nil, fmt.Errorf("http listen: %w", err)
	}
	m.httpSrv = &http.Server{
		Handler:           edge.Handler(httpMetrics.Handler(root), edge.Config{CORSOrigins: cfg.CORSOrigins}),
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          slog.NewLogLogger(logger.Handler(), slog.LevelWarn),
		TLSConfig:         m.tls.HTTP,
	}
	// Shutdown waits for every handler; the live event feeds end only when told.
	m.httpSrv.RegisterOnShutdown(handler.StopStreams)
	m.httpSrv.RegisterOnShutdown(dash.StopStreams)
	// Shutdown does not end streaming responses: OFREP's event streams end here.
	m.httpSrv.RegisterOnShutdown(ofrepHandler.Close)

	runCtx, cancelRun := context.WithCancel(context.WithoutCancel(ctx))
	m.cancel = cancelRun
	m.group, runCtx = errgroup.WithContext(runCtx)
	if callout != nil {
		// Clients other than Interlock's own are admitted from here on.
		if err := warden.Listen(runCtx, m.nc); err != nil {
			return nil, err
		}
		if err := callout.Listen(runCtx, m.authNC); err != nil {
			return nil, err
		}
		m.group.Go(func() error { return revocations.Run(runCtx) })
	}
	m.group.Go(func() error { return m.runner.Run(runCtx) })
	m.group.Go(func() error { return tokens.Run(runCtx) })
	m.group.Go(func() error { return m.watchConnection(runCtx) })
	m.group.Go(func() error { return tracker.Run(runCtx) })
	m.group.Go(func() error { return snapshots.Run(runCtx) })
	m.group.Go(func() error { return m.checks.Run(runCtx) })
	m.group.Go(func() error { return m.lease.Run(runCtx) })
	m.group.Go(func() error {
		// The guard judges only once the projections caught up: it acts on current state.
		if err := m.runner.WaitReady(runCtx); err != nil {
			return nil
		}
		return guardRunner.Run(runCtx)
	})
	m.group.Go(func() error {
		serve := func() error { return m.httpSrv.Serve(m.httpLn) }
		if m.tls.HTTP != nil {
			// The certificate is in TLSConfig, loaded (and checked) before anything started.
			serve = func() error { return m.httpSrv.ServeTLS(m.httpLn, "", "") }
		}
		if err := serve(); !errors.Is(err, http.ErrServerClosed) {
			return fmt.Errorf("http: %w", err)
		}
		return nil
	})
	m.group.Go(func() error {
		<-runCtx.Done()
		shutCtx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		return m.httpSrv.Shutdown(shutCtx)
	})

	m.banner(out, generated)
	logger.Info("interlock started", "http", m.BaseURL(), "nats", m.NATSURL(), "replicas", cfg.Replicas)
	return m, nil
}

// portFree fails at once, naming the address, when the embedded NATS server could not listen on
// it ("" for in-process only): the server itself would only say it was not ready in time.
func portFree(addr string) error {
	if _, port, _ := net.SplitHostPort(addr); addr == "" || port == "0" || port == "-1" {
		return nil
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("embedded nats cannot listen on %s (--nats-listen): %w", addr, err)
	}
	return ln.Close()
}

func (m *Main) connect() error {
	if m.cfg.NATSURL != "" {
		opts := []nats.Option{
			nats.Name("interlock"),
			nats.MaxReconnects(-1),
			nats.ReconnectWait(250 * time.Millisecond),
			// Nothing is held back while NATS is away: a write answered as failed must never be
			// sent, and stored, once NATS is back (events.Store).
			nats.ReconnectBufSize(-1),
		}
		if m.cfg.NATSCreds != "" {
			opts = append(opts, nats.UserCredentials(m.cfg.NATSCreds))
		}
		if m.tls.NATSClient != nil {
			opts = append(opts, nats.Secure(m.tls.NATSClient))
		}
		nc, err := nats.Connect(m.cfg.NATSURL, opts...)
		if err != nil {
			return fmt.Errorf("connect to nats %s: %w", m.cfg.NATSURL, err)
		}
		m.nc = nc
		return nil
	}
	if err := os.MkdirAll(m.cfg.Data, 0o700); err != nil {
		return fmt.Errorf("data dir: %w", err)
	}
	lock, err := lockData(m.cfg.Data)
	if err != nil {
		return err
	}
	m.dataLock = lock
	listen := m.cfg.NATSListen
	if listen == "none" {
		listen = ""
	}
	if err := portFree(listen); err != nil {
		return err
	}
	ns, err := embedded.Start(embedded.Config{
		StoreDir: filepath.Join(m.cfg.Data, "jetstream"),
		Listen:   listen,
		NoSync:   m.cfg.NoSync,
		TLS:      m.tls.NATSServer,
	}, m.logger.With("component", "nats"))
	if err != nil {
		return err
	}
	m.ns = ns
	if m.nc, err = ns.Connect(nats.ReconnectBufSize(-1)); err != nil {
		return fmt.Errorf("connect to embedded nats: %w", err)
	}
	return nil
}

// perimeter builds what guards the embedded server: the auth callout that admits the holders of
// tokens, and the watcher that closes the connections of revoked ones.
func (m *Main) perimeter(ctx context.Context, js jetstream.JetStream, tokens *auth.Store) (*perimeter.Callout, *perimeter.Revocations, error) {
	logger := m.logger.With("component", "perimeter")
	callout, err := perimeter.NewCallout(perimeter.CalloutConfig{
		Auth:    tokens,
		Issuer:  m.ns.Issuer(),
		Server:  m.ns.ID(),
		Account: embedded.Account,
		Logger:  logger,
	})
	if err != nil {
		return nil, nil, err
	}
	if m.authNC, err = m.ns.Connect(nats.Name("interlock-auth-callout")); err != nil {
		return nil, nil, fmt.Errorf("connect to embedded nats: %w", err)
	}
	kv, err := js.KeyValue(ctx, auth.Bucket)
	if err != nil {
		return nil, nil, fmt.Errorf("token bucket %s: %w", auth.Bucket, err)
	}
	return callout, perimeter.NewRevocations(kv, m.ns, tokens, logger), nil
}

func (m *Main) banner(out io.Writer, generated string) {
	var b strings.Builder
	fmt.Fprintf(&b, "Interlock is serving %s (dashboard /, admin API /api/v1, OFREP /ofrep/v1, health /healthz, readiness /readyz, metrics /metrics)\n", m.BaseURL())
	switch {
	case m.ns != nil && m.NATSURL() != "":
		fmt.Fprintf(&b, "Embedded NATS with JetStream at %s (clients need an Interlock token), data in %s\n", m.NATSURL(), m.cfg.Data)
	case m.ns != nil:
		fmt.Fprintf(&b, "Embedded NATS with JetStream (in-process only), data in %s\n", m.cfg.Data)
	default:
		fmt.Fprintf(&b, "Using NATS at %s, stream replicas %d\n", m.cfg.NATSURL, m.cfg.Replicas)
	}
	if m.cfg.PublicRead {
		fmt.Fprintf(&b, "Reads are public (--public-read): anyone who reaches the admin API reads flags, history and audit without a token.\n")
	} else {
		fmt.Fprintf(&b, "Reads need a token, as writes do (start with --public-read to open them).\n")
	}
	if m.cfg.MetricsPublic {
		fmt.Fprintf(&b, "Metrics are public (--metrics-public): /metrics answers without a token.\n")
	}
	fmt.Fprintf(&b, "Events are signed with key %s (%s), cut-over at sequence %d\n", m.signing.Signer.KeyID(), m.signing.KeyFile, m.store.Verifier().Cutover())
	switch {
	case generated != "":
		fmt.Fprintf(&b, "\nAn admin token was generated. It is shown this once and stored only as a hash:\n\n    export INTERLOCK_TOKEN=%s\n\nUse it as 'Authorization: Bearer <token>' or with the CLI's --token / INTERLOCK_TOKEN.\n", generated)
	case m.cfg.AdminToken != "":
		fmt.Fprintf(&b, "Admin token: the one in INTERLOCK_ADMIN_TOKEN.\n")
	default:
		fmt.Fprintf(&b, "Admin token: the one printed at first start (or set INTERLOCK_ADMIN_TOKEN to use your own).\n")
	}
	io.WriteString(out, b.String())
}

// BaseURL is the HTTP server's base URL: https:// with --tls-cert, else http://.
func (m *Main) BaseURL() string {
	if m.tls.HTTP != nil {
		return "https://" + m.HTTPAddr()
	}
	return "http://" + m.HTTPAddr()
}

// HTTPAddr is the address the HTTP server listens on.
func (m *Main) HTTPAddr() string { return m.httpLn.Addr().String() }

// NATSURL is the embedded server's client URL ("" when it does not listen, or with an external
// cluster).
func (m *Main) NATSURL() string {
	if m.ns == nil {
		return ""
	}
	return m.ns.ClientURL()
}

// ConnectInternal opens an in-process connection to the embedded NATS server with Interlock's
// own rights, which bypass every permission: for tests and tools inside the server's process
// that must act as a privileged client (a forger, say). With an external cluster it is an error.
func (m *Main) ConnectInternal(opts ...nats.Option) (*nats.Conn, error) {
	if m.ns == nil {
		return nil, errors.New("no embedded nats server: connect to the cluster with its own credentials")
	}
	return m.ns.Connect(opts...)
}

// Ready reports whether the projections have caught up with the stream.
func (m *Main) Ready() bool { return m.runner.Ready() }

// GuardActing reports whether this replica holds the guard's lease: whether its guard acts.
func (m *Main) GuardActing() bool {
	held, _ := m.lease.Held()
	return held
}

// Catalog is the live flag read model (for in-process users such as tests and benchmarks).
func (m *Main) Catalog() *projections.Catalog { return m.catalog }

// FlushSnapshots writes now the snapshot of every environment changed since its last one, once the
// projections have caught up, instead of when the writer's count or interval says. Errors: those of
// the writes.
func (m *Main) FlushSnapshots(ctx context.Context) error { return m.snaps.Flush(ctx) }

// FlushCheckpoint writes now the checkpoint a restart starts from, once the projections have
// caught up. Errors: those of the write.
func (m *Main) FlushCheckpoint(ctx context.Context) error { return m.checks.Flush(ctx) }

// lazyCheckpoints loads checkpoints through m.checks, which is made after the runner.
type lazyCheckpoints struct{ m *Main }

func (l lazyCheckpoints) LoadCheckpoint(ctx context.Context) (projections.Checkpoint, error) {
	return l.m.checks.LoadCheckpoint(ctx)
}

// Wait blocks until a part of the server fails or Close is called, and returns the first error.
func (m *Main) Wait() error { return m.group.Wait() }

// Close shuts the server down gracefully. It stops every running part at once: the HTTP server
// refuses new connections and lets in-flight requests finish (up to 10s; live event streams are
// told to end) while the projections, the guard, the lease (released, so that another replica
// takes over) and the background writers stop. Once all of them have returned, it closes the
// NATS connections (draining its own), shuts the embedded server down and releases the data
// directory. It is safe to call more than once.
func (m *Main) Close() error {
	m.closeOnce.Do(func() { m.closeErr = m.shutdown() })
	return m.closeErr
}

func (m *Main) shutdown() error {
	var err error
	if m.cancel != nil {
		m.cancel()
		err = m.group.Wait()
	} else if m.httpLn != nil {
		m.httpLn.Close()
	}
	if m.authNC != nil {
		m.authNC.Close()
	}
	if m.nc != nil {
		m.nc.Drain()
		m.nc.Close()
	}
	if m.ns != nil {
		m.ns.Shutdown()
	}
	if m.dataLock != nil {
		m.dataLock.Close() // releases the lock
	}
	return err
}
