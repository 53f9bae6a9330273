package cli_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/interlock-dev/interlock/events"
	"github.com/interlock-dev/interlock/internal/await"
	"github.com/interlock-dev/interlock/internal/cli"
	"github.com/interlock-dev/interlock/internal/natstest"
)

type integrityBody struct {
	Status   string `json:"status"`
	Count    int    `json:"count"`
	Problems []struct {
		Sequence uint64 `json:"sequence"`
		Subject  string `json:"subject"`
		Reason   string `json:"reason"`
	} `json:"problems"`
}

func (s *waitServer) getJSON(t *testing.T, path string, v any) int {
	t.Helper()
	req, err := http.NewRequest("GET", s.env["INTERLOCK_SERVER"]+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+s.env["INTERLOCK_TOKEN"])
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	return resp.StatusCode
}

// TestForgedEventDetected is the attack of issue 8: a client with publish rights on the stream
// (no signing key) writes events on a flag's subject. The server refuses them: they change no
// state, /readyz and /api/v1/integrity name them (and readiness fails until an admin
// acknowledges them with `audit acknowledge`), `audit verify` reports the first with its
// sequence and exit code 9; a kill through the CLI still works on the flag, and the events after
// the forgeries verify.
func TestForgedEventDetected(t *testing.T) {
	s := serve(t)
	s.must(t, "flags", "create", "prod/checkout", "--enabled", "--reason", "launch")
	if r := s.must(t, "audit", "verify"); !strings.Contains(r.stdout, "verified 1 events") {
		t.Fatalf("audit verify before any forgery:\n%s", r.stdout)
	}

	// A privileged client: the embedded server admits no other that may publish on the stream.
	nc, err := s.m.ConnectInternal()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	// Unsigned: a kill "by alice" that she never asked for.
	ev, err := events.NewEvent(events.TypeFlagKilled, "prod", "checkout", events.FlagKilled{})
	if err != nil {
		t.Fatal(err)
	}
	ev.Actor, ev.Reason, ev.Version = "alice", "forged", 2
	unsigned := natstest.Forge(t, js, ev.Msg())
	// Altered: the genuine creation with another actor.
	altered := natstest.Stored(t, js, 1)
	altered.Header.Set(events.HeaderActor, "mallory")
	bad := natstest.Forge(t, js, altered)
	// Replayed: the genuine creation again.
	replayed := natstest.Forge(t, js, natstest.Stored(t, js, 1))

	var ready struct {
		Status    string        `json:"status"`
		Cause     string        `json:"cause"`
		Integrity integrityBody `json:"integrity"`
	}
	// Not ready while the problems wait for an acknowledgement, and the answer says why.
	await.Eventually(t, wait, func() bool {
		return s.getJSON(t, "/readyz", &ready) == http.StatusServiceUnavailable && ready.Integrity.Count == 3
	}, "readyz names three problems")
	if ready.Status != "unavailable" || ready.Integrity.Status != "problems" || !strings.Contains(ready.Cause, "integrity problems: 3 messages") {
		t.Fatalf("readyz: %+v", ready)
	}
	want := map[uint64]string{unsigned: "unsigned", bad: "bad-signature", replayed: "broken-chain"}
	for _, p := range ready.Integrity.Problems {
		if want[p.Sequence] != p.Reason || p.Subject != "" {
			t.Fatalf("readyz problem %+v; want %v and no subject (it is public)", p, want)
		}
	}
	var integ integrityBody
	if code := s.getJSON(t, "/api/v1/integrity", &integ); code != http.StatusOK || integ.Count != 3 || len(integ.Problems) != 3 {
		t.Fatalf("GET /api/v1/integrity: %d %+v", code, integ)
	}
	for _, p := range integ.Problems {
		if want[p.Sequence] != p.Reason || p.Subject != events.FlagSubject("prod", "checkout") {
			t.Fatalf("problem %+v; want %v", p, want)
		}
	}
	if f, _ := s.m.Catalog().Flag("prod", "checkout"); !f.Enabled || f.Version != 1 {
		t.Fatalf("the forged kill was applied: enabled %v, version %d", f.Enabled, f.Version)
	}

	for _, args := range [][]string{{"audit", "verify"}, {"audit", "verify", "prod"}, {"audit", "verify", "prod/checkout"}} {
		r := s.run(t, args...)
		if r.code != cli.ExitIntegrity || !strings.Contains(r.stdout, fmt.Sprintf("first broken link: sequence %d on interlock.prod.flag.checkout: unsigned", unsigned)) ||
			!strings.Contains(r.stdout, "verified 1 events, refused 3 messages") {
			t.Fatalf("interlock %s: exit %d\n%s%s", strings.Join(args, " "), r.code, r.stdout, r.stderr)
		}
	}
	if r := s.must(t, "audit", "verify", "staging"); !strings.Contains(r.stdout, "verified 0 events") {
		t.Fatalf("audit verify of an untouched environment:\n%s", r.stdout)
	}

	// An admin acknowledges them, with a reason: ready again, and the acknowledgement is in the
	// audit trail with its actor.
	if r := s.run(t, "audit", "acknowledge"); r.code == 0 || !strings.Contains(r.stderr, "--reason is required") {
		t.Fatalf("audit acknowledge without a reason: exit %d\n%s", r.code, r.stderr)
	}
	if r := s.must(t, "audit", "acknowledge", "--reason", "forgery drill: the publisher was found"); !strings.Contains(r.stdout, fmt.Sprintf("up to sequence %d", replayed)) ||
		!strings.Contains(r.stdout, "integrity: acknowledged") {
		t.Fatalf("audit acknowledge:\n%s", r.stdout)
	}
	if code := s.getJSON(t, "/readyz", &ready); code != http.StatusOK || ready.Status != "ok" || ready.Integrity.Status != "acknowledged" || ready.Integrity.Count != 3 {
		t.Fatalf("readyz after the acknowledgement: %d %+v", code, ready)
	}
	var trail struct {
		Events []struct {
			Type   string          `json:"type"`
			Actor  string          `json:"actor"`
			Reason string          `json:"reason"`
			Data   json.RawMessage `json:"data"`
		} `json:"events"`
	}
	if code := s.getJSON(t, "/api/v1/audit?type="+events.TypeIntegrityAcknowledged, &trail); code != http.StatusOK || len(trail.Events) != 1 ||
		trail.Events[0].Reason != "forgery drill: the publisher was found" || trail.Events[0].Actor == "" ||
		!strings.Contains(string(trail.Events[0].Data), fmt.Sprintf(`"through":%d`, replayed)) {
		t.Fatalf("the acknowledgement in the audit trail: %d %+v", code, trail)
	}

	// The kill through the CLI goes through, after the forgeries, and chains.
	s.must(t, "kill", "prod/checkout", "--reason", "real incident")
	await.Eventually(t, wait, func() bool {
		f, _ := s.m.Catalog().Flag("prod", "checkout")
		return !f.Enabled && f.Version == 2
	}, "the kill applied")
	s.must(t, "flags", "enable", "prod/checkout")
	r := s.run(t, "audit", "verify", "-o", "json") // the create, the acknowledgement, the kill, the enable
	var rep struct {
		Verified, Refused int
	}
	if err := json.Unmarshal([]byte(r.stdout), &rep); err != nil || r.code != cli.ExitIntegrity || rep.Verified != 4 || rep.Refused != 3 {
		t.Fatalf("audit verify -o json after the kill: exit %d, %+v, %v\n%s", r.code, rep, err, r.stderr)
	}

	// A new forgery after the acknowledged sequence: not ready again, until acknowledged too.
	again := natstest.Forge(t, js, ev.Msg())
	await.Eventually(t, wait, func() bool {
		return s.getJSON(t, "/readyz", &ready) == http.StatusServiceUnavailable
	}, "readyz answers 503 after a new forgery")
	if ready.Integrity.Status != "problems" || !strings.Contains(ready.Cause, fmt.Sprintf("1 messages on the event stream failed verification and are not acknowledged (the latest at sequence %d)", again)) {
		t.Fatalf("readyz after a new forgery: %+v", ready)
	}
	s.must(t, "audit", "acknowledge", "--reason", "the second one too", "--through", fmt.Sprint(again))
	if code := s.getJSON(t, "/readyz", &ready); code != http.StatusOK {
		t.Fatalf("readyz after the second acknowledgement: %d %+v", code, ready)
	}

	var keys struct {
		Keys []struct {
			ID      string `json:"id"`
			Current bool   `json:"current"`
		} `json:"keys"`
	}
	if code := s.getJSON(t, "/api/v1/signing-keys", &keys); code != http.StatusOK || len(keys.Keys) != 1 || !keys.Keys[0].Current ||
		keys.Keys[0].ID != natstest.Stored(t, js, 1).Header.Get(events.HeaderSigningKey) {
		t.Fatalf("signing keys: %d %+v", code, keys)
	}
}
