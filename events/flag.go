package events

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Kind says what a flag is for. It changes no behaviour; it drives defaults, lifecycle and
// stale-flag reports.
type Kind string

// The kinds of flag.
const (
	KindRelease     Kind = "release"
	KindKillSwitch  Kind = "kill-switch"
	KindOperational Kind = "operational"
	KindExperiment  Kind = "experiment"
	KindPermission  Kind = "permission"
	KindConfig      Kind = "config"
)

var kinds = []Kind{KindRelease, KindKillSwitch, KindOperational, KindExperiment, KindPermission, KindConfig}

// FlagConfig is everything about a flag that a person sets. Its JSON field names are a contract.
type FlagConfig struct {
	Description string   `json:"description,omitempty"`
	Owner       string   `json:"owner,omitempty"`
	Tags        []string `json:"tags,omitempty"`
	Kind        Kind     `json:"kind"`
	// Variants maps a variant name to its value. All values are booleans, or all strings, or all
	// numbers, or all JSON objects.
	Variants map[string]json.RawMessage `json:"variants"`
	// DefaultVariant is served while the flag is enabled and no rule matches, unless DefaultServe
	// says otherwise.
	DefaultVariant string `json:"defaultVariant"`
	// OffVariant is served while the flag is disabled.
	OffVariant string `json:"offVariant"`
	Enabled    bool   `json:"enabled"`
	// Rules are tried in order; the first whose conditions all match serves.
	Rules []Rule `json:"rules,omitempty"`
	// DefaultServe is served when no rule matches; when nil, DefaultVariant is.
	DefaultServe *Serve `json:"defaultServe,omitempty"`
}

// Rule serves a variant, or a weighted split of variants, to contexts matching all its conditions.
type Rule struct {
	Name       string      `json:"name,omitempty"`
	Conditions []Condition `json:"conditions"`
	Serve      Serve       `json:"serve"`
}

// Condition compares one context attribute with a list of values.
type Condition struct {
	Attribute string `json:"attribute"`
	Operator  string `json:"operator"`
	Values    []any  `json:"values,omitempty"`
}

// Serve is what a rule (or the default) serves: one variant, or a split of weights by variant
// bucketed on an attribute (the targeting key unless BucketBy names another).
type Serve struct {
	Variant  string         `json:"variant,omitempty"`
	Split    map[string]int `json:"split,omitempty"`
	BucketBy string         `json:"bucketBy,omitempty"`
}

// Operators a condition may use.
var Operators = []string{
	"eq", "neq", "in", "notIn", "contains", "startsWith", "endsWith", "matches",
	"lt", "lte", "gt", "gte", "semverEq", "semverLt", "semverGt", "before", "after",
	"inSegment", "notInSegment", "exists",
}

// Limits on a flag document, so that one flag cannot exhaust a replica's memory.
const (
	MaxVariants       = 100
	MaxRules          = 500
	MaxConditions     = 100
	MaxValues         = 10000
	MaxTextLen        = 4096
	MaxTags           = 100
	maxVariantNameLen = 64
)

// valueKind is the JSON kind of a variant value.
type valueKind int

const (
	valueInvalid valueKind = iota
	valueBool
	valueString
	valueNumber
	valueObject
)

func (k valueKind) String() string {
	return [...]string{"invalid", "boolean", "string", "number", "object"}[k]
}

func kindOf(raw json.RawMessage) valueKind {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 {
		return valueInvalid
	}
	switch raw[0] {
	case 't', 'f':
		return valueBool
	case '"':
		return valueString
	case '{':
		return valueObject
	case '-', '0', '1', '2', '3', '4', '5', '6', '7', '8', '9':
		return valueNumber
	}
	return valueInvalid
}

