package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"slices"
	"strconv"
	"strings"

	"github.com/interlock-dev/interlock/client"
	"github.com/interlock-dev/interlock/events"
	"github.com/interlock-dev/interlock/projections"
	"github.com/spf13/pflag"
)

// segmentEntity describes segments: how ENV/SEGMENT is parsed, their API paths and how they are
// shown.
var segmentEntity = &entity[projections.Segment]{
	noun: "segment", plural: "segments", operand: "ENV/SEGMENT", example: "production/beta-testers",
	validateKey:    events.ValidateSegmentKey,
	apiPath:        client.SegmentPath,
	archiveSummary: "Retire a segment: hidden from lists; refused while live flags use it.",
	decodeList: func(resp *client.Response) ([]projections.Segment, error) {
		var body struct {
			Segments []projections.Segment `json:"segments"`
		}
		err := decodeJSON(resp, "the segments", &body)
		return body.Segments, err
	},
	renderList: renderSegmentList,
	render:     renderSegment,
	id:         func(seg *projections.Segment) (string, string, uint64) { return seg.Environment, seg.Key, seg.Version },
	state:      segmentState,
	eventName:  segmentEventName,
}

// numericOperators compare numbers: their --condition values are parsed as numbers.
var numericOperators = []string{"lt", "lte", "gt", "gte"}

// parseCondition parses a --condition: "ATTRIBUTE OPERATOR [VALUE[,VALUE]...]", such as
// "plan in beta,alpha", "age gte 18" or "email exists". Values are strings, but for lt, lte, gt
// and gte, which take numbers; a condition needing other values is given with --conditions. The
// condition is checked with the server's rules; segments cannot name segments.
func parseCondition(s string) (events.Condition, error) {
	attr, rest, _ := strings.Cut(strings.TrimSpace(s), " ")
	op, vals, _ := strings.Cut(strings.TrimSpace(rest), " ")
	vals = strings.TrimSpace(vals)
	if attr == "" || op == "" {
		return events.Condition{}, fmt.Errorf("%q is not ATTRIBUTE OPERATOR VALUE[,VALUE]: write a condition like 'plan in beta,alpha' or 'email exists'", truncate(s))
	}
	c := events.Condition{Attribute: attr, Operator: op}
	if vals != "" {
		for v := range strings.SplitSeq(vals, ",") {
			v = strings.TrimSpace(v)
			if !slices.Contains(numericOperators, op) {
				c.Values = append(c.Values, v)
				continue
			}
			f, err := strconv.ParseFloat(v, 64)
			if err != nil || math.IsNaN(f) || math.IsInf(f, 0) {
				return events.Condition{}, fmt.Errorf("%q: %s compares numbers, and %q is not one", truncate(s), op, truncate(v))
			}
			c.Values = append(c.Values, f)
		}
	}
	if op == "inSegment" || op == "notInSegment" {
		return events.Condition{}, fmt.Errorf("%q: a segment cannot refer to other segments", truncate(s))
	}
	if err := c.Validate(); err != nil {
		return events.Condition{}, fmt.Errorf("%q: %w", truncate(s), err)
	}
	return c, nil
}

// conditionsJSON returns the conditions of a segment from --condition or --conditions, compact;
// nil when neither is given. --conditions is a JSON array (or null, which removes them in a
// patch).
func (s *session) conditionsJSON(fs *pflag.FlagSet, given stringList, raw string) (json.RawMessage, error) {
	switch {
	case fs.Changed("conditions") && len(given) > 0:
		return nil, usagef(s.cmd, "give --condition or --conditions, not both")
	case fs.Changed("conditions"):
		var buf bytes.Buffer
		if err := json.Compact(&buf, []byte(raw)); err != nil || (buf.Len() > 0 && buf.Bytes()[0] != '[' && buf.String() != "null") {
			return nil, usagef(s.cmd, "--conditions: give a JSON array of conditions such as '[{\"attribute\":\"plan\",\"operator\":\"in\",\"values\":[\"beta\"]}]'")
		}
		return buf.Bytes(), nil
	case len(given) > 0:
		conds := make([]events.Condition, 0, len(given))
		for _, g := range given {
			c, err := parseCondition(g)
			if err != nil {
				return nil, usagef(s.cmd, "--condition %v", err)
			}
			conds = append(conds, c)
		}
		b, err := json.Marshal(conds)
		if err != nil {
			return nil, usagef(s.cmd, "--condition: %v", err)
		}
		return b, nil
	}
	return nil, nil
}

// checkKeys refuses targeting keys the server would refuse, before anything is sent.
func (s *session) checkKeys(flagName string, keys []string) error {
	for _, k := range keys {
		if k == "" || len(k) > 256 {
			return usagef(s.cmd, "--%s %q: targeting keys are 1-256 bytes", flagName, truncate(k))
		}
	}
	return nil
}

