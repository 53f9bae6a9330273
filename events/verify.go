package events

import (
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"sync"

	"github.com/nats-io/nats.go"
)

// Verifier judges stored messages: whether each was signed with a known key and chains to the
// previous accepted event of its subject. A message is accepted when
//
//   - it carries no signature and its sequence is at or below the cut-over (a legacy event,
//     written before the stream was signed), or
//   - its signature verifies with the key it names, and its previous hash is the hash of the
//     last accepted message of its subject (absent when there is none).
//
// Anything else is refused with an [*IntegrityError], and does not become a link: the next
// genuine event of the subject chains to the last accepted one.
//
// A Verifier remembers each subject's chain (the last accepted hash, and which sequences it
// refused) and is safe for concurrent use.
type Verifier struct {
	keys    *Keys
	cutover uint64

	mu     sync.Mutex
	chains map[string]*chain
	// global: every message of the stream up to this sequence has been judged (a Store's
	// verifier, fed by reads of every subject).
	global uint64
	// resume: messages before it were never seen (see ResumeAt).
	resume uint64
}

// chain is what a Verifier knows of one subject.
type chain struct {
	mu sync.Mutex
	// covered: every message of the subject up to this sequence has been judged.
	covered uint64
	hasHead bool
	head    [32]byte
	// unknown: the subject's history before covered was not seen, so its next signed event is
	// taken as the start of its chain.
	unknown  bool
	rejected map[uint64]*IntegrityError
}

// NewVerifier returns a verifier that accepts events signed by keys, and unsigned events at or
// below the stream sequence cutover.
func NewVerifier(keys *Keys, cutover uint64) *Verifier {
	if keys == nil {
		keys = &Keys{}
	}
	return &Verifier{keys: keys, cutover: cutover, chains: make(map[string]*chain)}
}

// Cutover is the last sequence at which unsigned events are accepted.
func (v *Verifier) Cutover() uint64 { return v.cutover }

// Keys are the keys the verifier accepts.
func (v *Verifier) Keys() *Keys { return v.keys }

// ResumeAt tells the verifier that it is given no message before sequence seq (a reader that
// starts from a snapshot): the first event of each subject at or after seq has its signature
// checked, and its previous hash is taken as it is. Call it before Check.
func (v *Verifier) ResumeAt(seq uint64) {
	v.mu.Lock()
	v.resume = seq
	v.mu.Unlock()
}

// Check judges the message at sequence seq. Messages of one subject must be given in stream
// order, with none left out from the subject's first message (or from ResumeAt); a message
// given again gets the verdict it had. It returns nil for an accepted message, or an
// [*IntegrityError].
func (v *Verifier) Check(subject string, seq uint64, h nats.Header, data []byte) error {
	c := v.chain(subject)
	c.mu.Lock()
	defer c.mu.Unlock()
	return v.checkLocked(c, subject, seq, h, data)
}

// chain returns the chain of subject, made on first use.
func (v *Verifier) chain(subject string) *chain {
	v.mu.Lock()
	defer v.mu.Unlock()
	c := v.chains[subject]
	if c == nil {
		c = &chain{}
		if v.resume > 1 {
			c.covered, c.unknown = v.resume-1, true
		}
		v.chains[subject] = c
	}
	return c
}

// globalCovered is the sequence up to which every message has been judged.
func (v *Verifier) globalCovered() uint64 {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.global
}

// advance records that every message from from to seq was judged by a read of every subject.
func (v *Verifier) advance(from, seq uint64) {
	v.mu.Lock()
	if v.global+1 >= from && seq > v.global {
		v.global = seq
	}
	v.mu.Unlock()
}

// checkLocked judges one message; the caller holds c.mu.
func (v *Verifier) checkLocked(c *chain, subject string, seq uint64, h nats.Header, data []byte) error {
	if seq <= c.covered {
		if e := c.rejected[seq]; e != nil {
			return e
		}
		return nil
	}
	hash, err := v.verdict(c, subject, seq, h, data)
	c.covered = seq
	if err != nil {
		if c.rejected == nil {
			c.rejected = make(map[uint64]*IntegrityError)
		}
		c.rejected[seq] = err
		return err
	}
	c.hasHead, c.head, c.unknown = true, hash, false
	return nil
}

// accepted records an event this process signed and appended at seq, after the head it named;
// the caller holds c.mu.
func (c *chain) accepted(seq uint64, hash [32]byte) {
	if seq <= c.covered {
		return // already judged by a read
	}
	c.covered, c.hasHead, c.head, c.unknown = seq, true, hash, false
}

