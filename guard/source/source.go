package source

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
	"time"
	"unicode/utf8"
)

var (
	// ErrInvalidSource means a metric source's options broke a rule; no source was built.
	ErrInvalidSource = errors.New("invalid metric source")
	// ErrInvalidQuery means a query, selector, template input or query time given to a metric
	// source was not acceptable; nothing was sent.
	ErrInvalidQuery = errors.New("invalid query")
	// ErrQueryFailed means a metric source could not obtain a reading: the transport failed, the
	// server answered with an error, or the answer could not be decoded. Readings returned
	// with it have Status [ReadingError] or [ReadingTimeout].
	ErrQueryFailed = errors.New("query failed")
	// ErrMalformedResponse means a server's answer (a Prometheus API body or an exposition) was
	// not well formed. It is always wrapped together with [ErrQueryFailed].
	ErrMalformedResponse = errors.New("malformed response")
)

// ReadingStatus says whether a [Reading] may be trusted. Only [ReadingOK] may be counted; every
// other status means the guard is blind for that query.
type ReadingStatus string

// The statuses of a [Reading].
const (
	// ReadingOK: exactly one finite, non-negative sample was read, fresh enough.
	ReadingOK ReadingStatus = "ok"
	// ReadingEmpty: no series matched. An empty result is not a zero.
	ReadingEmpty ReadingStatus = "empty"
	// ReadingNaN: the value read was NaN or infinite.
	ReadingNaN ReadingStatus = "nan"
	// ReadingStale: the newest sample at or before the asked time is older than the source's
	// staleness bound, or there is none.
	ReadingStale ReadingStatus = "stale"
	// ReadingError: the query could not be run or its answer could not be used.
	ReadingError ReadingStatus = "error"
	// ReadingTimeout: the query did not finish within its deadline.
	ReadingTimeout ReadingStatus = "timeout"
	// ReadingAmbiguous: several series came back where one was expected.
	ReadingAmbiguous ReadingStatus = "ambiguous"
)

// Valid reports whether s is one of the defined statuses.
func (s ReadingStatus) Valid() bool {
	switch s {
	case ReadingOK, ReadingEmpty, ReadingNaN, ReadingStale, ReadingError, ReadingTimeout, ReadingAmbiguous:
		return true
	}
	return false
}

// A Reading is a counter's value at a time, for one series; Status says whether it may be
// trusted. Value and At mean something only when Status is [ReadingOK] (a [ReadingStale]
// reading keeps the old sample's value and time, for the record); otherwise Value is 0, so a
// reading always encodes as JSON. The other fields are always set so that a reading can be kept
// as evidence.
type Reading struct {
	// Value is the counter's value (a sum over series for the scrape source).
	Value float64
	// At is the time the value holds for: the sample's timestamp as the Prometheus API
	// returned it, or the time of the scrape it came from. Zero when no sample was read.
	At time.Time
	// Requested is the time the caller asked for (the at argument of Counter).
	Requested time.Time
	// Status says whether the reading may be trusted.
	Status ReadingStatus
	// Query is the query exactly as it was run.
	Query string
	// Endpoint is the server or exposition URL, with any password redacted.
	Endpoint string
	// Detail says, for people, why the status is what it is (warnings included).
	Detail string
}

// OK reports whether the reading may be counted.
func (r Reading) OK() bool {
	return r.Status == ReadingOK && validCounterValue(r.Value)
}

// DeltaStatus says whether the difference of two readings may be counted.
type DeltaStatus string

// The statuses [Delta] returns. When a reading was not [ReadingOK], Delta returns the
// reading's status converted to a DeltaStatus ("empty", "nan", "stale", "error", "timeout",
// "ambiguous"), the current reading's status first.
const (
	// DeltaOK: both readings are ok and the counter did not go down.
	DeltaOK DeltaStatus = "ok"
	// DeltaReset: the counter went down, so it was reset in between; the delta is the current
	// value (the increase since the reset). It undercounts what happened before the reset and,
	// for a sum of series where one series vanished, may overcount: a careful caller drops it.
	DeltaReset DeltaStatus = "reset"
	// DeltaOutOfOrder: the current reading is older than the previous one.
	DeltaOutOfOrder DeltaStatus = "out_of_order"
	// DeltaInvalid: a reading claimed ok but held a negative or non-finite value, or an
	// unknown status.
	DeltaInvalid DeltaStatus = "invalid"
)

