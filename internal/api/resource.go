package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"

	"github.com/interlock-dev/interlock/apiv1"
	"github.com/interlock-dev/interlock/events"
	"github.com/interlock-dev/interlock/internal/auth"
	"github.com/interlock-dev/interlock/internal/command"
	"github.com/interlock-dev/interlock/projections"
)

// Flags and segments are both versioned documents of an environment, served the same way: read
// now or as of a point in the past, with their version as ETag; their history; created from a
// configuration document; patched under If-Match; archived and unarchived. A resource describes
// one of the two, and the handlers below serve either. What only flags have (enable, kill,
// restore, rollouts, valves, reads of a whole environment as of the past) stays with flags.

// resource describes one kind of versioned document: T is the document, C the configuration a
// create sends. flagResource (flags.go) and segmentResource (segments.go) are the two there are.
type resource[T, C any] struct {
	// noun names the kind in messages: "flag" or "segment".
	noun string
	// notFound is the error kind of a key the catalog does not know.
	notFound    error
	validateKey func(key string) error
	// path is the path of one document, the Location of a create.
	path func(env, key string) string
	// stamp reads what an answer with the document needs to know of it.
	stamp func(T) stamp
	// lookup reads the current state from the catalog.
	lookup func(c Catalog, env, key string) (T, bool)
	// at reads the state at a point in the past from the event store.
	at      func(ctx context.Context, r projections.Reader, env, key string, at projections.Point) (T, error)
	history func(ctx context.Context, r projections.Reader, env, key string) ([]projections.Entry, error)
	// create and update are the commands of a create and a patch; result reads the document
	// from a command's result.
	create func(m command.Meta, env, key string, cfg C) command.Command
	update func(m command.Meta, env, key string, expectedVersion uint64, patch []byte) command.Command
	result func(command.Result) T
}

// send has the write path carry out c, and reads the document from its result.
func (res *resource[T, C]) send(a *API, r *http.Request, c command.Command) (T, error) {
	out, err := a.cfg.Commands.Handle(r.Context(), c)
	return res.result(out), err
}

// stamp is what answering with a document needs to know of it: where it is, its version (the
// ETag), the stream sequence of its last event, and the log attribute that names its key.
type stamp struct {
	env, key          string
	version, sequence uint64
	logKey            string
}

// validate checks the names of document env/key.
func (res *resource[T, C]) validate(env, key string) error {
	return errors.Join(events.ValidateEnvironment(env), res.validateKey(key))
}

// current reads document env/key from the catalog: errNotReady until the catalog has caught up
// with the stream, the kind's not-found error when it does not know the key.
func (res *resource[T, C]) current(a *API, env, key string) (T, error) {
	var zero T
	if !a.cfg.Ready() {
		return zero, errNotReady
	}
	v, ok := res.lookup(a.cfg.Catalog, env, key)
	if !ok {
		return zero, &requestError{kind: res.notFound, msg: fmt.Sprintf("%s %s/%s does not exist", res.noun, env, key)}
	}
	return v, nil
}

// getResource serves the GET of one document: its current state, or its state as of at, version
// or sequence, with its version as ETag (304 when If-None-Match names it).
func getResource[T, C any](a *API, res *resource[T, C]) func(http.ResponseWriter, *http.Request) error {
	return func(w http.ResponseWriter, r *http.Request) error {
		env, key := r.PathValue("env"), r.PathValue("key")
		at, past, err := pastPoint(r)
		if err != nil {
			return err
		}
		if err := res.validate(env, key); err != nil {
			return err
		}
		var v T
		if past {
			v, err = res.at(r.Context(), a.cfg.Reader, env, key, at)
		} else {
			v, err = res.current(a, env, key)
		}
		if err != nil {
			return err
		}
		a.writeVersioned(w, r, res.stamp(v).version, v)
		return nil
	}
}

// resourceHistory serves the history of one document, oldest first.
func resourceHistory[T, C any](a *API, res *resource[T, C]) func(http.ResponseWriter, *http.Request) error {
	return func(w http.ResponseWriter, r *http.Request) error {
		if _, err := query(r, nil); err != nil {
			return err
		}
		entries, err := res.history(r.Context(), a.cfg.Reader, r.PathValue("env"), r.PathValue("key"))
		if err != nil {
			return err
		}
		a.writeJSON(w, r, http.StatusOK, apiv1.History{Entries: entries})
		return nil
	}
}

