//go:build !unix

package app

import "os"

// lockData does not lock on systems without flock: a second server on the same directory is
// refused by the embedded NATS server's own store lock, less clearly.
func lockData(string) (*os.File, error) { return nil, nil }
