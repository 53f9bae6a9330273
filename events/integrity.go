package events

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/nats-io/nats.go"
)

// Integrity headers: CloudEvents extension attributes the server adds to every event it appends.
const (
	// HeaderPrevHash is the hash (lowercase hex SHA-256 of [Canonical] with the signature) of the
	// previous accepted event on the same subject; absent on a subject's first event.
	HeaderPrevHash = "ce-prevhash"
	// HeaderSigningKey is the id of the key that signed the event (see [KeyID]).
	HeaderSigningKey = "ce-signingkey"
	// HeaderSignature is the Ed25519 signature of [Canonical] without the signature, in
	// standard base64 with padding.
	HeaderSignature = "ce-signature"
)

// canonicalTag opens every canonical form, so that its bytes mean nothing else.
const canonicalTag = "interlock-event-v1"

var (
	// ErrIntegrity means a stored message failed verification: it was not written by a server
	// holding a signing key, or it was altered, or it does not chain to its subject's history.
	// It is carried by an [*IntegrityError] together with one of the problems below.
	ErrIntegrity = errors.New("integrity problem")
	// ErrUnsigned means an event after the cut-over carries no signature.
	ErrUnsigned = errors.New("unsigned")
	// ErrUnknownKey means an event names a signing key that is not among the verification keys.
	ErrUnknownKey = errors.New("unknown signing key")
	// ErrBadSignature means an event's signature does not match its content (or does not decode).
	ErrBadSignature = errors.New("bad signature")
	// ErrBrokenChain means an event's previous hash is not the hash of its subject's previous
	// accepted event.
	ErrBrokenChain = errors.New("broken chain")
	// ErrKey means a key file or key could not be used.
	ErrKey = errors.New("bad key")
)

// IntegrityError says which stored message failed verification, and why. errors.Is matches
// [ErrIntegrity] and Problem.
type IntegrityError struct {
	Sequence uint64
	Subject  string
	// Problem is one of [ErrUnsigned], [ErrUnknownKey], [ErrBadSignature], [ErrBrokenChain].
	Problem error
	// Detail says more, for people; it may be empty.
	Detail string
}

func (e *IntegrityError) Error() string {
	s := fmt.Sprintf("integrity problem at sequence %d on %s: %v", e.Sequence, e.Subject, e.Problem)
	if e.Detail != "" {
		s += ": " + e.Detail
	}
	return s
}

// Unwrap makes errors.Is match both [ErrIntegrity] and the problem.
func (e *IntegrityError) Unwrap() []error { return []error{ErrIntegrity, e.Problem} }

// Reason is the problem as a short word for APIs and metrics: "unsigned", "unknown-key",
// "bad-signature" or "broken-chain".
func (e *IntegrityError) Reason() string {
	switch {
	case errors.Is(e.Problem, ErrUnsigned):
		return "unsigned"
	case errors.Is(e.Problem, ErrUnknownKey):
		return "unknown-key"
	case errors.Is(e.Problem, ErrBadSignature):
		return "bad-signature"
	default:
		return "broken-chain"
	}
}

// Canonical is the one byte form of a stored message that is signed and hashed. It is, with
// u32(n) a 4-byte big-endian unsigned integer:
//
//	u32(18) "interlock-event-v1"
//	u32(len(subject)) subject
//	u32(number of header values selected)
//	for each selected header value, ordered by header name (bytewise), then in stored order:
//	    u32(len(name)) name u32(len(value)) value
//	u32(len(data)) data
//
// The selected headers are those whose name starts with "ce-" in any case; [HeaderSignature] is
// left out when withSignature is false (the bytes that are signed) and kept when it is true (the
// bytes whose SHA-256 is the event's hash, see [Hash]). Other headers (Nats-Msg-Id and the like)
// are not covered.
func Canonical(subject string, h nats.Header, data []byte, withSignature bool) []byte {
	names := make([]string, 0, len(h))
	size := 4 + len(canonicalTag) + 4 + len(subject) + 4 + 4 + len(data)
	for name, vs := range h {
		if !isCE(name) || (!withSignature && strings.EqualFold(name, HeaderSignature)) {
			continue
		}
		names = append(names, name)
		for _, v := range vs {
			size += 8 + len(name) + len(v)
		}
	}
	slices.Sort(names)
	b := make([]byte, 0, size)
	b = appendField(b, canonicalTag)
	b = appendField(b, subject)
	n := 0
	for _, name := range names {
		n += len(h[name])
	}
	b = binary.BigEndian.AppendUint32(b, uint32(n))
	for _, name := range names {
		for _, v := range h[name] {
			b = appendField(b, name)
			b = appendField(b, v)
		}
	}
	b = binary.BigEndian.AppendUint32(b, uint32(len(data)))
	return append(b, data...)
}

func isCE(name string) bool { return len(name) >= 3 && strings.EqualFold(name[:3], "ce-") }

func appendField(b []byte, s string) []byte {
	b = binary.BigEndian.AppendUint32(b, uint32(len(s)))
	return append(b, s...)
}

