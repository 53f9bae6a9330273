package source

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"
)

// ScrapeOptions configures a [ScrapeSource]. Zero values take their defaults.
type ScrapeOptions struct {
	// URL is the exposition endpoint, e.g. "http://127.0.0.1:8081/metrics". Required.
	URL string
	// Interval is the time between scrapes in Run. 15s by default; at least 10ms.
	Interval time.Duration
	// Timeout bounds one scrape. The smaller of 10s and Interval by default; at most Interval.
	Timeout time.Duration
	// Lag is how far behind now callers should read: Counter(ctx, q, now.Add(-source.Lag())).
	// 0 by default: a scrape is complete when it is recorded.
	Lag time.Duration
	// StaleAfter is the age beyond which the newest scrape at or before the asked time is
	// stale. Three intervals by default; at least one.
	StaleAfter time.Duration
	// History is how many scrapes are kept per query. By default enough to cover Lag plus
	// StaleAfter, plus three.
	History int
	// MaxQueries bounds how many queries are followed. 1,024 by default.
	MaxQueries int
	// MaxBytes bounds an exposition body. 16 MiB by default.
	MaxBytes int64
	// Accept is the Accept header sent. By default delimited protobuf is preferred over the
	// text format 0.0.4. OpenMetrics is not asked for by default (its parser is slow and strict;
	// see scrape_parse.go), but a body in it is read, up to 16 KiB.
	Accept string
	// BearerToken, if set, is sent as "Authorization: Bearer …".
	BearerToken string
	// Username and Password, if set, are sent as HTTP basic auth. Exclusive with BearerToken.
	Username, Password string
	// Client sends the requests; a client with no timeout of its own over
	// http.DefaultTransport by default.
	Client *http.Client
	// Logger receives failed scrapes (when a failure starts and ends, not on every tick).
	// Discarded by default.
	Logger *slog.Logger
	// Now reads the clock; time.Now by default.
	Now func() time.Time
	// NewTicker starts the ticker Run waits on and returns its channel and a stop function;
	// time.NewTicker by default. Tests inject their own to drive Run.
	NewTicker func(d time.Duration) (<-chan time.Time, func())
}

const (
	defaultScrapeInterval   = 15 * time.Second
	defaultScrapeTimeout    = 10 * time.Second
	defaultScrapeMaxQueries = 1024
	defaultScrapeMaxBytes   = 16 << 20
	maxScrapeHistory        = 100_000
	defaultScrapeAccept     = "application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=delimited;q=0.7," +
		"text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
)

