package dashboard

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/interlock-dev/interlock/events"
	"github.com/interlock-dev/interlock/internal/auth"
)

// Settings of the live stream.
const (
	liveHeartbeat = 15 * time.Second
	liveRetry     = 2 * time.Second
	// maxCatchUp is the most events a reconnecting page is sent to catch up; further behind, it
	// is asked to reload instead.
	maxCatchUp = 1000
	// liveApplyWait bounds how long an event waits for the catalog to apply it before its
	// flag is rendered anyway.
	liveApplyWait = 2 * time.Second
)

// streams lets Close end every open live stream. Its zero value is ready to use.
type streams struct {
	once   sync.Once
	ctx    context.Context
	cancel context.CancelFunc
	open   atomic.Int64 // live streams being served
}

func (s *streams) init() {
	s.once.Do(func() { s.ctx, s.cancel = context.WithCancel(context.Background()) })
}

// StopStreams ends every open live stream and makes new ones end at once; register it with
// http.Server.RegisterOnShutdown, since Shutdown waits for handlers and a stream never returns
// by itself.
func (d *Dashboard) StopStreams() {
	d.streams.init()
	d.streams.cancel()
}

// OpenStreams is the number of live streams being served.
func (d *Dashboard) OpenStreams() int { return int(d.streams.open.Load()) }

// live serves a page's live stream: Server-Sent Events whose id is the stream sequence and
// whose data is HTML for htmx to swap out of band — the row of the flag that changed (view=list)
// or the flag page's summary (view=flag). It starts after the sequence the page was rendered at
// (after=, or the browser's Last-Event-ID on a reconnect), so a page misses nothing.
func (d *Dashboard) live(w http.ResponseWriter, r *http.Request, s *session) error {
	env, err := readEnv(r, s)
	if err != nil {
		return err
	}
	q := r.URL.Query()
	mode, key := q.Get("view"), q.Get("key")
	subject := events.EnvironmentSubjects(env)
	switch mode {
	case "list":
	case "flag", "guard":
		if err := events.ValidateFlagKey(key); err != nil {
			return err
		}
		subject = events.FlagSubject(env, key)
	default:
		return badInput("view: list, flag or guard")
	}
	last, err := d.cfg.Events.LastSequence(r.Context())
	if err != nil {
		return err
	}
	after := q.Get("after")
	if id := r.Header.Get("Last-Event-ID"); id != "" {
		after = id
	}
	from := last + 1
	reload := false
	if after != "" {
		seq, err := strconv.ParseUint(after, 10, 64)
		if err != nil {
			return badInput("after: not a stream sequence")
		}
		from = seq + 1
		if last > seq+maxCatchUp {
			from, reload = last+1, true
		}
	}

	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	rc := http.NewResponseController(w)
	fmt.Fprintf(w, "retry: %d\n: live from sequence %d\n\n", liveRetry.Milliseconds(), from)
	if reload {
		writeEvent(w, 0, "notice", `<p id="live-notice" hx-swap-oob="true">This page missed too many changes while disconnected: <a href="">reload it</a>.</p>`)
	}
	if err := rc.Flush(); err != nil {
		return nil
	}

	d.streams.init()
	d.streams.open.Add(1)
	defer d.streams.open.Add(-1)
	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	defer context.AfterFunc(d.streams.ctx, cancel)()
	defer context.AfterFunc(ctx, func() { _ = rc.SetWriteDeadline(time.Now()) })()

	evs := make(chan events.Event, 256)
	go func() {
		defer cancel()
		err := d.cfg.Events.Follow(ctx, events.Query{Subjects: []string{subject}, FromSequence: from}, func(ev events.Event, derr error) error {
			if derr != nil {
				return nil
			}
			select {
			case evs <- ev:
				return nil
			case <-ctx.Done():
				return ctx.Err()
			}
		})
		if err != nil && ctx.Err() == nil {
			d.logger.ErrorContext(ctx, "live stream cannot follow the event store", "error", err)
		}
	}()

	heartbeat := time.NewTicker(liveHeartbeat)
	defer heartbeat.Stop()
	recheck := time.NewTicker(d.cfg.Recheck)
	defer recheck.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-recheck.C:
			// A revoked token or an expired session ends the stream too.
			if err := d.check(ctx, s); errors.Is(err, errSignedOut) {
				writeEvent(w, 0, "signedout", `<p id="live-notice" hx-swap-oob="true">You were signed out: <a href="/signin">sign in again</a>.</p>`)
				rc.Flush()
				return nil
			}
			if authorizeIn(s.Principal(), auth.ActionRead, env) != nil {
				return nil
			}
		case <-heartbeat.C:
			if _, err := w.Write([]byte(": heartbeat\n\n")); err != nil {
				return nil
			}
			if err := rc.Flush(); err != nil {
				return nil
			}
		case ev := <-evs:
			html, err := d.liveHTML(ctx, s, mode, ev)
			if err != nil {
				d.logger.ErrorContext(ctx, "live render", "error", err)
				return nil
			}
			writeEvent(w, ev.Sequence, "change", html)
			if err := rc.Flush(); err != nil {
				return nil
			}
			heartbeat.Reset(liveHeartbeat)
		}
	}
}

// liveHTML renders what changed with ev, from the catalog once it has applied ev.
func (d *Dashboard) liveHTML(ctx context.Context, s *session, mode string, ev events.Event) (string, error) {
	wctx, cancel := context.WithTimeout(ctx, liveApplyWait)
	_ = d.cfg.Catalog.WaitSequence(wctx, ev.Sequence)
	cancel()
	if ev.Entity != events.EntityFlag {
		return "", nil
	}
	f, ok := d.cfg.Catalog.Flag(ev.Environment, ev.Key)
	if !ok {
		return "", nil
	}
	n := d.notes.get(ev.Environment, ev.Key)
	var buf bytes.Buffer
	var err error
	switch mode {
	case "list":
		canKill := authorizeIn(s.Principal(), auth.ActionKill, ev.Environment) == nil
		err = d.pages.sets["flags"].ExecuteTemplate(&buf, "row", rowData{F: view(f, n), Env: ev.Environment, CanKill: canKill, OOB: true})
	case "flag":
		fd := d.flagData(s, f, n, false)
		fd.OOB = true
		err = d.pages.sets["flag"].ExecuteTemplate(&buf, "summary", fd)
	case "guard":
		// The decisions and the state; the charts fetch their data on their own.
		p, perr := d.loadPanel(ctx, ev.Environment, ev.Key)
		if perr != nil {
			return "", nil
		}
		gd := d.guardData(s, p, "\x00") // the page keeps the decision it shows
		gd.OOB, gd.Now.OOB = true, true
		err = d.pages.sets["guard"].ExecuteTemplate(&buf, "guardlive", gd)
	}
	return buf.String(), err
}

// writeEvent writes one Server-Sent Event; each line of data gets its own "data:" field. An id
// of 0 is left out.
func writeEvent(w http.ResponseWriter, id uint64, name, data string) {
	var b strings.Builder
	if id != 0 {
		fmt.Fprintf(&b, "id: %d\n", id)
	}
	fmt.Fprintf(&b, "event: %s\n", name)
	for line := range strings.SplitSeq(data, "\n") {
		b.WriteString("data: ")
		b.WriteString(strings.TrimRight(line, "\r"))
		b.WriteByte('\n')
	}
	b.WriteByte('\n')
	w.Write([]byte(b.String()))
}
