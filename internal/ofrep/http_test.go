package ofrep

import (
	"context"
	"encoding/json"
	"net/http"
	"reflect"
	"strconv"
	"strings"
	"testing"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/interlock-dev/interlock/internal/auth"
	"github.com/interlock-dev/interlock/internal/natstest"
	"github.com/interlock-dev/interlock/projections"
	"github.com/interlock-dev/interlock/targeting"
)

const pathOne = PathEvaluate + "/"

func TestEvaluateOneResponses(t *testing.T) {
	s := startServer(t)
	s.create("production", "static-bool", boolFlag(true))
	s.create("production", "new-checkout", splitFlag())
	s.create("production", "cache-config", objectFlag())
	hdrs := bearer(s.token)

	tests := []struct {
		name, key, body string
		status          int
		want            string // the whole JSON answer; "" to check errorCode only
		code            string
	}{
		{"static", "static-bool", `{"context":{"targetingKey":"u1"}}`, 200,
			`{"key":"static-bool","value":true,"reason":"STATIC","variant":"on","metadata":{"version":1,"environment":"production"}}`, ""},
		{"empty body", "static-bool", ``, 200,
			`{"key":"static-bool","value":true,"reason":"STATIC","variant":"on","metadata":{"version":1,"environment":"production"}}`, ""},
		{"null context, other members", "static-bool", ` {"flagType":"boolean", "context": null} `, 200,
			`{"key":"static-bool","value":true,"reason":"STATIC","variant":"on","metadata":{"version":1,"environment":"production"}}`, ""},
		{"object value", "cache-config", `{"context":{}}`, 200,
			`{"key":"cache-config","value":{"mode":"fast","regions":["eu","us"],"ttlSeconds":30},"reason":"STATIC","variant":"fast","metadata":{"version":1,"environment":"production"}}`, ""},
		{"not found", "no-such-flag", `{"context":{"targetingKey":"u1"}}`, 404,
			`{"key":"no-such-flag","errorCode":"FLAG_NOT_FOUND","errorDetails":"flag not found"}`, ""},
		{"invalid key not found", "a..b", `{}`, 404, "", "FLAG_NOT_FOUND"},
		{"targeting key missing", "new-checkout", `{"context":{"role":"beta"}}`, 400, "", "TARGETING_KEY_MISSING"},
		{"malformed", "static-bool", `{"context":`, 400, "", "PARSE_ERROR"},
		{"not an object", "static-bool", `["context"]`, 400, "", "PARSE_ERROR"},
		{"trailing data", "static-bool", `{} {}`, 400, "", "PARSE_ERROR"},
		{"context not an object", "static-bool", `{"context":"u1"}`, 400, "", "INVALID_CONTEXT"},
		{"targeting key not a string", "static-bool", `{"context":{"targetingKey":42}}`, 400, "", "INVALID_CONTEXT"},
		{"syntax error wins over a bad context", "static-bool", `{"context":"u1",}`, 400, "", "PARSE_ERROR"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			status, hdr, body := s.post(pathOne+tt.key, tt.body, hdrs...)
			if status != tt.status {
				t.Fatalf("status %d, want %d: %s", status, tt.status, body)
			}
			if ct := hdr.Get("Content-Type"); ct != "application/json" {
				t.Errorf("Content-Type %q", ct)
			}
			got := decodeJSON(t, body)
			if tt.want != "" {
				if want := decodeJSON(t, []byte(tt.want)); !reflect.DeepEqual(got, want) {
					t.Fatalf("answer %s\nwant   %s", body, tt.want)
				}
				return
			}
			if got["errorCode"] != tt.code || got["key"] != tt.key || got["errorDetails"] == "" {
				t.Fatalf("answer %s: want key %q and errorCode %s with details", body, tt.key, tt.code)
			}
		})
	}
}

