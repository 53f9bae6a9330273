package cli

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
	"unicode/utf8"

	"github.com/interlock-dev/interlock/events"
	"github.com/interlock-dev/interlock/projections"
)

// maxCell is the longest text shown in one table cell.
const maxCell = 60

// cell makes server text safe and short enough for a table cell.
func cell(s string) string {
	s = clean(s)
	if s == "" {
		return "-"
	}
	if utf8.RuneCountInString(s) > maxCell {
		r := []rune(s)
		return string(r[:maxCell-1]) + "…"
	}
	return s
}

// showTime formats a time for people, in UTC so that output does not depend on where it runs.
func showTime(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.UTC().Format("2006-01-02 15:04:05Z")
}

// showJSON shows a JSON value compactly, "(none)" when absent.
func showJSON(raw json.RawMessage) string {
	if len(raw) == 0 {
		return "(none)"
	}
	var buf bytes.Buffer
	if json.Compact(&buf, raw) != nil {
		return clean(string(raw))
	}
	return clean(buf.String())
}

func newTable(w io.Writer) *tabwriter.Writer {
	return tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
}

func renderFlagList(w io.Writer, env string, flags []projections.Flag) error {
	if len(flags) == 0 {
		_, err := fmt.Fprintf(w, "no flags in %s\n", env)
		return err
	}
	tw := newTable(w)
	fmt.Fprintln(tw, "KEY\tKIND\tSTATE\tSERVES\tVERSION\tUPDATED\tBY")
	for i := range flags {
		f := &flags[i]
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%s\t%s\n",
			cell(f.Key), cell(string(f.Kind)), state(f), cell(serves(f)), f.Version, showTime(f.UpdatedAt), cell(f.UpdatedBy))
	}
	return tw.Flush()
}

// state is enabled, disabled or archived.
func state(f *projections.Flag) string {
	switch {
	case f.Archived:
		return "archived"
	case f.Enabled:
		return "enabled"
	}
	return "disabled"
}

// serves says briefly what the flag serves now: its off variant when disabled, else its default,
// after its rules if it has any.
func serves(f *projections.Flag) string {
	if !f.Enabled {
		return variantValue(f, f.OffVariant)
	}
	s := defaultServe(f)
	if n := len(f.Rules); n > 0 {
		s += fmt.Sprintf(" (+%d %s)", n, plural(n, "rule", "rules"))
	}
	return s
}

// serving says in a sentence what the flag serves now, after kill, enable and the like.
func serving(f *projections.Flag) string {
	var s string
	switch {
	case !f.Enabled:
		s = "off, serving " + variantValue(f, f.OffVariant) + " to everyone"
	case len(f.Rules) > 0:
		s = fmt.Sprintf("on, serving its %d %s, then %s", len(f.Rules), plural(len(f.Rules), "rule", "rules"), defaultServe(f))
	default:
		s = "on, serving " + defaultServe(f)
	}
	if f.Archived {
		s += "; archived"
	}
	return s
}

func plural(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}

// variantValue is a variant's name and value: "off" (false).
func variantValue(f *projections.Flag, name string) string {
	v := strconv.Quote(clean(name))
	if raw, ok := f.Variants[name]; ok {
		v += " (" + cell(showJSON(raw)) + ")"
	}
	return v
}

// defaultServe is what the flag serves when enabled and no rule matches.
func defaultServe(f *projections.Flag) string {
	if f.DefaultServe != nil {
		return showServe(f.DefaultServe)
	}
	return variantValue(f, f.DefaultVariant)
}

