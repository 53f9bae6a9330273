package api

import (
	"fmt"
	"math"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// maxLimited bounds how many tokens' limiters are kept; past it the idle ones are dropped.
const maxLimited = 10000

// limits is the admin API's rate limit per token (token bucket, golang.org/x/time/rate). A nil
// *limits allows everything.
type limits struct {
	perSecond rate.Limit
	burst     int
	mu        sync.Mutex
	byName    map[string]*rate.Limiter
}

func newLimits(perSecond float64, burst int) *limits {
	if perSecond <= 0 {
		return nil
	}
	return &limits{perSecond: rate.Limit(perSecond), burst: max(burst, 1), byName: map[string]*rate.Limiter{}}
}

// allow takes one request from name's allowance, or refuses it with an error that answers 429
// with Retry-After.
func (l *limits) allow(name string) error {
	if l == nil {
		return nil
	}
	l.mu.Lock()
	lim, ok := l.byName[name]
	if !ok {
		if len(l.byName) >= maxLimited {
			for k, v := range l.byName {
				if v.Tokens() >= float64(l.burst) { // full again: idle since it was used
					delete(l.byName, k)
				}
			}
		}
		lim = rate.NewLimiter(l.perSecond, l.burst)
		l.byName[name] = lim
	}
	l.mu.Unlock()
	r := lim.Reserve()
	if d := r.Delay(); d > 0 {
		r.Cancel()
		return &rateLimited{retryAfter: d}
	}
	return nil
}

// rateLimited refuses a request over its token's rate: 429 with Retry-After.
type rateLimited struct{ retryAfter time.Duration }

func (e *rateLimited) Error() string {
	return fmt.Sprintf("this token makes requests faster than the admin API allows; retry in %s", e.retryAfter.Round(time.Millisecond))
}
func (e *rateLimited) Unwrap() error { return errTooManyRequests }

// retryAfterSeconds is the Retry-After of e: whole seconds, at least 1.
func (e *rateLimited) retryAfterSeconds() int {
	return max(1, int(math.Ceil(e.retryAfter.Seconds())))
}
