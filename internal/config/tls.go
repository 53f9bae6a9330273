package config

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
)

// TLS is the TLS configuration of the server's listeners and of its NATS client connection;
// a nil field means plain TCP.
type TLS struct {
	// HTTP is the HTTP server's: it serves HTTPS only.
	HTTP *tls.Config
	// NATSClient is the connection to --nats-url's servers: their CAs and the client
	// certificate. Nil when neither is configured (a tls:// URL then verifies with the system's
	// roots).
	NATSClient *tls.Config
	// NATSServer is the embedded server's client listener.
	NATSServer *tls.Config
}

// TLS reads the certificates, keys and CAs the configuration names. Errors name the flag and
// the file; nothing is half-configured.
func (c Config) TLS() (TLS, error) {
	var t TLS
	if c.TLSCert != "" {
		cert, err := tls.LoadX509KeyPair(c.TLSCert, c.TLSKey)
		if err != nil {
			return TLS{}, fmt.Errorf("tls-cert %s, tls-key %s: %w", c.TLSCert, c.TLSKey, err)
		}
		t.HTTP = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	}
	var natsCert *tls.Certificate
	if c.NATSCert != "" {
		cert, err := tls.LoadX509KeyPair(c.NATSCert, c.NATSKey)
		if err != nil {
			return TLS{}, fmt.Errorf("nats-cert %s, nats-key %s: %w", c.NATSCert, c.NATSKey, err)
		}
		natsCert = &cert
	}
	if c.NATSURL == "" {
		if natsCert != nil {
			t.NATSServer = &tls.Config{Certificates: []tls.Certificate{*natsCert}, MinVersion: tls.VersionTLS12}
		}
		return t, nil
	}
	if c.NATSCA == "" && natsCert == nil {
		return t, nil
	}
	t.NATSClient = &tls.Config{MinVersion: tls.VersionTLS12}
	if natsCert != nil {
		t.NATSClient.Certificates = []tls.Certificate{*natsCert}
	}
	if c.NATSCA != "" {
		pem, err := os.ReadFile(c.NATSCA)
		if err != nil {
			return TLS{}, fmt.Errorf("nats-ca: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return TLS{}, fmt.Errorf("nats-ca %s: %w", c.NATSCA, errNoCertificates)
		}
		t.NATSClient.RootCAs = pool
	}
	return t, nil
}

var errNoCertificates = errors.New("no PEM certificate in the file")
