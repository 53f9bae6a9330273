package lease

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

var (
	// ErrInvalid means a lease's options broke a rule, or the JetStream context cannot
	// carry one; no lease was built.
	ErrInvalid = errors.New("invalid lease")
	// ErrVacant means nobody holds the lease.
	ErrVacant = errors.New("lease vacant")
	// ErrMalformed means a lease entry in the bucket could not be decoded.
	ErrMalformed = errors.New("malformed lease entry")
)

// Options configures a [Lease]. Zero values take their defaults.
type Options struct {
	// Bucket is the key-value bucket holding the lease. Required; letters, digits, '-' and
	// '_'.
	Bucket string
	// Key names the lease within the bucket. Required; letters, digits and "-/_=." (not first
	// or last, not doubled).
	Key string
	// Holder identifies this replica, e.g. a UUID or the host name plus the process id.
	// Required; at most 256 bytes of printable UTF-8. Two replicas must not share it.
	Holder string
	// TTL is how long an entry outlives its last write: a holder that stops renewing loses
	// the lease at most TTL later. 10s by default; whole seconds (the server counts message
	// TTLs in seconds) between 1s and 1h.
	TTL time.Duration
	// Margin is how long before its entry can expire a holder stops believing it holds the
	// lease. It must exceed the clock offset between the NATS servers plus how far this
	// process's clock may run slow over one TTL. TTL/5 by default; less than TTL − Renew.
	Margin time.Duration
	// Renew is the time between renewals. TTL/3 by default; at least 10ms, less than
	// TTL − Margin.
	Renew time.Duration
	// Timeout bounds one call to NATS. Renew by default.
	Timeout time.Duration
	// Replicas is the bucket's replication factor, 1 by default; at most 5. Every replica of
	// the service should ask for the same number.
	Replicas int
	// Logger receives acquisitions, losses and failing calls (when a failure starts and
	// ends, not on every attempt). Discarded by default.
	Logger *slog.Logger
	// Now reads this process's clock; time.Now by default. Held compares it with the end of
	// the validity it earned, so it must not jump: readings from time.Now carry the monotonic
	// clock. Tests inject their own.
	Now func() time.Time
}

const (
	defaultLeaseTTL  = 10 * time.Second
	maxLeaseTTL      = time.Hour
	minLeaseRenew    = 10 * time.Millisecond
	maxLeaseHolder   = 256
	maxLeaseKey      = 256
	maxLeaseReplicas = 5
	maxLeaseValue    = 4 << 10
)

var (
	validLeaseBucket = regexp.MustCompile(`^[a-zA-Z0-9_-]+$`)
	validLeaseKey    = regexp.MustCompile(`^[-/_=.a-zA-Z0-9]+$`)
)

