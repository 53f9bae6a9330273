package api

import (
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"github.com/interlock-dev/interlock/apiv1"
	"github.com/interlock-dev/interlock/events"
	"github.com/interlock-dev/interlock/internal/auth"
	"github.com/interlock-dev/interlock/internal/command"
	"github.com/interlock-dev/interlock/projections"
)

// flagURL is the path of one flag.
func flagURL(env, key string) string {
	return "/api/v1/environments/" + url.PathEscape(env) + "/flags/" + url.PathEscape(key)
}

// flagResource serves what flags share with segments (resource.go): one flag now or in the
// past, its history, create, patch, and the versioned actions.
var flagResource = &resource[projections.Flag, events.FlagConfig]{
	noun:        "flag",
	notFound:    errFlagNotFound,
	validateKey: events.ValidateFlagKey,
	path:        flagURL,
	stamp:       flagStamp,
	lookup:      Catalog.Flag,
	at:          projections.FlagAt,
	history:     projections.FlagHistory,
	create: func(m command.Meta, env, key string, cfg events.FlagConfig) command.Command {
		return command.CreateFlag{Meta: m, Env: env, Key: key, Config: cfg}
	},
	update: func(m command.Meta, env, key string, version uint64, patch []byte) command.Command {
		return command.UpdateFlag{Meta: m, Env: env, Key: key, ExpectedVersion: version, Patch: patch}
	},
	result: func(r command.Result) projections.Flag { return r.Flag },
}

// The flag's versioned actions (resourceAction).
func enableFlag(m command.Meta, env, key string, version uint64) command.Command {
	return command.EnableFlag{Meta: m, Env: env, Key: key, ExpectedVersion: version}
}

func archiveFlag(m command.Meta, env, key string, version uint64) command.Command {
	return command.ArchiveFlag{Meta: m, Env: env, Key: key, ExpectedVersion: version}
}

func unarchiveFlag(m command.Meta, env, key string, version uint64) command.Command {
	return command.UnarchiveFlag{Meta: m, Env: env, Key: key, ExpectedVersion: version}
}

// flagStamp is the stamp of every answer to a write of a flag, whether it answers with the flag
// or a view of it.
func flagStamp(f projections.Flag) stamp {
	return stamp{env: f.Environment, key: f.Key, version: f.Version, sequence: f.Sequence, logKey: "key"}
}

func (a *API) listEnvironments(w http.ResponseWriter, r *http.Request, p auth.Principal) error {
	if _, err := query(r, nil); err != nil {
		return err
	}
	if !a.cfg.Ready() {
		return errNotReady
	}
	envs := []string{}
	for _, env := range a.cfg.Catalog.Environments() {
		if p.Sees(env) {
			envs = append(envs, env)
		}
	}
	a.writeJSON(w, r, http.StatusOK, apiv1.EnvironmentList{Environments: envs})
	return nil
}

// point parses the query parameters naming a point in the past, among the names given; ok is
// false when none is given.
func point(q url.Values, names ...string) (at projections.Point, ok bool, err error) {
	var given []string
	for _, n := range names {
		if q.Get(n) != "" {
			given = append(given, n)
		}
	}
	switch len(given) {
	case 0:
		return projections.Point{}, false, nil
	case 1:
	default:
		return projections.Point{}, false, badRequest(fmt.Sprintf("give one of %s, not %s together",
			strings.Join(names, ", "), strings.Join(given, " and ")))
	}
	switch given[0] {
	case "at":
		at.Time, err = timeParam(q, "at")
	case "sequence":
		at.Sequence, err = uintParam(q, "sequence")
	case "version":
		at.Version, err = uintParam(q, "version")
	}
	return at, err == nil, err
}

