package metrics

import (
	"github.com/interlock-dev/interlock/targeting"
	"github.com/prometheus/client_golang/prometheus"
)

// reasons and errorCodes are the label values of evaluations; the last of each stands for any
// value not listed.
var (
	reasons = []targeting.Reason{
		targeting.ReasonStatic, targeting.ReasonTargetingMatch, targeting.ReasonSplit,
		targeting.ReasonDisabled, targeting.ReasonDefault, targeting.ReasonError, "OTHER",
	}
	errorCodes = []targeting.ErrorCode{
		"", targeting.ErrorFlagNotFound, targeting.ErrorTypeMismatch, targeting.ErrorTargetingKeyMissing,
		targeting.ErrorInvalidContext, targeting.ErrorParseError, targeting.ErrorGeneral, "OTHER",
	}
)

// Evaluations counts OFREP evaluations by reason and error code. It is the OFREP handler's
// observer, called once per evaluated flag on the hot path: it takes no lock and allocates
// nothing.
type Evaluations struct {
	// counters[r][c] is the counter of reasons[r] and errorCodes[c]; nil for a pair that cannot
	// happen (an error code with a reason other than ERROR).
	counters [][]prometheus.Counter
}

// NewEvaluations registers the evaluation counter on reg, with every possible pair of labels at
// zero.
func NewEvaluations(reg prometheus.Registerer) (*Evaluations, error) {
	vec := prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: namespace, Subsystem: "ofrep", Name: "evaluations_total",
		Help: "Flags evaluated over OFREP, by reason and error code (empty when none).",
	}, []string{"reason", "error_code"})
	e := &Evaluations{counters: make([][]prometheus.Counter, len(reasons))}
	for r, reason := range reasons {
		e.counters[r] = make([]prometheus.Counter, len(errorCodes))
		for c, code := range errorCodes {
			if (reason == targeting.ReasonError) == (code != "") || reason == "OTHER" {
				e.counters[r][c] = vec.WithLabelValues(string(reason), string(code))
			}
		}
	}
	if err := register(reg, vec); err != nil {
		return nil, err
	}
	return e, nil
}

// Evaluated counts one evaluation.
func (e *Evaluations) Evaluated(reason targeting.Reason, code targeting.ErrorCode) {
	r, c := reasonIndex(reason), codeIndex(code)
	if e.counters[r][c] == nil {
		r = len(reasons) - 1 // an impossible pair: counted, as OTHER
	}
	e.counters[r][c].Inc()
}

func reasonIndex(r targeting.Reason) int {
	for i, v := range reasons[:len(reasons)-1] {
		if v == r {
			return i
		}
	}
	return len(reasons) - 1
}

func codeIndex(c targeting.ErrorCode) int {
	for i, v := range errorCodes[:len(errorCodes)-1] {
		if v == c {
			return i
		}
	}
	return len(errorCodes) - 1
}
