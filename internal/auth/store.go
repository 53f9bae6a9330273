// Package auth issues and checks the bearer tokens of Interlock's API.
//
// A token is an opaque random string ("ilk_" and 32 random bytes, base64url). Interlock never
// stores a token, only its SHA-256 hash, as the key of an entry in the JetStream key-value bucket
// [Bucket], so that every replica of a cluster knows every token. Nothing in this package logs a
// token.
package auth

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/interlock-dev/interlock/events"
)

// Bucket is the JetStream key-value bucket holding token hashes.
const Bucket = "interlock_tokens"

// TokenPrefix starts every token Interlock generates, so that a leaked one is recognisable.
const TokenPrefix = "ilk_"

// MinTokenLen is the shortest admin token accepted from the environment.
const MinTokenLen = 16

// maxTokenLen bounds what Authenticate hashes; longer strings are not tokens.
const maxTokenLen = 1024

// cacheTTL is how long a successful lookup is trusted without asking the bucket again: also how
// long a deleted token may keep working on a replica that saw it recently.
const cacheTTL = 10 * time.Second

// maxCached bounds the cache of successful lookups.
const maxCached = 4096

// bootstrapKey marks that an admin token was generated once. Token keys are 64 hex digits, so it
// can never collide with one.
const bootstrapKey = "bootstrap"

// adminName is the principal name of the bootstrap and environment admin tokens.
const adminName = "admin"

// record is the value stored under a token's hash.
type record struct {
	Name      string    `json:"name"`
	Role      Role      `json:"role"`
	CreatedAt time.Time `json:"createdAt"`
	// Environment scopes the token to one environment; empty (and absent from entries written
	// before scopes existed) for a token valid in every environment.
	Environment string `json:"environment,omitempty"`
	// ExpiresAt is when the token stops working; zero (absent) for a token that never expires.
	ExpiresAt time.Time `json:"expiresAt,omitzero"`
}

func (r record) principal() Principal {
	return Principal{Name: r.Name, Role: r.Role, Environment: r.Environment, ExpiresAt: r.ExpiresAt}
}

type cached struct {
	p       Principal
	expires time.Time
}

// Store checks tokens against the bucket, and issues new ones. It is safe for concurrent use.
type Store struct {
	kv     jetstream.KeyValue
	now    func() time.Time
	logger *slog.Logger

	mu      sync.RWMutex
	envHash *[sha256.Size]byte
	cache   map[string]cached
	// revokes counts revocations: a lookup that began before one does not cache what it found.
	revokes uint64
	// view is the bucket as the watch of Run keeps it (view.go).
	view view

	// hits and misses count the lookups of Authenticate answered from memory (the view or the
	// cache) and from the bucket.
	hits, misses atomic.Uint64
}

// Open creates the token bucket if needed (file storage, one value per key, the given number of
// replicas; 0 means 1) and returns a store on it. Run it ([Store.Run]) to check tokens from an
// in-memory view of the bucket that a watch keeps current.
//
// Errors: one wrapping [ErrInvalid] for replicas outside 0-5; otherwise a JetStream error.
func Open(ctx context.Context, js jetstream.JetStream, replicas int, opts ...Option) (*Store, error) {
	if replicas < 0 || replicas > 5 {
		return nil, fmt.Errorf("%w: replicas %d is not between 1 and 5", ErrInvalid, replicas)
	}
	if replicas == 0 {
		replicas = 1
	}
	kv, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket:      Bucket,
		Description: "Interlock API tokens: SHA-256 hash → name, role",
		History:     1,
		Storage:     jetstream.FileStorage,
		Replicas:    replicas,
	})
	if err != nil {
		return nil, fmt.Errorf("token bucket %s: %w", Bucket, err)
	}
	s := &Store{kv: kv, now: time.Now, cache: make(map[string]cached), logger: slog.New(slog.DiscardHandler)}
	for _, o := range opts {
		o(s)
	}
	return s, nil
}

// Option configures a [Store].
type Option func(*Store)

// WithLogger logs what the store's watch skips and why, with component=auth.
func WithLogger(l *slog.Logger) Option {
	return func(s *Store) {
		if l != nil {
			s.logger = l.With("component", "auth")
		}
	}
}

