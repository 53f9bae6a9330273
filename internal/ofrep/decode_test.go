package ofrep

import (
	"bytes"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"
	"unicode/utf8"
)

// reference decodes an evaluation request with encoding/json: the behaviour the hand-written
// decoder must match. code is "" for a good request, else the OpenFeature error code.
func reference(body []byte) (targetingKey string, attrs map[string]any, code string) {
	trimmed := bytes.TrimLeft(body, " \t\r\n")
	if len(trimmed) == 0 {
		return "", map[string]any{}, ""
	}
	if !json.Valid(body) || trimmed[0] != '{' {
		return "", nil, codeParse
	}
	var top map[string]json.RawMessage
	if err := json.Unmarshal(body, &top); err != nil {
		return "", nil, codeParse
	}
	raw, ok := top["context"]
	if !ok || string(raw) == "null" {
		return "", map[string]any{}, ""
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return "", nil, codeParse
	}
	m, ok := v.(map[string]any)
	if !ok {
		return "", nil, codeInvalidContext
	}
	converted, err := floats(m)
	if err != nil {
		return "", nil, codeParse
	}
	m = converted.(map[string]any)
	switch tk := m["targetingKey"].(type) {
	case string:
		targetingKey = tk
	case nil:
	default:
		return "", nil, codeInvalidContext
	}
	delete(m, "targetingKey")
	for k, v := range m {
		if v == nil {
			delete(m, k)
		}
	}
	return targetingKey, m, ""
}

// floats turns the json.Numbers of v into float64s, failing as encoding/json would on numbers
// beyond a float64's range.
func floats(v any) (any, error) {
	switch v := v.(type) {
	case json.Number:
		return strconv.ParseFloat(string(v), 64)
	case []any:
		for i := range v {
			f, err := floats(v[i])
			if err != nil {
				return nil, err
			}
			v[i] = f
		}
	case map[string]any:
		for k := range v {
			f, err := floats(v[k])
			if err != nil {
				return nil, err
			}
			v[k] = f
		}
	}
	return v, nil
}

// decodeBody runs the hand-written decoder and says which error code it gave.
func decodeBody(body []byte) (*exchange, string) {
	x := newExchange()
	x.body = append(x.body[:0], body...)
	err := x.decode()
	switch {
	case err == nil:
		return x, ""
	case errors.Is(err, ErrMalformed):
		return x, codeParse
	case errors.Is(err, ErrInvalidContext):
		return x, codeInvalidContext
	}
	return x, "unexpected error: " + err.Error()
}

// checkDecode compares the decoder with the reference on one body.
func checkDecode(t *testing.T, body []byte) {
	t.Helper()
	wantKey, wantAttrs, wantCode := reference(body)
	x, code := decodeBody(body)
	if code != wantCode {
		t.Fatalf("%q: code %q, encoding/json says %q", body, code, wantCode)
	}
	if code != "" {
		return
	}
	if x.ctx.TargetingKey != wantKey {
		t.Fatalf("%q: targeting key %q, want %q", body, x.ctx.TargetingKey, wantKey)
	}
	if !reflect.DeepEqual(x.ctx.Attributes, wantAttrs) {
		t.Fatalf("%q: attributes %#v\nwant %#v", body, x.ctx.Attributes, wantAttrs)
	}
}

