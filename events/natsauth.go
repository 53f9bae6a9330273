package events

import (
	"crypto/sha256"
	"encoding/hex"

	"github.com/nats-io/nats.go"
)

// InboxPrefix is the prefix of the reply subjects of a NATS client that authenticates with an
// Interlock token. Interlock's embedded NATS server lets such a client subscribe to
// InboxPrefix(token)+".>" and to nothing else, so no other client can read its replies. It is
// derived from the token by a one-way hash and reveals nothing about it.
func InboxPrefix(token string) string {
	sum := sha256.Sum256([]byte("interlock-inbox\x00" + token))
	return "_INBOX.ilk" + hex.EncodeToString(sum[:12])
}

// TokenAuth is the connect option of a NATS client that authenticates to Interlock's embedded
// NATS server with an Interlock token: it presents the token and uses [InboxPrefix] for its
// replies.
//
//	nc, err := nats.Connect("nats://127.0.0.1:4222", events.TokenAuth(os.Getenv("INTERLOCK_TOKEN")))
func TokenAuth(token string) nats.Option {
	return func(o *nats.Options) error {
		if err := nats.Token(token)(o); err != nil {
			return err
		}
		return nats.CustomInboxPrefix(InboxPrefix(token))(o)
	}
}
