package cli

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"runtime"
	"runtime/debug"
	"strings"
	"text/tabwriter"
)

// command is one client command.
type command struct {
	// name is what follows "interlock", such as "flags kill".
	name string
	// operands are the positional arguments, for usage lines.
	operands string
	// args is the usage line after the name: operands and the command's own flags.
	args string
	// summary is one line for the list of commands; help is more, if any.
	summary, help string
	// minArgs and maxArgs bound the number of positional arguments.
	minArgs, maxArgs int
	// setup registers the command's own flags and returns what runs once they are parsed.
	setup func(fs *flag.FlagSet) action
	// offline commands send nothing, so the server's address does not matter to them.
	offline bool
}

// action runs a command with its positional arguments.
type action func(ctx context.Context, s *session, pos []string) error

// session is what an action works with: the parsed global flags, a client and the output.
type session struct {
	*runner
	cmd    *command
	client *client
	json   bool
}

// commands returns every client command, in the order help lists them.
func commands() []*command {
	cmds := []*command{
		listCommand(flagEntity), getCommand(flagEntity), flagsCreate(), flagsSet(),
		withWait(flagsKill("flags kill")), flagsEnable(), archiveCommand(flagEntity), unarchiveCommand(flagEntity),
		flagsRestore(), historyCommand(flagEntity), flagsDiff(), flagsPropagation(),
		listCommand(segmentEntity), getCommand(segmentEntity), segmentsCreate(), segmentsSet(),
		archiveCommand(segmentEntity), unarchiveCommand(segmentEntity), historyCommand(segmentEntity),
		tokensCreate(), tokensList(), tokensRevoke(),
	}
	cmds = append(cmds, rolloutCommands()...) // rollouts and safety valves (rollouts.go)
	return append(cmds,
		withWait(flagsKill("kill")), auditCommand(), auditVerifyCommand(), auditAcknowledgeCommand(), environmentsCommand(), subscribersCommand(), versionCommand(),
	)
}

func lookup(name string) *command {
	for _, c := range commands() {
		if c.name == name {
			return c
		}
	}
	return nil
}

// dispatch finds the command named by the leading words of args and runs it.
func (r *runner) dispatch(ctx context.Context, args []string) error {
	if len(args) == 0 {
		return usagef(nil, "no command given")
	}
	name, rest, err := splitCommand(args)
	if err != nil {
		return err
	}
	switch name {
	case "help":
		return r.help(rest)
	case "flags":
		return usagef(nil, "flags needs a subcommand: list, get, create, set, kill, enable, archive, unarchive, restore, history, diff or propagation")
	case "segments":
		return usagef(nil, segmentsUsage)
	case "tokens":
		return usagef(nil, tokensUsage)
	case "rollout":
		return usagef(nil, rolloutUsage)
	case "valve":
		return usagef(nil, valveUsage)
	}
	cmd := lookup(name)
	if cmd == nil {
		return usagef(nil, "unknown command %q", truncate(name))
	}
	return r.runCommand(ctx, cmd, rest)
}

// splitCommand separates the command's words ("flags list", "audit") from the rest of args.
// Global flags may come before the command; a command's own flags come after it.
func splitCommand(args []string) (name string, rest []string, err error) {
	var g globals
	fs := newFlagSet("interlock", &g)
	var words, pre []string
	want := 1
	i := 0
	for ; i < len(args) && len(words) < want; i++ {
		a := args[i]
		if !isFlag(a) {
			words = append(words, a)
			if len(words) == 1 && (a == "flags" || a == "segments" || a == "tokens" || a == "rollout" || a == "valve") {
				want = 2
			}
			if len(words) == 1 && a == "audit" && i+1 < len(args) && (args[i+1] == "verify" || args[i+1] == "acknowledge") {
				words = append(words, args[i+1]) // "audit verify"; plain "audit" is a command too
				i++
			}
			continue
		}
		fname, _ := flagName(a)
		if fname == "h" || fname == "help" {
			return "help", words, nil
		}
		if fs.Lookup(fname) == nil {
			return "", nil, usagef(nil, "%s: name the command first; its own flags come after it", truncate(a))
		}
		pre = append(pre, a)
		if takesValue(fs, a) && i+1 < len(args) {
			pre = append(pre, args[i+1])
			i++
		}
	}
	if len(words) == 0 {
		return "", nil, usagef(nil, "no command given")
	}
	return strings.Join(words, " "), append(pre, args[i:]...), nil
}

