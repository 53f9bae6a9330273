package command_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/interlock-dev/interlock/events"
	"github.com/interlock-dev/interlock/internal/command"
	"github.com/interlock-dev/interlock/internal/natstest"
	"github.com/interlock-dev/interlock/projections"
)

// baseSegment is a segment with explicit keys and a condition.
func baseSegment() events.SegmentConfig {
	return events.SegmentConfig{
		Description: "beta testers",
		Included:    []string{"u2", "u1"},
		Excluded:    []string{"u9"},
		Conditions:  []events.Condition{{Attribute: "plan", Operator: "in", Values: []any{"beta", "alpha"}}},
	}
}

func loadSegment(tb testing.TB, st *events.Store, key string) []events.Event {
	tb.Helper()
	var evs []events.Event
	err := st.Read(context.Background(), events.Query{Subjects: []string{events.SegmentSubject(env, key)}}, func(ev events.Event, err error) error {
		if err != nil {
			return err
		}
		evs = append(evs, ev)
		return nil
	})
	if err != nil {
		tb.Fatal(err)
	}
	return evs
}

func foldSegment(tb testing.TB, evs []events.Event) projections.Segment {
	tb.Helper()
	var s projections.Segment
	for _, ev := range evs {
		if err := s.Apply(ev); err != nil {
			tb.Fatal(err)
		}
	}
	return s
}

func mustCreateSegment(tb testing.TB, svc *command.Service, key string, cfg events.SegmentConfig) projections.Segment {
	tb.Helper()
	s, err := segmentOf(svc.Handle(context.Background(), command.CreateSegment{Meta: alice, Env: env, Key: key, Config: cfg}))
	if err != nil {
		tb.Fatalf("create segment %s: %v", key, err)
	}
	return s
}

// segmentFlag is baseConfig with one rule per condition given instead of its own.
func segmentFlag(conds ...events.Condition) events.FlagConfig {
	cfg := baseConfig()
	cfg.Rules = nil
	for _, c := range conds {
		cfg.Rules = append(cfg.Rules, events.Rule{Conditions: []events.Condition{c}, Serve: events.Serve{Variant: "on"}})
	}
	return cfg
}

func inSegment(keys ...any) events.Condition {
	return events.Condition{Attribute: "targetingKey", Operator: "inSegment", Values: keys}
}

