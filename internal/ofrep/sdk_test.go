package ofrep

import (
	"reflect"
	"testing"

	ofrepprovider "github.com/open-feature/go-sdk-contrib/providers/ofrep"
	"github.com/open-feature/go-sdk/openfeature"
)

// newClient registers the real OFREP provider, unchanged, against s under a domain of its own
// (the OpenFeature API is a process-wide singleton) and returns a client of that domain.
func (s *testServer) newClient(opts ...ofrepprovider.Option) *openfeature.Client {
	s.t.Helper()
	provider := ofrepprovider.NewProvider(s.http.URL, opts...)
	if err := openfeature.SetNamedProviderAndWait(s.t.Name(), provider); err != nil {
		s.t.Fatalf("set provider: %v", err)
	}
	return openfeature.NewClient(s.t.Name())
}

// details is what the tests compare of an evaluation, whatever its type.
type details struct {
	value   any
	variant string
	reason  openfeature.Reason
	code    openfeature.ErrorCode
	version int64
	env     string
}

// evaluate calls the typed method of the client that kind names.
func evaluate(t *testing.T, c *openfeature.Client, kind, key string, def any, ec openfeature.EvaluationContext) details {
	t.Helper()
	ctx := t.Context()
	var d openfeature.InterfaceEvaluationDetails
	switch kind {
	case "bool":
		r, _ := c.BooleanValueDetails(ctx, key, def.(bool), ec)
		d.Value, d.EvaluationDetails = r.Value, r.EvaluationDetails
	case "string":
		r, _ := c.StringValueDetails(ctx, key, def.(string), ec)
		d.Value, d.EvaluationDetails = r.Value, r.EvaluationDetails
	case "int":
		r, _ := c.IntValueDetails(ctx, key, def.(int64), ec)
		d.Value, d.EvaluationDetails = r.Value, r.EvaluationDetails
	case "float":
		r, _ := c.FloatValueDetails(ctx, key, def.(float64), ec)
		d.Value, d.EvaluationDetails = r.Value, r.EvaluationDetails
	case "object":
		d, _ = c.ObjectValueDetails(ctx, key, def, ec)
	default:
		t.Fatalf("unknown kind %q", kind)
	}
	out := details{value: d.Value, variant: d.Variant, reason: d.Reason, code: d.ErrorCode}
	if d.ErrorCode == "" {
		// JSON numbers reach the metadata as float64: GetInt refuses them.
		version, err := d.FlagMetadata.GetFloat("version")
		if err != nil {
			t.Errorf("%s: metadata %v has no version: %v", key, d.FlagMetadata, err)
		}
		out.version = int64(version)
		if out.env, err = d.FlagMetadata.GetString("environment"); err != nil {
			t.Errorf("%s: metadata %v has no environment: %v", key, d.FlagMetadata, err)
		}
	}
	return out
}

