package dashboard

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"github.com/interlock-dev/interlock/internal/auth"
	"github.com/interlock-dev/interlock/internal/command"
	"github.com/interlock-dev/interlock/projections"
)

// actFlag checks the path and that s may perform action on the flag, and returns its live state.
func (d *Dashboard) actFlag(r *http.Request, s *session, action auth.Action) (projections.Flag, error) {
	env, key, err := readFlag(r, s)
	if err != nil {
		return projections.Flag{}, err
	}
	if err := authorizeIn(s.Principal(), action, env); err != nil {
		return projections.Flag{}, err
	}
	return d.currentFlag(env, key)
}

// reason reads the required reason of an action.
func reason(r *http.Request) (string, error) {
	rs := strings.TrimSpace(r.PostFormValue("reason"))
	if rs == "" {
		return "", badInput("A reason is required: it is recorded with the change.")
	}
	return rs, nil
}

// meta is the command's metadata: the actor is the session's principal, never the form.
func meta(s *session, reason string) command.Meta {
	return command.Meta{Actor: s.Principal().Name, Reason: reason}
}

// dialogData is what a confirmation dialog shows.
type dialogData struct {
	F      flagView
	Env    string
	Action string // kill, enable, restore, rollout/{verb}, valve/{verb}: the path under the flag
	// Title, Submit and Danger, when set, head the dialog, name its button and mark it red.
	Title, Submit string
	Danger        bool
	Before        string
	After         string
	Critical      bool
	// From is the stage an advance leaves (-1 for none); Expires asks for a valve's duration.
	From    int
	Expires bool
	// Restore: the version restored, the changes it applies, whether it turns a killed flag on.
	ToVersion uint64
	Changes   []changeView
	Reenables bool
	Expected  uint64
}

func (d *Dashboard) killDialog(w http.ResponseWriter, r *http.Request, s *session) error {
	f, err := d.actFlag(r, s, auth.ActionKill)
	if err != nil {
		return err
	}
	v := view(f, d.notes.get(f.Environment, f.Key))
	dd := dialogData{F: v, Env: f.Environment, Action: "kill", Before: v.Serving.Text,
		After: "off for everyone (serves " + variantText(f.FlagConfig, f.OffVariant) + ")", Critical: d.critical(f.Environment)}
	if v.Serving.Rules > 0 && f.Enabled {
		dd.Before += fmt.Sprintf(", and %d targeting rule(s)", v.Serving.Rules)
	}
	if v.Stage != "" {
		dd.Before += " — rollout " + v.Stage
	}
	d.renderNamed(w, r, http.StatusOK, "flag", "dialog", dd)
	return nil
}

func (d *Dashboard) kill(w http.ResponseWriter, r *http.Request, s *session) error {
	f, err := d.actFlag(r, s, auth.ActionKill)
	if err != nil {
		return err
	}
	rs, err := reason(r)
	if err != nil {
		return err
	}
	if d.critical(f.Environment) && strings.TrimSpace(r.PostFormValue("confirm")) != f.Key {
		return badInput(fmt.Sprintf("%s is a critical environment: type the flag key %q to confirm.", f.Environment, f.Key))
	}
	after, err := d.send(r, command.KillFlag{Meta: meta(s, rs), Env: f.Environment, Key: f.Key})
	if err != nil {
		return err
	}
	return d.done(w, r, after, "Killed: "+f.Key+" now serves "+variantText(after.FlagConfig, after.OffVariant)+" to everyone.")
}

func (d *Dashboard) enableDialog(w http.ResponseWriter, r *http.Request, s *session) error {
	f, err := d.actFlag(r, s, auth.ActionWrite)
	if err != nil {
		return err
	}
	on := f
	on.Enabled = true
	v := view(f, d.notes.get(f.Environment, f.Key))
	dd := dialogData{F: v, Env: f.Environment, Action: "enable", Before: v.Serving.Text,
		After: view(on, flagNotes{}).Serving.Text, Expected: f.Version}
	d.renderNamed(w, r, http.StatusOK, "flag", "dialog", dd)
	return nil
}

func (d *Dashboard) enable(w http.ResponseWriter, r *http.Request, s *session) error {
	f, err := d.actFlag(r, s, auth.ActionWrite)
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
	after, err := d.send(r, command.EnableFlag{Meta: meta(s, rs), Env: f.Environment, Key: f.Key, ExpectedVersion: expected})
	if err != nil {
		return err
	}
	return d.done(w, r, after, "Enabled: "+f.Key+" serves its targeting again.")
}

// expectedVersion is the version the page showed, so that a change made meanwhile is a conflict
// rather than overwritten.
func expectedVersion(r *http.Request, f projections.Flag) (uint64, error) {
	s := r.PostFormValue("version")
	if s == "" {
		return f.Version, nil
	}
	v, err := strconv.ParseUint(s, 10, 64)
	if err != nil {
		return 0, badInput(fmt.Sprintf("version: %q is not a version", s))
	}
	return v, nil
}

