package ofrep

import (
	"fmt"
	"io"
	"net/http"
	"strconv"
	"unicode/utf16"
	"unicode/utf8"
	"unsafe"

	"github.com/interlock-dev/interlock/targeting"
)

// exchange is the pooled state of one evaluation request: the body, the context decoded from it
// and the answer being written.
//
// Strings in ctx point into body rather than being copied (see [view]), so NOTHING decoded here
// may outlive the request: release clears every reference before the exchange goes back to the
// pool and its buffer is reused. The engine does not keep the context it evaluates.
type exchange struct {
	body  []byte
	out   []byte
	attrs map[string]any
	ctx   targeting.EvalContext
	// rawContext is the JSON of the request's "context" value, as sent: the bulk ETag hashes it.
	rawContext []byte
	scratch    []byte
}

// Bounds on what an exchange keeps when it goes back to the pool.
const (
	maxPooledBuffer = 64 << 10
	maxPooledAttrs  = 64
	// maxDepth bounds the nesting of arrays and objects, as encoding/json does.
	maxDepth = 10000
)

func newExchange() *exchange {
	return &exchange{
		body:  make([]byte, 0, 1024),
		out:   make([]byte, 0, 1024),
		attrs: make(map[string]any, 8),
	}
}

func (h *Handler) acquire() *exchange { return h.pool.Get().(*exchange) }

// release drops every reference into the body and returns x to the pool, unless it grew large.
func (h *Handler) release(x *exchange) {
	if len(x.attrs) > maxPooledAttrs || cap(x.body) > maxPooledBuffer || cap(x.out) > maxPooledBuffer {
		return
	}
	clear(x.attrs)
	x.ctx = targeting.EvalContext{}
	x.rawContext = nil
	x.body = x.body[:0]
	x.out = x.out[:0]
	x.scratch = x.scratch[:0]
	h.pool.Put(x)
}

// read reads the request body into x.body, up to max bytes.
//
// Errors: [ErrTooLarge] beyond max; [ErrMalformed] when the body cannot be read (a broken chunked
// encoding, a client gone).
func (x *exchange) read(r *http.Request, max int64) error {
	if r.ContentLength > max {
		return fmt.Errorf("%w: %d bytes, at most %d", ErrTooLarge, r.ContentLength, max)
	}
	if r.Body == nil || r.Body == http.NoBody {
		return nil
	}
	if n := int(r.ContentLength); n > cap(x.body) {
		x.body = make([]byte, 0, n)
	}
	b := x.body[:0]
	for {
		if len(b) == cap(b) {
			if int64(len(b)) > max {
				return fmt.Errorf("%w: more than %d bytes", ErrTooLarge, max)
			}
			b = append(b, 0)[:len(b)]
		}
		n, err := r.Body.Read(b[len(b):cap(b)])
		b = b[:len(b)+n]
		if int64(len(b)) > max {
			x.body = b
			return fmt.Errorf("%w: more than %d bytes", ErrTooLarge, max)
		}
		if err == io.EOF {
			x.body = b
			return nil
		}
		if err != nil {
			x.body = b
			return fmt.Errorf("%w: reading the body: %v", ErrMalformed, err)
		}
	}
}

// decode parses x.body as an evaluation request, {"context": {...}}, into x.ctx. An empty body or
// a missing or null context is an empty context. Members other than "context" are checked for
// well-formedness and ignored.
//
// Errors: [ErrMalformed] for anything that is not one JSON object (or holds a number out of a
// float64's range in the context); otherwise [ErrInvalidContext] for a context that is not an
// object or a targetingKey that is not a string.
func (x *exchange) decode() error {
	x.ctx = targeting.EvalContext{Attributes: x.attrs}
	x.rawContext = nil
	p := parser{b: x.body, x: x}
	p.ws()
	if p.i == len(p.b) {
		return nil
	}
	if p.b[p.i] != '{' {
		return p.fail(`the request is a JSON object such as {"context": {"targetingKey": "user-1"}}`)
	}
	p.i++
	if err := p.members(func(name string) error {
		if name != "context" {
			_, err := p.value(2, false)
			return err
		}
		start := p.i
		if err := p.context(); err != nil {
			return err
		}
		x.rawContext = p.b[start:p.i]
		return nil
	}); err != nil {
		return err
	}
	p.ws()
	if p.i != len(p.b) {
		return p.fail("unexpected data after the request object")
	}
	switch {
	case p.badContext:
		return fmt.Errorf(`%w: "context" is a JSON object`, ErrInvalidContext)
	case p.badTargetingKey:
		return fmt.Errorf("%w: targetingKey is a string", ErrInvalidContext)
	}
	return nil
}

