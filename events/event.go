package events

import (
	"encoding/json"
	"fmt"
	"strconv"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
)

// Event types. They are part of the stored data: never rename one; add a new version instead and
// upcast the old one in [Event.Payload].
const (
	TypeFlagCreated    = "io.interlock.flag.created.v1"
	TypeFlagUpdated    = "io.interlock.flag.updated.v1"
	TypeFlagEnabled    = "io.interlock.flag.enabled.v1"
	TypeFlagKilled     = "io.interlock.flag.killed.v1"
	TypeFlagArchived   = "io.interlock.flag.archived.v1"
	TypeFlagUnarchived = "io.interlock.flag.unarchived.v1"
	TypeFlagRestored   = "io.interlock.flag.restored.v1"

	TypeSegmentCreated    = "io.interlock.segment.created.v1"
	TypeSegmentUpdated    = "io.interlock.segment.updated.v1"
	TypeSegmentArchived   = "io.interlock.segment.archived.v1"
	TypeSegmentUnarchived = "io.interlock.segment.unarchived.v1"
)

// Entity kinds, the third token of a subject. Every event type belongs to one.
const (
	EntityFlag    = "flag"
	EntitySegment = "segment"
)

// FlagCreated is the first event of every flag.
type FlagCreated struct {
	Flag FlagConfig `json:"flag"`
}

// FlagUpdated replaces a flag's configuration. Patch is the JSON Merge Patch (RFC 7396) the
// person sent, kept for the audit trail; Flag is the whole configuration that resulted.
type FlagUpdated struct {
	Flag  FlagConfig      `json:"flag"`
	Patch json.RawMessage `json:"patch,omitempty"`
}

// FlagEnabled turns a flag on: it serves its targeting again.
type FlagEnabled struct{}

// FlagKilled turns a flag off: it serves its off variant. The event's reason says why.
type FlagKilled struct{}

// FlagArchived retires a flag: it is hidden from lists and refuses changes until unarchived.
type FlagArchived struct{}

// FlagUnarchived brings an archived flag back.
type FlagUnarchived struct{}

// FlagRestored brings back the configuration the flag had at version FromVersion. History is never
// rewritten: the restore is a new version.
type FlagRestored struct {
	FromVersion uint64     `json:"fromVersion"`
	Flag        FlagConfig `json:"flag"`
}

// SegmentCreated is the first event of every segment.
type SegmentCreated struct {
	Segment SegmentConfig `json:"segment"`
}

// SegmentUpdated replaces a segment's configuration; Patch is the merge patch that was sent.
type SegmentUpdated struct {
	Segment SegmentConfig   `json:"segment"`
	Patch   json.RawMessage `json:"patch,omitempty"`
}

// SegmentArchived retires a segment. Flags still naming it are refused until they stop.
type SegmentArchived struct{}

// SegmentUnarchived brings an archived segment back.
type SegmentUnarchived struct{}

// CloudEvents headers (binary content mode) and Interlock's extension attributes.
const (
	HeaderID              = "ce-id"
	HeaderType            = "ce-type"
	HeaderSource          = "ce-source"
	HeaderSubject         = "ce-subject"
	HeaderTime            = "ce-time"
	HeaderSpecVersion     = "ce-specversion"
	HeaderDataContentType = "ce-datacontenttype"
	HeaderEnvironment     = "ce-environment"
	HeaderActor           = "ce-actor"
	HeaderReason          = "ce-reason"
	HeaderCorrelationID   = "ce-correlationid"
	HeaderCausationID     = "ce-causationid"
	HeaderVersion         = "ce-entityversion"
)

// Source is the CloudEvents source of every event Interlock writes.
const Source = "/interlock"

// MaxReasonLen bounds the reason and actor attributes.
const MaxReasonLen = 1024

