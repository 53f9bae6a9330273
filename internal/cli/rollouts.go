package cli

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/interlock-dev/interlock/apiv1"
	"github.com/interlock-dev/interlock/client"
	"github.com/interlock-dev/interlock/events"
	"github.com/interlock-dev/interlock/projections"
	"github.com/spf13/pflag"
)

// rolloutPath is the API path of a flag's rollout, or of a command on it when verb is not empty.
func rolloutPath(r ref, verb string) string {
	p := client.FlagPath(r.env, r.key, "rollout")
	if verb != "" {
		p += "/" + verb
	}
	return p
}

func rolloutCreate() *command {
	return &command{
		name: "rollout create", operands: "ENV/FLAG --file F",
		args:    "ENV/FLAG --file F|- [--reason R] [--if-version N]",
		summary: "Record a rollout plan for a flag; nothing changes until it is started.",
		help: `--file reads the plan (- for standard input): a JSON object such as
  {"treatment": "on", "control": "off",
   "stages": [{"percent": 1, "minHold": "10m"}, {"percent": 25}, {"percent": 100}],
   "metrics": [{"name": "errors", "requests": "http_requests_total{app=\"shop\"}",
                "errors": "http_errors_total{app=\"shop\"}"}],
   "source": {"type": "prometheus", "url": "http://prometheus:9090"},
   "onTrip": "kill"}
Fields left out take their defaults (stages 1, 5, 25, 50, 95, 100; tick 15s; alpha 0.01; onTrip
kill). A flag refuses a new plan while a rollout is running or paused (exit 4): abort it first.
With --if-version the plan applies only to that version of the flag.`,
		minArgs: 1, maxArgs: 1,
		setup: func(fs *pflag.FlagSet) action {
			file := fs.String("file", "", "read the plan from `FILE` (- for standard input; required)")
			reason := fs.String("reason", "", "why: `TEXT` recorded with the event")
			var ifVersion versionFlag
			fs.Var(&ifVersion, "if-version", "apply only to version `N` of the flag")
			return func(ctx context.Context, s *session, pos []string) error {
				r, err := s.ref(pos[0])
				if err != nil {
					return err
				}
				if !fs.Changed("file") || *file == "" {
					return usagef(s.cmd, "--file is required: the rollout plan, a JSON object (- for standard input)")
				}
				if err := checkReason("reason", *reason); err != nil {
					return usagef(s.cmd, "%v", err)
				}
				data, err := s.readInput(*file)
				if err != nil {
					return err
				}
				var doc map[string]json.RawMessage
				if err := json.Unmarshal(data, &doc); err != nil || doc == nil {
					return usagef(s.cmd, "--file %s: a rollout plan is a JSON object: %v", truncate(*file), jsonProblem(err))
				}
				h := reasonHeaders(*reason)
				if ifVersion.set {
					h.Set("If-Match", client.ETag(ifVersion.v))
				}
				resp, err := s.client.do(ctx, client.Request{Method: http.MethodPost, Path: rolloutPath(r, ""), Header: h,
					ContentType: "application/json", Body: data})
				if err != nil {
					return err
				}
				if s.json {
					return s.printJSON(resp.Body)
				}
				var st apiv1.RolloutStatus
				if err := decodeJSON(resp, "the rollout", &st); err != nil {
					return err
				}
				fmt.Fprintf(s.stdout, "created a rollout of %s/%s (version %d)\n\n", clean(st.Environment), clean(st.Flag), st.Version)
				return renderRollout(s.stdout, &st)
			}
		},
	}
}

