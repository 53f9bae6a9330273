package projections

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/interlock-dev/interlock/events"
)

// CheckpointFormat is the version of the checkpoint document written now. A runner ignores
// checkpoints of other versions and replays the stream instead.
const CheckpointFormat = 3

// ErrBadCheckpoint means a checkpoint cannot be used: it does not decode, is of another format
// version, or does not match the stream it claims to be of.
var ErrBadCheckpoint = errors.New("unusable checkpoint")

// Checkpoint is everything a [Runner] knows at one stream sequence: every flag and segment of
// every environment, the chains its verifier checked (so that the events after the checkpoint
// are chain-checked as in a full replay), the messages it refused and, for a runner that keeps
// one, its history [Index]. A runner given one starts from it and reads only the events after it
// (see [WithCheckpoints]).
type Checkpoint struct {
	Format int
	// Sequence is that of the last message the runner handled; a runner resumes after it.
	Sequence uint64
	// Last is that message: its subject and hash, checked against the stream before use.
	Last events.Link
	// Time is when the checkpoint was taken.
	Time     time.Time
	Flags    []Flag
	Segments []Segment
	// Chains is what the runner knew of every subject's chain up to Sequence.
	Chains events.Chains
	// Problems are the latest messages refused (at most MaxProblems); ProblemCount counts all.
	Problems     []Problem
	ProblemCount uint64
	// Acknowledged is the acknowledgement of problems that reaches furthest; zero for none.
	Acknowledged Acknowledgement
	// index is the runner's [Index] at Sequence, when it keeps one.
	index *indexState
}

// checkpointDoc is the JSON of a checkpoint. Flags and segments carry their sequence, which
// their own JSON leaves out.
type checkpointDoc struct {
	Format       int          `json:"format"`
	Sequence     uint64       `json:"sequence"`
	Last         linkDoc      `json:"last"`
	Time         time.Time    `json:"time"`
	Flags        []flagDoc    `json:"flags"`
	Segments     []segmentDoc `json:"segments"`
	Heads        []linkDoc    `json:"heads"`
	Refused      []refusedDoc `json:"refused"`
	Problems     []Problem    `json:"problems"`
	ProblemCount uint64       `json:"problemCount"`
	// Acknowledged is absent in checkpoints written before acknowledgements existed.
	Acknowledged *Acknowledgement `json:"acknowledged,omitempty"`
	Index        *indexState      `json:"index,omitempty"`
}

type flagDoc struct {
	Flag
	Seq uint64 `json:"seq"`
}

type segmentDoc struct {
	Segment
	Seq uint64 `json:"seq"`
}

type linkDoc struct {
	Subject  string `json:"subject"`
	Sequence uint64 `json:"sequence"`
	Hash     string `json:"hash"`
}

type refusedDoc struct {
	Subject  string `json:"subject"`
	Sequence uint64 `json:"sequence"`
	Reason   string `json:"reason"`
	Detail   string `json:"detail,omitempty"`
}

func toLinkDoc(l events.Link) linkDoc {
	return linkDoc{Subject: l.Subject, Sequence: l.Sequence, Hash: hex.EncodeToString(l.Hash[:])}
}

func (d linkDoc) link() (events.Link, error) {
	l := events.Link{Subject: d.Subject, Sequence: d.Sequence}
	b, err := hex.DecodeString(d.Hash)
	if err != nil || len(b) != len(l.Hash) {
		return events.Link{}, fmt.Errorf("%w: hash %q of %s at %d", ErrBadCheckpoint, truncate(d.Hash), truncate(d.Subject), d.Sequence)
	}
	copy(l.Hash[:], b)
	return l, nil
}

