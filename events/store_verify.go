package events

import (
	"context"
	"errors"
	"fmt"

	"github.com/nats-io/nats.go"
)

// judge verifies one message delivered by a read that delivers every message of its subjects
// from sequence from (of every subject when all is set). It returns the verdict (nil or an
// *IntegrityError), or an error when the subject's earlier messages, which the verdict needs,
// could not be read.
//
// The verdict needs every earlier message of the subject judged. The read judged those from
// from on; the ones before were judged when the subject's chain (or a read of every subject)
// covers from-1. When neither does (a read that starts in the middle of the stream, on a store
// that had not seen the subject yet), the subject is read from where its chain stops first.
func (s *Store) judge(ctx context.Context, subject string, seq uint64, h nats.Header, data []byte, from uint64, all bool) (verdict, err error) {
	v := s.verifier
	c := v.chain(subject)
	c.mu.Lock()
	defer c.mu.Unlock()
	if seq > c.covered && max(c.covered, v.globalCovered())+1 < from {
		if err := s.catchUp(ctx, c, subject, seq-1); err != nil {
			return nil, err
		}
	}
	verdict = v.checkLocked(c, subject, seq, h, data)
	if all {
		v.advance(from, seq)
	}
	return verdict, nil
}

// catchUp judges the messages of subject after its chain's covered sequence, up to sequence
// upTo. The caller holds c.mu.
func (s *Store) catchUp(ctx context.Context, c *chain, subject string, upTo uint64) error {
	q := Query{Subjects: []string{subject}, FromSequence: c.covered + 1}
	err := s.read(ctx, q, func(_ context.Context, m rawMsg) error {
		if m.seq > upTo {
			return ErrStop
		}
		_ = s.verifier.checkLocked(c, m.subject, m.seq, m.hdr, m.data) // recorded in c
		return nil
	})
	if err != nil {
		return fmt.Errorf("verify %s up to sequence %d: %w", subject, upTo, err)
	}
	return nil
}

// prevHash is the hash the next event of subject names: that of the last accepted event of the
// subject up to sequence expectedSeq (nil when there is none).
func (s *Store) prevHash(ctx context.Context, subject string, expectedSeq uint64) (*[32]byte, error) {
	v := s.verifier
	c := v.chain(subject)
	c.mu.Lock()
	defer c.mu.Unlock()
	if max(c.covered, v.globalCovered()) < expectedSeq {
		if err := s.catchUp(ctx, c, subject, expectedSeq); err != nil {
			return nil, err
		}
	}
	if !c.hasHead {
		return nil, nil
	}
	h := c.head
	return &h, nil
}

// appended records the event this store signed and appended at seq, after expectedSeq.
func (s *Store) appended(subject string, expectedSeq, seq uint64, hash [32]byte) {
	v := s.verifier
	c := v.chain(subject)
	c.mu.Lock()
	defer c.mu.Unlock()
	// The append succeeded, so no message of the subject lies between expectedSeq and seq, and
	// the hash it named was the subject's head as of expectedSeq.
	if max(c.covered, v.globalCovered()) >= expectedSeq {
		c.accepted(seq, hash)
	}
}

// ChainReport is the outcome of [Store.VerifyChains].
type ChainReport struct {
	// Events is how many messages were verified and accepted.
	Events int
	// Problems are the messages refused, in stream order (at most the limit asked for);
	// Refused counts them all.
	Problems []*IntegrityError
	Refused  int
	// Cutover is the sequence up to which unsigned events are accepted.
	Cutover uint64
}

// ErrNotSigned means the store verifies nothing: it was opened without [WithSigner].
var ErrNotSigned = errors.New("the store has no signing key")

// VerifyChains walks the chains of the subjects q selects from their first message, with a
// verifier of its own (it trusts no verdict from earlier reads), and reports how many events
// verified and the first limit problems. q.FromSequence and q.FromTime are ignored.
//
// Errors: [ErrNotSigned] without [WithSigner]; otherwise a read error.
func (s *Store) VerifyChains(ctx context.Context, q Query, limit int) (ChainReport, error) {
	if s.verifier == nil {
		return ChainReport{}, ErrNotSigned
	}
	v := NewVerifier(s.verifier.keys, s.verifier.cutover)
	rep := ChainReport{Problems: []*IntegrityError{}, Cutover: v.cutover}
	err := s.read(ctx, Query{Subjects: q.Subjects}, func(_ context.Context, m rawMsg) error {
		err := v.Check(m.subject, m.seq, m.hdr, m.data)
		var ie *IntegrityError
		switch {
		case err == nil:
			rep.Events++
		case errors.As(err, &ie):
			rep.Refused++
			if len(rep.Problems) < limit {
				rep.Problems = append(rep.Problems, ie)
			}
		default:
			return err
		}
		return nil
	})
	if err != nil {
		return ChainReport{}, err
	}
	return rep, nil
}