func (a *API) listFlags(w http.ResponseWriter, r *http.Request) error {
	env := r.PathValue("env")
	q, err := query(r, []string{"archived", "at", "sequence"})
	if err != nil {
		return err
	}
	withArchived, err := boolParam(q, "archived")
	if err != nil {
		return err
	}
	at, past, err := point(q, "at", "sequence")
	if err != nil {
		return err
	}
	if err := events.ValidateEnvironment(env); err != nil {
		return err
	}
	var flags []projections.Flag
	if past {
		if flags, err = projections.EnvironmentAt(r.Context(), a.cfg.Reader, env, at); err != nil {
			return err
		}
	} else {
		if !a.cfg.Ready() {
			return errNotReady
		}
		flags = a.cfg.Catalog.Flags(env)
	}
	out := make([]projections.Flag, 0, len(flags))
	for _, f := range flags {
		if withArchived || !f.Archived {
			out = append(out, f)
		}
	}
	a.writeJSON(w, r, http.StatusOK, apiv1.FlagList{Flags: out})
	return nil
}

func (a *API) killFlag(w http.ResponseWriter, r *http.Request, p auth.Principal) error {
	if _, err := query(r, nil); err != nil {
		return err
	}
	if len(r.Header.Values("If-Match")) > 0 {
		return badRequest("kill takes no version (no If-Match): it turns the flag off whatever its version")
	}
	var req apiv1.KillRequest
	if err := a.readJSON(w, r, &req, true); err != nil {
		return err
	}
	f, err := flagResource.send(a, r, command.KillFlag{Meta: meta(r, p, req.Reason), Env: r.PathValue("env"), Key: r.PathValue("key")})
	if err != nil {
		return err
	}
	a.written(w, r, http.StatusOK, flagStamp(f), f)
	return nil
}

func (a *API) restoreFlag(w http.ResponseWriter, r *http.Request, p auth.Principal) error {
	if _, err := query(r, nil); err != nil {
		return err
	}
	var req apiv1.RestoreRequest
	if err := a.readJSON(w, r, &req, false); err != nil {
		return err
	}
	version, fromHeader, err := expectedVersion(r, req.Version)
	if err != nil {
		return err
	}
	f, err := flagResource.send(a, r, command.RestoreFlag{Meta: meta(r, p, req.Reason), Env: r.PathValue("env"), Key: r.PathValue("key"),
		ToVersion: req.ToVersion, ExpectedVersion: version})
	if err != nil {
		return staleFrom(err, fromHeader)
	}
	a.written(w, r, http.StatusOK, flagStamp(f), f)
	return nil
}

func (a *API) audit(w http.ResponseWriter, r *http.Request, p auth.Principal) error {
	q, err := query(r, []string{"environment", "flag", "actor", "since", "until", "after", "limit"}, "type")
	if err != nil {
		return err
	}
	env, err := scopeEnvironment(p, q.Get("environment"))
	if err != nil {
		return err
	}
	aq := projections.AuditQuery{
		Environment: env,
		Flag:        q.Get("flag"),
		Actor:       q.Get("actor"),
		Types:       q["type"],
	}
	if aq.Since, err = timeParam(q, "since"); err != nil {
		return err
	}
	if aq.Until, err = timeParam(q, "until"); err != nil {
		return err
	}
	if aq.After, err = uintParam(q, "after"); err != nil {
		return err
	}
	if s := q.Get("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n <= 0 {
			return badRequest(fmt.Sprintf("limit: %q is not a positive integer", truncate(s)))
		}
		aq.Limit = n
	}
	page, err := projections.Audit(r.Context(), a.cfg.Reader, aq)
	if err != nil {
		return err
	}
	if page.Events == nil {
		page.Events = []projections.Entry{}
	}
	if page.Next != 0 {
		next := url.Values{}
		for k, v := range q {
			next[k] = v
		}
		next.Set("after", strconv.FormatUint(page.Next, 10))
		w.Header().Set("Link", fmt.Sprintf(`<%s?%s>; rel="next"`, r.URL.Path, next.Encode()))
	}
	a.writeJSON(w, r, http.StatusOK, page)
	return nil
}
