package projections

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/interlock-dev/interlock/events"
)

// Audit page sizes.
const (
	// DefaultAuditLimit is the page size when AuditQuery.Limit is zero.
	DefaultAuditLimit = 100
	// MaxAuditLimit is the largest page AuditQuery.Limit may ask for.
	MaxAuditLimit = 1000
)

// startSlack widens the stream's start-time lookup for AuditQuery.Since. The stream finds a start
// by the time each message was stored, which is a little after its event time on the same clock,
// but may be before it when the writer's clock runs ahead of the stream leader's. Events are then
// filtered on their own time, exactly.
const startSlack = time.Minute

// maxFilterSubjects bounds how many flag subjects one read filters on; more flags in a page are
// read through the query's own (wider) filter instead.
const maxFilterSubjects = 100

// AuditQuery selects events for the audit trail. Every filter is optional; they all apply.
type AuditQuery struct {
	// Environment keeps the events of one environment.
	Environment string
	// Flag keeps the events of one flag; it needs Environment.
	Flag string
	// Actor keeps the events of one actor, exactly as recorded.
	Actor string
	// Types keeps the events of these types (for example events.TypeFlagKilled).
	Types []string
	// Since and Until keep events whose time is within [Since, Until]; zero is unbounded. As for
	// [Point], the stream's order is the order of time: the trail ends at the first event after
	// Until. Without a cursor the read starts at the messages the stream stored from a minute
	// before Since, which assumes an event is stored within a minute of its time (as every event
	// Interlock writes is); events are then kept by their own time.
	Since, Until time.Time
	// After is the cursor: only events with a stream sequence after it. Pass the previous page's
	// Next to read the following page.
	After uint64
	// Limit is the most events in a page: DefaultAuditLimit when zero, at most MaxAuditLimit.
	Limit int
}

// Validate reports every problem with the query, joined; each wraps events.ErrInvalid.
func (q AuditQuery) Validate() error {
	var errs []error
	add := func(field, format string, args ...any) {
		errs = append(errs, &events.ValidationError{Field: field, Message: fmt.Sprintf(format, args...)})
	}
	if q.Environment != "" {
		if err := events.ValidateEnvironment(q.Environment); err != nil {
			errs = append(errs, err)
		}
	}
	if q.Flag != "" {
		if q.Environment == "" {
			add("flag", "a flag key is only unique within an environment: give the environment too")
		}
		if err := events.ValidateFlagKey(q.Flag); err != nil {
			errs = append(errs, err)
		}
	}
	if len(q.Actor) > 256 {
		add("actor", "longer than 256 bytes")
	}
	for i, typ := range q.Types {
		if !events.Known(typ) {
			add(fmt.Sprintf("types[%d]", i), "%q is not an event type this server knows", truncate(typ))
		}
	}
	if q.Limit < 0 || q.Limit > MaxAuditLimit {
		add("limit", "%d is not between 1 and %d (0 for %d)", q.Limit, MaxAuditLimit, DefaultAuditLimit)
	}
	if !q.Since.IsZero() && !q.Until.IsZero() && q.Since.After(q.Until) {
		add("since", "%s is after until %s", q.Since.Format(time.RFC3339Nano), q.Until.Format(time.RFC3339Nano))
	}
	return errors.Join(errs...)
}

func truncate(s string) string {
	if len(s) > 64 {
		return s[:64] + "…"
	}
	return s
}

// subject is the narrowest subject filter the query allows.
func (q AuditQuery) subject() string {
	switch {
	case q.Flag != "":
		return events.FlagSubject(q.Environment, q.Flag)
	case q.Environment != "":
		return events.EnvironmentSubjects(q.Environment)
	default:
		return events.AllSubjects
	}
}

func (q AuditQuery) matches(ev *events.Event) bool {
	if q.Actor != "" && ev.Actor != q.Actor {
		return false
	}
	if len(q.Types) > 0 && !slices.Contains(q.Types, ev.Type) {
		return false
	}
	return q.Since.IsZero() || !ev.Time.Before(q.Since)
}

// AuditPage is one page of the audit trail, oldest first. Next is the cursor (AuditQuery.After)
// of the following page, 0 when this is the last one.
type AuditPage struct {
	Events []Entry `json:"events"`
	Next   uint64  `json:"next,omitempty"`
}

