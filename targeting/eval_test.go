package targeting_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"testing"

	"github.com/interlock-dev/interlock/events"
	"github.com/interlock-dev/interlock/projections"
	"github.com/interlock-dev/interlock/targeting"
)

const env = "production"

// flagOf is a flag of env at version 1 with cfg.
func flagOf(key string, cfg events.FlagConfig) projections.Flag {
	return projections.Flag{Key: key, Environment: env, FlagConfig: cfg, Version: 1}
}

func segmentOf(key string, cfg events.SegmentConfig) projections.Segment {
	return projections.Segment{Key: key, Environment: env, SegmentConfig: cfg, Version: 1}
}

// compileSet compiles flags and segments, failing the test on an error or a document that does
// not compile.
func compileSet(t testing.TB, flags []projections.Flag, segs ...projections.Segment) *targeting.Flagset {
	t.Helper()
	set, err := targeting.CompileFlagset(env, 1, flags, segs)
	if err != nil {
		t.Fatal(err)
	}
	if errs := set.Errors(); len(errs) > 0 {
		t.Fatalf("documents do not compile: %v", errors.Join(errs...))
	}
	return set
}

// targeted is a bool flag serving "on" when cond holds, "off" otherwise.
func targeted(cond events.Condition) events.FlagConfig {
	cfg := boolConfig()
	cfg.DefaultVariant = "off"
	cfg.Rules = []events.Rule{{Name: "r", Conditions: []events.Condition{cond}, Serve: events.Serve{Variant: "on"}}}
	return cfg
}

func ctxOf(attrs map[string]any) *targeting.EvalContext {
	return &targeting.EvalContext{TargetingKey: "user-1", Attributes: attrs}
}

func cond(attr, op string, values ...any) events.Condition {
	return events.Condition{Attribute: attr, Operator: op, Values: values}
}

