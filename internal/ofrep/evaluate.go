package ofrep

import (
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/interlock-dev/interlock/targeting"
)

// evaluateOne serves POST /ofrep/v1/evaluate/flags/{key}.
func (h *Handler) evaluateOne(w http.ResponseWriter, r *http.Request, key string) {
	env, err := h.admit(r, headerValue(r.Header, HeaderEnvironment))
	if err != nil {
		h.writeError(w, err, key, kindSingle)
		return
	}
	x := h.acquire()
	defer h.release(x)
	if err := x.read(r, h.cfg.MaxBodyBytes); err != nil {
		h.writeError(w, err, key, kindSingle)
		return
	}
	if err := x.decode(); err != nil {
		h.writeError(w, err, key, kindSingle)
		return
	}
	ev := h.cfg.Flagsets.Flagset(env).Evaluate(key, &x.ctx)
	if h.cfg.Observer != nil {
		h.cfg.Observer.Evaluated(ev.Reason, ev.ErrorCode)
	}
	hdr := w.Header()
	hdr["Content-Type"] = contentTypeJSON
	if ev.ErrorCode != "" {
		status := evalStatus(ev.ErrorCode)
		if status == http.StatusInternalServerError {
			h.logger.Error("evaluation failed", "environment", env, "key", key, "error_code", ev.ErrorCode, "error", ev.ErrorMessage)
		}
		x.out = appendFailure(x.out[:0], key, string(ev.ErrorCode), evalDetails(&ev))
		w.WriteHeader(status)
		_, _ = w.Write(x.out)
		return
	}
	stale := h.stale()
	if stale {
		hdr[HeaderStale] = staleValue
	}
	x.out = appendSuccess(x.out[:0], key, &ev, env, stale)
	_, _ = w.Write(x.out)
}

// evaluateAll serves POST /ofrep/v1/evaluate/flags: every evaluable flag of the environment, with
// an ETag of the flagset's sequence and the context, and 304 when If-None-Match has it.
func (h *Handler) evaluateAll(w http.ResponseWriter, r *http.Request) {
	env, err := h.admit(r, headerValue(r.Header, HeaderEnvironment))
	if err != nil {
		h.writeError(w, err, "", kindBulk)
		return
	}
	x := h.acquire()
	defer h.release(x)
	if err := x.read(r, h.cfg.MaxBodyBytes); err != nil {
		h.writeError(w, err, "", kindBulk)
		return
	}
	if err := x.decode(); err != nil {
		h.writeError(w, err, "", kindBulk)
		return
	}
	fs := h.cfg.Flagsets.Flagset(env)
	if r.URL.RawQuery != "" {
		fs = h.awaitChange(r, env, fs)
	}
	etag := bulkETag(env, fs.Sequence(), x.rawContext)
	hdr := w.Header()
	hdr["Etag"] = []string{etag}
	if inm := r.Header["If-None-Match"]; len(inm) > 0 && etagMatches(inm, etag) {
		w.WriteHeader(http.StatusNotModified)
		return
	}
	stale := h.stale()
	if stale {
		hdr[HeaderStale] = staleValue
	}
	b := append(x.out[:0], `{"flags":[`...)
	for i, key := range fs.Keys() {
		if i > 0 {
			b = append(b, ',')
		}
		ev := fs.Evaluate(key, &x.ctx)
		if h.cfg.Observer != nil {
			h.cfg.Observer.Evaluated(ev.Reason, ev.ErrorCode)
		}
		if ev.ErrorCode != "" {
			if ev.ErrorCode == targeting.ErrorGeneral {
				h.logger.Error("evaluation failed", "environment", env, "key", key, "error", ev.ErrorMessage)
			}
			b = appendFailure(b, key, string(ev.ErrorCode), evalDetails(&ev))
			continue
		}
		b = appendSuccess(b, key, &ev, env, stale)
	}
	// The stream's URL: environment names need no escaping, in a query or in JSON.
	b = append(b, `],"eventStreams":[{"type":"sse",`...)
	if h.cfg.PublicURL != "" {
		b = append(b, `"url":`...)
		b = appendString(b, strings.TrimSuffix(h.cfg.PublicURL, "/"))
		b = b[:len(b)-1] // reopen the string
	} else {
		b = append(b, `"endpoint":{"requestUri":"`...)
	}
	b = append(b, PathEvents+"?environment="...)
	b = append(b, env...)
	b = append(b, '"')
	if h.cfg.PublicURL == "" {
		b = append(b, '}')
	}
	b = append(b, `,"inactivityDelaySec":`...)
	b = strconv.AppendInt(b, int64(max(h.cfg.InactivityDelay/time.Second, 1)), 10)
	b = append(b, `}],"metadata":{"environment":`...)
	b = appendString(b, env)
	b = append(b, `,"sequence":`...)
	b = strconv.AppendUint(b, fs.Sequence(), 10)
	if stale {
		b = append(b, `,"stale":true`...)
	}
	b = append(b, "}}"...)
	x.out = b
	hdr["Content-Type"] = contentTypeJSON
	_, _ = w.Write(b)
}

