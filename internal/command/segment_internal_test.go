package command

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/interlock-dev/interlock/events"
	"github.com/interlock-dev/interlock/internal/natstest"
)

func fixedSegment() events.SegmentConfig {
	return events.SegmentConfig{
		Description: "fixed",
		Included:    []string{"a", "b"},
		Excluded:    []string{"z"},
		Conditions: []events.Condition{
			{Attribute: "plan", Operator: "in", Values: []any{"pro", 2.5, true}},
			{Attribute: "version", Operator: "semverGt", Values: []any{"1.2.3"}},
		},
	}
}

// FuzzSegmentPatch applies arbitrary bytes as a patch to a fixed segment. It never panics; the
// result is a refusal wrapping events.ErrInvalid or a valid, normalised configuration; it is what
// RFC 7396 gives on the whole document (wholeSegmentDocument), which applySegmentPatch computes
// member by member; the current configuration is not modified; and applying the patch to its own
// result changes nothing.
func FuzzSegmentPatch(f *testing.F) {
	for _, s := range []string{
		`{}`, `{"description":"x"}`, `{"description":null}`, `{"included":["c","a","c"]}`, `{"excluded":null}`,
		`{"conditions":[{"attribute":"a","operator":"exists"}]}`, `{"conditions":[{"attribute":"a","operator":"lt","values":[1e400]}]}`,
		`{"conditions":[{"attribute":"a","operator":"inSegment","values":["b"]}]}`, `{"included":[""]}`, `{"included":"a"}`,
		`{"key":"x"}`, `{"Included":[]}`, `[]`, `null`, `"x"`, `{"a":`, `{"conditions":{"a":1}}`, `{"description":{"a":1}}`,
		`{"conditions":[{"attribute":"a","operator":"eq","values":[{"x":1}]}]}`,
	} {
		f.Add([]byte(s))
	}
	cur := fixedSegment()
	want, _ := json.Marshal(cur)
	f.Fuzz(func(t *testing.T, data []byte) {
		p, err := parseDocumentPatch(data, segmentDocument)
		if err != nil {
			if !errors.Is(err, events.ErrInvalid) {
				t.Fatalf("error does not wrap ErrInvalid: %v", err)
			}
			return
		}
		next, same, err := applySegmentPatch(p, cur)
		if now, _ := json.Marshal(cur); !bytes.Equal(now, want) {
			t.Fatalf("the current configuration was modified: %s", now)
		}
		ref, refErr := wholeSegmentDocument(cur, data)
		if (err == nil) != (refErr == nil) {
			t.Fatalf("member by member: %v\nwhole document: %v", err, refErr)
		}
		if err != nil {
			if !errors.Is(err, events.ErrInvalid) {
				t.Fatalf("error does not wrap ErrInvalid: %v", err)
			}
			return
		}
		if err := next.Validate(); err != nil {
			t.Fatalf("patched configuration is invalid: %v", err)
		}
		if !slices.IsSorted(next.Included) || !slices.IsSorted(next.Excluded) {
			t.Fatalf("key lists not normalised: %+v", next)
		}
		got, _ := json.Marshal(next)
		if !bytes.Equal(got, ref) {
			t.Fatalf("member by member: %s\nwhole document:   %s", got, ref)
		}
		if same != bytes.Equal(ref, want) {
			t.Fatalf("same = %v for\n%s\n%s", same, ref, want)
		}
		again, same, err := applySegmentPatch(p, next)
		if err != nil || !same {
			t.Fatalf("patch is not idempotent: %v, same %v", err, same)
		}
		a, _ := json.Marshal(next)
		b, _ := json.Marshal(again)
		if !bytes.Equal(a, b) {
			t.Fatalf("patch is not idempotent:\n%s\n%s", a, b)
		}
	})
}

// wholeSegmentDocument is RFC 7396 done the plain way: the whole segment encoded as a document,
// the patch merged into it, the result decoded strictly, validated, normalised and encoded.
func wholeSegmentDocument(cur events.SegmentConfig, patch []byte) ([]byte, error) {
	data, err := json.Marshal(cur)
	if err != nil {
		return nil, err
	}
	doc, err := decodeAny(data)
	if err != nil {
		return nil, err
	}
	p, err := decodeAny(patch)
	if err != nil {
		return nil, err
	}
	merged, err := json.Marshal(mergePatch(doc, p))
	if err != nil {
		return nil, err
	}
	dec := json.NewDecoder(bytes.NewReader(merged))
	dec.DisallowUnknownFields()
	var next events.SegmentConfig
	if err := dec.Decode(&next); err != nil {
		return nil, err
	}
	if err := next.Validate(); err != nil {
		return nil, err
	}
	next.Normalize()
	return json.Marshal(next)
}

func decodeAny(data []byte) (any, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	var v any
	return v, dec.Decode(&v)
}

