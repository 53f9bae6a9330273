package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"

	"github.com/interlock-dev/interlock/client"
	"github.com/interlock-dev/interlock/events"
	"github.com/interlock-dev/interlock/projections"
	"github.com/spf13/pflag"
)

// maxInput bounds a document read from a file or standard input.
const maxInput = 4 << 20

// reasonHeader carries the reason of a change made with a JSON document body.
const reasonHeader = "X-Interlock-Reason"

// flagEntity describes flags: how ENV/FLAG is parsed, their API paths and how they are shown.
var flagEntity = &entity[projections.Flag]{
	noun: "flag", plural: "flags", operand: "ENV/FLAG", example: "production/checkout-v2",
	validateKey:    events.ValidateFlagKey,
	apiPath:        client.FlagPath,
	listAt:         true,
	archiveSummary: "Retire a flag: hidden from lists, refusing changes until unarchived.",
	decodeList: func(resp *client.Response) ([]projections.Flag, error) {
		var body struct {
			Flags []projections.Flag `json:"flags"`
		}
		err := decodeJSON(resp, "the flags", &body)
		return body.Flags, err
	},
	renderList: renderFlagList,
	render:     renderFlag,
	id:         func(f *projections.Flag) (string, string, uint64) { return f.Environment, f.Key, f.Version },
	state:      serving,
	eventName:  shortType,
}

func flagsCreate() *command {
	return &command{
		name: "flags create", operands: "ENV/FLAG",
		args:    "ENV/FLAG [--kind K] [--description D] [--owner O] [--tag T]... [--variant name=JSON]... [--default NAME] [--off NAME] [--enabled] [--reason R] | --file F|-",
		summary: "Create a flag, from flags or from a JSON document.",
		help: `Without --variant the flag is a boolean: variants on=true and off=false, serving on when enabled
and off when disabled. A new flag is disabled unless --enabled is given. Variant values are JSON:
--variant ttl=30, --variant color='"blue"', --variant cfg='{"retries":3}'.

--file reads a whole flag document (- for standard input), such as the output of
'interlock flags get staging/checkout -o json': its key, environment and version fields are
replaced by ENV/FLAG.`,
		minArgs: 1, maxArgs: 1,
		setup: func(fs *pflag.FlagSet) action {
			kind := fs.String("kind", string(events.KindRelease), "`KIND`: release, kill-switch, operational, experiment, permission or config")
			description := fs.String("description", "", "`TEXT` saying what the flag is for")
			owner := fs.String("owner", "", "the team or person who owns the flag (`NAME`)")
			var tags, variants stringList
			fs.Var(&tags, "tag", "a `TAG` (repeat for more)")
			fs.Var(&variants, "variant", "a variant as `name=JSON` (repeat for more)")
			def := fs.String("default", "", "the variant `NAME` served when enabled (default on)")
			off := fs.String("off", "", "the variant `NAME` served when disabled (default off)")
			enabled := fs.Bool("enabled", false, "create the flag enabled")
			reason := fs.String("reason", "", "why: `TEXT` recorded with the event")
			file := fs.String("file", "", "read the flag document from `FILE` (- for standard input)")
			return func(ctx context.Context, s *session, pos []string) error {
				r, err := s.ref(pos[0])
				if err != nil {
					return err
				}
				if err := checkReason("reason", *reason); err != nil {
					return usagef(s.cmd, "%v", err)
				}
				var body any
				if fs.Changed("file") {
					for _, name := range []string{"kind", "description", "owner", "tag", "variant", "default", "off", "enabled"} {
						if fs.Changed(name) {
							return usagef(s.cmd, "--file gives the whole document: leave out --%s", name)
						}
					}
					body, err = s.fileDocument(*file, r)
					if err != nil {
						return err
					}
				} else {
					cfg := events.FlagConfig{
						Kind: events.Kind(*kind), Description: *description, Owner: *owner,
						Tags: tags, DefaultVariant: *def, OffVariant: *off, Enabled: *enabled,
					}
					if err := s.variants(&cfg, variants); err != nil {
						return err
					}
					body = struct {
						Key string `json:"key"`
						events.FlagConfig
					}{r.key, cfg}
				}
				resp, err := s.client.postJSON(ctx, flagEntity.listPath(r.env), reasonHeaders(*reason), body)
				if err != nil {
					return err
				}
				return flagEntity.showOne(s, resp, "created")
			}
		},
	}
}

