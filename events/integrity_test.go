package events_test

import (
	"bytes"
	"crypto/ed25519"
	"encoding/hex"
	"errors"
	"testing"

	"github.com/nats-io/nats.go"

	"github.com/interlock-dev/interlock/events"
	"github.com/interlock-dev/interlock/internal/natstest"
)

func TestCanonical(t *testing.T) {
	base := func() nats.Header {
		return nats.Header{
			"ce-id": {"1"}, "ce-type": {"t"}, "Nats-Msg-Id": {"1"},
			events.HeaderSignature: {"sig"}, events.HeaderPrevHash: {"p"},
		}
	}
	want := events.Canonical("s", base(), []byte("d"), false)
	for _, tc := range []struct {
		name    string
		subject string
		change  func(nats.Header)
		data    string
		sig     bool
		same    bool
	}{
		{name: "same message", subject: "s", change: func(nats.Header) {}, data: "d", same: true},
		{name: "header order does not matter", subject: "s", change: func(h nats.Header) {
			v := h["ce-id"]
			delete(h, "ce-id")
			h["ce-id"] = v
		}, data: "d", same: true},
		{name: "other headers are not covered", subject: "s", change: func(h nats.Header) { h["Nats-Msg-Id"] = []string{"2"} }, data: "d", same: true},
		{name: "the signature is left out for signing", subject: "s", change: func(h nats.Header) { h[events.HeaderSignature] = []string{"x"} }, data: "d", same: true},
		{name: "the signature is kept for the hash", subject: "s", change: func(nats.Header) {}, data: "d", sig: true},
		{name: "subject", subject: "t", change: func(nats.Header) {}, data: "d"},
		{name: "data", subject: "s", change: func(nats.Header) {}, data: "e"},
		{name: "a ce header value", subject: "s", change: func(h nats.Header) { h["ce-type"] = []string{"u"} }, data: "d"},
		{name: "an added ce header", subject: "s", change: func(h nats.Header) { h["ce-actor"] = []string{"mallory"} }, data: "d"},
		{name: "an added ce header in capitals", subject: "s", change: func(h nats.Header) { h["CE-Actor"] = []string{"mallory"} }, data: "d"},
		{name: "a removed previous hash", subject: "s", change: func(h nats.Header) { delete(h, events.HeaderPrevHash) }, data: "d"},
		{name: "a second value", subject: "s", change: func(h nats.Header) { h["ce-id"] = append(h["ce-id"], "2") }, data: "d"},
		{name: "bytes moved between fields", subject: "s", change: func(h nats.Header) { h["ce-type"] = []string{"td"} }, data: ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := base()
			tc.change(h)
			got := events.Canonical(tc.subject, h, []byte(tc.data), tc.sig)
			if bytes.Equal(got, want) != tc.same {
				t.Fatalf("canonical form equal: %v, want %v", !tc.same, tc.same)
			}
		})
	}
}

// TestCanonicalLayout pins the byte layout that subscribers in other languages implement.
func TestCanonicalLayout(t *testing.T) {
	got := events.Canonical("a.b", nats.Header{"ce-x": {"1"}, "ce-a": {"22"}, "Other": {"z"}}, []byte("{}"), false)
	want := "00000012" + hex.EncodeToString([]byte("interlock-event-v1")) +
		"00000003" + hex.EncodeToString([]byte("a.b")) +
		"00000002" +
		"00000004" + hex.EncodeToString([]byte("ce-a")) + "00000002" + hex.EncodeToString([]byte("22")) +
		"00000004" + hex.EncodeToString([]byte("ce-x")) + "00000001" + hex.EncodeToString([]byte("1")) +
		"00000002" + hex.EncodeToString([]byte("{}"))
	if hex.EncodeToString(got) != want {
		t.Fatalf("canonical form\n got %x\nwant %s", got, want)
	}
}

// signed returns an event message signed by s after prev.
func signed(t *testing.T, s *events.Signer, key string, version uint64, prev *[32]byte) (*nats.Msg, [32]byte) {
	t.Helper()
	ev, err := events.NewEvent(events.TypeFlagKilled, "production", key, events.FlagKilled{})
	if err != nil {
		t.Fatal(err)
	}
	ev.Actor, ev.Version = "alice", version
	msg := ev.Msg()
	return msg, s.Sign(msg, prev)
}