func (o *ScrapeOptions) setDefaults() {
	if o.Interval == 0 {
		o.Interval = defaultScrapeInterval
	}
	if o.Timeout == 0 {
		o.Timeout = min(defaultScrapeTimeout, o.Interval)
	}
	if o.StaleAfter == 0 {
		o.StaleAfter = 3 * o.Interval
	}
	if o.History == 0 && o.Interval > 0 && o.Lag >= 0 && o.StaleAfter > 0 {
		o.History = int(min((o.Lag+o.StaleAfter)/o.Interval, maxScrapeHistory-3)) + 3
	}
	if o.MaxQueries == 0 {
		o.MaxQueries = defaultScrapeMaxQueries
	}
	if o.MaxBytes == 0 {
		o.MaxBytes = defaultScrapeMaxBytes
	}
	if o.Accept == "" {
		o.Accept = defaultScrapeAccept
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.NewTicker == nil {
		o.NewTicker = func(d time.Duration) (<-chan time.Time, func()) {
			t := time.NewTicker(d)
			return t.C, t.Stop
		}
	}
}

// Validate reports every problem with the options, as an error matching [ErrInvalidSource].
// Zero values are accepted (they take defaults).
func (o ScrapeOptions) Validate() error {
	var errs []error
	if _, _, err := parseEndpoint(o.URL, true); err != nil {
		errs = append(errs, err)
	}
	if o.Interval != 0 && o.Interval < 10*time.Millisecond {
		errs = append(errs, fmt.Errorf("interval %v is shorter than 10ms", o.Interval))
	}
	interval := o.Interval
	if interval == 0 {
		interval = defaultScrapeInterval
	}
	if o.Timeout < 0 || o.Timeout > interval {
		errs = append(errs, fmt.Errorf("timeout %v is not between 0 and the interval %v", o.Timeout, interval))
	}
	if o.Lag < 0 || o.Lag > time.Hour {
		errs = append(errs, fmt.Errorf("lag %v is not between 0 and 1h", o.Lag))
	}
	if o.StaleAfter != 0 && (o.StaleAfter < interval || o.StaleAfter > 24*time.Hour) {
		errs = append(errs, fmt.Errorf("stale after %v is not between the interval %v and 24h", o.StaleAfter, interval))
	}
	if o.History < 0 || o.History > maxScrapeHistory {
		errs = append(errs, fmt.Errorf("history %d is not between 1 and %d", o.History, maxScrapeHistory))
	} else if o.History > 0 && time.Duration(o.History)*interval <= o.Lag {
		errs = append(errs, fmt.Errorf("history of %d scrapes every %v does not reach back the lag %v", o.History, interval, o.Lag))
	}
	if o.MaxQueries < 0 {
		errs = append(errs, fmt.Errorf("max queries %d is negative", o.MaxQueries))
	}
	if o.MaxBytes < 0 {
		errs = append(errs, fmt.Errorf("max bytes %d is negative", o.MaxBytes))
	}
	if strings.ContainsAny(o.Accept, "\r\n\x00") {
		errs = append(errs, errors.New("accept header contains control characters"))
	}
	errs = append(errs, httpAuth{o.BearerToken, o.Username, o.Password}.validate()...)
	if len(errs) > 0 {
		return fmt.Errorf("%w: scrape: %w", ErrInvalidSource, errors.Join(errs...))
	}
	return nil
}

// ScrapeSource reads counters straight from an exposition endpoint (a service's /metrics),
// for setups without a Prometheus server. It is safe for concurrent use.
//
// A scrape reads the present, so the source remembers: every scrape is evaluated for every
// query it follows and kept in a small per-query history, from which Counter answers with the
// newest scrape at or before the time asked for. Queries are followed from the first Watch or
// Counter naming them. A query is a [Selector] (`requests_total{variant="on"}`) or `sum(…)`
// around one; either way the matching series are summed.
type ScrapeSource struct {
	url        *url.URL
	endpoint   string
	client     *http.Client
	auth       httpAuth
	accept     string
	interval   time.Duration
	timeout    time.Duration
	lag        time.Duration
	staleAfter time.Duration
	history    int
	maxQueries int
	maxBytes   int64
	log        *slog.Logger
	now        func() time.Time
	newTicker  func(time.Duration) (<-chan time.Time, func())

	mu       sync.Mutex
	queries  map[string]*scrapeHistory
	last     *exposition // the newest successful scrape, for queries added later
	lastAt   time.Time
	lastFail *scrapeEntry // the failure of the newest scrape, if it failed
	failing  bool         // the newest scrape failed (for logging transitions)
}

// scrapeHistory is one query's ring of evaluated scrapes.
type scrapeHistory struct {
	sel     Selector
	entries []scrapeEntry
	next    int
}

type scrapeEntry struct {
	at     time.Time
	value  float64
	status ReadingStatus
	detail string
	err    error
}

// NewScrapeSource checks opts and returns a source; call Run to start scraping. It returns an
// error matching [ErrInvalidSource] when the options break a rule.
func NewScrapeSource(opts ScrapeOptions) (*ScrapeSource, error) {
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	opts.setDefaults()
	u, redacted, _ := parseEndpoint(opts.URL, true)
	client := opts.Client
	if client == nil {
		client = &http.Client{}
	}
	return &ScrapeSource{
		url:        u,
		endpoint:   redacted,
		client:     client,
		auth:       httpAuth{opts.BearerToken, opts.Username, opts.Password},
		accept:     opts.Accept,
		interval:   opts.Interval,
		timeout:    opts.Timeout,
		lag:        opts.Lag,
		staleAfter: opts.StaleAfter,
		history:    opts.History,
		maxQueries: opts.MaxQueries,
		maxBytes:   opts.MaxBytes,
		log:        opts.Logger.With("component", "guard", "source", "scrape", "endpoint", redacted),
		now:        opts.Now,
		newTicker:  opts.NewTicker,
		queries:    map[string]*scrapeHistory{},
	}, nil
}

// Lag is how far behind now callers should read: Counter(ctx, q, now.Add(-s.Lag())).
func (s *ScrapeSource) Lag() time.Duration { return s.lag }

// Endpoint is the exposition URL with any password redacted.
func (s *ScrapeSource) Endpoint() string { return s.endpoint }

// parseScrapeQuery accepts a selector or sum(selector).
func parseScrapeQuery(q string) (Selector, error) {
	t := strings.TrimSpace(q)
	if inner, ok := strings.CutPrefix(t, "sum"); ok {
		inner = strings.TrimSpace(inner)
		if strings.HasPrefix(inner, "(") && strings.HasSuffix(inner, ")") {
			t = inner[1 : len(inner)-1]
		}
	}
	return ParseSelector(t)
}

// Unwatch stops following q and drops its history, as when the rollout reading it ended. A later
// Counter or Watch of q follows it afresh.
func (s *ScrapeSource) Unwatch(q string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.queries, q)
}