func TestStatusCodes(t *testing.T) {
	unready := func(c *Config) { c.Ready = func() bool { return false } }
	limited := func(c *Config) { c.RateLimit = 0.001 } // one request per 1000 s
	s := startServer(t)
	s.create("production", "static-bool", boolFlag(true))
	scoped, err := s.tokens.IssueScoped(t.Context(), "staging-service", auth.RoleReader, "staging")
	if err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name, method, path, body string
		headers                  []string
		status                   int
		header                   string // a response header that must be set
	}{
		{"200", "POST", pathOne + "static-bool", `{}`, bearer(s.token), 200, ""},
		{"400", "POST", pathOne + "static-bool", `{`, bearer(s.token), 400, ""},
		{"400 bulk", "POST", PathEvaluate, `[`, bearer(s.token), 400, ""},
		{"400 bad environment", "POST", pathOne + "static-bool", `{}`, append(bearer(s.token), HeaderEnvironment, "Prod_EU"), 400, ""},
		{"401 no token", "POST", pathOne + "static-bool", `{}`, nil, 401, "WWW-Authenticate"},
		{"401 unknown token", "POST", pathOne + "static-bool", `{}`, bearer("ilk_nobody-has-this-token"), 401, "WWW-Authenticate"},
		{"401 basic auth", "POST", pathOne + "static-bool", `{}`, []string{"Authorization", "Basic dXNlcjpwYXNz"}, 401, "WWW-Authenticate"},
		{"401 bulk", "POST", PathEvaluate, `{}`, nil, 401, "WWW-Authenticate"},
		{"401 stream", "GET", PathEvents, ``, nil, 401, "WWW-Authenticate"},
		{"403 scoped token, other environment", "POST", pathOne + "static-bool", `{}`, append(bearer(scoped), HeaderEnvironment, "production"), 403, ""},
		{"403 scoped token, bulk", "POST", PathEvaluate, `{}`, append(bearer(scoped), HeaderEnvironment, "production"), 403, ""},
		{"403 scoped token, stream", "GET", PathEvents + "?environment=production", ``, bearer(scoped), 403, ""},
		{"404 flag", "POST", pathOne + "nope", `{}`, bearer(s.token), 404, ""},
		{"404 route", "POST", "/ofrep/v1/evaluate", `{}`, bearer(s.token), 404, ""},
		{"405 single", "GET", pathOne + "static-bool", ``, bearer(s.token), 405, "Allow"},
		{"405 bulk", "PUT", PathEvaluate, `{}`, bearer(s.token), 405, "Allow"},
		{"405 stream", "POST", PathEvents, `{}`, bearer(s.token), 405, "Allow"},
		{"413", "POST", pathOne + "static-bool", `{"context":{"x":"` + strings.Repeat("x", DefaultMaxBodyBytes) + `"}}`, bearer(s.token), 413, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			status, hdr, body := s.do(tt.method, tt.path, tt.body, tt.headers...)
			if status != tt.status {
				t.Fatalf("status %d, want %d: %s", status, tt.status, body)
			}
			if tt.header != "" && hdr.Get(tt.header) == "" {
				t.Fatalf("no %s header", tt.header)
			}
			if m := decodeJSON(t, body); m["errorDetails"] == nil && status != 200 {
				t.Fatalf("answer %s has no errorDetails", body)
			}
		})
	}

	t.Run("429", func(t *testing.T) {
		s := startServer(t, limited)
		s.create("production", "static-bool", boolFlag(true))
		if status, _, body := s.post(pathOne+"static-bool", `{}`, bearer(s.token)...); status != 200 {
			t.Fatalf("first request: %d %s", status, body)
		}
		status, hdr, body := s.post(pathOne+"static-bool", `{}`, bearer(s.token)...)
		if status != http.StatusTooManyRequests {
			t.Fatalf("second request: %d %s, want 429", status, body)
		}
		if secs, err := strconv.Atoi(hdr.Get("Retry-After")); err != nil || secs < 900 || secs > 1000 {
			t.Fatalf("Retry-After %q, want about 1000 seconds", hdr.Get("Retry-After"))
		}
		// Another principal has its own allowance.
		other, err := s.tokens.Issue(t.Context(), "someone-else", auth.RoleReader)
		if err != nil {
			t.Fatal(err)
		}
		if status, _, body := s.post(pathOne+"static-bool", `{}`, bearer(other)...); status != 200 {
			t.Fatalf("another principal: %d %s", status, body)
		}
	})

	t.Run("500 when the token store is unreachable", func(t *testing.T) {
		srv := natstest.RunServer(t)
		nc := natstest.Connect(t, srv)
		js, err := jetstream.New(nc)
		if err != nil {
			t.Fatal(err)
		}
		tokens, err := auth.Open(t.Context(), js, 1)
		if err != nil {
			t.Fatal(err)
		}
		s := startServer(t, func(c *Config) { c.Auth = tokens })
		nc.Close()
		status, _, body := s.post(pathOne+"static-bool", `{}`, bearer("ilk_a-token-that-needs-a-lookup")...)
		if status != http.StatusInternalServerError {
			t.Fatalf("status %d %s, want 500", status, body)
		}
		if m := decodeJSON(t, body); m["errorDetails"] != "internal error" {
			t.Fatalf("answer %s: want a generic message", body)
		}
	})

	t.Run("503 until ready", func(t *testing.T) {
		s := startServer(t, unready)
		status, hdr, body := s.post(pathOne+"static-bool", `{}`, bearer(s.token)...)
		if status != http.StatusServiceUnavailable || hdr.Get("Retry-After") == "" {
			t.Fatalf("status %d (Retry-After %q) %s, want 503 with Retry-After", status, hdr.Get("Retry-After"), body)
		}
	})
}

