// Package cli implements the client subcommands of the interlock binary: every admin action of an
// Interlock server's HTTP API, human-readable by default and the server's JSON with -o json, with
// exit codes that scripts can rely on (see [ExitOK] and the codes after it).
//
// The commands are cobra commands ([github.com/spf13/cobra]): each client command is declared as a
// [command] and turned into one by [runner.rootCommand], next to `serve`, `help` and `completion`.
// The binary hands its whole command line to [Main], with the [Server] that runs `interlock serve`.
package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/interlock-dev/interlock/apiv1"
	"github.com/interlock-dev/interlock/client"
	"github.com/interlock-dev/interlock/internal/config"
	"github.com/spf13/cobra"
)

// ExitCodes are the process exit codes [Run] returns. They are a contract with scripts; `interlock
// help` lists them too.
//
//	0 ok: the command did what was asked (killing a flag that is already off included)
//	1 any other error: a 500, a response that does not decode, an interrupted command
//	2 usage error: unknown command or flag, missing or malformed argument; nothing was sent
//	3 not found: no such environment, flag or version
//	4 conflict: the flag changed meanwhile, already exists, or is archived (HTTP 409, 412, 428)
//	5 not allowed: no token, a bad token, or a token without the right (HTTP 401, 403)
//	6 invalid input rejected by the server (HTTP 400, 413, 415)
//	7 server unreachable or unavailable: connection error, timeout, HTTP 502, 503, 504
//	8 kill --wait: some live in-process subscribers had not applied the kill in time ([ExitPending])
//	9 audit verify: some message on the stream fails verification ([ExitIntegrity])
//	10 a write of unknown outcome: the event store did not confirm it, retries did not settle it;
//	   run the same command with the --idempotency-key printed to settle it ([ExitUnknown])
const (
	ExitOK          = 0
	ExitError       = 1
	ExitUsage       = 2
	ExitNotFound    = 3
	ExitConflict    = 4
	ExitAuth        = 5
	ExitInvalid     = 6
	ExitUnavailable = 7
	// ExitUnknown is a write whose outcome is unknown (see the list above).
	ExitUnknown = 10
)

// errUsage marks a command line that is wrong; nothing was sent to the server.
var errUsage = errors.New("usage error")

// usageError is a wrong command line, for the command cmd (nil when no command was recognised).
type usageError struct {
	cmd *cobra.Command
	msg string
}

func (e *usageError) Error() string { return e.msg }

func (e *usageError) Unwrap() error { return errUsage }

func usagef(cmd *cobra.Command, format string, args ...any) error {
	return &usageError{cmd: cmd, msg: fmt.Sprintf(format, args...)}
}

// Server runs `interlock serve` with its configuration until ctx ends. The binary passes the real
// one (cmd/interlock); the client commands do not need it.
type Server func(ctx context.Context, cfg config.Config, stdout, stderr io.Writer) error

// Run executes one command line and returns the process exit code (see [ExitOK] and the codes
// after it). args exclude the program name. Results go to stdout; errors go to stderr as
// "interlock: <message>". getenv reads INTERLOCK_SERVER and INTERLOCK_TOKEN, and serve's
// INTERLOCK_* settings. `interlock serve` needs [Main].
func Run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer, getenv func(string) string) int {
	return Main(ctx, args, stdin, stdout, stderr, getenv, nil)
}

// Main is [Run] for the interlock binary: serve runs `interlock serve`.
func Main(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer, getenv func(string) string, serve Server) int {
	r := &runner{stdin: stdin, stdout: stdout, stderr: stderr, getenv: getenv, now: time.Now, serve: serve}
	return r.run(ctx, args)
}

// runner is one invocation of the CLI with its process boundary: streams, environment, clock;
// and the global flags, once parsed.
type runner struct {
	stdin          io.Reader
	stdout, stderr io.Writer
	getenv         func(string) string
	now            func() time.Time
	serve          Server
	g              globals
}

func (r *runner) run(ctx context.Context, args []string) int {
	err := r.execute(ctx, r.rootCommand(commands()), args)
	if err == nil {
		return ExitOK
	}
	fmt.Fprintf(r.stderr, "interlock: %s\n", clean(err.Error()))
	var ue *usageError
	if errors.As(err, &ue) {
		if ue.cmd != nil {
			fmt.Fprintf(r.stderr, "usage: %s\nRun 'interlock help %s' for details.\n", ue.cmd.UseLine(), commandName(ue.cmd))
		} else {
			fmt.Fprintf(r.stderr, "Run 'interlock help' for the list of commands.\n")
		}
	}
	return exitCode(err)
}

// exitCode is the one place that maps an error to an exit code.
func exitCode(err error) int {
	var ae *apiv1.Error
	switch {
	case err == nil:
		return ExitOK
	case errors.Is(err, errUsage):
		return ExitUsage
	case errors.As(err, &ae):
		return apiExitCode(ae)
	case errors.Is(err, client.ErrUnreachable):
		return ExitUnavailable
	case errors.Is(err, errPending):
		return ExitPending
	case errors.Is(err, errIntegrity):
		return ExitIntegrity
	}
	return ExitError
}
