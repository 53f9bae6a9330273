package projections_test

import (
	"context"
	"errors"
	"reflect"
	"testing"
	"time"

	"github.com/interlock-dev/interlock/events"
	"github.com/interlock-dev/interlock/internal/natstest"
	"github.com/interlock-dev/interlock/projections"
)

// pastStream writes, a minute apart from t0:
//
//	1 production/a created   4 staging/a created
//	2 production/b created   5 production/a described "v3"
//	3 production/a killed    6 production/b archived
func pastStream(t *testing.T) (*events.Store, *writer) {
	t.Helper()
	st := openStore(t, natstest.RunServer(t))
	w := newWriter(t, st)
	w.create("production", "a")
	w.create("production", "b")
	w.kill("production", "a")
	w.create("staging", "a")
	w.describe("production", "a", "v3")
	w.archive("production", "b")
	return st, w
}

func minutes(n float64) time.Time { return t0.Add(time.Duration(n * float64(time.Minute))) }

func TestPointValidate(t *testing.T) {
	for _, tc := range []struct {
		name string
		p    projections.Point
		ok   bool
	}{
		{"time", projections.Point{Time: t0}, true},
		{"sequence", projections.Point{Sequence: 1}, true},
		{"version", projections.Point{Version: 1}, true},
		{"none", projections.Point{}, false},
		{"time and sequence", projections.Point{Time: t0, Sequence: 1}, false},
		{"sequence and version", projections.Point{Sequence: 1, Version: 1}, false},
		{"all", projections.Point{Time: t0, Sequence: 1, Version: 1}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.p.Validate()
			if tc.ok && err != nil || !tc.ok && !errors.Is(err, events.ErrInvalid) {
				t.Fatalf("Validate: %v", err)
			}
		})
	}
}

