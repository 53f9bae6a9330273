package projections

import (
	"bytes"
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/interlock-dev/interlock/events"
)

// Change is one field of a flag document that an event changed. Before is absent when the field
// had no value (the flag did not exist yet, or an optional field was empty), After when it has none
// afterwards. Both are compact JSON.
type Change struct {
	Path   string          `json:"path"`
	Before json.RawMessage `json:"before,omitempty"`
	After  json.RawMessage `json:"after,omitempty"`
}

// Diff returns the fields of the flag document that differ between before and after, sorted by
// path, rule indexes in numeric order. The result is never nil, so it encodes as [] when equal.
//
// Paths are the JSON names of the document a person sets plus "archived": "archived",
// "defaultServe", "defaultVariant", "description", "enabled", "kind", "offVariant", "owner",
// "tags"; then one path per variant, "variants.<name>", and one per rule position, "rules[i]" (a
// rule added at the end shows only After, one removed only Before). Identity and bookkeeping —
// key, environment, version, createdAt, updatedAt, updatedBy, sequence — are not changes.
//
// A flag that does not exist ([Flag.Exists] is false) has no fields, so the diff from it lists
// every field of the created flag with only After set.
func Diff(before, after Flag) []Change {
	d := differ{before: before.Exists(), after: after.Exists(), changes: []Change{}}
	a, b := &before, &after
	d.field("archived", boolJSON(a.Archived), boolJSON(b.Archived))
	d.field("defaultServe", optJSON(a.DefaultServe != nil, a.DefaultServe), optJSON(b.DefaultServe != nil, b.DefaultServe))
	d.field("defaultVariant", stringJSON(a.DefaultVariant), stringJSON(b.DefaultVariant))
	d.field("description", optString(a.Description), optString(b.Description))
	d.field("enabled", boolJSON(a.Enabled), boolJSON(b.Enabled))
	d.field("kind", stringJSON(string(a.Kind)), stringJSON(string(b.Kind)))
	d.field("offVariant", stringJSON(a.OffVariant), stringJSON(b.OffVariant))
	d.field("owner", optString(a.Owner), optString(b.Owner))
	for i := range max(len(a.Rules), len(b.Rules)) {
		var x, y json.RawMessage
		if i < len(a.Rules) {
			x = toJSON(&a.Rules[i])
		}
		if i < len(b.Rules) {
			y = toJSON(&b.Rules[i])
		}
		d.field("rules["+strconv.Itoa(i)+"]", x, y)
	}
	d.field("tags", optJSON(len(a.Tags) > 0, a.Tags), optJSON(len(b.Tags) > 0, b.Tags))
	names := make([]string, 0, len(a.Variants)+len(b.Variants))
	for name := range a.Variants {
		names = append(names, name)
	}
	for name := range b.Variants {
		if _, ok := a.Variants[name]; !ok {
			names = append(names, name)
		}
	}
	slices.Sort(names)
	for _, name := range names {
		x, inA := a.Variants[name]
		y, inB := b.Variants[name]
		d.field("variants."+name, rawJSON(inA, x), rawJSON(inB, y))
	}
	return d.changes
}

// differ collects changes; a side whose flag does not exist contributes no values.
type differ struct {
	before, after bool
	changes       []Change
}

func (d *differ) field(path string, x, y json.RawMessage) {
	if !d.before {
		x = nil
	}
	if !d.after {
		y = nil
	}
	if bytes.Equal(x, y) {
		return
	}
	d.changes = append(d.changes, Change{Path: path, Before: x, After: y})
}

var (
	jsonTrue  = json.RawMessage("true")
	jsonFalse = json.RawMessage("false")
)

func boolJSON(v bool) json.RawMessage {
	if v {
		return jsonTrue
	}
	return jsonFalse
}

func stringJSON(s string) json.RawMessage { return toJSON(s) }

func optString(s string) json.RawMessage {
	if s == "" {
		return nil
	}
	return toJSON(s)
}

func optJSON(present bool, v any) json.RawMessage {
	if !present {
		return nil
	}
	return toJSON(v)
}

