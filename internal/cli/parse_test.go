package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"math"
	"slices"
	"strings"
	"testing"
	"time"
	"unicode"

	"github.com/interlock-dev/interlock/events"
	"github.com/interlock-dev/interlock/projections"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

func TestParseRef(t *testing.T) {
	tests := []struct {
		in      string
		want    ref
		wantErr string
	}{
		{in: "production/checkout-v2", want: ref{"production", "checkout-v2"}},
		{in: "dev-1/DeptA.TeamB.66623", want: ref{"dev-1", "DeptA.TeamB.66623"}},
		{in: "checkout", wantErr: "is not ENV/FLAG"},
		{in: "/checkout", wantErr: "environment names"},
		{in: "production/", wantErr: "keys are"},
		{in: "Production/x", wantErr: "environment names"},
		{in: "production/a/b", wantErr: "keys are"},
		{in: "production/a b", wantErr: "keys are"},
		{in: "production/.a", wantErr: "keys are"},
		{in: "", wantErr: "is not ENV/FLAG"},
	}
	for _, tc := range tests {
		t.Run(tc.in, func(t *testing.T) {
			got, err := parseRef(tc.in)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("got %v, %v; want an error holding %q", got, err, tc.wantErr)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("got %v, %v; want %v", got, err, tc.want)
			}
		})
	}
	if _, err := parseRef("production/a b"); !errors.Is(err, events.ErrInvalid) {
		t.Errorf("a key breaking the rules: %v, want events.ErrInvalid", err)
	}
}

func TestParseVariant(t *testing.T) {
	tests := []struct {
		in        string
		name, val string
		wantErr   string
	}{
		{in: "on=true", name: "on", val: "true"},
		{in: "ttl=30", name: "ttl", val: "30"},
		{in: `color="blue"`, name: "color", val: `"blue"`},
		{in: `cfg={ "a": [1, 2] }`, name: "cfg", val: `{"a":[1,2]}`},
		{in: "gone=null", name: "gone", val: "null"},
		{in: "eq==1", wantErr: `value "=1" is not JSON`},
		{in: "x=", wantErr: `value "" is not JSON`},
		{in: "color=blue", wantErr: `a string needs JSON quotes: color='"blue"'`},
		{in: "on", wantErr: "is not name=JSON"},
		{in: "=true", wantErr: "variant names are"},
		{in: "a b=true", wantErr: "variant names are"},
		{in: strings.Repeat("n", 65) + "=1", wantErr: "variant names are"},
		{in: "two=1 2", wantErr: "is not JSON"},
	}
	for _, tc := range tests {
		t.Run(tc.in, func(t *testing.T) {
			got, err := parseVariant(tc.in)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("got %v, %v; want an error holding %q", got, err, tc.wantErr)
				}
				return
			}
			if err != nil || got.name != tc.name || string(got.value) != tc.val {
				t.Fatalf("got %s=%s, %v; want %s=%s", got.name, got.value, err, tc.name, tc.val)
			}
		})
	}
}

func TestParseTime(t *testing.T) {
	now := time.Date(2026, 3, 4, 12, 0, 0, 0, time.UTC)
	tests := []struct {
		in      string
		want    time.Time
		wantErr string
	}{
		{in: "2026-01-02T15:04:05Z", want: time.Date(2026, 1, 2, 15, 4, 5, 0, time.UTC)},
		{in: "2026-01-02T15:04:05.5+02:00", want: time.Date(2026, 1, 2, 13, 4, 5, 5e8, time.UTC)},
		{in: "5m", want: now.Add(-5 * time.Minute)},
		{in: "1h30m", want: now.Add(-90 * time.Minute)},
		{in: "90s", want: now.Add(-90 * time.Second)},
		{in: "2d", want: now.Add(-48 * time.Hour)},
		{in: "1d12h", want: now.Add(-36 * time.Hour)},
		{in: "0s", want: now},
		{in: ".5h", want: now.Add(-30 * time.Minute)},
		{in: "-5m", wantErr: "a duration ago"},
		{in: "+5m", wantErr: "a duration ago"},
		{in: "5", wantErr: "a duration ago"},
		{in: "yesterday", wantErr: "a duration ago"},
		{in: "1.5d", wantErr: "a duration ago"},
		{in: "d", wantErr: "a duration ago"},
		{in: "1dd", wantErr: "a duration ago"},
		{in: "", wantErr: "a duration ago"},
		{in: "2026-01-02", wantErr: "RFC 3339"},
		{in: "40000d", wantErr: "more than 100 years ago"},
		{in: "36000d100000h", wantErr: "more than 100 years ago"},
		{in: "9999999999h", wantErr: "a duration ago"},
	}
	for _, tc := range tests {
		t.Run(tc.in, func(t *testing.T) {
			got, err := parseTime(tc.in, now)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("got %v, %v; want an error holding %q", got, err, tc.wantErr)
				}
				return
			}
			if err != nil || !got.Equal(tc.want) {
				t.Fatalf("got %v, %v; want %v", got, err, tc.want)
			}
		})
	}
}

