package client

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"github.com/interlock-dev/interlock/apiv1"
)

// EventsQuery selects the events of a feed; every field is optional. Without After the feed
// starts with the next event appended.
type EventsQuery struct {
	Environment string
	// Entity is "flag" or "segment".
	Entity string
	Flags  []string
	// After is the stream sequence to start after (0 for the beginning), when FromStart or not
	// 0.
	After     uint64
	FromStart bool
}

// EventStream is a live event feed: GET /api/v1/events, read with Next. Close it when done.
type EventStream struct {
	body io.ReadCloser
	sc   *bufio.Scanner
	// Last is the stream sequence of the last event read, for a reconnection's After.
	Last uint64
}

// Events opens the live event feed q selects. The feed is not retried; a call ends when ctx
// ends or the stream is closed.
func (c *Client) Events(ctx context.Context, q EventsQuery) (*EventStream, error) {
	v := url.Values{}
	if q.Environment != "" {
		v.Set("environment", q.Environment)
	}
	if q.Entity != "" {
		v.Set("entity", q.Entity)
	}
	for _, f := range q.Flags {
		v.Add("flag", f)
	}
	if q.FromStart || q.After != 0 {
		v.Set("after", strconv.FormatUint(q.After, 10))
	}
	u := *c.base
	u.Path += "/api/v1/events"
	u.RawQuery = v.Encode()
	hr, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return nil, err
	}
	hr.Header.Set("Accept", "text/event-stream")
	hr.Header.Set("User-Agent", c.userAgent)
	if c.token != "" {
		hr.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := c.http.Do(hr)
	if err != nil {
		return nil, c.transportError(ctx, err)
	}
	if resp.StatusCode != http.StatusOK {
		defer resp.Body.Close()
		data, _ := io.ReadAll(io.LimitReader(resp.Body, MaxResponse))
		return nil, DecodeError(resp.StatusCode, data)
	}
	return &EventStream{body: resp.Body, sc: newScanner(resp.Body)}, nil
}

// newScanner reads a feed line by line; no line may be longer than MaxResponse.
func newScanner(r io.Reader) *bufio.Scanner {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64<<10), MaxResponse)
	return sc
}

// Next returns the next event of the feed. A stored message that is not a well-formed event is
// skipped (its sequence still moves Last on). It returns io.EOF when the server ends the feed.
func (s *EventStream) Next() (apiv1.Event, error) {
	var id, data string
	var hasID bool
	for {
		if !s.sc.Scan() {
			if err := s.sc.Err(); err != nil && !errors.Is(err, io.ErrUnexpectedEOF) {
				return apiv1.Event{}, fmt.Errorf("event feed: %w", err)
			}
			return apiv1.Event{}, io.EOF
		}
		line := s.sc.Text()
		switch {
		case line == "":
			if hasID {
				if seq, err := strconv.ParseUint(id, 10, 64); err == nil {
					s.Last = seq
				}
			}
			if data != "" {
				var ev apiv1.Event
				if err := json.Unmarshal([]byte(data), &ev); err != nil {
					return apiv1.Event{}, fmt.Errorf("event %s: %w", id, err)
				}
				return ev, nil
			}
			id, data, hasID = "", "", false
		case strings.HasPrefix(line, "id: "):
			id, hasID = strings.TrimPrefix(line, "id: "), true
		case strings.HasPrefix(line, "data: "):
			data += strings.TrimPrefix(line, "data: ")
		}
	}
}

// Close ends the feed.
func (s *EventStream) Close() error { return s.body.Close() }
