// Package source reads the counters a rollout guard judges: from a Prometheus server's HTTP API
// ([PrometheusSource]) or by scraping an exposition endpoint directly when no Prometheus runs
// ([ScrapeSource]). It also holds the PromQL selector subset both accept ([Selector],
// [ParseSelector], [CounterTemplate]), [Delta] for differencing two readings, and
// [AllowSources], the check that limits which URLs a server may fetch.
//
// Both sources answer Counter(ctx, q, at) with a [Reading] whose fields are always filled in.
// Its error is non-nil when the reading's status is [ReadingError] or [ReadingTimeout] (wrapping
// [ErrQueryFailed], and context.DeadlineExceeded for a timeout), or when the query itself is not
// acceptable ([ErrInvalidQuery]). Empty, NaN, stale and ambiguous readings come with a nil error:
// they are observations, not failures, and the caller must check Status in every case.
//
// Invariants:
//   - A reading is [ReadingOK] only when exactly one finite, non-negative sample was read at the
//     requested time, fresh enough; an empty result is never a zero.
//   - Counters are read as values, never through rate() or increase(): the caller differences
//     them ([Delta], resets handled).
//   - Every reading names its query and endpoint (password redacted), so it can be kept as
//     evidence.
//   - Bodies are read with a size bound, and a query or label value cannot inject PromQL: a
//     [Selector] renders its values quoted and escaped.
//
// The package knows nothing of flags, rollouts or the guard's decisions.
package source