// TestOperators: one flag per case, serving "on" when the condition matches. Every condition here
// passes validation, so the flag is one a person could have written.
func TestOperators(t *testing.T) {
	segments := []projections.Segment{
		segmentOf("beta", events.SegmentConfig{Included: []string{"user-1", "vip"}, Excluded: []string{"banned"},
			Conditions: []events.Condition{cond("plan", "eq", "pro")}}),
		segmentOf("keys-only", events.SegmentConfig{Included: []string{"user-1"}}),
		segmentOf("archived", events.SegmentConfig{Included: []string{"user-1"}}),
	}
	segments[2].Archived = true

	type tc struct {
		name  string
		cond  events.Condition
		ctx   *targeting.EvalContext
		match bool
	}
	a := func(attrs map[string]any) *targeting.EvalContext { return ctxOf(attrs) }
	cases := []tc{
		// eq / neq / in / notIn
		{"eq string", cond("role", "eq", "beta"), a(map[string]any{"role": "beta"}), true},
		{"eq string differs", cond("role", "eq", "beta"), a(map[string]any{"role": "Beta"}), false},
		{"eq int attribute", cond("age", "eq", 5.0), a(map[string]any{"age": 5}), true},
		{"eq int64 attribute", cond("age", "eq", 5.0), a(map[string]any{"age": int64(5)}), true},
		{"eq float attribute", cond("age", "eq", 5.5), a(map[string]any{"age": 5.5}), true},
		{"eq json.Number attribute", cond("age", "eq", 5.0), a(map[string]any{"age": json.Number("5")}), true},
		{"eq no conversion string to number", cond("age", "eq", 5.0), a(map[string]any{"age": "5"}), false},
		{"eq no conversion number to string", cond("age", "eq", "5"), a(map[string]any{"age": 5}), false},
		{"eq bool", cond("beta", "eq", true), a(map[string]any{"beta": true}), true},
		{"eq bool differs", cond("beta", "eq", true), a(map[string]any{"beta": false}), false},
		{"eq bool vs string", cond("beta", "eq", "true"), a(map[string]any{"beta": true}), false},
		{"eq list any element", cond("groups", "eq", "beta"), a(map[string]any{"groups": []any{"alpha", "beta"}}), true},
		{"eq []string element", cond("groups", "eq", "beta"), a(map[string]any{"groups": []string{"beta"}}), true},
		{"eq missing", cond("role", "eq", "beta"), a(nil), false},
		{"eq null", cond("role", "eq", "beta"), a(map[string]any{"role": nil}), false},
		{"eq object attribute", cond("role", "eq", "beta"), a(map[string]any{"role": map[string]any{"x": 1}}), false},
		{"neq differs", cond("country", "neq", "NL"), a(map[string]any{"country": "DE"}), true},
		{"neq equal", cond("country", "neq", "NL"), a(map[string]any{"country": "NL"}), false},
		{"neq missing does not match", cond("country", "neq", "NL"), a(nil), false},
		{"neq null does not match", cond("country", "neq", "NL"), a(map[string]any{"country": nil}), false},
		{"neq other type matches", cond("country", "neq", "NL"), a(map[string]any{"country": 31}), true},
		{"neq object does not match", cond("country", "neq", "NL"), a(map[string]any{"country": map[string]any{}}), false},
		{"neq list holding it", cond("groups", "neq", "beta"), a(map[string]any{"groups": []any{"beta"}}), false},
		{"neq list without it", cond("groups", "neq", "beta"), a(map[string]any{"groups": []any{"alpha"}}), true},
		{"in", cond("country", "in", "NL", "BE", "LU"), a(map[string]any{"country": "BE"}), true},
		{"in none", cond("country", "in", "NL", "BE", "LU"), a(map[string]any{"country": "DE"}), false},
		{"in many values", cond("country", "in", "AT", "BE", "BG", "CY", "CZ", "DE", "DK", "EE", "ES", "FI", "NL"), a(map[string]any{"country": "NL"}), true},
		{"in many values none", cond("country", "in", "AT", "BE", "BG", "CY", "CZ", "DE", "DK", "EE", "ES", "FI", "NL"), a(map[string]any{"country": "US"}), false},
		{"in mixed types", cond("tier", "in", "gold", 3.0, true), a(map[string]any{"tier": 3}), true},
		{"notIn", cond("country", "notIn", "NL", "BE"), a(map[string]any{"country": "DE"}), true},
		{"notIn in it", cond("country", "notIn", "NL", "BE"), a(map[string]any{"country": "NL"}), false},
		{"notIn missing does not match", cond("country", "notIn", "NL", "BE"), a(nil), false},

		// contains / startsWith / endsWith / matches
		{"contains substring", cond("email", "contains", "@acme."), a(map[string]any{"email": "bo@acme.com"}), true},
		{"contains no substring", cond("email", "contains", "@acme."), a(map[string]any{"email": "bo@other.com"}), false},
		{"contains list holds value", cond("groups", "contains", "beta"), a(map[string]any{"groups": []any{"alpha", "beta"}}), true},
		{"contains []string holds value", cond("groups", "contains", "beta"), a(map[string]any{"groups": []string{"beta"}}), true},
		{"contains list only a substring", cond("groups", "contains", "beta"), a(map[string]any{"groups": []any{"beta-testers"}}), false},
		{"contains list of numbers", cond("ids", "contains", 3.0), a(map[string]any{"ids": []any{1, 2, 3}}), true},
		{"contains number attribute", cond("n", "contains", "1"), a(map[string]any{"n": 1}), false},
		{"contains missing", cond("email", "contains", "@"), a(nil), false},
		{"startsWith", cond("path", "startsWith", "/api/", "/v2/"), a(map[string]any{"path": "/v2/x"}), true},
		{"startsWith no", cond("path", "startsWith", "/api/"), a(map[string]any{"path": "/web"}), false},
		{"startsWith number attribute", cond("path", "startsWith", "1"), a(map[string]any{"path": 12}), false},
		{"startsWith number value never matches", cond("path", "startsWith", 1.0), a(map[string]any{"path": "1x"}), false},
		{"endsWith", cond("email", "endsWith", "@acme.com"), a(map[string]any{"email": "bo@acme.com"}), true},
		{"endsWith no", cond("email", "endsWith", "@acme.com"), a(map[string]any{"email": "bo@acme.co"}), false},
		{"endsWith list element", cond("emails", "endsWith", "@acme.com"), a(map[string]any{"emails": []any{"x@y", "bo@acme.com"}}), true},
		{"matches", cond("ua", "matches", `^Mozilla/5\.0 .*Firefox/\d+`), a(map[string]any{"ua": "Mozilla/5.0 (X11) Firefox/128"}), true},
		{"matches no", cond("ua", "matches", `^curl/`), a(map[string]any{"ua": "Mozilla/5.0"}), false},
		{"matches second value", cond("ua", "matches", `^curl/`, `^wget/`), a(map[string]any{"ua": "wget/1.2"}), true},
		{"matches bool attribute", cond("ua", "matches", `true`), a(map[string]any{"ua": true}), false},

		// numbers
		{"lt", cond("age", "lt", 18.0), a(map[string]any{"age": 17}), true},
		{"lt equal", cond("age", "lt", 18.0), a(map[string]any{"age": 18}), false},
		{"lte equal", cond("age", "lte", 18.0), a(map[string]any{"age": 18.0}), true},
		{"gt", cond("age", "gt", 18.0), a(map[string]any{"age": int64(19)}), true},
		{"gt equal", cond("age", "gt", 18.0), a(map[string]any{"age": 18}), false},
		{"gte equal", cond("age", "gte", 18.0), a(map[string]any{"age": float32(18)}), true},
		{"gte uint", cond("age", "gte", 18.0), a(map[string]any{"age": uint(30)}), true},
		{"gt negative", cond("balance", "gt", -10.5), a(map[string]any{"balance": -10}), true},
		{"lt string attribute", cond("age", "lt", 18.0), a(map[string]any{"age": "17"}), false},
		{"lt bool attribute", cond("age", "lt", 18.0), a(map[string]any{"age": false}), false},
		{"lt missing", cond("age", "lt", 18.0), a(nil), false},
		{"lt list element", cond("scores", "lt", 10.0), a(map[string]any{"scores": []any{50, 5}}), true},

		// versions
		{"semverEq", cond("version", "semverEq", "1.2.3"), a(map[string]any{"version": "1.2.3"}), true},
		{"semverEq v prefix", cond("version", "semverEq", "v1.2.3"), a(map[string]any{"version": "1.2.3"}), true},
		{"semverEq build ignored", cond("version", "semverEq", "1.2.3"), a(map[string]any{"version": "1.2.3+build.7"}), true},
		{"semverEq pre-release differs", cond("version", "semverEq", "1.2.3"), a(map[string]any{"version": "1.2.3-rc.1"}), false},
		{"semverLt pre-release", cond("version", "semverLt", "1.2.3"), a(map[string]any{"version": "1.2.3-rc.1"}), true},
		{"semverLt numeric not lexical", cond("version", "semverLt", "1.10.0"), a(map[string]any{"version": "1.9.0"}), true},
		{"semverGt", cond("version", "semverGt", "2.0.0"), a(map[string]any{"version": "2.0.1"}), true},
		{"semverGt equal", cond("version", "semverGt", "2.0.0"), a(map[string]any{"version": "2.0.0"}), false},
		{"semverGt pre-release numbers", cond("version", "semverGt", "1.0.0-beta.2"), a(map[string]any{"version": "1.0.0-beta.11"}), true},
		{"semver not a version", cond("version", "semverEq", "1.2.3"), a(map[string]any{"version": "1.2"}), false},
		{"semver number attribute", cond("version", "semverGt", "1.0.0"), a(map[string]any{"version": 2}), false},

		// times
		{"before", cond("signup", "before", "2026-01-01T00:00:00Z"), a(map[string]any{"signup": "2025-12-31T23:59:59Z"}), true},
		{"before equal", cond("signup", "before", "2026-01-01T00:00:00Z"), a(map[string]any{"signup": "2026-01-01T00:00:00Z"}), false},
		{"before offset", cond("signup", "before", "2026-01-01T00:00:00Z"), a(map[string]any{"signup": "2026-01-01T00:30:00+01:00"}), true},
		{"after fraction", cond("signup", "after", "2026-01-01T00:00:00Z"), a(map[string]any{"signup": "2026-01-01T00:00:00.000000001Z"}), true},
		{"after unix seconds", cond("signup", "after", "2026-01-01T00:00:00Z"), a(map[string]any{"signup": 1767225601}), true},
		{"before unix seconds float", cond("signup", "before", "2026-01-01T00:00:00Z"), a(map[string]any{"signup": 1767225599.5}), true},
		{"after unix seconds equal", cond("signup", "after", "2026-01-01T00:00:00Z"), a(map[string]any{"signup": int64(1767225600)}), false},
		{"after not a time", cond("signup", "after", "2026-01-01T00:00:00Z"), a(map[string]any{"signup": "yesterday"}), false},
		{"after bool", cond("signup", "after", "2026-01-01T00:00:00Z"), a(map[string]any{"signup": true}), false},

		// segments
		{"inSegment included", cond("targetingKey", "inSegment", "beta"), a(nil), true},
		{"inSegment excluded beats conditions", cond("targetingKey", "inSegment", "beta"), &targeting.EvalContext{TargetingKey: "banned", Attributes: map[string]any{"plan": "pro"}}, false},
		{"inSegment by conditions", cond("targetingKey", "inSegment", "beta"), &targeting.EvalContext{TargetingKey: "u9", Attributes: map[string]any{"plan": "pro"}}, true},
		{"inSegment conditions fail", cond("targetingKey", "inSegment", "beta"), &targeting.EvalContext{TargetingKey: "u9", Attributes: map[string]any{"plan": "free"}}, false},
		{"inSegment keys only", cond("targetingKey", "inSegment", "keys-only"), a(nil), true},
		{"inSegment keys only, other key", cond("targetingKey", "inSegment", "keys-only"), &targeting.EvalContext{TargetingKey: "u9", Attributes: map[string]any{"plan": "pro"}}, false},
		{"inSegment second segment", cond("targetingKey", "inSegment", "keys-only", "beta"), &targeting.EvalContext{TargetingKey: "vip"}, true},
		{"inSegment by another attribute", cond("account", "inSegment", "beta"), &targeting.EvalContext{TargetingKey: "u9", Attributes: map[string]any{"account": "vip"}}, true},
		{"inSegment attribute missing", cond("account", "inSegment", "beta"), a(map[string]any{"plan": "pro"}), false},
		{"inSegment list attribute", cond("account", "inSegment", "beta"), a(map[string]any{"account": []any{"vip"}}), false},
		{"inSegment archived", cond("targetingKey", "inSegment", "archived"), a(nil), false},
		{"inSegment missing segment", cond("targetingKey", "inSegment", "nope"), a(nil), false},
		{"notInSegment", cond("targetingKey", "notInSegment", "keys-only"), &targeting.EvalContext{TargetingKey: "u9"}, true},
		{"notInSegment member", cond("targetingKey", "notInSegment", "keys-only"), a(nil), false},
		{"notInSegment no key does not match", cond("targetingKey", "notInSegment", "keys-only"), &targeting.EvalContext{}, false},
		{"notInSegment missing segment", cond("targetingKey", "notInSegment", "nope"), &targeting.EvalContext{TargetingKey: "u9"}, false},
		{"notInSegment archived segment", cond("targetingKey", "notInSegment", "archived"), &targeting.EvalContext{TargetingKey: "u9"}, false},

		// exists and the targeting key
		{"exists", cond("plan", "exists"), a(map[string]any{"plan": "free"}), true},
		{"exists any type", cond("plan", "exists"), a(map[string]any{"plan": map[string]any{}}), true},
		{"exists null", cond("plan", "exists"), a(map[string]any{"plan": nil}), false},
		{"exists missing", cond("plan", "exists"), a(nil), false},
		{"exists targeting key", cond("targetingKey", "exists"), a(nil), true},
		{"exists no targeting key", cond("targetingKey", "exists"), &targeting.EvalContext{}, false},
		{"targetingKey field", cond("targetingKey", "eq", "user-1"), a(nil), true},
		{"targetingKey attribute when the field is empty", cond("targetingKey", "eq", "user-2"), &targeting.EvalContext{Attributes: map[string]any{"targetingKey": "user-2"}}, true},
		{"targetingKey field wins", cond("targetingKey", "eq", "user-2"), &targeting.EvalContext{TargetingKey: "user-1", Attributes: map[string]any{"targetingKey": "user-2"}}, false},
		{"nil context", cond("role", "eq", "beta"), nil, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			cfg := targeted(c.cond)
			if err := cfg.Validate(); err != nil {
				t.Fatalf("the case's flag is not valid: %v", err)
			}
			set, err := targeting.CompileFlagset(env, 1, []projections.Flag{flagOf("f", cfg)}, segments)
			if err != nil {
				t.Fatal(err)
			}
			if errs := set.Errors(); len(errs) > 0 {
				t.Fatalf("does not compile: %v", errs)
			}
			got := set.Evaluate("f", c.ctx)
			want, reason := "off", targeting.ReasonDefault
			if c.match {
				want, reason = "on", targeting.ReasonTargetingMatch
			}
			if got.Variant == nil || got.Variant.Name != want || got.Reason != reason || got.ErrorCode != "" {
				t.Errorf("got %+v, want variant %s for %s", got, want, reason)
			}
		})
	}
}

