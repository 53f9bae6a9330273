package guard

import (
	"encoding/json"
	"errors"
	"math"
	"testing"
	"time"
)

// FuzzDecodePromResponse feeds arbitrary API answers to the decoder and the judge: they never
// panic, failures match ErrQueryFailed, and a reading is ok only for one finite, non-negative
// sample, and always encodes as JSON.
func FuzzDecodePromResponse(f *testing.F) {
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
	at := time.UnixMilli(1_700_000_000_500)
	f.Fuzz(func(t *testing.T, body []byte, status int) {
		res, err := decodePromResponse(body, status)
		if err != nil {
			if !errors.Is(err, ErrQueryFailed) {
				t.Fatalf("error %v does not match ErrQueryFailed", err)
			}
			return
		}
		if status/100 != 2 {
			t.Fatalf("decoded a success from an http %d answer", status)
		}
		r := Reading{Requested: at, Query: "q", Status: ReadingError}
		judgePromResult(&r, res, at, time.Minute)
		if !r.Status.Valid() || r.Status == ReadingTimeout {
			t.Fatalf("judged status %q", r.Status)
		}
		if r.Status == ReadingOK {
			if len(res.series) != 1 || math.IsNaN(r.Value) || math.IsInf(r.Value, 0) || r.Value < 0 || r.At.After(at.Add(time.Millisecond)) || at.Sub(r.At) > time.Minute {
				t.Fatalf("ok reading %+v from %d series", r, len(res.series))
			}
		}
		if _, err := json.Marshal(r); err != nil {
			t.Fatalf("reading %+v does not encode: %v", r, err)
		}
	})
}
