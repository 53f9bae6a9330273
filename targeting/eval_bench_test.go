package targeting_test

import (
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/interlock-dev/interlock/events"
	"github.com/interlock-dev/interlock/projections"
	"github.com/interlock-dev/interlock/targeting"
)

// The four cases the peers were measured on:
//
//	a: a static bool;
//	b: a bool with a role == "beta" rule;
//	c: a 25/75 split by targeting key;
//	d: a random flag among 10,000, a third each of a, b and c.
func benchCase(i int) events.FlagConfig {
	switch i % 3 {
	case 0:
		return boolConfig()
	case 1:
		return targeted(cond("role", "eq", "beta"))
	default:
		return splitFlag(25, 75)
	}
}

// benchContexts are 1,024 prebuilt contexts: a targeting key and a few attributes, a quarter of
// them beta users.
func benchContexts() []*targeting.EvalContext {
	roles := []string{"beta", "admin", "user", "guest"}
	countries := []string{"NL", "DE", "US", "FR", "JP"}
	out := make([]*targeting.EvalContext, 1024)
	for i := range out {
		out[i] = &targeting.EvalContext{
			TargetingKey: fmt.Sprintf("user-%06d", i*7919),
			Attributes: map[string]any{
				"role":    roles[i%len(roles)],
				"country": countries[i%len(countries)],
				"plan":    "pro",
				"age":     20 + i%50,
			},
		}
	}
	return out
}

// BenchmarkEval measures Flagset.Evaluate on the four cases:
//
//	go test -run '^$' -bench BenchmarkEval -benchmem -count 5 ./projections/
func BenchmarkEval(b *testing.B) {
	ctxs := benchContexts()
	small := compileSet(b, []projections.Flag{
		flagOf("checkout.static", benchCase(0)),
		flagOf("checkout.beta", benchCase(1)),
		flagOf("checkout.ramp", benchCase(2)),
	})
	for _, c := range []struct{ name, key string }{
		{"a-static", "checkout.static"},
		{"b-targeting", "checkout.beta"},
		{"c-fractional", "checkout.ramp"},
	} {
		b.Run(c.name, func(b *testing.B) {
			i := 0
			for b.Loop() {
				if small.Evaluate(c.key, ctxs[i&1023]).Variant == nil {
					b.Fatal("no variant")
				}
				i++
			}
		})
	}

	const n = 10_000
	flags := make([]projections.Flag, n)
	keys := make([]string, n)
	for i := range flags {
		keys[i] = fmt.Sprintf("team-%02d.flag-%05d", i%20, i)
		flags[i] = flagOf(keys[i], benchCase(i))
	}
	large := compileSet(b, flags)
	rng := rand.New(rand.NewPCG(1, 2))
	order := make([]string, 1<<16)
	for i := range order {
		order[i] = keys[rng.IntN(n)]
	}
	b.Run("d-10k-random", func(b *testing.B) {
		i := 0
		for b.Loop() {
			if large.Evaluate(order[i&(1<<16-1)], ctxs[i&1023]).Variant == nil {
				b.Fatal("no variant")
			}
			i++
		}
	})
}

// BenchmarkFlagsetApply measures folding one event into a flag set of 1,000 and of 10,000
// flags: a copy of the array of shards and of the shard holding the flag, and the compilation of
// the flag (which reuses its compiled rules: a kill does not change them).
//
//	go test -run '^$' -bench BenchmarkFlagsetApply -benchmem -count 5 ./projections/
func BenchmarkFlagsetApply(b *testing.B) {
	for _, n := range []int{1_000, 10_000} {
		b.Run(fmt.Sprintf("flags-%d", n), func(b *testing.B) {
			flags := make([]projections.Flag, n)
			for i := range flags {
				flags[i] = flagOf(fmt.Sprintf("team-%02d.flag-%05d", i%20, i), benchConfig(i))
			}
			set, err := targeting.CompileFlagset(env, 1, flags, nil)
			if err != nil {
				b.Fatal(err)
			}
			evs := make([]events.Event, 2)
			for i, typ := range []string{events.TypeFlagKilled, events.TypeFlagEnabled} {
				ev, err := events.NewEvent(typ, env, flags[n/2].Key, map[string]any{})
				if err != nil {
					b.Fatal(err)
				}
				evs[i] = ev
			}
			version, seq := uint64(1), uint64(1)
			for b.Loop() {
				ev := evs[seq%2]
				version++
				seq++
				ev.Version, ev.Sequence = version, seq
				if set, err = set.Apply(ev); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