func segmentsCreate() *command {
	return &command{
		name: "segments create", operands: "ENV/SEGMENT",
		args:    "ENV/SEGMENT [--include K]... [--exclude K]... [--condition 'ATTR OP VALUE[,VALUE]']... | [--conditions JSON] [--description D] [--reason R] | --file F|-",
		summary: "Create a segment: targeting keys and/or conditions, reusable by flags.",
		help: `A context is in the segment when its targeting key is included; otherwise, unless its key is
excluded, when the segment has conditions and the context matches all of them. Flags use a
segment with the inSegment and notInSegment operators.

--condition takes ATTRIBUTE OPERATOR VALUE[,VALUE]: 'plan in beta,alpha', 'age gte 18',
'email exists'. Values are strings (numbers for lt, lte, gt and gte); give conditions with other
values as JSON with --conditions.

--file reads a whole segment document (- for standard input), such as the output of
'interlock segments get staging/beta-testers -o json': its key, environment and version fields
are replaced by ENV/SEGMENT.`,
		minArgs: 1, maxArgs: 1,
		setup: func(fs *pflag.FlagSet) action {
			var include, exclude, conditions stringList
			fs.Var(&include, "include", "a targeting `KEY` in the segment (repeat for more)")
			fs.Var(&exclude, "exclude", "a targeting `KEY` kept out of the segment (repeat for more)")
			fs.Var(&conditions, "condition", "a condition `'ATTR OP VALUE[,VALUE]'` every member matches (repeat for more)")
			conditionsArg := fs.String("conditions", "", "the conditions as a `JSON` array")
			description := fs.String("description", "", "`TEXT` saying who is in the segment")
			reason := fs.String("reason", "", "why: `TEXT` recorded with the event")
			file := fs.String("file", "", "read the segment document from `FILE` (- for standard input)")
			return func(ctx context.Context, s *session, pos []string) error {
				r, err := segmentEntity.ref(s, pos[0])
				if err != nil {
					return err
				}
				if err := checkReason("reason", *reason); err != nil {
					return usagef(s.cmd, "%v", err)
				}
				var body any
				if fs.Changed("file") {
					for _, name := range []string{"include", "exclude", "condition", "conditions", "description"} {
						if fs.Changed(name) {
							return usagef(s.cmd, "--file gives the whole document: leave out --%s", name)
						}
					}
					if body, err = s.fileDocument(*file, r); err != nil {
						return err
					}
				} else {
					conds, err := s.conditionsJSON(fs, conditions, *conditionsArg)
					if err != nil {
						return err
					}
					if err := errors.Join(s.checkKeys("include", include), s.checkKeys("exclude", exclude)); err != nil {
						return err
					}
					body = struct {
						Key         string          `json:"key"`
						Description string          `json:"description,omitempty"`
						Included    []string        `json:"included,omitempty"`
						Excluded    []string        `json:"excluded,omitempty"`
						Conditions  json.RawMessage `json:"conditions,omitempty"`
					}{r.key, *description, include, exclude, conds}
				}
				resp, err := s.client.postJSON(ctx, segmentEntity.listPath(r.env), reasonHeaders(*reason), body)
				if err != nil {
					return err
				}
				return segmentEntity.showOne(s, resp, "created")
			}
		},
	}
}