// Hash is a stored message's hash, the link of its subject's chain: SHA-256 of its [Canonical]
// form with the signature.
func Hash(subject string, h nats.Header, data []byte) [32]byte {
	return sha256.Sum256(Canonical(subject, h, data, true))
}

// KeyID names a public key: lowercase hex of the first 8 bytes of the SHA-256 of its 32 bytes.
func KeyID(pub ed25519.PublicKey) string {
	sum := sha256.Sum256(pub)
	return hex.EncodeToString(sum[:8])
}

// Signer signs the events a server appends. It is safe for concurrent use.
type Signer struct {
	key ed25519.PrivateKey
	id  string
}

// NewSigner returns a signer with key. The error wraps [ErrKey] for a key of the wrong size.
func NewSigner(key ed25519.PrivateKey) (*Signer, error) {
	if len(key) != ed25519.PrivateKeySize {
		return nil, fmt.Errorf("%w: an Ed25519 private key has %d bytes, not %d", ErrKey, ed25519.PrivateKeySize, len(key))
	}
	return &Signer{key: key, id: KeyID(key.Public().(ed25519.PublicKey))}, nil
}

// KeyID is the id of the signer's key, which every event it signs names.
func (s *Signer) KeyID() string { return s.id }

// Public is the signer's public key.
func (s *Signer) Public() ed25519.PublicKey { return s.key.Public().(ed25519.PublicKey) }

// Sign sets msg's previous hash (none when prev is nil), key id and signature, and returns the
// message's hash, the link the next event of its subject names.
func (s *Signer) Sign(msg *nats.Msg, prev *[32]byte) [32]byte {
	delete(msg.Header, HeaderPrevHash)
	if prev != nil {
		msg.Header[HeaderPrevHash] = []string{hex.EncodeToString(prev[:])}
	}
	msg.Header[HeaderSigningKey] = []string{s.id}
	delete(msg.Header, HeaderSignature)
	sig := ed25519.Sign(s.key, Canonical(msg.Subject, msg.Header, msg.Data, false))
	msg.Header[HeaderSignature] = []string{base64.StdEncoding.EncodeToString(sig)}
	return Hash(msg.Subject, msg.Header, msg.Data)
}

// Keys are the public keys events are verified with, by id. A Keys is immutable.
type Keys struct {
	byID map[string]ed25519.PublicKey
}

// NewKeys returns the set of pubs; duplicates are kept once. The error wraps [ErrKey] for a key
// of the wrong size.
func NewKeys(pubs ...ed25519.PublicKey) (*Keys, error) {
	k := &Keys{byID: make(map[string]ed25519.PublicKey, len(pubs))}
	for _, p := range pubs {
		if len(p) != ed25519.PublicKeySize {
			return nil, fmt.Errorf("%w: an Ed25519 public key has %d bytes, not %d", ErrKey, ed25519.PublicKeySize, len(p))
		}
		k.byID[KeyID(p)] = slices.Clone(p)
	}
	return k, nil
}

// PublicKey is one verification key and its id.
type PublicKey struct {
	ID  string
	Key ed25519.PublicKey
}

// List returns the keys, ordered by id.
func (k *Keys) List() []PublicKey {
	out := make([]PublicKey, 0, len(k.byID))
	for id, p := range k.byID {
		out = append(out, PublicKey{ID: id, Key: p})
	}
	slices.SortFunc(out, func(a, b PublicKey) int { return strings.Compare(a.ID, b.ID) })
	return out
}

// Len is the number of keys.
func (k *Keys) Len() int { return len(k.byID) }

// PEM block types of key files.
const (
	pemPrivate = "PRIVATE KEY"
	pemPublic  = "PUBLIC KEY"
)

// maxKeyFile bounds a key file.
const maxKeyFile = 64 << 10

// ParsePrivateKey reads an Ed25519 private key from a PEM "PRIVATE KEY" block (PKCS #8), as
// `openssl genpkey -algorithm ed25519` writes it. The error wraps [ErrKey].
func ParsePrivateKey(data []byte) (ed25519.PrivateKey, error) {
	if len(data) > maxKeyFile {
		return nil, fmt.Errorf("%w: larger than %d bytes", ErrKey, maxKeyFile)
	}
	block, _ := pem.Decode(data)
	if block == nil || block.Type != pemPrivate {
		return nil, fmt.Errorf("%w: no PEM %q block", ErrKey, pemPrivate)
	}
	k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrKey, err)
	}
	key, ok := k.(ed25519.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("%w: a %T, not an Ed25519 key", ErrKey, k)
	}
	return key, nil
}

