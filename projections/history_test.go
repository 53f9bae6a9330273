package projections_test

import (
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/interlock-dev/interlock/events"
	"github.com/interlock-dev/interlock/projections"
)

func existing(mod func(*events.FlagConfig)) projections.Flag {
	cfg := boolConfig()
	if mod != nil {
		mod(&cfg)
	}
	return projections.Flag{
		Key: "checkout-v2", Environment: "production", FlagConfig: cfg,
		Version: 3, CreatedAt: t0, UpdatedAt: t0, UpdatedBy: "alice", Sequence: 9,
	}
}

func rule(name, variant string) events.Rule {
	return events.Rule{
		Name:       name,
		Conditions: []events.Condition{{Attribute: "plan", Operator: "eq", Values: []any{"pro"}}},
		Serve:      events.Serve{Variant: variant},
	}
}

// ch builds an expected change; "" stands for an absent side.
func ch(path, before, after string) projections.Change {
	c := projections.Change{Path: path}
	if before != "" {
		c.Before = json.RawMessage(before)
	}
	if after != "" {
		c.After = json.RawMessage(after)
	}
	return c
}

func TestDiff(t *testing.T) {
	ruleJSON := func(name, variant string) string {
		b, err := json.Marshal(rule(name, variant))
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	for _, tc := range []struct {
		name   string
		before projections.Flag
		after  func(projections.Flag) projections.Flag
		want   []projections.Change
	}{
		{
			name:   "equal",
			before: existing(nil),
			after:  func(f projections.Flag) projections.Flag { return f },
			want:   []projections.Change{},
		},
		{
			name:   "bookkeeping is not a change",
			before: existing(nil),
			after: func(f projections.Flag) projections.Flag {
				f.Version, f.UpdatedAt, f.UpdatedBy, f.Sequence = 4, t0.Add(time.Hour), "bob", 12
				return f
			},
			want: []projections.Change{},
		},
		{
			name:   "killed",
			before: existing(nil),
			after:  func(f projections.Flag) projections.Flag { f.Enabled = false; return f },
			want:   []projections.Change{ch("enabled", "true", "false")},
		},
		{
			name:   "archived",
			before: existing(nil),
			after:  func(f projections.Flag) projections.Flag { f.Archived = true; return f },
			want:   []projections.Change{ch("archived", "false", "true")},
		},
		{
			name:   "optional fields set and cleared",
			before: existing(func(c *events.FlagConfig) { c.Owner = "team-a" }),
			after: func(f projections.Flag) projections.Flag {
				f.FlagConfig = f.Clone()
				f.Description, f.Owner, f.Tags = "new checkout", "", []string{"checkout", "q3"}
				f.DefaultServe = &events.Serve{Split: map[string]int{"on": 10, "off": 90}}
				return f
			},
			want: []projections.Change{
				ch("defaultServe", "", `{"split":{"off":90,"on":10}}`),
				ch("description", "", `"new checkout"`),
				ch("owner", `"team-a"`, ""),
				ch("tags", "", `["checkout","q3"]`),
			},
		},
		{
			name:   "one change per variant, layout is not a change",
			before: existing(func(c *events.FlagConfig) { c.Variants["gone"] = json.RawMessage("false") }),
			after: func(f projections.Flag) projections.Flag {
				f.FlagConfig = f.Clone()
				f.Variants["on"] = json.RawMessage(" true ")
				f.Variants["off"] = json.RawMessage("true")
				f.Variants["added"] = json.RawMessage("true")
				delete(f.Variants, "gone")
				f.DefaultVariant = "added"
				return f
			},
			want: []projections.Change{
				ch("defaultVariant", `"on"`, `"added"`),
				ch("variants.added", "", "true"),
				ch("variants.gone", "false", ""),
				ch("variants.off", "false", "true"),
			},
		},
		{
			name: "rules compared by position, in numeric order",
			before: existing(func(c *events.FlagConfig) {
				for i := range 11 {
					c.Rules = append(c.Rules, rule("r"+strings.Repeat("x", i), "on"))
				}
			}),
			after: func(f projections.Flag) projections.Flag {
				f.FlagConfig = f.Clone()
				f.Rules[2].Serve.Variant = "off"
				f.Rules[10].Serve.Variant = "off"
				f.Rules = append(f.Rules, rule("new", "on"))
				return f
			},
			want: []projections.Change{
				ch("rules[2]", ruleJSON("rxx", "on"), ruleJSON("rxx", "off")),
				ch("rules[10]", ruleJSON("rxxxxxxxxxx", "on"), ruleJSON("rxxxxxxxxxx", "off")),
				ch("rules[11]", "", ruleJSON("new", "on")),
			},
		},
		{
			name:   "removed rule shows only before",
			before: existing(func(c *events.FlagConfig) { c.Rules = []events.Rule{rule("a", "on"), rule("b", "off")} }),
			after: func(f projections.Flag) projections.Flag {
				f.FlagConfig = f.Clone()
				f.Rules = f.Rules[1:]
				return f
			},
			want: []projections.Change{
				ch("rules[0]", ruleJSON("a", "on"), ruleJSON("b", "off")),
				ch("rules[1]", ruleJSON("b", "off"), ""),
			},
		},
		{
			name:   "creation lists the whole document, only after",
			before: projections.Flag{},
			after: func(projections.Flag) projections.Flag {
				return existing(func(c *events.FlagConfig) { c.Tags = []string{"x"} })
			},
			want: []projections.Change{
				ch("archived", "", "false"),
				ch("defaultVariant", "", `"on"`),
				ch("enabled", "", "true"),
				ch("kind", "", `"release"`),
				ch("offVariant", "", `"off"`),
				ch("tags", "", `["x"]`),
				ch("variants.off", "", "false"),
				ch("variants.on", "", "true"),
			},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			after := tc.after(tc.before)
			got := projections.Diff(tc.before, after)
			if !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("diff:\n got %s\nwant %s", mustJSON(t, got), mustJSON(t, tc.want))
			}
			// The reverse diff has the same paths with the sides swapped.
			back := projections.Diff(after, tc.before)
			if tc.before.Exists() && len(back) != len(got) {
				t.Fatalf("reverse diff has %d changes, want %d", len(back), len(got))
			}
		})
	}
}

