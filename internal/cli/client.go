package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"time"

	"github.com/google/uuid"
)

// maxResponse bounds the body read from the server, so that a wrong address cannot exhaust memory.
const maxResponse = 64 << 20

// apiError is an error answer of the server: its status and the {"error":{"code","message"}} body.
type apiError struct {
	Status  int
	Code    string
	Message string
	// EventID names the event of a write of unknown outcome; Key is the write's
	// Idempotency-Key.
	EventID string
	Key     string
}

func (e *apiError) Error() string {
	if e.Code == codeOutcomeUnknown && e.Key != "" {
		return e.Message + "; to settle it, run the same command with --idempotency-key " + e.Key
	}
	if e.Message != "" {
		return e.Message
	}
	if e.Code != "" {
		return fmt.Sprintf("server answered %d %s (%s)", e.Status, http.StatusText(e.Status), e.Code)
	}
	return fmt.Sprintf("server answered %d %s", e.Status, http.StatusText(e.Status))
}

// exitCode maps the server's error code — or, for a code this CLI does not know, the HTTP status —
// to an exit code.
func (e *apiError) exitCode() int {
	switch e.Code {
	case "not_found":
		return ExitNotFound
	case "conflict", "already_exists", "archived", "precondition_failed", "precondition_required":
		return ExitConflict
	case "unauthenticated", "forbidden":
		return ExitAuth
	case "invalid_argument", "payload_too_large", "unsupported_media_type":
		return ExitInvalid
	case "unavailable", codeStoreUnavailable:
		return ExitUnavailable
	case codeOutcomeUnknown:
		return ExitUnknown
	case "internal":
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

// The server's codes for a write it could not do now: nothing was written, or the outcome is
// unknown. Either is sent again under the same Idempotency-Key.
const (
	codeStoreUnavailable = "store_unavailable"
	codeOutcomeUnknown   = "outcome_unknown"
)

// Retries of a write the event store could not take or did not confirm.
const (
	writeAttempts = 4
	writeBackoff  = 250 * time.Millisecond
)

// client calls the admin API of one server.
type client struct {
	base      *url.URL
	token     string
	timeout   time.Duration
	idemKey   string // the Idempotency-Key of writes; a fresh one each when empty
	http      *http.Client
	userAgent string
}

// request is one call: path is below the server's base URL, such as /api/v1/audit.
type request struct {
	method      string
	path        string
	query       url.Values
	header      http.Header
	contentType string
	body        []byte
}

// response is a successful (2xx) answer, read whole.
type response struct {
	status int
	header http.Header
	body   []byte
}

// do sends req and reads the answer. A write (any method but GET) goes with an Idempotency-Key,
// and is sent again with it, after a pause, while the server answers that the event store could
// not take it or did not confirm it: the key makes it written once. The timeout bounds each
// attempt. Errors: *apiError for a non-2xx answer; one wrapping errUnreachable when the server
// cannot be reached or does not answer within the timeout; the context's error when ctx ends
// first.
func (c *client) do(ctx context.Context, req request) (*response, error) {
	if req.method == http.MethodGet {
		return c.once(ctx, req)
	}
	key := req.header.Get("Idempotency-Key")
	if key == "" {
		key = c.idemKey
	}
	if key == "" {
		key = uuid.NewString()
	}
	req.header = req.header.Clone()
	if req.header == nil {
		req.header = http.Header{}
	}
	req.header.Set("Idempotency-Key", key)
	backoff := writeBackoff
	for attempt := 1; ; attempt++ {
		resp, err := c.once(ctx, req)
		var ae *apiError
		if !errors.As(err, &ae) || ae.Status != http.StatusServiceUnavailable ||
			(ae.Code != codeStoreUnavailable && ae.Code != codeOutcomeUnknown) {
			return resp, err
		}
		ae.Key = key
		if attempt == writeAttempts {
			return nil, err
		}
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, err
		case <-t.C:
		}
		backoff *= 2
	}
}

// once sends req once and reads the answer, with the errors of do.
func (c *client) once(ctx context.Context, req request) (*response, error) {
	if c.timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, c.timeout)
		defer cancel()
	}
	u := *c.base
	u.Path += req.path
	u.RawQuery = req.query.Encode()
	var body io.Reader
	if req.body != nil {
		body = bytes.NewReader(req.body)
	}
	hr, err := http.NewRequestWithContext(ctx, req.method, u.String(), body)
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", req.method, u.Redacted(), err)
	}
	for k, vs := range req.header {
		hr.Header[k] = vs
	}
	hr.Header.Set("Accept", "application/json")
	hr.Header.Set("User-Agent", c.userAgent)
	if req.contentType != "" {
		hr.Header.Set("Content-Type", req.contentType)
	}
	if c.token != "" {
		hr.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := c.http.Do(hr)
	if err != nil {
		return nil, c.transportError(ctx, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxResponse+1))
	if err != nil {
		return nil, c.transportError(ctx, err)
	}
	if len(data) > maxResponse {
		return nil, fmt.Errorf("%s %s: the answer is larger than %d MiB", req.method, req.path, maxResponse>>20)
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return nil, decodeError(resp.StatusCode, data)
	}
	return &response{status: resp.StatusCode, header: resp.Header, body: data}, nil
}

