package projections_test

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/interlock-dev/interlock/events"
	"github.com/interlock-dev/interlock/internal/natstest"
	"github.com/interlock-dev/interlock/projections"
	"github.com/nats-io/nats.go"
)

func TestAuditQueryValidate(t *testing.T) {
	for _, tc := range []struct {
		name  string
		q     projections.AuditQuery
		field string // "" when valid
	}{
		{"empty", projections.AuditQuery{}, ""},
		{"everything", projections.AuditQuery{
			Environment: "production", Flag: "DeptA.TeamB.66623", Actor: "alice",
			Types: []string{events.TypeFlagKilled, events.TypeFlagEnabled}, Since: t0, Until: t0, After: 9, Limit: 1000,
		}, ""},
		{"flag without environment", projections.AuditQuery{Flag: "a"}, "flag"},
		{"bad environment", projections.AuditQuery{Environment: "Prod"}, "environment"},
		{"bad flag key", projections.AuditQuery{Environment: "production", Flag: "a b"}, "key"},
		{"long actor", projections.AuditQuery{Actor: strings.Repeat("x", 257)}, "actor"},
		{"unknown type", projections.AuditQuery{Types: []string{"killed"}}, "types[0]"},
		{"negative limit", projections.AuditQuery{Limit: -1}, "limit"},
		{"limit too large", projections.AuditQuery{Limit: 1001}, "limit"},
		{"since after until", projections.AuditQuery{Since: t0.Add(time.Second), Until: t0}, "since"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.q.Validate()
			if tc.field == "" {
				if err != nil {
					t.Fatalf("valid query refused: %v", err)
				}
				return
			}
			var ve *events.ValidationError
			if !errors.Is(err, events.ErrInvalid) || !errors.As(err, &ve) || ve.Field != tc.field {
				t.Fatalf("got %v, want a validation error on %q", err, tc.field)
			}
			// Audit refuses it before reading anything (a nil reader would panic otherwise).
			if _, err := projections.Audit(context.Background(), nil, tc.q); !errors.Is(err, events.ErrInvalid) {
				t.Fatalf("Audit: %v, want ErrInvalid", err)
			}
		})
	}
	// Every problem is reported, not only the first.
	err := projections.AuditQuery{Flag: "a b", Limit: -5}.Validate()
	for _, want := range []string{"flag", "key", "limit"} {
		if !strings.Contains(err.Error(), want+":") {
			t.Errorf("%q not named in %v", want, err)
		}
	}
}

// auditStream writes events across flags, environments and actors, with a message that is not an
// event in the middle, and returns the writer that knows them.
func auditStream(t *testing.T) (*events.Store, *writer) {
	t.Helper()
	s := natstest.RunServer(t)
	st := openStore(t, s)
	w := newWriter(t, st)
	w.create("production", "a")
	w.create("production", "b")
	w.create("staging", "a")
	w.kill("production", "a")
	w.describe("production", "a", "v3")
	if _, err := natstest.JetStream(t, s).PublishMsg(context.Background(),
		&nats.Msg{Subject: "interlock.production.flag.junk", Data: []byte("not an event"), Header: nats.Header{}}); err != nil {
		t.Fatal(err)
	}
	w.kill("staging", "a")
	w.create("production", "DeptA.TeamB.66623")
	w.kill("production", "b")
	w.enable("production", "b")
	w.archive("production", "a")
	w.describe("staging", "a", "staged")
	w.kill("production", "DeptA.TeamB.66623")
	w.enable("production", "a")
	return st, w
}

// want is the audit trail a query should give, computed from what was written.
func (w *writer) want(q projections.AuditQuery) []uint64 {
	out := []uint64{}
	for _, ev := range w.all {
		switch {
		case ev.Sequence <= q.After,
			q.Environment != "" && ev.Environment != q.Environment,
			q.Flag != "" && ev.Key != q.Flag,
			q.Actor != "" && ev.Actor != q.Actor,
			len(q.Types) > 0 && !slices.Contains(q.Types, ev.Type),
			!q.Since.IsZero() && ev.Time.Before(q.Since),
			!q.Until.IsZero() && ev.Time.After(q.Until):
			continue
		}
		out = append(out, ev.Sequence)
	}
	return out
}

// histories returns the changes of every event written, by sequence, from each flag's history.
func (w *writer) histories(t *testing.T) map[uint64][]projections.Change {
	t.Helper()
	out := make(map[uint64][]projections.Change)
	for ref := range w.last {
		env, key, _ := strings.Cut(ref, "/")
		entries, err := projections.FlagHistory(context.Background(), w.store, env, key)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range entries {
			out[e.Sequence] = e.Changes
		}
	}
	return out
}