// Bootstrap makes sure there is a way in as admin.
//
// If envToken is not empty (the operator set INTERLOCK_ADMIN_TOKEN), it is an admin token named
// "admin" for the life of this Store: only its hash is kept, in memory, and it is compared in
// constant time. Bootstrap then returns "".
//
// Otherwise, if no admin token was ever generated in this bucket, Bootstrap generates one, stores
// its hash and returns the token, which the caller prints once: it cannot be recovered later.
// When one was generated before (by this process, an earlier run or another replica) it returns "".
// Replicas starting together generate at most one token between them.
//
// Errors: one wrapping [ErrInvalid] when envToken is shorter than [MinTokenLen] or contains
// anything but visible ASCII; otherwise a JetStream error, after which it may be called again.
func (s *Store) Bootstrap(ctx context.Context, envToken string) (string, error) {
	if envToken != "" {
		if err := checkToken(envToken); err != nil {
			return "", fmt.Errorf("admin token: %w", err)
		}
		sum := sha256.Sum256([]byte(envToken))
		s.mu.Lock()
		s.envHash = &sum
		s.mu.Unlock()
		return "", nil
	}
	if _, err := s.kv.Get(ctx, bootstrapKey); err == nil {
		return "", nil
	} else if !errors.Is(err, jetstream.ErrKeyNotFound) {
		return "", fmt.Errorf("bootstrap: %w", err)
	}
	// The token first, then the marker: a marker always names a token that was stored. A crash in
	// between leaves a token nobody knows, and the next start generates another.
	token, _, err := s.issue(ctx, Spec{Name: adminName, Role: RoleAdmin})
	if err != nil {
		return "", fmt.Errorf("bootstrap: %w", err)
	}
	key := hashKey(token)
	if _, err := s.kv.Create(ctx, bootstrapKey, []byte(key)); err != nil {
		// Another replica won the race (or the marker could not be written): this token must
		// not exist, since nobody will ever see it.
		derr := s.kv.Delete(context.WithoutCancel(ctx), key)
		s.revoked(key)
		if errors.Is(err, jetstream.ErrKeyExists) && derr == nil {
			return "", nil
		}
		return "", fmt.Errorf("bootstrap: %w", errors.Join(err, derr))
	}
	return token, nil
}

// checkToken accepts visible ASCII of a sensible length: what fits a bearer header.
func checkToken(token string) error {
	if len(token) < MinTokenLen || len(token) > maxTokenLen {
		return fmt.Errorf("%w: a token is %d-%d characters", ErrInvalid, MinTokenLen, maxTokenLen)
	}
	for i := 0; i < len(token); i++ {
		if c := token[i]; c <= ' ' || c > '~' {
			return fmt.Errorf("%w: a token is visible ASCII characters only", ErrInvalid)
		}
	}
	return nil
}

// Issue generates a token for a principal with the given name and role, stores its hash and
// returns the token. It is the only time the token is seen.
//
// Errors: as for [Store.Create].
func (s *Store) Issue(ctx context.Context, name string, role Role) (string, error) {
	_, token, err := s.Create(ctx, Spec{Name: name, Role: role})
	return token, err
}

// IssueScoped is [Store.Issue] for a token scoped to one environment: the principal it
// authenticates as carries env in [Principal.Environment], and the parts of Interlock that honour
// scopes (OFREP evaluation) serve that environment only.
//
// Errors: as for [Store.Create], and one wrapping [ErrInvalid] for an empty env.
func (s *Store) IssueScoped(ctx context.Context, name string, role Role, env string) (string, error) {
	if env == "" {
		return "", fmt.Errorf("issue: %w: a scoped token needs an environment", ErrInvalid)
	}
	_, token, err := s.Create(ctx, Spec{Name: name, Role: role, Environment: env})
	return token, err
}

// Spec is what a new token is: its name, role, scope and expiry.
type Spec struct {
	Name string
	Role Role
	// Environment scopes the token to one environment; empty for every environment.
	Environment string
	// ExpiresAt is when the token stops working; zero for never.
	ExpiresAt time.Time
}

