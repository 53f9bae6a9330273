package dashboard_test

import (
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/interlock-dev/interlock/internal/await"
)

// client is a browser without a browser: a cookie jar that does not follow redirects.
func client(t *testing.T) *http.Client {
	jar, err := cookiejar.New(nil)
	if err != nil {
		t.Fatal(err)
	}
	return &http.Client{Jar: jar, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
}

func fetch(t *testing.T, c *http.Client, u string) (*http.Response, string) {
	t.Helper()
	resp, err := c.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
}

func TestSecurityHeaders(t *testing.T) {
	_, base := server(t)
	resp, _ := fetch(t, client(t), base+"/signin")
	for h, want := range map[string]string{
		"Content-Security-Policy": "default-src 'self'; script-src 'self'",
		"X-Frame-Options":         "DENY",
		"X-Content-Type-Options":  "nosniff",
	} {
		if got := resp.Header.Get(h); !strings.Contains(got, want) {
			t.Errorf("%s: %q, want %q", h, got, want)
		}
	}
	if csp := resp.Header.Get("Content-Security-Policy"); strings.Contains(csp, "unsafe") || !strings.Contains(csp, "frame-ancestors 'none'") {
		t.Errorf("CSP %q allows unsafe sources or framing", csp)
	}
	// The API keeps its own answers.
	if resp, _ := fetch(t, client(t), base+"/api/v1/nothing"); resp.Header.Get("Content-Type") != "application/json" {
		t.Errorf("/api/v1/nothing: %s, want the API's JSON 404", resp.Header.Get("Content-Type"))
	}
}

func TestSession(t *testing.T) {
	_, base := server(t)
	createFlag(t, base, env, flagDoc("a.flag", "", true))
	token := issue(t, base, "vic", "writer", "")
	c := client(t)

	if resp, _ := fetch(t, c, base+flagsAt); resp.StatusCode != http.StatusSeeOther || !strings.HasPrefix(resp.Header.Get("Location"), "/signin") {
		t.Fatalf("signed out: %d %s, want a redirect to /signin", resp.StatusCode, resp.Header.Get("Location"))
	}
	resp, err := c.PostForm(base+"/signin", url.Values{"token": {"ilk_not-a-token-at-all"}})
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("sign in with a bad token: %d, want 401", resp.StatusCode)
	}
	resp, err = c.PostForm(base+"/signin", url.Values{"token": {token}, "next": {"//evil.example/"}})
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/" {
		t.Errorf("sign in: %d to %q, want 303 to / (never to another site)", resp.StatusCode, resp.Header.Get("Location"))
	}
	var cookie *http.Cookie
	for _, ck := range resp.Cookies() {
		if ck.Name == "interlock_session" {
			cookie = ck
		}
	}
	if cookie == nil || !cookie.HttpOnly || cookie.SameSite != http.SameSiteStrictMode || strings.Contains(cookie.Value, token) {
		t.Fatalf("session cookie %+v: want HttpOnly, SameSite=Strict, and not the token", cookie)
	}
	if resp, body := fetch(t, c, base+flagsAt); resp.StatusCode != http.StatusOK || !strings.Contains(body, "a.flag") {
		t.Fatalf("signed in: %d", resp.StatusCode)
	}

	// A cross-site POST is refused before anything else.
	req, _ := http.NewRequest("POST", base+flagsAt+"/a.flag/kill", strings.NewReader("reason=x"))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Sec-Fetch-Site", "cross-site")
	if resp, err := c.Do(req); err != nil || resp.StatusCode != http.StatusForbidden {
		t.Errorf("cross-site POST: %v %v, want 403", resp.StatusCode, err)
	}

	// Revoking the token ends the session within a few seconds (the recheck).
	if code := call(t, base, adminToken, "DELETE", "/api/v1/tokens/vic", nil, nil); code >= 300 {
		t.Fatalf("revoke: %d", code)
	}
	await.Eventually(t, 15*time.Second, func() bool {
		resp, _ := fetch(t, c, base+flagsAt)
		return resp.StatusCode == http.StatusSeeOther
	}, "the session ends after its token was revoked")
}