// Event is one immutable change to one entity (a flag or a segment) in one environment.
type Event struct {
	ID          string `json:"id"`
	Type        string `json:"type"`
	Source      string `json:"source"`
	Environment string `json:"environment"`
	// Entity is the kind of thing the event changes: [EntityFlag] or [EntitySegment].
	Entity        string    `json:"entity"`
	Key           string    `json:"key"`
	Time          time.Time `json:"time"`
	Actor         string    `json:"actor"`
	Reason        string    `json:"reason,omitempty"`
	CorrelationID string    `json:"correlationId,omitempty"`
	CausationID   string    `json:"causationId,omitempty"`
	// Version is the entity's version after this event: 1 for the event that created it.
	Version uint64          `json:"version"`
	Data    json.RawMessage `json:"data,omitempty"`
	// Sequence is the stream sequence, set when the event is read from or appended to the stream.
	Sequence uint64 `json:"sequence,omitempty"`
	// Stored is the time the stream accepted the event (the stream's own timestamp), set when
	// the event is read from the stream. Time is when the writer sent it: the two differ by the
	// append's round trip.
	Stored time.Time `json:"stored,omitzero"`
	// Hash is the stored message's hash ([Hash]), its link in its subject's chain: set when the
	// event is read from a [Store], or appended to one with a signer.
	Hash [32]byte `json:"-"`
}

// NewEvent returns an event with a fresh UUIDv7 id and the current time, its payload encoded.
// The entity follows from the type; an unknown type is an error wrapping [ErrUnknownType].
func NewEvent(typ, env, key string, payload any) (Event, error) {
	t, ok := types[typ]
	if !ok {
		return Event{}, fmt.Errorf("%w: %q", ErrUnknownType, truncate(typ))
	}
	id, err := uuid.NewV7()
	if err != nil {
		return Event{}, fmt.Errorf("event id: %w", err)
	}
	data, err := json.Marshal(payload)
	if err != nil {
		return Event{}, fmt.Errorf("encode %s: %w", typ, err)
	}
	return Event{
		ID:          id.String(),
		Type:        typ,
		Source:      Source,
		Environment: env,
		Entity:      t.entity,
		Key:         key,
		Time:        time.Now().UTC(),
		Data:        data,
	}, nil
}

// validateEnvironmentOf checks env as the environment of an event about entity: token events
// and integrity acknowledgements live in [GlobalEnvironment], every other entity in a valid
// environment.
func validateEnvironmentOf(entity, env string) error {
	if IsGlobal(entity) {
		if env != GlobalEnvironment {
			return invalid("environment", "%s events belong to %q, not %q", entity, GlobalEnvironment, truncate(env))
		}
		return nil
	}
	return ValidateEnvironment(env)
}

// Subject is the stream subject the event belongs on.
func (e *Event) Subject() string { return subject(e.Environment, e.Entity, e.Key) }

// Validate checks the envelope before it is written.
func (e *Event) Validate() error {
	if _, err := uuid.Parse(e.ID); err != nil {
		return invalid("id", "%q is not a UUID", truncate(e.ID))
	}
	t, ok := types[e.Type]
	if !ok {
		return fmt.Errorf("%w: %q", ErrUnknownType, truncate(e.Type))
	}
	if e.Entity != t.entity {
		return invalid("entity", "%s events are about a %s, not %q", e.Type, t.entity, truncate(e.Entity))
	}
	if err := validateEnvironmentOf(e.Entity, e.Environment); err != nil {
		return err
	}
	if err := validateKey("key", e.Key); err != nil {
		return err
	}
	if e.Actor == "" || len(e.Actor) > 256 {
		return invalid("actor", "every event names its actor (1-256 bytes)")
	}
	if len(e.Reason) > MaxReasonLen {
		return invalid("reason", "longer than %d bytes", MaxReasonLen)
	}
	if e.Version == 0 {
		return invalid("version", "entity versions start at 1")
	}
	if e.Time.IsZero() {
		return invalid("time", "is required")
	}
	return nil
}

