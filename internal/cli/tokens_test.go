package cli

import (
	"testing"
)

func TestTokensCommands(t *testing.T) {
	issued := `{"name":"checkout-svc","role":"reader","environment":"staging","createdAt":"2026-03-04T11:00:00Z","token":"ilk_secret"}`
	runCases(t, []cmdCase{
		{
			name:    "create scoped",
			args:    []string{"tokens", "create", "checkout-svc", "--role", "reader", "--environment", "staging"},
			replies: []reply{{status: 201, body: issued}},
			want:    []wantReq{{method: "POST", path: "/api/v1/tokens", body: `{"name":"checkout-svc","role":"reader","environment":"staging"}`}},
			stdout: "issued token checkout-svc (role reader, environment staging); it is shown only now:\n\nilk_secret\n\n" +
				"export INTERLOCK_TOKEN=ilk_secret\n",
		},
		{
			name:    "create as json",
			args:    []string{"tokens", "create", "ops", "--role", "oncall", "-o", "json"},
			replies: []reply{{status: 201, body: `{"name":"ops","role":"oncall","environment":"","createdAt":"2026-03-04T11:00:00Z","token":"ilk_x"}`}},
			want:    []wantReq{{method: "POST", path: "/api/v1/tokens", body: `{"name":"ops","role":"oncall"}`}},
			stdout:  "{\n  \"name\": \"ops\",\n  \"role\": \"oncall\",\n  \"environment\": \"\",\n  \"createdAt\": \"2026-03-04T11:00:00Z\",\n  \"token\": \"ilk_x\"\n}\n",
		},
		{
			name:    "create refused as a duplicate",
			args:    []string{"tokens", "create", "ops", "--role", "oncall"},
			replies: []reply{errReply(409, "already_exists", `issue: already exists: a token named "ops" exists`)},
			want:    []wantReq{{method: "POST", path: "/api/v1/tokens", body: `{"name":"ops","role":"oncall"}`}},
			code:    ExitConflict,
			stderr:  `a token named "ops" exists`,
		},
		{
			name: "create expiring, with a reason",
			args: []string{"tokens", "create", "ci", "--role", "writer", "--expires", "30d", "--reason", "pipeline"},
			replies: []reply{{status: 201, body: `{"name":"ci","role":"writer","environment":"","createdAt":"2026-03-04T11:00:00Z",` +
				`"expiresAt":"2026-04-03T11:00:00Z","token":"ilk_y"}`}},
			want: []wantReq{{method: "POST", path: "/api/v1/tokens", body: `{"expiresIn":"30d","name":"ci","role":"writer"}`,
				header: map[string]string{"X-Interlock-Reason": "pipeline"}}},
			stdout: "issued token ci (role writer, every environment, expires 2026-04-03T11:00:00Z); it is shown only now:\n\nilk_y\n\n" +
				"export INTERLOCK_TOKEN=ilk_y\n",
		},
		{
			name:   "create with a bad lifetime",
			args:   []string{"tokens", "create", "ci", "--role", "writer", "--expires", "forever"},
			code:   ExitUsage,
			stderr: "--expires",
		},
		{
			name:    "an expired token",
			args:    []string{"tokens", "list"},
			replies: []reply{errReply(401, "unauthenticated", `the token "ci" expired at 2026-04-03T11:00:00Z; ask for a new token`)},
			want:    []wantReq{{method: "GET", path: "/api/v1/tokens"}},
			code:    ExitAuth,
			stderr:  "expired",
		},
		{
			name:   "create without a role",
			args:   []string{"tokens", "create", "ops"},
			code:   ExitUsage,
			stderr: "--role is required",
		},
		{
			name:   "create with a bad environment",
			args:   []string{"tokens", "create", "ops", "--role", "reader", "--environment", "Prod EU"},
			code:   ExitUsage,
			stderr: "--environment",
		},
		{
			name:    "list",
			args:    []string{"tokens", "list"},
			replies: []reply{{status: 200, body: `{"tokens":[{"name":"admin","role":"admin","environment":"","createdAt":"2026-03-04T10:00:00Z"},` + issued[:len(issued)-len(`,"token":"ilk_secret"}`)] + `}]}`}},
			want:    []wantReq{{method: "GET", path: "/api/v1/tokens"}},
			golden:  "tokens_list.golden",
		},
		{
			name:    "list as a writer",
			args:    []string{"tokens", "list"},
			replies: []reply{errReply(403, "forbidden", `forbidden: role "writer" may not admin`)},
			want:    []wantReq{{method: "GET", path: "/api/v1/tokens"}},
			code:    ExitAuth,
			stderr:  "may not admin",
		},
		{
			name:    "revoke",
			args:    []string{"tokens", "revoke", "checkout-svc"},
			replies: []reply{{status: 204}},
			want:    []wantReq{{method: "DELETE", path: "/api/v1/tokens/checkout-svc"}},
			stdout:  "revoked checkout-svc\n",
		},
		{
			name:    "revoke with a reason",
			args:    []string{"tokens", "revoke", "ci", "--reason", "leaked"},
			replies: []reply{{status: 204}},
			want:    []wantReq{{method: "DELETE", path: "/api/v1/tokens/ci", header: map[string]string{"X-Interlock-Reason": "leaked"}}},
			stdout:  "revoked ci\n",
		},
		{
			name:    "revoke unknown",
			args:    []string{"tokens", "revoke", "nobody"},
			replies: []reply{errReply(404, "not_found", `revoke: not found: no token is named "nobody"`)},
			want:    []wantReq{{method: "DELETE", path: "/api/v1/tokens/nobody"}},
			code:    ExitNotFound,
			stderr:  "no token is named",
		},
		{
			name:   "tokens alone",
			args:   []string{"tokens"},
			code:   ExitUsage,
			stderr: "tokens needs a subcommand: create, list or revoke",
		},
	})
}
