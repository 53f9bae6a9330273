package dashboard

import (
	"fmt"
	"net/http"
	"net/url"
	"strconv"

	"github.com/interlock-dev/interlock/internal/auth"
	"github.com/interlock-dev/interlock/internal/command"
	"github.com/interlock-dev/interlock/projections"
)

// rolloutVerb is one command on a rollout the dashboard offers. Its action is the role the
// admin API's route of the same name requires: aborting is on-call's switch, like a kill (kill);
// every other move is a writer's (write).
type rolloutVerb struct {
	name, label, title, after string
	action                    auth.Action
	danger                    bool
	// when says whether the rollout is in a state the command applies to.
	when func(f projections.Flag) bool
	do   func(m command.Meta, t command.RolloutTarget, from int) command.Command
}

var rolloutVerbs = []rolloutVerb{
	{name: "pause", label: "Pause…", title: "Pause the rollout", action: auth.ActionWrite,
		after: "the split stays as it is; the guard does not advance it",
		when:  func(f projections.Flag) bool { return f.Rollout.Status == projections.RolloutRunning },
		do: func(m command.Meta, t command.RolloutTarget, _ int) command.Command {
			return command.PauseRollout{Meta: m, RolloutTarget: t}
		}},
	{name: "resume", label: "Resume…", title: "Resume the rollout", action: auth.ActionWrite,
		after: "the rollout goes on; the stage begins afresh",
		when:  func(f projections.Flag) bool { return f.Rollout.Status == projections.RolloutPaused },
		do: func(m command.Meta, t command.RolloutTarget, _ int) command.Command {
			return command.ResumeRollout{Meta: m, RolloutTarget: t}
		}},
	{name: "advance", label: "Advance…", title: "Advance the rollout by hand", action: auth.ActionWrite,
		when: func(f projections.Flag) bool { return f.Rollout.Active() && !f.Rollout.Guard.Tripped },
		do: func(m command.Meta, t command.RolloutTarget, from int) command.Command {
			return command.AdvanceRollout{Meta: m, RolloutTarget: t, From: from}
		}},
	{name: "rearm", label: "Re-arm the guard…", title: "Re-arm the tripped guard", action: auth.ActionWrite,
		after: "the guard judges the rollout again; the stage begins afresh",
		when:  func(f projections.Flag) bool { return f.Rollout.Guard.Tripped },
		do: func(m command.Meta, t command.RolloutTarget, _ int) command.Command {
			return command.Rearm{Meta: m, RolloutTarget: t}
		}},
	{name: "abort", label: "Abort…", title: "Abort the rollout", action: auth.ActionKill, danger: true,
		when: func(f projections.Flag) bool { return f.Rollout.Active() },
		do: func(m command.Meta, t command.RolloutTarget, _ int) command.Command {
			return command.AbortRollout{Meta: m, RolloutTarget: t}
		}},
}

// verbView is a rollout command's button.
type verbView struct {
	Name, Label, URL string
	Danger           bool
}

// verbsFor are the rollout commands s may run on f now.
func (d *Dashboard) verbsFor(s *session, f projections.Flag) []verbView {
	if f.Rollout == nil {
		return nil
	}
	var out []verbView
	for _, v := range rolloutVerbs {
		if v.when(f) && authorizeIn(s.Principal(), v.action, f.Environment) == nil {
			out = append(out, verbView{Name: v.name, Label: v.label, Danger: v.danger,
				URL: fmt.Sprintf("/env/%s/flags/%s/rollout/%s", url.PathEscape(f.Environment), url.PathEscape(f.Key), v.name)})
		}
	}
	return out
}

func findVerb(name string) (rolloutVerb, error) {
	for _, v := range rolloutVerbs {
		if v.name == name {
			return v, nil
		}
	}
	return rolloutVerb{}, errNoPage
}

// rolloutTarget checks the verb, the role and that the flag has a rollout the verb applies to.
func (d *Dashboard) rolloutTarget(r *http.Request, s *session) (rolloutVerb, projections.Flag, error) {
	v, err := findVerb(r.PathValue("verb"))
	if err != nil {
		return v, projections.Flag{}, err
	}
	f, err := d.actFlag(r, s, v.action)
	if err != nil {
		return v, f, err
	}
	if f.Rollout == nil || !v.when(f) {
		return v, f, fmt.Errorf("%w: the rollout is %s", errNotApplicable, rolloutState(f))
	}
	return v, f, nil
}

func rolloutState(f projections.Flag) string {
	if f.Rollout == nil {
		return "absent"
	}
	s := f.Rollout.Status
	if f.Rollout.Guard.Tripped {
		s += ", guard tripped"
	}
	return s
}

func (d *Dashboard) rolloutDialog(w http.ResponseWriter, r *http.Request, s *session) error {
	v, f, err := d.rolloutTarget(r, s)
	if err != nil {
		return err
	}
	fv := view(f, d.notes.get(f.Environment, f.Key))
	dd := dialogData{F: fv, Env: f.Environment, Action: "rollout/" + v.name, Title: v.title + " of " + f.Key + " in " + f.Environment + "?",
		Submit: v.label[:len(v.label)-len("…")], Danger: v.danger, Before: fv.Serving.Text + " — rollout " + fv.Stage, After: v.after,
		Expected: f.Version, From: -1}
	ro := f.Rollout
	switch v.name {
	case "advance":
		dd.From = ro.Stage
		if ro.Stage+1 < len(ro.Plan.Stages) {
			dd.After = fmt.Sprintf("stage %d/%d · %s%% %s, without waiting for the guard's evidence", ro.Stage+2, len(ro.Plan.Stages),
				percent(ro.Plan.Stages[ro.Stage+1].Percent), ro.Plan.Treatment)
		} else {
			dd.After = "the rollout completes: " + ro.Plan.Treatment + " for everyone"
		}
	case "abort":
		dd.After = "the rollout ends: " + ro.Plan.Control + " for everyone"
	}
	d.renderNamed(w, r, http.StatusOK, "flag", "dialog", dd)
	return nil
}

func (d *Dashboard) rolloutAction(w http.ResponseWriter, r *http.Request, s *session) error {
	v, f, err := d.rolloutTarget(r, s)
	if err != nil {
		return err
	}
	rs, err := reason(r)
	if err != nil {
		return err
	}
	expected, err := expectedVersion(r, f)
	if err != nil {
		return err
	}
	from := f.Rollout.Stage
	if fs := r.PostFormValue("from"); fs != "" {
		if from, err = strconv.Atoi(fs); err != nil || from < 0 {
			return badInput(fmt.Sprintf("from: %q is not a stage", fs))
		}
	}
	after, err := d.send(r, v.do(meta(s, rs), command.RolloutTarget{Env: f.Environment, Key: f.Key, ID: f.Rollout.ID, ExpectedVersion: expected}, from))
	if err != nil {
		return err
	}
	return d.done(w, r, after, fmt.Sprintf("%s: done. %s now: %s.", v.title, f.Key, view(after, flagNotes{}).Serving.Text))
}
