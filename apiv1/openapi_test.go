package apiv1_test

import (
	"encoding"
	"encoding/json"
	"fmt"
	"reflect"
	"slices"
	"sort"
	"strings"
	"testing"

	"go.yaml.in/yaml/v2"

	"github.com/interlock-dev/interlock/apiv1"
)

// The bodies of every operation of openapi.yaml, by "METHOD path": the request body, and the
// answer of each success status. An error status always answers apiv1.ErrorBody. Routes and the
// document are held equal by TestOpenAPIStatesEveryRoutesRole in internal/api; this test holds
// the document's schemas to these Go types.
var (
	// createFlag and createSegment are the bodies of a create: the key beside the configuration.
	createFlag = reflect.TypeFor[struct {
		Key string `json:"key"`
		apiv1.FlagConfig
	}]()
	createSegment = reflect.TypeFor[struct {
		Key string `json:"key"`
		apiv1.SegmentConfig
	}]()

	requests = map[string]reflect.Type{
		"POST /api/v1/environments/{env}/flags":                         createFlag,
		"PATCH /api/v1/environments/{env}/flags/{key}":                  reflect.TypeFor[apiv1.FlagConfig](),
		"POST /api/v1/environments/{env}/flags/{key}/kill":              reflect.TypeFor[apiv1.KillRequest](),
		"POST /api/v1/environments/{env}/flags/{key}/enable":            reflect.TypeFor[apiv1.ActionRequest](),
		"POST /api/v1/environments/{env}/flags/{key}/archive":           reflect.TypeFor[apiv1.ActionRequest](),
		"POST /api/v1/environments/{env}/flags/{key}/unarchive":         reflect.TypeFor[apiv1.ActionRequest](),
		"POST /api/v1/environments/{env}/flags/{key}/restore":           reflect.TypeFor[apiv1.RestoreRequest](),
		"POST /api/v1/environments/{env}/flags/{key}/rollout":           reflect.TypeFor[apiv1.RolloutPlan](),
		"POST /api/v1/environments/{env}/flags/{key}/rollout/{command}": reflect.TypeFor[apiv1.RolloutRequest](),
		"PUT /api/v1/environments/{env}/flags/{key}/valve":              reflect.TypeFor[apiv1.ValveConfig](),
		"POST /api/v1/environments/{env}/flags/{key}/valve/open":        reflect.TypeFor[apiv1.OpenValveRequest](),
		"POST /api/v1/environments/{env}/flags/{key}/valve/close":       reflect.TypeFor[apiv1.CloseValveRequest](),
		"POST /api/v1/environments/{env}/segments":                      createSegment,
		"PATCH /api/v1/environments/{env}/segments/{key}":               reflect.TypeFor[apiv1.SegmentConfig](),
		"POST /api/v1/environments/{env}/segments/{key}/archive":        reflect.TypeFor[apiv1.ActionRequest](),
		"POST /api/v1/environments/{env}/segments/{key}/unarchive":      reflect.TypeFor[apiv1.ActionRequest](),
		"POST /api/v1/tokens":                                           reflect.TypeFor[apiv1.CreateTokenRequest](),
		"POST /api/v1/integrity/acknowledgements":                       reflect.TypeFor[apiv1.AcknowledgeRequest](),
	}

	answers = map[string]reflect.Type{
		"GET /healthz":                                                  reflect.TypeFor[apiv1.Status](),
		"GET /readyz":                                                   reflect.TypeFor[apiv1.Readiness](),
		"GET /api/v1/environments":                                      reflect.TypeFor[apiv1.EnvironmentList](),
		"GET /api/v1/environments/{env}/flags":                          reflect.TypeFor[apiv1.FlagList](),
		"POST /api/v1/environments/{env}/flags":                         reflect.TypeFor[apiv1.Flag](),
		"GET /api/v1/environments/{env}/flags/{key}":                    reflect.TypeFor[apiv1.Flag](),
		"PATCH /api/v1/environments/{env}/flags/{key}":                  reflect.TypeFor[apiv1.Flag](),
		"GET /api/v1/environments/{env}/flags/{key}/history":            reflect.TypeFor[apiv1.History](),
		"POST /api/v1/environments/{env}/flags/{key}/kill":              reflect.TypeFor[apiv1.Flag](),
		"POST /api/v1/environments/{env}/flags/{key}/enable":            reflect.TypeFor[apiv1.Flag](),
		"POST /api/v1/environments/{env}/flags/{key}/archive":           reflect.TypeFor[apiv1.Flag](),
		"POST /api/v1/environments/{env}/flags/{key}/unarchive":         reflect.TypeFor[apiv1.Flag](),
		"POST /api/v1/environments/{env}/flags/{key}/restore":           reflect.TypeFor[apiv1.Flag](),
		"GET /api/v1/environments/{env}/flags/{key}/rollout":            reflect.TypeFor[apiv1.RolloutStatus](),
		"POST /api/v1/environments/{env}/flags/{key}/rollout":           reflect.TypeFor[apiv1.RolloutStatus](),
		"POST /api/v1/environments/{env}/flags/{key}/rollout/{command}": reflect.TypeFor[apiv1.RolloutStatus](),
		"GET /api/v1/environments/{env}/flags/{key}/valve":              reflect.TypeFor[apiv1.ValveStatus](),
		"PUT /api/v1/environments/{env}/flags/{key}/valve":              reflect.TypeFor[apiv1.ValveStatus](),
		"POST /api/v1/environments/{env}/flags/{key}/valve/open":        reflect.TypeFor[apiv1.ValveStatus](),
		"POST /api/v1/environments/{env}/flags/{key}/valve/close":       reflect.TypeFor[apiv1.ValveStatus](),
		"GET /api/v1/environments/{env}/segments":                       reflect.TypeFor[apiv1.SegmentList](),
		"POST /api/v1/environments/{env}/segments":                      reflect.TypeFor[apiv1.Segment](),
		"GET /api/v1/environments/{env}/segments/{key}":                 reflect.TypeFor[apiv1.Segment](),
		"PATCH /api/v1/environments/{env}/segments/{key}":               reflect.TypeFor[apiv1.Segment](),
		"GET /api/v1/environments/{env}/segments/{key}/history":         reflect.TypeFor[apiv1.History](),
		"POST /api/v1/environments/{env}/segments/{key}/archive":        reflect.TypeFor[apiv1.Segment](),
		"POST /api/v1/environments/{env}/segments/{key}/unarchive":      reflect.TypeFor[apiv1.Segment](),
		"GET /api/v1/audit":                                             reflect.TypeFor[apiv1.AuditPage](),
		"GET /api/v1/audit/verify":                                      reflect.TypeFor[apiv1.VerifyReport](),
		"POST /api/v1/integrity/acknowledgements":                       reflect.TypeFor[apiv1.Acknowledged](),
		"GET /api/v1/integrity":                                         reflect.TypeFor[apiv1.Integrity](),
		"GET /api/v1/signing-keys":                                      reflect.TypeFor[apiv1.SigningKeys](),
		"GET /api/v1/environments/{env}/subscribers":                    reflect.TypeFor[apiv1.SubscriberList](),
		"GET /api/v1/environments/{env}/flags/{key}/propagation":        reflect.TypeFor[apiv1.Propagation](),
		"GET /api/v1/tokens":                                            reflect.TypeFor[apiv1.TokenList](),
		"POST /api/v1/tokens":                                           reflect.TypeFor[apiv1.IssuedToken](),
	}
)

