package cli

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/interlock-dev/interlock/events"
	"github.com/interlock-dev/interlock/projections"
)

// fixtures are the canned server documents the command tests answer with.
type fixtures struct {
	flag, killed, kill, archived, created, config projections.Flag
	history                                       []projections.Entry
}

func newFixtures() fixtures {
	var fx fixtures
	fx.flag = sampleFlag()

	fx.killed = sampleFlag()
	fx.killed.Enabled = false
	fx.killed.Version = 8
	fx.killed.UpdatedBy = "bob"
	fx.killed.UpdatedAt = time.Date(2026, 3, 4, 11, 59, 0, 0, time.UTC)

	fx.kill = projections.Flag{
		Key: "payments.fallback", Environment: "production",
		FlagConfig: events.FlagConfig{
			Kind:           events.KindKillSwitch,
			Variants:       map[string]json.RawMessage{"on": json.RawMessage("true"), "off": json.RawMessage("false")},
			DefaultVariant: "on", OffVariant: "off",
		},
		Version: 2, CreatedAt: time.Date(2025, 12, 1, 8, 0, 0, 0, time.UTC), UpdatedAt: time.Date(2026, 2, 1, 8, 0, 0, 0, time.UTC), UpdatedBy: "carol",
	}
	fx.archived = fx.kill
	fx.archived.Key = "old-banner"
	fx.archived.Archived = true
	fx.archived.Kind = events.KindRelease

	fx.created = projections.Flag{
		Key: "new-flag", Environment: "production",
		FlagConfig: events.FlagConfig{
			Description: "Shiny", Tags: []string{"a", "b"}, Kind: events.KindRelease,
			Variants:       map[string]json.RawMessage{"on": json.RawMessage("true"), "off": json.RawMessage("false")},
			DefaultVariant: "on", OffVariant: "off",
		},
		Version: 1, CreatedAt: testNow, UpdatedAt: testNow, UpdatedBy: "dave",
	}

	fx.config = projections.Flag{
		Key: "cache.ttl", Environment: "production",
		FlagConfig: events.FlagConfig{
			Kind:           events.KindConfig,
			Variants:       map[string]json.RawMessage{"short": json.RawMessage("30"), "long": json.RawMessage("300"), "tuned": json.RawMessage(`{"ttl": 90, "jitter": 0.1}`)},
			DefaultVariant: "short", OffVariant: "short", Enabled: true,
			DefaultServe: &events.Serve{Split: map[string]int{"short": 1, "long": 2}},
			Rules: []events.Rule{{
				Name: "eu customers",
				Conditions: []events.Condition{
					{Attribute: "region", Operator: "in", Values: []any{"eu"}},
					{Attribute: "account", Operator: "notIn", Values: []any{"a1", "a2", "a3", "a4", "a5", "a6", "a7"}},
					{Attribute: "requests", Operator: "gte", Values: []any{100.0}},
				},
				Serve: events.Serve{Variant: "long"},
			}},
		},
		Version: 4, CreatedAt: testNow.Add(-time.Hour), UpdatedAt: testNow, UpdatedBy: "guard",
	}

	t0 := time.Date(2026, 1, 2, 15, 4, 5, 0, time.UTC)
	fx.history = []projections.Entry{
		{Sequence: 10, Environment: "production", Key: "checkout-v2", Version: 1, ID: "e1", Type: events.TypeFlagCreated, Time: t0, Actor: "alice", Reason: "launch plan",
			Changes: []projections.Change{{Path: "enabled", After: json.RawMessage("false")}, {Path: "kind", After: json.RawMessage(`"release"`)}}},
		{Sequence: 15, Environment: "production", Key: "checkout-v2", Version: 2, ID: "e2", Type: events.TypeFlagUpdated, Time: t0.Add(time.Hour), Actor: "alice", Reason: "tab\tand\nnewline \x1b[31mred",
			Changes: []projections.Change{{Path: "description", Before: json.RawMessage(`"old"`), After: json.RawMessage(`"New checkout flow"`)}}},
		{Sequence: 31, Environment: "production", Key: "checkout-v2", Version: 3, ID: "e3", Type: events.TypeFlagKilled, Time: t0.Add(2 * time.Hour), Actor: "guard", Reason: strings.Repeat("very long reason ", 10),
			Changes: []projections.Change{{Path: "enabled", Before: json.RawMessage("true"), After: json.RawMessage("false")}}},
		{Sequence: 40, Environment: "production", Key: "checkout-v2", Version: 4, ID: "e4", Type: "io.interlock.flag.renamed.v9", Time: t0.Add(3 * time.Hour), Actor: "bob", Changes: []projections.Change{}},
	}
	return fx
}

type cmdCase struct {
	name    string
	args    []string
	stdin   string
	replies []reply
	want    []wantReq
	code    int
	// golden names the file stdout must equal; stdout, when golden is empty, is the exact stdout.
	golden string
	stdout string
	// stderr is a substring stderr must hold; empty stderr is required when it is empty.
	stderr string
}

func runCases(t *testing.T, cases []cmdCase) {
	t.Helper()
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			srv := newFakeServer(t, replies(t, tc.replies...))
			res := runCLI(t, srv, tc.stdin, tc.args...)
			if res.code != tc.code {
				t.Errorf("exit code %d, want %d; stderr: %s", res.code, tc.code, res.stderr)
			}
			checkRequests(t, srv.requests(), tc.want)
			switch {
			case tc.golden != "":
				golden(t, tc.golden, res.stdout)
			case res.stdout != tc.stdout:
				t.Errorf("stdout:\n%s\nwant:\n%s", res.stdout, tc.stdout)
			}
			if tc.stderr == "" && res.stderr != "" {
				t.Errorf("stderr: %s, want nothing", res.stderr)
			}
			if !strings.Contains(res.stderr, tc.stderr) {
				t.Errorf("stderr: %s, want it to hold %q", res.stderr, tc.stderr)
			}
		})
	}
}

