package dashboard

import (
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/interlock-dev/interlock/events"
	"github.com/interlock-dev/interlock/internal/auth"
	"github.com/interlock-dev/interlock/internal/command"
	"github.com/interlock-dev/interlock/projections"
)

// maxValveFor bounds how long a valve opened from the dashboard stays open by itself, as the
// admin API does.
const maxValveFor = 366 * 24 * time.Hour

// valvesData is the valves page: every safety valve of an environment, open ones first.
type valvesData struct {
	Open, Closed []valveView
	CanAct       bool
}

type valveView struct {
	Key, Description string
	projections.Valve
	// Left is the time until an open valve closes by itself ("" when it does not).
	Left string
	Auto bool
}

func (d *Dashboard) valveList(w http.ResponseWriter, r *http.Request, s *session) error {
	env, err := readEnv(r, s)
	if err != nil {
		return err
	}
	if !d.cfg.Ready() {
		return errNotReady
	}
	now := d.cfg.Now()
	vd := valvesData{CanAct: authorizeIn(s.Principal(), auth.ActionKill, env) == nil}
	for _, f := range d.cfg.Catalog.Flags(env) {
		if f.Valve == nil || f.Archived {
			continue
		}
		vv := valveView{Key: f.Key, Description: f.Description, Valve: *f.Valve, Auto: f.Valve.Policy != nil}
		if vv.Open && !vv.Expires.IsZero() {
			vv.Left = "expired, closing"
			if left := vv.Expires.Sub(now); left > 0 {
				vv.Left = durationText(left)
			}
		}
		if vv.Open {
			vd.Open = append(vd.Open, vv)
		} else {
			vd.Closed = append(vd.Closed, vv)
		}
	}
	data := d.base(s, "Valves · "+env, env)
	data.Data = vd
	d.render(w, r, http.StatusOK, "valves", data)
	return nil
}

// valveTarget checks the verb (open or close), that s may act (kill, as the API's routes), and
// that the flag is a valve in the state the verb changes.
func (d *Dashboard) valveTarget(r *http.Request, s *session) (string, projections.Flag, error) {
	verb := r.PathValue("verb")
	if verb != "open" && verb != "close" {
		return "", projections.Flag{}, errNoPage
	}
	f, err := d.actFlag(r, s, auth.ActionKill)
	if err != nil {
		return "", f, err
	}
	switch {
	case f.Valve == nil:
		return "", f, fmt.Errorf("%w: %s is not a safety valve", errNotApplicable, f.Key)
	case f.Valve.Open == (verb == "open"):
		return "", f, fmt.Errorf("%w: the valve is already %sed", errNotApplicable, strings.TrimSuffix(verb, "e"))
	}
	return verb, f, nil
}

func (d *Dashboard) valveDialog(w http.ResponseWriter, r *http.Request, s *session) error {
	verb, f, err := d.valveTarget(r, s)
	if err != nil {
		return err
	}
	who := "everyone"
	if f.Valve.Segment != "" {
		who = "the members of segment " + f.Valve.Segment
	}
	v := view(f, d.notes.get(f.Environment, f.Key))
	dd := dialogData{F: v, Env: f.Environment, Action: "valve/" + verb, Before: v.Serving.Text}
	if verb == "open" {
		dd.Title, dd.Submit, dd.Danger, dd.Expires = "Open the valve "+f.Key+" in "+f.Environment+"?", "Open the valve", true, true
		dd.After = "serves " + variantText(f.FlagConfig, f.Valve.Variant) + " to " + who
	} else {
		dd.Title, dd.Submit = "Close the valve "+f.Key+" in "+f.Environment+"?", "Close the valve"
		dd.Before = v.Valve
		dd.After = "serves its configuration again: " + view(closed(f), flagNotes{}).Serving.Text
	}
	d.renderNamed(w, r, http.StatusOK, "flag", "dialog", dd)
	return nil
}

// closed is f with its valve closed.
func closed(f projections.Flag) projections.Flag {
	v := *f.Valve
	v.Open = false
	f.Valve = &v
	return f
}

func (d *Dashboard) valveAction(w http.ResponseWriter, r *http.Request, s *session) error {
	verb, f, err := d.valveTarget(r, s)
	if err != nil {
		return err
	}
	rs, err := reason(r)
	if err != nil {
		return err
	}
	var after projections.Flag
	if verb == "open" {
		var expires time.Time
		if fs := strings.TrimSpace(r.PostFormValue("for")); fs != "" {
			dur, err := time.ParseDuration(fs)
			if err != nil || dur <= 0 || dur > maxValveFor {
				return badInput(fmt.Sprintf("for: %q is not a duration of at most 8784h, such as 30m or 2h", fs))
			}
			expires = d.cfg.Now().Add(dur)
		}
		after, err = d.send(r, command.OpenValve{Meta: meta(s, rs), Env: f.Environment, Key: f.Key, Expires: expires})
	} else {
		after, err = d.send(r, command.CloseValve{Meta: meta(s, rs), Env: f.Environment, Key: f.Key, Cause: events.ValveClosedManual})
	}
	if err != nil {
		return err
	}
	return d.done(w, r, after, fmt.Sprintf("The valve %s is %s.", f.Key, map[string]string{"open": "open", "close": "closed"}[verb]))
}

// durationText is a duration for a person: "45 s", "29 min", "5 h 3 min", "3 days 2 h".
func durationText(d time.Duration) string {
	switch {
	case d < time.Minute:
		return fmt.Sprintf("%d s", int(d.Seconds()))
	case d < time.Hour:
		return fmt.Sprintf("%d min", int(d.Minutes()))
	case d < 48*time.Hour:
		return fmt.Sprintf("%d h %d min", int(d.Hours()), int(d.Minutes())%60)
	default:
		return fmt.Sprintf("%d days %d h", int(d.Hours()/24), int(d.Hours())%24)
	}
}
