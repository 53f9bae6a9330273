package projections

import (
	"errors"
	"slices"
	"sync"
	"time"

	"github.com/interlock-dev/interlock/events"
)

// MaxProblems is how many integrity problems an [Integrity] keeps: the latest ones. It counts
// them all.
const MaxProblems = 100

// Problem is one stored message that failed verification and was not applied.
type Problem struct {
	Sequence uint64 `json:"sequence"`
	Subject  string `json:"subject"`
	// Reason is "unsigned", "unknown-key", "bad-signature" or "broken-chain".
	Reason string `json:"reason"`
	Detail string `json:"detail,omitempty"`
	// Seen is when this process refused it.
	Seen time.Time `json:"seen"`
}

// ProblemOf describes err if it wraps an *events.IntegrityError.
func ProblemOf(err error, now time.Time) (Problem, bool) {
	var ie *events.IntegrityError
	if !errors.As(err, &ie) {
		return Problem{}, false
	}
	return Problem{Sequence: ie.Sequence, Subject: ie.Subject, Reason: ie.Reason(), Detail: ie.Detail, Seen: now.UTC()}, true
}

// Acknowledgement is an operator's word that the problems up to a stream sequence were looked
// at: an [events.IntegrityAcknowledged] event, as the runner applied it.
type Acknowledgement struct {
	// Through is the stream sequence up to which problems are acknowledged.
	Through uint64 `json:"through"`
	// Sequence is the acknowledgement event's own stream sequence.
	Sequence uint64    `json:"sequence"`
	Actor    string    `json:"actor"`
	Reason   string    `json:"reason"`
	Time     time.Time `json:"time"`
}

// Integrity records the messages a [Runner] refused, and the operators' acknowledgements of
// them. It is safe for concurrent use.
type Integrity struct {
	mu       sync.Mutex
	problems []Problem
	count    uint64
	seen     map[uint64]bool // sequences recorded, so a replay after a restart of Run counts once
	// latest is the highest sequence recorded; ack the acknowledgement that reaches furthest.
	latest uint64
	ack    Acknowledgement
}

// record adds p, once per sequence.
func (i *Integrity) record(p Problem) bool {
	i.mu.Lock()
	defer i.mu.Unlock()
	if i.seen == nil {
		i.seen = make(map[uint64]bool)
	}
	if i.seen[p.Sequence] {
		return false
	}
	i.seen[p.Sequence] = true
	i.count++
	i.latest = max(i.latest, p.Sequence)
	if len(i.problems) == MaxProblems {
		i.problems = slices.Delete(i.problems, 0, 1)
	}
	i.problems = append(i.problems, p)
	return true
}

// Problems returns the latest problems (at most [MaxProblems]), in stream order, and how many
// there were in all.
func (i *Integrity) Problems() ([]Problem, uint64) {
	i.mu.Lock()
	defer i.mu.Unlock()
	return slices.Clone(i.problems), i.count
}

// restore starts the record from a checkpoint's: its latest problems and count.
func (i *Integrity) restore(problems []Problem, count uint64) {
	i.mu.Lock()
	defer i.mu.Unlock()
	if i.seen == nil {
		i.seen = make(map[uint64]bool)
	}
	for _, p := range problems {
		i.seen[p.Sequence] = true
	}
	if len(problems) > MaxProblems {
		problems = problems[len(problems)-MaxProblems:]
	}
	i.problems = slices.Clone(problems)
	i.count = max(count, uint64(len(problems)))
	for _, p := range problems {
		i.latest = max(i.latest, p.Sequence)
	}
}

// acknowledge records a; an acknowledgement that reaches no further than the one recorded
// changes nothing (acknowledgements never take back).
func (i *Integrity) acknowledge(a Acknowledgement) {
	i.mu.Lock()
	defer i.mu.Unlock()
	if a.Through > i.ack.Through || i.ack.Sequence == 0 {
		i.ack = a
	}
}

// Acknowledged is the acknowledgement that reaches furthest; zero when there is none.
func (i *Integrity) Acknowledged() Acknowledgement {
	i.mu.Lock()
	defer i.mu.Unlock()
	return i.ack
}

// Unacknowledged returns the latest problems (among the [MaxProblems] kept) that no
// acknowledgement covers, in stream order, and the sequence of the latest problem recorded
// (0 for none). Readiness holds while the first is empty.
func (i *Integrity) Unacknowledged() ([]Problem, uint64) {
	i.mu.Lock()
	defer i.mu.Unlock()
	var out []Problem
	for _, p := range i.problems {
		if p.Sequence > i.ack.Through {
			out = append(out, p)
		}
	}
	return out, i.latest
}
