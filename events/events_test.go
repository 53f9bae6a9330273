package events

import (
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
)

func TestValidateFlagKey(t *testing.T) {
	for _, tc := range []struct {
		key string
		ok  bool
	}{
		{"checkout-v2", true},
		{"DeptA.TeamB.66623", true},
		{"a", true},
		{"snake_case.Key-1", true},
		{strings.Repeat("a", MaxKeyLen), true},
		{strings.Repeat("a", MaxKeyLen+1), false},
		{"", false},
		{".a", false},
		{"a.", false},
		{"a..b", false},
		{"a b", false},
		{"a/b", false},
		{"a*", false},
		{"a>", false},
		{"ünïcode", false},
	} {
		err := ValidateFlagKey(tc.key)
		if (err == nil) != tc.ok {
			t.Errorf("ValidateFlagKey(%q) = %v, want ok=%v", tc.key, err, tc.ok)
		}
		if err != nil && (!errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "dot-separated segments")) {
			t.Errorf("ValidateFlagKey(%q) error %q does not name the rule", tc.key, err)
		}
	}
}

func TestValidateEnvironment(t *testing.T) {
	for _, tc := range []struct {
		env string
		ok  bool
	}{
		{"production", true}, {"staging-2", true}, {"0dev", true},
		{"", false}, {"-dev", false}, {"Prod", false}, {"dev.eu", false}, {"dev_eu", false},
		{strings.Repeat("a", 64), false},
	} {
		if err := ValidateEnvironment(tc.env); (err == nil) != tc.ok {
			t.Errorf("ValidateEnvironment(%q) = %v, want ok=%v", tc.env, err, tc.ok)
		}
	}
}

func boolFlag() FlagConfig {
	return FlagConfig{
		Kind:           KindRelease,
		Variants:       map[string]json.RawMessage{"on": json.RawMessage("true"), "off": json.RawMessage("false")},
		DefaultVariant: "on",
		OffVariant:     "off",
	}
}

