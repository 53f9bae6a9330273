package cli

import (
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/interlock-dev/interlock/guard"
)

const (
	rolloutPathTest = flagPathTest + "/rollout"
	valvePathTest   = "/api/v1/environments/production/flags/search.suggest/valve"
)

// rolloutBody is a rollout status as the server answers it, written out so that the test breaks
// if the CLI and the server disagree on a name. stage, status, guard and live vary.
func rolloutBody(version, stage int, status, guard, live string) string {
	percents := []string{"1", "25", "100"}
	split := `{"split":{"on":100,"off":9900}}`
	switch {
	case status == "created":
		split = `{"variant":"on"}`
	case stage == 1:
		split = `{"split":{"on":2500,"off":7500}}`
	}
	if guard == "" {
		guard = `{"tripped":false,"stage":0}`
	}
	if live == "" {
		live = "null"
	}
	return `{"flag":"checkout-v2","environment":"production","version":` + itoa(uint64(version)) + `,"enabled":true,
		"rollout":{"id":"0195f0c2-7d1e-7c3a-9d2b-8a4c1e2f3a4b","status":"` + status + `","stage":` + itoa(uint64(stage)) + `,
			"plan":{"treatment":"on","control":"off","stages":[{"percent":1,"minHold":"10m0s"},{"percent":25,"minHold":"10m0s"},{"percent":100,"minHold":"10m0s"}],
				"metrics":[{"name":"errors","kind":"ratio","requests":"requests_total","errors":"errors_total"}],
				"source":{"type":"prometheus","url":"http://prometheus:9090","variantLabel":"variant","flagLabel":"flag","lag":"30s"},
				"tick":"15s","alpha":0.01,"r0":1,"rMax":1.5,"onTrip":"kill","onBlind":"hold","blindGrace":"2m0s","onInconclusive":"hold","maxExtension":"1h0m0s"},
			"stageStartedAt":"2026-03-04T11:40:00Z","stageVersion":` + itoa(uint64(version)) + `,
			"createdAt":"2026-03-04T11:00:00Z","createdBy":"alice","guard":` + guard + `},
		"stage":{"index":` + itoa(uint64(stage)) + `,"count":3,"percent":` + percents[stage] + `,"minHold":"10m0s"},
		"split":` + split + `,"live":` + live + `}`
}

// statusReply answers with a rollout status and its version as ETag.
func statusReply(version int, body string) reply {
	return reply{status: 200, header: map[string]string{"ETag": `"` + itoa(uint64(version)) + `"`}, body: body}
}

const trippedGuard = `{"state":"TRIPPED","tripped":true,"action":"kill","cause":"r1","decision":"0195f0c2-aaaa","stage":1,"at":"2026-03-04T11:58:30Z"}`

// liveStatus is the guard's live status as the guard encodes it: one metric with usable
// statistics, one blind with non-finite ones.
func liveStatus(t *testing.T) string {
	at := time.Date(2026, 3, 4, 11, 59, 45, 0, time.UTC)
	ratio := func(e, p, rHat float64) guard.RatioEvidence {
		return guard.RatioEvidence{E: guard.Float(e), P: guard.Float(p), RHat: guard.Float(rHat)}
	}
	st := guard.Status{Acting: true, State: guard.StateHealthy, Stage: 1, NextTick: at.Add(15 * time.Second), Decision: "d-1",
		Latest: &guard.Evidence{DecisionID: "d-2", Time: at, StateAfter: guard.StateHealthy, Metrics: []guard.MetricEvidence{
			{Name: "errors", Kind: guard.KindRatio, R1: ratio(0.4213, 1, 0.91234), R5: guard.AdvanceEvidence{RatioEvidence: ratio(7.5, 0.13, 1)}},
			{Name: "latency_p99", Kind: guard.KindRatio, Blind: "stale", R1: ratio(math.NaN(), math.Inf(1), 1e-7),
				R5: guard.AdvanceEvidence{RatioEvidence: ratio(12.25, 0.08, 1), Met: true}},
			{Name: "latency", Kind: guard.KindMean, R2: guard.MSPRTEvidence{Active: true, LogLambda: guard.Float(math.Log(250)), Ratio: 1.31}},
			{Name: "slow", Kind: guard.KindMSPRT, R2: guard.MSPRTEvidence{Ratio: 1.02}},
		}}}
	return mustJSON(t, st)
}

