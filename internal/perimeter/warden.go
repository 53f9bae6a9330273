package perimeter

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/interlock-dev/interlock/events"
	"github.com/interlock-dev/interlock/internal/auth"
)

// auditSubject is where JetStream reports every call of its API, with the caller.
const auditSubject = "$JS.EVENT.ADVISORY.API"

// ClientKicker closes one client connection: the embedded server.
type ClientKicker interface {
	Kick(id uint64) error
}

// TokenLister lists the issued tokens: auth.Store.
type TokenLister interface {
	List(ctx context.Context) ([]auth.TokenInfo, error)
}

// Warden keeps durable consumers of the event stream with the tokens that own them (see
// [OwnsDurable]). NATS permissions cannot tell a durable's name from an ordered consumer's, so a
// token holder's client may ask for a durable of any name; the warden reads JetStream's audit of
// API calls, and when a client admitted with a token made or changed a durable that token does not
// own, it closes the client's connection and deletes the durable, unless another token owns that
// name (then the durable is its owner's, which the intruder may have changed but not taken: the
// owner's subscriber sets its configuration again when it starts). It acts after the fact, within
// the milliseconds the audit takes to arrive.
type Warden struct {
	js     jetstream.JetStream
	kick   ClientKicker
	tokens TokenLister
	logger *slog.Logger
}

// NewWarden returns a warden that deletes consumers through js, closes connections with kick and
// learns from tokens who owns a name. A nil logger discards.
func NewWarden(js jetstream.JetStream, kick ClientKicker, tokens TokenLister, logger *slog.Logger) *Warden {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return &Warden{js: js, kick: kick, tokens: tokens, logger: logger.With("component", "perimeter")}
}

// audit is the part of JetStream's API audit the warden reads.
type audit struct {
	Client *struct {
		ID uint64 `json:"id"`
		// User is the name of the user the auth callout admitted (see UserName).
		User string `json:"user"`
		// IssuerKey is set for users the auth callout admitted, not for Interlock's own.
		IssuerKey string `json:"issuer_key"`
	} `json:"client"`
	Subject  string `json:"subject"`
	Request  string `json:"request"`
	Response string `json:"response"`
}

// Listen subscribes nc (Interlock's own connection) to the audit until ctx ends, and returns once
// the server knows of the subscription. Errors: those of subscribing.
func (w *Warden) Listen(ctx context.Context, nc *nats.Conn) error {
	sub, err := nc.Subscribe(auditSubject, func(m *nats.Msg) { w.check(ctx, m.Data) })
	if err != nil {
		return fmt.Errorf("durable warden: subscribe: %w", err)
	}
	if err := nc.Flush(); err != nil {
		_ = sub.Unsubscribe()
		return fmt.Errorf("durable warden: subscribe: %w", err)
	}
	context.AfterFunc(ctx, func() { _ = sub.Unsubscribe() })
	return nil
}

func (w *Warden) check(ctx context.Context, data []byte) {
	var a audit
	if json.Unmarshal(data, &a) != nil || a.Client == nil || a.Client.IssuerKey == "" {
		return
	}
	prefix := jsAPI + "CONSUMER.CREATE." + events.DefaultStreamName + "."
	if !strings.HasPrefix(a.Subject, prefix) {
		return
	}
	var req struct {
		Config struct {
			Durable string `json:"durable_name"`
		} `json:"config"`
	}
	var resp struct {
		Error *json.RawMessage `json:"error"`
	}
	if json.Unmarshal([]byte(a.Request), &req) != nil || req.Config.Durable == "" ||
		json.Unmarshal([]byte(a.Response), &resp) != nil || resp.Error != nil {
		return
	}
	token := tokenOf(a.Client.User)
	if OwnsDurable(token, req.Config.Durable) {
		return
	}
	durable := req.Config.Durable
	w.logger.Warn("a token made or changed a durable it does not own: closing its connection",
		"token", token, "durable", durable)
	if err := w.kick.Kick(a.Client.ID); err != nil {
		w.logger.Warn("durable warden", "error", err)
	}
	tokens, err := w.tokens.List(ctx)
	if err != nil {
		w.logger.Error("durable warden: list tokens", "error", err)
		return
	}
	for _, t := range tokens {
		if t.Name != token && OwnsDurable(t.Name, durable) {
			w.logger.Warn("durable warden: the durable is another token's; kept", "durable", durable, "owner", t.Name)
			return
		}
	}
	if err := w.js.DeleteConsumer(ctx, events.DefaultStreamName, durable); err != nil {
		w.logger.Error("durable warden: delete durable", "durable", durable, "error", err)
	}
}