func TestFlagConfigValidate(t *testing.T) {
	for _, tc := range []struct {
		name   string
		mutate func(*FlagConfig)
		want   string // "" means valid
	}{
		{"bool flag", func(*FlagConfig) {}, ""},
		{"string variants", func(c *FlagConfig) {
			c.Variants = map[string]json.RawMessage{"a": json.RawMessage(`"x"`), "b": json.RawMessage(`"y"`)}
			c.DefaultVariant, c.OffVariant = "a", "b"
		}, ""},
		{"json variants", func(c *FlagConfig) {
			c.Kind = KindConfig
			c.Variants = map[string]json.RawMessage{"a": json.RawMessage(`{"ttl": 5}`), "b": json.RawMessage(`{}`)}
			c.DefaultVariant, c.OffVariant = "a", "b"
		}, ""},
		{"mixed types", func(c *FlagConfig) { c.Variants["off"] = json.RawMessage(`"no"`) }, "all variants have one type"},
		{"array value", func(c *FlagConfig) { c.Variants["off"] = json.RawMessage(`[1]`) }, "values are booleans"},
		{"no variants", func(c *FlagConfig) { c.Variants = nil }, "at least one variant"},
		{"unknown default", func(c *FlagConfig) { c.DefaultVariant = "maybe" }, "defaultVariant"},
		{"missing off", func(c *FlagConfig) { c.OffVariant = "" }, "offVariant: is required"},
		{"bad kind", func(c *FlagConfig) { c.Kind = "feature" }, "kind"},
		{"rule ok", func(c *FlagConfig) {
			c.Rules = []Rule{{Name: "beta", Conditions: []Condition{{Attribute: "role", Operator: "in", Values: []any{"beta", "alpha"}}}, Serve: Serve{Variant: "on"}}}
		}, ""},
		{"rule split ok", func(c *FlagConfig) {
			c.Rules = []Rule{{Conditions: []Condition{{Attribute: "country", Operator: "eq", Values: []any{"NL"}}}, Serve: Serve{Split: map[string]int{"on": 25, "off": 75}, BucketBy: "targetingKey"}}}
		}, ""},
		{"bad operator", func(c *FlagConfig) {
			c.Rules = []Rule{{Conditions: []Condition{{Attribute: "role", Operator: "like", Values: []any{"x"}}}, Serve: Serve{Variant: "on"}}}
		}, "rules[0].conditions[0].operator"},
		{"bad regex", func(c *FlagConfig) {
			c.Rules = []Rule{{Conditions: []Condition{{Attribute: "email", Operator: "matches", Values: []any{"("}}}, Serve: Serve{Variant: "on"}}}
		}, "regular expression"},
		{"lt needs number", func(c *FlagConfig) {
			c.Rules = []Rule{{Conditions: []Condition{{Attribute: "age", Operator: "lt", Values: []any{"x"}}}, Serve: Serve{Variant: "on"}}}
		}, "compares numbers"},
		{"semver", func(c *FlagConfig) {
			c.Rules = []Rule{{Conditions: []Condition{{Attribute: "v", Operator: "semverGt", Values: []any{"1.2"}}}, Serve: Serve{Variant: "on"}}}
		}, "versions"},
		{"split unknown variant", func(c *FlagConfig) {
			c.DefaultServe = &Serve{Split: map[string]int{"on": 50, "maybe": 50}}
		}, "defaultServe.split.maybe"},
		{"split zero", func(c *FlagConfig) { c.DefaultServe = &Serve{Split: map[string]int{"on": 0}} }, "more than 0"},
		{"serve both", func(c *FlagConfig) { c.DefaultServe = &Serve{Variant: "on", Split: map[string]int{"on": 1}} }, "not both"},
		{"serve nothing", func(c *FlagConfig) { c.DefaultServe = &Serve{} }, "serve a variant or a split"},
		{"exists with values", func(c *FlagConfig) {
			c.Rules = []Rule{{Conditions: []Condition{{Attribute: "a", Operator: "exists", Values: []any{"x"}}}, Serve: Serve{Variant: "on"}}}
		}, "takes no values"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := boolFlag()
			tc.mutate(&c)
			err := c.Validate()
			if tc.want == "" {
				if err != nil {
					t.Fatalf("unexpected error: %v", err)
				}
				return
			}
			if err == nil || !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want an invalid error mentioning %q", err, tc.want)
			}
		})
	}
}

func TestCloneIsDeep(t *testing.T) {
	c := boolFlag()
	c.Tags = []string{"a"}
	c.Rules = []Rule{{Conditions: []Condition{{Attribute: "r", Operator: "in", Values: []any{"x"}}}, Serve: Serve{Split: map[string]int{"on": 1}}}}
	d := c.Clone()
	d.Tags[0] = "b"
	d.Variants["new"] = json.RawMessage("true")
	d.Rules[0].Conditions[0].Values[0] = "y"
	d.Rules[0].Serve.Split["on"] = 2
	if c.Tags[0] != "a" || len(c.Variants) != 2 || c.Rules[0].Conditions[0].Values[0] != "x" || c.Rules[0].Serve.Split["on"] != 1 {
		t.Fatalf("clone shares state: %+v", c)
	}
}

func TestCodecRoundTrip(t *testing.T) {
	ev, err := NewEvent(TypeFlagUpdated, "production", "DeptA.TeamB.66623", FlagUpdated{Flag: boolFlag(), Patch: json.RawMessage(`{"enabled":true}`)})
	if err != nil {
		t.Fatal(err)
	}
	ev.Actor, ev.Reason, ev.CorrelationID, ev.CausationID, ev.Version = "alice", "ship it", "corr", "cause", 7
	msg := ev.Msg()
	if msg.Subject != "interlock.production.flag.DeptA.TeamB.66623" {
		t.Fatalf("subject %q", msg.Subject)
	}
	for _, h := range []string{HeaderID, HeaderType, HeaderSource, HeaderSubject, HeaderTime, HeaderSpecVersion, HeaderDataContentType, nats.MsgIdHdr} {
		if msg.Header.Get(h) == "" {
			t.Errorf("header %s missing", h)
		}
	}
	got, err := Decode(msg.Subject, msg.Header, msg.Data)
	if err != nil {
		t.Fatal(err)
	}
	if !got.Time.Equal(ev.Time) {
		t.Fatalf("time %v != %v", got.Time, ev.Time)
	}
	got.Time = ev.Time
	if string(got.Data) != string(ev.Data) {
		t.Fatalf("data differs")
	}
	got.Data, ev.Data = nil, nil
	if !reflect.DeepEqual(got, ev) {
		t.Fatalf("round trip:\n got %+v\nwant %+v", got, ev)
	}
}

