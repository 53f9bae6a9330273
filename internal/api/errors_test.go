package api

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/interlock-dev/interlock/events"
	"github.com/interlock-dev/interlock/internal/auth"
	"github.com/interlock-dev/interlock/internal/command"
	"github.com/interlock-dev/interlock/projections"
)

func TestClassify(t *testing.T) {
	stale := &command.VersionError{Expected: 3, Actual: 5}
	tests := []struct {
		name   string
		err    error
		status int
		code   string
		msg    string // a part of the message
	}{
		{"bad request", badRequest("limit: bad"), 400, codeInvalidArgument, "limit: bad"},
		{"store unavailable", fmt.Errorf("kill prod/a: append x: %w", &events.UnavailableError{Err: errors.New("nats: no servers available for connection")}),
			503, codeStoreUnavailable, "event store unavailable (nats: no servers available for connection); nothing was written"},
		{"store unavailable on a timeout", fmt.Errorf("kill prod/a: read x: %w", &events.UnavailableError{Err: context.DeadlineExceeded}),
			503, codeStoreUnavailable, "event store unavailable (context deadline exceeded)"},
		{"outcome unknown", fmt.Errorf("kill prod/a: %w", &events.OutcomeError{EventID: "e-1", Subject: "s", Err: context.DeadlineExceeded}),
			503, codeOutcomeUnknown, "did not confirm event e-1 (context deadline exceeded)"},
		{"validation", fmt.Errorf("create prod/a: %w", errors.Join(
			&events.ValidationError{Field: "kind", Message: "no"},
			&events.ValidationError{Field: "offVariant", Message: "is required"})), 400, codeInvalidArgument, "kind: no; offVariant: is required"},
		{"invalid without field", fmt.Errorf("patch: %w", events.ErrInvalid), 400, codeInvalidArgument, "patch: invalid"},
		{"unauthenticated", fmt.Errorf("%w: unknown token", auth.ErrUnauthenticated), 401, codeUnauthenticated, "Bearer"},
		{"forbidden", auth.Authorize(auth.Principal{Role: auth.RoleReader}, auth.ActionWrite), 403, codeForbidden, `"reader" may not write`},
		{"command not found", fmt.Errorf("kill prod/a: %w", command.ErrNotFound), 404, codeNotFound, "prod/a"},
		{"projection not found", fmt.Errorf("flag prod/a at version 9: %w", projections.ErrNotFound), 404, codeNotFound, "version 9"},
		{"no route", &requestError{kind: errNoRoute, msg: "no endpoint at /x"}, 404, codeNotFound, "/x"},
		{"method", &requestError{kind: errMethodNotAllowed, msg: "DELETE is not allowed"}, 405, codeMethodNotAllowed, "DELETE"},
		{"exists", fmt.Errorf("create prod/a: %w", command.ErrExists), 409, codeAlreadyExists, "exists"},
		{"archived", fmt.Errorf("update prod/a: %w", command.ErrArchived), 409, codeArchived, "archived"},
		{"conflict", fmt.Errorf("update prod/a: 100 attempts: %w", events.ErrConflict), 409, codeConflict, "try again"},
		{"stale from body", staleFrom(fmt.Errorf("enable prod/a: %w", stale), false), 409, codeConflict, "expected 3"},
		{"stale from If-Match", staleFrom(fmt.Errorf("enable prod/a: %w", stale), true), 412, codePreconditionFailed, "version 5"},
		{"too large", fmt.Errorf("read: %w", &http.MaxBytesError{Limit: 1 << 20}), 413, codePayloadTooLarge, "1 MiB"},
		{"media type", &requestError{kind: errUnsupportedMediaType, msg: "Content-Type"}, 415, codeUnsupportedMediaType, "Content-Type"},
		{"If-Match missing", &requestError{kind: errPreconditionRequired, msg: "If-Match is required"}, 428, codePreconditionRequired, "If-Match"},
		{"not ready", errNotReady, 503, codeUnavailable, "catching up"},
		{"timeout", fmt.Errorf("read: %w", context.DeadlineExceeded), 503, codeUnavailable, "timed out"},
		{"anything else", errors.New("nats: connection closed at 10.0.0.1"), 500, codeInternal, "internal error"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			status, code, msg := classify(tt.err)
			if status != tt.status || code != tt.code || !strings.Contains(msg, tt.msg) {
				t.Fatalf("classify = %d %s %q, want %d %s and a message with %q", status, code, msg, tt.status, tt.code, tt.msg)
			}
			if status == 500 && strings.Contains(msg, "10.0.0.1") {
				t.Fatalf("internal details reach the client: %q", msg)
			}
		})
	}
}
