// Package subscribe lets another Go service react to Interlock's events with its own durable
// consumer on the INTERLOCK stream, through a Watermill router (retry, poison queue, recoverer and
// correlation id middleware) on github.com/ThreeDotsLabs/watermill-nats/v2's JetStream subscriber.
//
//	sub, err := subscribe.New(subscribe.Config{
//		URL:         "nats://nats:4222",
//		Durable:     "billing-cache",
//		Environment: "production",
//		Entity:      events.EntityFlag,
//	}, func(ctx context.Context, ev events.Event) error {
//		return cache.Invalidate(ctx, ev.Environment, ev.Key)
//	})
//	...
//	err = sub.Run(ctx) // until ctx ends
//
// Guarantees:
//   - At least once. An event is acknowledged (and the acknowledgement confirmed by the server)
//     only after the handler returned nil, or after it was moved to the poison queue. An event
//     that was being handled when the subscriber stopped or crashed is delivered again.
//   - Ordered. The consumer has at most one unacknowledged event (MaxAckPending 1), so events
//     reach the handler in stream order, which orders every flag's events by version. A failing
//     event is retried, then poisoned (or, without a poison queue, redelivered until it
//     succeeds); the events after it wait.
//   - Resumable. The consumer is durable: a restarted subscriber (or another instance with the
//     same Durable) continues after the last acknowledged event.
//   - Harmless to the stream. The subscriber reads the stream's info and creates or updates its
//     own consumer; it never creates, updates, purges or deletes the stream, never deletes a
//     message, never deletes its consumer, and leaves MaxDeliver unlimited, so the server never
//     gives up on an event either.
package subscribe
