package dashboard

import (
	"cmp"
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

// home sends a person to the flags of the first environment they may see.
func (d *Dashboard) home(w http.ResponseWriter, r *http.Request, s *session) error {
	envs := d.visibleEnvs(s.Principal())
	if len(envs) == 0 {
		data := d.base(s, "Flags", "")
		data.Data = listData{}
		d.render(w, r, http.StatusOK, "flags", data)
		return nil
	}
	http.Redirect(w, r, "/env/"+url.PathEscape(envs[0])+"/flags", http.StatusSeeOther)
	return nil
}

// readEnv checks the environment in the path and that s may read it.
func readEnv(r *http.Request, s *session) (string, error) {
	env := r.PathValue("env")
	if err := events.ValidateEnvironment(env); err != nil {
		return "", err
	}
	return env, authorizeIn(s.Principal(), auth.ActionRead, env)
}

// parseAt reads ?at= (RFC 3339, or a bare date-time taken as UTC); zero when absent.
func parseAt(q url.Values) (time.Time, error) {
	s := strings.TrimSpace(q.Get("at"))
	if s == "" {
		return time.Time{}, nil
	}
	for _, layout := range []string{time.RFC3339Nano, "2006-01-02T15:04:05", "2006-01-02T15:04"} {
		if t, err := time.Parse(layout, s); err == nil {
			return t.UTC(), nil
		}
	}
	return time.Time{}, badInput(fmt.Sprintf("at: %q is not a time such as 2026-01-02T15:04:05Z", s))
}

// listQuery is the list's search, filters, sort and page, as the URL carries them.
type listQuery struct {
	Q, Kind, State, Guard, Sort string
	Page                        int
	At                          string
}

func (lq listQuery) url(env string, page int) string {
	v := url.Values{}
	for k, s := range map[string]string{"q": lq.Q, "kind": lq.Kind, "state": lq.State, "guard": lq.Guard, "sort": lq.Sort, "at": lq.At} {
		if s != "" {
			v.Set(k, s)
		}
	}
	if page > 1 {
		v.Set("page", strconv.Itoa(page))
	}
	u := "/env/" + url.PathEscape(env) + "/flags"
	if len(v) > 0 {
		u += "?" + v.Encode()
	}
	return u
}

// rowData is one row of the list: what the row template needs, also when the live stream
// renders it alone.
type rowData struct {
	F       flagView
	Env     string
	CanKill bool
	Past    bool
	At      string
	// OOB marks a row the live stream sends, for htmx to swap by its id.
	OOB bool
}

type listData struct {
	Query   listQuery
	Rows    []rowData
	Total   int // flags matching
	All     int // flags in the environment
	Page    int
	Pages   int
	Prev    string
	Next    string
	Kinds   []events.Kind
	States  []string
	Guards  []string
	Sorts   [][2]string
	CanKill bool
}

var (
	allKinds  = []events.Kind{events.KindRelease, events.KindKillSwitch, events.KindOperational, events.KindExperiment, events.KindPermission, events.KindConfig}
	allStates = []string{stateOn, stateOff, stateVariant, stateSplit, stateRollout, stateArchived}
	allGuards = []string{"HEALTHY", "READY", "HOLD", "BLIND", "TRIPPED"}
	allSorts  = [][2]string{{"key", "key"}, {"-updated", "last change, newest first"}, {"updated", "last change, oldest first"}, {"state", "what it serves"}}
)

func (d *Dashboard) flagList(w http.ResponseWriter, r *http.Request, s *session) error {
	env, err := readEnv(r, s)
	if err != nil {
		return err
	}
	q := r.URL.Query()
	lq := listQuery{Q: strings.TrimSpace(q.Get("q")), Kind: q.Get("kind"), State: q.Get("state"), Guard: q.Get("guard"), Sort: q.Get("sort"), Page: 1}
	if p := q.Get("page"); p != "" {
		if lq.Page, err = strconv.Atoi(p); err != nil || lq.Page < 1 {
			return badInput(fmt.Sprintf("page: %q is not a page number", p))
		}
	}
	at, err := parseAt(q)
	if err != nil {
		return err
	}
	data := d.base(s, "Flags · "+env, env)
	var flags []projections.Flag
	live := at.IsZero()
	if live {
		if !d.cfg.Ready() {
			return errNotReady
		}
		// The sequence before the flags: the live stream resends what changes in between.
		seq := d.cfg.Catalog.Sequence()
		flags = d.cfg.Catalog.Flags(env)
		data.Live = fmt.Sprintf("/env/%s/live?view=list&after=%d", url.PathEscape(env), seq)
	} else {
		lq.At = at.Format(time.RFC3339)
		data.Past = at.Format(time.RFC3339)
		if flags, err = projections.EnvironmentAt(r.Context(), d.cfg.Reader, env, projections.Point{Time: at}); err != nil {
			return err
		}
	}
	ld := listData{Query: lq, All: len(flags), Kinds: allKinds, States: allStates, Guards: allGuards, Sorts: allSorts,
		CanKill: live && authorizeIn(s.Principal(), auth.ActionKill, env) == nil}
	views := d.filter(flags, lq, live)
	ld.Total = len(views)
	sortViews(views, lq.Sort)
	per := d.cfg.PageSize
	ld.Pages = max(1, (len(views)+per-1)/per)
	ld.Page = min(lq.Page, ld.Pages)
	lo := (ld.Page - 1) * per
	hi := min(lo+per, len(views))
	for _, v := range views[lo:hi] {
		if v.Serving.State == "" { // only the rows shown need their full view
			v = view(v.Flag, d.flagNotes(v.Flag, live))
		}
		ld.Rows = append(ld.Rows, rowData{F: v, Env: env, CanKill: ld.CanKill, Past: !live, At: lq.At})
	}
	if ld.Page > 1 {
		ld.Prev = lq.url(env, ld.Page-1)
	}
	if ld.Page < ld.Pages {
		ld.Next = lq.url(env, ld.Page+1)
	}
	data.Data = ld
	// Search as you type swaps the results only.
	if r.Header.Get("HX-Request") == "true" && r.Header.Get("HX-Target") == "results" {
		d.renderNamed(w, r, http.StatusOK, "flags", "results", data)
		return nil
	}
	d.render(w, r, http.StatusOK, "flags", data)
	return nil
}

// filter keeps the flags lq selects, as views. Archived flags show only when asked for.
func (d *Dashboard) filter(flags []projections.Flag, lq listQuery, live bool) []flagView {
	needle := strings.ToLower(lq.Q)
	full := lq.State != "" || lq.Guard != "" || lq.Sort == "state"
	out := make([]flagView, 0, min(len(flags), 1024))
	for _, f := range flags {
		if f.Archived && lq.State != stateArchived {
			continue
		}
		if lq.Kind != "" && string(f.Kind) != lq.Kind {
			continue
		}
		if needle != "" && !matches(&f, needle) {
			continue
		}
		// What a flag serves is worked out only when the filter or the sort needs it; otherwise
		// only for the rows of the page shown.
		if !full {
			out = append(out, flagView{Flag: f})
			continue
		}
		v := view(f, d.flagNotes(f, live))
		if lq.State != "" && v.Serving.State != lq.State {
			continue
		}
		if lq.Guard != "" && v.Guard != lq.Guard {
			continue
		}
		out = append(out, v)
	}
	return out
}

// flagNotes are the notes of a live flag; a past one has none.
func (d *Dashboard) flagNotes(f projections.Flag, live bool) flagNotes {
	if !live {
		return flagNotes{}
	}
	return d.notes.get(f.Environment, f.Key)
}

// matches reports whether the key, description, owner or a tag contains needle (lower case).
func matches(f *projections.Flag, needle string) bool {
	if strings.Contains(strings.ToLower(f.Key), needle) ||
		strings.Contains(strings.ToLower(f.Description), needle) ||
		strings.Contains(strings.ToLower(f.Owner), needle) {
		return true
	}
	for _, t := range f.Tags {
		if strings.Contains(strings.ToLower(t), needle) {
			return true
		}
	}
	return false
}

func sortViews(vs []flagView, by string) {
	switch by {
	case "-updated":
		slices.SortStableFunc(vs, func(a, b flagView) int { return b.UpdatedAt.Compare(a.UpdatedAt) })
	case "updated":
		slices.SortStableFunc(vs, func(a, b flagView) int { return a.UpdatedAt.Compare(b.UpdatedAt) })
	case "state":
		slices.SortStableFunc(vs, func(a, b flagView) int { return cmp.Compare(a.Serving.State, b.Serving.State) })
	}
	// Otherwise by key, as the catalog returns them.
}