// parser is a JSON reader over one request body that builds the context's values directly, with
// strings that are views of the body.
type parser struct {
	b []byte
	i int
	x *exchange
	// badContext and badTargetingKey say the last "context" is not an object, or its last
	// "targetingKey" not a string (the last of duplicate members counts, as in encoding/json).
	// They are reported only once the whole body is known to be well-formed JSON, so that a
	// malformed body is always a PARSE_ERROR.
	badContext, badTargetingKey bool
}

func (p *parser) fail(msg string) error {
	return fmt.Errorf("%w: invalid JSON at byte %d: %s", ErrMalformed, p.i, msg)
}

func (p *parser) ws() {
	for p.i < len(p.b) {
		switch p.b[p.i] {
		case ' ', '\t', '\n', '\r':
			p.i++
		default:
			return
		}
	}
}

// members reads the members of an object whose '{' was consumed, through its '}', calling fn
// with each name once the value is next.
func (p *parser) members(fn func(name string) error) error {
	p.ws()
	if p.i < len(p.b) && p.b[p.i] == '}' {
		p.i++
		return nil
	}
	for {
		p.ws()
		if p.i == len(p.b) || p.b[p.i] != '"' {
			return p.fail("expected a member name in double quotes")
		}
		name, err := p.str(true)
		if err != nil {
			return err
		}
		p.ws()
		if p.i == len(p.b) || p.b[p.i] != ':' {
			return p.fail("expected ':' after a member name")
		}
		p.i++
		p.ws()
		if err := fn(name); err != nil {
			return err
		}
		p.ws()
		if p.i == len(p.b) {
			return p.fail("unterminated object")
		}
		switch p.b[p.i] {
		case ',':
			p.i++
		case '}':
			p.i++
			return nil
		default:
			return p.fail("expected ',' or '}' after a member")
		}
	}
}

// context reads the value of "context": null, or an object whose "targetingKey" is a string and
// whose other members are attributes. A later "context" replaces an earlier one.
func (p *parser) context() error {
	x := p.x
	x.ctx.TargetingKey = ""
	clear(x.attrs)
	p.badContext, p.badTargetingKey = false, false
	if p.i == len(p.b) {
		return p.fail("expected a value")
	}
	switch p.b[p.i] {
	case '{':
	case 'n':
		return p.literal("null")
	default:
		if _, err := p.value(2, false); err != nil {
			return err
		}
		p.badContext = true
		return nil
	}
	p.i++
	return p.members(func(name string) error {
		if name == "targetingKey" {
			if p.i < len(p.b) && p.b[p.i] == '"' {
				s, err := p.str(true)
				x.ctx.TargetingKey, p.badTargetingKey = s, false
				return err
			}
			v, err := p.value(3, true)
			if err != nil {
				return err
			}
			x.ctx.TargetingKey, p.badTargetingKey = "", v != nil
			return nil
		}
		v, err := p.value(3, true)
		if err != nil {
			return err
		}
		if v == nil {
			delete(x.attrs, name) // null is the same as absent
		} else {
			x.attrs[name] = v
		}
		return nil
	})
}