const flagPathTest = "/api/v1/environments/production/flags/checkout-v2"

func TestFlagsReadCommands(t *testing.T) {
	fx := newFixtures()
	list := mustJSON(t, map[string]any{"flags": []projections.Flag{fx.flag, fx.config, fx.kill, fx.archived}})
	runCases(t, []cmdCase{
		{
			name:    "list with flags after the environment",
			args:    []string{"flags", "list", "production", "--archived", "--at", "5m"},
			replies: []reply{{status: 200, body: list}},
			want:    []wantReq{{method: "GET", path: "/api/v1/environments/production/flags", query: "archived=true&at=2026-03-04T11%3A55%3A00Z", header: map[string]string{"Accept": "application/json"}}},
			golden:  "flags_list.golden",
		},
		{
			name:    "list of an empty environment",
			args:    []string{"flags", "list", "staging"},
			replies: []reply{{status: 200, body: `{"flags":[]}`}},
			want:    []wantReq{{method: "GET", path: "/api/v1/environments/staging/flags"}},
			stdout:  "no flags in staging\n",
		},
		{
			name:    "get",
			args:    []string{"flags", "get", "production/checkout-v2"},
			replies: []reply{flagReply(t, 200, fx.flag)},
			want:    []wantReq{{method: "GET", path: flagPathTest}},
			golden:  "flags_get.golden",
		},
		{
			name:    "get a config flag with a split default",
			args:    []string{"flags", "get", "production/cache.ttl"},
			replies: []reply{flagReply(t, 200, fx.config)},
			want:    []wantReq{{method: "GET", path: "/api/v1/environments/production/flags/cache.ttl"}},
			golden:  "flags_get_config.golden",
		},
		{
			name:    "get an archived flag",
			args:    []string{"flags", "get", "production/old-banner"},
			replies: []reply{flagReply(t, 200, fx.archived)},
			want:    []wantReq{{method: "GET", path: "/api/v1/environments/production/flags/old-banner"}},
			golden:  "flags_get_archived.golden",
		},
		{
			name:    "get a version, flag first",
			args:    []string{"flags", "get", "--version", "3", "production/checkout-v2"},
			replies: []reply{flagReply(t, 200, fx.flag)},
			want:    []wantReq{{method: "GET", path: flagPathTest, query: "version=3"}},
			golden:  "flags_get.golden",
		},
		{
			name:    "get at a time with an offset",
			args:    []string{"flags", "get", "production/checkout-v2", "--at=2026-03-01T10:00:00+01:00"},
			replies: []reply{flagReply(t, 200, fx.flag)},
			want:    []wantReq{{method: "GET", path: flagPathTest, query: "at=2026-03-01T09%3A00%3A00Z"}},
			golden:  "flags_get.golden",
		},
		{
			name:    "get at a relative time in days",
			args:    []string{"flags", "get", "production/checkout-v2", "--at", "1d1h30m"},
			replies: []reply{flagReply(t, 200, fx.flag)},
			want:    []wantReq{{method: "GET", path: flagPathTest, query: "at=2026-03-03T10%3A30%3A00Z"}},
			golden:  "flags_get.golden",
		},
		{
			name:    "history",
			args:    []string{"flags", "history", "production/checkout-v2"},
			replies: []reply{{status: 200, body: mustJSON(t, map[string]any{"entries": fx.history})}},
			want:    []wantReq{{method: "GET", path: flagPathTest + "/history"}},
			golden:  "flags_history.golden",
		},
		{
			name:    "environments",
			args:    []string{"environments"},
			replies: []reply{{status: 200, body: `{"environments":["production","staging",{"name":"dev"}]}`}},
			want:    []wantReq{{method: "GET", path: "/api/v1/environments"}},
			stdout:  "production\nstaging\ndev\n",
		},
	})
}

func TestFlagsDiff(t *testing.T) {
	fx := newFixtures()
	v3 := sampleFlag()
	v3.Version = 3
	v3.Description = ""
	v3.Variants = map[string]json.RawMessage{"on": json.RawMessage("true"), "off": json.RawMessage("false"), "legacy": json.RawMessage("false")}
	v3.Rules = v3.Rules[:1]
	runCases(t, []cmdCase{
		{
			name:    "two versions",
			args:    []string{"flags", "diff", "production/checkout-v2", "3", "8"},
			replies: []reply{flagReply(t, 200, v3), flagReply(t, 200, fx.killed)},
			want: []wantReq{
				{method: "GET", path: flagPathTest, query: "version=3"},
				{method: "GET", path: flagPathTest, query: "version=8"},
			},
			golden: "flags_diff.golden",
		},
		{
			name:    "against the current version",
			args:    []string{"flags", "diff", "production/checkout-v2", "7"},
			replies: []reply{flagReply(t, 200, fx.flag), flagReply(t, 200, fx.flag)},
			want: []wantReq{
				{method: "GET", path: flagPathTest, query: "version=7"},
				{method: "GET", path: flagPathTest},
			},
			stdout: "production/checkout-v2: version 7 → 7 (current)\nno differences\n",
		},
		{
			name:    "a version that does not exist",
			args:    []string{"flags", "diff", "production/checkout-v2", "99"},
			replies: []reply{errReply(404, "not_found", "production/checkout-v2 has no version 99")},
			want:    []wantReq{{method: "GET", path: flagPathTest, query: "version=99"}},
			code:    ExitNotFound,
			stderr:  "interlock: production/checkout-v2 has no version 99\n",
		},
	})
}

