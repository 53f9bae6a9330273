package app_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/interlock-dev/interlock/apiv1"
	"github.com/interlock-dev/interlock/client"
	"github.com/interlock-dev/interlock/events"
	"github.com/interlock-dev/interlock/internal/app"
	"github.com/interlock-dev/interlock/internal/await"
	"github.com/interlock-dev/interlock/internal/config"
	"github.com/interlock-dev/interlock/internal/natstest"
)

const tlsToken = "tls-test-admin-token-0123456789"

// startTLS starts a server with cfg, closed when the test ends, and returns it with its banner.
func startTLS(t *testing.T, cfg config.Config) (*app.Main, string) {
	t.Helper()
	cfg.HTTP = "127.0.0.1:0"
	cfg.AdminToken = tlsToken
	var banner bytes.Buffer
	m, err := app.Start(context.Background(), cfg, slog.New(slog.DiscardHandler), &banner)
	if err != nil {
		t.Fatalf("start: %v", err)
	}
	t.Cleanup(func() {
		if err := m.Close(); err != nil {
			t.Errorf("close: %v", err)
		}
	})
	await.Eventually(t, 30*time.Second, m.Ready, "ready")
	return m, banner.String()
}

// releaseFlag is the configuration of a boolean release flag that serves defaultVariant.
func releaseFlag(defaultVariant string) apiv1.FlagConfig {
	return apiv1.FlagConfig{Kind: events.KindRelease, Variants: map[string]json.RawMessage{"on": json.RawMessage(`true`), "off": json.RawMessage(`false`)},
		DefaultVariant: defaultVariant, OffVariant: "off"}
}

// createFlag creates a flag through the admin API over hc, and fails the test unless it
// was created.
func createFlag(t *testing.T, hc *http.Client, base, key string) {
	t.Helper()
	c, err := client.New(base, client.WithToken(tlsToken), client.WithHTTPClient(hc))
	if err != nil {
		t.Fatal(err)
	}
	f, err := c.CreateFlag(context.Background(), "production", key, releaseFlag("off"), "tls test")
	if err != nil || f.Key != key || f.Version != 1 {
		t.Fatalf("create %s: %+v, %v", key, f, err)
	}
}

// serve --tls-cert/--tls-key serves HTTPS only, and says so.
func TestServeHTTPS(t *testing.T) {
	certs := natstest.NewCerts(t)
	cfg := config.Default()
	cfg.Data, cfg.NATSListen, cfg.NoSync = t.TempDir(), "none", true
	cfg.TLSCert, cfg.TLSKey = certs.ServerCert, certs.ServerKey
	m, banner := startTLS(t, cfg)

	base := m.BaseURL()
	if !strings.HasPrefix(base, "https://") || !strings.Contains(banner, "serving "+base) {
		t.Fatalf("base %q, banner %q", base, banner)
	}
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: certs.ClientTLS()}}
	t.Cleanup(client.CloseIdleConnections)
	resp, err := client.Get(base + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.TLS == nil {
		t.Fatalf("readyz over https: %d, tls %v", resp.StatusCode, resp.TLS != nil)
	}
	createFlag(t, client, base, "over-https")

	// Plain HTTP is answered with an error, never served.
	resp, err = http.Get("http://" + m.HTTPAddr() + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest {
		t.Fatalf("plain http answered %d", resp.StatusCode)
	}
	// A client that does not trust the CA is refused by its own TLS.
	if _, err := http.Get(base + "/readyz"); err == nil {
		t.Fatal("a client without the CA connected")
	}
}

// --nats-url with --nats-ca, --nats-cert and --nats-key: Interlock connects to a NATS server
// that requires TLS and a client certificate, and works; without the client certificate it
// does not start.
func TestExternalNATSWithTLS(t *testing.T) {
	certs := natstest.NewCerts(t)
	ns := natstest.RunServer(t, natstest.Options{TLS: certs.ServerTLS(t, true)})
	if !strings.HasPrefix(ns.ClientURL(), "tls://") {
		t.Fatalf("server url %s", ns.ClientURL())
	}
	cfg := config.Default()
	cfg.NATSURL = ns.ClientURL()
	cfg.SigningKey = natstest.SigningKeyFile(t)

	noCert := cfg
	noCert.NATSCA = certs.CAFile
	noCert.HTTP = "127.0.0.1:0"
	if m, err := app.Start(context.Background(), noCert, slog.New(slog.DiscardHandler), io.Discard); err == nil {
		m.Close()
		t.Fatal("started without the client certificate the server requires")
	}

	cfg.NATSCA, cfg.NATSCert, cfg.NATSKey = certs.CAFile, certs.ClientCert, certs.ClientKey
	m, _ := startTLS(t, cfg)
	createFlag(t, http.DefaultClient, m.BaseURL(), "over-nats-tls")

	// The event is in the server's stream, read back over TLS with the client certificate.
	clientTLS := certs.ClientTLS()
	cert, err := tls.LoadX509KeyPair(certs.ClientCert, certs.ClientKey)
	if err != nil {
		t.Fatal(err)
	}
	clientTLS.Certificates = []tls.Certificate{cert}
	nc, err := nats.Connect(ns.ClientURL(), nats.Secure(clientTLS))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	stream, err := js.Stream(ctx, events.DefaultStreamName)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := stream.GetLastMsgForSubject(ctx, events.FlagSubject("production", "over-nats-tls")); err != nil {
		t.Fatalf("the flag's event is not in the TLS server's stream: %v", err)
	}
}

// --nats-cert/--nats-key without --nats-url: the embedded server's listener speaks TLS; a
// client holding a token connects with tls://, one without TLS does not get in.
func TestEmbeddedNATSWithTLS(t *testing.T) {
	certs := natstest.NewCerts(t)
	cfg := config.Default()
	cfg.Data, cfg.NATSListen, cfg.NoSync = t.TempDir(), "127.0.0.1:0", true
	cfg.NATSCert, cfg.NATSKey = certs.ServerCert, certs.ServerKey
	m, banner := startTLS(t, cfg)
	url := m.NATSURL()
	if !strings.HasPrefix(url, "tls://") || !strings.Contains(banner, url) {
		t.Fatalf("embedded url %q, banner %q", url, banner)
	}
	createFlag(t, http.DefaultClient, m.BaseURL(), "embedded-tls")

	nc, err := nats.Connect(url, events.TokenAuth(tlsToken), nats.Secure(certs.ClientTLS()))
	if err != nil {
		t.Fatalf("token client over tls: %v", err)
	}
	defer nc.Close()
	if _, err := nc.TLSConnectionState(); err != nil {
		t.Fatalf("the connection is not TLS: %v", err)
	}
	// The token's rights include a direct get of the flag's last event.
	msg, err := nc.Request("$JS.API.DIRECT.GET."+events.DefaultStreamName+"."+events.FlagSubject("production", "embedded-tls"), nil, 10*time.Second)
	if err != nil {
		t.Fatalf("read the flag's event over tls: %v", err)
	}
	if msg.Header.Get("Nats-Subject") != events.FlagSubject("production", "embedded-tls") {
		t.Fatalf("direct get answered %v %q", msg.Header, msg.Data)
	}

	// The same URL as plain nats:// is refused: the server requires TLS.
	plain := strings.Replace(url, "tls://", "nats://", 1)
	if nc, err := nats.Connect(plain, events.TokenAuth(tlsToken), nats.MaxReconnects(0)); err == nil {
		nc.Close()
		t.Fatal("a client without TLS config connected (it cannot verify the test CA)")
	}
}
