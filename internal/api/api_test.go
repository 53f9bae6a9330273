package api_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/interlock-dev/interlock/events"
	"github.com/interlock-dev/interlock/internal/api"
)

func TestHealthAndReadiness(t *testing.T) {
	s := boot(t)
	var body map[string]string
	s.get(t, "/healthz").must(t, http.StatusOK, &body)
	if body["status"] != "ok" {
		t.Fatalf("healthz = %v", body)
	}
	s.get(t, "/readyz").must(t, http.StatusOK, &body)
	if body["status"] != "ok" {
		t.Fatalf("readyz = %v", body)
	}
}

func TestNotReady(t *testing.T) {
	s := boot(t, func(c *api.Config) { c.Ready = func() bool { return false } })
	s.get(t, "/healthz").must(t, http.StatusOK, nil)
	for _, path := range []string{
		"/readyz",
		"/api/v1/environments",
		"/api/v1/environments/prod/flags",
		flagPath("prod", "checkout"),
	} {
		t.Run(path, func(t *testing.T) {
			s.get(t, path).apiError(t, http.StatusServiceUnavailable, "unavailable")
		})
	}
}

func TestCreateAndRead(t *testing.T) {
	s := boot(t)
	body := `{"key":"DeptA.TeamB.66623","kind":"release","description":"new checkout","owner":"team-b",
		"tags":["checkout"],"variants":{"on":true,"off":false},"defaultVariant":"off","offVariant":"off",
		"enabled":true,"rules":[{"name":"beta","conditions":[{"attribute":"plan","operator":"in","values":["beta"]}],
		"serve":{"variant":"on"}}],"defaultServe":{"split":{"on":10,"off":90},"bucketBy":"account"}}`
	resp := s.do(t, req{method: "POST", path: "/api/v1/environments/prod/flags", token: s.admin, body: body,
		header: map[string]string{"X-Interlock-Reason": "launch"}})
	var created flagJSON
	resp.must(t, http.StatusCreated, &created)
	if got := resp.header.Get("ETag"); got != `"1"` {
		t.Errorf("ETag = %s, want \"1\"", got)
	}
	if got := resp.header.Get("Location"); got != flagPath("prod", "DeptA.TeamB.66623") {
		t.Errorf("Location = %s", got)
	}
	if created.Key != "DeptA.TeamB.66623" || created.Environment != "prod" || created.Version != 1 ||
		created.UpdatedBy != "admin" || !created.Enabled || created.Owner != "team-b" || len(created.Rules) != 1 {
		t.Errorf("created = %+v", created)
	}

	// Read your write: the answer came after the catalog applied it.
	var got flagJSON
	resp = s.get(t, flagPath("prod", "DeptA.TeamB.66623")).must(t, http.StatusOK, &got)
	if got.Version != 1 || got.Description != "new checkout" || resp.header.Get("ETag") != `"1"` {
		t.Errorf("GET = %+v, ETag %s", got, resp.header.Get("ETag"))
	}

	t.Run("If-None-Match", func(t *testing.T) {
		for _, tc := range []struct {
			inm  string
			want int
		}{
			{`"1"`, http.StatusNotModified},
			{`W/"1"`, http.StatusNotModified},
			{`"7", "1"`, http.StatusNotModified},
			{`*`, http.StatusNotModified},
			{`"2"`, http.StatusOK},
		} {
			r := s.do(t, req{method: "GET", path: flagPath("prod", "DeptA.TeamB.66623"), header: map[string]string{"If-None-Match": tc.inm}})
			if r.status != tc.want {
				t.Errorf("If-None-Match %s: status %d, want %d", tc.inm, r.status, tc.want)
			}
			if r.status == http.StatusNotModified && (len(r.body) != 0 || r.header.Get("ETag") != `"1"`) {
				t.Errorf("304 with body %q and ETag %s", r.body, r.header.Get("ETag"))
			}
		}
	})

	var envs struct{ Environments []string }
	s.get(t, "/api/v1/environments").must(t, http.StatusOK, &envs)
	if !slices.Equal(envs.Environments, []string{"prod"}) {
		t.Errorf("environments = %v", envs.Environments)
	}
	var list struct{ Flags []flagJSON }
	s.get(t, "/api/v1/environments/prod/flags").must(t, http.StatusOK, &list)
	if len(list.Flags) != 1 || list.Flags[0].Key != "DeptA.TeamB.66623" {
		t.Errorf("flags = %+v", list.Flags)
	}
	s.get(t, "/api/v1/environments/staging/flags").must(t, http.StatusOK, &list)
	if list.Flags == nil || len(list.Flags) != 0 {
		t.Errorf("flags of an empty environment = %#v, want []", list.Flags)
	}

	// The reason and actor are on the event.
	var hist struct {
		Entries []struct{ Actor, Reason, Type string }
	}
	s.get(t, flagPath("prod", "DeptA.TeamB.66623")+"/history").must(t, http.StatusOK, &hist)
	if len(hist.Entries) != 1 || hist.Entries[0].Actor != "admin" || hist.Entries[0].Reason != "launch" ||
		hist.Entries[0].Type != events.TypeFlagCreated {
		t.Errorf("history = %+v", hist.Entries)
	}
}