// parseLine runs "interlock t" with args through the real command line — the single-dash
// rewriting, cobra and pflag — on a command t that takes --reason, --all and any arguments, and
// returns what t received.
func parseLine(args []string) (pos []string, reason string, all bool, help string, err error) {
	var stdout bytes.Buffer
	r := &runner{stdin: strings.NewReader(""), stdout: &stdout, stderr: io.Discard, getenv: func(string) string { return "" }, now: time.Now}
	var reasonFlag *string
	var allFlag *bool
	t := &command{name: "t", maxArgs: math.MaxInt, offline: true, setup: func(fs *pflag.FlagSet) action {
		reasonFlag = fs.String("reason", "", "")
		allFlag = fs.Bool("all", false, "")
		return func(_ context.Context, _ *session, p []string) error {
			pos = p
			return nil
		}
	}}
	err = r.execute(context.Background(), r.rootCommand(append(commands(), t)), append([]string{"t"}, args...))
	return pos, *reasonFlag, *allFlag, stdout.String(), err
}

func TestParseArgs(t *testing.T) {
	tests := []struct {
		name    string
		args    []string
		pos     []string
		reason  string
		all     bool
		wantErr string
	}{
		{name: "flags after positional", args: []string{"prod/x", "--reason", "r", "--all"}, pos: []string{"prod/x"}, reason: "r", all: true},
		{name: "flags before positional", args: []string{"--all", "-reason=r", "prod/x"}, pos: []string{"prod/x"}, reason: "r", all: true},
		{name: "interleaved", args: []string{"a", "--reason", "r", "b", "--all=false", "c"}, pos: []string{"a", "b", "c"}, reason: "r"},
		{name: "a value that looks like a flag", args: []string{"a", "--reason", "--all"}, pos: []string{"a"}, reason: "--all"},
		{name: "single dashes", args: []string{"-all", "-reason", "-5m", "a"}, pos: []string{"a"}, reason: "-5m", all: true},
		{name: "dash is positional", args: []string{"-", "--all"}, pos: []string{"-"}, all: true},
		{name: "after -- all positional", args: []string{"--all", "--", "--reason", "x"}, pos: []string{"--reason", "x"}, all: true},
		{name: "missing value", args: []string{"a", "--reason"}, wantErr: "flag needs an argument: --reason"},
		{name: "unknown", args: []string{"--bogus", "a"}, wantErr: "unknown flag: --bogus"},
		{name: "unknown with one dash", args: []string{"-bogus", "a"}, wantErr: "unknown flag: --bogus"},
		{name: "bad bool", args: []string{"--all=maybe"}, wantErr: `for "--all" flag`},
		{name: "one-letter flag keeps one dash", args: []string{"-z"}, wantErr: "in -z"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			pos, reason, all, _, err := parseLine(tc.args)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) || !errors.Is(err, errUsage) {
					t.Fatalf("got %v; want a usage error holding %q", err, tc.wantErr)
				}
				return
			}
			if err != nil || !slices.Equal(pos, tc.pos) || reason != tc.reason || all != tc.all {
				t.Fatalf("got %q reason=%q all=%v, %v; want %q reason=%q all=%v", pos, reason, all, err, tc.pos, tc.reason, tc.all)
			}
		})
	}
	t.Run("help", func(t *testing.T) {
		if _, _, _, help, err := parseLine([]string{"x", "--help"}); err != nil || !strings.HasPrefix(help, "Usage:\n  interlock t") {
			t.Fatalf("got %v and %q, want the help of t", err, help)
		}
	})
}

