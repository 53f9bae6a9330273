package cli

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/interlock-dev/interlock/client"
)

// A write goes with an Idempotency-Key and is sent again under the same key while the event store
// cannot take it or does not confirm it.

const (
	storeDown = `{"error":{"code":"store_unavailable","message":"event store unavailable (nats: no servers available for connection); nothing was written, try again"}}`
	unknown   = `{"error":{"code":"outcome_unknown","message":"the event store did not confirm event 7d0c... (context deadline exceeded): it may or may not be stored","eventId":"7d0c"}}`
)

func killedFlag(t *testing.T) string {
	t.Helper()
	f := sampleFlag()
	f.Enabled = false
	b, err := json.Marshal(f)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestWriteRetriesUnderOneKey(t *testing.T) {
	srv := newFakeServer(t, replies(t,
		reply{status: 503, body: storeDown},
		reply{status: 503, body: unknown},
		reply{status: 200, body: killedFlag(t)},
	))
	r := runCLI(t, srv, "", "kill", "production/checkout-v2", "--reason", "drill")
	if r.code != ExitOK {
		t.Fatalf("exit %d, stderr %s", r.code, r.stderr)
	}
	reqs := srv.requests()
	key := reqs[0].Header.Get("Idempotency-Key")
	if len(reqs) != 3 || key == "" {
		t.Fatalf("%d requests, key %q", len(reqs), key)
	}
	for i, req := range reqs {
		if got := req.Header.Get("Idempotency-Key"); got != key {
			t.Fatalf("request %d: key %q, want %q", i, got, key)
		}
	}
}

func TestWriteOfUnknownOutcome(t *testing.T) {
	srv := newFakeServer(t, func(int, recorded) reply { return reply{status: 503, body: unknown} })
	r := runCLI(t, srv, "", "kill", "production/checkout-v2", "--reason", "drill", "--idempotency-key", "drill-1")
	if r.code != ExitUnknown || !strings.Contains(r.stderr, "--idempotency-key drill-1") {
		t.Fatalf("exit %d, stderr %s", r.code, r.stderr)
	}
	reqs := srv.requests()
	if len(reqs) != client.DefaultWriteAttempts {
		t.Fatalf("%d requests, want %d", len(reqs), client.DefaultWriteAttempts)
	}
	for _, req := range reqs {
		if req.Header.Get("Idempotency-Key") != "drill-1" {
			t.Fatalf("key %q", req.Header.Get("Idempotency-Key"))
		}
	}

	srv = newFakeServer(t, func(int, recorded) reply { return reply{status: 503, body: storeDown} })
	r = runCLI(t, srv, "", "kill", "production/checkout-v2", "--reason", "drill")
	if r.code != ExitUnavailable || !strings.Contains(r.stderr, "nothing was written") {
		t.Fatalf("exit %d, stderr %s", r.code, r.stderr)
	}
}