// transportError explains why no answer came.
func (c *client) transportError(ctx context.Context, err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		err = ue.Err
	}
	switch {
	case errors.Is(err, context.Canceled) && ctx.Err() != nil:
		return fmt.Errorf("interrupted: %w", context.Canceled)
	case (errors.Is(err, context.DeadlineExceeded) || isTimeout(err)) && c.timeout > 0:
		return fmt.Errorf("%w: %s did not answer within %s", errUnreachable, c.base.Redacted(), c.timeout)
	case errors.Is(err, context.DeadlineExceeded) || isTimeout(err):
		return fmt.Errorf("%w: %s did not answer in time", errUnreachable, c.base.Redacted())
	}
	return fmt.Errorf("%w: %s: %v", errUnreachable, c.base.Redacted(), err)
}

func isTimeout(err error) bool {
	var t interface{ Timeout() bool }
	return errors.As(err, &t) && t.Timeout()
}

// decodeError turns an error answer into *apiError, keeping the server's code and message.
func decodeError(status int, data []byte) error {
	var body struct {
		Error struct {
			Code    string `json:"code"`
			Message string `json:"message"`
			EventID string `json:"eventId"`
		} `json:"error"`
	}
	ae := &apiError{Status: status}
	if json.Unmarshal(data, &body) == nil {
		ae.Code, ae.Message, ae.EventID = body.Error.Code, body.Error.Message, body.Error.EventID
	}
	return ae
}

// get sends a GET to path with query.
func (c *client) get(ctx context.Context, path string, query url.Values) (*response, error) {
	return c.do(ctx, request{method: http.MethodGet, path: path, query: query})
}

// postJSON sends v as JSON with header.
func (c *client) postJSON(ctx context.Context, path string, header http.Header, v any) (*response, error) {
	body, err := json.Marshal(v)
	if err != nil {
		return nil, fmt.Errorf("encode request: %w", err)
	}
	return c.do(ctx, request{method: http.MethodPost, path: path, header: header, contentType: "application/json", body: body})
}

// decodeJSON decodes a successful answer into v; what names it in the error.
func decodeJSON(resp *response, what string, v any) error {
	if err := json.Unmarshal(resp.body, v); err != nil {
		return fmt.Errorf("decode %s from the server: %w", what, err)
	}
	return nil
}

// show answers a command with the server's reply: its JSON as it is with -o json, otherwise the
// reply decoded (what names it in errors) and rendered for people.
func show[T any](s *session, resp *response, what string, render func(*T) error) error {
	if s.json {
		return s.printJSON(resp.body)
	}
	var v T
	if err := decodeJSON(resp, what, &v); err != nil {
		return err
	}
	return render(&v)
}

// flagPath is the API path (unescaped; refs are validated) of one flag, or of one of its actions
// when action is not empty.
func flagPath(r ref, action string) string {
	return flagEntity.path(r, action)
}