func (o *Options) setDefaults() {
	if o.TTL == 0 {
		o.TTL = defaultLeaseTTL
	}
	if o.Margin == 0 {
		o.Margin = o.TTL / 5
	}
	if o.Renew == 0 {
		o.Renew = o.TTL / 3
	}
	if o.Timeout == 0 {
		o.Timeout = o.Renew
	}
	if o.Replicas == 0 {
		o.Replicas = 1
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Now == nil {
		o.Now = time.Now
	}
}

// Validate reports every problem with the options, as an error matching [ErrInvalid].
// Zero values are accepted (they take defaults), except for Bucket, Key and Holder.
func (o Options) Validate() error {
	var errs []error
	if !validLeaseBucket.MatchString(o.Bucket) {
		errs = append(errs, fmt.Errorf("bucket %q may hold only letters, digits, '-' and '_'", o.Bucket))
	}
	if !validLeaseKeyName(o.Key) {
		errs = append(errs, fmt.Errorf("key %q is not a valid key", o.Key))
	}
	if err := validateLeaseHolder(o.Holder); err != nil {
		errs = append(errs, err)
	}
	ttl := o.TTL
	if ttl == 0 {
		ttl = defaultLeaseTTL
	}
	if ttl < time.Second || ttl > maxLeaseTTL || ttl%time.Second != 0 {
		errs = append(errs, fmt.Errorf("ttl %v is not a whole number of seconds between 1s and %v", o.TTL, maxLeaseTTL))
		ttl = defaultLeaseTTL // judge the rest against something sane
	}
	margin, renew := o.Margin, o.Renew
	if margin == 0 {
		margin = ttl / 5
	}
	if renew == 0 {
		renew = ttl / 3
	}
	if margin <= 0 || margin >= ttl {
		errs = append(errs, fmt.Errorf("margin %v is not between 0 and the ttl %v", o.Margin, ttl))
	} else if renew < minLeaseRenew || renew >= ttl-margin {
		errs = append(errs, fmt.Errorf("renew %v is not between %v and ttl − margin (%v)", o.Renew, minLeaseRenew, ttl-margin))
	}
	if o.Timeout < 0 {
		errs = append(errs, fmt.Errorf("timeout %v is negative", o.Timeout))
	}
	if o.Replicas < 0 || o.Replicas > maxLeaseReplicas {
		errs = append(errs, fmt.Errorf("replicas %d is not between 1 and %d", o.Replicas, maxLeaseReplicas))
	}
	if len(errs) > 0 {
		return fmt.Errorf("%w: %w", ErrInvalid, errors.Join(errs...))
	}
	return nil
}

func validLeaseKeyName(k string) bool {
	return len(k) <= maxLeaseKey && validLeaseKey.MatchString(k) &&
		!strings.HasPrefix(k, ".") && !strings.HasSuffix(k, ".") && !strings.Contains(k, "..")
}

func validateLeaseHolder(h string) error {
	switch {
	case h == "":
		return errors.New("holder is required")
	case len(h) > maxLeaseHolder:
		return fmt.Errorf("holder is %d bytes, more than %d", len(h), maxLeaseHolder)
	case !utf8.ValidString(h):
		return errors.New("holder is not valid UTF-8")
	case strings.IndexFunc(h, func(r rune) bool { return !unicode.IsPrint(r) }) >= 0:
		return fmt.Errorf("holder %q has unprintable characters", h)
	}
	return nil
}

// State is what a replica knows of its lease at one moment.
type State struct {
	// Held: this replica holds the lease and may act.
	Held bool
	// Epoch is the fencing token of the holding: the entry's revision when this replica
	// acquired it. Epochs only grow, from one holding to the next, whoever the holder. 0 when
	// not held.
	Epoch uint64
}

// Record is a lease's entry as the bucket holds it.
type Record struct {
	// Holder is the holding replica's Options.Holder.
	Holder string
	// Epoch is the revision at which the holder acquired the lease.
	Epoch uint64
	// Revision is the entry's revision; it grows with every renewal.
	Revision uint64
	// Acquired and Renewed are when the holder acquired and last renewed the lease, by the
	// holder's clock.
	Acquired, Renewed time.Time
	// TTL is how long the entry outlives its last write.
	TTL time.Duration
}

// leaseValue is a lease entry's JSON. Token tells the holder's own entries apart from an
// earlier holding under the same Holder name (a restarted process).
type leaseValue struct {
	Holder     string    `json:"holder"`
	Token      string    `json:"token"`
	Epoch      uint64    `json:"epoch,omitempty"` // 0 until the first renewal
	TTLSeconds int64     `json:"ttlSeconds"`
	Acquired   time.Time `json:"acquired"`
	Renewed    time.Time `json:"renewed"`
}

func encodeLeaseValue(v leaseValue) []byte {
	b, _ := json.Marshal(v) // strings, integers and times always encode
	return b
}

// decodeLeaseValue parses a lease entry. It accepts unknown fields (written by a newer
// version) and refuses anything without a valid holder and token.
func decodeLeaseValue(data []byte) (leaseValue, error) {
	var v leaseValue
	if len(data) > maxLeaseValue {
		return v, fmt.Errorf("%w: %d bytes, more than %d", ErrMalformed, len(data), maxLeaseValue)
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&v); err != nil {
		return leaseValue{}, fmt.Errorf("%w: %w", ErrMalformed, err)
	}
	if _, err := dec.Token(); err == nil {
		return leaseValue{}, fmt.Errorf("%w: data after the JSON object", ErrMalformed)
	}
	if err := validateLeaseHolder(v.Holder); err != nil {
		return leaseValue{}, fmt.Errorf("%w: %w", ErrMalformed, err)
	}
	if v.Token == "" || len(v.Token) > 64 {
		return leaseValue{}, fmt.Errorf("%w: token is empty or longer than 64 bytes", ErrMalformed)
	}
	if v.TTLSeconds < 0 || v.TTLSeconds > int64(maxLeaseTTL/time.Second) {
		return leaseValue{}, fmt.Errorf("%w: ttl of %d seconds", ErrMalformed, v.TTLSeconds)
	}
	return v, nil
}

// Lease elects one replica among several to act: the holder of one key in a
// JetStream key-value bucket. Call Run to take part; Held says whether this replica holds the
// lease now, and with which epoch. It is safe for concurrent use.
//
// A replica acquires the lease by creating the key, renews it by updating it at the revision
// it last wrote (compare-and-set), and releases it by deleting it at that revision. Each write
// carries a per-message TTL, so an entry its holder stopped renewing disappears TTL after its
// last write, and another replica's create then succeeds. The holder counts its validity from
// the moment it sent its last acknowledged write, on its own clock, and stops believing it
// holds the lease Margin before the entry can expire, whether or not it can reach NATS: two
// replicas never both believe they hold it unless clocks are off by more than Margin.
type Lease struct {
	kv        jetstream.KeyValue
	js        jetstream.JetStream
	key       string
	subject   string // the key's subject, for renewals with a TTL
	stream    string
	holder    string
	ttl       time.Duration
	margin    time.Duration
	renew     time.Duration
	timeout   time.Duration
	retry     time.Duration
	log       *slog.Logger
	now       func() time.Time
	changes   chan State
	running   atomic.Bool
	noRelease bool // tests: stop without deleting the entry, as a crashed process would

	mu    sync.Mutex
	epoch uint64    // the epoch of the holding, 0 when not held
	until time.Time // the holding's validity ends here, by l.now

	// Run's own state, touched only by Run's goroutine.
	token   string    // the token of our current claim, "" when we have none
	tokenAt time.Time // when the first write carrying token was sent
	rev     uint64    // the revision of our newest known entry, 0 when none is known
	claimed uint64    // the epoch of the claim (known before it is announced)
	failing bool      // the last call to NATS failed (for logging transitions)
	seen    uint64    // the epoch of the other replica's holding last seen (for logging)
}

// New checks opts, creates the lease's bucket or updates its configuration, and returns a
// lease; call Run to take part in the election. It returns an error matching
// [ErrInvalid] when the options break a rule or js uses a domain or API prefix, and the
// JetStream error when the bucket cannot be created.
func New(ctx context.Context, js jetstream.JetStream, opts Options) (*Lease, error) {
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	if o := js.Options(); o.Domain != "" || (o.APIPrefix != "" && strings.TrimSuffix(o.APIPrefix, ".") != strings.TrimSuffix(jetstream.DefaultAPIPrefix, ".")) {
		return nil, fmt.Errorf("%w: a JetStream context with a domain or API prefix is not supported", ErrInvalid)
	}
	opts.setDefaults()
	// The bucket is a key-value bucket's stream, made here rather than through
	// CreateKeyValue: it allows per-message TTLs but leaves no marker when one expires. A
	// marker is a roll-up written a moment after the expiry; a write landing in that moment
	// (a delayed release, or a create on it) would be erased by it, and its writer would
	// believe in a holding that no longer exists. Without markers an expired entry is simply
	// removed, which no later write can be confused with.
	stream := "KV_" + opts.Bucket
	_, err := js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name:              stream,
		Description:       "interlock " + opts.Key + " lease",
		Subjects:          []string{"$KV." + opts.Bucket + ".>"},
		MaxMsgsPerSubject: 1,
		MaxBytes:          -1,
		MaxMsgSize:        -1,
		MaxMsgs:           -1,
		MaxConsumers:      -1,
		Storage:           jetstream.FileStorage,
		Replicas:          opts.Replicas,
		AllowRollup:       true,
		DenyDelete:        true,
		Duplicates:        2 * time.Minute,
		AllowDirect:       true,
		Discard:           jetstream.DiscardNew,
		AllowMsgTTL:       true,
	})
	if err != nil {
		return nil, fmt.Errorf("create lease bucket %s: %w", opts.Bucket, err)
	}
	kv, err := js.KeyValue(ctx, opts.Bucket)
	if err != nil {
		return nil, fmt.Errorf("bind lease bucket %s: %w", opts.Bucket, err)
	}
	return &Lease{
		kv:      kv,
		js:      js,
		key:     opts.Key,
		subject: "$KV." + opts.Bucket + "." + opts.Key,
		stream:  stream,
		holder:  opts.Holder,
		ttl:     opts.TTL,
		margin:  opts.Margin,
		renew:   opts.Renew,
		timeout: opts.Timeout,
		retry:   max(opts.Renew/4, minLeaseRenew),
		log:     opts.Logger.With("lease", opts.Bucket+"/"+opts.Key, "holder", opts.Holder),
		now:     opts.Now,
		changes: make(chan State, 1),
	}, nil
}

