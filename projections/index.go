package projections

import (
	"cmp"
	"container/heap"
	"context"
	"encoding/binary"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/interlock-dev/interlock/events"
)

// Index is the history index a [Runner] keeps next to its catalog (see [WithIndex]): for every
// subject (one flag, segment or token) the stream sequences of its messages, and for every actor
// the sequences of their events. The history, as-of and audit queries given an [IndexedReader]
// read those messages by sequence instead of scanning the stream from its start.
//
// It is exactly what a read of the stream would deliver, in the same order: a subject's list
// holds every message on the subject, those that do not decode or fail verification included
// (the history shows them as unreadable); an actor's list holds the messages that reached the
// runner as events (decoded and verified), which are the ones the audit trail lists.
//
// Each list is stored as the differences between successive sequences, in unsigned varints:
// one byte for a gap under 128, two under 16384. Memory is about two to four bytes per event
// (one entry in its subject's list, one in its actor's) plus some 100 bytes per subject and
// per actor. It goes into the runner's checkpoints, so that a restart keeps it.
type Index struct {
	mu       sync.RWMutex
	seq      uint64
	subjects map[string]*seqList
	actors   map[string]*seqList
	// envs are the saved states of every environment (see envstate.go).
	envs map[string]*envStates
}

// NewIndex returns an empty index at sequence 0.
func NewIndex() *Index {
	return &Index{subjects: make(map[string]*seqList), actors: make(map[string]*seqList), envs: make(map[string]*envStates)}
}

// seqList is an ascending list of sequences: their differences as unsigned varints.
type seqList struct {
	buf  []byte
	last uint64
	n    int
}

func (l *seqList) add(seq uint64) {
	l.buf = binary.AppendUvarint(l.buf, seq-l.last)
	l.last = seq
	l.n++
}

// view is a list as it was when taken: appends after it do not change the bytes it holds.
type view struct {
	buf []byte
	n   int
}

func (l *seqList) view() view { return view{buf: l.buf[:len(l.buf):len(l.buf)], n: l.n} }

// decode returns the sequences of v that are at least from and at most to.
func (v view) decode(from, to uint64) []uint64 {
	out := make([]uint64, 0, v.n)
	var seq uint64
	for b := v.buf; len(b) > 0; {
		d, n := binary.Uvarint(b)
		b = b[n:]
		seq += d
		if seq > to {
			break
		}
		if seq >= from {
			out = append(out, seq)
		}
	}
	return out
}

// add records the message at seq on subject, and its actor when it is an event ("" when not).
// Messages at or before the index's sequence were recorded already.
func (ix *Index) add(subject, actor string, seq uint64) {
	ix.mu.Lock()
	defer ix.mu.Unlock()
	if seq <= ix.seq {
		return
	}
	ix.seq = seq
	if subject != "" {
		l := ix.subjects[subject]
		if l == nil {
			l = new(seqList)
			ix.subjects[subject] = l
		}
		l.add(seq)
	}
	if actor != "" {
		l := ix.actors[actor]
		if l == nil {
			l = new(seqList)
			ix.actors[actor] = l
		}
		l.add(seq)
	}
}

// Sequence is that of the last message the index recorded, 0 before any.
func (ix *Index) Sequence() uint64 {
	ix.mu.RLock()
	defer ix.mu.RUnlock()
	return ix.seq
}

// Len returns how many subjects and actors the index knows and the bytes its lists hold.
func (ix *Index) Len() (subjects, actors, bytes int) {
	ix.mu.RLock()
	defer ix.mu.RUnlock()
	for _, l := range ix.subjects {
		bytes += len(l.buf)
	}
	for _, l := range ix.actors {
		bytes += len(l.buf)
	}
	return len(ix.subjects), len(ix.actors), bytes
}

// lookup is what a query takes of the index: views of the lists it needs, and the sequence up to
// which they are complete.
type lookup struct {
	seq   uint64
	views []view
}

// subject returns the list of one subject.
func (ix *Index) subject(subject string) lookup {
	ix.mu.RLock()
	defer ix.mu.RUnlock()
	lk := lookup{seq: ix.seq}
	if l := ix.subjects[subject]; l != nil {
		lk.views = append(lk.views, l.view())
	}
	return lk
}

// prefix returns the lists of every subject that starts with prefix.
func (ix *Index) prefix(prefix string) lookup {
	ix.mu.RLock()
	defer ix.mu.RUnlock()
	lk := lookup{seq: ix.seq}
	for s, l := range ix.subjects {
		if strings.HasPrefix(s, prefix) {
			lk.views = append(lk.views, l.view())
		}
	}
	return lk
}

// actor returns the list of one actor.
func (ix *Index) actor(actor string) lookup {
	ix.mu.RLock()
	defer ix.mu.RUnlock()
	lk := lookup{seq: ix.seq}
	if l := ix.actors[actor]; l != nil {
		lk.views = append(lk.views, l.view())
	}
	return lk
}

