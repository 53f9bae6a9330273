package local_test

import (
	"testing"

	"github.com/interlock-dev/interlock/local"
	"github.com/interlock-dev/interlock/targeting"
)

// BenchmarkEvaluate is an evaluation straight on a running client: the atomic load of its flag
// set and the engine.
func BenchmarkEvaluate(b *testing.B) {
	s := boot(b)
	s.create(b, "prod", "dark-mode", boolFlag(true))
	c := start(b, connect(b, s.srv), local.Config{Environment: "prod", NoPresence: true})
	waitReady(b, c)
	ectx := &targeting.EvalContext{TargetingKey: "user-1", Attributes: map[string]any{"role": "beta"}}
	b.ReportAllocs()
	for b.Loop() {
		if ev := c.Evaluate("dark-mode", ectx); ev.Variant == nil || !ev.Variant.Bool {
			b.Fatal("dark-mode is off")
		}
	}
}
