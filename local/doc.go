// Package local evaluates Interlock flags inside another Go service: a [Client] follows one
// environment's events over the service's own NATS connection, holds the environment's flags as
// an immutable targeting.Flagset behind an atomic pointer, and evaluates them in process with
// the same engine and the same folds as the server.
//
// Invariants:
//   - Evaluation never blocks, never waits for the network and never sees half a change: a new
//     flag set replaces the old one atomically once an event is folded in. A live event (the
//     stream has nothing after it) is applied on its own as soon as it arrives; events the
//     client catches up with once ready (after an outage, or a burst it fell behind on) are
//     applied in batches, one new flag set and one change notice per batch.
//   - [Client.Sequence] is the stream sequence the current flag set reflects: every event of the
//     environment up to it has been applied (or skipped as bad, with a log line); none after it.
//   - A cold start reads the latest snapshot the server wrote (object store bucket
//     [DefaultSnapshotBucket], one object per environment, the JSON of [Snapshot]) and the events
//     after it; with no usable snapshot it replays the environment's events from the start. The
//     client is ready once it has caught up with the stream as it was when it started.
//   - While NATS or the stream cannot be reached the client keeps serving its last state and
//     reports itself stale ([Client.Stale], a NoticeStale to observers); it resumes from the
//     event after [Client.Sequence] when the stream is back.
//   - Heartbeats ([Heartbeat], on [PresenceSubject], outside the event stream) carry the applied
//     sequence, so the server can say how many subscribers have applied a change. A client that
//     stops says goodbye; one that dies is forgotten after three missed heartbeats.
//
// The package imports nats.go, events, projections and targeting only: no HTTP, configuration
// files or CLI.
// The OpenFeature provider on top of it is in package openfeature below this one.
//
// Connecting: Interlock's embedded NATS server admits a service with an Interlock token (a reader
// token scoped to its environment is enough), presented by events.TokenAuth:
//
//	nc, err := nats.Connect("nats://127.0.0.1:4222", events.TokenAuth(token))
//
// On an operator's cluster, the service's NATS user needs: JetStream API access to create ordered
// (ephemeral) consumers on the event stream with a filter within its environment
// ($JS.API.CONSUMER.CREATE.INTERLOCK.*.interlock.<env>.>, MSG.NEXT), the direct get of the
// environment's last event ($JS.API.DIRECT.GET.INTERLOCK.interlock.<env>.>), read access to the
// snapshot object store, publish on _INTERLOCK.presence.<env>.<id>, and subscribe on its inbox.
// docs/perimeter.md and deploy/nats-cluster.conf list them.
package local