// variants fills the variants of a new flag from --variant, or makes it a boolean.
func (s *session) variants(cfg *events.FlagConfig, given stringList) error {
	if len(given) == 0 {
		cfg.Variants = map[string]json.RawMessage{"on": json.RawMessage("true"), "off": json.RawMessage("false")}
		if cfg.DefaultVariant == "" {
			cfg.DefaultVariant = "on"
		}
		if cfg.OffVariant == "" {
			cfg.OffVariant = "off"
		}
		return nil
	}
	cfg.Variants = make(map[string]json.RawMessage, len(given))
	for _, g := range given {
		v, err := parseVariant(g)
		if err != nil {
			return usagef(s.cmd, "--variant %v", err)
		}
		if _, dup := cfg.Variants[v.name]; dup {
			return usagef(s.cmd, "--variant %s is given twice", v.name)
		}
		cfg.Variants[v.name] = v.value
	}
	if cfg.DefaultVariant == "" {
		return usagef(s.cmd, "with --variant, name the variant served when enabled with --default")
	}
	if cfg.OffVariant == "" {
		return usagef(s.cmd, "with --variant, name the variant served when disabled with --off")
	}
	return nil
}

// fileDocument reads a flag or segment document for create and makes it name r.
func (s *session) fileDocument(name string, r ref) (map[string]json.RawMessage, error) {
	data, err := s.readInput(name)
	if err != nil {
		return nil, err
	}
	var doc map[string]json.RawMessage
	if err := json.Unmarshal(data, &doc); err != nil || doc == nil {
		return nil, usagef(s.cmd, "--file %s: not a JSON object: %v", truncate(name), jsonProblem(err))
	}
	for _, k := range []string{"environment", "version", "createdAt", "updatedAt", "updatedBy", "archived"} {
		delete(doc, k)
	}
	doc["key"], _ = json.Marshal(r.key)
	return doc, nil
}

// readInput reads a file, or standard input for "-", up to maxInput.
func (s *session) readInput(name string) ([]byte, error) {
	var in io.Reader
	if name == "-" {
		in = s.stdin
	} else {
		f, err := os.Open(name)
		if err != nil {
			return nil, usagef(s.cmd, "%v", err)
		}
		defer f.Close()
		in = f
	}
	data, err := io.ReadAll(io.LimitReader(in, maxInput+1))
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", truncate(name), err)
	}
	if len(data) > maxInput {
		return nil, usagef(s.cmd, "%s is larger than %d MiB", truncate(name), maxInput>>20)
	}
	return data, nil
}

func jsonProblem(err error) string {
	if err == nil {
		return "it is null"
	}
	return err.Error()
}

func reasonHeaders(reason string) http.Header {
	h := http.Header{}
	if reason != "" {
		h.Set(reasonHeader, reason)
	}
	return h
}

func flagsSet() *command {
	return &command{
		name: "flags set", operands: "ENV/FLAG",
		args:    "ENV/FLAG [--description D] [--owner O] [--tag T]... [--default NAME] [--off NAME] [--variant name=JSON]... [--patch JSON|@FILE] [--if-version N] [--reason R]",
		summary: "Change a flag's configuration with a JSON merge patch.",
		help: `The flags build a JSON Merge Patch (RFC 7396); --patch gives one directly (@FILE reads a file,
@- standard input) and the other flags are applied on top of it. --tag replaces the whole list of
tags; --variant name=JSON adds or changes one variant and --variant name=null removes it. Rules are
changed with --patch, for example --patch '{"rules":[...]}'.

The change applies only to the version given by --if-version. Without it, the flag is read first
and the change applies to the version read, so a change made by someone else in between is
refused (exit code 4) rather than overwritten.`,
		minArgs: 1, maxArgs: 1,
		setup: func(fs *pflag.FlagSet) action {
			description := fs.String("description", "", "`TEXT` saying what the flag is for (empty removes it)")
			owner := fs.String("owner", "", "the team or person who owns the flag (`NAME`; empty removes it)")
			var tags, variants stringList
			fs.Var(&tags, "tag", "a `TAG` (repeat for more; replaces the list)")
			fs.Var(&variants, "variant", "add or change a variant: `name=JSON` (repeat for more; name=null removes one)")
			def := fs.String("default", "", "the variant `NAME` served when enabled")
			off := fs.String("off", "", "the variant `NAME` served when disabled")
			patchArg := fs.String("patch", "", "a merge patch: `JSON`, @FILE, or @- for standard input")
			var ifVersion versionFlag
			fs.Var(&ifVersion, "if-version", "apply only to version `N` of the flag")
			reason := fs.String("reason", "", "why: `TEXT` recorded with the event")
			return func(ctx context.Context, s *session, pos []string) error {
				r, err := s.ref(pos[0])
				if err != nil {
					return err
				}
				if err := checkReason("reason", *reason); err != nil {
					return usagef(s.cmd, "%v", err)
				}
				patch, err := s.buildPatch(fs, *patchArg, variants, tags, []patchField{
					{"description", "description", description}, {"owner", "owner", owner},
					{"default", "defaultVariant", def}, {"off", "offVariant", off},
				})
				if err != nil {
					return err
				}
				ifMatch, err := s.flagIfMatch(ctx, r, ifVersion)
				if err != nil {
					return err
				}
				h := reasonHeaders(*reason)
				h.Set("If-Match", ifMatch)
				resp, err := s.client.do(ctx, client.Request{
					Method: http.MethodPatch, Path: client.FlagPath(r.env, r.key, ""), Header: h,
					ContentType: "application/merge-patch+json", Body: patch,
				})
				if err != nil {
					return err
				}
				return flagEntity.showOne(s, resp, "changed")
			}
		},
	}
}