func TestFlagsCreate(t *testing.T) {
	fx := newFixtures()
	dir := t.TempDir()
	doc := filepath.Join(dir, "flag.json")
	if err := os.WriteFile(doc, []byte(`{"kind":"config","variants":{"a":1},"defaultVariant":"a","offVariant":"a"}`), 0o600); err != nil {
		t.Fatal(err)
	}
	copied := mustJSON(t, fx.flag) // a whole flag as `flags get -o json` prints it
	runCases(t, []cmdCase{
		{
			name:    "a boolean flag",
			args:    []string{"flags", "create", "production/new-flag", "--description", "Shiny", "--tag", "a", "--tag=b", "--reason", "ticket 42 – café"},
			replies: []reply{flagReply(t, 201, fx.created)},
			want: []wantReq{{
				method: "POST", path: "/api/v1/environments/production/flags",
				header: map[string]string{"Content-Type": "application/json", "X-Interlock-Reason": "ticket 42 – café"},
				body:   `{"key":"new-flag","description":"Shiny","tags":["a","b"],"kind":"release","variants":{"on":true,"off":false},"defaultVariant":"on","offVariant":"off","enabled":false}`,
			}},
			golden: "flags_create.golden",
		},
		{
			name:    "a config flag with variants, enabled",
			args:    []string{"flags", "create", "--kind", "config", "production/cache.ttl", "--variant", "short=30", "--variant", "tuned={ \"ttl\": 90 }", "--default", "tuned", "--off", "short", "--enabled", "--owner", "sre"},
			replies: []reply{flagReply(t, 201, fx.config)},
			want: []wantReq{{
				method: "POST", path: "/api/v1/environments/production/flags", noHeader: []string{"X-Interlock-Reason"},
				body: `{"key":"cache.ttl","owner":"sre","kind":"config","variants":{"short":30,"tuned":{"ttl":90}},"defaultVariant":"tuned","offVariant":"short","enabled":true}`,
			}},
			golden: "flags_create_config.golden",
		},
		{
			name:    "from standard input, copying a flag under another name",
			args:    []string{"flags", "create", "staging/checkout-copy", "--file", "-", "--reason", "copy"},
			stdin:   copied,
			replies: []reply{flagReply(t, 201, fx.flag)},
			want: []wantReq{{
				method: "POST", path: "/api/v1/environments/staging/flags",
				header: map[string]string{"X-Interlock-Reason": "copy"},
				body: `{"key":"checkout-copy","description":"New checkout flow","owner":"team-payments","tags":["checkout","web"],"kind":"release",
					"variants":{"off":false,"on":true},"defaultVariant":"on","offVariant":"off","enabled":true,
					"rules":[{"name":"beta","conditions":[{"attribute":"plan","operator":"in","values":["pro","team"]}],"serve":{"variant":"on"}},
					{"conditions":[{"attribute":"country","operator":"eq","values":["NL"]},{"attribute":"beta","operator":"exists"}],"serve":{"split":{"off":75,"on":25},"bucketBy":"accountId"}}]}`,
			}},
			golden: "flags_create_copy.golden",
		},
		{
			name:    "from a file",
			args:    []string{"flags", "create", "production/from-file", "--file", doc, "-o", "json"},
			replies: []reply{flagReply(t, 201, fx.config)},
			want: []wantReq{{
				method: "POST", path: "/api/v1/environments/production/flags",
				body: `{"key":"from-file","kind":"config","variants":{"a":1},"defaultVariant":"a","offVariant":"a"}`,
			}},
			stdout: indent(t, mustJSON(t, fx.config)),
		},
		{
			name:    "that exists already",
			args:    []string{"flags", "create", "production/checkout-v2"},
			replies: []reply{errReply(409, "already_exists", "production/checkout-v2 exists already")},
			want:    []wantReq{{method: "POST", path: "/api/v1/environments/production/flags", body: `{"key":"checkout-v2","kind":"release","variants":{"on":true,"off":false},"defaultVariant":"on","offVariant":"off","enabled":false}`}},
			code:    ExitConflict,
			stderr:  "interlock: production/checkout-v2 exists already\n",
		},
		{
			name:    "that the server finds invalid",
			args:    []string{"flags", "create", "production/x", "--variant", "a=1", "--variant", "b=true", "--default", "a", "--off", "b"},
			replies: []reply{errReply(400, "invalid_argument", "variants.b: is a boolean but other variants are numbers")},
			want:    []wantReq{{method: "POST", path: "/api/v1/environments/production/flags", body: `{"key":"x","kind":"release","variants":{"a":1,"b":true},"defaultVariant":"a","offVariant":"b","enabled":false}`}},
			code:    ExitInvalid,
			stderr:  "interlock: variants.b: is a boolean but other variants are numbers\n",
		},
	})
}

