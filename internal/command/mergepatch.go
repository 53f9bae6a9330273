package command

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"reflect"
	"slices"
	"strings"
	"unicode/utf8"

	"github.com/interlock-dev/interlock/events"
)

// patch is a parsed JSON Merge Patch (RFC 7396) for a configuration document (a flag's, or a
// segment's).
type patch struct {
	members map[string]member // by name of the top-level member they change
	names   []string          // of the members, sorted
	compact []byte            // what the person sent, without insignificant white space
}

// member is what a patch does to one top-level member of the document.
type member struct {
	del bool            // null: delete it
	obj map[string]any  // an object: merge it into the member (numbers are json.Number)
	raw json.RawMessage // anything else: replace the member with it
}

type readOnlyField struct{ field, instead string }

// document is a kind of configuration document that patches apply to: its shape, and the fields
// of the entity around it that a patch may not set.
type document struct {
	schema   *schema
	readOnly []readOnlyField
}

// flagDocument is the flag's configuration document.
var flagDocument = &document{schema: configSchema, readOnly: readOnly}

// readOnly are the fields of a flag that a patch may not set, and what to do instead.
var readOnly = []readOnlyField{
	{"key", "a flag's key never changes: create a flag with the new key (and archive this one)"},
	{"environment", "a flag's environment never changes: create the flag in the other environment"},
	{"version", "is read-only: send the version you expect with the command (If-Match), not in the patch"},
	{"archived", "is read-only: use the archive and unarchive commands"},
	{"createdAt", "is read-only: recorded from the flag's events"},
	{"updatedAt", "is read-only: recorded from the flag's events"},
	{"updatedBy", "is read-only: recorded from the flag's events"},
}

// maxReported bounds how many problems with one patch are reported.
const maxReported = 10

// maxPatchLen bounds a patch: the event that records it (with the whole configuration) must fit
// in the stream's message size limit anyway.
const maxPatchLen = 512 << 10

// parsePatch checks what can be checked of a patch without the flag: it is one JSON object,
// it sets no read-only field and names no unknown one. Errors wrap events.ErrInvalid.
func parsePatch(raw []byte) (*patch, error) { return parseDocumentPatch(raw, flagDocument) }

