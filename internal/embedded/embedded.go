// Package embedded runs a NATS server with JetStream inside the Interlock process.
//
// The server admits no anonymous client. Interlock's own connections use a user whose password is
// generated at start and kept in memory only; every other client is handed to the auth callout
// (nats-server's own mechanism, answered by Interlock: see package perimeter), which admits
// Interlock tokens. The users the callout admits are signed by [Server.Issuer], a key generated
// at start and never stored either.
package embedded

import (
	"crypto/rand"
	"crypto/tls"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"
	"golang.org/x/crypto/bcrypt"
)

// Account is the NATS account everything lives in: the stream, the buckets, Interlock's own user
// and the users the auth callout admits. It is the server's global account, where JetStream
// data written before the perimeter existed already is.
const Account = server.DEFAULT_GLOBAL_ACCOUNT

// internalUser is the name of Interlock's own NATS user, which the auth callout does not handle.
const internalUser = "interlock-server"

// Config of the embedded server.
type Config struct {
	// StoreDir is where JetStream keeps its files.
	StoreDir string
	// Listen is the host:port other processes connect to; empty means in-process only.
	// Port 0 or -1 picks a free port.
	Listen string
	// SyncAlways makes JetStream fsync every write before acknowledging it, so an acknowledged
	// event survives power loss. Default true; switch off only for tests and benchmarks.
	NoSync bool
	// ServerName names the server (and its JetStream node).
	ServerName string
	// TLS, when set, secures the Listen listener: other processes connect with tls:// (and
	// still authenticate). In-process connections need no TLS.
	TLS *tls.Config
}

// Server is a running embedded NATS server.
type Server struct {
	ns       *server.Server
	password string
	issuer   nkeys.KeyPair
}

// Start starts the server and waits until it accepts connections.
func Start(cfg Config, logger *slog.Logger) (*Server, error) {
	if cfg.StoreDir == "" {
		return nil, errors.New("embedded nats: store dir is required")
	}
	opts := &server.Options{
		ServerName:         cfg.ServerName,
		JetStream:          true,
		StoreDir:           cfg.StoreDir,
		SyncAlways:         !cfg.NoSync,
		NoSigs:             true,
		MaxPayload:         2 << 20,
		JetStreamMaxMemory: 256 << 20,
	}
	if cfg.ServerName == "" {
		opts.ServerName = "interlock"
	}
	// Nobody gets in without credentials: Interlock's own user (random password, in memory
	// only), and whoever the auth callout admits.
	password := randomSecret()
	issuer, err := nkeys.CreateAccount()
	if err != nil {
		return nil, fmt.Errorf("embedded nats: callout issuer key: %w", err)
	}
	issuerPub, err := issuer.PublicKey()
	if err != nil {
		return nil, fmt.Errorf("embedded nats: callout issuer key: %w", err)
	}
	// The server keeps only a bcrypt hash of it (and so does not warn of a plaintext password).
	hashed, err := bcrypt.GenerateFromPassword([]byte(password), bcrypt.MinCost)
	if err != nil {
		return nil, fmt.Errorf("embedded nats: hash the internal password: %w", err)
	}
	opts.Users = []*server.User{{Username: internalUser, Password: string(hashed)}}
	opts.AuthCallout = &server.AuthCallout{Issuer: issuerPub, Account: Account, AuthUsers: []string{internalUser}}
	if cfg.TLS != nil {
		if cfg.Listen == "" {
			return nil, errors.New("embedded nats: TLS without a listener")
		}
		opts.TLS, opts.TLSConfig, opts.TLSTimeout = true, cfg.TLS, 2
	}
	if cfg.Listen == "" {
		opts.DontListen = true
	} else {
		host, portStr, err := net.SplitHostPort(cfg.Listen)
		if err != nil {
			return nil, fmt.Errorf("embedded nats: listen %q: %w", cfg.Listen, err)
		}
		port, err := strconv.Atoi(portStr)
		if err != nil {
			return nil, fmt.Errorf("embedded nats: listen %q: bad port", cfg.Listen)
		}
		if port == 0 {
			port = server.RANDOM_PORT
		}
		opts.Host, opts.Port = host, port
	}
	ns, err := server.NewServer(opts)
	if err != nil {
		return nil, fmt.Errorf("embedded nats: %w", err)
	}
	if logger != nil {
		ns.SetLoggerV2(&slogAdapter{logger}, false, false, false)
	}
	ns.Start()
	if !ns.ReadyForConnections(10 * time.Second) {
		ns.Shutdown()
		return nil, errors.New("embedded nats: not ready after 10s")
	}
	return &Server{ns: ns, password: password, issuer: issuer}, nil
}