// Audit returns one page of the audit trail: the events q selects, oldest first, each with the
// fields it changed in its flag ([Diff]) or segment ([DiffSegment]). Messages that are not events
// are left out; an event the live [Catalog] refuses is listed with no changes, since it changed
// nothing.
//
// Reading a page costs two reads: one from the cursor (or from Since) to find the page's events,
// and one folding the flags and segments on the page from the start of the stream up to the
// page's last event, which the changes need. The second grows with the history of those flags and
// segments, not with the page. Through an [IndexedReader], a query on an actor, a flag or an
// environment (without Until) reads the page's candidates from the index's list of them, and the
// changes from the lists of the page's flags and segments: the same events, without the scan.
//
// Errors: one wrapping events.ErrInvalid for a bad query (see [AuditQuery.Validate]); otherwise a
// read error.
func Audit(ctx context.Context, r Reader, q AuditQuery) (AuditPage, error) {
	if err := q.Validate(); err != nil {
		return AuditPage{}, err
	}
	limit := q.Limit
	if limit == 0 {
		limit = DefaultAuditLimit
	}
	evs, err := auditEvents(ctx, r, q, limit)
	if err != nil {
		return AuditPage{}, err
	}
	page := AuditPage{Events: make([]Entry, 0, min(len(evs), limit))}
	if len(evs) > limit {
		evs = evs[:limit]
		page.Next = evs[limit-1].Sequence
	}
	if len(evs) == 0 {
		return page, nil
	}
	changes, err := auditChanges(ctx, r, q, evs)
	if err != nil {
		return AuditPage{}, err
	}
	for i := range evs {
		page.Events = append(page.Events, newEntry(&evs[i], changes[i]))
	}
	return page, nil
}

