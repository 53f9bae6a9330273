// Package apiv1 is the wire contract of Interlock's admin API under /api/v1: the request and
// response bodies of every route, and its errors with their codes. The server encodes its
// answers with these types and the Go client (package client) decodes them, so the two cannot
// drift apart; openapi.yaml (see [OpenAPI]) describes the same shapes, and a test holds it to them.
//
// The documents the server keeps — a flag, a segment, a history or audit entry, a rollout, a
// valve — are the read models of package projections, and their configurations the payloads of
// package events; this package names them (Flag is projections.Flag) rather than copying them, so
// that the wire form of a flag is the one the folds and in-process evaluators see. A change to
// one of those structs is a change of this contract, which the API's golden file
// (internal/api/testdata/wire.golden) catches.
//
// Every field keeps the JSON name and encoding the API has always used: adding a field is
// compatible, renaming or removing one is not.
package apiv1

import (
	"encoding/json"
	"time"

	"github.com/interlock-dev/interlock/events"
	"github.com/interlock-dev/interlock/projections"
)

// The documents of the API, as the projections keep them.
type (
	// Flag is a flag as it is (or was), with what its events say about it.
	Flag = projections.Flag
	// Segment is a segment as it is (or was).
	Segment = projections.Segment
	// Entry is one event of a flag's or segment's history, or of the audit trail, with the
	// changes it made.
	Entry = projections.Entry
	// Change is one field an event changed.
	Change = projections.Change
	// AuditPage is one page of the audit trail: GET /api/v1/audit.
	AuditPage = projections.AuditPage
	// Rollout is a flag's latest rollout.
	Rollout = projections.Rollout
	// GuardStatus is the guard's latest recorded decision about a rollout.
	GuardStatus = projections.GuardStatus
	// Valve is a flag's safety valve.
	Valve = projections.Valve
	// Problem is one message the projections refused because it failed verification.
	Problem = projections.Problem
	// Acknowledgement is an operator's acknowledgement of the integrity problems up to a stream
	// sequence.
	Acknowledgement = projections.Acknowledgement
	// Event is one event of the live feed, GET /api/v1/events: the data of each Server-Sent
	// Event.
	Event = events.Event
)

// The configurations a client sends, as the events carry them.
type (
	// FlagConfig is everything about a flag that a person sets: the body of a create, with Key.
	FlagConfig = events.FlagConfig
	// SegmentConfig is everything about a segment that a person sets.
	SegmentConfig = events.SegmentConfig
	// RolloutPlan is the body of POST .../flags/{key}/rollout.
	RolloutPlan = events.RolloutPlan
	// ValveConfig is the body of PUT .../flags/{key}/valve.
	ValveConfig = events.ValveConfigured
	// Serve is one variant, or a split of weights by variant.
	Serve = events.Serve
	// Duration is a Go duration written as text, such as "10m".
	Duration = events.Duration
)

// Status is the answer of GET /healthz.
type Status struct {
	Status string `json:"status"`
}

// Readiness is the answer of GET /readyz: status "ok", or "unavailable" (with 503) and the cause.
// Its fields are in the order the server has always written them.
type Readiness struct {
	Cause     string     `json:"cause,omitempty"`
	Integrity *Integrity `json:"integrity,omitempty"`
	Status    string     `json:"status"`
}

// EnvironmentList is the answer of GET /api/v1/environments.
type EnvironmentList struct {
	Environments []string `json:"environments"`
}

// FlagList is the answer of GET /api/v1/environments/{env}/flags.
type FlagList struct {
	Flags []Flag `json:"flags"`
}

// SegmentList is the answer of GET /api/v1/environments/{env}/segments.
type SegmentList struct {
	Segments []Segment `json:"segments"`
}

// History is the answer of GET .../flags/{key}/history and .../segments/{key}/history, oldest
// first.
type History struct {
	Entries []Entry `json:"entries"`
}

// ActionRequest is the body of enable, archive and unarchive; every field is optional. Version is
// the version the write expects (If-Match is the other way to say it).
type ActionRequest struct {
	Reason  string  `json:"reason,omitempty"`
	Version *uint64 `json:"version,omitempty"`
}

// KillRequest is the body of POST .../flags/{key}/kill: it takes no version.
type KillRequest struct {
	Reason string `json:"reason"`
}

