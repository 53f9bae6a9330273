package api_test

import (
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/interlock-dev/interlock/events"
	"github.com/interlock-dev/interlock/internal/api"
	"github.com/interlock-dev/interlock/internal/command"
	"github.com/interlock-dev/interlock/projections"
)

// segmentJSON is a segment as the API returns it, decoded loosely.
type segmentJSON struct {
	Key         string             `json:"key"`
	Environment string             `json:"environment"`
	Description string             `json:"description"`
	Included    []string           `json:"included"`
	Excluded    []string           `json:"excluded"`
	Conditions  []events.Condition `json:"conditions"`
	Archived    bool               `json:"archived"`
	Version     uint64             `json:"version"`
	CreatedAt   time.Time          `json:"createdAt"`
	UpdatedAt   time.Time          `json:"updatedAt"`
	UpdatedBy   string             `json:"updatedBy"`
}

func segmentsPath(env string) string { return "/api/v1/environments/" + env + "/segments" }

func segmentPath(env, key string) string { return segmentsPath(env) + "/" + key }

const betaSegment = `{"key":"beta-testers","description":"beta","included":["u2","u1","u2"],"excluded":["u9"],` +
	`"conditions":[{"attribute":"plan","operator":"in","values":["beta"]}]}`

// createSegment creates a segment in env as admin from body.
func (s *system) createSegment(t testing.TB, env, body string) segmentJSON {
	t.Helper()
	var seg segmentJSON
	s.do(t, req{method: "POST", path: segmentsPath(env), token: s.admin, body: body}).must(t, http.StatusCreated, &seg)
	return seg
}

func TestSegmentsCreateAndRead(t *testing.T) {
	s := boot(t)
	resp := s.do(t, req{method: "POST", path: segmentsPath("prod"), token: s.writer, body: betaSegment,
		header: map[string]string{"X-Interlock-Reason": "launch"}})
	var created segmentJSON
	resp.must(t, http.StatusCreated, &created)
	if resp.header.Get("ETag") != `"1"` || resp.header.Get("Location") != segmentPath("prod", "beta-testers") {
		t.Errorf("ETag %s, Location %s", resp.header.Get("ETag"), resp.header.Get("Location"))
	}
	if created.Key != "beta-testers" || created.Environment != "prod" || created.Version != 1 || created.UpdatedBy != "writer" ||
		!slices.Equal(created.Included, []string{"u1", "u2"}) || len(created.Conditions) != 1 {
		t.Errorf("created = %+v", created)
	}

	// Read your write.
	var got segmentJSON
	resp = s.get(t, segmentPath("prod", "beta-testers")).must(t, http.StatusOK, &got)
	if got.Version != 1 || resp.header.Get("ETag") != `"1"` || got.Description != "beta" {
		t.Errorf("GET = %+v, ETag %s", got, resp.header.Get("ETag"))
	}
	if r := s.do(t, req{method: "GET", path: segmentPath("prod", "beta-testers"), header: map[string]string{"If-None-Match": `"1"`}}); r.status != http.StatusNotModified || len(r.body) != 0 {
		t.Errorf("If-None-Match: %d %q", r.status, r.body)
	}
	var list struct{ Segments []segmentJSON }
	s.get(t, segmentsPath("prod")).must(t, http.StatusOK, &list)
	if len(list.Segments) != 1 || list.Segments[0].Key != "beta-testers" {
		t.Errorf("list = %+v", list.Segments)
	}
	s.get(t, segmentsPath("staging")).must(t, http.StatusOK, &list)
	if list.Segments == nil || len(list.Segments) != 0 {
		t.Errorf("segments of an empty environment = %#v, want []", list.Segments)
	}
	// A flag with the segment's key is another thing.
	s.get(t, flagPath("prod", "beta-testers")).apiError(t, http.StatusNotFound, "not_found")
	msg := s.get(t, segmentPath("prod", "nope")).apiError(t, http.StatusNotFound, "not_found")
	if !strings.Contains(msg, "segment prod/nope") {
		t.Errorf("message %q", msg)
	}

	var hist struct{ Entries []projections.Entry }
	s.get(t, segmentPath("prod", "beta-testers")+"/history").must(t, http.StatusOK, &hist)
	if len(hist.Entries) != 1 || hist.Entries[0].Entity != "segment" || hist.Entries[0].Reason != "launch" ||
		hist.Entries[0].Actor != "writer" || len(hist.Entries[0].Changes) != 5 {
		t.Errorf("history = %+v", hist.Entries)
	}
	s.get(t, segmentPath("prod", "nope")+"/history").apiError(t, http.StatusNotFound, "not_found")
}

