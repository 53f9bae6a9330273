package client

import (
	"context"
	"encoding/json"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/interlock-dev/interlock/apiv1"
)

// Paths of the API. Keys are escaped here; the server validates them.

// FlagPath is the path of flag env/key, or of one of its actions when action is not empty (such
// as "kill" or "rollout/start").
func FlagPath(env, key, action string) string {
	return entityPath("flags", env, key, action)
}

// SegmentPath is the path of segment env/key, or of one of its actions when action is not empty.
func SegmentPath(env, key, action string) string {
	return entityPath("segments", env, key, action)
}

func entityPath(kind, env, key, action string) string {
	p := "/api/v1/environments/" + url.PathEscape(env) + "/" + kind
	if key != "" {
		p += "/" + url.PathEscape(key)
	}
	if action != "" {
		p += "/" + action
	}
	return p
}

// Point is a point in the past to read a flag or segment at: a time, a version of it, or a
// stream sequence; give one at most. The zero Point is now.
type Point struct {
	Time     time.Time
	Version  uint64
	Sequence uint64
}

func (p Point) query() url.Values {
	q := url.Values{}
	if !p.Time.IsZero() {
		q.Set("at", p.Time.Format(time.RFC3339Nano))
	}
	if p.Version != 0 {
		q.Set("version", strconv.FormatUint(p.Version, 10))
	}
	if p.Sequence != 0 {
		q.Set("sequence", strconv.FormatUint(p.Sequence, 10))
	}
	return q
}

// Health answers GET /healthz.
func (c *Client) Health(ctx context.Context) (apiv1.Status, error) {
	var s apiv1.Status
	_, err := c.get(ctx, "/healthz", nil, &s)
	return s, err
}

// Ready answers GET /readyz: the readiness, and an *apiv1.Error with status 503 and the cause as
// its message while the server is not ready.
func (c *Client) Ready(ctx context.Context) (apiv1.Readiness, error) {
	var r apiv1.Readiness
	resp, err := c.send(ctx, Request{Method: http.MethodGet, Path: "/readyz"})
	if err != nil {
		return r, err
	}
	if resp.Status == http.StatusServiceUnavailable && json.Unmarshal(resp.Body, &r) == nil && r.Cause != "" {
		return r, &apiv1.Error{Status: resp.Status, Code: apiv1.CodeUnavailable, Message: r.Cause}
	}
	if _, err := ok(resp, nil); err != nil {
		return r, err
	}
	return r, decode(resp, &r)
}

// Metrics answers GET /metrics: the server's own metrics in the Prometheus text format.
func (c *Client) Metrics(ctx context.Context) ([]byte, error) {
	resp, err := c.Do(ctx, Request{Method: http.MethodGet, Path: "/metrics", Header: http.Header{"Accept": {"text/plain"}}})
	if err != nil {
		return nil, err
	}
	return resp.Body, nil
}

// OpenAPI answers GET /api/v1/openapi.yaml: the OpenAPI document the server runs.
func (c *Client) OpenAPI(ctx context.Context) ([]byte, error) {
	resp, err := c.Do(ctx, Request{Method: http.MethodGet, Path: "/api/v1/openapi.yaml", Header: http.Header{"Accept": {apiv1.MediaYAML}}})
	if err != nil {
		return nil, err
	}
	return resp.Body, nil
}

// Environments lists the environments that have flags or segments (those the token's scope
// covers).
func (c *Client) Environments(ctx context.Context) ([]string, error) {
	var l apiv1.EnvironmentList
	_, err := c.get(ctx, "/api/v1/environments", nil, &l)
	return l.Environments, err
}

// ListOptions select the flags of an environment: archived ones too, and as of a time or stream
// sequence (at most one).
type ListOptions struct {
	Archived bool
	At       time.Time
	Sequence uint64
}

// Flags lists the flags of env.
func (c *Client) Flags(ctx context.Context, env string, o ListOptions) ([]apiv1.Flag, error) {
	q := Point{Time: o.At, Sequence: o.Sequence}.query()
	if o.Archived {
		q.Set("archived", "true")
	}
	var l apiv1.FlagList
	_, err := c.get(ctx, FlagPath(env, "", ""), q, &l)
	return l.Flags, err
}

