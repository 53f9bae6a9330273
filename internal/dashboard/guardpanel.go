package dashboard

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"time"

	"github.com/interlock-dev/interlock/events"
	"github.com/interlock-dev/interlock/guard"
	"github.com/interlock-dev/interlock/projections"
)

// GuardStatus is the guard's live view of the rollouts it judges: *guard.Runner, as the admin
// API's Config.Guard. Live returns a guard.Status.
type GuardStatus interface {
	Live(env, key string) (any, bool)
}

// panel is what the guard panel of a flag's rollout is made of: the flag, its latest rollout,
// and the flag's events since that rollout was created.
type panel struct {
	F         projections.Flag
	R         *projections.Rollout
	Entries   []projections.Entry // oldest first
	Decisions []decisionView      // newest first
}

// decisionView is one guard.decided event with its evidence and the events it caused.
type decisionView struct {
	projections.Entry
	D        events.GuardDecided
	Calls    []guard.Evidence
	Caused   []projections.Entry
	Raw      string
	Selected bool
}

// loadPanel reads the flag's latest rollout and its events from the event store.
func (d *Dashboard) loadPanel(ctx context.Context, env, key string) (panel, error) {
	f, err := d.currentFlag(env, key)
	if err != nil {
		return panel{}, err
	}
	if f.Rollout == nil {
		return panel{}, badInput("This flag has no rollout, so the guard has nothing to judge: create one with `interlock rollout create` or the API.")
	}
	entries, err := projections.FlagHistory(ctx, d.cfg.Reader, env, key)
	if err != nil {
		return panel{}, err
	}
	p := panel{F: f, R: f.Rollout}
	start := 0
	for i, e := range entries {
		if e.Type != events.TypeRolloutCreated {
			continue
		}
		var rc events.RolloutCreated
		if json.Unmarshal(e.Data, &rc) == nil && rc.ID == f.Rollout.ID {
			start = i
		}
	}
	p.Entries = entries[start:]
	caused := map[string][]projections.Entry{}
	for _, e := range p.Entries {
		if e.CausationID != "" {
			caused[e.CausationID] = append(caused[e.CausationID], e)
		}
	}
	for i := len(p.Entries) - 1; i >= 0; i-- {
		e := p.Entries[i]
		if e.Type != events.TypeGuardDecided {
			continue
		}
		dv := decisionView{Entry: e, Caused: caused[e.ID], Raw: prettyJSON(e.Data)}
		if err := json.Unmarshal(e.Data, &dv.D); err != nil {
			d.logger.WarnContext(ctx, "guard decision unreadable", "event", e.ID, "error", err)
			continue
		}
		if dv.D.Rollout != f.Rollout.ID {
			continue
		}
		if len(dv.D.Evidence) > 0 {
			if err := json.Unmarshal(dv.D.Evidence, &dv.Calls); err != nil {
				d.logger.WarnContext(ctx, "guard evidence unreadable", "event", e.ID, "error", err)
			}
		}
		p.Decisions = append(p.Decisions, dv)
	}
	return p, nil
}

// nowView is the guard's current state and why, as the panel shows it and refreshes it.
type nowView struct {
	Env, Key string
	State    string
	Cause    string
	Why      string
	Since    time.Time
	Stage    string
	Status   string
	Pending  string
	NextTick time.Time
	// Live: the guard follows this rollout and said so; Acting: this replica's guard acts.
	Live, Acting bool
	Latest       *guard.Evidence
	Actions      []verbView
	Version      uint64
	URL          string
	OOB          bool
}

