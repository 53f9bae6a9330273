package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/interlock-dev/interlock/events"
	"github.com/interlock-dev/interlock/internal/auth"
)

// EventFeed follows the event stream for GET /api/v1/events: *events.Store.
type EventFeed interface {
	// Follow calls h for every event q selects, in stream order, until ctx ends or h returns an
	// error.
	Follow(ctx context.Context, q events.Query, h events.Handler) error
	// LastSequence is the sequence of the last event in the stream.
	LastSequence(ctx context.Context) (uint64, error)
}

// Defaults of the event feed's settings in [Config].
const (
	DefaultEventsHeartbeat   = 15 * time.Second
	DefaultEventsBuffer      = 256
	DefaultEventsSlowTimeout = 5 * time.Second
	DefaultEventsPerToken    = 32
	DefaultEventsMaxStreams  = 1000
)

// Limits of the event feed.
const (
	// maxFeedFlags bounds the flag parameters of one feed.
	maxFeedFlags = 100
	// feedRetry is the reconnection delay the feed suggests to EventSource clients.
	feedRetry = 2 * time.Second
	// feedBatch bounds the events written between two flushes.
	feedBatch = 64
)

// errSlowClient ends a feed whose client does not keep up.
var errSlowClient = errors.New("event feed client too slow")

// feeds lets StopStreams end every open event feed, and counts them against the caps. Its zero
// value is ready to use.
type feeds struct {
	once   sync.Once
	ctx    context.Context
	cancel context.CancelFunc

	mu       sync.Mutex
	open     int
	byCaller map[string]int
}

// errTooManyStreams refuses a feed over a cap: 429 with Retry-After.
var errTooManyStreams = errors.New("too many event streams")

// acquire counts a new feed of caller, or refuses it when the caller or the server is at its
// cap. The release function uncounts it.
func (f *feeds) acquire(caller string, perCaller, total int) (func(), error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.open >= total {
		return nil, &requestError{kind: errTooManyStreams, msg: fmt.Sprintf("this server has %d event streams open, its limit; try again shortly", f.open)}
	}
	if f.byCaller[caller] >= perCaller {
		return nil, &requestError{kind: errTooManyStreams, msg: fmt.Sprintf("the token %q has %d event streams open, its limit; close one first", caller, f.byCaller[caller])}
	}
	if f.byCaller == nil {
		f.byCaller = map[string]int{}
	}
	f.open++
	f.byCaller[caller]++
	return func() {
		f.mu.Lock()
		defer f.mu.Unlock()
		f.open--
		if f.byCaller[caller]--; f.byCaller[caller] == 0 {
			delete(f.byCaller, caller)
		}
	}, nil
}

// OpenFeeds is the number of live event feeds (GET /api/v1/events) being served.
func (a *API) OpenFeeds() int {
	a.feeds.mu.Lock()
	defer a.feeds.mu.Unlock()
	return a.feeds.open
}

func (f *feeds) init() {
	f.once.Do(func() { f.ctx, f.cancel = context.WithCancel(context.Background()) })
}

// StopStreams ends every open event feed (GET /api/v1/events) and makes new ones end at once.
// http.Server.Shutdown waits for handlers to return, and a feed never returns by itself:
// register StopStreams with http.Server.RegisterOnShutdown.
func (a *API) StopStreams() {
	a.feeds.init()
	a.feeds.cancel()
}

// feedRequest is what a feed sends: the events on subjects from sequence from.
type feedRequest struct {
	subjects []string
	from     uint64
}

