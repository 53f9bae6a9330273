package targeting

import (
	"testing"
	"time"

	"github.com/interlock-dev/interlock/events"
)

func TestParseRFC3339(t *testing.T) {
	valid := []string{
		"2026-01-02T15:04:05Z",
		"2026-01-02T15:04:05.5Z",
		"2026-01-02T15:04:05.123456789Z",
		"2026-01-02T15:04:05.1234567891234Z", // digits past the nanosecond are dropped
		"2026-01-02T15:04:05+02:00",
		"2026-01-02T15:04:05.25-07:30",
		"2024-02-29T00:00:00Z",
		"1969-12-31T23:59:59Z",
		"0000-01-01T00:00:00Z",
		"9999-12-31T23:59:59+23:59",
		"1970-01-01T00:00:00Z",
	}
	for _, s := range valid {
		t.Run(s, func(t *testing.T) {
			want, err := time.Parse(time.RFC3339, s)
			if err != nil {
				t.Fatal(err)
			}
			got, ok := parseRFC3339(s)
			if !ok {
				t.Fatal("refused")
			}
			if got.sec != want.Unix() || int(got.nsec) != want.Nanosecond() {
				t.Errorf("%d.%09d, want %d.%09d", got.sec, got.nsec, want.Unix(), want.Nanosecond())
			}
		})
	}
	invalid := []string{
		"", "2026-01-02", "2026-01-02T15:04:05", "2026-01-02 15:04:05Z", "2026-13-02T15:04:05Z",
		"2025-02-29T00:00:00Z", "2026-01-32T00:00:00Z", "2026-01-02T24:00:00Z", "2026-01-02T15:60:05Z",
		"2026-01-02T15:04:60Z", "2026-01-02T15:04:05+24:00", "2026-01-02T15:04:05+02:60",
		"2026-01-02T15:04:05+0200", "2026-01-02T15:04:05.Z", "2026-01-02T15:04:05z", "x026-01-02T15:04:05Z",
		"2026-01-02T15:04:05ZZ", "2026-01-02T15:04:05 +02:00", "+026-01-02T15:04:05Z",
	}
	for _, s := range invalid {
		if _, ok := parseRFC3339(s); ok {
			t.Errorf("%q accepted", s)
		}
	}
}

// FuzzParseRFC3339 checks the allocation-free parser against the standard library: whatever it
// accepts, time.Parse accepts as the same instant. (time.Parse also accepts some looser forms,
// such as a comma before the fraction, that are not RFC 3339; those the engine refuses.)
func FuzzParseRFC3339(f *testing.F) {
	for _, s := range []string{"2026-01-02T15:04:05Z", "2026-01-02T15:04:05.999+14:00", "2000-02-29T23:59:59-00:30", "2026-01-02T15:04:05,5Z"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		got, ok := parseRFC3339(s)
		if !ok {
			return
		}
		want, err := time.Parse(time.RFC3339, s)
		if err != nil {
			t.Fatalf("%q accepted, but time.Parse says %v", s, err)
		}
		if got.sec != want.Unix() || int(got.nsec) != want.Nanosecond() {
			t.Fatalf("%q: %d.%09d, want %d.%09d", s, got.sec, got.nsec, want.Unix(), want.Nanosecond())
		}
	})
}

func TestSemverPrecedence(t *testing.T) {
	// semver.org §11: "1.0.0-alpha < 1.0.0-alpha.1 < 1.0.0-alpha.beta < 1.0.0-beta <
	// 1.0.0-beta.2 < 1.0.0-beta.11 < 1.0.0-rc.1 < 1.0.0", then the numeric parts.
	ordered := []string{
		"0.9.9", "1.0.0-alpha", "1.0.0-alpha.1", "1.0.0-alpha.beta", "1.0.0-beta", "1.0.0-beta.2",
		"1.0.0-beta.11", "1.0.0-rc.1", "1.0.0", "1.0.1", "1.2.0", "1.10.0", "2.0.0", "v10.0.0",
	}
	parsed := make([]semver, len(ordered))
	for i, s := range ordered {
		v, ok := parseSemver(s)
		if !ok {
			t.Fatalf("%q refused", s)
		}
		parsed[i] = v
	}
	for i := range parsed {
		for j := range parsed {
			want := 0
			if i < j {
				want = -1
			} else if i > j {
				want = 1
			}
			if got := parsed[i].compare(&parsed[j]); got != want {
				t.Errorf("compare(%s, %s) = %d, want %d", ordered[i], ordered[j], got, want)
			}
		}
	}
	equal := [][2]string{{"1.2.3", "v1.2.3"}, {"1.2.3+build.5", "1.2.3"}, {"1.2.3-rc.01", "1.2.3-rc.1"}, {"01.2.3", "1.2.3"}}
	for _, p := range equal {
		a, _ := parseSemver(p[0])
		b, _ := parseSemver(p[1])
		if a.compare(&b) != 0 {
			t.Errorf("%s != %s", p[0], p[1])
		}
	}
	for _, s := range []string{"", "1", "1.2", "1.2.3.4", "a.b.c", "1..3", "1.2.-3", "-1.2.3", "1.2.x", "99999999999999999999.0.0", "V1.2.3"} {
		if _, ok := parseSemver(s); ok {
			t.Errorf("%q accepted", s)
		}
	}
}

// FuzzSemver checks that the engine parses exactly the versions a condition's validation
// accepts, so that a valid flag always compiles.
func FuzzSemver(f *testing.F) {
	for _, s := range []string{"1.2.3", "v1.2.3-rc.1+b", "1.2", "1.2.3-", "1.2.3+", "+1.2.3", "1.2.3-a.b.c.01"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		c := events.Condition{Attribute: "version", Operator: "semverEq", Values: []any{s}}
		_, ok := parseSemver(s)
		if valid := c.Validate() == nil; valid != ok {
			t.Fatalf("%q: validation says %v, the engine %v", s, valid, ok)
		}
	})
}
