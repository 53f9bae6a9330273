package source_test

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/interlock-dev/interlock/guard/source"
)

func TestParseSelector(t *testing.T) {
	tests := []struct {
		in   string
		want string // canonical rendering; empty: must fail
	}{
		{`requests_total`, `requests_total`},
		{`  requests_total  `, `requests_total`},
		{`requests_total{}`, `requests_total`},
		{`requests_total{variant="on"}`, `requests_total{variant="on"}`},
		{`requests_total{ flag = "checkout-v2" , variant!="off", }`, `requests_total{flag="checkout-v2",variant!="off"}`},
		{`http_requests_total{code=~"5..",route!~"/health|/ready"}`, `http_requests_total{code=~"5..",route!~"/health|/ready"}`},
		{`ns:requests:sum{a="x\"y\\z\n"}`, `ns:requests:sum{a="x\"y\\z\n"}`},
		{`x{a="\u00e9t\xc3\xa9"}`, `x{a="été"}`},
		{`x{a=""}`, `x{a=""}`},
		{`_x{_a="1",a="2"}`, `_x{_a="1",a="2"}`},

		{``, ""},
		{`{a="b"}`, ""},
		{`9x`, ""},
		{`x{a="b"`, ""},
		{`x{a=b}`, ""},
		{`x{a='b'}`, ""},
		{"x{a=`b`}", ""},
		{`x{a=="b"}`, ""},
		{`x{a<"b"}`, ""},
		{`x{9a="b"}`, ""},
		{`x{a.b="c"}`, ""},
		{`x{__name__="y"}`, ""},
		{`x{a="b"} or vector(1)`, ""},
		{`x{a="b"}[5m]`, ""},
		{`sum(x)`, ""},
		{`x{a="b"}}`, ""},
		{`x{a="b",,}`, ""},
		{`x{a="\q"}`, ""},
		{`x{a="\xff"}`, ""},
		{`x{a=~"("}`, ""},
		{`x{a=~"a)|(b"}`, ""},
		{"x{a=\"b\nc\"}", ""},
		{"x{a=\"b\tc\"}", ""},
		{"x{a=\"\xff\"}", ""},
		{`x{a="\a\x01\u007f\u2028"}`, "x{a=\"\\a\\x01\\x7f\u2028\"}"},
		{`x{a="b"c="d"}`, ""},
		{`x y`, ""},
		{`x{a="b"} # comment`, ""},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			sel, err := source.ParseSelector(tt.in)
			if tt.want == "" {
				if err == nil {
					t.Fatalf("ParseSelector(%q) = %v, want an error", tt.in, sel)
				}
				if !errors.Is(err, source.ErrInvalidQuery) {
					t.Fatalf("error %v does not match ErrInvalidQuery", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseSelector(%q): %v", tt.in, err)
			}
			if got := sel.String(); got != tt.want {
				t.Fatalf("String() = %s, want %s", got, tt.want)
			}
		})
	}
	if _, err := source.ParseSelector("x{" + strings.Repeat(`a="b",`, 65) + "}"); !errors.Is(err, source.ErrInvalidQuery) {
		t.Errorf("65 matchers: %v", err)
	}
	if _, err := source.ParseSelector("x" + strings.Repeat("x", 5000)); !errors.Is(err, source.ErrInvalidQuery) {
		t.Errorf("overlong: %v", err)
	}
}

func TestSelectorMatches(t *testing.T) {
	sel, err := source.ParseSelector(`http_requests_total{variant="on",code=~"5..",route!="/health",zone!~"eu-.*"}`)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name   string
		metric string
		labels map[string]string
		want   bool
	}{
		{"all match", "http_requests_total", map[string]string{"variant": "on", "code": "503", "route": "/cart"}, true},
		{"absent label is empty for !=", "http_requests_total", map[string]string{"variant": "on", "code": "500"}, true},
		{"other metric", "http_requests", map[string]string{"variant": "on", "code": "500"}, false},
		{"wrong variant", "http_requests_total", map[string]string{"variant": "off", "code": "500"}, false},
		{"regexp anchored", "http_requests_total", map[string]string{"variant": "on", "code": "1500"}, false},
		{"regexp dot matches newline", "http_requests_total", map[string]string{"variant": "on", "code": "5\n0"}, true},
		{"regexp no match", "http_requests_total", map[string]string{"variant": "on", "code": "200"}, false},
		{"not equal", "http_requests_total", map[string]string{"variant": "on", "code": "500", "route": "/health"}, false},
		{"not regexp", "http_requests_total", map[string]string{"variant": "on", "code": "500", "zone": "eu-west"}, false},
		{"not regexp other value", "http_requests_total", map[string]string{"variant": "on", "code": "500", "zone": "us-east"}, true},
		{"absent variant", "http_requests_total", map[string]string{"code": "500"}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := sel.Matches(tt.metric, tt.labels); got != tt.want {
				t.Fatalf("Matches = %v, want %v", got, tt.want)
			}
		})
	}
	if (source.Selector{}).Matches("", nil) {
		t.Error("the zero selector matched")
	}
	empty, err := source.ParseSelector(`x{a=""}`)
	if err != nil {
		t.Fatal(err)
	}
	if !empty.Matches("x", nil) || empty.Matches("x", map[string]string{"a": "1"}) {
		t.Error(`a="" must match exactly the series without a`)
	}
}

