package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"

	"github.com/interlock-dev/interlock/events"
	"github.com/interlock-dev/interlock/internal/auth"
	"github.com/interlock-dev/interlock/internal/command"
	"github.com/interlock-dev/interlock/projections"
)

// Segments are served like flags, under /api/v1/environments/{env}/segments: the same ETags
// (the segment's version), If-Match and If-None-Match, bodies, reasons, roles and read-your-writes.

// segmentURL is the path of one segment.
func segmentURL(env, key string) string {
	return "/api/v1/environments/" + url.PathEscape(env) + "/segments/" + url.PathEscape(key)
}

func (a *API) listSegments(w http.ResponseWriter, r *http.Request) error {
	env := r.PathValue("env")
	q, err := query(r, []string{"archived"})
	if err != nil {
		return err
	}
	withArchived, err := boolParam(q, "archived")
	if err != nil {
		return err
	}
	if err := events.ValidateEnvironment(env); err != nil {
		return err
	}
	if !a.cfg.Ready() {
		return errNotReady
	}
	segs := a.cfg.Catalog.Segments(env)
	out := make([]projections.Segment, 0, len(segs))
	for _, s := range segs {
		if withArchived || !s.Archived {
			out = append(out, s)
		}
	}
	a.writeJSON(w, r, http.StatusOK, struct {
		Segments []projections.Segment `json:"segments"`
	}{out})
	return nil
}

func (a *API) getSegment(w http.ResponseWriter, r *http.Request) error {
	env, key := r.PathValue("env"), r.PathValue("key")
	at, past, err := pastPoint(r)
	if err != nil {
		return err
	}
	if err := errors.Join(events.ValidateEnvironment(env), events.ValidateSegmentKey(key)); err != nil {
		return err
	}
	var s projections.Segment
	if past {
		if s, err = projections.SegmentAt(r.Context(), a.cfg.Reader, env, key, at); err != nil {
			return err
		}
	} else {
		if !a.cfg.Ready() {
			return errNotReady
		}
		var ok bool
		if s, ok = a.cfg.Catalog.Segment(env, key); !ok {
			return &requestError{kind: errSegmentNotFound, msg: fmt.Sprintf("segment %s/%s does not exist", env, key)}
		}
	}
	a.writeVersioned(w, r, s.Version, s)
	return nil
}

func (a *API) segmentHistory(w http.ResponseWriter, r *http.Request) error {
	if _, err := query(r, nil); err != nil {
		return err
	}
	entries, err := projections.SegmentHistory(r.Context(), a.cfg.Reader, r.PathValue("env"), r.PathValue("key"))
	if err != nil {
		return err
	}
	a.writeJSON(w, r, http.StatusOK, struct {
		Entries []projections.Entry `json:"entries"`
	}{entries})
	return nil
}

func (a *API) createSegment(w http.ResponseWriter, r *http.Request, p auth.Principal) error {
	env := r.PathValue("env")
	if _, err := query(r, nil); err != nil {
		return err
	}
	var body json.RawMessage
	if err := a.readJSON(w, r, &body, false); err != nil {
		return err
	}
	key, cfg, err := decodeCreate[events.SegmentConfig](body, "segment")
	if err != nil {
		return err
	}
	s, err := a.cfg.Commands.CreateSegment(r.Context(), meta(r, p, ""), env, key, cfg)
	if err != nil {
		return err
	}
	w.Header().Set("Location", segmentURL(s.Environment, s.Key))
	a.writtenSegment(w, r, http.StatusCreated, s)
	return nil
}

func (a *API) updateSegment(w http.ResponseWriter, r *http.Request, p auth.Principal) error {
	version, patch, err := a.readPatch(w, r, "segment")
	if err != nil {
		return err
	}
	s, err := a.cfg.Commands.UpdateSegment(r.Context(), meta(r, p, ""), r.PathValue("env"), r.PathValue("key"), version, patch)
	if err != nil {
		return err
	}
	a.writtenSegment(w, r, http.StatusOK, s)
	return nil
}

// segmentCommand is a segment command method that takes an expected version, as a method
// expression such as Commands.ArchiveSegment.
type segmentCommand func(c Commands, ctx context.Context, m command.Meta, env, key string, expectedVersion uint64) (projections.Segment, error)

// segmentAction serves archive and unarchive: the body of a flag action, If-Match or a version in
// the body.
func (a *API) segmentAction(do segmentCommand) func(http.ResponseWriter, *http.Request, auth.Principal) error {
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
		s, err := do(a.cfg.Commands, r.Context(), meta(r, p, req.Reason), r.PathValue("env"), r.PathValue("key"), version)
		if err != nil {
			return staleFrom(err, fromHeader)
		}
		a.writtenSegment(w, r, http.StatusOK, s)
		return nil
	}
}

// writtenSegment is written for a segment: the answer goes out once this replica's catalog has
// applied the write, or after WriteTimeout anyway.
func (a *API) writtenSegment(w http.ResponseWriter, r *http.Request, status int, s projections.Segment) {
	ctx, cancel := context.WithTimeout(r.Context(), a.cfg.WriteTimeout)
	defer cancel()
	if err := a.cfg.Catalog.WaitSequence(ctx, s.Sequence); err != nil {
		a.logger.WarnContext(r.Context(), "answering a write before the catalog applied it",
			"environment", s.Environment, "segment", s.Key, "sequence", s.Sequence,
			"correlation_id", correlationID(r.Context()), "error", err)
	}
	w.Header().Set("ETag", etag(s.Version))
	a.writeJSON(w, r, status, s)
}
