package source_test

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/interlock-dev/interlock/guard/source"
)

// promAPIStub is an HTTP server answering /api/v1/query with a canned status and body, and
// recording the requests it got (with their form parsed: the API client POSTs the query). It stands at the process boundary only: the real
// Prometheus is exercised in prometheus_real_test.go.
type promAPIStub struct {
	mu       sync.Mutex
	requests []*http.Request
	status   int
	body     string
	block    bool // wait for the request's context to end instead of answering
}

func newPromAPIStub(t *testing.T) (*promAPIStub, *httptest.Server) {
	t.Helper()
	st := &promAPIStub{status: http.StatusOK}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		r.ParseForm() // reads the body, so that a client hanging up ends r's context
		st.mu.Lock()
		st.requests = append(st.requests, r.Clone(context.Background()))
		status, body, block := st.status, st.body, st.block
		st.mu.Unlock()
		if block {
			<-r.Context().Done()
			return
		}
		if r.URL.Path != "/prefix/api/v1/query" {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		fmt.Fprint(w, body)
	}))
	t.Cleanup(srv.Close)
	return st, srv
}

func (st *promAPIStub) answer(status int, body string) {
	st.mu.Lock()
	defer st.mu.Unlock()
	st.status, st.body = status, body
}

func (st *promAPIStub) last() *http.Request {
	st.mu.Lock()
	defer st.mu.Unlock()
	return st.requests[len(st.requests)-1]
}