// TestSingleDash checks the rewriting of single-dash long flags on the real command tree.
func TestSingleDash(t *testing.T) {
	r := &runner{getenv: func(string) string { return "" }}
	root := r.rootCommand(commands())
	tests := []struct {
		args, want string
	}{
		{"kill -reason x prod/a", "kill --reason x prod/a"},
		{"kill -reason=x prod/a -wait", "kill --reason=x prod/a --wait"},
		{"-server http://a -o json flags list prod", "--server http://a -o json flags list prod"},
		{"-output json --o json -o=json flags list", "--output json -o json -o=json flags list"},
		{"audit -since -5m -env prod", "audit --since -5m --env prod"},
		{"audit verify -env prod", "audit verify --env prod"},
		{"flags get -- -version", "flags get -- -version"},
		{"flags list prod -archived -at 5m", "flags list prod --archived --at 5m"},
		{"serve -http 127.0.0.1:0 -no-sync -replicas 1", "serve --http 127.0.0.1:0 --no-sync --replicas 1"},
		{"flags diff prod/a -1", "flags diff prod/a -1"},
		{"- -h -help", "- -h --help"},
		{"flags list ---x --=y", "flags list ---x --=y"},
	}
	for _, tc := range tests {
		if got := strings.Join(singleDash(root, strings.Fields(tc.args)), " "); got != tc.want {
			t.Errorf("%s: got %s, want %s", tc.args, got, tc.want)
		}
	}
}

func TestParseServer(t *testing.T) {
	tests := []struct{ in, want, wantErr string }{
		{in: "http://127.0.0.1:8080", want: "http://127.0.0.1:8080"},
		{in: "https://flags.example.com/", want: "https://flags.example.com"},
		{in: "localhost:8080", want: "http://localhost:8080"},
		{in: "http://proxy/interlock/", want: "http://proxy/interlock"},
		{in: "ftp://x", wantErr: "give the server's address"},
		{in: "http://", wantErr: "give the server's address"},
		{in: "http://x/?a=b", wantErr: "only scheme, host, port"},
		{in: "http://user:secret@x", wantErr: "only scheme, host, port"},
		{in: "http://x y", wantErr: "give the server's address"},
	}
	for _, tc := range tests {
		t.Run(tc.in, func(t *testing.T) {
			u, err := parseServer(tc.in)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("got %v, %v; want an error holding %q", u, err, tc.wantErr)
				}
				if strings.Contains(err.Error(), "secret") {
					t.Errorf("the error shows the password: %v", err)
				}
				return
			}
			if err != nil || u.String() != tc.want {
				t.Fatalf("got %v, %v; want %s", u, err, tc.want)
			}
		})
	}
}

func TestClean(t *testing.T) {
	tests := []struct{ in, want string }{
		{"plain", "plain"},
		{"tab\tnew\nline\r", "tab new line "},
		{"\x1b[2Jred", "\uFFFD[2Jred"},
		{"bad \xff utf8", "bad \uFFFD utf8"},
		{"c1 \u009b", "c1 \uFFFD"},
		{"café → ok", "café → ok"},
	}
	for _, tc := range tests {
		if got := clean(tc.in); got != tc.want {
			t.Errorf("clean(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func FuzzParseRef(f *testing.F) {
	for _, s := range []string{"production/checkout-v2", "a/b.c", "x", "/", "a//b", "A/b", "a/b c", "é/x"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		r, err := parseRef(s)
		if err != nil {
			if err.Error() == "" {
				t.Fatal("empty error")
			}
			return
		}
		if events.ValidateEnvironment(r.env) != nil || events.ValidateFlagKey(r.key) != nil {
			t.Fatalf("accepted %q as %v", s, r)
		}
		if r.String() != s {
			t.Fatalf("%q parsed as %v", s, r)
		}
	})
}

// FuzzParseSegmentRef: segment refs go through the same parser as flag refs, with the segment
// key rules.
func FuzzParseSegmentRef(f *testing.F) {
	for _, s := range []string{"production/beta-testers", "a/tenant.acme", "x", "/", "a//b", "A/b", "a/b c", "é/x"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		r, err := segmentEntity.parseRef(s)
		if err != nil {
			if err.Error() == "" {
				t.Fatal("empty error")
			}
			return
		}
		if events.ValidateEnvironment(r.env) != nil || events.ValidateSegmentKey(r.key) != nil || r.String() != s {
			t.Fatalf("accepted %q as %v", s, r)
		}
	})
}

func FuzzParseVariant(f *testing.F) {
	for _, s := range []string{"on=true", "ttl=30", `c="blue"`, `o={"a":1}`, "x=null", "=1", "a=", "a=b", "a==", "a=\x00"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		v, err := parseVariant(s)
		if err != nil {
			if err.Error() == "" {
				t.Fatal("empty error")
			}
			return
		}
		if !json.Valid(v.value) || checkVariantName(v.name) != nil {
			t.Fatalf("accepted %q as %s=%s", s, v.name, v.value)
		}
		var buf bytes.Buffer
		if err := json.Compact(&buf, v.value); err != nil || !bytes.Equal(buf.Bytes(), v.value) {
			t.Fatalf("value %s is not compact", v.value)
		}
		again, err := parseVariant(v.name + "=" + string(v.value))
		if err != nil || again.name != v.name || !bytes.Equal(again.value, v.value) {
			t.Fatalf("%s=%s does not parse back: %v", v.name, v.value, err)
		}
	})
}

