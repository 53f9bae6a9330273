package command

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/interlock-dev/interlock/events"
	"github.com/interlock-dev/interlock/internal/natstest"
)

func decodeGeneric(t testing.TB, s string) any {
	t.Helper()
	dec := json.NewDecoder(strings.NewReader(s))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		t.Fatalf("%s: %v", s, err)
	}
	return v
}

// TestMergePatchRFC7396 runs the examples of RFC 7396, appendix A.
func TestMergePatchRFC7396(t *testing.T) {
	tests := []struct{ target, patch, want string }{
		{`{"a":"b"}`, `{"a":"c"}`, `{"a":"c"}`},
		{`{"a":"b"}`, `{"b":"c"}`, `{"a":"b","b":"c"}`},
		{`{"a":"b"}`, `{"a":null}`, `{}`},
		{`{"a":"b","b":"c"}`, `{"a":null}`, `{"b":"c"}`},
		{`{"a":["b"]}`, `{"a":"c"}`, `{"a":"c"}`},
		{`{"a":"c"}`, `{"a":["b"]}`, `{"a":["b"]}`},
		{`{"a":{"b":"c"}}`, `{"a":{"b":"d","c":null}}`, `{"a":{"b":"d"}}`},
		{`{"a":[{"b":"c"}]}`, `{"a":[1]}`, `{"a":[1]}`},
		{`["a","b"]`, `["c","d"]`, `["c","d"]`},
		{`{"a":"b"}`, `["c"]`, `["c"]`},
		{`{"a":"foo"}`, `null`, `null`},
		{`{"a":"foo"}`, `"bar"`, `"bar"`},
		{`{"e":null}`, `{"a":1}`, `{"a":1,"e":null}`},
		{`[1,2]`, `{"a":"b","c":null}`, `{"a":"b"}`},
		{`{}`, `{"a":{"bb":{"ccc":null}}}`, `{"a":{"bb":{}}}`},
		{`{"n":1}`, `{"n":1.50}`, `{"n":1.50}`},
	}
	for _, tt := range tests {
		t.Run(tt.target+"+"+tt.patch, func(t *testing.T) {
			patch := decodeGeneric(t, tt.patch)
			before, _ := json.Marshal(patch)
			got, err := json.Marshal(mergePatch(decodeGeneric(t, tt.target), patch))
			if err != nil {
				t.Fatal(err)
			}
			if string(got) != tt.want {
				t.Fatalf("got %s, want %s", got, tt.want)
			}
			if after, _ := json.Marshal(patch); !bytes.Equal(before, after) {
				t.Fatalf("the patch was modified: %s became %s", before, after)
			}
		})
	}
}

func fixedConfig() events.FlagConfig {
	cfg := events.FlagConfig{
		Description: "fixed",
		Tags:        []string{"a"},
		Kind:        events.KindConfig,
		Variants: map[string]json.RawMessage{
			"small": json.RawMessage(`{"ttl":60,"nested":{"x":1}}`),
			"large": json.RawMessage(`{"ttl":600}`),
		},
		DefaultVariant: "small",
		OffVariant:     "large",
		Rules: []events.Rule{{
			Conditions: []events.Condition{{Attribute: "plan", Operator: "in", Values: []any{"pro", 2.5}}},
			Serve:      events.Serve{Split: map[string]int{"small": 1, "large": 3}, BucketBy: "account"},
		}},
		DefaultServe: &events.Serve{Variant: "small"},
	}
	normalize(&cfg)
	return cfg
}

func TestUnknownFieldMessages(t *testing.T) {
	tests := []struct{ patch, field, says string }{
		{`{"Kind":"config"}`, "Kind", `did you mean "kind"`},
		{`{"colour":"red"}`, "colour", "defaultServe, defaultVariant, description"},
		{`{"rules":[{"serve":{"variant":"small"},"condition":[]}]}`, "rules[0].condition", "conditions, name, serve"},
		{`{"version":3}`, "version", "If-Match"},
		{`{"archived":false}`, "archived", "archive and unarchive"},
	}
	for _, tt := range tests {
		t.Run(tt.patch, func(t *testing.T) {
			_, err := parsePatch([]byte(tt.patch))
			var ve *events.ValidationError
			if !errors.As(err, &ve) || ve.Field != tt.field || !strings.Contains(ve.Message, tt.says) {
				t.Fatalf("got %v, want field %s saying %q", err, tt.field, tt.says)
			}
		})
	}
	t.Run("many problems are capped", func(t *testing.T) {
		var b strings.Builder
		b.WriteString("{")
		for i := range 50 {
			if i > 0 {
				b.WriteString(",")
			}
			b.WriteString(`"x` + strings.Repeat("y", i) + `":1`)
		}
		b.WriteString("}")
		_, err := parsePatch([]byte(b.String()))
		if n := len(err.(interface{ Unwrap() []error }).Unwrap()); n != maxReported+1 {
			t.Fatalf("%d problems reported, want %d", n, maxReported+1)
		}
	})
}