func TestCreateSegment(t *testing.T) {
	st, svc := setup(t)
	ctx := context.Background()
	mustCreateSegment(t, svc, "taken", baseSegment())
	mustCreate(t, svc, "flag-key", baseConfig())

	dup := baseSegment()
	dup.Included = []string{"b", "a", "b", "a"}
	nested := baseSegment()
	nested.Conditions = []events.Condition{inSegment("other")}
	emptyKey := baseSegment()
	emptyKey.Included = []string{"ok", ""}
	badCond := baseSegment()
	badCond.Conditions = []events.Condition{{Attribute: "age", Operator: "gt", Values: []any{"old"}}}

	tests := []struct {
		name     string
		meta     command.Meta
		env, key string
		cfg      events.SegmentConfig
		want     error
		field    string
		included []string
	}{
		{name: "keys and conditions", meta: alice, env: env, key: "beta-testers", cfg: baseSegment(), included: []string{"u1", "u2"}},
		{name: "keys sorted without repeats", meta: alice, env: env, key: "dup", cfg: dup, included: []string{"a", "b"}},
		{name: "empty", meta: alice, env: env, key: "pvt_user", cfg: events.SegmentConfig{}},
		{name: "the key of a flag", meta: alice, env: env, key: "flag-key", cfg: baseSegment(), included: []string{"u1", "u2"}},
		{name: "the same key in another environment", meta: alice, env: "staging", key: "taken", cfg: baseSegment(), included: []string{"u1", "u2"}},
		{name: "exists", meta: alice, env: env, key: "taken", cfg: baseSegment(), want: command.ErrExists},
		{name: "bad environment", meta: alice, env: "Prod", key: "x", cfg: baseSegment(), want: events.ErrInvalid, field: "environment"},
		{name: "bad key", meta: alice, env: env, key: "a b", cfg: baseSegment(), want: events.ErrInvalid, field: "key"},
		{name: "no actor", meta: command.Meta{}, env: env, key: "x", cfg: baseSegment(), want: events.ErrInvalid, field: "actor"},
		{name: "a segment naming a segment", meta: alice, env: env, key: "x", cfg: nested, want: events.ErrInvalid, field: "conditions[0].operator"},
		{name: "an empty targeting key", meta: alice, env: env, key: "x", cfg: emptyKey, want: events.ErrInvalid, field: "included[1]"},
		{name: "a bad condition", meta: alice, env: env, key: "x", cfg: badCond, want: events.ErrInvalid, field: "conditions[0].values[0]"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := streamLen(t, st)
			given := tt.cfg.Clone()
			s, err := segmentOf(svc.Handle(ctx, command.CreateSegment{Meta: tt.meta, Env: tt.env, Key: tt.key, Config: tt.cfg}))
			checkErr(t, err, tt.want)
			checkField(t, err, tt.field)
			if tt.want != nil {
				if n := streamLen(t, st); n != before {
					t.Fatalf("a refused create wrote %d events", n-before)
				}
				if errors.Is(tt.want, command.ErrExists) && !strings.Contains(err.Error(), "segment already exists") {
					t.Fatalf("error %q does not say a segment exists", err)
				}
				return
			}
			if n := streamLen(t, st); n != before+1 {
				t.Fatalf("create wrote %d events, want 1", n-before)
			}
			if s.Version != 1 || s.Sequence != before+1 || s.Key != tt.key || s.Environment != tt.env || s.Archived ||
				s.UpdatedBy != "alice" || s.CreatedAt.IsZero() || !slices.Equal(s.Included, tt.included) {
				t.Fatalf("created segment: %+v", s)
			}
			if !slices.Equal(tt.cfg.Included, given.Included) {
				t.Fatal("create modified the caller's configuration")
			}
			got, err := svc.GetSegment(ctx, tt.env, tt.key)
			if err != nil {
				t.Fatal(err)
			}
			a, _ := json.Marshal(got)
			b, _ := json.Marshal(s)
			if !bytes.Equal(a, b) {
				t.Fatalf("get after create:\n%s\nwant\n%s", a, b)
			}
		})
	}
	t.Run("a flag with the segment's key is untouched", func(t *testing.T) {
		f, err := svc.Get(ctx, env, "flag-key")
		if err != nil || f.Version != 1 || f.Description != "checkout redesign" {
			t.Fatalf("flag %+v, %v", f, err)
		}
	})
}

