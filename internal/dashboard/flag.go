package dashboard

import (
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/interlock-dev/interlock/events"
	"github.com/interlock-dev/interlock/internal/auth"
	"github.com/interlock-dev/interlock/projections"
)

// flagData is the flag page.
type flagData struct {
	F        flagView
	Variants []variantView
	Rules    []ruleView
	Default  string
	Segments []string
	Stages   []stageView
	// Held is how long the current stage has been served.
	Held     string
	Version  uint64 // of the past state shown, 0 for now
	CanKill  bool
	CanWrite bool
	Critical bool
	// Verbs are the rollout commands the session may run now; HasRollout links the guard panel.
	Verbs      []verbView
	HasRollout bool
	// OOB marks the summary the live stream sends, for htmx to swap by its id.
	OOB bool
}

// stageView is one stage of a rollout plan in its progress bar.
type stageView struct {
	Percent string
	Done    bool
	Current bool
}

// readFlag checks the path's environment and key and that s may read them.
func readFlag(r *http.Request, s *session) (env, key string, err error) {
	if env, err = readEnv(r, s); err != nil {
		return "", "", err
	}
	key = r.PathValue("key")
	return env, key, events.ValidateFlagKey(key)
}

// current is the live state of a flag.
func (d *Dashboard) currentFlag(env, key string) (projections.Flag, error) {
	if !d.cfg.Ready() {
		return projections.Flag{}, errNotReady
	}
	f, ok := d.cfg.Catalog.Flag(env, key)
	if !ok {
		return projections.Flag{}, projections.ErrNotFound
	}
	return f, nil
}

func (d *Dashboard) flagPage(w http.ResponseWriter, r *http.Request, s *session) error {
	env, key, err := readFlag(r, s)
	if err != nil {
		return err
	}
	q := r.URL.Query()
	at, err := parseAt(q)
	if err != nil {
		return err
	}
	var version uint64
	if v := q.Get("version"); v != "" {
		if version, err = strconv.ParseUint(v, 10, 64); err != nil || version == 0 {
			return badInput(fmt.Sprintf("version: %q is not a version (1, 2, …)", v))
		}
	}
	if version != 0 && !at.IsZero() {
		return badInput("give a time or a version, not both")
	}
	data := d.base(s, key+" · "+env, env)
	var f projections.Flag
	var n flagNotes
	switch {
	case version != 0:
		f, err = projections.FlagAt(r.Context(), d.cfg.Reader, env, key, projections.Point{Version: version})
		data.Past = "version " + strconv.FormatUint(version, 10)
	case !at.IsZero():
		f, err = projections.FlagAt(r.Context(), d.cfg.Reader, env, key, projections.Point{Time: at})
		data.Past = at.Format(time.RFC3339)
	default:
		seq := d.cfg.Catalog.Sequence()
		f, err = d.currentFlag(env, key)
		n = d.notes.get(env, key)
		data.Live = fmt.Sprintf("/env/%s/live?view=flag&key=%s&after=%d", url.PathEscape(env), url.QueryEscape(key), seq)
	}
	if err != nil {
		return err
	}
	fd := d.flagData(s, f, n, data.Past != "")
	fd.Version = version
	data.Data = fd
	d.render(w, r, http.StatusOK, "flag", data)
	return nil
}

// flagData builds the flag page's data; past pages offer no action.
func (d *Dashboard) flagData(s *session, f projections.Flag, n flagNotes, past bool) flagData {
	p := s.Principal()
	fd := flagData{
		F:        view(f, n),
		Variants: variantsOf(f.FlagConfig),
		Rules:    rulesOf(f.FlagConfig),
		Default:  f.DefaultVariant,
		CanKill:  !past && authorizeIn(p, auth.ActionKill, f.Environment) == nil,
		CanWrite: !past && authorizeIn(p, auth.ActionWrite, f.Environment) == nil,
		Critical: d.critical(f.Environment),
	}
	if f.DefaultServe != nil {
		fd.Default = serveText(*f.DefaultServe)
	}
	for _, rv := range fd.Rules {
		for _, c := range rv.Conditions {
			for _, seg := range c.Segments {
				if !slices.Contains(fd.Segments, seg) {
					fd.Segments = append(fd.Segments, seg)
				}
			}
		}
	}
	fd.HasRollout = f.Rollout != nil
	if !past {
		fd.Verbs = d.verbsFor(s, f)
	}
	if r := f.Rollout; r != nil && r.Active() {
		for i, st := range r.Plan.Stages {
			fd.Stages = append(fd.Stages, stageView{Percent: percent(st.Percent), Done: i < r.Stage, Current: i == r.Stage})
		}
		if !r.StageStartedAt.IsZero() {
			fd.Held = time.Since(r.StageStartedAt).Round(time.Second).String()
		}
	}
	return fd
}