// value reads any JSON value. With keep it returns it as string, float64, bool, []any,
// map[string]any or nil (null); without, it only checks it and returns nil. depth is the nesting
// level an array or object read here would be at (the request object is level 1): beyond
// maxDepth, as in encoding/json, the body is refused.
func (p *parser) value(depth int, keep bool) (any, error) {
	if p.i == len(p.b) {
		return nil, p.fail("expected a value")
	}
	switch c := p.b[p.i]; {
	case c == '"':
		s, err := p.str(keep)
		if err != nil || !keep {
			return nil, err
		}
		return s, nil
	case c == 't', c == 'f':
		word := "true"
		if c == 'f' {
			word = "false"
		}
		if err := p.literal(word); err != nil || !keep {
			return nil, err
		}
		return c == 't', nil
	case c == 'n':
		return nil, p.literal("null")
	case c == '-' || c >= '0' && c <= '9':
		f, err := p.number(keep)
		if err != nil || !keep {
			return nil, err
		}
		return f, nil
	case c == '[':
		if depth > maxDepth {
			return nil, p.fail(fmt.Sprintf("nested deeper than %d", maxDepth))
		}
		p.i++
		var list []any
		p.ws()
		if p.i < len(p.b) && p.b[p.i] == ']' {
			p.i++
			if keep {
				return []any{}, nil
			}
			return nil, nil
		}
		for {
			p.ws()
			v, err := p.value(depth+1, keep)
			if err != nil {
				return nil, err
			}
			if keep {
				list = append(list, v)
			}
			p.ws()
			if p.i == len(p.b) {
				return nil, p.fail("unterminated array")
			}
			switch p.b[p.i] {
			case ',':
				p.i++
			case ']':
				p.i++
				if keep {
					return list, nil
				}
				return nil, nil
			default:
				return nil, p.fail("expected ',' or ']' in an array")
			}
		}
	case c == '{':
		if depth > maxDepth {
			return nil, p.fail(fmt.Sprintf("nested deeper than %d", maxDepth))
		}
		p.i++
		var obj map[string]any
		if keep {
			obj = map[string]any{}
		}
		err := p.members(func(name string) error {
			v, err := p.value(depth+1, keep)
			if keep && err == nil {
				obj[name] = v
			}
			return err
		})
		if err != nil || !keep {
			return nil, err
		}
		return obj, nil
	}
	return nil, p.fail(fmt.Sprintf("unexpected %q", p.b[p.i]))
}

// literal consumes true, false or null.
func (p *parser) literal(word string) error {
	if len(p.b)-p.i < len(word) || string(p.b[p.i:p.i+len(word)]) != word {
		return p.fail("expected " + word)
	}
	p.i += len(word)
	return nil
}

// number reads a JSON number; with keep, as a float64 (then a number beyond a float64's range is
// an error, as encoding/json has it).
func (p *parser) number(keep bool) (float64, error) {
	start := p.i
	b := p.b
	i := p.i
	if b[i] == '-' {
		i++
	}
	switch {
	case i < len(b) && b[i] == '0':
		i++
	case i < len(b) && b[i] >= '1' && b[i] <= '9':
		for i < len(b) && b[i] >= '0' && b[i] <= '9' {
			i++
		}
	default:
		p.i = i
		return 0, p.fail("a number needs digits")
	}
	simple := true
	if i < len(b) && b[i] == '.' {
		simple = false
		i++
		if i == len(b) || b[i] < '0' || b[i] > '9' {
			p.i = i
			return 0, p.fail("a number needs digits after '.'")
		}
		for i < len(b) && b[i] >= '0' && b[i] <= '9' {
			i++
		}
	}
	if i < len(b) && (b[i] == 'e' || b[i] == 'E') {
		simple = false
		i++
		if i < len(b) && (b[i] == '+' || b[i] == '-') {
			i++
		}
		if i == len(b) || b[i] < '0' || b[i] > '9' {
			p.i = i
			return 0, p.fail("a number needs digits in its exponent")
		}
		for i < len(b) && b[i] >= '0' && b[i] <= '9' {
			i++
		}
	}
	p.i = i
	if !keep {
		return 0, nil
	}
	digits := b[start:i]
	if simple && len(digits) <= 15 {
		// Exact in a float64: no need for the general parser.
		var n int64
		neg := digits[0] == '-'
		if neg {
			digits = digits[1:]
		}
		for _, d := range digits {
			n = n*10 + int64(d-'0')
		}
		if neg {
			n = -n
		}
		return float64(n), nil
	}
	f, err := strconv.ParseFloat(view(digits), 64)
	if err != nil {
		p.i = start
		return 0, p.fail("number out of range")
	}
	return f, nil
}