func TestUpdateSegment(t *testing.T) {
	st, svc := setup(t)
	ctx := context.Background()

	tests := []struct {
		name     string
		archived bool
		expected uint64 // 0: none; else the segment's version plus stale
		stale    int64
		patch    string
		want     error
		field    string
		noop     bool
		check    func(t *testing.T, s projections.Segment)
	}{
		{name: "set the description", patch: `{"description":"new words"}`, check: func(t *testing.T, s projections.Segment) {
			if s.Description != "new words" || len(s.Included) != 2 || len(s.Conditions) != 1 {
				t.Fatalf("got %+v", s.SegmentConfig)
			}
		}},
		{name: "replace the included keys, sorted", expected: 1, patch: `{"included":["z","a","z"]}`, check: func(t *testing.T, s projections.Segment) {
			if !slices.Equal(s.Included, []string{"a", "z"}) || !slices.Equal(s.Excluded, []string{"u9"}) {
				t.Fatalf("got %+v", s.SegmentConfig)
			}
		}},
		{name: "null deletes", patch: `{"excluded":null,"conditions":null,"description":null}`, check: func(t *testing.T, s projections.Segment) {
			if s.Excluded != nil || s.Conditions != nil || s.Description != "" || len(s.Included) != 2 {
				t.Fatalf("got %+v", s.SegmentConfig)
			}
		}},
		{name: "conditions replace", patch: `{"conditions":[{"attribute":"age","operator":"gte","values":[18]}]}`, check: func(t *testing.T, s projections.Segment) {
			if len(s.Conditions) != 1 || s.Conditions[0].Operator != "gte" || s.Conditions[0].Values[0] != 18.0 {
				t.Fatalf("got %+v", s.Conditions)
			}
		}},
		{name: "same value", patch: `{"description":"beta testers"}`, noop: true},
		{name: "same keys in another order", patch: `{"included":["u2","u1","u1"]}`, noop: true},
		{name: "empty patch", patch: `{}`, noop: true},
		{name: "deleting what is not there", patch: `{"description":"beta testers","included":["u1","u2"]}`, noop: true},
		{name: "stale: expected is newer", expected: 1, stale: 3, patch: `{"description":"x"}`, want: command.ErrStale},
		{name: "archived", archived: true, patch: `{"description":"x"}`, want: command.ErrArchived},
		{name: "read-only key", patch: `{"key":"other"}`, want: events.ErrInvalid, field: "key"},
		{name: "read-only version", patch: `{"version":3}`, want: events.ErrInvalid, field: "version"},
		{name: "read-only archived", patch: `{"archived":false}`, want: events.ErrInvalid, field: "archived"},
		{name: "read-only updatedBy", patch: `{"updatedBy":"mallory"}`, want: events.ErrInvalid, field: "updatedBy"},
		{name: "unknown field", patch: `{"include":["x"]}`, want: events.ErrInvalid, field: "include"},
		{name: "a flag field", patch: `{"variants":{"on":true}}`, want: events.ErrInvalid, field: "variants"},
		{name: "unknown nested field", patch: `{"conditions":[{"attribute":"a","operator":"exists","negate":true}]}`, want: events.ErrInvalid, field: "conditions[0].negate"},
		{name: "wrong type", patch: `{"included":"u1"}`, want: events.ErrInvalid, field: "included"},
		{name: "wrong nested type", patch: `{"conditions":[{"attribute":1,"operator":"exists"}]}`, want: events.ErrInvalid, field: "conditions.attribute"},
		{name: "result invalid", patch: `{"conditions":[{"attribute":"targetingKey","operator":"inSegment","values":["x"]}]}`, want: events.ErrInvalid, field: "conditions[0].operator"},
		{name: "an empty key", patch: `{"excluded":[""]}`, want: events.ErrInvalid, field: "excluded[0]"},
		{name: "array", patch: `[]`, want: events.ErrInvalid, field: "patch"},
		{name: "not JSON", patch: `{"description"`, want: events.ErrInvalid, field: "patch"},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			key := fmt.Sprintf("update-%d", i)
			cur := mustCreateSegment(t, svc, key, baseSegment())
			if tt.archived {
				var err error
				if cur, err = segmentOf(svc.Handle(ctx, command.ArchiveSegment{Meta: alice, Env: env, Key: key})); err != nil {
					t.Fatal(err)
				}
			}
			expected := tt.expected
			if expected != 0 {
				expected = uint64(int64(cur.Version) + tt.stale)
			}
			before := streamLen(t, st)
			s, err := segmentOf(svc.Handle(ctx, command.UpdateSegment{Meta: alice, Env: env, Key: key, ExpectedVersion: expected, Patch: []byte(tt.patch)}))
			checkErr(t, err, tt.want)
			checkField(t, err, tt.field)
			if tt.want != nil {
				if n := streamLen(t, st); n != before {
					t.Fatalf("a refused update wrote %d events", n-before)
				}
				var ve *command.VersionError
				if errors.Is(tt.want, command.ErrStale) && (!errors.As(err, &ve) || ve.Actual != cur.Version || !strings.Contains(err.Error(), "the segment is at version")) {
					t.Fatalf("stale error %v", err)
				}
				if errors.Is(tt.want, command.ErrArchived) && !strings.Contains(err.Error(), "segment is archived") {
					t.Fatalf("archived error %q does not name a segment", err)
				}
				return
			}
			if tt.noop {
				if n := streamLen(t, st); n != before {
					t.Fatalf("a no-op update wrote %d events", n-before)
				}
				if s.Version != cur.Version || s.Sequence != cur.Sequence {
					t.Fatalf("no-op returned version %d seq %d, want %d %d", s.Version, s.Sequence, cur.Version, cur.Sequence)
				}
				return
			}
			if s.Version != cur.Version+1 || s.Sequence != before+1 {
				t.Fatalf("version %d sequence %d, want %d %d", s.Version, s.Sequence, cur.Version+1, before+1)
			}
			tt.check(t, s)
			evs := loadSegment(t, st, key)
			last := evs[len(evs)-1]
			p := payload[events.SegmentUpdated](t, last)
			var compact bytes.Buffer
			if err := json.Compact(&compact, []byte(tt.patch)); err != nil {
				t.Fatal(err)
			}
			if last.Type != events.TypeSegmentUpdated || !bytes.Equal(p.Patch, compact.Bytes()) || last.Entity != events.EntitySegment {
				t.Fatalf("stored %s with patch %s, want %s", last.Type, p.Patch, compact.Bytes())
			}
			a, _ := json.Marshal(foldSegment(t, evs))
			b, _ := json.Marshal(s)
			if !bytes.Equal(a, b) {
				t.Fatalf("returned %s\nfolded   %s", b, a)
			}
		})
	}
	t.Run("missing", func(t *testing.T) {
		_, err := svc.Handle(ctx, command.UpdateSegment{Meta: alice, Env: env, Key: "nope", ExpectedVersion: 0, Patch: []byte(`{"description":"x"}`)})
		if !errors.Is(err, command.ErrSegmentNotFound) || !errors.Is(err, projections.ErrNotFound) || errors.Is(err, command.ErrNotFound) {
			t.Fatalf("got %v, want ErrSegmentNotFound (matching projections.ErrNotFound, not the flag's ErrNotFound)", err)
		}
	})
}