func TestFlagsSet(t *testing.T) {
	fx := newFixtures()
	changed := sampleFlag()
	changed.Version = 8
	changed.Description = "Faster checkout"
	changed.Variants = map[string]json.RawMessage{"on": json.RawMessage("true"), "off": json.RawMessage("false")}
	dir := t.TempDir()
	patchFile := filepath.Join(dir, "patch.json")
	if err := os.WriteFile(patchFile, []byte(`{"rules": null}`), 0o600); err != nil {
		t.Fatal(err)
	}
	runCases(t, []cmdCase{
		{
			name:    "reads the version first and sends it as If-Match",
			args:    []string{"flags", "set", "production/checkout-v2", "--description", "Faster checkout", "--variant", `beta="b"`, "--reason", "rename"},
			replies: []reply{flagReply(t, 200, fx.flag), flagReply(t, 200, changed)},
			want: []wantReq{
				{method: "GET", path: flagPathTest},
				{
					method: "PATCH", path: flagPathTest,
					header: map[string]string{"If-Match": `"7"`, "Content-Type": "application/merge-patch+json", "X-Interlock-Reason": "rename"},
					body:   `{"description":"Faster checkout","variants":{"beta":"b"}}`,
				},
			},
			golden: "flags_set.golden",
		},
		{
			name: "a changed flag in between is a conflict",
			args: []string{"flags", "set", "production/checkout-v2", "--owner", ""},
			replies: []reply{
				{status: 200, header: map[string]string{"ETag": `"7"`}, body: mustJSON(t, fx.flag)},
				errReply(412, "precondition_failed", "production/checkout-v2 is at version 8, not 7"),
			},
			want: []wantReq{
				{method: "GET", path: flagPathTest},
				{method: "PATCH", path: flagPathTest, header: map[string]string{"If-Match": `"7"`}, noHeader: []string{"X-Interlock-Reason"}, body: `{"owner":""}`},
			},
			code:   ExitConflict,
			stderr: "interlock: production/checkout-v2 is at version 8, not 7\n",
		},
		{
			name:    "without an ETag uses the version read",
			args:    []string{"flags", "set", "production/checkout-v2", "--tag", "x"},
			replies: []reply{{status: 200, body: mustJSON(t, fx.flag)}, flagReply(t, 200, changed)},
			want: []wantReq{
				{method: "GET", path: flagPathTest},
				{method: "PATCH", path: flagPathTest, header: map[string]string{"If-Match": `"7"`}, body: `{"tags":["x"]}`},
			},
			golden: "flags_set.golden",
		},
		{
			name:    "with --if-version and --patch sends no read",
			args:    []string{"flags", "set", "production/checkout-v2", "--if-version", "7", "--patch", `{"rules":[],"variants":{"x":1}}`, "--variant", "y=2", "--variant", "off=null", "--default", "x", "--off", "y"},
			replies: []reply{flagReply(t, 200, changed)},
			want: []wantReq{{
				method: "PATCH", path: flagPathTest, header: map[string]string{"If-Match": `"7"`},
				body: `{"rules":[],"variants":{"x":1,"y":2,"off":null},"defaultVariant":"x","offVariant":"y"}`,
			}},
			golden: "flags_set.golden",
		},
		{
			name:    "a patch from a file",
			args:    []string{"flags", "set", "production/checkout-v2", "--patch", "@" + patchFile, "--if-version", "7", "-o", "json"},
			replies: []reply{flagReply(t, 200, changed)},
			want:    []wantReq{{method: "PATCH", path: flagPathTest, header: map[string]string{"If-Match": `"7"`}, body: `{"rules":null}`}},
			stdout:  indent(t, mustJSON(t, changed)),
		},
		{
			name:    "a patch from standard input",
			args:    []string{"flags", "set", "production/checkout-v2", "--patch", "@-", "--if-version", "7", "-o", "json"},
			stdin:   `{"kind":"operational"}`,
			replies: []reply{flagReply(t, 200, changed)},
			want:    []wantReq{{method: "PATCH", path: flagPathTest, header: map[string]string{"If-Match": `"7"`}, body: `{"kind":"operational"}`}},
			stdout:  indent(t, mustJSON(t, changed)),
		},
		{
			name:    "of a flag that does not exist",
			args:    []string{"flags", "set", "production/nope", "--owner", "me"},
			replies: []reply{errReply(404, "not_found", "no flag production/nope")},
			want:    []wantReq{{method: "GET", path: "/api/v1/environments/production/flags/nope"}},
			code:    ExitNotFound,
			stderr:  "interlock: no flag production/nope\n",
		},
	})
}

func TestFlagsStateCommands(t *testing.T) {
	fx := newFixtures()
	enabled := fx.flag
	enabled.Version = 9
	archived := fx.killed
	archived.Archived = true
	archived.Version = 10
	runCases(t, []cmdCase{
		{
			name:    "kill, the on-call shortcut",
			args:    []string{"kill", "production/checkout-v2", "--reason", "errors up 5x"},
			replies: []reply{flagReply(t, 200, fx.killed)},
			want: []wantReq{{
				method: "POST", path: flagPathTest + "/kill",
				header: map[string]string{"Content-Type": "application/json"}, body: `{"reason":"errors up 5x"}`,
			}},
			stdout: "killed production/checkout-v2: off, serving \"off\" (false) to everyone (version 8)\n",
		},
		{
			name:    "flags kill of a flag that is already off succeeds",
			args:    []string{"flags", "kill", "--reason=again", "production/checkout-v2"},
			replies: []reply{flagReply(t, 200, fx.killed)},
			want:    []wantReq{{method: "POST", path: flagPathTest + "/kill", body: `{"reason":"again"}`}},
			stdout:  "killed production/checkout-v2: off, serving \"off\" (false) to everyone (version 8)\n",
		},
		{
			name:    "enable at a version",
			args:    []string{"flags", "enable", "production/checkout-v2", "--reason", "fixed", "--if-version", "8"},
			replies: []reply{flagReply(t, 200, enabled)},
			want:    []wantReq{{method: "POST", path: flagPathTest + "/enable", header: map[string]string{"Content-Type": "application/json"}, body: `{"reason":"fixed","version":8}`}},
			stdout:  "enabled production/checkout-v2: on, serving its 2 rules, then \"on\" (true) (version 9)\n",
		},
		{
			name:    "archive",
			args:    []string{"flags", "archive", "production/checkout-v2"},
			replies: []reply{flagReply(t, 200, archived)},
			want:    []wantReq{{method: "POST", path: flagPathTest + "/archive", body: `{}`}},
			stdout:  "archived production/checkout-v2: off, serving \"off\" (false) to everyone; archived (version 10)\n",
		},
		{
			name:    "unarchive",
			args:    []string{"flags", "unarchive", "production/checkout-v2", "--reason", "back"},
			replies: []reply{flagReply(t, 200, fx.killed)},
			want:    []wantReq{{method: "POST", path: flagPathTest + "/unarchive", body: `{"reason":"back"}`}},
			stdout:  "unarchived production/checkout-v2: off, serving \"off\" (false) to everyone (version 8)\n",
		},
		{
			name:    "archive of an archived flag",
			args:    []string{"flags", "archive", "production/checkout-v2"},
			replies: []reply{errReply(409, "archived", "production/checkout-v2 is archived")},
			want:    []wantReq{{method: "POST", path: flagPathTest + "/archive", body: `{}`}},
			code:    ExitConflict,
			stderr:  "interlock: production/checkout-v2 is archived\n",
		},
		{
			name:    "restore",
			args:    []string{"flags", "restore", "production/checkout-v2", "--to-version", "3", "--if-version", "9", "--reason", "undo"},
			replies: []reply{flagReply(t, 200, enabled)},
			want:    []wantReq{{method: "POST", path: flagPathTest + "/restore", body: `{"toVersion":3,"reason":"undo","version":9}`}},
			stdout:  "restored the configuration of version 3 to production/checkout-v2: on, serving its 2 rules, then \"on\" (true) (version 9)\n",
		},
	})
}