func TestCreateRefused(t *testing.T) {
	s := boot(t, func(c *api.Config) { c.MaxBodyBytes = 2048 })
	s.create(t, "prod", "existing")
	path := "/api/v1/environments/prod/flags"
	tests := []struct {
		name   string
		r      req
		status int
		code   string
		msg    string // a part of the message
	}{
		{"no token", req{body: boolFlag("a")}, 401, "unauthenticated", "Bearer"},
		{"unknown token", req{token: "ilk_nope", body: boolFlag("a")}, 401, "unauthenticated", "Bearer"},
		{"basic auth", req{body: boolFlag("a"), header: map[string]string{"Authorization": "Basic YWRtaW46YWRtaW4="}}, 401, "unauthenticated", ""},
		{"reader may not write", req{token: "reader", body: boolFlag("a")}, 403, "forbidden", `"reader" may not write`},
		{"oncall may not write", req{token: "oncall", body: boolFlag("a")}, 403, "forbidden", `"oncall" may not write`},
		{"text body", req{token: "admin", body: boolFlag("a"), header: map[string]string{"Content-Type": "text/plain"}}, 415, "unsupported_media_type", "application/json"},
		{"no content type", req{token: "admin", body: boolFlag("a"), header: map[string]string{"Content-Type": ""}}, 415, "unsupported_media_type", "application/json"},
		{"latin-1", req{token: "admin", body: boolFlag("a"), header: map[string]string{"Content-Type": "application/json; charset=iso-8859-1"}}, 415, "unsupported_media_type", "UTF-8"},
		{"empty body", req{token: "admin", header: map[string]string{"Content-Type": "application/json"}}, 400, "invalid_argument", "empty"},
		{"not JSON", req{token: "admin", body: `{"key":`}, 400, "invalid_argument", "JSON"},
		{"syntax error", req{token: "admin", body: `{"key" "a"}`}, 400, "invalid_argument", "not valid JSON"},
		{"two documents", req{token: "admin", body: boolFlag("a") + boolFlag("b")}, 400, "invalid_argument", "more than one"},
		{"wrong type", req{token: "admin", body: `{"key":"a","enabled":"yes"}`}, 400, "invalid_argument", "field enabled"},
		{"unknown field", req{token: "admin", body: `{"key":"a","colour":"red"}`}, 400, "invalid_argument", `unknown field "colour"`},
		{"actor in body", req{token: "admin", body: strings.Replace(boolFlag("a"), "{", `{"actor":"mallory",`, 1)}, 400, "invalid_argument", `"actor"`},
		{"updatedBy in body", req{token: "admin", body: strings.Replace(boolFlag("a"), "{", `{"updatedBy":"mallory",`, 1)}, 400, "invalid_argument", `"updatedBy"`},
		{"invalid document", req{token: "admin", body: `{"key":"a","kind":"rocket","variants":{"on":true},"defaultVariant":"on","offVariant":"gone"}`},
			400, "invalid_argument", "kind:"},
		{"invalid key", req{token: "admin", body: boolFlag("a b")}, 400, "invalid_argument", "key:"},
		{"invalid environment", req{path: "/api/v1/environments/Prod/flags", token: "admin", body: boolFlag("a")}, 400, "invalid_argument", "environment"},
		{"exists", req{token: "admin", body: boolFlag("existing")}, 409, "already_exists", "exists"},
		{"too large", req{token: "admin", body: `{"key":"a","description":"` + strings.Repeat("x", 4096) + `"}`}, 413, "payload_too_large", "2 KiB"},
		{"query parameter", req{path: path + "?dryRun=true", token: "admin", body: boolFlag("a")}, 400, "invalid_argument", `"dryRun"`},
	}
	tokens := map[string]string{"admin": s.admin, "reader": s.reader, "oncall": s.oncall}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.r.method = "POST"
			if tt.r.path == "" {
				tt.r.path = path
			}
			if tok, ok := tokens[tt.r.token]; ok {
				tt.r.token = tok
			}
			s.unchanged(t, func() {
				r := s.do(t, tt.r)
				msg := r.apiError(t, tt.status, tt.code)
				if !strings.Contains(msg, tt.msg) {
					t.Errorf("message %q does not mention %q", msg, tt.msg)
				}
				if tt.status == 401 && !strings.HasPrefix(r.header.Get("WWW-Authenticate"), "Bearer") {
					t.Errorf("401 without WWW-Authenticate: Bearer: %q", r.header.Get("WWW-Authenticate"))
				}
			})
		})
	}
	s.get(t, flagPath("prod", "a")).apiError(t, http.StatusNotFound, "not_found")
}