func TestSegmentStateCommands(t *testing.T) {
	st, svc := setup(t)
	ctx := context.Background()
	segment := func(archived bool) func(t *testing.T, key string) projections.Segment {
		return func(t *testing.T, key string) projections.Segment {
			s := mustCreateSegment(t, svc, key, baseSegment())
			if archived {
				var err error
				if s, err = segmentOf(svc.Handle(ctx, command.ArchiveSegment{Meta: alice, Env: env, Key: key})); err != nil {
					t.Fatal(err)
				}
			}
			return s
		}
	}
	missing := func(*testing.T, string) projections.Segment { return projections.Segment{} }
	archive := func(v uint64) func(string) (projections.Segment, error) {
		return func(key string) (projections.Segment, error) {
			return segmentOf(svc.Handle(ctx, command.ArchiveSegment{Meta: alice, Env: env, Key: key, ExpectedVersion: v}))
		}
	}
	unarchive := func(v uint64) func(string) (projections.Segment, error) {
		return func(key string) (projections.Segment, error) {
			return segmentOf(svc.Handle(ctx, command.UnarchiveSegment{Meta: alice, Env: env, Key: key, ExpectedVersion: v}))
		}
	}
	tests := []struct {
		name     string
		setup    func(t *testing.T, key string) projections.Segment
		run      func(key string) (projections.Segment, error)
		want     error
		typ      string
		archived bool
	}{
		{name: "archive", setup: segment(false), run: archive(0), typ: events.TypeSegmentArchived, archived: true},
		{name: "archive at version", setup: segment(false), run: archive(1), typ: events.TypeSegmentArchived, archived: true},
		{name: "archive archived", setup: segment(true), run: archive(0), archived: true},
		{name: "archive stale", setup: segment(false), run: archive(4), want: command.ErrStale},
		{name: "archive missing", setup: missing, run: archive(0), want: command.ErrSegmentNotFound},
		{name: "unarchive", setup: segment(true), run: unarchive(2), typ: events.TypeSegmentUnarchived},
		{name: "unarchive active", setup: segment(false), run: unarchive(0)},
		{name: "unarchive stale", setup: segment(true), run: unarchive(1), want: command.ErrStale},
		{name: "unarchive missing", setup: missing, run: unarchive(0), want: projections.ErrNotFound},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			key := fmt.Sprintf("state-%d", i)
			cur := tt.setup(t, key)
			before := streamLen(t, st)
			s, err := tt.run(key)
			checkErr(t, err, tt.want)
			written := streamLen(t, st) - before
			if tt.want != nil || tt.typ == "" {
				if written != 0 {
					t.Fatalf("wrote %d events, want none", written)
				}
				if tt.want == nil && (s.Version != cur.Version || s.Archived != tt.archived) {
					t.Fatalf("no-op returned %+v, want version %d", s, cur.Version)
				}
				return
			}
			if written != 1 {
				t.Fatalf("wrote %d events, want 1", written)
			}
			evs := loadSegment(t, st, key)
			last := evs[len(evs)-1]
			if last.Type != tt.typ || last.Version != cur.Version+1 || last.Actor != "alice" || last.Reason != "test" {
				t.Fatalf("event %+v, want %s at version %d", last, tt.typ, cur.Version+1)
			}
			if s.Version != last.Version || s.Sequence != last.Sequence || s.Archived != tt.archived {
				t.Fatalf("returned %+v", s)
			}
		})
	}
}