// Usable reports whether the delta may be counted (ok, or a reset).
func (s DeltaStatus) Usable() bool { return s == DeltaOK || s == DeltaReset }

// Delta returns how much a counter grew from prev to cur. A counter that went down was reset:
// the delta is then cur's value and the status [DeltaReset]. When either reading is not ok,
// the delta is 0 and the status is the non-ok reading's (cur's before prev's). The delta
// returned is never negative nor NaN; it is 0 whenever the status is not usable.
func Delta(prev, cur Reading) (float64, DeltaStatus) {
	for _, r := range []Reading{cur, prev} {
		if !r.Status.Valid() {
			return 0, DeltaInvalid
		}
		if r.Status != ReadingOK {
			return 0, DeltaStatus(r.Status)
		}
	}
	if !validCounterValue(prev.Value) || !validCounterValue(cur.Value) {
		return 0, DeltaInvalid
	}
	if cur.At.Before(prev.At) {
		return 0, DeltaOutOfOrder
	}
	if cur.Value < prev.Value {
		return cur.Value, DeltaReset
	}
	return cur.Value - prev.Value, DeltaOK
}

func validCounterValue(v float64) bool {
	return v >= 0 && !math.IsInf(v, 1) // NaN fails v >= 0
}

// httpAuth holds the optional credentials a source sends.
type httpAuth struct {
	bearer, user, pass string
}

func (a httpAuth) validate() []error {
	var errs []error
	if a.bearer != "" && (a.user != "" || a.pass != "") {
		errs = append(errs, errors.New("bearer token and basic auth are exclusive"))
	}
	if a.pass != "" && a.user == "" {
		errs = append(errs, errors.New("password without a username"))
	}
	if strings.Contains(a.user, ":") {
		errs = append(errs, errors.New("username contains a colon"))
	}
	for name, v := range map[string]string{"bearer token": a.bearer, "username": a.user, "password": a.pass} {
		if strings.ContainsAny(v, "\r\n\x00") || !utf8.ValidString(v) {
			errs = append(errs, fmt.Errorf("%s contains control characters or invalid UTF-8", name))
		}
	}
	return errs
}

func (a httpAuth) apply(h http.Header) {
	switch {
	case a.bearer != "":
		h.Set("Authorization", "Bearer "+a.bearer)
	case a.user != "":
		h.Set("Authorization", "Basic "+base64.StdEncoding.EncodeToString([]byte(a.user+":"+a.pass)))
	}
}

// parseEndpoint checks that raw is an absolute http(s) URL and returns it with its redacted form.
func parseEndpoint(raw string, allowQuery bool) (*url.URL, string, error) {
	if raw == "" {
		return nil, "", errors.New("url is empty")
	}
	u, err := url.Parse(raw)
	if err != nil {
		return nil, "", fmt.Errorf("url: %w", err)
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return nil, "", fmt.Errorf("url %q: scheme must be http or https", u.Redacted())
	}
	if u.Host == "" {
		return nil, "", fmt.Errorf("url %q: no host", u.Redacted())
	}
	if u.Fragment != "" {
		return nil, "", fmt.Errorf("url %q: has a fragment", u.Redacted())
	}
	if !allowQuery && u.RawQuery != "" {
		return nil, "", fmt.Errorf("url %q: has a query string", u.Redacted())
	}
	return u, u.Redacted(), nil
}

// readBounded reads at most limit bytes of r and fails if there are more.
func readBounded(r io.Reader, limit int64) ([]byte, error) {
	b, err := io.ReadAll(io.LimitReader(r, limit+1))
	if err != nil {
		return nil, err
	}
	if int64(len(b)) > limit {
		return nil, fmt.Errorf("body larger than %d bytes", limit)
	}
	return b, nil
}