// Encode is the checkpoint's JSON.
func (cp *Checkpoint) Encode() ([]byte, error) {
	d := checkpointDoc{
		Format: cp.Format, Sequence: cp.Sequence, Last: toLinkDoc(cp.Last), Time: cp.Time,
		Flags:        make([]flagDoc, len(cp.Flags)),
		Segments:     make([]segmentDoc, len(cp.Segments)),
		Heads:        make([]linkDoc, len(cp.Chains.Heads)),
		Refused:      make([]refusedDoc, len(cp.Chains.Refused)),
		Problems:     cp.Problems,
		ProblemCount: cp.ProblemCount,
		Index:        cp.index,
	}
	if cp.Acknowledged.Sequence != 0 {
		d.Acknowledged = &cp.Acknowledged
	}
	for i, f := range cp.Flags {
		d.Flags[i] = flagDoc{f, f.Sequence}
	}
	for i, s := range cp.Segments {
		d.Segments[i] = segmentDoc{s, s.Sequence}
	}
	for i, l := range cp.Chains.Heads {
		d.Heads[i] = toLinkDoc(l)
	}
	for i, e := range cp.Chains.Refused {
		d.Refused[i] = refusedDoc{Subject: e.Subject, Sequence: e.Sequence, Reason: e.Reason(), Detail: e.Detail}
	}
	data, err := json.Marshal(d)
	if err != nil {
		return nil, fmt.Errorf("encode checkpoint at %d: %w", cp.Sequence, err)
	}
	return data, nil
}

// DecodeCheckpoint reads a checkpoint. It never panics; a document that is not a checkpoint in
// [CheckpointFormat], or that holds a flag or segment twice or without a version, gives an error
// wrapping [ErrBadCheckpoint].
func DecodeCheckpoint(data []byte) (Checkpoint, error) {
	var d checkpointDoc
	if err := json.Unmarshal(data, &d); err != nil {
		return Checkpoint{}, fmt.Errorf("%w: %v", ErrBadCheckpoint, err)
	}
	if d.Format != CheckpointFormat {
		return Checkpoint{}, fmt.Errorf("%w: format %d, this version reads %d", ErrBadCheckpoint, d.Format, CheckpointFormat)
	}
	if d.Sequence == 0 || d.Last.Sequence != d.Sequence {
		return Checkpoint{}, fmt.Errorf("%w: at sequence %d, its last message at %d", ErrBadCheckpoint, d.Sequence, d.Last.Sequence)
	}
	cp := Checkpoint{
		Format: d.Format, Sequence: d.Sequence, Time: d.Time,
		Flags:        make([]Flag, 0, len(d.Flags)),
		Segments:     make([]Segment, 0, len(d.Segments)),
		Problems:     d.Problems,
		ProblemCount: d.ProblemCount,
		Chains:       events.Chains{Sequence: d.Sequence, Heads: make([]events.Link, 0, len(d.Heads))},
	}
	if d.Acknowledged != nil {
		cp.Acknowledged = *d.Acknowledged
	}
	var err error
	if cp.Last, err = d.Last.link(); err != nil {
		return Checkpoint{}, err
	}
	if d.Index != nil {
		if err := d.Index.check(d.Sequence); err != nil {
			return Checkpoint{}, err
		}
		cp.index = d.Index
	}
	seen := make(map[string]bool, len(d.Flags))
	for _, fd := range d.Flags {
		f := fd.Flag
		f.Sequence = fd.Seq
		if err := checkEntry("flag", f.Environment, f.Key, f.Version, f.Sequence, d.Sequence, seen); err != nil {
			return Checkpoint{}, err
		}
		cp.Flags = append(cp.Flags, f)
	}
	clear(seen)
	for _, sd := range d.Segments {
		s := sd.Segment
		s.Sequence = sd.Seq
		if err := checkEntry("segment", s.Environment, s.Key, s.Version, s.Sequence, d.Sequence, seen); err != nil {
			return Checkpoint{}, err
		}
		cp.Segments = append(cp.Segments, s)
	}
	for _, ld := range d.Heads {
		l, err := ld.link()
		if err != nil {
			return Checkpoint{}, err
		}
		if l.Sequence == 0 || l.Sequence > d.Sequence {
			return Checkpoint{}, fmt.Errorf("%w: head of %s at sequence %d", ErrBadCheckpoint, truncate(l.Subject), l.Sequence)
		}
		cp.Chains.Heads = append(cp.Chains.Heads, l)
	}
	for _, rd := range d.Refused {
		problem := events.ProblemFor(rd.Reason)
		if problem == nil || rd.Sequence == 0 || rd.Sequence > d.Sequence {
			return Checkpoint{}, fmt.Errorf("%w: refused message %d on %s: %q", ErrBadCheckpoint, rd.Sequence, truncate(rd.Subject), truncate(rd.Reason))
		}
		cp.Chains.Refused = append(cp.Chains.Refused, &events.IntegrityError{Sequence: rd.Sequence, Subject: rd.Subject, Problem: problem, Detail: rd.Detail})
	}
	return cp, nil
}