func TestUpdatedData(t *testing.T) {
	cfg := fixedConfig()
	enc, err := encode(cfg)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range []json.RawMessage{json.RawMessage(`{"description":"x"}`), nil} {
		want, err := json.Marshal(events.FlagUpdated{Flag: cfg, Patch: p})
		if err != nil {
			t.Fatal(err)
		}
		if got := updatedData(enc.canon, p); !bytes.Equal(got, want) {
			t.Fatalf("got  %s\nwant %s", got, want)
		}
	}
}

// TestCacheForgetsMissingFlags checks that asking about flags that do not exist leaves nothing
// behind in the cache, while flags that exist stay cached.
func TestCacheForgetsMissingFlags(t *testing.T) {
	ctx := context.Background()
	st, err := events.Open(ctx, natstest.JetStream(t, natstest.RunServer(t)), events.StreamConfig{})
	if err != nil {
		t.Fatal(err)
	}
	svc := New(st, nil)
	m := Meta{Actor: "alice"}
	for _, key := range []string{"a", "b", "c"} {
		if _, err := svc.Get(ctx, "prod", key); !errors.Is(err, ErrNotFound) {
			t.Fatal(err)
		}
		if _, err := svc.Handle(ctx, EnableFlag{Meta: m, Env: "prod", Key: key}); !errors.Is(err, ErrNotFound) {
			t.Fatal(err)
		}
	}
	if _, err := svc.Handle(ctx, CreateFlag{Meta: m, Env: "prod", Key: "kept", Config: fixedConfig()}); err != nil {
		t.Fatal(err)
	}
	svc.mu.Lock()
	n := len(svc.flags)
	_, kept := svc.flags[events.FlagSubject("prod", "kept")]
	svc.mu.Unlock()
	if n != 1 || !kept {
		t.Fatalf("cache holds %d flags (kept: %v), want only the one that exists", n, kept)
	}
}

// FuzzMergePatch applies arbitrary bytes as a patch to a fixed flag. It never panics; the result
// is a refusal wrapping events.ErrInvalid or a valid configuration; and it is what RFC 7396 gives
// on the whole document (wholeDocument), which apply computes member by member. Merge patches
// are idempotent: applying the patch to its own result changes nothing.
func FuzzMergePatch(f *testing.F) {
	for _, s := range []string{
		`{}`, `{"description":"x"}`, `{"description":null}`, `{"tags":["b","c"]}`,
		`{"variants":{"small":{"ttl":null,"nested":{"y":2}}}}`, `{"variants":{"large":null}}`,
		`{"defaultServe":{"variant":null,"split":{"small":1}}}`, `{"rules":null}`,
		`{"rules":[{"conditions":[{"attribute":"a","operator":"lt","values":[1e400]}],"serve":{"variant":"small"}}]}`,
		`{"key":"x"}`, `{"Kind":"release"}`, `[]`, `null`, `"x"`, `{"a":`, `{"enabled":true,"owner":"me"}`,
		`{"variants":{"small":"text"}}`, `{"defaultServe":{"split":{"small":"1"}}}`, `{"rules":{"a":1}}`,
		`{"description":{"a":1}}`, `{"tags":{}}`, `{"defaultServe":{"bucketBy":"x"}}`,
	} {
		f.Add([]byte(s))
	}
	cur := fixedConfig()
	want, _ := json.Marshal(cur)
	enc, err := encode(cur)
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		checkSplitObject(t, data)
		p, err := parsePatch(data)
		if err != nil {
			if !errors.Is(err, events.ErrInvalid) {
				t.Fatalf("error does not wrap ErrInvalid: %v", err)
			}
			return
		}
		next, err := p.apply(cur, enc)
		if now, _ := json.Marshal(cur); !bytes.Equal(now, want) {
			t.Fatalf("the current configuration was modified: %s", now)
		}
		ref, refErr := wholeDocument(cur, data)
		if (err == nil) != (refErr == nil) {
			t.Fatalf("member by member: %v\nwhole document: %v", err, refErr)
		}
		if err != nil {
			if !errors.Is(err, events.ErrInvalid) {
				t.Fatalf("error does not wrap ErrInvalid: %v", err)
			}
			return
		}
		if err := next.cfg.Validate(); err != nil {
			t.Fatalf("patched configuration is invalid: %v", err)
		}
		if !bytes.Equal(next.enc.canon, ref) {
			t.Fatalf("member by member: %s\nwhole document:   %s", next.enc.canon, ref)
		}
		if next.same != bytes.Equal(ref, enc.canon) {
			t.Fatalf("same = %v for\n%s\n%s", next.same, ref, enc.canon)
		}
		// The encoding kept for the next patch is the one derived from the configuration.
		derived, err := encode(next.cfg)
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(derived, next.enc) {
			t.Fatalf("kept encoding %s %q\nderived       %s %q", next.enc.canon, next.enc.members, derived.canon, derived.members)
		}
		again, err := p.apply(next.cfg, next.enc)
		if err != nil {
			t.Fatalf("applying the patch a second time: %v", err)
		}
		if !again.same || !bytes.Equal(again.enc.canon, next.enc.canon) {
			t.Fatalf("patch is not idempotent:\n%s\n%s", next.enc.canon, again.enc.canon)
		}
	})
}

