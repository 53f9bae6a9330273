package targeting

import (
	"fmt"
	"testing"
)

// Published MurmurHash3 x86_32 vectors, from the tests of github.com/spaolacci/murmur3
// (murmur_test.go), which match Austin Appleby's SMHasher reference implementation.
var murmurVectors = []struct {
	seed uint32
	want uint32
	s    string
}{
	{0x00, 0x00000000, ""},
	{0x00, 0x248bfa47, "hello"},
	{0x00, 0x149bbb7f, "hello, world"},
	{0x00, 0xe31e8a70, "19 Jan 2038 at 3:14:07 AM"},
	{0x00, 0xd5c48bfc, "The quick brown fox jumps over the lazy dog."},
	{0x01, 0x514e28b7, ""},
	{0x01, 0xbb4abcad, "hello"},
	{0x01, 0x6f5cb2e9, "hello, world"},
	{0x01, 0xf50e1f30, "19 Jan 2038 at 3:14:07 AM"},
	{0x01, 0x846f6a36, "The quick brown fox jumps over the lazy dog."},
	{0x2a, 0x087fcd5c, ""},
	{0x2a, 0xe2dbd2e1, "hello"},
	{0x2a, 0x7ec7c6c2, "hello, world"},
	{0x2a, 0x58f745f6, "19 Jan 2038 at 3:14:07 AM"},
	{0x2a, 0xc02d1434, "The quick brown fox jumps over the lazy dog."},
}

func TestMurmur3Vectors(t *testing.T) {
	for _, v := range murmurVectors {
		t.Run(fmt.Sprintf("%d/%q", v.seed, v.s), func(t *testing.T) {
			// Every way of cutting the input in two gives the hash of the whole.
			for cut := 0; cut <= len(v.s); cut++ {
				if got := murmur3(v.seed, v.s[:cut], v.s[cut:]); got != v.want {
					t.Errorf("cut at %d: %#08x, want %#08x", cut, got, v.want)
				}
				if got := murmur3(v.seed, v.s[:cut], []byte(v.s[cut:])); got != v.want {
					t.Errorf("cut at %d, bytes: %#08x, want %#08x", cut, got, v.want)
				}
			}
		})
	}
}

// TestMurmur3StreamsLikeConcatenation checks the carry across the two strings for every length
// of both up to three blocks each, against hashing the concatenation in one piece.
func TestMurmur3StreamsLikeConcatenation(t *testing.T) {
	const alphabet = "abcdefghijklmnopqrstuvwxyz0123456789"
	for la := 0; la <= 12; la++ {
		for lb := 0; lb <= 12; lb++ {
			a, b := alphabet[:la], alphabet[la:la+lb]
			if got, want := murmur3(7, a, b), murmur3(7, "", a+b); got != want {
				t.Errorf("%q+%q: %#08x, want %#08x", a, b, got, want)
			}
		}
	}
}

// flagd's fractional operator hashes the concatenation of its bucketing values with MurmurHash3
// x86_32 (seed 0) and maps the hash to a bucket in [0, total) as hash·total >> 32, then to the
// variant owning that bucket in the order the flag lists them
// (open-feature/flagd core/pkg/evaluator/fractional.go, distributeValue). The cases are the
// "@fractional-v2" expectations of flagd's conformance suite (open-feature/flagd-testbed,
// gherkin/targeting.feature, for the flags of flags/custom-ops.json).
func TestBucketMatchesFlagd(t *testing.T) {
	// Preimages found by the testbed's authors so that the hash hits the boundaries exactly:
	// "fractional-hash-edge-flag" buckets by {"var": "targetingKey"} alone, lower 50, upper 50.
	edges := []struct {
		key   string
		hash  uint32
		lower bool
	}{
		{"ejOoVL", 0, true},
		{"bY9fO-", 1, true},
		{"SI7p-", 2147483647, true},
		{"6LvT0", 2147483648, false},
		{"ceQdGm", 4294967295, false},
	}
	for _, e := range edges {
		h := murmur3(0, "", e.key)
		if h != e.hash {
			t.Errorf("murmur3(%q) = %d, want %d", e.key, h, e.hash)
		}
		sv := serve{total: 100, split: []splitRange{{end: 50, variant: &Variant{Name: "lower"}}, {end: 100, variant: &Variant{Name: "upper"}}}}
		if got := sv.pick(h).Name; (got == "lower") != e.lower {
			t.Errorf("%q: %s", e.key, got)
		}
	}

	// Four variants of weight 25 in the order clubs, diamonds, hearts, spades: clubs owns
	// buckets 0-24, diamonds 25-49, hearts 50-74, spades 75-99.
	suits := serve{total: 100, split: []splitRange{
		{end: 25, variant: &Variant{Name: "clubs"}}, {end: 50, variant: &Variant{Name: "diamonds"}},
		{end: 75, variant: &Variant{Name: "hearts"}}, {end: 100, variant: &Variant{Name: "spades"}},
	}}
	cases := []struct {
		prefix, value, want string
	}{
		// "fractional-flag": {"cat": [{"var": "$flagd.flagKey"}, {"var": "user.name"}]}.
		{"fractional-flag", "jack", "hearts"},
		{"fractional-flag", "queen", "spades"},
		{"fractional-flag", "ten", "clubs"},
		{"fractional-flag", "nine", "diamonds"},
		{"fractional-flag", "3", "clubs"},
		// "fractional-flag-A-shared-seed": {"cat": ["shared-seed", {"var": "user.name"}]}.
		{"shared-seed", "seven", "hearts"},
		{"shared-seed", "eight", "diamonds"},
		{"shared-seed", "nine", "clubs"},
		{"shared-seed", "two", "spades"},
	}
	for _, c := range cases {
		if got := suits.pick(murmur3(0, c.prefix, c.value)).Name; got != c.want {
			t.Errorf("%s+%s: %s, want %s", c.prefix, c.value, got, c.want)
		}
	}

	// "fractional-nested-*-flag" comments: {"var": "targetingKey"} gives bucket 36 of 100 for
	// jon@company.com and 76 for user1.
	for key, want := range map[string]uint64{"jon@company.com": 36, "user1": 76} {
		if got := (uint64(murmur3(0, "", key)) * 100) >> 32; got != want {
			t.Errorf("bucket of %s: %d, want %d", key, got, want)
		}
	}
}

func TestMurmur3Allocations(t *testing.T) {
	key, value := "checkout.new-flow", "user-123456"
	if n := testing.AllocsPerRun(100, func() { _ = murmur3(0, key, value) }); n != 0 {
		t.Errorf("%v allocations", n)
	}
}

func BenchmarkMurmur3(b *testing.B) {
	key, value := "team-07.flag-00042", "user-000123"
	var sink uint32
	for b.Loop() {
		sink += murmur3(0, key, value)
	}
	_ = sink
}
