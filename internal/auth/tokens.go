package auth

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

var (
	// ErrExists means a token with the name asked for already exists; nothing was issued.
	ErrExists = errors.New("already exists")
	// ErrNotFound means no token has the name asked for.
	ErrNotFound = errors.New("not found")
)

// TokenInfo describes an issued token: never its hash, never the token.
type TokenInfo struct {
	Name string `json:"name"`
	Role Role   `json:"role"`
	// Environment is the one environment a scoped token is for; empty for every environment.
	Environment string    `json:"environment"`
	CreatedAt   time.Time `json:"createdAt"`
	// ExpiresAt is when the token stops working; absent for a token that never expires.
	ExpiresAt time.Time `json:"expiresAt,omitzero"`
}

func (r record) info() TokenInfo {
	return TokenInfo{Name: r.Name, Role: r.Role, Environment: r.Environment, CreatedAt: r.CreatedAt, ExpiresAt: r.ExpiresAt}
}

// entry is one token entry of the bucket: its key (the hash) and what it says.
type entry struct {
	key string
	rec record
}

// entries returns every token entry in the bucket, without the bootstrap marker.
func (s *Store) entries(ctx context.Context) ([]entry, error) {
	w, err := s.kv.WatchAll(ctx, jetstream.IgnoreDeletes())
	if err != nil {
		return nil, fmt.Errorf("read tokens: %w", err)
	}
	defer func() { _ = w.Stop() }()
	var out []entry
	for {
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("read tokens: %w", ctx.Err())
		case e, ok := <-w.Updates():
			if !ok {
				return nil, fmt.Errorf("read tokens: the watch ended early")
			}
			if e == nil { // every stored entry has been delivered
				return out, nil
			}
			if e.Key() == bootstrapKey {
				continue
			}
			var rec record
			if err := json.Unmarshal(e.Value(), &rec); err != nil {
				return nil, fmt.Errorf("token entry at revision %d: %w", e.Revision(), err)
			}
			out = append(out, entry{key: e.Key(), rec: rec})
		}
	}
}

// List returns every issued token, including the bootstrap admin token (named "admin") but not an
// admin token given in the environment, which is not stored. They are ordered by name, then
// creation time.
//
// Errors: a JetStream error, or one about a corrupt stored entry.
func (s *Store) List(ctx context.Context) ([]TokenInfo, error) {
	es, err := s.entries(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]TokenInfo, 0, len(es))
	for _, e := range es {
		out = append(out, e.rec.info())
	}
	slices.SortFunc(out, func(a, b TokenInfo) int {
		if c := strings.Compare(a.Name, b.Name); c != 0 {
			return c
		}
		return a.CreatedAt.Compare(b.CreatedAt)
	})
	return out, nil
}

// checkNewName checks that name is a valid token name that no token has yet.
//
// Two issues of one name racing each other may both succeed; [Store.Revoke] then removes both.
func (s *Store) checkNewName(ctx context.Context, name string) error {
	if err := checkName(name); err != nil {
		return err
	}
	if name == adminName {
		return fmt.Errorf("%w: the name %q is reserved for the bootstrap admin token", ErrInvalid, adminName)
	}
	es, err := s.entries(ctx)
	if err != nil {
		return err
	}
	for _, e := range es {
		if e.rec.Name == name {
			return fmt.Errorf("%w: a token named %q exists; revoke it first or choose another name", ErrExists, name)
		}
	}
	return nil
}

// Revoke deletes every token named name and returns how many it deleted. This store stops
// accepting them at once; another replica (another Store on the same bucket) as soon as its watch
// ([Store.Run]) delivers the delete, or, when it does not run one, once the token's cache entry
// expires (10 seconds).
//
// The admin token (the bootstrap one, or the one given in the environment) is named "admin" and
// cannot be revoked this way.
//
// Errors: one wrapping [ErrInvalid] for "admin" or a name that breaks the naming rule; one wrapping
// [ErrNotFound] when no token has that name; otherwise a JetStream error, after which some of the
// tokens may be revoked and Revoke may be called again.
func (s *Store) Revoke(ctx context.Context, name string) (int, error) {
	if err := checkName(name); err != nil {
		return 0, fmt.Errorf("revoke: %w", err)
	}
	if name == adminName {
		return 0, fmt.Errorf("revoke: %w: the admin token (bootstrap or INTERLOCK_ADMIN_TOKEN) cannot be revoked through the API; give people and services tokens of their own names, which can", ErrInvalid)
	}
	es, err := s.entries(ctx)
	if err != nil {
		return 0, fmt.Errorf("revoke %s: %w", name, err)
	}
	n := 0
	for _, e := range es {
		if e.rec.Name != name {
			continue
		}
		if err := s.kv.Delete(ctx, e.key); err != nil {
			return n, fmt.Errorf("revoke %s: %w", name, err)
		}
		// After the delete: a lookup in flight now found the entry before it went, and must
		// not cache it; the next one finds nothing.
		s.revoked(e.key)
		n++
	}
	if n == 0 {
		return 0, fmt.Errorf("revoke: %w: no token is named %q", ErrNotFound, name)
	}
	return n, nil
}
