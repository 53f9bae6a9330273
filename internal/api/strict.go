package api

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"unicode/utf8"
)

// maxJSONDepth bounds how deeply a body's objects and arrays nest.
const maxJSONDepth = 64

// strictJSON refuses what encoding/json would silently accept or alter: bytes that are not
// UTF-8 (it would replace them), an object with the same key twice (the last would win), a number
// beyond float64 (it would fail later, at evaluation, not here), and nesting deeper than
// maxJSONDepth. The message says what and where. A body that is not JSON at all passes, for the
// decoder to describe.
func strictJSON(body []byte) error {
	if !utf8.Valid(body) {
		i := 0
		for i < len(body) {
			r, n := utf8.DecodeRune(body[i:])
			if r == utf8.RuneError && n <= 1 {
				break
			}
			i += n
		}
		return badRequest(fmt.Sprintf("the body is not valid UTF-8 (at byte %d)", i))
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	type level struct {
		object bool
		keys   map[string]bool
		// key says the next string token of an object is a key.
		key bool
	}
	var stack []level
	for {
		tok, err := dec.Token()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return nil // not JSON: the decoder says so
		}
		top := len(stack) - 1
		if top >= 0 && stack[top].object {
			if k, ok := tok.(string); ok && stack[top].key {
				if stack[top].keys[k] {
					return badRequest(fmt.Sprintf("the body names %q twice in one object (at byte %d)", truncate(k), dec.InputOffset()))
				}
				stack[top].keys[k] = true
				stack[top].key = false
				continue
			}
			if d, ok := tok.(json.Delim); !ok || (d != '}' && d != ']') {
				stack[top].key = true // after this value, a key
			}
		}
		switch t := tok.(type) {
		case json.Delim:
			switch t {
			case '{', '[':
				if len(stack) >= maxJSONDepth {
					return badRequest(fmt.Sprintf("the body nests deeper than %d levels", maxJSONDepth))
				}
				stack = append(stack, level{object: t == '{', keys: map[string]bool{}, key: t == '{'})
			case '}', ']':
				stack = stack[:len(stack)-1]
			}
		case json.Number:
			if _, err := strconv.ParseFloat(t.String(), 64); err != nil {
				return badRequest(fmt.Sprintf("the number %s does not fit a 64-bit float (at byte %d)", truncate(t.String()), dec.InputOffset()))
			}
		}
	}
}