// Create generates a token as spec says, stores its hash and returns what was stored and the
// token. It is the only time the token is seen. Who may create what is the caller's to check
// (see [CanMint]).
//
// Errors: one wrapping [ErrInvalid] for an unknown role, a name that is not 1-64 letters,
// digits, '-', '_' or '.' in dot-separated parts, the name "admin" (the bootstrap token's), an
// environment that is not a valid environment name (see events.ValidateEnvironment), or an expiry
// that is not in the future; one wrapping [ErrExists] when a token of that name exists; otherwise
// a JetStream error.
func (s *Store) Create(ctx context.Context, spec Spec) (TokenInfo, string, error) {
	if !spec.Role.Valid() {
		return TokenInfo{}, "", fmt.Errorf("issue: %w: role %q is not one of admin, writer, oncall, reader", ErrInvalid, spec.Role)
	}
	if err := checkName(spec.Name); err != nil {
		return TokenInfo{}, "", fmt.Errorf("issue: %w", err)
	}
	if spec.Environment != "" {
		if err := events.ValidateEnvironment(spec.Environment); err != nil {
			return TokenInfo{}, "", fmt.Errorf("issue: %w: %w", ErrInvalid, err)
		}
	}
	if !spec.ExpiresAt.IsZero() && !spec.ExpiresAt.After(s.now()) {
		return TokenInfo{}, "", fmt.Errorf("issue: %w: the expiry %s is not in the future", ErrInvalid, spec.ExpiresAt.UTC().Format(time.RFC3339))
	}
	if err := s.checkNewName(ctx, spec.Name); err != nil {
		return TokenInfo{}, "", fmt.Errorf("issue: %w", err)
	}
	token, rec, err := s.issue(ctx, spec)
	if err != nil {
		return TokenInfo{}, "", fmt.Errorf("issue: %w", err)
	}
	return rec.info(), token, nil
}

// maxNameLen bounds a token's name.
const maxNameLen = 64

// checkName accepts 1-64 letters, digits, '-', '_' and '.', where dots separate non-empty parts:
// a name that is safe in a log line, a header, a URL path segment and a NATS subject.
func checkName(name string) error {
	if name == "" || len(name) > maxNameLen {
		return fmt.Errorf("%w: a token name is 1-%d characters", ErrInvalid, maxNameLen)
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '_' || c == '.') {
			return fmt.Errorf("%w: token name %q: only letters, digits, '-', '_' and '.' are allowed", ErrInvalid, name)
		}
	}
	if name[0] == '.' || name[len(name)-1] == '.' || strings.Contains(name, "..") {
		return fmt.Errorf("%w: token name %q: a dot separates two non-empty parts", ErrInvalid, name)
	}
	return nil
}

// issue generates a token and stores its hash, returning the token and what was stored.
func (s *Store) issue(ctx context.Context, spec Spec) (token string, rec record, err error) {
	var raw [32]byte
	_, _ = rand.Read(raw[:]) // never fails: crypto/rand crashes the program instead
	token = TokenPrefix + base64.RawURLEncoding.EncodeToString(raw[:])
	rec = record{Name: spec.Name, Role: spec.Role, CreatedAt: s.now().UTC(), Environment: spec.Environment}
	if !spec.ExpiresAt.IsZero() {
		rec.ExpiresAt = spec.ExpiresAt.UTC()
	}
	val, err := json.Marshal(rec)
	if err != nil {
		return "", record{}, err
	}
	key := hashKey(token)
	if _, err := s.kv.Create(ctx, key, val); err != nil {
		return "", record{}, fmt.Errorf("store token hash: %w", err)
	}
	// This store accepts the token at once, before its watch delivers it.
	s.mu.Lock()
	if s.view.records != nil {
		s.view.records[key] = rec
	}
	s.mu.Unlock()
	return token, rec, nil
}

func hashKey(token string) string {
	sum := sha256.Sum256([]byte(token))
	return hex.EncodeToString(sum[:])
}