// failureStatus tells a timeout from other failures.
func failureStatus(err error) ReadingStatus {
	if errors.Is(err, context.DeadlineExceeded) {
		return ReadingTimeout
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return ReadingTimeout
	}
	return ReadingError
}

// queryFailure wraps err so that it matches ErrQueryFailed (and, for timeouts,
// context.DeadlineExceeded).
func queryFailure(status ReadingStatus, err error) error {
	if status == ReadingTimeout && !errors.Is(err, context.DeadlineExceeded) {
		err = fmt.Errorf("%w: %w", context.DeadlineExceeded, err)
	}
	if errors.Is(err, ErrQueryFailed) {
		return err
	}
	return fmt.Errorf("%w: %w", ErrQueryFailed, err)
}

// snippet returns the start of an error body, printable, for a Detail.
func snippet(b []byte) string {
	const max = 200
	s := strings.ToValidUTF8(string(b), "?")
	if len(s) > max {
		cut := max
		for cut > 0 && !utf8.RuneStart(s[cut]) {
			cut--
		}
		s = s[:cut] + "…"
	}
	return strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return ' '
		}
		return r
	}, s)
}

// AllowSources returns a check that accepts a metric source URL only when it starts with one of
// prefixes, compared after parsing: the scheme and host:port must be the same and the path must
// continue the prefix's at a segment boundary, so "http://127.0.0.1:8081/" does not admit
// "http://127.0.0.1:80810/" and ".../metrics" does not admit ".../metricsx". A path with "." or
// ".." segments is refused. With no prefixes it accepts only loopback hosts (localhost, 127.0.0.0/8,
// ::1): the guard reads what a rollout's plan names, so by default a writer cannot make the server
// fetch anything beyond the machine it runs on; a server whose metrics live elsewhere lists where.
// The error wraps [ErrInvalidSource].
func AllowSources(prefixes []string) func(rawURL string) error {
	return func(rawURL string) error {
		u, err := url.Parse(rawURL)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.Opaque != "" {
			return fmt.Errorf("%w: %q is not an http or https URL", ErrInvalidSource, truncate(rawURL, 256))
		}
		if dotSegments(u.Path) {
			return fmt.Errorf("%w: %s has a \".\" or \"..\" path segment", ErrInvalidSource, truncate(rawURL, 256))
		}
		if len(prefixes) == 0 {
			if !loopback(u.Hostname()) {
				return fmt.Errorf("%w: %s is not on this machine, and no --guard-sources are configured (without them the guard reads only loopback addresses)", ErrInvalidSource, truncate(rawURL, 256))
			}
			return nil
		}
		for _, p := range prefixes {
			pu, err := url.Parse(p)
			if err != nil {
				continue
			}
			if pu.Scheme == u.Scheme && pu.Host == u.Host && pathUnder(u.EscapedPath(), pu.EscapedPath()) {
				return nil
			}
		}
		return fmt.Errorf("%w: %s is not among the sources this server may read (--guard-sources)", ErrInvalidSource, truncate(rawURL, 256))
	}
}

// pathUnder says whether path is prefix or continues it after a "/".
func pathUnder(path, prefix string) bool {
	if !strings.HasPrefix(path, prefix) {
		return false
	}
	rest := path[len(prefix):]
	return rest == "" || prefix == "" || strings.HasSuffix(prefix, "/") || rest[0] == '/'
}

// dotSegments says whether path has a "." or ".." segment, which a server may resolve to a path
// outside the prefix the check compared.
func dotSegments(path string) bool {
	for seg := range strings.SplitSeq(path, "/") {
		if seg == "." || seg == ".." {
			return true
		}
	}
	return false
}

// loopback says whether host (without a port) names this machine's loopback interface.
func loopback(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip, err := netip.ParseAddr(host)
	return err == nil && ip.Unmap().IsLoopback()
}