func TestAudit(t *testing.T) {
	fx := newFixtures()
	page := func(next uint64, entries ...projections.Entry) string {
		return mustJSON(t, projections.AuditPage{Events: entries, Next: next})
	}
	runCases(t, []cmdCase{
		{
			name: "every filter",
			args: []string{"audit", "--env", "production", "--flag", "checkout-v2", "--actor", "alice", "--type", "killed", "--type", "io.interlock.flag.enabled.v1",
				"--since", "1h", "--until", "2026-03-04T11:30:00Z", "--limit", "2"},
			replies: []reply{{status: 200, body: page(15, fx.history[:2]...)}},
			want: []wantReq{{method: "GET", path: "/api/v1/audit",
				query: "actor=alice&environment=production&flag=checkout-v2&limit=2&since=2026-03-04T11%3A00%3A00Z&type=io.interlock.flag.killed.v1&type=io.interlock.flag.enabled.v1&until=2026-03-04T11%3A30%3A00Z"}},
			golden: "audit_page.golden",
		},
		{
			name:    "every page",
			args:    []string{"audit", "--flag", "production/checkout-v2", "--all", "--limit", "2"},
			replies: []reply{{status: 200, body: page(15, fx.history[:2]...)}, {status: 200, body: page(0, fx.history[2:]...)}},
			want: []wantReq{
				{method: "GET", path: "/api/v1/audit", query: "environment=production&flag=checkout-v2&limit=2"},
				{method: "GET", path: "/api/v1/audit", query: "after=15&environment=production&flag=checkout-v2&limit=2"},
			},
			golden: "audit_all.golden",
		},
		{
			name:    "across flags",
			args:    []string{"audit", "--actor", "alice"},
			replies: []reply{{status: 200, body: page(0, fx.history[:2]...)}},
			want:    []wantReq{{method: "GET", path: "/api/v1/audit", query: "actor=alice"}},
			golden:  "audit_named.golden",
		},
		{
			name:    "from a cursor, nothing left",
			args:    []string{"audit", "--after", "40"},
			replies: []reply{{status: 200, body: `{"events":[]}`}},
			want:    []wantReq{{method: "GET", path: "/api/v1/audit", query: "after=40"}},
			stdout:  "no events\n",
		},
		{
			name:    "a cursor that goes back is an error, not a loop",
			args:    []string{"audit", "--all"},
			replies: []reply{{status: 200, body: page(15, fx.history[:1]...)}, {status: 200, body: page(15, fx.history[:1]...)}},
			want: []wantReq{
				{method: "GET", path: "/api/v1/audit"},
				{method: "GET", path: "/api/v1/audit", query: "after=15"},
			},
			code:   ExitError,
			stderr: "interlock: the server's audit cursor went back from 15 to 15\n",
		},
	})
}

// indent is body as -o json prints it.
func indent(t *testing.T, body string) string {
	t.Helper()
	var buf bytes.Buffer
	if err := json.Indent(&buf, []byte(body), "", "  "); err != nil {
		t.Fatal(err)
	}
	return buf.String() + "\n"
}

// TestJSONOutput checks that -o json prints the server's JSON, pretty-printed, and nothing else,
// for every command that prints.
func TestJSONOutput(t *testing.T) {
	fx := newFixtures()
	flagBody := mustJSON(t, fx.flag)
	list := mustJSON(t, map[string]any{"flags": []projections.Flag{fx.flag}})
	history := mustJSON(t, map[string]any{"entries": fx.history})
	audit1 := mustJSON(t, map[string]any{"events": fx.history[:2], "next": 15})
	audit2 := mustJSON(t, map[string]any{"events": fx.history[2:]})
	tests := []struct {
		name    string
		args    []string
		replies []reply
		// passthrough is the server body stdout must be, indented; empty when the CLI composes it.
		passthrough string
	}{
		{"list", []string{"flags", "list", "production"}, []reply{{status: 200, body: list}}, list},
		{"get", []string{"flags", "get", "production/checkout-v2"}, []reply{{status: 200, body: flagBody}}, flagBody},
		{"create", []string{"flags", "create", "production/checkout-v2"}, []reply{{status: 201, body: flagBody}}, flagBody},
		{"set", []string{"flags", "set", "production/checkout-v2", "--owner", "x"}, []reply{{status: 200, body: flagBody}, {status: 200, body: flagBody}}, flagBody},
		{"kill", []string{"kill", "production/checkout-v2", "--reason", "x"}, []reply{{status: 200, body: flagBody}}, flagBody},
		{"enable", []string{"flags", "enable", "production/checkout-v2"}, []reply{{status: 200, body: flagBody}}, flagBody},
		{"restore", []string{"flags", "restore", "production/checkout-v2", "--to-version", "1"}, []reply{{status: 200, body: flagBody}}, flagBody},
		{"history", []string{"flags", "history", "production/checkout-v2"}, []reply{{status: 200, body: history}}, history},
		{"audit", []string{"audit"}, []reply{{status: 200, body: audit1}}, audit1},
		{"audit all", []string{"audit", "--all"}, []reply{{status: 200, body: audit1}, {status: 200, body: audit2}}, ""},
		{"diff", []string{"flags", "diff", "production/checkout-v2", "3"}, []reply{flagReply(t, 200, fx.flag), flagReply(t, 200, fx.killed)}, ""},
		{"environments", []string{"environments"}, []reply{{status: 200, body: `{"environments":["production"]}`}}, `{"environments":["production"]}`},
		{"version", []string{"version"}, nil, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			srv := newFakeServer(t, replies(t, tc.replies...))
			res := runCLI(t, srv, "", append(tc.args, "-o", "json")...)
			if res.code != ExitOK || res.stderr != "" {
				t.Fatalf("exit code %d, stderr %q", res.code, res.stderr)
			}
			onlyJSON(t, res.stdout)
			if tc.passthrough != "" && res.stdout != indent(t, tc.passthrough) {
				t.Errorf("stdout is not the server's JSON:\n%s", res.stdout)
			}
		})
	}

	t.Run("audit all joins the pages", func(t *testing.T) {
		srv := newFakeServer(t, replies(t, reply{status: 200, body: audit1}, reply{status: 200, body: audit2}))
		res := runCLI(t, srv, "", "audit", "--all", "-o", "json")
		var page struct {
			Events []projections.Entry `json:"events"`
			Next   *uint64             `json:"next"`
		}
		if err := json.Unmarshal([]byte(res.stdout), &page); err != nil {
			t.Fatal(err)
		}
		if len(page.Events) != len(fx.history) || page.Next != nil {
			t.Errorf("got %d events and next %v, want %d and no next", len(page.Events), page.Next, len(fx.history))
		}
	})

	t.Run("diff", func(t *testing.T) {
		srv := newFakeServer(t, replies(t, flagReply(t, 200, fx.flag), flagReply(t, 200, fx.killed)))
		res := runCLI(t, srv, "", "flags", "diff", "production/checkout-v2", "7", "-o", "json")
		want := `{"from":7,"to":8,"changes":[{"path":"enabled","before":true,"after":false}]}`
		if !jsonEqual(t, []byte(res.stdout), []byte(want)) {
			t.Errorf("got %s, want %s", res.stdout, want)
		}
	})
}