// restoreTarget is the state a restore to version to would give f: its configuration then.
func (d *Dashboard) restoreTarget(ctx context.Context, f projections.Flag, to uint64) (projections.Flag, error) {
	past, err := projections.FlagAt(ctx, d.cfg.Reader, f.Environment, f.Key, projections.Point{Version: to})
	if err != nil {
		return projections.Flag{}, err
	}
	next := f
	next.FlagConfig = past.FlagConfig
	return next, nil
}

func toVersion(r *http.Request) (uint64, error) {
	s := r.FormValue("to")
	v, err := strconv.ParseUint(s, 10, 64)
	if err != nil || v == 0 {
		return 0, badInput(fmt.Sprintf("to: %q is not a version (1, 2, …)", s))
	}
	return v, nil
}

func (d *Dashboard) restoreDialog(w http.ResponseWriter, r *http.Request, s *session) error {
	f, err := d.actFlag(r, s, auth.ActionWrite)
	if err != nil {
		return err
	}
	to, err := toVersion(r)
	if err != nil {
		return err
	}
	next, err := d.restoreTarget(r.Context(), f, to)
	if err != nil {
		return err
	}
	v := view(f, d.notes.get(f.Environment, f.Key))
	dd := dialogData{F: v, Env: f.Environment, Action: "restore", ToVersion: to, Expected: f.Version,
		Before: v.Serving.Text, After: view(next, flagNotes{}).Serving.Text,
		Changes: changesOf(projections.Diff(f, next)), Reenables: !f.Enabled && next.Enabled}
	d.renderNamed(w, r, http.StatusOK, "flag", "dialog", dd)
	return nil
}

func (d *Dashboard) restore(w http.ResponseWriter, r *http.Request, s *session) error {
	f, err := d.actFlag(r, s, auth.ActionWrite)
	if err != nil {
		return err
	}
	rs, err := reason(r)
	if err != nil {
		return err
	}
	to, err := toVersion(r)
	if err != nil {
		return err
	}
	expected, err := expectedVersion(r, f)
	if err != nil {
		return err
	}
	after, err := d.send(r, command.RestoreFlag{Meta: meta(s, rs), Env: f.Environment, Key: f.Key, ToVersion: to, ExpectedVersion: expected})
	if err != nil {
		return err
	}
	return d.done(w, r, after, fmt.Sprintf("Restored %s to the configuration of version %d (now version %d).", f.Key, to, after.Version))
}

// doneData is what a dialog shows after its action: the outcome and, with presence, how many
// in-process subscribers have applied it.
type doneData struct {
	Message  string
	Env, Key string
	Sequence uint64
	Prop     *propagationView
}

type propagationView struct {
	Applied, Total int
	Done           bool
	URL            string
}

// done waits (a little) until the catalog applied the write, so that the pages read it, and
// answers with the outcome.
func (d *Dashboard) done(w http.ResponseWriter, r *http.Request, f projections.Flag, msg string) error {
	ctx, cancel := context.WithTimeout(r.Context(), d.cfg.WriteTimeout)
	defer cancel()
	if err := d.cfg.Catalog.WaitSequence(ctx, f.Sequence); err != nil {
		msg += " (This page has not seen the change yet; it will appear when it has.)"
	}
	dd := doneData{Message: msg, Env: f.Environment, Key: f.Key, Sequence: f.Sequence, Prop: d.prop(f.Environment, f.Key, f.Sequence)}
	d.renderNamed(w, r, http.StatusOK, "flag", "done", dd)
	return nil
}

func (d *Dashboard) prop(env, key string, seq uint64) *propagationView {
	if d.cfg.Presence == nil || seq == 0 {
		return nil
	}
	p := d.cfg.Presence.Propagation(env, seq)
	return &propagationView{Applied: p.Applied, Total: p.Total, Done: p.Applied >= p.Total,
		URL: fmt.Sprintf("/env/%s/flags/%s/propagation?seq=%d", url.PathEscape(env), url.PathEscape(key), seq)}
}

// propagation answers the polling of "applied on N of M subscribers"; 286 tells htmx to stop
// polling once every subscriber applied the change.
func (d *Dashboard) propagation(w http.ResponseWriter, r *http.Request, s *session) error {
	env, key, err := readFlag(r, s)
	if err != nil {
		return err
	}
	seq, err := strconv.ParseUint(r.URL.Query().Get("seq"), 10, 64)
	if err != nil {
		return badInput("seq: not a stream sequence")
	}
	pv := d.prop(env, key, seq)
	if pv == nil {
		return badInput("this server does not track in-process subscribers")
	}
	status := http.StatusOK
	if pv.Done {
		status = 286
	}
	d.renderNamed(w, r, status, "flag", "propagation", pv)
	return nil
}