// Validate checks every rule of a flag document and returns all problems joined; each wraps
// [ErrInvalid] and names the field.
func (c *FlagConfig) Validate() error {
	var errs []error
	add := func(err error) { errs = append(errs, err) }

	if !slices.Contains(kinds, c.Kind) {
		add(invalid("kind", "%q is not one of release, kill-switch, operational, experiment, permission, config", c.Kind))
	}
	if len(c.Description) > MaxTextLen {
		add(invalid("description", "longer than %d bytes", MaxTextLen))
	}
	if len(c.Owner) > 256 {
		add(invalid("owner", "longer than 256 bytes"))
	}
	if len(c.Tags) > MaxTags {
		add(invalid("tags", "more than %d tags", MaxTags))
	}
	for i, t := range c.Tags {
		if t == "" || len(t) > 64 {
			add(invalid(fmt.Sprintf("tags[%d]", i), "tags are 1-64 bytes"))
		}
	}

	switch n := len(c.Variants); {
	case n == 0:
		add(invalid("variants", "a flag needs at least one variant"))
	case n > MaxVariants:
		add(invalid("variants", "more than %d variants", MaxVariants))
	}
	var first valueKind
	for _, name := range sortedKeys(c.Variants) {
		field := "variants." + name
		if err := validateVariantName(name); err != nil {
			add(invalid(field, "%v", err))
		}
		raw := c.Variants[name]
		k := kindOf(raw)
		if k == valueInvalid || !json.Valid(raw) {
			add(invalid(field, "values are booleans, strings, numbers or JSON objects"))
			continue
		}
		if first == valueInvalid {
			first = k
		} else if k != first {
			add(invalid(field, "is a %s but other variants are %ss: all variants have one type", k, first))
		}
	}
	c.checkVariant(&errs, "defaultVariant", c.DefaultVariant, true)
	c.checkVariant(&errs, "offVariant", c.OffVariant, true)

	if len(c.Rules) > MaxRules {
		add(invalid("rules", "more than %d rules", MaxRules))
	}
	for i := range c.Rules {
		c.validateRule(&errs, fmt.Sprintf("rules[%d]", i), &c.Rules[i])
	}
	if c.DefaultServe != nil {
		c.validateServe(&errs, "defaultServe", c.DefaultServe)
	}
	return errors.Join(errs...)
}

func (c *FlagConfig) checkVariant(errs *[]error, field, name string, required bool) {
	if name == "" {
		if required {
			*errs = append(*errs, invalid(field, "is required"))
		}
		return
	}
	if _, ok := c.Variants[name]; !ok {
		*errs = append(*errs, invalid(field, "%q is not one of the flag's variants", truncate(name)))
	}
}

func validateVariantName(name string) error {
	if name == "" || len(name) > maxVariantNameLen {
		return fmt.Errorf("variant names are 1-%d characters", maxVariantNameLen)
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.') {
			return fmt.Errorf("variant name %q: letters, digits, '-', '_' and '.' only", truncate(name))
		}
	}
	return nil
}

func (c *FlagConfig) validateRule(errs *[]error, field string, r *Rule) {
	if len(r.Name) > 256 {
		*errs = append(*errs, invalid(field+".name", "longer than 256 bytes"))
	}
	if len(r.Conditions) > MaxConditions {
		*errs = append(*errs, invalid(field+".conditions", "more than %d conditions", MaxConditions))
	}
	for j := range r.Conditions {
		if err := r.Conditions[j].Validate(); err != nil {
			*errs = append(*errs, prefixField(fmt.Sprintf("%s.conditions[%d]", field, j), err))
		}
	}
	c.validateServe(errs, field+".serve", &r.Serve)
}

func (c *FlagConfig) validateServe(errs *[]error, field string, s *Serve) {
	switch {
	case s.Variant != "" && s.Split != nil:
		*errs = append(*errs, invalid(field, "serve either a variant or a split, not both"))
	case s.Variant != "":
		c.checkVariant(errs, field+".variant", s.Variant, true)
		if s.BucketBy != "" {
			*errs = append(*errs, invalid(field+".bucketBy", "only a split is bucketed"))
		}
	case s.Split != nil:
		total := 0
		for _, name := range sortedKeys(s.Split) {
			c.checkVariant(errs, field+".split."+name, name, true)
			w := s.Split[name]
			if w < 0 || w > 1_000_000 {
				*errs = append(*errs, invalid(field+".split."+name, "weights are 0-1000000"))
			}
			total += w
		}
		if total <= 0 {
			*errs = append(*errs, invalid(field+".split", "weights must add up to more than 0"))
		}
		if len(s.BucketBy) > 256 {
			*errs = append(*errs, invalid(field+".bucketBy", "longer than 256 bytes"))
		}
	default:
		*errs = append(*errs, invalid(field, "serve a variant or a split"))
	}
}

