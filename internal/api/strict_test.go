package api

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
)

func TestStrictJSON(t *testing.T) {
	tests := []struct {
		name, body string
		want       string // part of the message; "" for accepted
	}{
		{"plain", `{"key":"a","variants":{"on":true,"off":false},"n":[1,2.5,-3e10]}`, ""},
		{"same key in sibling objects", `{"a":{"x":1},"b":{"x":2},"c":[{"x":1},{"x":2}]}`, ""},
		{"empty objects and arrays", `{"a":{},"b":[],"c":[{}],"d":{"e":[]}}`, ""},
		{"duplicate key", `{"key":"a","key":"b"}`, `"key" twice`},
		{"duplicate nested key", `{"flag":{"rules":[{"name":"x","name":"y"}]}}`, `"name" twice`},
		{"duplicate after a nested value", `{"a":{"b":1},"a":2}`, `"a" twice`},
		{"number beyond float64", `{"variants":{"big":1e400}}`, "does not fit"},
		{"negative beyond float64", `[-1e309]`, "does not fit"},
		{"invalid UTF-8", "{\"description\":\"caf\xe9\"}", "not valid UTF-8"},
		{"too deep", strings.Repeat("[", maxJSONDepth+1) + strings.Repeat("]", maxJSONDepth+1), "nests deeper"},
		{"not JSON is left to the decoder", `{"a":`, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := strictJSON([]byte(tt.body))
			switch {
			case tt.want == "" && err != nil:
				t.Fatalf("refused: %v", err)
			case tt.want != "" && (err == nil || !errors.Is(err, errBadRequest) || !strings.Contains(err.Error(), tt.want)):
				t.Fatalf("strictJSON = %v, want a bad request saying %q", err, tt.want)
			}
		})
	}
}

// FuzzStrictJSON: strictJSON never panics, and what it accepts (and is JSON) decodes without
// surprises: valid UTF-8, every number a finite float64.
func FuzzStrictJSON(f *testing.F) {
	for _, s := range []string{`{"a":1}`, `{"a":1,"a":2}`, `[1e400]`, "\"\xff\"", `{"a":{"b":[{"c":null}]}}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		if strictJSON(body) != nil || !json.Valid(body) {
			return
		}
		var v any
		if err := json.Unmarshal(body, &v); err != nil {
			t.Fatalf("accepted %q, which does not decode: %v", body, err)
		}
	})
}
