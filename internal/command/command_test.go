package command_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/interlock-dev/interlock/events"
	"github.com/interlock-dev/interlock/internal/command"
	"github.com/interlock-dev/interlock/internal/natstest"
	"github.com/interlock-dev/interlock/projections"
)

func TestCreate(t *testing.T) {
	st, svc := setup(t)
	ctx := context.Background()
	mustCreate(t, svc, "taken", baseConfig())

	enabled := baseConfig()
	enabled.Enabled = true
	spaced := baseConfig()
	spaced.Variants = map[string]json.RawMessage{"on": json.RawMessage(" true "), "off": json.RawMessage("false")}
	spaced.Tags = []string{}
	noVariants := baseConfig()
	noVariants.Variants = nil
	badKind := baseConfig()
	badKind.Kind = "toggle"

	tests := []struct {
		name    string
		meta    command.Meta
		env     string
		key     string
		cfg     events.FlagConfig
		want    error
		field   string
		enabled bool
	}{
		{name: "disabled by default", meta: alice, env: env, key: "new-flag", cfg: baseConfig()},
		{name: "enabled when asked", meta: alice, env: env, key: "DeptA.TeamB.66623", cfg: enabled, enabled: true},
		{name: "normalised", meta: alice, env: env, key: "spaced", cfg: spaced},
		{name: "same key in another environment", meta: alice, env: "staging", key: "taken", cfg: baseConfig()},
		{name: "exists", meta: alice, env: env, key: "taken", cfg: baseConfig(), want: command.ErrExists},
		{name: "bad environment", meta: alice, env: "Prod", key: "x", cfg: baseConfig(), want: events.ErrInvalid, field: "environment"},
		{name: "bad key", meta: alice, env: env, key: "a..b", cfg: baseConfig(), want: events.ErrInvalid, field: "key"},
		{name: "no actor", meta: command.Meta{Reason: "r"}, env: env, key: "x", cfg: baseConfig(), want: events.ErrInvalid, field: "actor"},
		{name: "blank actor", meta: command.Meta{Actor: "  "}, env: env, key: "x", cfg: baseConfig(), want: events.ErrInvalid, field: "actor"},
		{name: "long reason", meta: command.Meta{Actor: "a", Reason: strings.Repeat("r", events.MaxReasonLen+1)}, env: env, key: "x", cfg: baseConfig(), want: events.ErrInvalid, field: "reason"},
		{name: "reason with a line break", meta: command.Meta{Actor: "a", Reason: "one\nce-actor: mallory"}, env: env, key: "x", cfg: baseConfig(), want: events.ErrInvalid, field: "reason"},
		{name: "long correlation id", meta: command.Meta{Actor: "a", CorrelationID: strings.Repeat("c", 257)}, env: env, key: "x", cfg: baseConfig(), want: events.ErrInvalid, field: "correlationId"},
		{name: "no variants", meta: alice, env: env, key: "x", cfg: noVariants, want: events.ErrInvalid, field: "variants"},
		{name: "bad kind", meta: alice, env: env, key: "x", cfg: badKind, want: events.ErrInvalid, field: "kind"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := streamLen(t, st)
			given := tt.cfg.Clone()
			f, err := flagOf(svc.Handle(ctx, command.CreateFlag{Meta: tt.meta, Env: tt.env, Key: tt.key, Config: tt.cfg}))
			checkErr(t, err, tt.want)
			checkField(t, err, tt.field)
			if tt.want != nil {
				if n := streamLen(t, st); n != before {
					t.Fatalf("a refused create wrote %d events", n-before)
				}
				return
			}
			if n := streamLen(t, st); n != before+1 {
				t.Fatalf("create wrote %d events, want 1", n-before)
			}
			if f.Version != 1 || f.Sequence != before+1 || f.Key != tt.key || f.Environment != tt.env ||
				f.Enabled != tt.enabled || f.UpdatedBy != "alice" || f.CreatedAt.IsZero() || f.Archived {
				t.Fatalf("created flag: %+v", f)
			}
			if string(f.Variants["on"]) != "true" {
				t.Fatalf("variant not compacted: %q", f.Variants["on"])
			}
			if !bytes.Equal(tt.cfg.Variants["on"], given.Variants["on"]) {
				t.Fatal("create modified the caller's configuration")
			}
			got, err := svc.Get(ctx, tt.env, tt.key)
			if err != nil {
				t.Fatal(err)
			}
			if got.Version != 1 || got.Description != tt.cfg.Description {
				t.Fatalf("get after create: %+v", got)
			}
		})
	}
}