// showServe summarises a serve: a variant, or a split in percent.
func showServe(s *events.Serve) string {
	if s.Split == nil {
		return strconv.Quote(clean(s.Variant))
	}
	names := make([]string, 0, len(s.Split))
	total := 0
	for name, w := range s.Split {
		names = append(names, name)
		if w > 0 {
			total += w
		}
	}
	slices.Sort(names)
	parts := make([]string, len(names))
	for i, name := range names {
		w := s.Split[name]
		share := strconv.Itoa(w)
		if total > 0 && w >= 0 {
			share = strconv.FormatFloat(float64(w)*100/float64(total), 'f', -1, 64)
			if len(share) > 6 {
				share = strconv.FormatFloat(float64(w)*100/float64(total), 'f', 2, 64)
			}
			share += "%"
		}
		parts[i] = clean(name) + " " + share
	}
	out := "split " + strings.Join(parts, ", ")
	if s.BucketBy != "" {
		out += " by " + clean(s.BucketBy)
	}
	return out
}

// showRule summarises a rule: its name, its conditions and what it serves.
func showRule(r *events.Rule) string {
	conds := make([]string, len(r.Conditions))
	for i, c := range r.Conditions {
		conds[i] = showCondition(&c)
	}
	s := "always"
	if len(conds) > 0 {
		s = "if " + strings.Join(conds, " and ")
	}
	if r.Name != "" {
		s = clean(r.Name) + ": " + s
	}
	return s + " → " + showServe(&r.Serve)
}

// showCondition summarises a condition: attribute, operator and values as JSON, a list in
// brackets where the operator takes one.
func showCondition(c *events.Condition) string {
	if len(c.Values) == 0 {
		return clean(c.Attribute) + " " + clean(c.Operator)
	}
	vals := make([]string, 0, min(len(c.Values), 6))
	for i, v := range c.Values {
		if i == 5 {
			vals = append(vals, fmt.Sprintf("… %d more", len(c.Values)-5))
			break
		}
		b, err := json.Marshal(v)
		if err != nil {
			b = []byte(fmt.Sprint(v))
		}
		vals = append(vals, clean(string(b)))
	}
	v := strings.Join(vals, ", ")
	if len(c.Values) > 1 || slices.Contains([]string{"in", "notIn", "inSegment", "notInSegment"}, c.Operator) {
		v = "[" + v + "]"
	}
	return clean(c.Attribute) + " " + clean(c.Operator) + " " + v
}

// line is one "label: value" line of a block.
type line struct{ label, value string }

