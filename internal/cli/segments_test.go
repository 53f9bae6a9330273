package cli

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/interlock-dev/interlock/events"
	"github.com/interlock-dev/interlock/projections"
)

const segmentPathTest = "/api/v1/environments/production/segments/beta-testers"

// sampleSegment is a segment with every part the renderers show.
func sampleSegment() projections.Segment {
	keys := make([]string, 12)
	for i := range keys {
		keys[i] = fmt.Sprintf("user-%02d", i)
	}
	return projections.Segment{
		Key: "beta-testers", Environment: "production",
		SegmentConfig: events.SegmentConfig{
			Description: "People who asked for early access",
			Included:    keys,
			Excluded:    []string{"user-99"},
			Conditions: []events.Condition{
				{Attribute: "plan", Operator: "in", Values: []any{"beta", "alpha"}},
				{Attribute: "age", Operator: "gte", Values: []any{18.0}},
			},
		},
		Version:   3,
		CreatedAt: time.Date(2026, 1, 2, 15, 4, 5, 0, time.UTC),
		UpdatedAt: time.Date(2026, 3, 1, 9, 30, 0, 0, time.UTC),
		UpdatedBy: "alice",
	}
}

func segmentReply(t *testing.T, status int, s projections.Segment) reply {
	return reply{status: status, header: map[string]string{"ETag": `"` + itoa(s.Version) + `"`}, body: mustJSON(t, s)}
}

func TestSegmentsReadCommands(t *testing.T) {
	seg := sampleSegment()
	keysOnly := projections.Segment{Key: "pvt_user", Environment: "production", SegmentConfig: events.SegmentConfig{Included: []string{"u1"}},
		Archived: true, Version: 2, UpdatedAt: testNow, UpdatedBy: "bob"}
	t0 := time.Date(2026, 1, 2, 15, 4, 5, 0, time.UTC)
	history := []projections.Entry{
		{Sequence: 4, Environment: "production", Entity: "segment", Key: "beta-testers", Version: 1, Type: events.TypeSegmentCreated, Time: t0, Actor: "alice", Reason: "early access",
			Changes: []projections.Change{{Path: "archived"}, {Path: "included"}}},
		{Sequence: 9, Environment: "production", Entity: "segment", Key: "beta-testers", Version: 2, Type: events.TypeSegmentUpdated, Time: t0.Add(time.Hour), Actor: "bob",
			Changes: []projections.Change{{Path: "conditions[0]"}, {Path: "included"}}},
		{Sequence: 12, Environment: "production", Entity: "segment", Key: "beta-testers", Version: 3, Type: events.TypeSegmentArchived, Time: t0.Add(2 * time.Hour), Actor: "carol", Reason: "done",
			Changes: []projections.Change{{Path: "archived"}}},
	}
	runCases(t, []cmdCase{
		{
			name:    "list with archived",
			args:    []string{"segments", "list", "production", "--archived"},
			replies: []reply{{status: 200, body: mustJSON(t, map[string]any{"segments": []projections.Segment{seg, keysOnly}})}},
			want:    []wantReq{{method: "GET", path: "/api/v1/environments/production/segments", query: "archived=true"}},
			golden:  "segments_list.golden",
		},
		{
			name:    "list of an empty environment",
			args:    []string{"segments", "list", "staging"},
			replies: []reply{{status: 200, body: `{"segments":[]}`}},
			want:    []wantReq{{method: "GET", path: "/api/v1/environments/staging/segments"}},
			stdout:  "no segments in staging\n",
		},
		{
			name:    "get",
			args:    []string{"segments", "get", "production/beta-testers"},
			replies: []reply{segmentReply(t, 200, seg)},
			want:    []wantReq{{method: "GET", path: segmentPathTest}},
			golden:  "segments_get.golden",
		},
		{
			name:    "get an archived segment of keys only",
			args:    []string{"segments", "get", "production/pvt_user"},
			replies: []reply{segmentReply(t, 200, keysOnly)},
			want:    []wantReq{{method: "GET", path: "/api/v1/environments/production/segments/pvt_user"}},
			golden:  "segments_get_keys.golden",
		},
		{
			name:    "get a version",
			args:    []string{"segments", "get", "production/beta-testers", "--version", "2"},
			replies: []reply{segmentReply(t, 200, seg)},
			want:    []wantReq{{method: "GET", path: segmentPathTest, query: "version=2"}},
			golden:  "segments_get.golden",
		},
		{
			name:    "get at a relative time, as JSON",
			args:    []string{"segments", "get", "production/beta-testers", "--at", "1h", "-o", "json"},
			replies: []reply{segmentReply(t, 200, seg)},
			want:    []wantReq{{method: "GET", path: segmentPathTest, query: "at=2026-03-04T11%3A00%3A00Z"}},
			stdout:  indent(t, mustJSON(t, seg)),
		},
		{
			name:    "get a segment that does not exist",
			args:    []string{"segments", "get", "production/nope"},
			replies: []reply{errReply(404, "not_found", "segment production/nope does not exist")},
			want:    []wantReq{{method: "GET", path: "/api/v1/environments/production/segments/nope"}},
			code:    ExitNotFound,
			stderr:  "interlock: segment production/nope does not exist\n",
		},
		{
			name:    "history",
			args:    []string{"segments", "history", "production/beta-testers"},
			replies: []reply{{status: 200, body: mustJSON(t, map[string]any{"entries": history})}},
			want:    []wantReq{{method: "GET", path: segmentPathTest + "/history"}},
			golden:  "segments_history.golden",
		},
	})
}