// ParsePublicKeys reads every key of a PEM file: "PUBLIC KEY" blocks (PKIX, as `openssl pkey
// -pubout` writes them) and "PRIVATE KEY" blocks (their public half). A file with no key, a
// block of another type or a key that is not Ed25519 is an error wrapping [ErrKey].
func ParsePublicKeys(data []byte) ([]ed25519.PublicKey, error) {
	if len(data) > maxKeyFile {
		return nil, fmt.Errorf("%w: larger than %d bytes", ErrKey, maxKeyFile)
	}
	var keys []ed25519.PublicKey
	rest := data
	for {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			break
		}
		switch block.Type {
		case pemPublic:
			k, err := x509.ParsePKIXPublicKey(block.Bytes)
			if err != nil {
				return nil, fmt.Errorf("%w: key %d: %v", ErrKey, len(keys)+1, err)
			}
			pub, ok := k.(ed25519.PublicKey)
			if !ok {
				return nil, fmt.Errorf("%w: key %d is a %T, not an Ed25519 key", ErrKey, len(keys)+1, k)
			}
			keys = append(keys, pub)
		case pemPrivate:
			priv, err := ParsePrivateKey(pem.EncodeToMemory(block))
			if err != nil {
				return nil, fmt.Errorf("key %d: %w", len(keys)+1, err)
			}
			keys = append(keys, priv.Public().(ed25519.PublicKey))
		default:
			return nil, fmt.Errorf("%w: a PEM %q block, not a key", ErrKey, block.Type)
		}
	}
	if len(keys) == 0 {
		return nil, fmt.Errorf("%w: no PEM key block", ErrKey)
	}
	if len(bytes.TrimSpace(rest)) > 0 {
		return nil, fmt.Errorf("%w: text after the last PEM block", ErrKey)
	}
	return keys, nil
}

// MarshalPrivateKey encodes key as a PEM "PRIVATE KEY" block (PKCS #8).
func MarshalPrivateKey(key ed25519.PrivateKey) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrKey, err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: pemPrivate, Bytes: der}), nil
}

// MarshalPublicKey encodes pub as a PEM "PUBLIC KEY" block (PKIX).
func MarshalPublicKey(pub ed25519.PublicKey) ([]byte, error) {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrKey, err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: pemPublic, Bytes: der}), nil
}

// integrityHeaders are an event's integrity headers, decoded.
type integrityHeaders struct {
	signed  bool // a signature header is present
	keyID   string
	sig     []byte
	hasPrev bool
	prev    [32]byte
}

// decodeIntegrity decodes the integrity headers of a stored message. A header that is present
// but malformed is an error wrapping ErrBadSignature (a signature or key id) or ErrBrokenChain
// (a previous hash); problem details name the header.
func decodeIntegrity(h nats.Header) (integrityHeaders, error) {
	var ih integrityHeaders
	if vs, ok := h[HeaderSignature]; ok {
		ih.signed = true
		if len(vs) != 1 {
			return ih, fmt.Errorf("%w: %d %s headers", ErrBadSignature, len(vs), HeaderSignature)
		}
		sig, err := base64.StdEncoding.Strict().DecodeString(vs[0])
		if err != nil || len(sig) != ed25519.SignatureSize {
			return ih, fmt.Errorf("%w: %s is not %d bytes of base64", ErrBadSignature, HeaderSignature, ed25519.SignatureSize)
		}
		ih.sig = sig
		ks := h[HeaderSigningKey]
		if len(ks) != 1 || !isKeyID(ks[0]) {
			return ih, fmt.Errorf("%w: %s is not one key id of 16 lowercase hex digits", ErrBadSignature, HeaderSigningKey)
		}
		ih.keyID = ks[0]
	}
	if vs, ok := h[HeaderPrevHash]; ok {
		if len(vs) != 1 || len(vs[0]) != 64 || !isLowerHex(vs[0]) {
			return ih, fmt.Errorf("%w: %s is not one SHA-256 in 64 lowercase hex digits", ErrBrokenChain, HeaderPrevHash)
		}
		hex.Decode(ih.prev[:], []byte(vs[0]))
		ih.hasPrev = true
	}
	return ih, nil
}

func isKeyID(s string) bool { return len(s) == 16 && isLowerHex(s) }

func isLowerHex(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

// documentTag opens the bytes a [Signer.SignDocument] signature covers, so that no event's
// canonical form can pass for a document, nor one kind of document for another.
const documentTag = "interlock-document-v1"

func documentBytes(kind string, data []byte) []byte {
	b := make([]byte, 0, 12+len(documentTag)+len(kind)+len(data))
	b = appendField(b, documentTag)
	b = appendField(b, kind)
	b = binary.BigEndian.AppendUint32(b, uint32(len(data)))
	return append(b, data...)
}

// SignDocument signs data, a document of the given kind that is not an event (a snapshot of
// the read models, say), and returns the signature; [Keys.VerifyDocument] checks it.
func (s *Signer) SignDocument(kind string, data []byte) []byte {
	return ed25519.Sign(s.key, documentBytes(kind, data))
}

// VerifyDocument checks a [Signer.SignDocument] signature of data as a document of kind, made
// with the key keyID. Errors: [ErrUnknownKey] or [ErrBadSignature].
func (k *Keys) VerifyDocument(kind, keyID string, data, sig []byte) error {
	pub, ok := k.byID[keyID]
	if !ok {
		return fmt.Errorf("%w: %s", ErrUnknownKey, truncate(keyID))
	}
	if !ed25519.Verify(pub, documentBytes(kind, data), sig) {
		return fmt.Errorf("%w: %s document", ErrBadSignature, truncate(kind))
	}
	return nil
}