func TestPrometheusSourceStatuses(t *testing.T) {
	stub, srv := newPromAPIStub(t)
	src, err := source.NewPrometheusSource(source.PrometheusOptions{URL: srv.URL + "/prefix/", StaleAfter: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	at := time.UnixMilli(1_700_000_000_500)
	ts := "1700000000.500"
	old := "1699999900.000" // 100.5 s before at
	tests := []struct {
		name    string
		status  int
		body    string
		want    source.ReadingStatus
		value   float64
		errIs   []error
		detail  string
		sampled time.Time
	}{
		{name: "vector ok", body: `{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[` + ts + `,"1027"]}]}}`,
			want: source.ReadingOK, value: 1027, sampled: at},
		{name: "vector zero is ok", body: `{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[` + ts + `,"0"]}]}}`,
			want: source.ReadingOK, value: 0, sampled: at},
		{name: "scalar ok", body: `{"status":"success","data":{"resultType":"scalar","result":[` + ts + `,"12.5"]}}`,
			want: source.ReadingOK, value: 12.5, sampled: at},
		{name: "empty vector is not zero", body: `{"status":"success","data":{"resultType":"vector","result":[]}}`,
			want: source.ReadingEmpty, detail: "no series"},
		{name: "empty matrix", body: `{"status":"success","data":{"resultType":"matrix","result":[]}}`,
			want: source.ReadingEmpty},
		{name: "several series", body: `{"status":"success","data":{"resultType":"vector","result":[{"metric":{"variant":"on"},"value":[` + ts + `,"1"]},{"metric":{"variant":"off"},"value":[` + ts + `,"2"]}]}}`,
			want: source.ReadingAmbiguous, detail: `variant="off"`},
		{name: "NaN", body: `{"status":"success","data":{"resultType":"scalar","result":[` + ts + `,"NaN"]}}`,
			want: source.ReadingNaN},
		{name: "+Inf", body: `{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[` + ts + `,"+Inf"]}]}}`,
			want: source.ReadingNaN, detail: "+Inf"},
		{name: "negative", body: `{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[` + ts + `,"-3"]}]}}`,
			want: source.ReadingError, detail: "negative"},
		{name: "stale scalar", body: `{"status":"success","data":{"resultType":"scalar","result":[` + old + `,"5"]}}`,
			want: source.ReadingStale, value: 5, detail: "1m40.5s old", sampled: time.UnixMilli(1_699_999_900_000)},
		{name: "matrix newest point", body: `{"status":"success","data":{"resultType":"matrix","result":[{"metric":{"variant":"on"},"values":[[1700000000.000,"7"],[1700000000.250,"9"],[1699999999.000,"6"]]}]}}`,
			want: source.ReadingOK, value: 9, sampled: time.UnixMilli(1_700_000_000_250)},
		{name: "matrix stale", body: `{"status":"success","data":{"resultType":"matrix","result":[{"metric":{},"values":[[1699999800,"7"],[` + old + `,"8"]]}]}}`,
			want: source.ReadingStale, value: 8},
		{name: "matrix series without points", body: `{"status":"success","data":{"resultType":"matrix","result":[{"metric":{},"values":[]}]}}`,
			want: source.ReadingEmpty},
		{name: "native histogram", body: `{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"histogram":[` + ts + `,{"count":"3","sum":"1","buckets":[]}]}]}}`,
			want: source.ReadingError, detail: "histogram"},
		{name: "warnings kept", body: `{"status":"success","warnings":["partial response"],"data":{"resultType":"vector","result":[{"metric":{},"value":[` + ts + `,"4"]}]}}`,
			want: source.ReadingOK, value: 4, detail: "warnings: partial response", sampled: at},
		{name: "string result", body: `{"status":"success","data":{"resultType":"string","result":[` + ts + `,"x"]}}`,
			want: source.ReadingError, errIs: []error{source.ErrQueryFailed, source.ErrMalformedResponse}},
		{name: "bad data", status: 400, body: `{"status":"error","errorType":"bad_data","error":"1:5: parse error: unclosed left parenthesis"}`,
			want: source.ReadingError, errIs: []error{source.ErrQueryFailed}, detail: "bad_data"},
		{name: "query timeout", status: 503, body: `{"status":"error","errorType":"timeout","error":"query timed out in expression evaluation"}`,
			want: source.ReadingTimeout, errIs: []error{source.ErrQueryFailed, context.DeadlineExceeded}},
		{name: "execution error", status: 422, body: `{"status":"error","errorType":"execution","error":"many-to-many matching not allowed"}`,
			want: source.ReadingError, errIs: []error{source.ErrQueryFailed}},
		{name: "proxy error page", status: 502, body: "<html>bad gateway</html>",
			want: source.ReadingError, errIs: []error{source.ErrQueryFailed}, detail: "http 502"},
		{name: "not json", body: "hello",
			want: source.ReadingError, errIs: []error{source.ErrQueryFailed, source.ErrMalformedResponse}},
		{name: "value not a string", body: `{"status":"success","data":{"resultType":"scalar","result":[` + ts + `,1]}}`,
			want: source.ReadingError, errIs: []error{source.ErrMalformedResponse}},
		{name: "value not a number", body: `{"status":"success","data":{"resultType":"scalar","result":[` + ts + `,"many"]}}`,
			want: source.ReadingError, errIs: []error{source.ErrMalformedResponse}},
		{name: "timestamp out of range", body: `{"status":"success","data":{"resultType":"scalar","result":[1e300,"1"]}}`,
			want: source.ReadingError, errIs: []error{source.ErrMalformedResponse}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			status := tt.status
			if status == 0 {
				status = http.StatusOK
			}
			stub.answer(status, tt.body)
			q := `sum(requests_total{variant="on"})`
			r, err := src.Counter(context.Background(), q, at)
			if r.Status != tt.want {
				t.Fatalf("status = %q (%s), want %q", r.Status, r.Detail, tt.want)
			}
			if r.Query != q || r.Endpoint != srv.URL+"/prefix/" || !r.Requested.Equal(at) {
				t.Errorf("reading %+v does not say what was asked", r)
			}
			if r.Status == source.ReadingOK || r.Status == source.ReadingStale {
				if r.Value != tt.value {
					t.Errorf("value = %v, want %v", r.Value, tt.value)
				}
			} else if r.Value != 0 {
				t.Errorf("value = %v on a %s reading, want 0", r.Value, r.Status)
			}
			if !tt.sampled.IsZero() && !r.At.Equal(tt.sampled) {
				t.Errorf("at = %v, want %v", r.At, tt.sampled)
			}
			if r.OK() != (tt.want == source.ReadingOK) {
				t.Errorf("OK() = %v", r.OK())
			}
			if math.IsNaN(r.Value) || math.IsInf(r.Value, 0) {
				t.Errorf("value %v would not encode", r.Value)
			}
			if tt.detail != "" && !strings.Contains(r.Detail, tt.detail) {
				t.Errorf("detail %q does not contain %q", r.Detail, tt.detail)
			}
			failed := tt.want == source.ReadingError || tt.want == source.ReadingTimeout
			if (err != nil) != failed {
				t.Fatalf("err = %v for a %s reading", err, r.Status)
			}
			for _, target := range tt.errIs {
				if !errors.Is(err, target) {
					t.Errorf("error %v does not match %v", err, target)
				}
			}
		})
	}
	var pe *source.PrometheusError
	stub.answer(400, `{"status":"error","errorType":"bad_data","error":"nope"}`)
	if _, err := src.Counter(context.Background(), "x(", at); !errors.As(err, &pe) || pe.Type != "bad_data" || pe.StatusCode != 400 || pe.Message != "nope" {
		t.Errorf("error %v is not the API's bad_data", err)
	}
}

func TestPrometheusSourceRequest(t *testing.T) {
	stub, srv := newPromAPIStub(t)
	stub.answer(200, `{"status":"success","data":{"resultType":"scalar","result":[1700000000.5,"1"]}}`)
	tests := []struct {
		name string
		opts source.PrometheusOptions
		auth string
	}{
		{"no auth", source.PrometheusOptions{}, ""},
		{"bearer", source.PrometheusOptions{BearerToken: "s3cret"}, "Bearer s3cret"},
		{"basic", source.PrometheusOptions{Username: "guard", Password: "pw"}, "Basic Z3VhcmQ6cHc="},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			opts := tt.opts
			opts.URL = srv.URL + "/prefix"
			opts.Timeout = 7 * time.Second
			src, err := source.NewPrometheusSource(opts)
			if err != nil {
				t.Fatal(err)
			}
			q := `sum(http_requests_total{flag="checkout-v2",variant="on"}) + 0 # & ?`
			if _, err := src.Counter(context.Background(), q, time.UnixMilli(1_700_000_000_500)); err != nil {
				t.Fatal(err)
			}
			req := stub.last()
			if req.Method != http.MethodPost || req.URL.Path != "/prefix/api/v1/query" {
				t.Errorf("request %s %s", req.Method, req.URL.Path)
			}
			v := req.Form
			if at, err := strconv.ParseFloat(v.Get("time"), 64); err != nil || int64(math.Round(at*1000)) != 1_700_000_000_500 {
				t.Errorf("time %q, want 1700000000.5", v.Get("time"))
			}
			if v.Get("query") != q || v.Get("timeout") != "7s" {
				t.Errorf("query parameters %v", v)
			}
			if got := req.Header.Get("User-Agent"); got != "interlock-guard" {
				t.Errorf("User-Agent = %q", got)
			}
			if got := req.Header.Get("Authorization"); got != tt.auth {
				t.Errorf("Authorization = %q, want %q", got, tt.auth)
			}
		})
	}
}

