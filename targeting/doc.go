// Package targeting is the flag evaluation engine: it compiles the flags and segments of one
// environment, as folded by package projections, into an immutable [Flagset] that evaluates a
// flag for a context, and keeps one live per environment of a projections.Catalog
// ([Evaluators]). Other services import it to evaluate in process (package local does).
//
// Invariants:
//   - Evaluation is deterministic and sticky: a split buckets by MurmurHash3 of the flag key and
//     the bucketing value, so a context keeps its bucket as a rollout grows.
//   - Evaluation allocates nothing, takes no lock and does no I/O; it never fails (problems are
//     in the result's reason and error code).
//   - A Flagset never changes: a change makes a new one sharing what did not change, so readers
//     holding the old one are never disturbed and never see half a change.
//   - Events fold with projections' folds ([projections.Flag.Apply], [projections.Segment.Apply]):
//     the same events give the same state here as in the server's catalog.
package targeting