// Held reports whether this replica holds the lease now, by its own clock, and the holding's
// epoch (0 when not held). Act only while it reports true, and pass the epoch
// along with what is done, so that a write made late by a former holder can be told apart.
func (l *Lease) Held() (held bool, epoch uint64) {
	now := l.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.epoch != 0 && now.Before(l.until) {
		return true, l.epoch
	}
	return false, 0
}

// Changes delivers the lease's state each time Run sees it change: acquired (Held, with the
// new epoch) or lost. The channel keeps only the newest state, so a slow reader misses
// intermediate ones (a new epoch tells it that it missed a loss). Held turns false on its
// own at the end of the validity, possibly a moment before the loss is delivered here; check
// Held before acting.
func (l *Lease) Changes() <-chan State { return l.changes }

// Holder reads the lease's entry: who holds it now, for status pages. On a replicated bucket
// the answer may come from a replica a moment behind the leader. It returns an error
// matching [ErrVacant] when nobody does, [ErrMalformed] when the entry cannot be
// decoded, or the JetStream error.
func (l *Lease) Holder(ctx context.Context) (Record, error) {
	e, err := l.kv.Get(ctx, l.key)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return Record{}, fmt.Errorf("read lease %s: %w", l.key, ErrVacant)
	}
	if err != nil {
		return Record{}, fmt.Errorf("read lease %s: %w", l.key, err)
	}
	v, err := decodeLeaseValue(e.Value())
	if err != nil {
		return Record{}, fmt.Errorf("read lease %s at revision %d: %w", l.key, e.Revision(), err)
	}
	return Record{
		Holder:   v.Holder,
		Epoch:    epochOf(v, e.Revision()),
		Revision: e.Revision(),
		Acquired: v.Acquired,
		Renewed:  v.Renewed,
		TTL:      time.Duration(v.TTLSeconds) * time.Second,
	}, nil
}

