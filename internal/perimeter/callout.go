package perimeter

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"

	"github.com/interlock-dev/interlock/events"
	"github.com/interlock-dev/interlock/internal/auth"
)

// calloutSubject is where nats-server asks the auth callout service to admit a client.
const calloutSubject = "$SYS.REQ.USER.AUTH"

// authTimeout bounds one token lookup; the server gives the whole callout a few seconds.
const authTimeout = 2 * time.Second

// userSeparator separates the token's name from its key in the name of the NATS user the callout
// admits. Token names cannot hold it.
const userSeparator = "#"

// keyLen is how much of the token's key the user's name holds: enough to tell tokens apart.
const keyLen = 16

// UserName is the name of the NATS user of a client admitted with the token named token and
// stored under key (the hex SHA-256 of the token): "checkout#1a2b3c4d5e6f7a8b". It is what
// monitoring shows, what JetStream's audit names, and what [Revocations] looks for to close the
// token's connections.
func UserName(token, key string) string { return token + userSeparator + key[:keyLen] }

// tokenOf is the name of the token a user name of [UserName] stands for.
func tokenOf(user string) string {
	name, _, _ := strings.Cut(user, userSeparator)
	return name
}

// tokenKey is the key of token's bucket entry.
func tokenKey(token string) string {
	sum := sha256.Sum256([]byte(token))
	return hex.EncodeToString(sum[:])
}

// Authenticator says who a token stands for: auth.Store.
type Authenticator interface {
	Authenticate(ctx context.Context, token string) (auth.Principal, error)
}

// CalloutConfig configures a [Callout]. Every field but Logger is required.
type CalloutConfig struct {
	// Auth checks tokens.
	Auth Authenticator
	// Issuer signs the responses and the users admitted: the key the server's auth callout
	// configuration names as issuer.
	Issuer nkeys.KeyPair
	// Server is the public key of the server whose requests are answered; requests signed by
	// another are ignored.
	Server string
	// Account is the account admitted users are placed in.
	Account string
	// Logger receives refusals and failures, with component=perimeter. Nil discards.
	Logger *slog.Logger
}

// Callout answers the server's auth callout requests.
type Callout struct {
	cfg    CalloutConfig
	logger *slog.Logger
}

// NewCallout returns a callout service. Errors: a missing field.
func NewCallout(cfg CalloutConfig) (*Callout, error) {
	var errs []error
	if cfg.Auth == nil {
		errs = append(errs, errors.New("auth: required"))
	}
	if cfg.Issuer == nil {
		errs = append(errs, errors.New("issuer: required"))
	}
	if cfg.Server == "" {
		errs = append(errs, errors.New("server: required"))
	}
	if cfg.Account == "" {
		errs = append(errs, errors.New("account: required"))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("auth callout: %w", err)
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return &Callout{cfg: cfg, logger: cfg.Logger.With("component", "perimeter")}, nil
}

// Listen subscribes nc, a connection of one of the server's auth users, to the callout requests,
// and returns once the server knows of the subscription. Clients are admitted until ctx ends.
// Errors: those of subscribing.
func (c *Callout) Listen(ctx context.Context, nc *nats.Conn) error {
	sub, err := nc.Subscribe(calloutSubject, func(m *nats.Msg) { c.handle(ctx, m) })
	if err != nil {
		return fmt.Errorf("auth callout: subscribe: %w", err)
	}
	if err := nc.Flush(); err != nil {
		_ = sub.Unsubscribe()
		return fmt.Errorf("auth callout: subscribe: %w", err)
	}
	context.AfterFunc(ctx, func() { _ = sub.Unsubscribe() })
	return nil
}

func (c *Callout) handle(ctx context.Context, m *nats.Msg) {
	req, err := jwt.DecodeAuthorizationRequestClaims(string(m.Data))
	if err != nil {
		c.logger.Warn("auth callout: undecodable request", "error", err)
		return
	}
	if req.Issuer != c.cfg.Server || req.Server.ID != c.cfg.Server {
		c.logger.Warn("auth callout: request from an unknown server", "issuer", req.Issuer)
		return
	}
	userJWT, reason := c.admit(ctx, req)
	resp := jwt.NewAuthorizationResponseClaims(req.UserNkey)
	resp.Audience = req.Server.ID
	if reason != "" {
		resp.Error = reason
		c.logger.Info("nats client refused", "client", req.ClientInformation.Host, "reason", reason)
	} else {
		resp.Jwt = userJWT
	}
	data, err := resp.Encode(c.cfg.Issuer)
	if err != nil {
		c.logger.Error("auth callout: sign response", "error", err)
		return
	}
	if err := m.Respond([]byte(data)); err != nil {
		c.logger.Warn("auth callout: respond", "error", err)
	}
}

// admit returns the signed user of the request's client, or why it is refused.
func (c *Callout) admit(ctx context.Context, req *jwt.AuthorizationRequestClaims) (string, string) {
	token := req.ConnectOptions.Token
	if token == "" {
		token = req.ConnectOptions.Password
	}
	if token == "" {
		return "", "no credentials: present an Interlock token"
	}
	actx, cancel := context.WithTimeout(ctx, authTimeout)
	defer cancel()
	p, err := c.cfg.Auth.Authenticate(actx, token)
	switch {
	case errors.Is(err, auth.ErrExpired):
		return "", "the token expired"
	case errors.Is(err, auth.ErrUnauthenticated):
		return "", "unknown or revoked token"
	case err != nil:
		c.logger.Error("auth callout: look up token", "error", err)
		return "", "the token could not be checked"
	}
	uc := jwt.NewUserClaims(req.UserNkey)
	uc.Name = UserName(p.Name, tokenKey(token))
	uc.Audience = c.cfg.Account
	uc.Permissions = Permissions(p, events.InboxPrefix(token))
	if !p.ExpiresAt.IsZero() {
		uc.Expires = p.ExpiresAt.Unix()
	}
	userJWT, err := uc.Encode(c.cfg.Issuer)
	if err != nil {
		c.logger.Error("auth callout: sign user", "error", err)
		return "", "the user could not be signed"
	}
	c.logger.Debug("nats client admitted", "token", p.Name, "role", p.Role, "environment", p.Environment, "client", req.ClientInformation.Host)
	return userJWT, ""
}
