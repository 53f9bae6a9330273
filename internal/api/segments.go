package api

import (
	"net/http"
	"net/url"

	"github.com/interlock-dev/interlock/apiv1"
	"github.com/interlock-dev/interlock/events"
	"github.com/interlock-dev/interlock/internal/command"
	"github.com/interlock-dev/interlock/projections"
)

// Segments are served like flags, under /api/v1/environments/{env}/segments: the same ETags
// (the segment's version), If-Match and If-None-Match, bodies, reasons, roles and read-your-writes.

// segmentURL is the path of one segment.
func segmentURL(env, key string) string {
	return "/api/v1/environments/" + url.PathEscape(env) + "/segments/" + url.PathEscape(key)
}

// segmentResource serves one segment now or in the past, its history, create, patch, archive
// and unarchive, as flags are served (resource.go).
var segmentResource = &resource[projections.Segment, events.SegmentConfig]{
	noun:        "segment",
	notFound:    errSegmentNotFound,
	validateKey: events.ValidateSegmentKey,
	path:        segmentURL,
	stamp: func(s projections.Segment) stamp {
		return stamp{env: s.Environment, key: s.Key, version: s.Version, sequence: s.Sequence, logKey: "segment"}
	},
	lookup:  Catalog.Segment,
	at:      projections.SegmentAt,
	history: projections.SegmentHistory,
	create: func(m command.Meta, env, key string, cfg events.SegmentConfig) command.Command {
		return command.CreateSegment{Meta: m, Env: env, Key: key, Config: cfg}
	},
	update: func(m command.Meta, env, key string, version uint64, patch []byte) command.Command {
		return command.UpdateSegment{Meta: m, Env: env, Key: key, ExpectedVersion: version, Patch: patch}
	},
	result: func(r command.Result) projections.Segment { return r.Segment },
}

// The segment's versioned actions (resourceAction).
func archiveSegment(m command.Meta, env, key string, version uint64) command.Command {
	return command.ArchiveSegment{Meta: m, Env: env, Key: key, ExpectedVersion: version}
}

func unarchiveSegment(m command.Meta, env, key string, version uint64) command.Command {
	return command.UnarchiveSegment{Meta: m, Env: env, Key: key, ExpectedVersion: version}
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
	a.writeJSON(w, r, http.StatusOK, apiv1.SegmentList{Segments: out})
	return nil
}