func epochOf(v leaseValue, revision uint64) uint64 {
	if v.Epoch != 0 {
		return v.Epoch
	}
	return revision // written by the create, whose revision is the epoch
}

// Run takes part in the election until ctx ends: it tries to acquire the lease at once, then
// whenever the entry is deleted and every Renew while someone else holds it; once acquired,
// it renews it every Renew. A renewal refused because the entry changed, or not acknowledged
// before the validity ends, loses the lease. When ctx ends Run stops holding, deletes the
// entry if it is still this replica's (so another replica takes over at once) and returns
// nil. Failing calls to NATS are logged and retried; they do not stop Run. Call it once.
func (l *Lease) Run(ctx context.Context) error {
	if !l.running.CompareAndSwap(false, true) {
		return errors.New("run lease: already running")
	}
	var w leaseWatch
	defer w.stop()
	var watchTried time.Time
	for {
		// The watch wakes a waiting replica when the entry is deleted; without it, takeover
		// waits for the next attempt. It is (re)started only while waiting, at most once per
		// Renew, so that a failing watch never delays a renewal.
		if w.w == nil && l.rev == 0 && (watchTried.IsZero() || l.now().Sub(watchTried) >= l.renew) {
			watchTried = l.now()
			w = l.watch(ctx)
		}
		wait := l.step(ctx)
		if !l.sleep(ctx, wait, &w) {
			l.stop()
			return nil
		}
	}
}

