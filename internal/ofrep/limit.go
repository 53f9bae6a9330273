package ofrep

import (
	"sync"
	"sync/atomic"
	"time"
)

// limiter is a per-key rate limit by the generic cell rate algorithm: each key has a theoretical
// arrival time (TAT) that every allowed request pushes one interval further; a request is refused
// while the TAT is more than the burst tolerance ahead of now. It takes no lock: a key's state is
// one atomic integer.
type limiter struct {
	interval  int64 // nanoseconds per request at the steady rate
	tolerance int64 // how far ahead of now the TAT may run: (burst-1) intervals
	now       func() time.Time
	tats      sync.Map // key → *atomic.Int64, the TAT in Unix nanoseconds
}

func newLimiter(perSecond float64, burst int, now func() time.Time) *limiter {
	interval := max(int64(float64(time.Second)/perSecond), 1)
	return &limiter{interval: interval, tolerance: int64(burst-1) * interval, now: now}
}

// allow takes one request from key's allowance and returns 0, or refuses it and returns how long
// until the next request would be allowed.
func (l *limiter) allow(key string) time.Duration {
	v, ok := l.tats.Load(key)
	if !ok {
		v, _ = l.tats.LoadOrStore(key, new(atomic.Int64))
	}
	tat := v.(*atomic.Int64)
	now := l.now().UnixNano()
	for {
		old := tat.Load()
		start := max(old, now)
		if ahead := start - now; ahead > l.tolerance {
			return time.Duration(ahead - l.tolerance)
		}
		if tat.CompareAndSwap(old, start+l.interval) {
			return 0
		}
	}
}
