package ofrep

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"net/url"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/interlock-dev/interlock/internal/metrics"
)

// benchWriter is the least a handler can write to: it keeps the status and counts the bytes.
type benchWriter struct {
	hdr    http.Header
	status int
	bytes  int
}

func (w *benchWriter) Header() http.Header { return w.hdr }

func (w *benchWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	w.bytes += len(b)
	return len(b), nil
}

func (w *benchWriter) WriteHeader(status int) { w.status = status }

// BenchmarkOFREPEvaluate measures the handler alone, from a parsed request to the written answer
// (authentication with the token store's cache, decoding, evaluation, encoding), without a
// network or httptest in the way.
func BenchmarkOFREPEvaluate(b *testing.B) {
	s := startServer(b)
	s.create("production", "static-bool", boolFlag(true))
	s.create("production", "button-color", stringFlag())
	s.create("production", "new-checkout", splitFlag())
	cases := []struct {
		name, path, body string
		status           int
	}{
		{"a-static", pathOne + "static-bool", `{"context":{"targetingKey":"user-1234"}}`, 200},
		{"b-targeting", pathOne + "button-color", `{"context":{"targetingKey":"user-1234","role":"beta","country":"NL"}}`, 200},
		{"c-split", pathOne + "new-checkout", `{"context":{"targetingKey":"user-1234"}}`, 200},
		{"not-found", pathOne + "no-such-flag", `{"context":{"targetingKey":"user-1234"}}`, 404},
		{"bulk-3-flags", PathEvaluate, `{"context":{"targetingKey":"user-1234","role":"beta"}}`, 200},
	}
	for _, c := range cases {
		b.Run(c.name, func(b *testing.B) {
			b.SetBytes(int64(len(c.body)))
			serveBench(b, s.handler, c.path, http.Header{"Authorization": {"Bearer " + s.token}, "Content-Type": {"application/json"}}, []byte(c.body), c.status)
		})
	}
}

// serveBench serves one POST of body to path with header through h in a b.Loop, reusing the
// request and the writer as a server reuses its buffers, and fails unless the last answer had
// status want.
func serveBench(b *testing.B, h http.Handler, path string, header http.Header, body []byte, want int) {
	b.Helper()
	rd := bytes.NewReader(body)
	req := (&http.Request{
		Method: http.MethodPost, URL: &url.URL{Path: path}, Header: header,
		Body: io.NopCloser(rd), ContentLength: int64(len(body)),
	}).WithContext(context.Background())
	w := &benchWriter{hdr: http.Header{}}
	b.ReportAllocs()
	for b.Loop() {
		rd.Reset(body)
		clear(w.hdr)
		w.status = 0
		h.ServeHTTP(w, req)
	}
	if w.status != want {
		b.Fatalf("status %d, want %d", w.status, want)
	}
}

// BenchmarkOFREPReadAuth compares one evaluation with a token (the default) and without one on a
// server with public reads, in one run: the cost of authenticating every evaluation.
func BenchmarkOFREPReadAuth(b *testing.B) {
	s := startServer(b, func(c *Config) { c.PublicRead = true })
	s.create("production", "static-bool", boolFlag(true))
	body := []byte(`{"context":{"targetingKey":"user-1234"}}`)
	for _, c := range []struct {
		name   string
		header http.Header
	}{
		{"token", http.Header{"Authorization": {"Bearer " + s.token}, "Content-Type": {"application/json"}}},
		{"public", http.Header{"Content-Type": {"application/json"}}},
	} {
		b.Run(c.name, func(b *testing.B) {
			serveBench(b, s.handler, pathOne+"static-bool", c.header, body, http.StatusOK)
		})
	}
}

// BenchmarkOFREPMetrics compares, in one run, the handler without metrics and with them: the
// evaluation observer, and the request metrics around the handler as the server has them.
func BenchmarkOFREPMetrics(b *testing.B) {
	reg := prometheus.NewRegistry()
	evals, err := metrics.NewEvaluations(reg)
	if err != nil {
		b.Fatal(err)
	}
	requests, err := metrics.NewHTTP(reg)
	if err != nil {
		b.Fatal(err)
	}
	bare := startServer(b)
	instrumented := startServer(b, func(c *Config) { c.Observer = evals })
	for _, s := range []*testServer{bare, instrumented} {
		s.create("production", "static-bool", boolFlag(true))
		s.create("production", "new-checkout", splitFlag())
	}
	for _, c := range []struct{ name, path string }{
		{"single", pathOne + "static-bool"},
		{"bulk-2-flags", PathEvaluate},
	} {
		for _, v := range []struct {
			name    string
			s       *testServer
			handler http.Handler
		}{
			{"off", bare, bare.handler},
			{"on", instrumented, requests.Handler(instrumented.handler)},
		} {
			b.Run(c.name+"/metrics-"+v.name, func(b *testing.B) {
				header := http.Header{"Authorization": {"Bearer " + v.s.token}, "Content-Type": {"application/json"}}
				serveBench(b, v.handler, c.path, header, []byte(`{"context":{"targetingKey":"user-1234"}}`), http.StatusOK)
			})
		}
	}
}
