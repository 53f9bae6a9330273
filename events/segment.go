package events

import (
	"errors"
	"fmt"
	"slices"
)

// MaxSegmentKeys bounds the explicit targeting keys of a segment (included and excluded each).
const MaxSegmentKeys = 100_000

// SegmentConfig is a named, reusable set of contexts in one environment, such as "beta-testers":
// explicit targeting keys and/or conditions. Its JSON field names are a contract.
//
// A context is in the segment when its targeting key is Included; otherwise when it is not
// Excluded and the segment has conditions and all of them match.
type SegmentConfig struct {
	Description string      `json:"description,omitempty"`
	Included    []string    `json:"included,omitempty"`
	Excluded    []string    `json:"excluded,omitempty"`
	Conditions  []Condition `json:"conditions,omitempty"`
}

// Validate checks the segment and returns all problems joined; each wraps [ErrInvalid].
func (c *SegmentConfig) Validate() error {
	var errs []error
	if len(c.Description) > MaxTextLen {
		errs = append(errs, invalid("description", "longer than %d bytes", MaxTextLen))
	}
	for _, list := range []struct {
		field string
		keys  []string
	}{{"included", c.Included}, {"excluded", c.Excluded}} {
		if len(list.keys) > MaxSegmentKeys {
			errs = append(errs, invalid(list.field, "more than %d targeting keys", MaxSegmentKeys))
			continue
		}
		for i, k := range list.keys {
			if k == "" || len(k) > 256 {
				errs = append(errs, invalid(fmt.Sprintf("%s[%d]", list.field, i), "targeting keys are 1-256 bytes"))
			}
		}
	}
	if len(c.Conditions) > MaxConditions {
		errs = append(errs, invalid("conditions", "more than %d conditions", MaxConditions))
	}
	for i := range c.Conditions {
		field := fmt.Sprintf("conditions[%d]", i)
		if op := c.Conditions[i].Operator; op == "inSegment" || op == "notInSegment" {
			errs = append(errs, invalid(field+".operator", "a segment cannot refer to other segments"))
			continue
		}
		if err := c.Conditions[i].Validate(); err != nil {
			errs = append(errs, prefixField(field, err))
		}
	}
	return errors.Join(errs...)
}

// Normalize sorts and de-duplicates the key lists so equal segments encode to equal bytes.
func (c *SegmentConfig) Normalize() {
	for _, list := range []*[]string{&c.Included, &c.Excluded} {
		slices.Sort(*list)
		*list = slices.Compact(*list)
		if len(*list) == 0 {
			*list = nil
		}
	}
	if len(c.Conditions) == 0 {
		c.Conditions = nil
	}
}

// Clone returns a deep copy.
func (c SegmentConfig) Clone() SegmentConfig {
	out := c
	out.Included = slices.Clone(c.Included)
	out.Excluded = slices.Clone(c.Excluded)
	out.Conditions = slices.Clone(c.Conditions)
	for i := range out.Conditions {
		out.Conditions[i].Values = slices.Clone(out.Conditions[i].Values)
	}
	return out
}
