package events_test

import (
	"context"
	"crypto/ed25519"
	"errors"
	"testing"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/interlock-dev/interlock/events"
	"github.com/interlock-dev/interlock/internal/natstest"
)

func openSigned(t *testing.T, js jetstream.JetStream, s *events.Signer, old ...ed25519.PublicKey) *events.Store {
	t.Helper()
	st, err := events.Open(context.Background(), js, events.StreamConfig{}, events.WithSigner(s), events.WithVerifyKeys(old...))
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// verdicts reads the whole stream and returns each sequence's verdict (nil: accepted).
func verdicts(t *testing.T, st *events.Store, q events.Query) map[uint64]error {
	t.Helper()
	out := map[uint64]error{}
	err := st.Read(context.Background(), q, func(ev events.Event, err error) error {
		out[ev.Sequence] = err
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func appendEvent(t *testing.T, st *events.Store, typ string, version, expected uint64, payload any) uint64 {
	t.Helper()
	ev := newEvent(t, typ, version, payload)
	seq, err := st.Append(context.Background(), &ev, expected)
	if err != nil {
		t.Fatalf("append %s: %v", typ, err)
	}
	return seq
}

func wantProblem(t *testing.T, got map[uint64]error, seq uint64, problem error) {
	t.Helper()
	var ie *events.IntegrityError
	if !errors.Is(got[seq], problem) || !errors.As(got[seq], &ie) || ie.Sequence != seq {
		t.Fatalf("sequence %d: got %v, want %v", seq, got[seq], problem)
	}
}

// TestForgedEventsRefused: messages published directly on the stream (unsigned, altered,
// replayed) are refused with their sequence; the next append chains to the last genuine event,
// and a store that never saw the stream (another replica, a restart) agrees on every verdict.
func TestForgedEventsRefused(t *testing.T) {
	srv := natstest.RunServer(t)
	js := natstest.JetStream(t, srv)
	signer := natstest.Signer(t)
	st := openSigned(t, js, signer)
	if c := st.Verifier().Cutover(); c != 0 {
		t.Fatalf("cut-over of a new stream: %d, want 0", c)
	}
	s1 := appendEvent(t, st, events.TypeFlagCreated, 1, 0, created)
	s2 := appendEvent(t, st, events.TypeFlagKilled, 2, s1, events.FlagKilled{})

	// Unsigned: a well-formed event from a client with no key.
	unsigned := newEvent(t, events.TypeFlagEnabled, 3, events.FlagEnabled{})
	f1 := natstest.Forge(t, js, unsigned.Msg())
	// Altered: the genuine kill with another actor.
	altered := natstest.Stored(t, js, s2)
	altered.Header.Set(events.HeaderActor, "mallory")
	f2 := natstest.Forge(t, js, altered)
	// Replayed: the genuine kill again; its signature holds but it does not chain.
	f3 := natstest.Forge(t, js, natstest.Stored(t, js, s2))

	got := verdicts(t, st, events.Query{})
	if got[s1] != nil || got[s2] != nil {
		t.Fatalf("genuine events refused: %v, %v", got[s1], got[s2])
	}
	wantProblem(t, got, f1, events.ErrUnsigned)
	wantProblem(t, got, f2, events.ErrBadSignature)
	wantProblem(t, got, f3, events.ErrBrokenChain)

	// The next genuine event names the last genuine one, not the forgery after it.
	s3 := appendEvent(t, st, events.TypeFlagEnabled, 3, f3, events.FlagEnabled{})
	stored := natstest.Stored(t, js, s3)
	if want := events.Hash(natstest.Stored(t, js, s2).Subject, natstest.Stored(t, js, s2).Header, natstest.Stored(t, js, s2).Data); stored.Header.Get(events.HeaderPrevHash) != hexOf(want) {
		t.Fatalf("ce-prevhash %s, want the hash of sequence %d", stored.Header.Get(events.HeaderPrevHash), s2)
	}

	// Another store, on the same key, judges from scratch; so does VerifyChains.
	fresh := openSigned(t, natstest.JetStream(t, srv), signer)
	again := verdicts(t, fresh, events.Query{})
	for seq, err := range got {
		if (err == nil) != (again[seq] == nil) {
			t.Fatalf("sequence %d: a fresh store says %v, the first said %v", seq, again[seq], err)
		}
	}
	if again[s3] != nil {
		t.Fatalf("the event after the forgeries: %v", again[s3])
	}
	rep, err := st.VerifyChains(context.Background(), events.Query{}, 10)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Events != 3 || rep.Refused != 3 || rep.Problems[0].Sequence != f1 {
		t.Fatalf("report: %d verified, %d refused, first %+v; want 3, 3, sequence %d", rep.Events, rep.Refused, rep.Problems[0], f1)
	}
}

func hexOf(h [32]byte) string {
	const digits = "0123456789abcdef"
	b := make([]byte, 64)
	for i, c := range h {
		b[2*i], b[2*i+1] = digits[c>>4], digits[c&15]
	}
	return string(b)
}

// TestLegacyCutover: events written before signing are accepted up to the cut-over recorded at
// the first start of a signing store, which later opens keep; unsigned ones after it are not.
func TestLegacyCutover(t *testing.T) {
	srv := natstest.RunServer(t)
	js := natstest.JetStream(t, srv)
	legacy := openStore(t, srv, 1)
	l1 := appendEvent(t, legacy, events.TypeFlagCreated, 1, 0, created)
	l2 := appendEvent(t, legacy, events.TypeFlagKilled, 2, l1, events.FlagKilled{})

	signer := natstest.Signer(t)
	st := openSigned(t, js, signer)
	if c := st.Verifier().Cutover(); c != l2 {
		t.Fatalf("cut-over %d, want %d", c, l2)
	}
	s3 := appendEvent(t, st, events.TypeFlagEnabled, 3, l2, events.FlagEnabled{})
	f := natstest.Forge(t, js, natstest.Stored(t, js, l2))

	// Another unsigned store opening the stream leaves the cut-over where it is.
	openStore(t, srv, 1)
	st = openSigned(t, js, signer)
	if c := st.Verifier().Cutover(); c != l2 {
		t.Fatalf("cut-over after reopening: %d, want %d", c, l2)
	}
	got := verdicts(t, st, events.Query{})
	for _, seq := range []uint64{l1, l2, s3} {
		if got[seq] != nil {
			t.Fatalf("sequence %d refused: %v", seq, got[seq])
		}
	}
	wantProblem(t, got, f, events.ErrUnsigned)
}

// TestRotatedKey: after a rotation, events signed with the old key verify as long as it is
// among the verification keys; without it they are refused as signed by an unknown key.
func TestRotatedKey(t *testing.T) {
	srv := natstest.RunServer(t)
	js := natstest.JetStream(t, srv)
	oldKey, newKey := natstest.Signer(t), natstest.Signer(t)
	s1 := appendEvent(t, openSigned(t, js, oldKey), events.TypeFlagCreated, 1, 0, created)
	rotated := openSigned(t, js, newKey, oldKey.Public())
	s2 := appendEvent(t, rotated, events.TypeFlagKilled, 2, s1, events.FlagKilled{})
	got := verdicts(t, openSigned(t, js, newKey, oldKey.Public()), events.Query{})
	if got[s1] != nil || got[s2] != nil {
		t.Fatalf("verdicts after rotation: %v, %v", got[s1], got[s2])
	}
	got = verdicts(t, openSigned(t, js, newKey), events.Query{})
	wantProblem(t, got, s1, events.ErrUnknownKey)
	// s2 chains to s1, which is refused without the old key: its link is broken too.
	wantProblem(t, got, s2, events.ErrBrokenChain)
}

// TestVerifyReadFromMiddle: a store that never saw a subject, reading from the middle of the
// stream, reads the subject's earlier events to judge its chain.
func TestVerifyReadFromMiddle(t *testing.T) {
	srv := natstest.RunServer(t)
	js := natstest.JetStream(t, srv)
	signer := natstest.Signer(t)
	st := openSigned(t, js, signer)
	s1 := appendEvent(t, st, events.TypeFlagCreated, 1, 0, created)
	s2 := appendEvent(t, st, events.TypeFlagKilled, 2, s1, events.FlagKilled{})
	f := natstest.Forge(t, js, natstest.Stored(t, js, s2))
	s3 := appendEvent(t, st, events.TypeFlagEnabled, 3, f, events.FlagEnabled{})

	for _, from := range []uint64{s2, f, s3} {
		got := verdicts(t, openSigned(t, natstest.JetStream(t, srv), signer), events.Query{FromSequence: from})
		if got[s3] != nil {
			t.Fatalf("from %d: the last event refused: %v", from, got[s3])
		}
		if from <= f {
			wantProblem(t, got, f, events.ErrBrokenChain)
		}
	}
	// Appending on a store that has read nothing of the subject chains correctly too.
	other := openSigned(t, natstest.JetStream(t, srv), signer)
	s4 := appendEvent(t, other, events.TypeFlagKilled, 4, s3, events.FlagKilled{})
	if got := verdicts(t, openSigned(t, js, signer), events.Query{}); got[s4] != nil {
		t.Fatalf("an append by a store that had read nothing: %v", got[s4])
	}
}