// createResource serves the POST that creates a document from its key and configuration,
// answering 201 with its Location.
func createResource[T, C any](a *API, res *resource[T, C]) func(http.ResponseWriter, *http.Request, auth.Principal) error {
	return func(w http.ResponseWriter, r *http.Request, p auth.Principal) error {
		env := r.PathValue("env")
		if _, err := query(r, nil); err != nil {
			return err
		}
		var body json.RawMessage
		if err := a.readJSON(w, r, &body, false); err != nil {
			return err
		}
		key, cfg, err := decodeCreate[C](body, res.noun)
		if err != nil {
			return err
		}
		v, err := res.send(a, r, res.create(meta(r, p, ""), env, key, cfg))
		if err != nil {
			return err
		}
		st := res.stamp(v)
		w.Header().Set("Location", res.path(st.env, st.key))
		a.written(w, r, http.StatusCreated, st, v)
		return nil
	}
}

// updateResource serves the PATCH of a document: a JSON Merge Patch under a required If-Match.
func updateResource[T, C any](a *API, res *resource[T, C]) func(http.ResponseWriter, *http.Request, auth.Principal) error {
	return func(w http.ResponseWriter, r *http.Request, p auth.Principal) error {
		version, patch, err := a.readPatch(w, r, res.noun)
		if err != nil {
			return err
		}
		v, err := res.send(a, r, res.update(meta(r, p, ""), r.PathValue("env"), r.PathValue("key"), version, patch))
		if err != nil {
			return err
		}
		a.written(w, r, http.StatusOK, res.stamp(v), v)
		return nil
	}
}

// versionedCommand builds a command on a document that takes an expected version, such as
// command.EnableFlag or command.ArchiveSegment.
type versionedCommand func(m command.Meta, env, key string, expectedVersion uint64) command.Command

// resourceAction serves do, a command on a document that takes a reason and an expected
// version from If-Match or the body: a flag's enable, archive and unarchive, a segment's archive
// and unarchive.
func resourceAction[T, C any](a *API, res *resource[T, C], do versionedCommand) func(http.ResponseWriter, *http.Request, auth.Principal) error {
	return func(w http.ResponseWriter, r *http.Request, p auth.Principal) error {
		if _, err := query(r, nil); err != nil {
			return err
		}
		var req apiv1.ActionRequest
		if err := a.readJSON(w, r, &req, true); err != nil {
			return err
		}
		version, fromHeader, err := expectedVersion(r, req.Version)
		if err != nil {
			return err
		}
		v, err := res.send(a, r, do(meta(r, p, req.Reason), r.PathValue("env"), r.PathValue("key"), version))
		if err != nil {
			return staleFrom(err, fromHeader)
		}
		a.written(w, r, http.StatusOK, res.stamp(v), v)
		return nil
	}
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

// readPatch reads what every PATCH of a flag or segment (what) needs: no query parameters, a
// JSON Merge Patch body that is one object, and the expected version from a required If-Match.
func (a *API) readPatch(w http.ResponseWriter, r *http.Request, what string) (uint64, []byte, error) {
	if _, err := query(r, nil); err != nil {
		return 0, nil, err
	}
	if err := checkContentType(r, mediaMergePatch, false); err != nil {
		return 0, nil, err
	}
	version, err := requireIfMatch(r, what)
	if err != nil {
		return 0, nil, err
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

// meta is what every command carries: the actor is always the token's principal.
func meta(r *http.Request, p auth.Principal, reason string) command.Meta {
	if reason == "" {
		reason = r.Header.Get(headerReason)
	}
	return command.Meta{Actor: p.Name, Reason: reason, CorrelationID: correlationID(r.Context()),
		EventID: idempotentID(r, p)}
}

// staleFrom marks a stale version that came from the body: a conflict, not a failed If-Match.
func staleFrom(err error, fromHeader bool) error {
	if !fromHeader && errors.Is(err, command.ErrStale) {
		return fmt.Errorf("%w: %w", errStaleBody, err)
	}
	return err
}

// written answers a successful write with doc and the version of st as its ETag, once this
// replica's catalog has applied the write (bounded by WriteTimeout), so that the client's next
// read here sees its write. The write happened either way: if the catalog is slow, the answer
// goes out anyway and says so in the log.
func (a *API) written(w http.ResponseWriter, r *http.Request, status int, st stamp, doc any) {
	ctx, cancel := context.WithTimeout(r.Context(), a.cfg.WriteTimeout)
	defer cancel()
	if err := a.cfg.Catalog.WaitSequence(ctx, st.sequence); err != nil {
		a.logger.WarnContext(r.Context(), "answering a write before the catalog applied it",
			"environment", st.env, st.logKey, st.key, "sequence", st.sequence,
			"correlation_id", correlationID(r.Context()), "error", err)
	}
	w.Header().Set("ETag", etag(st.version))
	a.writeJSON(w, r, status, doc)
}