func mustJSON(t testing.TB, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestHistory(t *testing.T) {
	cfg := boolConfig()
	cfg.Description = "new checkout"
	evs := []events.Event{
		seqd(event(t, events.TypeFlagCreated, "production", "a", 1, events.FlagCreated{Flag: boolConfig()}), 3),
		seqd(event(t, events.TypeFlagKilled, "production", "a", 2, events.FlagKilled{}), 5),
		seqd(event(t, events.TypeFlagUpdated, "production", "a", 3, events.FlagUpdated{Flag: cfg}), 8),
		seqd(event(t, "io.interlock.flag.renamed.v9", "production", "a", 4, nil), 9),
	}
	evs[1].CorrelationID, evs[1].CausationID, evs[1].Reason = "corr", "cause", "pager"
	got, err := projections.History(evs)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(evs) {
		t.Fatalf("%d entries for %d events", len(got), len(evs))
	}
	e := got[1]
	if e.Sequence != 5 || e.Version != 2 || e.ID != evs[1].ID || e.Type != events.TypeFlagKilled ||
		e.Actor != "alice" || e.Reason != "pager" || e.CorrelationID != "corr" || e.CausationID != "cause" ||
		!e.Time.Equal(evs[1].Time) {
		t.Fatalf("entry does not carry its event: %+v", e)
	}
	wantPaths := [][]string{
		{"archived", "defaultVariant", "enabled", "kind", "offVariant", "variants.off", "variants.on"},
		{"enabled"},
		// The update sends the whole document, enabled again included.
		{"description", "enabled"},
		{},
	}
	for i, e := range got {
		paths := []string{}
		for _, c := range e.Changes {
			paths = append(paths, c.Path)
		}
		if !reflect.DeepEqual(paths, wantPaths[i]) {
			t.Errorf("entry %d (%s): paths %v, want %v", i, e.Type, paths, wantPaths[i])
		}
	}
	if b := mustJSON(t, got[3]); !strings.Contains(b, `"changes":[]`) {
		t.Fatalf("an entry without changes encodes them as []: %s", b)
	}

	gap := []events.Event{evs[0], evs[2]}
	if _, err := projections.History(gap); !errors.Is(err, projections.ErrOutOfOrder) {
		t.Fatalf("history with a gap: %v, want ErrOutOfOrder", err)
	}
}