func TestMetaOnEvents(t *testing.T) {
	st, svc := setup(t)
	m := command.Meta{Actor: " bob ", Reason: " rollout step ", CorrelationID: "req-7", CausationID: "ev-3"}
	if _, err := svc.Handle(context.Background(), command.CreateFlag{Meta: m, Env: env, Key: "meta", Config: baseConfig()}); err != nil {
		t.Fatal(err)
	}
	ev := load(t, st, "meta")[0]
	if ev.Actor != "bob" || ev.Reason != "rollout step" || ev.CorrelationID != "req-7" || ev.CausationID != "ev-3" ||
		ev.Version != 1 || ev.Type != events.TypeFlagCreated {
		t.Fatalf("event envelope: %+v", ev)
	}
}

func TestUpdate(t *testing.T) {
	st, svc := setup(t)
	ctx := context.Background()

	objects := events.FlagConfig{
		Kind: events.KindConfig,
		Variants: map[string]json.RawMessage{
			"small": json.RawMessage(`{"ttl":60,"mode":"lru","limits":{"a":1,"b":2}}`),
			"large": json.RawMessage(`{"ttl":600}`),
		},
		DefaultVariant: "small",
		OffVariant:     "small",
	}

	tests := []struct {
		name     string
		cfg      events.FlagConfig // the flag's configuration before the patch; baseConfig when Kind is empty
		archived bool
		touched  bool   // updated once before the patch
		expected uint64 // 0: no expectation; otherwise the flag's version plus stale is expected
		stale    int64
		patch    string
		want     error
		field    string
		noop     bool
		check    func(t *testing.T, f projections.Flag)
	}{
		{name: "set a field", patch: `{"description": "new words"}`, check: func(t *testing.T, f projections.Flag) {
			if f.Description != "new words" || f.Owner != "team-checkout" || len(f.Rules) != 1 {
				t.Fatalf("got %+v", f.FlagConfig)
			}
		}},
		{name: "with the expected version", expected: 1, patch: `{"owner": "team-payments"}`, check: func(t *testing.T, f projections.Flag) {
			if f.Owner != "team-payments" {
				t.Fatalf("owner %q", f.Owner)
			}
		}},
		{name: "null deletes", patch: `{"description": null, "tags": null}`, check: func(t *testing.T, f projections.Flag) {
			if f.Description != "" || f.Tags != nil || f.Owner == "" {
				t.Fatalf("got %+v", f.FlagConfig)
			}
		}},
		{name: "nested objects merge", patch: `{"defaultServe": {"split": {"on": 90, "off": 10}}}`, check: func(t *testing.T, f projections.Flag) {
			if f.DefaultServe == nil || f.DefaultServe.Split["on"] != 90 || f.DefaultServe.Split["off"] != 10 {
				t.Fatalf("defaultServe %+v", f.DefaultServe)
			}
		}},
		{name: "nested null deletes", patch: `{"defaultServe": {"split": {"off": null}}}`, check: func(t *testing.T, f projections.Flag) {
			if s := f.DefaultServe.Split; len(s) != 1 || s["on"] != 50 {
				t.Fatalf("split %+v", s)
			}
		}},
		{name: "arrays replace", patch: `{"tags": ["payments"], "rules": [{"conditions": [{"attribute": "country", "operator": "eq", "values": ["NL"]}], "serve": {"variant": "off"}}]}`, check: func(t *testing.T, f projections.Flag) {
			if len(f.Tags) != 1 || f.Tags[0] != "payments" {
				t.Fatalf("tags %v", f.Tags)
			}
			if len(f.Rules) != 1 || f.Rules[0].Name != "" || f.Rules[0].Conditions[0].Attribute != "country" || f.Rules[0].Serve.Variant != "off" {
				t.Fatalf("rules %+v", f.Rules)
			}
		}},
		{name: "variant objects merge", cfg: objects, patch: `{"variants": {"small": {"mode": null, "ttl": 30, "limits": {"b": 3}}}}`, check: func(t *testing.T, f projections.Flag) {
			if got := string(f.Variants["small"]); got != `{"limits":{"a":1,"b":3},"ttl":30}` {
				t.Fatalf("small = %s", got)
			}
			if got := string(f.Variants["large"]); got != `{"ttl":600}` {
				t.Fatalf("large = %s", got)
			}
		}},
		{name: "add and remove a variant", cfg: objects, patch: `{"variants": {"large": null, "huge": {"ttl": 6000}}, "offVariant": "huge"}`, check: func(t *testing.T, f projections.Flag) {
			if _, ok := f.Variants["large"]; ok || string(f.Variants["huge"]) != `{"ttl":6000}` || f.OffVariant != "huge" {
				t.Fatalf("variants %v", f.Variants)
			}
		}},
		{name: "numbers keep their text", cfg: objects, patch: `{"variants": {"large": {"ttl": 12345678901234567890}}}`, check: func(t *testing.T, f projections.Flag) {
			if got := string(f.Variants["large"]); got != `{"ttl":12345678901234567890}` {
				t.Fatalf("large = %s", got)
			}
		}},
		{name: "enabled can be patched", patch: `{"enabled": true}`, check: func(t *testing.T, f projections.Flag) {
			if !f.Enabled {
				t.Fatal("not enabled")
			}
		}},
		{name: "same value", patch: `{"description": "checkout redesign"}`, noop: true},
		{name: "empty patch", patch: `{}`, noop: true},
		{name: "same object in another order", cfg: objects, patch: `{"variants": {"small": {"limits": {"b": 2, "a": 1}, "mode": "lru", "ttl": 60}}}`, noop: true},
		{name: "deleting what is not there", patch: `{"defaultServe": {"bucketBy": null}}`, noop: true},
		{name: "stale: expected is older", touched: true, expected: 1, stale: -1, patch: `{"description": "x"}`, want: command.ErrStale},
		{name: "stale: expected is newer", expected: 1, stale: +5, patch: `{"description": "x"}`, want: command.ErrStale},
		{name: "archived", archived: true, patch: `{"description": "x"}`, want: command.ErrArchived},
		{name: "read-only key", patch: `{"key": "other"}`, want: events.ErrInvalid, field: "key"},
		{name: "read-only environment", patch: `{"environment": "staging"}`, want: events.ErrInvalid, field: "environment"},
		{name: "read-only version", patch: `{"version": 7}`, want: events.ErrInvalid, field: "version"},
		{name: "read-only archived", patch: `{"archived": true}`, want: events.ErrInvalid, field: "archived"},
		{name: "read-only createdAt", patch: `{"createdAt": null}`, want: events.ErrInvalid, field: "createdAt"},
		{name: "read-only updatedAt", patch: `{"updatedAt": "2026-01-01T00:00:00Z"}`, want: events.ErrInvalid, field: "updatedAt"},
		{name: "read-only updatedBy", patch: `{"updatedBy": "mallory"}`, want: events.ErrInvalid, field: "updatedBy"},
		{name: "unknown field", patch: `{"descripton": "typo"}`, want: events.ErrInvalid, field: "descripton"},
		{name: "unknown field by case", patch: `{"Description": "x"}`, want: events.ErrInvalid, field: "Description"},
		{name: "unknown nested field", patch: `{"defaultServe": {"varaint": "on"}}`, want: events.ErrInvalid, field: "defaultServe.varaint"},
		{name: "unknown field in an array", patch: `{"rules": [{"conditions": [{"attribute": "a", "operator": "exists", "negate": true}], "serve": {"variant": "on"}}]}`, want: events.ErrInvalid, field: "rules[0].conditions[0].negate"},
		{name: "wrong type", patch: `{"tags": "web"}`, want: events.ErrInvalid, field: "tags"},
		{name: "wrong nested type", patch: `{"defaultServe": {"split": {"on": "most"}}}`, want: events.ErrInvalid, field: "defaultServe.split"},
		{name: "result invalid", patch: `{"defaultVariant": "maybe"}`, want: events.ErrInvalid, field: "defaultVariant"},
		{name: "deleting a required field", patch: `{"variants": null}`, want: events.ErrInvalid, field: "variants"},
		{name: "array", patch: `[{"op": "replace"}]`, want: events.ErrInvalid, field: "patch"},
		{name: "string", patch: `"description"`, want: events.ErrInvalid, field: "patch"},
		{name: "null", patch: `null`, want: events.ErrInvalid, field: "patch"},
		{name: "empty", patch: ``, want: events.ErrInvalid, field: "patch"},
		{name: "not JSON", patch: `{"description": `, want: events.ErrInvalid, field: "patch"},
		{name: "trailing data", patch: `{} {}`, want: events.ErrInvalid, field: "patch"},
		{name: "not UTF-8", patch: "{\"description\": \"\xff\"}", want: events.ErrInvalid, field: "patch"},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			key := fmt.Sprintf("update-%d", i)
			cfg := tt.cfg
			if cfg.Kind == "" {
				cfg = baseConfig()
			}
			cur := mustCreate(t, svc, key, cfg)
			if tt.touched {
				var err error
				if cur, err = flagOf(svc.Handle(ctx, command.UpdateFlag{Meta: alice, Env: env, Key: key, ExpectedVersion: 0, Patch: []byte(`{"owner":"someone"}`)})); err != nil {
					t.Fatal(err)
				}
			}
			if tt.archived {
				var err error
				if cur, err = flagOf(svc.Handle(ctx, command.ArchiveFlag{Meta: alice, Env: env, Key: key})); err != nil {
					t.Fatal(err)
				}
			}
			expected := tt.expected
			if expected != 0 {
				expected = uint64(int64(cur.Version) + tt.stale)
			}
			before := streamLen(t, st)
			f, err := flagOf(svc.Handle(ctx, command.UpdateFlag{Meta: alice, Env: env, Key: key, ExpectedVersion: expected, Patch: []byte(tt.patch)}))
			checkErr(t, err, tt.want)
			checkField(t, err, tt.field)
			if tt.want != nil {
				if n := streamLen(t, st); n != before {
					t.Fatalf("a refused update wrote %d events", n-before)
				}
				var ve *command.VersionError
				if errors.Is(tt.want, command.ErrStale) && (!errors.As(err, &ve) || ve.Expected != expected || ve.Actual != cur.Version) {
					t.Fatalf("stale error %v, want expected %d actual %d", err, expected, cur.Version)
				}
				return
			}
			if tt.noop {
				if n := streamLen(t, st); n != before {
					t.Fatalf("a no-op update wrote %d events", n-before)
				}
				if f.Version != cur.Version || f.Sequence != cur.Sequence {
					t.Fatalf("no-op returned version %d seq %d, want %d %d", f.Version, f.Sequence, cur.Version, cur.Sequence)
				}
				return
			}
			if f.Version != cur.Version+1 || f.Sequence != before+1 {
				t.Fatalf("version %d sequence %d, want %d %d", f.Version, f.Sequence, cur.Version+1, before+1)
			}
			tt.check(t, f)
			evs := load(t, st, key)
			last := evs[len(evs)-1]
			p := payload[events.FlagUpdated](t, last)
			var compact bytes.Buffer
			if err := json.Compact(&compact, []byte(tt.patch)); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(p.Patch, compact.Bytes()) {
				t.Fatalf("stored patch %s, want %s", p.Patch, compact.Bytes())
			}
			if err := p.Flag.Validate(); err != nil {
				t.Fatalf("stored configuration invalid: %v", err)
			}
			// The fold of the stored events is what the command returned.
			folded, err := projections.Fold(evs)
			if err != nil {
				t.Fatal(err)
			}
			a, _ := json.Marshal(folded)
			b, _ := json.Marshal(f)
			if !bytes.Equal(a, b) {
				t.Fatalf("returned %s\nfolded   %s", b, a)
			}
		})
	}
}

