package projections_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/interlock-dev/interlock/events"
	"github.com/interlock-dev/interlock/internal/natstest"
	"github.com/interlock-dev/interlock/projections"
)

func TestDiffSegment(t *testing.T) {
	base := projections.Segment{
		Key: "beta", Environment: "production", Version: 3,
		SegmentConfig: events.SegmentConfig{
			Description: "beta testers",
			Included:    []string{"u1", "u2"},
			Excluded:    []string{"u9"},
			Conditions:  []events.Condition{{Attribute: "plan", Operator: "in", Values: []any{"beta"}}},
		},
	}
	with := func(f func(s *projections.Segment)) projections.Segment {
		s := base
		s.SegmentConfig = base.SegmentConfig.Clone()
		f(&s)
		return s
	}
	cond := `{"attribute":"plan","operator":"in","values":["beta"]}`
	age := events.Condition{Attribute: "age", Operator: "gte", Values: []any{18.0}}
	tests := []struct {
		name          string
		before, after projections.Segment
		want          string // the changes as JSON
	}{
		{"equal", base, base, `[]`},
		{"bookkeeping is not a change", base, with(func(s *projections.Segment) {
			s.Version, s.UpdatedBy, s.Sequence, s.UpdatedAt = 9, "bob", 99, time.Now()
		}), `[]`},
		{"created", projections.Segment{}, base, `[{"path":"archived","after":false},{"path":"conditions[0]","after":` + cond + `},` +
			`{"path":"description","after":"beta testers"},{"path":"excluded","after":["u9"]},{"path":"included","after":["u1","u2"]}]`},
		{"archived", base, with(func(s *projections.Segment) { s.Archived = true }), `[{"path":"archived","before":false,"after":true}]`},
		{"a key added is one change of the list", base, with(func(s *projections.Segment) { s.Included = []string{"u1", "u2", "u3"} }),
			`[{"path":"included","before":["u1","u2"],"after":["u1","u2","u3"]}]`},
		{"a list emptied", base, with(func(s *projections.Segment) { s.Excluded = nil }), `[{"path":"excluded","before":["u9"]}]`},
		{"a condition added at the end", base, with(func(s *projections.Segment) { s.Conditions = append(s.Conditions, age) }),
			`[{"path":"conditions[1]","after":{"attribute":"age","operator":"gte","values":[18]}}]`},
		{"a condition removed", base, with(func(s *projections.Segment) { s.Conditions = nil }), `[{"path":"conditions[0]","before":` + cond + `}]`},
		{"description removed, keys changed", base, with(func(s *projections.Segment) {
			s.Description, s.Included, s.Excluded = "", []string{"u1"}, []string{"u2", "u9"}
		}), `[{"path":"description","before":"beta testers"},{"path":"excluded","before":["u9"],"after":["u2","u9"]},{"path":"included","before":["u1","u2"],"after":["u1"]}]`},
		{"twelve conditions sort by index", with(func(s *projections.Segment) {
			s.Conditions = nil
			for range 12 {
				s.Conditions = append(s.Conditions, age)
			}
		}), with(func(s *projections.Segment) {
			s.Conditions = nil
			for i := range 12 {
				c := age
				if i == 2 || i == 10 {
					c.Attribute = "years"
				}
				s.Conditions = append(s.Conditions, c)
			}
		}), `[{"path":"conditions[2]","before":{"attribute":"age","operator":"gte","values":[18]},"after":{"attribute":"years","operator":"gte","values":[18]}},` +
			`{"path":"conditions[10]","before":{"attribute":"age","operator":"gte","values":[18]},"after":{"attribute":"years","operator":"gte","values":[18]}}]`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := projections.DiffSegment(tt.before, tt.after)
			if got == nil {
				t.Fatal("nil diff")
			}
			if s := mustJSON(t, got); s != tt.want {
				t.Fatalf("got  %s\nwant %s", s, tt.want)
			}
		})
	}
}

// segments writes segment events beside a writer's flag events, tracking their versions apart:
// a flag and a segment may share a key.
type segments struct {
	w    *writer
	last map[string]events.Event
}

func (s *segments) write(actor, typ, env, key string, payload any) events.Event {
	s.w.t.Helper()
	prev := s.last[env+"/"+key]
	ev := event(s.w.t, typ, env, key, prev.Version+1, payload)
	ev.Actor, ev.Time = actor, s.w.now
	s.w.now = s.w.now.Add(time.Minute)
	if _, err := s.w.store.Append(context.Background(), &ev, prev.Sequence); err != nil {
		s.w.t.Fatalf("append %s %s/%s: %v", typ, env, key, err)
	}
	s.last[env+"/"+key] = ev
	s.w.all = append(s.w.all, ev)
	return ev
}