// runCommand parses cmd's flags and arguments and runs it.
func (r *runner) runCommand(ctx context.Context, cmd *command, args []string) error {
	var g globals
	fs := newFlagSet(cmd.name, &g)
	act := cmd.setup(fs)
	pos, err := parseArgs(cmd, fs, args)
	if errors.Is(err, flag.ErrHelp) {
		r.commandHelp(r.stdout, cmd)
		return nil
	}
	if err != nil {
		return err
	}
	switch {
	case len(pos) < cmd.minArgs:
		return usagef(cmd, "missing arguments: interlock %s needs %s", cmd.name, cmd.operands)
	case len(pos) > cmd.maxArgs:
		return usagef(cmd, "unexpected argument %q", truncate(pos[cmd.maxArgs]))
	}
	base, err := g.resolve(cmd, r.getenv)
	if err != nil {
		return err
	}
	transport := newTransport()
	defer transport.CloseIdleConnections()
	s := &session{
		runner: r,
		cmd:    cmd,
		json:   g.output == "json",
		client: &client{
			base:      base,
			token:     g.token,
			timeout:   g.timeout,
			idemKey:   g.idemKey,
			http:      &http.Client{Transport: transport},
			userAgent: "interlock-cli/" + buildVersion(),
		},
	}
	return act(ctx, s, pos)
}

// help prints the overview, or the help of the command named by args.
func (r *runner) help(args []string) error {
	var words []string
	for _, a := range args {
		if !isFlag(a) {
			words = append(words, a)
		}
	}
	name := strings.Join(words, " ")
	switch name {
	case "":
		r.overview(r.stdout)
		return nil
	case "flags", "segments", "rollout", "valve":
		r.groupHelp(r.stdout, name)
		return nil
	}
	cmd := lookup(name)
	if cmd == nil {
		return usagef(nil, "help: unknown command %q", truncate(name))
	}
	r.commandHelp(r.stdout, cmd)
	return nil
}

// overview is the output of `interlock help`.
func (r *runner) overview(w io.Writer) {
	fmt.Fprint(w, `interlock runs the Interlock server (interlock serve) and is its command-line client: every
admin action on feature flags, human-readable by default, the server's JSON with -o json.

Usage:
  interlock <command> [arguments] [flags]

Commands:
`)
	r.commandList(w, append([]*command{{name: "serve", summary: "Run the server (interlock help serve lists its flags)."}}, append(commands(),
		&command{name: "help", operands: "[command]", summary: "Print this, or the help of one command."})...))
	fmt.Fprint(w, `
Flags may come before or after the arguments. Global flags (every command):
`)
	var g globals
	printFlags(w, newFlagSet("", &g), nil)
	fmt.Fprint(w, "\n"+timesHelp+"\n\n"+exitCodesHelp+"\n")
}

// groupHelp is the help of a group of commands such as `interlock flags`.
func (r *runner) groupHelp(w io.Writer, group string) {
	fmt.Fprintf(w, "Usage:\n  interlock %s <command> [arguments] [flags]\n\nCommands:\n", group)
	var cmds []*command
	for _, c := range commands() {
		if strings.HasPrefix(c.name, group+" ") {
			cmds = append(cmds, c)
		}
	}
	r.commandList(w, cmds)
	fmt.Fprintf(w, "\nRun 'interlock help %s <command>' for the flags of one.\n", group)
}

func (r *runner) commandList(w io.Writer, cmds []*command) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	for _, c := range cmds {
		fmt.Fprintf(tw, "  %s %s\t%s\n", c.name, c.operands, c.summary)
	}
	tw.Flush()
}