func segmentsSet() *command {
	return &command{
		name: "segments set", operands: "ENV/SEGMENT",
		args:    "ENV/SEGMENT [--include K]... [--exclude K]... [--remove K]... [--condition C]... | [--conditions JSON] [--description D] [--patch JSON|@FILE] [--if-version N] [--reason R]",
		summary: "Change a segment: add or remove targeting keys, replace its conditions.",
		help: `--include adds a key to the included keys (and takes it out of the excluded ones), --exclude
adds one to the excluded keys (and takes it out of the included ones), --remove takes a key out of
both. --condition (repeat for more) and --conditions replace all the conditions; --conditions null
removes them. --patch gives a JSON Merge Patch (RFC 7396) directly (@FILE reads a file, @-
standard input); the other flags are applied on top of it.

The change applies only to the version given by --if-version. Without it, the segment is read
first and the change applies to the version read, so a change made by someone else in between is
refused (exit code 4) rather than overwritten.`,
		minArgs: 1, maxArgs: 1,
		setup: func(fs *pflag.FlagSet) action {
			var include, exclude, remove, conditions stringList
			fs.Var(&include, "include", "add a targeting `KEY` to the segment (repeat for more)")
			fs.Var(&exclude, "exclude", "keep a targeting `KEY` out of the segment (repeat for more)")
			fs.Var(&remove, "remove", "take a targeting `KEY` off both lists (repeat for more)")
			fs.Var(&conditions, "condition", "a condition `'ATTR OP VALUE[,VALUE]'` (repeat for more; replaces them all)")
			conditionsArg := fs.String("conditions", "", "the conditions as a `JSON` array (null removes them)")
			description := fs.String("description", "", "`TEXT` saying who is in the segment (empty removes it)")
			patchArg := fs.String("patch", "", "a merge patch: `JSON`, @FILE, or @- for standard input")
			var ifVersion versionFlag
			fs.Var(&ifVersion, "if-version", "apply only to version `N` of the segment")
			reason := fs.String("reason", "", "why: `TEXT` recorded with the event")
			return func(ctx context.Context, s *session, pos []string) error {
				r, err := segmentEntity.ref(s, pos[0])
				if err != nil {
					return err
				}
				if err := checkReason("reason", *reason); err != nil {
					return usagef(s.cmd, "%v", err)
				}
				if err := errors.Join(s.checkKeys("include", include), s.checkKeys("exclude", exclude), s.checkKeys("remove", remove)); err != nil {
					return err
				}
				if k, ok := twice(include, exclude, remove); ok {
					return usagef(s.cmd, "key %q is given to more than one of --include, --exclude and --remove", truncate(k))
				}
				patch, err := s.basePatch(fs, *patchArg)
				if err != nil {
					return err
				}
				if fs.Changed("description") {
					patch["description"], _ = json.Marshal(*description)
				}
				conds, err := s.conditionsJSON(fs, conditions, *conditionsArg)
				if err != nil {
					return err
				}
				if conds != nil {
					patch["conditions"] = conds
				}
				keyEdits := len(include)+len(exclude)+len(remove) > 0
				if len(patch) == 0 && !keyEdits {
					return usagef(s.cmd, "nothing to change: give --include, --exclude, --remove, --condition, --conditions, --description or --patch")
				}
				ifMatch := ""
				if ifVersion.set {
					ifMatch = client.ETag(ifVersion.v)
				}
				if keyEdits || !ifVersion.set {
					// The key lists are edited on the segment as read: the patch replaces them whole.
					cur, etag, err := s.currentSegment(ctx, r)
					if err != nil {
						return err
					}
					if ifMatch == "" {
						ifMatch = etag
					}
					if keyEdits {
						if err := editKeys(patch, cur, include, exclude, remove); err != nil {
							return usagef(s.cmd, "--patch: %v", err)
						}
					}
				}
				body, err := json.Marshal(patch)
				if err != nil {
					return usagef(s.cmd, "--patch: %v", err)
				}
				h := reasonHeaders(*reason)
				h.Set("If-Match", ifMatch)
				resp, err := s.client.do(ctx, client.Request{
					Method: http.MethodPatch, Path: segmentEntity.path(r, ""), Header: h,
					ContentType: "application/merge-patch+json", Body: body,
				})
				if err != nil {
					return err
				}
				return segmentEntity.showOne(s, resp, "changed")
			}
		},
	}
}

// basePatch reads --patch, if given, as a JSON object.
func (s *session) basePatch(fs *pflag.FlagSet, patchArg string) (map[string]json.RawMessage, error) {
	patch := map[string]json.RawMessage{}
	if !fs.Changed("patch") {
		return patch, nil
	}
	data := []byte(patchArg)
	if name, ok := strings.CutPrefix(patchArg, "@"); ok {
		var err error
		if data, err = s.readInput(name); err != nil {
			return nil, err
		}
	}
	if err := json.Unmarshal(data, &patch); err != nil || patch == nil {
		return nil, usagef(s.cmd, "--patch: a merge patch is a JSON object: %v", jsonProblem(err))
	}
	return patch, nil
}

// twice returns a key that more than one of the lists holds.
func twice(lists ...[]string) (string, bool) {
	seen := map[string]int{}
	for i, l := range lists {
		for _, k := range l {
			if j, ok := seen[k]; ok && j != i {
				return k, true
			}
			seen[k] = i
		}
	}
	return "", false
}

