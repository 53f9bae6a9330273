// Package natstest starts real NATS servers with JetStream for tests: a fresh single server per
// test, or a cluster of three on loopback.
package natstest

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/interlock-dev/interlock/internal/await"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Options tune a test server.
type Options struct {
	// Sync makes JetStream fsync every write, as production does. Tests default to no sync.
	Sync bool
	// StoreDir reuses a directory, to restart a server on the same data; t.TempDir() when empty.
	StoreDir string
	// TLS makes the server accept TLS clients only (ClientURL then says tls://); with
	// ClientAuth set in it, clients must present a certificate (see [Certs.ServerTLS]).
	TLS *tls.Config
	// Port is the loopback port to listen on, to restart a server where its clients reconnect;
	// a random one when 0.
	Port int
}

// RunServer starts a JetStream server on a random loopback port, stopped when the test ends.
func RunServer(tb testing.TB, o ...Options) *server.Server {
	tb.Helper()
	var opt Options
	if len(o) > 0 {
		opt = o[0]
	}
	dir := opt.StoreDir
	if dir == "" {
		dir = tb.TempDir()
	}
	port := opt.Port
	if port == 0 {
		port = server.RANDOM_PORT
	}
	opts := &server.Options{
		Host:       "127.0.0.1",
		Port:       port,
		JetStream:  true,
		StoreDir:   dir,
		SyncAlways: opt.Sync,
		NoSigs:     true,
		NoLog:      true,
	}
	if opt.TLS != nil {
		opts.TLS, opts.TLSConfig, opts.TLSTimeout = true, opt.TLS, 2
		opts.TLSVerify = opt.TLS.ClientAuth == tls.RequireAndVerifyClientCert
	}
	s := start(tb, opts)
	tb.Cleanup(func() { Shutdown(s) })
	return s
}

// Shutdown stops s and waits for it.
func Shutdown(s *server.Server) {
	s.Shutdown()
	s.WaitForShutdown()
}

func start(tb testing.TB, opts *server.Options) *server.Server {
	tb.Helper()
	s, err := server.NewServer(opts)
	if err != nil {
		tb.Fatalf("nats server: %v", err)
	}
	s.Start()
	if !s.ReadyForConnections(10 * time.Second) {
		tb.Fatal("nats server not ready")
	}
	remember(s, opts)
	return s
}

// started keeps the options each server was started with, for Restart.
var started sync.Map // *server.Server → server.Options

// remember records opts with the client port s listens on, once it does.
func remember(s *server.Server, opts *server.Options) {
	o := *opts
	if addr, ok := s.Addr().(*net.TCPAddr); ok {
		o.Port = addr.Port
	}
	started.Store(s, o)
}

// Restart stops s (if it still runs) and starts a server with its options again, on the same
// store directory and the same client port, so that clients reconnect to it. The new server is
// stopped when the test ends.
func Restart(tb testing.TB, s *server.Server) *server.Server {
	tb.Helper()
	v, ok := started.Load(s)
	if !ok {
		tb.Fatal("natstest: restart of a server natstest did not start")
	}
	opts := v.(server.Options)
	Shutdown(s)
	started.Delete(s)
	ns := start(tb, &opts)
	tb.Cleanup(func() { Shutdown(ns) })
	return ns
}

// RunCluster starts three clustered JetStream servers on loopback and waits until JetStream has
// a meta leader. They are stopped when the test ends.
func RunCluster(tb testing.TB) []*server.Server {
	tb.Helper()
	ports := freePorts(tb, 3)
	routes := make([]string, len(ports))
	for i, p := range ports {
		routes[i] = fmt.Sprintf("nats://127.0.0.1:%d", p)
	}
	servers := make([]*server.Server, 3)
	optsOf := make([]*server.Options, 3)
	for i := range servers {
		opts := &server.Options{
			ServerName: fmt.Sprintf("n%d", i+1),
			Host:       "127.0.0.1",
			Port:       server.RANDOM_PORT,
			JetStream:  true,
			StoreDir:   tb.TempDir(),
			NoSigs:     true,
			NoLog:      true,
			Cluster: server.ClusterOpts{
				Name: "interlock-test",
				Host: "127.0.0.1",
				Port: ports[i],
			},
			Routes: server.RoutesFromStr(joinRoutes(routes, i)),
		}
		optsOf[i] = opts
		s, err := server.NewServer(opts)
		if err != nil {
			tb.Fatalf("nats server %d: %v", i, err)
		}
		s.Start()
		servers[i] = s
	}
	tb.Cleanup(func() {
		for _, s := range servers {
			Shutdown(s)
		}
	})
	for i, s := range servers {
		if !s.ReadyForConnections(10 * time.Second) {
			tb.Fatal("cluster server not ready")
		}
		remember(s, optsOf[i])
	}
	// Wait for a meta leader: JetStream API calls fail until there is one.
	nc := Connect(tb, servers[0])
	js, err := jetstream.New(nc)
	if err != nil {
		tb.Fatal(err)
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		_, err := js.AccountInfo(ctx)
		cancel()
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			tb.Fatalf("cluster has no jetstream meta leader: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	WaitPeers(tb, servers)
	return servers
}

// WaitPeers waits until the JetStream meta leader among servers counts every one of them as a
// current peer: before that, creating a stream of as many replicas fails with "no suitable peers
// for placement", which a loaded machine makes likely.
func WaitPeers(tb testing.TB, servers []*server.Server) {
	tb.Helper()
	await.Eventually(tb, 30*time.Second, func() bool {
		for _, s := range servers {
			if len(s.JetStreamClusterPeers()) >= len(servers) {
				return true
			}
		}
		return false
	}, "the jetstream meta leader counts all %d servers as peers", len(servers))
}

func joinRoutes(routes []string, self int) string {
	out := ""
	for i, r := range routes {
		if i == self {
			continue
		}
		if out != "" {
			out += ","
		}
		out += r
	}
	return out
}

func freePorts(tb testing.TB, n int) []int {
	tb.Helper()
	ports := make([]int, n)
	ls := make([]net.Listener, n)
	for i := range ports {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			tb.Fatal(err)
		}
		ls[i] = l
		ports[i] = l.Addr().(*net.TCPAddr).Port
	}
	for _, l := range ls {
		l.Close()
	}
	return ports
}

// Connect opens a client connection to s, closed when the test ends.
func Connect(tb testing.TB, s *server.Server, opts ...nats.Option) *nats.Conn {
	tb.Helper()
	nc, err := nats.Connect(s.ClientURL(), opts...)
	if err != nil {
		tb.Fatalf("connect: %v", err)
	}
	tb.Cleanup(nc.Close)
	return nc
}

// JetStream returns a JetStream context on a fresh connection to s.
func JetStream(tb testing.TB, s *server.Server) jetstream.JetStream {
	tb.Helper()
	js, err := jetstream.New(Connect(tb, s))
	if err != nil {
		tb.Fatal(err)
	}
	return js
}