func TestEnvironmentSelection(t *testing.T) {
	s := startServer(t, func(c *Config) { c.DefaultEnvironment = "staging" })
	s.create("production", "banner", numberFlag(`1`, `10`))
	s.create("staging", "banner", numberFlag(`2`, `20`))
	s.create("dev", "banner", numberFlag(`3`, `30`))
	scoped, err := s.tokens.IssueScoped(t.Context(), "dev-service", auth.RoleReader, "dev")
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		headers []string
		value   string
		env     string
	}{
		{"default environment", bearer(s.token), "20", "staging"},
		{"header", append(bearer(s.token), HeaderEnvironment, "production"), "10", "production"},
		{"api key and header", []string{"X-API-Key", s.token, HeaderEnvironment, "dev"}, "30", "dev"},
		{"scoped token", bearer(scoped), "30", "dev"},
		{"scoped token naming its own environment", append(bearer(scoped), HeaderEnvironment, "dev"), "30", "dev"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			status, _, body := s.post(pathOne+"banner", `{"context":{"targetingKey":"u"}}`, tt.headers...)
			if status != 200 {
				t.Fatalf("status %d: %s", status, body)
			}
			m := decodeJSON(t, body)
			if m["value"].(json.Number).String() != tt.value || m["metadata"].(map[string]any)["environment"] != tt.env {
				t.Fatalf("answer %s: want value %s from %s", body, tt.value, tt.env)
			}
		})
	}
}

func TestBulkETag(t *testing.T) {
	s := startServer(t)
	s.create("production", "static-bool", boolFlag(true))
	s.create("production", "button-color", stringFlag())
	s.create("production", "new-checkout", splitFlag())
	hdrs := bearer(s.token)
	ctxBeta := `{"context":{"targetingKey":"u1","role":"beta"}}`

	status, hdr, body := s.post(PathEvaluate, ctxBeta, hdrs...)
	if status != 200 {
		t.Fatalf("bulk: %d %s", status, body)
	}
	etag := hdr.Get("ETag")
	if len(etag) < 3 || etag[0] != '"' || etag[len(etag)-1] != '"' {
		t.Fatalf("ETag %q is not a quoted entity tag", etag)
	}
	m := decodeJSON(t, body)
	flags := m["flags"].([]any)
	keys := []string{}
	for _, f := range flags {
		keys = append(keys, f.(map[string]any)["key"].(string))
	}
	if want := []string{"button-color", "new-checkout", "static-bool"}; !reflect.DeepEqual(keys, want) {
		t.Fatalf("flags %v, want %v", keys, want)
	}
	if v := flags[0].(map[string]any); v["value"] != "green" || v["reason"] != "TARGETING_MATCH" {
		t.Fatalf("button-color %v: want green by TARGETING_MATCH", v)
	}
	streams := m["eventStreams"].([]any)
	if len(streams) != 1 || streams[0].(map[string]any)["type"] != "sse" ||
		streams[0].(map[string]any)["endpoint"].(map[string]any)["requestUri"] != PathEvents+"?environment=production" {
		t.Fatalf("eventStreams %v", streams)
	}

	notModified := func(t *testing.T, body string, inm string) bool {
		t.Helper()
		status, hdr, b := s.post(PathEvaluate, body, append(hdrs, "If-None-Match", inm)...)
		switch status {
		case http.StatusNotModified:
			if len(b) != 0 || hdr.Get("ETag") == "" {
				t.Fatalf("304 with body %q and ETag %q", b, hdr.Get("ETag"))
			}
			return true
		case http.StatusOK:
			if hdr.Get("ETag") == "" {
				t.Fatal("200 without an ETag")
			}
			return false
		}
		t.Fatalf("status %d: %s", status, b)
		return false
	}
	tests := []struct {
		name, body, inm string
		want            bool
	}{
		{"same context", ctxBeta, etag, true},
		{"weak", ctxBeta, "W/" + etag, true},
		{"in a list", ctxBeta, `"nope", ` + etag, true},
		{"star", ctxBeta, "*", true},
		{"other tag", ctxBeta, `"0000000000000000"`, false},
		{"other context", `{"context":{"targetingKey":"u2","role":"beta"}}`, etag, false},
		{"no context", `{}`, etag, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := notModified(t, tt.body, tt.inm); got != tt.want {
				t.Fatalf("304 = %v, want %v", got, tt.want)
			}
		})
	}

	t.Run("a change to the flagset changes the tag", func(t *testing.T) {
		s.kill("production", "static-bool")
		if notModified(t, ctxBeta, etag) {
			t.Fatal("304 after a kill")
		}
		_, hdr, body := s.post(PathEvaluate, ctxBeta, hdrs...)
		if hdr.Get("ETag") == etag {
			t.Fatal("the same ETag after a kill")
		}
		var got struct {
			Flags []struct {
				Key, Reason string
				Value       any
			}
		}
		if err := json.Unmarshal(body, &got); err != nil {
			t.Fatal(err)
		}
		if f := got.Flags[2]; f.Key != "static-bool" || f.Reason != "DISABLED" || f.Value != false {
			t.Fatalf("after the kill: %+v", f)
		}
	})

	t.Run("errors are items", func(t *testing.T) {
		_, _, body := s.post(PathEvaluate, `{"context":{"role":"beta"}}`, hdrs...)
		var got struct {
			Flags []map[string]any
		}
		if err := json.Unmarshal(body, &got); err != nil {
			t.Fatal(err)
		}
		if f := got.Flags[1]; f["key"] != "new-checkout" || f["errorCode"] != "TARGETING_KEY_MISSING" || f["value"] != nil {
			t.Fatalf("split without a targeting key in bulk: %v", f)
		}
	})

	t.Run("public url", func(t *testing.T) {
		s := startServer(t, func(c *Config) { c.PublicURL = "https://flags.example.com/" })
		_, _, body := s.post(PathEvaluate, `{}`, bearer(s.token)...)
		var got struct {
			EventStreams []map[string]any
		}
		if err := json.Unmarshal(body, &got); err != nil {
			t.Fatal(err)
		}
		if want := "https://flags.example.com" + PathEvents + "?environment=production"; got.EventStreams[0]["url"] != want {
			t.Fatalf("eventStreams %v, want url %s", got.EventStreams, want)
		}
	})
}

