// Package snapshot writes, for every environment, the state of its flags and segments at a stream
// sequence into a JetStream object store, so that in-process subscribers (package local) start
// from the latest snapshot plus the events after it instead of replaying all history.
//
// The writer learns of every event the server's catalog applies (it is a catalog observer) and
// keeps, per environment, the documents those events changed and the environment's last
// sequence. A snapshot is written every [Config.Every] events of an environment, or
// [Config.Interval] after its last change, whichever comes first, and only while the catalog is
// ready (not during the replay at start). A snapshot is never required for correctness: it is
// always a state the stream itself gives at its sequence, so a stale or missing one only means a
// subscriber replays more events.
package snapshot

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/interlock-dev/interlock/events"
	"github.com/interlock-dev/interlock/local"
	"github.com/interlock-dev/interlock/projections"
)

// Defaults of [Config].
const (
	DefaultEvery    = 1000
	DefaultInterval = 30 * time.Second
)

// metaSequence is the object metadata key holding the snapshot's sequence, so that a writer can
// tell without downloading it whether the stored snapshot is already as new as its own.
const metaSequence = "interlock-sequence"

// State is where the writer reads the documents an event changed: *projections.Catalog.
type State interface {
	Flag(env, key string) (projections.Flag, bool)
	Segment(env, key string) (projections.Segment, bool)
	Flags(env string) []projections.Flag
	Segments(env string) []projections.Segment
}

// Config tunes a [Writer]. State is required.
type Config struct {
	// State is read, on the catalog's goroutine, for the document each observed event changed.
	State State
	// Ready reports whether the catalog has caught up with the stream; no snapshot is written
	// before. Always ready when nil.
	Ready func() bool
	// Bucket is the object store bucket; local.DefaultSnapshotBucket when empty.
	Bucket string
	// Replicas of the bucket, as the event stream's. 1 when 0.
	Replicas int
	// Every is how many events of an environment make a new snapshot. DefaultEvery when 0.
	Every int
	// Interval is how long after an environment's first unsnapshotted event a snapshot is
	// written anyway. DefaultInterval when 0.
	Interval time.Duration
	// Logger receives what is written and what fails, with component=snapshot. Nil discards.
	Logger *slog.Logger
	// Now is the clock; time.Now when nil.
	Now func() time.Time
}

func (c *Config) setDefaults() {
	if c.Ready == nil {
		c.Ready = func() bool { return true }
	}
	if c.Bucket == "" {
		c.Bucket = local.DefaultSnapshotBucket
	}
	if c.Replicas == 0 {
		c.Replicas = 1
	}
	if c.Every == 0 {
		c.Every = DefaultEvery
	}
	if c.Interval == 0 {
		c.Interval = DefaultInterval
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Now == nil {
		c.Now = time.Now
	}
}

// Validate reports every problem with the configuration, joined.
func (c Config) Validate() error {
	var errs []error
	if c.State == nil {
		errs = append(errs, errors.New("state: required"))
	}
	if c.Replicas < 0 || c.Replicas > 5 {
		errs = append(errs, fmt.Errorf("replicas: %d is not between 1 and 5", c.Replicas))
	}
	if c.Every < 0 {
		errs = append(errs, fmt.Errorf("every: %d is negative", c.Every))
	}
	if c.Interval < 0 {
		errs = append(errs, fmt.Errorf("interval: %v is negative", c.Interval))
	}
	return errors.Join(errs...)
}

// env is what the writer knows of one environment.
type env struct {
	flags    map[string]projections.Flag
	segments map[string]projections.Segment
	seq      uint64    // the environment's last applied event
	pending  int       // events since the last snapshot
	since    time.Time // when the first of them was observed
}

// Writer writes snapshots. Observe must be registered with the catalog before events are applied.
type Writer struct {
	js     jetstream.JetStream
	cfg    Config
	logger *slog.Logger

	mu   sync.Mutex
	envs map[string]*env
	kick chan struct{}

	obsMu sync.Mutex
	obs   jetstream.ObjectStore // nil until the bucket exists
}

// New returns a writer storing snapshots through js, or the configuration's problems.
func New(js jetstream.JetStream, cfg Config) (*Writer, error) {
	if js == nil {
		return nil, errors.New("snapshot: jetstream: required")
	}
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("snapshot: %w", err)
	}
	cfg.setDefaults()
	return &Writer{
		js:     js,
		cfg:    cfg,
		logger: cfg.Logger.With("component", "snapshot"),
		envs:   make(map[string]*env),
		kick:   make(chan struct{}, 1),
	}, nil
}