// TestOpenAPIMatchesTypes: every JSON body openapi.yaml documents has the properties of its Go
// type in apiv1, no more and no fewer, each with the JSON type the Go field encodes to, down
// through nested objects, arrays and maps.
func TestOpenAPIMatchesTypes(t *testing.T) {
	d := load(t)
	seen := map[string]bool{}
	for path, ops := range d.paths() {
		for method, op := range ops {
			method = strings.ToUpper(method)
			if !slices.Contains([]string{"GET", "POST", "PUT", "PATCH", "DELETE"}, method) {
				continue
			}
			name := method + " " + path
			opm := asMap(op)
			if rb, ok := opm["requestBody"]; ok {
				s, ok := d.jsonSchema(rb)
				want, known := requests[name]
				switch {
				case !ok:
					t.Errorf("%s: the request body is not JSON", name)
				case !known:
					t.Errorf("%s: a request body with no Go type in this test's table", name)
				default:
					seen["request "+name] = true
					d.compare(t, name+" request", s, want)
				}
			}
			for status, resp := range asMap(opm["responses"]) {
				s, ok := d.jsonSchema(resp)
				if !ok {
					continue // no body, or not JSON (the metrics, the document, the event feed)
				}
				want := reflect.TypeFor[apiv1.ErrorBody]()
				if strings.HasPrefix(status, "2") {
					var known bool
					if want, known = answers[name]; !known {
						t.Errorf("%s: a %s answer with no Go type in this test's table", name, status)
						continue
					}
					seen["answer "+name] = true
				}
				d.compare(t, name+" "+status, s, want)
			}
		}
	}
	// The event feed is text/event-stream; the data of each of its events is an Event.
	d.compare(t, "schema Event", d.resolve(d.schemas()["Event"]), reflect.TypeFor[apiv1.Event]())
	for name := range requests {
		if !seen["request "+name] {
			t.Errorf("%s: the document has no JSON request body", name)
		}
	}
	for name := range answers {
		if !seen["answer "+name] {
			t.Errorf("%s: the document has no JSON answer", name)
		}
	}
}