// patchField is a flag of `flags set` that sets one text field of the flag document.
type patchField struct {
	flag, field string
	value       *string
}

// buildPatch makes the merge patch of `flags set`: --patch, then the other flags on top.
func (s *session) buildPatch(fs *pflag.FlagSet, patchArg string, variants, tags stringList, text []patchField) ([]byte, error) {
	patch := map[string]json.RawMessage{}
	if fs.Changed("patch") {
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
	}
	for _, f := range text {
		if fs.Changed(f.flag) {
			patch[f.field], _ = json.Marshal(*f.value)
		}
	}
	if len(tags) > 0 {
		patch["tags"], _ = json.Marshal([]string(tags))
	}
	if len(variants) > 0 {
		vs := map[string]json.RawMessage{}
		if raw, ok := patch["variants"]; ok {
			// A --patch that also changes variants: merge; if it is not an object, --variant wins.
			if json.Unmarshal(raw, &vs) != nil || vs == nil {
				vs = map[string]json.RawMessage{}
			}
		}
		for _, g := range variants {
			v, err := parseVariant(g)
			if err != nil {
				return nil, usagef(s.cmd, "--variant %v", err)
			}
			vs[v.name] = v.value
		}
		patch["variants"], _ = json.Marshal(vs)
	}
	if len(patch) == 0 {
		return nil, usagef(s.cmd, "nothing to change: give --description, --owner, --tag, --variant, --default, --off or --patch")
	}
	body, err := json.Marshal(patch)
	if err != nil {
		return nil, usagef(s.cmd, "--patch: %v", err)
	}
	return body, nil
}

// flagIfMatch is the If-Match of a change to the flag r: version N of --if-version when given,
// else the ETag of the flag as read now, so that a change made in between is refused.
func (s *session) flagIfMatch(ctx context.Context, r ref, ifVersion versionFlag) (string, error) {
	if ifVersion.set {
		return client.ETag(ifVersion.v), nil
	}
	f, err := s.client.Flag(ctx, r.env, r.key)
	if err != nil {
		return "", err
	}
	if f.Version == 0 {
		return "", fmt.Errorf("the server answered %s without a version", r)
	}
	return client.ETag(f.Version), nil
}

// flagsKill is `flags kill` and its on-call shortcut `kill`.
func flagsKill(name string) *command {
	summary := "Turn a flag off: it serves its off variant to everyone, at once."
	if name == "kill" {
		summary = "Same as flags kill: the on-call path."
	}
	return &command{
		name: name, operands: "ENV/FLAG --reason R", args: "ENV/FLAG --reason R",
		summary: summary,
		help: `Killing a flag that is already off succeeds and changes nothing. The reason is required: it is
recorded with who and when.`,
		minArgs: 1, maxArgs: 1,
		setup: func(fs *pflag.FlagSet) action {
			return reasonAction(fs, " the flag is killed", func(r ref) string { return client.FlagPath(r.env, r.key, "kill") },
				func(s *session, resp *client.Response) error { return flagEntity.showState(s, resp, "killed") })
		},
	}
}

// reasonAction registers the required --reason of an on-call command on ENV/FLAG that sends
// nothing else (kill, valve close) and returns its action: it posts the reason to path(r) and
// prints the answer with answer. why ends the message for a missing reason.
func reasonAction(fs *pflag.FlagSet, why string, path func(r ref) string, answer func(s *session, resp *client.Response) error) action {
	reason := fs.String("reason", "", "why: `TEXT` recorded with the event (required)")
	return func(ctx context.Context, s *session, pos []string) error {
		r, err := s.ref(pos[0])
		if err != nil {
			return err
		}
		if err := requireReason(s, *reason, why); err != nil {
			return err
		}
		body := struct {
			Reason string `json:"reason"`
		}{*reason}
		resp, err := s.client.postJSON(ctx, path(r), nil, body)
		if err != nil {
			return err
		}
		return answer(s, resp)
	}
}

func flagsEnable() *command {
	return stateCommand(flagEntity, "enable", "Turn a flag on: it serves its targeting again.")
}