func TestInvalidDocumentMessage(t *testing.T) {
	s := boot(t)
	body := `{"key":"a","kind":"rocket","variants":{"on":true,"off":"no"},"defaultVariant":"on","offVariant":"gone"}`
	msg := s.do(t, req{method: "POST", path: "/api/v1/environments/prod/flags", token: s.admin, body: body}).
		apiError(t, http.StatusBadRequest, "invalid_argument")
	// Every problem is told, field by field.
	for _, want := range []string{"kind:", "variants.", "offVariant:"} {
		if !strings.Contains(msg, want) {
			t.Errorf("message %q does not mention %q", msg, want)
		}
	}
}

func TestUpdate(t *testing.T) {
	s := boot(t)
	s.create(t, "prod", "checkout")
	patchReq := func(token, ifMatch, ct, body string) req {
		h := map[string]string{"Content-Type": ct, "X-Interlock-Reason": "tune"}
		if ifMatch != "" {
			h["If-Match"] = ifMatch
		}
		return req{method: "PATCH", path: flagPath("prod", "checkout"), token: token, body: body, header: h}
	}
	const mp = "application/merge-patch+json"

	var f flagJSON
	resp := s.do(t, patchReq(s.writer, `"1"`, mp, `{"description":"second","tags":["a"]}`)).must(t, http.StatusOK, &f)
	if f.Version != 2 || f.Description != "second" || f.UpdatedBy != "writer" || resp.header.Get("ETag") != `"2"` {
		t.Fatalf("patched = %+v, ETag %s", f, resp.header.Get("ETag"))
	}
	s.get(t, flagPath("prod", "checkout")).must(t, http.StatusOK, &f)
	if f.Description != "second" {
		t.Fatalf("GET after PATCH: description %q", f.Description)
	}

	tests := []struct {
		name   string
		r      req
		status int
		code   string
	}{
		{"no If-Match", patchReq(s.admin, "", mp, `{"description":"x"}`), 428, "precondition_required"},
		{"stale If-Match", patchReq(s.admin, `"1"`, mp, `{"description":"x"}`), 412, "precondition_failed"},
		{"future If-Match", patchReq(s.admin, `"9"`, mp, `{"description":"x"}`), 412, "precondition_failed"},
		{"malformed If-Match", patchReq(s.admin, `2`, mp, `{"description":"x"}`), 400, "invalid_argument"},
		{"weak If-Match", patchReq(s.admin, `W/"2"`, mp, `{"description":"x"}`), 400, "invalid_argument"},
		{"If-Match *", patchReq(s.admin, `*`, mp, `{"description":"x"}`), 400, "invalid_argument"},
		{"plain JSON", patchReq(s.admin, `"2"`, "application/json", `{"description":"x"}`), 415, "unsupported_media_type"},
		{"not an object", patchReq(s.admin, `"2"`, mp, `["description"]`), 400, "invalid_argument"},
		{"not JSON", patchReq(s.admin, `"2"`, mp, `{"description":`), 400, "invalid_argument"},
		{"invalid result", patchReq(s.admin, `"2"`, mp, `{"kind":"rocket"}`), 400, "invalid_argument"},
		{"read-only field", patchReq(s.admin, `"2"`, mp, `{"updatedBy":"mallory"}`), 400, "invalid_argument"},
		{"no token", patchReq("", `"2"`, mp, `{"description":"x"}`), 401, "unauthenticated"},
		{"reader", patchReq(s.reader, `"2"`, mp, `{"description":"x"}`), 403, "forbidden"},
		{"unknown flag", func() req {
			r := patchReq(s.admin, `"1"`, mp, `{"description":"x"}`)
			r.path = flagPath("prod", "nope")
			return r
		}(), 404, "not_found"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s.unchanged(t, func() { s.do(t, tt.r).apiError(t, tt.status, tt.code) })
		})
	}

	// An archived flag refuses changes.
	s.do(t, req{method: "POST", path: flagPath("prod", "checkout") + "/archive", token: s.admin}).must(t, http.StatusOK, nil)
	s.unchanged(t, func() {
		s.do(t, patchReq(s.admin, `"3"`, mp, `{"description":"x"}`)).apiError(t, http.StatusConflict, "archived")
	})
}