// TestServerErrors checks the exit code and message of every class of error answer.
func TestServerErrors(t *testing.T) {
	tests := []struct {
		name   string
		reply  reply
		code   int
		stderr string
	}{
		{"not found", errReply(404, "not_found", "no flag production/checkout-v2"), ExitNotFound, "interlock: no flag production/checkout-v2\n"},
		{"conflict", errReply(409, "conflict", "changed meanwhile"), ExitConflict, "interlock: changed meanwhile\n"},
		{"precondition failed", errReply(412, "precondition_failed", "stale version"), ExitConflict, "interlock: stale version\n"},
		{"precondition required", errReply(428, "precondition_required", "If-Match is required"), ExitConflict, "interlock: If-Match is required\n"},
		{"unauthenticated", errReply(401, "unauthenticated", "a bearer token is required"), ExitAuth, "interlock: a bearer token is required\n"},
		{"forbidden", errReply(403, "forbidden", "token ci may not write production"), ExitAuth, "interlock: token ci may not write production\n"},
		{"invalid", errReply(400, "invalid_argument", "at: not a time"), ExitInvalid, "interlock: at: not a time\n"},
		{"too large", errReply(413, "payload_too_large", "the body is larger than 1 MiB"), ExitInvalid, "interlock: the body is larger than 1 MiB\n"},
		{"media type", errReply(415, "unsupported_media_type", "send application/json"), ExitInvalid, "interlock: send application/json\n"},
		{"unavailable", errReply(503, "unavailable", "projections are catching up"), ExitUnavailable, "interlock: projections are catching up\n"},
		{"internal", errReply(500, "internal", "internal error"), ExitError, "interlock: internal error\n"},
		{"a code this client does not know maps by status", errReply(409, "brand_new_code", "something new"), ExitConflict, "interlock: something new\n"},
		{"a proxy's page", reply{status: 502, header: map[string]string{"Content-Type": "text/html"}, body: "<html>bad gateway</html>"}, ExitUnavailable, "interlock: server answered 502 Bad Gateway\n"},
		{"a teapot", reply{status: 418, body: ""}, ExitError, "interlock: server answered 418 I'm a teapot\n"},
		{"a message with a newline and escape", errReply(400, "invalid_argument", "line one\nline two \x1b[2J"), ExitInvalid, "interlock: line one line two \uFFFD[2J\n"},
		{"a success that is not JSON", reply{status: 200, body: "<html>"}, ExitError, "interlock: decode the flag from the server: invalid character '<' looking for beginning of value\n"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			srv := newFakeServer(t, replies(t, tc.reply))
			res := runCLI(t, srv, "", "flags", "get", "production/checkout-v2")
			if res.code != tc.code {
				t.Errorf("exit code %d, want %d", res.code, tc.code)
			}
			if res.stderr != tc.stderr {
				t.Errorf("stderr %q, want %q", res.stderr, tc.stderr)
			}
			if res.stdout != "" {
				t.Errorf("stdout %q, want nothing", res.stdout)
			}
		})
	}
}

func TestUnreachable(t *testing.T) {
	t.Run("connection refused", func(t *testing.T) {
		srv := newFakeServer(t, replies(t))
		url := srv.URL
		srv.Close()
		res := runWithEnv(t, map[string]string{"INTERLOCK_SERVER": url}, "", "flags", "list", "production")
		if res.code != ExitUnavailable {
			t.Errorf("exit code %d, want %d", res.code, ExitUnavailable)
		}
		if !strings.HasPrefix(res.stderr, "interlock: server unreachable: "+url) {
			t.Errorf("stderr %q", res.stderr)
		}
	})
	t.Run("no answer within the timeout", func(t *testing.T) {
		// The handler never answers; it returns when the client gives up and disconnects.
		srv := newFakeServer(t, replies(t, reply{hang: true}))
		res := runCLI(t, srv, "", "flags", "list", "production", "--timeout", "20ms")
		if res.code != ExitUnavailable {
			t.Errorf("exit code %d, want %d", res.code, ExitUnavailable)
		}
		want := "interlock: server unreachable: " + srv.URL + " did not answer within 20ms\n"
		if res.stderr != want {
			t.Errorf("stderr %q, want %q", res.stderr, want)
		}
	})
}