func checkEntry(kind, env, key string, version, seq, at uint64, seen map[string]bool) error {
	id := env + "/" + key
	switch {
	case events.ValidateEnvironment(env) != nil || events.ValidateFlagKey(key) != nil:
		return fmt.Errorf("%w: %s %q", ErrBadCheckpoint, kind, truncate(id))
	case version == 0 || seq == 0 || seq > at:
		return fmt.Errorf("%w: %s %q at version %d, sequence %d", ErrBadCheckpoint, kind, id, version, seq)
	case seen[id]:
		return fmt.Errorf("%w: %s %q twice", ErrBadCheckpoint, kind, id)
	}
	seen[id] = true
	return nil
}

// CheckpointLoader finds the checkpoint a runner starts from.
type CheckpointLoader interface {
	// LoadCheckpoint returns the newest checkpoint: [ErrNotFound] when there is none, an error
	// wrapping [ErrBadCheckpoint] when it cannot be used.
	LoadCheckpoint(ctx context.Context) (Checkpoint, error)
}

// RunnerOption configures a [Runner].
type RunnerOption func(*Runner)

// WithIndex makes a runner keep ix, the [Index] of where every message is, as it folds the
// stream; its checkpoints then hold the index, and it starts only from a checkpoint that does.
// ix must be new (empty), and kept by this runner only.
func WithIndex(ix *Index) RunnerOption {
	return func(r *Runner) { r.index = ix }
}

// WithCheckpoints makes a runner whose catalog is empty start from the newest checkpoint l
// gives, after checking it against the stream, instead of replaying the stream from its start.
// It needs a source that can show a stored message's hash and the verifier that judges the
// reads (*events.Store can); with another source it has no effect.
func WithCheckpoints(l CheckpointLoader) RunnerOption {
	return func(r *Runner) { r.checkpoints = l }
}

// resumable is what a runner needs of its source to start from a checkpoint.
type resumable interface {
	MessageHash(ctx context.Context, seq uint64) (string, [32]byte, error)
	// Verifier is nil for a source that verifies nothing.
	Verifier() *events.Verifier
}

// Checkpoint returns the runner's state after the last message it handled, for a later runner
// to start from: the catalog, the chains and the refused messages. It holds up folding while it
// copies the catalog. Before the runner handled any message it returns a checkpoint at
// sequence 0, which is not worth keeping.
func (r *Runner) Checkpoint() Checkpoint {
	r.cmu.Lock()
	defer r.cmu.Unlock()
	cp := Checkpoint{
		Format:   CheckpointFormat,
		Sequence: r.last.Sequence,
		Last:     r.last,
		Time:     time.Now().UTC(),
		Chains:   events.Chains{Sequence: r.last.Sequence, Heads: make([]events.Link, 0, len(r.heads)), Refused: slices.Clone(r.refused)},
	}
	cp.Flags, cp.Segments = r.catalog.all()
	if r.index != nil {
		cp.index = r.index.state()
	}
	for _, l := range r.heads {
		cp.Chains.Heads = append(cp.Chains.Heads, l)
	}
	slices.SortFunc(cp.Chains.Heads, func(a, b events.Link) int { return strings.Compare(a.Subject, b.Subject) })
	cp.Problems, cp.ProblemCount = r.integrity.Problems()
	cp.Acknowledged = r.integrity.Acknowledged()
	return cp
}

