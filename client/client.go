// Package client is the Go client of Interlock's admin API (/api/v1), built on the wire types of
// package apiv1: one method per route, each taking the context first.
//
// Every call sends the client's bearer token. A write (any method but GET) goes with an
// Idempotency-Key — the client's own (see [Client.WithIdempotencyKey]) or a fresh one — and is
// sent again under the same key, with a growing pause, while the server answers that the event
// store could not take it (store_unavailable: nothing was written) or did not confirm it
// (outcome_unknown: it may be stored). The key makes the server write it once however many times
// it is sent. After the last attempt the error is the server's, with the key in
// [apiv1.Error.IdempotencyKey]: sending the same write with that key later settles it.
//
// Errors: an error answer of the server is an *apiv1.Error, which matches the sentinel of its code
// (errors.Is(err, apiv1.ErrNotFound)); a server that cannot be reached or does not answer in time
// gives an error wrapping [ErrUnreachable]; a context that ends first gives the context's error.
package client

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/interlock-dev/interlock/apiv1"
)

// ErrUnreachable marks a server that could not be reached or did not answer in time.
var ErrUnreachable = errors.New("server unreachable")

// Defaults of the client's options.
const (
	// DefaultWriteAttempts is how many times a write is sent at most while the event store cannot
	// take it or does not confirm it.
	DefaultWriteAttempts = 4
	// DefaultWriteBackoff is the pause before the second attempt; it doubles after each.
	DefaultWriteBackoff = 250 * time.Millisecond
	// MaxResponse bounds the body read from the server, so that a wrong address cannot exhaust
	// memory.
	MaxResponse = 64 << 20
)

// Headers the API reads besides the standard ones.
const (
	HeaderReason         = "X-Interlock-Reason"
	HeaderIdempotencyKey = "Idempotency-Key"
	HeaderCorrelationID  = "X-Correlation-Id"
)

// Client calls the admin API of one server. It is safe for concurrent use.
type Client struct {
	base      *url.URL
	token     string
	http      *http.Client
	timeout   time.Duration
	userAgent string
	idemKey   string
	attempts  int
	backoff   time.Duration
}

// Option configures a client.
type Option func(*Client) error

// WithToken sends token as the bearer token of every request.
func WithToken(token string) Option {
	return func(c *Client) error {
		if strings.ContainsAny(token, "\r\n") {
			return errors.New("token: contains a line break")
		}
		c.token = token
		return nil
	}
}

// WithHTTPClient sends the requests with hc instead of http.DefaultClient.
func WithHTTPClient(hc *http.Client) Option {
	return func(c *Client) error {
		if hc == nil {
			return errors.New("http client: nil")
		}
		c.http = hc
		return nil
	}
}

// WithTimeout bounds each attempt of each call; 0 (the default) leaves it to the context.
func WithTimeout(d time.Duration) Option {
	return func(c *Client) error {
		if d < 0 {
			return errors.New("timeout: negative")
		}
		c.timeout = d
		return nil
	}
}

// WithUserAgent sets the User-Agent of every request.
func WithUserAgent(ua string) Option {
	return func(c *Client) error {
		c.userAgent = ua
		return nil
	}
}

// WithRetry sets how many times a write is sent at most (1: never again) and the pause before the
// second attempt, which doubles after each.
func WithRetry(attempts int, backoff time.Duration) Option {
	return func(c *Client) error {
		if attempts < 1 || backoff < 0 {
			return errors.New("retry: attempts must be at least 1 and backoff not negative")
		}
		c.attempts, c.backoff = attempts, backoff
		return nil
	}
}