// now builds the current view of p's rollout, with the live view of the guard when it has one.
func (d *Dashboard) now(s *session, p panel) nowView {
	r := p.R
	v := view(p.F, flagNotes{})
	nv := nowView{Env: p.F.Environment, Key: p.F.Key, State: r.Guard.State, Cause: r.Guard.Cause, Since: r.Guard.At,
		Stage: v.Stage, Status: r.Status, Version: p.F.Version,
		URL: fmt.Sprintf("/env/%s/flags/%s/guard?part=now", url.PathEscape(p.F.Environment), url.PathEscape(p.F.Key))}
	if nv.Stage == "" && len(r.Plan.Stages) > 0 {
		st := min(r.Stage, len(r.Plan.Stages)-1)
		nv.Stage = fmt.Sprintf("stage %d/%d · %s%% %s", st+1, len(r.Plan.Stages), percent(r.Plan.Stages[st].Percent), r.Plan.Treatment)
	}
	if d.cfg.Guard != nil && r.Active() {
		if live, ok := d.cfg.Guard.Live(p.F.Environment, p.F.Key); ok {
			if st, ok := live.(guard.Status); ok {
				nv.Live, nv.Acting, nv.Pending, nv.NextTick, nv.Latest = true, st.Acting, st.Pending, st.NextTick, st.Latest
				nv.State = string(st.State)
				if st.Latest != nil {
					nv.Cause = string(st.Latest.Cause)
				}
			}
		}
	}
	if r.Guard.Tripped {
		nv.State, nv.Cause, nv.Since = "TRIPPED", cmp.Or(r.Guard.Cause, nv.Cause), r.Guard.At
	}
	nv.Why = causeText[nv.Cause]
	nv.Actions = d.verbsFor(s, p.F)
	return nv
}

// causeText says for a person why the guard is in its state.
var causeText = map[string]string{
	string(guard.CauseWarmup):       "warming up: the stage has not reached its minimum exposure yet; only the absolute floor (R3) can trip",
	string(guard.CauseHealthy):      "fresh data and nothing fired; not yet enough evidence that the new variant is no worse to advance",
	string(guard.CauseReady):        "enough evidence that the new variant is no worse (R5): the stage may advance",
	string(guard.CauseSRM):          "sample-ratio mismatch (R4): the traffic split is not the configured one, so the comparison cannot be trusted",
	string(guard.CauseInconclusive): "no conclusion after the stage's maximum extension",
	string(guard.CauseBlind):        "the metrics are unusable (query errors, empty or stale results, or an arm missing): frozen",
	string(guard.CauseBlindGrace):   "the metrics have been unusable for longer than the grace period",
	string(guard.CauseR1):           "the error-ratio test (R1) fired: the new variant fails more than the old one",
	string(guard.CauseR2):           "the sequential test on the metric (R2) fired: the new variant is worse",
	string(guard.CauseR3):           "the absolute floor (R3) fired: the new variant's error rate is above the ceiling",
	string(guard.CauseLatched):      "tripped earlier; it stays tripped until a person re-arms it",
	string(guard.CauseRestarted):    "the flag's configuration changed: the stage began afresh",
	string(guard.CauseStageChanged): "the rollout moved to another stage",
	string(guard.CauseRearmed):      "a person re-armed the guard",
}

// guardData is the guard panel page.
type guardData struct {
	Key, Env  string
	R         *projections.Rollout
	Now       nowView
	Decisions []decisionView
	Selected  *decisionView
	Markers   []marker
	DataURL   string
	OOB       bool
}

func (d *Dashboard) guardPage(w http.ResponseWriter, r *http.Request, s *session) error {
	env, key, err := readFlag(r, s)
	if err != nil {
		return err
	}
	q := r.URL.Query()
	if q.Get("part") == "now" {
		// Polled every 2 s: from memory only, without reading the flag's events.
		f, err := d.currentFlag(env, key)
		if err != nil {
			return err
		}
		if f.Rollout == nil {
			return errNotApplicable
		}
		d.renderNamed(w, r, http.StatusOK, "guard", "guardnow", d.now(s, panel{F: f, R: f.Rollout}))
		return nil
	}
	p, err := d.loadPanel(r.Context(), env, key)
	if err != nil {
		return err
	}
	gd := d.guardData(s, p, q.Get("decision"))
	if r.Header.Get("HX-Request") == "true" && r.Header.Get("HX-Target") == "evidence" {
		d.renderNamed(w, r, http.StatusOK, "guard", "evidence", gd)
		return nil
	}
	data := d.base(s, "Guard of "+key+" · "+env, env)
	data.Charts = true
	data.Live = fmt.Sprintf("/env/%s/live?view=guard&key=%s&after=%d", url.PathEscape(env), url.QueryEscape(key), p.F.Sequence)
	data.Data = gd
	d.render(w, r, http.StatusOK, "guard", data)
	return nil
}