func TestNewSelector(t *testing.T) {
	if _, err := source.NewSelector("x", source.LabelMatcher{Name: "a", Op: "==", Value: "b"}); !errors.Is(err, source.ErrInvalidQuery) {
		t.Errorf("bad op: %v", err)
	}
	if _, err := source.NewSelector("x-y"); !errors.Is(err, source.ErrInvalidQuery) {
		t.Errorf("bad metric: %v", err)
	}
	sel, err := source.NewSelector("x", source.LabelMatcher{Name: "code", Op: source.MatchRegexp, Value: "5.."})
	if err != nil {
		t.Fatal(err)
	}
	if !sel.Matches("x", map[string]string{"code": "502"}) {
		t.Error("regexp matcher from NewSelector not compiled")
	}
	// A matcher built by hand without NewSelector never matches with a regexp op.
	raw := source.LabelMatcher{Name: "code", Op: source.MatchRegexp, Value: ".*"}
	if raw.Matches("x") {
		t.Error("an uncompiled regexp matcher matched")
	}
}

func TestCounterTemplate(t *testing.T) {
	tmpl := source.CounterTemplate{Base: `http_requests_total{service="checkout"}`, VariantLabel: "variant", FlagLabel: "flag"}
	tests := []struct {
		name          string
		tmpl          source.CounterTemplate
		flag, variant string
		sum, rng      string // empty: must fail
	}{
		{"usual", tmpl, "checkout-v2", "on",
			`sum(http_requests_total{service="checkout",flag="checkout-v2",variant="on"})`,
			`http_requests_total{service="checkout",flag="checkout-v2",variant="on"}[300000ms]`},
		{"no flag label", source.CounterTemplate{Base: "requests_total", VariantLabel: "variant"}, "", "off",
			`sum(requests_total{variant="off"})`, `requests_total{variant="off"}[300000ms]`},
		{"injection stays quoted", tmpl, `x"} or vector(1) or x{a="`, `on"}`,
			`sum(http_requests_total{service="checkout",flag="x\"} or vector(1) or x{a=\"",variant="on\"}"})`,
			`http_requests_total{service="checkout",flag="x\"} or vector(1) or x{a=\"",variant="on\"}"}[300000ms]`},
		{"control characters escaped", tmpl, "a\nb", "\x00", `sum(http_requests_total{service="checkout",flag="a\nb",variant="\x00"})`, `http_requests_total{service="checkout",flag="a\nb",variant="\x00"}[300000ms]`},
		{"empty variant", tmpl, "f", "", "", ""},
		{"invalid utf8 variant", tmpl, "f", "\xff", "", ""},
		{"flag without label", source.CounterTemplate{Base: "x", VariantLabel: "variant"}, "f", "on", "", ""},
		{"no variant label", source.CounterTemplate{Base: "x"}, "", "on", "", ""},
		{"bad variant label", source.CounterTemplate{Base: "x", VariantLabel: "var-iant"}, "", "on", "", ""},
		{"same labels", source.CounterTemplate{Base: "x", VariantLabel: "v", FlagLabel: "v"}, "f", "on", "", ""},
		{"base constrains variant", source.CounterTemplate{Base: `x{variant="on"}`, VariantLabel: "variant"}, "", "on", "", ""},
		{"base not a selector", source.CounterTemplate{Base: `sum(x)`, VariantLabel: "variant"}, "", "on", "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sum, err := tt.tmpl.Sum(tt.flag, tt.variant)
			rng, rerr := tt.tmpl.Range(tt.flag, tt.variant, 5*time.Minute)
			if tt.sum == "" {
				if !errors.Is(err, source.ErrInvalidQuery) || !errors.Is(rerr, source.ErrInvalidQuery) {
					t.Fatalf("Sum = %q, %v; Range = %q, %v; want ErrInvalidQuery", sum, err, rng, rerr)
				}
				return
			}
			if err != nil || rerr != nil {
				t.Fatalf("Sum: %v; Range: %v", err, rerr)
			}
			if sum != tt.sum || rng != tt.rng {
				t.Fatalf("Sum = %s\nwant  %s\nRange = %s\nwant    %s", sum, tt.sum, rng, tt.rng)
			}
			// What the template renders parses back to the same narrowed selector.
			sel, err := tt.tmpl.Selector(tt.flag, tt.variant)
			if err != nil {
				t.Fatal(err)
			}
			back, err := source.ParseSelector(sel.String())
			if err != nil || back.String() != sel.String() {
				t.Fatalf("round trip of %s: %v, %v", sel, back, err)
			}
			if !back.Matches(sel.Metric, map[string]string{"service": "checkout", "flag": tt.flag, "variant": tt.variant}) {
				t.Fatal("the narrowed selector does not match its own arm")
			}
			if back.Matches(sel.Metric, map[string]string{"service": "checkout", "flag": tt.flag, "variant": tt.variant + "x"}) {
				t.Fatal("the narrowed selector matches another variant")
			}
		})
	}
	for _, w := range []time.Duration{0, -time.Second, 1500 * time.Microsecond} {
		if _, err := tmpl.Range("f", "on", w); !errors.Is(err, source.ErrInvalidQuery) {
			t.Errorf("Range window %v: %v", w, err)
		}
	}
}