func TestSegmentsCreate(t *testing.T) {
	seg := sampleSegment()
	created := projections.Segment{Key: "beta-testers", Environment: "production",
		SegmentConfig: events.SegmentConfig{Included: []string{"u1", "u2"}, Excluded: []string{"u9"},
			Conditions: []events.Condition{{Attribute: "plan", Operator: "in", Values: []any{"beta", "alpha"}}, {Attribute: "age", Operator: "gte", Values: []any{18.0}}}},
		Version: 1, CreatedAt: testNow, UpdatedAt: testNow, UpdatedBy: "dave"}
	dir := t.TempDir()
	doc := filepath.Join(dir, "segment.json")
	if err := os.WriteFile(doc, []byte(`{"included":["a"]}`), 0o600); err != nil {
		t.Fatal(err)
	}
	const path = "/api/v1/environments/production/segments"
	runCases(t, []cmdCase{
		{
			name: "keys and conditions",
			args: []string{"segments", "create", "production/beta-testers", "--include", "u1", "--include=u2", "--exclude", "u9",
				"--condition", "plan in beta, alpha", "--condition", "age gte 18", "--reason", "early access"},
			replies: []reply{segmentReply(t, 201, created)},
			want: []wantReq{{
				method: "POST", path: path,
				header: map[string]string{"Content-Type": "application/json", "X-Interlock-Reason": "early access"},
				body: `{"key":"beta-testers","included":["u1","u2"],"excluded":["u9"],
					"conditions":[{"attribute":"plan","operator":"in","values":["beta","alpha"]},{"attribute":"age","operator":"gte","values":[18]}]}`,
			}},
			golden: "segments_create.golden",
		},
		{
			name:    "conditions as JSON, with a description",
			args:    []string{"segments", "create", "production/beta-testers", "--conditions", `[{"attribute":"beta","operator":"eq","values":[true]}]`, "--description", "Beta"},
			replies: []reply{segmentReply(t, 201, created)},
			want: []wantReq{{method: "POST", path: path, noHeader: []string{"X-Interlock-Reason"},
				body: `{"key":"beta-testers","description":"Beta","conditions":[{"attribute":"beta","operator":"eq","values":[true]}]}`}},
			golden: "segments_create.golden",
		},
		{
			name:    "copying a segment from standard input",
			args:    []string{"segments", "create", "staging/beta-copy", "--file", "-", "-o", "json"},
			stdin:   mustJSON(t, seg),
			replies: []reply{segmentReply(t, 201, seg)},
			want: []wantReq{{method: "POST", path: "/api/v1/environments/staging/segments",
				body: `{"key":"beta-copy","description":"People who asked for early access","included":["user-00","user-01","user-02","user-03","user-04","user-05","user-06","user-07","user-08","user-09","user-10","user-11"],
					"excluded":["user-99"],"conditions":[{"attribute":"plan","operator":"in","values":["beta","alpha"]},{"attribute":"age","operator":"gte","values":[18]}]}`}},
			stdout: indent(t, mustJSON(t, seg)),
		},
		{
			name:    "from a file",
			args:    []string{"segments", "create", "production/from-file", "--file", doc},
			replies: []reply{segmentReply(t, 201, created)},
			want:    []wantReq{{method: "POST", path: path, body: `{"key":"from-file","included":["a"]}`}},
			golden:  "segments_create.golden",
		},
		{
			name:    "that exists already",
			args:    []string{"segments", "create", "production/beta-testers"},
			replies: []reply{errReply(409, "already_exists", "create segment production/beta-testers: segment already exists")},
			want:    []wantReq{{method: "POST", path: path, body: `{"key":"beta-testers"}`}},
			code:    ExitConflict,
			stderr:  "interlock: create segment production/beta-testers: segment already exists\n",
		},
		{
			name:    "that the server finds invalid",
			args:    []string{"segments", "create", "production/x", "--conditions", `[{"attribute":"a","operator":"inSegment","values":["b"]}]`},
			replies: []reply{errReply(400, "invalid_argument", "conditions[0].operator: a segment cannot refer to other segments")},
			want:    []wantReq{{method: "POST", path: path, body: `{"key":"x","conditions":[{"attribute":"a","operator":"inSegment","values":["b"]}]}`}},
			code:    ExitInvalid,
			stderr:  "interlock: conditions[0].operator: a segment cannot refer to other segments\n",
		},
	})
}

