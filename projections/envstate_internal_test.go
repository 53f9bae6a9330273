package projections

import (
	"fmt"
	"maps"
	"math/rand/v2"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"
)

// flagMap is a FlagState holding flags by key, in one environment.
type flagMap map[string]Flag

func (m flagMap) Flag(_, key string) (Flag, bool) { f, ok := m[key]; return f, ok }
func (m flagMap) Flags(string) []Flag {
	out := slices.Collect(maps.Values(m))
	slices.SortFunc(out, func(a, b Flag) int { return strings.Compare(a.Key, b.Key) })
	return out
}

// TestStatesMerge checks, on random message sequences, that every state an index keeps merges
// into the environment's flags as they were at its sequence, however often states were thinned,
// and that the states stay within their bound and ordered.
func TestStatesMerge(t *testing.T) {
	for seed := range uint64(20) {
		t.Run(fmt.Sprint("seed ", seed), func(t *testing.T) {
			rnd := rand.New(rand.NewPCG(seed, 2))
			defer SetStates(1+rnd.IntN(4), 2+2*rnd.IntN(4))()
			ix := NewIndex()
			flags := flagMap{}
			at := map[uint64][]Flag{} // the flags after each sequence
			now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
			for seq := uint64(1); seq <= 400; seq++ {
				key := fmt.Sprint("k", rnd.IntN(12))
				subject := "interlock.prod.flag." + key
				if rnd.IntN(5) == 0 {
					subject = "interlock.prod.segment." + key
				}
				now = now.Add(time.Duration(rnd.IntN(60)-10) * time.Second)
				ix.add(subject, "", seq)
				if rnd.IntN(7) != 0 && strings.Contains(subject, ".flag.") { // some messages do not fold
					f := flags[key]
					f.Environment, f.Key, f.Version, f.Sequence = "prod", key, f.Version+1, seq
					flags[key] = f
				}
				ix.track(subject, now, seq, flags)
				at[seq] = flags.Flags("")
			}
			n, _ := ix.States("prod")
			if n < 2 || n > maxStates {
				t.Fatalf("%d states kept, want 2 to %d", n, maxStates)
			}
			var prev envState
			for _, st := range ix.envs["prod"].states {
				if st.Sequence <= prev.Sequence || st.Latest.Before(prev.Latest) {
					t.Fatalf("state at %d (latest %v) after one at %d (%v)", st.Sequence, st.Latest, prev.Sequence, prev.Latest)
				}
				prev = st
				got, seq := ix.stateAt("prod", Point{Sequence: st.Sequence})
				slices.SortFunc(got, func(a, b Flag) int { return strings.Compare(a.Key, b.Key) })
				if seq != st.Sequence || !reflect.DeepEqual(got, at[st.Sequence]) {
					t.Fatalf("state at %d merges to %v (at %d), want %v", st.Sequence, got, seq, at[st.Sequence])
				}
			}
		})
	}
}
