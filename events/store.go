package events

import (
	"context"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// StreamConfig sets up the stream that holds every event.
type StreamConfig struct {
	// Name of the stream; "INTERLOCK" when empty.
	Name string
	// Replicas of the stream: 1 on a single server, 3 in a cluster. 1 when zero.
	Replicas int
	// Duplicates is the window in which a retried append (same event id) is recognised. Two
	// minutes when zero.
	Duplicates time.Duration
}

// DefaultStreamName is the stream's name unless configured otherwise.
const DefaultStreamName = "INTERLOCK"

// maxEventSize bounds one event on the stream.
const maxEventSize = 1 << 20

func (c *StreamConfig) setDefaults() {
	if c.Name == "" {
		c.Name = DefaultStreamName
	}
	if c.Replicas == 0 {
		c.Replicas = 1
	}
	if c.Duplicates == 0 {
		c.Duplicates = 2 * time.Minute
	}
}

// Validate reports every problem with the configuration.
func (c StreamConfig) Validate() error {
	var errs []error
	if c.Replicas < 0 || c.Replicas > 5 {
		errs = append(errs, fmt.Errorf("replicas: %d is not between 1 and 5", c.Replicas))
	}
	if c.Duplicates < 0 {
		errs = append(errs, fmt.Errorf("duplicates: %v is negative", c.Duplicates))
	}
	return errors.Join(errs...)
}

// Store appends events to, and reads them from, one JetStream stream.
type Store struct {
	js     jetstream.JetStream
	stream jetstream.Stream
	name   string
	// replicated is set for a stream of more than one replica, whose reads ask the leader
	// first (see [Store.read]).
	replicated bool

	// With a signer: every append is signed and chained, and every read is verified.
	signer   *Signer
	verifier *Verifier
}

// Option configures a [Store].
type Option func(*storeOptions)

type storeOptions struct {
	signer     *Signer
	verifyKeys []ed25519.PublicKey
}

// WithSigner makes the store sign every event it appends with s and chain it to the previous
// accepted event of its subject, and verify every event it reads (see [Verifier]): a message
// that fails verification reaches a [Handler] as an [*IntegrityError]. The first time a store
// with a signer opens a stream, it records the stream's last sequence as the cut-over in the
// stream's metadata ([MetadataCutover]): unsigned events up to it are legacy and accepted.
func WithSigner(s *Signer) Option {
	return func(o *storeOptions) { o.signer = s }
}

// WithVerifyKeys adds keys that events may be signed with besides the signer's own: the keys of
// earlier signers, after a rotation. It only matters with [WithSigner].
func WithVerifyKeys(keys ...ed25519.PublicKey) Option {
	return func(o *storeOptions) { o.verifyKeys = append(o.verifyKeys, keys...) }
}

// MetadataCutover is the stream metadata key holding the cut-over sequence: the last sequence
// at which unsigned (legacy) events are accepted.
const MetadataCutover = "interlock.signing.cutover"

// Open creates the stream, or updates it to cfg, and returns a store on it. The stream keeps
// everything (limits retention, no age limit), refuses deletes and purges, and discards new
// messages if a limit is ever reached rather than losing old ones. The stream's metadata is kept
// as it is, and with [WithSigner] the cut-over is recorded in it once.
//
// Errors: one wrapping [ErrKey] for a bad verification key; otherwise a transport error.
func Open(ctx context.Context, js jetstream.JetStream, cfg StreamConfig, opts ...Option) (*Store, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("stream config: %w", err)
	}
	cfg.setDefaults()
	var o storeOptions
	for _, opt := range opts {
		if opt != nil {
			opt(&o)
		}
	}
	meta, err := streamMetadata(ctx, js, cfg.Name, o.signer != nil)
	if err != nil {
		return nil, err
	}
	stream, err := js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name:        cfg.Name,
		Description: "Interlock flag events: the source of truth",
		Subjects:    []string{AllSubjects},
		Retention:   jetstream.LimitsPolicy,
		Storage:     jetstream.FileStorage,
		Discard:     jetstream.DiscardNew,
		MaxAge:      0,
		MaxMsgSize:  maxEventSize,
		Duplicates:  cfg.Duplicates,
		Replicas:    cfg.Replicas,
		DenyDelete:  true,
		DenyPurge:   true,
		AllowDirect: true,
		Metadata:    meta,
	})
	if err != nil {
		return nil, fmt.Errorf("create stream %s: %w", cfg.Name, err)
	}
	s := &Store{js: js, stream: stream, name: cfg.Name, replicated: stream.CachedInfo().Config.Replicas > 1}
	if o.signer == nil {
		return s, nil
	}
	// What the stream holds, which may be another replica's cut-over recorded meanwhile.
	v := stream.CachedInfo().Config.Metadata[MetadataCutover]
	cutover, err := strconv.ParseUint(v, 10, 64)
	if err != nil {
		return nil, fmt.Errorf("stream %s metadata %s: %q is not a sequence", cfg.Name, MetadataCutover, truncate(v))
	}
	keys, err := NewKeys(append([]ed25519.PublicKey{o.signer.Public()}, o.verifyKeys...)...)
	if err != nil {
		return nil, fmt.Errorf("verify keys: %w", err)
	}
	s.signer, s.verifier = o.signer, NewVerifier(keys, cutover)
	return s, nil
}

