// Package await is what tests use to wait for something asynchronous with a deadline instead of
// sleeping and hoping: a condition that must come true, and goroutines that must be gone when a
// test ends.
package await

import (
	"runtime"
	"testing"
	"time"
)

// Eventually checks cond every 10ms until it holds, and fails tb when within passes first.
func Eventually(tb testing.TB, within time.Duration, cond func() bool, format string, args ...any) {
	tb.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatalf("not within %v: "+format, append([]any{within}, args...)...)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Until calls check every interval until it returns nil, and fails tb with the last error check
// returned (which says what it saw) when within passes first.
func Until(tb testing.TB, within, every time.Duration, check func() error) {
	tb.Helper()
	deadline := time.Now().Add(within)
	for {
		err := check()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			tb.Fatalf("not within %v: %v", within, err)
		}
		time.Sleep(every)
	}
}

// Goroutines fails tb if goroutines it started outlive it: when tb ends, after every cleanup
// registered later, it waits up to within for the number of goroutines to come back to what it
// was when Goroutines was called, calling tidy (when not nil) before each count, for example to
// close idle HTTP connections. The failure lists every goroutine's stack.
func Goroutines(tb testing.TB, within time.Duration, tidy func()) {
	before := runtime.NumGoroutine()
	tb.Cleanup(func() {
		deadline := time.Now().Add(within)
		for {
			if tidy != nil {
				tidy()
			}
			n := runtime.NumGoroutine()
			if n <= before {
				return
			}
			if time.Now().After(deadline) {
				buf := make([]byte, 1<<20)
				tb.Errorf("%d goroutines left running after the test (%d before it):\n%s", n-before, before, buf[:runtime.Stack(buf, true)])
				return
			}
			time.Sleep(20 * time.Millisecond)
		}
	})
}