// FuzzCreateSegmentConfig decodes arbitrary JSON as a segment and runs CreateSegment's
// validation: it never panics, and either refuses with events.ErrInvalid or returns a valid,
// normalised configuration.
func FuzzCreateSegmentConfig(f *testing.F) {
	seed, _ := json.Marshal(fixedSegment())
	f.Add(seed, "production", "beta-testers", "alice")
	f.Add([]byte(`{"included":["b","a","b"]}`), "staging", "pvt_user", "bob")
	f.Add([]byte(`{"conditions":[{"attribute":"k","operator":"inSegment","values":["x"]}]}`), "e", "k", "a")
	f.Add([]byte(`{"excluded":[""],"conditions":[{"attribute":"","operator":"nope"}]}`), "Prod", "a..b", "")
	f.Fuzz(func(t *testing.T, data []byte, env, key, actor string) {
		var cfg events.SegmentConfig
		if json.Unmarshal(data, &cfg) != nil {
			return
		}
		m, out, err := validateSegmentCreate(Meta{Actor: actor}, env, key, cfg)
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
			t.Fatalf("accepted an invalid segment: %v", err)
		}
		normal := out.Clone()
		normal.Normalize()
		a, _ := json.Marshal(out)
		b, _ := json.Marshal(normal)
		if !bytes.Equal(a, b) {
			t.Fatalf("not normalised:\n%s\n%s", a, b)
		}
	})
}

// TestCacheForgetsMissingSegments checks that asking about segments that do not exist — by
// reading them, or by naming them in a flag — leaves nothing behind in the cache.
func TestCacheForgetsMissingSegments(t *testing.T) {
	ctx := context.Background()
	st, err := events.Open(ctx, natstest.JetStream(t, natstest.RunServer(t)), events.StreamConfig{})
	if err != nil {
		t.Fatal(err)
	}
	svc := New(st, nil)
	m := Meta{Actor: "alice"}
	cfg := fixedConfig()
	cfg.Rules[0].Conditions = []events.Condition{{Attribute: "targetingKey", Operator: "inSegment", Values: []any{"x", "y"}}}
	if _, err := svc.Handle(ctx, CreateFlag{Meta: m, Env: "prod", Key: "f", Config: cfg}); !errors.Is(err, events.ErrInvalid) {
		t.Fatal(err)
	}
	if _, err := svc.GetSegment(ctx, "prod", "z"); !errors.Is(err, ErrSegmentNotFound) {
		t.Fatal(err)
	}
	if _, err := svc.Handle(ctx, CreateSegment{Meta: m, Env: "prod", Key: "kept", Config: events.SegmentConfig{}}); err != nil {
		t.Fatal(err)
	}
	svc.mu.Lock()
	n, flags := len(svc.segments), len(svc.flags)
	_, kept := svc.segments[events.SegmentSubject("prod", "kept")]
	svc.mu.Unlock()
	if n != 1 || !kept || flags != 0 {
		t.Fatalf("cache holds %d segments (kept: %v) and %d flags, want only the segment that exists", n, kept, flags)
	}
}

func TestInUseErrorMessage(t *testing.T) {
	for _, tc := range []struct {
		flags []string
		want  string
	}{
		{[]string{"a"}, "segment is in use: flag a still uses prod/s: remove"},
		{[]string{"a", "b"}, "segment is in use: flags a, b still use prod/s: remove"},
	} {
		err := error(&InUseError{Segment: "prod/s", Flags: tc.flags})
		if !strings.HasPrefix(err.Error(), tc.want) || !errors.Is(err, ErrInUse) {
			t.Errorf("%v: %q", tc.flags, err)
		}
	}
	var many []string
	for i := range 25 {
		many = append(many, fmt.Sprintf("f%02d", i))
	}
	msg := (&InUseError{Segment: "prod/s", Flags: many}).Error()
	if !strings.Contains(msg, "f09 and 15 more still use") || strings.Contains(msg, "f10") {
		t.Errorf("message %q does not stop at 10 flags", msg)
	}
}

// BenchmarkApplySegmentPatch measures a patch that adds one key to a segment of n keys: the
// whole document is encoded, merged, decoded, validated, normalised and encoded again.
func BenchmarkApplySegmentPatch(b *testing.B) {
	for _, n := range []int{10, 1_000, 10_000} {
		b.Run(fmt.Sprintf("%d keys", n), func(b *testing.B) {
			cur := fixedSegment()
			cur.Included = make([]string, n)
			for i := range cur.Included {
				cur.Included[i] = fmt.Sprintf("user-%06d", i)
			}
			patch, _ := json.Marshal(map[string]any{"included": append(slices.Clone(cur.Included), "user-new")})
			p, err := parseDocumentPatch(patch, segmentDocument)
			if err != nil {
				b.Fatal(err)
			}
			for b.Loop() {
				if _, same, err := applySegmentPatch(p, cur); err != nil || same {
					b.Fatal(err, same)
				}
			}
		})
	}
}