func TestVerifierChain(t *testing.T) {
	s := natstest.Signer(t)
	other := natstest.Signer(t)
	keys, err := events.NewKeys(s.Public())
	if err != nil {
		t.Fatal(err)
	}
	type step struct {
		msg  func(prev *[32]byte) *nats.Msg
		want error // nil: accepted
	}
	unsigned := func(*[32]byte) *nats.Msg {
		ev, _ := events.NewEvent(events.TypeFlagKilled, "production", "f", events.FlagKilled{})
		ev.Actor, ev.Version = "mallory", 9
		return ev.Msg()
	}
	good := func(prev *[32]byte) *nats.Msg { m, _ := signed(t, s, "f", 1, prev); return m }
	for _, tc := range []struct {
		name    string
		cutover uint64
		steps   []step
	}{
		{"a good chain", 0, []step{{good, nil}, {good, nil}, {good, nil}}},
		{"unsigned after the cut-over", 0, []step{{good, nil}, {unsigned, events.ErrUnsigned}, {good, nil}}},
		{"unsigned up to the cut-over is legacy, and a link", 2, []step{{unsigned, nil}, {unsigned, nil}, {good, nil}, {unsigned, events.ErrUnsigned}}},
		{"an unknown key", 0, []step{{good, nil}, {func(prev *[32]byte) *nats.Msg { m, _ := signed(t, other, "f", 2, prev); return m }, events.ErrUnknownKey}, {good, nil}}},
		{"an altered event", 0, []step{{good, nil}, {func(prev *[32]byte) *nats.Msg {
			m := good(prev)
			m.Header[events.HeaderActor] = []string{"mallory"}
			return m
		}, events.ErrBadSignature}, {good, nil}}},
		{"a garbled signature", 0, []step{{func(prev *[32]byte) *nats.Msg {
			m := good(prev)
			m.Header[events.HeaderSignature] = []string{"!!"}
			return m
		}, events.ErrBadSignature}, {good, nil}}},
		{"a replayed first event", 0, []step{{good, nil}, {func(*[32]byte) *nats.Msg { return good(nil) }, events.ErrBrokenChain}, {good, nil}}},
		{"a previous hash on a first event", 0, []step{{func(*[32]byte) *nats.Msg { return good(&[32]byte{1}) }, events.ErrBrokenChain}, {good, nil}}},
		{"a wrong previous hash", 0, []step{{good, nil}, {func(*[32]byte) *nats.Msg { return good(&[32]byte{1}) }, events.ErrBrokenChain}, {good, nil}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v := events.NewVerifier(keys, tc.cutover)
			var prev *[32]byte
			for i, st := range tc.steps {
				seq := uint64(i + 1)
				msg := st.msg(prev)
				err := v.Check(msg.Subject, seq, msg.Header, msg.Data)
				if st.want == nil {
					if err != nil {
						t.Fatalf("step %d: %v", seq, err)
					}
					h := events.Hash(msg.Subject, msg.Header, msg.Data)
					prev = &h
					continue
				}
				var ie *events.IntegrityError
				if !errors.Is(err, st.want) || !errors.Is(err, events.ErrIntegrity) || !errors.As(err, &ie) || ie.Sequence != seq {
					t.Fatalf("step %d: got %v, want %v at sequence %d", seq, err, st.want, seq)
				}
				// The verdict is remembered.
				if again := v.Check(msg.Subject, seq, msg.Header, msg.Data); !errors.Is(again, st.want) {
					t.Fatalf("step %d again: got %v", seq, again)
				}
			}
		})
	}
}

func TestVerifierResumeAt(t *testing.T) {
	s := natstest.Signer(t)
	keys, _ := events.NewKeys(s.Public())
	v := events.NewVerifier(keys, 0)
	v.ResumeAt(10)
	// The first event seen names a previous event the verifier never saw: taken as it is.
	m1, h1 := signed(t, s, "f", 5, &[32]byte{7})
	if err := v.Check(m1.Subject, 10, m1.Header, m1.Data); err != nil {
		t.Fatal(err)
	}
	m2, _ := signed(t, s, "f", 6, &h1)
	if err := v.Check(m2.Subject, 11, m2.Header, m2.Data); err != nil {
		t.Fatal(err)
	}
	m3, _ := signed(t, s, "f", 7, &h1) // names m1 again: broken
	if err := v.Check(m3.Subject, 12, m3.Header, m3.Data); !errors.Is(err, events.ErrBrokenChain) {
		t.Fatalf("got %v, want a broken chain", err)
	}
}

func TestParseKeys(t *testing.T) {
	_, priv, _ := ed25519.GenerateKey(nil)
	privPEM, err := events.MarshalPrivateKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	pubPEM, err := events.MarshalPublicKey(priv.Public().(ed25519.PublicKey))
	if err != nil {
		t.Fatal(err)
	}
	got, err := events.ParsePrivateKey(privPEM)
	if err != nil || !got.Equal(priv) {
		t.Fatalf("private key round trip: %v", err)
	}
	pubs, err := events.ParsePublicKeys(append(append([]byte{}, pubPEM...), privPEM...))
	if err != nil || len(pubs) != 2 || !pubs[0].Equal(pubs[1]) {
		t.Fatalf("public keys: %d, %v", len(pubs), err)
	}
	for _, tc := range []struct {
		name          string
		data          []byte
		privateRefuse bool
		publicRefuse  bool
	}{
		{"empty", nil, true, true},
		{"garbage", []byte("not a key"), true, true},
		{"a public key is no private key", pubPEM, true, false},
		{"text after the key", append(append([]byte{}, pubPEM...), "junk"...), true, true},
		{"another block", []byte("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"), true, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := events.ParsePrivateKey(tc.data); tc.privateRefuse != errors.Is(err, events.ErrKey) {
				t.Errorf("private key: got %v, refusal wanted: %v", err, tc.privateRefuse)
			}
			if _, err := events.ParsePublicKeys(tc.data); tc.publicRefuse != errors.Is(err, events.ErrKey) {
				t.Errorf("public keys: got %v, refusal wanted: %v", err, tc.publicRefuse)
			}
		})
	}
	if id := events.KeyID(priv.Public().(ed25519.PublicKey)); len(id) != 16 {
		t.Errorf("key id %q: want 16 hex digits", id)
	}
}