// Observe records that ev was applied: register it with projections.Catalog.Observe. It reads
// the changed document from the state and returns at once; writing happens in Run.
func (w *Writer) Observe(ev events.Event) {
	var (
		f   projections.Flag
		s   projections.Segment
		ok  bool
		seg = ev.Entity == events.EntitySegment
	)
	if seg {
		s, ok = w.cfg.State.Segment(ev.Environment, ev.Key)
	} else {
		f, ok = w.cfg.State.Flag(ev.Environment, ev.Key)
	}
	if !ok {
		return
	}
	w.mu.Lock()
	e := w.envs[ev.Environment]
	if e == nil {
		// Everything the state holds of the environment, as of ev: a catalog started from a
		// checkpoint holds documents this writer never saw an event of.
		e = &env{flags: make(map[string]projections.Flag), segments: make(map[string]projections.Segment)}
		for _, f := range w.cfg.State.Flags(ev.Environment) {
			e.flags[f.Key] = f
			e.seq = max(e.seq, f.Sequence)
		}
		for _, s := range w.cfg.State.Segments(ev.Environment) {
			e.segments[s.Key] = s
			e.seq = max(e.seq, s.Sequence)
		}
		w.envs[ev.Environment] = e
	}
	if seg {
		e.segments[ev.Key] = s
	} else {
		e.flags[ev.Key] = f
	}
	e.seq = max(e.seq, ev.Sequence)
	if e.pending == 0 {
		e.since = w.cfg.Now()
	}
	e.pending++
	full := e.pending >= w.cfg.Every
	w.mu.Unlock()
	if full {
		select {
		case w.kick <- struct{}{}:
		default:
		}
	}
}

// Run creates the bucket if needed and writes snapshots until ctx ends, then returns nil.
// Failures are logged and retried.
func (w *Writer) Run(ctx context.Context) error {
	delay := 100 * time.Millisecond
	for {
		_, err := w.bucket(ctx)
		if err == nil {
			break
		}
		w.logger.Warn("snapshot bucket unavailable; retrying", "bucket", w.cfg.Bucket, "retry_in", delay, "error", err)
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
		delay = min(delay*2, 5*time.Second)
	}
	tick := time.NewTicker(min(w.cfg.Interval/2, 5*time.Second))
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		case <-w.kick:
		}
		if err := w.writeDue(ctx, false); err != nil {
			w.logger.Warn("snapshot not written; will retry", "error", err)
		}
	}
}

// Flush writes the snapshot of every environment that changed since its last one, now, if the
// catalog is ready. Errors: the bucket's or the writes', joined.
func (w *Writer) Flush(ctx context.Context) error {
	return w.writeDue(ctx, true)
}

// bucket returns the object store, creating it the first time.
func (w *Writer) bucket(ctx context.Context) (jetstream.ObjectStore, error) {
	w.obsMu.Lock()
	defer w.obsMu.Unlock()
	if w.obs != nil {
		return w.obs, nil
	}
	obs, err := Bucket(ctx, w.js, w.cfg.Bucket, w.cfg.Replicas)
	if err != nil {
		return nil, err
	}
	w.obs = obs
	return obs, nil
}