// subjectsOf returns the lists of the subjects given.
func (ix *Index) subjectsOf(subjects []string) lookup {
	ix.mu.RLock()
	defer ix.mu.RUnlock()
	lk := lookup{seq: ix.seq}
	for _, s := range subjects {
		if l := ix.subjects[s]; l != nil {
			lk.views = append(lk.views, l.view())
		}
	}
	return lk
}

// sequences returns the sequences of every list of lk between from and to (inclusive), merged
// in stream order.
func (lk lookup) sequences(from, to uint64) []uint64 {
	to = min(to, lk.seq)
	switch len(lk.views) {
	case 0:
		return nil
	case 1:
		return lk.views[0].decode(from, to)
	}
	lists := make(mergeHeap, 0, len(lk.views))
	total := 0
	for _, v := range lk.views {
		if s := v.decode(from, to); len(s) > 0 {
			lists = append(lists, s)
			total += len(s)
		}
	}
	out := make([]uint64, 0, total)
	heap.Init(&lists)
	for len(lists) > 0 {
		out = append(out, lists[0][0])
		if lists[0] = lists[0][1:]; len(lists[0]) == 0 {
			heap.Pop(&lists)
		} else {
			heap.Fix(&lists, 0)
		}
	}
	return out
}

// mergeHeap orders ascending lists by their first sequence.
type mergeHeap [][]uint64

func (h mergeHeap) Len() int           { return len(h) }
func (h mergeHeap) Less(i, j int) bool { return h[i][0] < h[j][0] }
func (h mergeHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *mergeHeap) Push(x any)        { *h = append(*h, x.([]uint64)) }
func (h *mergeHeap) Pop() any {
	old := *h
	x := old[len(old)-1]
	*h = old[:len(old)-1]
	return x
}

// SequenceReader reads stored messages by their stream sequence; *events.Store satisfies it.
type SequenceReader interface {
	// ReadSequences calls h for the message at each of seqs, in that order, as Read would.
	ReadSequences(ctx context.Context, seqs []uint64, h events.Handler) error
}

// IndexedReader is a [Reader] whose history, as-of and audit queries ([FlagHistory],
// [SegmentHistory], [FlagAt], [SegmentAt], [EnvironmentAt], [Audit]) use an [Index]: they read
// the messages the index names by sequence, then the messages after the index's sequence with
// an ordinary read. The results are those of the plain reader.
type IndexedReader struct {
	src   IndexSource
	index *Index
}

// IndexSource is what an [IndexedReader] reads from; *events.Store satisfies it.
type IndexSource interface {
	Reader
	SequenceReader
	// StoredAt is the time the stream stored the message at seq.
	StoredAt(ctx context.Context, seq uint64) (time.Time, error)
}

// NewIndexedReader returns a reader of src that uses ix for the queries it serves.
func NewIndexedReader(src IndexSource, ix *Index) *IndexedReader {
	return &IndexedReader{src: src, index: ix}
}

// Read reads from the source, without the index.
func (r *IndexedReader) Read(ctx context.Context, q events.Query, h events.Handler) error {
	return r.src.Read(ctx, q, h)
}

// readIndexed calls h for the messages at seqs (from the index), then for those tail selects
// (the messages after the index's sequence), in stream order. h may return events.ErrStop.
//
// to, when not 0, is the last sequence h wants: the tail is not read when the index reaches it.
//
// When the messages are dense in the stretch of the stream they span (one in denseRatio or
// more), one read of tail's subjects from the first of them costs less than fetching each: it
// delivers the same messages, and on a wider filter (an actor's events, read on the audit's
// subjects) others that h leaves out as a read of the stream would.
func (r *IndexedReader) readIndexed(ctx context.Context, seqs []uint64, tail events.Query, to uint64, h events.Handler) error {
	if n := uint64(len(seqs)); n > 0 && n >= minDense && n*denseRatio >= seqs[n-1]-seqs[0]+1 {
		return r.src.Read(ctx, events.Query{Subjects: tail.Subjects, FromSequence: seqs[0]}, h)
	}
	stopped := false
	err := r.src.ReadSequences(ctx, seqs, func(ev events.Event, err error) error {
		if herr := h(ev, err); herr != nil {
			stopped = true
			return herr
		}
		return nil
	})
	if err != nil || stopped || to != 0 && tail.FromSequence > to {
		return err
	}
	return r.src.Read(ctx, tail, h)
}

// denseRatio: messages more than one in denseRatio of the stretch of the stream they span are
// read with one filtered read rather than fetched one by one. A fetch is a request and an answer
// (some 40 µs here); a filtered read delivers a thousand messages an answer and passes over the
// others in the server (a few µs each).
// minDense: fewer messages than this are fetched however dense, since a filtered read first
// costs the creation of a consumer, which counts what its filter holds: on a stream of 1M
// messages, about 100 ms with the hundred subjects of an audit page, as long as fetching 2,000.
//
// Both are variables for the tests, which read both ways.
var (
	denseRatio uint64 = 16
	minDense   uint64 = 2048
)