// streamMetadata is the metadata the stream keeps: what it has (without the server's own
// "_nats." entries), and the cut-over when cutover is set and none is recorded yet: the
// stream's last sequence, 0 for a new stream.
func streamMetadata(ctx context.Context, js jetstream.JetStream, name string, cutover bool) (map[string]string, error) {
	meta := map[string]string{}
	var last uint64
	stream, err := js.Stream(ctx, name)
	switch {
	case err == nil:
		info := stream.CachedInfo()
		for k, v := range info.Config.Metadata {
			if !strings.HasPrefix(k, "_nats.") {
				meta[k] = v
			}
		}
		last = info.State.LastSeq
	case !errors.Is(err, jetstream.ErrStreamNotFound):
		return nil, fmt.Errorf("stream %s: %w", name, err)
	}
	if cutover {
		if _, ok := meta[MetadataCutover]; !ok {
			meta[MetadataCutover] = strconv.FormatUint(last, 10)
		}
	}
	if len(meta) == 0 {
		return nil, nil
	}
	return meta, nil
}

// Verifier is the store's verifier: nil without [WithSigner].
func (s *Store) Verifier() *Verifier { return s.verifier }

// SigningKeyID is the id of the key the store signs with; "" without [WithSigner].
func (s *Store) SigningKeyID() string {
	if s.signer == nil {
		return ""
	}
	return s.signer.KeyID()
}

// DuplicateWindow is the stream's duplicate window: for that long after an event was stored, an
// append of an event with the same id writes nothing and answers with the stored copy.
func (s *Store) DuplicateWindow() time.Duration { return s.stream.CachedInfo().Config.Duplicates }

// StreamName is the name of the stream the store writes to.
func (s *Store) StreamName() string { return s.name }

// Append writes ev on its subject if the subject's last sequence is still expectedSeq (0: the
// subject holds no event yet), and returns the event's stream sequence, also set in ev.Sequence.
//
// The event id is the message id, so appending the same event again (a retry after a lost
// acknowledgement) writes nothing and returns the sequence of the copy already stored, whether
// the stream answers the retry with a duplicate acknowledgement (replicated streams) or with
// "wrong last sequence" (a single server). Then *ev becomes the stored copy, which may differ from
// the event sent (its time, say).
//
// Errors: [ErrInvalid] or [ErrUnknownType] for an event that fails [Event.Validate];
// [ErrConflict] when another event was appended after expectedSeq; an [*UnavailableError] when
// the store could not take the event (NATS not connected, no stream leader, no stream): nothing
// was written; an [*OutcomeError] when the event was sent but no answer came (a timeout, the
// connection lost meanwhile, ctx ended): it may be stored, and appending the same event again
// settles it; ctx's error when ctx ended before anything was sent; otherwise an error of the
// stream refusing the event.
func (s *Store) Append(ctx context.Context, ev *Event, expectedSeq uint64) (uint64, error) {
	if err := ev.Validate(); err != nil {
		return 0, err
	}
	msg := ev.Msg()
	if len(msg.Data) > maxEventSize-8<<10 {
		return 0, invalid("event", "larger than %d bytes", maxEventSize-8<<10)
	}
	if err := s.connected(); err != nil {
		return 0, fmt.Errorf("append %s: %w", msg.Subject, err)
	}
	var hash [32]byte
	if s.signer != nil {
		prev, err := s.prevHash(ctx, msg.Subject, expectedSeq)
		if err != nil {
			return 0, fmt.Errorf("append %s: %w", msg.Subject, unavailable(err))
		}
		hash = s.signer.Sign(msg, prev)
	}
	if err := ctx.Err(); err != nil {
		return 0, fmt.Errorf("append %s: %w", msg.Subject, err)
	}
	ack, err := s.js.PublishMsg(ctx, msg,
		jetstream.WithExpectStream(s.name),
		jetstream.WithExpectLastSequencePerSubject(expectedSeq),
	)
	if err == nil {
		if ack.Duplicate {
			// An earlier attempt stored this event: answer with the stored copy.
			return s.stored(ctx, ev, msg.Subject, ack.Sequence)
		}
		ev.Sequence, ev.Hash = ack.Sequence, hash
		if s.verifier != nil {
			s.appended(msg.Subject, expectedSeq, ack.Sequence, hash)
		}
		return ack.Sequence, nil
	}
	switch {
	case notSent(err):
		return 0, fmt.Errorf("append %s: %w", msg.Subject, &UnavailableError{Err: err})
	case unanswered(err), isDuplicateInProcess(err):
		// Unanswered, or an earlier attempt of this very event is still being stored: either
		// way it may or may not be stored, and appending it again settles it.
		return 0, &OutcomeError{EventID: ev.ID, Subject: msg.Subject, Err: err}
	case !isWrongLastSequence(err):
		return 0, fmt.Errorf("append %s: %w", msg.Subject, err)
	}
	// The subject moved on. Either this very event was stored by an earlier attempt (then it is
	// the first message on the subject after expectedSeq) or somebody else won.
	next, gerr := s.getMsg(ctx, expectedSeq+1, msg.Subject)
	if gerr == nil && next.Header.Get(HeaderID) == ev.ID {
		return s.decodeStored(ev, next)
	}
	if gerr != nil && !errors.Is(gerr, jetstream.ErrMsgNotFound) {
		return 0, fmt.Errorf("append %s: check earlier attempt: %w", msg.Subject, unavailable(gerr))
	}
	return 0, fmt.Errorf("append %s after sequence %d: %w", msg.Subject, expectedSeq, ErrConflict)
}

