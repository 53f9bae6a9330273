package await

import (
	"bytes"
	"sync"
)

// Output collects what a server or process writes from its goroutines (a log, a child's
// stdout) while a test reads it, usually to wait for a line.
type Output struct {
	mu sync.Mutex
	b  bytes.Buffer
}

// Write appends p; it is safe for concurrent writers.
func (o *Output) Write(p []byte) (int, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.b.Write(p)
}

// String is everything written so far.
func (o *Output) String() string {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.b.String()
}
