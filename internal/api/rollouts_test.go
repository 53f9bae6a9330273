package api_test

import (
	"context"
	"encoding/json"
	"log/slog"
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

// plan is a rollout plan of the boolean flag (on against off) in three stages.
const plan = `{"treatment":"on","control":"off","stages":[{"percent":10,"minHold":"1m"},{"percent":50},{"percent":100}],` +
	`"metrics":[{"name":"errors","requests":"requests_total{app=\"shop\"}","errors":"errors_total{app=\"shop\"}"}],` +
	`"source":{"type":"prometheus","url":"http://prometheus:9090"}}`

// statusJSON is the rollout status as the API returns it.
type statusJSON struct {
	Flag        string               `json:"flag"`
	Environment string               `json:"environment"`
	Version     uint64               `json:"version"`
	Enabled     bool                 `json:"enabled"`
	Rollout     *projections.Rollout `json:"rollout"`
	Stage       struct {
		Index   int             `json:"index"`
		Count   int             `json:"count"`
		Percent float64         `json:"percent"`
		MinHold events.Duration `json:"minHold"`
	} `json:"stage"`
	Split events.Serve    `json:"split"`
	Live  json.RawMessage `json:"live"`
}

// valveJSON is the valve status as the API returns it.
type valveJSON struct {
	Flag        string             `json:"flag"`
	Environment string             `json:"environment"`
	Version     uint64             `json:"version"`
	Valve       *projections.Valve `json:"valve"`
}

func rolloutPath(env, key string) string { return flagPath(env, key) + "/rollout" }

func valvePath(env, key string) string { return flagPath(env, key) + "/valve" }

// ifMatch is the header naming version v.
func ifMatch(v uint64) map[string]string { return map[string]string{"If-Match": etagOf(v)} }

// post sends a rollout or valve command.
func (s *system) post(t testing.TB, path, token, body string, header map[string]string) *response {
	t.Helper()
	return s.do(t, req{method: "POST", path: path, token: token, body: body, header: header})
}

func TestRolloutLifecycle(t *testing.T) {
	s := boot(t)
	s.create(t, "prod", "checkout") // version 1
	path := rolloutPath("prod", "checkout")
	s.get(t, path).apiError(t, http.StatusNotFound, "not_found")

	var st statusJSON
	resp := s.do(t, req{method: "POST", path: path, token: s.writer, body: plan,
		header: map[string]string{"X-Interlock-Reason": "new checkout", "X-Correlation-Id": "corr-1"}}).must(t, http.StatusCreated, fresh(&st))
	if resp.header.Get("ETag") != `"2"` || resp.header.Get("Location") != path {
		t.Errorf("ETag %s, Location %s", resp.header.Get("ETag"), resp.header.Get("Location"))
	}
	r := st.Rollout
	if r == nil || r.ID == "" || r.Status != projections.RolloutCreated || r.CreatedBy != "writer" || st.Version != 2 ||
		st.Flag != "checkout" || st.Environment != "prod" || !st.Enabled || string(st.Live) != "null" {
		t.Fatalf("created = %+v", st)
	}
	if st.Stage.Index != 0 || st.Stage.Count != 3 || st.Stage.Percent != 10 || time.Duration(st.Stage.MinHold) != time.Minute ||
		st.Split.Variant != "on" || r.Plan.Tick == 0 || r.Plan.OnTrip != events.OnTripKill {
		t.Fatalf("created stage %+v, split %+v, plan %+v", st.Stage, st.Split, r.Plan)
	}
	id := r.ID

	// Read it back, with its ETag.
	var got statusJSON
	resp = s.get(t, path).must(t, http.StatusOK, &got)
	if resp.header.Get("ETag") != `"2"` || got.Rollout == nil || got.Rollout.ID != id {
		t.Fatalf("GET = %+v, ETag %s", got, resp.header.Get("ETag"))
	}
	if r := s.do(t, req{method: "GET", path: path, header: map[string]string{"If-None-Match": `"2"`}}); r.status != http.StatusNotModified {
		t.Errorf("If-None-Match: %d", r.status)
	}

	// Start: If-Match required, a writer's.
	s.unchanged(t, func() {
		s.post(t, path+"/start", s.writer, "", nil).apiError(t, http.StatusPreconditionRequired, "precondition_required")
		s.post(t, path+"/start", s.writer, "", ifMatch(1)).apiError(t, http.StatusPreconditionFailed, "precondition_failed")
		s.post(t, path+"/start", s.reader, "", ifMatch(2)).apiError(t, http.StatusForbidden, "forbidden")
		s.post(t, path+"/start", s.oncall, "", ifMatch(2)).apiError(t, http.StatusForbidden, "forbidden")
		s.post(t, path+"/start", "", "", ifMatch(2)).apiError(t, http.StatusUnauthorized, "unauthenticated")
		msg := s.post(t, path+"/start", s.writer, `{"from":0}`, ifMatch(2)).apiError(t, http.StatusBadRequest, "invalid_argument")
		if !strings.HasPrefix(msg, "from:") {
			t.Errorf("message %q does not name the field", msg)
		}
		s.post(t, path+"/start", s.writer, `{"id":"another"}`, ifMatch(2)).apiError(t, http.StatusNotFound, "not_found")
	})
	resp = s.post(t, path+"/start", s.writer, "", ifMatch(2)).must(t, http.StatusOK, fresh(&st))
	if st.Rollout.Status != projections.RolloutRunning || st.Version != 3 || resp.header.Get("ETag") != `"3"` ||
		!splitIs(st.Split, map[string]int{"on": 1000, "off": 9000}) {
		t.Fatalf("started = %+v", st)
	}

	// Advance: a reason is required, the on-call role may not, from is idempotent.
	s.unchanged(t, func() {
		msg := s.post(t, path+"/advance", s.writer, "", ifMatch(3)).apiError(t, http.StatusBadRequest, "invalid_argument")
		if !strings.Contains(msg, "reason") {
			t.Errorf("message %q does not name the reason", msg)
		}
		s.post(t, path+"/advance", s.oncall, `{"reason":"x"}`, ifMatch(3)).apiError(t, http.StatusForbidden, "forbidden")
		s.post(t, path+"/advance", s.writer, `{"reason":"x"}`, nil).apiError(t, http.StatusPreconditionRequired, "precondition_required")
		s.post(t, path+"/advance", s.writer, `{"reason":"x","from":-1}`, ifMatch(3)).apiError(t, http.StatusBadRequest, "invalid_argument")
		s.post(t, path+"/advance", s.writer, `{"reason":"x","from":"0"}`, ifMatch(3)).apiError(t, http.StatusBadRequest, "invalid_argument")
		s.post(t, path+"/advance", s.writer, `{"reason":"x","from":2}`, ifMatch(3)).apiError(t, http.StatusConflict, "conflict")
	})
	s.post(t, path+"/advance", s.writer, `{"reason":"healthy","from":0,"id":"`+id+`"}`, ifMatch(3)).must(t, http.StatusOK, fresh(&st))
	if st.Stage.Index != 1 || st.Stage.Percent != 50 || st.Version != 4 || !splitIs(st.Split, map[string]int{"on": 5000, "off": 5000}) {
		t.Fatalf("advanced = %+v", st)
	}
	s.unchanged(t, func() { // sent twice: the second changes nothing
		s.post(t, path+"/advance", s.writer, `{"reason":"healthy","from":0}`, ifMatch(4)).must(t, http.StatusOK, fresh(&st))
	})
	if st.Stage.Index != 1 || st.Version != 4 {
		t.Fatalf("advanced twice = %+v", st)
	}

	// Pause and resume; a change of the split is refused while the rollout owns it.
	s.post(t, path+"/pause", s.writer, `{"reason":"lunch"}`, ifMatch(4)).must(t, http.StatusOK, fresh(&st))
	if st.Rollout.Status != projections.RolloutPaused || st.Version != 5 {
		t.Fatalf("paused = %+v", st)
	}
	s.unchanged(t, func() {
		s.post(t, path+"/pause", s.writer, "", ifMatch(5)).must(t, http.StatusOK, fresh(&st))
		s.post(t, path, s.writer, plan, nil).apiError(t, http.StatusConflict, "conflict")
		s.do(t, req{method: "PATCH", path: flagPath("prod", "checkout"), token: s.writer, body: `{"defaultServe":{"split":null,"variant":"on"}}`,
			header: map[string]string{"Content-Type": "application/merge-patch+json", "If-Match": `"5"`}}).apiError(t, http.StatusConflict, "conflict")
	})
	s.post(t, path+"/resume", s.writer, "", ifMatch(5)).must(t, http.StatusOK, fresh(&st))
	if st.Rollout.Status != projections.RolloutRunning || st.Version != 6 {
		t.Fatalf("resumed = %+v", st)
	}

	// Step back, then not past the first stage.
	s.post(t, path+"/stepback", s.writer, `{"reason":"too fast"}`, ifMatch(6)).must(t, http.StatusOK, fresh(&st))
	if st.Stage.Index != 0 || st.Version != 7 || !splitIs(st.Split, map[string]int{"on": 1000, "off": 9000}) {
		t.Fatalf("stepped back = %+v", st)
	}
	s.unchanged(t, func() {
		msg := s.post(t, path+"/stepback", s.writer, `{"reason":"again"}`, ifMatch(7)).apiError(t, http.StatusConflict, "conflict")
		if !strings.Contains(msg, "first stage") {
			t.Errorf("message %q", msg)
		}
	})

	// The guard trips: advancing is refused until a person re-arms it.
	guard := command.New(s.store, slog.New(slog.DiscardHandler))
	res, err := guard.Handle(context.Background(), command.RecordDecision{Meta: command.Meta{Actor: "guard"}, Env: "prod", Key: "checkout", ExpectedVersion: 7, Decision: events.GuardDecided{
		Rollout: id, Stage: 0, StateBefore: "HEALTHY", StateAfter: "TRIPPED", Action: "freeze", Cause: "r1", Evidence: json.RawMessage(`{}`),
	}})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.catalog.WaitSequence(context.Background(), res.Flag.Sequence); err != nil {
		t.Fatal(err)
	}
	s.get(t, path).must(t, http.StatusOK, fresh(&st))
	if !st.Rollout.Guard.Tripped || st.Rollout.Guard.Cause != "r1" || st.Version != 8 {
		t.Fatalf("tripped = %+v", st.Rollout.Guard)
	}
	s.unchanged(t, func() {
		s.post(t, path+"/advance", s.writer, `{"reason":"ship it"}`, ifMatch(8)).apiError(t, http.StatusConflict, "tripped")
		msg := s.post(t, path+"/rearm", s.writer, "", ifMatch(8)).apiError(t, http.StatusBadRequest, "invalid_argument")
		if !strings.Contains(msg, "reason") {
			t.Errorf("message %q does not name the reason", msg)
		}
		s.post(t, path+"/rearm", s.oncall, `{"reason":"x"}`, ifMatch(8)).apiError(t, http.StatusForbidden, "forbidden")
	})
	s.post(t, path+"/rearm", s.writer, `{"reason":"false alarm: a deploy of the control"}`, ifMatch(8)).must(t, http.StatusOK, fresh(&st))
	if st.Rollout.Guard.Tripped || st.Version != 9 {
		t.Fatalf("rearmed = %+v", st.Rollout.Guard)
	}
	s.unchanged(t, func() {
		s.post(t, path+"/rearm", s.writer, `{"reason":"again"}`, ifMatch(9)).apiError(t, http.StatusConflict, "conflict")
	})

	// Abort is the on-call's: the flag serves the control to everyone.
	s.unchanged(t, func() {
		msg := s.post(t, path+"/abort", s.oncall, `{}`, ifMatch(9)).apiError(t, http.StatusBadRequest, "invalid_argument")
		if !strings.Contains(msg, "reason") {
			t.Errorf("message %q does not name the reason", msg)
		}
		s.post(t, path+"/abort", s.reader, `{"reason":"x"}`, ifMatch(9)).apiError(t, http.StatusForbidden, "forbidden")
		s.post(t, path+"/abort", s.oncall, `{"reason":"x"}`, nil).apiError(t, http.StatusPreconditionRequired, "precondition_required")
	})
	s.post(t, path+"/abort", s.oncall, `{"reason":"pager"}`, ifMatch(9)).must(t, http.StatusOK, fresh(&st))
	if st.Rollout.Status != projections.RolloutAborted || st.Version != 10 || st.Split.Variant != "off" || st.Split.Split != nil {
		t.Fatalf("aborted = %+v", st)
	}
	s.unchanged(t, func() {
		s.post(t, path+"/start", s.writer, "", ifMatch(10)).apiError(t, http.StatusConflict, "conflict")
		s.post(t, path+"/resume", s.writer, "", ifMatch(10)).apiError(t, http.StatusConflict, "conflict")
	})

	// A finished rollout is replaced by a new one, If-Match checked when given.
	s.unchanged(t, func() {
		s.post(t, path, s.writer, plan, ifMatch(9)).apiError(t, http.StatusPreconditionFailed, "precondition_failed")
	})
	s.post(t, path, s.admin, plan, ifMatch(10)).must(t, http.StatusCreated, fresh(&st))
	if st.Rollout.ID == id || st.Rollout.Status != projections.RolloutCreated || st.Version != 11 {
		t.Fatalf("second rollout = %+v", st)
	}

	// Every event names the token's principal; reasons and correlation ids are kept.
	var hist struct{ Entries []projections.Entry }
	s.get(t, flagPath("prod", "checkout")+"/history").must(t, http.StatusOK, &hist)
	var actors []string
	for _, e := range hist.Entries {
		actors = append(actors, e.Actor)
	}
	want := []string{"admin", "writer", "writer", "writer", "writer", "writer", "writer", "guard", "writer", "oncall", "admin"}
	if !slices.Equal(actors, want) {
		t.Fatalf("actors = %v, want %v", actors, want)
	}
	if e := hist.Entries[1]; e.Type != events.TypeRolloutCreated || e.Reason != "new checkout" || e.CorrelationID != "corr-1" {
		t.Errorf("create entry = %+v", e)
	}
	if e := hist.Entries[9]; e.Type != events.TypeRolloutAborted || e.Reason != "pager" {
		t.Errorf("abort entry = %+v", e)
	}
}

// fresh zeroes *v and returns it, so that a decoded answer holds nothing of an earlier one.
func fresh[T any](v *T) *T {
	var zero T
	*v = zero
	return v
}

// splitIs reports whether s is the split want.
func splitIs(s events.Serve, want map[string]int) bool {
	if s.Variant != "" || len(s.Split) != len(want) {
		return false
	}
	for k, v := range want {
		if s.Split[k] != v {
			return false
		}
	}
	return true
}

func TestRolloutRefused(t *testing.T) {
	s := boot(t, func(c *api.Config) { c.MaxBodyBytes = 2048 })
	s.create(t, "prod", "checkout")
	path := rolloutPath("prod", "checkout")
	tokens := map[string]string{"admin": s.admin, "writer": s.writer, "reader": s.reader, "oncall": s.oncall}
	tests := []struct {
		name   string
		r      req
		status int
		code   string
		msg    string
	}{
		{"no token", req{body: plan}, 401, "unauthenticated", "Bearer"},
		{"reader", req{token: "reader", body: plan}, 403, "forbidden", "may not write"},
		{"oncall", req{token: "oncall", body: plan}, 403, "forbidden", "may not write"},
		{"actor in the body", req{token: "writer", body: `{"actor":"mallory","treatment":"on"}`}, 400, "invalid_argument", `unknown field "actor"`},
		{"unknown nested field", req{token: "writer", body: `{"source":{"kind":"x"}}`}, 400, "invalid_argument", `unknown field "kind"`},
		{"wrong type", req{token: "writer", body: `{"stages":[{"percent":"ten"}]}`}, 400, "invalid_argument", "field stages.percent"},
		{"bad duration", req{token: "writer", body: `{"tick":"soon"}`}, 400, "invalid_argument", "soon"},
		{"null", req{token: "writer", body: `null`}, 400, "invalid_argument", "not a JSON object"},
		{"array", req{token: "writer", body: `[]`}, 400, "invalid_argument", ""},
		{"empty", req{token: "writer"}, 400, "invalid_argument", "empty"},
		{"two values", req{token: "writer", body: plan + plan}, 400, "invalid_argument", "more than one"},
		{"invalid plan", req{token: "writer", body: `{"treatment":"on","control":"on","source":{"type":"x"}}`}, 400, "invalid_argument",
			"control: must differ from the treatment"},
		{"no metrics", req{token: "writer", body: `{"treatment":"on","control":"off","source":{"type":"prometheus","url":"http://p"}}`},
			400, "invalid_argument", "metrics: at least one metric"},
		{"variant of another flag", req{token: "writer", body: strings.Replace(plan, `"treatment":"on"`, `"treatment":"blue"`, 1)},
			400, "invalid_argument", `treatment: "blue" is not one of the flag's variants`},
		{"valve that is not a valve", req{token: "writer", body: strings.Replace(plan, `"treatment"`, `"onTrip":"openValve","valve":{"flag":"checkout"},"treatment"`, 1)},
			409, "conflict", "not a safety valve"},
		{"stale If-Match", req{token: "writer", body: plan, header: ifMatch(7)}, 412, "precondition_failed", "version"},
		{"weak If-Match", req{token: "writer", body: plan, header: map[string]string{"If-Match": `W/"1"`}}, 400, "invalid_argument", "weak"},
		{"text", req{token: "writer", body: plan, header: map[string]string{"Content-Type": "text/plain"}}, 415, "unsupported_media_type", ""},
		{"too large", req{token: "writer", body: `{"treatment":"` + strings.Repeat("x", 4096) + `"}`}, 413, "payload_too_large", "2 KiB"},
		{"query parameter", req{path: path + "?dry=1", token: "writer", body: plan}, 400, "invalid_argument", `"dry"`},
		{"no flag", req{path: rolloutPath("prod", "nope"), token: "writer", body: plan}, 404, "not_found", "prod/nope"},
		{"bad key", req{path: rolloutPath("prod", "a..b"), token: "writer", body: plan}, 400, "invalid_argument", "key"},
		{"method", req{method: "DELETE", token: "writer"}, 405, "method_not_allowed", "GET, HEAD, POST"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.r.method == "" {
				tt.r.method = "POST"
			}
			if tt.r.path == "" {
				tt.r.path = path
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

	// Commands on a flag that never had a rollout, or on one that does not exist.
	s.unchanged(t, func() {
		for _, verb := range []string{"start", "pause", "resume", "advance", "stepback", "abort", "rearm"} {
			msg := s.post(t, path+"/"+verb, s.admin, `{"reason":"x"}`, ifMatch(1)).apiError(t, http.StatusNotFound, "not_found")
			if !strings.Contains(msg, "never had a rollout") {
				t.Errorf("%s: message %q", verb, msg)
			}
			s.post(t, rolloutPath("prod", "nope")+"/"+verb, s.admin, `{"reason":"x"}`, ifMatch(1)).apiError(t, http.StatusNotFound, "not_found")
			s.post(t, path+"/"+verb, s.admin, `{"reason":"x","actor":"mallory"}`, ifMatch(1)).apiError(t, http.StatusBadRequest, "invalid_argument")
			s.do(t, req{method: "GET", path: path + "/" + verb, token: s.admin}).apiError(t, http.StatusMethodNotAllowed, "method_not_allowed")
		}
	})
	s.get(t, rolloutPath("prod", "nope")).apiError(t, http.StatusNotFound, "not_found")
	s.get(t, path+"?x=1").apiError(t, http.StatusBadRequest, "invalid_argument")
}

// liveFunc is a hand-written guard status.
type liveFunc func(env, key string) (any, bool)

func (f liveFunc) Live(env, key string) (any, bool) { return f(env, key) }

func TestRolloutLive(t *testing.T) {
	live := map[string]any{"state": "HEALTHY", "metrics": []any{map[string]any{"name": "errors", "r1": map[string]any{"e": 0.5, "p": 1, "rHat": 0.9}}}}
	s := boot(t, func(c *api.Config) {
		c.Guard = liveFunc(func(env, key string) (any, bool) {
			if env == "prod" && key == "checkout" {
				return live, true
			}
			return nil, false
		})
	})
	for _, key := range []string{"checkout", "other"} {
		s.create(t, "prod", key)
		s.post(t, rolloutPath("prod", key), s.writer, plan, nil).must(t, http.StatusCreated, nil)
	}
	// A rollout that has not started has no guard judging it.
	var st statusJSON
	s.get(t, rolloutPath("prod", "checkout")).must(t, http.StatusOK, &st)
	if string(st.Live) != "null" {
		t.Errorf("live of a rollout not started = %s", st.Live)
	}
	for _, key := range []string{"checkout", "other"} {
		s.post(t, rolloutPath("prod", key)+"/start", s.writer, `{}`, ifMatch(2)).must(t, http.StatusOK, nil)
	}
	s.get(t, rolloutPath("prod", "checkout")).must(t, http.StatusOK, &st)
	want, _ := json.Marshal(live)
	var a, b any
	if err := json.Unmarshal(st.Live, &a); err != nil {
		t.Fatal(err)
	}
	_ = json.Unmarshal(want, &b)
	if g, w := mustMarshal(t, a), mustMarshal(t, b); g != w {
		t.Errorf("live = %s, want %s", g, w)
	}
	s.get(t, rolloutPath("prod", "other")).must(t, http.StatusOK, &st)
	if string(st.Live) != "null" {
		t.Errorf("live of a rollout the guard does not follow = %s", st.Live)
	}
}

func mustMarshal(t testing.TB, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// operationalFlag is the body of a create for an operational flag that can be a valve.
func operationalFlag(key string) string {
	return `{"key":"` + key + `","kind":"operational","variants":{"on":true,"off":false},"defaultVariant":"on","offVariant":"off","enabled":true}`
}

func TestValve(t *testing.T) {
	s := boot(t)
	s.do(t, req{method: "POST", path: "/api/v1/environments/prod/flags", token: s.admin, body: operationalFlag("search.suggest")}).must(t, http.StatusCreated, nil)
	s.create(t, "prod", "checkout") // a release flag
	path := valvePath("prod", "search.suggest")
	put := func(token, body string, header map[string]string) *response {
		return s.do(t, req{method: "PUT", path: path, token: token, body: body, header: header})
	}
	msg := s.get(t, path).apiError(t, http.StatusNotFound, "not_found")
	if !strings.Contains(msg, "not a safety valve") {
		t.Errorf("message %q", msg)
	}

	// Configure: a writer's, If-Match required.
	s.unchanged(t, func() {
		put(s.writer, `{"variant":"off"}`, nil).apiError(t, http.StatusPreconditionRequired, "precondition_required")
		put(s.writer, `{"variant":"off"}`, ifMatch(2)).apiError(t, http.StatusPreconditionFailed, "precondition_failed")
		put(s.oncall, `{"variant":"off"}`, ifMatch(1)).apiError(t, http.StatusForbidden, "forbidden")
		put(s.reader, `{"variant":"off"}`, ifMatch(1)).apiError(t, http.StatusForbidden, "forbidden")
		put(s.writer, `{"variant":"off","actor":"mallory"}`, ifMatch(1)).apiError(t, http.StatusBadRequest, "invalid_argument")
		put(s.writer, ``, ifMatch(1)).apiError(t, http.StatusBadRequest, "invalid_argument")
		if msg := put(s.writer, `{"variant":"blue"}`, ifMatch(1)).apiError(t, http.StatusBadRequest, "invalid_argument"); !strings.HasPrefix(msg, "variant:") {
			t.Errorf("message %q", msg)
		}
		if msg := put(s.writer, `{"variant":"off","segment":"nope"}`, ifMatch(1)).apiError(t, http.StatusBadRequest, "invalid_argument"); !strings.Contains(msg, "nope") {
			t.Errorf("message %q", msg)
		}
		if msg := put(s.writer, `{"variant":"off","policy":{"source":{"type":"x"}}}`, ifMatch(1)).apiError(t, http.StatusBadRequest, "invalid_argument"); !strings.Contains(msg, "policy.source.type") {
			t.Errorf("message %q", msg)
		}
		if msg := s.do(t, req{method: "PUT", path: valvePath("prod", "checkout"), token: s.writer, body: `{"variant":"off"}`, header: ifMatch(1)}).
			apiError(t, http.StatusBadRequest, "invalid_argument"); !strings.HasPrefix(msg, "kind:") {
			t.Errorf("message %q", msg)
		}
	})
	var v valveJSON
	resp := put(s.writer, `{"variant":"off"}`, ifMatch(1)).must(t, http.StatusOK, fresh(&v))
	if v.Valve == nil || v.Valve.Variant != "off" || v.Valve.Open || v.Version != 2 || resp.header.Get("ETag") != `"2"` {
		t.Fatalf("configured = %+v", v)
	}
	s.get(t, path).must(t, http.StatusOK, fresh(&v))
	if v.Valve == nil || v.Valve.Variant != "off" || v.Flag != "search.suggest" || v.Environment != "prod" {
		t.Fatalf("GET = %+v", v)
	}

	// Open: the on-call's; a reason is required; the expiry from "for" or "expires".
	open := func(token, body string, header map[string]string) *response {
		return s.post(t, path+"/open", token, body, header)
	}
	s.unchanged(t, func() {
		if msg := open(s.oncall, ``, nil).apiError(t, http.StatusBadRequest, "invalid_argument"); !strings.Contains(msg, "reason") {
			t.Errorf("message %q", msg)
		}
		open(s.reader, `{"reason":"x"}`, nil).apiError(t, http.StatusForbidden, "forbidden")
		open(s.oncall, `{"reason":"x"}`, ifMatch(2)).apiError(t, http.StatusBadRequest, "invalid_argument")
		open(s.oncall, `{"reason":"x","actor":"mallory"}`, nil).apiError(t, http.StatusBadRequest, "invalid_argument")
		if msg := open(s.oncall, `{"reason":"x","for":"soon"}`, nil).apiError(t, http.StatusBadRequest, "invalid_argument"); !strings.HasPrefix(msg, "for:") {
			t.Errorf("message %q", msg)
		}
		if msg := open(s.oncall, `{"reason":"x","for":"-5m"}`, nil).apiError(t, http.StatusBadRequest, "invalid_argument"); !strings.HasPrefix(msg, "for:") {
			t.Errorf("message %q", msg)
		}
		if msg := open(s.oncall, `{"reason":"x","expires":"tomorrow"}`, nil).apiError(t, http.StatusBadRequest, "invalid_argument"); !strings.HasPrefix(msg, "expires:") {
			t.Errorf("message %q", msg)
		}
		if msg := open(s.oncall, `{"reason":"x","expires":"2001-01-01T00:00:00Z"}`, nil).apiError(t, http.StatusBadRequest, "invalid_argument"); !strings.Contains(msg, "expires") {
			t.Errorf("message %q", msg)
		}
		open(s.oncall, `{"reason":"x","expires":"2999-01-01T00:00:00Z","for":"1h"}`, nil).apiError(t, http.StatusBadRequest, "invalid_argument")
		s.post(t, valvePath("prod", "checkout")+"/open", s.oncall, `{"reason":"x"}`, nil).apiError(t, http.StatusConflict, "conflict")
		s.post(t, valvePath("prod", "nope")+"/open", s.oncall, `{"reason":"x"}`, nil).apiError(t, http.StatusNotFound, "not_found")
	})
	before := time.Now()
	resp = open(s.oncall, `{"reason":"search latency","for":"30m"}`, map[string]string{"X-Correlation-Id": "page-7"}).must(t, http.StatusOK, fresh(&v))
	after := time.Now()
	vv := v.Valve
	if !vv.Open || vv.OpenedBy != "oncall" || vv.Reason != "search latency" || v.Version != 3 || resp.header.Get("ETag") != `"3"` {
		t.Fatalf("opened = %+v", v)
	}
	if vv.Expires.Before(before.Add(30*time.Minute).Truncate(time.Millisecond)) || vv.Expires.After(after.Add(30*time.Minute)) {
		t.Errorf("expires %v, want 30m after a time in [%v, %v]", vv.Expires, before, after)
	}
	// The flag now serves the valve's variant.
	var f struct {
		Valve *projections.Valve `json:"valve"`
	}
	s.get(t, flagPath("prod", "search.suggest")).must(t, http.StatusOK, &f)
	if f.Valve == nil || !f.Valve.Open {
		t.Errorf("flag's valve = %+v", f.Valve)
	}
	// An explicit expiry changes an open valve; the same one changes nothing.
	exp := time.Now().Add(time.Hour).UTC().Truncate(time.Second).Format(time.RFC3339)
	open(s.writer, `{"reason":"longer","expires":"`+exp+`"}`, nil).must(t, http.StatusOK, fresh(&v))
	if v.Version != 4 || v.Valve.Expires.Format(time.RFC3339) != exp || v.Valve.OpenedBy != "writer" {
		t.Fatalf("reopened = %+v", v.Valve)
	}
	s.unchanged(t, func() { open(s.writer, `{"reason":"again","expires":"`+exp+`"}`, nil).must(t, http.StatusOK, nil) })

	// Close: the on-call's, with a reason.
	closeV := func(token, body string, header map[string]string) *response {
		return s.post(t, path+"/close", token, body, header)
	}
	s.unchanged(t, func() {
		if msg := closeV(s.oncall, ``, nil).apiError(t, http.StatusBadRequest, "invalid_argument"); !strings.Contains(msg, "reason") {
			t.Errorf("message %q", msg)
		}
		closeV(s.reader, `{"reason":"x"}`, nil).apiError(t, http.StatusForbidden, "forbidden")
		closeV(s.oncall, `{"reason":"x","cause":"healthy"}`, nil).apiError(t, http.StatusBadRequest, "invalid_argument")
		closeV(s.oncall, `{"reason":"x"}`, ifMatch(4)).apiError(t, http.StatusBadRequest, "invalid_argument")
		s.post(t, valvePath("prod", "checkout")+"/close", s.oncall, `{"reason":"x"}`, nil).apiError(t, http.StatusConflict, "conflict")
	})
	closeV(s.oncall, `{"reason":"recovered"}`, nil).must(t, http.StatusOK, fresh(&v))
	if v.Valve.Open || v.Valve.Cause != events.ValveClosedManual || v.Version != 5 {
		t.Fatalf("closed = %+v", v.Valve)
	}
	s.unchanged(t, func() { closeV(s.oncall, `{"reason":"again"}`, nil).must(t, http.StatusOK, nil) })

	var hist struct{ Entries []projections.Entry }
	s.get(t, flagPath("prod", "search.suggest")+"/history").must(t, http.StatusOK, &hist)
	var actors []string
	for _, e := range hist.Entries {
		actors = append(actors, e.Actor)
	}
	if !slices.Equal(actors, []string{"admin", "writer", "oncall", "writer", "oncall"}) {
		t.Fatalf("actors = %v", actors)
	}
	if e := hist.Entries[2]; e.CorrelationID != "page-7" || e.Reason != "search latency" {
		t.Errorf("open entry = %+v", e)
	}
}

func TestRolloutWithValve(t *testing.T) {
	s := boot(t)
	s.do(t, req{method: "POST", path: "/api/v1/environments/prod/flags", token: s.admin, body: operationalFlag("search.suggest")}).must(t, http.StatusCreated, nil)
	s.do(t, req{method: "PUT", path: valvePath("prod", "search.suggest"), token: s.writer, body: `{"variant":"off"}`, header: ifMatch(1)}).must(t, http.StatusOK, nil)
	s.create(t, "prod", "checkout")
	body := strings.Replace(plan, `"treatment"`, `"onTrip":"openValve","valve":{"flag":"search.suggest"},"treatment"`, 1)
	var st statusJSON
	s.post(t, rolloutPath("prod", "checkout"), s.writer, body, nil).must(t, http.StatusCreated, &st)
	if st.Rollout.Plan.Valve == nil || st.Rollout.Plan.Valve.Flag != "search.suggest" || st.Rollout.Plan.OnTrip != events.OnTripOpenValve {
		t.Fatalf("plan = %+v", st.Rollout.Plan)
	}
}

func FuzzRolloutPlanBody(f *testing.F) {
	for _, seed := range []string{
		plan,
		`{"treatment":"on","control":"off"}`,
		`{"treatment":"on","control":"off","stages":[{"percent":1e999}]}`,
		`{"treatment":"on","control":"off","stages":[{"percent":50.123}],"tick":"1ns"}`,
		`{"stages":[{"percent":"NaN","minHold":"-1h"}],"alpha":2,"r0":-1,"rMax":"x"}`,
		`{"onTrip":"openValve","valve":{"flag":"a..b"}}`,
		`{"actor":"mallory"}`, `{"source":{"url":"javascript:alert(1)"}}`,
		`null`, `[]`, `"x"`, `{`, ``, `{}{}`, "\xff\xfe",
	} {
		f.Add([]byte(seed))
	}
	s := boot(f, func(c *api.Config) { c.MaxBodyBytes = 4096 })
	s.create(f, "fuzz", "target")
	f.Fuzz(func(t *testing.T, body []byte) {
		// A created rollout stays (it is not active): each input is judged on its own.
		fuzzBody(t, s, "POST", rolloutPath("fuzz", "target"), "application/json", nil, body)
	})
}