// Flag reads flag env/key as it is now.
func (c *Client) Flag(ctx context.Context, env, key string) (apiv1.Flag, error) {
	return c.FlagAt(ctx, env, key, Point{})
}

// FlagAt reads flag env/key as it was at p.
func (c *Client) FlagAt(ctx context.Context, env, key string, p Point) (apiv1.Flag, error) {
	var f apiv1.Flag
	_, err := c.get(ctx, FlagPath(env, key, ""), p.query(), &f)
	return f, err
}

// CreateFlag creates flag env/key from cfg.
func (c *Client) CreateFlag(ctx context.Context, env, key string, cfg apiv1.FlagConfig, reason string) (apiv1.Flag, error) {
	body, err := withKey(key, cfg)
	if err != nil {
		return apiv1.Flag{}, err
	}
	var f apiv1.Flag
	_, err = c.write(ctx, http.MethodPost, FlagPath(env, "", ""), 0, reason, body, &f)
	return f, err
}

// withKey is the body of a create: the configuration document with the key.
func withKey(key string, cfg any) (map[string]json.RawMessage, error) {
	b, err := json.Marshal(cfg)
	if err != nil {
		return nil, err
	}
	var doc map[string]json.RawMessage
	if err := json.Unmarshal(b, &doc); err != nil {
		return nil, err
	}
	k, _ := json.Marshal(key)
	doc["key"] = k
	return doc, nil
}

// UpdateFlag applies patch, a JSON Merge Patch of the flag's configuration (a map, a struct or a
// json.RawMessage), to version ifVersion of flag env/key.
func (c *Client) UpdateFlag(ctx context.Context, env, key string, ifVersion uint64, patch any, reason string) (apiv1.Flag, error) {
	var f apiv1.Flag
	_, err := c.patch(ctx, FlagPath(env, key, ""), ifVersion, patch, reason, &f)
	return f, err
}

// patch sends a JSON Merge Patch under If-Match.
func (c *Client) patch(ctx context.Context, path string, ifVersion uint64, patch any, reason string, v any) (*Response, error) {
	b, err := json.Marshal(patch)
	if err != nil {
		return nil, err
	}
	h := http.Header{"If-Match": {ETag(ifVersion)}}
	if reason != "" {
		h.Set(HeaderReason, reason)
	}
	resp, err := c.Do(ctx, Request{Method: http.MethodPatch, Path: path, Header: h, ContentType: "application/merge-patch+json", Body: b})
	if err != nil {
		return nil, err
	}
	return resp, decode(resp, v)
}

// FlagHistory lists the events of flag env/key, oldest first.
func (c *Client) FlagHistory(ctx context.Context, env, key string) ([]apiv1.Entry, error) {
	var h apiv1.History
	_, err := c.get(ctx, FlagPath(env, key, "history"), nil, &h)
	return h.Entries, err
}

// KillFlag turns flag env/key off, whatever its version; reason is required.
func (c *Client) KillFlag(ctx context.Context, env, key, reason string) (apiv1.Flag, error) {
	var f apiv1.Flag
	_, err := c.write(ctx, http.MethodPost, FlagPath(env, key, "kill"), 0, "", apiv1.KillRequest{Reason: reason}, &f)
	return f, err
}

// EnableFlag turns flag env/key on; ifVersion, when not 0, is the version it must be at.
func (c *Client) EnableFlag(ctx context.Context, env, key string, ifVersion uint64, reason string) (apiv1.Flag, error) {
	return c.flagAction(ctx, env, key, "enable", ifVersion, reason)
}

// ArchiveFlag archives flag env/key.
func (c *Client) ArchiveFlag(ctx context.Context, env, key string, ifVersion uint64, reason string) (apiv1.Flag, error) {
	return c.flagAction(ctx, env, key, "archive", ifVersion, reason)
}

// UnarchiveFlag brings archived flag env/key back.
func (c *Client) UnarchiveFlag(ctx context.Context, env, key string, ifVersion uint64, reason string) (apiv1.Flag, error) {
	return c.flagAction(ctx, env, key, "unarchive", ifVersion, reason)
}