// checkSplitObject holds splitObject to encoding/json on any JSON object.
func checkSplitObject(t *testing.T, data []byte) {
	var buf bytes.Buffer
	if !utf8.Valid(data) || json.Compact(&buf, data) != nil || buf.Len() == 0 || buf.Bytes()[0] != '{' {
		return // parsePatch refuses it before splitting
	}
	var want map[string]json.RawMessage
	if err := json.Unmarshal(buf.Bytes(), &want); err != nil {
		t.Fatal(err)
	}
	got, err := splitObject(buf.Bytes())
	if err != nil || !reflect.DeepEqual(got, want) {
		t.Fatalf("splitObject(%s) = %q, %v; want %q", buf.Bytes(), got, err, want)
	}
}

func TestSplitObject(t *testing.T) {
	for _, s := range []string{
		`{}`, `{"a":1}`, `{"a":1,"b":"x,}]\"y","c":[1,{"d":"}"}],"e":{"f":[]},"g":null,"h":true,"i":-1.5e3}`,
		`{"a":1,"a":2}`, `{"\u0061":1,"b\"c":{}}`, `{"":""}`,
	} {
		t.Run(s, func(t *testing.T) { checkSplitObject(t, []byte(s)) })
	}
}

// wholeDocument is RFC 7396 done the plain way: the whole configuration encoded as a document,
// the patch merged into it, the result decoded strictly, validated and normalised.
func wholeDocument(cur events.FlagConfig, patch []byte) ([]byte, error) {
	generic := func(data []byte) (any, error) {
		dec := json.NewDecoder(bytes.NewReader(data))
		dec.UseNumber()
		var v any
		return v, dec.Decode(&v)
	}
	data, err := json.Marshal(cur)
	if err != nil {
		return nil, err
	}
	doc, err := generic(data)
	if err != nil {
		return nil, err
	}
	p, err := generic(patch)
	if err != nil {
		return nil, err
	}
	merged, err := json.Marshal(mergePatch(doc, p))
	if err != nil {
		return nil, err
	}
	dec := json.NewDecoder(bytes.NewReader(merged))
	dec.DisallowUnknownFields()
	var cfg events.FlagConfig
	if err := dec.Decode(&cfg); err != nil {
		return nil, err
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	normalize(&cfg)
	return json.Marshal(cfg)
}

// FuzzCreateConfig decodes arbitrary JSON as a flag configuration and runs Create's validation:
// it never panics, and either refuses with events.ErrInvalid or returns a valid, normalised
// configuration.
func FuzzCreateConfig(f *testing.F) {
	seed, _ := json.Marshal(fixedConfig())
	f.Add(seed, "production", "checkout-v2", "alice")
	f.Add([]byte(`{"kind":"release","variants":{"on":true,"off":false},"defaultVariant":"on","offVariant":"off"}`), "staging", "DeptA.TeamB.66623", "bob")
	f.Add([]byte(`{"kind":"release","variants":{"on":true,"off":"x"},"defaultVariant":"on","offVariant":"off"}`), "Prod", "a..b", "")
	f.Add([]byte(`{"kind":"experiment","variants":{"a":1,"b":2},"defaultVariant":"a","offVariant":"b","rules":[{"conditions":[{"attribute":"v","operator":"semverGt","values":["1.2.3"]}],"serve":{"split":{"a":1,"b":1}}}]}`), "e", "k", "guard")
	f.Add([]byte(`{"kind":"config","variants":{"x":{}},"defaultVariant":"x","offVariant":"x","rules":[{"conditions":[{"attribute":"r","operator":"matches","values":["(a"]}],"serve":{"variant":"x"}}]}`), "e", "k", "a\nb")
	f.Fuzz(func(t *testing.T, data []byte, env, key, actor string) {
		var cfg events.FlagConfig
		if json.Unmarshal(data, &cfg) != nil {
			return
		}
		m, out, err := validateCreate(Meta{Actor: actor}, env, key, cfg)
		if err != nil {
			if !errors.Is(err, events.ErrInvalid) {
				t.Fatalf("error does not wrap ErrInvalid: %v", err)
			}
			return
		}
		if m.Actor == "" {
			t.Fatal("accepted without an actor")
		}
		if err := out.Validate(); err != nil {
			t.Fatalf("accepted an invalid configuration: %v", err)
		}
		normal := out.Clone()
		normalize(&normal)
		a, _ := json.Marshal(out)
		b, _ := json.Marshal(normal)
		if !bytes.Equal(a, b) {
			t.Fatalf("not normalised:\n%s\n%s", a, b)
		}
	})
}