func TestConfigValidate(t *testing.T) {
	var fs Flagsets = targeting.NewEvaluators(projections.NewCatalog())
	tests := []struct {
		name string
		cfg  Config
		ok   bool
	}{
		{"minimal", Config{Flagsets: fs, Auth: noAuth{}}, true},
		{"no flagsets", Config{Auth: noAuth{}}, false},
		{"no auth", Config{Flagsets: fs}, false},
		{"bad default environment", Config{Flagsets: fs, Auth: noAuth{}, DefaultEnvironment: "Prod"}, false},
		{"negative rate", Config{Flagsets: fs, Auth: noAuth{}, RateLimit: -1}, false},
		{"relative public url", Config{Flagsets: fs, Auth: noAuth{}, PublicURL: "flags.example.com"}, false},
		{"negative heartbeat", Config{Flagsets: fs, Auth: noAuth{}, Heartbeat: -1}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := New(tt.cfg); (err == nil) != tt.ok {
				t.Fatalf("New = %v, want ok %v", err, tt.ok)
			}
		})
	}
}

// noAuth knows no token. It stands in for the token store where no request is ever made.
type noAuth struct{}

func (noAuth) Authenticate(context.Context, string) (auth.Principal, error) {
	return auth.Principal{}, auth.ErrUnauthenticated
}

func TestPublicRead(t *testing.T) {
	s := startServer(t, func(c *Config) { c.PublicRead = true })
	s.create("production", "static-bool", boolFlag(true))
	s.create("staging", "static-bool", boolFlag(false))
	// Without a token: the default environment, or the one asked for.
	if status, _, body := s.post(pathOne+"static-bool", `{}`); status != 200 || !strings.Contains(string(body), `"value":true`) {
		t.Fatalf("anonymous evaluation: %d %s", status, body)
	}
	if status, _, body := s.post(pathOne+"static-bool", `{}`, HeaderEnvironment, "staging"); status != 200 || !strings.Contains(string(body), `"value":false`) {
		t.Fatalf("anonymous evaluation in staging: %d %s", status, body)
	}
	// A token that is sent is still checked, and its scope still holds.
	if status, _, _ := s.post(pathOne+"static-bool", `{}`, bearer("ilk_nobody-has-this-token")...); status != 401 {
		t.Fatalf("unknown token with public reads: %d, want 401", status)
	}
	scoped, err := s.tokens.IssueScoped(t.Context(), "staging-service", auth.RoleReader, "staging")
	if err != nil {
		t.Fatal(err)
	}
	if status, _, _ := s.post(pathOne+"static-bool", `{}`, append(bearer(scoped), HeaderEnvironment, "production")...); status != 403 {
		t.Fatalf("scoped token asking for production with public reads: %d, want 403", status)
	}
}