func randomSecret() string {
	var b [32]byte
	_, _ = rand.Read(b[:]) // never fails: crypto/rand crashes the program instead
	return base64.RawURLEncoding.EncodeToString(b[:])
}

// Connect opens a client connection to the server, in-process, as Interlock's own user: no
// permission limits, no auth callout.
func (s *Server) Connect(opts ...nats.Option) (*nats.Conn, error) {
	opts = append([]nats.Option{
		nats.InProcessServer(s.ns), nats.Name("interlock"), nats.UserInfo(internalUser, s.password),
	}, opts...)
	return nats.Connect("", opts...)
}

// Issuer is the key that signs the users the auth callout admits.
func (s *Server) Issuer() nkeys.KeyPair { return s.issuer }

// ID is the server's public key: the issuer of the auth callout's requests, and the audience of
// its responses.
func (s *Server) ID() string { return s.ns.ID() }

// Kick closes the client connection with the given id, if it is still open.
func (s *Server) Kick(id uint64) error {
	if err := s.ns.DisconnectClientByID(id); err != nil {
		return fmt.Errorf("kick client %d: %w", id, err)
	}
	return nil
}

// KickUsers closes every open client connection whose user's name matches, and returns how many
// it closed.
func (s *Server) KickUsers(match func(user string) bool) (int, error) {
	var ids []uint64
	for offset := 0; ; {
		cz, err := s.ns.Connz(&server.ConnzOptions{Username: true, Offset: offset, Limit: 1024, State: server.ConnOpen})
		if err != nil {
			return 0, fmt.Errorf("list connections: %w", err)
		}
		for _, c := range cz.Conns {
			if match(c.AuthorizedUser) {
				ids = append(ids, c.Cid)
			}
		}
		offset += len(cz.Conns)
		if len(cz.Conns) == 0 || offset >= cz.Total {
			break
		}
	}
	n := 0
	for _, id := range ids {
		if s.ns.DisconnectClientByID(id) == nil {
			n++
		}
	}
	return n, nil
}

// ClientURL is the URL other processes use (tls:// with TLS), or "" when the server does not
// listen.
func (s *Server) ClientURL() string {
	if s.ns.Addr() == nil {
		return ""
	}
	return s.ns.ClientURL()
}

// Shutdown stops the server and waits until it has.
func (s *Server) Shutdown() {
	s.ns.Shutdown()
	s.ns.WaitForShutdown()
}

type slogAdapter struct{ l *slog.Logger }

func (a *slogAdapter) Noticef(format string, v ...any) { a.l.Debug(fmt.Sprintf(format, v...)) }
func (a *slogAdapter) Warnf(format string, v ...any)   { a.l.Warn(fmt.Sprintf(format, v...)) }
func (a *slogAdapter) Fatalf(format string, v ...any)  { a.l.Error(fmt.Sprintf(format, v...)) }
func (a *slogAdapter) Errorf(format string, v ...any)  { a.l.Error(fmt.Sprintf(format, v...)) }
func (a *slogAdapter) Debugf(format string, v ...any)  { a.l.Debug(fmt.Sprintf(format, v...)) }
func (a *slogAdapter) Tracef(format string, v ...any)  {}