// Msg encodes the event as a NATS message in CloudEvents binary mode.
func (e *Event) Msg() *nats.Msg {
	h := make(nats.Header, 14)
	h[HeaderSpecVersion] = []string{"1.0"}
	h[HeaderID] = []string{e.ID}
	h[HeaderType] = []string{e.Type}
	h[HeaderSource] = []string{e.Source}
	h[HeaderSubject] = []string{e.Key}
	h[HeaderTime] = []string{e.Time.UTC().Format(time.RFC3339Nano)}
	h[HeaderDataContentType] = []string{"application/json"}
	h[HeaderEnvironment] = []string{e.Environment}
	h[HeaderActor] = []string{e.Actor}
	h[HeaderVersion] = []string{strconv.FormatUint(e.Version, 10)}
	if e.Reason != "" {
		h[HeaderReason] = []string{e.Reason}
	}
	if e.CorrelationID != "" {
		h[HeaderCorrelationID] = []string{e.CorrelationID}
	}
	if e.CausationID != "" {
		h[HeaderCausationID] = []string{e.CausationID}
	}
	h[nats.MsgIdHdr] = []string{e.ID}
	return &nats.Msg{Subject: e.Subject(), Header: h, Data: e.Data}
}

// Decode reads an event from a stored message's subject, headers and data. It never panics; a
// message that is not a well-formed Interlock event gives an error wrapping [ErrMalformed].
// Unknown types decode (so that an older reader can skip them) but their payload does not.
func Decode(subject string, h nats.Header, data []byte) (Event, error) {
	env, kind, key, err := parseSubject(subject)
	if err != nil {
		return Event{}, err
	}
	if kind != EntityFlag && kind != EntitySegment && !IsGlobal(kind) {
		return Event{}, fmt.Errorf("%w: entity %q", ErrUnknownType, truncate(kind))
	}
	get := func(name string) string {
		if v := h[name]; len(v) > 0 {
			return v[0]
		}
		return ""
	}
	if v := get(HeaderSpecVersion); v != "1.0" {
		return Event{}, fmt.Errorf("%w: %s %q, want 1.0", ErrMalformed, HeaderSpecVersion, truncate(v))
	}
	e := Event{
		ID:            get(HeaderID),
		Type:          get(HeaderType),
		Source:        get(HeaderSource),
		Environment:   env,
		Entity:        kind,
		Key:           key,
		Actor:         get(HeaderActor),
		Reason:        get(HeaderReason),
		CorrelationID: get(HeaderCorrelationID),
		CausationID:   get(HeaderCausationID),
		Data:          data,
	}
	if e.ID == "" || e.Type == "" || e.Source == "" {
		return Event{}, fmt.Errorf("%w: %s, %s and %s are required", ErrMalformed, HeaderID, HeaderType, HeaderSource)
	}
	if t, ok := types[e.Type]; ok && t.entity != kind {
		return Event{}, fmt.Errorf("%w: a %s event on %s subject %q", ErrMalformed, e.Type, kind, truncate(subject))
	}
	if got := get(HeaderEnvironment); got != env {
		return Event{}, fmt.Errorf("%w: %s %q does not match subject %q", ErrMalformed, HeaderEnvironment, truncate(got), truncate(subject))
	}
	if got := get(HeaderSubject); got != key {
		return Event{}, fmt.Errorf("%w: %s %q does not match subject %q", ErrMalformed, HeaderSubject, truncate(got), truncate(subject))
	}
	if e.Time, err = time.Parse(time.RFC3339Nano, get(HeaderTime)); err != nil {
		return Event{}, fmt.Errorf("%w: %s: %v", ErrMalformed, HeaderTime, err)
	}
	if e.Version, err = strconv.ParseUint(get(HeaderVersion), 10, 64); err != nil || e.Version == 0 {
		return Event{}, fmt.Errorf("%w: %s %q is not a version", ErrMalformed, HeaderVersion, truncate(get(HeaderVersion)))
	}
	return e, nil
}

