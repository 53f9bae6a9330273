package app

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/interlock-dev/interlock/events"
	"github.com/interlock-dev/interlock/internal/await"
	"github.com/interlock-dev/interlock/internal/command"
	"github.com/interlock-dev/interlock/internal/config"
	"github.com/interlock-dev/interlock/internal/natstest"
	"github.com/interlock-dev/interlock/internal/snapshot"
	"github.com/interlock-dev/interlock/local"
	"github.com/interlock-dev/interlock/projections"
)

const restartToken = "restart-test-admin-token-0123456789"

// node is one run of the whole server on a data directory.
type node struct {
	t    *testing.T
	m    *Main
	logs *await.Output
	base string
}

// bootAt starts the server on dir (embedded NATS, in-process only) and waits until it is ready.
func bootAt(t *testing.T, dir string) *node {
	t.Helper()
	cfg := config.Default()
	cfg.Data = dir
	cfg.HTTP = "127.0.0.1:0"
	cfg.NATSListen = "none"
	cfg.NoSync = true
	cfg.AdminToken = restartToken
	logs := &await.Output{}
	logger := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelInfo}))
	m, err := Start(context.Background(), cfg, logger, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	n := &node{t: t, m: m, logs: logs, base: "http://" + m.HTTPAddr()}
	t.Cleanup(func() {
		m.Close()
		if t.Failed() {
			t.Logf("server logs:\n%s", logs.String())
		}
	})
	await.Eventually(t, 30*time.Second, m.Ready, "projections ready")
	return n
}

// call sends an admin request, checks its status and returns the answer's ETag.
func (n *node) call(method, path, body string, header map[string]string, want int) string {
	n.t.Helper()
	if method == "PATCH" && header == nil {
		header = map[string]string{"If-Match": n.call("GET", path, "", nil, http.StatusOK)}
	}
	req, err := http.NewRequest(method, n.base+path, strings.NewReader(body))
	if err != nil {
		n.t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+restartToken)
	req.Header.Set("X-Interlock-Reason", "restart test")
	switch {
	case method == "PATCH":
		req.Header.Set("Content-Type", "application/merge-patch+json")
	case body != "":
		req.Header.Set("Content-Type", "application/json")
	}
	for k, v := range header {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		n.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	got, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != want {
		n.t.Fatalf("%s %s: %d, want %d: %s", method, path, resp.StatusCode, want, got)
	}
	return resp.Header.Get("ETag")
}

func (n *node) close() {
	n.t.Helper()
	if err := n.m.Close(); err != nil {
		n.t.Fatal(err)
	}
}

func (n *node) js() jetstream.JetStream {
	n.t.Helper()
	nc, err := n.m.ConnectInternal()
	if err != nil {
		n.t.Fatal(err)
	}
	n.t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		n.t.Fatal(err)
	}
	return js
}

// history writes flags, segments, a rollout and a valve in two environments, with updates,
// kills and archives.
func (n *node) history(round int) {
	n.t.Helper()
	if round > 0 {
		n.call("POST", "/api/v1/environments/prod/flags/flag-2/unarchive", "", nil, http.StatusOK)
	}
	for _, env := range []string{"prod", "staging"} {
		for i := range 3 {
			key := "flag-" + strconv.Itoa(i)
			path := "/api/v1/environments/" + env + "/flags"
			if round == 0 {
				n.call("POST", path, `{"key":"`+key+`","kind":"release","variants":{"on":true,"off":false},"defaultVariant":"off","offVariant":"off","enabled":true}`, nil, http.StatusCreated)
			}
			n.call("PATCH", path+"/"+key, `{"defaultVariant":"on"}`, nil, http.StatusOK)
			n.call("POST", path+"/"+key+"/kill", "", nil, http.StatusOK)
			n.call("POST", path+"/"+key+"/enable", "", nil, http.StatusOK)
		}
		seg := "/api/v1/environments/" + env + "/segments"
		if round == 0 {
			n.call("POST", seg, `{"key":"beta","included":["u1","u2"]}`, nil, http.StatusCreated)
			flag := "/api/v1/environments/" + env + "/flags/flag-0"
			n.call("POST", flag+"/rollout", `{"treatment":"on","control":"off","tick":"1s","stages":[{"percent":20,"minHold":"2s"},{"percent":100,"minHold":"2s"}],`+
				`"metrics":[{"name":"errors","requests":"requests_total","errors":"errors_total"}],"source":{"type":"scrape","url":"http://127.0.0.1:1/metrics"}}`, nil, http.StatusCreated)
		} else {
			n.call("PATCH", seg+"/beta", `{"included":["u`+strconv.Itoa(round)+`"]}`, nil, http.StatusOK)
		}
	}
	n.call("POST", "/api/v1/environments/prod/flags/flag-2/archive", "", nil, http.StatusOK)
}