func stringConfig(values map[string]string, dflt string) events.FlagConfig {
	cfg := events.FlagConfig{Kind: events.KindConfig, Variants: map[string]json.RawMessage{}, DefaultVariant: dflt, OffVariant: dflt, Enabled: true}
	for k, v := range values {
		raw, _ := json.Marshal(v)
		cfg.Variants[k] = raw
	}
	return cfg
}

func TestReasonsAndErrors(t *testing.T) {
	withRules := targeted(cond("role", "eq", "beta"))
	splitRule := targeted(cond("role", "eq", "beta"))
	splitRule.Rules[0].Serve = events.Serve{Split: map[string]int{"on": 50, "off": 50}}
	splitDefault := boolConfig()
	splitDefault.DefaultServe = &events.Serve{Split: map[string]int{"on": 25, "off": 75}}
	serveDefault := boolConfig()
	serveDefault.DefaultServe = &events.Serve{Variant: "off"}
	byAccount := boolConfig()
	byAccount.DefaultServe = &events.Serve{Split: map[string]int{"on": 25, "off": 75}, BucketBy: "account"}
	disabled := withRules
	disabled.Enabled = false
	disabledSplit := splitDefault
	disabledSplit.Enabled = false

	flags := []projections.Flag{
		flagOf("static", boolConfig()),
		flagOf("serve-default", serveDefault),
		flagOf("rules", withRules),
		flagOf("split-rule", splitRule),
		flagOf("split-default", splitDefault),
		flagOf("by-account", byAccount),
		flagOf("disabled", disabled),
		flagOf("disabled-split", disabledSplit),
		flagOf("archived", boolConfig()),
	}
	flags[len(flags)-1].Archived = true
	flags[2].Version = 7
	set := compileSet(t, flags)

	beta := &targeting.EvalContext{TargetingKey: "u1", Attributes: map[string]any{"role": "beta", "account": "acme"}}
	noKey := &targeting.EvalContext{Attributes: map[string]any{"role": "beta"}}
	cases := []struct {
		name    string
		key     string
		ctx     *targeting.EvalContext
		variant string
		reason  targeting.Reason
		code    targeting.ErrorCode
	}{
		{"static", "static", beta, "on", targeting.ReasonStatic, ""},
		{"static without context", "static", nil, "on", targeting.ReasonStatic, ""},
		{"default serve variant, no rules", "serve-default", beta, "off", targeting.ReasonStatic, ""},
		{"rule matched", "rules", beta, "on", targeting.ReasonTargetingMatch, ""},
		{"no rule matched", "rules", &targeting.EvalContext{TargetingKey: "u1"}, "off", targeting.ReasonDefault, ""},
		{"no rule matched, nil context", "rules", nil, "off", targeting.ReasonDefault, ""},
		{"rule split", "split-rule", beta, "", targeting.ReasonSplit, ""},
		{"rule not matched before the split", "split-rule", &targeting.EvalContext{}, "off", targeting.ReasonDefault, ""},
		{"rule split without targeting key", "split-rule", noKey, "", targeting.ReasonError, targeting.ErrorTargetingKeyMissing},
		{"default split", "split-default", beta, "", targeting.ReasonSplit, ""},
		{"default split, key as attribute", "split-default", &targeting.EvalContext{Attributes: map[string]any{"targetingKey": "u1"}}, "", targeting.ReasonSplit, ""},
		{"default split without targeting key", "split-default", noKey, "", targeting.ReasonError, targeting.ErrorTargetingKeyMissing},
		{"default split, nil context", "split-default", nil, "", targeting.ReasonError, targeting.ErrorTargetingKeyMissing},
		{"split by attribute", "by-account", beta, "", targeting.ReasonSplit, ""},
		{"split by number attribute", "by-account", &targeting.EvalContext{Attributes: map[string]any{"account": 12345}}, "", targeting.ReasonSplit, ""},
		{"split by missing attribute", "by-account", &targeting.EvalContext{TargetingKey: "u1"}, "", targeting.ReasonError, targeting.ErrorInvalidContext},
		{"split by empty attribute", "by-account", &targeting.EvalContext{TargetingKey: "u1", Attributes: map[string]any{"account": ""}}, "", targeting.ReasonError, targeting.ErrorInvalidContext},
		{"split by bool attribute", "by-account", &targeting.EvalContext{TargetingKey: "u1", Attributes: map[string]any{"account": true}}, "", targeting.ReasonError, targeting.ErrorInvalidContext},
		{"disabled", "disabled", beta, "off", targeting.ReasonDisabled, ""},
		{"disabled split needs no key", "disabled-split", nil, "off", targeting.ReasonDisabled, ""},
		{"archived", "archived", beta, "", targeting.ReasonError, targeting.ErrorFlagNotFound},
		{"unknown", "nope", beta, "", targeting.ReasonError, targeting.ErrorFlagNotFound},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got := set.Evaluate(c.key, c.ctx)
			if got.Reason != c.reason || got.ErrorCode != c.code || got.FlagKey != c.key {
				t.Fatalf("got %+v, want reason %s code %q", got, c.reason, c.code)
			}
			if c.code != "" {
				if got.Variant != nil || got.ErrorMessage == "" {
					t.Errorf("an error serves nothing and says why: %+v", got)
				}
			} else if got.Variant == nil || got.ErrorMessage != "" {
				t.Fatalf("no variant: %+v", got)
			}
			if c.variant != "" && got.Variant.Name != c.variant {
				t.Errorf("variant %s, want %s", got.Variant.Name, c.variant)
			}
			if c.code == targeting.ErrorFlagNotFound {
				if got.Version != 0 || got.Kind != targeting.KindUnknown {
					t.Errorf("a flag that is not found has no version or kind: %+v", got)
				}
			} else if got.Kind != targeting.KindBool || got.Version == 0 {
				t.Errorf("kind %s version %d", got.Kind, got.Version)
			}
		})
	}
	if got := set.Evaluate("rules", beta).Version; got != 7 {
		t.Errorf("version %d, want the flag's 7", got)
	}
}

