package command_test

import (
	"context"
	"encoding/json"
	"strconv"
	"testing"
	"time"

	"github.com/interlock-dev/interlock/events"
	"github.com/interlock-dev/interlock/internal/command"
	"github.com/interlock-dev/interlock/internal/natstest"
)

var benchModes = []struct {
	name string
	sync bool
}{{"fsync", true}, {"nosync", false}}

// BenchmarkCommandPath measures Update end to end: validate, merge the patch, decide on the
// cached state, append with the expected version, fold the event into the cache. Compare with
// BenchmarkRawPublish.
func BenchmarkCommandPath(b *testing.B) {
	for _, mode := range benchModes {
		b.Run(mode.name, func(b *testing.B) {
			st := openStore(b, natstest.RunServer(b, natstest.Options{Sync: mode.sync}))
			svc := newService(b, st)
			version := mustCreate(b, svc, "bench", baseConfig()).Version
			ctx := context.Background()
			n := 0
			for b.Loop() {
				n++
				f, err := flagOf(svc.Handle(ctx, command.UpdateFlag{Meta: alice, Env: env, Key: "bench", ExpectedVersion: version, Patch: []byte(`{"description":"bench ` + strconv.Itoa(n) + `"}`)}))
				if err != nil {
					b.Fatal(err)
				}
				version = f.Version
			}
			b.ReportMetric(float64(n)/b.Elapsed().Seconds(), "ops/s")
		})
	}
}

// BenchmarkStoreAppend is what the command path builds on: events.Store.Append of an update
// event (encoded the plain way, with json.Marshal), with its CloudEvents headers, message id and
// expected subject sequence, and nothing of the command: no patch, no validation, no cache. Most
// of the distance between BenchmarkRawPublish and BenchmarkCommandPath is already here.
func BenchmarkStoreAppend(b *testing.B) {
	for _, mode := range benchModes {
		b.Run(mode.name, func(b *testing.B) {
			st := openStore(b, natstest.RunServer(b, natstest.Options{Sync: mode.sync}))
			ctx := context.Background()
			created, err := events.NewEvent(events.TypeFlagCreated, env, "bench", events.FlagCreated{Flag: baseConfig()})
			if err != nil {
				b.Fatal(err)
			}
			created.Actor, created.Version = alice.Actor, 1
			seq, err := st.Append(ctx, &created, 0)
			if err != nil {
				b.Fatal(err)
			}
			cfg := baseConfig()
			version, n := uint64(1), 0
			for b.Loop() {
				n++
				cfg.Description = "bench " + strconv.Itoa(n)
				ev, err := events.NewEvent(events.TypeFlagUpdated, env, "bench", events.FlagUpdated{Flag: cfg})
				if err != nil {
					b.Fatal(err)
				}
				version++
				ev.Actor, ev.Reason, ev.CorrelationID, ev.CausationID, ev.Version = alice.Actor, alice.Reason, alice.CorrelationID, alice.CausationID, version
				if seq, err = st.Append(ctx, &ev, seq); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(n)/b.Elapsed().Seconds(), "ops/s")
		})
	}
}

// BenchmarkRawPublish is the floor under BenchmarkCommandPath: a plain JetStream publish, with no
// headers and no expectations, of a message as large as an update event (headers included) to
// the same stream.
func BenchmarkRawPublish(b *testing.B) {
	for _, mode := range benchModes {
		b.Run(mode.name, func(b *testing.B) {
			srv := natstest.RunServer(b, natstest.Options{Sync: mode.sync})
			openStore(b, srv) // creates the stream
			js := natstest.JetStream(b, srv)
			data := eventSized(b)
			ctx := context.Background()
			subject := events.FlagSubject(env, "raw")
			n := 0
			for b.Loop() {
				n++
				if _, err := js.Publish(ctx, subject, data); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(n)/b.Elapsed().Seconds(), "ops/s")
		})
	}
}

// eventSized returns bytes as many as an update event of baseConfig takes on the wire.
func eventSized(b *testing.B) []byte {
	ev, err := events.NewEvent(events.TypeFlagUpdated, env, "bench", events.FlagUpdated{
		Flag: baseConfig(), Patch: json.RawMessage(`{"description":"bench 1000"}`),
	})
	if err != nil {
		b.Fatal(err)
	}
	ev.Actor, ev.Reason, ev.CorrelationID, ev.CausationID, ev.Version = alice.Actor, alice.Reason, alice.CorrelationID, alice.CausationID, 1000
	msg := ev.Msg()
	size := len(msg.Data) + len("NATS/1.0\r\n\r\n")
	for k, vs := range msg.Header {
		for _, v := range vs {
			size += len(k) + len(v) + 4
		}
	}
	data := make([]byte, size)
	for i := range data {
		data[i] = 'x'
	}
	return data
}

// BenchmarkCommandPathSigning is BenchmarkCommandPath with and without signing, interleaved in
// one run so that both see the same machine: each iteration updates one flag on a server whose
// store signs (and chains) its events and one on a server whose store does not, timing each.
// The reported signed/plain is the ratio of their mean times; signed-ns/op and plain-ns/op are
// the means.
func BenchmarkCommandPathSigning(b *testing.B) {
	for _, mode := range benchModes {
		b.Run(mode.name, func(b *testing.B) {
			plainSvc := newService(b, openStore(b, natstest.RunServer(b, natstest.Options{Sync: mode.sync})))
			signedSvc := newService(b, openSigned(b, natstest.RunServer(b, natstest.Options{Sync: mode.sync}), natstest.Signer(b)))
			svcs := []*command.Service{plainSvc, signedSvc}
			versions := make([]uint64, 2)
			for i, svc := range svcs {
				versions[i] = mustCreate(b, svc, "bench", baseConfig()).Version
			}
			ctx := context.Background()
			var spent [2]time.Duration
			n := 0
			for b.Loop() {
				n++
				patch := []byte(`{"description":"bench ` + strconv.Itoa(n) + `"}`)
				for j := range svcs {
					i := (n + j) % 2 // alternate which goes first
					start := time.Now()
					f, err := flagOf(svcs[i].Handle(ctx, command.UpdateFlag{Meta: alice, Env: env, Key: "bench", ExpectedVersion: versions[i], Patch: patch}))
					spent[i] += time.Since(start)
					if err != nil {
						b.Fatal(err)
					}
					versions[i] = f.Version
				}
			}
			b.ReportMetric(float64(spent[0].Nanoseconds())/float64(n), "plain-ns/op")
			b.ReportMetric(float64(spent[1].Nanoseconds())/float64(n), "signed-ns/op")
			b.ReportMetric(float64(spent[1])/float64(spent[0]), "signed/plain")
		})
	}
}
