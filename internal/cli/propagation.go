package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/url"
	"strconv"
	"time"

	"github.com/interlock-dev/interlock/client"
	"github.com/interlock-dev/interlock/events"
	"github.com/spf13/pflag"
)

// ExitPending is the exit code of `kill --wait` when some live in-process subscribers had not
// applied the kill when the wait ended. The kill itself succeeded.
const ExitPending = 8

// errPending marks a wait that ended with subscribers still behind.
var errPending = errors.New("not applied everywhere")

// Defaults of --wait.
const (
	defaultWaitTimeout = 5 * time.Second
	// pollEvery is how often --wait asks the server again.
	pollEvery = 100 * time.Millisecond
)

// propagation is the server's answer about a flag's propagation.
type propagation struct {
	Environment string    `json:"environment"`
	Flag        string    `json:"flag"`
	Version     uint64    `json:"version"`
	Sequence    uint64    `json:"sequence"`
	Applied     int       `json:"applied"`
	Total       int       `json:"total"`
	Pending     []pending `json:"pending"`
}

// pending is a live subscriber that has not applied the sequence yet.
type pending struct {
	ID       string    `json:"id"`
	Name     string    `json:"name"`
	Sequence uint64    `json:"sequence"`
	LastSeen time.Time `json:"lastSeen"`
}

// getPropagation asks how many live subscribers applied the flag's latest event (seq 0) or the
// event at seq. It returns the answer decoded and as the server sent it.
func (s *session) getPropagation(ctx context.Context, r ref, seq uint64) (propagation, []byte, error) {
	q := url.Values{}
	if seq > 0 {
		q.Set("sequence", strconv.FormatUint(seq, 10))
	}
	resp, err := s.client.get(ctx, client.FlagPath(r.env, r.key, "propagation"), q)
	if err != nil {
		return propagation{}, nil, err
	}
	var p propagation
	if err := decodeJSON(resp, "the propagation", &p); err != nil {
		return propagation{}, nil, err
	}
	return p, resp.Body, nil
}

func flagsPropagation() *command {
	return &command{
		name: "flags propagation", operands: "ENV/FLAG", args: "ENV/FLAG [--sequence N]",
		summary: "Show how many live in-process subscribers have applied a flag's latest change.",
		help: `In-process subscribers (services evaluating with projections/local) report the stream sequence
they have applied. This shows how many of the environment's live subscribers have applied the flag's
latest event (or the event at --sequence), and which have not.`,
		minArgs: 1, maxArgs: 1,
		setup: func(fs *pflag.FlagSet) action {
			var seq versionFlag
			fs.Var(&seq, "sequence", "the stream sequence `N` of the event to ask about (default the flag's latest)")
			return func(ctx context.Context, s *session, pos []string) error {
				r, err := s.ref(pos[0])
				if err != nil {
					return err
				}
				p, body, err := s.getPropagation(ctx, r, seq.v)
				if err != nil {
					return err
				}
				if s.json {
					return s.printJSON(body)
				}
				return renderPropagation(s.stdout, r, &p, s.now())
			}
		},
	}
}

func subscribersCommand() *command {
	return &command{
		name: "subscribers", operands: "ENV", args: "ENV",
		summary: "List the live in-process subscribers of an environment and what each has applied.",
		minArgs: 1, maxArgs: 1,
		setup: func(fs *pflag.FlagSet) action {
			return func(ctx context.Context, s *session, pos []string) error {
				env := pos[0]
				if err := events.ValidateEnvironment(env); err != nil {
					return usagef(s.cmd, "%v", err)
				}
				resp, err := s.client.get(ctx, "/api/v1/environments/"+env+"/subscribers", nil)
				if err != nil {
					return err
				}
				if s.json {
					return s.printJSON(resp.Body)
				}
				var body struct {
					Subscribers []struct {
						ID       string    `json:"id"`
						Name     string    `json:"name"`
						Sequence uint64    `json:"sequence"`
						LastSeen time.Time `json:"lastSeen"`
						Ready    bool      `json:"ready"`
						Stale    bool      `json:"stale"`
					} `json:"subscribers"`
				}
				if err := decodeJSON(resp, "the subscribers", &body); err != nil {
					return err
				}
				if len(body.Subscribers) == 0 {
					_, err := fmt.Fprintf(s.stdout, "no live subscribers in %s\n", clean(env))
					return err
				}
				tw := newTable(s.stdout)
				fmt.Fprintln(tw, "ID\tNAME\tAPPLIED\tSTATE\tLAST SEEN")
				for _, sub := range body.Subscribers {
					state := "ready"
					switch {
					case sub.Stale:
						state = "stale"
					case !sub.Ready:
						state = "starting"
					}
					fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%s\n", cell(sub.ID), cell(sub.Name), sub.Sequence, state, ago(sub.LastSeen, s.now()))
				}
				return tw.Flush()
			}
		},
	}
}