func (d *Dashboard) guardData(s *session, p panel, selected string) guardData {
	gd := guardData{Key: p.F.Key, Env: p.F.Environment, R: p.R, Now: d.now(s, p), Decisions: p.Decisions, Markers: markersOf(p.Entries),
		DataURL: fmt.Sprintf("/env/%s/flags/%s/guard/data", url.PathEscape(p.F.Environment), url.PathEscape(p.F.Key))}
	for i := range gd.Decisions {
		if gd.Decisions[i].ID == selected || selected == "" && i == 0 {
			gd.Decisions[i].Selected = true
			gd.Selected = &gd.Decisions[i]
		}
	}
	return gd
}

// marker is a moment the charts mark: a stage change, a decision of the guard, a kill.
type marker struct {
	X     float64   `json:"x"` // unix seconds
	Time  time.Time `json:"-"`
	Kind  string    `json:"kind"` // stage, decision, action
	Label string    `json:"label"`
	State string    `json:"state,omitempty"`
	ID    string    `json:"-"`
}

func markersOf(entries []projections.Entry) []marker {
	var out []marker
	for _, e := range entries {
		m := marker{X: float64(e.Time.UnixMilli()) / 1000, Time: e.Time, ID: e.ID}
		switch e.Type {
		case events.TypeRolloutStarted, events.TypeRolloutAdvanced, events.TypeRolloutSteppedBack:
			var st struct {
				Stage, To int
				Serve     events.Serve
			}
			_ = json.Unmarshal(e.Data, &st)
			if e.Type == events.TypeRolloutStarted {
				st.To = st.Stage
			}
			m.Kind, m.Label = "stage", fmt.Sprintf("%s → stage %d", typeText(e.Type), st.To+1)
		case events.TypeRolloutPaused, events.TypeRolloutResumed, events.TypeRolloutCompleted, events.TypeRolloutAborted:
			m.Kind, m.Label = "stage", typeText(e.Type)
		case events.TypeGuardDecided:
			var gd events.GuardDecided
			_ = json.Unmarshal(e.Data, &gd)
			m.Kind, m.State = "decision", gd.StateAfter
			m.Label = gd.StateBefore + " → " + gd.StateAfter + " (" + gd.Cause + ")"
		case events.TypeGuardRearmed, events.TypeFlagKilled, events.TypeFlagEnabled:
			m.Kind, m.Label = "action", typeText(e.Type)+" by "+e.Actor
		default:
			continue
		}
		out = append(out, m)
	}
	return out
}

// chartData is what the charts draw (guard.js): per metric, each arm's rate in every tick and
// the statistics against their thresholds, and the markers.
type chartData struct {
	Rollout string         `json:"rollout"`
	Metrics []chartMetric  `json:"metrics"`
	Markers []marker       `json:"markers"`
	Arms    map[string]any `json:"arms"`
}

type chartMetric struct {
	Name         string     `json:"name"`
	Kind         string     `json:"kind"`
	X            []float64  `json:"x"`
	Treatment    []*float64 `json:"treatment"`
	Control      []*float64 `json:"control"`
	Stat         []*float64 `json:"stat"`
	Adv          []*float64 `json:"adv"`
	Threshold    *float64   `json:"threshold"`
	AdvThreshold *float64   `json:"advThreshold"`
}

