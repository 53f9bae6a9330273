package local_test

import (
	"encoding/json"
	"errors"
	"reflect"
	"testing"

	"github.com/interlock-dev/interlock/local"
)

func FuzzDecodeHeartbeat(f *testing.F) {
	f.Add("_INTERLOCK.presence.prod.svc-1", []byte(`{"id":"svc-1","name":"checkout","environment":"prod","sequence":7,"time":"2026-01-01T00:00:00Z","intervalMs":2000,"ready":true}`))
	f.Add("_INTERLOCK.presence.prod.svc-1", []byte(`{"id":"svc-1","environment":"prod","intervalMs":2000,"leaving":true}`))
	f.Add("_INTERLOCK.presence.dev.svc-1", []byte(`{"id":"svc-1","environment":"prod","intervalMs":2000}`))
	f.Add("_INTERLOCK.presence.prod", []byte(`{}`))
	f.Add("x", []byte(`null`))
	f.Fuzz(func(t *testing.T, subject string, data []byte) {
		hb, err := local.DecodeHeartbeat(subject, data)
		if err != nil {
			if !errors.Is(err, local.ErrMalformedHeartbeat) {
				t.Fatalf("error %v does not wrap ErrMalformedHeartbeat", err)
			}
			if !reflect.DeepEqual(hb, local.Heartbeat{}) {
				t.Fatalf("a heartbeat %+v with an error", hb)
			}
			return
		}
		if err := hb.Validate(); err != nil {
			t.Fatalf("decoded an invalid heartbeat: %v", err)
		}
		if subject != local.PresenceSubject(hb.Environment, hb.ID) {
			t.Fatalf("subject %q for %s/%s", subject, hb.Environment, hb.ID)
		}
		again, err := json.Marshal(hb)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := local.DecodeHeartbeat(subject, again); err != nil {
			t.Fatalf("re-encoded heartbeat does not decode: %v", err)
		}
	})
}

func FuzzDecodeSnapshot(f *testing.F) {
	f.Add("prod", []byte(`{"format":1,"environment":"prod","sequence":9,"time":"2026-01-01T00:00:00Z","flags":[{"key":"a","environment":"prod","kind":"release","variants":{"on":true,"off":false},"defaultVariant":"on","offVariant":"off","enabled":true,"archived":false,"version":2,"createdAt":"2026-01-01T00:00:00Z","updatedAt":"2026-01-01T00:00:00Z","updatedBy":"x"}],"segments":[{"key":"beta","environment":"prod","included":["u1"],"version":1}]}`))
	f.Add("prod", []byte(`{"format":2,"environment":"prod","sequence":9}`))
	f.Add("prod", []byte(`{"format":1,"environment":"prod","sequence":9,"flags":[{"key":"a","environment":"prod","version":1},{"key":"a","environment":"prod","version":1}]}`))
	f.Add("prod", []byte(`{"format":1,"environment":"prod","sequence":9,"flags":[{"key":"a","environment":"dev","version":1}]}`))
	f.Add("prod", []byte(`[]`))
	f.Fuzz(func(t *testing.T, env string, data []byte) {
		snap, err := local.DecodeSnapshot(env, data)
		if err != nil {
			if !errors.Is(err, local.ErrMalformedSnapshot) {
				t.Fatalf("error %v does not wrap ErrMalformedSnapshot", err)
			}
			return
		}
		if snap.Environment != env || snap.Format != local.SnapshotFormat || snap.Sequence == 0 {
			t.Fatalf("decoded %+v for %q", snap, env)
		}
		// Whatever decodes compiles: a document the engine cannot use becomes a PARSE_ERROR
		// flag, not a failure.
		if _, err := snap.Compile(); err != nil {
			t.Fatalf("a decoded snapshot does not compile: %v", err)
		}
	})
}
