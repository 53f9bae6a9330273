package api_test

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/interlock-dev/interlock/internal/api"
	"github.com/interlock-dev/interlock/internal/auth"
	"github.com/interlock-dev/interlock/internal/await"
)

// withTokens gives the API the token store it authenticates with.
func withTokens(c *api.Config) {
	c.Tokens = c.Auth.(*auth.Store)
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
		{"list without token", req{method: "GET", path: "/api/v1/tokens", anonymous: true}, http.StatusUnauthorized, "unauthenticated"},
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

// issueAs issues a token through the API as the holder of token and returns it.
func (s *system) issueAs(t *testing.T, token, body string) string {
	t.Helper()
	var issued tokenJSON
	s.do(t, req{method: "POST", path: "/api/v1/tokens", token: token, body: body}).must(t, http.StatusCreated, &issued)
	return issued.Token
}

func TestScopesHoldOnEveryKindOfRoute(t *testing.T) {
	s := boot(t, withTokens, func(c *api.Config) { c.Events = c.Reader.(api.EventFeed) })
	s.create(t, "staging", "checkout")
	s.create(t, "production", "checkout")
	writer := s.issueAs(t, s.admin, `{"name":"staging-writer","role":"writer","environment":"staging"}`)

	// In its environment it writes; in another it neither writes nor reads.
	s.do(t, req{method: "POST", path: flagPath("staging", "checkout") + "/kill", token: writer, body: `{"reason":"x"}`}).must(t, http.StatusOK, nil)
	s.unchanged(t, func() {
		s.do(t, req{method: "POST", path: "/api/v1/environments/production/flags", token: writer, body: boolFlag("sneaky")}).
			apiError(t, http.StatusForbidden, "forbidden")
		s.do(t, req{method: "POST", path: flagPath("production", "checkout") + "/kill", token: writer, body: `{"reason":"x"}`}).
			apiError(t, http.StatusForbidden, "forbidden")
	})
	s.do(t, req{method: "GET", path: flagPath("production", "checkout"), token: writer}).apiError(t, http.StatusForbidden, "forbidden")
	s.do(t, req{method: "GET", path: flagPath("production", "checkout") + "/history", token: writer}).apiError(t, http.StatusForbidden, "forbidden")

	// Cross-environment reads show its environment only.
	var envs struct{ Environments []string }
	s.do(t, req{method: "GET", path: "/api/v1/environments", token: writer}).must(t, http.StatusOK, &envs)
	if len(envs.Environments) != 1 || envs.Environments[0] != "staging" {
		t.Errorf("environments = %v, want [staging]", envs.Environments)
	}
	var page struct {
		Events []struct{ Environment, Type string }
	}
	s.do(t, req{method: "GET", path: "/api/v1/audit", token: writer}).must(t, http.StatusOK, &page)
	if len(page.Events) != 2 {
		t.Errorf("audit shows %d events, want staging's 2: %+v", len(page.Events), page.Events)
	}
	for _, ev := range page.Events {
		if ev.Environment != "staging" {
			t.Errorf("a staging token's audit shows %+v", ev)
		}
	}
	s.do(t, req{method: "GET", path: "/api/v1/audit?environment=production", token: writer}).apiError(t, http.StatusForbidden, "forbidden")
	s.do(t, req{method: "GET", path: "/api/v1/events?environment=production", token: writer}).apiError(t, http.StatusForbidden, "forbidden")
}

func TestMintingCannotEscalate(t *testing.T) {
	s := boot(t, withTokens)
	stagingAdmin := s.issueAs(t, s.admin, `{"name":"staging-admin","role":"admin","environment":"staging"}`)
	tests := []struct{ name, body string }{
		{"unscoped admin", `{"name":"root2","role":"admin"}`},
		{"unscoped reader", `{"name":"r2","role":"reader"}`},
		{"another environment", `{"name":"p2","role":"writer","environment":"production"}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s.unchanged(t, func() {
				s.do(t, req{method: "POST", path: "/api/v1/tokens", token: stagingAdmin, body: tt.body}).apiError(t, http.StatusForbidden, "forbidden")
			})
		})
	}
	// Within its scope it issues and revokes, and lists only its environment's tokens.
	s.issueAs(t, stagingAdmin, `{"name":"s-reader","role":"reader","environment":"staging"}`)
	var list struct{ Tokens []tokenJSON }
	s.do(t, req{method: "GET", path: "/api/v1/tokens", token: stagingAdmin}).must(t, http.StatusOK, &list)
	if len(list.Tokens) != 2 {
		t.Errorf("a staging admin lists %+v, want its 2 staging tokens", list.Tokens)
	}
	s.do(t, req{method: "DELETE", path: "/api/v1/tokens/writer", token: stagingAdmin}).apiError(t, http.StatusForbidden, "forbidden")
	s.do(t, req{method: "DELETE", path: "/api/v1/tokens/s-reader", token: stagingAdmin}).must(t, http.StatusNoContent, nil)
}

func TestTokenEventsInAudit(t *testing.T) {
	s := boot(t, withTokens)
	s.issueAs(t, s.admin, `{"name":"ci","role":"writer","environment":"staging","expiresIn":"30d"}`)
	s.do(t, req{method: "DELETE", path: "/api/v1/tokens/ci", token: s.admin, header: map[string]string{"X-Interlock-Reason": "rotated"}}).
		must(t, http.StatusNoContent, nil)
	var page struct {
		Events []struct {
			Type, Actor, Key, Reason string
			Data                     map[string]any
		}
	}
	s.do(t, req{method: "GET", path: "/api/v1/audit?actor=admin", token: s.admin}).must(t, http.StatusOK, &page)
	if len(page.Events) != 2 {
		t.Fatalf("audit = %+v, want the issue and the revocation", page.Events)
	}
	issued, revoked := page.Events[0], page.Events[1]
	if issued.Type != "io.interlock.token.issued.v1" || issued.Key != "ci" || issued.Data["role"] != "writer" ||
		issued.Data["environment"] != "staging" || issued.Data["expiresAt"] == nil {
		t.Errorf("issued = %+v", issued)
	}
	if revoked.Type != "io.interlock.token.revoked.v1" || revoked.Key != "ci" || revoked.Reason != "rotated" {
		t.Errorf("revoked = %+v", revoked)
	}
	raw := s.do(t, req{method: "GET", path: "/api/v1/audit", token: s.admin}).body
	if strings.Contains(string(raw), "ilk_") {
		t.Errorf("the audit trail holds a token: %s", raw)
	}
}

func TestExpiredTokenSaysSo(t *testing.T) {
	s := boot(t, withTokens)
	var issued tokenJSON
	s.do(t, req{method: "POST", path: "/api/v1/tokens", token: s.admin, body: `{"name":"brief","role":"reader","expiresIn":"1m"}`}).
		must(t, http.StatusCreated, &issued)
	s.do(t, req{method: "GET", path: "/api/v1/environments", token: issued.Token}).must(t, http.StatusOK, nil)
	_, tok, err := s.tokens.Create(t.Context(), auth.Spec{Name: "gone", Role: auth.RoleReader, ExpiresAt: time.Now().Add(20 * time.Millisecond)})
	if err != nil {
		t.Fatal(err)
	}
	await.Eventually(t, 5*time.Second, func() bool {
		return s.do(t, req{method: "GET", path: "/api/v1/environments", token: tok}).status == http.StatusUnauthorized
	}, "the token expires")
	msg := s.do(t, req{method: "GET", path: "/api/v1/environments", token: tok}).apiError(t, http.StatusUnauthorized, "unauthenticated")
	if !strings.Contains(msg, "expired") {
		t.Errorf("message %q does not say the token expired", msg)
	}
	for _, bad := range []string{`"expiresIn":"0s"`, `"expiresIn":"soon"`, `"expiresIn":"99999d"`, `"expiresAt":"2001-01-01T00:00:00Z"`, `"expiresIn":"1h","expiresAt":"2999-01-01T00:00:00Z"`} {
		s.do(t, req{method: "POST", path: "/api/v1/tokens", token: s.admin, body: `{"name":"x","role":"reader",` + bad + `}`}).
			apiError(t, http.StatusBadRequest, "invalid_argument")
	}
}