// forge stores a copy of the message at seq on a flag nobody writes to, with its data changed:
// it fails verification.
func (n *node) forge(js jetstream.JetStream, seq uint64) uint64 {
	n.t.Helper()
	msg := natstest.Stored(n.t, js, seq)
	msg.Subject = events.FlagSubject("qa", "forged-"+strconv.FormatUint(seq, 10))
	msg.Data = append(bytes.Clone(msg.Data), ' ')
	return natstest.Forge(n.t, js, msg)
}

// replayed is the catalog and integrity record a full replay of the stream gives, with a store
// of its own that trusts nothing read before.
func (n *node) replayed() (*projections.Catalog, *projections.Runner) {
	n.t.Helper()
	nc, err := n.m.ConnectInternal()
	if err != nil {
		n.t.Fatal(err)
	}
	n.t.Cleanup(nc.Close)
	js, _ := jetstream.New(nc)
	ctx, cancel := context.WithCancel(context.Background())
	store, err := events.Open(ctx, js, events.StreamConfig{}, events.WithSigner(n.m.signing.Signer), events.WithVerifyKeys(n.m.signing.Verify...))
	if err != nil {
		n.t.Fatal(err)
	}
	c := projections.NewCatalog()
	r := projections.NewRunner(store, c, nil)
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	n.t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			n.t.Error(err)
		}
	})
	await.Eventually(n.t, 30*time.Second, func() bool { return c.Sequence() >= n.m.Catalog().Sequence() }, "replay caught up")
	return c, r
}

// sameAsReplay checks that the server's catalog and integrity record are what a full replay
// gives.
func (n *node) sameAsReplay() {
	n.t.Helper()
	want, wr := n.replayed()
	got := n.m.Catalog()
	if got.Sequence() != want.Sequence() {
		n.t.Fatalf("catalog at sequence %d, replay at %d", got.Sequence(), want.Sequence())
	}
	if !reflect.DeepEqual(got.Environments(), want.Environments()) {
		n.t.Fatalf("environments %v, replay has %v", got.Environments(), want.Environments())
	}
	for _, env := range want.Environments() {
		if g, w := got.Flags(env), want.Flags(env); !reflect.DeepEqual(g, w) {
			gj, _ := json.Marshal(g)
			wj, _ := json.Marshal(w)
			n.t.Fatalf("flags of %s differ from the replay's:\n got %s\nwant %s", env, gj, wj)
		}
		if g, w := got.Segments(env), want.Segments(env); !reflect.DeepEqual(g, w) {
			n.t.Fatalf("segments of %s differ from the replay's:\n got %+v\nwant %+v", env, g, w)
		}
	}
	n.sameQueries()
	gp, gc := n.m.runner.Integrity().Problems()
	wp, wc := wr.Integrity().Problems()
	if gc != wc || len(gp) != len(wp) {
		n.t.Fatalf("%d integrity problems (%v), replay has %d (%v)", gc, gp, wc, wp)
	}
	for i := range gp {
		if gp[i].Sequence != wp[i].Sequence || gp[i].Reason != wp[i].Reason {
			n.t.Fatalf("integrity problem %d is %+v, replay has %+v", i, gp[i], wp[i])
		}
	}
	if ga, wa := n.m.runner.Integrity().Acknowledged(), wr.Integrity().Acknowledged(); ga.Through != wa.Through || ga.Sequence != wa.Sequence || ga.Actor != wa.Actor {
		n.t.Fatalf("integrity acknowledgement %+v, replay has %+v", ga, wa)
	}
}

