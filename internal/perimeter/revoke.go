package perimeter

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Kicker closes client connections: the embedded server.
type Kicker interface {
	// KickUsers closes every connection whose user's name matches and says how many it closed.
	KickUsers(match func(user string) bool) (int, error)
}

// Forgetter drops what it cached about a token: auth.Store.
type Forgetter interface {
	Forget(key string)
}

// Revocations closes the NATS connections of revoked tokens. It watches the token bucket, so a
// revocation by any replica, through any path, is seen within the time JetStream takes to deliver
// the deletion to the watcher (milliseconds), and the token is refused from then on.
type Revocations struct {
	kv     jetstream.KeyValue
	kick   Kicker
	forget Forgetter
	logger *slog.Logger
}

// NewRevocations returns a watcher of kv (the token bucket) that makes forget drop each deleted
// token and kick close its connections. A nil logger discards.
func NewRevocations(kv jetstream.KeyValue, kick Kicker, forget Forgetter, logger *slog.Logger) *Revocations {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return &Revocations{kv: kv, kick: kick, forget: forget, logger: logger.With("component", "perimeter")}
}

// Run watches the bucket until ctx ends, and returns nil then. A watch that fails is started again
// after a short pause.
func (r *Revocations) Run(ctx context.Context) error {
	for {
		err := r.watch(ctx)
		if ctx.Err() != nil {
			return nil
		}
		r.logger.Warn("watching revocations stopped; watching again", "error", err)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(time.Second):
		}
	}
}

func (r *Revocations) watch(ctx context.Context) error {
	w, err := r.kv.WatchAll(ctx, jetstream.UpdatesOnly())
	if err != nil {
		return fmt.Errorf("watch tokens: %w", err)
	}
	defer func() { _ = w.Stop() }()
	for {
		select {
		case <-ctx.Done():
			return nil
		case e, ok := <-w.Updates():
			if !ok {
				return errors.New("watch tokens: the watch ended")
			}
			if e == nil || e.Operation() == jetstream.KeyValuePut {
				continue
			}
			r.revoked(e.Key())
		}
	}
}

func (r *Revocations) revoked(key string) {
	if len(key) < keyLen { // not a token: the bootstrap marker
		return
	}
	r.forget.Forget(key)
	suffix := userSeparator + key[:keyLen]
	n, err := r.kick.KickUsers(func(user string) bool { return strings.HasSuffix(user, suffix) })
	if err != nil {
		r.logger.Error("closing the connections of a revoked token", "error", err)
		return
	}
	if n > 0 {
		r.logger.Info("closed the nats connections of a revoked token", "connections", n)
	}
}
