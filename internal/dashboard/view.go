package dashboard

import (
	"bytes"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/interlock-dev/interlock/events"
	"github.com/interlock-dev/interlock/projections"
)

// The states a flag's serving summary can be in, for filters and badges.
const (
	stateOff      = "off"
	stateOn       = "on"
	stateVariant  = "variant"
	stateSplit    = "split"
	stateRollout  = "rollout"
	stateArchived = "archived"
)

// serving is what a flag serves now, told honestly for a person.
type serving struct {
	State string // one of the state constants
	Text  string // "off (serves false)", "on", "variant blue", "split a 25% / b 75%", ...
	// Killed is the kill that turned it off, when that is what did.
	Killed *note
	// Rules counts the rules that may serve something else to some contexts.
	Rules int
}

// flagView is one flag as the pages show it.
type flagView struct {
	projections.Flag
	Serving serving
	// Stage is "stage 3/5 · 25%" during a rollout; Progress its percentage of stages done.
	Stage    string
	Progress int
	Paused   bool
	// Guard is the guard's state badge (HEALTHY, READY, HOLD, BLIND, TRIPPED), "" without one.
	Guard string
	// Valve describes an open valve: "open: serves degraded to segment bad-actors".
	Valve string
	Last  note
}

// view builds the flag view of f, with its notes when it is the live state.
func view(f projections.Flag, n flagNotes) flagView {
	v := flagView{Flag: f, Serving: servingOf(f, n), Last: n.last}
	if v.Last.Actor == "" {
		v.Last = note{Actor: f.UpdatedBy, Time: f.UpdatedAt}
	}
	if r := f.Rollout; r != nil {
		if r.Active() && len(r.Plan.Stages) > 0 {
			st := min(r.Stage, len(r.Plan.Stages)-1)
			v.Stage = fmt.Sprintf("stage %d/%d · %s%% %s", st+1, len(r.Plan.Stages), percent(r.Plan.Stages[st].Percent), r.Plan.Treatment)
			v.Progress = (st + 1) * 100 / len(r.Plan.Stages)
			v.Paused = r.Status == projections.RolloutPaused
		}
		if r.Active() || r.Guard.Tripped {
			v.Guard = r.Guard.State
			if r.Guard.Tripped {
				v.Guard = "TRIPPED"
			}
			if v.Guard == "" && r.Active() {
				v.Guard = "READY"
			}
		}
	}
	if vl := f.Valve; vl != nil && vl.Open {
		who := "everyone"
		if vl.Segment != "" {
			who = "segment " + vl.Segment
		}
		v.Valve = "open: serves " + vl.Variant + " to " + who
	}
	return v
}

func percent(p float64) string { return strconv.FormatFloat(p, 'f', -1, 64) }

// servingOf says what f serves now to a context no rule matches, and how many rules may serve
// otherwise.
func servingOf(f projections.Flag, n flagNotes) serving {
	s := serving{Rules: len(f.Rules)}
	switch {
	case f.Archived:
		s.State, s.Text = stateArchived, "archived (serves "+variantText(f.FlagConfig, f.OffVariant)+")"
		return s
	case !f.Enabled:
		s.State, s.Text = stateOff, "off (serves "+variantText(f.FlagConfig, f.OffVariant)+")"
		if n.kill.Actor != "" {
			k := n.kill
			s.Killed = &k
		}
		return s
	}
	if r := f.Rollout; r.Active() && len(r.Plan.Stages) > 0 {
		st := r.Plan.Stages[min(r.Stage, len(r.Plan.Stages)-1)]
		s.State = stateRollout
		s.Text = fmt.Sprintf("%s to %s%% via rollout", r.Plan.Treatment, percent(st.Percent))
		return s
	}
	if ds := f.DefaultServe; ds != nil {
		if len(ds.Split) > 0 {
			s.State, s.Text = stateSplit, "split "+splitText(ds)
			return s
		}
		if ds.Variant != "" {
			return variantServing(f.FlagConfig, ds.Variant, s)
		}
	}
	return variantServing(f.FlagConfig, f.DefaultVariant, s)
}

func variantServing(cfg events.FlagConfig, variant string, s serving) serving {
	switch strings.TrimSpace(string(cfg.Variants[variant])) {
	case "true":
		s.State, s.Text = stateOn, "on"
	case "false":
		s.State, s.Text = stateOff, "off (serves false while enabled)"
	default:
		s.State, s.Text = stateVariant, "variant "+variantText(cfg, variant)
	}
	return s
}

// variantText names a variant with its value when the name does not say it.
func variantText(cfg events.FlagConfig, name string) string {
	raw := strings.TrimSpace(string(cfg.Variants[name]))
	if raw == "" || raw == strconv.Quote(name) || raw == name || name == "on" && raw == "true" || name == "off" && raw == "false" {
		return name
	}
	if len(raw) > 40 {
		raw = raw[:37] + "…"
	}
	return name + " = " + raw
}