func TestRolloutCommands(t *testing.T) {
	dir := t.TempDir()
	planFile := filepath.Join(dir, "plan.json")
	const planDoc = `{"treatment":"on","control":"off","metrics":[{"name":"errors","requests":"requests_total","errors":"errors_total"}],"source":{"type":"prometheus","url":"http://prometheus:9090"}}`
	if err := os.WriteFile(planFile, []byte(planDoc), 0o600); err != nil {
		t.Fatal(err)
	}
	created := rolloutBody(8, 0, "created", "", "")
	running := rolloutBody(9, 0, "running", "", "")
	advanced := rolloutBody(10, 1, "running", "", "")
	tripped := rolloutBody(11, 1, "running", trippedGuard, "")
	aborted := strings.Replace(rolloutBody(12, 1, "aborted", trippedGuard, ""), `"split":{"split":{"on":2500,"off":7500}}`, `"split":{"variant":"off"}`, 1)
	runCases(t, []cmdCase{
		{
			name:    "create from a file",
			args:    []string{"rollout", "create", "production/checkout-v2", "--file", planFile, "--reason", "new checkout"},
			replies: []reply{{status: 201, header: map[string]string{"ETag": `"8"`}, body: created}},
			want: []wantReq{{method: "POST", path: rolloutPathTest, noHeader: []string{"If-Match"},
				header: map[string]string{"Content-Type": "application/json", "X-Interlock-Reason": "new checkout"}, body: planDoc}},
			golden: "rollout_create.golden",
		},
		{
			name:    "create from standard input at a version, as JSON",
			args:    []string{"rollout", "create", "production/checkout-v2", "--file", "-", "--if-version", "7", "-o", "json"},
			stdin:   planDoc,
			replies: []reply{{status: 201, body: created}},
			want:    []wantReq{{method: "POST", path: rolloutPathTest, header: map[string]string{"If-Match": `"7"`}, noHeader: []string{"X-Interlock-Reason"}, body: planDoc}},
			stdout:  indent(t, created),
		},
		{
			name:    "create while a rollout runs",
			args:    []string{"rollout", "create", "production/checkout-v2", "--file", planFile},
			replies: []reply{errReply(409, "conflict", "create rollout production/checkout-v2: flag has an active rollout: rollout 0195 is running; abort it first")},
			want:    []wantReq{{method: "POST", path: rolloutPathTest, body: planDoc}},
			code:    ExitConflict,
			stderr:  "abort it first\n",
		},
		{
			name:    "status",
			args:    []string{"rollout", "status", "production/checkout-v2"},
			replies: []reply{statusReply(11, tripped)},
			want:    []wantReq{{method: "GET", path: rolloutPathTest}},
			golden:  "rollout_status.golden",
		},
		{
			name:    "status with the guard's live statistics",
			args:    []string{"rollout", "status", "production/checkout-v2"},
			replies: []reply{statusReply(10, rolloutBody(10, 1, "running", "", liveStatus(t)))},
			want:    []wantReq{{method: "GET", path: rolloutPathTest}},
			golden:  "rollout_status_live.golden",
		},
		{
			name:    "status of a created rollout with a live status of another shape",
			args:    []string{"rollout", "status", "production/checkout-v2"},
			replies: []reply{statusReply(8, rolloutBody(8, 0, "created", "", `{"note":"warming up"}`))},
			want:    []wantReq{{method: "GET", path: rolloutPathTest}},
			golden:  "rollout_status_created.golden",
		},
		{
			name:    "status as JSON",
			args:    []string{"rollout", "status", "production/checkout-v2", "-o", "json"},
			replies: []reply{statusReply(11, tripped)},
			want:    []wantReq{{method: "GET", path: rolloutPathTest}},
			stdout:  indent(t, tripped),
		},
		{
			name:    "status of a flag without a rollout",
			args:    []string{"rollout", "status", "production/checkout-v2"},
			replies: []reply{errReply(404, "not_found", "flag production/checkout-v2: no such rollout: it never had a rollout")},
			want:    []wantReq{{method: "GET", path: rolloutPathTest}},
			code:    ExitNotFound,
			stderr:  "interlock: flag production/checkout-v2: no such rollout: it never had a rollout\n",
		},
		{
			name:    "start reads the version first",
			args:    []string{"rollout", "start", "production/checkout-v2"},
			replies: []reply{statusReply(8, created), statusReply(9, running)},
			want: []wantReq{
				{method: "GET", path: rolloutPathTest},
				{method: "POST", path: rolloutPathTest + "/start", header: map[string]string{"If-Match": `"8"`, "Content-Type": "application/json"}, body: `{}`},
			},
			stdout: "started production/checkout-v2: running, stage 1/3 at 1%, serving split off 99%, on 1% (version 9)\n",
		},
		{
			name:    "advance from a stage, counted from 1",
			args:    []string{"rollout", "advance", "production/checkout-v2", "--reason", "healthy", "--from", "1"},
			replies: []reply{statusReply(9, running), statusReply(10, advanced)},
			want: []wantReq{
				{method: "GET", path: rolloutPathTest},
				{method: "POST", path: rolloutPathTest + "/advance", header: map[string]string{"If-Match": `"9"`}, body: `{"reason":"healthy","from":0}`},
			},
			stdout: "advanced production/checkout-v2: running, stage 2/3 at 25%, serving split off 75%, on 25% (version 10)\n",
		},
		{
			name:    "advance at a version sends no read",
			args:    []string{"rollout", "advance", "production/checkout-v2", "--reason", "healthy", "--if-version", "9", "-o", "json"},
			replies: []reply{statusReply(10, advanced)},
			want:    []wantReq{{method: "POST", path: rolloutPathTest + "/advance", header: map[string]string{"If-Match": `"9"`}, body: `{"reason":"healthy"}`}},
			stdout:  indent(t, advanced),
		},
		{
			name:    "advance while tripped",
			args:    []string{"rollout", "advance", "production/checkout-v2", "--reason", "ship it"},
			replies: []reply{statusReply(11, tripped), errReply(409, "tripped", "advance rollout production/checkout-v2: guard tripped: re-arm the guard of rollout 0195 before advancing it")},
			want: []wantReq{
				{method: "GET", path: rolloutPathTest},
				{method: "POST", path: rolloutPathTest + "/advance", header: map[string]string{"If-Match": `"11"`}, body: `{"reason":"ship it"}`},
			},
			code:   ExitConflict,
			stderr: "guard tripped: re-arm the guard",
		},
		{
			name:    "a change in between",
			args:    []string{"rollout", "stepback", "production/checkout-v2", "--reason", "slow"},
			replies: []reply{statusReply(10, advanced), errReply(412, "precondition_failed", "stale version: expected 10, the flag is at version 11")},
			want: []wantReq{
				{method: "GET", path: rolloutPathTest},
				{method: "POST", path: rolloutPathTest + "/stepback", header: map[string]string{"If-Match": `"10"`}, body: `{"reason":"slow"}`},
			},
			code:   ExitConflict,
			stderr: "interlock: stale version: expected 10, the flag is at version 11\n",
		},
		{
			name:    "re-arm a rollout by id",
			args:    []string{"rollout", "rearm", "production/checkout-v2", "--reason", "false alarm", "--id", "0195f0c2", "--if-version", "11"},
			replies: []reply{statusReply(12, rolloutBody(12, 1, "running", "", ""))},
			want:    []wantReq{{method: "POST", path: rolloutPathTest + "/rearm", header: map[string]string{"If-Match": `"11"`}, body: `{"reason":"false alarm","id":"0195f0c2"}`}},
			stdout:  "re-armed the guard of production/checkout-v2: running, stage 2/3 at 25%, serving split off 75%, on 25% (version 12)\n",
		},
		{
			name:    "abort",
			args:    []string{"rollout", "abort", "production/checkout-v2", "--reason", "pager"},
			replies: []reply{statusReply(11, tripped), statusReply(12, aborted)},
			want: []wantReq{
				{method: "GET", path: rolloutPathTest},
				{method: "POST", path: rolloutPathTest + "/abort", header: map[string]string{"If-Match": `"11"`}, body: `{"reason":"pager"}`},
			},
			stdout: "aborted production/checkout-v2: aborted, guard tripped, serving \"off\" (version 12)\n",
		},
		{
			name:    "pause without a rollout",
			args:    []string{"rollout", "pause", "production/checkout-v2"},
			replies: []reply{errReply(404, "not_found", "flag production/checkout-v2: no such rollout: it never had a rollout")},
			want:    []wantReq{{method: "GET", path: rolloutPathTest}},
			code:    ExitNotFound,
			stderr:  "no such rollout",
		},
		{
			name:    "resume by a reader",
			args:    []string{"rollout", "resume", "production/checkout-v2", "--if-version", "5"},
			replies: []reply{errReply(403, "forbidden", `forbidden: role "reader" may not write`)},
			want:    []wantReq{{method: "POST", path: rolloutPathTest + "/resume", header: map[string]string{"If-Match": `"5"`}, body: `{}`}},
			code:    ExitAuth,
			stderr:  "may not write",
		},
	})
}