// stored sets *ev to the copy of it stored at seq, after a duplicate acknowledgement.
func (s *Store) stored(ctx context.Context, ev *Event, subject string, seq uint64) (uint64, error) {
	raw, err := s.getMsg(ctx, seq, "")
	if err != nil {
		// The event is stored at seq; only its stored copy could not be read.
		ev.Sequence = seq
		return 0, &OutcomeError{EventID: ev.ID, Subject: subject, Err: fmt.Errorf("stored at sequence %d, unread: %w", seq, err)}
	}
	return s.decodeStored(ev, raw)
}

// decodeStored sets *ev to the stored message raw, a copy of ev stored by an earlier attempt.
func (s *Store) decodeStored(ev *Event, raw *jetstream.RawStreamMsg) (uint64, error) {
	stored, err := Decode(raw.Subject, raw.Header, raw.Data)
	if err != nil {
		return 0, fmt.Errorf("append %s: the stored copy at sequence %d: %w", raw.Subject, raw.Sequence, err)
	}
	stored.Sequence, stored.Stored = raw.Sequence, raw.Time
	stored.Hash = Hash(raw.Subject, raw.Header, raw.Data)
	*ev = stored
	return raw.Sequence, nil
}

// jsErrDuplicateInProcess is JetStream's answer to a message whose id an earlier publish still
// being stored carries ("duplicate message id is in process"); nats.go names no constant for it.
const jsErrDuplicateInProcess jetstream.ErrorCode = 10158

func isDuplicateInProcess(err error) bool {
	var apiErr *jetstream.APIError
	return errors.As(err, &apiErr) && apiErr.ErrorCode == jsErrDuplicateInProcess
}

func isWrongLastSequence(err error) bool {
	var apiErr *jetstream.APIError
	if !errors.As(err, &apiErr) {
		return false
	}
	return apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence ||
		apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequenceConstant
}

// LastSequence is the sequence of the last event in the stream (0 when empty).
//
// Errors: an [*UnavailableError] when the store cannot answer.
func (s *Store) LastSequence(ctx context.Context) (uint64, error) {
	if err := s.connected(); err != nil {
		return 0, fmt.Errorf("stream info: %w", err)
	}
	info, err := s.stream.Info(ctx)
	if err != nil {
		return 0, fmt.Errorf("stream info: %w", unavailable(err))
	}
	return info.State.LastSeq, nil
}

// MessageHash returns the subject and hash ([Hash]) of the message stored at sequence seq, so
// that a reader starting from a snapshot can check that the stream is the one it was taken of.
//
// Errors: one wrapping jetstream.ErrMsgNotFound when there is no such message; otherwise a
// transport error.
func (s *Store) MessageHash(ctx context.Context, seq uint64) (string, [32]byte, error) {
	msg, err := s.stream.GetMsg(ctx, seq)
	if err != nil {
		return "", [32]byte{}, fmt.Errorf("message %d: %w", seq, err)
	}
	if msg.Sequence != seq {
		// A direct get reads the sequence from the answer's headers, which a stored message
		// may carry too.
		return "", [32]byte{}, fmt.Errorf("message %d: the answer says it is message %d", seq, msg.Sequence)
	}
	return msg.Subject, Hash(msg.Subject, msg.Header, msg.Data), nil
}

// StoredAt is the time the stream stored the message at sequence seq.
//
// Errors: one wrapping jetstream.ErrMsgNotFound when there is none; otherwise a transport error.
func (s *Store) StoredAt(ctx context.Context, seq uint64) (time.Time, error) {
	msg, err := s.stream.GetMsg(ctx, seq)
	if err != nil {
		return time.Time{}, fmt.Errorf("message %d: %w", seq, err)
	}
	return msg.Time, nil
}

