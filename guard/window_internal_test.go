package guard

import (
	"testing"
	"time"
)

// A window sums the entries after a cutoff; with a limit it merges its two oldest entries
// instead of growing, keeping the sums.
func TestWindow(t *testing.T) {
	t0 := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	at := func(s int) time.Time { return t0.Add(time.Duration(s) * time.Second) }
	tests := []struct {
		name     string
		limit    int
		cutoff   int // seconds; sums of the entries after it
		req, err float64
		kept     int
	}{
		{"unbounded, all", 0, -1, 10, 5, 5},
		{"unbounded, last two", 0, 2, 7, 3, 5},
		{"limit merges the oldest", 3, -1, 10, 5, 3},
		{"merged pair leaves with its newer half", 3, 1, 10, 5, 3},
		{"merged pair gone", 3, 2, 7, 3, 3},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var w window
			for i, e := range [][2]float64{{1, 1}, {1, 0}, {1, 1}, {3, 1}, {4, 2}} {
				w.push(windowEntry{at: at(i), req: e[0], err: e[1]}, tc.limit)
			}
			if req, errs := w.sums(at(tc.cutoff)); req != tc.req || errs != tc.err {
				t.Fatalf("sums = %v, %v; want %v, %v", req, errs, tc.req, tc.err)
			}
			if n := len(w.buf) - w.head; n != tc.kept {
				t.Fatalf("%d entries kept, want %d", n, tc.kept)
			}
			w.drop(at(tc.cutoff))
			var c window
			c.copyFrom(&w)
			if req, errs := c.sums(at(-1)); req != tc.req || errs != tc.err {
				t.Fatalf("after drop and copy: sums = %v, %v; want %v, %v", req, errs, tc.req, tc.err)
			}
		})
	}
}