// TestForeignFlag runs commands on a flag whose events another writer appended, with a
// configuration that is not in normal form.
func TestForeignFlag(t *testing.T) {
	st, svc := setup(t)
	ctx := context.Background()
	cfg := events.FlagConfig{
		Kind:           events.KindConfig,
		Tags:           []string{},
		Variants:       map[string]json.RawMessage{"a": json.RawMessage(`{ "z": 1, "y": [ 2 ] }`), "b": json.RawMessage(` {"x":true}`)},
		DefaultVariant: "a",
		OffVariant:     "b",
	}
	ev, err := events.NewEvent(events.TypeFlagCreated, env, "foreign", events.FlagCreated{Flag: cfg})
	if err != nil {
		t.Fatal(err)
	}
	ev.Actor, ev.Version = "elsewhere", 1
	if _, err := st.Append(ctx, &ev, 0); err != nil {
		t.Fatal(err)
	}
	// Equal documents are equal configurations: nothing to write.
	f, err := flagOf(svc.Handle(ctx, command.UpdateFlag{Meta: alice, Env: env, Key: "foreign", ExpectedVersion: 1, Patch: []byte(`{"variants":{"a":{"y":[2],"z":1}},"tags":[]}`)}))
	if err != nil {
		t.Fatal(err)
	}
	if f.Version != 1 || len(load(t, st, "foreign")) != 1 {
		t.Fatalf("a patch that changes nothing wrote: version %d", f.Version)
	}
	f, err = flagOf(svc.Handle(ctx, command.UpdateFlag{Meta: alice, Env: env, Key: "foreign", ExpectedVersion: 1, Patch: []byte(`{"description":"now"}`)}))
	if err != nil {
		t.Fatal(err)
	}
	evs := load(t, st, "foreign")
	stored := payload[events.FlagUpdated](t, evs[1]).Flag
	if got := string(stored.Variants["a"]); got != `{"y":[2],"z":1}` || f.Description != "now" || f.Version != 2 {
		t.Fatalf("stored variant %s, flag %+v", got, f)
	}
	folded, err := projections.Fold(evs)
	if err != nil {
		t.Fatal(err)
	}
	a, _ := json.Marshal(folded)
	b, _ := json.Marshal(f)
	if !bytes.Equal(a, b) {
		t.Fatalf("returned %s\nfolded   %s", b, a)
	}
}