// Query selects the events a read returns.
type Query struct {
	// Subjects filters by subject ([FlagSubject], [EnvironmentSubjects]); all events when empty.
	Subjects []string
	// FromSequence starts at this stream sequence (inclusive) when not zero.
	FromSequence uint64
	// FromTime starts at the first event stored at or after this time when not zero and
	// FromSequence is zero (a sequence, being exact, wins).
	FromTime time.Time
}

func (q Query) consumerConfig() (jetstream.DeliverPolicy, uint64, *time.Time) {
	switch {
	case q.FromSequence > 0:
		return jetstream.DeliverByStartSequencePolicy, q.FromSequence, nil
	case !q.FromTime.IsZero():
		t := q.FromTime
		return jetstream.DeliverByStartTimePolicy, 0, &t
	default:
		return jetstream.DeliverAllPolicy, 0, nil
	}
}

func (q Query) filters() []string {
	if len(q.Subjects) == 0 {
		return []string{AllSubjects}
	}
	return q.Subjects
}

// Handler receives events in stream order. A message that does not decode arrives as an error
// wrapping [ErrMalformed] or [ErrUnknownType] with ev.Sequence set, so the caller can skip it and
// say so. Returning an error stops the read and is returned by it.
type Handler func(ev Event, err error) error

// ErrStop may be returned by a [Handler] to end a read early without an error.
var ErrStop = errors.New("stop")

// Read calls h for every event that q selects and that was stored when Read began, in stream
// order, then returns. It returns nil when h returns [ErrStop]. With [WithSigner], a message
// that fails verification reaches h as an error wrapping [ErrIntegrity] (an [*IntegrityError])
// with ev.Sequence set, and whatever of ev decoded.
func (s *Store) Read(ctx context.Context, q Query, h Handler) error {
	return s.read(ctx, q, s.deliver(q, h))
}

// rawHandler receives stored messages as they are.
type rawHandler func(ctx context.Context, m rawMsg) error

// rawMsg is one stored message.
type rawMsg struct {
	subject string
	seq     uint64
	stored  time.Time
	hdr     nats.Header
	data    []byte
}

// rawOf reads what a handler needs of a delivered message.
func rawOf(msg jetstream.Msg) (rawMsg, error) {
	meta, err := msg.Metadata()
	if err != nil {
		return rawMsg{}, err
	}
	return rawMsg{subject: msg.Subject(), seq: meta.Sequence.Stream, stored: meta.Timestamp, hdr: msg.Headers(), data: msg.Data()}, nil
}

// deliver turns h into a rawHandler that decodes each message and, with a verifier, judges it.
func (s *Store) deliver(q Query, h Handler) rawHandler {
	from := q.FromSequence
	if from == 0 && q.FromTime.IsZero() {
		from = 1
	}
	all := len(q.Subjects) == 0 || slices.Contains(q.Subjects, AllSubjects)
	return func(ctx context.Context, m rawMsg) error {
		if from == 0 {
			from = m.seq // a read by time covers everything from its first message
		}
		ev, derr, err := s.decode(ctx, m, from, all)
		if err != nil {
			return err
		}
		return h(ev, derr)
	}
}

// decode decodes one stored message and, with a verifier, judges it as a message of a read from
// sequence from (see judge). derr is what a Handler receives; err is a failure to judge.
func (s *Store) decode(ctx context.Context, m rawMsg, from uint64, all bool) (ev Event, derr, err error) {
	ev, derr = Decode(m.subject, m.hdr, m.data)
	if derr != nil {
		// Whatever the subject says, so that a reader knows which chain the message is on.
		ev.Environment, ev.Entity, ev.Key, _ = parseSubject(m.subject)
	}
	ev.Sequence, ev.Stored, ev.Hash = m.seq, m.stored, Hash(m.subject, m.hdr, m.data)
	if s.verifier != nil {
		verr, err := s.judge(ctx, m.subject, m.seq, m.hdr, m.data, from, all)
		if err != nil {
			return Event{}, nil, err
		}
		if verr != nil {
			derr = verr
		}
	}
	return ev, derr, nil
}

// [Store.ReadSequences] fetches minGetBatch messages first, then twice as many each time up to
// maxGetBatch: a reader that stops early fetched little more than it used.
const (
	minGetBatch = 64
	maxGetBatch = 1024
)