// leaseWatch is a watch on the lease's key and the cancellation of its context.
type leaseWatch struct {
	w      jetstream.KeyWatcher
	cancel context.CancelFunc
}

func (lw *leaseWatch) stop() {
	if lw.w != nil {
		_ = lw.w.Stop()
	}
	if lw.cancel != nil {
		lw.cancel()
	}
	*lw = leaseWatch{}
}

// watch starts following the key's changes, giving up after Timeout. The watch's context is
// its lifetime, so the time limit cancels it rather than bounding it with a deadline.
func (l *Lease) watch(ctx context.Context) leaseWatch {
	wctx, cancel := context.WithCancel(ctx)
	timer := time.AfterFunc(l.timeout, cancel)
	w, err := l.kv.Watch(wctx, l.key, jetstream.UpdatesOnly())
	if !timer.Stop() || err != nil {
		if err == nil {
			_ = w.Stop()
		}
		cancel()
		return leaseWatch{}
	}
	return leaseWatch{w: w, cancel: cancel}
}

// sleep waits for d, or until the key changes in a way that calls for a step now. It returns
// false when ctx ends.
func (l *Lease) sleep(ctx context.Context, d time.Duration, w *leaseWatch) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	var updates <-chan jetstream.KeyValueEntry
	if w.w != nil {
		updates = w.w.Updates()
	}
	for {
		select {
		case <-ctx.Done():
			return false
		case <-t.C:
			return true
		case e, ok := <-updates:
			if !ok {
				w.stop() // closed (the connection went): restarted later
				updates = nil
				continue
			}
			if e == nil {
				continue
			}
			if l.rev == 0 && e.Operation() != jetstream.KeyValuePut {
				return true // vacant: try at once
			}
			if l.rev != 0 && e.Revision() > l.rev {
				return true // someone else wrote over our entry: find out now
			}
		}
	}
}

// step makes one attempt, to acquire or renew, and returns how long to wait before the next.
func (l *Lease) step(ctx context.Context) time.Duration {
	now := l.now()
	l.mu.Lock()
	until := l.until
	l.mu.Unlock()
	switch {
	case l.rev == 0:
		return l.acquire(ctx)
	case now.Before(until):
		return l.renewal(ctx, until)
	default:
		// Our entry, but its validity is over: we may no longer act on it. Delete it so
		// that the lease is free at once rather than at its expiry, then compete afresh.
		l.lose("not renewed in time")
		l.release(ctx)
		return 0
	}
}

// acquire tries to create the entry.
func (l *Lease) acquire(ctx context.Context) time.Duration {
	if l.token == "" {
		l.token, l.tokenAt = rand.Text(), time.Time{}
	}
	sent := l.now()
	if l.tokenAt.IsZero() {
		l.tokenAt = sent
	}
	v := leaseValue{Holder: l.holder, Token: l.token, TTLSeconds: int64(l.ttl / time.Second), Acquired: sent, Renewed: sent}
	cctx, cancel := context.WithTimeout(ctx, l.timeout)
	rev, err := l.kv.Create(cctx, l.key, encodeLeaseValue(v), jetstream.KeyTTL(l.ttl))
	cancel()
	switch {
	case err == nil:
		l.ok()
		l.rev, l.claimed = rev, rev
		if until := sent.Add(l.ttl - l.margin); l.now().Before(until) {
			l.gain(rev, until)
			return l.untilNext(sent)
		}
		return 0 // acknowledged too late to act on: the next step releases it
	case errors.Is(err, jetstream.ErrKeyExists) || isWrongLastSeq(err):
		l.ok()
		return l.contested(ctx)
	case ctx.Err() != nil:
		return 0
	default:
		// The create may have been written all the same: keep the token, so that the
		// entry is recognised as ours if it was.
		l.fail("acquire", err)
		return l.retry
	}
}