// parseFeed reads the feed's parameters for p: environment (p's own when p is scoped), entity, flag
// (repeatable), after, and the
// Last-Event-ID header, which wins over after (an EventSource reconnecting sends it with the URL
// it first used). Without either, the feed starts with the next event appended.
func (a *API) parseFeed(r *http.Request, p auth.Principal) (feedRequest, error) {
	q, err := query(r, []string{"environment", "entity", "after"}, "flag")
	if err != nil {
		return feedRequest{}, err
	}
	env, entity, flags := q.Get("environment"), q.Get("entity"), q["flag"]
	if env != "" {
		if err := events.ValidateEnvironment(env); err != nil {
			return feedRequest{}, err
		}
	}
	// A scoped token's feed is its environment's, whatever it asks for.
	if env, err = scopeEnvironment(p, env); err != nil {
		return feedRequest{}, err
	}
	switch entity {
	case "", events.EntityFlag, events.EntitySegment:
	default:
		return feedRequest{}, badRequest(fmt.Sprintf("entity: %q is not flag or segment", truncate(entity)))
	}
	if len(flags) > 0 && entity == events.EntitySegment {
		return feedRequest{}, badRequest("flag: a flag filter keeps flag events, not entity=segment")
	}
	if len(flags) > maxFeedFlags {
		return feedRequest{}, badRequest(fmt.Sprintf("flag: at most %d flags per feed", maxFeedFlags))
	}
	var req feedRequest
	subjectEnv := env
	if subjectEnv == "" {
		subjectEnv = "*"
	}
	for i, key := range flags {
		if err := events.ValidateFlagKey(key); err != nil {
			return feedRequest{}, err
		}
		for _, prev := range flags[:i] {
			if prev == key {
				return feedRequest{}, badRequest(fmt.Sprintf("flag: %q given twice", truncate(key)))
			}
		}
		req.subjects = append(req.subjects, events.FlagSubject(subjectEnv, key))
	}
	switch {
	case len(flags) > 0:
	case entity != "":
		req.subjects = []string{events.EntitySubjects(subjectEnv, entity)}
	case env != "":
		req.subjects = []string{events.EnvironmentSubjects(env)}
	default:
		req.subjects = []string{events.AllSubjects}
	}

	after, name, resume := "", "", false
	if ids := r.Header.Values("Last-Event-ID"); len(ids) > 0 {
		after, name, resume = strings.TrimSpace(ids[0]), "Last-Event-ID", true
	} else if q.Has("after") {
		after, name, resume = q.Get("after"), "after", true
	}
	if !resume {
		last, err := a.cfg.Events.LastSequence(r.Context())
		if err != nil {
			return feedRequest{}, fmt.Errorf("event feed: %w", err)
		}
		req.from = last + 1
		return req, nil
	}
	seq, err := strconv.ParseUint(after, 10, 64)
	if err != nil || seq == math.MaxUint64 {
		return feedRequest{}, badRequest(fmt.Sprintf("%s: %q is not an event id (a stream sequence such as 42, or 0 for the beginning)", name, truncate(after)))
	}
	req.from = seq + 1
	return req, nil
}

// feedItem is one event for the writer, or a stored message that is not a well-formed event.
type feedItem struct {
	ev  events.Event
	err error
}

// eventFeed serves GET /api/v1/events: the events as Server-Sent Events, id the stream sequence,
// event the CloudEvents type, data the event as JSON. It replays from the requested sequence,
// then follows the stream live, with a heartbeat comment when idle, until the client goes away,
// the client falls behind (EventsBuffer events waiting for more than EventsSlowTimeout), the
// stream cannot be followed, or StopStreams.
func (a *API) eventFeed(w http.ResponseWriter, r *http.Request, p auth.Principal) error {
	if a.cfg.Events == nil {
		return &requestError{kind: errNoRoute, msg: "this server has no event feed"}
	}
	req, err := a.parseFeed(r, p)
	if err != nil {
		return err
	}
	release, err := a.feeds.acquire(p.Name, a.cfg.EventsPerToken, a.cfg.EventsMaxStreams)
	if err != nil {
		return err
	}
	defer release()
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-cache")
	h.Set("X-Accel-Buffering", "no")
	// The stream ends when the server cuts it: never reuse the connection after that.
	h.Set("Connection", "close")
	w.WriteHeader(http.StatusOK)
	if r.Method == http.MethodHead {
		return nil
	}
	rc := http.NewResponseController(w)
	if _, err := fmt.Fprintf(w, "retry: %d\n: interlock event feed from sequence %d\n\n", feedRetry.Milliseconds(), req.from); err != nil {
		return nil
	}
	if err := rc.Flush(); err != nil {
		return nil
	}

	a.feeds.init()
	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	defer context.AfterFunc(a.feeds.ctx, cancel)()

	log := a.logger.With("remote", r.RemoteAddr, "correlation_id", correlationID(r.Context()))
	items := make(chan feedItem, a.cfg.EventsBuffer)
	followed := make(chan struct{})
	go func() {
		defer close(followed)
		err := a.follow(ctx, req, items)
		switch {
		case errors.Is(err, errSlowClient):
			log.WarnContext(ctx, "event feed client too slow: disconnected",
				"buffer", a.cfg.EventsBuffer, "waited", a.cfg.EventsSlowTimeout)
		case err != nil:
			log.ErrorContext(ctx, "event feed cannot follow the stream", "error", err)
		}
		// The writer stops too, even in the middle of a write to a client that stopped reading.
		cancel()
	}()
	defer func() {
		cancel()
		<-followed
	}()
	// Whatever ends the feed early also cuts a write that is stuck on a client that stopped
	// reading.
	defer context.AfterFunc(ctx, func() { _ = rc.SetWriteDeadline(time.Now()) })()

	heartbeat := time.NewTicker(a.cfg.EventsHeartbeat)
	defer heartbeat.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case it := <-items:
			if err := writeFeed(w, rc, it, items); err != nil {
				log.DebugContext(ctx, "event feed write", "error", err)
				return nil
			}
			heartbeat.Reset(a.cfg.EventsHeartbeat)
		case <-heartbeat.C:
			if _, err := io.WriteString(w, ": heartbeat\n\n"); err != nil {
				return nil
			}
			if err := rc.Flush(); err != nil {
				return nil
			}
		}
	}
}

