package cli

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"time"

	"github.com/interlock-dev/interlock/client"
	"github.com/interlock-dev/interlock/events"
	"github.com/interlock-dev/interlock/internal/auth"
	"github.com/spf13/pflag"
)

// tokenInfo is a token as the API describes it; Token is set only in the answer to a create.
type tokenInfo struct {
	Name        string    `json:"name"`
	Role        string    `json:"role"`
	Environment string    `json:"environment"`
	CreatedAt   time.Time `json:"createdAt"`
	ExpiresAt   time.Time `json:"expiresAt,omitzero"`
	Token       string    `json:"token,omitempty"`
}

func tokensCreate() *command {
	return &command{
		name: "tokens create", operands: "NAME", args: "NAME --role ROLE [--environment ENV] [--expires 30d] [--reason TEXT] [-o table|json]",
		summary: "Issue an API token (admin only); it is shown once.",
		help: `ROLE is admin, writer, oncall or reader. --environment scopes the token to one environment:
a service evaluating flags over OFREP should use a reader token scoped to its environment.
--expires gives the token a lifetime (30d, 12h, 90m; at most 3650d); after it the token is
refused with a message that says it expired. A token can only create tokens of a role no higher
than its own and a scope no wider: an admin scoped to an environment creates tokens of that
environment only. The issue is recorded in the audit trail (name, role, scope, expiry; never
the token). The token is printed once and cannot be recovered; revoke it and issue another if
it is lost.`,
		minArgs: 1, maxArgs: 1,
		setup: func(fs *pflag.FlagSet) action {
			role := fs.String("role", "", "the token's `ROLE`: admin, writer, oncall or reader (required)")
			env := fs.String("environment", "", "scope the token to environment `ENV`")
			expires := fs.String("expires", "", "the token's `LIFETIME`: 30d, 12h, 90m (default: it does not expire)")
			reason := fs.String("reason", "", "why, for the audit trail")
			return func(ctx context.Context, s *session, pos []string) error {
				if *role == "" {
					return usagef(s.cmd, "--role is required: admin, writer, oncall or reader")
				}
				if *env != "" {
					if err := events.ValidateEnvironment(*env); err != nil {
						return usagef(s.cmd, "--environment %v", err)
					}
				}
				if *expires != "" {
					if _, err := auth.ParseLifetime(*expires); err != nil {
						return usagef(s.cmd, "--expires %v", err)
					}
				}
				body := map[string]string{"name": pos[0], "role": *role}
				if *env != "" {
					body["environment"] = *env
				}
				if *expires != "" {
					body["expiresIn"] = *expires
				}
				resp, err := s.client.postJSON(ctx, "/api/v1/tokens", reasonHeaders(*reason), body)
				if err != nil {
					return err
				}
				if s.json {
					return s.printJSON(resp.Body)
				}
				var tk tokenInfo
				if err := decodeJSON(resp, "the token", &tk); err != nil {
					return err
				}
				scope := "every environment"
				if tk.Environment != "" {
					scope = "environment " + tk.Environment
				}
				if !tk.ExpiresAt.IsZero() {
					scope += ", expires " + tk.ExpiresAt.UTC().Format(time.RFC3339)
				}
				_, err = fmt.Fprintf(s.stdout, "issued token %s (role %s, %s); it is shown only now:\n\n%s\n\nexport INTERLOCK_TOKEN=%s\n",
					tk.Name, tk.Role, scope, tk.Token, tk.Token)
				return err
			}
		},
	}
}

func tokensList() *command {
	return &command{
		name: "tokens list", args: "[-o table|json]", summary: "List the issued API tokens (admin only), never their secrets.",
		setup: func(fs *pflag.FlagSet) action {
			return func(ctx context.Context, s *session, pos []string) error {
				resp, err := s.client.get(ctx, "/api/v1/tokens", nil)
				if err != nil {
					return err
				}
				if s.json {
					return s.printJSON(resp.Body)
				}
				var body struct {
					Tokens []tokenInfo `json:"tokens"`
				}
				if err := decodeJSON(resp, "the tokens", &body); err != nil {
					return err
				}
				if len(body.Tokens) == 0 {
					_, err := fmt.Fprintln(s.stdout, "no tokens")
					return err
				}
				tw := newTable(s.stdout)
				fmt.Fprintln(tw, "NAME\tROLE\tENVIRONMENT\tCREATED\tEXPIRES")
				for _, tk := range body.Tokens {
					env := tk.Environment
					if env == "" {
						env = "*"
					}
					expires := "never"
					if !tk.ExpiresAt.IsZero() {
						expires = showTime(tk.ExpiresAt)
					}
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", cell(tk.Name), cell(tk.Role), cell(env), showTime(tk.CreatedAt), expires)
				}
				return tw.Flush()
			}
		},
	}
}

func tokensRevoke() *command {
	return &command{
		name: "tokens revoke", operands: "NAME", args: "NAME [--reason TEXT]", summary: "Revoke every API token named NAME (admin only).",
		help: `The server that answers stops accepting the tokens at once; other replicas within milliseconds.
The revocation is recorded in the audit trail. The admin token cannot be revoked.`,
		minArgs: 1, maxArgs: 1,
		setup: func(fs *pflag.FlagSet) action {
			reason := fs.String("reason", "", "why, for the audit trail")
			return func(ctx context.Context, s *session, pos []string) error {
				if _, err := s.client.do(ctx, client.Request{Method: http.MethodDelete, Path: "/api/v1/tokens/" + url.PathEscape(pos[0]), Header: reasonHeaders(*reason)}); err != nil {
					return err
				}
				if s.json {
					return nil
				}
				_, err := fmt.Fprintf(s.stdout, "revoked %s\n", pos[0])
				return err
			}
		},
	}
}