// mixedStream writes flags and segments, two of them sharing the key "beta": sequences 1, 3, 6
// and 8 are segment production/beta, 2, 4 and 7 flag production/beta.
func mixedStream(t *testing.T) (*events.Store, *writer, *segments) {
	t.Helper()
	st := openStore(t, natstest.RunServer(t))
	w := newWriter(t, st)
	s := &segments{w: w, last: make(map[string]events.Event)}
	s.write("alice", events.TypeSegmentCreated, "production", "beta", events.SegmentCreated{Segment: events.SegmentConfig{Included: []string{"u1"}}})
	w.create("production", "beta")
	s.write("carol", events.TypeSegmentUpdated, "production", "beta", events.SegmentUpdated{Segment: events.SegmentConfig{Included: []string{"u1", "u2"}, Description: "testers"}})
	w.kill("production", "beta")
	s.write("alice", events.TypeSegmentCreated, "staging", "beta", events.SegmentCreated{})
	s.write("bob", events.TypeSegmentArchived, "production", "beta", events.SegmentArchived{})
	w.describe("production", "beta", "flag words")
	s.write("bob", events.TypeSegmentUnarchived, "production", "beta", events.SegmentUnarchived{})
	w.create("production", "other")
	return st, w, s
}

func TestSegmentHistory(t *testing.T) {
	st, _, _ := mixedStream(t)
	ctx := context.Background()
	entries, err := projections.SegmentHistory(ctx, st, "production", "beta")
	if err != nil {
		t.Fatal(err)
	}
	type row struct {
		Seq, Version uint64
		Entity, Type string
		Paths        string
	}
	var got []row
	for _, e := range entries {
		var paths []string
		for _, c := range e.Changes {
			paths = append(paths, c.Path)
		}
		got = append(got, row{e.Sequence, e.Version, e.Entity, e.Type, strings.Join(paths, ",")})
	}
	want := []row{
		{1, 1, "segment", events.TypeSegmentCreated, "archived,included"},
		{3, 2, "segment", events.TypeSegmentUpdated, "description,included"},
		{6, 3, "segment", events.TypeSegmentArchived, "archived"},
		{8, 4, "segment", events.TypeSegmentUnarchived, "archived"},
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("history\n got %+v\nwant %+v", got, want)
	}
	if c := entries[1].Changes[1]; string(c.Before) != `["u1"]` || string(c.After) != `["u1","u2"]` {
		t.Fatalf("included change %s → %s", c.Before, c.After)
	}

	// The flag with the same key has its own history.
	flag, err := projections.FlagHistory(ctx, st, "production", "beta")
	if err != nil {
		t.Fatal(err)
	}
	if len(flag) != 3 || flag[0].Entity != "flag" || flag[1].Type != events.TypeFlagKilled || flag[2].Sequence != 7 {
		t.Fatalf("flag history %+v", flag)
	}

	for _, tc := range []struct {
		env, key string
		want     error
	}{
		{"production", "nope", projections.ErrNotFound},
		{"production", "other", projections.ErrNotFound}, // a flag, not a segment
		{"Prod", "beta", events.ErrInvalid},
		{"production", "a b", events.ErrInvalid},
	} {
		if _, err := projections.SegmentHistory(ctx, st, tc.env, tc.key); !errors.Is(err, tc.want) {
			t.Errorf("%s/%s: %v, want %v", tc.env, tc.key, err, tc.want)
		}
	}
}