func FuzzParseTime(f *testing.F) {
	for _, s := range []string{"5m", "1h30m", "2d", "1d12h", "2026-01-02T15:04:05Z", "-5m", "9999999999999h", "1d-1h", ".5s", "0"} {
		f.Add(s)
	}
	now := time.Date(2026, 3, 4, 12, 0, 0, 0, time.UTC)
	f.Fuzz(func(t *testing.T, s string) {
		got, err := parseTime(s, now)
		if err != nil {
			if err.Error() == "" {
				t.Fatal("empty error")
			}
			return
		}
		if _, rfc := time.Parse(time.RFC3339Nano, s); rfc != nil {
			// A relative time is in the past, at most 100 years ago.
			if got.After(now) || got.Before(now.Add(-maxAgo)) {
				t.Fatalf("%q is %v, not within 100 years before now", s, got)
			}
		}
		if formatTime(got) == "" {
			t.Fatal("empty formatted time")
		}
	})
}

// TestSingleDashEveryFlag gives every flag of every command, serve's included, with one dash and
// checks that the command's parse sets it.
func TestSingleDashEveryFlag(t *testing.T) {
	r := &runner{getenv: func(string) string { return "" }}
	var visit func(c *cobra.Command)
	visit = func(c *cobra.Command) {
		for _, sub := range c.Commands() {
			visit(sub)
		}
		words := strings.Fields(commandName(c))
		if len(words) == 0 || c.HasSubCommands() {
			return
		}
		fs := c.Flags()
		fs.AddFlagSet(c.InheritedFlags())
		fs.VisitAll(func(f *pflag.Flag) {
			line := append(slices.Clone(words), "-"+f.Name)
			if f.NoOptDefVal == "" {
				value := "1"
				if f.Value.Type() == "duration" {
					value = "1s"
				}
				line = append(line, value)
			}
			args := singleDash(c.Root(), line)[len(words):]
			if err := fs.Parse(args); err != nil || !f.Changed {
				t.Errorf("interlock %s: %q set nothing (%v)", strings.Join(line, " "), args, err)
			}
			f.Changed = false
		})
	}
	visit(r.rootCommand(commands()))
}

func FuzzParseArgs(f *testing.F) {
	f.Add("prod/x\x00--reason\x00r\x00--all")
	f.Add("--\x00--all")
	f.Add("-o\x00json\x00--timeout=1s\x00-")
	f.Add("-reason\x00-all\x00-o=json")
	f.Add("--reason")
	f.Fuzz(func(t *testing.T, joined string) {
		args := strings.Split(joined, "\x00")
		pos, _, _, _, err := parseLine(args)
		if err != nil {
			if !errors.Is(err, errUsage) {
				t.Fatalf("error %v is not a usage error", err)
			}
			return
		}
		if len(pos) > len(args) {
			t.Fatalf("%d positional arguments from %d", len(pos), len(args))
		}
	})
}

// FuzzRenderFlag feeds the renderers whatever a server might send: they never panic and never
// print a control character other than a line break.
func FuzzRenderFlag(f *testing.F) {
	f.Add(mustJSONf(sampleFlag()))
	f.Add(`{"key":"a\u001b[2J","variants":{"x\n":"\u0000"},"defaultServe":{"split":{"a":0,"b":-5}},"rules":[{"conditions":[{"attribute":"x","operator":"in","values":[1,null,{"a":1}]}],"serve":{"split":{}}}]}`)
	f.Add(`{"enabled":true,"defaultServe":{"split":{"a":2147483647,"b":2147483647}}}`)
	f.Fuzz(func(t *testing.T, data string) {
		var fl projections.Flag
		if json.Unmarshal([]byte(data), &fl) != nil {
			return
		}
		var buf bytes.Buffer
		if err := renderFlag(&buf, &fl); err != nil {
			t.Fatal(err)
		}
		if err := renderFlagList(&buf, "env", []projections.Flag{fl}); err != nil {
			t.Fatal(err)
		}
		buf.WriteString(serving(&fl))
		for _, r := range buf.String() {
			if r != '\n' && unicode.IsControl(r) {
				t.Fatalf("output holds control character %U:\n%q", r, buf.String())
			}
		}
	})
}

func mustJSONf(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return string(b)
}