// follow feeds the writer from the stream. A writer that lets EventsBuffer events wait for more
// than EventsSlowTimeout ends it with errSlowClient; a healthy writer slows it down instead (the
// consumer is this feed's own, so nobody else waits).
func (a *API) follow(ctx context.Context, req feedRequest, items chan<- feedItem) error {
	var slow *time.Timer
	err := a.cfg.Events.Follow(ctx, events.Query{Subjects: req.subjects, FromSequence: req.from}, func(ev events.Event, derr error) error {
		it := feedItem{ev: ev, err: derr}
		select {
		case items <- it:
			return nil
		default:
		}
		if slow == nil {
			slow = time.NewTimer(a.cfg.EventsSlowTimeout)
		} else {
			slow.Reset(a.cfg.EventsSlowTimeout)
		}
		select {
		case items <- it:
			slow.Stop()
			return nil
		case <-ctx.Done():
			return ctx.Err()
		case <-slow.C:
			return errSlowClient
		}
	})
	if slow != nil {
		slow.Stop()
	}
	if ctx.Err() != nil && !errors.Is(err, errSlowClient) {
		return nil
	}
	return err
}

// writeFeed writes it, and whatever else is already waiting (up to feedBatch events), then
// flushes.
func writeFeed(w http.ResponseWriter, rc *http.ResponseController, it feedItem, items <-chan feedItem) error {
	var buf []byte
	for n := 0; ; n++ {
		buf = appendFeedItem(buf, it)
		if n == feedBatch-1 {
			break
		}
		var more bool
		select {
		case it = <-items:
			more = true
		default:
		}
		if !more {
			break
		}
	}
	if _, err := w.Write(buf); err != nil {
		return err
	}
	return rc.Flush()
}

// appendFeedItem appends one Server-Sent Event. A stored message that is not a well-formed event
// (or one that fails verification) still moves the client's Last-Event-ID on (an id with no data
// dispatches nothing), with a comment saying it was skipped.
func appendFeedItem(buf []byte, it feedItem) []byte {
	seq := it.ev.Sequence
	var data []byte
	err := it.err
	if err == nil {
		if strings.ContainsAny(it.ev.Type, "\r\n") {
			err = fmt.Errorf("%w: type with a line break", events.ErrMalformed)
		} else if data, err = json.Marshal(it.ev); err != nil {
			err = fmt.Errorf("%w: %v", events.ErrMalformed, err)
		}
	}
	buf = append(buf, "id: "...)
	buf = strconv.AppendUint(buf, seq, 10)
	buf = append(buf, '\n')
	if err != nil {
		buf = append(buf, ": skipped sequence "...)
		buf = strconv.AppendUint(buf, seq, 10)
		if errors.Is(err, events.ErrIntegrity) {
			return append(buf, ": fails verification (not written by Interlock)\n\n"...)
		}
		buf = append(buf, ": not a well-formed Interlock event\n\n"...)
		return buf
	}
	buf = append(buf, "event: "...)
	buf = append(buf, it.ev.Type...)
	buf = append(buf, "\ndata: "...)
	buf = append(buf, data...)
	return append(buf, "\n\n"...)
}