func TestSegmentsSet(t *testing.T) {
	cur := sampleSegment()
	cur.Included = []string{"u1", "u2"}
	cur.Excluded = []string{"u9"}
	changed := cur
	changed.Version = 4
	changed.Included = []string{"u1", "u3", "u9"}
	changed.Excluded = nil
	runCases(t, []cmdCase{
		{
			name:    "keys are edited on the segment as read",
			args:    []string{"segments", "set", "production/beta-testers", "--include", "u3", "--include", "u9", "--remove", "u2", "--reason", "more testers"},
			replies: []reply{segmentReply(t, 200, cur), segmentReply(t, 200, changed)},
			want: []wantReq{
				{method: "GET", path: segmentPathTest},
				{method: "PATCH", path: segmentPathTest,
					header: map[string]string{"If-Match": `"3"`, "Content-Type": "application/merge-patch+json", "X-Interlock-Reason": "more testers"},
					body:   `{"included":["u1","u3","u9"],"excluded":null}`},
			},
			golden: "segments_set.golden",
		},
		{
			name:    "an unchanged list is not sent; --if-version still reads the lists",
			args:    []string{"segments", "set", "production/beta-testers", "--remove", "u1", "--exclude", "u9", "--if-version", "3"},
			replies: []reply{segmentReply(t, 200, cur), segmentReply(t, 200, changed)},
			want: []wantReq{
				{method: "GET", path: segmentPathTest},
				{method: "PATCH", path: segmentPathTest, header: map[string]string{"If-Match": `"3"`}, body: `{"included":["u2"]}`},
			},
			golden: "segments_set.golden",
		},
		{
			name:    "an excluded key leaves the included ones",
			args:    []string{"segments", "set", "production/beta-testers", "--exclude", "u1"},
			replies: []reply{segmentReply(t, 200, cur), segmentReply(t, 200, changed)},
			want: []wantReq{
				{method: "GET", path: segmentPathTest},
				{method: "PATCH", path: segmentPathTest, header: map[string]string{"If-Match": `"3"`}, body: `{"included":["u2"],"excluded":["u1","u9"]}`},
			},
			golden: "segments_set.golden",
		},
		{
			name:    "conditions and description with --if-version send no read",
			args:    []string{"segments", "set", "production/beta-testers", "--if-version", "3", "--condition", "country in NL,BE", "--description", ""},
			replies: []reply{segmentReply(t, 200, changed)},
			want: []wantReq{{method: "PATCH", path: segmentPathTest, header: map[string]string{"If-Match": `"3"`},
				body: `{"description":"","conditions":[{"attribute":"country","operator":"in","values":["NL","BE"]}]}`}},
			golden: "segments_set.golden",
		},
		{
			name:    "conditions removed, reading the version first",
			args:    []string{"segments", "set", "production/beta-testers", "--conditions", "null", "-o", "json"},
			replies: []reply{segmentReply(t, 200, cur), segmentReply(t, 200, changed)},
			want: []wantReq{
				{method: "GET", path: segmentPathTest},
				{method: "PATCH", path: segmentPathTest, header: map[string]string{"If-Match": `"3"`}, body: `{"conditions":null}`},
			},
			stdout: indent(t, mustJSON(t, changed)),
		},
		{
			name:    "a patch from standard input with keys on top",
			args:    []string{"segments", "set", "production/beta-testers", "--patch", "@-", "--include", "u4", "--if-version", "3", "-o", "json"},
			stdin:   `{"included":["a"],"description":"x"}`,
			replies: []reply{segmentReply(t, 200, cur), segmentReply(t, 200, changed)},
			want: []wantReq{
				{method: "GET", path: segmentPathTest},
				{method: "PATCH", path: segmentPathTest, header: map[string]string{"If-Match": `"3"`}, body: `{"included":["a","u4"],"description":"x"}`},
			},
			stdout: indent(t, mustJSON(t, changed)),
		},
		{
			name:    "a change in between is a conflict",
			args:    []string{"segments", "set", "production/beta-testers", "--description", "x"},
			replies: []reply{segmentReply(t, 200, cur), errReply(412, "precondition_failed", "stale version: expected 3, the segment is at version 4")},
			want: []wantReq{
				{method: "GET", path: segmentPathTest},
				{method: "PATCH", path: segmentPathTest, header: map[string]string{"If-Match": `"3"`}, body: `{"description":"x"}`},
			},
			code:   ExitConflict,
			stderr: "interlock: stale version: expected 3, the segment is at version 4\n",
		},
	})
}

