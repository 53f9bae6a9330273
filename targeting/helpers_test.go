package targeting_test

import (
	"encoding/json"

	"github.com/interlock-dev/interlock/events"
)

func boolConfig() events.FlagConfig {
	return events.FlagConfig{
		Kind:           events.KindRelease,
		Variants:       map[string]json.RawMessage{"on": json.RawMessage("true"), "off": json.RawMessage("false")},
		DefaultVariant: "on",
		OffVariant:     "off",
		Enabled:        true,
	}
}

// benchConfig is a realistic release flag: two boolean variants, a targeting rule and a
// percentage rollout by default (the flags of projections' rebuild benchmark).
func benchConfig(i int) events.FlagConfig {
	cfg := boolConfig()
	cfg.Description = "new checkout flow, rolled out by region"
	cfg.Owner = "team-checkout"
	cfg.Tags = []string{"checkout", "q3"}
	cfg.Rules = []events.Rule{{
		Name:       "beta testers",
		Conditions: []events.Condition{{Attribute: "groups", Operator: "contains", Values: []any{"beta"}}},
		Serve:      events.Serve{Variant: "on"},
	}}
	pct := i % 101
	cfg.DefaultServe = &events.Serve{Split: map[string]int{"on": pct, "off": 100 - pct}}
	return cfg
}