// Authenticate returns the principal a token stands for. While [Store.Run] keeps the view of the
// bucket current, or has done so before the event store became unreachable, the token is checked
// against that view with no round trip. Otherwise a token found in the bucket is trusted for a few
// seconds without asking the bucket again.
//
// Errors: one wrapping [ErrUnauthenticated] for an empty, unknown or deleted token, and also
// [ErrExpired] for one whose expiry has passed; otherwise a JetStream error or one about a corrupt
// stored entry, which says nothing about the token.
func (s *Store) Authenticate(ctx context.Context, token string) (Principal, error) {
	if token == "" {
		return Principal{}, fmt.Errorf("%w: no token", ErrUnauthenticated)
	}
	if len(token) > maxTokenLen {
		return Principal{}, fmt.Errorf("%w: unknown token", ErrUnauthenticated)
	}
	sum := sha256.Sum256([]byte(token))
	s.mu.RLock()
	env := s.envHash
	s.mu.RUnlock()
	if env != nil && subtle.ConstantTimeCompare(sum[:], env[:]) == 1 {
		return Principal{Name: adminName, Role: RoleAdmin}, nil
	}
	key := hex.EncodeToString(sum[:])
	now := s.now()
	s.mu.RLock()
	if s.view.synced {
		rec, ok := s.view.records[key]
		s.mu.RUnlock()
		s.hits.Add(1)
		if !ok {
			return Principal{}, fmt.Errorf("%w: unknown token", ErrUnauthenticated)
		}
		p := rec.principal()
		return p, expired(p, now)
	}
	c, ok := s.cache[key]
	gen := s.revokes
	s.mu.RUnlock()
	if ok && now.Before(c.expires) {
		s.hits.Add(1)
		return c.p, expired(c.p, now)
	}
	s.misses.Add(1)
	entry, err := s.kv.Get(ctx, key)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		s.forget(key)
		return Principal{}, fmt.Errorf("%w: unknown token", ErrUnauthenticated)
	}
	if err != nil {
		return Principal{}, fmt.Errorf("look up token: %w", err)
	}
	var rec record
	if err := json.Unmarshal(entry.Value(), &rec); err != nil {
		return Principal{}, fmt.Errorf("token entry at revision %d: %w", entry.Revision(), err)
	}
	p := rec.principal()
	s.remember(key, p, now.Add(cacheTTL), gen)
	return p, expired(p, now)
}

// Lookups counts the tokens Authenticate looked up since the store was opened: hits were answered
// from memory (the watched view, or the cache of recent lookups), misses asked the bucket. The
// environment's admin token and malformed tokens are not looked up.
func (s *Store) Lookups() (hits, misses uint64) { return s.hits.Load(), s.misses.Load() }

// expired returns an error wrapping [ErrUnauthenticated] and [ErrExpired] when p's token has
// expired at now, and nil otherwise.
func expired(p Principal, now time.Time) error {
	if p.ExpiresAt.IsZero() || now.Before(p.ExpiresAt) {
		return nil
	}
	return &expiredError{name: p.Name, at: p.ExpiresAt}
}

// expiredError says which token expired when; it wraps [ErrUnauthenticated] and [ErrExpired].
type expiredError struct {
	name string
	at   time.Time
}

func (e *expiredError) Error() string {
	return fmt.Sprintf("the token %q expired at %s", e.name, e.at.UTC().Format(time.RFC3339))
}

func (e *expiredError) Unwrap() []error { return []error{ErrUnauthenticated, ErrExpired} }

// remember caches p under key, unless a revocation happened since the lookup began (gen).
func (s *Store) remember(key string, p Principal, expires time.Time, gen uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if gen != s.revokes {
		return
	}
	if len(s.cache) >= maxCached {
		now := s.now()
		for k, c := range s.cache {
			if !now.Before(c.expires) {
				delete(s.cache, k)
			}
		}
		if len(s.cache) >= maxCached {
			clear(s.cache)
		}
	}
	s.cache[key] = cached{p: p, expires: expires}
}

func (s *Store) forget(key string) {
	s.mu.Lock()
	delete(s.cache, key)
	s.mu.Unlock()
}

// revoked drops key from the cache and the view, and stops lookups in flight from caching
// anything.
func (s *Store) revoked(key string) {
	s.mu.Lock()
	delete(s.cache, key)
	if s.view.records != nil {
		delete(s.view.records, key)
	}
	s.revokes++
	s.mu.Unlock()
}
