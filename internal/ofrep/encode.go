package ofrep

import (
	"encoding/json"
	"strconv"
	"unicode/utf8"

	"github.com/interlock-dev/interlock/targeting"
)

// The answers are written by hand: an evaluation is a handful of known fields, and
// encoding/json would cost more than the evaluation itself.

// appendSuccess appends an evaluationSuccess: key, value, reason, variant and metadata naming
// the flag's version and the environment, so an answer traces to one configuration, and saying
// "stale": true when the answer comes from the last-known state while the event store is out of
// reach.
func appendSuccess(b []byte, key string, ev *targeting.Evaluation, env string, stale bool) []byte {
	b = append(b, `{"key":`...)
	b = appendString(b, key)
	b = append(b, `,"value":`...)
	b = appendValue(b, ev.Variant)
	b = append(b, `,"reason":`...)
	b = appendString(b, string(ev.Reason))
	b = append(b, `,"variant":`...)
	b = appendString(b, ev.Variant.Name)
	b = append(b, `,"metadata":{"version":`...)
	b = strconv.AppendUint(b, ev.Version, 10)
	b = append(b, `,"environment":`...)
	b = appendString(b, env)
	if stale {
		b = append(b, `,"stale":true`...)
	}
	return append(b, "}}"...)
}

// appendFailure appends an evaluationFailure (or flagNotFound): key, errorCode, errorDetails.
func appendFailure(b []byte, key, code, details string) []byte {
	b = append(b, `{"key":`...)
	b = appendString(b, key)
	b = append(b, `,"errorCode":`...)
	b = appendString(b, code)
	b = append(b, `,"errorDetails":`...)
	b = appendString(b, details)
	return append(b, '}')
}

// appendValue appends a variant's value: its JSON as stored (compact, since flag documents are
// normalised) or, if the engine gave none, the typed value.
func appendValue(b []byte, v *targeting.Variant) []byte {
	if len(v.Raw) > 0 {
		return append(b, v.Raw...)
	}
	switch v.Kind {
	case targeting.KindBool:
		return strconv.AppendBool(b, v.Bool)
	case targeting.KindString:
		return appendString(b, v.String)
	case targeting.KindNumber:
		return strconv.AppendFloat(b, v.Number, 'g', -1, 64)
	}
	enc, err := json.Marshal(v.Object)
	if err != nil || v.Object == nil {
		return append(b, "null"...)
	}
	return append(b, enc...)
}

const hexDigits = "0123456789abcdef"

// appendString appends s as a JSON string. Invalid UTF-8 becomes U+FFFD; control characters and
// the characters HTML treats specially are escaped.
func appendString(b []byte, s string) []byte {
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' && c != '<' && c != '>' && c != '&' {
				i++
				continue
			}
			b = append(b, s[start:i]...)
			switch c {
			case '"', '\\':
				b = append(b, '\\', c)
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			default:
				b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
			i += size
			start = i
			continue
		}
		if r == '\u2028' || r == '\u2029' {
			b = append(b, s[start:i]...)
			b = append(b, '\\', 'u', '2', '0', '2', hexDigits[r&0xf])
			i += size
			start = i
			continue
		}
		i += size
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}