func rolloutStatusCommand() *command {
	return &command{
		name: "rollout status", operands: "ENV/FLAG", args: "ENV/FLAG",
		summary: "Show a flag's rollout: stage, split, the guard's decisions and live statistics.",
		help: `The live statistics are the guard's view as of its last tick, when this server runs the guard
for the rollout: per metric, the e-value of the test for a regression (the guard trips at 1/alpha),
its always-valid p-value, the estimated ratio (R-HAT) of the treatment's error rate to the
control's, and the e-value of the evidence for advancing (READY once it suffices).`,
		minArgs: 1, maxArgs: 1,
		setup: func(fs *pflag.FlagSet) action {
			return func(ctx context.Context, s *session, pos []string) error {
				r, err := s.ref(pos[0])
				if err != nil {
					return err
				}
				resp, err := s.client.get(ctx, rolloutPath(r, ""), nil)
				if err != nil {
					return err
				}
				return show(s, resp, "the rollout", func(st *apiv1.RolloutStatus) error { return renderRollout(s.stdout, st) })
			}
		},
	}
}

// rolloutVerb describes one command on a rollout.
type rolloutVerb struct {
	verb, done, summary string
	// reason says a reason is required; from that the command takes --from.
	reason, from bool
}

var rolloutVerbs = []rolloutVerb{
	{verb: "start", done: "started", summary: "Start a created rollout at its first stage."},
	{verb: "pause", done: "paused", summary: "Stop the guard from advancing a rollout; the split stays."},
	{verb: "resume", done: "resumed", summary: "Let a paused rollout go on; its stage begins afresh."},
	{verb: "advance", done: "advanced", reason: true, from: true, summary: "Move a rollout to its next stage, or complete it from the last."},
	{verb: "stepback", done: "stepped back", reason: true, from: true, summary: "Move a rollout back one stage."},
	{verb: "abort", done: "aborted", reason: true, summary: "End a rollout: the flag serves the control to everyone (on-call may)."},
	{verb: "rearm", done: "re-armed the guard of", reason: true, summary: "Clear a tripped guard on a person's word; the stage begins afresh."},
}

// rolloutAction is `rollout VERB`.
func rolloutAction(v rolloutVerb) *command {
	operands, args := "ENV/FLAG", "ENV/FLAG"
	if v.reason {
		operands += " --reason R"
		args += " --reason R"
	} else {
		args += " [--reason R]"
	}
	if v.from {
		args += " [--from N]"
	}
	args += " [--id ID] [--if-version N]"
	help := `The command applies only to the version of the flag given by --if-version. Without it, the
rollout is read first and the command applies to the version read, so that a change made in between
(by a person or by the guard) is refused (exit 4) rather than acted on blindly. --id names the
rollout meant; a newer rollout of the flag then refuses the command (exit 3).`
	if v.from {
		help += `

--from N is the stage the rollout moves from (1 is the first, as status shows it). Sending the same
command twice moves the rollout once: the second finds it has already left stage N.`
	}
	if v.reason {
		help += "\n\nThe reason is required: it is recorded with who and when."
	}
	return &command{
		name: "rollout " + v.verb, operands: operands, args: args,
		summary: v.summary, help: help,
		minArgs: 1, maxArgs: 1,
		setup: func(fs *pflag.FlagSet) action {
			usage := "why: `TEXT` recorded with the event"
			if v.reason {
				usage += " (required)"
			}
			reason := fs.String("reason", "", usage)
			var from *int
			if v.from {
				from = fs.Int("from", 0, "the stage `N` the rollout moves from, 1 for the first (default the current one)")
			}
			id := fs.String("id", "", "the rollout `ID` meant (default the flag's latest)")
			var ifVersion versionFlag
			fs.Var(&ifVersion, "if-version", "apply only to version `N` of the flag")
			return func(ctx context.Context, s *session, pos []string) error {
				r, err := s.ref(pos[0])
				if err != nil {
					return err
				}
				if v.reason && strings.TrimSpace(*reason) == "" {
					return usagef(s.cmd, "--reason is required: say why")
				}
				if err := checkReason("reason", *reason); err != nil {
					return usagef(s.cmd, "%v", err)
				}
				body := struct {
					Reason string `json:"reason,omitempty"`
					From   *int   `json:"from,omitempty"`
					ID     string `json:"id,omitempty"`
				}{Reason: *reason, ID: *id}
				if v.from && fs.Changed("from") {
					if *from < 1 {
						return usagef(s.cmd, "--from %d: stages count from 1", *from)
					}
					index := *from - 1
					body.From = &index
				}
				ifMatch := ""
				if ifVersion.set {
					ifMatch = client.ETag(ifVersion.v)
				} else if ifMatch, err = s.rolloutETag(ctx, r); err != nil {
					return err
				}
				h := http.Header{}
				h.Set("If-Match", ifMatch)
				resp, err := s.client.postJSON(ctx, rolloutPath(r, v.verb), h, body)
				if err != nil {
					return err
				}
				if s.json {
					return s.printJSON(resp.Body)
				}
				var st apiv1.RolloutStatus
				if err := decodeJSON(resp, "the rollout", &st); err != nil {
					return err
				}
				_, err = fmt.Fprintf(s.stdout, "%s %s/%s: %s (version %d)\n", v.done, clean(st.Environment), clean(st.Flag), rolloutSummary(&st), st.Version)
				return err
			}
		},
	}
}

