package cli

import (
	"context"
	"fmt"
	"io"
	"net/url"
	"strconv"
	"strings"

	"github.com/interlock-dev/interlock/client"
	"github.com/interlock-dev/interlock/events"
	"github.com/interlock-dev/interlock/projections"
	"github.com/spf13/pflag"
)

// entity describes one sort of thing an environment holds by key — flags ([flagEntity]) and
// segments ([segmentEntity]) — for what the commands of both do alike: parse ENV/KEY, build API
// paths, and list, get, show the history of, archive and unarchive one. T is the thing as the
// server sends it.
type entity[T any] struct {
	// noun and plural name the entity in commands, help and messages; plural is also the API's
	// name of an environment's collection of them.
	noun, plural string
	// operand is the positional argument naming one: ENV/FLAG.
	operand string
	// example is an operand shown when one is malformed: production/checkout-v2.
	example string
	// apiPath is the API path of one, of one of its actions, or (key empty) of an environment's
	// collection of them: client.FlagPath or client.SegmentPath.
	apiPath func(env, key, action string) string
	// validateKey applies the server's rules for keys.
	validateKey func(key string) error
	// listAt says list takes --at: the server lists them as they were at a time.
	listAt bool
	// archiveSummary is the summary of the archive command.
	archiveSummary string
	// decodeList decodes the server's answer to a list.
	decodeList func(resp *client.Response) ([]T, error)
	// renderList prints a list of them in env as a table.
	renderList func(w io.Writer, env string, items []T) error
	// render prints one as a block of "label: value" lines.
	render func(w io.Writer, item *T) error
	// id is what names one and its version, as the server sent them.
	id func(item *T) (env, key string, version uint64)
	// state says in a few words what one does now, after archive and the like.
	state func(item *T) string
	// eventName is the short name of an event type in a history table.
	eventName func(eventType string) string
}

// parseRef parses ENV/KEY, checking both parts with the server's own rules. The error says what
// is wrong; it wraps events.ErrInvalid when a part breaks a naming rule.
func (e *entity[T]) parseRef(s string) (ref, error) {
	env, key, ok := strings.Cut(s, "/")
	if !ok {
		return ref{}, fmt.Errorf("%q is not %s: name the environment and the %s, like %s", truncate(s), e.operand, e.noun, e.example)
	}
	if err := events.ValidateEnvironment(env); err != nil {
		return ref{}, fmt.Errorf("%q: %w", truncate(s), err)
	}
	if err := e.validateKey(key); err != nil {
		return ref{}, fmt.Errorf("%q: %w", truncate(s), err)
	}
	return ref{env: env, key: key}, nil
}

// ref parses an ENV/KEY argument; a bad one is a usage error.
func (e *entity[T]) ref(s *session, arg string) (ref, error) {
	r, err := e.parseRef(arg)
	if err != nil {
		return ref{}, usagef(s.cmd, "%v", err)
	}
	return r, nil
}

// listPath is the API path of an environment's collection.
func (e *entity[T]) listPath(env string) string {
	return e.apiPath(env, "", "")
}

// path is the API path of one, or of one of its actions when action is not empty.
func (e *entity[T]) path(r ref, action string) string {
	return e.apiPath(r.env, r.key, action)
}

// showOne prints an answer holding one: the JSON, or its block after a line saying what was done
// (none when done is empty).
func (e *entity[T]) showOne(s *session, resp *client.Response, done string) error {
	return show(s, resp, "the "+e.noun, func(item *T) error {
		if done != "" {
			env, key, version := e.id(item)
			fmt.Fprintf(s.stdout, "%s %s/%s (version %d)\n\n", done, clean(env), clean(key), version)
		}
		return e.render(s.stdout, item)
	})
}

// showState prints the answer to a command that changes the state of one (kill, enable, archive,
// restore and the like): the JSON, or one line saying what was done and what it does now.
func (e *entity[T]) showState(s *session, resp *client.Response, done string) error {
	return show(s, resp, "the "+e.noun, func(item *T) error {
		env, key, version := e.id(item)
		_, err := fmt.Fprintf(s.stdout, "%s %s/%s: %s (version %d)\n", done, clean(env), clean(key), e.state(item), version)
		return err
	})
}

