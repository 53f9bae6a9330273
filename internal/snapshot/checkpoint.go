package snapshot

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/interlock-dev/interlock/events"
	"github.com/interlock-dev/interlock/projections"
)

// CheckpointBucket is the object store bucket holding the server's checkpoint: one object, the
// state of every projection at one stream sequence, for a restarting server to start from. Only
// servers read it; subscribers start from the per-environment snapshots.
const CheckpointBucket = "interlock_checkpoints"

// Defaults of [CheckpointConfig].
const (
	DefaultCheckpointEvery    = 5000
	DefaultCheckpointInterval = time.Minute
)

const (
	checkpointObject = "catalog"
	// checkpointKind is what a checkpoint's signature says it signs.
	checkpointKind = "interlock-checkpoint"
	metaKey        = "interlock-signing-key"
	metaSignature  = "interlock-signature"
)

// Runner is where checkpoints come from: *projections.Runner.
type Runner interface {
	Checkpoint() projections.Checkpoint
	Ready() bool
	// Replayed reports whether the runner replayed the stream from its start, having no
	// checkpoint it could use: the stored one is then replaced even at the same sequence.
	Replayed() bool
}

// CheckpointConfig tunes [Checkpoints]. Runner, Signer and Keys are required.
type CheckpointConfig struct {
	// Runner gives the checkpoints to write.
	Runner Runner
	// Signer signs every checkpoint written; Keys verify the one loaded (the signer's own key
	// and earlier ones).
	Signer *events.Signer
	Keys   *events.Keys
	// Replicas of the bucket, as the event stream's. 1 when 0.
	Replicas int
	// Every is how many messages after the last checkpoint make a new one.
	// DefaultCheckpointEvery when 0.
	Every uint64
	// Interval is how long after the last checkpoint any newer message makes a new one.
	// DefaultCheckpointInterval when 0.
	Interval time.Duration
	// Logger receives what is written and what fails, with component=checkpoint. Nil discards.
	Logger *slog.Logger
}

func (c *CheckpointConfig) setDefaults() {
	if c.Replicas == 0 {
		c.Replicas = 1
	}
	if c.Every == 0 {
		c.Every = DefaultCheckpointEvery
	}
	if c.Interval == 0 {
		c.Interval = DefaultCheckpointInterval
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
}

// Validate reports every problem with the configuration, joined.
func (c CheckpointConfig) Validate() error {
	var errs []error
	if c.Runner == nil {
		errs = append(errs, errors.New("runner: required"))
	}
	if c.Signer == nil {
		errs = append(errs, errors.New("signer: required"))
	}
	if c.Keys == nil {
		errs = append(errs, errors.New("keys: required"))
	}
	if c.Replicas < 0 || c.Replicas > 5 {
		errs = append(errs, fmt.Errorf("replicas: %d is not between 1 and 5", c.Replicas))
	}
	if c.Interval < 0 {
		errs = append(errs, fmt.Errorf("interval: %v is negative", c.Interval))
	}
	return errors.Join(errs...)
}

// Checkpoints writes the runner's checkpoints to [CheckpointBucket], signed, and loads the
// newest one for a starting runner (it is a projections.CheckpointLoader). A checkpoint is
// written once the runner is ready, every [CheckpointConfig.Every] messages, or
// [CheckpointConfig.Interval] after the last one when anything happened since, and when Run
// ends (a graceful stop), so that the next start reads few events.
type Checkpoints struct {
	js     jetstream.JetStream
	cfg    CheckpointConfig
	logger *slog.Logger

	mu  sync.Mutex
	obs jetstream.ObjectStore // nil until the bucket exists
	// written is the sequence of the last checkpoint stored (by this process or found).
	written uint64
	// replaced: this process stored a checkpoint, so the stored one is usable.
	replaced bool
}

// NewCheckpoints returns a checkpoint writer and loader, or the configuration's problems.
func NewCheckpoints(js jetstream.JetStream, cfg CheckpointConfig) (*Checkpoints, error) {
	if js == nil {
		return nil, errors.New("checkpoints: jetstream: required")
	}
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("checkpoints: %w", err)
	}
	cfg.setDefaults()
	return &Checkpoints{js: js, cfg: cfg, logger: cfg.Logger.With("component", "checkpoint")}, nil
}

// LoadCheckpoint returns the stored checkpoint after checking its signature.
//
// Errors: projections.ErrNotFound when there is none; one wrapping projections.ErrBadCheckpoint
// when it is not signed by a known key, does not decode or is of another format; otherwise a
// transport error.
func (c *Checkpoints) LoadCheckpoint(ctx context.Context) (projections.Checkpoint, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	obs, err := c.js.ObjectStore(ctx, CheckpointBucket)
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		return projections.Checkpoint{}, fmt.Errorf("checkpoint bucket %s: %w", CheckpointBucket, projections.ErrNotFound)
	}
	if err != nil {
		return projections.Checkpoint{}, fmt.Errorf("checkpoint bucket %s: %w", CheckpointBucket, err)
	}
	res, err := obs.Get(ctx, checkpointObject)
	if errors.Is(err, jetstream.ErrObjectNotFound) {
		return projections.Checkpoint{}, fmt.Errorf("checkpoint: %w", projections.ErrNotFound)
	}
	if err != nil {
		return projections.Checkpoint{}, fmt.Errorf("checkpoint: %w", err)
	}
	defer res.Close()
	info, err := res.Info()
	if err != nil {
		return projections.Checkpoint{}, fmt.Errorf("checkpoint: %w", err)
	}
	var buf bytes.Buffer
	if _, err := buf.ReadFrom(res); err != nil {
		return projections.Checkpoint{}, fmt.Errorf("checkpoint: %w", err)
	}
	sig, err := base64.StdEncoding.DecodeString(info.Metadata[metaSignature])
	if err != nil {
		return projections.Checkpoint{}, fmt.Errorf("%w: its signature does not decode: %v", projections.ErrBadCheckpoint, err)
	}
	if err := c.cfg.Keys.VerifyDocument(checkpointKind, info.Metadata[metaKey], buf.Bytes(), sig); err != nil {
		return projections.Checkpoint{}, fmt.Errorf("%w: %v", projections.ErrBadCheckpoint, err)
	}
	return projections.DecodeCheckpoint(buf.Bytes())
}

