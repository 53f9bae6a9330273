package projections

import (
	"encoding/json"
	"testing"

	"github.com/interlock-dev/interlock/events"
)

// TestApplyCopiesOnWrite: an event recompiles only what it changed and shares everything else
// with the set it was applied to, which does not change; a segment change recompiles exactly the
// flags that use it.
func TestApplyCopiesOnWrite(t *testing.T) {
	boolCfg := func() events.FlagConfig {
		return events.FlagConfig{Kind: events.KindRelease, Variants: map[string]json.RawMessage{"on": json.RawMessage("true"), "off": json.RawMessage("false")}, DefaultVariant: "off", OffVariant: "off", Enabled: true}
	}
	user := boolCfg()
	user.Rules = []events.Rule{{Conditions: []events.Condition{{Attribute: "targetingKey", Operator: "inSegment", Values: []any{"beta"}}}, Serve: events.Serve{Variant: "on"}}}
	set, err := CompileFlagset("production", 10, []Flag{
		{Key: "a", Environment: "production", FlagConfig: boolCfg(), Version: 1},
		{Key: "b", Environment: "production", FlagConfig: boolCfg(), Version: 1},
		{Key: "user", Environment: "production", FlagConfig: user, Version: 1},
	}, []Segment{{Key: "beta", Environment: "production", Version: 1, SegmentConfig: events.SegmentConfig{Included: []string{"x"}}}})
	if err != nil {
		t.Fatal(err)
	}
	before := map[string]*compiledFlag{}
	for k, v := range set.flags {
		before[k] = v
	}

	kill, err := events.NewEvent(events.TypeFlagKilled, "production", "a", events.FlagKilled{})
	if err != nil {
		t.Fatal(err)
	}
	kill.Version, kill.Sequence = 2, 11
	next, err := set.Apply(kill)
	if err != nil {
		t.Fatal(err)
	}
	if next.flags["a"] == set.flags["a"] || next.flags["b"] != set.flags["b"] || next.flags["user"] != set.flags["user"] {
		t.Error("a flag event recompiles its flag only")
	}
	// A kill keeps the configuration: the compiled variants are reused, the version is new.
	if a, was := next.flags["a"], set.flags["a"]; a.off != was.off || a.enabled || a.version != 2 || a.staticEval.Version != 2 || a.disabledEval().Version != 2 {
		t.Errorf("kill: reused %v, enabled %v, version %d/%d", a.off == was.off, a.enabled, a.version, a.staticEval.Version)
	}
	if len(next.flags) != 3 || next.segments["beta"] != set.segments["beta"] {
		t.Error("the segments are shared")
	}
	for k, v := range before {
		if set.flags[k] != v {
			t.Errorf("Apply changed flag %s of the set it was called on", k)
		}
	}

	upd, err := events.NewEvent(events.TypeSegmentUpdated, "production", "beta", events.SegmentUpdated{Segment: events.SegmentConfig{Included: []string{"y"}}})
	if err != nil {
		t.Fatal(err)
	}
	upd.Version, upd.Sequence = 2, 12
	third, err := next.Apply(upd)
	if err != nil {
		t.Fatal(err)
	}
	if third.flags["user"] == next.flags["user"] || third.flags["a"] != next.flags["a"] || third.flags["b"] != next.flags["b"] {
		t.Error("a segment event recompiles the flags using it, and only them")
	}
	if third.flags["user"].rules[0].conds[0].segs[0] != third.segments["beta"] {
		t.Error("the recompiled flag uses the new segment")
	}
	if next.flags["user"].rules[0].conds[0].segs[0] != next.segments["beta"] || next.segments["beta"] == third.segments["beta"] {
		t.Error("the old set keeps the old segment")
	}
}

