package local

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/interlock-dev/interlock/events"
)

// PresencePrefix starts every presence subject. It is outside the event stream's subjects
// (interlock.>), so heartbeats are plain NATS messages that are never stored.
const PresencePrefix = "_INTERLOCK.presence"

// PresenceSubjects is the subject filter matching the heartbeats of every subscriber.
const PresenceSubjects = PresencePrefix + ".>"

// PresenceSubject is the subject a subscriber with id following env publishes its heartbeats on.
func PresenceSubject(env, id string) string { return PresencePrefix + "." + env + "." + id }

// Bounds of a heartbeat's fields.
const (
	// MaxIDLen bounds a subscriber id.
	MaxIDLen = 64
	// MaxNameLen bounds a subscriber name.
	MaxNameLen = 256
	// MinHeartbeatInterval and MaxHeartbeatInterval bound the announced interval.
	MinHeartbeatInterval = 100 * time.Millisecond
	MaxHeartbeatInterval = 5 * time.Minute
	// maxHeartbeatSize bounds an encoded heartbeat.
	maxHeartbeatSize = 4 << 10
)

// ErrMalformedHeartbeat means a presence message is not a valid heartbeat.
var ErrMalformedHeartbeat = errors.New("malformed heartbeat")

// Heartbeat is what a subscriber says about itself on [PresenceSubject], every few seconds and
// right after it applied events. The JSON names are a contract with the server.
type Heartbeat struct {
	// ID identifies the subscriber: 1-64 letters, digits, '-' and '_'.
	ID string `json:"id"`
	// Name says which service it is, for people ("checkout-api on host-3").
	Name string `json:"name"`
	// Environment is the environment it follows.
	Environment string `json:"environment"`
	// Sequence is the last stream sequence it has applied (0 before its first state).
	Sequence uint64 `json:"sequence"`
	// Time is when it sent the heartbeat, by its own clock.
	Time time.Time `json:"time"`
	// IntervalMillis is how often it sends heartbeats; the server forgets it after three missed.
	IntervalMillis int64 `json:"intervalMs"`
	// Ready is true once its state has caught up with the stream as it was when it started.
	Ready bool `json:"ready"`
	// Stale is true while it has lost contact with the stream and serves its last-known state.
	Stale bool `json:"stale,omitempty"`
	// Leaving is true on the last heartbeat of a subscriber that is shutting down.
	Leaving bool `json:"leaving,omitempty"`
}

// Interval is the announced heartbeat interval.
func (h *Heartbeat) Interval() time.Duration {
	return time.Duration(h.IntervalMillis) * time.Millisecond
}

func (h *Heartbeat) encode() ([]byte, error) { return json.Marshal(h) }

// Validate reports every problem with the heartbeat, joined; each wraps [ErrMalformedHeartbeat].
func (h *Heartbeat) Validate() error {
	var errs []error
	bad := func(format string, args ...any) {
		errs = append(errs, fmt.Errorf("%w: "+format, append([]any{ErrMalformedHeartbeat}, args...)...))
	}
	if err := ValidateID(h.ID); err != nil {
		bad("%v", err)
	}
	if len(h.Name) > MaxNameLen {
		bad("name is longer than %d bytes", MaxNameLen)
	}
	if err := events.ValidateEnvironment(h.Environment); err != nil {
		bad("%v", err)
	}
	if iv := h.Interval(); iv < MinHeartbeatInterval || iv > MaxHeartbeatInterval {
		bad("intervalMs %d is not between %d and %d", h.IntervalMillis, MinHeartbeatInterval.Milliseconds(), MaxHeartbeatInterval.Milliseconds())
	}
	return errors.Join(errs...)
}

// ValidateID reports whether id can name a subscriber (and be a subject token): 1-64 letters,
// digits, '-' and '_'.
func ValidateID(id string) error {
	if id == "" || len(id) > MaxIDLen {
		return fmt.Errorf("id %q: ids are 1-%d letters, digits, '-' and '_'", truncate(id), MaxIDLen)
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			return fmt.Errorf("id %q: ids are 1-%d letters, digits, '-' and '_'", truncate(id), MaxIDLen)
		}
	}
	return nil
}

// DecodeHeartbeat reads a heartbeat received on subject. The subject's environment and id must
// match the body's. It never panics; every error wraps [ErrMalformedHeartbeat].
func DecodeHeartbeat(subject string, data []byte) (Heartbeat, error) {
	var h Heartbeat
	if len(data) > maxHeartbeatSize {
		return h, fmt.Errorf("%w: larger than %d bytes", ErrMalformedHeartbeat, maxHeartbeatSize)
	}
	if err := json.Unmarshal(data, &h); err != nil {
		return Heartbeat{}, fmt.Errorf("%w: %v", ErrMalformedHeartbeat, err)
	}
	if err := h.Validate(); err != nil {
		return Heartbeat{}, err
	}
	rest, ok := strings.CutPrefix(subject, PresencePrefix+".")
	env, id, ok2 := strings.Cut(rest, ".")
	if !ok || !ok2 || env != h.Environment || id != h.ID {
		return Heartbeat{}, fmt.Errorf("%w: subject %q does not name environment %q and id %q", ErrMalformedHeartbeat, truncate(subject), h.Environment, h.ID)
	}
	return h, nil
}

func truncate(s string) string {
	if len(s) > 64 {
		return s[:64] + "…"
	}
	return s
}