// Bucket creates the snapshot object store (or updates it to these settings) and returns it.
func Bucket(ctx context.Context, js jetstream.JetStream, name string, replicas int) (jetstream.ObjectStore, error) {
	obs, err := js.CreateOrUpdateObjectStore(ctx, jetstream.ObjectStoreConfig{
		Bucket:      name,
		Description: "Interlock: the latest state of each environment, for subscribers to start from",
		Storage:     jetstream.FileStorage,
		Replicas:    max(replicas, 1),
		Compression: true,
	})
	if err != nil {
		return nil, fmt.Errorf("snapshot bucket %s: %w", name, err)
	}
	return obs, nil
}

// writeDue writes the snapshot of every environment that is due (or, with all, that changed
// since its last snapshot) when the catalog is ready. An environment whose write fails stays due.
func (w *Writer) writeDue(ctx context.Context, all bool) error {
	if !w.cfg.Ready() {
		return nil
	}
	obs, err := w.bucket(ctx)
	if err != nil {
		return err
	}
	now := w.cfg.Now()
	w.mu.Lock()
	var due []string
	for name, e := range w.envs {
		if e.pending > 0 && (all || e.pending >= w.cfg.Every || now.Sub(e.since) >= w.cfg.Interval) {
			due = append(due, name)
		}
	}
	w.mu.Unlock()
	slices.Sort(due)
	var errs []error
	for _, name := range due {
		if err := w.write(ctx, obs, name); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// write writes the snapshot of one environment, unless the stored one is as new.
func (w *Writer) write(ctx context.Context, obs jetstream.ObjectStore, name string) error {
	w.mu.Lock()
	e := w.envs[name]
	snap := local.Snapshot{
		Format:      local.SnapshotFormat,
		Environment: name,
		Sequence:    e.seq,
		Time:        w.cfg.Now().UTC(),
		Flags:       make([]projections.Flag, 0, len(e.flags)),
		Segments:    make([]projections.Segment, 0, len(e.segments)),
	}
	for _, f := range e.flags {
		snap.Flags = append(snap.Flags, f)
	}
	for _, s := range e.segments {
		snap.Segments = append(snap.Segments, s)
	}
	pending := e.pending
	w.mu.Unlock()
	slices.SortFunc(snap.Flags, func(a, b projections.Flag) int { return strings.Compare(a.Key, b.Key) })
	slices.SortFunc(snap.Segments, func(a, b projections.Segment) int { return strings.Compare(a.Key, b.Key) })

	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	stored, err := storedSequence(ctx, obs, name)
	if err != nil {
		return err
	}
	if stored < snap.Sequence {
		data, err := snap.Encode()
		if err != nil {
			return err
		}
		_, err = obs.Put(ctx, jetstream.ObjectMeta{
			Name:     name,
			Metadata: map[string]string{metaSequence: strconv.FormatUint(snap.Sequence, 10)},
		}, bytes.NewReader(data))
		if err != nil {
			return fmt.Errorf("put snapshot of %s: %w", name, err)
		}
		w.logger.Debug("snapshot written", "environment", name, "sequence", snap.Sequence, "bytes", len(data), "flags", len(snap.Flags), "segments", len(snap.Segments))
	}
	w.mu.Lock()
	e.pending -= pending // events observed while writing stay pending
	if e.pending > 0 {
		e.since = w.cfg.Now()
	}
	w.mu.Unlock()
	return nil
}

// storedSequence is the sequence of the snapshot stored for name, 0 when there is none.
func storedSequence(ctx context.Context, obs jetstream.ObjectStore, name string) (uint64, error) {
	info, err := obs.GetInfo(ctx, name)
	if errors.Is(err, jetstream.ErrObjectNotFound) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("snapshot info of %s: %w", name, err)
	}
	seq, err := strconv.ParseUint(info.Metadata[metaSequence], 10, 64)
	if err != nil {
		return 0, nil // not ours, or older: replace it
	}
	return seq, nil
}