func TestActions(t *testing.T) {
	s := boot(t)
	s.create(t, "prod", "checkout") // version 1, enabled
	action := func(name, token, body string, header map[string]string) *response {
		return s.do(t, req{method: "POST", path: flagPath("prod", "checkout") + "/" + name, token: token, body: body, header: header})
	}
	var f flagJSON

	// Kill: reason required, no version, the on-call role may.
	s.unchanged(t, func() {
		action("kill", s.oncall, "", nil).apiError(t, http.StatusBadRequest, "invalid_argument")
		action("kill", s.oncall, `{"reason":"  "}`, nil).apiError(t, http.StatusBadRequest, "invalid_argument")
		action("kill", s.oncall, `{"reason":"x","version":1}`, nil).apiError(t, http.StatusBadRequest, "invalid_argument")
		action("kill", s.oncall, `{"reason":"x"}`, map[string]string{"If-Match": `"1"`}).apiError(t, http.StatusBadRequest, "invalid_argument")
		action("kill", s.oncall, `{"reason":"x","actor":"mallory"}`, nil).apiError(t, http.StatusBadRequest, "invalid_argument")
		action("kill", s.reader, `{"reason":"x"}`, nil).apiError(t, http.StatusForbidden, "forbidden")
		action("kill", "", `{"reason":"x"}`, nil).apiError(t, http.StatusUnauthorized, "unauthenticated")
	})
	resp := action("kill", s.oncall, `{"reason":"error rate up"}`, nil).must(t, http.StatusOK, &f)
	if f.Enabled || f.Version != 2 || f.UpdatedBy != "oncall" || resp.header.Get("ETag") != `"2"` {
		t.Fatalf("killed = %+v", f)
	}

	// Enable: the on-call role may not; a stale version from the body is a conflict, from
	// If-Match a failed precondition.
	s.unchanged(t, func() {
		action("enable", s.oncall, "", nil).apiError(t, http.StatusForbidden, "forbidden")
		action("enable", s.admin, `{"version":1}`, nil).apiError(t, http.StatusConflict, "conflict")
		action("enable", s.admin, "", map[string]string{"If-Match": `"1"`}).apiError(t, http.StatusPreconditionFailed, "precondition_failed")
		action("enable", s.admin, `{"version":2}`, map[string]string{"If-Match": `"1"`}).apiError(t, http.StatusBadRequest, "invalid_argument")
		action("enable", s.admin, `{"version":0}`, nil).apiError(t, http.StatusBadRequest, "invalid_argument")
		action("enable", s.admin, `{"reason":"x"}`, map[string]string{"Content-Type": "text/plain"}).apiError(t, http.StatusUnsupportedMediaType, "unsupported_media_type")
	})
	action("enable", s.writer, `{"reason":"fixed","version":2}`, nil).must(t, http.StatusOK, &f)
	if !f.Enabled || f.Version != 3 {
		t.Fatalf("enabled = %+v", f)
	}

	// Archive hides the flag from the list unless asked for.
	action("archive", s.admin, "", map[string]string{"If-Match": `"3"`}).must(t, http.StatusOK, &f)
	if !f.Archived || f.Version != 4 {
		t.Fatalf("archived = %+v", f)
	}
	var list struct{ Flags []flagJSON }
	s.get(t, "/api/v1/environments/prod/flags").must(t, http.StatusOK, &list)
	if len(list.Flags) != 0 {
		t.Fatalf("archived flag listed: %+v", list.Flags)
	}
	s.get(t, "/api/v1/environments/prod/flags?archived=true").must(t, http.StatusOK, &list)
	if len(list.Flags) != 1 || !list.Flags[0].Archived {
		t.Fatalf("archived=true: %+v", list.Flags)
	}
	s.unchanged(t, func() {
		action("enable", s.admin, "", nil).apiError(t, http.StatusConflict, "archived")
		action("restore", s.admin, `{"toVersion":1}`, nil).apiError(t, http.StatusConflict, "archived")
	})
	action("unarchive", s.admin, `{}`, nil).must(t, http.StatusOK, &f)
	if f.Archived || f.Version != 5 {
		t.Fatalf("unarchived = %+v", f)
	}

	// Restore the configuration of version 2 (killed) as version 6.
	s.unchanged(t, func() {
		action("restore", s.admin, "", nil).apiError(t, http.StatusBadRequest, "invalid_argument")
		action("restore", s.admin, `{}`, nil).apiError(t, http.StatusBadRequest, "invalid_argument")
		action("restore", s.admin, `{"toVersion":5}`, nil).apiError(t, http.StatusBadRequest, "invalid_argument")
		action("restore", s.admin, `{"toVersion":2,"version":4}`, nil).apiError(t, http.StatusConflict, "conflict")
		action("restore", s.admin, `{"toVersion":2}`, map[string]string{"If-Match": `"4"`}).apiError(t, http.StatusPreconditionFailed, "precondition_failed")
	})
	action("restore", s.admin, `{"toVersion":2,"reason":"back","version":5}`, nil).must(t, http.StatusOK, &f)
	if f.Enabled || f.Version != 6 {
		t.Fatalf("restored = %+v", f)
	}

	// Unknown flags.
	s.unchanged(t, func() {
		for _, name := range []string{"kill", "enable", "archive", "unarchive"} {
			s.do(t, req{method: "POST", path: flagPath("prod", "nope") + "/" + name, token: s.admin, body: `{"reason":"x"}`}).
				apiError(t, http.StatusNotFound, "not_found")
		}
	})
}