var auditQueries = []struct {
	name string
	q    projections.AuditQuery
}{
	{"all", projections.AuditQuery{}},
	{"environment", projections.AuditQuery{Environment: "production"}},
	{"flag", projections.AuditQuery{Environment: "production", Flag: "a"}},
	{"flag of another environment", projections.AuditQuery{Environment: "staging", Flag: "a"}},
	{"no such flag", projections.AuditQuery{Environment: "production", Flag: "zzz"}},
	{"actor", projections.AuditQuery{Actor: "bob"}},
	{"types", projections.AuditQuery{Types: []string{events.TypeFlagKilled, events.TypeFlagArchived}}},
	{"since", projections.AuditQuery{Since: minutes(5)}},
	{"until", projections.AuditQuery{Until: minutes(5)}},
	{"window", projections.AuditQuery{Since: minutes(3), Until: minutes(8.5)}},
	{"after a cursor", projections.AuditQuery{After: 6}},
	{"all filters", projections.AuditQuery{Environment: "production", Actor: "alice", Types: []string{events.TypeFlagEnabled}, Since: minutes(1)}},
}

func TestAuditFilters(t *testing.T) {
	st, w := auditStream(t)
	hist := w.histories(t)
	for _, tc := range auditQueries {
		t.Run(tc.name, func(t *testing.T) {
			q := tc.q
			q.Limit = projections.MaxAuditLimit
			page, err := projections.Audit(context.Background(), st, q)
			if err != nil {
				t.Fatal(err)
			}
			got := []uint64{}
			for _, e := range page.Events {
				got = append(got, e.Sequence)
				if !reflect.DeepEqual(e.Changes, hist[e.Sequence]) {
					t.Errorf("changes of %d:\n got %s\nwant %s", e.Sequence, mustJSON(t, e.Changes), mustJSON(t, hist[e.Sequence]))
				}
			}
			if want := w.want(tc.q); !reflect.DeepEqual(got, want) {
				t.Fatalf("sequences %v, want %v", got, want)
			}
			if page.Next != 0 {
				t.Fatalf("next %d on the only page", page.Next)
			}
		})
	}
}

// Walking the pages with the cursor returns every selected event exactly once, in order, with
// the same changes as the flag's own history, wherever the page boundaries fall.
func TestAuditPagination(t *testing.T) {
	st, w := auditStream(t)
	hist := w.histories(t)
	for _, tc := range auditQueries {
		for _, limit := range []int{1, 2, 3, 5} {
			t.Run(fmt.Sprintf("%s/limit %d", tc.name, limit), func(t *testing.T) {
				want := w.want(tc.q)
				q := tc.q
				q.Limit = limit
				got := []uint64{}
				pages := 0
				for {
					page, err := projections.Audit(context.Background(), st, q)
					if err != nil {
						t.Fatal(err)
					}
					pages++
					if len(page.Events) > limit || pages > len(want)+1 {
						t.Fatalf("page %d has %d events (limit %d)", pages, len(page.Events), limit)
					}
					for _, e := range page.Events {
						got = append(got, e.Sequence)
						if !reflect.DeepEqual(e.Changes, hist[e.Sequence]) {
							t.Errorf("changes of %d:\n got %s\nwant %s", e.Sequence, mustJSON(t, e.Changes), mustJSON(t, hist[e.Sequence]))
						}
					}
					if page.Next == 0 {
						break
					}
					if last := page.Events[len(page.Events)-1].Sequence; page.Next != last {
						t.Fatalf("next %d, want the page's last sequence %d", page.Next, last)
					}
					q.After = page.Next
				}
				if !reflect.DeepEqual(got, want) {
					t.Fatalf("walked %v, want %v", got, want)
				}
				if wantPages := max(1, (len(want)+limit-1)/limit); pages != wantPages {
					t.Fatalf("%d pages for %d events at %d a page, want %d", pages, len(want), limit, wantPages)
				}
			})
		}
	}
}

// A page touching more flags than one read filters on folds them through the query's own filter.
func TestAuditManyFlags(t *testing.T) {
	st := openStore(t, natstest.RunServer(t))
	w := newWriter(t, st)
	for i := range 120 {
		w.create("production", fmt.Sprintf("f%03d", i))
	}
	for i := range 120 {
		if i%3 == 0 {
			w.describe("production", fmt.Sprintf("f%03d", i), "third")
		}
	}
	hist := w.histories(t)
	for _, q := range []projections.AuditQuery{
		{Limit: 1000},
		{Environment: "production", Limit: 150, After: 20},
		{Actor: "carol", Limit: 1000},
	} {
		page, err := projections.Audit(context.Background(), st, q)
		if err != nil {
			t.Fatal(err)
		}
		got := []uint64{}
		for _, e := range page.Events {
			got = append(got, e.Sequence)
			if !reflect.DeepEqual(e.Changes, hist[e.Sequence]) {
				t.Fatalf("changes of %d:\n got %s\nwant %s", e.Sequence, mustJSON(t, e.Changes), mustJSON(t, hist[e.Sequence]))
			}
		}
		want := w.want(q)
		if len(want) > q.Limit {
			want = want[:q.Limit]
		}
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("%+v: sequences %v, want %v", q, got, want)
		}
	}
}
