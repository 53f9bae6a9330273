// Package guard judges staged rollouts by their metrics and decides when to advance, hold, pull
// back or open a safety valve. This package holds the foundations: metric sources (a Prometheus
// server's HTTP API, or a direct scrape of an exposition endpoint) and the decision statistics
// and per-rollout state machine described in GUARD.md.
//
// Invariants:
//   - Missing, stale, NaN, ambiguous or errored readings are never healthy: a reading is OK only
//     when exactly one finite sample was read at the requested time. Counters are read as values
//     at now − lag and differenced here (resets handled), never through rate() or increase().
//   - Decisions are deterministic functions of their recorded inputs and an injected clock, so
//     replaying the inputs reproduces the decision and its evidence.
//   - A trip latches until a person re-arms it.
package guard
