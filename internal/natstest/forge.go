package natstest

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/interlock-dev/interlock/events"
)

// Signer returns a signer with a fresh Ed25519 key.
func Signer(tb testing.TB) *events.Signer {
	tb.Helper()
	_, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		tb.Fatal(err)
	}
	s, err := events.NewSigner(key)
	if err != nil {
		tb.Fatal(err)
	}
	return s
}

// SigningKeyFile writes a fresh Ed25519 signing key as PEM to a file in a temporary directory and
// returns its path: the --signing-key that replicas of one test share.
func SigningKeyFile(tb testing.TB) string {
	tb.Helper()
	_, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		tb.Fatal(err)
	}
	data, err := events.MarshalPrivateKey(key)
	if err != nil {
		tb.Fatal(err)
	}
	path := filepath.Join(tb.TempDir(), "signing.pem")
	if err := os.WriteFile(path, data, 0o600); err != nil {
		tb.Fatal(err)
	}
	return path
}

// Stored returns the message at sequence seq of the event stream as it is stored.
func Stored(tb testing.TB, js jetstream.JetStream, seq uint64) *nats.Msg {
	tb.Helper()
	ctx := context.Background()
	stream, err := js.Stream(ctx, events.DefaultStreamName)
	if err != nil {
		tb.Fatal(err)
	}
	raw, err := stream.GetMsg(ctx, seq)
	if err != nil {
		tb.Fatalf("message %d: %v", seq, err)
	}
	h := nats.Header{}
	for k, vs := range raw.Header {
		switch k {
		case jetstream.StreamHeader, jetstream.SequenceHeader, jetstream.SubjectHeader, jetstream.TimeStampHeaer:
			continue // added by the direct get that read it: not part of the stored message
		}
		h[k] = append([]string(nil), vs...)
	}
	return &nats.Msg{Subject: raw.Subject, Header: h, Data: raw.Data}
}

// Forge publishes msg on the event stream as any client allowed to publish could: no signing
// key, no expected sequence. The message id header is replaced by a fresh one so that the
// stream does not take a copy for a retry. It returns the message's stream sequence.
func Forge(tb testing.TB, js jetstream.JetStream, msg *nats.Msg) uint64 {
	tb.Helper()
	for k := range msg.Header {
		if strings.HasPrefix(k, "Nats-Expected") {
			delete(msg.Header, k) // a stored message keeps the expectations of its append
		}
	}
	msg.Header.Set(nats.MsgIdHdr, nats.NewInbox())
	ack, err := js.PublishMsg(context.Background(), msg)
	if err != nil {
		tb.Fatalf("forge on %s: %v", msg.Subject, err)
	}
	return ack.Sequence
}