// valveBody is a valve status as the server answers it.
func valveBody(version int, valve string) string {
	return `{"flag":"search.suggest","environment":"production","version":` + itoa(uint64(version)) + `,"valve":` + valve + `}`
}

const (
	openValve = `{"variant":"off","segment":"beta-testers","open":true,"openedAt":"2026-03-04T11:50:00Z","openedBy":"oncall",
		"reason":"search latency","expires":"2026-03-04T12:20:00Z","rollout":"0195f0c2",
		"policy":{"source":{"type":"prometheus","url":"http://prometheus:9090"},"requests":"requests_total","errors":"errors_total","objective":0.01,"burnRate":14.4,"longWindow":"1h0m0s","shortWindow":"5m0s"},
		"closedAt":"2026-03-03T08:00:00Z","cause":"healthy"}`
	closedValve = `{"variant":"off","open":false,"openedAt":"2026-03-04T11:50:00Z","openedBy":"oncall","reason":"search latency",
		"closedAt":"2026-03-04T11:55:00Z","cause":"manual"}`
)

func TestValveCommands(t *testing.T) {
	dir := t.TempDir()
	policyFile := filepath.Join(dir, "policy.json")
	const policy = `{"source":{"type":"prometheus","url":"http://prometheus:9090"},"requests":"requests_total","errors":"errors_total"}`
	if err := os.WriteFile(policyFile, []byte(policy), 0o600); err != nil {
		t.Fatal(err)
	}
	f := sampleFlag()
	f.Key, f.Version = "search.suggest", 3
	configured := valveBody(4, `{"variant":"off","segment":"beta-testers","open":false}`)
	opened := valveBody(5, `{"variant":"off","open":true,"openedAt":"2026-03-04T12:00:00Z","openedBy":"oncall","reason":"x","expires":"2026-03-05T12:00:00Z"}`)
	runCases(t, []cmdCase{
		{
			name:    "configure reads the version first",
			args:    []string{"valve", "configure", "production/search.suggest", "--variant", "off", "--segment", "beta-testers", "--policy-file", policyFile, "--reason", "protect search"},
			replies: []reply{flagReply(t, 200, f), statusReply(4, configured)},
			want: []wantReq{
				{method: "GET", path: "/api/v1/environments/production/flags/search.suggest"},
				{method: "PUT", path: valvePathTest, header: map[string]string{"If-Match": `"3"`, "Content-Type": "application/json", "X-Interlock-Reason": "protect search"},
					body: `{"variant":"off","segment":"beta-testers","policy":` + policy + `}`},
			},
			stdout: "configured valve production/search.suggest: closed; opening it serves \"off\" to the members of segment \"beta-testers\" (version 4)\n",
		},
		{
			name:    "configure at a version, as JSON",
			args:    []string{"valve", "configure", "production/search.suggest", "--variant", "off", "--if-version", "3", "-o", "json"},
			replies: []reply{statusReply(4, configured)},
			want:    []wantReq{{method: "PUT", path: valvePathTest, header: map[string]string{"If-Match": `"3"`}, noHeader: []string{"X-Interlock-Reason"}, body: `{"variant":"off"}`}},
			stdout:  indent(t, configured),
		},
		{
			name:    "configure a flag that is not operational",
			args:    []string{"valve", "configure", "production/search.suggest", "--variant", "off", "--if-version", "3"},
			replies: []reply{errReply(400, "invalid_argument", `kind: a valve is a flag of kind operational, not "release"`)},
			want:    []wantReq{{method: "PUT", path: valvePathTest, header: map[string]string{"If-Match": `"3"`}, body: `{"variant":"off"}`}},
			code:    ExitInvalid,
			stderr:  "kind: a valve is a flag of kind operational",
		},
		{
			name:    "open for a day",
			args:    []string{"valve", "open", "production/search.suggest", "--reason", "x", "--for", "1d"},
			replies: []reply{statusReply(5, opened)},
			want:    []wantReq{{method: "POST", path: valvePathTest + "/open", noHeader: []string{"If-Match"}, body: `{"reason":"x","for":"24h0m0s"}`}},
			stdout:  "opened valve production/search.suggest: open, serving \"off\" to everyone until 2026-03-05 12:00:00Z (version 5)\n",
		},
		{
			name:    "open until a time",
			args:    []string{"valve", "open", "production/search.suggest", "--reason", "x", "--expires", "2026-03-05T13:00:00+01:00"},
			replies: []reply{statusReply(5, opened)},
			want:    []wantReq{{method: "POST", path: valvePathTest + "/open", body: `{"reason":"x","expires":"2026-03-05T12:00:00Z"}`}},
			stdout:  "opened valve production/search.suggest: open, serving \"off\" to everyone until 2026-03-05 12:00:00Z (version 5)\n",
		},
		{
			name:    "open a flag that is not a valve",
			args:    []string{"valve", "open", "production/search.suggest", "--reason", "x"},
			replies: []reply{errReply(409, "conflict", "open valve production/search.suggest: flag is not a safety valve: configure the flag as a valve first")},
			want:    []wantReq{{method: "POST", path: valvePathTest + "/open", body: `{"reason":"x"}`}},
			code:    ExitConflict,
			stderr:  "configure the flag as a valve first\n",
		},
		{
			name:    "close",
			args:    []string{"valve", "close", "production/search.suggest", "--reason", "recovered"},
			replies: []reply{statusReply(6, valveBody(6, closedValve))},
			want:    []wantReq{{method: "POST", path: valvePathTest + "/close", body: `{"reason":"recovered"}`}},
			stdout:  "closed valve production/search.suggest: closed; opening it serves \"off\" to everyone (version 6)\n",
		},
		{
			name:    "status of an open valve",
			args:    []string{"valve", "status", "production/search.suggest"},
			replies: []reply{statusReply(5, valveBody(5, openValve))},
			want:    []wantReq{{method: "GET", path: valvePathTest}},
			golden:  "valve_status_open.golden",
		},
		{
			name:    "status of a closed valve",
			args:    []string{"valve", "status", "production/search.suggest"},
			replies: []reply{statusReply(6, valveBody(6, closedValve))},
			want:    []wantReq{{method: "GET", path: valvePathTest}},
			golden:  "valve_status_closed.golden",
		},
		{
			name:    "status as JSON",
			args:    []string{"valve", "status", "production/search.suggest", "-o", "json"},
			replies: []reply{statusReply(6, valveBody(6, closedValve))},
			want:    []wantReq{{method: "GET", path: valvePathTest}},
			stdout:  indent(t, valveBody(6, closedValve)),
		},
		{
			name:    "status of a flag that is not a valve",
			args:    []string{"valve", "status", "production/search.suggest"},
			replies: []reply{errReply(404, "not_found", "flag production/search.suggest is not a safety valve: configure it with PUT .../valve")},
			want:    []wantReq{{method: "GET", path: valvePathTest}},
			code:    ExitNotFound,
			stderr:  "is not a safety valve",
		},
	})
}

