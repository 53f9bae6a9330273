package local

import (
	"crypto/ed25519"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/google/uuid"

	"github.com/interlock-dev/interlock/events"
)

// Defaults of [Config].
const (
	DefaultStaleAfter        = 10 * time.Second
	DefaultHeartbeatInterval = 2 * time.Second
	// DefaultHeartbeatGap is the shortest time between two heartbeats sent because events were
	// applied; the last one of a burst is always sent, at most this late.
	DefaultHeartbeatGap = 20 * time.Millisecond
)

// Config says which environment a [Client] follows and how. Environment is required; every other
// field has a default.
type Config struct {
	// Environment is the one environment the client follows and evaluates.
	Environment string
	// ID identifies this client in heartbeats: 1-64 letters, digits, '-' and '_'. A random UUID
	// when empty. It must be unique among the live subscribers of the environment.
	ID string
	// Name says which service this is, for people reading "applied on N of M" (for example
	// "checkout-api@host-3"). The ID when empty.
	Name string
	// Stream is the event stream's name; events.DefaultStreamName when empty.
	Stream string
	// SnapshotBucket is the object store bucket the server writes snapshots to;
	// [DefaultSnapshotBucket] when empty.
	SnapshotBucket string
	// NoSnapshot makes a cold start replay the environment's whole history instead of starting
	// from the latest snapshot.
	NoSnapshot bool
	// StaleAfter is how long without contact with the stream makes the client stale (it keeps
	// serving its last-known state and says so). A closed or reconnecting connection is stale at
	// once. DefaultStaleAfter when 0.
	StaleAfter time.Duration
	// HeartbeatInterval is how often the client publishes its presence and checks its contact
	// with the stream. DefaultHeartbeatInterval when 0; between [MinHeartbeatInterval] and
	// [MaxHeartbeatInterval].
	HeartbeatInterval time.Duration
	// HeartbeatGap is the shortest time between heartbeats sent after applying events.
	// DefaultHeartbeatGap when 0.
	HeartbeatGap time.Duration
	// NoPresence turns heartbeats off: the client is not counted in "applied on N of M".
	NoPresence bool
	// VerifyKeys, when not empty, makes the client verify every event's signature and hash
	// chain with these public keys (the server lists them at GET /api/v1/signing-keys, and
	// events.ParsePublicKeys reads them from PEM): an event that fails is skipped, logged and
	// counted in Stats.Refused. Unsigned events are accepted up to Cutover. After a start from a
	// snapshot, each flag's first event has its signature checked but its link to the history
	// before the snapshot is taken as it is. Empty: events are not verified.
	VerifyKeys []ed25519.PublicKey
	// Cutover is the stream sequence up to which events written before the server signed them
	// are accepted unsigned, with VerifyKeys: the "cutover" of GET /api/v1/signing-keys (the
	// server records it in the stream's metadata, which a token may not read over NATS). 0, right
	// for a stream a signing server created, accepts no unsigned event.
	Cutover uint64
	// Logger receives what the client skips and why, with component=local. Nil discards.
	Logger *slog.Logger
}

func (c *Config) setDefaults() {
	if c.ID == "" {
		c.ID = uuid.NewString()
	}
	if c.Name == "" {
		c.Name = c.ID
	}
	if c.Stream == "" {
		c.Stream = events.DefaultStreamName
	}
	if c.SnapshotBucket == "" {
		c.SnapshotBucket = DefaultSnapshotBucket
	}
	if c.StaleAfter == 0 {
		c.StaleAfter = DefaultStaleAfter
	}
	if c.HeartbeatInterval == 0 {
		c.HeartbeatInterval = DefaultHeartbeatInterval
	}
	if c.HeartbeatGap == 0 {
		c.HeartbeatGap = DefaultHeartbeatGap
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
}

// Validate reports every problem with the configuration, joined.
func (c Config) Validate() error {
	var errs []error
	if err := events.ValidateEnvironment(c.Environment); err != nil {
		errs = append(errs, err)
	}
	if _, err := events.NewKeys(c.VerifyKeys...); err != nil {
		errs = append(errs, fmt.Errorf("verify keys: %w", err))
	}
	if c.ID != "" {
		if err := ValidateID(c.ID); err != nil {
			errs = append(errs, err)
		}
	}
	if len(c.Name) > MaxNameLen {
		errs = append(errs, fmt.Errorf("name: longer than %d bytes", MaxNameLen))
	}
	if c.StaleAfter < 0 {
		errs = append(errs, fmt.Errorf("stale after: %v is negative", c.StaleAfter))
	}
	if c.HeartbeatInterval != 0 && (c.HeartbeatInterval < MinHeartbeatInterval || c.HeartbeatInterval > MaxHeartbeatInterval) {
		errs = append(errs, fmt.Errorf("heartbeat interval: %v is not between %v and %v", c.HeartbeatInterval, MinHeartbeatInterval, MaxHeartbeatInterval))
	}
	if c.HeartbeatGap < 0 {
		errs = append(errs, fmt.Errorf("heartbeat gap: %v is negative", c.HeartbeatGap))
	}
	return errors.Join(errs...)
}