// commandHelp is the output of `interlock help CMD` and `interlock CMD --help`.
func (r *runner) commandHelp(w io.Writer, cmd *command) {
	fmt.Fprintf(w, "Usage:\n  interlock %s %s\n\n%s\n", cmd.name, cmd.args, cmd.summary)
	if cmd.help != "" {
		fmt.Fprintf(w, "\n%s\n", strings.TrimSpace(cmd.help))
	}
	var g globals
	fs := newFlagSet(cmd.name, &g)
	global := map[string]bool{}
	fs.VisitAll(func(f *flag.Flag) { global[f.Name] = true })
	cmd.setup(fs)
	own := func(f *flag.Flag) bool { return !global[f.Name] }
	hasOwn := false
	fs.VisitAll(func(f *flag.Flag) { hasOwn = hasOwn || own(f) })
	if hasOwn {
		fmt.Fprint(w, "\nFlags:\n")
		printFlags(w, fs, own)
	}
	fmt.Fprint(w, "\nGlobal flags:\n")
	printFlags(w, fs, func(f *flag.Flag) bool { return global[f.Name] })
	fmt.Fprintf(w, "\n%s\n", exitCodesHelp)
}

// printFlags lists the flags of fs that keep accepts (all when keep is nil), with two dashes.
func printFlags(w io.Writer, fs *flag.FlagSet, keep func(*flag.Flag) bool) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fs.VisitAll(func(f *flag.Flag) {
		if keep != nil && !keep(f) {
			return
		}
		if f.Name == "output" {
			return // listed with -o
		}
		arg, usage := flag.UnquoteUsage(f)
		if arg != "" {
			arg = " " + arg
		}
		name := "--" + f.Name
		if f.Name == "o" {
			name = "-o, --output"
		}
		fmt.Fprintf(tw, "  %s%s\t%s\n", name, arg, usage)
	})
	tw.Flush()
}

const timesHelp = `Times (--at, --since, --until) are RFC 3339 (2026-01-02T15:04:05Z) or a duration ago:
90s, 5m, 1h30m, 2d, 1d12h.`

const exitCodesHelp = `Exit codes:
  0  ok (killing a flag that is already off included)
  1  any other error
  2  usage error: wrong command, flag or argument; nothing was sent
  3  not found: no such environment, flag or version
  4  conflict: the flag changed meanwhile, already exists or is archived (409, 412, 428)
  5  unauthenticated or forbidden (401, 403)
  6  invalid input rejected by the server (400, 413, 415)
  7  server unreachable or unavailable (connection error, timeout, 502, 503, 504); a write
     the event store could not take, after retries: nothing was written
  8  kill --wait: some live in-process subscribers had not applied the kill in time
  9  audit verify: some message on the stream fails verification
  10 a write of unknown outcome after retries: run the same command with the
     --idempotency-key printed to settle it`

// versionCommand prints the version of this client; it sends nothing.
func versionCommand() *command {
	return &command{
		name: "version", args: "[-o table|json]", summary: "Print the version of this client.", offline: true,
		setup: func(fs *flag.FlagSet) action {
			return func(ctx context.Context, s *session, pos []string) error {
				v := struct {
					Version  string `json:"version"`
					Go       string `json:"go"`
					Platform string `json:"platform"`
				}{buildVersion(), runtime.Version(), runtime.GOOS + "/" + runtime.GOARCH}
				if s.json {
					b, err := json.Marshal(v)
					if err != nil {
						return fmt.Errorf("encode version: %w", err)
					}
					return s.printJSON(b)
				}
				_, err := fmt.Fprintf(s.stdout, "interlock %s (%s %s)\n", v.Version, v.Go, v.Platform)
				return err
			}
		},
	}
}

// buildVersion is the module version the binary was built from, "(devel)" for a local build.
func buildVersion() string {
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" {
		return bi.Main.Version
	}
	return "(devel)"
}

// newTransport is a transport of this run's own, so that no connection outlives Run.
func newTransport() *http.Transport {
	if t, ok := http.DefaultTransport.(*http.Transport); ok {
		return t.Clone()
	}
	return &http.Transport{Proxy: http.ProxyFromEnvironment}
}