func (d *Dashboard) guardChart(w http.ResponseWriter, r *http.Request, s *session) error {
	env, key, err := readFlag(r, s)
	if err != nil {
		return err
	}
	p, err := d.loadPanel(r.Context(), env, key)
	if err != nil {
		return err
	}
	cd := chartOf(p, d.cfg.Tape.ticks(env, key, p.R.ID), d.liveTick(p))
	var buf bytes.Buffer
	if err := json.NewEncoder(&buf).Encode(cd); err != nil {
		return err
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.Write(buf.Bytes())
	return nil
}

// liveTick is the guard's latest tick from its live view, which another replica's guard may
// have published: on a replica whose guard does not act, the tape is empty.
func (d *Dashboard) liveTick(p panel) []tick {
	if d.cfg.Guard == nil || !p.R.Active() {
		return nil
	}
	live, ok := d.cfg.Guard.Live(p.F.Environment, p.F.Key)
	if !ok {
		return nil
	}
	st, ok := live.(guard.Status)
	if !ok || st.Latest == nil || st.Latest.Rollout != p.R.ID {
		return nil
	}
	return []tick{tickOf(st.Latest)}
}

// chartOf merges the ticks the tape kept with those recorded in the decisions (each call once,
// by its decision id) and lays them out for the charts.
func chartOf(p panel, taped, live []tick) chartData {
	byID := map[string]tick{}
	for _, tk := range slices.Concat(taped, live) {
		byID[tk.ID] = tk
	}
	for _, dv := range p.Decisions {
		for i := range dv.Calls {
			byID[dv.Calls[i].DecisionID] = tickOf(&dv.Calls[i])
		}
	}
	ticks := make([]tick, 0, len(byID))
	for _, tk := range byID {
		ticks = append(ticks, tk)
	}
	slices.SortFunc(ticks, func(a, b tick) int { return a.Time.Compare(b.Time) })
	cd := chartData{Rollout: p.R.ID, Markers: markersOf(p.Entries),
		Arms: map[string]any{"treatment": p.R.Plan.Treatment, "control": p.R.Plan.Control}}
	if cd.Markers == nil {
		cd.Markers = []marker{}
	}
	for _, pm := range p.R.Plan.Metrics {
		cm := chartMetric{Name: pm.Name, Kind: pm.Kind, X: []float64{}}
		for _, tk := range ticks {
			i := slices.IndexFunc(tk.Metrics, func(m tickMetric) bool { return m.Name == pm.Name })
			if i < 0 {
				continue
			}
			m := tk.Metrics[i]
			cm.X = append(cm.X, float64(tk.Time.UnixMilli())/1000)
			var tr, cr *float64
			if m.Usable {
				tr, cr = ratio(m.TErr, m.TReq), ratio(m.CErr, m.CReq)
			}
			cm.Treatment, cm.Control = append(cm.Treatment, tr), append(cm.Control, cr)
			cm.Stat = append(cm.Stat, finite(m.Stat, m.HasStat))
			cm.Adv = append(cm.Adv, finite(m.Adv, m.HasAdvancer))
			if m.HasStat {
				cm.Threshold = finite(m.Threshold, true)
			}
			if m.HasAdvancer {
				cm.AdvThreshold = finite(m.AdvThreshold, true)
			}
		}
		cd.Metrics = append(cd.Metrics, cm)
	}
	return cd
}

func ratio(num, den float64) *float64 {
	if den <= 0 {
		return nil
	}
	return finite(num/den, true)
}

// finite is v for JSON, null when absent or not a finite number.
func finite(v float64, ok bool) *float64 {
	if !ok || math.IsNaN(v) || math.IsInf(v, 0) {
		return nil
	}
	return &v
}

// num formats a statistic for a person: four significant digits.
func num(v any) string {
	var f float64
	switch v := v.(type) {
	case guard.Float:
		f = float64(v)
	case float64:
		f = v
	case int:
		return strconv.Itoa(v)
	default:
		return fmt.Sprint(v)
	}
	if math.IsNaN(f) || math.IsInf(f, 0) {
		return fmt.Sprint(f)
	}
	return strconv.FormatFloat(f, 'g', 4, 64)
}

// rate is errors/requests as a percentage for a person.
func rate(errs, reqs guard.Float) string {
	if reqs <= 0 || math.IsNaN(float64(reqs)) {
		return "—"
	}
	return strconv.FormatFloat(float64(errs)/float64(reqs)*100, 'g', 3, 64) + "%"
}

// expOf is e^v (Λ from its logarithm).
func expOf(v guard.Float) guard.Float { return guard.Float(math.Exp(float64(v))) }