func TestVariantKinds(t *testing.T) {
	num := events.FlagConfig{Kind: events.KindConfig, Variants: map[string]json.RawMessage{"short": json.RawMessage("30"), "long": json.RawMessage("3600.5")}, DefaultVariant: "long", OffVariant: "short", Enabled: true}
	obj := events.FlagConfig{Kind: events.KindConfig, Variants: map[string]json.RawMessage{"a": json.RawMessage(`{"ttl": 30, "tags": ["x"]}`), "b": json.RawMessage(`{}`)}, DefaultVariant: "a", OffVariant: "b", Enabled: true}
	set := compileSet(t, []projections.Flag{
		flagOf("str", stringConfig(map[string]string{"blue": "#0000ff", "red": "#ff0000"}, "red")),
		flagOf("num", num),
		flagOf("obj", obj),
		flagOf("bool", boolConfig()),
	})
	if v := set.Evaluate("str", nil); v.Kind != targeting.KindString || v.Variant.String != "#ff0000" || string(v.Variant.Raw) != `"#ff0000"` {
		t.Errorf("string: %+v %+v", v, v.Variant)
	}
	if v := set.Evaluate("num", nil); v.Kind != targeting.KindNumber || v.Variant.Number != 3600.5 || v.Variant.Name != "long" {
		t.Errorf("number: %+v %+v", v, v.Variant)
	}
	if v := set.Evaluate("obj", nil); v.Kind != targeting.KindObject || v.Variant.Object["ttl"] != 30.0 || string(v.Variant.Raw) != `{"ttl": 30, "tags": ["x"]}` {
		t.Errorf("object: %+v %+v", v, v.Variant)
	}
	if v := set.Evaluate("bool", nil); v.Kind != targeting.KindBool || !v.Variant.Bool {
		t.Errorf("bool: %+v %+v", v, v.Variant)
	}
	for k, want := range map[targeting.ValueKind]string{targeting.KindBool: "boolean", targeting.KindString: "string", targeting.KindNumber: "number", targeting.KindObject: "object", targeting.KindUnknown: "unknown"} {
		if k.String() != want {
			t.Errorf("%d: %s", k, k)
		}
	}
}

