// Package lease elects one replica among several through a JetStream key-value bucket: the
// replica whose entry holds the key holds the lease ([Lease]). It knows nothing of what the
// holder does; the caller names the bucket, the key and the holder.
//
// Invariants:
//   - Acquiring creates the key, renewing updates it at the revision last written
//     (compare-and-set), releasing deletes it at that revision; every write carries a TTL, so an
//     entry its holder stopped renewing disappears and another replica may take the key.
//   - A holder counts its validity from the moment it sent its last acknowledged write, on its
//     own clock, and stops believing it holds the lease Margin before the entry can expire,
//     whether or not it reaches NATS: two replicas never both believe they hold it unless their
//     clocks differ by more than Margin.
//   - Each holding has an epoch (the revision of the create) that only grows from one holding to
//     the next, so work stamped with it can be fenced against a former holder's late writes.
//   - Run returns nil when its context ends, after deleting the entry if it is still this
//     replica's, so another replica takes over at once.
package lease