// FuzzParseSelector: the parser never panics, rejects with ErrInvalidQuery, and what it accepts
// renders to a canonical form that parses back to itself and matches the same series.
func FuzzParseSelector(f *testing.F) {
	for _, s := range []string{
		`requests_total`, `requests_total{variant="on"}`, `x{a!="b",c=~"5..",d!~"x|y",}`,
		`x{a="\u00e9\n\"\\"}`, `x{`, `x{a="b"`, `{}`, `x{a=~"("}`, "x{a=\"\xff\"}",
	} {
		f.Add(s, "on")
	}
	f.Fuzz(func(t *testing.T, s, value string) {
		sel, err := source.ParseSelector(s)
		if err != nil {
			if !errors.Is(err, source.ErrInvalidQuery) {
				t.Fatalf("error %v does not match ErrInvalidQuery", err)
			}
			return
		}
		back, err := source.ParseSelector(sel.String())
		if err != nil {
			t.Fatalf("rendering %q of %q does not parse: %v", sel.String(), s, err)
		}
		if back.String() != sel.String() {
			t.Fatalf("not canonical: %q then %q", sel.String(), back.String())
		}
		labels := map[string]string{}
		for _, m := range sel.Matchers {
			labels[m.Name] = value
		}
		if sel.Matches(sel.Metric, labels) != back.Matches(sel.Metric, labels) {
			t.Fatalf("%s and its round trip disagree on %v", sel, labels)
		}
		// A template on the selector renders a query that keeps any variant inside its quotes.
		tmpl := source.CounterTemplate{Base: sel.String(), VariantLabel: "fuzz_variant"}
		if q, err := tmpl.Selector("", value); err == nil {
			again, err := source.ParseSelector(q.String())
			if err != nil || len(again.Matchers) != len(sel.Matchers)+1 {
				t.Fatalf("template with variant %q gave %s (%v)", value, q, err)
			}
		}
	})
}

// The usual shape: requests and errors counters labelled by flag and variant. The same
// queries serve the Prometheus source (one value per arm, summed over instances) and the
// scrape source (which sums the matching series itself).
func ExampleCounterTemplate() {
	requests := source.CounterTemplate{Base: `http_requests_total{service="checkout"}`, FlagLabel: "flag", VariantLabel: "variant"}
	errs := source.CounterTemplate{Base: `http_requests_total{service="checkout",code=~"5.."}`, FlagLabel: "flag", VariantLabel: "variant"}
	for _, variant := range []string{"on", "off"} {
		r, _ := requests.Sum("checkout-v2", variant)
		e, _ := errs.Sum("checkout-v2", variant)
		fmt.Println(r)
		fmt.Println(e)
	}
	// A value can never break out of its quotes.
	q, _ := requests.Sum(`x"} or vector(1) #`, "on")
	fmt.Println(q)
	// Output:
	// sum(http_requests_total{service="checkout",flag="checkout-v2",variant="on"})
	// sum(http_requests_total{service="checkout",code=~"5..",flag="checkout-v2",variant="on"})
	// sum(http_requests_total{service="checkout",flag="checkout-v2",variant="off"})
	// sum(http_requests_total{service="checkout",code=~"5..",flag="checkout-v2",variant="off"})
	// sum(http_requests_total{service="checkout",flag="x\"} or vector(1) #",variant="on"})
}
