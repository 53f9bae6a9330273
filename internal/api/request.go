package api

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/url"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/interlock-dev/interlock/internal/auth"
)

// Media types of request bodies.
const (
	mediaJSON       = "application/json"
	mediaMergePatch = "application/merge-patch+json"
)

// Request headers besides the standard ones.
const (
	headerReason        = "X-Interlock-Reason"
	headerCorrelationID = "X-Correlation-Id"
)

// authenticate returns who the request's bearer token stands for. Errors wrap
// auth.ErrUnauthenticated, or are the authenticator's.
func (a *API) authenticate(r *http.Request) (auth.Principal, error) {
	h := r.Header.Get("Authorization")
	if h == "" {
		return auth.Principal{}, fmt.Errorf("%w: no Authorization header", auth.ErrUnauthenticated)
	}
	scheme, token, ok := strings.Cut(h, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return auth.Principal{}, fmt.Errorf("%w: not a bearer token", auth.ErrUnauthenticated)
	}
	return a.cfg.Auth.Authenticate(r.Context(), strings.TrimSpace(token))
}

// checkContentType requires the body's media type to be want (with no charset but UTF-8). A
// request without Content-Type passes only when optional.
func checkContentType(r *http.Request, want string, optional bool) error {
	ct := r.Header.Get("Content-Type")
	if ct == "" {
		if optional {
			return nil
		}
		return &requestError{kind: errUnsupportedMediaType, msg: "Content-Type: " + want + " is required"}
	}
	mt, params, err := mime.ParseMediaType(ct)
	if err != nil || mt != want {
		return &requestError{kind: errUnsupportedMediaType, msg: fmt.Sprintf("Content-Type %q is not %s", ct, want)}
	}
	if cs, ok := params["charset"]; ok && !strings.EqualFold(cs, "utf-8") {
		return &requestError{kind: errUnsupportedMediaType, msg: fmt.Sprintf("charset %q: bodies are UTF-8", cs)}
	}
	return nil
}

// readBody reads the whole body, at most MaxBodyBytes of it (an error wrapping
// *http.MaxBytesError beyond).
func (a *API) readBody(w http.ResponseWriter, r *http.Request) ([]byte, error) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, a.cfg.MaxBodyBytes))
	if err != nil {
		var tooLarge *http.MaxBytesError
		if errors.As(err, &tooLarge) {
			return nil, err
		}
		return nil, badRequest("read the body: " + err.Error())
	}
	return body, nil
}

// readJSON reads a JSON body into v: Content-Type application/json, one JSON value, no unknown
// fields. With optional, an empty body (and then no Content-Type is needed) leaves v as it is.
func (a *API) readJSON(w http.ResponseWriter, r *http.Request, v any, optional bool) error {
	if err := checkContentType(r, mediaJSON, true); err != nil {
		return err
	}
	body, err := a.readBody(w, r)
	if err != nil {
		return err
	}
	if len(bytes.TrimSpace(body)) == 0 {
		if optional {
			return nil
		}
		return badRequest("the body is empty: send a JSON object")
	}
	if r.Header.Get("Content-Type") == "" {
		return &requestError{kind: errUnsupportedMediaType, msg: "Content-Type: " + mediaJSON + " is required with a body"}
	}
	return decodeJSON(body, v)
}

// decodeJSON decodes exactly one JSON value into v, refusing unknown fields and what strictJSON
// refuses, with a message that says what and where.
func decodeJSON(body []byte, v any) error {
	if err := strictJSON(body); err != nil {
		return err
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return badRequest(jsonMessage(err))
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return badRequest("the body holds more than one JSON value")
	}
	return nil
}

func jsonMessage(err error) string {
	var syntax *json.SyntaxError
	var typ *json.UnmarshalTypeError
	switch {
	case errors.As(err, &syntax):
		return fmt.Sprintf("the body is not valid JSON: %v (at byte %d)", syntax, syntax.Offset)
	case errors.As(err, &typ):
		field := typ.Field
		if field == "" {
			return fmt.Sprintf("the body is a JSON %s, not a JSON %s", typ.Value, jsonKind(typ.Type))
		}
		return fmt.Sprintf("field %s: a JSON %s where a %s belongs", field, typ.Value, jsonKind(typ.Type))
	case errors.Is(err, io.EOF):
		return "the body is empty: send a JSON object"
	case errors.Is(err, io.ErrUnexpectedEOF):
		return "the body ends in the middle of a JSON value"
	}
	return "the body: " + strings.TrimPrefix(err.Error(), "json: ")
}

// jsonKind names the JSON kind a Go type decodes from.
func jsonKind(t reflect.Type) string {
	if t == nil {
		return "value"
	}
	switch t.Kind() {
	case reflect.Bool:
		return "boolean"
	case reflect.String:
		return "string"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		return "integer"
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return "non-negative integer"
	case reflect.Float32, reflect.Float64:
		return "number"
	case reflect.Slice, reflect.Array:
		return "array"
	case reflect.Map, reflect.Struct:
		return "object"
	case reflect.Pointer:
		return jsonKind(t.Elem())
	}
	return "value"
}

// etag is the entity tag of a flag version.
func etag(version uint64) string { return `"` + strconv.FormatUint(version, 10) + `"` }