// rolloutETag reads the rollout of the flag r and returns the ETag of the version read, for
// If-Match.
func (s *session) rolloutETag(ctx context.Context, r ref) (string, error) {
	st, err := s.client.Rollout(ctx, r.env, r.key)
	if err != nil {
		return "", err
	}
	if st.Version == 0 {
		return "", fmt.Errorf("the server answered %s without a version", r)
	}
	return client.ETag(st.Version), nil
}

// stageText is "2/6 at 5%".
func stageText(st *apiv1.RolloutStatus) string {
	if st.Stage.Count == 0 {
		return "-"
	}
	return fmt.Sprintf("%d/%d at %s%%", st.Stage.Index+1, st.Stage.Count, events.PercentString(st.Stage.Percent))
}

// rolloutSummary says in a line where the rollout stands and what the flag serves.
func rolloutSummary(st *apiv1.RolloutStatus) string {
	if st.Rollout == nil {
		return "no rollout"
	}
	s := clean(st.Rollout.Status)
	switch st.Rollout.Status {
	case projections.RolloutRunning, projections.RolloutPaused:
		s += ", stage " + stageText(st)
	}
	if st.Rollout.Guard.Tripped {
		s += ", guard tripped"
	}
	if !st.Enabled {
		return s + "; the flag is off"
	}
	return s + ", serving " + showServe(&st.Split)
}

// renderRollout prints a rollout's status as a block, then the guard's live statistics if any.
func renderRollout(w io.Writer, st *apiv1.RolloutStatus) error {
	ro := st.Rollout
	if ro == nil {
		_, err := fmt.Fprintf(w, "%s/%s has no rollout\n", clean(st.Environment), clean(st.Flag))
		return err
	}
	var lines []line
	add := func(label, value string) { lines = append(lines, line{label, value}) }
	flagLine := clean(st.Environment) + "/" + clean(st.Flag)
	if !st.Enabled {
		flagLine += " (off: serving its off variant to everyone)"
	}
	add("flag", flagLine)
	add("rollout", cell(ro.ID))
	add("status", cell(ro.Status))
	stage := stageText(st)
	switch {
	case ro.Status == projections.RolloutCreated:
		stage += " (not started)"
	case ro.Active():
		stage += fmt.Sprintf(" (min hold %s, since %s)", time.Duration(st.Stage.MinHold), showTime(ro.StageStartedAt))
	}
	add("stage", stage)
	add("split", showServe(&st.Split))
	add("plan", fmt.Sprintf("%s against %s; on trip %s; %s", strconv.Quote(clean(ro.Plan.Treatment)), strconv.Quote(clean(ro.Plan.Control)),
		cell(ro.Plan.OnTrip), map[bool]string{true: "advanced by hand", false: "advanced by the guard"}[ro.Plan.Manual]))
	g := ro.Guard
	add("guard", map[bool]string{true: cell(g.State), false: "no decision yet"}[g.State != ""])
	add("tripped", map[bool]string{true: "yes: it advances again once re-armed (interlock rollout rearm)", false: "no"}[g.Tripped])
	if !g.At.IsZero() {
		add("decision", fmt.Sprintf("%s at %s (action %s, stage %d)", cell(g.Cause), showTime(g.At), cell(g.Action), g.Stage+1))
	}
	add("created", showTime(ro.CreatedAt)+" by "+cell(ro.CreatedBy))
	if !ro.EndedAt.IsZero() {
		add("ended", showTime(ro.EndedAt))
	}
	add("version", strconv.FormatUint(st.Version, 10))
	if err := renderBlock(w, lines); err != nil {
		return err
	}
	return renderLive(w, st.Live)
}