func TestActorComesFromToken(t *testing.T) {
	s := boot(t)
	var f flagJSON
	s.do(t, req{method: "POST", path: "/api/v1/environments/prod/flags", token: s.writer, body: boolFlag("checkout")}).
		must(t, http.StatusCreated, &f)
	if f.UpdatedBy != "writer" {
		t.Fatalf("updatedBy = %q, want the token's name", f.UpdatedBy)
	}
	// Whatever the body says, it cannot name the actor: such bodies are refused outright.
	s.unchanged(t, func() {
		for _, r := range []req{
			{method: "POST", path: flagPath("prod", "checkout") + "/kill", token: s.writer, body: `{"reason":"x","actor":"mallory"}`},
			{method: "POST", path: flagPath("prod", "checkout") + "/archive", token: s.writer, body: `{"actor":"mallory"}`},
			{method: "PATCH", path: flagPath("prod", "checkout"), token: s.writer, body: `{"updatedBy":"mallory"}`,
				header: map[string]string{"Content-Type": "application/merge-patch+json", "If-Match": `"1"`}},
		} {
			s.do(t, r).apiError(t, http.StatusBadRequest, "invalid_argument")
		}
	})
	s.do(t, req{method: "POST", path: flagPath("prod", "checkout") + "/kill", token: s.oncall, body: `{"reason":"x"}`,
		header: map[string]string{"X-Interlock-Actor": "mallory"}}).must(t, http.StatusOK, &f)
	var hist struct{ Entries []struct{ Actor string } }
	s.get(t, flagPath("prod", "checkout")+"/history").must(t, http.StatusOK, &hist)
	var actors []string
	for _, e := range hist.Entries {
		actors = append(actors, e.Actor)
	}
	if !slices.Equal(actors, []string{"writer", "oncall"}) {
		t.Fatalf("actors = %v", actors)
	}
}

func TestHistoryAndPast(t *testing.T) {
	s := boot(t)
	v1 := s.create(t, "prod", "checkout")
	// Another flag, so that sequences and versions differ.
	s.create(t, "prod", "other")
	var v2 flagJSON
	s.do(t, req{method: "PATCH", path: flagPath("prod", "checkout"), token: s.admin, body: `{"description":"second"}`,
		header: map[string]string{"Content-Type": "application/merge-patch+json", "If-Match": `"1"`}}).must(t, http.StatusOK, &v2)
	if !v2.UpdatedAt.After(v1.UpdatedAt) {
		t.Fatalf("update at %v is not after create at %v", v2.UpdatedAt, v1.UpdatedAt)
	}

	var hist struct {
		Entries []struct {
			Version  uint64
			Sequence uint64
			Type     string
			Changes  []struct {
				Path          string
				Before, After json.RawMessage
			}
		}
	}
	s.get(t, flagPath("prod", "checkout")+"/history").must(t, http.StatusOK, &hist)
	if len(hist.Entries) != 2 || hist.Entries[1].Type != events.TypeFlagUpdated {
		t.Fatalf("history = %+v", hist.Entries)
	}
	ch := hist.Entries[1].Changes
	if len(ch) != 1 || ch[0].Path != "description" || string(ch[0].Before) != `"first"` || string(ch[0].After) != `"second"` {
		t.Fatalf("update changes = %+v", ch)
	}

	var f flagJSON
	at := v1.UpdatedAt.Format(time.RFC3339Nano)
	tests := []struct {
		name, query string
		want        string
	}{
		{"at the create", "?at=" + url.QueryEscape(at), "first"},
		{"at the update", "?at=" + url.QueryEscape(v2.UpdatedAt.Format(time.RFC3339Nano)), "second"},
		{"unescaped plus", "?at=" + v1.UpdatedAt.In(time.FixedZone("", 3600)).Format(time.RFC3339Nano), "first"},
		{"version 1", "?version=1", "first"},
		{"version 2", "?version=2", "second"},
		{"sequence of the create", fmt.Sprintf("?sequence=%d", hist.Entries[0].Sequence), "first"},
		{"sequence before the update", fmt.Sprintf("?sequence=%d", hist.Entries[1].Sequence-1), "first"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s.get(t, flagPath("prod", "checkout")+tt.query).must(t, http.StatusOK, &f)
			if f.Description != tt.want {
				t.Fatalf("description %q, want %q", f.Description, tt.want)
			}
		})
	}

	var list struct{ Flags []flagJSON }
	s.get(t, "/api/v1/environments/prod/flags?at="+url.QueryEscape(at)).must(t, http.StatusOK, &list)
	if len(list.Flags) != 1 || list.Flags[0].Key != "checkout" || list.Flags[0].Description != "first" {
		t.Fatalf("environment at the first create = %+v", list.Flags)
	}
	s.get(t, fmt.Sprintf("/api/v1/environments/prod/flags?sequence=%d", hist.Entries[1].Sequence)).must(t, http.StatusOK, &list)
	if len(list.Flags) != 2 || list.Flags[0].Description != "second" {
		t.Fatalf("environment at the update = %+v", list.Flags)
	}

	refused := []struct {
		path   string
		status int
		code   string
	}{
		{flagPath("prod", "checkout") + "?version=3", 404, "not_found"},
		{flagPath("prod", "checkout") + "?at=" + url.QueryEscape(v1.UpdatedAt.Add(-time.Hour).Format(time.RFC3339)), 404, "not_found"},
		{flagPath("prod", "checkout") + "?at=yesterday", 400, "invalid_argument"},
		{flagPath("prod", "checkout") + "?version=0", 400, "invalid_argument"},
		{flagPath("prod", "checkout") + "?version=-1", 400, "invalid_argument"},
		{flagPath("prod", "checkout") + "?version=1&at=" + url.QueryEscape(at), 400, "invalid_argument"},
		{flagPath("prod", "checkout") + "?version=1&version=2", 400, "invalid_argument"},
		{flagPath("prod", "checkout") + "?asof=1", 400, "invalid_argument"},
		{flagPath("prod", "checkout") + "?version=%zz", 400, "invalid_argument"},
		{flagPath("prod", "bad%20key!"), 400, "invalid_argument"},
		{flagPath("prod", "nope"), 404, "not_found"},
		{flagPath("prod", "nope") + "/history", 404, "not_found"},
		{flagPath("prod", "nope") + "?version=1", 404, "not_found"},
		{"/api/v1/environments/prod/flags?version=1", 400, "invalid_argument"},
		{"/api/v1/environments/prod/flags?archived=maybe", 400, "invalid_argument"},
		{"/api/v1/environments/prod/flags?at=" + url.QueryEscape(at) + "&sequence=1", 400, "invalid_argument"},
		{"/api/v1/environments/PROD/flags", 400, "invalid_argument"},
	}
	for _, tt := range refused {
		t.Run(tt.path, func(t *testing.T) {
			s.get(t, tt.path).apiError(t, tt.status, tt.code)
		})
	}
}