func TestPrometheusSourceFailures(t *testing.T) {
	at := time.Unix(1_700_000_000, 0)
	t.Run("timeout", func(t *testing.T) {
		stub, srv := newPromAPIStub(t)
		stub.block = true
		src, err := source.NewPrometheusSource(source.PrometheusOptions{URL: srv.URL + "/prefix", Timeout: 50 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		r, err := src.Counter(context.Background(), "x", at)
		if r.Status != source.ReadingTimeout || !errors.Is(err, source.ErrQueryFailed) || !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("reading %+v, err %v", r, err)
		}
	})
	t.Run("caller's deadline", func(t *testing.T) {
		stub, srv := newPromAPIStub(t)
		stub.block = true
		src, err := source.NewPrometheusSource(source.PrometheusOptions{URL: srv.URL + "/prefix"})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
		defer cancel()
		r, err := src.Counter(ctx, "x", at)
		if r.Status != source.ReadingTimeout || !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("reading %+v, err %v", r, err)
		}
	})
	t.Run("cancelled", func(t *testing.T) {
		_, srv := newPromAPIStub(t)
		src, err := source.NewPrometheusSource(source.PrometheusOptions{URL: srv.URL + "/prefix"})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		r, err := src.Counter(ctx, "x", at)
		if r.Status != source.ReadingError || !errors.Is(err, context.Canceled) || !errors.Is(err, source.ErrQueryFailed) {
			t.Fatalf("reading %+v, err %v", r, err)
		}
	})
	t.Run("connection refused", func(t *testing.T) {
		_, srv := newPromAPIStub(t)
		srv.Close()
		src, err := source.NewPrometheusSource(source.PrometheusOptions{URL: srv.URL})
		if err != nil {
			t.Fatal(err)
		}
		r, err := src.Counter(context.Background(), "x", at)
		if r.Status != source.ReadingError || !errors.Is(err, source.ErrQueryFailed) {
			t.Fatalf("reading %+v, err %v", r, err)
		}
	})
	t.Run("body too large", func(t *testing.T) {
		stub, srv := newPromAPIStub(t)
		stub.answer(200, `{"status":"success","data":{"resultType":"vector","result":[`+strings.Repeat(`{"metric":{},"value":[1,"1"]},`, 100)+`]}}`)
		src, err := source.NewPrometheusSource(source.PrometheusOptions{URL: srv.URL + "/prefix", MaxBytes: 1000})
		if err != nil {
			t.Fatal(err)
		}
		r, err := src.Counter(context.Background(), "x", at)
		if r.Status != source.ReadingError || !errors.Is(err, source.ErrQueryFailed) || !strings.Contains(r.Detail, "larger than 1000") {
			t.Fatalf("reading %+v, err %v", r, err)
		}
	})
	t.Run("invalid input sends nothing", func(t *testing.T) {
		stub, srv := newPromAPIStub(t)
		src, err := source.NewPrometheusSource(source.PrometheusOptions{URL: srv.URL})
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range []struct {
			q  string
			at time.Time
		}{{"", at}, {"  ", at}, {"x", time.Time{}}, {"x\xff", at}, {strings.Repeat("x", 8001), at}} {
			r, err := src.Counter(context.Background(), c.q, c.at)
			if !errors.Is(err, source.ErrInvalidQuery) || r.Status != source.ReadingError {
				t.Errorf("Counter(%.20q, %v) = %+v, %v", c.q, c.at, r, err)
			}
		}
		if len(stub.requests) != 0 {
			t.Errorf("%d requests sent", len(stub.requests))
		}
	})
}

