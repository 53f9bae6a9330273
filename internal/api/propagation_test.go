package api_test

import (
	"encoding/json"
	"net/http"
	"strconv"
	"testing"
	"time"

	"github.com/interlock-dev/interlock/internal/api"
	"github.com/interlock-dev/interlock/internal/natstest"
	"github.com/interlock-dev/interlock/internal/presence"
	"github.com/interlock-dev/interlock/local"
)

// tracker is a presence tracker told of heartbeats directly (the heartbeats' path over NATS is
// tested in internal/presence).
func tracker(t *testing.T) *presence.Tracker {
	t.Helper()
	tr, err := presence.New(natstest.Connect(t, natstest.RunServer(t)), presence.Config{})
	if err != nil {
		t.Fatal(err)
	}
	return tr
}

func heartbeat(id, name, env string, seq uint64) local.Heartbeat {
	return local.Heartbeat{ID: id, Name: name, Environment: env, Sequence: seq, Time: time.Now(), IntervalMillis: 60_000, Ready: true}
}

func TestPropagation(t *testing.T) {
	tr := tracker(t)
	s := boot(t, func(c *api.Config) { c.Presence = tr })
	s.create(t, "prod", "checkout")
	created, _ := s.catalog.Flag("prod", "checkout")
	s.do(t, req{method: "POST", path: flagPath("prod", "checkout") + "/kill", token: s.admin, body: `{"reason":"incident 42"}`}).must(t, http.StatusOK, nil)
	killed, _ := s.catalog.Flag("prod", "checkout")

	tr.Record(heartbeat("svc-a", "checkout-api", "prod", killed.Sequence))
	tr.Record(heartbeat("svc-b", "billing-worker", "prod", created.Sequence))
	tr.Record(heartbeat("svc-c", "elsewhere", "dev", 1))

	type pending struct {
		ID       string    `json:"id"`
		Name     string    `json:"name"`
		Sequence uint64    `json:"sequence"`
		LastSeen time.Time `json:"lastSeen"`
	}
	type body struct {
		Environment string    `json:"environment"`
		Flag        string    `json:"flag"`
		Version     uint64    `json:"version"`
		Sequence    uint64    `json:"sequence"`
		Applied     int       `json:"applied"`
		Total       int       `json:"total"`
		Pending     []pending `json:"pending"`
	}

	var latest body
	s.get(t, flagPath("prod", "checkout")+"/propagation").must(t, http.StatusOK, &latest)
	if latest.Environment != "prod" || latest.Flag != "checkout" || latest.Version != killed.Version || latest.Sequence != killed.Sequence ||
		latest.Applied != 1 || latest.Total != 2 || len(latest.Pending) != 1 {
		t.Fatalf("propagation of the kill: %+v", latest)
	}
	if p := latest.Pending[0]; p.ID != "svc-b" || p.Name != "billing-worker" || p.Sequence != created.Sequence || p.LastSeen.IsZero() {
		t.Fatalf("pending %+v", p)
	}

	var earlier body
	s.get(t, flagPath("prod", "checkout")+"/propagation?sequence="+strconv.FormatUint(created.Sequence, 10)).must(t, http.StatusOK, &earlier)
	if earlier.Sequence != created.Sequence || earlier.Applied != 2 || earlier.Total != 2 || earlier.Version != 0 {
		t.Fatalf("propagation of the creation: %+v", earlier)
	}
	// Nobody pending is an empty list, not null, so that scripts can count it.
	var raw map[string]json.RawMessage
	s.get(t, flagPath("prod", "checkout")+"/propagation?sequence="+strconv.FormatUint(created.Sequence, 10)).must(t, http.StatusOK, &raw)
	if string(raw["pending"]) != "[]" {
		t.Fatalf("pending is %s, want []", raw["pending"])
	}

	var subs struct {
		Environment string                `json:"environment"`
		Subscribers []presence.Subscriber `json:"subscribers"`
	}
	s.get(t, "/api/v1/environments/prod/subscribers").must(t, http.StatusOK, &subs)
	if subs.Environment != "prod" || len(subs.Subscribers) != 2 || subs.Subscribers[0].ID != "svc-a" || subs.Subscribers[1].ID != "svc-b" ||
		subs.Subscribers[0].Sequence != killed.Sequence || subs.Subscribers[1].Name != "billing-worker" {
		t.Fatalf("subscribers %+v", subs)
	}
	s.get(t, "/api/v1/environments/staging/subscribers").must(t, http.StatusOK, &raw)
	if string(raw["subscribers"]) != "[]" {
		t.Fatalf("subscribers of staging: %s, want []", raw["subscribers"])
	}

	errorCases := []struct {
		name, path string
		status     int
		code       string
	}{
		{"unknown flag", flagPath("prod", "nope") + "/propagation", http.StatusNotFound, "not_found"},
		{"bad environment", flagPath("PROD", "checkout") + "/propagation", http.StatusBadRequest, "invalid_argument"},
		{"bad key", flagPath("prod", "a..b") + "/propagation", http.StatusBadRequest, "invalid_argument"},
		{"sequence 0", flagPath("prod", "checkout") + "/propagation?sequence=0", http.StatusBadRequest, "invalid_argument"},
		{"sequence not a number", flagPath("prod", "checkout") + "/propagation?sequence=x", http.StatusBadRequest, "invalid_argument"},
		{"unknown parameter", flagPath("prod", "checkout") + "/propagation?seq=1", http.StatusBadRequest, "invalid_argument"},
		{"subscribers with a parameter", "/api/v1/environments/prod/subscribers?x=1", http.StatusBadRequest, "invalid_argument"},
		{"subscribers of a bad environment", "/api/v1/environments/Prod/subscribers", http.StatusBadRequest, "invalid_argument"},
	}
	for _, tc := range errorCases {
		t.Run(tc.name, func(t *testing.T) {
			s.get(t, tc.path).apiError(t, tc.status, tc.code)
		})
	}
	t.Run("POST", func(t *testing.T) {
		r := s.do(t, req{method: "POST", path: flagPath("prod", "checkout") + "/propagation", token: s.admin, body: "{}"})
		r.apiError(t, http.StatusMethodNotAllowed, "method_not_allowed")
	})
}

func TestPropagationWithoutPresence(t *testing.T) {
	s := boot(t)
	s.create(t, "prod", "checkout")
	s.get(t, flagPath("prod", "checkout")+"/propagation").apiError(t, http.StatusNotFound, "not_found")
	s.get(t, "/api/v1/environments/prod/subscribers").apiError(t, http.StatusNotFound, "not_found")
}