// sameQueries checks that the history, as-of and audit queries the server answers through its
// history index (kept, or restored from a checkpoint) give what reading the stream gives.
func (n *node) sameQueries() {
	n.t.Helper()
	ctx := context.Background()
	plain, indexed := projections.Reader(n.m.store), projections.Reader(n.m.history)
	check := func(what string, get func(projections.Reader) (any, error)) {
		n.t.Helper()
		want, werr := get(plain)
		got, gerr := get(indexed)
		if fmt.Sprint(gerr) != fmt.Sprint(werr) || !reflect.DeepEqual(got, want) {
			gj, _ := json.Marshal(got)
			wj, _ := json.Marshal(want)
			n.t.Fatalf("%s through the index:\n got %s %v\nwant %s %v", what, gj, gerr, wj, werr)
		}
	}
	last := n.m.Catalog().Sequence()
	first, err := projections.Audit(ctx, plain, projections.AuditQuery{Limit: 1})
	if err != nil || len(first.Events) == 0 {
		n.t.Fatalf("no audit trail: %v", err)
	}
	actor := first.Events[0].Actor
	for _, env := range []string{"prod", "staging", "qa"} {
		check("environment "+env+" at the middle", func(r projections.Reader) (any, error) {
			return projections.EnvironmentAt(ctx, r, env, projections.Point{Sequence: last / 2})
		})
		for _, key := range []string{"flag-0", "flag-1", "flag-2", "forged-1"} {
			check("history of "+env+"/"+key, func(r projections.Reader) (any, error) { return projections.FlagHistory(ctx, r, env, key) })
		}
		check("history of segment "+env+"/beta", func(r projections.Reader) (any, error) { return projections.SegmentHistory(ctx, r, env, "beta") })
		for _, q := range []projections.AuditQuery{{Environment: env, Limit: 7}, {Environment: env, Actor: actor, Limit: 3}, {Actor: actor, Limit: 5}} {
			for {
				var next uint64
				check(fmt.Sprintf("audit %+v", q), func(r projections.Reader) (any, error) {
					p, err := projections.Audit(ctx, r, q)
					next = p.Next
					return p, err
				})
				if next == 0 {
					break
				}
				q.After = next
			}
		}
	}
}