func FuzzParseKeys(f *testing.F) {
	_, priv, _ := ed25519.GenerateKey(nil)
	privPEM, _ := events.MarshalPrivateKey(priv)
	pubPEM, _ := events.MarshalPublicKey(priv.Public().(ed25519.PublicKey))
	f.Add(privPEM)
	f.Add(pubPEM)
	f.Add([]byte("-----BEGIN PUBLIC KEY-----\nMCowBQYDK2VwAyEA\n-----END PUBLIC KEY-----\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		if k, err := events.ParsePrivateKey(data); err == nil && len(k) != ed25519.PrivateKeySize {
			t.Fatalf("private key of %d bytes", len(k))
		} else if err != nil && !errors.Is(err, events.ErrKey) {
			t.Fatalf("error not ErrKey: %v", err)
		}
		keys, err := events.ParsePublicKeys(data)
		if err != nil && !errors.Is(err, events.ErrKey) {
			t.Fatalf("error not ErrKey: %v", err)
		}
		for _, k := range keys {
			if len(k) != ed25519.PublicKeySize {
				t.Fatalf("public key of %d bytes", len(k))
			}
		}
	})
}

// FuzzVerifyHeaders feeds arbitrary integrity headers to a verifier: it never panics, never
// accepts a message it cannot verify, and refuses with an IntegrityError.
func FuzzVerifyHeaders(f *testing.F) {
	_, priv, _ := ed25519.GenerateKey(nil)
	s, _ := events.NewSigner(priv)
	keys, _ := events.NewKeys(s.Public())
	ev, _ := events.NewEvent(events.TypeFlagKilled, "production", "f", events.FlagKilled{})
	ev.Actor, ev.Version = "alice", 1
	msg := ev.Msg()
	s.Sign(msg, nil)
	f.Add(msg.Header.Get(events.HeaderSignature), s.KeyID(), "", msg.Header.Get(events.HeaderActor))
	f.Add("", "", "", "alice")
	f.Add("AAAA", "0011223344556677", "00", "alice")
	f.Fuzz(func(t *testing.T, sig, keyID, prev, actor string) {
		h := nats.Header{}
		for k, v := range msg.Header {
			h[k] = v
		}
		h[events.HeaderSignature] = []string{sig}
		h[events.HeaderSigningKey] = []string{keyID}
		if prev != "" {
			h[events.HeaderPrevHash] = []string{prev}
		}
		h[events.HeaderActor] = []string{actor}
		v := events.NewVerifier(keys, 0)
		err := v.Check(msg.Subject, 1, h, msg.Data)
		genuine := sig == msg.Header.Get(events.HeaderSignature) && keyID == s.KeyID() && prev == "" && actor == msg.Header.Get(events.HeaderActor)
		if err == nil && !genuine {
			t.Fatalf("accepted a message that was not signed so: sig %q key %q prev %q actor %q", sig, keyID, prev, actor)
		}
		var ie *events.IntegrityError
		if err != nil && !errors.As(err, &ie) {
			t.Fatalf("refused without an IntegrityError: %v", err)
		}
	})
}

// BenchmarkSign is the signing cost an append pays: sign plus the event's hash.
func BenchmarkSign(b *testing.B) {
	s := natstest.Signer(b)
	ev := newEvent(b, events.TypeFlagCreated, 1, created)
	msg := ev.Msg()
	for b.Loop() {
		s.Sign(msg, &[32]byte{})
	}
}

// BenchmarkVerify is the cost of judging one event a reader has not seen: the signature and
// the chain, as in a replay.
func BenchmarkVerify(b *testing.B) {
	s := natstest.Signer(b)
	keys, _ := events.NewKeys(s.Public())
	ev := newEvent(b, events.TypeFlagCreated, 1, created)
	msg := ev.Msg()
	s.Sign(msg, nil)
	seq := uint64(0)
	for b.Loop() {
		seq++
		v := events.NewVerifier(keys, 0) // a new chain each time: the event is its subject's first
		if err := v.Check(msg.Subject, seq, msg.Header, msg.Data); err != nil {
			b.Fatal(err)
		}
	}
}