// renderPropagation prints "applied on N of M" and the subscribers still behind.
func renderPropagation(w io.Writer, r ref, p *propagation, now time.Time) error {
	at := fmt.Sprintf("sequence %d", p.Sequence)
	if p.Version > 0 {
		at = fmt.Sprintf("version %d, sequence %d", p.Version, p.Sequence)
	}
	if p.Total == 0 {
		_, err := fmt.Fprintf(w, "%s (%s): no live subscribers\n", r, at)
		return err
	}
	fmt.Fprintf(w, "%s (%s): applied on %d of %d live %s\n", r, at, p.Applied, p.Total, plural(p.Total, "subscriber", "subscribers"))
	if len(p.Pending) == 0 {
		return nil
	}
	tw := newTable(w)
	fmt.Fprintln(tw, "NOT YET\tNAME\tAPPLIED\tLAST SEEN")
	for _, x := range p.Pending {
		fmt.Fprintf(tw, "%s\t%s\t%d\t%s\n", cell(x.ID), cell(x.Name), x.Sequence, ago(x.LastSeen, now))
	}
	return tw.Flush()
}

// ago says how long ago t was, to the tenth of a second.
func ago(t time.Time, now time.Time) string {
	if t.IsZero() {
		return "-"
	}
	d := max(now.Sub(t), 0).Round(100 * time.Millisecond)
	return d.String() + " ago"
}

// withWait adds --wait and --wait-timeout to a kill command: after the kill, it polls the
// flag's propagation until every live in-process subscriber has applied it, or the timeout.
func withWait(c *command) *command {
	setup := c.setup
	c.args += " [--wait [--wait-timeout D]]"
	c.help += `

With --wait, the command then waits until every live in-process subscriber of the environment has
applied the kill, and says how many have ("applied on N of M"). It exits 0 when all have (or there
are none), and 8 when some have not within --wait-timeout (default 5s): the kill is recorded either
way. With -o json it prints {"flag": <the flag>, "propagation": <the last answer>}.`
	c.setup = func(fs *pflag.FlagSet) action {
		kill := setup(fs)
		wait := fs.Bool("wait", false, "wait until every live in-process subscriber has applied the kill (exit 8 if some have not in time)")
		timeout := fs.Duration("wait-timeout", defaultWaitTimeout, "how long --wait waits (`DURATION`)")
		return func(ctx context.Context, s *session, pos []string) error {
			if !*wait {
				if fs.Changed("wait-timeout") {
					return usagef(s.cmd, "--wait-timeout goes with --wait")
				}
				return kill(ctx, s, pos)
			}
			if *timeout <= 0 {
				return usagef(s.cmd, "--wait-timeout %s: give a positive duration", *timeout)
			}
			r, err := s.ref(pos[0])
			if err != nil {
				return err
			}
			// The kill's own output goes into buf, to be printed with the propagation.
			var buf bytes.Buffer
			inner, rn := *s, *s.runner
			rn.stdout = &buf
			inner.runner = &rn
			if err := kill(ctx, &inner, pos); err != nil {
				s.stdout.Write(buf.Bytes())
				return err
			}
			p, body, werr := s.waitApplied(ctx, r, *timeout)
			if body == nil {
				s.stdout.Write(buf.Bytes())
				return werr
			}
			if s.json {
				out, err := json.Marshal(struct {
					Flag        json.RawMessage `json:"flag"`
					Propagation json.RawMessage `json:"propagation"`
				}{json.RawMessage(bytes.TrimSpace(buf.Bytes())), json.RawMessage(body)})
				if err != nil {
					return fmt.Errorf("encode the answer: %w", err)
				}
				if err := s.printJSON(out); err != nil {
					return err
				}
			} else {
				s.stdout.Write(buf.Bytes())
				if err := renderPropagation(s.stdout, r, &p, s.now()); err != nil {
					return err
				}
			}
			return werr
		}
	}
	return c
}

// waitApplied polls the flag's propagation until every live subscriber has applied its latest
// event or timeout passes. It returns the last answer (body nil when there was none) and an error
// wrapping errPending when some subscribers are still behind.
func (s *session) waitApplied(ctx context.Context, r ref, timeout time.Duration) (propagation, []byte, error) {
	deadline := time.Now().Add(timeout)
	for {
		// The flag's latest event: the kill's, or a later one whose application implies the kill's.
		p, body, err := s.getPropagation(ctx, r, 0)
		if err != nil {
			return propagation{}, nil, err
		}
		if p.Applied >= p.Total {
			return p, body, nil
		}
		left := time.Until(deadline)
		if left <= 0 {
			behind := p.Total - p.Applied
			return p, body, fmt.Errorf("%w: %d live %s of %d %s not applied the kill within %s",
				errPending, behind, plural(behind, "subscriber", "subscribers"), p.Total, plural(behind, "has", "have"), timeout)
		}
		t := time.NewTimer(min(pollEvery, left))
		select {
		case <-ctx.Done():
			t.Stop()
			return p, body, fmt.Errorf("interrupted: %w", ctx.Err())
		case <-t.C:
		}
	}
}