// splitText is "on 25% / off 75% by targetingKey".
func splitText(s *events.Serve) string {
	total := 0
	for _, w := range s.Split {
		total += w
	}
	names := slices.Sorted(maps.Keys(s.Split))
	parts := make([]string, 0, len(names))
	for _, name := range names {
		pct := 0.0
		if total > 0 {
			pct = float64(s.Split[name]) * 100 / float64(total)
		}
		parts = append(parts, fmt.Sprintf("%s %s%%", name, strconv.FormatFloat(pct, 'f', -1, 64)))
	}
	by := s.BucketBy
	if by == "" {
		by = "targetingKey"
	}
	return strings.Join(parts, " / ") + " by " + by
}

// serveText is what a rule or the default serves: "on" or "on 25% / off 75% by targetingKey".
func serveText(s events.Serve) string {
	if len(s.Split) > 0 {
		return splitText(&s)
	}
	return s.Variant
}

// opWords are the operators as a person reads them.
var opWords = map[string]string{
	"eq": "=", "neq": "≠", "in": "in", "notIn": "not in", "contains": "contains",
	"startsWith": "starts with", "endsWith": "ends with", "matches": "matches",
	"lt": "<", "lte": "≤", "gt": ">", "gte": "≥", "semverEq": "= version", "semverLt": "< version",
	"semverGt": "> version", "before": "before", "after": "after", "inSegment": "in segment",
	"notInSegment": "not in segment", "exists": "exists",
}

// condView is one condition as the flag page shows it; Segments are links.
type condView struct {
	Attribute string
	Op        string
	Values    string
	Segments  []string
}

// ruleView is one rule: "role in beta, alpha → on".
type ruleView struct {
	Name       string
	Conditions []condView
	Serve      string
}

func rulesOf(cfg events.FlagConfig) []ruleView {
	out := make([]ruleView, 0, len(cfg.Rules))
	for _, r := range cfg.Rules {
		rv := ruleView{Name: r.Name, Serve: serveText(r.Serve), Conditions: condsOf(r.Conditions)}
		out = append(out, rv)
	}
	return out
}

// condsOf are conditions as a person reads them.
func condsOf(conds []events.Condition) []condView {
	var out []condView
	for _, c := range conds {
		cv := condView{Attribute: c.Attribute, Op: opWords[c.Operator]}
		if cv.Op == "" {
			cv.Op = c.Operator
		}
		if c.Operator == "inSegment" || c.Operator == "notInSegment" {
			for _, v := range c.Values {
				cv.Segments = append(cv.Segments, fmt.Sprint(v))
			}
		} else {
			vals := make([]string, 0, len(c.Values))
			for _, v := range c.Values {
				vals = append(vals, valueText(v))
			}
			cv.Values = strings.Join(vals, ", ")
		}
		out = append(out, cv)
	}
	return out
}

func valueText(v any) string {
	if s, ok := v.(string); ok {
		return s
	}
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Sprint(v)
	}
	return string(b)
}

// variantView is one variant and its value, pretty when it is an object.
type variantView struct {
	Name  string
	Value string
	Roles []string // default, off
}

func variantsOf(cfg events.FlagConfig) []variantView {
	out := make([]variantView, 0, len(cfg.Variants))
	for _, name := range slices.Sorted(maps.Keys(cfg.Variants)) {
		vv := variantView{Name: name, Value: prettyJSON(cfg.Variants[name])}
		if name == cfg.DefaultVariant {
			vv.Roles = append(vv.Roles, "default")
		}
		if name == cfg.OffVariant {
			vv.Roles = append(vv.Roles, "off")
		}
		out = append(out, vv)
	}
	return out
}

func prettyJSON(raw json.RawMessage) string {
	var b bytes.Buffer
	if err := json.Indent(&b, raw, "", "  "); err != nil {
		return string(raw)
	}
	return b.String()
}

// changeView is one changed field: before → after, as JSON a person can read.
type changeView struct {
	Path, Before, After string
}

func changesOf(cs []projections.Change) []changeView {
	out := make([]changeView, 0, len(cs))
	for _, c := range cs {
		out = append(out, changeView{Path: c.Path, Before: compact(c.Before), After: compact(c.After)})
	}
	return out
}

func compact(raw json.RawMessage) string {
	if len(raw) == 0 {
		return "—"
	}
	return string(raw)
}

// typeText is an event type for a person: "flag killed", "rollout advanced".
func typeText(typ string) string {
	t := strings.TrimPrefix(typ, "io.interlock.")
	if i := strings.LastIndex(t, ".v"); i > 0 {
		t = t[:i]
	}
	return strings.ReplaceAll(t, ".", " ")
}

// sinceText is "3 min ago"; the browser refreshes it, this is what shows without script.
func sinceText(now, t time.Time) string {
	if t.IsZero() {
		return ""
	}
	d := now.Sub(t)
	switch {
	case d < time.Minute:
		return "just now"
	case d < time.Hour:
		return fmt.Sprintf("%d min ago", int(d.Minutes()))
	case d < 48*time.Hour:
		return fmt.Sprintf("%d h ago", int(d.Hours()))
	default:
		return fmt.Sprintf("%d days ago", int(d.Hours()/24))
	}
}