// TestSegmentStaleCache runs segment commands on a replica whose cache is behind the stream.
func TestSegmentStaleCache(t *testing.T) {
	srv := natstest.RunServer(t)
	st := openStore(t, srv)
	a, b := newService(t, st), newService(t, openStore(t, srv))
	ctx := context.Background()
	mustCreateSegment(t, a, "seg", baseSegment())
	if _, err := b.Handle(ctx, command.UpdateSegment{Meta: alice, Env: env, Key: "seg", ExpectedVersion: 1, Patch: []byte(`{"description":"b"}`)}); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Handle(ctx, command.UpdateSegment{Meta: alice, Env: env, Key: "seg", ExpectedVersion: 1, Patch: []byte(`{"excluded":null}`)}); !errors.Is(err, command.ErrStale) {
		t.Fatalf("update with the stale cache's version: %v, want ErrStale", err)
	}
	s, err := segmentOf(a.Handle(ctx, command.UpdateSegment{Meta: alice, Env: env, Key: "seg", ExpectedVersion: 2, Patch: []byte(`{"excluded":null}`)}))
	if err != nil || s.Version != 3 || s.Description != "b" || s.Excluded != nil {
		t.Fatalf("update with the other replica's version: %+v, %v", s, err)
	}
	if _, err := b.Handle(ctx, command.ArchiveSegment{Meta: alice, Env: env, Key: "seg"}); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Handle(ctx, command.UpdateSegment{Meta: alice, Env: env, Key: "seg", ExpectedVersion: 0, Patch: []byte(`{"description":"a"}`)}); !errors.Is(err, command.ErrArchived) {
		t.Fatalf("update of a segment the other replica archived: %v", err)
	}
	if _, err := b.Handle(ctx, command.CreateSegment{Meta: alice, Env: env, Key: "race", Config: events.SegmentConfig{}}); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Handle(ctx, command.CreateSegment{Meta: alice, Env: env, Key: "race", Config: events.SegmentConfig{}}); !errors.Is(err, command.ErrExists) {
		t.Fatalf("create of a segment the other replica created: %v", err)
	}
}