// parseDocumentPatch is parsePatch for a patch of doc.
func parseDocumentPatch(raw []byte, doc *document) (*patch, error) {
	if len(raw) > maxPatchLen {
		return nil, &events.ValidationError{Field: "patch", Message: fmt.Sprintf("larger than %d bytes", maxPatchLen)}
	}
	if !utf8.Valid(raw) {
		return nil, &events.ValidationError{Field: "patch", Message: "is not valid UTF-8"}
	}
	if len(bytes.TrimSpace(raw)) == 0 {
		return nil, &events.ValidationError{Field: "patch", Message: "is empty: send a JSON object"}
	}
	var buf bytes.Buffer
	if err := json.Compact(&buf, raw); err != nil {
		return nil, &events.ValidationError{Field: "patch", Message: "is not one JSON object: " + err.Error()}
	}
	compact := buf.Bytes()
	if compact[0] != '{' {
		return nil, &events.ValidationError{Field: "patch",
			Message: "a JSON Merge Patch is a JSON object, not " + describeJSON(compact)}
	}
	top, err := splitObject(compact)
	if err != nil {
		return nil, &events.ValidationError{Field: "patch", Message: "is not valid JSON: " + err.Error()}
	}

	p := &patch{members: make(map[string]member, len(top)), compact: compact}
	var errs []error
	for _, k := range sortedKeys(top) {
		if i := slices.IndexFunc(doc.readOnly, func(ro readOnlyField) bool { return strings.EqualFold(k, ro.field) }); i >= 0 {
			errs = append(errs, &events.ValidationError{Field: k, Message: doc.readOnly[i].instead})
			continue
		}
		f, ok := doc.schema.fields[k]
		if !ok {
			errs = append(errs, unknownField(k, k, doc.schema.names))
			continue
		}
		v := top[k]
		switch v[0] {
		case 'n':
			p.members[k] = member{del: true}
		case '{', '[':
			dec := json.NewDecoder(bytes.NewReader(v))
			dec.UseNumber()
			var g any
			if err := dec.Decode(&g); err != nil {
				return nil, &events.ValidationError{Field: k, Message: "is not valid JSON: " + err.Error()}
			}
			checkFields(&errs, k, g, f.schema)
			if obj, ok := g.(map[string]any); ok {
				p.members[k] = member{obj: obj}
			} else {
				p.members[k] = member{raw: v}
			}
		default:
			p.members[k] = member{raw: v}
		}
	}
	if len(errs) > maxReported {
		more := len(errs) - maxReported
		errs = append(errs[:maxReported], &events.ValidationError{Field: "patch", Message: fmt.Sprintf("and %d more problems", more)})
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	p.names = sortedKeys(p.members)
	return p, nil
}

// splitObject returns the members of obj, a JSON object as json.Compact writes it (valid, no
// white space), by name; a name given twice keeps its last value, as encoding/json does. The
// values are sub-slices of obj.
func splitObject(obj []byte) (map[string]json.RawMessage, error) {
	members := make(map[string]json.RawMessage)
	i := 1
	for i < len(obj) && obj[i] != '}' {
		end := valueEnd(obj, i)
		var name string
		if quoted := obj[i:end]; bytes.IndexByte(quoted, '\\') < 0 {
			name = string(quoted[1 : len(quoted)-1])
		} else if err := json.Unmarshal(quoted, &name); err != nil {
			return nil, err
		}
		i = end + 1 // ':'
		end = valueEnd(obj, i)
		members[name] = obj[i:end:end]
		i = end
		if i < len(obj) && obj[i] == ',' {
			i++
		}
	}
	return members, nil
}

// valueEnd returns the index just after the compact JSON value that starts at b[i].
func valueEnd(b []byte, i int) int {
	switch b[i] {
	case '"':
		return stringEnd(b, i)
	case '{', '[':
		depth := 0
		for ; i < len(b); i++ {
			switch b[i] {
			case '"':
				i = stringEnd(b, i) - 1
			case '{', '[':
				depth++
			case '}', ']':
				if depth--; depth == 0 {
					return i + 1
				}
			}
		}
		return len(b)
	}
	for i < len(b) && b[i] != ',' && b[i] != '}' && b[i] != ']' && b[i] != ':' {
		i++ // a number or a literal
	}
	return i
}

// stringEnd returns the index just after the JSON string that starts at b[i].
func stringEnd(b []byte, i int) int {
	for i++; i < len(b); i++ {
		switch b[i] {
		case '\\':
			i++
		case '"':
			return i + 1
		}
	}
	return len(b)
}

// patched is the outcome of a patch: the configuration, validated and normalised, its
// encoding, and whether that is the encoding the configuration had before (nothing changed).
type patched struct {
	cfg  events.FlagConfig
	enc  encoding
	same bool
}

// apply merges the patch into cur's document and returns the resulting configuration. enc is
// cur's encoding (see encode). cur, enc and the patch are not modified. Errors wrap
// events.ErrInvalid.
//
// The result is what RFC 7396 gives on the whole document (marshal cur, merge, unmarshal
// strictly, validate, normalise, marshal), computed member by member: only the members the
// patch touches are encoded, merged, decoded and encoded again; the others are copied, in
// memory and in the encoding. FuzzMergePatch holds the two ways to the same results.
func (p *patch) apply(cur events.FlagConfig, enc encoding) (patched, error) {
	// Members the patch touches are zeroed and decoded anew; the others are shared with cur,
	// which is fine as configurations are never modified in place, except that normalize
	// rewrites the variants map: that one is copied.
	cfg := cur
	cfg.Variants = maps.Clone(cur.Variants)
	fields := reflect.ValueOf(&cfg).Elem()
	for _, k := range p.names {
		m := p.members[k]
		sf := configSchema.fields[k]
		f := fields.FieldByIndex(sf.index)
		raw := m.raw
		if m.obj != nil {
			// Merge into the member's current value, as encoded in the document.
			now := enc.members[sf.pos]
			dec := json.NewDecoder(bytes.NewReader(now))
			dec.UseNumber()
			var target any
			if len(now) > 0 {
				if err := dec.Decode(&target); err != nil {
					return patched{}, fmt.Errorf("decode current %s: %w", k, err)
				}
			}
			var err error
			if raw, err = json.Marshal(mergePatch(target, m.obj)); err != nil {
				return patched{}, &events.ValidationError{Field: k, Message: "result does not encode: " + err.Error()}
			}
		}
		f.SetZero() // what a document without the member decodes to; unshared from cur
		if m.del {
			continue
		}
		if err := decodeMember(raw, f.Addr().Interface(), sf.schema); err != nil {
			return patched{}, decodeError(k, err)
		}
	}
	if err := cfg.Validate(); err != nil {
		return patched{}, err
	}
	normalize(&cfg)

	// Encode as json.Marshal would: members in field order, empty omitempty members left out;
	// the members the patch did not touch are already encoded.
	members := make([]json.RawMessage, len(configSchema.order))
	size := 2 // {}
	same := true
	for pos, name := range configSchema.order {
		v := enc.members[pos]
		if _, touched := p.members[name]; touched {
			sf := configSchema.fields[name]
			f := fields.FieldByIndex(sf.index)
			v = nil
			if !sf.omitEmpty || !isEmptyValue(f) {
				var err error
				if v, err = json.Marshal(f.Interface()); err != nil {
					return patched{}, fmt.Errorf("encode %s: %w", name, err)
				}
			}
			same = same && bytes.Equal(v, enc.members[pos])
		}
		members[pos] = v
		if v != nil {
			size += len(name) + len(v) + 4 // "name":v,
		}
	}
	buf := make([]byte, 0, size) // large enough: the members below point into it
	buf = append(buf, '{')
	for pos, name := range configSchema.order {
		v := members[pos]
		if v == nil {
			continue
		}
		if len(buf) > 1 {
			buf = append(buf, ',')
		}
		buf = append(buf, '"')
		buf = append(buf, name...) // a field name from the schema: nothing to escape
		buf = append(buf, '"', ':')
		start := len(buf)
		buf = append(buf, v...)
		members[pos] = buf[start:len(buf):len(buf)]
	}
	buf = append(buf, '}')
	return patched{cfg: cfg, enc: encoding{canon: buf, members: members}, same: same}, nil
}

// isEmptyValue is encoding/json's notion of an empty value, which omitempty leaves out.
func isEmptyValue(v reflect.Value) bool {
	switch v.Kind() {
	case reflect.Array, reflect.Map, reflect.Slice, reflect.String:
		return v.Len() == 0
	case reflect.Bool, reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Uintptr,
		reflect.Float32, reflect.Float64, reflect.Interface, reflect.Pointer:
		return v.IsZero()
	}
	return false
}

// decodeMember decodes one member of the document into v, refusing unknown fields in objects
// (a backstop: parsePatch has already refused them by name).
func decodeMember(raw []byte, v any, sc *schema) error {
	if sc.kind == reflect.Invalid || sc.kind == reflect.Slice && sc.elem.kind == reflect.Invalid {
		return json.Unmarshal(raw, v) // no objects with fields inside
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return err
	}
	if dec.More() {
		return errors.New("data after the value")
	}
	return nil
}

// mergePatch is RFC 7396 MergePatch(target, patch): objects merge recursively, null deletes a
// member, anything else (arrays included) replaces. It modifies neither target nor patch: the
// result is new where the patch changed something and shares the rest.
func mergePatch(target, patch any) any {
	p, ok := patch.(map[string]any)
	if !ok {
		return patch
	}
	t, _ := target.(map[string]any)
	out := make(map[string]any, len(t)+len(p))
	for k, v := range t {
		out[k] = v
	}
	for k, v := range p {
		if v == nil {
			delete(out, k)
			continue
		}
		out[k] = mergePatch(out[k], v)
	}
	return out
}

var rawMessageType = reflect.TypeFor[json.RawMessage]()

// schema is the shape of a JSON document as encoding/json reads it into a Go type: which members
// an object has, or what the elements of an array or the values of a map look like.
type schema struct {
	kind   reflect.Kind     // reflect.Struct, reflect.Map, reflect.Slice; Invalid for any value
	fields map[string]field // of a struct, by JSON name
	names  []string         // of a struct, sorted
	order  []string         // of a struct, in the order encoding/json writes them
	elem   *schema          // of a map or slice
}

// field is one member of a struct's document.
type field struct {
	*schema
	index     []int // for reflect.Value.FieldByIndex
	pos       int   // in the struct schema's order
	omitEmpty bool
}

// configSchema is the shape of a flag's configuration document.
var configSchema = schemaOf(reflect.TypeFor[events.FlagConfig]())

// schemaOf describes t. It does not handle recursive types; the flag document has none.
func schemaOf(t reflect.Type) *schema {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch {
	case t == rawMessageType:
		return &schema{}
	case t.Kind() == reflect.Struct:
		sc := &schema{kind: reflect.Struct, fields: make(map[string]field)}
		addFields(sc, t, nil)
		sc.names = sortedKeys(sc.fields)
		return sc
	case t.Kind() == reflect.Map || t.Kind() == reflect.Slice:
		return &schema{kind: t.Kind(), elem: schemaOf(t.Elem())}
	}
	return &schema{}
}

// addFields adds the JSON members of struct t, found at index in sc's type, to sc, as
// encoding/json names them.
func addFields(sc *schema, t reflect.Type, index []int) {
	for i := range t.NumField() {
		f := t.Field(i)
		at := append(slices.Clone(index), i)
		tag := f.Tag.Get("json")
		name, _, _ := strings.Cut(tag, ",")
		if tag == "-" {
			continue
		}
		ft := f.Type
		if ft.Kind() == reflect.Pointer {
			ft = ft.Elem()
		}
		if f.Anonymous && name == "" && ft.Kind() == reflect.Struct && f.Type.Kind() != reflect.Pointer {
			addFields(sc, ft, at)
			continue
		}
		if !f.IsExported() {
			continue
		}
		if name == "" {
			name = f.Name
		}
		_, opts, _ := strings.Cut(tag, ",")
		sc.fields[name] = field{schema: schemaOf(f.Type), index: at, pos: len(sc.order), omitEmpty: slices.Contains(strings.Split(opts, ","), "omitempty")}
		sc.order = append(sc.order, name)
	}
}

// checkFields reports the members of v that sc does not have, recursively through objects and
// arrays. A value of the wrong JSON type is left to the decoder, which says what it wants.
func checkFields(errs *[]error, path string, v any, sc *schema) {
	switch sc.kind {
	case reflect.Struct:
		obj, ok := v.(map[string]any)
		if !ok {
			return
		}
		for _, k := range sortedKeys(obj) {
			fs, ok := sc.fields[k]
			if !ok {
				*errs = append(*errs, unknownField(joinPath(path, k), k, sc.names))
				continue
			}
			if obj[k] != nil {
				checkFields(errs, joinPath(path, k), obj[k], fs.schema)
			}
		}
	case reflect.Map:
		obj, ok := v.(map[string]any)
		if !ok {
			return
		}
		for _, k := range sortedKeys(obj) {
			if obj[k] != nil {
				checkFields(errs, joinPath(path, k), obj[k], sc.elem)
			}
		}
	case reflect.Slice:
		arr, ok := v.([]any)
		if !ok {
			return
		}
		for i, el := range arr {
			checkFields(errs, fmt.Sprintf("%s[%d]", path, i), el, sc.elem)
		}
	}
}

func unknownField(path, name string, names []string) error {
	for _, known := range names {
		if strings.EqualFold(name, known) {
			return &events.ValidationError{Field: path, Message: fmt.Sprintf("unknown field: did you mean %q? (names are case-sensitive)", known)}
		}
	}
	return &events.ValidationError{Field: path, Message: "unknown field; the fields here are " + strings.Join(names, ", ")}
}

func joinPath(path, k string) string {
	if path == "" {
		return k
	}
	return path + "." + k
}

// decodeError turns an error decoding member k of the merged document into a validation error
// naming the field and the JSON type it takes.
func decodeError(k string, err error) error {
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) {
		field := k
		if te.Field != "" {
			field += "." + te.Field
		}
		return &events.ValidationError{Field: field, Message: fmt.Sprintf("is %s, want %s", article(te.Value), describeType(te.Type))}
	}
	return &events.ValidationError{Field: k, Message: "is not what a flag document holds here: " + err.Error()}
}

