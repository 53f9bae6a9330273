// Package guard judges staged rollouts by their metrics and decides when to advance, hold, pull
// back or open a safety valve. It holds the metric sources (a Prometheus server's HTTP API, or a
// direct scrape of an exposition endpoint), the decision statistics and the per-rollout state
// machine described in docs/guard.md ([Machine]), the safety-valve controller ([Valve]), the loop
// that judges every running rollout and acts through the write path ([Runner]), and the lease
// that lets exactly one replica act ([Leader]).
//
// Invariants:
//   - Missing, stale, NaN, ambiguous or errored readings are never healthy: a reading is OK only
//     when exactly one finite sample was read at the requested time. Counters are read as values
//     at now − lag and differenced here (resets handled), never through rate() or increase().
//   - Decisions are deterministic functions of their recorded inputs and an injected clock, so
//     replaying the inputs reproduces the decision and its evidence.
//   - A trip latches until a person re-arms it.
//   - The guard acts only through [Commander], as actor [Actor], with its decision event as the
//     causation id of every command: it has no write path of its own.
//   - Only the holder of the lease acts; stage changes name the flag version and the stage they
//     leave, so a former holder's late command cannot move a rollout twice.
package guard
