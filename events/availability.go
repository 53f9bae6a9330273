package events

import (
	"context"
	"errors"
	"net/http"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// What the store does when NATS or the stream is not there:
//
//   - Before anything is sent, the store checks that its connection is up. The connection must not
//     buffer publishes while it reconnects (nats.ReconnectBufSize(-1)): with a buffer, a publish
//     made during an outage would be sent, and stored, once NATS is back, long after the writer
//     was told it failed.
//   - An append that provably reached no stream (the connection was down, nobody answers on the
//     subject because the stream has no leader, the stream refused it as unavailable) is an
//     [*UnavailableError]: nothing was written.
//   - An append that was sent but not answered is an [*OutcomeError]: the event may be stored.
//   - A read that fails for any reason of the store's is an [*UnavailableError].

// connected returns an [*UnavailableError] unless the store's connection to NATS is up.
func (s *Store) connected() error {
	nc := s.js.Conn()
	if nc == nil {
		return &UnavailableError{Err: nats.ErrInvalidConnection}
	}
	switch nc.Status() {
	case nats.CONNECTED:
		return nil
	case nats.CLOSED:
		return &UnavailableError{Err: nats.ErrConnectionClosed}
	case nats.DRAINING_PUBS, nats.DRAINING_SUBS:
		return &UnavailableError{Err: nats.ErrConnectionDraining}
	}
	return &UnavailableError{Err: nats.ErrNoServers}
}

// notSent reports whether a publish error means that the message reached no stream: the client
// refused to send it, or the server answered that nobody listens on the subject.
func notSent(err error) bool {
	return errors.Is(err, nats.ErrReconnectBufExceeded) ||
		errors.Is(err, nats.ErrNoResponders) ||
		errors.Is(err, jetstream.ErrNoStreamResponse) ||
		errors.Is(err, nats.ErrInvalidConnection) ||
		errors.Is(err, nats.ErrConnectionReconnecting) ||
		errors.Is(err, nats.ErrConnectionDraining) ||
		errors.Is(err, nats.ErrNoServers) ||
		unavailableAPI(err)
}

// unavailableAPI reports whether err is an answer of JetStream that says it cannot serve the
// stream now: temporarily unavailable, no leader, offline, or no such stream.
func unavailableAPI(err error) bool {
	var apiErr *jetstream.APIError
	if !errors.As(err, &apiErr) {
		return errors.Is(err, jetstream.ErrStreamNotFound)
	}
	return apiErr.Code == http.StatusServiceUnavailable ||
		apiErr.ErrorCode == jetstream.JSErrCodeStreamNotFound
}

// unanswered reports whether a publish error leaves the outcome open: the message may have reached
// the stream. Everything that is neither provably unsent nor an answer of the stream is.
func unanswered(err error) bool {
	if notSent(err) {
		return false
	}
	var apiErr *jetstream.APIError
	return !errors.As(err, &apiErr)
}

// unavailable wraps an error of the store (not of a caller's handler) as an [*UnavailableError],
// unless it is already one or the caller's context was canceled.
func unavailable(err error) error {
	if err == nil || errors.Is(err, ErrUnavailable) || errors.Is(err, context.Canceled) {
		return err
	}
	return &UnavailableError{Err: err}
}