// RestoreRequest is the body of POST .../flags/{key}/restore: the configuration of ToVersion
// comes back.
type RestoreRequest struct {
	ToVersion uint64  `json:"toVersion"`
	Reason    string  `json:"reason,omitempty"`
	Version   *uint64 `json:"version,omitempty"`
}

// RolloutRequest is the body of a command on a rollout (POST .../rollout/{command}); every
// field is optional. From is the stage an advance or step back moves from (the current one when
// absent); ID names the rollout meant (the flag's latest when absent).
type RolloutRequest struct {
	Reason string `json:"reason,omitempty"`
	From   *int   `json:"from,omitempty"`
	ID     string `json:"id,omitempty"`
}

// RolloutStatus is the answer of GET .../flags/{key}/rollout and of every rollout write.
type RolloutStatus struct {
	Flag        string   `json:"flag"`
	Environment string   `json:"environment"`
	Version     uint64   `json:"version"`
	Enabled     bool     `json:"enabled"`
	Rollout     *Rollout `json:"rollout"`
	// Stage is the stage being served (the first one before the start).
	Stage Stage `json:"stage"`
	// Split is what the flag serves when enabled and no rule matches: the stage's split while
	// the rollout runs.
	Split Serve `json:"split"`
	// Live is the guard's live view of the rollout as JSON; null when the server has no guard
	// or the guard does not follow this rollout.
	Live json.RawMessage `json:"live"`
}

// Stage is one stage of a rollout: its index in the plan, how many stages there are, and the
// stage's own settings.
type Stage struct {
	Index   int      `json:"index"`
	Count   int      `json:"count"`
	Percent float64  `json:"percent"`
	MinHold Duration `json:"minHold"`
}

// ValveStatus is the answer of GET .../flags/{key}/valve and of every valve write.
type ValveStatus struct {
	Flag        string `json:"flag"`
	Environment string `json:"environment"`
	Version     uint64 `json:"version"`
	Valve       *Valve `json:"valve"`
}

// OpenValveRequest is the body of POST .../valve/open. Expires (RFC 3339) and For (a Go
// duration such as "30m") set when the valve closes by itself; give one at most.
type OpenValveRequest struct {
	Reason  string `json:"reason"`
	Expires string `json:"expires,omitempty"`
	For     string `json:"for,omitempty"`
}

// CloseValveRequest is the body of POST .../valve/close.
type CloseValveRequest struct {
	Reason string `json:"reason"`
}

// Integrity is the answer of GET /api/v1/integrity, and part of /readyz: the messages this
// replica's projections refused because they failed verification.
type Integrity struct {
	// Status is "ok"; "acknowledged" when the projections refused messages and an operator
	// acknowledged every one; "problems" when some refused message is not acknowledged (and
	// /readyz answers 503).
	Status   string    `json:"status"`
	Count    uint64    `json:"count"`
	Problems []Problem `json:"problems"`
	// Unacknowledged counts the problems listed that no acknowledgement covers; Latest is the
	// sequence of the latest problem (0 for none).
	Unacknowledged int    `json:"unacknowledged"`
	Latest         uint64 `json:"latest,omitempty"`
	// Acknowledged is the acknowledgement that reaches furthest; absent when there is none.
	Acknowledged *Acknowledgement `json:"acknowledged,omitempty"`
	// Cutover is the first stream sequence that must be signed; absent when the server does
	// not sign.
	Cutover *uint64 `json:"cutover,omitempty"`
	// KeyID is the id of the key this replica signs with.
	KeyID string `json:"signingKey,omitempty"`
}

// AcknowledgeRequest is the body of POST /api/v1/integrity/acknowledgements: acknowledge the
// integrity problems up to stream sequence Through (the latest this replica recorded when 0),
// for Reason.
type AcknowledgeRequest struct {
	Through uint64 `json:"through,omitempty"`
	Reason  string `json:"reason"`
}

// Acknowledged is the answer of POST /api/v1/integrity/acknowledgements: the acknowledgement,
// and the integrity status once this replica applied it.
type Acknowledged struct {
	Acknowledgement Acknowledgement `json:"acknowledgement"`
	Integrity       *Integrity      `json:"integrity"`
}

// SigningKeys is the answer of GET /api/v1/signing-keys. Its fields are in the order the server
// has always written them.
type SigningKeys struct {
	Cutover uint64       `json:"cutover"`
	Keys    []SigningKey `json:"keys"`
}

// SigningKey is one public key events verify with.
type SigningKey struct {
	ID string `json:"id"`
	// Key is the raw 32-byte Ed25519 public key in standard base64; PEM the same as PKIX PEM.
	Key     string `json:"key"`
	PEM     string `json:"pem"`
	Current bool   `json:"current"`
}

// VerifyReport is the answer of GET /api/v1/audit/verify.
type VerifyReport struct {
	// Verified is how many events verified; Refused how many messages did not.
	Verified int `json:"verified"`
	Refused  int `json:"refused"`
	// Problems are the first refused messages, in stream order; the first is the first broken
	// link.
	Problems []VerifyProblem `json:"problems"`
	Cutover  uint64          `json:"cutover"`
}

// VerifyProblem is one message that failed verification.
type VerifyProblem struct {
	Sequence uint64 `json:"sequence"`
	Subject  string `json:"subject"`
	Reason   string `json:"reason"`
	Detail   string `json:"detail,omitempty"`
}

// SubscriberList is the answer of GET /api/v1/environments/{env}/subscribers.
type SubscriberList struct {
	Environment string       `json:"environment"`
	Subscribers []Subscriber `json:"subscribers"`
}

// Subscriber is a live in-process subscriber of an environment.
type Subscriber struct {
	ID          string `json:"id"`
	Name        string `json:"name"`
	Environment string `json:"environment"`
	// Sequence is the last stream sequence it has applied.
	Sequence uint64 `json:"sequence"`
	// LastSeen is when the server received its last heartbeat.
	LastSeen time.Time `json:"lastSeen"`
	// IntervalMillis is how often it sends heartbeats.
	IntervalMillis int64 `json:"intervalMs"`
	// Ready and Stale are what it says of itself.
	Ready bool `json:"ready"`
	Stale bool `json:"stale"`
}

// Propagation is the answer of GET .../flags/{key}/propagation: how many live subscribers have
// applied the flag's latest event (or the event at the sequence asked for).
type Propagation struct {
	Environment string `json:"environment"`
	Flag        string `json:"flag"`
	// Version is the flag's version when the sequence is its latest event's; 0 (left out) when
	// the request named a sequence.
	Version  uint64    `json:"version,omitempty"`
	Sequence uint64    `json:"sequence"`
	Applied  int       `json:"applied"`
	Total    int       `json:"total"`
	Pending  []Pending `json:"pending"`
}

// Pending is a live subscriber that has not applied a sequence yet.
type Pending struct {
	ID       string    `json:"id"`
	Name     string    `json:"name"`
	Sequence uint64    `json:"sequence"`
	LastSeen time.Time `json:"lastSeen"`
}

// Roles of tokens.
const (
	RoleAdmin  = "admin"
	RoleWriter = "writer"
	RoleOncall = "oncall"
	RoleReader = "reader"
)

// TokenInfo describes a token, never its secret.
type TokenInfo struct {
	Name string `json:"name"`
	Role string `json:"role"`
	// Environment is the one environment a scoped token is for; empty for every environment.
	Environment string    `json:"environment"`
	CreatedAt   time.Time `json:"createdAt"`
	// ExpiresAt is when the token stops working; zero for a token that never expires.
	ExpiresAt time.Time `json:"expiresAt,omitzero"`
}

// TokenList is the answer of GET /api/v1/tokens.
type TokenList struct {
	Tokens []TokenInfo `json:"tokens"`
}

// CreateTokenRequest is the body of POST /api/v1/tokens. ExpiresIn is a lifetime such as "30d",
// "12h" or "90m"; ExpiresAt a time. Give at most one of them; neither for a token that does not
// expire.
type CreateTokenRequest struct {
	Name        string    `json:"name"`
	Role        string    `json:"role"`
	Environment string    `json:"environment,omitempty"`
	ExpiresIn   string    `json:"expiresIn,omitempty"`
	ExpiresAt   time.Time `json:"expiresAt,omitzero"`
}

// IssuedToken is the answer of POST /api/v1/tokens: the only time the token is shown.
type IssuedToken struct {
	TokenInfo
	Token string `json:"token"`
}
