package api

import (
	"errors"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/interlock-dev/interlock/internal/auth"
)

func TestIdempotencyKey(t *testing.T) {
	for _, tc := range []struct {
		keys []string
		ok   bool
	}{
		{nil, true},
		{[]string{"kill-1"}, true},
		{[]string{strings.Repeat("k", 255)}, true},
		{[]string{""}, false},
		{[]string{strings.Repeat("k", 256)}, false},
		{[]string{"with space"}, false},
		{[]string{"é"}, false},
		{[]string{"a", "b"}, false},
	} {
		r := httptest.NewRequest("POST", "/api/v1/environments/prod/flags/a/kill", nil)
		for _, k := range tc.keys {
			r.Header.Add(headerIdempotencyKey, k)
		}
		err := checkIdempotencyKey(r)
		if (err == nil) != tc.ok || err != nil && !errors.Is(err, errBadRequest) {
			t.Errorf("%q: %v", tc.keys, err)
		}
	}

	id := func(name, method, path, key string) string {
		r := httptest.NewRequest(method, path, nil)
		if key != "" {
			r.Header.Set(headerIdempotencyKey, key)
		}
		return idempotentID(r, auth.Principal{Name: name})
	}
	const kill = "/api/v1/environments/prod/flags/a/kill"
	a := id("alice", "POST", kill, "k1")
	if a == "" || a != id("alice", "POST", kill, "k1") {
		t.Fatalf("the same write has ids %q and %q", a, id("alice", "POST", kill, "k1"))
	}
	for _, other := range []string{
		id("bob", "POST", kill, "k1"),
		id("alice", "POST", "/api/v1/environments/prod/flags/b/kill", "k1"),
		id("alice", "POST", kill, "k2"),
	} {
		if other == a {
			t.Fatalf("different writes share id %s", a)
		}
	}
	if id("alice", "POST", kill, "") != "" {
		t.Fatal("a write without a key has an id")
	}
}