func TestRestartStartsFromCheckpoint(t *testing.T) {
	await.Goroutines(t, 10*time.Second, nil)
	dir := t.TempDir()
	ctx := context.Background()

	a := bootAt(t, dir)
	a.history(0)
	js := a.js()
	forged := a.forge(js, a.m.Catalog().Sequence())
	await.Eventually(t, 10*time.Second, func() bool { return a.m.Catalog().Sequence() >= forged }, "forgery handled")
	// An operator acknowledges the forgery before the checkpoint: the restart keeps that.
	ack, err := command.New(a.m.store, nil).AcknowledgeIntegrity(ctx, command.Meta{Actor: "ops", Reason: "drill"}, forged, 1)
	if err != nil {
		t.Fatal(err)
	}
	await.Eventually(t, 10*time.Second, func() bool { return a.m.Catalog().Sequence() >= ack.Sequence }, "acknowledgement applied")
	if err := a.m.FlushCheckpoint(ctx); err != nil {
		t.Fatal(err)
	}
	at := a.m.Catalog().Sequence()
	a.history(1) // after the checkpoint: the restart reads these
	after := a.forge(js, a.m.Catalog().Sequence())
	await.Eventually(t, 10*time.Second, func() bool { return a.m.Catalog().Sequence() >= after }, "forgery handled")
	a.close()

	b := bootAt(t, dir)
	logs := b.logs.String()
	if !strings.Contains(logs, "starting from a checkpoint") || strings.Contains(logs, "replaying the whole stream") {
		t.Fatalf("the restart did not start from the checkpoint:\n%s", logs)
	}
	// The stop wrote a newer checkpoint than the flushed one.
	if !strings.Contains(logs, "sequence="+strconv.FormatUint(after, 10)) {
		t.Errorf("the restart did not start from the checkpoint written at the stop (sequence %d, flushed at %d):\n%s", after, at, logs)
	}
	b.sameAsReplay()

	// The chains go on from the checkpoint's heads: writes after the restart verify, forgeries
	// do not.
	b.history(2)
	jsb := b.js()
	late := b.forge(jsb, b.m.Catalog().Sequence())
	await.Eventually(t, 10*time.Second, func() bool { return b.m.Catalog().Sequence() >= late }, "forgery handled")
	_, count := b.m.runner.Integrity().Problems()
	if count != 3 {
		t.Fatalf("%d integrity problems after the restart, want the 3 forgeries", count)
	}
	// The first forgery stays acknowledged; the two after it are not.
	if pending, _ := b.m.runner.Integrity().Unacknowledged(); len(pending) != 2 || pending[0].Sequence != after ||
		b.m.runner.Integrity().Acknowledged().Through != forged {
		t.Fatalf("after the restart: unacknowledged %+v, acknowledgement %+v; want the two forgeries after %d", pending, b.m.runner.Integrity().Acknowledged(), forged)
	}
	b.sameAsReplay()

	// The snapshots subscribers start from still hold every flag of an environment, those
	// unchanged since the checkpoint included.
	if err := b.m.FlushSnapshots(ctx); err != nil {
		t.Fatal(err)
	}
	obs, err := jsb.ObjectStore(ctx, local.DefaultSnapshotBucket)
	if err != nil {
		t.Fatal(err)
	}
	data, err := obs.GetBytes(ctx, "prod")
	if err != nil {
		t.Fatal(err)
	}
	snap, err := local.DecodeSnapshot("prod", data)
	if err != nil {
		t.Fatal(err)
	}
	if len(snap.Flags) != 3 || len(snap.Segments) != 1 {
		t.Fatalf("snapshot of prod after the restart has %d flags and %d segments, want 3 and 1", len(snap.Flags), len(snap.Segments))
	}
}

// putCheckpoint replaces the stored checkpoint with data, signed with key (nil: not signed).
func putCheckpoint(t *testing.T, js jetstream.JetStream, signer *events.Signer, data []byte, seq uint64) {
	t.Helper()
	ctx := context.Background()
	obs, err := js.ObjectStore(ctx, snapshot.CheckpointBucket)
	if err != nil {
		t.Fatal(err)
	}
	meta := map[string]string{"interlock-sequence": strconv.FormatUint(seq, 10)}
	if signer != nil {
		meta["interlock-signing-key"] = signer.KeyID()
		meta["interlock-signature"] = base64.StdEncoding.EncodeToString(signer.SignDocument("interlock-checkpoint", data))
	}
	if _, err := obs.Put(ctx, jetstream.ObjectMeta{Name: "catalog", Metadata: meta}, bytes.NewReader(data)); err != nil {
		t.Fatal(err)
	}
}