// TestOpenAPIErrorCodes: the document's error codes are apiv1's.
func TestOpenAPIErrorCodes(t *testing.T) {
	d := load(t)
	errSchema := asMap(asMap(asMap(d.schemas()["Error"])["properties"])["error"])
	code := asMap(asMap(errSchema["properties"])["code"])
	var documented []string
	for _, c := range code["enum"].([]any) {
		documented = append(documented, c.(string))
	}
	var codes []string
	for _, c := range apiv1.Codes() {
		codes = append(codes, string(c))
	}
	sort.Strings(documented)
	sort.Strings(codes)
	if !slices.Equal(documented, codes) {
		t.Errorf("openapi.yaml's codes %v, apiv1's %v", documented, codes)
	}
}

type doc map[string]any

func load(t *testing.T) doc {
	t.Helper()
	var raw any
	if err := yaml.Unmarshal(apiv1.OpenAPI, &raw); err != nil {
		t.Fatal(err)
	}
	return doc(asMap(normalize(raw)))
}

// normalize turns the YAML decoder's map[any]any into map[string]any, all the way down.
func normalize(v any) any {
	switch v := v.(type) {
	case map[any]any:
		m := make(map[string]any, len(v))
		for k, x := range v {
			m[fmt.Sprint(k)] = normalize(x)
		}
		return m
	case []any:
		for i := range v {
			v[i] = normalize(v[i])
		}
	}
	return v
}

func asMap(v any) map[string]any {
	m, _ := v.(map[string]any)
	return m
}

func (d doc) paths() map[string]map[string]any {
	out := map[string]map[string]any{}
	for p, ops := range asMap(d["paths"]) {
		out[p] = asMap(ops)
	}
	return out
}

func (d doc) schemas() map[string]any { return asMap(asMap(d["components"])["schemas"]) }

// resolve follows $ref to what it names.
func (d doc) resolve(v any) map[string]any {
	m := asMap(v)
	for {
		ref, ok := m["$ref"].(string)
		if !ok {
			return m
		}
		var at any = map[string]any(d)
		for _, part := range strings.Split(strings.TrimPrefix(ref, "#/"), "/") {
			at = asMap(at)[part]
		}
		m = asMap(at)
	}
}

// jsonSchema is the application/json schema of a request body or response.
func (d doc) jsonSchema(v any) (map[string]any, bool) {
	for media, c := range asMap(d.resolve(v)["content"]) {
		if media == "application/json" || media == "application/merge-patch+json" {
			return d.resolve(asMap(c)["schema"]), true
		}
	}
	return nil, false
}

// flatten merges the properties of s and of everything its allOf names.
func (d doc) flatten(s map[string]any) map[string]any {
	props := map[string]any{}
	for k, v := range asMap(s["properties"]) {
		props[k] = v
	}
	for _, part := range asSlice(s["allOf"]) {
		for k, v := range d.flatten(d.resolve(part)) {
			props[k] = v
		}
	}
	return props
}

func asSlice(v any) []any {
	s, _ := v.([]any)
	return s
}

// schemaType is the JSON type s states ("null" aside), or "" when it states none (oneOf, any).
func (d doc) schemaType(s map[string]any) string {
	switch ty := s["type"].(type) {
	case string:
		return ty
	case []any:
		var types []string
		for _, x := range ty {
			if x != "null" {
				types = append(types, x.(string))
			}
		}
		if len(types) == 1 {
			return types[0]
		}
		return ""
	}
	if c, ok := s["const"]; ok {
		return jsonType(c)
	}
	if _, ok := s["properties"]; ok {
		return "object"
	}
	if _, ok := s["allOf"]; ok {
		return "object"
	}
	return ""
}