// TestBuilderIndexMatchesScan: the segment index the live evaluators keep finds the same flags
// as scanning, as flags start and stop using segments.
func TestBuilderIndexMatchesScan(t *testing.T) {
	uses := func(segs ...string) Flag {
		cfg := events.FlagConfig{Kind: events.KindRelease, Variants: map[string]json.RawMessage{"on": json.RawMessage("true")}, DefaultVariant: "on", OffVariant: "on", Enabled: true}
		for _, s := range segs {
			cfg.Rules = append(cfg.Rules, events.Rule{Conditions: []events.Condition{{Attribute: "targetingKey", Operator: "notInSegment", Values: []any{s}}}, Serve: events.Serve{Variant: "on"}})
		}
		return Flag{Environment: "production", FlagConfig: cfg, Version: 1}
	}
	indexed := &builder{env: "production"}
	indexed.indexUsers()
	scanned := &builder{env: "production"}
	steps := []struct {
		key  string
		segs []string
	}{{"f1", []string{"s1"}}, {"f2", []string{"s1", "s2"}}, {"f3", nil}, {"f1", []string{"s2"}}, {"f2", nil}}
	for i, st := range steps {
		f := uses(st.segs...)
		f.Key = st.key
		indexed.setFlag(f)
		scanned.setFlag(f)
		for _, sk := range []string{"s1", "s2"} {
			var want []string
			for fk, cf := range scanned.flags {
				for _, s := range cf.segments {
					if s == sk {
						want = append(want, fk)
					}
				}
			}
			if len(indexed.users[sk]) != len(want) {
				t.Errorf("step %d: segment %s used by %v, index says %v", i, sk, want, indexed.users[sk])
			}
			for _, fk := range want {
				if _, ok := indexed.users[sk][fk]; !ok {
					t.Errorf("step %d: index misses %s using %s", i, fk, sk)
				}
			}
		}
	}
	// A segment event through either builder recompiles the same flags.
	seg := Segment{Key: "s2", Environment: "production", Version: 1, SegmentConfig: events.SegmentConfig{Included: []string{"k"}}}
	indexed.publish()
	scanned.publish()
	ib, sb := map[string]*compiledFlag{}, map[string]*compiledFlag{}
	for k, v := range indexed.flags {
		ib[k] = v
	}
	for k, v := range scanned.flags {
		sb[k] = v
	}
	indexed.setSegment(seg)
	scanned.setSegment(seg)
	for k := range ib {
		if (indexed.flags[k] != ib[k]) != (scanned.flags[k] != sb[k]) {
			t.Errorf("flag %s: recompiled by one builder and not the other", k)
		}
	}
	if indexed.flags["f1"] == ib["f1"] {
		t.Error("f1 uses s2 and was not recompiled")
	}
}

func TestSameConfig(t *testing.T) {
	base := events.FlagConfig{
		Kind:           events.KindRelease,
		Variants:       map[string]json.RawMessage{"on": json.RawMessage("true"), "off": json.RawMessage("false")},
		DefaultVariant: "off", OffVariant: "off", Enabled: true,
		Rules:        []events.Rule{{Serve: events.Serve{Variant: "on"}}},
		DefaultServe: &events.Serve{Variant: "off"},
	}
	same := base // what a kill or an enable leaves: the same slices, maps and pointers
	same.Enabled = false
	same.Description = "changed"
	if !sameConfig(&base, &same) {
		t.Error("a copy is not the same configuration")
	}
	changes := map[string]func(c *events.FlagConfig){
		"rules rebuilt": func(c *events.FlagConfig) { c.Rules = []events.Rule{{Serve: events.Serve{Variant: "on"}}} },
		"default serve": func(c *events.FlagConfig) { c.DefaultServe = &events.Serve{Variant: "off"} },
		"variant value": func(c *events.FlagConfig) {
			c.Variants = map[string]json.RawMessage{"on": json.RawMessage("true"), "off": json.RawMessage("true")}
		},
		"variant name": func(c *events.FlagConfig) {
			c.Variants = map[string]json.RawMessage{"on": json.RawMessage("true"), "no": json.RawMessage("false")}
		},
		"default variant": func(c *events.FlagConfig) { c.DefaultVariant = "on" },
		"off variant":     func(c *events.FlagConfig) { c.OffVariant = "on" },
	}
	for name, change := range changes {
		other := base
		change(&other)
		if sameConfig(&base, &other) {
			t.Errorf("%s: taken for the same configuration", name)
		}
	}
}
