package cli

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net/url"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/interlock-dev/interlock/events"
)

// ref names one flag or segment: ENV/KEY.
type ref struct {
	env, key string
}

func (r ref) String() string { return r.env + "/" + r.key }

// parseRef parses ENV/FLAG, checking both parts with the server's own rules. The error says
// what is wrong; it wraps events.ErrInvalid when a part breaks a naming rule.
func parseRef(s string) (ref, error) {
	return flagEntity.parseRef(s)
}

// variant is one --variant name=JSON.
type variant struct {
	name  string
	value json.RawMessage
}

// parseVariant parses name=JSON, such as on=true, ttl=30, color="blue" or cfg={"a":1}. The value
// is any JSON value (null deletes the variant in a merge patch); it is returned compacted.
func parseVariant(s string) (variant, error) {
	name, value, ok := strings.Cut(s, "=")
	if !ok {
		return variant{}, fmt.Errorf("%q is not name=JSON: write a variant like on=true, ttl=30 or color='\"blue\"'", truncate(s))
	}
	if err := checkVariantName(name); err != nil {
		return variant{}, err
	}
	var buf bytes.Buffer
	if err := json.Compact(&buf, []byte(value)); err != nil || buf.Len() == 0 {
		hint := ""
		if value != "" && !strings.ContainsAny(value[:1], `"{[-0123456789tfn`) {
			hint = fmt.Sprintf(" (a string needs JSON quotes: %s='\"%s\"')", name, truncate(value))
		}
		return variant{}, fmt.Errorf("variant %s: value %q is not JSON%s", name, truncate(value), hint)
	}
	return variant{name: name, value: buf.Bytes()}, nil
}

// checkVariantName applies the server's rule for variant names, so that a typo is caught before
// anything is sent.
func checkVariantName(name string) error {
	const rule = "variant names are 1-64 characters of letters, digits, '-', '_' and '.'"
	if name == "" || len(name) > 64 {
		return fmt.Errorf("variant name %q: %s", truncate(name), rule)
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.') {
			return fmt.Errorf("variant name %q: %s", truncate(name), rule)
		}
	}
	return nil
}

// parseTime parses an RFC 3339 time (2026-01-02T15:04:05Z) or a duration ago relative to now:
// 90s, 5m, 1h30m, 2d, 1d12h.
func parseTime(s string, now time.Time) (time.Time, error) {
	if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
		return t, nil
	}
	d, err := parseAgo(s)
	if err != nil {
		return time.Time{}, fmt.Errorf("%q: %w", truncate(s), err)
	}
	return now.Add(-d), nil
}

// errTimeSyntax is the explanation given for a time that is neither form.
var errTimeSyntax = errors.New("give an RFC 3339 time like 2026-01-02T15:04:05Z or a duration ago like 5m, 1h30m or 2d")

// maxAgo bounds relative times so that now minus the duration stays a sensible time.
const maxAgo = 100 * 365 * 24 * time.Hour

// parseAgo parses a non-negative duration with an optional leading number of days.
func parseAgo(s string) (time.Duration, error) {
	if s == "" || strings.HasPrefix(s, "-") || strings.HasPrefix(s, "+") {
		return 0, errTimeSyntax
	}
	var days time.Duration
	if i := strings.IndexByte(s, 'd'); i >= 0 {
		n, err := strconv.ParseUint(s[:i], 10, 16)
		if err != nil {
			return 0, errTimeSyntax
		}
		days = time.Duration(n) * 24 * time.Hour
		s = s[i+1:]
		if s == "" {
			s = "0s"
		}
	}
	if s[0] < '0' || s[0] > '9' {
		if s[0] != '.' {
			return 0, errTimeSyntax
		}
	}
	d, err := time.ParseDuration(s)
	if err != nil || d < 0 {
		return 0, errTimeSyntax
	}
	if days > maxAgo || d > maxAgo-days {
		return 0, fmt.Errorf("more than 100 years ago")
	}
	return days + d, nil
}

// formatTime is how times are sent to the server.
func formatTime(t time.Time) string {
	return t.UTC().Format(time.RFC3339Nano)
}

// parseVersion parses a flag version: a positive integer.
func parseVersion(s string) (uint64, error) {
	v, err := strconv.ParseUint(s, 10, 64)
	if err != nil || v == 0 || v > math.MaxInt64 {
		return 0, fmt.Errorf("version %q: versions are whole numbers from 1", truncate(s))
	}
	return v, nil
}

// parseServer parses the server's base URL. A bare host:port means http.
func parseServer(s string) (*url.URL, error) {
	raw := s
	if !strings.Contains(s, "://") {
		raw = "http://" + s
	}
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https") {
		return nil, fmt.Errorf("--server %q: give the server's address like http://127.0.0.1:8080", truncate(s))
	}
	if u.RawQuery != "" || u.Fragment != "" || u.User != nil {
		return nil, fmt.Errorf("--server %q: give only scheme, host, port and an optional path prefix", truncate(u.Redacted()))
	}
	u.Path = strings.TrimSuffix(u.Path, "/")
	u.RawPath = ""
	return u, nil
}