func TestUpdateMissing(t *testing.T) {
	st, svc := setup(t)
	before := streamLen(t, st)
	_, err := svc.Handle(context.Background(), command.UpdateFlag{Meta: alice, Env: env, Key: "nope", ExpectedVersion: 0, Patch: []byte(`{"description": "x"}`)})
	if !errors.Is(err, command.ErrNotFound) || !errors.Is(err, projections.ErrNotFound) {
		t.Fatalf("got %v, want ErrNotFound matching projections.ErrNotFound too", err)
	}
	if streamLen(t, st) != before {
		t.Fatal("wrote an event")
	}
}

// TestStateCommands covers enable, kill, archive and unarchive from every state that matters.
func TestStateCommands(t *testing.T) {
	st, svc := setup(t)
	ctx := context.Background()
	type setupFn func(t *testing.T, key string) projections.Flag
	flag := func(enabled, archived bool) setupFn {
		return func(t *testing.T, key string) projections.Flag {
			cfg := baseConfig()
			cfg.Enabled = enabled
			f := mustCreate(t, svc, key, cfg)
			if archived {
				var err error
				if f, err = flagOf(svc.Handle(ctx, command.ArchiveFlag{Meta: alice, Env: env, Key: key})); err != nil {
					t.Fatal(err)
				}
			}
			return f
		}
	}
	missing := func(*testing.T, string) projections.Flag { return projections.Flag{} }
	enable := func(m command.Meta, v uint64) func(string) (projections.Flag, error) {
		return func(key string) (projections.Flag, error) {
			return flagOf(svc.Handle(ctx, command.EnableFlag{Meta: m, Env: env, Key: key, ExpectedVersion: v}))
		}
	}
	kill := func(m command.Meta) func(string) (projections.Flag, error) {
		return func(key string) (projections.Flag, error) {
			return flagOf(svc.Handle(ctx, command.KillFlag{Meta: m, Env: env, Key: key}))
		}
	}
	archive := func(v uint64) func(string) (projections.Flag, error) {
		return func(key string) (projections.Flag, error) {
			return flagOf(svc.Handle(ctx, command.ArchiveFlag{Meta: alice, Env: env, Key: key, ExpectedVersion: v}))
		}
	}
	unarchive := func(v uint64) func(string) (projections.Flag, error) {
		return func(key string) (projections.Flag, error) {
			return flagOf(svc.Handle(ctx, command.UnarchiveFlag{Meta: alice, Env: env, Key: key, ExpectedVersion: v}))
		}
	}
	noReason := command.Meta{Actor: "alice"}

	tests := []struct {
		name     string
		setup    setupFn
		run      func(key string) (projections.Flag, error)
		want     error
		field    string
		typ      string // the event written; "" for none
		enabled  bool
		archived bool
	}{
		{name: "enable", setup: flag(false, false), run: enable(alice, 0), typ: events.TypeFlagEnabled, enabled: true},
		{name: "enable at version", setup: flag(false, false), run: enable(alice, 1), typ: events.TypeFlagEnabled, enabled: true},
		{name: "enable enabled", setup: flag(true, false), run: enable(alice, 0), enabled: true},
		{name: "enable stale", setup: flag(false, false), run: enable(alice, 2), want: command.ErrStale},
		{name: "enable archived", setup: flag(false, true), run: enable(alice, 0), want: command.ErrArchived},
		{name: "enable missing", setup: missing, run: enable(alice, 0), want: projections.ErrNotFound},
		{name: "enable without actor", setup: flag(false, false), run: enable(command.Meta{}, 0), want: events.ErrInvalid, field: "actor"},
		{name: "kill", setup: flag(true, false), run: kill(alice), typ: events.TypeFlagKilled},
		{name: "kill disabled", setup: flag(false, false), run: kill(alice)},
		{name: "kill archived", setup: flag(true, true), run: kill(alice), typ: events.TypeFlagKilled, archived: true},
		{name: "kill without reason", setup: flag(true, false), run: kill(noReason), want: events.ErrInvalid, field: "reason", enabled: true},
		{name: "kill with a blank reason", setup: flag(true, false), run: kill(command.Meta{Actor: "a", Reason: " \t "}), want: events.ErrInvalid, field: "reason"},
		{name: "kill missing", setup: missing, run: kill(alice), want: command.ErrNotFound},
		{name: "archive", setup: flag(true, false), run: archive(0), typ: events.TypeFlagArchived, enabled: true, archived: true},
		{name: "archive at version", setup: flag(false, false), run: archive(1), typ: events.TypeFlagArchived, archived: true},
		{name: "archive archived", setup: flag(false, true), run: archive(0), archived: true},
		{name: "archive stale", setup: flag(false, false), run: archive(7), want: command.ErrStale},
		{name: "archive missing", setup: missing, run: archive(0), want: command.ErrNotFound},
		{name: "unarchive", setup: flag(false, true), run: unarchive(2), typ: events.TypeFlagUnarchived},
		{name: "unarchive active", setup: flag(false, false), run: unarchive(0)},
		{name: "unarchive stale", setup: flag(false, true), run: unarchive(1), want: command.ErrStale},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			key := fmt.Sprintf("state-%d", i)
			cur := tt.setup(t, key)
			before := streamLen(t, st)
			f, err := tt.run(key)
			checkErr(t, err, tt.want)
			checkField(t, err, tt.field)
			written := streamLen(t, st) - before
			if tt.want != nil || tt.typ == "" {
				if written != 0 {
					t.Fatalf("wrote %d events, want none", written)
				}
				if tt.want == nil && (f.Version != cur.Version || f.Sequence != cur.Sequence) {
					t.Fatalf("no-op returned version %d, want %d", f.Version, cur.Version)
				}
				return
			}
			if written != 1 {
				t.Fatalf("wrote %d events, want 1", written)
			}
			evs := load(t, st, key)
			last := evs[len(evs)-1]
			if last.Type != tt.typ || last.Version != cur.Version+1 || last.Actor != "alice" || last.Reason != "test" {
				t.Fatalf("event %+v, want %s at version %d", last, tt.typ, cur.Version+1)
			}
			if f.Version != last.Version || f.Sequence != last.Sequence || f.Enabled != tt.enabled || f.Archived != tt.archived {
				t.Fatalf("returned %+v", f)
			}
		})
	}
}

