package subscribe

import (
	"errors"
	"testing"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/interlock-dev/interlock/events"
)

// FuzzDecodeMessage feeds decodeMessage what a Watermill message could carry: it never panics,
// refuses with ErrMalformed or ErrUnknownType, and what it accepts is a well-formed event at a
// stream sequence on the subject it came from.
func FuzzDecodeMessage(f *testing.F) {
	f.Add("interlock.prod.flag.checkout", "0190a4c8-7e2f-7000-8000-000000000001", events.TypeFlagKilled, "1.0",
		"prod", "checkout", "2026-01-02T15:04:05Z", "2", "7", []byte(`{}`))
	f.Add("interlock.prod.segment.beta", "x", events.TypeSegmentCreated, "1.0", "prod", "beta",
		"2026-01-02T15:04:05.123456789Z", "1", "1", []byte(`{"segment":{}}`))
	f.Add("interlock.prod", "", "", "0.3", "", "", "", "", "", []byte(nil))
	f.Add("other.subject", "id", "t", "1.0", "prod", "k", "bad time", "0", "x", []byte("\xff"))
	f.Fuzz(func(t *testing.T, subject, id, typ, spec, env, key, tm, version, seq string, data []byte) {
		msg := message.NewMessage(id, data)
		msg.Metadata = message.Metadata{
			MetadataSubject:              subject,
			MetadataStreamSequence:       seq,
			MetadataNumDelivered:         "1",
			events.HeaderID:              id,
			events.HeaderType:            typ,
			events.HeaderSource:          events.Source,
			events.HeaderSpecVersion:     spec,
			events.HeaderEnvironment:     env,
			events.HeaderSubject:         key,
			events.HeaderTime:            tm,
			events.HeaderVersion:         version,
			events.HeaderActor:           "alice",
			events.HeaderDataContentType: "application/json",
		}
		ev, d, err := decodeMessage(msg)
		if err != nil {
			if !errors.Is(err, events.ErrMalformed) && !errors.Is(err, events.ErrUnknownType) {
				t.Fatalf("error %v wraps neither ErrMalformed nor ErrUnknownType", err)
			}
			return
		}
		if ev.Sequence == 0 || ev.Sequence != d.StreamSequence || ev.Subject() != subject || ev.ID != id || ev.Type != typ {
			t.Fatalf("accepted %+v (delivery %+v) from subject %q", ev, d, subject)
		}
	})
}