// str reads a string whose opening quote is next. Without escapes the result is a view of the
// body; with them (or with invalid UTF-8, each byte of which becomes U+FFFD as encoding/json
// has it), a copy. Without keep the result is "" (the string is only checked).
func (p *parser) str(keep bool) (string, error) {
	start := p.i + 1
	for i := start; i < len(p.b); {
		switch c := p.b[i]; {
		case c == '"':
			p.i = i + 1
			if !keep {
				return "", nil
			}
			return view(p.b[start:i]), nil
		case c == '\\':
			p.i = i
			return p.strEscaped(start, keep)
		case c < 0x20:
			p.i = i
			return "", p.fail("control character in a string")
		case c >= utf8.RuneSelf:
			r, size := utf8.DecodeRune(p.b[i:])
			if r == utf8.RuneError && size == 1 {
				p.i = i
				return p.strEscaped(start, keep)
			}
			i += size
		default:
			i++
		}
	}
	p.i = len(p.b)
	return "", p.fail("unterminated string")
}

// strEscaped finishes a string that has an escape or invalid UTF-8 at p.i; start is just after
// its opening quote.
func (p *parser) strEscaped(start int, keep bool) (string, error) {
	out := append(p.x.scratch[:0], p.b[start:p.i]...)
	b := p.b
	i := p.i
	for i < len(b) {
		c := b[i]
		switch {
		case c == '"':
			p.i = i + 1
			p.x.scratch = out[:0]
			if !keep {
				return "", nil
			}
			return string(out), nil
		case c < 0x20:
			p.i = i
			return "", p.fail("control character in a string")
		case c >= utf8.RuneSelf:
			r, size := utf8.DecodeRune(b[i:])
			if r == utf8.RuneError && size == 1 {
				out = utf8.AppendRune(out, utf8.RuneError)
			} else {
				out = append(out, b[i:i+size]...)
			}
			i += size
			continue
		case c != '\\':
			out = append(out, c)
			i++
			continue
		}
		if i+1 == len(b) {
			break
		}
		e := b[i+1]
		i += 2
		switch e {
		case '"', '\\', '/':
			out = append(out, e)
		case 'b':
			out = append(out, '\b')
		case 'f':
			out = append(out, '\f')
		case 'n':
			out = append(out, '\n')
		case 'r':
			out = append(out, '\r')
		case 't':
			out = append(out, '\t')
		case 'u':
			r, ok := hex4(b, i)
			if !ok {
				p.i = i
				return "", p.fail(`\u needs four hex digits`)
			}
			i += 4
			if utf16.IsSurrogate(r) {
				r2, ok := rune(-1), false
				if i+6 <= len(b) && b[i] == '\\' && b[i+1] == 'u' {
					r2, ok = hex4(b, i+2)
				}
				if dec := utf16.DecodeRune(r, r2); ok && dec != utf8.RuneError {
					r = dec
					i += 6
				} else {
					r = utf8.RuneError
				}
			}
			out = utf8.AppendRune(out, r)
		default:
			p.i = i - 1
			return "", p.fail(fmt.Sprintf("unknown escape \\%c", e))
		}
	}
	p.i = len(b)
	return "", p.fail("unterminated string")
}

func hex4(b []byte, i int) (rune, bool) {
	if i+4 > len(b) {
		return 0, false
	}
	var r rune
	for _, c := range b[i : i+4] {
		switch {
		case c >= '0' && c <= '9':
			r = r<<4 | rune(c-'0')
		case c >= 'a' && c <= 'f':
			r = r<<4 | rune(c-'a'+10)
		case c >= 'A' && c <= 'F':
			r = r<<4 | rune(c-'A'+10)
		default:
			return 0, false
		}
	}
	return r, true
}

// view is b as a string without copying. The string is only valid while b is not modified: see
// [exchange] for why that holds.
func view(b []byte) string {
	if len(b) == 0 {
		return ""
	}
	return unsafe.String(&b[0], len(b))
}