func TestRestore(t *testing.T) {
	st, svc := setup(t)
	ctx := context.Background()
	key := "restore"
	mustCreate(t, svc, key, baseConfig()) // v1: "checkout redesign"
	for _, d := range []string{"two", "three"} {
		if _, err := svc.Handle(ctx, command.UpdateFlag{Meta: alice, Env: env, Key: key, ExpectedVersion: 0, Patch: []byte(`{"description":"` + d + `","tags":null}`)}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := svc.Handle(ctx, command.EnableFlag{Meta: alice, Env: env, Key: key, ExpectedVersion: 3}); err != nil { // v4: enabled
		t.Fatal(err)
	}

	tests := []struct {
		name     string
		to       uint64
		expected uint64
		want     error
		noop     bool
		desc     string
		version  uint64 // the flag's version afterwards
	}{
		{name: "zero", to: 0, want: events.ErrInvalid},
		{name: "current", to: 4, want: events.ErrInvalid},
		{name: "future", to: 9, want: events.ErrInvalid},
		{name: "stale", to: 1, expected: 3, want: command.ErrStale},
		{name: "to the first version", to: 1, expected: 4, desc: "checkout redesign", version: 5},
		{name: "to what it is now", to: 1, noop: true, desc: "checkout redesign", version: 5},
		{name: "to a middle version", to: 2, desc: "two", version: 6},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := streamLen(t, st)
			f, err := flagOf(svc.Handle(ctx, command.RestoreFlag{Meta: alice, Env: env, Key: key, ToVersion: tt.to, ExpectedVersion: tt.expected}))
			checkErr(t, err, tt.want)
			if tt.want != nil {
				checkField(t, err, map[bool]string{true: "toVersion"}[errors.Is(tt.want, events.ErrInvalid)])
				if streamLen(t, st) != before {
					t.Fatal("a refused restore wrote an event")
				}
				return
			}
			if f.Description != tt.desc || f.Version != tt.version {
				t.Fatalf("restored %q at version %d, want %q at %d", f.Description, f.Version, tt.desc, tt.version)
			}
			if tt.noop {
				if streamLen(t, st) != before {
					t.Fatal("a no-op restore wrote an event")
				}
				return
			}
			evs := load(t, st, key)
			last := evs[len(evs)-1]
			p := payload[events.FlagRestored](t, last)
			if last.Type != events.TypeFlagRestored || p.FromVersion != tt.to || p.Flag.Description != tt.desc {
				t.Fatalf("event %s %+v", last.Type, p)
			}
			// The configuration restored is the one the flag had then, enabled state included.
			then, err := projections.Fold(evs[:tt.to])
			if err != nil {
				t.Fatal(err)
			}
			a, _ := json.Marshal(then.FlagConfig)
			b, _ := json.Marshal(f.FlagConfig)
			if !bytes.Equal(a, b) {
				t.Fatalf("restored %s\nwant     %s", b, a)
			}
		})
	}

	t.Run("archived", func(t *testing.T) {
		if _, err := svc.Handle(ctx, command.ArchiveFlag{Meta: alice, Env: env, Key: key}); err != nil {
			t.Fatal(err)
		}
		before := streamLen(t, st)
		if _, err := svc.Handle(ctx, command.RestoreFlag{Meta: alice, Env: env, Key: key, ToVersion: 1}); !errors.Is(err, command.ErrArchived) {
			t.Fatalf("got %v, want ErrArchived", err)
		}
		if streamLen(t, st) != before {
			t.Fatal("wrote an event")
		}
	})
	t.Run("missing", func(t *testing.T) {
		if _, err := svc.Handle(ctx, command.RestoreFlag{Meta: alice, Env: env, Key: "nope", ToVersion: 1}); !errors.Is(err, command.ErrNotFound) {
			t.Fatalf("got %v, want ErrNotFound", err)
		}
	})
}

