package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"net/url"
	"strconv"
	"strings"

	"github.com/interlock-dev/interlock/events"
	"github.com/interlock-dev/interlock/projections"
	"github.com/spf13/pflag"
)

// auditPage is one page of the audit trail as the server sends it.
type auditPage struct {
	Events []json.RawMessage `json:"events"`
	Next   uint64            `json:"next,omitempty"`
}

func auditCommand() *command {
	return &command{
		name: "audit", operands: "",
		args:    "[--env E] [--flag F] [--actor A] [--type T]... [--since TIME] [--until TIME] [--limit N] [--after SEQ] [--all]",
		summary: "Show the audit trail: who changed what, when and why, oldest first.",
		help: `Filters combine. --flag takes a key with --env, or ENV/FLAG. --type takes created, updated,
enabled, killed, archived, unarchived, restored, or a full event type. Without --all one page is
shown; the line after it gives the --after that shows the next.`,
		maxArgs: 0,
		setup: func(fs *pflag.FlagSet) action {
			env := fs.String("env", "", "only events of environment `ENV`")
			flagKey := fs.String("flag", "", "only events of flag `FLAG` (with --env, or ENV/FLAG)")
			actor := fs.String("actor", "", "only events by `ACTOR`")
			var types stringList
			fs.Var(&types, "type", "only events of `TYPE` (repeat for more)")
			since := fs.String("since", "", "only events at or after `TIME`")
			until := fs.String("until", "", "only events at or before `TIME`")
			limit := fs.Int("limit", 0, "at most `N` events per page (default: the server's)")
			var after uint64
			fs.Uint64Var(&after, "after", 0, "only events after stream sequence `SEQ` (a page's next)")
			all := fs.Bool("all", false, "follow every page to the end")
			return func(ctx context.Context, s *session, pos []string) error {
				q, err := s.auditQuery(*env, *flagKey, *actor, types, *since, *until, *limit)
				if err != nil {
					return err
				}
				return s.audit(ctx, q, after, *all)
			}
		},
	}
}

// auditQuery checks the filters of `audit` and turns them into query parameters.
func (s *session) auditQuery(env, flagKey, actor string, types []string, since, until string, limit int) (url.Values, error) {
	q := url.Values{}
	if strings.Contains(flagKey, "/") {
		r, err := parseRef(flagKey)
		if err != nil {
			return nil, usagef(s.cmd, "--flag %v", err)
		}
		if env != "" && env != r.env {
			return nil, usagef(s.cmd, "--env %s and --flag %s name different environments", truncate(env), r)
		}
		env, flagKey = r.env, r.key
	}
	if env != "" {
		if err := events.ValidateEnvironment(env); err != nil {
			return nil, usagef(s.cmd, "--env: %v", err)
		}
		q.Set("environment", env)
	}
	if flagKey != "" {
		if err := events.ValidateFlagKey(flagKey); err != nil {
			return nil, usagef(s.cmd, "--flag: %v", err)
		}
		if env == "" {
			return nil, usagef(s.cmd, "--flag: a flag key is only unique within an environment: give --env too, or ENV/FLAG")
		}
		q.Set("flag", flagKey)
	}
	if actor != "" {
		q.Set("actor", actor)
	}
	for _, t := range types {
		full, err := parseEventType(t)
		if err != nil {
			return nil, usagef(s.cmd, "%v", err)
		}
		q.Add("type", full)
	}
	if err := s.timeParam(q, "since", since); err != nil {
		return nil, err
	}
	if err := s.timeParam(q, "until", until); err != nil {
		return nil, err
	}
	if limit < 0 {
		return nil, usagef(s.cmd, "--limit %d: give a positive number of events", limit)
	}
	if limit > 0 {
		q.Set("limit", strconv.Itoa(limit))
	}
	return q, nil
}

// audit shows one page from the cursor after, or every page when all is set.
func (s *session) audit(ctx context.Context, q url.Values, after uint64, all bool) error {
	var evs []json.RawMessage
	for {
		if after > 0 {
			q.Set("after", strconv.FormatUint(after, 10))
		}
		resp, err := s.client.get(ctx, "/api/v1/audit", q)
		if err != nil {
			return err
		}
		var page auditPage
		if err := decodeJSON(resp, "the audit trail", &page); err != nil {
			return err
		}
		if !all {
			if s.json {
				return s.printJSON(resp.Body)
			}
			return s.renderAuditPage(q, page.Events, page.Next)
		}
		evs = append(evs, page.Events...)
		if page.Next == 0 || len(page.Events) == 0 {
			break
		}
		if page.Next <= after {
			return fmt.Errorf("the server's audit cursor went back from %d to %d", after, page.Next)
		}
		after = page.Next
	}
	if evs == nil {
		evs = []json.RawMessage{}
	}
	if s.json {
		b, err := json.Marshal(auditPage{Events: evs})
		if err != nil {
			return fmt.Errorf("encode the audit trail: %w", err)
		}
		return s.printJSON(b)
	}
	return s.renderAuditPage(q, evs, 0)
}

// renderAuditPage prints events as a table and, when next is not 0, how to see the next page.
func (s *session) renderAuditPage(q url.Values, raw []json.RawMessage, next uint64) error {
	entries := make([]projections.Entry, len(raw))
	for i, r := range raw {
		if err := json.Unmarshal(r, &entries[i]); err != nil {
			return fmt.Errorf("decode the audit trail from the server: %w", err)
		}
	}
	if err := renderAudit(s.stdout, entries); err != nil {
		return err
	}
	if next > 0 {
		_, err := fmt.Fprintf(s.stdout, "more: add --after %d, or --all\n", next)
		return err
	}
	return nil
}
