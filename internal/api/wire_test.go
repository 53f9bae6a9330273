package api_test

import (
	"bytes"
	"crypto/ed25519"
	"flag"
	"fmt"
	"os"
	"regexp"
	"testing"

	"github.com/interlock-dev/interlock/events"
	"github.com/interlock-dev/interlock/internal/api"
	"github.com/interlock-dev/interlock/projections"
)

var update = flag.Bool("update", false, "rewrite the golden files under testdata")

// Volatile parts of a response, replaced before it is compared with the recorded one: times,
// ids and tokens differ from one run to the next.
var volatile = []struct {
	re   *regexp.Regexp
	with string
}{
	{regexp.MustCompile(`\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)`), "<time>"},
	{regexp.MustCompile(`[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}`), "<uuid>"},
	{regexp.MustCompile(`ilk_[A-Za-z0-9_-]+`), "<token>"},
}

// TestWireGolden drives one session through every route that answers JSON and compares each
// answer, byte for byte but for times, ids and tokens, with testdata/wire.golden: the API's JSON
// must not change when its types move or are renamed. Rewrite the file with -update only for a
// change of the wire that is meant, and say so in the commit.
func TestWireGolden(t *testing.T) {
	key := ed25519.NewKeyFromSeed(bytes.Repeat([]byte{7}, ed25519.SeedSize))
	signer, err := events.NewSigner(key)
	if err != nil {
		t.Fatal(err)
	}
	tr := tracker(t)
	var s *system
	s = bootStore(t, []events.Option{events.WithSigner(signer)}, withTokens, func(c *api.Config) {
		c.Presence = tr
		c.Chains = c.Reader.(api.Chains)
		c.Integrity = lateIntegrity{&s}
		c.Guard = liveFunc(func(env, key string) (any, bool) {
			return map[string]any{"state": "HEALTHY", "metrics": []any{map[string]any{"name": "errors", "e": 0.5}}}, env == "prod"
		})
	})

	flags, segs := "/api/v1/environments/prod/flags", "/api/v1/environments/prod/segments"
	flag, seg := flags+"/checkout", segs+"/beta-testers"
	valve := flags + "/search.suggest/valve"
	steps := []struct {
		name string
		r    req
	}{
		{"healthz", req{method: "GET", path: "/healthz"}},
		{"readyz", req{method: "GET", path: "/readyz"}},
		{"environments, none", req{method: "GET", path: "/api/v1/environments"}},
		{"create flag", req{method: "POST", path: flags, token: s.admin, body: boolFlag("checkout")}},
		{"create flag again", req{method: "POST", path: flags, token: s.admin, body: boolFlag("checkout")}},
		{"create flag invalid", req{method: "POST", path: flags, token: s.admin, body: `{"key":"x","kind":"nope"}`}},
		{"get flag", req{method: "GET", path: flag}},
		{"get missing flag", req{method: "GET", path: flags + "/nope"}},
		{"patch flag", req{method: "PATCH", path: flag, token: s.writer, body: `{"description":"second","tags":["a","b"]}`,
			header: map[string]string{"Content-Type": "application/merge-patch+json", "If-Match": `"1"`}}},
		{"patch flag stale", req{method: "PATCH", path: flag, token: s.writer, body: `{"description":"third"}`,
			header: map[string]string{"Content-Type": "application/merge-patch+json", "If-Match": `"1"`}}},
		{"patch without If-Match", req{method: "PATCH", path: flag, token: s.writer, body: `{"description":"third"}`,
			header: map[string]string{"Content-Type": "application/merge-patch+json"}}},
		{"kill", req{method: "POST", path: flag + "/kill", token: s.oncall, body: `{"reason":"incident 42"}`}},
		{"enable", req{method: "POST", path: flag + "/enable", token: s.writer, body: `{"reason":"fixed","version":3}`}},
		{"archive stale", req{method: "POST", path: flag + "/archive", token: s.writer, body: `{"version":1}`}},
		{"restore", req{method: "POST", path: flag + "/restore", token: s.writer, body: `{"toVersion":1,"reason":"back"}`}},
		{"list flags", req{method: "GET", path: flags}},
		{"flag as of version 2", req{method: "GET", path: flag + "?version=2"}},
		{"history", req{method: "GET", path: flag + "/history"}},
		{"environments", req{method: "GET", path: "/api/v1/environments"}},
		{"reader may not write", req{method: "POST", path: flag + "/kill", token: s.reader, body: `{"reason":"x"}`}},
		{"no token", req{method: "GET", path: flags, anonymous: true}},
		{"no route", req{method: "GET", path: "/api/v1/nothing"}},
		{"method not allowed", req{method: "DELETE", path: flags, token: s.admin}},

		{"create segment", req{method: "POST", path: segs, token: s.admin, body: betaSegment}},
		{"get segment", req{method: "GET", path: seg}},
		{"patch segment", req{method: "PATCH", path: seg, token: s.writer, body: `{"description":"beta 2"}`,
			header: map[string]string{"Content-Type": "application/merge-patch+json", "If-Match": `"1"`}}},
		{"list segments", req{method: "GET", path: segs}},
		{"segment history", req{method: "GET", path: seg + "/history"}},
		{"archive segment", req{method: "POST", path: seg + "/archive", token: s.writer, body: `{"reason":"done"}`}},
		{"unarchive segment", req{method: "POST", path: seg + "/unarchive", token: s.writer, body: `{}`}},

		{"no rollout", req{method: "GET", path: flag + "/rollout"}},
		{"create rollout", req{method: "POST", path: flag + "/rollout", token: s.writer, body: plan}},
		{"get rollout", req{method: "GET", path: flag + "/rollout"}},
		{"start rollout", req{method: "POST", path: flag + "/rollout/start", token: s.writer, header: map[string]string{"If-Match": `"6"`}}},
		{"advance rollout", req{method: "POST", path: flag + "/rollout/advance", token: s.writer, body: `{"reason":"looks good","from":0}`,
			header: map[string]string{"If-Match": `"7"`}}},
		{"pause rollout", req{method: "POST", path: flag + "/rollout/pause", token: s.writer, body: `{"reason":"lunch"}`,
			header: map[string]string{"If-Match": `"8"`}}},
		{"abort rollout", req{method: "POST", path: flag + "/rollout/abort", token: s.oncall, body: `{"reason":"stop"}`,
			header: map[string]string{"If-Match": `"9"`}}},

		{"create valve flag", req{method: "POST", path: flags, token: s.admin, body: operationalFlag("search.suggest")}},
		{"not a valve", req{method: "GET", path: valve}},
		{"configure valve", req{method: "PUT", path: valve, token: s.writer, body: `{"variant":"off","segment":"beta-testers"}`,
			header: map[string]string{"If-Match": `"1"`}}},
		{"open valve", req{method: "POST", path: valve + "/open", token: s.oncall, body: `{"reason":"load","for":"30m"}`}},
		{"get valve", req{method: "GET", path: valve}},
		{"close valve", req{method: "POST", path: valve + "/close", token: s.oncall, body: `{"reason":"calm"}`}},

		{"audit", req{method: "GET", path: "/api/v1/audit?environment=prod&limit=5"}},
		{"audit page 2", req{method: "GET", path: "/api/v1/audit?environment=prod&limit=5&after=5"}},
		{"audit bad limit", req{method: "GET", path: "/api/v1/audit?limit=x"}},
		{"verify", req{method: "GET", path: "/api/v1/audit/verify?environment=prod"}},
		{"integrity", req{method: "GET", path: "/api/v1/integrity"}},
		{"acknowledge nothing", req{method: "POST", path: "/api/v1/integrity/acknowledgements", token: s.admin, body: `{"reason":"drill"}`}},
		{"acknowledge through 3", req{method: "POST", path: "/api/v1/integrity/acknowledgements", token: s.admin, body: `{"through":3,"reason":"drill"}`}},
		{"integrity acknowledged", req{method: "GET", path: "/api/v1/integrity"}},
		{"signing keys", req{method: "GET", path: "/api/v1/signing-keys"}},
		{"readyz with integrity", req{method: "GET", path: "/readyz"}},

		{"heartbeat", req{}},
		{"subscribers", req{method: "GET", path: "/api/v1/environments/prod/subscribers"}},
		{"propagation", req{method: "GET", path: flag + "/propagation"}},
		{"propagation of a sequence", req{method: "GET", path: flag + "/propagation?sequence=1"}},

		{"create token", req{method: "POST", path: "/api/v1/tokens", token: s.admin, body: `{"name":"ci","role":"writer","environment":"prod","expiresIn":"30d"}`}},
		{"create token bad role", req{method: "POST", path: "/api/v1/tokens", token: s.admin, body: `{"name":"ci2","role":"king"}`}},
		{"list tokens", req{method: "GET", path: "/api/v1/tokens", token: s.admin}},
		{"revoke token", req{method: "DELETE", path: "/api/v1/tokens/ci", token: s.admin}},
		{"revoke missing token", req{method: "DELETE", path: "/api/v1/tokens/nobody", token: s.admin}},
	}
	var got bytes.Buffer
	for _, st := range steps {
		if st.name == "heartbeat" {
			f, _ := s.catalog.Flag("prod", "checkout")
			tr.Record(heartbeat("svc-a", "checkout-api", "prod", f.Sequence))
			tr.Record(heartbeat("svc-b", "billing-worker", "prod", 1))
			continue
		}
		resp := s.do(t, st.r)
		body := resp.body
		for _, v := range volatile {
			body = v.re.ReplaceAll(body, []byte(v.with))
		}
		fmt.Fprintf(&got, "### %s\n%s %s\n%d %s\n%s\n", st.name, st.r.method, st.r.path, resp.status, resp.header.Get("Content-Type"), body)
	}
	const golden = "testdata/wire.golden"
	if *update {
		if err := os.MkdirAll("testdata", 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(golden, got.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatalf("%v (run with -update to record it)", err)
	}
	if !bytes.Equal(got.Bytes(), want) {
		gotLines, wantLines := bytes.Split(got.Bytes(), []byte("\n")), bytes.Split(want, []byte("\n"))
		for i := 0; i < max(len(gotLines), len(wantLines)); i++ {
			var g, w []byte
			if i < len(gotLines) {
				g = gotLines[i]
			}
			if i < len(wantLines) {
				w = wantLines[i]
			}
			if !bytes.Equal(g, w) {
				t.Fatalf("%s differs at line %d:\n got  %s\n want %s", golden, i+1, g, w)
			}
		}
	}
}

// lateIntegrity is the integrity record of the runner of a system still being booted.
type lateIntegrity struct{ s **system }

func (l lateIntegrity) Problems() ([]projections.Problem, uint64) {
	return (*l.s).runner.Integrity().Problems()
}

func (l lateIntegrity) Unacknowledged() ([]projections.Problem, uint64) {
	return (*l.s).runner.Integrity().Unacknowledged()
}

func (l lateIntegrity) Acknowledged() projections.Acknowledgement {
	return (*l.s).runner.Integrity().Acknowledged()
}
