package api

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/interlock-dev/interlock/apiv1"
	"github.com/interlock-dev/interlock/events"
	"github.com/interlock-dev/interlock/internal/auth"
	"github.com/interlock-dev/interlock/internal/command"
	"github.com/interlock-dev/interlock/projections"
)

// Rollouts and safety valves are served under the flag they belong to:
//
//	POST .../flags/{key}/rollout            create a rollout from a plan (write; If-Match optional)
//	GET  .../flags/{key}/rollout            the rollout's status, with the guard's live view
//	POST .../flags/{key}/rollout/{verb}     start, pause, resume, advance, stepback, rearm (write),
//	                                        abort (kill: on-call may); If-Match required
//	GET  .../flags/{key}/valve              the valve's state
//	PUT  .../flags/{key}/valve              configure the valve (write; If-Match required)
//	POST .../flags/{key}/valve/open|close   open or close it (kill: on-call may); no version
//
// Every answer carries the flag's version as its ETag, since rollouts and valves are events of
// the flag and one version orders them with every other change of it.

// GuardStatus tells what the guard sees of a flag's rollout right now, between the decisions it
// records: its statistics as of the last tick. The lead's guard runner implements it.
type GuardStatus interface {
	// Live returns the guard's live status for the rollout of flag env/key, JSON-encodable, and
	// whether the guard is following that rollout at all.
	Live(env, key string) (any, bool)
}

// Paths of rollouts and valves.
const (
	pathRollout = pathFlag + "/rollout"
	pathValve   = pathFlag + "/valve"
)

// rolloutRoutes are the routes of rollouts and valves, for routes().
func (a *API) rolloutRoutes() []route {
	rs := []route{
		{pathRollout, []op{get(a.getRollout), do("POST", auth.ActionWrite, a.createRollout)}},
		{pathValve, []op{get(a.getValve), do("PUT", auth.ActionWrite, a.configureValve)}},
		{pathValve + "/open", []op{do("POST", auth.ActionKill, a.openValve)}},
		{pathValve + "/close", []op{do("POST", auth.ActionKill, a.closeValve)}},
	}
	for _, v := range rolloutVerbs {
		rs = append(rs, route{pathRollout + "/" + v.name, []op{do("POST", v.action, a.rolloutAction(v))}})
	}
	return rs
}

// rolloutVerb is one command on a flag's rollout, served at .../rollout/{name}.
type rolloutVerb struct {
	name string
	// action is what the token's role must allow: write, or kill for what on-call may do.
	action auth.Action
	// withFrom says the command takes the stage it moves from.
	withFrom bool
	do       func(m command.Meta, t command.RolloutTarget, from int) command.Command
}

// rolloutVerbs are the commands on a rollout. Aborting is the on-call's switch, like a kill:
// it takes the flag back to the control. Advancing, like every other move, is a writer's.
var rolloutVerbs = []rolloutVerb{
	{name: "start", action: auth.ActionWrite, do: func(m command.Meta, t command.RolloutTarget, _ int) command.Command {
		return command.StartRollout{Meta: m, RolloutTarget: t}
	}},
	{name: "pause", action: auth.ActionWrite, do: func(m command.Meta, t command.RolloutTarget, _ int) command.Command {
		return command.PauseRollout{Meta: m, RolloutTarget: t}
	}},
	{name: "resume", action: auth.ActionWrite, do: func(m command.Meta, t command.RolloutTarget, _ int) command.Command {
		return command.ResumeRollout{Meta: m, RolloutTarget: t}
	}},
	{name: "advance", action: auth.ActionWrite, withFrom: true, do: func(m command.Meta, t command.RolloutTarget, from int) command.Command {
		return command.AdvanceRollout{Meta: m, RolloutTarget: t, From: from}
	}},
	{name: "stepback", action: auth.ActionWrite, withFrom: true, do: func(m command.Meta, t command.RolloutTarget, from int) command.Command {
		return command.StepBackRollout{Meta: m, RolloutTarget: t, From: from}
	}},
	{name: "abort", action: auth.ActionKill, do: func(m command.Meta, t command.RolloutTarget, _ int) command.Command {
		return command.AbortRollout{Meta: m, RolloutTarget: t}
	}},
	{name: "rearm", action: auth.ActionWrite, do: func(m command.Meta, t command.RolloutTarget, _ int) command.Command {
		return command.Rearm{Meta: m, RolloutTarget: t}
	}},
}