var decodeCases = []string{
	``,
	` `,
	`{}`,
	`{"context":{}}`,
	`{"context":null}`,
	`{"context":{"targetingKey":"user-1","role":"beta","age":42,"score":-1.5e3,"beta":true,"off":false,"gone":null}}`,
	`{"context":{"tags":["a",1,true,null,[],{}],"nested":{"a":{"b":[1.25]}}}}`,
	`{"context":{"targetingKey":null}}`,
	`{"context":{"targetingKey":5}}`,
	`{"context":{"targetingKey":5,"targetingKey":"u"}}`,
	`{"context":{"targetingKey":"u","targetingKey":5}}`,
	`{"context":5,"context":{"a":1}}`,
	`{"context":{"a":1},"context":5}`,
	`{"context":{"a":1},"context":{"b":2}}`,
	`{"context":{"a":1,"a":null}}`,
	`{"context":"user-1"}`,
	`{"context":[]}`,
	`{"context":{"escaped":"tab\there \"quoted\" \\ \/ \u00e9 \ud83d\ude00 \ud800 \ud800\u0041 \udc00"}}`,
	"{\"context\":{\"bad utf-8\":\"a\xffb\xc3\"}}",
	"{\"context\":{\"k\xfe\":\"v\"}}",
	`{"context":{"big":1e400}}`,
	`{"context":{"small":1e-400,"zero":-0,"long":123456789012345678901234567890}}`,
	`{"other":1e400,"context":{}}`,
	`{"other":[1,{"x":[true]}],"context":{}}`,
	`{"context":{},}`,
	`{"context":{"a":01}}`,
	`{"context":{"a":1.}}`,
	`{"context":{"a":.5}}`,
	`{"context":{"a":-}}`,
	`{"context":{"a":1e}}`,
	`{"context":{"a":"x}}`,
	`{"context":{"a":"\x"}}`,
	`{"context":{"a":"\u12"}}`,
	"{\"context\":{\"a\":\"line\nbreak\"}}",
	`{"context":{"a":tru}}`,
	`{"context":{"a" 1}}`,
	`{"context" {"a":1}}`,
	`{context:{}}`,
	`[]`,
	`null`,
	`"context"`,
	`{} x`,
	`{}{}`,
	"\xef\xbb\xbf{}",
	// The deepest nesting encoding/json takes is 10000, the request object being 1.
	`{"context":{"deep":` + strings.Repeat("[", 9998) + strings.Repeat("]", 9998) + `}}`,
	`{"context":{"deep":` + strings.Repeat("[", 9999) + strings.Repeat("]", 9999) + `}}`,
	`{"skipped":` + strings.Repeat("[", 9999) + strings.Repeat("]", 9999) + `}`,
	`{"skipped":` + strings.Repeat("[", 10000) + strings.Repeat("]", 10000) + `}`,
}

func TestDecodeMatchesEncodingJSON(t *testing.T) {
	for i, body := range decodeCases {
		t.Run(strconv.Itoa(i), func(t *testing.T) { checkDecode(t, []byte(body)) })
	}
}

func TestDecodeAllocations(t *testing.T) {
	// A context of strings and booleans decodes without allocating beyond the boxing of
	// attribute values that are not booleans.
	body := []byte(`{"context":{"targetingKey":"user-1234","beta":true,"admin":false}}`)
	x := newExchange()
	x.body = append(x.body, body...)
	allocs := testing.AllocsPerRun(100, func() {
		if err := x.decode(); err != nil {
			t.Fatal(err)
		}
		clear(x.attrs)
	})
	if allocs != 0 {
		t.Fatalf("%v allocations per decode, want 0", allocs)
	}
}

// FuzzEvaluateRequest sends arbitrary bodies to both evaluation endpoints of a real handler: no
// body may cause a 5xx or a panic; a bad one is a 400 with an OpenFeature error code; and the
// decoder agrees with encoding/json on what every body means.
func FuzzEvaluateRequest(f *testing.F) {
	for _, c := range decodeCases {
		if len(c) < 1000 {
			f.Add([]byte(c))
		}
	}
	s := startServer(f)
	s.create("production", "static-bool", boolFlag(true))
	s.create("production", "new-checkout", splitFlag())
	f.Fuzz(func(t *testing.T, body []byte) {
		checkDecode(t, body)
		_, _, wantCode := reference(body)
		for _, path := range []string{pathOne + "static-bool", PathEvaluate} {
			req := httptest.NewRequest(http.MethodPost, path, bytes.NewReader(body))
			req.Header.Set("Authorization", "Bearer "+s.token)
			rec := httptest.NewRecorder()
			s.handler.ServeHTTP(rec, req)
			if rec.Code >= 500 {
				t.Fatalf("%s %q: status %d %s", path, body, rec.Code, rec.Body)
			}
			var answer struct {
				ErrorCode string
				Flags     []json.RawMessage
			}
			if err := json.Unmarshal(rec.Body.Bytes(), &answer); err != nil || !utf8.Valid(rec.Body.Bytes()) {
				t.Fatalf("%s %q: answer %q is not JSON: %v", path, body, rec.Body, err)
			}
			switch {
			case wantCode == "" && rec.Code != http.StatusOK:
				t.Fatalf("%s %q: status %d %s, want 200", path, body, rec.Code, rec.Body)
			case wantCode != "" && (rec.Code != http.StatusBadRequest || answer.ErrorCode != wantCode):
				t.Fatalf("%s %q: status %d %s, want 400 %s", path, body, rec.Code, rec.Body, wantCode)
			case wantCode == "" && path == PathEvaluate && len(answer.Flags) != 2:
				t.Fatalf("%s %q: %d flags, want 2", path, body, len(answer.Flags))
			}
		}
	})
}