// verdict judges one message against the chain's head, without changing it.
func (v *Verifier) verdict(c *chain, subject string, seq uint64, h nats.Header, data []byte) ([32]byte, *IntegrityError) {
	fail := func(problem error, detail string) ([32]byte, *IntegrityError) {
		return [32]byte{}, &IntegrityError{Sequence: seq, Subject: subject, Problem: problem, Detail: detail}
	}
	if _, signed := h[HeaderSignature]; !signed {
		if seq <= v.cutover {
			return Hash(subject, h, data), nil // legacy
		}
		return fail(ErrUnsigned, "")
	}
	ih, err := decodeIntegrity(h)
	if err != nil {
		problem := ErrBadSignature
		if errors.Is(err, ErrBrokenChain) {
			problem = ErrBrokenChain
		}
		return fail(problem, err.Error())
	}
	pub, ok := v.keys.byID[ih.keyID]
	if !ok {
		return fail(ErrUnknownKey, "key "+ih.keyID)
	}
	unsigned := Canonical(subject, h, data, false)
	if !ed25519.Verify(pub, unsigned, ih.sig) {
		return fail(ErrBadSignature, "key "+ih.keyID)
	}
	if !c.unknown {
		switch {
		case ih.hasPrev && !c.hasHead:
			return fail(ErrBrokenChain, "names a previous event, but none was accepted on its subject")
		case !ih.hasPrev && c.hasHead:
			return fail(ErrBrokenChain, "names no previous event, but the subject has one")
		case ih.hasPrev && ih.prev != c.head:
			return fail(ErrBrokenChain, "previous hash "+hex.EncodeToString(ih.prev[:8])+"… is not the last accepted event's "+hex.EncodeToString(c.head[:8])+"…")
		}
	}
	return sha256.Sum256(Canonical(subject, h, data, true)), nil
}

// Link is one accepted message of a subject's chain: where it is stored and its [Hash].
type Link struct {
	Subject  string
	Sequence uint64
	Hash     [32]byte
}

// Chains is what a verifier knew of the stream up to a sequence: enough for a reader that starts
// from a snapshot taken there to chain-check the events after it, and to give the verdicts of
// the messages before it, without judging them again (see [Verifier.Restore]).
type Chains struct {
	// Sequence: every message of the stream up to it was judged.
	Sequence uint64
	// Heads are the last accepted message of every subject that has one.
	Heads []Link
	// Refused are the messages that were refused, and why.
	Refused []*IntegrityError
}

// Restore gives the verifier what another one knew of the stream up to c.Sequence (from a
// snapshot), as if it had judged those messages itself: the next event of each subject must
// chain to c's head of that subject (or name none, for a subject without one), and a message up
// to c.Sequence gets the verdict c records. A subject this verifier already judged past
// c.Sequence keeps what it knows. Call it before reading from c.Sequence+1.
func (v *Verifier) Restore(c Chains) {
	type known struct {
		head    *Link
		refused map[uint64]*IntegrityError
	}
	subjects := make(map[string]*known, len(c.Heads))
	get := func(subject string) *known {
		k := subjects[subject]
		if k == nil {
			k = &known{}
			subjects[subject] = k
		}
		return k
	}
	for i := range c.Heads {
		get(c.Heads[i].Subject).head = &c.Heads[i]
	}
	for _, e := range c.Refused {
		k := get(e.Subject)
		if k.refused == nil {
			k.refused = make(map[uint64]*IntegrityError)
		}
		k.refused[e.Sequence] = e
	}
	for subject, k := range subjects {
		ch := v.chain(subject)
		ch.mu.Lock()
		if ch.covered < c.Sequence {
			ch.covered, ch.unknown, ch.rejected = c.Sequence, false, k.refused
			ch.hasHead, ch.head = k.head != nil, [32]byte{}
			if k.head != nil {
				ch.head = k.head.Hash
			}
		}
		ch.mu.Unlock()
	}
	v.mu.Lock()
	v.global = max(v.global, c.Sequence)
	v.mu.Unlock()
}

// ProblemFor returns the problem sentinel ([ErrUnsigned], …) that [IntegrityError.Reason]
// names, nil for a word it does not give.
func ProblemFor(reason string) error {
	switch reason {
	case "unsigned":
		return ErrUnsigned
	case "unknown-key":
		return ErrUnknownKey
	case "bad-signature":
		return ErrBadSignature
	case "broken-chain":
		return ErrBrokenChain
	}
	return nil
}
