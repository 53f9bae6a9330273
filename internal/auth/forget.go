package auth

// Forget makes this store stop trusting what it cached about the token stored under key (the hex
// SHA-256 of the token, the key of its bucket entry), and keeps lookups in flight from caching it:
// what [Store.Revoke] does for the tokens it deletes itself. A watcher of the bucket calls it when
// it sees an entry deleted, so that a token revoked through another store is refused here at
// once instead of after the cache lifetime.
func (s *Store) Forget(key string) { s.revoked(key) }
