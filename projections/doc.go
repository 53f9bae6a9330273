// Package projections folds Interlock's events into read models: the current state of every
// flag, the history of one flag with field-level diffs, and the state of a flag or a whole
// environment at any past time, stream sequence or version.
//
// Invariants:
//   - Folds are pure and deterministic: the same events in the same order give the same state, in
//     the server, in a subscriber and at any point in time. They do no I/O and read no clock.
//   - A fold refuses an event that does not follow its state (ErrOutOfOrder) instead of guessing.
//     The Catalog recognises an event delivered twice by its stream sequence and skips it, so no
//     event is ever applied twice.
//   - Folds replace configurations, never mutate them in place, so a copy of a read model may be
//     handed to readers while the fold goes on.
//   - The stream is the source of truth: every read model here can be thrown away and rebuilt.
//     A Checkpoint only saves replaying: a Runner started from one (checked against the stream)
//     holds the same catalog, chains and refusals as one that replayed the stream from its start.
//   - An Index only saves scanning: the history, as-of and audit queries read through an
//     IndexedReader deliver the same messages, in the same order, to the same folds as a read of
//     the stream, and so give the same results. The environment states an Index saves (every so
//     many of an environment's events, a bounded number kept) are states a fold of the stream
//     passes through, each with the latest event time it covers: an environment as of a point
//     starts from the newest one the point reaches and folds only the events after it.
//
// A [Runner] replays and follows the stream on a [Follower], the same catch-up, backoff and
// readiness the in-process client of package local follows with. Flag evaluation is package
// targeting, which compiles these read models; nothing here imports it.
package projections
