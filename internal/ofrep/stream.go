package ofrep

import (
	"errors"
	"net/http"
	"strconv"
	"time"
)

// streamWriteTimeout bounds each write to an event stream, so a client that stopped reading
// cannot hold its stream open forever.
const streamWriteTimeout = 10 * time.Second

// stream serves GET /ofrep/v1/events, the change notifications of ADR-0008 as Server-Sent
// Events. Each change of the environment's flagset (coalesced) is one event,
//
//	id: <sequence>
//	event: message
//	data: {"type":"refetchEvaluation","etag":"\"<sequence>\""}
//
// after which the provider re-fetches the bulk evaluation. A client reconnecting with
// Last-Event-ID older than the current sequence gets one event at once: it missed a change.
// An idle stream carries a comment line every [Config.Heartbeat]. The stream ends when the client
// goes away or [Handler.Close] is called.
func (h *Handler) stream(w http.ResponseWriter, r *http.Request) {
	asked := r.URL.Query().Get("environment")
	if asked == "" {
		asked = headerValue(r.Header, HeaderEnvironment)
	}
	env, err := h.admit(r, asked)
	if err != nil {
		h.writeError(w, err, "", kindGeneral)
		return
	}
	select {
	case <-h.done:
		h.writeError(w, ErrClosed, "", kindGeneral)
		return
	default:
	}
	changed, stop := h.cfg.Flagsets.Watch(env)
	defer stop()
	h.streams.Add(1)
	defer h.streams.Add(-1)

	hdr := w.Header()
	hdr["Content-Type"] = []string{"text/event-stream"}
	hdr["Cache-Control"] = []string{"no-cache"}
	hdr["X-Accel-Buffering"] = []string{"no"} // nginx: do not buffer the stream
	w.WriteHeader(http.StatusOK)
	if r.Method == http.MethodHead {
		return
	}
	rc := http.NewResponseController(w)
	send := func(b []byte) bool {
		if err := rc.SetWriteDeadline(time.Now().Add(streamWriteTimeout)); err != nil && !errors.Is(err, http.ErrNotSupported) {
			return false
		}
		if _, err := w.Write(b); err != nil {
			return false
		}
		return rc.Flush() == nil
	}

	seq := h.cfg.Flagsets.Flagset(env).Sequence()
	b := append([]byte(nil), ": interlock change notifications for environment "...)
	b = append(b, env...)
	b = append(b, "\n\n"...)
	if last, err := strconv.ParseUint(headerValue(r.Header, "Last-Event-Id"), 10, 64); err == nil && last < seq {
		b = appendRefetch(b, seq)
	}
	if !send(b) {
		return
	}
	sent := seq
	heartbeat := time.NewTicker(h.cfg.Heartbeat)
	defer heartbeat.Stop()
	for {
		select {
		case <-r.Context().Done():
			return
		case <-h.done:
			return
		case <-changed:
			seq := h.cfg.Flagsets.Flagset(env).Sequence()
			if seq == sent {
				continue
			}
			sent = seq
			if !send(appendRefetch(b[:0], seq)) {
				return
			}
		case <-heartbeat.C:
			if !send(append(b[:0], ": heartbeat\n\n"...)) {
				return
			}
		}
	}
}

// appendRefetch appends one refetchEvaluation event for the flagset at seq.
func appendRefetch(b []byte, seq uint64) []byte {
	b = append(b, "id: "...)
	b = strconv.AppendUint(b, seq, 10)
	b = append(b, "\nevent: message\ndata: {\"type\":\"refetchEvaluation\",\"etag\":"...)
	b = appendString(b, configTag(seq))
	return append(b, "}\n\n"...)
}