// ReadSequences calls h for the message stored at each of seqs, in the order given, and returns.
// It fetches them by direct get, several at a time, so that a reader that knows where the
// messages it wants are (an index) reads those and nothing else. Each message reaches h as it
// would in [Store.Read]: decoded, and with [WithSigner] judged against its subject's chain, so
// the messages of one subject must be given in stream order. It returns nil when h returns
// [ErrStop].
//
// Errors: one wrapping jetstream.ErrMsgNotFound when a sequence holds no message; an
// [*UnavailableError] when the store cannot answer; h's errors as they are.
func (s *Store) ReadSequences(ctx context.Context, seqs []uint64, h Handler) error {
	if err := s.connected(); err != nil {
		return fmt.Errorf("read %d messages: %w", len(seqs), err)
	}
	msgs := make([]*jetstream.RawStreamMsg, min(len(seqs), maxGetBatch))
	for size := minGetBatch; len(seqs) > 0; size = min(size*2, maxGetBatch) {
		batch := seqs[:min(len(seqs), size)]
		seqs = seqs[len(batch):]
		if err := s.getMsgs(ctx, batch, msgs); err != nil {
			return err
		}
		for i, seq := range batch {
			raw := msgs[i]
			// The stored time as a read's metadata gives it (local), not as the answer's header
			// does (UTC), so that the event is the same whichever way it was read.
			m := rawMsg{subject: raw.Subject, seq: seq, stored: time.Unix(0, raw.Time.UnixNano()), hdr: raw.Header, data: raw.Data}
			ev, derr, err := s.decode(ctx, m, seq, false)
			if err != nil {
				return err
			}
			if err := h(ev, derr); err != nil {
				if errors.Is(err, ErrStop) {
					return nil
				}
				return err
			}
		}
	}
	return nil
}

// getTimeout bounds the wait for the answers to one batch of direct gets when ctx has no
// deadline.
const getTimeout = 10 * time.Second

// getMsgs fetches the message at each of seqs into msgs with direct gets, all the requests of the
// batch sent at once on one reply subscription: one round trip a batch, not one a message.
func (s *Store) getMsgs(ctx context.Context, seqs []uint64, msgs []*jetstream.RawStreamMsg) error {
	nc := s.js.Conn()
	inbox := nats.NewInbox()
	answers := make(chan *nats.Msg, len(seqs))
	sub, err := nc.ChanSubscribe(inbox+".*", answers)
	if err != nil {
		return fmt.Errorf("read %d messages: %w", len(seqs), unavailable(err))
	}
	defer func() { _ = sub.Unsubscribe() }()
	prefix := s.js.Options().APIPrefix
	if prefix == "" {
		prefix = jetstream.DefaultAPIPrefix
	}
	subject := prefix + "DIRECT.GET." + s.name
	body := make([]byte, 0, 32)
	for i, seq := range seqs {
		body = append(strconv.AppendUint(append(body[:0], `{"seq":`...), seq, 10), '}')
		if err := nc.PublishRequest(subject, inbox+"."+strconv.Itoa(i), body); err != nil {
			return fmt.Errorf("message %d: %w", seq, unavailable(err))
		}
	}
	timeout := time.NewTimer(getTimeout)
	defer timeout.Stop()
	for range seqs {
		var m *nats.Msg
		select {
		case m = <-answers:
		case <-ctx.Done():
			return ctx.Err()
		case <-timeout.C:
			return fmt.Errorf("read %d messages: %w", len(seqs), unavailable(nats.ErrTimeout))
		}
		_, token, _ := strings.Cut(m.Subject, inbox+".")
		i, err := strconv.Atoi(token)
		if err != nil || i < 0 || i >= len(seqs) {
			return fmt.Errorf("read %d messages: an answer on %q", len(seqs), truncate(m.Subject))
		}
		raw, err := directGetMsg(m)
		switch {
		case errors.Is(err, jetstream.ErrMsgNotFound):
			return fmt.Errorf("message %d: %w", seqs[i], err)
		case err != nil:
			return fmt.Errorf("message %d: %w", seqs[i], unavailable(err))
		case raw.Sequence != seqs[i]:
			// The sequence comes from the answer's headers, which a stored message may carry too.
			return fmt.Errorf("message %d: the answer says it is message %d", seqs[i], raw.Sequence)
		}
		msgs[i] = raw
	}
	return nil
}

// directGetMsg reads the answer to a direct get as jetstream's GetMsg does: the message with its
// stream, subject, sequence and time in headers, or a status.
func directGetMsg(m *nats.Msg) (*jetstream.RawStreamMsg, error) {
	if len(m.Data) == 0 {
		switch status := m.Header.Get("Status"); status {
		case "":
		case "404":
			return nil, jetstream.ErrMsgNotFound
		default:
			return nil, fmt.Errorf("direct get: status %s %s", status, m.Header.Get("Description"))
		}
	}
	seq, err := strconv.ParseUint(m.Header.Get(jetstream.SequenceHeader), 10, 64)
	if err != nil {
		return nil, fmt.Errorf("direct get: sequence %q: %w", m.Header.Get(jetstream.SequenceHeader), err)
	}
	tm, err := time.Parse(time.RFC3339Nano, m.Header.Get(jetstream.TimeStampHeaer))
	if err != nil {
		return nil, fmt.Errorf("direct get: time: %w", err)
	}
	subject := m.Header.Get(jetstream.SubjectHeader)
	if subject == "" {
		return nil, errors.New("direct get: no subject")
	}
	return &jetstream.RawStreamMsg{Subject: subject, Sequence: seq, Header: m.Header, Data: m.Data, Time: tm}, nil
}

