package api_test

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"testing"

	"github.com/interlock-dev/interlock/internal/api"
	"github.com/interlock-dev/interlock/projections"
	"github.com/interlock-dev/interlock/targeting"
)

// fuzzBody sends body to the real handler and checks what every answer must hold: no 5xx, an
// error document with a message for anything but 2xx, and nothing written when refused.
func fuzzBody(t *testing.T, s *system, method, path, contentType string, header map[string]string, body []byte) *response {
	before := s.lastSequence(t)
	hr, err := http.NewRequest(method, s.url+path, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	hr.Header.Set("Content-Type", contentType)
	hr.Header.Set("Authorization", "Bearer "+s.admin)
	for k, v := range header {
		hr.Header.Set(k, v)
	}
	resp, err := s.client.Do(hr)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		t.Fatal(err)
	}
	r := &response{status: resp.StatusCode, header: resp.Header, body: b}
	if r.status >= 500 {
		t.Fatalf("status %d for body %q: %s", r.status, body, b)
	}
	if r.status >= 200 && r.status < 300 {
		if !json.Valid(b) {
			t.Fatalf("status %d with a body that is not JSON: %q", r.status, b)
		}
		return r
	}
	if _, _, err := decodeError(r); err != nil {
		t.Fatalf("status %d: %v", r.status, err)
	}
	if after := s.lastSequence(t); after != before {
		t.Fatalf("refused with %d but wrote %d events; body %q", r.status, after-before, body)
	}
	return r
}

// evaluatesWithoutParseError is the differential oracle of the write fuzzers: a flag the API
// accepted compiles, so it never evaluates with PARSE_ERROR.
func evaluatesWithoutParseError(t *testing.T, s *system, r *response, env string) {
	t.Helper()
	var f projections.Flag
	if err := json.Unmarshal(r.body, &f); err != nil {
		t.Fatalf("decode the accepted flag: %v", err)
	}
	for _, enabled := range []bool{true, false} {
		f.Enabled = enabled
		set, err := targeting.CompileFlagset(env, 0, []projections.Flag{f}, s.catalog.Segments(env))
		if err != nil {
			t.Fatalf("compile the accepted flag: %v", err)
		}
		ev := set.Evaluate(f.Key, &targeting.EvalContext{TargetingKey: "user-1", Attributes: map[string]any{"role": "beta", "n": 3.0}})
		if ev.ErrorCode == targeting.ErrorParseError {
			t.Fatalf("accepted flag %s (enabled %v) evaluates with PARSE_ERROR: %s", r.body, enabled, ev.ErrorMessage)
		}
	}
}

func FuzzCreateBody(f *testing.F) {
	for _, seed := range []string{
		boolFlag("a"),
		boolFlag("a b"),
		`{"key":"s","kind":"config","variants":{"short":{"ttl":5},"long":{"ttl":60}},"defaultVariant":"short","offVariant":"short"}`,
		`{"key":"r","kind":"release","variants":{"on":true,"off":false},"defaultVariant":"on","offVariant":"off",` +
			`"rules":[{"conditions":[{"attribute":"v","operator":"semverGt","values":["1.2.3"]}],"serve":{"split":{"on":1,"off":1}}}]}`,
		`{"key":"m","kind":"release","variants":{"on":true},"defaultVariant":"on","offVariant":"on",` +
			`"rules":[{"conditions":[{"attribute":"x","operator":"matches","values":["("]}],"serve":{"variant":"on"}}]}`,
		`{"key":"a","actor":"mallory"}`,
		`{"key":1}`,
		`null`, `[]`, `"x"`, `{`, ``, `{}{}`, "\xff\xfe", `{"key":"a","variants":{"on":1e999}}`,
		`{"key":"t","kind":"config","variants":{"a":1,"b":1e400},"defaultVariant":"a","offVariant":"a"}`,
		`{"key":"a","key":"b"}`,
		`{"key":"n","kind":"release","variants":{"on":true},"defaultVariant":"on","offVariant":"on","defaultServe":{"split":{"on":-1}}}`,
	} {
		f.Add([]byte(seed))
	}
	s := boot(f, func(c *api.Config) { c.MaxBodyBytes = 4096 })
	f.Fuzz(func(t *testing.T, body []byte) {
		if r := fuzzBody(t, s, "POST", "/api/v1/environments/fuzz/flags", "application/json", nil, body); r.status == http.StatusCreated {
			evaluatesWithoutParseError(t, s, r, "fuzz")
		}
	})
}

func FuzzPatchBody(f *testing.F) {
	for _, seed := range []string{
		`{"description":"x"}`,
		`{"variants":{"on":null}}`,
		`{"variants":{"maybe":"yes"}}`,
		`{"rules":[{"conditions":[],"serve":{"variant":"off"}}]}`,
		`{"defaultServe":{"split":{"on":50,"off":50},"bucketBy":"account"}}`,
		`{"defaultServe":null,"tags":null}`,
		`{"kind":"rocket"}`, `{"updatedBy":"mallory"}`, `{"key":"other"}`, `{"enabled":"yes"}`,
		`null`, `[]`, `{`, ``, `{"a":1}{"b":2}`, `{"description":"` + "\x00" + `"}`,
	} {
		f.Add([]byte(seed))
	}
	s := boot(f, func(c *api.Config) { c.MaxBodyBytes = 4096 })
	s.create(f, "prod", "target")
	f.Fuzz(func(t *testing.T, body []byte) {
		var cur struct{ Version uint64 }
		s.get(t, flagPath("prod", "target")).must(t, http.StatusOK, &cur)
		if r := fuzzBody(t, s, "PATCH", flagPath("prod", "target"), "application/merge-patch+json",
			map[string]string{"If-Match": etagOf(cur.Version)}, body); r.status == http.StatusOK {
			evaluatesWithoutParseError(t, s, r, "prod")
		}
	})
}

func etagOf(v uint64) string {
	b, _ := json.Marshal(v)
	return `"` + string(b) + `"`
}