func (c *Client) flagAction(ctx context.Context, env, key, action string, ifVersion uint64, reason string) (apiv1.Flag, error) {
	var f apiv1.Flag
	_, err := c.write(ctx, http.MethodPost, FlagPath(env, key, action), ifVersion, "", apiv1.ActionRequest{Reason: reason}, &f)
	return f, err
}

// RestoreFlag brings back the configuration flag env/key had at version toVersion.
func (c *Client) RestoreFlag(ctx context.Context, env, key string, toVersion, ifVersion uint64, reason string) (apiv1.Flag, error) {
	var f apiv1.Flag
	_, err := c.write(ctx, http.MethodPost, FlagPath(env, key, "restore"), ifVersion, "",
		apiv1.RestoreRequest{ToVersion: toVersion, Reason: reason}, &f)
	return f, err
}

// Segments lists the segments of env, archived ones too when archived is true.
func (c *Client) Segments(ctx context.Context, env string, archived bool) ([]apiv1.Segment, error) {
	q := url.Values{}
	if archived {
		q.Set("archived", "true")
	}
	var l apiv1.SegmentList
	_, err := c.get(ctx, SegmentPath(env, "", ""), q, &l)
	return l.Segments, err
}

// Segment reads segment env/key as it is now.
func (c *Client) Segment(ctx context.Context, env, key string) (apiv1.Segment, error) {
	return c.SegmentAt(ctx, env, key, Point{})
}

// SegmentAt reads segment env/key as it was at p.
func (c *Client) SegmentAt(ctx context.Context, env, key string, p Point) (apiv1.Segment, error) {
	var s apiv1.Segment
	_, err := c.get(ctx, SegmentPath(env, key, ""), p.query(), &s)
	return s, err
}

// CreateSegment creates segment env/key from cfg.
func (c *Client) CreateSegment(ctx context.Context, env, key string, cfg apiv1.SegmentConfig, reason string) (apiv1.Segment, error) {
	body, err := withKey(key, cfg)
	if err != nil {
		return apiv1.Segment{}, err
	}
	var s apiv1.Segment
	_, err = c.write(ctx, http.MethodPost, SegmentPath(env, "", ""), 0, reason, body, &s)
	return s, err
}

// UpdateSegment applies patch, a JSON Merge Patch of the segment's configuration, to version
// ifVersion of segment env/key.
func (c *Client) UpdateSegment(ctx context.Context, env, key string, ifVersion uint64, patch any, reason string) (apiv1.Segment, error) {
	var s apiv1.Segment
	_, err := c.patch(ctx, SegmentPath(env, key, ""), ifVersion, patch, reason, &s)
	return s, err
}

// SegmentHistory lists the events of segment env/key, oldest first.
func (c *Client) SegmentHistory(ctx context.Context, env, key string) ([]apiv1.Entry, error) {
	var h apiv1.History
	_, err := c.get(ctx, SegmentPath(env, key, "history"), nil, &h)
	return h.Entries, err
}

// ArchiveSegment archives segment env/key.
func (c *Client) ArchiveSegment(ctx context.Context, env, key string, ifVersion uint64, reason string) (apiv1.Segment, error) {
	return c.segmentAction(ctx, env, key, "archive", ifVersion, reason)
}

// UnarchiveSegment brings archived segment env/key back.
func (c *Client) UnarchiveSegment(ctx context.Context, env, key string, ifVersion uint64, reason string) (apiv1.Segment, error) {
	return c.segmentAction(ctx, env, key, "unarchive", ifVersion, reason)
}

func (c *Client) segmentAction(ctx context.Context, env, key, action string, ifVersion uint64, reason string) (apiv1.Segment, error) {
	var s apiv1.Segment
	_, err := c.write(ctx, http.MethodPost, SegmentPath(env, key, action), ifVersion, "", apiv1.ActionRequest{Reason: reason}, &s)
	return s, err
}

// Rollout reads the rollout of flag env/key, with the guard's live view.
func (c *Client) Rollout(ctx context.Context, env, key string) (apiv1.RolloutStatus, error) {
	var st apiv1.RolloutStatus
	_, err := c.get(ctx, FlagPath(env, key, "rollout"), nil, &st)
	return st, err
}