func TestAudit(t *testing.T) {
	s := boot(t)
	s.create(t, "prod", "a")    // 1 admin created
	s.create(t, "staging", "a") // 2 admin created
	s.create(t, "prod", "b")    // 3 admin created
	for _, key := range []string{"a", "b"} {
		s.do(t, req{method: "POST", path: flagPath("prod", key) + "/kill", token: s.oncall, body: `{"reason":"incident"}`}).
			must(t, http.StatusOK, nil) // 4, 5 oncall killed
	}
	s.do(t, req{method: "POST", path: flagPath("prod", "a") + "/enable", token: s.writer}).must(t, http.StatusOK, nil) // 6

	type page struct {
		Events []struct {
			Sequence    uint64
			Type, Actor string
			Reason      string
		}
		Next *uint64
	}
	seqs := func(p page) []uint64 {
		var out []uint64
		for _, e := range p.Events {
			out = append(out, e.Sequence)
		}
		return out
	}
	tests := []struct {
		query string
		want  []uint64
	}{
		{"", []uint64{1, 2, 3, 4, 5, 6}},
		{"?actor=oncall", []uint64{4, 5}},
		{"?environment=staging", []uint64{2}},
		{"?environment=prod&flag=a", []uint64{1, 4, 6}},
		{"?type=" + url.QueryEscape(events.TypeFlagKilled) + "&type=" + url.QueryEscape(events.TypeFlagEnabled), []uint64{4, 5, 6}},
		{"?after=4", []uint64{5, 6}},
		{"?actor=nobody", nil},
	}
	for _, tt := range tests {
		t.Run(tt.query, func(t *testing.T) {
			var p page
			r := s.get(t, "/api/v1/audit"+tt.query).must(t, http.StatusOK, &p)
			if got := seqs(p); !slices.Equal(got, tt.want) {
				t.Fatalf("sequences %v, want %v", got, tt.want)
			}
			if p.Next != nil || r.header.Get("Link") != "" {
				t.Fatalf("last page with next %v, Link %q", *p.Next, r.header.Get("Link"))
			}
			if !strings.Contains(string(r.body), `"events":[`) {
				t.Fatalf("events is not an array: %s", r.body)
			}
		})
	}

	t.Run("pages", func(t *testing.T) {
		var got []uint64
		path := "/api/v1/audit?environment=prod&limit=2"
		link := regexp.MustCompile(`^<([^>]+)>; rel="next"$`)
		for pages := 0; path != ""; pages++ {
			if pages > 5 {
				t.Fatal("pagination does not end")
			}
			var p page
			r := s.get(t, path).must(t, http.StatusOK, &p)
			got = append(got, seqs(p)...)
			path = ""
			if p.Next != nil {
				m := link.FindStringSubmatch(r.header.Get("Link"))
				if m == nil {
					t.Fatalf("next %d without a Link header: %q", *p.Next, r.header.Get("Link"))
				}
				path = m[1]
				if !strings.Contains(path, fmt.Sprintf("after=%d", *p.Next)) || !strings.Contains(path, "environment=prod") {
					t.Fatalf("Link %q does not carry the query and the cursor", path)
				}
			}
		}
		if !slices.Equal(got, []uint64{1, 3, 4, 5, 6}) {
			t.Fatalf("pages gave %v", got)
		}
	})

	for _, q := range []string{
		"?limit=abc", "?limit=0", "?limit=100000", "?since=monday", "?until=2026-13-01T00:00:00Z", "?after=x",
		"?type=killed", "?flag=a", "?environment=Prod", "?colour=red", "?actor=a&actor=b",
	} {
		t.Run("refused "+q, func(t *testing.T) {
			s.get(t, "/api/v1/audit"+q).apiError(t, http.StatusBadRequest, "invalid_argument")
		})
	}
}