// Watch starts following q, so that scrapes from now on are kept for it. Counter watches the
// queries it is asked for; Watch lets a caller start the history before its first read. It
// returns an error matching [ErrInvalidQuery] when q is not a selector or sum(selector), or
// when MaxQueries queries are already followed.
func (s *ScrapeSource) Watch(q string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, err := s.watchLocked(q)
	return err
}

func (s *ScrapeSource) watchLocked(q string) (*scrapeHistory, error) {
	if h, ok := s.queries[q]; ok {
		return h, nil
	}
	sel, err := parseScrapeQuery(q)
	if err != nil {
		return nil, err
	}
	if len(s.queries) >= s.maxQueries {
		return nil, fmt.Errorf("%w: already following %d queries", ErrInvalidQuery, s.maxQueries)
	}
	h := &scrapeHistory{sel: sel, entries: make([]scrapeEntry, 0, min(s.history, 64))}
	s.queries[q] = h
	if s.last != nil {
		h.add(evalScrape(s.last, sel, s.lastAt), s.history)
	}
	if s.lastFail != nil {
		h.add(*s.lastFail, s.history)
	}
	return h, nil
}

func (h *scrapeHistory) add(e scrapeEntry, capacity int) {
	if len(h.entries) < capacity {
		h.entries = append(h.entries, e)
		return
	}
	h.entries[h.next] = e
	h.next = (h.next + 1) % capacity
}

// at returns the newest entry at or before t; of entries with the same time, the one added last
// (an immediate re-scrape on a coarse clock replaces the scrape it repeats).
func (h *scrapeHistory) at(t time.Time) (scrapeEntry, bool) {
	var best scrapeEntry
	found := false
	n := len(h.entries)
	for i := range n {
		e := h.entries[(h.next+i)%n] // oldest first
		if e.at.After(t) {
			continue
		}
		if !found || !e.at.Before(best.at) {
			best, found = e, true
		}
	}
	return best, found
}

// Counter returns the sum of the series q selects as of the newest scrape at or before at.
// It does no I/O. The reading is [ReadingStale] when there is no such scrape or it is older
// than StaleAfter (in particular for a query asked for the first time before any scrape),
// [ReadingEmpty] when no series matched, [ReadingNaN] when a matching series was NaN or
// infinite, [ReadingAmbiguous] when a matching series appeared twice in the exposition, and
// [ReadingError] or [ReadingTimeout] when that scrape failed or a matching series is not a
// counter (or negative), with an error matching [ErrQueryFailed]. An invalid query, a zero at,
// or a new query beyond MaxQueries returns [ErrInvalidQuery].
func (s *ScrapeSource) Counter(ctx context.Context, q string, at time.Time) (Reading, error) {
	r := Reading{Requested: at, Query: q, Endpoint: s.endpoint, Status: ReadingError}
	if at.IsZero() {
		err := fmt.Errorf("%w: query time is zero", ErrInvalidQuery)
		r.Detail = err.Error()
		return r, err
	}
	if err := ctx.Err(); err != nil {
		st := failureStatus(err)
		r.Status, r.Detail = st, err.Error()
		return r, queryFailure(st, err)
	}
	s.mu.Lock()
	h, err := s.watchLocked(q)
	var e scrapeEntry
	found := false
	if err == nil {
		e, found = h.at(at)
	}
	s.mu.Unlock()
	if err != nil {
		r.Detail = err.Error()
		return r, err
	}
	if !found {
		r.Status, r.Detail = ReadingStale, "no scrape at or before the query time"
		return r, nil
	}
	r.At, r.Detail = e.at, e.detail
	switch {
	case at.Sub(e.at) > s.staleAfter:
		r.Status = ReadingStale
		r.Detail = fmt.Sprintf("newest scrape is %v old, more than %v", at.Sub(e.at).Round(time.Millisecond), s.staleAfter)
		if e.status == ReadingOK {
			r.Value = e.value
		}
	case e.status == ReadingError || e.status == ReadingTimeout:
		r.Status = e.status
		return r, fmt.Errorf("scrape %s at %s: %w", s.endpoint, e.at.Format(time.RFC3339Nano), e.err)
	default:
		r.Status = e.status
		if e.status == ReadingOK {
			r.Value = e.value
		}
	}
	return r, nil
}