// consumerIdle is how long the server keeps the consumer of a read or a follow whose client
// stopped pulling without deleting it (a process that died, a connection that broke).
const consumerIdle = 5 * time.Second

// A follow's pull requests last followExpiry, and the server sends a heartbeat every
// followHeartbeat while it has nothing to deliver: two missed heartbeats end the consumer.
const (
	followExpiry    = 5 * time.Second
	followHeartbeat = time.Second
)

// A read's pull request may reach the server of a consumer just created there before that
// server's interest in it has spread through the cluster, and is then lost. With a heartbeat every
// readHeartbeat while a pull waits, the read finds out within two and pulls again, up to
// readHeartbeatMisses times in a row.
const (
	readExpiry          = time.Second
	readHeartbeat       = 500 * time.Millisecond
	readHeartbeatMisses = 3
)

// read calls fn for every message that q selects and that was stored when read began. Errors of
// the store are [*UnavailableError]s; fn's errors are returned as they are.
//
// On a stream of one replica the consumer lives on the stream's only server, and what was stored
// when the read began is what the consumer counts as pending at its creation. On a replicated
// stream the server places the read's consumer (of one replica, in memory: a replicated one
// would cost a consensus group per read) on any of the stream's peers, a follower that has not
// stored the newest messages yet among them: its pending count may fall short of what the
// stream acknowledged. There the read first asks the stream leader, which has stored every
// acknowledged message, for the sequence of the last message on the read's subjects, and reads
// until the consumer delivered it: a consumer on a follower delivers it once the follower stored
// it.
func (s *Store) read(ctx context.Context, q Query, fn rawHandler) error {
	if err := s.connected(); err != nil {
		return fmt.Errorf("read %v: %w", q.filters(), err)
	}
	// upTo is the leader's last sequence on the read's subjects, on a replicated stream only.
	// Comparing last sequences is exact for any start: every replica holds a prefix of the
	// leader's messages (the stream never deletes one), and the messages a read selects are
	// those of its subjects from its start on, so a read that delivered the leader's last one has
	// delivered all of them. A count of the subjects' messages would be exact only for reads
	// from the first sequence: the leader counts no range.
	var upTo uint64
	if s.replicated {
		last, err := s.lastOnLeader(ctx, q.filters())
		if err != nil {
			return fmt.Errorf("read %v: %w", q.filters(), unavailable(err))
		}
		if last == 0 || q.FromSequence > last {
			return nil // the leader stores nothing the read selects
		}
		upTo = last
	}
	policy, startSeq, startTime := q.consumerConfig()
	cons, err := s.stream.CreateConsumer(ctx, jetstream.ConsumerConfig{
		FilterSubjects:    q.filters(),
		DeliverPolicy:     policy,
		OptStartSeq:       startSeq,
		OptStartTime:      startTime,
		AckPolicy:         jetstream.AckNonePolicy,
		MemoryStorage:     true,
		Replicas:          1,
		InactiveThreshold: consumerIdle,
	})
	if err != nil {
		return fmt.Errorf("read %v: %w", q.filters(), unavailable(err))
	}
	info := cons.CachedInfo()
	defer s.deleteConsumer(ctx, info.Name)
	// What was stored when the read began, on one replica: the consumer's pending count at its
	// creation. The count of what is pending later grows with every event appended meanwhile, so
	// under a steady stream of appends it may never reach zero: the read stops after this many.
	stored := info.NumPending
	switch {
	case upTo > 0 && info.Delivered.Stream >= upTo:
		// A read by time on a replica holding upTo whose first message at or after the time
		// comes after upTo: nothing stored when the read began is that recent.
		return nil
	case upTo == 0 && stored == 0:
		return nil
	}
	batch := int(min(max(stored, 1), 1000))
	it, err := cons.Messages(jetstream.PullMaxMessages(batch),
		jetstream.PullExpiry(readExpiry), jetstream.PullHeartbeat(readHeartbeat))
	if err != nil {
		return fmt.Errorf("read %v: %w", q.filters(), unavailable(err))
	}
	defer it.Stop()
	// A replica behind the time a read starts from starts it after its own last message, which
	// may be older than the time: those messages are skipped, up to the first one at or after
	// it (where the leader would have started).
	skipOlder := upTo > 0 && q.FromSequence == 0 && !q.FromTime.IsZero()
	missed := 0
	for read := uint64(1); ; read++ {
		msg, err := it.Next(jetstream.NextContext(ctx))
		if errors.Is(err, jetstream.ErrNoHeartbeat) && missed < readHeartbeatMisses && ctx.Err() == nil {
			missed++
			read--
			continue
		}
		if err != nil {
			return fmt.Errorf("read %v: %w", q.filters(), unavailable(err))
		}
		missed = 0
		m, err := rawOf(msg)
		if err != nil {
			return fmt.Errorf("read %v: %w", q.filters(), err)
		}
		if skipOlder && m.stored.Before(q.FromTime) {
			if m.seq >= upTo {
				return nil
			}
			continue
		}
		skipOlder = false
		if err := fn(ctx, m); err != nil {
			if errors.Is(err, ErrStop) {
				return nil
			}
			return err
		}
		if upTo > 0 {
			if m.seq >= upTo {
				return nil
			}
			continue
		}
		if p, _ := msg.Metadata(); p.NumPending == 0 || read >= stored {
			return nil
		}
	}
}