func TestRuleOrder(t *testing.T) {
	cfg := stringConfig(map[string]string{"first": "1", "second": "2", "none": "0"}, "none")
	cfg.Rules = []events.Rule{
		{Name: "beta in NL", Conditions: []events.Condition{cond("role", "eq", "beta"), cond("country", "eq", "NL")}, Serve: events.Serve{Variant: "first"}},
		{Name: "beta", Conditions: []events.Condition{cond("role", "eq", "beta")}, Serve: events.Serve{Variant: "second"}},
		{Name: "NL", Conditions: []events.Condition{cond("country", "eq", "NL")}, Serve: events.Serve{Variant: "first"}},
	}
	set := compileSet(t, []projections.Flag{flagOf("f", cfg)})
	cases := []struct {
		attrs map[string]any
		want  string
	}{
		{map[string]any{"role": "beta", "country": "NL"}, "first"}, // rules 1, 2 and 3 match: the first serves
		{map[string]any{"role": "beta", "country": "DE"}, "second"},
		{map[string]any{"role": "user", "country": "NL"}, "first"},
		{map[string]any{"role": "user"}, "none"},
	}
	for _, c := range cases {
		if got := set.Evaluate("f", ctxOf(c.attrs)); got.Variant.Name != c.want {
			t.Errorf("%v: %s, want %s", c.attrs, got.Variant.Name, c.want)
		}
	}
	// A rule with no conditions matches everybody.
	cfg.Rules = append([]events.Rule{{Name: "all", Serve: events.Serve{Variant: "second"}}}, cfg.Rules...)
	set = compileSet(t, []projections.Flag{flagOf("f", cfg)})
	if got := set.Evaluate("f", nil); got.Variant.Name != "second" || got.Reason != targeting.ReasonTargetingMatch {
		t.Errorf("rule without conditions: %+v", got)
	}
}

// splitFlag is a bool flag whose default splits weights between "on" and "off".
func splitFlag(on, off int) events.FlagConfig {
	cfg := boolConfig()
	cfg.DefaultServe = &events.Serve{Split: map[string]int{"on": on, "off": off}}
	return cfg
}

func users(n int) []*targeting.EvalContext {
	out := make([]*targeting.EvalContext, n)
	for i := range out {
		out[i] = &targeting.EvalContext{TargetingKey: fmt.Sprintf("user-%d", i)}
	}
	return out
}

func TestSplitDistribution(t *testing.T) {
	const n = 100_000
	cfg := boolConfig()
	cfg.DefaultServe = &events.Serve{Split: map[string]int{"on": 25, "off": 75}}
	three := stringConfig(map[string]string{"a": "a", "b": "b", "c": "c"}, "a")
	three.DefaultServe = &events.Serve{Split: map[string]int{"a": 10, "b": 30, "c": 60}}
	set := compileSet(t, []projections.Flag{flagOf("checkout.ramp", cfg), flagOf("experiment", three)})
	for _, c := range []struct {
		key  string
		want map[string]float64
	}{
		{"checkout.ramp", map[string]float64{"on": 0.25, "off": 0.75}},
		{"experiment", map[string]float64{"a": 0.10, "b": 0.30, "c": 0.60}},
	} {
		counts := map[string]int{}
		for _, ctx := range users(n) {
			e := set.Evaluate(c.key, ctx)
			if e.Reason != targeting.ReasonSplit {
				t.Fatalf("%+v", e)
			}
			counts[e.Variant.Name]++
		}
		// The standard deviation of a share p over n keys is sqrt(p(1-p)/n) ≤ 0.0016: allow 5σ.
		for v, p := range c.want {
			if got := float64(counts[v]) / n; got < p-0.008 || got > p+0.008 {
				t.Errorf("%s: %s gets %.4f, want %.2f", c.key, v, got, p)
			}
		}
	}
}

func TestSplitIsStickyAndIndependent(t *testing.T) {
	const n = 20_000
	a := compileSet(t, []projections.Flag{flagOf("flag-a", splitFlag(25, 75)), flagOf("flag-b", splitFlag(25, 75))})
	// The same flag compiled again, among other flags, with another sequence: same buckets.
	b := compileSet(t, []projections.Flag{flagOf("other", boolConfig()), flagOf("flag-a", splitFlag(25, 75))})
	both := 0
	for _, ctx := range users(n) {
		first, again := a.Evaluate("flag-a", ctx), b.Evaluate("flag-a", ctx)
		if first.Variant.Name != again.Variant.Name || first.Variant.Name != a.Evaluate("flag-a", ctx).Variant.Name {
			t.Fatalf("%s moved", ctx.TargetingKey)
		}
		if first.Variant.Bool && a.Evaluate("flag-b", ctx).Variant.Bool {
			both++
		}
	}
	// The flag key is part of the hash: two 25% flags overlap on about 1/16 of the users, not 1/4.
	if got := float64(both) / n; got < 0.05 || got > 0.075 {
		t.Errorf("%.4f of users are on in both flags, want about 0.0625", got)
	}
}