func TestAppendStringMatchesEncodingJSON(t *testing.T) {
	for _, s := range []string{"", "plain", `"quoted" \ back`, "tab\tnl\ncr\r\x00\x1f\x7f", "<a href='x'>&</a>",
		"é ünïcödé 😀", "bad\xffutf8\xc3", "\u2028\u2029"} {
		want, err := json.Marshal(s)
		if err != nil {
			t.Fatal(err)
		}
		if got := appendString(nil, s); !bytes.Equal(got, want) {
			t.Errorf("appendString(%q) = %s, want %s", s, got, want)
		}
	}
}

func TestETagMatches(t *testing.T) {
	const tag = `"0123456789abcdef"`
	tests := []struct {
		lines []string
		want  bool
	}{
		{[]string{tag}, true},
		{[]string{"W/" + tag}, true},
		{[]string{`"x", ` + tag}, true},
		{[]string{`"x"`, tag}, true},
		{[]string{"*"}, true},
		{[]string{`"x"`}, false},
		{[]string{""}, false},
		{[]string{`0123456789abcdef`}, false},
		{[]string{`W/"0123456789abcde"`}, false},
	}
	for _, tt := range tests {
		if got := etagMatches(tt.lines, tag); got != tt.want {
			t.Errorf("etagMatches(%q) = %v, want %v", tt.lines, got, tt.want)
		}
	}
	a := bulkETag("production", 7, []byte(`{"targetingKey":"u"}`))
	for _, other := range []string{
		bulkETag("staging", 7, []byte(`{"targetingKey":"u"}`)),
		bulkETag("production", 8, []byte(`{"targetingKey":"u"}`)),
		bulkETag("production", 7, []byte(`{"targetingKey":"v"}`)),
		bulkETag("production", 7, nil),
	} {
		if other == a {
			t.Errorf("tag %s for a different state or context", other)
		}
	}
	if bulkETag("production", 7, []byte(`{"targetingKey":"u"}`)) != a {
		t.Error("the tag is not deterministic")
	}
}

func TestParseConfigTag(t *testing.T) {
	for in, want := range map[string]uint64{`"42"`: 42, `42`: 42, `W/"42"`: 42, ` "7" `: 7} {
		if got, ok := parseConfigTag(in); !ok || got != want {
			t.Errorf("parseConfigTag(%q) = %d, %v; want %d", in, got, ok, want)
		}
	}
	for _, in := range []string{``, `"x"`, `-1`, `"1.5"`} {
		if _, ok := parseConfigTag(in); ok {
			t.Errorf("parseConfigTag(%q) accepted", in)
		}
	}
	if parsed, ok := parseConfigTag(configTag(1234)); !ok || parsed != 1234 {
		t.Errorf("configTag does not round-trip: %d, %v", parsed, ok)
	}
}

func TestLimiter(t *testing.T) {
	now := time.Unix(1_000_000, 0)
	l := newLimiter(2, 3, func() time.Time { return now }) // 2/s, bursts of 3
	steps := []struct {
		advance time.Duration
		key     string
		wait    time.Duration
	}{
		{0, "a", 0},
		{0, "a", 0},
		{0, "a", 0},
		{0, "a", 500 * time.Millisecond}, // the burst is spent: one more in half a second
		{0, "b", 0},                      // another key has its own allowance
		{499 * time.Millisecond, "a", time.Millisecond},
		{time.Millisecond, "a", 0},
		{0, "a", 500 * time.Millisecond},
		{10 * time.Second, "a", 0}, // idle time refills up to the burst, no more
		{0, "a", 0},
		{0, "a", 0},
		{0, "a", 500 * time.Millisecond},
	}
	for i, st := range steps {
		now = now.Add(st.advance)
		if got := l.allow(st.key); got != st.wait {
			t.Fatalf("step %d (%s): wait %v, want %v", i, st.key, got, st.wait)
		}
	}
	if got := retrySeconds(1500 * time.Millisecond); got != 2 {
		t.Errorf("retrySeconds(1.5s) = %d, want 2", got)
	}
	if got := retrySeconds(time.Nanosecond); got != 1 {
		t.Errorf("retrySeconds(1ns) = %d, want 1", got)
	}
}