func TestFlagAt(t *testing.T) {
	st, _ := pastStream(t)
	ctx := context.Background()
	for _, tc := range []struct {
		name    string
		key     string
		at      projections.Point
		version uint64 // 0: ErrNotFound
	}{
		{"before creation", "a", projections.Point{Time: minutes(-1)}, 0},
		{"at the creation instant", "a", projections.Point{Time: t0}, 1},
		{"between events", "a", projections.Point{Time: minutes(2.5)}, 2},
		{"after the last event", "a", projections.Point{Time: minutes(60)}, 3},
		{"sequence of creation", "a", projections.Point{Sequence: 1}, 1},
		{"sequence of another flag's event", "a", projections.Point{Sequence: 2}, 1},
		{"sequence of the kill", "a", projections.Point{Sequence: 3}, 2},
		{"sequence beyond the stream", "a", projections.Point{Sequence: 100}, 3},
		{"sequence before creation", "b", projections.Point{Sequence: 1}, 0},
		{"version 2", "a", projections.Point{Version: 2}, 2},
		{"last version", "a", projections.Point{Version: 3}, 3},
		{"version never reached", "a", projections.Point{Version: 4}, 0},
		{"archived flag", "b", projections.Point{Sequence: 6}, 2},
		{"flag never created", "zzz", projections.Point{Time: minutes(60)}, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f, err := projections.FlagAt(ctx, st, "production", tc.key, tc.at)
			if tc.version == 0 {
				if !errors.Is(err, projections.ErrNotFound) {
					t.Fatalf("got %+v, %v; want ErrNotFound", f, err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if f.Version != tc.version || f.Key != tc.key || f.Environment != "production" {
				t.Fatalf("got %s/%s version %d, want version %d", f.Environment, f.Key, f.Version, tc.version)
			}
			// The state is the fold of the flag's first events, exactly.
			evs, err := st.Load(ctx, "production", tc.key)
			if err != nil {
				t.Fatal(err)
			}
			want, err := projections.Fold(evs[:tc.version])
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(f, want) {
				t.Fatalf("state at %+v:\n got %+v\nwant %+v", tc.at, f, want)
			}
		})
	}
	if f, _ := projections.FlagAt(ctx, st, "production", "a", projections.Point{Version: 2}); f.Enabled {
		t.Fatal("version 2 is the killed flag")
	}
	if f, _ := projections.FlagAt(ctx, st, "production", "b", projections.Point{Version: 2}); !f.Archived {
		t.Fatal("version 2 of b is archived")
	}

	for _, tc := range []struct {
		name, env, key string
		at             projections.Point
	}{
		{"bad key", "production", "a..b", projections.Point{Version: 1}},
		{"bad environment", "Production", "a", projections.Point{Version: 1}},
		{"no point", "production", "a", projections.Point{}},
		{"two points", "production", "a", projections.Point{Version: 1, Sequence: 1}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := projections.FlagAt(ctx, st, tc.env, tc.key, tc.at); !errors.Is(err, events.ErrInvalid) {
				t.Fatalf("got %v, want ErrInvalid", err)
			}
		})
	}
}

// "As of T" folds the stream up to its first event after T: an event written later with an
// earlier clock reading is not folded once a later event was left out.
func TestFlagAtStopsAtFirstLaterEvent(t *testing.T) {
	st := openStore(t, natstest.RunServer(t))
	w := newWriter(t, st)
	w.create("production", "a") // t0
	w.now = minutes(10)
	w.kill("production", "a") // t0+10m
	w.now = minutes(5)
	w.enable("production", "a") // t0+5m, written after the kill by a writer whose clock is behind
	f, err := projections.FlagAt(context.Background(), st, "production", "a", projections.Point{Time: minutes(7)})
	if err != nil {
		t.Fatal(err)
	}
	if f.Version != 1 {
		t.Fatalf("version %d at t0+7m, want 1", f.Version)
	}
}

func TestEnvironmentAt(t *testing.T) {
	st, _ := pastStream(t)
	ctx := context.Background()
	type flag struct {
		key      string
		version  uint64
		enabled  bool
		archived bool
	}
	for _, tc := range []struct {
		name string
		env  string
		at   projections.Point
		want []flag
	}{
		{"before anything", "production", projections.Point{Time: minutes(-1)}, []flag{}},
		{"first sequence", "production", projections.Point{Sequence: 1}, []flag{{"a", 1, true, false}}},
		{"between events", "production", projections.Point{Time: minutes(2.5)}, []flag{{"a", 2, false, false}, {"b", 1, true, false}}},
		{"archived included", "production", projections.Point{Sequence: 6}, []flag{{"a", 3, true, false}, {"b", 2, true, true}}},
		{"other environment, before it existed", "staging", projections.Point{Sequence: 3}, []flag{}},
		{"other environment", "staging", projections.Point{Time: minutes(60)}, []flag{{"a", 1, true, false}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			flags, err := projections.EnvironmentAt(ctx, st, tc.env, tc.at)
			if err != nil {
				t.Fatal(err)
			}
			got := []flag{}
			for _, f := range flags {
				if f.Environment != tc.env {
					t.Fatalf("flag of %s in %s", f.Environment, tc.env)
				}
				got = append(got, flag{f.Key, f.Version, f.Enabled, f.Archived})
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("got %+v, want %+v", got, tc.want)
			}
		})
	}
	if _, err := projections.EnvironmentAt(ctx, st, "production", projections.Point{Version: 1}); !errors.Is(err, events.ErrInvalid) {
		t.Fatalf("version point for an environment: %v, want ErrInvalid", err)
	}
	if _, err := projections.EnvironmentAt(ctx, st, "Prod!", projections.Point{Sequence: 1}); !errors.Is(err, events.ErrInvalid) {
		t.Fatalf("bad environment: %v, want ErrInvalid", err)
	}
}

func TestFlagHistory(t *testing.T) {
	st, _ := pastStream(t)
	ctx := context.Background()
	got, err := projections.FlagHistory(ctx, st, "production", "a")
	if err != nil {
		t.Fatal(err)
	}
	var seqs []uint64
	for _, e := range got {
		seqs = append(seqs, e.Sequence)
	}
	if !reflect.DeepEqual(seqs, []uint64{1, 3, 5}) {
		t.Fatalf("history sequences %v, want [1 3 5]", seqs)
	}
	want := []projections.Change{ch("description", "", `"v3"`), ch("enabled", "false", "true")}
	if !reflect.DeepEqual(got[2].Changes, want) {
		t.Fatalf("changes of the update: %s", mustJSON(t, got[2].Changes))
	}
	if got[1].Actor != "bob" || got[1].Type != events.TypeFlagKilled {
		t.Fatalf("kill entry: %+v", got[1])
	}
	if _, err := projections.FlagHistory(ctx, st, "production", "zzz"); !errors.Is(err, projections.ErrNotFound) {
		t.Fatalf("history of an unknown flag: %v, want ErrNotFound", err)
	}
	if _, err := projections.FlagHistory(ctx, st, "production", ""); !errors.Is(err, events.ErrInvalid) {
		t.Fatalf("history of an empty key: %v, want ErrInvalid", err)
	}
}

// The past at the stream's last sequence is what the live catalog shows, message that is not an
// event included; and each flag's own past agrees with it.
func TestEnvironmentAtMatchesCatalog(t *testing.T) {
	st, w := auditStream(t)
	c := projections.NewCatalog()
	r := projections.NewRunner(st, c, nil)
	started(t, r)
	waitReady(t, r)
	last := w.all[len(w.all)-1].Sequence
	for _, env := range []string{"production", "staging"} {
		past, err := projections.EnvironmentAt(context.Background(), st, env, projections.Point{Sequence: last})
		if err != nil {
			t.Fatal(err)
		}
		if live := c.Flags(env); !reflect.DeepEqual(past, live) {
			t.Fatalf("%s:\n past %+v\n live %+v", env, past, live)
		}
		for _, f := range past {
			one, err := projections.FlagAt(context.Background(), st, env, f.Key, projections.Point{Time: minutes(1e6)})
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(one, f) {
				t.Fatalf("FlagAt %s/%s:\n%+v\n%+v", env, f.Key, one, f)
			}
		}
	}
}