func TestSegmentsCreateRefused(t *testing.T) {
	s := boot(t, func(c *api.Config) { c.MaxBodyBytes = 2048 })
	s.createSegment(t, "prod", `{"key":"existing"}`)
	tokens := map[string]string{"admin": s.admin, "reader": s.reader, "oncall": s.oncall}
	tests := []struct {
		name   string
		r      req
		status int
		code   string
		msg    string
	}{
		{"no token", req{body: betaSegment}, 401, "unauthenticated", "Bearer"},
		{"reader", req{token: "reader", body: betaSegment}, 403, "forbidden", "may not write"},
		{"oncall", req{token: "oncall", body: betaSegment}, 403, "forbidden", "may not write"},
		{"unknown field", req{token: "admin", body: `{"key":"a","include":["u1"]}`}, 400, "invalid_argument", `unknown field "include"`},
		{"a flag document", req{token: "admin", body: boolFlag("a")}, 400, "invalid_argument", "unknown field"},
		{"read-only field", req{token: "admin", body: `{"key":"a","version":3}`}, 400, "invalid_argument", `"version"`},
		{"wrong type", req{token: "admin", body: `{"key":"a","included":"u1"}`}, 400, "invalid_argument", "field included"},
		{"not an object", req{token: "admin", body: `["a"]`}, 400, "invalid_argument", ""},
		{"null", req{token: "admin", body: `null`}, 400, "invalid_argument", "not a JSON object"},
		{"no key", req{token: "admin", body: `{}`}, 400, "invalid_argument", "key:"},
		{"bad key", req{token: "admin", body: `{"key":"a b"}`}, 400, "invalid_argument", "key:"},
		{"key of the wrong type", req{token: "admin", body: `{"key":1}`}, 400, "invalid_argument", "segment key"},
		{"invalid segment", req{token: "admin", body: `{"key":"a","included":[""],"conditions":[{"attribute":"k","operator":"inSegment","values":["b"]}]}`},
			400, "invalid_argument", "included[0]: targeting keys are 1-256 bytes; conditions[0].operator: a segment cannot refer to other segments"},
		{"bad environment", req{path: segmentsPath("Prod"), token: "admin", body: betaSegment}, 400, "invalid_argument", "environment"},
		{"exists", req{token: "admin", body: `{"key":"existing"}`}, 409, "already_exists", "segment already exists"},
		{"too large", req{token: "admin", body: `{"key":"a","description":"` + strings.Repeat("x", 4096) + `"}`}, 413, "payload_too_large", "2 KiB"},
		{"text", req{token: "admin", body: betaSegment, header: map[string]string{"Content-Type": "text/plain"}}, 415, "unsupported_media_type", ""},
		{"query parameter", req{path: segmentsPath("prod") + "?x=1", token: "admin", body: betaSegment}, 400, "invalid_argument", `"x"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.r.method = "POST"
			if tt.r.path == "" {
				tt.r.path = segmentsPath("prod")
			}
			if tok, ok := tokens[tt.r.token]; ok {
				tt.r.token = tok
			}
			s.unchanged(t, func() {
				msg := s.do(t, tt.r).apiError(t, tt.status, tt.code)
				if !strings.Contains(msg, tt.msg) {
					t.Errorf("message %q does not mention %q", msg, tt.msg)
				}
			})
		})
	}
}

func TestSegmentsUpdateAndActions(t *testing.T) {
	s := boot(t)
	s.createSegment(t, "prod", betaSegment)
	const mp = "application/merge-patch+json"
	path := segmentPath("prod", "beta-testers")
	patch := func(token, ifMatch, ct, body string) req {
		h := map[string]string{"Content-Type": ct, "X-Interlock-Reason": "more testers"}
		if ifMatch != "" {
			h["If-Match"] = ifMatch
		}
		return req{method: "PATCH", path: path, token: token, body: body, header: h}
	}
	var seg segmentJSON
	resp := s.do(t, patch(s.writer, `"1"`, mp, `{"included":["u3","u1"],"description":null}`)).must(t, http.StatusOK, &seg)
	if seg.Version != 2 || !slices.Equal(seg.Included, []string{"u1", "u3"}) || seg.Description != "" || resp.header.Get("ETag") != `"2"` {
		t.Fatalf("patched = %+v, ETag %s", seg, resp.header.Get("ETag"))
	}
	// A patch that changes nothing answers the segment as it is.
	s.unchanged(t, func() {
		s.do(t, patch(s.admin, `"2"`, mp, `{"included":["u3","u1","u1"]}`)).must(t, http.StatusOK, &seg)
	})
	if seg.Version != 2 {
		t.Fatalf("no-op patch answered version %d", seg.Version)
	}

	for _, tt := range []struct {
		name   string
		r      req
		status int
		code   string
	}{
		{"no If-Match", patch(s.admin, "", mp, `{"description":"x"}`), 428, "precondition_required"},
		{"stale If-Match", patch(s.admin, `"1"`, mp, `{"description":"x"}`), 412, "precondition_failed"},
		{"plain JSON", patch(s.admin, `"2"`, "application/json", `{"description":"x"}`), 415, "unsupported_media_type"},
		{"not an object", patch(s.admin, `"2"`, mp, `[]`), 400, "invalid_argument"},
		{"unknown field", patch(s.admin, `"2"`, mp, `{"variants":{}}`), 400, "invalid_argument"},
		{"read-only field", patch(s.admin, `"2"`, mp, `{"archived":true}`), 400, "invalid_argument"},
		{"invalid result", patch(s.admin, `"2"`, mp, `{"excluded":[""]}`), 400, "invalid_argument"},
		{"reader", patch(s.reader, `"2"`, mp, `{"description":"x"}`), 403, "forbidden"},
		{"unknown segment", func() req {
			r := patch(s.admin, `"1"`, mp, `{"description":"x"}`)
			r.path = segmentPath("prod", "nope")
			return r
		}(), 404, "not_found"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			s.unchanged(t, func() { s.do(t, tt.r).apiError(t, tt.status, tt.code) })
		})
	}

	// The past, by version and by time.
	var v1 segmentJSON
	s.get(t, path+"?version=1").must(t, http.StatusOK, &v1)
	if v1.Version != 1 || v1.Description != "beta" || !slices.Equal(v1.Included, []string{"u1", "u2"}) {
		t.Fatalf("version 1 = %+v", v1)
	}
	s.get(t, path+"?at="+v1.UpdatedAt.Format(time.RFC3339Nano)).must(t, http.StatusOK, &v1)
	if v1.Version != 1 {
		t.Fatalf("at the creation time: version %d", v1.Version)
	}
	s.get(t, path+"?version=9").apiError(t, http.StatusNotFound, "not_found")
	s.get(t, path+"?version=1&at=2026-01-01T00:00:00Z").apiError(t, http.StatusBadRequest, "invalid_argument")

	action := func(name, token, body string, header map[string]string) *response {
		return s.do(t, req{method: "POST", path: path + "/" + name, token: token, body: body, header: header})
	}
	s.unchanged(t, func() {
		action("archive", s.oncall, "", nil).apiError(t, http.StatusForbidden, "forbidden")
		action("archive", s.admin, `{"version":1}`, nil).apiError(t, http.StatusConflict, "conflict")
		action("archive", s.admin, "", map[string]string{"If-Match": `"1"`}).apiError(t, http.StatusPreconditionFailed, "precondition_failed")
		action("archive", s.admin, `{"actor":"mallory"}`, nil).apiError(t, http.StatusBadRequest, "invalid_argument")
		action("archive", s.admin, "", map[string]string{"If-Match": `"1"`}).apiError(t, http.StatusPreconditionFailed, "precondition_failed")
		s.do(t, req{method: "DELETE", path: path, token: s.admin}).apiError(t, http.StatusMethodNotAllowed, "method_not_allowed")
	})
	action("archive", s.admin, `{"reason":"done","version":2}`, nil).must(t, http.StatusOK, &seg)
	if !seg.Archived || seg.Version != 3 {
		t.Fatalf("archived = %+v", seg)
	}
	var list struct{ Segments []segmentJSON }
	s.get(t, segmentsPath("prod")).must(t, http.StatusOK, &list)
	if len(list.Segments) != 0 {
		t.Fatalf("archived segment listed: %+v", list.Segments)
	}
	s.get(t, segmentsPath("prod")+"?archived=true").must(t, http.StatusOK, &list)
	if len(list.Segments) != 1 || !list.Segments[0].Archived {
		t.Fatalf("archived=true: %+v", list.Segments)
	}
	s.unchanged(t, func() {
		s.do(t, patch(s.admin, `"3"`, mp, `{"description":"x"}`)).apiError(t, http.StatusConflict, "archived")
	})
	action("unarchive", s.admin, "", map[string]string{"If-Match": `"3"`}).must(t, http.StatusOK, &seg)
	if seg.Archived || seg.Version != 4 {
		t.Fatalf("unarchived = %+v", seg)
	}
	var hist struct{ Entries []projections.Entry }
	s.get(t, path+"/history").must(t, http.StatusOK, &hist)
	var types []string
	for _, e := range hist.Entries {
		types = append(types, e.Type)
	}
	if !slices.Equal(types, []string{events.TypeSegmentCreated, events.TypeSegmentUpdated, events.TypeSegmentArchived, events.TypeSegmentUnarchived}) ||
		hist.Entries[2].Reason != "done" || hist.Entries[1].Reason != "more testers" {
		t.Fatalf("history = %+v", hist.Entries)
	}
	s.unchanged(t, func() {
		for _, name := range []string{"archive", "unarchive"} {
			s.do(t, req{method: "POST", path: segmentPath("prod", "nope") + "/" + name, token: s.admin}).apiError(t, http.StatusNotFound, "not_found")
		}
	})
}

// TestSegmentReferencesOverHTTP checks referential integrity through the API, with the catalog
// telling which flags use a segment.
func TestSegmentReferencesOverHTTP(t *testing.T) {
	s := boot(t, func(c *api.Config) {
		c.Commands = command.New(c.Reader.(*events.Store), nil, command.WithUsage(c.Catalog.(*projections.Catalog)))
	})
	flag := `{"key":"checkout","kind":"release","variants":{"on":true,"off":false},"defaultVariant":"off","offVariant":"off",` +
		`"rules":[{"conditions":[{"attribute":"plan","operator":"eq","values":["pro"]}],"serve":{"variant":"on"}},` +
		`{"conditions":[{"attribute":"targetingKey","operator":"inSegment","values":["beta-testers"]}],"serve":{"variant":"on"}}]}`
	s.unchanged(t, func() {
		msg := s.do(t, req{method: "POST", path: "/api/v1/environments/prod/flags", token: s.admin, body: flag}).
			apiError(t, http.StatusBadRequest, "invalid_argument")
		if !strings.Contains(msg, `rules[1].conditions[0].values[0]: segment "beta-testers" does not exist in prod`) {
			t.Fatalf("message %q", msg)
		}
	})
	s.createSegment(t, "prod", betaSegment)
	s.do(t, req{method: "POST", path: "/api/v1/environments/prod/flags", token: s.admin, body: flag}).must(t, http.StatusCreated, nil)

	s.unchanged(t, func() {
		msg := s.do(t, req{method: "POST", path: segmentPath("prod", "beta-testers") + "/archive", token: s.admin}).
			apiError(t, http.StatusConflict, "conflict")
		if !strings.Contains(msg, "flag checkout still uses prod/beta-testers") {
			t.Fatalf("message %q", msg)
		}
	})
	s.do(t, req{method: "POST", path: flagPath("prod", "checkout") + "/archive", token: s.admin}).must(t, http.StatusOK, nil)
	var seg segmentJSON
	s.do(t, req{method: "POST", path: segmentPath("prod", "beta-testers") + "/archive", token: s.admin}).must(t, http.StatusOK, &seg)
	if !seg.Archived {
		t.Fatalf("archived = %+v", seg)
	}
	// The audit trail names the entity of each event.
	var page struct{ Events []projections.Entry }
	s.get(t, "/api/v1/audit?environment=prod").must(t, http.StatusOK, &page)
	var entities []string
	for _, e := range page.Events {
		entities = append(entities, e.Entity+":"+e.Key)
	}
	if !slices.Equal(entities, []string{"segment:beta-testers", "flag:checkout", "flag:checkout", "segment:beta-testers"}) {
		t.Fatalf("audit = %v", entities)
	}
}

func FuzzSegmentCreateBody(f *testing.F) {
	for _, seed := range []string{
		betaSegment,
		`{"key":"a"}`,
		`{"key":"a b"}`,
		`{"key":"c","conditions":[{"attribute":"v","operator":"semverGt","values":["1.2.3"]}]}`,
		`{"key":"m","conditions":[{"attribute":"x","operator":"matches","values":["("]}]}`,
		`{"key":"n","conditions":[{"attribute":"x","operator":"notInSegment","values":["a"]}]}`,
		`{"key":"e","included":[""],"excluded":[null]}`,
		`{"key":"a","actor":"mallory"}`, `{"key":1}`, `{"key":"d","description":{}}`,
		`null`, `[]`, `"x"`, `{`, ``, `{}{}`, "\xff\xfe", `{"key":"a","conditions":[{"attribute":"a","operator":"lt","values":[1e999]}]}`,
	} {
		f.Add([]byte(seed))
	}
	s := boot(f, func(c *api.Config) { c.MaxBodyBytes = 4096 })
	f.Fuzz(func(t *testing.T, body []byte) {
		fuzzBody(t, s, "POST", segmentsPath("fuzz"), "application/json", nil, body)
	})
}