// historyData is the history page: every event, newest first.
type historyData struct {
	Key      string
	Current  uint64
	Entries  []entryView
	CanWrite bool
}

type entryView struct {
	projections.Entry
	Changes []changeView
	Guard   bool
	// Restorable: a restore to the state after this event would change something.
	Restorable bool
}

func (d *Dashboard) historyPage(w http.ResponseWriter, r *http.Request, s *session) error {
	env, key, err := readFlag(r, s)
	if err != nil {
		return err
	}
	entries, err := projections.FlagHistory(r.Context(), d.cfg.Reader, env, key)
	if err != nil {
		return err
	}
	hd := historyData{Key: key, CanWrite: authorizeIn(s.Principal(), auth.ActionWrite, env) == nil}
	if len(entries) > 0 {
		hd.Current = entries[len(entries)-1].Version
	}
	for i := len(entries) - 1; i >= 0; i-- {
		e := entries[i]
		hd.Entries = append(hd.Entries, entryView{Entry: e, Changes: changesOf(e.Changes), Guard: e.Actor == "guard",
			Restorable: e.Version < hd.Current})
	}
	data := d.base(s, "History of "+key+" · "+env, env)
	data.Data = hd
	d.render(w, r, http.StatusOK, "history", data)
	return nil
}

// matrixData is one flag across every environment the session sees.
type matrixData struct {
	Key  string
	Rows []matrixRow
}

type matrixRow struct {
	Env    string
	Exists bool
	F      flagView
}

func (d *Dashboard) matrix(w http.ResponseWriter, r *http.Request, s *session) error {
	key := r.PathValue("key")
	if err := events.ValidateFlagKey(key); err != nil {
		return err
	}
	if !d.cfg.Ready() {
		return errNotReady
	}
	md := matrixData{Key: key}
	for _, env := range d.visibleEnvs(s.Principal()) {
		f, ok := d.cfg.Catalog.Flag(env, key)
		row := matrixRow{Env: env, Exists: ok}
		if ok {
			row.F = view(f, d.notes.get(env, key))
		}
		md.Rows = append(md.Rows, row)
	}
	data := d.base(s, key+" in every environment", "")
	data.Data = md
	d.render(w, r, http.StatusOK, "matrix", data)
	return nil
}

// segmentsData lists an environment's segments and the flags that use each.
type segmentsData struct {
	Segments []segmentView
}

type segmentView struct {
	projections.Segment
	// Flags target the segment in their rules; Valves serve their degraded variant to it.
	Flags, Valves []string
	Conditions    []condView
}

// segmentUse is who uses one segment.
type segmentUse struct{ flags, valves []string }

// segmentUsers finds, for every segment of env, the flags whose rules name it and the valves
// that serve it.
func (d *Dashboard) segmentUsers(env string) map[string]*segmentUse {
	users := map[string]*segmentUse{}
	use := func(seg string) *segmentUse {
		if users[seg] == nil {
			users[seg] = &segmentUse{}
		}
		return users[seg]
	}
	for _, f := range d.cfg.Catalog.Flags(env) {
		if f.Archived {
			continue
		}
		seen := map[string]bool{}
		for _, rv := range rulesOf(f.FlagConfig) {
			for _, c := range rv.Conditions {
				for _, seg := range c.Segments {
					if !seen[seg] {
						seen[seg] = true
						use(seg).flags = append(use(seg).flags, f.Key)
					}
				}
			}
		}
		if f.Valve != nil && f.Valve.Segment != "" {
			use(f.Valve.Segment).valves = append(use(f.Valve.Segment).valves, f.Key)
		}
	}
	return users
}

func (d *Dashboard) segmentPage(w http.ResponseWriter, r *http.Request, s *session) error {
	env, err := readEnv(r, s)
	if err != nil {
		return err
	}
	key := r.PathValue("key")
	if err := events.ValidateFlagKey(key); err != nil {
		return err
	}
	if !d.cfg.Ready() {
		return errNotReady
	}
	seg, ok := d.cfg.Catalog.Segment(env, key)
	if !ok {
		return errNoPage
	}
	sv := segmentView{Segment: seg, Conditions: condsOf(seg.Conditions)}
	if u := d.segmentUsers(env)[key]; u != nil {
		sv.Flags, sv.Valves = u.flags, u.valves
	}
	data := d.base(s, "Segment "+key+" · "+env, env)
	data.Data = sv
	d.render(w, r, http.StatusOK, "segment", data)
	return nil
}

