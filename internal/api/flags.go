package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"github.com/interlock-dev/interlock/events"
	"github.com/interlock-dev/interlock/internal/auth"
	"github.com/interlock-dev/interlock/internal/command"
	"github.com/interlock-dev/interlock/projections"
)

// flagURL is the path of one flag.
func flagURL(env, key string) string {
	return "/api/v1/environments/" + url.PathEscape(env) + "/flags/" + url.PathEscape(key)
}

func (a *API) listEnvironments(w http.ResponseWriter, r *http.Request) error {
	if _, err := query(r, nil); err != nil {
		return err
	}
	if !a.cfg.Ready() {
		return errNotReady
	}
	envs := a.cfg.Catalog.Environments()
	if envs == nil {
		envs = []string{}
	}
	a.writeJSON(w, r, http.StatusOK, struct {
		Environments []string `json:"environments"`
	}{envs})
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
	a.writeJSON(w, r, http.StatusOK, struct {
		Flags []projections.Flag `json:"flags"`
	}{out})
	return nil
}

// pastPoint reads the query of a GET of one flag or segment: nothing but at, version or sequence,
// and whether one of them asks for the past.
func pastPoint(r *http.Request) (projections.Point, bool, error) {
	q, err := query(r, []string{"at", "version", "sequence"})
	if err != nil {
		return projections.Point{}, false, err
	}
	return point(q, "at", "version", "sequence")
}

// writeVersioned answers a read of one versioned document with its ETag, or 304 when the client
// has that version already.
func (a *API) writeVersioned(w http.ResponseWriter, r *http.Request, version uint64, v any) {
	tag := etag(version)
	w.Header().Set("ETag", tag)
	if noneMatch(r, tag) {
		w.WriteHeader(http.StatusNotModified)
		return
	}
	a.writeJSON(w, r, http.StatusOK, v)
}

func (a *API) getFlag(w http.ResponseWriter, r *http.Request) error {
	env, key := r.PathValue("env"), r.PathValue("key")
	at, past, err := pastPoint(r)
	if err != nil {
		return err
	}
	if err := errors.Join(events.ValidateEnvironment(env), events.ValidateFlagKey(key)); err != nil {
		return err
	}
	var f projections.Flag
	if past {
		if f, err = projections.FlagAt(r.Context(), a.cfg.Reader, env, key, at); err != nil {
			return err
		}
	} else {
		if !a.cfg.Ready() {
			return errNotReady
		}
		var ok bool
		if f, ok = a.cfg.Catalog.Flag(env, key); !ok {
			return &requestError{kind: errFlagNotFound, msg: fmt.Sprintf("flag %s/%s does not exist", env, key)}
		}
	}
	a.writeVersioned(w, r, f.Version, f)
	return nil
}

func (a *API) flagHistory(w http.ResponseWriter, r *http.Request) error {
	if _, err := query(r, nil); err != nil {
		return err
	}
	entries, err := projections.FlagHistory(r.Context(), a.cfg.Reader, r.PathValue("env"), r.PathValue("key"))
	if err != nil {
		return err
	}
	a.writeJSON(w, r, http.StatusOK, struct {
		Entries []projections.Entry `json:"entries"`
	}{entries})
	return nil
}

// meta is what every command carries: the actor is always the token's principal.
func meta(r *http.Request, p auth.Principal, reason string) command.Meta {
	if reason == "" {
		reason = r.Header.Get(headerReason)
	}
	return command.Meta{Actor: p.Name, Reason: reason, CorrelationID: correlationID(r.Context())}
}

// decodeCreate splits the body of a create into the key and the configuration document of a
// flag or segment (what names it in messages). The document is decoded on its own (not embedded
// in a request struct) so that error messages name its fields as the client wrote them; unknown
// fields and anything that is not one JSON object are refused.
func decodeCreate[T any](body []byte, what string) (string, T, error) {
	var zero, cfg T
	var fields map[string]json.RawMessage
	if err := decodeJSON(body, &fields); err != nil {
		return "", zero, err
	}
	if fields == nil {
		return "", zero, badRequest("the body is not a JSON object: send the " + what + " document")
	}
	var key string
	if raw, ok := fields["key"]; ok {
		if err := decodeJSON(raw, &key); err != nil {
			return "", zero, badRequest("field key: a " + what + " key is a JSON string")
		}
		delete(fields, "key")
	}
	doc, err := json.Marshal(fields)
	if err != nil {
		return "", zero, badRequest("the body: " + err.Error())
	}
	if err := decodeJSON(doc, &cfg); err != nil {
		return "", zero, err
	}
	return key, cfg, nil
}

func (a *API) createFlag(w http.ResponseWriter, r *http.Request, p auth.Principal) error {
	env := r.PathValue("env")
	if _, err := query(r, nil); err != nil {
		return err
	}
	var body json.RawMessage
	if err := a.readJSON(w, r, &body, false); err != nil {
		return err
	}
	key, cfg, err := decodeCreate[events.FlagConfig](body, "flag")
	if err != nil {
		return err
	}
	f, err := a.cfg.Commands.Create(r.Context(), meta(r, p, ""), env, key, cfg)
	if err != nil {
		return err
	}
	w.Header().Set("Location", flagURL(f.Environment, f.Key))
	a.written(w, r, http.StatusCreated, f)
	return nil
}