// CreateRollout records plan as the rollout of flag env/key; nothing changes until it starts.
// ifVersion, when not 0, is the version the flag must be at.
func (c *Client) CreateRollout(ctx context.Context, env, key string, ifVersion uint64, plan apiv1.RolloutPlan, reason string) (apiv1.RolloutStatus, error) {
	var st apiv1.RolloutStatus
	_, err := c.write(ctx, http.MethodPost, FlagPath(env, key, "rollout"), ifVersion, reason, plan, &st)
	return st, err
}

// RolloutVerb is a command on a rollout: the last segment of POST .../rollout/{command}.
type RolloutVerb string

// The commands on a rollout. Abort is the on-call's; the others are a writer's.
const (
	RolloutStart    RolloutVerb = "start"
	RolloutPause    RolloutVerb = "pause"
	RolloutResume   RolloutVerb = "resume"
	RolloutAdvance  RolloutVerb = "advance"
	RolloutStepBack RolloutVerb = "stepback"
	RolloutAbort    RolloutVerb = "abort"
	RolloutRearm    RolloutVerb = "rearm"
)

// RolloutVerbs lists every command on a rollout.
func RolloutVerbs() []RolloutVerb {
	return []RolloutVerb{RolloutStart, RolloutPause, RolloutResume, RolloutAdvance, RolloutStepBack, RolloutAbort, RolloutRearm}
}

// RolloutCommand sends verb to the rollout of flag env/key at version ifVersion (required).
func (c *Client) RolloutCommand(ctx context.Context, env, key string, verb RolloutVerb, ifVersion uint64, req apiv1.RolloutRequest) (apiv1.RolloutStatus, error) {
	var st apiv1.RolloutStatus
	h := http.Header{"If-Match": {ETag(ifVersion)}}
	b, err := json.Marshal(req)
	if err != nil {
		return st, err
	}
	resp, err := c.Do(ctx, Request{Method: http.MethodPost, Path: FlagPath(env, key, "rollout/"+string(verb)), Header: h, ContentType: "application/json", Body: b})
	if err != nil {
		return st, err
	}
	return st, decode(resp, &st)
}

// Valve reads the safety valve of flag env/key.
func (c *Client) Valve(ctx context.Context, env, key string) (apiv1.ValveStatus, error) {
	var st apiv1.ValveStatus
	_, err := c.get(ctx, FlagPath(env, key, "valve"), nil, &st)
	return st, err
}

// ConfigureValve makes flag env/key, at version ifVersion (required), a safety valve as cfg says.
func (c *Client) ConfigureValve(ctx context.Context, env, key string, ifVersion uint64, cfg apiv1.ValveConfig, reason string) (apiv1.ValveStatus, error) {
	var st apiv1.ValveStatus
	_, err := c.write(ctx, http.MethodPut, FlagPath(env, key, "valve"), ifVersion, reason, cfg, &st)
	return st, err
}

// OpenValve opens the safety valve of flag env/key, whatever its version.
func (c *Client) OpenValve(ctx context.Context, env, key string, req apiv1.OpenValveRequest) (apiv1.ValveStatus, error) {
	var st apiv1.ValveStatus
	_, err := c.write(ctx, http.MethodPost, FlagPath(env, key, "valve/open"), 0, "", req, &st)
	return st, err
}

// CloseValve closes the safety valve of flag env/key, whatever its version.
func (c *Client) CloseValve(ctx context.Context, env, key, reason string) (apiv1.ValveStatus, error) {
	var st apiv1.ValveStatus
	_, err := c.write(ctx, http.MethodPost, FlagPath(env, key, "valve/close"), 0, "", apiv1.CloseValveRequest{Reason: reason}, &st)
	return st, err
}

// AuditQuery selects events of the audit trail; every field is optional.
type AuditQuery struct {
	Environment, Flag, Actor string
	// Types are event types, such as io.interlock.flag.killed.v1.
	Types        []string
	Since, Until time.Time
	// After is the stream sequence to start after: the Next of the previous page.
	After uint64
	Limit int
}

// Audit reads one page of the audit trail, oldest first.
func (c *Client) Audit(ctx context.Context, aq AuditQuery) (apiv1.AuditPage, error) {
	q := url.Values{}
	set := func(k, v string) {
		if v != "" {
			q.Set(k, v)
		}
	}
	set("environment", aq.Environment)
	set("flag", aq.Flag)
	set("actor", aq.Actor)
	for _, t := range aq.Types {
		q.Add("type", t)
	}
	if !aq.Since.IsZero() {
		set("since", aq.Since.Format(time.RFC3339Nano))
	}
	if !aq.Until.IsZero() {
		set("until", aq.Until.Format(time.RFC3339Nano))
	}
	if aq.After != 0 {
		set("after", strconv.FormatUint(aq.After, 10))
	}
	if aq.Limit != 0 {
		set("limit", strconv.Itoa(aq.Limit))
	}
	var page apiv1.AuditPage
	_, err := c.get(ctx, "/api/v1/audit", q, &page)
	return page, err
}

// VerifyAudit walks the hash chains of the stream (of env when not empty, of flag env/key when
// key is not empty too) and verifies every signature.
func (c *Client) VerifyAudit(ctx context.Context, env, key string) (apiv1.VerifyReport, error) {
	q := url.Values{}
	if env != "" {
		q.Set("environment", env)
	}
	if key != "" {
		q.Set("flag", key)
	}
	var rep apiv1.VerifyReport
	_, err := c.get(ctx, "/api/v1/audit/verify", q, &rep)
	return rep, err
}

// Integrity reads the messages the server's projections refused because they failed
// verification.
func (c *Client) Integrity(ctx context.Context) (apiv1.Integrity, error) {
	var st apiv1.Integrity
	_, err := c.get(ctx, "/api/v1/integrity", nil, &st)
	return st, err
}

// AcknowledgeIntegrity acknowledges the integrity problems up to stream sequence through (the
// latest this replica recorded when 0), for reason: an admin of every environment's. Errors
// match apiv1.ErrConflict when through is 0 and no problem waits.
func (c *Client) AcknowledgeIntegrity(ctx context.Context, through uint64, reason string) (apiv1.Acknowledged, error) {
	var ack apiv1.Acknowledged
	_, err := c.write(ctx, http.MethodPost, "/api/v1/integrity/acknowledgements", 0, "",
		apiv1.AcknowledgeRequest{Through: through, Reason: reason}, &ack)
	return ack, err
}

// SigningKeys lists the public keys events verify with.
func (c *Client) SigningKeys(ctx context.Context) (apiv1.SigningKeys, error) {
	var k apiv1.SigningKeys
	_, err := c.get(ctx, "/api/v1/signing-keys", nil, &k)
	return k, err
}

// Subscribers lists the live in-process subscribers of env.
func (c *Client) Subscribers(ctx context.Context, env string) ([]apiv1.Subscriber, error) {
	var l apiv1.SubscriberList
	_, err := c.get(ctx, "/api/v1/environments/"+url.PathEscape(env)+"/subscribers", nil, &l)
	return l.Subscribers, err
}

// Propagation says how many live in-process subscribers have applied the latest event of flag
// env/key, or the event at stream sequence seq when it is not 0.
func (c *Client) Propagation(ctx context.Context, env, key string, seq uint64) (apiv1.Propagation, error) {
	q := url.Values{}
	if seq != 0 {
		q.Set("sequence", strconv.FormatUint(seq, 10))
	}
	var p apiv1.Propagation
	_, err := c.get(ctx, FlagPath(env, key, "propagation"), q, &p)
	return p, err
}

// Tokens lists the tokens (those of the caller's environment, for a scoped admin).
func (c *Client) Tokens(ctx context.Context) ([]apiv1.TokenInfo, error) {
	var l apiv1.TokenList
	_, err := c.get(ctx, "/api/v1/tokens", nil, &l)
	return l.Tokens, err
}

// CreateToken issues a token; the answer is the only time its secret is shown.
func (c *Client) CreateToken(ctx context.Context, req apiv1.CreateTokenRequest) (apiv1.IssuedToken, error) {
	var t apiv1.IssuedToken
	_, err := c.write(ctx, http.MethodPost, "/api/v1/tokens", 0, "", req, &t)
	return t, err
}

// RevokeToken revokes every token named name.
func (c *Client) RevokeToken(ctx context.Context, name string) error {
	_, err := c.write(ctx, http.MethodDelete, "/api/v1/tokens/"+url.PathEscape(name), 0, "", nil, nil)
	return err
}