// TestSplitGrowthKeepsUsers: growing a rollout keeps everyone who was in it, whichever end of
// the name order the treatment is at; shrinking it keeps a subset.
func TestSplitGrowthKeepsUsers(t *testing.T) {
	const n = 100_000
	ctxs := users(n)
	for _, names := range [][2]string{{"on", "off"}, {"a-treatment", "control"}} {
		treatment, control := names[0], names[1]
		steps := []int{1, 5, 25, 50, 100}
		var prev []bool
		for _, pct := range steps {
			cfg := stringConfig(map[string]string{treatment: "t", control: "c"}, control)
			cfg.DefaultServe = &events.Serve{Split: map[string]int{treatment: pct, control: 100 - pct}}
			set := compileSet(t, []projections.Flag{flagOf("ramp", cfg)})
			in := make([]bool, n)
			count := 0
			for i, ctx := range ctxs {
				in[i] = set.Evaluate("ramp", ctx).Variant.Name == treatment
				if in[i] {
					count++
				}
				if prev != nil && prev[i] && !in[i] {
					t.Fatalf("%s: %s left %q when it grew to %d%%", treatment, ctx.TargetingKey, treatment, pct)
				}
			}
			if got := float64(count) / n; got < float64(pct)/100-0.01 || got > float64(pct)/100+0.01 {
				t.Errorf("%s at %d%%: %.4f", treatment, pct, got)
			}
			prev = in
		}
	}
	// Finer weights: 5 in 1000 to 25 in 1000 (the total changes nothing: the ranges are
	// proportional).
	small := compileSet(t, []projections.Flag{flagOf("ramp", splitFlag(5, 995))})
	large := compileSet(t, []projections.Flag{flagOf("ramp", splitFlag(25, 75))})
	for _, ctx := range ctxs {
		if small.Evaluate("ramp", ctx).Variant.Bool && !large.Evaluate("ramp", ctx).Variant.Bool {
			t.Fatalf("%s left", ctx.TargetingKey)
		}
	}
}

// TestSplitMatchesFlagd evaluates flags of flagd's conformance suite (open-feature/flagd-testbed,
// flags/custom-ops.json) written as Interlock flags, and expects flagd's "@fractional-v2"
// answers (gherkin/targeting.feature). Their variants are listed in name order in flagd, which
// is the order Interlock uses, so the answers are the same.
func TestSplitMatchesFlagd(t *testing.T) {
	suits := stringConfig(map[string]string{"clubs": "clubs", "diamonds": "diamonds", "hearts": "hearts", "spades": "spades", "wild": "wild"}, "wild")
	// {"cat": [{"var": "$flagd.flagKey"}, {"var": "user.name"}]}: Interlock prepends the flag key
	// to the attribute by itself.
	suits.DefaultServe = &events.Serve{Split: map[string]int{"clubs": 25, "diamonds": 25, "hearts": 25, "spades": 25}, BucketBy: "user.name"}
	coin := stringConfig(map[string]string{"heads": "heads", "tails": "tails", "draw": "draw"}, "draw")
	coin.DefaultServe = &events.Serve{Split: map[string]int{"heads": 1, "tails": 1}}
	set := compileSet(t, []projections.Flag{flagOf("fractional-flag", suits), flagOf("fractional-flag-shorthand", coin)})
	for name, want := range map[string]string{"jack": "hearts", "queen": "spades", "ten": "clubs", "nine": "diamonds", "3": "clubs"} {
		if got := set.Evaluate("fractional-flag", &targeting.EvalContext{Attributes: map[string]any{"user.name": name}}); got.Variant.Name != want {
			t.Errorf("fractional-flag for %s: %s, want %s", name, got.Variant.Name, want)
		}
	}
	// A number bucketing value hashes as its decimal text, as JSON Logic's cat would make it.
	if got := set.Evaluate("fractional-flag", &targeting.EvalContext{Attributes: map[string]any{"user.name": 3}}); got.Variant.Name != "clubs" {
		t.Errorf("fractional-flag for the number 3: %s, want clubs", got.Variant.Name)
	}
	for key, want := range map[string]string{"jon@company.com": "heads", "jane@company.com": "tails"} {
		if got := set.Evaluate("fractional-flag-shorthand", &targeting.EvalContext{TargetingKey: key}); got.Variant.Name != want {
			t.Errorf("fractional-flag-shorthand for %s: %s, want %s", key, got.Variant.Name, want)
		}
	}
}

func TestSegments(t *testing.T) {
	beta := segmentOf("beta", events.SegmentConfig{Included: []string{"alice"}, Excluded: []string{"mallory"},
		Conditions: []events.Condition{cond("plan", "eq", "pro"), cond("country", "in", "NL", "BE")}})
	flag := targeted(cond("targetingKey", "inSegment", "beta"))
	set := compileSet(t, []projections.Flag{flagOf("f", flag)}, beta)
	cases := []struct {
		name string
		ctx  *targeting.EvalContext
		in   bool
	}{
		{"included regardless of conditions", &targeting.EvalContext{TargetingKey: "alice"}, true},
		{"excluded regardless of conditions", &targeting.EvalContext{TargetingKey: "mallory", Attributes: map[string]any{"plan": "pro", "country": "NL"}}, false},
		{"all conditions match", &targeting.EvalContext{TargetingKey: "bob", Attributes: map[string]any{"plan": "pro", "country": "BE"}}, true},
		{"one condition fails", &targeting.EvalContext{TargetingKey: "bob", Attributes: map[string]any{"plan": "pro", "country": "DE"}}, false},
		{"no targeting key", &targeting.EvalContext{Attributes: map[string]any{"plan": "pro", "country": "NL"}}, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if got := set.Evaluate("f", c.ctx).Variant.Name == "on"; got != c.in {
				t.Errorf("in segment: %v, want %v", got, c.in)
			}
		})
	}
	if got := set.MissingSegments(flagOf("f", flag)); len(got) != 0 {
		t.Errorf("missing %v", got)
	}
}