func TestRouting(t *testing.T) {
	s := boot(t)
	s.create(t, "prod", "checkout")
	tests := []struct {
		method, path string
		status       int
		code, allow  string
	}{
		{"DELETE", flagPath("prod", "checkout"), 405, "method_not_allowed", "GET, HEAD, PATCH"},
		{"PUT", "/api/v1/environments/prod/flags", 405, "method_not_allowed", "GET, HEAD, POST"},
		{"GET", flagPath("prod", "checkout") + "/kill", 405, "method_not_allowed", "POST"},
		{"POST", "/healthz", 405, "method_not_allowed", "GET, HEAD"},
		{"POST", "/api/v1/audit", 405, "method_not_allowed", "GET, HEAD"},
		{"GET", "/api/v2/flags", 404, "not_found", ""},
		{"GET", flagPath("prod", "checkout") + "/nonsense", 404, "not_found", ""},
	}
	for _, tt := range tests {
		t.Run(tt.method+" "+tt.path, func(t *testing.T) {
			s.unchanged(t, func() {
				r := s.do(t, req{method: tt.method, path: tt.path, token: s.admin})
				r.apiError(t, tt.status, tt.code)
				if got := r.header.Get("Allow"); got != tt.allow {
					t.Errorf("Allow = %q, want %q", got, tt.allow)
				}
			})
		})
	}
	r := s.do(t, req{method: "HEAD", path: flagPath("prod", "checkout")})
	if r.status != http.StatusOK || r.header.Get("ETag") != `"1"` {
		t.Fatalf("HEAD: %d, ETag %q", r.status, r.header.Get("ETag"))
	}
}

func TestCorrelationID(t *testing.T) {
	s := boot(t)
	r := s.do(t, req{method: "POST", path: "/api/v1/environments/prod/flags", token: s.admin, body: boolFlag("checkout"),
		header: map[string]string{"X-Correlation-Id": "deploy-4711"}})
	r.must(t, http.StatusCreated, nil)
	if got := r.header.Get("X-Correlation-Id"); got != "deploy-4711" {
		t.Fatalf("echoed correlation id %q", got)
	}
	r = s.do(t, req{method: "POST", path: flagPath("prod", "checkout") + "/kill", token: s.admin, body: `{"reason":"x"}`})
	r.must(t, http.StatusOK, nil)
	generated, err := uuid.Parse(r.header.Get("X-Correlation-Id"))
	if err != nil || generated.Version() != 7 {
		t.Fatalf("generated correlation id %q is not a UUIDv7", r.header.Get("X-Correlation-Id"))
	}
	var hist struct {
		Entries []struct{ CorrelationID string }
	}
	s.get(t, flagPath("prod", "checkout")+"/history").must(t, http.StatusOK, &hist)
	if len(hist.Entries) != 2 || hist.Entries[0].CorrelationID != "deploy-4711" || hist.Entries[1].CorrelationID != generated.String() {
		t.Fatalf("correlation ids on events: %+v", hist.Entries)
	}
	s.unchanged(t, func() {
		s.do(t, req{method: "POST", path: flagPath("prod", "checkout") + "/enable", token: s.admin,
			header: map[string]string{"X-Correlation-Id": strings.Repeat("x", 300)}}).apiError(t, http.StatusBadRequest, "invalid_argument")
	})
}

