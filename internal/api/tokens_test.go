package api_test

import (
	"net/http"
	"testing"
	"time"

	"github.com/interlock-dev/interlock/internal/api"
	"github.com/interlock-dev/interlock/internal/auth"
)

// withTokens gives the API the token store it authenticates with, and makes reads need a token.
func withTokens(c *api.Config) {
	c.Tokens = c.Auth.(*auth.Store)
	c.ReadAuth = true
}

type tokenJSON struct {
	Name        string    `json:"name"`
	Role        string    `json:"role"`
	Environment string    `json:"environment"`
	CreatedAt   time.Time `json:"createdAt"`
	Token       string    `json:"token"`
}

func TestTokensLifecycle(t *testing.T) {
	s := boot(t, withTokens)
	s.create(t, "staging", "checkout")

	resp := s.do(t, req{method: "POST", path: "/api/v1/tokens", token: s.admin,
		body: `{"name":"checkout-svc","role":"reader","environment":"staging"}`})
	var issued tokenJSON
	resp.must(t, http.StatusCreated, &issued)
	if cc := resp.header.Get("Cache-Control"); cc != "no-store" {
		t.Errorf("Cache-Control = %q, want no-store", cc)
	}
	if issued.Name != "checkout-svc" || issued.Role != "reader" || issued.Environment != "staging" ||
		issued.CreatedAt.IsZero() || len(issued.Token) < auth.MinTokenLen {
		t.Fatalf("issued = %+v", issued)
	}

	// The new token reads, and may not write.
	s.do(t, req{method: "GET", path: flagPath("staging", "checkout"), token: issued.Token}).must(t, http.StatusOK, nil)
	s.unchanged(t, func() {
		s.do(t, req{method: "POST", path: flagPath("staging", "checkout") + "/kill", token: issued.Token}).
			apiError(t, http.StatusForbidden, "forbidden")
	})

	var list struct {
		Tokens []map[string]any `json:"tokens"`
	}
	s.do(t, req{method: "GET", path: "/api/v1/tokens", token: s.admin}).must(t, http.StatusOK, &list)
	names := map[string]map[string]any{}
	for _, tk := range list.Tokens {
		names[tk["name"].(string)] = tk
		for _, secret := range []string{"token", "hash", "key"} {
			if _, ok := tk[secret]; ok {
				t.Errorf("listed token %v has a %q field", tk["name"], secret)
			}
		}
	}
	for _, n := range []string{"admin", "writer", "oncall", "reader", "checkout-svc"} {
		if names[n] == nil {
			t.Errorf("list lacks %s: %v", n, list.Tokens)
		}
	}
	if got := names["checkout-svc"]; got["role"] != "reader" || got["environment"] != "staging" {
		t.Errorf("listed checkout-svc = %v", got)
	}

	s.do(t, req{method: "POST", path: "/api/v1/tokens", token: s.admin, body: `{"name":"checkout-svc","role":"writer"}`}).
		apiError(t, http.StatusConflict, "already_exists")

	s.do(t, req{method: "DELETE", path: "/api/v1/tokens/checkout-svc", token: s.admin}).must(t, http.StatusNoContent, nil)
	s.do(t, req{method: "GET", path: flagPath("staging", "checkout"), token: issued.Token}).
		apiError(t, http.StatusUnauthorized, "unauthenticated")
	s.do(t, req{method: "DELETE", path: "/api/v1/tokens/checkout-svc", token: s.admin}).
		apiError(t, http.StatusNotFound, "not_found")
}

func TestTokensRefused(t *testing.T) {
	s := boot(t, withTokens)
	tests := []struct {
		name   string
		r      req
		status int
		code   string
	}{
		{"list without token", req{method: "GET", path: "/api/v1/tokens"}, http.StatusUnauthorized, "unauthenticated"},
		{"create without token", req{method: "POST", path: "/api/v1/tokens", body: `{"name":"x","role":"reader"}`}, http.StatusUnauthorized, "unauthenticated"},
		{"revoke without token", req{method: "DELETE", path: "/api/v1/tokens/writer"}, http.StatusUnauthorized, "unauthenticated"},
		{"list as writer", req{method: "GET", path: "/api/v1/tokens", token: s.writer}, http.StatusForbidden, "forbidden"},
		{"create as writer", req{method: "POST", path: "/api/v1/tokens", token: s.writer, body: `{"name":"x","role":"admin"}`}, http.StatusForbidden, "forbidden"},
		{"revoke as oncall", req{method: "DELETE", path: "/api/v1/tokens/writer", token: s.oncall}, http.StatusForbidden, "forbidden"},
		{"bad role", req{method: "POST", path: "/api/v1/tokens", token: s.admin, body: `{"name":"x","role":"root"}`}, http.StatusBadRequest, "invalid_argument"},
		{"no role", req{method: "POST", path: "/api/v1/tokens", token: s.admin, body: `{"name":"x"}`}, http.StatusBadRequest, "invalid_argument"},
		{"bad environment", req{method: "POST", path: "/api/v1/tokens", token: s.admin, body: `{"name":"x","role":"reader","environment":"Prod EU"}`}, http.StatusBadRequest, "invalid_argument"},
		{"bad name", req{method: "POST", path: "/api/v1/tokens", token: s.admin, body: `{"name":"a b","role":"reader"}`}, http.StatusBadRequest, "invalid_argument"},
		{"name admin", req{method: "POST", path: "/api/v1/tokens", token: s.admin, body: `{"name":"admin","role":"admin"}`}, http.StatusBadRequest, "invalid_argument"},
		{"unknown field", req{method: "POST", path: "/api/v1/tokens", token: s.admin, body: `{"name":"x","role":"reader","ttl":5}`}, http.StatusBadRequest, "invalid_argument"},
		{"revoke admin", req{method: "DELETE", path: "/api/v1/tokens/admin", token: s.admin}, http.StatusBadRequest, "invalid_argument"},
		{"revoke unknown", req{method: "DELETE", path: "/api/v1/tokens/nobody", token: s.admin}, http.StatusNotFound, "not_found"},
		{"put", req{method: "PUT", path: "/api/v1/tokens/writer", token: s.admin}, http.StatusMethodNotAllowed, "method_not_allowed"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s.do(t, tt.r).apiError(t, tt.status, tt.code)
		})
	}
	// Nothing was issued or revoked: every token still works, and only the four exist.
	for _, tok := range []string{s.admin, s.writer, s.oncall, s.reader} {
		s.do(t, req{method: "GET", path: "/api/v1/environments", token: tok}).must(t, http.StatusOK, nil)
	}
	var list struct {
		Tokens []tokenJSON `json:"tokens"`
	}
	s.do(t, req{method: "GET", path: "/api/v1/tokens", token: s.admin}).must(t, http.StatusOK, &list)
	if len(list.Tokens) != 4 {
		t.Fatalf("tokens = %+v, want admin, oncall, reader, writer", list.Tokens)
	}
}

func TestTokensWithoutStore(t *testing.T) {
	s := boot(t)
	s.do(t, req{method: "GET", path: "/api/v1/tokens", token: s.admin}).apiError(t, http.StatusNotFound, "not_found")
}