func TestMissingSegments(t *testing.T) {
	archived := segmentOf("old", events.SegmentConfig{Included: []string{"a"}})
	archived.Archived = true
	broken := segmentOf("broken", events.SegmentConfig{Conditions: []events.Condition{cond("x", "matches", "(")}})
	set, err := targeting.CompileFlagset(env, 1, nil, []projections.Segment{segmentOf("beta", events.SegmentConfig{Included: []string{"a"}}), archived, broken})
	if err != nil {
		t.Fatal(err)
	}
	cfg := boolConfig()
	cfg.Rules = []events.Rule{
		{Conditions: []events.Condition{cond("targetingKey", "inSegment", "beta", "nope")}, Serve: events.Serve{Variant: "on"}},
		{Conditions: []events.Condition{cond("targetingKey", "notInSegment", "old", "nope"), cond("x", "eq", "inSegment")}, Serve: events.Serve{Variant: "on"}},
		{Conditions: []events.Condition{cond("targetingKey", "inSegment", "broken")}, Serve: events.Serve{Variant: "on"}},
	}
	if got, want := set.MissingSegments(flagOf("f", cfg)), []string{"broken", "nope", "old"}; !slices.Equal(got, want) {
		t.Errorf("missing %v, want %v", got, want)
	}
	if got := set.MissingSegments(flagOf("f", boolConfig())); got != nil {
		t.Errorf("missing %v for a flag without segments", got)
	}
	errs := set.Errors()
	if len(errs) != 1 || !errors.Is(errs[0], targeting.ErrCompile) {
		t.Errorf("errors %v, want the broken segment's", errs)
	}
}

// TestCompileErrors: documents that bypassed validation compile into flags that say so when
// evaluated, and still serve their off variant while disabled when they have a valid one.
func TestCompileErrors(t *testing.T) {
	rule := func(c events.Condition) events.FlagConfig { return targeted(c) }
	withServe := func(s events.Serve) events.FlagConfig {
		cfg := boolConfig()
		cfg.Rules = []events.Rule{{Serve: s}}
		return cfg
	}
	withDefault := func(s events.Serve) events.FlagConfig {
		cfg := boolConfig()
		cfg.DefaultServe = &s
		return cfg
	}
	cases := []struct {
		name      string
		cfg       events.FlagConfig
		offServes bool // a disabled flag still serves its off variant
	}{
		{"unknown operator", rule(cond("x", "like", "a")), true},
		{"no attribute", rule(cond("", "eq", "a")), true},
		{"no values", rule(cond("x", "in")), true},
		{"list value", rule(cond("x", "in", []any{"a"})), true},
		{"regular expression", rule(cond("x", "matches", "(")), true},
		{"regular expression not a string", rule(cond("x", "matches", 1.0)), true},
		{"lt on a string", rule(cond("x", "lt", "5")), true},
		{"semver", rule(cond("x", "semverLt", "1.2")), true},
		{"time", rule(cond("x", "before", "2026-01-01")), true},
		{"segment key not a string", rule(cond("x", "inSegment", 1.0)), true},
		{"serve unknown variant", withServe(events.Serve{Variant: "maybe"}), true},
		{"serve both", withServe(events.Serve{Variant: "on", Split: map[string]int{"on": 1}}), true},
		{"serve nothing", withServe(events.Serve{}), true},
		{"split unknown variant", withDefault(events.Serve{Split: map[string]int{"maybe": 1}}), true},
		{"split negative weight", withDefault(events.Serve{Split: map[string]int{"on": -1, "off": 2}}), true},
		{"split zero total", withDefault(events.Serve{Split: map[string]int{"on": 0}}), true},
		{"split too large", withDefault(events.Serve{Split: map[string]int{"on": 2_000_000_000, "off": 2_000_000_000}}), true},
		{"unknown default variant", func() events.FlagConfig { c := boolConfig(); c.DefaultVariant = "maybe"; return c }(), true},
		{"unknown off variant", func() events.FlagConfig { c := boolConfig(); c.OffVariant = "maybe"; return c }(), false},
		{"no variants", events.FlagConfig{Kind: events.KindRelease, DefaultVariant: "on", OffVariant: "on", Enabled: true}, false},
		{"mixed variant types", func() events.FlagConfig {
			c := boolConfig()
			c.Variants = map[string]json.RawMessage{"on": json.RawMessage("true"), "off": json.RawMessage(`"no"`)}
			return c
		}(), false},
		{"variant not JSON", func() events.FlagConfig {
			c := boolConfig()
			c.Variants = map[string]json.RawMessage{"on": json.RawMessage("tru"), "off": json.RawMessage("false")}
			return c
		}(), false},
		{"variant array", func() events.FlagConfig {
			c := boolConfig()
			c.Variants = map[string]json.RawMessage{"on": json.RawMessage("[1]"), "off": json.RawMessage("[]")}
			return c
		}(), false},
		{"variant null", func() events.FlagConfig {
			c := boolConfig()
			c.Variants = map[string]json.RawMessage{"on": json.RawMessage("null"), "off": json.RawMessage("false")}
			return c
		}(), false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if c.cfg.Validate() == nil {
				t.Fatal("the case is valid: it does not test a document that bypassed validation")
			}
			disabled := c.cfg
			disabled.Enabled = false
			set, err := targeting.CompileFlagset(env, 1, []projections.Flag{flagOf("f", c.cfg), flagOf("g", disabled), flagOf("ok", boolConfig())}, nil)
			if err != nil {
				t.Fatalf("a document that does not compile fails the set: %v", err)
			}
			errs := set.Errors()
			if len(errs) != 2 || !errors.Is(errs[0], targeting.ErrCompile) {
				t.Fatalf("errors %v", errs)
			}
			e := set.Evaluate("f", ctxOf(map[string]any{"x": "a"}))
			if e.Reason != targeting.ReasonError || e.ErrorCode != targeting.ErrorParseError || e.Variant != nil || e.ErrorMessage == "" || e.Version != 1 {
				t.Errorf("enabled: %+v", e)
			}
			d := set.Evaluate("g", nil)
			if c.offServes {
				if d.Reason != targeting.ReasonDisabled || d.Variant == nil || d.Variant.Name != "off" {
					t.Errorf("disabled: %+v", d)
				}
			} else if d.ErrorCode != targeting.ErrorParseError {
				t.Errorf("disabled without a valid off variant: %+v", d)
			}
			if ok := set.Evaluate("ok", nil); ok.Reason != targeting.ReasonStatic {
				t.Errorf("the other flags still evaluate: %+v", ok)
			}
		})
	}
	// A segment cannot refer to segments; one that does (it bypassed validation) matches nobody.
	nested := segmentOf("nested", events.SegmentConfig{Included: []string{"a"}, Conditions: []events.Condition{cond("targetingKey", "inSegment", "x")}})
	set, err := targeting.CompileFlagset(env, 1, []projections.Flag{flagOf("f", targeted(cond("targetingKey", "inSegment", "nested")))}, []projections.Segment{nested})
	if err != nil {
		t.Fatal(err)
	}
	if errs := set.Errors(); len(errs) != 1 {
		t.Errorf("errors %v", errs)
	}
	if e := set.Evaluate("f", &targeting.EvalContext{TargetingKey: "a"}); e.Variant.Name != "off" {
		t.Errorf("a broken segment matched: %+v", e)
	}
}