func TestDecodeRefuses(t *testing.T) {
	ev, _ := NewEvent(TypeFlagKilled, "production", "k", FlagKilled{})
	ev.Actor, ev.Version = "a", 1
	for _, tc := range []struct {
		name    string
		subject string
		mutate  func(nats.Header)
	}{
		{"foreign subject", "other.production.flag.k", func(nats.Header) {}},
		{"no key", "interlock.production.flag", func(nats.Header) {}},
		{"spec version", "", func(h nats.Header) { h.Set(HeaderSpecVersion, "0.3") }},
		{"no id", "", func(h nats.Header) { h.Del(HeaderID) }},
		{"env mismatch", "", func(h nats.Header) { h.Set(HeaderEnvironment, "staging") }},
		{"key mismatch", "", func(h nats.Header) { h.Set(HeaderSubject, "other") }},
		{"bad time", "", func(h nats.Header) { h.Set(HeaderTime, "yesterday") }},
		{"bad version", "", func(h nats.Header) { h.Set(HeaderVersion, "0") }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			msg := ev.Msg()
			tc.mutate(msg.Header)
			subject := msg.Subject
			if tc.subject != "" {
				subject = tc.subject
			}
			if _, err := Decode(subject, msg.Header, msg.Data); !errors.Is(err, ErrMalformed) {
				t.Fatalf("got %v, want ErrMalformed", err)
			}
		})
	}
}

func TestPayloadUnknownAndMalformed(t *testing.T) {
	ev := Event{Type: "io.interlock.flag.teleported.v9"}
	if _, err := ev.Payload(); !errors.Is(err, ErrUnknownType) {
		t.Fatalf("got %v", err)
	}
	ev = Event{Type: TypeFlagCreated, Data: []byte(`{"flag": 3}`)}
	if _, err := ev.Payload(); !errors.Is(err, ErrMalformed) {
		t.Fatalf("got %v", err)
	}
}

func FuzzDecode(f *testing.F) {
	ev, _ := NewEvent(TypeFlagCreated, "production", "checkout", FlagCreated{Flag: boolFlag()})
	ev.Actor, ev.Version = "a", 1
	msg := ev.Msg()
	f.Add(msg.Subject, msg.Header.Get(HeaderSpecVersion), msg.Header.Get(HeaderID), msg.Header.Get(HeaderType),
		msg.Header.Get(HeaderTime), msg.Header.Get(HeaderVersion), msg.Header.Get(HeaderEnvironment), msg.Header.Get(HeaderSubject), msg.Data)
	f.Add("interlock..flag.", "1.0", "", "", "", "", "", "", []byte("{"))
	f.Fuzz(func(t *testing.T, subject, spec, id, typ, tm, version, env, key string, data []byte) {
		h := nats.Header{}
		h.Set(HeaderSpecVersion, spec)
		h.Set(HeaderID, id)
		h.Set(HeaderType, typ)
		h.Set(HeaderSource, Source)
		h.Set(HeaderTime, tm)
		h.Set(HeaderVersion, version)
		h.Set(HeaderEnvironment, env)
		h.Set(HeaderSubject, key)
		got, err := Decode(subject, h, data)
		if err != nil {
			if !errors.Is(err, ErrMalformed) && !errors.Is(err, ErrUnknownType) {
				t.Fatalf("error %v is neither malformed nor unknown type", err)
			}
			return
		}
		if got.Version == 0 || got.ID == "" {
			t.Fatalf("decoded an event without id or version: %+v", got)
		}
		if p, err := got.Payload(); err == nil && p == nil {
			t.Fatal("nil payload without error")
		}
	})
}