func flagsRestore() *command {
	return &command{
		name: "flags restore", operands: "ENV/FLAG --to-version N", args: "ENV/FLAG --to-version N [--reason R] [--if-version N]",
		summary: "Bring back the configuration a flag had at an earlier version, as a new version.",
		minArgs: 1, maxArgs: 1,
		setup: func(fs *pflag.FlagSet) action {
			var to, ifVersion versionFlag
			fs.Var(&to, "to-version", "the version `N` whose configuration comes back (required)")
			reason := fs.String("reason", "", "why: `TEXT` recorded with the event")
			fs.Var(&ifVersion, "if-version", "apply only to version `N` of the flag")
			return func(ctx context.Context, s *session, pos []string) error {
				r, err := s.ref(pos[0])
				if err != nil {
					return err
				}
				if !to.set {
					return usagef(s.cmd, "--to-version is required: the version to restore")
				}
				if err := checkReason("reason", *reason); err != nil {
					return usagef(s.cmd, "%v", err)
				}
				resp, err := s.client.postJSON(ctx, client.FlagPath(r.env, r.key, "restore"), nil, stateBody{ToVersion: to.v, Reason: *reason, Version: ifVersion.v})
				if err != nil {
					return err
				}
				return flagEntity.showState(s, resp, fmt.Sprintf("restored the configuration of version %d to", to.v))
			}
		},
	}
}

func flagsDiff() *command {
	return &command{
		name: "flags diff", operands: "ENV/FLAG V1 [V2]", args: "ENV/FLAG V1 [V2]",
		summary: "Show what changed in a flag between version V1 and V2 (default: the current one).",
		minArgs: 2, maxArgs: 3,
		setup: func(fs *pflag.FlagSet) action {
			return func(ctx context.Context, s *session, pos []string) error {
				r, err := s.ref(pos[0])
				if err != nil {
					return err
				}
				v1, err := parseVersion(pos[1])
				if err != nil {
					return usagef(s.cmd, "%v", err)
				}
				var v2 uint64
				if len(pos) == 3 {
					if v2, err = parseVersion(pos[2]); err != nil {
						return usagef(s.cmd, "%v", err)
					}
				}
				before, err := s.getVersion(ctx, r, v1)
				if err != nil {
					return err
				}
				after, err := s.getVersion(ctx, r, v2)
				if err != nil {
					return err
				}
				changes := projections.Diff(before, after)
				if s.json {
					b, err := json.Marshal(struct {
						From    uint64               `json:"from"`
						To      uint64               `json:"to"`
						Changes []projections.Change `json:"changes"`
					}{before.Version, after.Version, changes})
					if err != nil {
						return fmt.Errorf("encode diff: %w", err)
					}
					return s.printJSON(b)
				}
				return renderDiff(s.stdout, r, before.Version, after.Version, v2 == 0, changes)
			}
		},
	}
}

// getVersion reads version v of a flag, the current one for 0.
func (s *session) getVersion(ctx context.Context, r ref, v uint64) (projections.Flag, error) {
	f, err := s.client.FlagAt(ctx, r.env, r.key, client.Point{Version: v})
	if err != nil {
		return projections.Flag{}, err
	}
	if !f.Exists() {
		return projections.Flag{}, fmt.Errorf("the server answered %s without a version", r)
	}
	return f, nil
}

func environmentsCommand() *command {
	return &command{
		name: "environments", args: "", summary: "List the environments that hold flags.",
		setup: func(fs *pflag.FlagSet) action {
			return func(ctx context.Context, s *session, pos []string) error {
				resp, err := s.client.get(ctx, "/api/v1/environments", nil)
				if err != nil {
					return err
				}
				if s.json {
					return s.printJSON(resp.Body)
				}
				var body struct {
					Environments []json.RawMessage `json:"environments"`
				}
				if err := decodeJSON(resp, "the environments", &body); err != nil {
					return err
				}
				return renderEnvironments(s.stdout, body.Environments)
			}
		},
	}
}

// ref parses an ENV/FLAG argument; a bad one is a usage error.
func (s *session) ref(arg string) (ref, error) {
	return flagEntity.ref(s, arg)
}

// timeParam sets q[name] from a --at, --since or --until value, if given.
func (s *session) timeParam(q url.Values, name, value string) error {
	if value == "" {
		return nil
	}
	t, err := parseTime(value, s.now())
	if err != nil {
		return usagef(s.cmd, "--%s %v", name, err)
	}
	q.Set(name, formatTime(t))
	return nil
}

// printJSON writes the server's JSON, pretty-printed, and nothing else.
func (s *session) printJSON(body []byte) error {
	var buf bytes.Buffer
	if err := json.Indent(&buf, body, "", "  "); err != nil {
		return fmt.Errorf("the server's answer is not JSON: %w", err)
	}
	buf.WriteByte('\n')
	_, err := s.stdout.Write(buf.Bytes())
	return err
}