// ifMatch returns the version named by If-Match, and whether there was one. It takes one strong
// tag, as ETag gave it: "<version>".
func ifMatch(r *http.Request) (uint64, bool, error) {
	values := r.Header.Values("If-Match")
	if len(values) == 0 {
		return 0, false, nil
	}
	h := strings.TrimSpace(strings.Join(values, ","))
	const want = `If-Match takes the flag's ETag, one version in quotes such as "3"`
	switch {
	case h == "*":
		return 0, false, badRequest(`If-Match: * is not supported: ` + want)
	case strings.HasPrefix(h, "W/"):
		return 0, false, badRequest("If-Match: a weak tag never matches: " + want)
	case len(h) < 3 || h[0] != '"' || h[len(h)-1] != '"':
		return 0, false, badRequest(fmt.Sprintf("If-Match %q: %s", truncate(h), want))
	}
	v, err := strconv.ParseUint(h[1:len(h)-1], 10, 64)
	if err != nil || v == 0 {
		return 0, false, badRequest(fmt.Sprintf("If-Match %q: %s", truncate(h), want))
	}
	return v, true, nil
}

// requireIfMatch returns the version If-Match names, or 428 when there is none.
func requireIfMatch(r *http.Request, what string) (uint64, error) {
	version, ok, err := ifMatch(r)
	if err != nil {
		return 0, err
	}
	if !ok {
		return 0, &requestError{kind: errPreconditionRequired,
			msg: `If-Match is required: send the ETag of the ` + what + ` you read, such as If-Match: "3"`}
	}
	return version, nil
}

// noneMatch reports whether If-None-Match names the current tag (or is *), by weak comparison.
func noneMatch(r *http.Request, tag string) bool {
	for _, v := range r.Header.Values("If-None-Match") {
		for t := range strings.SplitSeq(v, ",") {
			t = strings.TrimPrefix(strings.TrimSpace(t), "W/")
			if t == "*" || t == tag {
				return true
			}
		}
	}
	return false
}

// expectedVersion merges the versions from If-Match and from a body. fromHeader says where it
// came from, which decides between 412 and 409 when it is stale. 0 means no expectation.
func expectedVersion(r *http.Request, body *uint64) (v uint64, fromHeader bool, err error) {
	hv, inHeader, err := ifMatch(r)
	if err != nil {
		return 0, false, err
	}
	if body != nil && *body == 0 {
		return 0, false, badRequest("version: versions start at 1")
	}
	switch {
	case inHeader && body != nil && *body != hv:
		return 0, false, badRequest(fmt.Sprintf("If-Match says version %d but the body says %d", hv, *body))
	case inHeader:
		return hv, true, nil
	case body != nil:
		return *body, false, nil
	}
	return 0, false, nil
}

// query parses the query string and refuses parameters the endpoint does not take, and repeats
// of the ones that are not repeatable.
func query(r *http.Request, allowed []string, repeatable ...string) (url.Values, error) {
	q, err := url.ParseQuery(r.URL.RawQuery)
	if err != nil {
		return nil, badRequest("query string: " + err.Error())
	}
	for name, vs := range q {
		if !utf8.ValidString(name) {
			return nil, badRequest("query string: a parameter name is not valid UTF-8")
		}
		for _, v := range vs {
			if !utf8.ValidString(v) {
				return nil, badRequest(fmt.Sprintf("query parameter %q: the value is not valid UTF-8", truncate(name)))
			}
		}
		if !slices.Contains(allowed, name) && !slices.Contains(repeatable, name) {
			if len(allowed)+len(repeatable) == 0 {
				return nil, badRequest(fmt.Sprintf("unknown query parameter %q: this endpoint takes none", truncate(name)))
			}
			return nil, badRequest(fmt.Sprintf("unknown query parameter %q: this endpoint takes %s",
				truncate(name), strings.Join(append(slices.Clone(allowed), repeatable...), ", ")))
		}
		if len(vs) > 1 && !slices.Contains(repeatable, name) {
			return nil, badRequest(fmt.Sprintf("query parameter %q given %d times", name, len(vs)))
		}
	}
	return q, nil
}

// The range of times a query may name: no event is older than the epoch, and the stream's start
// time lookups do not take years beyond 9999.
var (
	minTime = time.Unix(0, 0).UTC()
	maxTime = time.Date(9999, 12, 31, 23, 59, 59, 0, time.UTC)
)

// timeParam parses an RFC 3339 time; zero when absent. A '+' that became a space in an
// unencoded query string is taken as the '+' it was.
func timeParam(q url.Values, name string) (time.Time, error) {
	s := q.Get(name)
	if s == "" {
		return time.Time{}, nil
	}
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		t, err = time.Parse(time.RFC3339Nano, strings.ReplaceAll(s, " ", "+"))
	}
	if err != nil {
		return time.Time{}, badRequest(fmt.Sprintf("%s: %q is not an RFC 3339 time such as 2026-01-02T15:04:05Z", name, truncate(s)))
	}
	if t.Before(minTime) || t.After(maxTime) {
		return time.Time{}, badRequest(fmt.Sprintf("%s: %q is out of range: a time between 1970 and 9999", name, truncate(s)))
	}
	return t, nil
}

// uintParam parses a positive integer; zero when absent.
func uintParam(q url.Values, name string) (uint64, error) {
	s := q.Get(name)
	if s == "" {
		return 0, nil
	}
	v, err := strconv.ParseUint(s, 10, 64)
	if err != nil || v == 0 {
		return 0, badRequest(fmt.Sprintf("%s: %q is not a positive integer", name, truncate(s)))
	}
	return v, nil
}

// boolParam parses true or false; false when absent.
func boolParam(q url.Values, name string) (bool, error) {
	s := q.Get(name)
	if s == "" {
		return false, nil
	}
	v, err := strconv.ParseBool(s)
	if err != nil {
		return false, badRequest(fmt.Sprintf("%s: %q is not true or false", name, truncate(s)))
	}
	return v, nil
}

func truncate(s string) string {
	if len(s) > 64 {
		return s[:64] + "…"
	}
	return s
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }
