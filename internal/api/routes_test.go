package api_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v2"

	"github.com/interlock-dev/interlock/internal/api"
	"github.com/interlock-dev/interlock/internal/auth"
	"github.com/interlock-dev/interlock/internal/await"
)

// publicRoutes are the only routes anyone may call without a token.
var publicRoutes = map[string]bool{"GET /healthz": true, "GET /readyz": true}

// caller is one kind of request sender of the route table test, and what it expects of a route.
type caller struct {
	name   string
	header string // the Authorization header; "" for none
	// want says the status class a route with policy ri should answer: 401, 403, or 0 for
	// "let through" (anything but 401 and 403).
	want func(ri api.RouteInfo) int
}

// TestEveryRouteIsAuthorized is built from the route table: every route × every kind of caller.
// A route added without a policy, or with the wrong one, fails here.
func TestEveryRouteIsAuthorized(t *testing.T) {
	s := boot(t, withTokens, func(c *api.Config) { c.Events = c.Reader.(api.EventFeed) })
	a := s.api
	s.create(t, "prod", "checkout")
	tokens := s.tokens
	ctx := context.Background()
	issue := func(spec auth.Spec) string {
		t.Helper()
		_, tok, err := tokens.Create(ctx, spec)
		if err != nil {
			t.Fatalf("issue %+v: %v", spec, err)
		}
		return tok
	}
	prodAdmin := issue(auth.Spec{Name: "prod-admin", Role: auth.RoleAdmin, Environment: "prod"})
	stagingAdmin := issue(auth.Spec{Name: "staging-admin", Role: auth.RoleAdmin, Environment: "staging"})
	revoked := issue(auth.Spec{Name: "revoked", Role: auth.RoleAdmin})
	if _, err := tokens.Revoke(ctx, "revoked"); err != nil {
		t.Fatal(err)
	}
	expired := issue(auth.Spec{Name: "expired", Role: auth.RoleAdmin, ExpiresAt: time.Now().Add(50 * time.Millisecond)})
	await.Eventually(t, 5*time.Second, func() bool {
		_, err := tokens.Authenticate(ctx, expired)
		return errors.Is(err, auth.ErrExpired)
	}, "the token expires")

	refused := func() func(api.RouteInfo) int {
		return func(ri api.RouteInfo) int {
			if publicRoutes[ri.Method+" "+ri.Path] {
				return 0
			}
			return http.StatusUnauthorized
		}
	}
	byRole := func(role auth.Role) func(api.RouteInfo) int {
		return func(ri api.RouteInfo) int {
			if publicRoutes[ri.Method+" "+ri.Path] || auth.Authorize(auth.Principal{Role: role}, ri.Need) == nil {
				return 0
			}
			return http.StatusForbidden
		}
	}
	callers := []caller{
		{"no token", "", refused()},
		{"not bearer", "Basic YWRtaW46YWRtaW4=", refused()},
		{"malformed", "Bearer ", refused()},
		{"unknown", "Bearer ilk_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", refused()},
		{"revoked", "Bearer " + revoked, refused()},
		{"expired", "Bearer " + expired, refused()},
		{"admin", "Bearer " + s.admin, byRole(auth.RoleAdmin)},
		{"writer", "Bearer " + s.writer, byRole(auth.RoleWriter)},
		{"oncall", "Bearer " + s.oncall, byRole(auth.RoleOncall)},
		{"reader", "Bearer " + s.reader, byRole(auth.RoleReader)},
		// Scoped admins: the route's environment is prod.
		{"right scope", "Bearer " + prodAdmin, func(ri api.RouteInfo) int {
			if ri.Unscoped {
				return http.StatusForbidden // it acts on every environment
			}
			return byRole(auth.RoleAdmin)(ri)
		}},
		{"other scope", "Bearer " + stagingAdmin, func(ri api.RouteInfo) int {
			if ri.Scoped || ri.Unscoped {
				return http.StatusForbidden
			}
			// Cross-environment reads narrow to the scope; tokens check it in the handler.
			return 0
		}},
	}

	routes := a.Routes()
	if len(routes) < 30 {
		t.Fatalf("only %d routes in the table", len(routes))
	}
	for _, ri := range routes {
		if ri.Need == "" && !publicRoutes[ri.Method+" "+ri.Path] {
			t.Errorf("%s %s has no authorization policy", ri.Method, ri.Path)
		}
	}
	path := func(p string) string {
		return strings.NewReplacer("{env}", "prod", "{key}", "checkout", "{name}", "nobody").Replace(p)
	}
	for _, ri := range routes {
		for _, c := range callers {
			t.Run(ri.Method+" "+ri.Path+"/"+c.name, func(t *testing.T) {
				status := s.status(t, ri.Method, path(ri.Path), c.header)
				want := c.want(ri)
				switch {
				case want == 0 && (status == http.StatusUnauthorized || status == http.StatusForbidden):
					t.Errorf("%s answered %d, want it let through", c.name, status)
				case want != 0 && status != want:
					t.Errorf("%s answered %d, want %d", c.name, status, want)
				}
			})
		}
	}
	t.Logf("%d routes × %d callers", len(routes), len(callers))
}