// eventTypes maps the short names the CLI accepts for --type to event types.
func eventTypes() map[string]string {
	return map[string]string{
		"created":    events.TypeFlagCreated,
		"updated":    events.TypeFlagUpdated,
		"enabled":    events.TypeFlagEnabled,
		"killed":     events.TypeFlagKilled,
		"archived":   events.TypeFlagArchived,
		"unarchived": events.TypeFlagUnarchived,
		"restored":   events.TypeFlagRestored,

		"rollout.created":     events.TypeRolloutCreated,
		"rollout.started":     events.TypeRolloutStarted,
		"rollout.paused":      events.TypeRolloutPaused,
		"rollout.resumed":     events.TypeRolloutResumed,
		"rollout.advanced":    events.TypeRolloutAdvanced,
		"rollout.steppedback": events.TypeRolloutSteppedBack,
		"rollout.completed":   events.TypeRolloutCompleted,
		"rollout.aborted":     events.TypeRolloutAborted,
		"guard.decided":       events.TypeGuardDecided,
		"guard.rearmed":       events.TypeGuardRearmed,
		"valve.configured":    events.TypeValveConfigured,
		"valve.opened":        events.TypeValveOpened,
		"valve.closed":        events.TypeValveClosed,
	}
}

// parseEventType accepts a short name (killed) or a full event type (io.interlock.flag.killed.v1).
// Full types are passed on as given: the server knows which it accepts.
func parseEventType(s string) (string, error) {
	if t, ok := eventTypes()[s]; ok {
		return t, nil
	}
	if strings.Count(s, ".") >= 2 && len(s) <= 256 && utf8.ValidString(s) && s == clean(s) {
		return s, nil
	}
	return "", fmt.Errorf("--type %q: use created, updated, enabled, killed, archived, unarchived, restored, rollout.advanced, guard.decided, valve.opened (and the other rollout., guard. and valve. names), or a full event type such as %s", truncate(s), events.TypeFlagKilled)
}

// shortType is the short name of an event type for tables.
func shortType(t string) string {
	for short, full := range eventTypes() {
		if full == t {
			return short
		}
	}
	return t
}

// requireReason checks the --reason a command cannot go without: present and one line. why ends
// the usage error's "say why" ("" or " the flag is killed").
func requireReason(s *session, reason, why string) error {
	if strings.TrimSpace(reason) == "" {
		return usagef(s.cmd, "--reason is required: say why%s", why)
	}
	if err := checkReason("reason", reason); err != nil {
		return usagef(s.cmd, "%v", err)
	}
	return nil
}

// checkReason refuses reasons that cannot travel in a header or would garble a table.
func checkReason(flagName, s string) error {
	if !utf8.ValidString(s) {
		return fmt.Errorf("--%s: not valid UTF-8", flagName)
	}
	for _, r := range s {
		if unicode.IsControl(r) {
			return fmt.Errorf("--%s: control characters such as newlines are not allowed", flagName)
		}
	}
	return nil
}

// clean makes text that came from elsewhere safe to print on one line: tabs and line breaks
// become spaces; other control characters (which could move the cursor or recolour a terminal)
// and invalid UTF-8 become U+FFFD.
func clean(s string) string {
	ok := utf8.ValidString(s)
	for _, r := range s {
		if unicode.IsControl(r) {
			ok = false
			break
		}
	}
	if ok {
		return s
	}
	return strings.Map(func(r rune) rune {
		switch {
		case r == '\t', r == '\n', r == '\r':
			return ' '
		case r == utf8.RuneError, unicode.IsControl(r):
			return '\uFFFD'
		}
		return r
	}, strings.ToValidUTF8(s, "\uFFFD"))
}

// truncate shortens user input quoted back in an error.
func truncate(s string) string {
	if len(s) <= 64 {
		return s
	}
	cut := 64
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + "…"
}

// stringList is a flag that may be repeated; each use adds one value.
type stringList []string

func (l *stringList) String() string { return strings.Join(*l, ",") }

func (l *stringList) Type() string { return "string" }

func (l *stringList) Set(v string) error {
	*l = append(*l, v)
	return nil
}

// versionFlag is a flag holding a flag version: a positive integer.
type versionFlag struct {
	v   uint64
	set bool
}

func (f *versionFlag) String() string {
	if !f.set {
		return ""
	}
	return fmt.Sprint(f.v)
}

func (f *versionFlag) Type() string { return "uint" }

func (f *versionFlag) Set(s string) error {
	v, err := parseVersion(s)
	if err != nil {
		return err
	}
	f.v, f.set = v, true
	return nil
}
