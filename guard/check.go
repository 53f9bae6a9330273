package guard

import (
	"errors"
	"fmt"

	"github.com/interlock-dev/interlock/events"
	"github.com/interlock-dev/interlock/guard/source"
)

// CheckPlan renders every query the guard would send for a rollout of flag under plan, so that
// a selector the guard cannot use is refused when the plan is written rather than found blind
// later. Each problem is an *events.ValidationError naming the metric's field
// (metrics[1].count); they are joined. The plan is taken with its defaults applied.
func CheckPlan(flag string, plan events.RolloutPlan) error {
	p := plan.WithDefaults()
	flagLabel := p.Source.FlagLabel
	if flagLabel == "-" {
		flagLabel, flag = "", ""
	}
	var errs []error
	for i, m := range p.Metrics {
		names := [2]string{"requests", "errors"}
		if m.Kind == events.MetricMean {
			names = [2]string{"count", "sum"}
		}
		first, second := m.Counters()
		for j, base := range [2]string{first, second} {
			for _, variant := range []string{p.Treatment, p.Control} {
				t := source.CounterTemplate{Base: base, VariantLabel: p.Source.VariantLabel, FlagLabel: flagLabel}
				if _, err := t.Selector(flag, variant); err != nil {
					errs = append(errs, &events.ValidationError{Field: fmt.Sprintf("metrics[%d].%s", i, names[j]), Message: err.Error()})
					break
				}
			}
		}
	}
	return errors.Join(errs...)
}

// CheckValvePolicy parses a valve policy's counter selectors as the guard will, and reports each
// one it cannot use as an *events.ValidationError naming the field (policy.requests); they are
// joined.
func CheckValvePolicy(p *events.ValvePolicy) error {
	if p == nil {
		return nil
	}
	var errs []error
	for _, c := range []struct{ field, sel string }{{"policy.requests", p.Requests}, {"policy.errors", p.Errors}} {
		if _, err := valveQuery(p.Source, c.sel); err != nil {
			errs = append(errs, &events.ValidationError{Field: c.field, Message: err.Error()})
		}
	}
	return errors.Join(errs...)
}