func jsonType(v any) string {
	switch v.(type) {
	case string:
		return "string"
	case bool:
		return "boolean"
	case int, int64, uint64:
		return "integer"
	case float64:
		return "number"
	}
	return ""
}

var (
	jsonMarshaler = reflect.TypeFor[json.Marshaler]()
	textMarshaler = reflect.TypeFor[encoding.TextMarshaler]()
	rawMessage    = reflect.TypeFor[json.RawMessage]()
)

// goType is the JSON type values of t encode to: "" for any (json.RawMessage, interfaces).
func goType(t reflect.Type) string {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if t == rawMessage || t.Kind() == reflect.Interface {
		return ""
	}
	if t.Implements(jsonMarshaler) || reflect.PointerTo(t).Implements(jsonMarshaler) ||
		t.Implements(textMarshaler) || reflect.PointerTo(t).Implements(textMarshaler) {
		b, err := json.Marshal(reflect.New(t).Interface())
		if err != nil || len(b) == 0 {
			return ""
		}
		switch b[0] {
		case '"':
			return "string"
		case '{':
			return "object"
		case '[':
			return "array"
		case 't', 'f':
			return "boolean"
		case 'n':
			return ""
		}
		if strings.ContainsAny(string(b), ".eE") {
			return "number"
		}
		return "integer"
	}
	switch t.Kind() {
	case reflect.String:
		return "string"
	case reflect.Bool:
		return "boolean"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return "integer"
	case reflect.Float32, reflect.Float64:
		return "number"
	case reflect.Slice, reflect.Array:
		return "array"
	case reflect.Struct, reflect.Map:
		return "object"
	}
	return ""
}

// fields are the JSON fields of struct t, by name, with encoding/json's rules for embedded
// structs and tags.
func fields(t reflect.Type) map[string]reflect.Type {
	out := map[string]reflect.Type{}
	for i := range t.NumField() {
		f := t.Field(i)
		tag := f.Tag.Get("json")
		if tag == "-" {
			continue
		}
		name, _, _ := strings.Cut(tag, ",")
		if f.Anonymous && name == "" {
			ft := f.Type
			if ft.Kind() == reflect.Pointer {
				ft = ft.Elem()
			}
			if ft.Kind() == reflect.Struct {
				for k, v := range fields(ft) {
					if _, ok := out[k]; !ok {
						out[k] = v
					}
				}
				continue
			}
		}
		if !f.IsExported() {
			continue
		}
		if name == "" {
			name = f.Name
		}
		out[name] = f.Type
	}
	return out
}

// compare checks schema s against Go type t, at where.
func (d doc) compare(t *testing.T, where string, s map[string]any, gt reflect.Type) {
	t.Helper()
	for gt.Kind() == reflect.Pointer {
		gt = gt.Elem()
	}
	want, got := d.schemaType(s), goType(gt)
	if want == "" || got == "" {
		return // oneOf, or any value: nothing to hold the other side to
	}
	if want != got {
		t.Errorf("%s: openapi.yaml says %s, %s encodes to %s", where, want, gt, got)
		return
	}
	switch want {
	case "array":
		if items, ok := s["items"]; ok {
			d.compare(t, where+"[]", d.resolve(items), gt.Elem())
		}
	case "object":
		if gt.Kind() == reflect.Map {
			if ap, ok := s["additionalProperties"].(map[string]any); ok {
				d.compare(t, where+"{}", d.resolve(ap), gt.Elem())
			}
			return
		}
		if gt.Implements(jsonMarshaler) || reflect.PointerTo(gt).Implements(jsonMarshaler) {
			return
		}
		props, fs := d.flatten(s), fields(gt)
		for name, p := range props {
			ft, ok := fs[name]
			if !ok {
				t.Errorf("%s: openapi.yaml has property %q, which %s does not", where, name, gt)
				continue
			}
			d.compare(t, where+"."+name, d.resolve(p), ft)
		}
		for name := range fs {
			if _, ok := props[name]; !ok {
				t.Errorf("%s: %s has field %q, which openapi.yaml does not", where, gt, name)
			}
		}
	}
}