// rawJSON compacts a variant value so that layout is not a change. A value that is not JSON
// (only possible for a document built in code) is carried as a JSON string of its bytes.
func rawJSON(present bool, raw json.RawMessage) json.RawMessage {
	if !present {
		return nil
	}
	var buf bytes.Buffer
	if err := json.Compact(&buf, raw); err != nil {
		return toJSON(string(raw))
	}
	return buf.Bytes()
}

// toJSON encodes v. Documents decoded from events always encode; a value that cannot (a NaN put
// in a condition by code) is carried as a JSON string describing it, so a diff never fails.
func toJSON(v any) json.RawMessage {
	b, err := json.Marshal(v)
	if err != nil {
		b, _ = json.Marshal(fmt.Sprintf("%+v", v))
	}
	return b
}

// Entry is one event of a flag's (or a segment's) history with the fields it changed.
type Entry struct {
	Sequence    uint64 `json:"sequence"`
	Environment string `json:"environment"`
	// Entity is what Key names: events.EntityFlag, events.EntitySegment, events.EntityToken or
	// events.EntityIntegrity (the last two in events.GlobalEnvironment).
	Entity  string `json:"entity"`
	Key     string `json:"key"`
	Version uint64 `json:"version"`
	ID      string `json:"id"`
	Type    string `json:"type"`
	// Time is when the writer decided the event (its ce-time), Stored when the stream accepted
	// it (the stream's own timestamp; zero when the entry was not read from a stream). The
	// writer sends each attempt with the time it sends it, so the two differ by one round trip.
	Time          time.Time `json:"time"`
	Stored        time.Time `json:"stored,omitzero"`
	Actor         string    `json:"actor"`
	Reason        string    `json:"reason,omitempty"`
	CorrelationID string    `json:"correlationId,omitempty"`
	CausationID   string    `json:"causationId,omitempty"`
	Changes       []Change  `json:"changes"`
	// Data is the event's payload for the events of rollouts, of the guard, of valves, of
	// tokens and of integrity acknowledgements: the plan, the stages, the evidence of the
	// guard's decisions, a token's role and scope, the sequence acknowledged.
	Data json.RawMessage `json:"data,omitempty"`
	// Unreadable, set on entries of type [TypeUnreadable], says why the message at Sequence was
	// skipped: it does not decode, fails verification, or the fold refuses it. It changed nothing.
	Unreadable string `json:"unreadable,omitempty"`
}

// TypeUnreadable is the type of a history entry for a message that was skipped: "unreadable
// event at sequence N", with the reason in [Entry.Unreadable].
const TypeUnreadable = "unreadable"

func newEntry(ev *events.Event, changes []Change) Entry {
	var data json.RawMessage
	for _, prefix := range []string{"io.interlock.rollout.", "io.interlock.guard.", "io.interlock.valve.", "io.interlock.token.", "io.interlock.integrity."} {
		if strings.HasPrefix(ev.Type, prefix) {
			data = ev.Data
		}
	}
	return Entry{
		Data:          data,
		Sequence:      ev.Sequence,
		Environment:   ev.Environment,
		Entity:        ev.Entity,
		Key:           ev.Key,
		Version:       ev.Version,
		ID:            ev.ID,
		Type:          ev.Type,
		Time:          ev.Time,
		Stored:        ev.Stored,
		Actor:         ev.Actor,
		Reason:        ev.Reason,
		CorrelationID: ev.CorrelationID,
		CausationID:   ev.CausationID,
		Changes:       changes,
	}
}

// History folds the events of one flag, oldest first, and returns one entry per event with the
// fields it changed: Diff of the state before it and the state after it.
//
// Errors: [ErrOutOfOrder] when an event does not follow the previous one (a gap, or events of
// another flag); an error wrapping events.ErrMalformed when a payload does not decode,
// events.ErrInvalid when an event names a bad environment or key, events.ErrUnknownType when the
// first event is of a type this version does not know.
func History(evs []events.Event) ([]Entry, error) {
	entries := make([]Entry, 0, len(evs))
	var f Flag
	for i := range evs {
		ev := &evs[i]
		before := f
		if err := apply(&f, ev); err != nil {
			return nil, fmt.Errorf("history of %s/%s at sequence %d: %w", ev.Environment, ev.Key, ev.Sequence, err)
		}
		entries = append(entries, newEntry(ev, Diff(before, f)))
	}
	return entries, nil
}