// indexed returns r as an *IndexedReader, or nil for another reader.
func indexed(r Reader) *IndexedReader {
	ir, _ := r.(*IndexedReader)
	if ir == nil || ir.index == nil {
		return nil
	}
	return ir
}

// indexState is an index as a checkpoint holds it.
type indexState struct {
	Sequence uint64     `json:"sequence"`
	Subjects []indexDoc `json:"subjects"`
	Actors   []indexDoc `json:"actors"`
	// Environments are the saved environment states.
	Environments []envStatesDoc `json:"environments"`
}

// indexDoc is one list: its key, how many sequences, the last one, and the varints.
type indexDoc struct {
	Key  string `json:"key"`
	N    int    `json:"n"`
	Last uint64 `json:"last"`
	Seqs []byte `json:"seqs"`
}

// state copies the index for a checkpoint, sorted by key.
func (ix *Index) state() *indexState {
	ix.mu.RLock()
	defer ix.mu.RUnlock()
	st := &indexState{Sequence: ix.seq, Subjects: docsOf(ix.subjects), Actors: docsOf(ix.actors), Environments: ix.envDocs()}
	return st
}

func docsOf(m map[string]*seqList) []indexDoc {
	out := make([]indexDoc, 0, len(m))
	for k, l := range m {
		out = append(out, indexDoc{Key: k, N: l.n, Last: l.last, Seqs: slices.Clone(l.buf)})
	}
	slices.SortFunc(out, func(a, b indexDoc) int { return strings.Compare(a.Key, b.Key) })
	return out
}

// check reports an error wrapping ErrBadCheckpoint unless every list of st is an ascending list
// of n sequences ending at last, none after at, and no key is there twice.
func (st *indexState) check(at uint64) error {
	if st.Sequence != at {
		return fmt.Errorf("%w: index at sequence %d, the checkpoint at %d", ErrBadCheckpoint, st.Sequence, at)
	}
	for _, docs := range [][]indexDoc{st.Subjects, st.Actors} {
		seen := make(map[string]bool, len(docs))
		for _, d := range docs {
			if seen[d.Key] || d.Key == "" {
				return fmt.Errorf("%w: index list %q twice or unnamed", ErrBadCheckpoint, truncate(d.Key))
			}
			seen[d.Key] = true
			var seq uint64
			n := 0
			for b := d.Seqs; len(b) > 0; n++ {
				delta, k := binary.Uvarint(b)
				if k <= 0 || delta == 0 || seq+delta < seq {
					return fmt.Errorf("%w: index list %q does not decode", ErrBadCheckpoint, truncate(d.Key))
				}
				b = b[k:]
				seq += delta
			}
			if n != d.N || seq != d.Last || seq > at || n == 0 {
				return fmt.Errorf("%w: index list %q holds %d sequences up to %d, says %d up to %d", ErrBadCheckpoint, truncate(d.Key), n, seq, d.N, d.Last)
			}
		}
	}
	return checkEnvs(st.Environments)
}

// restore replaces the index's lists with those of a checked state.
func (ix *Index) restore(st *indexState) {
	load := func(docs []indexDoc) map[string]*seqList {
		m := make(map[string]*seqList, len(docs))
		for _, d := range docs {
			m[d.Key] = &seqList{buf: d.Seqs, last: d.Last, n: d.N}
		}
		return m
	}
	ix.mu.Lock()
	defer ix.mu.Unlock()
	ix.seq, ix.subjects, ix.actors = st.Sequence, load(st.Subjects), load(st.Actors)
	ix.envs = restoreEnvs(st.Environments, st.Sequence)
}

// readSubjects calls h for every message on the subjects filter selects, in stream order, after
// sequence after and up to sequence to (h may stop earlier; 0 is no bound), through the index
// when r has one (after is only given with an index). filter is
// one subject, or a prefix of subjects followed by ">"; prefix is then the index's prefix of the
// same subjects ("" for one subject).
func readSubjects(ctx context.Context, r Reader, filter, prefix string, after, to uint64, h events.Handler) error {
	q := events.Query{Subjects: []string{filter}}
	ir := indexed(r)
	if ir == nil {
		return r.Read(ctx, q, h)
	}
	var lk lookup
	if prefix != "" {
		lk = ir.index.prefix(prefix)
	} else {
		lk = ir.index.subject(filter)
	}
	q.FromSequence = max(lk.seq, after) + 1
	return ir.readIndexed(ctx, lk.sequences(after+1, cmp.Or(to, lk.seq)), q, to, h)
}
