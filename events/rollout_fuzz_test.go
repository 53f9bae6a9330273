package events

import (
	"encoding/json"
	"errors"
	"math"
	"testing"
)

// FuzzRolloutPlan: any JSON that decodes as a plan validates without panicking; every error
// names a field; a valid plan's stages serve valid splits that grow, and it survives a JSON
// round trip still valid.
func FuzzRolloutPlan(f *testing.F) {
	b, _ := json.Marshal(validPlan())
	f.Add(b)
	full := validPlan()
	full.Stages = []Stage{{Percent: 0.07, MinHold: Duration(60e9)}, {Percent: 33.33}, {Percent: 100}}
	full.OnTrip, full.Valve = OnTripOpenValve, &ValveRef{Flag: "search.degrade"}
	b, _ = json.Marshal(full.WithDefaults())
	f.Add(b)
	f.Add([]byte(`{"treatment":"on","control":"off","stages":[{"percent":1e308},{"percent":-0}],"metrics":[{"name":"x","kind":"msprt","requests":"a","errors":"b","ceiling":0.5}],"source":{"type":"scrape","url":"http://h","flagLabel":"-","lag":"-1s"},"tick":"1h1s","alpha":1e-300}`))
	f.Add([]byte(`{"stages":[{"percent":5,"minHold":null}],"tick":null,"valve":{}}`))
	f.Add([]byte(`{"treatment":"on","control":"off","metrics":[{"name":"e","requests":"a","errors":"b"},{"name":"l","kind":"mean","count":"d_count","sum":"d_sum","margin":0.1,"tau":0.05}],"source":{"type":"scrape","url":"http://h"}}`))
	flag := boolFlag()
	f.Fuzz(func(t *testing.T, data []byte) {
		var p RolloutPlan
		if json.Unmarshal(data, &p) != nil {
			return
		}
		for _, cfg := range []*FlagConfig{nil, &flag} {
			err := p.Validate(cfg)
			if err != nil {
				if !errors.Is(err, ErrInvalid) || len(fields(err)) == 0 {
					t.Fatalf("error %v does not name a field", err)
				}
				continue
			}
			q := p.WithDefaults()
			prev := -1
			for _, s := range q.Stages {
				sv := StageServe(q.Treatment, q.Control, s.Percent)
				w := 10000
				if sv.Variant == "" {
					w = sv.Split[q.Treatment]
					if w <= 0 || sv.Split[q.Control] <= 0 || w+sv.Split[q.Control] != 10000 {
						t.Fatalf("stage %v serves %+v", s.Percent, sv)
					}
				} else if sv.Variant != q.Treatment {
					t.Fatalf("stage %v serves %+v", s.Percent, sv)
				}
				if w <= prev || math.Abs(float64(w)-s.Percent*100) > 1e-6*100 {
					t.Fatalf("stage %v: weight %d after %d", s.Percent, w, prev)
				}
				prev = w
			}
			b, err := json.Marshal(q)
			if err != nil {
				t.Fatal(err)
			}
			var back RolloutPlan
			if err := json.Unmarshal(b, &back); err != nil {
				t.Fatalf("valid plan %s does not decode: %v", b, err)
			}
			if err := back.Validate(cfg); err != nil {
				t.Fatalf("valid plan invalid after a round trip: %v", err)
			}
		}
	})
}

// FuzzValveConfigured: any JSON that decodes as a valve configuration validates without
// panicking, and every error names a field.
func FuzzValveConfigured(f *testing.F) {
	b, _ := json.Marshal(ValveConfigured{Variant: "degraded", Segment: "tenant.acme", Policy: validPolicy()})
	f.Add(b)
	f.Add([]byte(`{"variant":"degraded"}`))
	f.Add([]byte(`{"variant":"","segment":"..","policy":{"source":{},"objective":-1,"burnRate":1e309,"longWindow":"-5m","shortWindow":null}}`))
	cfg := operational()
	f.Fuzz(func(t *testing.T, data []byte) {
		var v ValveConfigured
		if json.Unmarshal(data, &v) != nil {
			return
		}
		for _, c := range []*FlagConfig{nil, &cfg} {
			if err := v.Validate(c); err != nil && (!errors.Is(err, ErrInvalid) || len(fields(err)) == 0) {
				t.Fatalf("error %v does not name a field", err)
			}
		}
	})
}