// editKeys sets the included and excluded lists of patch: the lists of --patch if it gives them,
// else the segment's, with the keys of --include, --exclude and --remove applied. A list that
// ends up as the segment has it is left out of the patch (unless --patch gave it).
func editKeys(patch map[string]json.RawMessage, cur projections.Segment, include, exclude, remove []string) error {
	type list struct {
		name       string
		keys       []string
		add, other []string // keys to add; keys going to the other list
	}
	lists := []*list{
		{name: "included", keys: cur.Included, add: include, other: exclude},
		{name: "excluded", keys: cur.Excluded, add: exclude, other: include},
	}
	for _, l := range lists {
		raw, inPatch := patch[l.name]
		if inPatch {
			l.keys = nil
			if err := json.Unmarshal(raw, &l.keys); err != nil {
				return fmt.Errorf("%s is not a list of keys: %v", l.name, err)
			}
		}
		drop := append(slices.Clone(l.other), remove...)
		keys := slices.DeleteFunc(slices.Clone(l.keys), func(k string) bool { return slices.Contains(drop, k) })
		keys = append(keys, l.add...)
		slices.Sort(keys)
		keys = slices.Compact(keys)
		if !inPatch && slices.Equal(keys, sortedKeySet(l.keys)) {
			continue
		}
		if len(keys) == 0 {
			patch[l.name] = json.RawMessage("null")
			continue
		}
		patch[l.name], _ = json.Marshal(keys)
	}
	return nil
}

// sortedKeySet is keys sorted, without repeats, in a new slice.
func sortedKeySet(keys []string) []string {
	out := slices.Clone(keys)
	slices.Sort(out)
	return slices.Compact(out)
}

// currentSegment reads the segment and returns it with the ETag of the version read.
func (s *session) currentSegment(ctx context.Context, r ref) (projections.Segment, string, error) {
	seg, err := s.client.Segment(ctx, r.env, r.key)
	if err != nil {
		return projections.Segment{}, "", err
	}
	if seg.Version == 0 {
		return projections.Segment{}, "", fmt.Errorf("the server answered %s without a version", r)
	}
	etag := client.ETag(seg.Version)
	return seg, etag, nil
}

// segmentState is active or archived.
func segmentState(s *projections.Segment) string {
	if s.Archived {
		return "archived"
	}
	return "active"
}

// maxShownKeys bounds the targeting keys a segment block lists.
const maxShownKeys = 10

// showKeys summarises a list of targeting keys: how many, and the first ones.
func showKeys(keys []string) string {
	if len(keys) == 0 {
		return "none"
	}
	shown := make([]string, 0, min(len(keys), maxShownKeys))
	for _, k := range keys[:min(len(keys), maxShownKeys)] {
		shown = append(shown, cell(k))
	}
	s := fmt.Sprintf("%d %s: %s", len(keys), plural(len(keys), "key", "keys"), strings.Join(shown, ", "))
	if len(keys) > maxShownKeys {
		s += fmt.Sprintf(", … %d more", len(keys)-maxShownKeys)
	}
	return s
}

func renderSegmentList(w io.Writer, env string, segs []projections.Segment) error {
	if len(segs) == 0 {
		_, err := fmt.Fprintf(w, "no segments in %s\n", env)
		return err
	}
	tw := newTable(w)
	fmt.Fprintln(tw, "KEY\tSTATE\tINCLUDED\tEXCLUDED\tCONDITIONS\tVERSION\tUPDATED\tBY")
	for i := range segs {
		s := &segs[i]
		fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%d\t%d\t%s\t%s\n",
			cell(s.Key), segmentState(s), len(s.Included), len(s.Excluded), len(s.Conditions), s.Version, showTime(s.UpdatedAt), cell(s.UpdatedBy))
	}
	return tw.Flush()
}

// renderSegment prints one segment as a block of "label: value" lines.
func renderSegment(w io.Writer, s *projections.Segment) error {
	lines := []line{
		{"segment", clean(s.Environment) + "/" + clean(s.Key)},
		{"state", segmentState(s)},
	}
	if s.Description != "" {
		lines = append(lines, line{"description", clean(s.Description)})
	}
	lines = append(lines, line{"included", showKeys(s.Included)}, line{"excluded", showKeys(s.Excluded)})
	if len(s.Conditions) == 0 {
		lines = append(lines, line{"conditions", "none: only the included keys are in"})
	}
	for i := range s.Conditions {
		label := ""
		if i == 0 {
			label = "conditions"
		}
		lines = append(lines, line{label, fmt.Sprintf("%d. %s", i+1, showCondition(&s.Conditions[i]))})
	}
	updated := showTime(s.UpdatedAt)
	if s.UpdatedBy != "" {
		updated += " by " + clean(s.UpdatedBy)
	}
	lines = append(lines, line{"version", strconv.FormatUint(s.Version, 10)}, line{"created", showTime(s.CreatedAt)}, line{"updated", updated})
	return renderBlock(w, lines)
}

// segmentEventName is the short name of a segment event type for tables: created, updated,
// archived, unarchived; other types as they are.
func segmentEventName(t string) string {
	if name, ok := strings.CutPrefix(t, "io.interlock.segment."); ok {
		if name, ok = strings.CutSuffix(name, ".v1"); ok {
			return name
		}
	}
	return t
}