// readPatch reads what every PATCH of a flag or segment (what) needs: no query parameters, a
// JSON Merge Patch body that is one object, and the expected version from a required If-Match.
func (a *API) readPatch(w http.ResponseWriter, r *http.Request, what string) (uint64, []byte, error) {
	if _, err := query(r, nil); err != nil {
		return 0, nil, err
	}
	if err := checkContentType(r, mediaMergePatch, false); err != nil {
		return 0, nil, err
	}
	version, ok, err := ifMatch(r)
	if err != nil {
		return 0, nil, err
	}
	if !ok {
		return 0, nil, &requestError{kind: errPreconditionRequired,
			msg: `If-Match is required: send the ETag of the ` + what + ` you read, such as If-Match: "3"`}
	}
	patch, err := a.readBody(w, r)
	if err != nil {
		return 0, nil, err
	}
	if err := checkMergePatch(patch); err != nil {
		return 0, nil, err
	}
	return version, patch, nil
}

func (a *API) updateFlag(w http.ResponseWriter, r *http.Request, p auth.Principal) error {
	version, patch, err := a.readPatch(w, r, "flag")
	if err != nil {
		return err
	}
	f, err := a.cfg.Commands.Update(r.Context(), meta(r, p, ""), r.PathValue("env"), r.PathValue("key"), version, patch)
	if err != nil {
		return err
	}
	a.written(w, r, http.StatusOK, f)
	return nil
}

// checkMergePatch accepts one JSON object (RFC 7396 allows any value, but a patch that is not an
// object would replace the whole document, which the command refuses anyway).
func checkMergePatch(patch []byte) error {
	var obj map[string]any
	if err := decodeJSON(patch, &obj); err != nil {
		return err
	}
	if obj == nil {
		return badRequest("the body is not a JSON object: a merge patch names the fields it changes")
	}
	return nil
}

// actionRequest is the body of enable, archive and unarchive; every field is optional.
type actionRequest struct {
	Reason  string  `json:"reason"`
	Version *uint64 `json:"version"`
}

// killRequest is the body of a kill: it takes no version.
type killRequest struct {
	Reason string `json:"reason"`
}

// restoreRequest is the body of a restore.
type restoreRequest struct {
	ToVersion uint64  `json:"toVersion"`
	Reason    string  `json:"reason"`
	Version   *uint64 `json:"version"`
}

// versionedCommand is a command method that takes an expected version, as a method expression
// such as Commands.Enable.
type versionedCommand func(c Commands, ctx context.Context, m command.Meta, env, key string, expectedVersion uint64) (projections.Flag, error)

// action serves enable, archive and unarchive.
func (a *API) action(do versionedCommand) func(http.ResponseWriter, *http.Request, auth.Principal) error {
	return func(w http.ResponseWriter, r *http.Request, p auth.Principal) error {
		if _, err := query(r, nil); err != nil {
			return err
		}
		var req actionRequest
		if err := a.readJSON(w, r, &req, true); err != nil {
			return err
		}
		version, fromHeader, err := expectedVersion(r, req.Version)
		if err != nil {
			return err
		}
		f, err := do(a.cfg.Commands, r.Context(), meta(r, p, req.Reason), r.PathValue("env"), r.PathValue("key"), version)
		if err != nil {
			return staleFrom(err, fromHeader)
		}
		a.written(w, r, http.StatusOK, f)
		return nil
	}
}

func (a *API) killFlag(w http.ResponseWriter, r *http.Request, p auth.Principal) error {
	if _, err := query(r, nil); err != nil {
		return err
	}
	if len(r.Header.Values("If-Match")) > 0 {
		return badRequest("kill takes no version (no If-Match): it turns the flag off whatever its version")
	}
	var req killRequest
	if err := a.readJSON(w, r, &req, true); err != nil {
		return err
	}
	f, err := a.cfg.Commands.Kill(r.Context(), meta(r, p, req.Reason), r.PathValue("env"), r.PathValue("key"))
	if err != nil {
		return err
	}
	a.written(w, r, http.StatusOK, f)
	return nil
}

func (a *API) restoreFlag(w http.ResponseWriter, r *http.Request, p auth.Principal) error {
	if _, err := query(r, nil); err != nil {
		return err
	}
	var req restoreRequest
	if err := a.readJSON(w, r, &req, false); err != nil {
		return err
	}
	version, fromHeader, err := expectedVersion(r, req.Version)
	if err != nil {
		return err
	}
	f, err := a.cfg.Commands.Restore(r.Context(), meta(r, p, req.Reason), r.PathValue("env"), r.PathValue("key"), req.ToVersion, version)
	if err != nil {
		return staleFrom(err, fromHeader)
	}
	a.written(w, r, http.StatusOK, f)
	return nil
}

// staleFrom marks a stale version that came from the body: a conflict, not a failed If-Match.
func staleFrom(err error, fromHeader bool) error {
	if !fromHeader && errors.Is(err, command.ErrStale) {
		return fmt.Errorf("%w: %w", errStaleBody, err)
	}
	return err
}

// written answers a successful write with the flag and its ETag, once this replica's catalog has
// applied it (bounded by WriteTimeout), so that the client's next read here sees its write. The
// write happened either way: if the catalog is slow, the answer goes out anyway and says so in
// the log.
func (a *API) written(w http.ResponseWriter, r *http.Request, status int, f projections.Flag) {
	ctx, cancel := context.WithTimeout(r.Context(), a.cfg.WriteTimeout)
	defer cancel()
	if err := a.cfg.Catalog.WaitSequence(ctx, f.Sequence); err != nil {
		a.logger.WarnContext(r.Context(), "answering a write before the catalog applied it",
			"environment", f.Environment, "key", f.Key, "sequence", f.Sequence,
			"correlation_id", correlationID(r.Context()), "error", err)
	}
	w.Header().Set("ETag", etag(f.Version))
	a.writeJSON(w, r, status, f)
}

func (a *API) audit(w http.ResponseWriter, r *http.Request) error {
	q, err := query(r, []string{"environment", "flag", "actor", "since", "until", "after", "limit"}, "type")
	if err != nil {
		return err
	}
	aq := projections.AuditQuery{
		Environment: q.Get("environment"),
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