// renderBlock prints lines with their values aligned; an empty label continues the line above.
func renderBlock(w io.Writer, lines []line) error {
	width := 0
	for _, l := range lines {
		width = max(width, len(l.label)+1)
	}
	var b strings.Builder
	for _, l := range lines {
		label := ""
		if l.label != "" {
			label = l.label + ":"
		}
		b.WriteString(label + strings.Repeat(" ", width-len(label)+2) + l.value + "\n")
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// renderFlag prints one flag as a block of "label: value" lines.
func renderFlag(w io.Writer, f *projections.Flag) error {
	var lines []line
	add := func(label, value string) { lines = append(lines, line{label, value}) }
	add("flag", clean(f.Environment)+"/"+clean(f.Key))
	add("kind", clean(string(f.Kind)))
	st := state(f)
	if f.Archived {
		st += ", " + map[bool]string{true: "enabled", false: "disabled"}[f.Enabled]
	}
	add("state", st)
	add("serving", serving(f))
	if f.Description != "" {
		add("description", clean(f.Description))
	}
	if f.Owner != "" {
		add("owner", clean(f.Owner))
	}
	if len(f.Tags) > 0 {
		tags := make([]string, len(f.Tags))
		for i, t := range f.Tags {
			tags[i] = clean(t)
		}
		add("tags", strings.Join(tags, ", "))
	}
	names := make([]string, 0, len(f.Variants))
	width := 0
	for name := range f.Variants {
		names = append(names, name)
		width = max(width, utf8.RuneCountInString(clean(name)))
	}
	slices.Sort(names)
	for i, name := range names {
		label := ""
		if i == 0 {
			label = "variants"
		}
		n := clean(name)
		add(label, n+strings.Repeat(" ", width-utf8.RuneCountInString(n))+" = "+showJSON(f.Variants[name]))
	}
	add("default variant", clean(f.DefaultVariant))
	add("off variant", clean(f.OffVariant))
	for i := range f.Rules {
		label := ""
		if i == 0 {
			label = "rules"
		}
		add(label, fmt.Sprintf("%d. %s", i+1, showRule(&f.Rules[i])))
	}
	if f.DefaultServe != nil {
		add("default serve", showServe(f.DefaultServe))
	}
	add("version", strconv.FormatUint(f.Version, 10))
	add("created", showTime(f.CreatedAt))
	updated := showTime(f.UpdatedAt)
	if f.UpdatedBy != "" {
		updated += " by " + clean(f.UpdatedBy)
	}
	add("updated", updated)
	return renderBlock(w, lines)
}

func changedPaths(changes []projections.Change) string {
	paths := make([]string, len(changes))
	for i, c := range changes {
		paths[i] = c.Path
	}
	return strings.Join(paths, ", ")
}

// renderHistory prints the history of r as a table; eventName shortens the event types.
func renderHistory(w io.Writer, r ref, entries []projections.Entry, eventName func(string) string) error {
	if len(entries) == 0 {
		_, err := fmt.Fprintf(w, "no history for %s\n", r)
		return err
	}
	tw := newTable(w)
	fmt.Fprintln(tw, "VERSION\tTIME\tEVENT\tACTOR\tREASON\tCHANGED")
	for _, e := range entries {
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\n",
			e.Version, showTime(e.Time), cell(eventName(e.Type)), cell(e.Actor), cell(e.Reason), cell(changedPaths(e.Changes)))
	}
	return tw.Flush()
}

// renderAudit prints the audit trail. The FLAG column shows the flag an event belongs to when the
// server says so, or when the query named one flag (known); it is left out when neither does.
func renderAudit(w io.Writer, entries []projections.Entry) error {
	if len(entries) == 0 {
		_, err := fmt.Fprintln(w, "no events")
		return err
	}
	tw := newTable(w)
	fmt.Fprintln(tw, "SEQ\tTIME\tFLAG\tVERSION\tEVENT\tACTOR\tREASON\tCHANGED")
	for _, e := range entries {
		fmt.Fprintf(tw, "%d\t%s\t%s\t%d\t%s\t%s\t%s\t%s\n",
			e.Sequence, showTime(e.Time), cell(e.Environment+"/"+e.Key), e.Version, cell(shortType(e.Type)), cell(e.Actor), cell(e.Reason), cell(changedPaths(e.Changes)))
	}
	return tw.Flush()
}

// renderDiff prints one "path: before → after" line per change.
func renderDiff(w io.Writer, r ref, from, to uint64, current bool, changes []projections.Change) error {
	cur := ""
	if current {
		cur = " (current)"
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%s: version %d → %d%s\n", r, from, to, cur)
	if len(changes) == 0 {
		b.WriteString("no differences\n")
	}
	for _, c := range changes {
		fmt.Fprintf(&b, "%s: %s → %s\n", clean(c.Path), showJSON(c.Before), showJSON(c.After))
	}
	_, err := io.WriteString(w, b.String())
	return err
}

func renderEnvironments(w io.Writer, envs []json.RawMessage) error {
	if len(envs) == 0 {
		_, err := fmt.Fprintln(w, "no environments")
		return err
	}
	var b strings.Builder
	for _, raw := range envs {
		var name string
		var obj struct {
			Name string `json:"name"`
		}
		switch {
		case json.Unmarshal(raw, &name) == nil:
		case json.Unmarshal(raw, &obj) == nil && obj.Name != "":
			name = obj.Name
		default:
			name = showJSON(raw)
		}
		b.WriteString(clean(name) + "\n")
	}
	_, err := io.WriteString(w, b.String())
	return err
}