func TestReadsNeedATokenUnlessPublic(t *testing.T) {
	paths := []string{"/api/v1/environments", flagPath("prod", "checkout"), flagPath("prod", "checkout") + "/history", "/api/v1/audit", "/api/v1/openapi.yaml"}
	t.Run("default", func(t *testing.T) {
		s := boot(t)
		s.create(t, "prod", "checkout")
		for _, path := range paths {
			s.do(t, req{method: "GET", path: path, anonymous: true}).apiError(t, http.StatusUnauthorized, "unauthenticated")
			s.do(t, req{method: "GET", path: path, token: s.reader}).must(t, http.StatusOK, nil)
		}
		s.do(t, req{method: "GET", path: "/healthz", anonymous: true}).must(t, http.StatusOK, nil)
		s.do(t, req{method: "GET", path: "/readyz", anonymous: true}).must(t, http.StatusOK, nil)
	})
	t.Run("public", func(t *testing.T) {
		s := boot(t, func(c *api.Config) { c.PublicRead = true })
		s.create(t, "prod", "checkout")
		for _, path := range paths {
			s.do(t, req{method: "GET", path: path, anonymous: true}).must(t, http.StatusOK, nil)
			// A token that is sent is still checked.
			s.do(t, req{method: "GET", path: path, token: "ilk_not-a-token-at-all"}).apiError(t, http.StatusUnauthorized, "unauthenticated")
		}
		// Writes still need a token.
		s.unchanged(t, func() {
			s.do(t, req{method: "POST", path: flagPath("prod", "checkout") + "/kill", body: `{"reason":"x"}`}).
				apiError(t, http.StatusUnauthorized, "unauthenticated")
		})
	})
}

func TestConfigValidate(t *testing.T) {
	_, err := api.New(api.Config{MaxBodyBytes: -1, WriteTimeout: -time.Second})
	if err == nil {
		t.Fatal("empty config accepted")
	}
	for _, want := range []string{"commands", "catalog", "reader", "auth", "ready", "max body bytes", "write timeout"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("config error %q does not mention %s", err, want)
		}
	}
}

// TestBadInputRefusedAtTheEdge: what the JSON decoder would alter or defer is refused at write
// time on create, PATCH and actions, and bad query values on reads; nothing is written.
func TestBadInputRefusedAtTheEdge(t *testing.T) {
	s := boot(t)
	s.create(t, "prod", "checkout")
	flags := "/api/v1/environments/prod/flags"
	tests := []struct {
		name string
		r    req
		want string
	}{
		{"number beyond float64", req{method: "POST", path: flags, token: s.admin,
			body: `{"key":"ttl","kind":"config","variants":{"a":1,"b":1e400},"defaultVariant":"a","offVariant":"a"}`}, "does not fit"},
		{"invalid UTF-8 in a description", req{method: "POST", path: flags, token: s.admin,
			body: "{\"key\":\"x\",\"description\":\"caf\xe9\",\"variants\":{\"on\":true,\"off\":false},\"defaultVariant\":\"on\",\"offVariant\":\"off\"}"}, "UTF-8"},
		{"duplicate key", req{method: "POST", path: flags, token: s.admin, body: `{"key":"a","key":"b"}`}, "twice"},
		{"duplicate key in a patch", req{method: "PATCH", path: flagPath("prod", "checkout"), token: s.admin,
			header: map[string]string{"Content-Type": "application/merge-patch+json", "If-Match": `"1"`}, body: `{"owner":"a","owner":"b"}`}, "twice"},
		{"duplicate key in an action", req{method: "POST", path: flagPath("prod", "checkout") + "/kill", token: s.admin, body: `{"reason":"a","reason":"b"}`}, "twice"},
		{"invalid UTF-8 in a query", req{method: "GET", path: "/api/v1/audit?actor=%ff"}, "UTF-8"},
		{"at before the epoch", req{method: "GET", path: flagPath("prod", "checkout") + "?at=1969-12-31T23:59:59Z"}, "out of range"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s.unchanged(t, func() {
				msg := s.do(t, tt.r).apiError(t, http.StatusBadRequest, "invalid_argument")
				if !strings.Contains(msg, tt.want) {
					t.Errorf("message %q does not say %q", msg, tt.want)
				}
			})
		})
	}
}

func TestRateLimitPerToken(t *testing.T) {
	s := boot(t, func(c *api.Config) { c.RateLimit, c.RateBurst = 0.01, 3 }) // three, then one per 100 s
	for range 3 {
		s.do(t, req{method: "GET", path: "/api/v1/environments", token: s.reader}).must(t, http.StatusOK, nil)
	}
	r := s.do(t, req{method: "GET", path: "/api/v1/environments", token: s.reader})
	r.apiError(t, http.StatusTooManyRequests, "too_many_requests")
	if ra, err := strconv.Atoi(r.header.Get("Retry-After")); err != nil || ra < 1 {
		t.Errorf("Retry-After %q, want whole seconds", r.header.Get("Retry-After"))
	}
	// Another token has its own allowance, and health checks are not counted.
	s.do(t, req{method: "GET", path: "/api/v1/environments", token: s.writer}).must(t, http.StatusOK, nil)
	s.do(t, req{method: "GET", path: "/readyz", anonymous: true}).must(t, http.StatusOK, nil)
}