// lastOnLeader is the sequence of the last message on any of subjects as the stream leader
// stores it (0 when there is none).
func (s *Store) lastOnLeader(ctx context.Context, subjects []string) (uint64, error) {
	var last uint64
	for _, subject := range subjects {
		msg, err := s.leaderGet(ctx, msgGetRequest{LastFor: subject, NoHeaders: true})
		switch {
		case errors.Is(err, jetstream.ErrMsgNotFound):
			continue
		case err != nil:
			return 0, fmt.Errorf("last message on %s: %w", subject, err)
		}
		last = max(last, msg.Sequence)
	}
	return last, nil
}

// getMsg is the message at seq, or with a subject the first on it at or after seq, as stored
// when it is asked for: on a replicated stream the leader answers (see [Store.leaderGet]),
// since a follower may not have stored a message that was just acknowledged. It returns
// jetstream.ErrMsgNotFound when there is none.
func (s *Store) getMsg(ctx context.Context, seq uint64, subject string) (*jetstream.RawStreamMsg, error) {
	if s.replicated {
		return s.leaderGet(ctx, msgGetRequest{Seq: seq, NextFor: subject})
	}
	if subject != "" {
		return s.stream.GetMsg(ctx, seq, jetstream.WithGetMsgSubject(subject))
	}
	return s.stream.GetMsg(ctx, seq)
}

// msgGetRequest is a request of JetStream's message get API.
type msgGetRequest struct {
	Seq       uint64 `json:"seq,omitempty"`
	NextFor   string `json:"next_by_subj,omitempty"`
	LastFor   string `json:"last_by_subj,omitempty"`
	NoHeaders bool   `json:"no_hdr,omitempty"`
}

// leaderGet asks the stream leader for a message with JetStream's message get API, which only
// the leader answers; the direct get that nats.go's GetMsg uses for a stream allowing it may be
// answered by any replica, including one that is behind. It returns jetstream.ErrMsgNotFound
// when there is no such message.
func (s *Store) leaderGet(ctx context.Context, req msgGetRequest) (*jetstream.RawStreamMsg, error) {
	opts := s.js.Options()
	prefix := jetstream.DefaultAPIPrefix
	switch {
	case opts.Domain != "":
		prefix = "$JS." + opts.Domain + ".API."
	case opts.APIPrefix != "":
		prefix = strings.TrimSuffix(opts.APIPrefix, ".") + "."
	}
	if _, ok := ctx.Deadline(); !ok && opts.DefaultTimeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, opts.DefaultTimeout)
		defer cancel()
	}
	body, err := json.Marshal(req)
	if err != nil {
		return nil, err
	}
	answer, err := s.js.Conn().RequestWithContext(ctx, prefix+"STREAM.MSG.GET."+s.name, body)
	if err != nil {
		return nil, err
	}
	var resp struct {
		Error   *jetstream.APIError `json:"error"`
		Message *struct {
			Subject  string    `json:"subject"`
			Sequence uint64    `json:"seq"`
			Header   []byte    `json:"hdrs"`
			Data     []byte    `json:"data"`
			Time     time.Time `json:"time"`
		} `json:"message"`
	}
	if err := json.Unmarshal(answer.Data, &resp); err != nil {
		return nil, fmt.Errorf("decode the message get answer: %w", err)
	}
	switch {
	case resp.Error != nil && resp.Error.ErrorCode == jetstream.JSErrCodeMessageNotFound:
		return nil, jetstream.ErrMsgNotFound
	case resp.Error != nil:
		return nil, resp.Error
	case resp.Message == nil:
		return nil, jetstream.ErrInvalidJetStreamResponse
	}
	m := resp.Message
	var header nats.Header
	if len(m.Header) > 0 {
		if header, err = nats.DecodeHeadersMsg(m.Header); err != nil {
			return nil, fmt.Errorf("decode the headers of message %d: %w", m.Sequence, err)
		}
	}
	return &jetstream.RawStreamMsg{Subject: m.Subject, Sequence: m.Sequence, Header: header, Data: m.Data, Time: m.Time}, nil
}

