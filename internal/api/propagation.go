package api

import (
	"net/http"

	"github.com/interlock-dev/interlock/apiv1"
	"github.com/interlock-dev/interlock/events"
	"github.com/interlock-dev/interlock/internal/presence"
)

// Presence knows the live in-process subscribers of each environment: *presence.Tracker.
type Presence interface {
	// Subscribers returns the live subscribers of env, sorted by id.
	Subscribers(env string) []presence.Subscriber
	// Propagation says how many live subscribers of env have applied stream sequence seq.
	Propagation(env string, seq uint64) presence.Propagation
}

// errNoPresence answers the subscriber endpoints of a server that does not track presence.
var errNoPresence = &requestError{kind: errNoRoute, msg: "this server does not track in-process subscribers"}

// listSubscribers answers GET /api/v1/environments/{env}/subscribers: the live in-process
// subscribers of the environment and the sequence each has applied.
func (a *API) listSubscribers(w http.ResponseWriter, r *http.Request) error {
	env := r.PathValue("env")
	if _, err := query(r, nil); err != nil {
		return err
	}
	if err := events.ValidateEnvironment(env); err != nil {
		return err
	}
	if a.cfg.Presence == nil {
		return errNoPresence
	}
	subs := a.cfg.Presence.Subscribers(env)
	if subs == nil {
		subs = []presence.Subscriber{}
	}
	a.writeJSON(w, r, http.StatusOK, apiv1.SubscriberList{Environment: env, Subscribers: subs})
	return nil
}

// flagPropagation answers GET /api/v1/environments/{env}/flags/{key}/propagation[?sequence=N]:
// how many live in-process subscribers have applied the flag's latest event (or the event at
// stream sequence N), and which have not.
func (a *API) flagPropagation(w http.ResponseWriter, r *http.Request) error {
	env, key := r.PathValue("env"), r.PathValue("key")
	q, err := query(r, []string{"sequence"})
	if err != nil {
		return err
	}
	seq, err := uintParam(q, "sequence")
	if err != nil {
		return err
	}
	if err := flagResource.validate(env, key); err != nil {
		return err
	}
	if a.cfg.Presence == nil {
		return errNoPresence
	}
	f, err := flagResource.current(a, env, key)
	if err != nil {
		return err
	}
	body := apiv1.Propagation{Environment: env, Flag: key}
	if seq == 0 {
		seq, body.Version = f.Sequence, f.Version
	}
	p := a.cfg.Presence.Propagation(env, seq)
	body.Sequence, body.Applied, body.Total, body.Pending = p.Sequence, p.Applied, p.Total, p.Pending
	if body.Pending == nil {
		body.Pending = []presence.Pending{}
	}
	a.writeJSON(w, r, http.StatusOK, body)
	return nil
}