// restore starts the runner from the newest checkpoint, when it has a loader, its catalog is
// empty and the checkpoint matches the stream; otherwise it says in the log why the stream is
// replayed from its start. It reports whether it restored.
func (r *Runner) restore(ctx context.Context, streamLast uint64) bool {
	if r.checkpoints == nil || r.catalog.Sequence() != 0 {
		return false
	}
	src, ok := r.src.(resumable)
	if !ok {
		return false
	}
	start := time.Now()
	cp, err := r.checkpoints.LoadCheckpoint(ctx)
	if err == nil {
		err = r.match(ctx, src, &cp, streamLast)
	}
	switch {
	case ctx.Err() != nil:
		return false
	case errors.Is(err, ErrNotFound):
		r.logger.Info("no checkpoint: replaying the whole stream", "to", streamLast)
		return false
	case err != nil:
		r.logger.Warn("checkpoint not used: replaying the whole stream", "to", streamLast, "error", err)
		return false
	}
	if r.index != nil && r.index.Sequence() != 0 {
		return false
	}
	if err := r.catalog.restore(cp.Flags, cp.Segments, cp.Sequence); err != nil {
		r.logger.Warn("checkpoint not used: replaying the whole stream", "to", streamLast, "error", err)
		return false
	}
	if r.index != nil {
		r.index.restore(cp.index)
	}
	if v := src.Verifier(); v != nil {
		v.Restore(cp.Chains)
	}
	r.cmu.Lock()
	r.last = cp.Last
	for _, l := range cp.Chains.Heads {
		r.heads[l.Subject] = l
	}
	r.refused = slices.Clone(cp.Chains.Refused)
	r.cmu.Unlock()
	r.integrity.restore(cp.Problems, cp.ProblemCount)
	if cp.Acknowledged.Sequence != 0 {
		r.integrity.acknowledge(cp.Acknowledged)
	}
	attrs := []any{"sequence", cp.Sequence, "taken", cp.Time, "flags", len(cp.Flags), "segments", len(cp.Segments)}
	if r.index != nil {
		subjects, actors, size := r.index.Len()
		attrs = append(attrs, "index_subjects", subjects, "index_actors", actors, "index_bytes", size,
			"saved_states_bytes", r.index.pendingStates())
	}
	r.logger.Info("starting from a checkpoint", append(attrs, "stream_last", streamLast, "took", time.Since(start))...)
	return true
}

// match checks cp against the stream: the stream reaches its sequence, and holds there the
// message it names.
func (r *Runner) match(ctx context.Context, src resumable, cp *Checkpoint, streamLast uint64) error {
	if cp.Format != CheckpointFormat {
		return fmt.Errorf("%w: format %d, this version reads %d", ErrBadCheckpoint, cp.Format, CheckpointFormat)
	}
	if r.index != nil && cp.index == nil {
		return fmt.Errorf("%w: it holds no history index", ErrBadCheckpoint)
	}
	if cp.Sequence > streamLast {
		return fmt.Errorf("%w: taken at sequence %d, but the stream ends at %d", ErrBadCheckpoint, cp.Sequence, streamLast)
	}
	subject, hash, err := src.MessageHash(ctx, cp.Last.Sequence)
	if err != nil {
		return fmt.Errorf("%w: its last message: %v", ErrBadCheckpoint, err)
	}
	if subject != cp.Last.Subject || hash != cp.Last.Hash {
		return fmt.Errorf("%w: the stream's message at sequence %d is not the one it names (%s)", ErrBadCheckpoint, cp.Last.Sequence, truncate(cp.Last.Subject))
	}
	return nil
}