// statusOf builds the rollout status of f, which has a rollout: the answer of GET .../rollout
// and of every rollout write. Live is the guard's live status, null when the server has no
// guard or the guard does not follow this rollout.
func (a *API) statusOf(f projections.Flag) (apiv1.RolloutStatus, error) {
	r := f.Rollout
	st := apiv1.RolloutStatus{
		Flag: f.Key, Environment: f.Environment, Version: f.Version, Enabled: f.Enabled, Rollout: r,
		Split: events.Serve{Variant: f.DefaultVariant},
	}
	if f.DefaultServe != nil {
		st.Split = *f.DefaultServe
	}
	st.Stage.Count = len(r.Plan.Stages)
	if r.Stage >= 0 && r.Stage < len(r.Plan.Stages) {
		s := r.Plan.Stages[r.Stage]
		st.Stage = apiv1.Stage{Index: r.Stage, Count: len(r.Plan.Stages), Percent: s.Percent, MinHold: s.MinHold}
	}
	// Only a running or paused rollout has a guard judging it: a finished one's last live view
	// would be out of date.
	if a.cfg.Guard != nil && r.Active() {
		if live, ok := a.cfg.Guard.Live(f.Environment, f.Key); ok {
			raw, err := json.Marshal(live)
			if err != nil {
				return st, fmt.Errorf("encode the guard's live status of %s/%s: %w", f.Environment, f.Key, err)
			}
			st.Live = raw
		}
	}
	return st, nil
}

// valveOf is the valve status of f: the answer of GET .../valve and of every valve write.
func valveOf(f projections.Flag) apiv1.ValveStatus {
	return apiv1.ValveStatus{Flag: f.Key, Environment: f.Environment, Version: f.Version, Valve: f.Valve}
}

// currentFlag reads flag env/key from the catalog for a GET, after checking the names.
func (a *API) currentFlag(r *http.Request) (projections.Flag, error) {
	env, key := r.PathValue("env"), r.PathValue("key")
	if _, err := query(r, nil); err != nil {
		return projections.Flag{}, err
	}
	if err := flagResource.validate(env, key); err != nil {
		return projections.Flag{}, err
	}
	return flagResource.current(a, env, key)
}

func (a *API) getRollout(w http.ResponseWriter, r *http.Request) error {
	f, err := a.currentFlag(r)
	if err != nil {
		return err
	}
	if f.Rollout == nil {
		return fmt.Errorf("flag %s/%s: %w: it never had a rollout", f.Environment, f.Key, command.ErrNoRollout)
	}
	st, err := a.statusOf(f)
	if err != nil {
		return err
	}
	a.writeVersioned(w, r, f.Version, st)
	return nil
}

// decodePlan decodes the body of a rollout create: one rollout plan, unknown fields refused.
func decodePlan(body []byte) (events.RolloutPlan, error) {
	var plan events.RolloutPlan
	var obj map[string]json.RawMessage
	if err := decodeJSON(body, &obj); err != nil {
		return plan, err
	}
	if obj == nil {
		return plan, badRequest("the body is not a JSON object: send the rollout plan")
	}
	if err := decodeJSON(body, &plan); err != nil {
		return events.RolloutPlan{}, err
	}
	return plan, nil
}

func (a *API) createRollout(w http.ResponseWriter, r *http.Request, p auth.Principal) error {
	if _, err := query(r, nil); err != nil {
		return err
	}
	version, _, err := ifMatch(r)
	if err != nil {
		return err
	}
	var body json.RawMessage
	if err := a.readJSON(w, r, &body, false); err != nil {
		return err
	}
	plan, err := decodePlan(body)
	if err != nil {
		return err
	}
	f, err := flagResource.send(a, r, command.CreateRollout{Meta: meta(r, p, ""), Env: r.PathValue("env"), Key: r.PathValue("key"),
		ExpectedVersion: version, Plan: plan})
	if err != nil {
		return err
	}
	st, err := a.statusOf(f)
	if err != nil {
		return err
	}
	w.Header().Set("Location", flagURL(f.Environment, f.Key)+"/rollout")
	a.written(w, r, http.StatusCreated, flagStamp(f), st)
	return nil
}

// rolloutAction serves the command v on the flag's rollout.
func (a *API) rolloutAction(v rolloutVerb) func(http.ResponseWriter, *http.Request, auth.Principal) error {
	return func(w http.ResponseWriter, r *http.Request, p auth.Principal) error {
		if _, err := query(r, nil); err != nil {
			return err
		}
		var req apiv1.RolloutRequest
		if err := a.readJSON(w, r, &req, true); err != nil {
			return err
		}
		from := -1
		switch {
		case req.From != nil && !v.withFrom:
			return badRequest("from: " + v.name + " takes no stage; only advance and stepback do")
		case req.From != nil && *req.From < 0:
			return badRequest(fmt.Sprintf("from: %d is not a stage index (0 is the first stage)", *req.From))
		case req.From != nil:
			from = *req.From
		}
		if len(req.ID) > 128 {
			return badRequest("id: longer than 128 bytes")
		}
		version, err := requireIfMatch(r, "flag")
		if err != nil {
			return err
		}
		on := command.RolloutTarget{Env: r.PathValue("env"), Key: r.PathValue("key"), ID: req.ID, ExpectedVersion: version}
		f, err := flagResource.send(a, r, v.do(meta(r, p, req.Reason), on, from))
		if err != nil {
			return err
		}
		st, err := a.statusOf(f)
		if err != nil {
			return err
		}
		a.written(w, r, http.StatusOK, flagStamp(f), st)
		return nil
	}
}