func TestSegmentsStateCommands(t *testing.T) {
	archived := sampleSegment()
	archived.Archived, archived.Version = true, 4
	runCases(t, []cmdCase{
		{
			name:    "archive",
			args:    []string{"segments", "archive", "production/beta-testers", "--reason", "done", "--if-version", "3"},
			replies: []reply{segmentReply(t, 200, archived)},
			want:    []wantReq{{method: "POST", path: segmentPathTest + "/archive", body: `{"reason":"done","version":3}`}},
			stdout:  "archived production/beta-testers: archived (version 4)\n",
		},
		{
			name:    "archive a segment live flags use",
			args:    []string{"segments", "archive", "production/beta-testers"},
			replies: []reply{errReply(409, "conflict", "archive segment production/beta-testers: segment is in use: flag checkout still uses production/beta-testers")},
			want:    []wantReq{{method: "POST", path: segmentPathTest + "/archive", body: `{}`}},
			code:    ExitConflict,
			stderr:  "flag checkout still uses production/beta-testers\n",
		},
		{
			name:    "unarchive",
			args:    []string{"segments", "unarchive", "production/beta-testers"},
			replies: []reply{segmentReply(t, 200, sampleSegment())},
			want:    []wantReq{{method: "POST", path: segmentPathTest + "/unarchive", body: `{}`}},
			stdout:  "unarchived production/beta-testers: active (version 3)\n",
		},
		{
			name:    "unarchive as JSON",
			args:    []string{"segments", "unarchive", "production/beta-testers", "-o", "json"},
			replies: []reply{segmentReply(t, 200, sampleSegment())},
			want:    []wantReq{{method: "POST", path: segmentPathTest + "/unarchive", body: `{}`}},
			stdout:  indent(t, mustJSON(t, sampleSegment())),
		},
	})
}

