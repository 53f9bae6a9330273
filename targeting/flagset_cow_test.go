package targeting

import (
	"encoding/json"
	"fmt"
	"maps"
	"reflect"
	"slices"
	"testing"

	"github.com/interlock-dev/interlock/events"
	"github.com/interlock-dev/interlock/projections"
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
	set, err := CompileFlagset("production", 10, []projections.Flag{
		{Key: "a", Environment: "production", FlagConfig: boolCfg(), Version: 1},
		{Key: "b", Environment: "production", FlagConfig: boolCfg(), Version: 1},
		{Key: "user", Environment: "production", FlagConfig: user, Version: 1},
	}, []projections.Segment{{Key: "beta", Environment: "production", Version: 1, SegmentConfig: events.SegmentConfig{Included: []string{"x"}}}})
	if err != nil {
		t.Fatal(err)
	}
	before := map[string]*compiledFlag{}
	set.flags.each(func(k string, v *compiledFlag) { before[k] = v })

	kill, err := events.NewEvent(events.TypeFlagKilled, "production", "a", events.FlagKilled{})
	if err != nil {
		t.Fatal(err)
	}
	kill.Version, kill.Sequence = 2, 11
	next, err := set.Apply(kill)
	if err != nil {
		t.Fatal(err)
	}
	if next.flag("a") == set.flag("a") || next.flag("b") != set.flag("b") || next.flag("user") != set.flag("user") {
		t.Error("a flag event recompiles its flag only")
	}
	// A kill keeps the configuration: the compiled variants are reused, the version is new.
	if a, was := next.flag("a"), set.flag("a"); a.off != was.off || a.enabled || a.version != 2 || a.staticEval.Version != 2 || a.disabledEval().Version != 2 {
		t.Errorf("kill: reused %v, enabled %v, version %d/%d", a.off == was.off, a.enabled, a.version, a.staticEval.Version)
	}
	if next.nflags != 3 || next.segments != set.segments || next.users != set.users || next.segment("beta") != set.segment("beta") {
		t.Error("the segments and their index are shared")
	}
	for k, v := range before {
		if set.flag(k) != v {
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
	if third.flag("user") == next.flag("user") || third.flag("a") != next.flag("a") || third.flag("b") != next.flag("b") {
		t.Error("a segment event recompiles the flags using it, and only them")
	}
	if third.flag("user").rules[0].conds[0].segs[0] != third.segment("beta") {
		t.Error("the recompiled flag uses the new segment")
	}
	if next.flag("user").rules[0].conds[0].segs[0] != next.segment("beta") || next.segment("beta") == third.segment("beta") {
		t.Error("the old set keeps the old segment")
	}
	if third.users != next.users {
		t.Error("a segment event that does not change which flags use it shares the index")
	}
}

// mapID identifies a map, to tell a shared shard from a copy.
func mapID[V any](m map[string]V) uintptr { return reflect.ValueOf(m).Pointer() }

// TestApplyCopiesOneShard: applying an event to a large set copies the shard holding its flag
// and shares every other shard, and every set made along the way keeps its own state.
func TestApplyCopiesOneShard(t *testing.T) {
	cfg := events.FlagConfig{Kind: events.KindRelease, Variants: map[string]json.RawMessage{"on": json.RawMessage("true"), "off": json.RawMessage("false")}, DefaultVariant: "on", OffVariant: "off", Enabled: true}
	const n = 2000
	flags := make([]projections.Flag, n)
	for i := range flags {
		flags[i] = projections.Flag{Key: fmt.Sprintf("f%04d", i), Environment: "production", FlagConfig: cfg, Version: 1}
	}
	set, err := CompileFlagset("production", 1, flags, nil)
	if err != nil {
		t.Fatal(err)
	}
	sets := []*Flagset{set}
	const kills = 300
	for i := range kills {
		ev, err := events.NewEvent(events.TypeFlagKilled, "production", flags[i].Key, events.FlagKilled{})
		if err != nil {
			t.Fatal(err)
		}
		ev.Version, ev.Sequence = 2, uint64(i+2)
		prev := sets[len(sets)-1]
		next, err := prev.Apply(ev)
		if err != nil {
			t.Fatal(err)
		}
		if next.flags == prev.flags {
			t.Fatal("the array of shards was not copied")
		}
		mine := shardOf(next.seed, flags[i].Key)
		for j := range shardCount {
			if same := mapID(next.flags[j]) == mapID(prev.flags[j]); same == (j == mine) {
				t.Fatalf("kill %d: shard %d shared %v; the flag's shard is %d", i, j, same, mine)
			}
		}
		sets = append(sets, next)
	}
	for step, s := range sets {
		if s.Sequence() != uint64(step+1) || len(s.Keys()) != n || len(s.Flags()) != n {
			t.Fatalf("set %d: sequence %d, %d keys, %d flags", step, s.Sequence(), len(s.Keys()), len(s.Flags()))
		}
		for i := range min(kills+1, n) {
			want := ReasonStatic
			if i < step {
				want = ReasonDisabled
			}
			if got := s.Evaluate(flags[i].Key, nil).Reason; got != want {
				t.Fatalf("set %d: flag %s is %s, want %s", step, flags[i].Key, got, want)
			}
		}
	}
	if !slices.IsSorted(set.Keys()) || set.Keys()[0] != "f0000" || set.Keys()[n-1] != fmt.Sprintf("f%04d", n-1) {
		t.Error("keys are not the sorted keys of the flags")
	}
}

// usersByScan is the index of which flags use which segment, from the flags themselves.
func usersByScan(s *Flagset) map[string][]string {
	out := map[string][]string{}
	s.flags.each(func(fk string, f *compiledFlag) {
		for _, sk := range f.segments {
			out[sk] = append(out[sk], fk)
		}
	})
	for _, v := range out {
		slices.Sort(v)
	}
	return out
}

// usersIndexed is the index a set keeps.
func usersIndexed(s *Flagset) map[string][]string {
	out := map[string][]string{}
	s.users.each(func(sk string, us map[string]struct{}) {
		out[sk] = slices.Sorted(maps.Keys(us))
	})
	return out
}

// TestUsersIndexMatchesScan: the index of the flags using each segment is what scanning the
// flags finds, as flags start and stop using segments through a builder that publishes between
// changes (as the live evaluators' does) and one that does not; earlier sets keep their index.
func TestUsersIndexMatchesScan(t *testing.T) {
	uses := func(key string, segs ...string) projections.Flag {
		cfg := events.FlagConfig{Kind: events.KindRelease, Variants: map[string]json.RawMessage{"on": json.RawMessage("true")}, DefaultVariant: "on", OffVariant: "on", Enabled: true}
		for _, s := range segs {
			cfg.Rules = append(cfg.Rules, events.Rule{Conditions: []events.Condition{{Attribute: "targetingKey", Operator: "notInSegment", Values: []any{s}}}, Serve: events.Serve{Variant: "on"}})
		}
		return projections.Flag{Key: key, Environment: "production", FlagConfig: cfg, Version: 1}
	}
	steps := []projections.Flag{
		uses("f1", "s1"), uses("f2", "s1", "s2"), uses("f3"), uses("f1", "s2"), uses("f2"),
		uses("f4", "s3", "s2", "s3"), uses("f3", "s1"), uses("f4"), uses("f1"),
	}
	published := newBuilder("production")
	batched := newBuilder("production")
	var sets []*Flagset
	var want []map[string][]string
	for i, f := range steps {
		published.setFlag(f)
		batched.setFlag(f)
		set := published.publish()
		got, scan := usersIndexed(set), usersByScan(set)
		if !reflect.DeepEqual(got, scan) {
			t.Errorf("step %d: index %v, scan %v", i, got, scan)
		}
		sets, want = append(sets, set), append(want, scan)
	}
	for i, set := range sets {
		if got := usersIndexed(set); !reflect.DeepEqual(got, want[i]) {
			t.Errorf("set %d changed later: index %v, was %v", i, got, want[i])
		}
	}
	last := batched.publish()
	if got, scan := usersIndexed(last), usersByScan(last); !reflect.DeepEqual(got, scan) || !reflect.DeepEqual(got, want[len(want)-1]) {
		t.Errorf("batched: index %v, scan %v", got, scan)
	}

	// A segment event recompiles exactly the flags using it.
	b := last.edit()
	b.setFlag(uses("f5", "s2"))
	b.setFlag(uses("f6", "s1"))
	base := b.publish()
	b.setSegment(projections.Segment{Key: "s2", Environment: "production", Version: 1, SegmentConfig: events.SegmentConfig{Included: []string{"k"}}})
	after := b.publish()
	for _, k := range base.Keys() {
		recompiled := after.flag(k) != base.flag(k)
		if using := slices.Contains(base.flag(k).segments, "s2"); recompiled != using {
			t.Errorf("flag %s: uses s2 %v, recompiled %v", k, using, recompiled)
		}
	}
	if after.flag("f5").rules[0].conds[0].op != opInSegment || base.flag("f5").rules[0].conds[0].op != opNever {
		t.Error("f5 does not use s2 once it exists")
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