// deleteConsumer deletes a consumer of this store's once its reader is done, briefly: if it cannot
// be deleted now, it expires after consumerIdle.
func (s *Store) deleteConsumer(ctx context.Context, name string) {
	if s.connected() != nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Second)
	defer cancel()
	_ = s.stream.DeleteConsumer(ctx, name)
}

// Load returns every event of one flag, oldest first. A flag that was never created has none.
// Messages that fail verification are left out.
func (s *Store) Load(ctx context.Context, env, key string) ([]Event, error) {
	var evs []Event
	err := s.Read(ctx, Query{Subjects: []string{FlagSubject(env, key)}}, func(ev Event, err error) error {
		if errors.Is(err, ErrIntegrity) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("load %s/%s at sequence %d: %w", env, key, ev.Sequence, err)
		}
		evs = append(evs, ev)
		return nil
	})
	return evs, err
}

// Follow calls h for every event that q selects, in stream order, and keeps following new ones
// until ctx ends; then it returns nil. It rides out short interruptions (an ordered consumer
// recreates itself once from the last sequence it delivered); when that fails too (NATS is down,
// the stream is gone) it returns an [*UnavailableError] at once, and the caller resumes after the
// last event it was given. It never waits on the store after ctx ended for longer than one
// request's timeout. Its consumer is deleted when it returns, or expires a few seconds after its
// client stopped pulling. Messages that fail verification reach h as for [Store.Read].
func (s *Store) Follow(ctx context.Context, q Query, h Handler) error {
	if err := s.connected(); err != nil {
		return fmt.Errorf("follow %v: %w", q.filters(), err)
	}
	fn := s.deliver(q, h)
	policy, startSeq, startTime := q.consumerConfig()
	cons, err := s.js.OrderedConsumer(ctx, s.name, jetstream.OrderedConsumerConfig{
		FilterSubjects:    q.filters(),
		DeliverPolicy:     policy,
		OptStartSeq:       startSeq,
		OptStartTime:      startTime,
		InactiveThreshold: consumerIdle,
		// The consumer's own resets retry for ever by default, deaf to ctx and holding a lock
		// that Stop needs: one attempt, then the caller decides.
		MaxResetAttempts: 1,
	})
	if err != nil {
		return fmt.Errorf("follow %v: %w", q.filters(), unavailable(err))
	}
	// The server holding the consumer may go away without a word (a stream leader killed):
	// heartbeats every second find out within two, and the consumer is recreated elsewhere.
	it, err := cons.Messages(jetstream.PullMaxMessages(1000),
		jetstream.PullExpiry(followExpiry), jetstream.PullHeartbeat(followHeartbeat))
	if err != nil {
		return fmt.Errorf("follow %v: %w", q.filters(), unavailable(err))
	}
	defer func() {
		it.Stop()
		if info := cons.CachedInfo(); info != nil {
			s.deleteConsumer(ctx, info.Name)
		}
	}()
	for {
		msg, err := it.Next(jetstream.NextContext(ctx))
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("follow %v: %w", q.filters(), unavailable(err))
		}
		m, err := rawOf(msg)
		if err != nil {
			return fmt.Errorf("follow %v: %w", q.filters(), err)
		}
		if err := fn(ctx, m); err != nil {
			if errors.Is(err, ErrStop) {
				return nil
			}
			return err
		}
	}
}

// leaderElectedSubject is where JetStream announces that a replicated stream elected a leader.
const leaderElectedSubject = "$JS.EVENT.ADVISORY.STREAM.LEADER_ELECTED."

// LeaderChanges returns a channel that receives a value (coalesced: at most one waits) each time
// the stream elects a leader, until ctx ends. A follow whose consumer lived on the old leader's
// server learns of it only after missing heartbeats; a reader that starts again on this signal
// tracks the new leader at once. A stream of one replica never elects one: the channel stays
// quiet.
//
// Errors: one wrapping [ErrUnavailable] when the subscription cannot be made.
func (s *Store) LeaderChanges(ctx context.Context) (<-chan struct{}, error) {
	ch := make(chan struct{}, 1)
	sub, err := s.js.Conn().Subscribe(leaderElectedSubject+s.name, func(*nats.Msg) {
		select {
		case ch <- struct{}{}:
		default:
		}
	})
	if err != nil {
		return nil, fmt.Errorf("watch the leader of stream %s: %w", s.name, unavailable(err))
	}
	context.AfterFunc(ctx, func() { _ = sub.Unsubscribe() })
	return ch, nil
}