func TestRestartFallsBackToReplay(t *testing.T) {
	tests := []struct {
		name string
		// spoil replaces the good checkpoint cp (its JSON: doc) with a bad one.
		spoil func(t *testing.T, js jetstream.JetStream, signer *events.Signer, doc map[string]any, cp projections.Checkpoint)
		log   string
	}{
		{"corrupt", func(t *testing.T, js jetstream.JetStream, signer *events.Signer, _ map[string]any, cp projections.Checkpoint) {
			putCheckpoint(t, js, signer, []byte(`{"format":1,"sequence":`), cp.Sequence)
		}, "unusable checkpoint"},
		{"not signed", func(t *testing.T, js jetstream.JetStream, _ *events.Signer, _ map[string]any, cp projections.Checkpoint) {
			cp.Flags = nil // a forger's state of the flags
			data, _ := cp.Encode()
			putCheckpoint(t, js, nil, data, cp.Sequence)
		}, "unusable checkpoint"},
		{"another stream", func(t *testing.T, js jetstream.JetStream, signer *events.Signer, _ map[string]any, cp projections.Checkpoint) {
			cp.Last.Hash[0] ^= 1
			data, _ := cp.Encode()
			putCheckpoint(t, js, signer, data, cp.Sequence)
		}, "is not the one it names"},
		{"ahead of the stream", func(t *testing.T, js jetstream.JetStream, signer *events.Signer, _ map[string]any, cp projections.Checkpoint) {
			cp.Sequence += 1000
			cp.Last.Sequence = cp.Sequence
			cp.Chains.Sequence = cp.Sequence
			data, _ := cp.Encode()
			var doc map[string]any
			_ = json.Unmarshal(data, &doc)
			doc["index"].(map[string]any)["sequence"] = cp.Sequence
			data, _ = json.Marshal(doc)
			putCheckpoint(t, js, signer, data, cp.Sequence)
		}, "but the stream ends at"},
		{"another format", func(t *testing.T, js jetstream.JetStream, signer *events.Signer, doc map[string]any, cp projections.Checkpoint) {
			doc["format"] = projections.CheckpointFormat + 1
			data, _ := json.Marshal(doc)
			putCheckpoint(t, js, signer, data, cp.Sequence)
		}, fmt.Sprintf("format %d, this version reads %d", projections.CheckpointFormat+1, projections.CheckpointFormat)},
		{"the previous format", func(t *testing.T, js jetstream.JetStream, signer *events.Signer, doc map[string]any, cp projections.Checkpoint) {
			doc["format"] = 1
			delete(doc, "index")
			data, _ := json.Marshal(doc)
			putCheckpoint(t, js, signer, data, cp.Sequence)
		}, fmt.Sprintf("format 1, this version reads %d", projections.CheckpointFormat)},
		{"no history index", func(t *testing.T, js jetstream.JetStream, signer *events.Signer, doc map[string]any, cp projections.Checkpoint) {
			delete(doc, "index")
			data, _ := json.Marshal(doc)
			putCheckpoint(t, js, signer, data, cp.Sequence)
		}, "holds no history index"},
		{"a spoilt history index", func(t *testing.T, js jetstream.JetStream, signer *events.Signer, doc map[string]any, cp projections.Checkpoint) {
			list := doc["index"].(map[string]any)["subjects"].([]any)[0].(map[string]any)
			list["seqs"] = "AA==" // a gap of 0: not a rising list
			data, _ := json.Marshal(doc)
			putCheckpoint(t, js, signer, data, cp.Sequence)
		}, "does not decode"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			a := bootAt(t, dir)
			a.history(0)
			if err := a.m.FlushCheckpoint(context.Background()); err != nil {
				t.Fatal(err)
			}
			cp, err := a.m.checks.LoadCheckpoint(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			data, _ := cp.Encode()
			var doc map[string]any
			if err := json.Unmarshal(data, &doc); err != nil {
				t.Fatal(err)
			}
			signer := a.m.signing.Signer
			// Nothing new happens before the stop, so the stop keeps the spoilt checkpoint.
			a.close()

			b := bootWithSpoilt(t, dir, func(js jetstream.JetStream) { tc.spoil(t, js, signer, doc, cp) })
			logs := b.logs.String()
			if !strings.Contains(logs, "checkpoint not used: replaying the whole stream") || !strings.Contains(logs, tc.log) {
				t.Fatalf("no log line saying the checkpoint was not used because of %q:\n%s", tc.log, logs)
			}
			if strings.Contains(logs, "starting from a checkpoint") {
				t.Fatalf("started from a spoilt checkpoint:\n%s", logs)
			}
			b.sameAsReplay()
			// The replay replaced the spoilt checkpoint, although it is no newer: the next start
			// uses it.
			b.close()
			c := bootAt(t, dir)
			if logs := c.logs.String(); !strings.Contains(logs, "starting from a checkpoint") {
				t.Fatalf("the start after a replay did not start from a checkpoint:\n%s", logs)
			}
			c.sameAsReplay()
		})
	}
}

// bootWithSpoilt spoils the checkpoint of the server on dir, and boots it again.
func bootWithSpoilt(t *testing.T, dir string, spoil func(jetstream.JetStream)) *node {
	t.Helper()
	a := bootAt(t, dir)
	js := a.js()
	// This server writes a checkpoint at its stop only if it is newer than the stored one, which
	// the spoilt one is not: nothing happened since.
	spoil(js)
	a.close()
	return bootAt(t, dir)
}
