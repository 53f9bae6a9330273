package events

import (
	"fmt"
	"strings"
)

// MaxKeyLen is the longest flag or segment key accepted.
const MaxKeyLen = 200

// MaxEnvironmentLen is the longest environment name accepted.
const MaxEnvironmentLen = 63

// ValidateEnvironment reports whether name is a valid environment name: lowercase letters, digits
// and '-', starting with a letter or digit, at most [MaxEnvironmentLen] characters. The error wraps
// [ErrInvalid] and names the rule.
func ValidateEnvironment(name string) error {
	const rule = "environment names are 1-63 characters of a-z, 0-9 and '-', starting with a letter or digit"
	if name == "" || len(name) > MaxEnvironmentLen {
		return invalid("environment", "%q: %s", name, rule)
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		switch {
		case c >= 'a' && c <= 'z', c >= '0' && c <= '9':
		case c == '-' && i > 0:
		default:
			return invalid("environment", "%q: %s", name, rule)
		}
	}
	return nil
}

// ValidateFlagKey reports whether key is a valid flag key: dot-separated segments of letters,
// digits, '-' and '_', at most [MaxKeyLen] characters in all. Both "checkout-v2" and
// "DeptA.TeamB.66623" are valid; "", ".a", "a..b", "a b" and "a/b" are not. The error wraps
// [ErrInvalid] and names the rule.
func ValidateFlagKey(key string) error {
	return validateKey("key", key)
}

func validateKey(field, key string) error {
	const rule = "keys are 1-200 characters: dot-separated segments of letters, digits, '-' and '_'"
	if key == "" || len(key) > MaxKeyLen {
		return invalid(field, "%q: %s", truncate(key), rule)
	}
	segStart := true
	for i := 0; i < len(key); i++ {
		c := key[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '-', c == '_':
			segStart = false
		case c == '.' && !segStart && i < len(key)-1:
			segStart = true
		default:
			return invalid(field, "%q: %s", truncate(key), rule)
		}
	}
	return nil
}

// Subject prefix of every Interlock event.
const subjectRoot = "interlock"

// FlagSubject is the JetStream subject holding the events of one flag.
func FlagSubject(env, key string) string { return subject(env, EntityFlag, key) }

// SegmentSubject is the JetStream subject holding the events of one segment.
func SegmentSubject(env, key string) string { return subject(env, EntitySegment, key) }

// EntitySubjects is the subject filter matching every event of one kind of entity in env.
func EntitySubjects(env, entity string) string {
	return subjectRoot + "." + env + "." + entity + ".>"
}

func subject(env, entity, key string) string {
	return subjectRoot + "." + env + "." + entity + "." + key
}

// ValidateSegmentKey applies the flag key rules to a segment key.
func ValidateSegmentKey(key string) error { return validateKey("segment", key) }

// EnvironmentSubjects is the subject filter matching every event of one environment.
func EnvironmentSubjects(env string) string {
	return subjectRoot + "." + env + ".>"
}

// AllSubjects is the subject filter matching every Interlock event.
const AllSubjects = subjectRoot + ".>"

// parseSubject splits a subject into environment, entity kind and key.
func parseSubject(subject string) (env, kind, key string, err error) {
	rest, ok := strings.CutPrefix(subject, subjectRoot+".")
	if !ok {
		return "", "", "", fmt.Errorf("%w: subject %q is not an interlock subject", ErrMalformed, truncate(subject))
	}
	env, rest, ok = strings.Cut(rest, ".")
	if !ok {
		return "", "", "", fmt.Errorf("%w: subject %q has no entity", ErrMalformed, truncate(subject))
	}
	kind, key, ok = strings.Cut(rest, ".")
	if !ok {
		return "", "", "", fmt.Errorf("%w: subject %q has no key", ErrMalformed, truncate(subject))
	}
	return env, kind, key, nil
}

func truncate(s string) string {
	if len(s) > 64 {
		return s[:64] + "…"
	}
	return s
}