func TestSegmentAt(t *testing.T) {
	st, _, _ := mixedStream(t)
	ctx := context.Background()
	tests := []struct {
		name     string
		at       projections.Point
		want     error
		version  uint64
		archived bool
		included int
	}{
		{name: "version 1", at: projections.Point{Version: 1}, version: 1, included: 1},
		{name: "version 3", at: projections.Point{Version: 3}, version: 3, included: 2, archived: true},
		{name: "version 9", at: projections.Point{Version: 9}, want: projections.ErrNotFound},
		{name: "sequence of a flag event in between", at: projections.Point{Sequence: 4}, version: 2, included: 2},
		{name: "sequence 7", at: projections.Point{Sequence: 7}, version: 3, archived: true, included: 2},
		{name: "time of the first event", at: projections.Point{Time: t0}, version: 1, included: 1},
		{name: "a minute before it", at: projections.Point{Time: t0.Add(-time.Minute)}, want: projections.ErrNotFound},
		{name: "long after", at: projections.Point{Time: t0.Add(time.Hour)}, version: 4, included: 2},
		{name: "no point", at: projections.Point{}, want: events.ErrInvalid},
		{name: "two points", at: projections.Point{Sequence: 1, Version: 1}, want: events.ErrInvalid},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := projections.SegmentAt(ctx, st, "production", "beta", tt.at)
			if tt.want != nil {
				if !errors.Is(err, tt.want) {
					t.Fatalf("got %v, want %v", err, tt.want)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if s.Version != tt.version || s.Archived != tt.archived || len(s.Included) != tt.included || s.Key != "beta" {
				t.Fatalf("got %+v", s)
			}
		})
	}
	if _, err := projections.SegmentAt(ctx, st, "production", "other", projections.Point{Version: 1}); !errors.Is(err, projections.ErrNotFound) {
		t.Fatalf("a flag's key as a segment: %v", err)
	}
}

// TestAuditMixed checks the audit trail over flags and segments that share a key: every entry
// names its entity, and its changes are those of its own history, wherever pages are cut.
func TestAuditMixed(t *testing.T) {
	st, w, s := mixedStream(t)
	ctx := context.Background()
	hist := make(map[uint64]projections.Entry)
	for r := range w.last {
		env, key, _ := strings.Cut(r, "/")
		entries, err := projections.FlagHistory(ctx, st, env, key)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range entries {
			hist[e.Sequence] = e
		}
	}
	for r := range s.last {
		env, key, _ := strings.Cut(r, "/")
		entries, err := projections.SegmentHistory(ctx, st, env, key)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range entries {
			hist[e.Sequence] = e
		}
	}
	if len(hist) != len(w.all) {
		t.Fatalf("%d history entries for %d events", len(hist), len(w.all))
	}
	for _, tc := range []struct {
		name string
		q    projections.AuditQuery
	}{
		{"all", projections.AuditQuery{}},
		{"environment", projections.AuditQuery{Environment: "production"}},
		{"the flag with the segment's key", projections.AuditQuery{Environment: "production", Flag: "beta"}},
		{"types", projections.AuditQuery{Types: []string{events.TypeSegmentArchived, events.TypeFlagKilled}}},
	} {
		for _, limit := range []int{1, 2, 3, 100} {
			t.Run(fmt.Sprintf("%s/limit %d", tc.name, limit), func(t *testing.T) {
				q := tc.q
				q.Limit = limit
				var got []uint64
				for {
					page, err := projections.Audit(ctx, st, q)
					if err != nil {
						t.Fatal(err)
					}
					for _, e := range page.Events {
						got = append(got, e.Sequence)
						h := hist[e.Sequence]
						if e.Entity != h.Entity || e.Key != h.Key || e.Environment != h.Environment || !reflect.DeepEqual(e.Changes, h.Changes) {
							t.Errorf("entry %d:\n got %s\nwant %s", e.Sequence, mustJSON(t, e), mustJSON(t, h))
						}
					}
					if page.Next == 0 {
						break
					}
					q.After = page.Next
				}
				var want []uint64
				for _, ev := range w.all {
					if q.Environment != "" && ev.Environment != q.Environment ||
						q.Flag != "" && (ev.Key != q.Flag || ev.Entity != events.EntityFlag) ||
						len(q.Types) > 0 && ev.Type != q.Types[0] && ev.Type != q.Types[1] {
						continue
					}
					want = append(want, ev.Sequence)
				}
				if !reflect.DeepEqual(got, want) {
					t.Fatalf("sequences %v, want %v", got, want)
				}
			})
		}
	}
	// The segment's entries carry its diffs, not a flag's.
	page, err := projections.Audit(ctx, st, projections.AuditQuery{Limit: 3})
	if err != nil {
		t.Fatal(err)
	}
	var first struct {
		Entity  string `json:"entity"`
		Changes []projections.Change
	}
	if err := json.Unmarshal([]byte(mustJSON(t, page.Events[2])), &first); err != nil {
		t.Fatal(err)
	}
	if first.Entity != "segment" || len(first.Changes) != 2 || first.Changes[0].Path != "description" || first.Changes[1].Path != "included" {
		t.Fatalf("segment update entry %+v", first)
	}
}