// types maps every known type to its entity and the decoder of its payload. Older versions of a
// type decode to the current payload struct here (upcasting), so folds only ever see current
// payloads.
var types = map[string]struct {
	entity string
	decode func([]byte) (any, error)
}{
	TypeFlagCreated:       {EntityFlag, decodeAs[FlagCreated]},
	TypeFlagUpdated:       {EntityFlag, decodeAs[FlagUpdated]},
	TypeFlagEnabled:       {EntityFlag, decodeAs[FlagEnabled]},
	TypeFlagKilled:        {EntityFlag, decodeAs[FlagKilled]},
	TypeFlagArchived:      {EntityFlag, decodeAs[FlagArchived]},
	TypeFlagUnarchived:    {EntityFlag, decodeAs[FlagUnarchived]},
	TypeFlagRestored:      {EntityFlag, decodeAs[FlagRestored]},
	TypeSegmentCreated:    {EntitySegment, decodeAs[SegmentCreated]},
	TypeSegmentUpdated:    {EntitySegment, decodeAs[SegmentUpdated]},
	TypeSegmentArchived:   {EntitySegment, decodeAs[SegmentArchived]},
	TypeSegmentUnarchived: {EntitySegment, decodeAs[SegmentUnarchived]},

	TypeRolloutCreated:     {EntityFlag, decodeAs[RolloutCreated]},
	TypeRolloutStarted:     {EntityFlag, decodeAs[RolloutStarted]},
	TypeRolloutPaused:      {EntityFlag, decodeAs[RolloutPaused]},
	TypeRolloutResumed:     {EntityFlag, decodeAs[RolloutResumed]},
	TypeRolloutAdvanced:    {EntityFlag, decodeAs[RolloutAdvanced]},
	TypeRolloutSteppedBack: {EntityFlag, decodeAs[RolloutSteppedBack]},
	TypeRolloutCompleted:   {EntityFlag, decodeAs[RolloutCompleted]},
	TypeRolloutAborted:     {EntityFlag, decodeAs[RolloutAborted]},
	TypeGuardDecided:       {EntityFlag, decodeAs[GuardDecided]},
	TypeGuardRearmed:       {EntityFlag, decodeAs[GuardRearmed]},
	TypeValveConfigured:    {EntityFlag, decodeAs[ValveConfigured]},
	TypeValveOpened:        {EntityFlag, decodeAs[ValveOpened]},
	TypeValveClosed:        {EntityFlag, decodeAs[ValveClosed]},

	TypeTokenIssued:  {EntityToken, decodeAs[TokenIssued]},
	TypeTokenRevoked: {EntityToken, decodeAs[TokenRevoked]},

	TypeIntegrityAcknowledged: {EntityIntegrity, decodeAs[IntegrityAcknowledged]},
}

func decodeAs[T any](data []byte) (any, error) {
	var v T
	if len(data) == 0 || string(data) == "{}" {
		return &v, nil
	}
	if err := json.Unmarshal(data, &v); err != nil {
		return nil, err
	}
	return &v, nil
}

// Known reports whether typ is an event type this version of Interlock can decode.
func Known(typ string) bool {
	_, ok := types[typ]
	return ok
}

// Types lists every event type this version of Interlock knows, sorted.
func Types() []string { return sortedKeys(types) }

// Payload decodes the event's data into a pointer to its payload struct (for example
// *FlagKilled). It returns an error wrapping [ErrUnknownType] for a type it does not know and
// [ErrMalformed] for data that does not decode.
func (e *Event) Payload() (any, error) {
	t, ok := types[e.Type]
	if !ok {
		return nil, fmt.Errorf("%w: %q", ErrUnknownType, truncate(e.Type))
	}
	p, err := t.decode(e.Data)
	if err != nil {
		return nil, fmt.Errorf("%w: %s data: %v", ErrMalformed, e.Type, err)
	}
	return p, nil
}