// catalogFor runs a catalog fed from st until the test ends and returns it once ready.
func catalogFor(t *testing.T, st *events.Store) *projections.Catalog {
	t.Helper()
	c := projections.NewCatalog()
	r := projections.NewRunner(st, c, slog.New(slog.DiscardHandler))
	ctx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	t.Cleanup(func() {
		stop()
		if err := <-done; err != nil {
			t.Errorf("runner: %v", err)
		}
	})
	wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := r.WaitReady(wctx); err != nil {
		t.Fatal(err)
	}
	return c
}

// TestSegmentReferences checks referential integrity both ways: flags cannot name segments that
// do not exist or are archived, and segments that live flags name cannot be archived.
func TestSegmentReferences(t *testing.T) {
	for _, usage := range []string{"catalog", "stream"} {
		t.Run(usage, func(t *testing.T) {
			st := openStore(t, natstest.RunServer(t))
			var opts []command.Option
			if usage == "catalog" {
				opts = append(opts, command.WithUsage(catalogFor(t, st)))
			}
			svc := command.New(st, slog.New(slog.DiscardHandler), opts...)
			testSegmentReferences(t, st, svc)
		})
	}
}

func testSegmentReferences(t *testing.T, st *events.Store, svc *command.Service) {
	ctx := context.Background()
	// refused runs f and checks it wrote nothing and failed with want.
	refused := func(t *testing.T, want error, f func() error) error {
		t.Helper()
		before := streamLen(t, st)
		err := f()
		if !errors.Is(err, want) {
			t.Fatalf("got %v, want %v", err, want)
		}
		if n := streamLen(t, st); n != before {
			t.Fatalf("a refused command wrote %d events", n-before)
		}
		return err
	}
	// A flag whose key is the segment's does not make a segment.
	mustCreate(t, svc, "beta", baseConfig())

	t.Run("create naming a missing segment", func(t *testing.T) {
		cfg := segmentFlag(events.Condition{Attribute: "plan", Operator: "eq", Values: []any{"x"}}, inSegment("beta"))
		cfg.Rules[1].Conditions = append(cfg.Rules[1].Conditions, events.Condition{Attribute: "targetingKey", Operator: "notInSegment", Values: []any{"gamma", "beta"}})
		err := refused(t, events.ErrInvalid, func() error {
			_, err := svc.Handle(ctx, command.CreateFlag{Meta: alice, Env: env, Key: "uses-beta", Config: cfg})
			return err
		})
		checkField(t, err, "rules[1].conditions[0].values[0]")
		checkField(t, err, "rules[1].conditions[1].values[0]")
		checkField(t, err, "rules[1].conditions[1].values[1]")
		if !strings.Contains(err.Error(), `segment "beta" does not exist in production`) || !strings.Contains(err.Error(), `segment "gamma"`) {
			t.Fatalf("error %q does not name the segments", err)
		}
	})

	mustCreateSegment(t, svc, "beta", baseSegment())
	mustCreateSegment(t, svc, "gamma", events.SegmentConfig{Included: []string{"g"}})
	mustCreate(t, svc, "uses-beta", segmentFlag(inSegment("beta")))

	t.Run("update adding a missing segment", func(t *testing.T) {
		patch := `{"rules":[{"conditions":[{"attribute":"targetingKey","operator":"notInSegment","values":["delta"]}],"serve":{"variant":"off"}}]}`
		err := refused(t, events.ErrInvalid, func() error {
			_, err := svc.Handle(ctx, command.UpdateFlag{Meta: alice, Env: env, Key: "uses-beta", ExpectedVersion: 0, Patch: []byte(patch)})
			return err
		})
		checkField(t, err, "rules[0].conditions[0].values[0]")
	})

	t.Run("archive a segment a live flag uses", func(t *testing.T) {
		// Read your writes: the flag was created a moment ago; the catalog must have it.
		mustCreate(t, svc, "also-beta", segmentFlag(inSegment("gamma"), events.Condition{Attribute: "targetingKey", Operator: "notInSegment", Values: []any{"beta"}}))
		err := refused(t, command.ErrInUse, func() error {
			_, err := svc.Handle(ctx, command.ArchiveSegment{Meta: alice, Env: env, Key: "beta"})
			return err
		})
		var iu *command.InUseError
		if !errors.As(err, &iu) || !slices.Equal(iu.Flags, []string{"also-beta", "uses-beta"}) || iu.Segment != "production/beta" {
			t.Fatalf("error %v, want one naming also-beta and uses-beta", err)
		}
		if !strings.Contains(err.Error(), "flags also-beta, uses-beta still use production/beta") {
			t.Fatalf("message %q", err)
		}
	})

	t.Run("archived flags do not hold a segment", func(t *testing.T) {
		for _, key := range []string{"uses-beta", "also-beta"} {
			if _, err := svc.Handle(ctx, command.ArchiveFlag{Meta: alice, Env: env, Key: key}); err != nil {
				t.Fatal(err)
			}
		}
		if s, err := segmentOf(svc.Handle(ctx, command.ArchiveSegment{Meta: alice, Env: env, Key: "beta"})); err != nil || !s.Archived {
			t.Fatalf("archive: %+v, %v", s, err)
		}
	})

	t.Run("create naming an archived segment", func(t *testing.T) {
		err := refused(t, events.ErrInvalid, func() error {
			_, err := svc.Handle(ctx, command.CreateFlag{Meta: alice, Env: env, Key: "late", Config: segmentFlag(inSegment("gamma", "beta"))})
			return err
		})
		checkField(t, err, "rules[0].conditions[0].values[1]")
		if !strings.Contains(err.Error(), `segment "beta" is archived in production`) {
			t.Fatalf("message %q", err)
		}
	})

	t.Run("restore to a configuration naming an archived segment", func(t *testing.T) {
		// v1 names gamma, v2 names beta (archived later), v3 names nothing.
		mustCreate(t, svc, "restored", segmentFlag(inSegment("gamma")))
		if _, err := svc.Handle(ctx, command.UnarchiveSegment{Meta: alice, Env: env, Key: "beta"}); err != nil {
			t.Fatal(err)
		}
		for _, p := range []string{
			`{"rules":[{"conditions":[{"attribute":"targetingKey","operator":"inSegment","values":["beta"]}],"serve":{"variant":"on"}}]}`,
			`{"rules":null}`,
		} {
			if _, err := svc.Handle(ctx, command.UpdateFlag{Meta: alice, Env: env, Key: "restored", ExpectedVersion: 0, Patch: []byte(p)}); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := svc.Handle(ctx, command.ArchiveSegment{Meta: alice, Env: env, Key: "beta"}); err != nil {
			t.Fatal(err)
		}
		err := refused(t, events.ErrInvalid, func() error {
			_, err := svc.Handle(ctx, command.RestoreFlag{Meta: alice, Env: env, Key: "restored", ToVersion: 2})
			return err
		})
		checkField(t, err, "rules[0].conditions[0].values[0]")
		if f, err := flagOf(svc.Handle(ctx, command.RestoreFlag{Meta: alice, Env: env, Key: "restored", ToVersion: 1})); err != nil || f.Version != 4 {
			t.Fatalf("restore to a version naming a live segment: %+v, %v", f, err)
		}
	})

	t.Run("an update that changes nothing is not refused", func(t *testing.T) {
		// also-beta is archived and names archived beta; unarchive it (allowed) and send a no-op.
		f, err := flagOf(svc.Handle(ctx, command.UnarchiveFlag{Meta: alice, Env: env, Key: "also-beta"}))
		if err != nil {
			t.Fatal(err)
		}
		before := streamLen(t, st)
		got, err := flagOf(svc.Handle(ctx, command.UpdateFlag{Meta: alice, Env: env, Key: "also-beta", ExpectedVersion: 0, Patch: []byte(`{"description":"checkout redesign"}`)}))
		if err != nil || got.Version != f.Version || streamLen(t, st) != before {
			t.Fatalf("no-op update: %+v, %v", got, err)
		}
		// A real change is refused until the flag stops naming the archived segment.
		refused(t, events.ErrInvalid, func() error {
			_, err := svc.Handle(ctx, command.UpdateFlag{Meta: alice, Env: env, Key: "also-beta", ExpectedVersion: 0, Patch: []byte(`{"description":"x"}`)})
			return err
		})
	})

	t.Run("other environments are separate", func(t *testing.T) {
		if _, err := svc.Handle(ctx, command.CreateFlag{Meta: alice, Env: "staging", Key: "uses-gamma", Config: segmentFlag(inSegment("gamma"))}); !errors.Is(err, events.ErrInvalid) {
			t.Fatalf("create naming a segment of another environment: %v", err)
		}
	})
}

// TestSegmentAndFlagShareAKey interleaves commands on a flag and a segment with one key: each
// keeps its own versions, events and cache entry.
func TestSegmentAndFlagShareAKey(t *testing.T) {
	st, svc := setup(t)
	ctx := context.Background()
	mustCreate(t, svc, "same", baseConfig())
	mustCreateSegment(t, svc, "same", baseSegment())
	if _, err := svc.Handle(ctx, command.UpdateFlag{Meta: alice, Env: env, Key: "same", ExpectedVersion: 1, Patch: []byte(`{"description":"flag"}`)}); err != nil {
		t.Fatal(err)
	}
	if _, err := svc.Handle(ctx, command.UpdateSegment{Meta: alice, Env: env, Key: "same", ExpectedVersion: 1, Patch: []byte(`{"description":"segment"}`)}); err != nil {
		t.Fatal(err)
	}
	if _, err := svc.Handle(ctx, command.ArchiveFlag{Meta: alice, Env: env, Key: "same", ExpectedVersion: 2}); err != nil {
		t.Fatal(err)
	}
	f, err := svc.Get(ctx, env, "same")
	if err != nil || f.Version != 3 || !f.Archived || f.Description != "flag" {
		t.Fatalf("flag %+v, %v", f, err)
	}
	s, err := svc.GetSegment(ctx, env, "same")
	if err != nil || s.Version != 2 || s.Archived || s.Description != "segment" {
		t.Fatalf("segment %+v, %v", s, err)
	}
	if n := len(loadSegment(t, st, "same")); n != 2 {
		t.Fatalf("%d segment events, want 2", n)
	}
	if n := len(load(t, st, "same")); n != 3 {
		t.Fatalf("%d flag events, want 3", n)
	}
}

func TestGetSegment(t *testing.T) {
	st, svc := setup(t)
	ctx := context.Background()
	if _, err := svc.GetSegment(ctx, env, "nope"); !errors.Is(err, command.ErrSegmentNotFound) || !errors.Is(err, projections.ErrNotFound) {
		t.Fatalf("got %v, want ErrSegmentNotFound", err)
	}
	if _, err := svc.GetSegment(ctx, env, "no/pe"); !errors.Is(err, events.ErrInvalid) {
		t.Fatalf("got %v, want ErrInvalid", err)
	}
	other := newService(t, st)
	mustCreateSegment(t, other, "elsewhere", baseSegment())
	if _, err := other.Handle(ctx, command.UpdateSegment{Meta: alice, Env: env, Key: "elsewhere", ExpectedVersion: 1, Patch: []byte(`{"included":["x"]}`)}); err != nil {
		t.Fatal(err)
	}
	s, err := svc.GetSegment(ctx, env, "elsewhere")
	if err != nil || s.Version != 2 || !slices.Equal(s.Included, []string{"x"}) {
		t.Fatalf("got %+v, %v", s, err)
	}
}
