package api

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"runtime/debug"
	"time"

	"github.com/google/uuid"
)

type correlationKey struct{}

// correlationID is the request's correlation id, set by the middleware.
func correlationID(ctx context.Context) string {
	id, _ := ctx.Value(correlationKey{}).(string)
	return id
}

// maxCorrelationIDLen bounds X-Correlation-Id, as the command path bounds it.
const maxCorrelationIDLen = 256

// validCorrelationID accepts 1-256 visible ASCII characters.
func validCorrelationID(id string) bool {
	if id == "" || len(id) > maxCorrelationIDLen {
		return false
	}
	for i := 0; i < len(id); i++ {
		if c := id[i]; c <= ' ' || c > '~' {
			return false
		}
	}
	return true
}

// recorder remembers the status and size of a response, for the log and for panic recovery.
type recorder struct {
	http.ResponseWriter
	status int
	bytes  int64
}

func (rec *recorder) WriteHeader(status int) {
	if rec.status == 0 {
		rec.status = status
	}
	rec.ResponseWriter.WriteHeader(status)
}

func (rec *recorder) Write(b []byte) (int, error) {
	if rec.status == 0 {
		rec.status = http.StatusOK
	}
	n, err := rec.ResponseWriter.Write(b)
	rec.bytes += int64(n)
	return n, err
}

// Unwrap lets http.ResponseController reach the underlying writer.
func (rec *recorder) Unwrap() http.ResponseWriter { return rec.ResponseWriter }

// middleware gives every request a correlation id (X-Correlation-Id, generated as a UUIDv7 when
// absent, echoed in the response), recovers panics into a 500, and logs one line per request:
// method, path, status, duration — never a header value, so never a token.
func (a *API) middleware(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		rec := &recorder{ResponseWriter: w}
		id := r.Header.Get(headerCorrelationID)
		valid := id == "" || validCorrelationID(id)
		if id == "" || !valid {
			id = newCorrelationID()
		}
		w.Header().Set(headerCorrelationID, id)
		in := r
		r = r.WithContext(context.WithValue(r.Context(), correlationKey{}, id))
		// The mux sets the route it matched on the copy; the caller's request gets it too, as
		// if the mux had been given it, for the request metrics around this handler.
		defer func() { in.Pattern = r.Pattern }()

		defer func() {
			abort := false
			if v := recover(); v != nil {
				if v == http.ErrAbortHandler {
					panic(v)
				}
				a.logger.ErrorContext(r.Context(), "panic serving a request", "method", r.Method, "path", r.URL.Path,
					"correlation_id", id, "panic", fmt.Sprint(v), "stack", string(debug.Stack()))
				if rec.status == 0 {
					a.writeError(rec, r, fmt.Errorf("panic: %v", v))
				} else {
					// The answer is half written: cut the connection so the client sees it failed.
					rec.status, abort = http.StatusInternalServerError, true
				}
			}
			defer func() {
				if abort {
					panic(http.ErrAbortHandler)
				}
			}()
			level := slog.LevelInfo
			if rec.status >= 500 {
				level = slog.LevelError
			}
			a.logger.LogAttrs(r.Context(), level, "request",
				slog.String("method", r.Method),
				slog.String("path", r.URL.Path),
				slog.Int("status", rec.status),
				slog.Duration("duration", time.Since(start)),
				slog.Int64("bytes", rec.bytes),
				slog.String("correlation_id", id),
			)
		}()

		if !valid {
			a.writeError(rec, r, badRequest(headerCorrelationID+": 1-256 visible ASCII characters"))
			return
		}
		next.ServeHTTP(rec, r)
		if rec.status == 0 {
			rec.status = http.StatusOK
		}
	})
}

// newCorrelationID returns a UUIDv7, or a random UUID if the clock cannot be read.
func newCorrelationID() string {
	if id, err := uuid.NewV7(); err == nil {
		return id.String()
	}
	return uuid.NewString()
}
