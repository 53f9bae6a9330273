// Package guard judges staged rollouts by their metrics and decides when to advance, hold, pull
// back or open a safety valve. It holds the decision core described in docs/guard.md: the
// configuration ([MachineConfig], config.go), the statistics R1–R5 (stats.go), the per-rollout
// state machine ([Machine], machine.go) and the evidence of every decision (evidence.go); the
// safety-valve controller ([Valve]); and the loop that judges every running rollout and acts
// through the write path ([Runner]). It reads counters through [CounterSource], which package
// guard/source implements for a Prometheus server and for a direct scrape, and acts only while
// its [Leader] says so (internal/lease elects one replica).
//
// Invariants:
//   - Missing, stale, NaN, ambiguous or errored readings are never healthy: a reading counts only
//     when its status is ok, as package source defines it. Counters are read as values at
//     now − lag and differenced here (resets handled), never through rate() or increase().
//   - Decisions are deterministic functions of their recorded inputs and an injected clock, so
//     replaying the inputs reproduces the decision and its evidence.
//   - A trip latches until a person re-arms it.
//   - The guard acts only through [Commands], sending the write path's command values as actor
//     [Actor], with its decision event as the causation id of every command: it has no write
//     path of its own.
//   - Only the holder of the lease acts; stage changes name the flag version and the stage they
//     leave, so a former holder's late command cannot move a rollout twice.
package guard
