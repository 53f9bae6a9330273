package api

import (
	"net/http"

	"github.com/google/uuid"

	"github.com/interlock-dev/interlock/internal/auth"
)

// headerIdempotencyKey names a write: the same write sent again with the same key (by the same
// token, to the same method and path) writes nothing new and answers as the first attempt did,
// within the event stream's duplicate window.
const headerIdempotencyKey = "Idempotency-Key"

// maxIdempotencyKey bounds the key's length.
const maxIdempotencyKey = 255

// idempotencyNamespace is the UUIDv5 namespace of event ids derived from idempotency keys.
var idempotencyNamespace = uuid.MustParse("6f1c1b52-8f3e-4a44-9d0b-3c0e6c3f6a01")

// checkIdempotencyKey refuses a key that is empty, too long, or not printable ASCII.
func checkIdempotencyKey(r *http.Request) error {
	vs, ok := r.Header[headerIdempotencyKey]
	if !ok {
		return nil
	}
	if len(vs) != 1 {
		return badRequest("Idempotency-Key: give one key, not " + itoa(int64(len(vs))))
	}
	k := vs[0]
	if k == "" || len(k) > maxIdempotencyKey {
		return badRequest("Idempotency-Key: 1 to 255 printable ASCII characters")
	}
	for i := range len(k) {
		if k[i] < 0x21 || k[i] > 0x7e {
			return badRequest("Idempotency-Key: 1 to 255 printable ASCII characters, without spaces")
		}
	}
	return nil
}

// idempotentID is the id of the event a write with an Idempotency-Key writes: a UUIDv5 of the
// token's name, the method and path, and the key, so that keys of different tokens or routes
// never meet. It is "" without a key (the event gets a fresh id).
func idempotentID(r *http.Request, p auth.Principal) string {
	k := r.Header.Get(headerIdempotencyKey)
	if k == "" {
		return ""
	}
	name := p.Name + "\x00" + r.Method + " " + r.URL.Path + "\x00" + k
	return uuid.NewSHA1(idempotencyNamespace, []byte(name)).String()
}