// contested looks at the entry that stopped a create. It may be ours, from an earlier create
// whose answer was lost.
func (l *Lease) contested(ctx context.Context) time.Duration {
	e, v, err := l.read(ctx)
	switch {
	case errors.Is(err, jetstream.ErrKeyNotFound):
		return minLeaseRenew // gone since (or a replica lags): try again soon
	case err != nil:
		if ctx.Err() == nil {
			l.fail("read the lease", err)
		}
		return l.retry
	case v.Token == l.token:
		// Ours: written after tokenAt, so it cannot expire before tokenAt + TTL.
		l.rev, l.claimed = e.Revision(), epochOf(v, e.Revision())
		if until := l.tokenAt.Add(l.ttl - l.margin); l.now().Before(until) {
			l.gain(l.claimed, until)
		}
		return 0 // renew at once, or release it
	default:
		l.token = "" // someone else's: none of our creates can still be pending
		if epoch := epochOf(v, e.Revision()); epoch != l.seen {
			l.seen = epoch
			l.log.Debug("lease held by another replica", "other", v.Holder, "epoch", epoch)
		}
		return l.renew
	}
}

// renewal rewrites our entry at its revision; until is the end of the current validity.
func (l *Lease) renewal(ctx context.Context, until time.Time) time.Duration {
	sent := l.now()
	v := leaseValue{Holder: l.holder, Token: l.token, Epoch: l.claimed, TTLSeconds: int64(l.ttl / time.Second), Acquired: l.tokenAt, Renewed: sent}
	// An answer after the validity ends cannot be acted on: wait no longer than that.
	cctx, cancel := context.WithTimeout(ctx, min(l.timeout, until.Sub(sent)))
	rev, err := l.write(cctx, v)
	cancel()
	switch {
	case err == nil:
		l.ok()
		l.rev = rev
		if l.now().Before(until) {
			l.extend(sent.Add(l.ttl - l.margin))
			return l.untilNext(sent)
		}
		return 0 // acknowledged after the validity ended: the next step releases it
	case isWrongLastSeq(err):
		l.ok()
		e, v, rerr := l.read(ctx)
		switch {
		case rerr == nil && v.Token == l.token && e.Revision() > l.rev:
			// An earlier renewal whose answer was lost did get written.
			l.rev = e.Revision()
			return 0
		case rerr == nil && v.Token == l.token:
			return l.retryBefore(until) // a replica behind the leader answered: ask again
		case rerr == nil || errors.Is(rerr, jetstream.ErrKeyNotFound):
			l.lose("the entry changed")
			l.token, l.rev, l.claimed = "", 0, 0 // not ours: nothing to release
			return 0
		default:
			l.fail("read the lease", rerr)
			return l.retryBefore(until)
		}
	case ctx.Err() != nil:
		return 0
	default:
		l.fail("renew", err)
		return l.retryBefore(until)
	}
}

// write publishes v at our entry's revision with the lease's TTL. KeyValue.Update cannot set
// a TTL, so this publishes as it does, adding one.
func (l *Lease) write(ctx context.Context, v leaseValue) (uint64, error) {
	ack, err := l.js.PublishMsg(ctx, &nats.Msg{Subject: l.subject, Data: encodeLeaseValue(v)},
		jetstream.WithExpectStream(l.stream),
		jetstream.WithExpectLastSequencePerSubject(l.rev),
		jetstream.WithMsgTTL(l.ttl))
	if err != nil {
		return 0, err
	}
	return ack.Sequence, nil
}