func TestPrometheusOptionsValidate(t *testing.T) {
	tests := []struct {
		name string
		opts source.PrometheusOptions
		bad  string // empty: valid
	}{
		{"minimal", source.PrometheusOptions{URL: "http://127.0.0.1:9090"}, ""},
		{"https with prefix", source.PrometheusOptions{URL: "https://example.org/prometheus/", Lag: time.Minute, StaleAfter: 5 * time.Minute}, ""},
		{"empty url", source.PrometheusOptions{}, "url is empty"},
		{"relative url", source.PrometheusOptions{URL: "/api"}, "scheme"},
		{"ftp", source.PrometheusOptions{URL: "ftp://x"}, "scheme"},
		{"no host", source.PrometheusOptions{URL: "http://"}, "no host"},
		{"query string", source.PrometheusOptions{URL: "http://x/?a=b"}, "query string"},
		{"fragment", source.PrometheusOptions{URL: "http://x/#a"}, "fragment"},
		{"unparsable", source.PrometheusOptions{URL: "http://x:port"}, "url"},
		{"negative timeout", source.PrometheusOptions{URL: "http://x", Timeout: -time.Second}, "timeout"},
		{"negative lag", source.PrometheusOptions{URL: "http://x", Lag: -time.Second}, "lag"},
		{"huge lag", source.PrometheusOptions{URL: "http://x", Lag: 2 * time.Hour}, "lag"},
		{"negative stale", source.PrometheusOptions{URL: "http://x", StaleAfter: -1}, "stale"},
		{"negative max bytes", source.PrometheusOptions{URL: "http://x", MaxBytes: -1}, "max bytes"},
		{"bearer and basic", source.PrometheusOptions{URL: "http://x", BearerToken: "t", Username: "u"}, "exclusive"},
		{"password alone", source.PrometheusOptions{URL: "http://x", Password: "p"}, "without a username"},
		{"colon in user", source.PrometheusOptions{URL: "http://x", Username: "a:b"}, "colon"},
		{"header injection", source.PrometheusOptions{URL: "http://x", BearerToken: "t\r\nX-Evil: 1"}, "control characters"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			src, err := source.NewPrometheusSource(tt.opts)
			if tt.bad == "" {
				if err != nil || src == nil {
					t.Fatalf("NewPrometheusSource: %v", err)
				}
				return
			}
			if !errors.Is(err, source.ErrInvalidSource) || !strings.Contains(err.Error(), tt.bad) {
				t.Fatalf("error = %v, want ErrInvalidSource about %q", err, tt.bad)
			}
			if src != nil {
				t.Fatal("a source came back with the error")
			}
		})
	}
	// Every problem is reported at once.
	err := source.PrometheusOptions{URL: "x", Timeout: -1, Lag: -1}.Validate()
	for _, want := range []string{"scheme", "timeout", "lag"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("joined error %v lacks %q", err, want)
		}
	}
	src, err := source.NewPrometheusSource(source.PrometheusOptions{URL: "http://user:pw@127.0.0.1:9090"})
	if err != nil {
		t.Fatal(err)
	}
	if src.Lag() != 30*time.Second || strings.Contains(src.Endpoint(), "pw") {
		t.Errorf("Lag %v, Endpoint %q", src.Lag(), src.Endpoint())
	}
}