// auditEvents returns up to limit+1 events that q selects, the extra one telling that another page
// follows.
func auditEvents(ctx context.Context, r Reader, q AuditQuery, limit int) ([]events.Event, error) {
	if ir := indexed(r); ir != nil && q.Until.IsZero() {
		if lk, ok := q.lookup(ir.index); ok {
			return auditIndexed(ctx, ir, q, lk, limit)
		}
	}
	rq := events.Query{Subjects: []string{q.subject()}}
	// The store starts from FromSequence when it is set and then ignores FromTime: a cursor wins,
	// and Since is checked on every event anyway.
	switch {
	case q.After > 0:
		rq.FromSequence = q.After + 1
	case !q.Since.IsZero():
		rq.FromTime = q.Since.Add(-startSlack)
	}
	var evs []events.Event
	err := r.Read(ctx, rq, func(ev events.Event, err error) error {
		if err != nil {
			return nil // not an event: nothing to audit
		}
		if !q.Until.IsZero() && ev.Time.After(q.Until) {
			return events.ErrStop
		}
		if q.matches(&ev) {
			evs = append(evs, ev)
			if len(evs) > limit {
				return events.ErrStop
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("audit %s: %w", rq.Subjects[0], err)
	}
	return evs, nil
}

// lookup returns the index's lists of the events q may select: those of its actor, else of its
// flag, else of its environment. A query with none of these filters reads the stream instead.
func (q AuditQuery) lookup(ix *Index) (lookup, bool) {
	switch {
	case q.Actor != "":
		return ix.actor(q.Actor), true
	case q.Flag != "":
		return ix.subject(events.FlagSubject(q.Environment, q.Flag)), true
	case q.Environment != "":
		return ix.prefix(strings.TrimSuffix(events.EnvironmentSubjects(q.Environment), ">")), true
	}
	return lookup{}, false
}

// within reports whether ev is on the subjects q filters on.
func (q AuditQuery) within(ev *events.Event) bool {
	switch {
	case q.Flag != "":
		return ev.Entity == events.EntityFlag && ev.Environment == q.Environment && ev.Key == q.Flag
	case q.Environment != "":
		return ev.Environment == q.Environment
	}
	return true
}

// auditIndexed is auditEvents through the index: the events of lk's lists from the cursor (or
// from the first message stored a minute before Since), then those stored after the index's
// sequence, kept as a read of the stream keeps them. Until is not handled here: it ends the
// trail at the first event after it of every actor, which the lists do not show.
func auditIndexed(ctx context.Context, ir *IndexedReader, q AuditQuery, lk lookup, limit int) ([]events.Event, error) {
	tail := events.Query{Subjects: []string{q.subject()}, FromSequence: max(lk.seq, q.After) + 1}
	from := q.After + 1
	if q.After == 0 && !q.Since.IsZero() {
		start, err := firstStoredAt(ctx, ir.src, q.Since.Add(-startSlack), lk.seq)
		if err != nil {
			return nil, fmt.Errorf("audit %s: %w", tail.Subjects[0], err)
		}
		from = start
		if start > lk.seq {
			// Nothing the index holds was stored after the start: the stream finds it.
			tail.FromSequence, tail.FromTime = 0, q.Since.Add(-startSlack)
		}
	}
	var evs []events.Event
	err := ir.readIndexed(ctx, lk.sequences(from, lk.seq), tail, 0, func(ev events.Event, err error) error {
		if err != nil || !q.within(&ev) || !q.matches(&ev) {
			return nil
		}
		evs = append(evs, ev)
		if len(evs) > limit {
			return events.ErrStop
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("audit %s: %w", tail.Subjects[0], err)
	}
	return evs, nil
}

// firstStoredAt returns the first sequence up to last whose message the stream stored at or
// after t, last+1 when there is none: the start a read from t has, found by a binary search as
// the stream finds it (stored times rise with the sequence).
func firstStoredAt(ctx context.Context, src IndexSource, t time.Time, last uint64) (uint64, error) {
	lo, hi := uint64(1), last+1
	for lo < hi {
		mid := lo + (hi-lo)/2
		at, err := src.StoredAt(ctx, mid)
		if err != nil {
			return 0, err
		}
		if at.Before(t) {
			lo = mid + 1
		} else {
			hi = mid
		}
	}
	return lo, nil
}

// entityRef names one flag or one segment: a flag and a segment may share a key.
type entityRef struct{ entity, env, key string }

func (r entityRef) subject() string {
	switch r.entity {
	case events.EntitySegment:
		return events.SegmentSubject(r.env, r.key)
	case events.EntityToken:
		return events.TokenSubject(r.key)
	case events.EntityIntegrity:
		return events.IntegritySubject()
	}
	return events.FlagSubject(r.env, r.key)
}

// folded is the state of one entity as auditChanges folds it: a flag or a segment, as its
// entityRef says.
type folded struct {
	flag    Flag
	segment Segment
}

// apply folds ev into the entity and returns the fields it changed; ok is false when the fold
// refuses it (then nothing changed).
func (f *folded) apply(ev *events.Event) (changes []Change, ok bool) {
	if events.IsGlobal(ev.Entity) {
		return nil, true // a token event or an acknowledgement is its own record: no flag or segment changes
	}
	if ev.Entity == events.EntitySegment {
		before := f.segment
		if applySegment(&f.segment, ev) != nil {
			return nil, false
		}
		return DiffSegment(before, f.segment), true
	}
	before := f.flag
	if apply(&f.flag, ev) != nil {
		return nil, false
	}
	return Diff(before, f.flag), true
}

// auditChanges folds every flag and segment that has an event in page from the start of the
// stream to the page's last event, and returns the changes of each page event, in page order.
// The fold is the live catalog's: an event it refuses changes nothing.
func auditChanges(ctx context.Context, r Reader, q AuditQuery, page []events.Event) ([][]Change, error) {
	at := make(map[uint64]int, len(page))
	states := make(map[entityRef]*folded)
	var subjects []string
	for i := range page {
		at[page[i].Sequence] = i
		ref := entityRef{page[i].Entity, page[i].Environment, page[i].Key}
		if _, ok := states[ref]; !ok {
			states[ref] = new(folded)
			subjects = append(subjects, ref.subject())
		}
	}
	last := page[len(page)-1].Sequence
	changes := make([][]Change, len(page))
	err := readChanges(ctx, r, q, subjects, last, func(ev events.Event, err error) error {
		if ev.Sequence > last {
			return events.ErrStop
		}
		if err != nil {
			return nil
		}
		st, ok := states[entityRef{ev.Entity, ev.Environment, ev.Key}]
		if !ok {
			return nil
		}
		if ch, ok := st.apply(&ev); ok {
			if i, ok := at[ev.Sequence]; ok {
				changes[i] = ch
			}
		}
		if ev.Sequence >= last {
			return events.ErrStop
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("audit changes up to sequence %d: %w", last, err)
	}
	for i := range changes {
		if changes[i] == nil {
			changes[i] = []Change{}
		}
	}
	return changes, nil
}

// readChanges reads the messages of subjects (those of the entities on a page of q) up to last,
// through the index when r has one. A read of the stream filters on q's subjects instead when
// there are more than maxFilterSubjects.
func readChanges(ctx context.Context, r Reader, q AuditQuery, subjects []string, last uint64, h events.Handler) error {
	filter := subjects
	if len(subjects) > maxFilterSubjects {
		filter = []string{q.subject()}
	}
	ir := indexed(r)
	if ir == nil {
		return r.Read(ctx, events.Query{Subjects: filter}, h)
	}
	lk := ir.index.subjectsOf(subjects)
	return ir.readIndexed(ctx, lk.sequences(1, last), events.Query{Subjects: filter, FromSequence: lk.seq + 1}, last, h)
}