// Run scrapes at once and then every Interval until ctx ends, and returns nil then. Failed
// scrapes are recorded (readings of that time are errors) and logged; they do not stop Run.
// Call it once.
func (s *ScrapeSource) Run(ctx context.Context) error {
	tick, stop := s.newTicker(s.interval)
	defer stop()
	for {
		_ = s.Scrape(ctx)
		select {
		case <-ctx.Done():
			return nil
		case <-tick:
		}
	}
}

// Scrape reads the endpoint once and records the result, at the time the scrape started, for
// every followed query. It returns the scrape's failure, if any: an error matching
// [ErrQueryFailed] (and [ErrMalformedResponse] for a body that is not an exposition,
// context.DeadlineExceeded for a timeout). A scrape cut short because ctx ended is not
// recorded.
func (s *ScrapeSource) Scrape(ctx context.Context) error {
	start := s.now()
	expo, err := s.fetch(ctx)
	if err != nil && ctx.Err() != nil {
		return queryFailure(failureStatus(err), err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if err != nil {
		st := failureStatus(err)
		err = queryFailure(st, err)
		fail := scrapeEntry{at: start, status: st, detail: err.Error(), err: err}
		for _, h := range s.queries {
			h.add(fail, s.history)
		}
		s.lastFail = &fail
		if !s.failing {
			s.log.Warn("scrape failed", "status", string(st), "error", err)
		}
		s.failing = true
		return err
	}
	if s.failing {
		s.log.Info("scrape recovered")
	}
	s.failing = false
	s.last, s.lastAt, s.lastFail = expo, start, nil
	for _, h := range s.queries {
		h.add(evalScrape(expo, h.sel, start), s.history)
	}
	return nil
}

func (s *ScrapeSource) fetch(ctx context.Context) (*exposition, error) {
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, s.url.String(), nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept", s.accept)
	req.Header.Set("User-Agent", "interlock-guard")
	req.Header.Set("X-Prometheus-Scrape-Timeout-Seconds", fmt.Sprintf("%g", s.timeout.Seconds()))
	s.auth.apply(req.Header)
	resp, err := s.client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := readBounded(resp.Body, s.maxBytes)
	if err != nil {
		return nil, fmt.Errorf("read exposition (http %d): %w", resp.StatusCode, err)
	}
	if resp.StatusCode/100 != 2 {
		return nil, fmt.Errorf("http %d: %s", resp.StatusCode, snippet(body))
	}
	format, err := scrapeFormat(resp.Header)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrMalformedResponse, err)
	}
	expo, err := decodeExposition(body, format)
	if err != nil {
		mediaType, _, _ := strings.Cut(string(format), ";")
		return nil, fmt.Errorf("%w: %s: %w", ErrMalformedResponse, mediaType, err)
	}
	return expo, nil
}

// evalScrape sums the counter series sel picks in one scrape.
func evalScrape(e *exposition, sel Selector, at time.Time) scrapeEntry {
	entry := scrapeEntry{at: at}
	var sum float64
	n := 0
	for _, i := range e.candidates(sel) {
		smp := &e.samples[i]
		if !sel.matchesPairs(smp.name, smp.labels) {
			continue
		}
		n++
		if smp.dup {
			entry.status = ReadingAmbiguous
			entry.detail = fmt.Sprintf("a matching series of %s appears more than once in the exposition", smp.name)
			return entry
		}
		if !smp.counter {
			entry.status = ReadingError
			entry.detail = fmt.Sprintf("%s is a %s series, not a counter", smp.name, smp.typ)
			entry.err = fmt.Errorf("%w: %s", ErrQueryFailed, entry.detail)
			return entry
		}
		switch {
		case math.IsNaN(smp.value) || math.IsInf(smp.value, 0):
			entry.status = ReadingNaN
			entry.detail = fmt.Sprintf("a matching series of %s is %v", smp.name, smp.value)
			return entry
		case smp.value < 0:
			entry.status = ReadingError
			entry.detail = fmt.Sprintf("a matching series of %s is %v: negative, not a counter", smp.name, smp.value)
			entry.err = fmt.Errorf("%w: %s", ErrQueryFailed, entry.detail)
			return entry
		}
		sum += smp.value
	}
	if n == 0 {
		entry.status = ReadingEmpty
		entry.detail = "no series matched"
		return entry
	}
	if math.IsInf(sum, 0) {
		entry.status = ReadingNaN
		entry.detail = "the sum overflowed"
		return entry
	}
	entry.status, entry.value = ReadingOK, sum
	entry.detail = fmt.Sprintf("sum of %d series", n)
	return entry
}