// TestUsageErrors checks that a wrong command line exits 2, says what is wrong and sends nothing.
func TestUsageErrors(t *testing.T) {
	tests := []struct {
		name   string
		args   []string
		stderr string
	}{
		{"no command", nil, "interlock: no command given\n"},
		{"unknown command", []string{"flgs", "list"}, `interlock: unknown command "flgs"`},
		{"flags without a subcommand", []string{"flags"}, "interlock: flags needs a subcommand"},
		{"unknown subcommand", []string{"flags", "explode", "production/x"}, `interlock: unknown command "flags explode"`},
		{"a command's flag before the command", []string{"--reason", "x", "kill", "production/x"}, "interlock: --reason: name the command first"},
		{"unknown flag", []string{"flags", "list", "production", "--nope"}, "interlock: unknown flag: --nope\nusage: interlock flags list ENV [--archived] [--at TIME]\n"},
		{"flag without its value", []string{"kill", "production/x", "--reason"}, "interlock: flag needs an argument: --reason"},
		{"missing argument", []string{"flags", "get"}, "interlock: missing arguments: interlock flags get needs ENV/FLAG"},
		{"extra argument", []string{"flags", "get", "production/x", "more"}, `interlock: unexpected argument "more"`},
		{"ref without a slash", []string{"flags", "get", "checkout"}, `interlock: "checkout" is not ENV/FLAG`},
		{"bad environment", []string{"flags", "get", "Prod/checkout"}, "environment names are 1-63 characters"},
		{"bad key", []string{"kill", "production/a..b", "--reason", "x"}, "keys are 1-200 characters"},
		{"bad environment for list", []string{"flags", "list", "PROD"}, "environment names are"},
		{"kill without a reason", []string{"kill", "production/x"}, "interlock: --reason is required"},
		{"kill with a blank reason", []string{"flags", "kill", "production/x", "--reason", "  "}, "interlock: --reason is required"},
		{"a reason with a newline", []string{"flags", "create", "production/x", "--reason", "a\nb"}, "control characters"},
		{"bad time", []string{"flags", "list", "production", "--at", "yesterday"}, `interlock: --at "yesterday": give an RFC 3339 time`},
		{"negative relative time", []string{"audit", "--since", "-5m"}, `--since "-5m": give an RFC 3339 time`},
		{"at and version", []string{"flags", "get", "production/x", "--at", "5m", "--version", "2"}, "give --at or --version, not both"},
		{"version zero", []string{"flags", "get", "production/x", "--version", "0"}, "versions are whole numbers from 1"},
		{"bad diff version", []string{"flags", "diff", "production/x", "v3"}, `version "v3"`},
		{"bad variant", []string{"flags", "create", "production/x", "--variant", "color=blue", "--default", "color", "--off", "color"}, `(a string needs JSON quotes: color='"blue"')`},
		{"variant without =", []string{"flags", "create", "production/x", "--variant", "on"}, `"on" is not name=JSON`},
		{"duplicate variant", []string{"flags", "create", "production/x", "--variant", "a=1", "--variant", "a=2", "--default", "a", "--off", "a"}, "--variant a is given twice"},
		{"variants without default", []string{"flags", "create", "production/x", "--variant", "a=1", "--off", "a"}, "--default"},
		{"file and flags", []string{"flags", "create", "production/x", "--file", "-", "--kind", "config"}, "--file gives the whole document: leave out --kind"},
		{"file that is not JSON", []string{"flags", "create", "production/x", "--file", "-"}, "--file -: not a JSON object"},
		{"file that does not exist", []string{"flags", "create", "production/x", "--file", "/nonexistent/flag.json"}, "no such file"},
		{"set with nothing", []string{"flags", "set", "production/x"}, "nothing to change"},
		{"set with a patch that is not an object", []string{"flags", "set", "production/x", "--patch", "[1]"}, "a merge patch is a JSON object"},
		{"restore without a version", []string{"flags", "restore", "production/x"}, "--to-version is required"},
		{"audit flag without env", []string{"audit", "--flag", "checkout"}, "give --env too"},
		{"audit env and flag disagree", []string{"audit", "--env", "staging", "--flag", "production/checkout"}, "name different environments"},
		{"audit bad type", []string{"audit", "--type", "exploded"}, `--type "exploded": use created`},
		{"audit negative limit", []string{"audit", "--limit", "-1"}, "--limit -1"},
		{"bad output format", []string{"flags", "list", "production", "-o", "yaml"}, `-o "yaml": the output formats are table and json`},
		{"bad server", []string{"flags", "list", "production", "--server", "ftp://x"}, `--server "ftp://x"`},
		{"negative timeout", []string{"flags", "list", "production", "--timeout", "-1s"}, "a timeout is not negative"},
		{"help for an unknown command", []string{"help", "nope"}, `help: unknown command "nope"`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			srv := newFakeServer(t, replies(t))
			res := runCLI(t, srv, "not json", tc.args...)
			if res.code != ExitUsage {
				t.Errorf("exit code %d, want %d; stderr: %s", res.code, ExitUsage, res.stderr)
			}
			if !strings.Contains(res.stderr, tc.stderr) {
				t.Errorf("stderr %q, want it to hold %q", res.stderr, tc.stderr)
			}
			if !strings.HasPrefix(res.stderr, "interlock: ") {
				t.Errorf("stderr %q does not start with interlock:", res.stderr)
			}
			if res.stdout != "" {
				t.Errorf("stdout %q, want nothing", res.stdout)
			}
			if n := len(srv.requests()); n != 0 {
				t.Errorf("%d requests sent, want none", n)
			}
		})
	}
}

