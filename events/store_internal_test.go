package events

import (
	"fmt"
	"testing"

	"github.com/nats-io/nats.go/jetstream"
)

// An earlier attempt of the same event still being stored is an unknown outcome, not a failure:
// the leaderless-stream test met it after the first attempt timed out.
func TestDuplicateInProcessIsOutcomeUnknown(t *testing.T) {
	err := fmt.Errorf("publish: %w", &jetstream.APIError{Code: 409, ErrorCode: jsErrDuplicateInProcess, Description: "duplicate message id is in process"})
	if !isDuplicateInProcess(err) {
		t.Fatalf("%v not recognised", err)
	}
	if isDuplicateInProcess(&jetstream.APIError{ErrorCode: jetstream.JSErrCodeStreamWrongLastSequence}) {
		t.Fatal("wrong last sequence taken for a duplicate in process")
	}
}
