package app_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/interlock-dev/interlock/client"
	"github.com/interlock-dev/interlock/events"
	"github.com/interlock-dev/interlock/internal/app"
	"github.com/interlock-dev/interlock/internal/await"
	"github.com/interlock-dev/interlock/internal/config"
	"github.com/interlock-dev/interlock/internal/natstest"
)

// TestDeployClusterConf starts three servers from deploy/nats-cluster.conf on loopback, runs
// Interlock against them as the file's interlock user, and checks that the file's staging reader
// follows staging but may not publish events, follow production or touch the token bucket.
func TestDeployClusterConf(t *testing.T) {
	const (
		interlockPassword = "interlock-secret-0123456789"
		readerPassword    = "staging-secret-0123456789"
	)
	t.Setenv("INTERLOCK_NATS_PASSWORD", interlockPassword)
	t.Setenv("READER_NATS_PASSWORD", "reader-secret-0123456789")
	t.Setenv("READER_STAGING_NATS_PASSWORD", readerPassword)
	t.Setenv("SYS_NATS_PASSWORD", "sys-secret-0123456789")
	ports := freePorts(t, 3)
	for i, p := range ports {
		t.Setenv(fmt.Sprintf("NATS_ROUTE_%d", i+1), fmt.Sprintf("nats-route://127.0.0.1:%d", p))
	}
	servers := make([]*server.Server, 3)
	for i := range servers {
		t.Setenv("NATS_NODE", fmt.Sprintf("n%d", i+1))
		t.Setenv("NATS_LISTEN", "127.0.0.1:-1")
		t.Setenv("NATS_CLUSTER_LISTEN", fmt.Sprintf("127.0.0.1:%d", ports[i]))
		t.Setenv("NATS_STORE_DIR", t.TempDir())
		opts, err := server.ProcessConfigFile("../../deploy/nats-cluster.conf")
		if err != nil {
			t.Fatalf("deploy/nats-cluster.conf: %v", err)
		}
		opts.NoSigs, opts.NoLog = true, true
		opts.SyncAlways = false // the file fsyncs every write; tests need not
		s, err := server.NewServer(opts)
		if err != nil {
			t.Fatalf("node %d: %v", i+1, err)
		}
		s.Start()
		servers[i] = s
		t.Cleanup(func() { natstest.Shutdown(s) })
	}
	urls := make([]string, len(servers))
	for i, s := range servers {
		if !s.ReadyForConnections(10 * time.Second) {
			t.Fatalf("node %d not ready", i+1)
		}
		urls[i] = s.ClientURL()
	}
	withUser := func(user, password string) string {
		out := make([]string, len(urls))
		for i, u := range urls {
			out[i] = strings.Replace(u, "nats://", "nats://"+user+":"+password+"@", 1)
		}
		return strings.Join(out, ",")
	}

	// Nobody gets in without a user of the file.
	if nc, err := nats.Connect(urls[0], nats.MaxReconnects(0)); err == nil {
		nc.Close()
		t.Fatal("an anonymous client was admitted")
	}

	// Interlock waits for nothing: wait for JetStream's meta leader as its user.
	admin, err := nats.Connect(withUser("interlock", interlockPassword))
	if err != nil {
		t.Fatalf("connect as interlock: %v", err)
	}
	defer admin.Close()
	ajs, _ := jetstream.New(admin)
	await.Eventually(t, 30*time.Second, func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_, err := ajs.AccountInfo(ctx)
		return err == nil
	}, "jetstream meta leader")
	natstest.WaitPeers(t, servers)

	cfg := config.Default()
	cfg.NATSURL = withUser("interlock", interlockPassword)
	cfg.Replicas = 3
	cfg.HTTP = "127.0.0.1:0"
	cfg.AdminToken = "cluster-admin-token-0123456789"
	cfg.SigningKey = natstest.SigningKeyFile(t)
	m, err := app.Start(context.Background(), cfg, slog.New(slog.DiscardHandler), io.Discard)
	if err != nil {
		t.Fatalf("start interlock on the cluster: %v", err)
	}
	defer m.Close()
	await.Eventually(t, 30*time.Second, m.Ready, "interlock ready")
	api, err := client.New("http://"+m.HTTPAddr(), client.WithToken(cfg.AdminToken))
	if err != nil {
		t.Fatal(err)
	}
	for _, env := range []string{"staging", "production"} {
		if f, err := api.CreateFlag(context.Background(), env, "search", releaseFlag("on"), "test"); err != nil || f.Version != 1 {
			t.Fatalf("create %s/search: %+v, %v", env, f, err)
		}
	}

	var mu sync.Mutex
	var violations []string
	reader, err := nats.Connect(withUser("reader-staging", readerPassword), nats.CustomInboxPrefix("_INBOX_reader-staging"),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
			if errors.Is(err, nats.ErrPermissionViolation) {
				mu.Lock()
				violations = append(violations, err.Error())
				mu.Unlock()
			}
		}))
	if err != nil {
		t.Fatalf("connect as reader-staging: %v", err)
	}
	defer reader.Close()
	refused := func(subject string) {
		t.Helper()
		await.Eventually(t, 20*time.Second, func() bool {
			mu.Lock()
			defer mu.Unlock()
			for _, v := range violations {
				if strings.Contains(v, subject) {
					return true
				}
			}
			return false
		}, "a permissions violation for %s", subject)
	}
	rjs, _ := jetstream.New(reader)
	cons, err := rjs.OrderedConsumer(t.Context(), events.DefaultStreamName, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{events.EnvironmentSubjects("staging")},
	})
	if err != nil {
		t.Fatalf("the staging reader follows staging: %v", err)
	}
	if msg, err := cons.Next(jetstream.FetchMaxWait(20 * time.Second)); err != nil || msg.Subject() != events.FlagSubject("staging", "search") {
		t.Fatalf("first staging event: %v", err)
	}

	short := func() context.Context {
		ctx, cancel := context.WithTimeout(t.Context(), 2*time.Second)
		t.Cleanup(cancel)
		return ctx
	}
	if _, err := rjs.Publish(short(), events.FlagSubject("staging", "search"), []byte("{}")); err == nil {
		t.Fatal("the reader published an event")
	}
	refused(`"` + events.FlagSubject("staging", "search") + `"`)
	if _, err := rjs.OrderedConsumer(short(), events.DefaultStreamName, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{events.EnvironmentSubjects("production")},
	}); err == nil {
		t.Fatal("the staging reader follows production")
	}
	refused(".interlock.production.>")
	if _, err := rjs.KeyValue(short(), "interlock_tokens"); err == nil {
		t.Fatal("the reader opened the token bucket")
	}
	refused("KV_interlock_tokens")
	if err := rjs.DeleteStream(short(), events.DefaultStreamName); err == nil {
		t.Fatal("the reader deleted the stream")
	}
	refused("$JS.API.STREAM.DELETE.INTERLOCK")
	if !m.Ready() {
		t.Fatal("interlock is not ready any more")
	}
}

func freePorts(t *testing.T, n int) []int {
	t.Helper()
	ports := make([]int, n)
	for i := range ports {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		ports[i] = l.Addr().(*net.TCPAddr).Port
		defer l.Close()
	}
	return ports
}
