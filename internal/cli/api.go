package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"

	"github.com/interlock-dev/interlock/apiv1"
	"github.com/interlock-dev/interlock/client"
)

// api is the admin API client of a session: package client's, whose errors it explains for the
// command line, with the shapes of call the commands use. Most commands send the raw request
// (Do), because -o json prints the server's answer as it came.
type api struct{ *client.Client }

// do sends req with client.Do. An error answer of a write of unknown outcome also says how to
// settle it.
func (a api) do(ctx context.Context, req client.Request) (*client.Response, error) {
	resp, err := a.Do(ctx, req)
	var ae *apiv1.Error
	if errors.As(err, &ae) && ae.Code == apiv1.CodeOutcomeUnknown && ae.IdempotencyKey != "" {
		return nil, &unsettledError{ae}
	}
	return resp, err
}

// unsettledError is a write of unknown outcome: the server's error, and the flag that settles it.
type unsettledError struct{ err *apiv1.Error }

func (e *unsettledError) Error() string {
	return e.err.Error() + "; to settle it, run the same command with --idempotency-key " + e.err.IdempotencyKey
}

func (e *unsettledError) Unwrap() error { return e.err }

// get sends a GET to path with query.
func (a api) get(ctx context.Context, path string, query url.Values) (*client.Response, error) {
	return a.do(ctx, client.Request{Method: http.MethodGet, Path: path, Query: query})
}

// postJSON sends v as JSON with header.
func (a api) postJSON(ctx context.Context, path string, header http.Header, v any) (*client.Response, error) {
	body, err := json.Marshal(v)
	if err != nil {
		return nil, fmt.Errorf("encode request: %w", err)
	}
	return a.do(ctx, client.Request{Method: http.MethodPost, Path: path, Header: header, ContentType: "application/json", Body: body})
}

// apiExitCode maps the server's error code — or, for a code this CLI does not know, the HTTP
// status — to an exit code.
func apiExitCode(e *apiv1.Error) int {
	switch e.Code {
	case apiv1.CodeNotFound:
		return ExitNotFound
	case apiv1.CodeConflict, apiv1.CodeAlreadyExists, apiv1.CodeArchived, apiv1.CodePreconditionFailed,
		apiv1.CodePreconditionRequired:
		return ExitConflict
	case apiv1.CodeUnauthenticated, apiv1.CodeForbidden:
		return ExitAuth
	case apiv1.CodeInvalidArgument, apiv1.CodePayloadTooLarge, apiv1.CodeUnsupportedMediaType:
		return ExitInvalid
	case apiv1.CodeUnavailable, apiv1.CodeStoreUnavailable:
		return ExitUnavailable
	case apiv1.CodeOutcomeUnknown:
		return ExitUnknown
	case apiv1.CodeInternal:
		return ExitError
	}
	switch e.Status {
	case http.StatusNotFound:
		return ExitNotFound
	case http.StatusConflict, http.StatusPreconditionFailed, http.StatusPreconditionRequired:
		return ExitConflict
	case http.StatusUnauthorized, http.StatusForbidden:
		return ExitAuth
	case http.StatusBadRequest, http.StatusRequestEntityTooLarge, http.StatusUnsupportedMediaType:
		return ExitInvalid
	case http.StatusBadGateway, http.StatusServiceUnavailable, http.StatusGatewayTimeout:
		return ExitUnavailable
	}
	return ExitError
}

// decodeJSON decodes a successful answer into v; what names it in the error.
func decodeJSON(resp *client.Response, what string, v any) error {
	if err := json.Unmarshal(resp.Body, v); err != nil {
		return fmt.Errorf("decode %s from the server: %w", what, err)
	}
	return nil
}

// show answers a command with the server's reply: its JSON as it is with -o json, otherwise the
// reply decoded (what names it in errors) and rendered for people.
func show[T any](s *session, resp *client.Response, what string, render func(*T) error) error {
	if s.json {
		return s.printJSON(resp.Body)
	}
	var v T
	if err := decodeJSON(resp, what, &v); err != nil {
		return err
	}
	return render(&v)
}
