package cli

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"strings"

	"github.com/interlock-dev/interlock/events"
	"github.com/spf13/pflag"
)

// ExitIntegrity is the exit code of `audit verify` when some message on the stream fails
// verification: it was not written by an Interlock server, was altered, or breaks its chain.
const ExitIntegrity = 9

// errIntegrity marks a verification that found problems.
var errIntegrity = errors.New("integrity problem")

// verifyReport is the answer of GET /api/v1/audit/verify.
type verifyReport struct {
	Verified int `json:"verified"`
	Refused  int `json:"refused"`
	Problems []struct {
		Sequence uint64 `json:"sequence"`
		Subject  string `json:"subject"`
		Reason   string `json:"reason"`
		Detail   string `json:"detail"`
	} `json:"problems"`
	Cutover uint64 `json:"cutover"`
}

func auditVerifyCommand() *command {
	return &command{
		name: "audit verify", operands: "[ENV[/FLAG]]",
		args:    "[ENV[/FLAG]]",
		summary: "Verify the signature and hash chain of every event (of an environment, or a flag).",
		help: `The server walks each subject's chain from its first event and checks every signature,
trusting nothing it checked before. It prints "verified N events", or the first broken link with
its stream sequence and the problem: unsigned (after the cut-over), unknown-key, bad-signature or
broken-chain. Exit code 9 when any message fails verification.`,
		maxArgs: 1,
		setup: func(*pflag.FlagSet) action {
			return func(ctx context.Context, s *session, pos []string) error {
				q := url.Values{}
				if len(pos) == 1 {
					if strings.Contains(pos[0], "/") {
						r, err := parseRef(pos[0])
						if err != nil {
							return usagef(s.cmd, "%v", err)
						}
						q.Set("environment", r.env)
						q.Set("flag", r.key)
					} else {
						if err := events.ValidateEnvironment(pos[0]); err != nil {
							return usagef(s.cmd, "%v", err)
						}
						q.Set("environment", pos[0])
					}
				}
				return s.auditVerify(ctx, q)
			}
		},
	}
}

func (s *session) auditVerify(ctx context.Context, q url.Values) error {
	resp, err := s.client.get(ctx, "/api/v1/audit/verify", q)
	if err != nil {
		return err
	}
	var rep verifyReport
	if err := decodeJSON(resp, "the verification report", &rep); err != nil {
		return err
	}
	if s.json {
		if err := s.printJSON(resp.Body); err != nil {
			return err
		}
	} else if err := renderVerify(s, rep); err != nil {
		return err
	}
	if rep.Refused > 0 {
		p := rep.Problems[0]
		return fmt.Errorf("%w: %d messages fail verification, the first at sequence %d (%s)", errIntegrity, rep.Refused, p.Sequence, p.Reason)
	}
	return nil
}

func renderVerify(s *session, rep verifyReport) error {
	var b strings.Builder
	if rep.Refused > 0 && len(rep.Problems) > 0 {
		p := rep.Problems[0]
		fmt.Fprintf(&b, "first broken link: sequence %d on %s: %s", p.Sequence, p.Subject, p.Reason)
		if p.Detail != "" {
			fmt.Fprintf(&b, " (%s)", p.Detail)
		}
		b.WriteString("\n")
		for _, p := range rep.Problems[1:] {
			fmt.Fprintf(&b, "also: sequence %d on %s: %s\n", p.Sequence, p.Subject, p.Reason)
		}
		if more := rep.Refused - len(rep.Problems); more > 0 {
			fmt.Fprintf(&b, "and %d more\n", more)
		}
		fmt.Fprintf(&b, "verified %d events, refused %d messages\n", rep.Verified, rep.Refused)
	} else {
		fmt.Fprintf(&b, "verified %d events\n", rep.Verified)
	}
	if rep.Cutover > 0 {
		fmt.Fprintf(&b, "unsigned events up to sequence %d are accepted as written before signing\n", rep.Cutover)
	}
	_, err := s.stdout.Write([]byte(b.String()))
	return err
}

// acknowledgement is the answer of POST /api/v1/integrity/acknowledgements.
type acknowledgement struct {
	Acknowledgement struct {
		Through  uint64 `json:"through"`
		Sequence uint64 `json:"sequence"`
		Actor    string `json:"actor"`
	} `json:"acknowledgement"`
	Integrity struct {
		Status string `json:"status"`
		Count  uint64 `json:"count"`
	} `json:"integrity"`
}

func auditAcknowledgeCommand() *command {
	return &command{
		name: "audit acknowledge", operands: "--reason R [--through SEQ]", args: "--reason TEXT [--through SEQ] [-o table|json]",
		summary: "Acknowledge the integrity problems up to a stream sequence (admin only).",
		help: `Messages that fail verification make /readyz answer 503 until an admin of every
environment acknowledges them: look at them first (GET /api/v1/integrity, audit verify). The
acknowledgement is an event in the audit trail, with your token's name and the reason. Without
--through it covers the latest problem the server recorded. A message after the acknowledged
sequence that fails verification makes /readyz answer 503 again.`,
		setup: func(fs *pflag.FlagSet) action {
			reason := fs.String("reason", "", "why the problems are acknowledged, for the audit trail (required)")
			through := fs.Uint64("through", 0, "acknowledge the problems up to stream sequence `SEQ` (default: the latest)")
			return func(ctx context.Context, s *session, _ []string) error {
				if strings.TrimSpace(*reason) == "" {
					return usagef(s.cmd, "--reason is required: say why the problems are acknowledged")
				}
				body := map[string]any{"reason": *reason}
				if *through > 0 {
					body["through"] = *through
				}
				resp, err := s.client.postJSON(ctx, "/api/v1/integrity/acknowledgements", nil, body)
				if err != nil {
					return err
				}
				if s.json {
					return s.printJSON(resp.Body)
				}
				var ack acknowledgement
				if err := decodeJSON(resp, "the acknowledgement", &ack); err != nil {
					return err
				}
				_, err = fmt.Fprintf(s.stdout, "acknowledged integrity problems up to sequence %d (event %d, by %s); integrity: %s\n",
					ack.Acknowledgement.Through, ack.Acknowledgement.Sequence, ack.Acknowledgement.Actor, ack.Integrity.Status)
				return err
			}
		},
	}
}
