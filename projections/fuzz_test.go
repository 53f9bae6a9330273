package projections_test

import (
	"bytes"
	"encoding/json"
	"reflect"
	"strconv"
	"strings"
	"testing"

	"github.com/interlock-dev/interlock/events"
	"github.com/interlock-dev/interlock/projections"
)

// pathLess orders diff paths: by name, rule positions by number.
func pathLess(a, b string) bool {
	ra, ia, okA := rulePath(a)
	rb, ib, okB := rulePath(b)
	if okA && okB && ra == rb {
		return ia < ib
	}
	return ra < rb
}

func rulePath(p string) (string, int, bool) {
	name, idx, ok := strings.Cut(p, "[")
	if !ok {
		return p, 0, false
	}
	i, err := strconv.Atoi(strings.TrimSuffix(idx, "]"))
	return name + "[", i, err == nil
}

// FuzzDiff decodes two flag documents and checks what every diff must satisfy: deterministic,
// sorted, empty against itself, each change a real difference in valid JSON, and symmetric.
func FuzzDiff(f *testing.F) {
	seed := func(v any) []byte {
		b, err := json.Marshal(v)
		if err != nil {
			f.Fatal(err)
		}
		return b
	}
	a := existing(nil)
	b := existing(func(c *events.FlagConfig) {
		c.Enabled = false
		c.Description = "d"
		c.Variants["x"] = json.RawMessage(` { "a" : 1 } `)
		c.Rules = []events.Rule{rule("r", "on"), rule("s", "off")}
		c.DefaultServe = &events.Serve{Split: map[string]int{"on": 1}}
	})
	f.Add(seed(a), seed(b))
	f.Add(seed(projections.Flag{}), seed(b))
	f.Add([]byte(`{"version":1,"variants":{"a":"x"},"rules":[{}]}`), []byte(`{"version":2,"variants":{"a":"y","b":1},"tags":["t"],"archived":true}`))
	f.Fuzz(func(t *testing.T, x, y []byte) {
		var before, after projections.Flag
		if json.Unmarshal(x, &before) != nil || json.Unmarshal(y, &after) != nil {
			return
		}
		got := projections.Diff(before, after)
		if got == nil {
			t.Fatal("nil diff")
		}
		if again := projections.Diff(before, after); !reflect.DeepEqual(got, again) {
			t.Fatalf("not deterministic:\n%v\n%v", got, again)
		}
		if self := projections.Diff(before, before); len(self) != 0 {
			t.Fatalf("a flag differs from itself: %v", self)
		}
		for i, c := range got {
			if i > 0 && !pathLess(got[i-1].Path, c.Path) {
				t.Fatalf("paths out of order: %q before %q", got[i-1].Path, c.Path)
			}
			if bytes.Equal(c.Before, c.After) {
				t.Fatalf("%s: no difference", c.Path)
			}
			if c.Before != nil && !json.Valid(c.Before) || c.After != nil && !json.Valid(c.After) {
				t.Fatalf("%s: not JSON: %s -> %s", c.Path, c.Before, c.After)
			}
		}
		if _, err := json.Marshal(got); err != nil {
			t.Fatalf("diff does not encode: %v", err)
		}
		if before.Exists() && after.Exists() {
			back := projections.Diff(after, before)
			if len(back) != len(got) {
				t.Fatalf("reverse diff has %d changes, want %d", len(back), len(got))
			}
			for i := range back {
				if back[i].Path != got[i].Path || !bytes.Equal(back[i].Before, got[i].After) || !bytes.Equal(back[i].After, got[i].Before) {
					t.Fatalf("reverse of %+v is %+v", got[i], back[i])
				}
			}
		}
	})
}

// FuzzCatalogApply feeds arbitrary payloads of every type to a catalog holding one flag: it never
// panics, always advances its sequence, and either applies the event as the next version or leaves
// the flag exactly as it was.
func FuzzCatalogApply(f *testing.F) {
	types := []string{
		events.TypeFlagCreated, events.TypeFlagUpdated, events.TypeFlagEnabled, events.TypeFlagKilled,
		events.TypeFlagArchived, events.TypeFlagUnarchived, events.TypeFlagRestored, "io.interlock.flag.future.v1",
	}
	f.Add(uint8(1), uint8(2), []byte(`{}`))
	f.Add(uint8(3), uint8(2), []byte(``))
	f.Add(uint8(1), uint8(2), []byte(`{"flag":{"kind":"release","variants":{"on":true},"defaultVariant":"on","offVariant":"on"}}`))
	f.Add(uint8(6), uint8(2), []byte(`{"fromVersion":1,"flag":null}`))
	f.Add(uint8(0), uint8(1), []byte(`{"flag":{"variants":{"a":[1,2]}}}`))
	f.Add(uint8(2), uint8(7), []byte(`not json`))
	f.Fuzz(func(t *testing.T, typ, version uint8, data []byte) {
		c := projections.NewCatalog()
		if err := c.Apply(seqd(event(t, events.TypeFlagCreated, "production", "a", 1, events.FlagCreated{Flag: boolConfig()}), 1)); err != nil {
			t.Fatal(err)
		}
		before, _ := c.Flag("production", "a")
		ev := event(t, types[int(typ)%len(types)], "production", "a", uint64(version), nil)
		ev.Data = data
		err := c.Apply(seqd(ev, 2))
		if c.Sequence() != 2 {
			t.Fatalf("sequence %d, want 2", c.Sequence())
		}
		after, ok := c.Flag("production", "a")
		if !ok {
			t.Fatal("flag lost")
		}
		if err != nil {
			if !reflect.DeepEqual(before, after) {
				t.Fatalf("refused event (%v) changed the flag", err)
			}
			return
		}
		if after.Version != 2 || after.Sequence != 2 {
			t.Fatalf("applied event left version %d sequence %d", after.Version, after.Sequence)
		}
	})
}
