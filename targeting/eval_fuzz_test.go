package targeting_test

import (
	"encoding/json"
	"testing"

	"github.com/interlock-dev/interlock/events"
	"github.com/interlock-dev/interlock/projections"
	"github.com/interlock-dev/interlock/targeting"
)

var knownReasons = map[targeting.Reason]bool{
	targeting.ReasonStatic: true, targeting.ReasonTargetingMatch: true, targeting.ReasonSplit: true,
	targeting.ReasonDisabled: true, targeting.ReasonDefault: true, targeting.ReasonError: true,
}

// FuzzEvaluate compiles arbitrary flag documents and evaluates them for arbitrary contexts. It
// never panics and always gives a reason; an error comes with a code and a message and serves
// nothing; a document that passes validation always compiles, and then the only errors are the
// context's.
func FuzzEvaluate(f *testing.F) {
	seeds := []struct{ cfg, ctx, key string }{
		{`{"kind":"release","variants":{"on":true,"off":false},"defaultVariant":"off","offVariant":"off","enabled":true,
		  "rules":[{"name":"beta","conditions":[{"attribute":"role","operator":"in","values":["beta","alpha"]}],"serve":{"variant":"on"}},
		           {"name":"NL","conditions":[{"attribute":"country","operator":"eq","values":["NL"]}],"serve":{"split":{"on":25,"off":75},"bucketBy":"targetingKey"}}],
		  "defaultServe":{"variant":"off"}}`, `{"role":"beta","country":"NL"}`, "user-1"},
		{`{"kind":"config","variants":{"a":"x","b":"y"},"defaultVariant":"a","offVariant":"b","enabled":true,
		  "rules":[{"conditions":[{"attribute":"version","operator":"semverGt","values":["1.2.3-rc.1"]},{"attribute":"signup","operator":"before","values":["2026-01-01T00:00:00+02:00"]}],"serve":{"variant":"b"}}]}`,
			`{"version":"1.2.3","signup":1700000000}`, ""},
		{`{"kind":"experiment","variants":{"a":1,"b":2,"c":3},"defaultVariant":"a","offVariant":"a","enabled":true,
		  "defaultServe":{"split":{"a":1,"b":0,"c":1000000},"bucketBy":"account"}}`, `{"account":12345}`, "k"},
		{`{"kind":"permission","variants":{"on":{"x":1},"off":{}},"defaultVariant":"on","offVariant":"off","enabled":false,
		  "rules":[{"conditions":[{"attribute":"targetingKey","operator":"notInSegment","values":["beta","gone"]},{"attribute":"email","operator":"matches","values":["@acme\\.com$"]}],"serve":{"variant":"on"}}]}`,
			`{"email":["a@acme.com"],"groups":["beta"]}`, "alice"},
		{`{"kind":"release","variants":{"on":true,"off":false},"defaultVariant":"on","offVariant":"off","enabled":true,
		  "rules":[{"conditions":[{"attribute":"age","operator":"gte","values":[18]},{"attribute":"groups","operator":"contains","values":["beta"]},{"attribute":"plan","operator":"exists"}],"serve":{"variant":"off"}}]}`,
			`{"age":21,"groups":["beta"],"plan":null}`, "bob"},
		{`{"kind":"release","variants":{"on":true},"defaultVariant":"on","offVariant":"nope","enabled":true,"rules":[{"conditions":[{"attribute":"x","operator":"like"}],"serve":{}}]}`, `{}`, ""},
	}
	for _, s := range seeds {
		f.Add([]byte(s.cfg), []byte(s.ctx), s.key)
	}
	beta := segmentOf("beta", events.SegmentConfig{Included: []string{"alice"}, Conditions: []events.Condition{cond("groups", "contains", "beta")}})
	f.Fuzz(func(t *testing.T, cfgJSON, ctxJSON []byte, key string) {
		var cfg events.FlagConfig
		if json.Unmarshal(cfgJSON, &cfg) != nil {
			return
		}
		var attrs map[string]any
		_ = json.Unmarshal(ctxJSON, &attrs)
		valid := cfg.Validate() == nil
		set, err := targeting.CompileFlagset(env, 1, []projections.Flag{flagOf("f", cfg)}, []projections.Segment{beta})
		if err != nil {
			t.Fatalf("compile: %v", err)
		}
		if valid && len(set.Errors()) > 0 {
			t.Fatalf("a valid document does not compile: %v", set.Errors())
		}
		ctx := &targeting.EvalContext{TargetingKey: key, Attributes: attrs}
		e := set.Evaluate("f", ctx)
		if again := set.Evaluate("f", ctx); again != e {
			t.Fatalf("not deterministic: %+v then %+v", e, again)
		}
		if !knownReasons[e.Reason] || e.FlagKey != "f" {
			t.Fatalf("%+v", e)
		}
		if (e.Reason == targeting.ReasonError) != (e.ErrorCode != "") || (e.ErrorCode != "") != (e.Variant == nil) || (e.ErrorCode != "") != (e.ErrorMessage != "") {
			t.Fatalf("an error must have a code and a message and serve nothing, and only an error: %+v", e)
		}
		if e.Variant != nil {
			if _, ok := cfg.Variants[e.Variant.Name]; !ok {
				t.Fatalf("served %q, not a variant of the flag", e.Variant.Name)
			}
		}
		if !valid {
			return
		}
		switch e.ErrorCode {
		case "", targeting.ErrorTargetingKeyMissing, targeting.ErrorInvalidContext:
		default:
			t.Fatalf("a valid flag failed with %s: %s", e.ErrorCode, e.ErrorMessage)
		}
		switch {
		case !cfg.Enabled && (e.Reason != targeting.ReasonDisabled || e.Variant.Name != cfg.OffVariant):
			t.Fatalf("disabled: %+v", e)
		case e.Reason == targeting.ReasonStatic && len(cfg.Rules) > 0:
			t.Fatalf("static with rules: %+v", e)
		case e.ErrorCode == targeting.ErrorTargetingKeyMissing && key != "":
			t.Fatalf("targeting key %q is missing: %+v", key, e)
		}
	})
}