// status sends one request with an empty JSON body (for methods that take one) and returns the
// status, closing the body at once: the event feed streams for ever.
func (s *system) status(t *testing.T, method, path, authz string) int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var body io.Reader
	if method != "GET" && method != "DELETE" {
		body = strings.NewReader("{}")
	}
	r, err := http.NewRequestWithContext(ctx, method, s.url+path, body)
	if err != nil {
		t.Fatal(err)
	}
	if body != nil {
		r.Header.Set("Content-Type", "application/json")
		r.Header.Set("If-Match", `"999"`)
	}
	if authz != "" {
		r.Header.Set("Authorization", authz)
	}
	resp, err := s.client.Do(r)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// TestOpenAPIStatesEveryRoutesRole reads apiv1/openapi.yaml: every route of the table is
// documented, with the role it needs as x-interlock-role.
func TestOpenAPIStatesEveryRoutesRole(t *testing.T) {
	a := boot(t, withTokens).api
	raw, err := os.ReadFile("../../apiv1/openapi.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Paths map[string]map[string]any `yaml:"paths"`
	}
	if err := yaml.Unmarshal(raw, &doc); err != nil {
		t.Fatalf("openapi.yaml: %v", err)
	}
	// The other way round: every documented operation is a route.
	served := map[string]bool{}
	for _, ri := range a.Routes() {
		served[strings.ToLower(ri.Method)+" "+ri.Path] = true
		dir := ri.Path[:strings.LastIndex(ri.Path, "/")]
		served[strings.ToLower(ri.Method)+" "+dir+"/*"] = true
	}
	for path, ops := range doc.Paths {
		for method := range ops {
			switch method {
			case "get", "post", "put", "patch", "delete":
			default:
				continue // parameters, summary
			}
			templ := path
			if strings.HasSuffix(path, "}") && !strings.HasSuffix(path, "{key}") && !strings.HasSuffix(path, "{name}") {
				templ = path[:strings.LastIndex(path, "/")] + "/*"
			}
			if !served[method+" "+path] && !served[method+" "+templ] {
				t.Errorf("openapi.yaml documents %s %s, which no route serves", strings.ToUpper(method), path)
			}
		}
	}
	for _, ri := range a.Routes() {
		want := "public"
		if ri.Need != "" {
			want = string(lowestRole(ri.Need))
		}
		// A path may be documented as a template of its last segment, such as
		// .../rollout/{command}; its role is then a map from the segment's values.
		dir, last := ri.Path[:strings.LastIndex(ri.Path, "/")], ri.Path[strings.LastIndex(ri.Path, "/")+1:]
		ops, ok := doc.Paths[ri.Path]
		if !ok {
			for p, o := range doc.Paths {
				if strings.HasPrefix(p, dir+"/{") && strings.Count(p, "/") == strings.Count(ri.Path, "/") {
					ops, ok = o, true
				}
			}
		}
		if !ok {
			t.Errorf("%s is not in openapi.yaml", ri.Path)
			continue
		}
		op, ok := ops[strings.ToLower(ri.Method)].(map[any]any)
		if !ok {
			t.Errorf("%s %s is not in openapi.yaml", ri.Method, ri.Path)
			continue
		}
		role, _ := op["x-interlock-role"].(string)
		if byValue, ok := op["x-interlock-role"].(map[any]any); ok {
			role, _ = byValue[last].(string)
		}
		if role != want {
			t.Errorf("%s %s: x-interlock-role %q, want %q", ri.Method, ri.Path, role, want)
		}
	}
}

// lowestRole is the least role whose permissions include a.
func lowestRole(a auth.Action) auth.Role {
	for _, r := range []auth.Role{auth.RoleReader, auth.RoleOncall, auth.RoleWriter, auth.RoleAdmin} {
		if auth.Authorize(auth.Principal{Role: r}, a) == nil {
			return r
		}
	}
	return ""
}