func TestGlobalFlags(t *testing.T) {
	fx := newFixtures()
	t.Run("before the command, overriding the environment", func(t *testing.T) {
		srv := newFakeServer(t, replies(t, flagReply(t, 200, fx.flag)))
		env := map[string]string{"INTERLOCK_SERVER": "http://127.0.0.1:1", "INTERLOCK_TOKEN": "wrong"}
		res := runWithEnv(t, env, "", "--server", srv.URL, "--token="+testToken, "-o", "json", "flags", "get", "production/checkout-v2")
		if res.code != ExitOK {
			t.Fatalf("exit code %d: %s", res.code, res.stderr)
		}
		onlyJSON(t, res.stdout)
		checkRequests(t, srv.requests(), []wantReq{{method: "GET", path: flagPathTest}})
	})
	t.Run("a server without a scheme and with a path prefix", func(t *testing.T) {
		srv := newFakeServer(t, replies(t, flagReply(t, 200, fx.flag)))
		host := strings.TrimPrefix(srv.URL, "http://")
		res := runCLI(t, srv, "", "flags", "get", "production/checkout-v2", "--server", host+"/interlock/")
		if res.code != ExitOK {
			t.Fatalf("exit code %d: %s", res.code, res.stderr)
		}
		checkRequests(t, srv.requests(), []wantReq{{method: "GET", path: "/interlock" + flagPathTest}})
	})
	t.Run("no token sends no Authorization", func(t *testing.T) {
		srv := newFakeServer(t, replies(t, errReply(401, "unauthenticated", "a bearer token is required")))
		res := runWithEnv(t, map[string]string{"INTERLOCK_SERVER": srv.URL}, "", "flags", "list", "production")
		if res.code != ExitAuth {
			t.Errorf("exit code %d, want %d", res.code, ExitAuth)
		}
		reqs := srv.requests()
		if len(reqs) != 1 || reqs[0].Header.Get("Authorization") != "" {
			t.Errorf("requests %+v, want one without Authorization", reqs)
		}
	})
	t.Run("after --, arguments are positional", func(t *testing.T) {
		srv := newFakeServer(t, replies(t))
		res := runCLI(t, srv, "", "flags", "get", "--", "--version")
		if res.code != ExitUsage || !strings.Contains(res.stderr, `"--version" is not ENV/FLAG`) {
			t.Errorf("exit code %d, stderr %q", res.code, res.stderr)
		}
	})
}

func TestHelp(t *testing.T) {
	t.Run("overview", func(t *testing.T) {
		res := runCLI(t, nil, "", "help")
		if res.code != ExitOK || res.stderr != "" {
			t.Fatalf("exit code %d, stderr %q", res.code, res.stderr)
		}
		golden(t, "help.golden", res.stdout)
		for _, c := range commands() {
			if !strings.Contains(res.stdout, "  "+c.name+" ") {
				t.Errorf("help does not list %q", c.name)
			}
		}
		for _, code := range []string{"0  ok", "2  usage", "3  not found", "4  conflict", "5  unauthenticated", "6  invalid", "7  server unreachable"} {
			if !strings.Contains(res.stdout, code) {
				t.Errorf("help does not document exit code %q", code)
			}
		}
	})
	t.Run("-h is help", func(t *testing.T) {
		res := runCLI(t, nil, "", "-h")
		if res.code != ExitOK || !strings.HasPrefix(res.stdout, "interlock runs the Interlock server") {
			t.Errorf("exit code %d, stdout %q", res.code, res.stdout)
		}
	})
	t.Run("flags group", func(t *testing.T) {
		res := runCLI(t, nil, "", "help", "flags")
		if res.code != ExitOK || !strings.Contains(res.stdout, "flags kill ENV/FLAG --reason R") {
			t.Errorf("exit code %d, stdout %q", res.code, res.stdout)
		}
	})
	for _, args := range [][]string{{"help", "flags", "set"}, {"flags", "set", "--help"}, {"flags", "set", "production/x", "-h"}} {
		t.Run(strings.Join(args, " "), func(t *testing.T) {
			srv := newFakeServer(t, replies(t))
			res := runCLI(t, srv, "", args...)
			if res.code != ExitOK || res.stderr != "" {
				t.Fatalf("exit code %d, stderr %q", res.code, res.stderr)
			}
			golden(t, "help_flags_set.golden", res.stdout)
		})
	}
	t.Run("every command has help", func(t *testing.T) {
		for _, c := range commands() {
			res := runCLI(t, nil, "", "help", c.name)
			if res.code != ExitOK || !strings.HasPrefix(res.stdout, "Usage:\n  interlock "+c.name) || !strings.Contains(res.stdout, "Exit codes:") {
				t.Errorf("help %s: exit code %d, stdout %q", c.name, res.code, res.stdout)
			}
		}
	})
	t.Run("completion", func(t *testing.T) {
		for _, shell := range []string{"bash", "zsh", "fish"} {
			res := runCLI(t, nil, "", "completion", shell)
			if res.code != ExitOK || !strings.Contains(res.stdout, "interlock") || res.stderr != "" {
				t.Errorf("completion %s: exit code %d, stderr %q", shell, res.code, res.stderr)
			}
		}
		// What the scripts ask: the commands after "flags k", the flags of kill after "--re".
		for _, tc := range []struct{ args, want string }{
			{"flags k", "kill\t"}, {"kill production/x --re", "--reason\t"}, {"kill production/x -re", "--reason\t"},
		} {
			res := runCLI(t, nil, "", append([]string{"__complete"}, strings.Fields(tc.args)...)...)
			if res.code != ExitOK || !strings.Contains(res.stdout, tc.want) {
				t.Errorf("complete %q: exit code %d, stdout %q, want %q", tc.args, res.code, res.stdout, tc.want)
			}
		}
	})
	t.Run("version sends nothing, so a bad server address does not matter", func(t *testing.T) {
		res := runWithEnv(t, map[string]string{"INTERLOCK_SERVER": "ftp://nowhere"}, "", "version")
		if res.code != ExitOK || !strings.HasPrefix(res.stdout, "interlock ") {
			t.Errorf("exit code %d, stdout %q", res.code, res.stdout)
		}
	})
}