func article(jsonValue string) string {
	if jsonValue == "" {
		return "a JSON value"
	}
	if strings.ContainsRune("aeiou", rune(jsonValue[0])) {
		return "an " + jsonValue
	}
	return "a " + jsonValue
}

func describeType(t reflect.Type) string {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if t == rawMessageType {
		return "a JSON value"
	}
	switch t.Kind() {
	case reflect.Bool:
		return "a boolean"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return "an integer"
	case reflect.Float32, reflect.Float64:
		return "a number"
	case reflect.String:
		return "a string"
	case reflect.Slice, reflect.Array:
		return "an array"
	case reflect.Map, reflect.Struct:
		return "an object"
	}
	return "a JSON value"
}

// describeJSON names the JSON type of a valid, compact JSON value.
func describeJSON(v []byte) string {
	switch v[0] {
	case 'n':
		return "null"
	case 't', 'f':
		return "a boolean"
	case '"':
		return "a string"
	case '[':
		return "an array"
	case '{':
		return "an object"
	}
	return "a number"
}

// normalize is events.FlagConfig.Normalize plus one rule of this package: the members of
// object variant values are sorted by name (JSON objects are unordered), so that a configuration
// that only differs in member order is the same configuration, and a patch that changes nothing
// writes nothing. cfg must be valid; a variant value that does not decode is left alone.
func normalize(cfg *events.FlagConfig) {
	cfg.Normalize()
	for name, raw := range cfg.Variants {
		if len(raw) == 0 || raw[0] != '{' {
			continue
		}
		dec := json.NewDecoder(bytes.NewReader(raw))
		dec.UseNumber()
		var v any
		if dec.Decode(&v) != nil {
			continue
		}
		var buf bytes.Buffer
		enc := json.NewEncoder(&buf)
		enc.SetEscapeHTML(false)
		if enc.Encode(v) != nil {
			continue
		}
		cfg.Variants[name] = bytes.TrimSuffix(buf.Bytes(), []byte("\n"))
	}
}

// encoding is a configuration's canonical encoding, and the encoding of each of its top-level
// members, by position in configSchema.order (sub-slices of canon; nil for a member that
// omitempty leaves out). Shared: never modify one.
type encoding struct {
	canon   []byte
	members []json.RawMessage
}

// encode returns the encoding of cfg once normalised; equal configurations encode equally. cfg
// is not modified.
func encode(cfg events.FlagConfig) (encoding, error) {
	cfg = cfg.Clone()
	normalize(&cfg)
	data, err := json.Marshal(cfg)
	if err != nil {
		return encoding{}, fmt.Errorf("encode configuration: %w", err)
	}
	byName, err := splitObject(data)
	if err != nil {
		return encoding{}, fmt.Errorf("split configuration: %w", err)
	}
	members := make([]json.RawMessage, len(configSchema.order))
	for name, v := range byName {
		f, ok := configSchema.fields[name]
		if !ok {
			return encoding{}, fmt.Errorf("split configuration: unexpected member %q", name)
		}
		members[f.pos] = v
	}
	return encoding{canon: data, members: members}, nil
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