// liveView is the part of the guard's live status the CLI shows: the state, and per metric the
// trip test's e-value, always-valid p and r̂ and the advance test's e-value, from the latest
// evidence. Other fields are left alone.
type liveView struct {
	State      string       `json:"state"`
	StateAfter string       `json:"stateAfter"`
	Pending    string       `json:"pendingAction"`
	NextTick   time.Time    `json:"nextTick"`
	Time       time.Time    `json:"time"`
	Metrics    []liveMetric `json:"metrics"`
	// Latest is the evidence of the guard's latest call, which holds the metrics.
	Latest *liveView `json:"latest"`
}

// liveMetric is one metric of the guard's evidence.
type liveMetric struct {
	Name  string `json:"name"`
	Kind  string `json:"kind"`
	Blind string `json:"blind"`
	R1    struct {
		E    json.RawMessage `json:"e"`
		P    json.RawMessage `json:"p"`
		RHat json.RawMessage `json:"rHat"`
	} `json:"r1"`
	R5 struct {
		E   json.RawMessage `json:"e"`
		Met bool            `json:"met"`
	} `json:"r5"`
	// R2 guards msprt and mean metrics: its mixture likelihood ratio Λ (an e-value) and the
	// estimated ratio of the treatment's rate or mean to the control's.
	R2 struct {
		LogLambda json.RawMessage `json:"logLambda"`
		Ratio     json.RawMessage `json:"ratio"`
		Active    bool            `json:"active"`
	} `json:"r2"`
}

// trip returns the metric's trip test columns: e-value, always-valid p and estimated ratio.
// R2 keeps no running maximum, so it has no always-valid p; before it runs it shows "-".
func (m *liveMetric) trip() (e, p, ratio string) {
	if m.Kind == "" || m.Kind == "ratio" {
		return showNumber(m.R1.E), showNumber(m.R1.P), showNumber(m.R1.RHat)
	}
	e = "-"
	if m.R2.Active {
		var l float64
		if err := json.Unmarshal(m.R2.LogLambda, &l); err == nil {
			e = showNumber(json.RawMessage(strconv.FormatFloat(math.Exp(l), 'g', -1, 64)))
		} else {
			e = showNumber(m.R2.LogLambda) // "NaN" or an infinity, as the server sent it
		}
	}
	return e, "-", showNumber(m.R2.Ratio)
}

// renderLive prints the guard's live statistics: a line with its state, then a table per metric
// when the status has them; a status of another shape as compact JSON. Nothing when there is none.
func renderLive(w io.Writer, raw json.RawMessage) error {
	if len(raw) == 0 || string(raw) == "null" {
		return nil
	}
	var lv liveView
	if err := json.Unmarshal(raw, &lv); err != nil || (lv.State == "" && lv.StateAfter == "" && len(lv.Metrics) == 0 && lv.Latest == nil) {
		_, err := fmt.Fprintf(w, "\nlive: %s\n", cell(showJSON(raw)))
		return err
	}
	state, at, metrics := lv.State, lv.Time, lv.Metrics
	if l := lv.Latest; l != nil {
		if state == "" {
			state = l.StateAfter
		}
		at, metrics = l.Time, l.Metrics
	}
	if state == "" {
		state = lv.StateAfter
	}
	head := "\nlive: " + cell(state)
	if !at.IsZero() {
		head += " as of " + showTime(at)
	}
	if !lv.NextTick.IsZero() {
		head += ", next tick " + showTime(lv.NextTick)
	}
	if lv.Pending != "" {
		head += ", pending " + cell(lv.Pending)
	}
	fmt.Fprintln(w, head)
	if len(metrics) == 0 {
		return nil
	}
	tw := newTable(w)
	fmt.Fprintln(tw, "METRIC\tKIND\tE-VALUE\tP\tR-HAT\tADVANCE E\tREADY\tBLIND")
	for _, m := range metrics {
		e, p, ratio := m.trip()
		advance, ready := showNumber(m.R5.E), map[bool]string{true: "yes", false: "no"}[m.R5.Met]
		if m.Kind != "" && m.Kind != "ratio" {
			advance, ready = "-", "-" // only ratio metrics advance
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", cell(m.Name), cell(cmp.Or(m.Kind, "ratio")), e, p, ratio, advance, ready, cell(m.Blind))
	}
	return tw.Flush()
}

// showNumber shows a statistic: four significant digits, or the text the server sent ("NaN",
// "+Inf"), "-" when absent.
func showNumber(raw json.RawMessage) string {
	if len(raw) == 0 || string(raw) == "null" {
		return "-"
	}
	var f float64
	if json.Unmarshal(raw, &f) == nil {
		return strconv.FormatFloat(f, 'g', 4, 64)
	}
	var s string
	if json.Unmarshal(raw, &s) == nil {
		return cell(s)
	}
	return cell(showJSON(raw))
}

// valvePath is the API path of a flag's valve, or of a command on it when verb is not empty.
func valvePath(r ref, verb string) string {
	p := client.FlagPath(r.env, r.key, "valve")
	if verb != "" {
		p += "/" + verb
	}
	return p
}

func valveConfigure() *command {
	return &command{
		name: "valve configure", operands: "ENV/FLAG --variant V",
		args:    "ENV/FLAG --variant V [--segment S] [--policy-file F] [--reason R] [--if-version N]",
		summary: "Make an operational flag a safety valve, or change what opening it serves.",
		help: `An open valve serves --variant to everyone, or to the members of --segment only, whatever the
flag's own rules say. --policy-file (- for standard input) lets the guard open and close the valve
by itself on a multi-window burn rate: a JSON object such as
  {"source": {"type": "prometheus", "url": "http://prometheus:9090"},
   "requests": "http_requests_total{route=\"/search\"}", "errors": "http_errors_total{route=\"/search\"}",
   "objective": 0.01, "burnRate": 14.4, "longWindow": "1h", "shortWindow": "5m"}
The configuration replaces the previous one. Without --if-version the flag is read first and the
change applies to the version read.`,
		minArgs: 1, maxArgs: 1,
		setup: func(fs *pflag.FlagSet) action {
			variant := fs.String("variant", "", "the variant `NAME` the open valve serves (required)")
			segment := fs.String("segment", "", "serve it only to the members of segment `KEY`")
			policy := fs.String("policy-file", "", "read the guard's policy from `FILE` (- for standard input)")
			reason := fs.String("reason", "", "why: `TEXT` recorded with the event")
			var ifVersion versionFlag
			fs.Var(&ifVersion, "if-version", "apply only to version `N` of the flag")
			return func(ctx context.Context, s *session, pos []string) error {
				r, err := s.ref(pos[0])
				if err != nil {
					return err
				}
				if *variant == "" {
					return usagef(s.cmd, "--variant is required: the variant the open valve serves")
				}
				if err := checkVariantName(*variant); err != nil {
					return usagef(s.cmd, "--variant %v", err)
				}
				if *segment != "" {
					if err := events.ValidateSegmentKey(*segment); err != nil {
						return usagef(s.cmd, "--segment %v", err)
					}
				}
				if err := checkReason("reason", *reason); err != nil {
					return usagef(s.cmd, "%v", err)
				}
				body := struct {
					Variant string          `json:"variant"`
					Segment string          `json:"segment,omitempty"`
					Policy  json.RawMessage `json:"policy,omitempty"`
				}{Variant: *variant, Segment: *segment}
				if fs.Changed("policy-file") {
					data, err := s.readInput(*policy)
					if err != nil {
						return err
					}
					var doc map[string]json.RawMessage
					if err := json.Unmarshal(data, &doc); err != nil || doc == nil {
						return usagef(s.cmd, "--policy-file %s: a valve policy is a JSON object: %v", truncate(*policy), jsonProblem(err))
					}
					body.Policy = data
				}
				data, err := json.Marshal(body)
				if err != nil {
					return fmt.Errorf("encode request: %w", err)
				}
				ifMatch, err := s.flagIfMatch(ctx, r, ifVersion)
				if err != nil {
					return err
				}
				h := reasonHeaders(*reason)
				h.Set("If-Match", ifMatch)
				resp, err := s.client.do(ctx, client.Request{Method: http.MethodPut, Path: valvePath(r, ""), Header: h,
					ContentType: "application/json", Body: data})
				if err != nil {
					return err
				}
				return s.showValveAction(resp, "configured valve")
			}
		},
	}
}

func valveOpen() *command {
	return &command{
		name: "valve open", operands: "ENV/FLAG --reason R", args: "ENV/FLAG --reason R [--for D | --expires TIME]",
		summary: "Open a safety valve: the flag serves the valve's variant, at once (on-call may).",
		help: `The valve stays open until closed or, with --for (such as 30m, 2h or 1d) or --expires (RFC 3339),
until then. Opening an open valve changes only its expiry. The reason is required: it is recorded
with who and when.`,
		minArgs: 1, maxArgs: 1,
		setup: func(fs *pflag.FlagSet) action {
			reason := fs.String("reason", "", "why: `TEXT` recorded with the event (required)")
			forD := fs.String("for", "", "close it by itself after `DURATION` (30m, 2h, 1d)")
			expires := fs.String("expires", "", "close it by itself at `TIME` (RFC 3339)")
			return func(ctx context.Context, s *session, pos []string) error {
				r, err := s.ref(pos[0])
				if err != nil {
					return err
				}
				if err := requireReason(s, *reason, " the valve opens"); err != nil {
					return err
				}
				body := struct {
					Reason  string `json:"reason"`
					For     string `json:"for,omitempty"`
					Expires string `json:"expires,omitempty"`
				}{Reason: *reason}
				switch {
				case *forD != "" && *expires != "":
					return usagef(s.cmd, "give --for or --expires, not both")
				case *forD != "":
					d, err := parseAgo(*forD)
					if err != nil || d <= 0 || d > 366*24*time.Hour {
						return usagef(s.cmd, "--for %q: give a duration of at most 366d, such as 30m, 2h or 1d", truncate(*forD))
					}
					body.For = d.String()
				case *expires != "":
					t, err := time.Parse(time.RFC3339Nano, *expires)
					if err != nil {
						return usagef(s.cmd, "--expires %q: give an RFC 3339 time such as 2026-01-02T15:04:05Z", truncate(*expires))
					}
					body.Expires = formatTime(t)
				}
				resp, err := s.client.postJSON(ctx, valvePath(r, "open"), nil, body)
				if err != nil {
					return err
				}
				return s.showValveAction(resp, "opened valve")
			}
		},
	}
}

func valveClose() *command {
	return &command{
		name: "valve close", operands: "ENV/FLAG --reason R", args: "ENV/FLAG --reason R",
		summary: "Close a safety valve: the flag serves its own configuration again (on-call may).",
		help:    `Closing a closed valve succeeds and changes nothing. The reason is required.`,
		minArgs: 1, maxArgs: 1,
		setup: func(fs *pflag.FlagSet) action {
			return reasonAction(fs, " the valve closes", func(r ref) string { return valvePath(r, "close") },
				func(s *session, resp *client.Response) error { return s.showValveAction(resp, "closed valve") })
		},
	}
}

func valveStatusCommand() *command {
	return &command{
		name: "valve status", operands: "ENV/FLAG", args: "ENV/FLAG",
		summary: "Show a safety valve: open or closed, what it serves, who opened it and why.",
		minArgs: 1, maxArgs: 1,
		setup: func(fs *pflag.FlagSet) action {
			return func(ctx context.Context, s *session, pos []string) error {
				r, err := s.ref(pos[0])
				if err != nil {
					return err
				}
				resp, err := s.client.get(ctx, valvePath(r, ""), nil)
				if err != nil {
					return err
				}
				return show(s, resp, "the valve", func(st *apiv1.ValveStatus) error { return renderValve(s.stdout, st) })
			}
		},
	}
}

// showValveAction prints the answer to a valve command: the JSON, or one line.
func (s *session) showValveAction(resp *client.Response, done string) error {
	return show(s, resp, "the valve", func(st *apiv1.ValveStatus) error {
		_, err := fmt.Fprintf(s.stdout, "%s %s/%s: %s (version %d)\n", done, clean(st.Environment), clean(st.Flag), valveSummary(st.Valve), st.Version)
		return err
	})
}

// valveServes is what the valve serves when open: `"off" to everyone`.
func valveServes(v *projections.Valve) string {
	to := "everyone"
	if v.Segment != "" {
		to = "the members of segment " + strconv.Quote(clean(v.Segment))
	}
	return strconv.Quote(clean(v.Variant)) + " to " + to
}

// valveSummary says in a line whether the valve is open and what it serves.
func valveSummary(v *projections.Valve) string {
	switch {
	case v == nil:
		return "not a valve"
	case v.Open && !v.Expires.IsZero():
		return "open, serving " + valveServes(v) + " until " + showTime(v.Expires)
	case v.Open:
		return "open, serving " + valveServes(v)
	}
	return "closed; opening it serves " + valveServes(v)
}

// renderValve prints a valve's state as a block.
func renderValve(w io.Writer, st *apiv1.ValveStatus) error {
	v := st.Valve
	if v == nil {
		_, err := fmt.Fprintf(w, "%s/%s is not a safety valve\n", clean(st.Environment), clean(st.Flag))
		return err
	}
	var lines []line
	add := func(label, value string) { lines = append(lines, line{label, value}) }
	add("valve", clean(st.Environment)+"/"+clean(st.Flag))
	if v.Open {
		add("state", "open since "+showTime(v.OpenedAt)+" by "+cell(v.OpenedBy))
		add("reason", cell(v.Reason))
		if !v.Expires.IsZero() {
			add("expires", showTime(v.Expires))
		} else {
			add("expires", "never: open until closed")
		}
		if v.Rollout != "" {
			add("opened for", "rollout "+cell(v.Rollout))
		}
	} else {
		add("state", "closed")
	}
	add("serves", valveServes(v)+map[bool]string{true: "", false: " when open"}[v.Open])
	add("policy", valvePolicy(v.Policy))
	if !v.ClosedAt.IsZero() {
		add("last closed", showTime(v.ClosedAt)+" ("+cell(v.Cause)+")")
	}
	add("version", strconv.FormatUint(st.Version, 10))
	return renderBlock(w, lines)
}

// valvePolicy summarises when the guard opens and closes the valve by itself.
func valvePolicy(p *events.ValvePolicy) string {
	if p == nil {
		return "none: opened and closed by hand"
	}
	num := func(f float64) string {
		if f == 0 {
			return "default"
		}
		return strconv.FormatFloat(f, 'g', -1, 64)
	}
	dur := func(d events.Duration) string {
		if d == 0 {
			return "default"
		}
		return time.Duration(d).String()
	}
	return fmt.Sprintf("by the guard: burn rate %s of objective %s over %s and %s (%s %s)",
		num(p.BurnRate), num(p.Objective), dur(p.Long), dur(p.Short), cell(p.Source.Type), cell(p.Source.URL))
}

// rolloutCommands are the commands of rollouts and safety valves, in the order help lists them.
func rolloutCommands() []*command {
	cmds := []*command{rolloutCreate(), rolloutStatusCommand()}
	for _, v := range rolloutVerbs {
		cmds = append(cmds, rolloutAction(v))
	}
	return append(cmds, valveConfigure(), valveOpen(), valveClose(), valveStatusCommand())
}