func (d *Dashboard) segmentList(w http.ResponseWriter, r *http.Request, s *session) error {
	env, err := readEnv(r, s)
	if err != nil {
		return err
	}
	if !d.cfg.Ready() {
		return errNotReady
	}
	users := d.segmentUsers(env)
	sd := segmentsData{}
	for _, seg := range d.cfg.Catalog.Segments(env) {
		u := users[seg.Key]
		sd.Segments = append(sd.Segments, segmentView{Segment: seg, Flags: u.flags, Valves: u.valves})
	}
	data := d.base(s, "Segments · "+env, env)
	data.Data = sd
	d.render(w, r, http.StatusOK, "segments", data)
	return nil
}

// auditData is one page of the audit trail.
type auditData struct {
	Env, Flag, Actor string
	Type             string
	Since, Until     string
	Types            []string
	Entries          []entryView
	Next             string
}

// auditTypes are the event types the audit can be filtered by.
var auditTypes = []string{
	events.TypeFlagCreated, events.TypeFlagUpdated, events.TypeFlagKilled, events.TypeFlagEnabled, events.TypeFlagRestored, events.TypeFlagArchived, events.TypeFlagUnarchived,
	events.TypeRolloutCreated, events.TypeRolloutStarted, events.TypeRolloutPaused, events.TypeRolloutResumed, events.TypeRolloutAdvanced,
	events.TypeRolloutSteppedBack, events.TypeRolloutCompleted, events.TypeRolloutAborted,
	events.TypeGuardDecided, events.TypeGuardRearmed, events.TypeValveConfigured, events.TypeValveOpened, events.TypeValveClosed,
	events.TypeSegmentCreated, events.TypeSegmentUpdated, events.TypeSegmentArchived, events.TypeSegmentUnarchived, events.TypeTokenIssued, events.TypeTokenRevoked,
	events.TypeIntegrityAcknowledged,
}

func (d *Dashboard) auditPage(w http.ResponseWriter, r *http.Request, s *session) error {
	q := r.URL.Query()
	p := s.Principal()
	aq := projections.AuditQuery{Environment: q.Get("environment"), Flag: q.Get("flag"), Actor: q.Get("actor"), Limit: 50}
	typ := q.Get("type")
	if typ != "" {
		if !slices.Contains(auditTypes, typ) {
			return badInput(fmt.Sprintf("type: %q is not an event type", typ))
		}
		aq.Types = []string{typ}
	}
	var err error
	for _, b := range []struct {
		name string
		t    *time.Time
	}{{"since", &aq.Since}, {"until", &aq.Until}} {
		if *b.t, err = parseAt(url.Values{"at": {q.Get(b.name)}}); err != nil {
			return badInput(b.name + strings.TrimPrefix(err.Error(), "at"))
		}
	}
	if !aq.Since.IsZero() && !aq.Until.IsZero() && aq.Until.Before(aq.Since) {
		return badInput("until is before since: nothing can match")
	}
	if p.Environment != "" && aq.Environment == "" {
		aq.Environment = p.Environment
	}
	if err := authorizeIn(p, auth.ActionRead, aq.Environment); err != nil {
		return err
	}
	if a := q.Get("after"); a != "" {
		if aq.After, err = strconv.ParseUint(a, 10, 64); err != nil {
			return badInput(fmt.Sprintf("after: %q is not a sequence", a))
		}
	}
	page, err := projections.Audit(r.Context(), d.cfg.Reader, aq)
	if err != nil {
		return err
	}
	ad := auditData{Env: aq.Environment, Flag: aq.Flag, Actor: aq.Actor, Type: typ, Types: auditTypes,
		Since: timeParam(aq.Since), Until: timeParam(aq.Until)}
	for _, e := range page.Events {
		ad.Entries = append(ad.Entries, entryView{Entry: e, Changes: changesOf(e.Changes), Guard: e.Actor == "guard"})
	}
	if page.Next != 0 {
		v := url.Values{}
		for k, s := range map[string]string{"environment": aq.Environment, "flag": aq.Flag, "actor": aq.Actor, "type": typ, "since": ad.Since, "until": ad.Until} {
			if s != "" {
				v.Set(k, s)
			}
		}
		v.Set("after", strconv.FormatUint(page.Next, 10))
		ad.Next = "/audit?" + v.Encode()
	}
	data := d.base(s, "Audit", aq.Environment)
	data.Data = ad
	d.render(w, r, http.StatusOK, "audit", data)
	return nil
}

// timeParam is a time as the URL carries it: RFC 3339 in UTC, "" for none.
func timeParam(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format(time.RFC3339)
}