// listCommand is `flags list` and `segments list`.
func listCommand[T any](e *entity[T]) *command {
	args := "ENV [--archived]"
	if e.listAt {
		args += " [--at TIME]"
	}
	return &command{
		name: e.plural + " list", operands: "ENV", args: args,
		summary: "List the " + e.plural + " of an environment.",
		minArgs: 1, maxArgs: 1,
		setup: func(fs *pflag.FlagSet) action {
			archived := fs.Bool("archived", false, "include archived "+e.plural)
			var at string
			if e.listAt {
				fs.StringVar(&at, "at", "", "list the "+e.plural+" as they were at `TIME`")
			}
			return func(ctx context.Context, s *session, pos []string) error {
				env := pos[0]
				if err := events.ValidateEnvironment(env); err != nil {
					return usagef(s.cmd, "%v", err)
				}
				q := url.Values{}
				if *archived {
					q.Set("archived", "true")
				}
				if err := s.timeParam(q, "at", at); err != nil {
					return err
				}
				resp, err := s.client.get(ctx, e.listPath(env), q)
				if err != nil {
					return err
				}
				if s.json {
					return s.printJSON(resp.Body)
				}
				items, err := e.decodeList(resp)
				if err != nil {
					return err
				}
				return e.renderList(s.stdout, env, items)
			}
		},
	}
}

// getCommand is `flags get` and `segments get`.
func getCommand[T any](e *entity[T]) *command {
	return &command{
		name: e.plural + " get", operands: e.operand, args: e.operand + " [--at TIME | --version N]",
		summary: "Show one " + e.noun + ": now, as it was at a time, or at a version.",
		minArgs: 1, maxArgs: 1,
		setup: func(fs *pflag.FlagSet) action {
			at := fs.String("at", "", "show the "+e.noun+" as it was at `TIME`")
			var version versionFlag
			fs.Var(&version, "version", "show version `N` of the "+e.noun)
			return func(ctx context.Context, s *session, pos []string) error {
				r, err := e.ref(s, pos[0])
				if err != nil {
					return err
				}
				if *at != "" && version.set {
					return usagef(s.cmd, "give --at or --version, not both")
				}
				q := url.Values{}
				if err := s.timeParam(q, "at", *at); err != nil {
					return err
				}
				if version.set {
					q.Set("version", strconv.FormatUint(version.v, 10))
				}
				resp, err := s.client.get(ctx, e.path(r, ""), q)
				if err != nil {
					return err
				}
				return e.showOne(s, resp, "")
			}
		},
	}
}

// historyPage is the server's answer to a history request.
type historyPage struct {
	Entries []projections.Entry `json:"entries"`
}

// historyCommand is `flags history` and `segments history`.
func historyCommand[T any](e *entity[T]) *command {
	return &command{
		name: e.plural + " history", operands: e.operand, args: e.operand,
		summary: "List every change of a " + e.noun + ": who, when, why and what.",
		minArgs: 1, maxArgs: 1,
		setup: func(fs *pflag.FlagSet) action {
			return func(ctx context.Context, s *session, pos []string) error {
				r, err := e.ref(s, pos[0])
				if err != nil {
					return err
				}
				resp, err := s.client.get(ctx, e.path(r, "history"), nil)
				if err != nil {
					return err
				}
				return show(s, resp, "the history", func(h *historyPage) error {
					return renderHistory(s.stdout, r, h.Entries, e.eventName)
				})
			}
		},
	}
}

// stateBody is the body of enable, archive, unarchive and restore.
type stateBody struct {
	ToVersion uint64 `json:"toVersion,omitempty"`
	Reason    string `json:"reason,omitempty"`
	Version   uint64 `json:"version,omitempty"`
}

// stateCommand is a command that changes the state of one with the API action verb, taking an
// optional reason and --if-version: `flags enable`, `segments archive` and the like.
func stateCommand[T any](e *entity[T], verb, summary string) *command {
	return &command{
		name: e.plural + " " + verb, operands: e.operand, args: e.operand + " [--reason R] [--if-version N]",
		summary: summary,
		minArgs: 1, maxArgs: 1,
		setup: func(fs *pflag.FlagSet) action {
			reason := fs.String("reason", "", "why: `TEXT` recorded with the event")
			var ifVersion versionFlag
			fs.Var(&ifVersion, "if-version", "apply only to version `N` of the "+e.noun)
			return func(ctx context.Context, s *session, pos []string) error {
				r, err := e.ref(s, pos[0])
				if err != nil {
					return err
				}
				if err := checkReason("reason", *reason); err != nil {
					return usagef(s.cmd, "%v", err)
				}
				resp, err := s.client.postJSON(ctx, e.path(r, verb), nil, stateBody{Reason: *reason, Version: ifVersion.v})
				if err != nil {
					return err
				}
				return e.showState(s, resp, verb+"d")
			}
		},
	}
}

// archiveCommand is `flags archive` and `segments archive`.
func archiveCommand[T any](e *entity[T]) *command {
	return stateCommand(e, "archive", e.archiveSummary)
}

// unarchiveCommand is `flags unarchive` and `segments unarchive`.
func unarchiveCommand[T any](e *entity[T]) *command {
	return stateCommand(e, "unarchive", "Bring an archived "+e.noun+" back.")
}