// TestRolloutUsageErrors checks that a wrong rollout or valve command line exits 2 and sends
// nothing.
func TestRolloutUsageErrors(t *testing.T) {
	tests := []struct {
		name   string
		args   []string
		stderr string
	}{
		{"rollout without a subcommand", []string{"rollout"}, "interlock: rollout needs a subcommand"},
		{"valve without a subcommand", []string{"valve"}, "interlock: valve needs a subcommand"},
		{"unknown rollout subcommand", []string{"rollout", "explode", "production/x"}, `unknown command "rollout explode"`},
		{"ref without a slash", []string{"rollout", "status", "checkout"}, `"checkout" is not ENV/FLAG`},
		{"create without a file", []string{"rollout", "create", "production/x"}, "--file is required"},
		{"create from a file that is not an object", []string{"rollout", "create", "production/x", "--file", "-"}, "a rollout plan is a JSON object"},
		{"create from a missing file", []string{"rollout", "create", "production/x", "--file", "/nonexistent/plan.json"}, "no such file"},
		{"advance without a reason", []string{"rollout", "advance", "production/x"}, "--reason is required"},
		{"stepback with a blank reason", []string{"rollout", "stepback", "production/x", "--reason", " "}, "--reason is required"},
		{"abort without a reason", []string{"rollout", "abort", "production/x"}, "--reason is required"},
		{"rearm without a reason", []string{"rollout", "rearm", "production/x"}, "--reason is required"},
		{"a reason with a newline", []string{"rollout", "start", "production/x", "--reason", "a\nb"}, "control characters"},
		{"from on start", []string{"rollout", "start", "production/x", "--from", "1"}, "unknown flag: --from"},
		{"from zero", []string{"rollout", "advance", "production/x", "--reason", "x", "--from", "0"}, "--from 0: stages count from 1"},
		{"from not a number", []string{"rollout", "advance", "production/x", "--reason", "x", "--from", "two"}, "--from"},
		{"a bad version", []string{"rollout", "pause", "production/x", "--if-version", "0"}, "versions are whole numbers"},
		{"configure without a variant", []string{"valve", "configure", "production/x"}, "--variant is required"},
		{"configure with a bad segment", []string{"valve", "configure", "production/x", "--variant", "off", "--segment", "a..b"}, "--segment"},
		{"configure with a policy that is not an object", []string{"valve", "configure", "production/x", "--variant", "off", "--policy-file", "-"}, "a valve policy is a JSON object"},
		{"open without a reason", []string{"valve", "open", "production/x"}, "--reason is required"},
		{"open for and until", []string{"valve", "open", "production/x", "--reason", "x", "--for", "1h", "--expires", "2026-03-05T00:00:00Z"}, "not both"},
		{"open for nothing", []string{"valve", "open", "production/x", "--reason", "x", "--for", "0s"}, `--for "0s"`},
		{"open for a bad duration", []string{"valve", "open", "production/x", "--reason", "x", "--for", "soon"}, `--for "soon"`},
		{"open until a bad time", []string{"valve", "open", "production/x", "--reason", "x", "--expires", "tomorrow"}, `--expires "tomorrow"`},
		{"close without a reason", []string{"valve", "close", "production/x"}, "--reason is required"},
		{"status with an extra argument", []string{"valve", "status", "production/x", "more"}, `unexpected argument "more"`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			srv := newFakeServer(t, replies(t))
			res := runCLI(t, srv, "not json", tc.args...)
			if res.code != ExitUsage {
				t.Errorf("exit code %d, want %d; stderr: %s", res.code, ExitUsage, res.stderr)
			}
			if !strings.Contains(res.stderr, tc.stderr) || !strings.HasPrefix(res.stderr, "interlock: ") {
				t.Errorf("stderr %q, want it to hold %q", res.stderr, tc.stderr)
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

func TestRolloutHelp(t *testing.T) {
	for group, names := range map[string][]string{
		"rollout": {"create", "status", "start", "pause", "resume", "advance", "stepback", "abort", "rearm"},
		"valve":   {"configure", "open", "close", "status"},
	} {
		res := runCLI(t, nil, "", "help", group)
		if res.code != ExitOK || res.stderr != "" {
			t.Fatalf("help %s: exit code %d, stderr %q", group, res.code, res.stderr)
		}
		for _, name := range names {
			if !strings.Contains(res.stdout, "  "+group+" "+name+" ") {
				t.Errorf("help %s does not list %s:\n%s", group, name, res.stdout)
			}
		}
		if strings.Contains(res.stdout, "  flags ") {
			t.Errorf("help %s lists flag commands:\n%s", group, res.stdout)
		}
	}
	for _, args := range [][]string{{"help", "rollout", "advance"}, {"rollout", "advance", "--help"}} {
		res := runCLI(t, nil, "", args...)
		if res.code != ExitOK || !strings.Contains(res.stdout, "--from N") || !strings.Contains(res.stdout, "--if-version N") ||
			!strings.Contains(res.stdout, "The reason is required") {
			t.Errorf("%v: exit code %d, stdout %q", args, res.code, res.stdout)
		}
	}
}