func TestCompileFlagsetRefuses(t *testing.T) {
	other := flagOf("f", boolConfig())
	other.Environment = "staging"
	cases := []struct {
		name   string
		env    string
		flags  []projections.Flag
		segs   []projections.Segment
		target error
	}{
		{"invalid environment", "Prod!", nil, nil, events.ErrInvalid},
		{"flag of another environment", env, []projections.Flag{other}, nil, projections.ErrOutOfOrder},
		{"segment of another environment", env, nil, []projections.Segment{{Key: "s", Environment: "staging", Version: 1}}, projections.ErrOutOfOrder},
		{"flag twice", env, []projections.Flag{flagOf("f", boolConfig()), flagOf("f", boolConfig())}, nil, events.ErrInvalid},
		{"segment twice", env, nil, []projections.Segment{segmentOf("s", events.SegmentConfig{}), segmentOf("s", events.SegmentConfig{})}, events.ErrInvalid},
		{"invalid key", env, []projections.Flag{flagOf("a b", boolConfig())}, nil, events.ErrInvalid},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			set, err := targeting.CompileFlagset(c.env, 1, c.flags, c.segs)
			if !errors.Is(err, c.target) || set != nil {
				t.Errorf("got %v, %v; want %v", set, err, c.target)
			}
		})
	}
}

func TestFlagsetAccessors(t *testing.T) {
	archived := flagOf("c-archived", boolConfig())
	archived.Archived = true
	seg := segmentOf("beta", events.SegmentConfig{Included: []string{"a"}})
	set, err := targeting.CompileFlagset(env, 42, []projections.Flag{flagOf("b", boolConfig()), archived, flagOf("a", boolConfig())}, []projections.Segment{seg})
	if err != nil {
		t.Fatal(err)
	}
	if set.Environment() != env || set.Sequence() != 42 {
		t.Errorf("%s %d", set.Environment(), set.Sequence())
	}
	keys := set.Keys()
	if !slices.Equal(keys, []string{"a", "b"}) {
		t.Errorf("keys %v", keys)
	}
	keys[0] = "changed"
	if got := set.Keys(); got[0] != "a" {
		t.Errorf("Keys shares its slice: %v", got)
	}
	var names []string
	for _, f := range set.Flags() {
		names = append(names, f.Key)
	}
	if !slices.Equal(names, []string{"a", "b", "c-archived"}) {
		t.Errorf("flags %v", names)
	}
	if segs := set.Segments(); len(segs) != 1 || segs[0].Key != "beta" {
		t.Errorf("segments %v", segs)
	}
	// The documents compile back into the same set: what a snapshot relies on.
	again, err := targeting.CompileFlagset(env, set.Sequence(), set.Flags(), set.Segments())
	if err != nil || !slices.Equal(again.Keys(), set.Keys()) {
		t.Errorf("%v %v", again.Keys(), err)
	}
	empty := targeting.NewFlagset(env)
	if e := empty.Evaluate("a", nil); e.ErrorCode != targeting.ErrorFlagNotFound || len(empty.Keys()) != 0 || len(empty.Flags()) != 0 {
		t.Errorf("empty set: %+v", e)
	}
}

// TestEvaluateAllocatesNothing is the hot path's contract: a, b and c of the benchmarks, the
// error paths, and the operators that parse the attribute.
func TestEvaluateAllocatesNothing(t *testing.T) {
	b := targeted(cond("role", "eq", "beta"))
	c := splitFlag(25, 75)
	byNumber := boolConfig()
	byNumber.DefaultServe = &events.Serve{Split: map[string]int{"on": 25, "off": 75}, BucketBy: "account"}
	ops := boolConfig()
	ops.DefaultVariant = "off"
	ops.Rules = []events.Rule{{Conditions: []events.Condition{
		cond("version", "semverGt", "1.2.0"), cond("signup", "after", "2020-01-01T00:00:00Z"),
		cond("groups", "contains", "beta"), cond("targetingKey", "inSegment", "s"), cond("email", "endsWith", "@acme.com"),
		cond("age", "gte", 18.0), cond("plan", "exists"),
	}, Serve: events.Serve{Variant: "on"}}}
	set := compileSet(t, []projections.Flag{
		flagOf("a", boolConfig()), flagOf("b", b), flagOf("c", c), flagOf("by-number", byNumber), flagOf("ops", ops),
	}, segmentOf("s", events.SegmentConfig{Conditions: []events.Condition{cond("plan", "in", "pro", "team")}}))
	ctx := &targeting.EvalContext{TargetingKey: "user-42", Attributes: map[string]any{
		"role": "beta", "account": 123456, "version": "1.4.0-rc.1", "signup": "2024-05-06T07:08:09.123+02:00",
		"groups": []any{"alpha", "beta"}, "email": "x@acme.com", "age": 30, "plan": "pro",
	}}
	if e := set.Evaluate("ops", ctx); e.Variant == nil || e.Variant.Name != "on" {
		t.Fatalf("ops: %+v", e)
	}
	for _, key := range []string{"a", "b", "c", "by-number", "ops", "missing"} {
		for _, ctx := range []*targeting.EvalContext{ctx, nil} {
			if n := testing.AllocsPerRun(200, func() { _ = set.Evaluate(key, ctx) }); n != 0 {
				t.Errorf("%s (context %v): %v allocations", key, ctx != nil, n)
			}
		}
	}
}
