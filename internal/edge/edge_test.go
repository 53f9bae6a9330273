package edge

import (
	"net/http"
	"net/http/httptest"
	"testing"
)

func serve(t *testing.T, cfg Config, r *http.Request) *http.Response {
	t.Helper()
	ok := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusOK) })
	rec := httptest.NewRecorder()
	Handler(ok, cfg).ServeHTTP(rec, r)
	return rec.Result()
}

func TestSecurityHeadersOnEveryAnswer(t *testing.T) {
	for _, path := range []string{"/ofrep/v1/evaluate/flags/x", "/api/v1/environments", "/healthz", "/", "/flags"} {
		resp := serve(t, Config{}, httptest.NewRequest("GET", path, nil))
		for k, want := range map[string]string{"X-Content-Type-Options": "nosniff", "X-Frame-Options": "DENY", "Referrer-Policy": "no-referrer"} {
			if got := resp.Header.Get(k); got != want {
				t.Errorf("%s: %s = %q, want %q", path, k, got, want)
			}
		}
		csp := resp.Header.Get("Content-Security-Policy")
		if dashboard(path) != (csp == "") {
			t.Errorf("%s: Content-Security-Policy %q (the dashboard sets its own)", path, csp)
		}
	}
}

func preflight(path, origin string) *http.Request {
	r := httptest.NewRequest("OPTIONS", path, nil)
	r.Header.Set("Origin", origin)
	r.Header.Set("Access-Control-Request-Method", "POST")
	r.Header.Set("Access-Control-Request-Headers", "authorization, content-type")
	return r
}

func TestCORS(t *testing.T) {
	allowed := Config{CORSOrigins: []string{"https://app.example.com"}}
	tests := []struct {
		name      string
		cfg       Config
		path      string
		origin    string
		wantAllow string
	}{
		{"off by default", Config{}, "/ofrep/v1/evaluate/flags", "https://app.example.com", ""},
		{"allowed origin, OFREP", allowed, "/ofrep/v1/evaluate/flags", "https://app.example.com", "https://app.example.com"},
		{"allowed origin, event feed", allowed, "/api/v1/events", "https://app.example.com", "https://app.example.com"},
		{"other origin", allowed, "/ofrep/v1/evaluate/flags", "https://evil.example.net", ""},
		{"admin writes stay same-origin", allowed, "/api/v1/environments/prod/flags", "https://app.example.com", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp := serve(t, tt.cfg, preflight(tt.path, tt.origin))
			if got := resp.Header.Get("Access-Control-Allow-Origin"); got != tt.wantAllow {
				t.Errorf("Access-Control-Allow-Origin = %q, want %q", got, tt.wantAllow)
			}
			if tt.wantAllow != "" {
				if resp.StatusCode >= 300 {
					t.Errorf("preflight status %d", resp.StatusCode)
				}
				if h := resp.Header.Get("Access-Control-Allow-Headers"); h == "" {
					t.Error("no Access-Control-Allow-Headers on an allowed preflight")
				}
			}
		})
	}
	// The actual request exposes the ETag to the page.
	r := httptest.NewRequest("POST", "/ofrep/v1/evaluate/flags", nil)
	r.Header.Set("Origin", "https://app.example.com")
	resp := serve(t, allowed, r)
	if resp.Header.Get("Access-Control-Allow-Origin") != "https://app.example.com" || resp.Header.Get("Access-Control-Expose-Headers") == "" {
		t.Errorf("actual request headers: %v", resp.Header)
	}
}

func TestValidate(t *testing.T) {
	good := Config{CORSOrigins: []string{"*", "https://a.example.com", "http://localhost:3000"}}
	if err := good.Validate(); err != nil {
		t.Errorf("Validate(%v) = %v", good.CORSOrigins, err)
	}
	for _, o := range []string{"a.example.com", "ftp://x", "https://a.example.com/path", "https://u:p@a.example.com", ""} {
		if err := (Config{CORSOrigins: []string{o}}).Validate(); err == nil {
			t.Errorf("origin %q accepted", o)
		}
	}
}