// Validate checks one condition: a known operator, an attribute, and values of the type the
// operator compares (numbers for lt/lte/gt/gte, RFC 3339 times for before/after, versions for the
// semver operators, a compilable regular expression for matches).
func (c *Condition) Validate() error {
	if c.Attribute == "" || len(c.Attribute) > 256 {
		return invalid("attribute", "is required (1-256 bytes)")
	}
	if !slices.Contains(Operators, c.Operator) {
		return invalid("operator", "%q is not one of %s", truncate(c.Operator), strings.Join(Operators, ", "))
	}
	if c.Operator == "exists" {
		if len(c.Values) != 0 {
			return invalid("values", "exists takes no values")
		}
		return nil
	}
	if len(c.Values) == 0 {
		return invalid("values", "%s needs at least one value", c.Operator)
	}
	if len(c.Values) > MaxValues {
		return invalid("values", "more than %d values", MaxValues)
	}
	for i, v := range c.Values {
		field := fmt.Sprintf("values[%d]", i)
		switch c.Operator {
		case "lt", "lte", "gt", "gte":
			if _, ok := v.(float64); !ok {
				return invalid(field, "%s compares numbers", c.Operator)
			}
		case "before", "after":
			s, ok := v.(string)
			if _, err := time.Parse(time.RFC3339, s); !ok || err != nil {
				return invalid(field, "%s compares RFC 3339 times such as 2026-01-02T15:04:05Z", c.Operator)
			}
		case "semverEq", "semverLt", "semverGt":
			s, ok := v.(string)
			if !ok || !isSemver(s) {
				return invalid(field, "%s compares versions such as 1.2.3", c.Operator)
			}
		case "matches":
			s, ok := v.(string)
			if !ok {
				return invalid(field, "matches takes regular expressions as strings")
			}
			if _, err := regexp.Compile(s); err != nil {
				return invalid(field, "regular expression: %v", err)
			}
		case "inSegment", "notInSegment":
			s, ok := v.(string)
			if !ok || validateKey("segment", s) != nil {
				return invalid(field, "%s takes segment keys", c.Operator)
			}
		default:
			switch v.(type) {
			case string, float64, bool:
			default:
				return invalid(field, "values are strings, numbers or booleans")
			}
		}
	}
	return nil
}

// isSemver accepts MAJOR.MINOR.PATCH with an optional leading 'v', pre-release and build parts.
func isSemver(s string) bool {
	s = strings.TrimPrefix(s, "v")
	core, _, _ := strings.Cut(s, "+")
	core, _, _ = strings.Cut(core, "-")
	parts := strings.Split(core, ".")
	if len(parts) != 3 {
		return false
	}
	for _, p := range parts {
		if _, err := strconv.ParseUint(p, 10, 64); err != nil {
			return false
		}
	}
	return true
}

func prefixField(prefix string, err error) error {
	var ve *ValidationError
	if errors.As(err, &ve) {
		return &ValidationError{Field: prefix + "." + ve.Field, Message: ve.Message}
	}
	return fmt.Errorf("%s: %w", prefix, err)
}

// Normalize puts a valid document in canonical form so that equal documents encode to equal
// bytes: variant values compacted, empty slices dropped.
func (c *FlagConfig) Normalize() {
	for name, raw := range c.Variants {
		var buf bytes.Buffer
		if json.Compact(&buf, raw) == nil {
			c.Variants[name] = buf.Bytes()
		}
	}
	if len(c.Tags) == 0 {
		c.Tags = nil
	}
	if len(c.Rules) == 0 {
		c.Rules = nil
	}
}

// Clone returns a deep copy. Variant values are shared: they are never modified in place.
func (c FlagConfig) Clone() FlagConfig {
	out := c
	out.Tags = slices.Clone(c.Tags)
	if c.Variants != nil {
		out.Variants = make(map[string]json.RawMessage, len(c.Variants))
		for k, v := range c.Variants {
			out.Variants[k] = v
		}
	}
	if c.Rules != nil {
		out.Rules = make([]Rule, len(c.Rules))
		for i, r := range c.Rules {
			r.Conditions = slices.Clone(r.Conditions)
			for j := range r.Conditions {
				r.Conditions[j].Values = slices.Clone(r.Conditions[j].Values)
			}
			r.Serve = r.Serve.clone()
			out.Rules[i] = r
		}
	}
	if c.DefaultServe != nil {
		s := c.DefaultServe.clone()
		out.DefaultServe = &s
	}
	return out
}

func (s Serve) clone() Serve {
	if s.Split != nil {
		split := make(map[string]int, len(s.Split))
		for k, v := range s.Split {
			split[k] = v
		}
		s.Split = split
	}
	return s
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
