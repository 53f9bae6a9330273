package source

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"math"
	"net/http"
	"strings"
	"testing"
	"time"
)

// answering is an http.RoundTripper that answers every request with one status and body, in
// memory: the whole path from the API client's decoding to the judgement runs, without a socket.
type answering struct {
	status int
	body   []byte
}

func (a answering) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.Body != nil {
		io.Copy(io.Discard, req.Body)
		req.Body.Close()
	}
	return &http.Response{
		StatusCode: a.status,
		Header:     http.Header{"Content-Type": {"application/json"}},
		Body:       io.NopCloser(strings.NewReader(string(a.body))),
		Request:    req,
	}, nil
}

// FuzzPrometheusAnswer feeds arbitrary API answers through the API client and the judge:
// they never panic, failures match ErrQueryFailed, a non-2xx answer never reads as a value,
// and a reading is ok only for one finite, non-negative sample, and always encodes as JSON.
func FuzzPrometheusAnswer(f *testing.F) {
	for _, s := range []string{
		`{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1700000000.5,"1027"]}]}}`,
		`{"status":"success","data":{"resultType":"vector","result":[]}}`,
		`{"status":"success","data":{"resultType":"scalar","result":[1700000000.5,"NaN"]}}`,
		`{"status":"success","data":{"resultType":"matrix","result":[{"metric":{"a":"b"},"values":[[1700000000,"7"],[1700000000.25,"9"]]}]}}`,
		`{"status":"success","warnings":["w"],"data":{"resultType":"vector","result":[{"metric":{"a":"1"},"value":[1,"1"]},{"metric":{"a":"2"},"value":[1,"2"]}]}}`,
		`{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"histogram":[1,{"count":"1"}]}]}}`,
		`{"status":"error","errorType":"bad_data","error":"parse error"}`,
		`{"status":"success","data":{"resultType":"string","result":[1,"x"]}}`,
		`<html>`,
	} {
		f.Add([]byte(s), 200)
	}
	f.Add([]byte(`{"status":"error","errorType":"timeout","error":"t"}`), 503)
	f.Add([]byte(`{"status":"success","data":{"resultType":"scalar","result":[1700000000.5,"1"]}}`), 502)
	at := time.UnixMilli(1_700_000_000_500)
	f.Fuzz(func(t *testing.T, body []byte, status int) {
		if status < 100 || status > 999 {
			return // net/http refuses these before any body is read
		}
		src, err := NewPrometheusSource(PrometheusOptions{
			URL:    "http://prometheus.invalid",
			Client: &http.Client{Transport: answering{status, body}},
		})
		if err != nil {
			t.Fatal(err)
		}
		r, err := src.Counter(context.Background(), "q", at)
		if err != nil && !errors.Is(err, ErrQueryFailed) {
			t.Fatalf("error %v does not match ErrQueryFailed", err)
		}
		if !r.Status.Valid() {
			t.Fatalf("status %q", r.Status)
		}
		if (err != nil) != (r.Status == ReadingError || r.Status == ReadingTimeout) {
			t.Fatalf("error %v with a %s reading", err, r.Status)
		}
		if status/100 != 2 && err == nil && status != 403 && status != 405 && status != 501 {
			t.Fatalf("an http %d answer read %s", status, r.Status)
		}
		if r.Status == ReadingOK {
			if math.IsNaN(r.Value) || math.IsInf(r.Value, 0) || r.Value < 0 || r.At.After(at.Add(time.Millisecond)) || at.Sub(r.At) > time.Minute {
				t.Fatalf("ok reading %+v", r)
			}
		}
		if _, err := json.Marshal(r); err != nil {
			t.Fatalf("reading %+v does not encode: %v", r, err)
		}
	})
}
