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

// Integrity records the messages a [Runner] refused. It is safe for concurrent use.
type Integrity struct {
	mu       sync.Mutex
	problems []Problem
	count    uint64
	seen     map[uint64]bool // sequences recorded, so a replay after a restart of Run counts once
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
}