func FuzzValidateFlagKey(f *testing.F) {
	for _, s := range []string{"checkout-v2", "DeptA.TeamB.66623", "", ".", "a..b", "a.b.", "a b", "a*"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, key string) {
		err := ValidateFlagKey(key)
		if err != nil {
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("error %v does not wrap ErrInvalid", err)
			}
			return
		}
		// A valid key makes a subject the store and the decoder accept and split back exactly.
		env, kind, got, err := parseSubject(FlagSubject("production", key))
		if err != nil || env != "production" || kind != EntityFlag || got != key {
			t.Fatalf("valid key %q does not round-trip through its subject: %q %q %q %v", key, env, kind, got, err)
		}
		if strings.ContainsAny(key, " *>\t\r\n") {
			t.Fatalf("valid key %q has a NATS wildcard or space", key)
		}
	})
}

func FuzzFlagConfig(f *testing.F) {
	b, _ := json.Marshal(boolFlag())
	f.Add(b)
	f.Add([]byte(`{"kind":"config","variants":{"a":{"x":1},"b":{}},"defaultVariant":"a","offVariant":"b","rules":[{"conditions":[{"attribute":"v","operator":"semverLt","values":["1.0.0"]}],"serve":{"split":{"a":1,"b":3}}}]}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		var c FlagConfig
		if json.Unmarshal(data, &c) != nil {
			return
		}
		if err := c.Validate(); err != nil {
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("error %v does not wrap ErrInvalid", err)
			}
			return
		}
		c.Normalize()
		if err := c.Validate(); err != nil {
			t.Fatalf("normalised valid config became invalid: %v", err)
		}
		d := c.Clone()
		if err := d.Validate(); err != nil {
			t.Fatalf("clone of a valid config is invalid: %v", err)
		}
	})
}

func TestNewEventTimeUTC(t *testing.T) {
	ev, err := NewEvent(TypeFlagEnabled, "p", "k", FlagEnabled{})
	if err != nil || ev.Time.Location() != time.UTC {
		t.Fatalf("%v %v", ev.Time, err)
	}
}

func TestSegmentConfig(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  SegmentConfig
		want string
	}{
		{"keys only", SegmentConfig{Included: []string{"u1"}}, ""},
		{"conditions", SegmentConfig{Conditions: []Condition{{Attribute: "plan", Operator: "eq", Values: []any{"pro"}}}}, ""},
		{"empty key", SegmentConfig{Excluded: []string{""}}, "excluded[0]"},
		{"nested segment", SegmentConfig{Conditions: []Condition{{Attribute: "x", Operator: "inSegment", Values: []any{"other"}}}}, "cannot refer to other segments"},
		{"bad condition", SegmentConfig{Conditions: []Condition{{Attribute: "x", Operator: "lt", Values: []any{"a"}}}}, "conditions[0].values[0]"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.cfg.Validate()
			if tc.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want %q", err, tc.want)
			}
		})
	}
	c := SegmentConfig{Included: []string{"b", "a", "b"}}
	c.Normalize()
	if !reflect.DeepEqual(c.Included, []string{"a", "b"}) {
		t.Fatalf("normalize: %v", c.Included)
	}
}

func TestSegmentEventSubject(t *testing.T) {
	ev, err := NewEvent(TypeSegmentCreated, "production", "beta-testers", SegmentCreated{})
	if err != nil {
		t.Fatal(err)
	}
	ev.Actor, ev.Version = "a", 1
	msg := ev.Msg()
	if msg.Subject != "interlock.production.segment.beta-testers" || ev.Entity != EntitySegment {
		t.Fatalf("subject %q entity %q", msg.Subject, ev.Entity)
	}
	got, err := Decode(msg.Subject, msg.Header, msg.Data)
	if err != nil || got.Entity != EntitySegment {
		t.Fatalf("decode: %+v %v", got, err)
	}
	// A segment type on a flag subject is malformed.
	if _, err := Decode("interlock.production.flag.beta-testers", msg.Header, msg.Data); !errors.Is(err, ErrMalformed) {
		t.Fatalf("segment event on a flag subject: %v", err)
	}
	if _, err := NewEvent("io.interlock.flag.nope.v1", "p", "k", nil); !errors.Is(err, ErrUnknownType) {
		t.Fatalf("unknown type: %v", err)
	}
}