func TestGet(t *testing.T) {
	st, svc := setup(t)
	ctx := context.Background()
	if _, err := svc.Get(ctx, env, "nope"); !errors.Is(err, command.ErrNotFound) || !errors.Is(err, projections.ErrNotFound) {
		t.Fatalf("got %v, want ErrNotFound", err)
	}
	if _, err := svc.Get(ctx, env, "no/pe"); !errors.Is(err, events.ErrInvalid) {
		t.Fatalf("got %v, want ErrInvalid", err)
	}
	// Another replica writes; Get sees it.
	other := newService(t, st)
	mustCreate(t, other, "elsewhere", baseConfig())
	if _, err := other.Handle(ctx, command.EnableFlag{Meta: alice, Env: env, Key: "elsewhere", ExpectedVersion: 1}); err != nil {
		t.Fatal(err)
	}
	f, err := svc.Get(ctx, env, "elsewhere")
	if err != nil {
		t.Fatal(err)
	}
	if f.Version != 2 || !f.Enabled || f.Sequence != 2 {
		t.Fatalf("got %+v", f)
	}
	// Returned flags share their configuration with the service, which never modifies one in
	// place: what a caller holds does not change under it.
	before, _ := json.Marshal(f)
	for _, patch := range []string{
		`{"variants":{"on":null,"yes":true},"defaultVariant":"yes","rules":null,"defaultServe":{"split":{"on":null,"yes":50}},"tags":["x"]}`,
		`{"description":"again","variants":{"no":false},"defaultServe":{"split":{"no":1}}}`,
	} {
		if _, err := svc.Handle(ctx, command.UpdateFlag{Meta: alice, Env: env, Key: "elsewhere", ExpectedVersion: 0, Patch: []byte(patch)}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := svc.Handle(ctx, command.KillFlag{Meta: alice, Env: env, Key: "elsewhere"}); err != nil {
		t.Fatal(err)
	}
	if after, _ := json.Marshal(f); !bytes.Equal(before, after) {
		t.Fatalf("a returned flag changed:\n%s\n%s", before, after)
	}
}

// TestStaleCache runs commands on a replica whose cache is behind the stream: another replica
// wrote in between.
func TestStaleCache(t *testing.T) {
	srv := natstest.RunServer(t)
	st := openStore(t, srv)
	a, b := newService(t, st), newService(t, openStore(t, srv))
	ctx := context.Background()

	tests := []struct {
		name  string
		onB   func(key string) error                     // what the other replica does after a cached the flag
		onA   func(key string) (projections.Flag, error) // the command on the stale replica
		want  error
		check func(t *testing.T, f projections.Flag, evs []events.Event)
	}{
		{
			name: "update with the version the other replica made",
			onB: func(key string) error {
				_, err := b.Handle(ctx, command.UpdateFlag{Meta: alice, Env: env, Key: key, ExpectedVersion: 1, Patch: []byte(`{"owner":"b"}`)})
				return err
			},
			onA: func(key string) (projections.Flag, error) {
				return flagOf(a.Handle(ctx, command.UpdateFlag{Meta: alice, Env: env, Key: key, ExpectedVersion: 2, Patch: []byte(`{"description":"a"}`)}))
			},
			check: func(t *testing.T, f projections.Flag, evs []events.Event) {
				if f.Version != 3 || f.Owner != "b" || f.Description != "a" || len(evs) != 3 {
					t.Fatalf("got %+v", f)
				}
			},
		},
		{
			name: "update with the version the stale cache has",
			onB: func(key string) error {
				_, err := b.Handle(ctx, command.UpdateFlag{Meta: alice, Env: env, Key: key, ExpectedVersion: 1, Patch: []byte(`{"owner":"b"}`)})
				return err
			},
			onA: func(key string) (projections.Flag, error) {
				return flagOf(a.Handle(ctx, command.UpdateFlag{Meta: alice, Env: env, Key: key, ExpectedVersion: 1, Patch: []byte(`{"description":"a"}`)}))
			},
			want: command.ErrStale,
		},
		{
			name: "update without a version",
			onB: func(key string) error {
				_, err := b.Handle(ctx, command.UpdateFlag{Meta: alice, Env: env, Key: key, ExpectedVersion: 1, Patch: []byte(`{"owner":"b"}`)})
				return err
			},
			onA: func(key string) (projections.Flag, error) {
				return flagOf(a.Handle(ctx, command.UpdateFlag{Meta: alice, Env: env, Key: key, ExpectedVersion: 0, Patch: []byte(`{"description":"a"}`)}))
			},
			check: func(t *testing.T, f projections.Flag, evs []events.Event) {
				if f.Version != 3 || f.Owner != "b" || f.Description != "a" {
					t.Fatalf("got %+v", f)
				}
			},
		},
		{
			name: "kill a flag the stale cache thinks is off",
			onB: func(key string) error {
				_, err := b.Handle(ctx, command.EnableFlag{Meta: alice, Env: env, Key: key})
				return err
			},
			onA: func(key string) (projections.Flag, error) {
				return flagOf(a.Handle(ctx, command.KillFlag{Meta: alice, Env: env, Key: key}))
			},
			check: func(t *testing.T, f projections.Flag, evs []events.Event) {
				if f.Enabled || f.Version != 3 || evs[2].Type != events.TypeFlagKilled {
					t.Fatalf("kill did not land: %+v", f)
				}
			},
		},
		{
			name: "enable a flag the other replica enabled",
			onB: func(key string) error {
				_, err := b.Handle(ctx, command.EnableFlag{Meta: alice, Env: env, Key: key})
				return err
			},
			onA: func(key string) (projections.Flag, error) {
				return flagOf(a.Handle(ctx, command.EnableFlag{Meta: alice, Env: env, Key: key}))
			},
			check: func(t *testing.T, f projections.Flag, evs []events.Event) {
				if !f.Enabled || f.Version != 2 || len(evs) != 2 {
					t.Fatalf("got %+v with %d events", f, len(evs))
				}
			},
		},
		{
			name: "update a flag the other replica archived",
			onB: func(key string) error {
				_, err := b.Handle(ctx, command.ArchiveFlag{Meta: alice, Env: env, Key: key})
				return err
			},
			onA: func(key string) (projections.Flag, error) {
				return flagOf(a.Handle(ctx, command.UpdateFlag{Meta: alice, Env: env, Key: key, ExpectedVersion: 0, Patch: []byte(`{"description":"a"}`)}))
			},
			want: command.ErrArchived,
		},
		{
			name: "enable a flag the other replica unarchived",
			onB: func(key string) error {
				_, err := b.Handle(ctx, command.UnarchiveFlag{Meta: alice, Env: env, Key: key})
				return err
			},
			onA: func(key string) (projections.Flag, error) {
				return flagOf(a.Handle(ctx, command.EnableFlag{Meta: alice, Env: env, Key: key}))
			},
			check: func(t *testing.T, f projections.Flag, evs []events.Event) {
				if !f.Enabled || f.Archived || f.Version != 4 {
					t.Fatalf("got %+v", f)
				}
			},
		},
		{
			name: "restore to a version only the other replica knows",
			onB: func(key string) error {
				_, err := b.Handle(ctx, command.UpdateFlag{Meta: alice, Env: env, Key: key, ExpectedVersion: 0, Patch: []byte(`{"description":"b"}`)})
				return err
			},
			onA: func(key string) (projections.Flag, error) {
				return flagOf(a.Handle(ctx, command.RestoreFlag{Meta: alice, Env: env, Key: key, ToVersion: 1}))
			},
			check: func(t *testing.T, f projections.Flag, evs []events.Event) {
				if f.Description != "checkout redesign" || f.Version != 3 {
					t.Fatalf("got %+v", f)
				}
			},
		},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			key := fmt.Sprintf("stale-%d", i)
			mustCreate(t, a, key, baseConfig())
			if strings.Contains(tt.name, "unarchived") {
				if _, err := a.Handle(ctx, command.ArchiveFlag{Meta: alice, Env: env, Key: key}); err != nil {
					t.Fatal(err)
				}
			}
			if err := tt.onB(key); err != nil {
				t.Fatal(err)
			}
			before := streamLen(t, st)
			f, err := tt.onA(key)
			checkErr(t, err, tt.want)
			if tt.want != nil {
				if streamLen(t, st) != before {
					t.Fatal("a refused command wrote an event")
				}
				return
			}
			tt.check(t, f, load(t, st, key))
		})
	}

	t.Run("create a flag the other replica created", func(t *testing.T) {
		if _, err := a.Get(ctx, env, "race-create"); !errors.Is(err, command.ErrNotFound) {
			t.Fatal(err)
		}
		mustCreate(t, b, "race-create", baseConfig())
		if _, err := a.Handle(ctx, command.CreateFlag{Meta: alice, Env: env, Key: "race-create", Config: baseConfig()}); !errors.Is(err, command.ErrExists) {
			t.Fatalf("got %v, want ErrExists", err)
		}
	})
}
