package guard

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// DefaultStatusBucket is the JetStream KV bucket holding the acting guard's live view of every
// rollout it judges.
const DefaultStatusBucket = "interlock_guard_status"

// StatusBoard shares the acting replica's live view of its rollouts ([Status]) with every replica
// through a JetStream KV bucket, so that any replica's API answers with the latest statistic.
// The bucket is a cache of the latest tick, not a record: the record is the decision events.
type StatusBoard struct {
	js     jetstream.JetStream
	kv     jetstream.KeyValue
	prefix string
	log    *slog.Logger
}

// NewStatusBoard creates or binds the bucket (entries expire after ttl, one hour when 0).
func NewStatusBoard(ctx context.Context, js jetstream.JetStream, replicas int, ttl time.Duration, logger *slog.Logger) (*StatusBoard, error) {
	if replicas < 1 {
		replicas = 1
	}
	if ttl <= 0 {
		ttl = time.Hour
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	kv, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket: DefaultStatusBucket, Description: "the acting guard's latest view of each rollout",
		History: 1, TTL: ttl, Replicas: replicas, Storage: jetstream.FileStorage,
	})
	if err != nil {
		return nil, fmt.Errorf("guard status bucket: %w", err)
	}
	return &StatusBoard{js: js, kv: kv, prefix: "$KV." + DefaultStatusBucket + ".", log: logger.With("component", "guard")}, nil
}

// publish sends the status without waiting for the acknowledgement: the guard's tick does not
// wait on the board, and a lost update is replaced by the next tick's.
func (b *StatusBoard) publish(env, flag string, s Status) {
	data, err := json.Marshal(s)
	if err != nil {
		b.log.Warn("encode guard status", "env", env, "flag", flag, "error", err)
		return
	}
	if _, err := b.js.PublishAsync(b.prefix+env+"."+flag, data); err != nil {
		b.log.Debug("publish guard status", "env", env, "flag", flag, "error", err)
	}
}

// Get returns the latest status published for env/flag, and false when there is none.
func (b *StatusBoard) Get(ctx context.Context, env, flag string) (Status, bool, error) {
	e, err := b.kv.Get(ctx, env+"."+flag)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return Status{}, false, nil
	}
	if err != nil {
		return Status{}, false, err
	}
	var s Status
	if err := json.Unmarshal(e.Value(), &s); err != nil {
		return Status{}, false, fmt.Errorf("guard status of %s/%s: %w", env, flag, err)
	}
	s.Acting = false
	return s, true, nil
}