func (a *API) getValve(w http.ResponseWriter, r *http.Request) error {
	f, err := a.currentFlag(r)
	if err != nil {
		return err
	}
	if f.Valve == nil {
		return &requestError{kind: errNoValve, msg: fmt.Sprintf("flag %s/%s is not a safety valve: configure it with PUT .../valve", f.Environment, f.Key)}
	}
	a.writeVersioned(w, r, f.Version, valveOf(f))
	return nil
}

func (a *API) configureValve(w http.ResponseWriter, r *http.Request, p auth.Principal) error {
	if _, err := query(r, nil); err != nil {
		return err
	}
	version, err := requireIfMatch(r, "flag")
	if err != nil {
		return err
	}
	var cfg events.ValveConfigured
	if err := a.readJSON(w, r, &cfg, false); err != nil {
		return err
	}
	f, err := flagResource.send(a, r, command.ConfigureValve{Meta: meta(r, p, ""), Env: r.PathValue("env"), Key: r.PathValue("key"),
		ExpectedVersion: version, Valve: cfg})
	if err != nil {
		return err
	}
	a.written(w, r, http.StatusOK, flagStamp(f), valveOf(f))
	return nil
}

// noVersion refuses If-Match on a valve's opening or closing, which act whatever the version.
func noVersion(r *http.Request, verb string) error {
	if len(r.Header.Values("If-Match")) > 0 {
		return badRequest(verb + " takes no version (no If-Match): it acts on the valve whatever the flag's version")
	}
	return nil
}

func (a *API) openValve(w http.ResponseWriter, r *http.Request, p auth.Principal) error {
	if _, err := query(r, nil); err != nil {
		return err
	}
	if err := noVersion(r, "opening a valve"); err != nil {
		return err
	}
	var req apiv1.OpenValveRequest
	if err := a.readJSON(w, r, &req, true); err != nil {
		return err
	}
	expires, err := valveExpiry(&req, time.Now())
	if err != nil {
		return err
	}
	f, err := flagResource.send(a, r, command.OpenValve{Meta: meta(r, p, req.Reason), Env: r.PathValue("env"), Key: r.PathValue("key"), Expires: expires})
	if err != nil {
		return err
	}
	a.written(w, r, http.StatusOK, flagStamp(f), valveOf(f))
	return nil
}

// maxValveFor bounds the "for" of a valve's opening.
const maxValveFor = 366 * 24 * time.Hour

// valveExpiry is when the valve opened by req closes by itself (zero: never), as of now.
func valveExpiry(req *apiv1.OpenValveRequest, now time.Time) (time.Time, error) {
	switch {
	case req.For != "" && req.Expires != "":
		return time.Time{}, badRequest("give expires or for, not both")
	case req.For != "":
		d, err := time.ParseDuration(strings.TrimSpace(req.For))
		if err != nil || d <= 0 || d > maxValveFor {
			return time.Time{}, badRequest(fmt.Sprintf("for: %q is not a duration of at most 8784h, such as \"30m\" or \"2h\"", truncate(req.For)))
		}
		return now.Add(d), nil
	case req.Expires != "":
		t, err := time.Parse(time.RFC3339Nano, req.Expires)
		if err != nil {
			return time.Time{}, badRequest(fmt.Sprintf("expires: %q is not an RFC 3339 time such as 2026-01-02T15:04:05Z", truncate(req.Expires)))
		}
		return t, nil
	}
	return time.Time{}, nil
}

func (a *API) closeValve(w http.ResponseWriter, r *http.Request, p auth.Principal) error {
	if _, err := query(r, nil); err != nil {
		return err
	}
	if err := noVersion(r, "closing a valve"); err != nil {
		return err
	}
	var req apiv1.CloseValveRequest
	if err := a.readJSON(w, r, &req, true); err != nil {
		return err
	}
	f, err := flagResource.send(a, r, command.CloseValve{Meta: meta(r, p, req.Reason), Env: r.PathValue("env"), Key: r.PathValue("key"),
		Cause: events.ValveClosedManual})
	if err != nil {
		return err
	}
	a.written(w, r, http.StatusOK, flagStamp(f), valveOf(f))
	return nil
}