// New returns a client of the server at baseURL, such as http://localhost:8080.
func New(baseURL string, opts ...Option) (*Client, error) {
	u, err := url.Parse(strings.TrimSuffix(baseURL, "/"))
	if err != nil {
		return nil, fmt.Errorf("server address: %w", err)
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("server address %q: want http:// or https:// and a host", baseURL)
	}
	c := &Client{base: u, http: http.DefaultClient, userAgent: "interlock-go-client",
		attempts: DefaultWriteAttempts, backoff: DefaultWriteBackoff}
	var errs []error
	for _, o := range opts {
		errs = append(errs, o(c))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return c, nil
}

// WithIdempotencyKey returns a copy of c that sends every write under key, such as the key of a
// write of unknown outcome to settle it; c itself is unchanged.
func (c *Client) WithIdempotencyKey(key string) *Client {
	cp := *c
	cp.idemKey = key
	return &cp
}

// BaseURL is the server's address.
func (c *Client) BaseURL() *url.URL {
	u := *c.base
	return &u
}

// Request is one call: Path is below the server's address, such as /api/v1/audit.
type Request struct {
	Method      string
	Path        string
	Query       url.Values
	Header      http.Header
	ContentType string
	Body        []byte
}

// Response is an answer, read whole.
type Response struct {
	Status int
	Header http.Header
	Body   []byte
}

// Do sends req, retrying a write as the package documentation says, and returns the answer when
// its status is 2xx, with the errors the package documentation lists otherwise.
func (c *Client) Do(ctx context.Context, req Request) (*Response, error) {
	if req.Method == http.MethodGet || req.Method == http.MethodHead {
		return ok(c.send(ctx, req))
	}
	key := req.Header.Get(HeaderIdempotencyKey)
	if key == "" {
		key = c.idemKey
	}
	if key == "" {
		key = uuid.NewString()
	}
	req.Header = req.Header.Clone()
	if req.Header == nil {
		req.Header = http.Header{}
	}
	req.Header.Set(HeaderIdempotencyKey, key)
	backoff := c.backoff
	for attempt := 1; ; attempt++ {
		resp, err := ok(c.send(ctx, req))
		var ae *apiv1.Error
		if !errors.As(err, &ae) || ae.Status != http.StatusServiceUnavailable ||
			(ae.Code != apiv1.CodeStoreUnavailable && ae.Code != apiv1.CodeOutcomeUnknown) {
			return resp, err
		}
		ae.IdempotencyKey = key
		if attempt >= c.attempts {
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

// ok turns an answer that is not 2xx into its *apiv1.Error.
func ok(resp *Response, err error) (*Response, error) {
	if err != nil {
		return nil, err
	}
	if resp.Status < 200 || resp.Status > 299 {
		return nil, DecodeError(resp.Status, resp.Body)
	}
	return resp, nil
}

// send sends req once and reads the answer, whatever its status.
func (c *Client) send(ctx context.Context, req Request) (*Response, error) {
	if c.timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, c.timeout)
		defer cancel()
	}
	u := *c.base
	u.Path += req.Path
	u.RawQuery = req.Query.Encode()
	var body io.Reader
	if req.Body != nil {
		body = bytes.NewReader(req.Body)
	}
	hr, err := http.NewRequestWithContext(ctx, req.Method, u.String(), body)
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", req.Method, u.Redacted(), err)
	}
	for k, vs := range req.Header {
		hr.Header[k] = vs
	}
	if hr.Header.Get("Accept") == "" {
		hr.Header.Set("Accept", "application/json")
	}
	hr.Header.Set("User-Agent", c.userAgent)
	if req.ContentType != "" {
		hr.Header.Set("Content-Type", req.ContentType)
	}
	if c.token != "" {
		hr.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := c.http.Do(hr)
	if err != nil {
		return nil, c.transportError(ctx, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, MaxResponse+1))
	if err != nil {
		return nil, c.transportError(ctx, err)
	}
	if len(data) > MaxResponse {
		return nil, fmt.Errorf("%s %s: the answer is larger than %d MiB", req.Method, req.Path, MaxResponse>>20)
	}
	return &Response{Status: resp.StatusCode, Header: resp.Header, Body: data}, nil
}

// transportError explains why no answer came.
func (c *Client) transportError(ctx context.Context, err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		err = ue.Err
	}
	switch {
	case errors.Is(err, context.Canceled) && ctx.Err() != nil:
		return fmt.Errorf("interrupted: %w", context.Canceled)
	case (errors.Is(err, context.DeadlineExceeded) || isTimeout(err)) && c.timeout > 0:
		return fmt.Errorf("%w: %s did not answer within %s", ErrUnreachable, c.base.Redacted(), c.timeout)
	case errors.Is(err, context.DeadlineExceeded) || isTimeout(err):
		return fmt.Errorf("%w: %s did not answer in time", ErrUnreachable, c.base.Redacted())
	}
	return fmt.Errorf("%w: %s: %v", ErrUnreachable, c.base.Redacted(), err)
}

func isTimeout(err error) bool {
	var t interface{ Timeout() bool }
	return errors.As(err, &t) && t.Timeout()
}

// DecodeError turns an error answer into an *apiv1.Error, keeping the server's code and message;
// an answer that is not the API's error document (a proxy's, say) keeps its status alone.
func DecodeError(status int, body []byte) *apiv1.Error {
	var doc apiv1.ErrorBody
	_ = json.Unmarshal(body, &doc)
	e := doc.Error
	e.Status = status
	return &e
}

// get sends a GET of path and decodes the answer into v.
func (c *Client) get(ctx context.Context, path string, q url.Values, v any) (*Response, error) {
	resp, err := c.Do(ctx, Request{Method: http.MethodGet, Path: path, Query: q})
	if err != nil {
		return nil, err
	}
	return resp, decode(resp, v)
}

// write sends body (JSON-encoded unless nil) with method to path, with If-Match when ifVersion
// is not 0 and X-Interlock-Reason when reason is not empty, and decodes the answer into v (when
// not nil).
func (c *Client) write(ctx context.Context, method, path string, ifVersion uint64, reason string, body, v any) (*Response, error) {
	req := Request{Method: method, Path: path, Header: http.Header{}}
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return nil, fmt.Errorf("encode request: %w", err)
		}
		req.Body, req.ContentType = b, "application/json"
	}
	if ifVersion != 0 {
		req.Header.Set("If-Match", ETag(ifVersion))
	}
	if reason != "" {
		req.Header.Set(HeaderReason, reason)
	}
	resp, err := c.Do(ctx, req)
	if err != nil {
		return nil, err
	}
	return resp, decode(resp, v)
}

// decode decodes a successful answer into v, when v is not nil.
func decode(resp *Response, v any) error {
	if v == nil {
		return nil
	}
	if err := json.Unmarshal(resp.Body, v); err != nil {
		return fmt.Errorf("decode the answer to %T: %w", v, err)
	}
	return nil
}

// ETag is the entity tag of version v, as the API sends it and If-Match takes it.
func ETag(v uint64) string { return `"` + strconv.FormatUint(v, 10) + `"` }

// Version reads the version an answer's ETag carries; 0 when it has none.
func Version(resp *Response) uint64 {
	v, err := strconv.ParseUint(strings.Trim(strings.TrimPrefix(resp.Header.Get("ETag"), "W/"), `"`), 10, 64)
	if err != nil {
		return 0
	}
	return v
}