// TestSegmentsUsageErrors checks that a wrong segments command line exits 2 and sends nothing.
func TestSegmentsUsageErrors(t *testing.T) {
	tests := []struct {
		name   string
		args   []string
		stderr string
	}{
		{"segments without a subcommand", []string{"segments"}, "interlock: segments needs a subcommand"},
		{"unknown subcommand", []string{"segments", "kill", "production/x"}, `unknown command "segments kill"`},
		{"ref without a slash", []string{"segments", "get", "beta"}, `"beta" is not ENV/SEGMENT`},
		{"bad key", []string{"segments", "get", "production/a..b"}, "keys are 1-200 characters"},
		{"bad environment", []string{"segments", "list", "PROD"}, "environment names are"},
		{"condition without an operator", []string{"segments", "create", "production/x", "--condition", "plan"}, "is not ATTRIBUTE OPERATOR VALUE"},
		{"unknown operator", []string{"segments", "create", "production/x", "--condition", "plan is beta"}, `"is" is not one of`},
		{"condition without values", []string{"segments", "create", "production/x", "--condition", "plan in"}, "in needs at least one value"},
		{"numbers for gt", []string{"segments", "create", "production/x", "--condition", "age gt old"}, `gt compares numbers, and "old" is not one`},
		{"a segment in a segment", []string{"segments", "create", "production/x", "--condition", "targetingKey inSegment y"}, "cannot refer to other segments"},
		{"exists with values", []string{"segments", "create", "production/x", "--condition", "email exists yes"}, "exists takes no values"},
		{"a bad regular expression", []string{"segments", "create", "production/x", "--condition", "email matches ("}, "regular expression"},
		{"both condition flags", []string{"segments", "create", "production/x", "--condition", "a exists", "--conditions", "[]"}, "not both"},
		{"conditions not an array", []string{"segments", "create", "production/x", "--conditions", `{"a":1}`}, "JSON array of conditions"},
		{"an empty key", []string{"segments", "create", "production/x", "--include", ""}, "targeting keys are 1-256 bytes"},
		{"file and flags", []string{"segments", "create", "production/x", "--file", "-", "--include", "a"}, "leave out --include"},
		{"file that is not JSON", []string{"segments", "create", "production/x", "--file", "-"}, "not a JSON object"},
		{"set with nothing", []string{"segments", "set", "production/x"}, "nothing to change"},
		{"set a key twice", []string{"segments", "set", "production/x", "--include", "a", "--remove", "a"}, `key "a" is given to more than one`},
		{"set with a patch that is not an object", []string{"segments", "set", "production/x", "--patch", "[1]"}, "a merge patch is a JSON object"},
		{"archive with a bad version", []string{"segments", "archive", "production/x", "--if-version", "0"}, "versions are whole numbers"},
		{"history with an extra argument", []string{"segments", "history", "production/x", "more"}, `unexpected argument "more"`},
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

func TestSegmentsHelp(t *testing.T) {
	res := runCLI(t, nil, "", "help", "segments")
	if res.code != ExitOK || res.stderr != "" {
		t.Fatalf("exit code %d, stderr %q", res.code, res.stderr)
	}
	for _, name := range []string{"list", "get", "create", "set", "archive", "unarchive", "history"} {
		if !strings.Contains(res.stdout, "  segments "+name+" ") {
			t.Errorf("help segments does not list %s:\n%s", name, res.stdout)
		}
	}
	if strings.Contains(res.stdout, "  flags ") {
		t.Errorf("help segments lists flag commands:\n%s", res.stdout)
	}
	for _, args := range [][]string{{"help", "segments", "set"}, {"segments", "set", "--help"}} {
		res := runCLI(t, nil, "", args...)
		if res.code != ExitOK || !strings.Contains(res.stdout, "--remove KEY") || !strings.Contains(res.stdout, "--if-version N") {
			t.Errorf("%v: exit code %d, stdout %q", args, res.code, res.stdout)
		}
	}
}

func TestParseCondition(t *testing.T) {
	tests := []struct {
		in   string
		want string // as JSON; "" for an error
	}{
		{"plan in beta,alpha", `{"attribute":"plan","operator":"in","values":["beta","alpha"]}`},
		{"  plan   in   beta ,  alpha ", `{"attribute":"plan","operator":"in","values":["beta","alpha"]}`},
		{"age gte 18", `{"attribute":"age","operator":"gte","values":[18]}`},
		{"score lt -1.5e3", `{"attribute":"score","operator":"lt","values":[-1500]}`},
		{"email exists", `{"attribute":"email","operator":"exists"}`},
		{"zip eq 01234", `{"attribute":"zip","operator":"eq","values":["01234"]}`},
		{"name matches ^a b$", `{"attribute":"name","operator":"matches","values":["^a b$"]}`},
		{"v semverGt 1.2.3", `{"attribute":"v","operator":"semverGt","values":["1.2.3"]}`},
		{"t before 2026-01-02T15:04:05Z", `{"attribute":"t","operator":"before","values":["2026-01-02T15:04:05Z"]}`},
		{"", ""}, {"plan", ""}, {"plan in", ""}, {"age gt x", ""}, {"age gt NaN", ""}, {"age gt -Inf", ""}, {"age gt 1e999", ""}, {"v semverGt one", ""},
		{"k inSegment s", ""}, {"k notInSegment s", ""}, {"a exists b", ""}, {"a nope b", ""},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			c, err := parseCondition(tt.in)
			if tt.want == "" {
				if err == nil {
					t.Fatalf("accepted as %s", mustJSON(t, c))
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := mustJSON(t, c); got != tt.want {
				t.Fatalf("got %s, want %s", got, tt.want)
			}
		})
	}
}

// FuzzParseCondition: parseCondition never panics, and what it accepts passes the server's
// rules for a segment condition.
func FuzzParseCondition(f *testing.F) {
	for _, s := range []string{"plan in beta,alpha", "age gte 18", "email exists", "a matches (", "k inSegment x", "", " , ", "a lt 1e999"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		c, err := parseCondition(s)
		if err != nil {
			return
		}
		seg := events.SegmentConfig{Conditions: []events.Condition{c}}
		if err := seg.Validate(); err != nil {
			t.Fatalf("%q accepted as %+v, which the server refuses: %v", s, c, err)
		}
	})
}