// Run writes checkpoints until ctx ends, then writes a last one if anything happened since the
// previous, and returns nil. Failures are logged and retried.
func (c *Checkpoints) Run(ctx context.Context) error {
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	last := time.Now()
	for {
		select {
		case <-ctx.Done():
			c.final(ctx)
			return nil
		case <-tick.C:
		}
		if !c.cfg.Runner.Ready() {
			continue
		}
		cp := c.cfg.Runner.Checkpoint()
		c.mu.Lock()
		behind := cp.Sequence - min(c.written, cp.Sequence)
		unusable := c.unusable()
		c.mu.Unlock()
		if !unusable && (behind == 0 || (behind < c.cfg.Every && time.Since(last) < c.cfg.Interval)) {
			continue
		}
		if err := c.write(ctx, cp); err != nil {
			if ctx.Err() == nil {
				c.logger.Warn("checkpoint not written; will retry", "sequence", cp.Sequence, "error", err)
			}
			continue
		}
		last = time.Now()
	}
}

// final writes the checkpoint on the way out, if the runner got anywhere new.
// finalTimeout bounds the checkpoint written at stop.
const finalTimeout = 3 * time.Second

func (c *Checkpoints) final(ctx context.Context) {
	if !c.cfg.Runner.Ready() {
		return
	}
	cp := c.cfg.Runner.Checkpoint()
	c.mu.Lock()
	fresh := cp.Sequence > c.written || c.unusable()
	c.mu.Unlock()
	if !fresh {
		return
	}
	// Bounded well inside the server's 10 s shutdown: with the store out of reach, the next start
	// uses the previous checkpoint and reads a little more.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), finalTimeout)
	defer cancel()
	if err := c.write(ctx, cp); err != nil {
		c.logger.Warn("checkpoint not written at stop", "sequence", cp.Sequence, "error", err)
	}
}

// Flush writes the runner's checkpoint now if it is ready. Errors: those of the write.
func (c *Checkpoints) Flush(ctx context.Context) error {
	if !c.cfg.Runner.Ready() {
		return nil
	}
	return c.write(ctx, c.cfg.Runner.Checkpoint())
}

// write stores cp, unless the stored checkpoint is as new.
func (c *Checkpoints) write(ctx context.Context, cp projections.Checkpoint) error {
	if cp.Sequence == 0 {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	obs, err := c.bucket(ctx)
	if err != nil {
		return err
	}
	stored, err := storedSequence(ctx, obs, checkpointObject)
	if err != nil {
		return err
	}
	c.mu.Lock()
	unusable := c.unusable()
	c.mu.Unlock()
	if stored < cp.Sequence || unusable {
		start := time.Now()
		data, err := cp.Encode()
		if err != nil {
			return err
		}
		sig := c.cfg.Signer.SignDocument(checkpointKind, data)
		_, err = obs.Put(ctx, jetstream.ObjectMeta{
			Name: checkpointObject,
			Metadata: map[string]string{
				metaSequence:  strconv.FormatUint(cp.Sequence, 10),
				metaKey:       c.cfg.Signer.KeyID(),
				metaSignature: base64.StdEncoding.EncodeToString(sig),
			},
		}, bytes.NewReader(data))
		if err != nil {
			return fmt.Errorf("put checkpoint: %w", err)
		}
		c.logger.Info("checkpoint written", "sequence", cp.Sequence, "bytes", len(data), "flags", len(cp.Flags), "segments", len(cp.Segments), "took", time.Since(start))
		c.mu.Lock()
		c.replaced = true
		c.mu.Unlock()
	}
	c.mu.Lock()
	c.written = max(c.written, cp.Sequence, stored)
	c.mu.Unlock()
	return nil
}

// unusable reports whether the stored checkpoint is one the runner could not start from (of
// another format, spoilt, of another stream) and this process has not replaced it yet: it is
// replaced even when it is as new, or every start would replay the whole stream. The caller
// holds c.mu.
func (c *Checkpoints) unusable() bool { return c.cfg.Runner.Replayed() && !c.replaced }

// bucket returns the object store, creating it the first time.
func (c *Checkpoints) bucket(ctx context.Context) (jetstream.ObjectStore, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.obs != nil {
		return c.obs, nil
	}
	obs, err := c.js.CreateOrUpdateObjectStore(ctx, jetstream.ObjectStoreConfig{
		Bucket:      CheckpointBucket,
		Description: "Interlock: the state of the server's projections at one sequence, for a restart to start from",
		Storage:     jetstream.FileStorage,
		Replicas:    max(c.cfg.Replicas, 1),
		Compression: true,
	})
	if err != nil {
		return nil, fmt.Errorf("checkpoint bucket %s: %w", CheckpointBucket, err)
	}
	c.obs = obs
	return obs, nil
}
