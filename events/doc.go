// Package events is Interlock's vocabulary and its store on NATS JetStream.
//
// Every change to a flag is one immutable [Event]: a CloudEvents 1.0 event carried in NATS binary
// mode (ce-* headers, JSON data). The stream is the source of truth; everything else in Interlock is
// a projection of it.
//
// Invariants:
//   - Event types are explicit, versioned strings (for example "io.interlock.flag.killed.v1"), never
//     derived from Go type names. A type once written stays decodable forever: older versions are
//     upcast to the current payload when read (see [Event.Payload]).
//   - One subject per entity: interlock.<environment>.flag.<key>. The entity's version is the number
//     of events on its subject; the append names the subject's expected last sequence, so a lost
//     update is impossible and a stale writer gets [ErrConflict].
//   - The event id is a UUIDv7 and doubles as Nats-Msg-Id, so a retried append is written once, on
//     a single server and on a replicated stream alike.
//   - With [WithSigner], every appended event is signed (Ed25519) and names the hash of the
//     previous accepted event of its subject (ce-signingkey, ce-prevhash, ce-signature over the
//     [Canonical] form). Reads verify: a message that fails reaches the handler as an
//     [*IntegrityError] and is never a link of its subject's chain. Unsigned events are accepted
//     up to the cut-over recorded in the stream's metadata ([MetadataCutover]).
//   - A read ([Store.Read], [Store.Load]) returns at least every event acknowledged before it
//     began, on a replicated stream too, whichever replica its consumer is placed on: it reads up
//     to the last sequence the stream leader holds on its subjects.
//   - An append sent again after it was stored is answered with the stored copy, which a
//     replicated stream's leader provides: never a conflict or an unknown outcome because a
//     follower had not stored it yet.
//   - Keys and environment names are validated by [ValidateFlagKey] and [ValidateEnvironment]
//     before anything is written; a decoder never panics on bad input.
package events