// awaitChange honours flagConfigEtag, the query parameter of a re-fetch that a change
// notification triggered (ADR-0008): it carries the sequence the notification announced, and when
// this replica has not applied it yet the evaluation waits for it, up to [Config.RefetchWait], so
// that the re-fetch sees the change it was told of.
func (h *Handler) awaitChange(r *http.Request, env string, fs *targeting.Flagset) *targeting.Flagset {
	want, ok := parseConfigTag(r.URL.Query().Get("flagConfigEtag"))
	if !ok || fs.Sequence() >= want {
		return fs
	}
	changed, stop := h.cfg.Flagsets.Watch(env)
	defer stop()
	timer := time.NewTimer(h.cfg.RefetchWait)
	defer timer.Stop()
	for {
		fs = h.cfg.Flagsets.Flagset(env)
		if fs.Sequence() >= want {
			return fs
		}
		select {
		case <-changed:
		case <-timer.C:
			return h.cfg.Flagsets.Flagset(env)
		case <-r.Context().Done():
			return fs
		case <-h.done:
			return fs
		}
	}
}

// configTag is the flag configuration tag of an environment's flagset, as change notifications
// carry it: its sequence, quoted like an entity tag.
func configTag(seq uint64) string {
	return `"` + strconv.FormatUint(seq, 10) + `"`
}

// parseConfigTag reads a tag made by configTag, with or without quotes or a W/ prefix.
func parseConfigTag(s string) (uint64, bool) {
	s = strings.TrimPrefix(strings.TrimSpace(s), "W/")
	s = strings.Trim(s, `"`)
	seq, err := strconv.ParseUint(s, 10, 64)
	return seq, err == nil
}

// etagVersion changes whenever the answers for the same flagset and context could change (a
// new answer format, a different engine): old tags must not match.
const etagVersion = 1

// bulkETag is the entity tag of a bulk evaluation: a hash of the environment, its flagset's
// sequence and the context exactly as sent. A changed flag, segment or context gives a new tag.
func bulkETag(env string, seq uint64, rawContext []byte) string {
	const (
		offset = 14695981039346656037
		prime  = 1099511628211
	)
	h := uint64(offset)
	mix := func(c byte) { h = (h ^ uint64(c)) * prime }
	mix(etagVersion)
	for i := 0; i < len(env); i++ {
		mix(env[i])
	}
	mix(0)
	for i := range 8 {
		mix(byte(seq >> (8 * i)))
	}
	for _, c := range rawContext {
		mix(c)
	}
	var b [18]byte
	b[0], b[17] = '"', '"'
	for i := range 16 {
		b[1+i] = hexDigits[(h>>(60-4*i))&0xf]
	}
	return string(b[:])
}

// etagMatches reports whether an If-None-Match header (any number of lines, each a
// comma-separated list) names etag, or is "*". The comparison is weak, as RFC 9110 says for
// If-None-Match.
func etagMatches(lines []string, etag string) bool {
	for _, line := range lines {
		for line != "" {
			var tag string
			tag, line, _ = strings.Cut(line, ",")
			tag = strings.TrimSpace(tag)
			if tag == "*" || strings.TrimPrefix(tag, "W/") == etag {
				return true
			}
		}
	}
	return false
}

// headerValue is the first value of a header given in canonical form, without allocating.
func headerValue(hdr http.Header, canonical string) string {
	if v := hdr[canonical]; len(v) > 0 {
		return v[0]
	}
	return ""
}