// read returns the entry and its decoded value. A deleted or absent entry is
// jetstream.ErrKeyNotFound; an undecodable one is someone else's.
func (l *Lease) read(ctx context.Context) (jetstream.KeyValueEntry, leaseValue, error) {
	cctx, cancel := context.WithTimeout(ctx, l.timeout)
	defer cancel()
	e, err := l.kv.Get(cctx, l.key)
	if err != nil {
		return nil, leaseValue{}, err
	}
	v, err := decodeLeaseValue(e.Value())
	if err != nil {
		return e, leaseValue{}, nil // not ours, whatever it is
	}
	return e, v, nil
}

// stop ends Run: stop holding, then free the lease for the others.
func (l *Lease) stop() {
	l.lose("stopping")
	if l.noRelease {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), l.timeout)
	defer cancel()
	if l.rev == 0 && l.token != "" {
		// A create whose answer we did not see may have been written.
		if e, v, err := l.read(ctx); err == nil && v.Token == l.token {
			l.rev = e.Revision()
		}
	}
	l.release(ctx)
}

// release deletes our entry if it is still at the revision we wrote, and forgets our claim.
func (l *Lease) release(ctx context.Context) {
	rev := l.rev
	l.token, l.rev, l.claimed = "", 0, 0
	if rev == 0 {
		return
	}
	cctx, cancel := context.WithTimeout(ctx, l.timeout)
	defer cancel()
	err := l.kv.Delete(cctx, l.key, jetstream.LastRevision(rev))
	switch {
	case err == nil:
		l.log.Info("lease released", "revision", rev)
	case errors.Is(err, jetstream.ErrKeyRevisionMismatch) || isWrongLastSeq(err):
		// Already expired or taken over.
	default:
		l.log.Warn("release the lease", "revision", rev, "error", err)
	}
}

// gain announces a holding of the given epoch, valid until until.
func (l *Lease) gain(epoch uint64, until time.Time) {
	l.mu.Lock()
	l.epoch, l.until = epoch, until
	l.mu.Unlock()
	l.log.Info("lease acquired", "epoch", epoch)
	l.publish(State{Held: true, Epoch: epoch})
}

// extend moves the end of the current holding's validity.
func (l *Lease) extend(until time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if until.After(l.until) {
		l.until = until
	}
}

// lose ends the holding, if there is one.
func (l *Lease) lose(reason string) {
	l.mu.Lock()
	epoch := l.epoch
	l.epoch, l.until = 0, time.Time{}
	l.mu.Unlock()
	if epoch == 0 {
		return
	}
	l.log.Info("lease lost", "epoch", epoch, "reason", reason)
	l.publish(State{})
}

// publish replaces whatever undelivered state the channel holds with s. Only Run's
// goroutine sends, so the send never blocks.
func (l *Lease) publish(s State) {
	select {
	case <-l.changes:
	default:
	}
	l.changes <- s
}

func (l *Lease) untilNext(sent time.Time) time.Duration {
	return sent.Add(l.renew).Sub(l.now())
}

func (l *Lease) retryBefore(until time.Time) time.Duration {
	return max(min(l.retry, until.Sub(l.now())), 0)
}

func (l *Lease) fail(what string, err error) {
	if !l.failing {
		l.log.Warn("lease call failed", "call", what, "error", err)
	}
	l.failing = true
}

func (l *Lease) ok() {
	if l.failing {
		l.log.Info("lease calls recovered")
	}
	l.failing = false
}

// isWrongLastSeq reports a compare-and-set refused by the server: the entry is not at the
// revision the write named. Replicated streams use a different code than single ones.
func isWrongLastSeq(err error) bool {
	var apiErr *jetstream.APIError
	if !errors.As(err, &apiErr) {
		return false
	}
	return apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence ||
		apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequenceConstant
}