func TestOpenFeatureProvider(t *testing.T) {
	s := startServer(t)
	s.create("production", "static-bool", boolFlag(true))
	s.create("production", "disabled-bool", boolFlag(false))
	s.create("production", "button-color", stringFlag())
	s.create("production", "max-retries", numberFlag(`3`, `7`))
	s.create("production", "sample-rate", numberFlag(`0.25`, `0.75`))
	s.create("production", "cache-config", objectFlag())
	s.create("production", "new-checkout", splitFlag())
	// A second version, so that the metadata's version is not trivially 1.
	s.create("production", "killed-bool", boolFlag(true))
	s.kill("production", "killed-bool")

	client := s.newClient(ofrepprovider.WithBearerToken(s.token))
	user := func(attrs map[string]any) openfeature.EvaluationContext {
		return openfeature.NewEvaluationContext("user-42", attrs)
	}
	anonymous := openfeature.NewTargetlessEvaluationContext(map[string]any{"role": "beta"})

	tests := []struct {
		name, kind, key string
		def             any
		ctx             openfeature.EvaluationContext
		want            details
	}{
		{"bool static", "bool", "static-bool", false, user(nil),
			details{value: true, variant: "on", reason: openfeature.StaticReason, version: 1, env: "production"}},
		// The provider answers a DISABLED evaluation with the code's default.
		{"bool disabled", "bool", "disabled-bool", true, user(nil),
			details{value: true, variant: "off", reason: openfeature.DisabledReason, version: 1, env: "production"}},
		{"bool killed, version 2", "bool", "killed-bool", true, user(nil),
			details{value: true, variant: "off", reason: openfeature.DisabledReason, version: 2, env: "production"}},
		{"string targeting match", "string", "button-color", "red", user(map[string]any{"role": "beta"}),
			details{value: "green", variant: "green", reason: openfeature.TargetingMatchReason, version: 1, env: "production"}},
		{"string default", "string", "button-color", "red", user(map[string]any{"role": "admin"}),
			details{value: "blue", variant: "blue", reason: openfeature.DefaultReason, version: 1, env: "production"}},
		{"string targeting without a targeting key", "string", "button-color", "red", anonymous,
			details{value: "green", variant: "green", reason: openfeature.TargetingMatchReason, version: 1, env: "production"}},
		{"int", "int", "max-retries", int64(1), user(nil),
			details{value: int64(7), variant: "high", reason: openfeature.StaticReason, version: 1, env: "production"}},
		{"float", "float", "sample-rate", 0.0, user(nil),
			details{value: 0.75, variant: "high", reason: openfeature.StaticReason, version: 1, env: "production"}},
		{"int flag read as float", "float", "max-retries", 0.0, user(nil),
			details{value: 7.0, variant: "high", reason: openfeature.StaticReason, version: 1, env: "production"}},
		{"object", "object", "cache-config", nil, user(nil),
			details{value: map[string]any{"ttlSeconds": 30.0, "mode": "fast", "regions": []any{"eu", "us"}},
				variant: "fast", reason: openfeature.StaticReason, version: 1, env: "production"}},
		{"missing flag", "bool", "no-such-flag", true, user(nil),
			details{value: true, reason: openfeature.ErrorReason, code: openfeature.FlagNotFoundCode}},
		{"split without a targeting key", "bool", "new-checkout", true, anonymous,
			details{value: true, reason: openfeature.ErrorReason, code: openfeature.TargetingKeyMissingCode}},
		{"string flag read as bool", "bool", "button-color", true, user(nil),
			details{value: true, reason: openfeature.ErrorReason, code: openfeature.TypeMismatchCode}},
		{"float flag read as int", "int", "sample-rate", int64(9), user(nil),
			details{value: int64(9), reason: openfeature.ErrorReason, code: openfeature.TypeMismatchCode}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := evaluate(t, client, tt.kind, tt.key, tt.def, tt.ctx)
			if !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("got  %+v\nwant %+v", got, tt.want)
			}
		})
	}

	t.Run("split is sticky and serves both variants", func(t *testing.T) {
		seen := map[string]int{}
		for i := range 64 {
			ec := openfeature.NewEvaluationContext("user-"+string(rune('a'+i%26))+string(rune('a'+i/26)), nil)
			first := evaluate(t, client, "bool", "new-checkout", false, ec)
			if first.reason != openfeature.SplitReason || first.code != "" {
				t.Fatalf("%v: reason %s, error %s; want SPLIT", ec.TargetingKey(), first.reason, first.code)
			}
			if again := evaluate(t, client, "bool", "new-checkout", false, ec); again != first {
				t.Fatalf("%v: %+v then %+v: the bucket moved", ec.TargetingKey(), first, again)
			}
			seen[first.variant]++
		}
		if seen["on"] == 0 || seen["off"] == 0 {
			t.Fatalf("64 users split %v: a 50/50 split served one variant only", seen)
		}
	})
}

func TestOpenFeatureProviderAuth(t *testing.T) {
	s := startServer(t)
	s.create("production", "static-bool", boolFlag(true))
	s.create("staging", "static-bool", boolFlag(false))
	scoped, err := s.tokens.IssueScoped(t.Context(), "staging-service", "reader", "staging")
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		opts    []ofrepprovider.Option
		want    bool
		code    openfeature.ErrorCode
		variant string
	}{
		{"bearer", []ofrepprovider.Option{ofrepprovider.WithBearerToken(s.token)}, true, "", "on"},
		{"api key", []ofrepprovider.Option{ofrepprovider.WithApiKeyAuth(s.token)}, true, "", "on"},
		{"no token", nil, false, openfeature.GeneralCode, ""},
		{"unknown token", []ofrepprovider.Option{ofrepprovider.WithBearerToken("ilk_unknown-token-of-no-one")}, false, openfeature.GeneralCode, ""},
		{"environment header", []ofrepprovider.Option{ofrepprovider.WithApiKeyAuth(s.token), ofrepprovider.WithHeader(HeaderEnvironment, "staging")}, false, "", "off"},
		{"scoped token", []ofrepprovider.Option{ofrepprovider.WithBearerToken(scoped)}, false, "", "off"},
		{"scoped token asking for another environment", []ofrepprovider.Option{ofrepprovider.WithBearerToken(scoped), ofrepprovider.WithHeader(HeaderEnvironment, "production")}, false, openfeature.GeneralCode, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// A child server name per case: each registers its own provider.
			sub := *s
			sub.t = t
			d, err := sub.newClient(tt.opts...).BooleanValueDetails(t.Context(), "static-bool", false, openfeature.NewEvaluationContext("u", nil))
			if d.Value != tt.want || d.ErrorCode != tt.code || d.Variant != tt.variant {
				t.Fatalf("value %v, code %q, variant %q (err %v); want %v, %q, %q", d.Value, d.ErrorCode, d.Variant, err, tt.want, tt.code, tt.variant)
			}
		})
	}
}
