package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"runtime"
	"runtime/debug"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/interlock-dev/interlock/client"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

// command is one client command, declared; [runner.rootCommand] makes it a cobra command.
type command struct {
	// name is what follows "interlock", such as "flags kill": the last word is the cobra
	// command's name, the words before it name its parent (a group such as flags, or audit).
	name string
	// operands are the positional arguments, for the list of commands.
	operands string
	// args is the usage line after the name: operands and the command's own flags.
	args string
	// summary is one line for the list of commands; help is more, if any.
	summary, help string
	// minArgs and maxArgs bound the number of positional arguments.
	minArgs, maxArgs int
	// setup registers the command's own flags and returns what runs once they are parsed.
	setup func(fs *pflag.FlagSet) action
	// offline commands send nothing, so the server's address does not matter to them.
	offline bool
}

// action runs a command with its positional arguments.
type action func(ctx context.Context, s *session, pos []string) error

// session is what an action works with: the parsed global flags, a client and the output.
type session struct {
	*runner
	cmd    *cobra.Command
	client api
	json   bool
}

// groups are the words that only group commands: `interlock flags` alone is a usage error.
var groups = []string{"flags", "segments", "tokens", "rollout", "valve"}

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

// rootCommand is the `interlock` command: cmds under their groups, serve, help and completion.
func (r *runner) rootCommand(cmds []*command) *cobra.Command {
	root := &cobra.Command{
		Use: "interlock",
		// Flags may come before the command; cobra parses each command's on the way down.
		TraverseChildren: true,
		SilenceErrors:    true,
		SilenceUsage:     true,
		Args:             cobra.ArbitraryArgs,
		RunE: func(_ *cobra.Command, args []string) error {
			if len(args) == 0 {
				return usagef(nil, "no command given")
			}
			return usagef(nil, "unknown command %q", truncate(args[0]))
		},
	}
	root.SetOut(r.stdout)
	root.SetErr(r.stderr)
	r.g.register(root.PersistentFlags())
	root.SetFlagErrorFunc(flagError)
	root.SetHelpFunc(func(c *cobra.Command, _ []string) { r.help(c, cmds) })
	root.SetHelpCommand(&cobra.Command{
		Use: "help [command]", Short: "Print this, or the help of one command.",
		RunE: func(_ *cobra.Command, args []string) error {
			c, rest, err := root.Find(strings.Fields(strings.Join(args, " "))) // "flags list" as one argument too
			if err != nil || len(rest) > 0 {
				return usagef(nil, "help: unknown command %q", truncate(strings.Join(args, " ")))
			}
			return c.Help()
		},
	})
	root.AddCommand(r.serveCommand())

	byName := map[string]*cobra.Command{}
	for _, g := range groups {
		byName[g] = r.groupCommand(g, cmds)
		root.AddCommand(byName[g])
	}
	for _, c := range cmds {
		cc := r.cobraCommand(c)
		parent, _, found := strings.Cut(c.name, " ")
		if p := byName[parent]; found && p != nil {
			p.AddCommand(cc)
		} else {
			root.AddCommand(cc)
		}
		byName[c.name] = cc
	}
	return root
}

// groupCommand is `interlock flags` and the like: without one of its commands (cmds hold some) it
// is a usage error.
func (r *runner) groupCommand(group string, cmds []*command) *cobra.Command {
	var names []string
	for _, c := range inGroup(group, cmds) {
		names = append(names, strings.TrimPrefix(c.name, group+" "))
	}
	return &cobra.Command{
		Use: group + " <command>", Args: cobra.ArbitraryArgs,
		RunE: func(_ *cobra.Command, args []string) error {
			if len(args) == 0 {
				return usagef(nil, "%s needs a subcommand: %s or %s", group, strings.Join(names[:len(names)-1], ", "), names[len(names)-1])
			}
			return usagef(nil, "unknown command %q", truncate(group+" "+args[0]))
		},
	}
}

// cobraCommand is c as a cobra command: it checks the number of arguments, resolves the global
// flags and runs c's action with a session.
func (r *runner) cobraCommand(c *command) *cobra.Command {
	words := strings.Fields(c.name)
	var act action
	cc := &cobra.Command{
		Use:   strings.TrimSpace(words[len(words)-1] + " " + c.args),
		Short: c.summary, Long: strings.TrimSpace(c.help),
		DisableFlagsInUseLine: true,
		Args: func(cc *cobra.Command, pos []string) error {
			switch {
			case len(pos) < c.minArgs:
				return usagef(cc, "missing arguments: interlock %s needs %s", c.name, c.operands)
			case len(pos) > c.maxArgs:
				return usagef(cc, "unexpected argument %q", truncate(pos[c.maxArgs]))
			}
			return nil
		},
		RunE: func(cc *cobra.Command, pos []string) error {
			base, err := r.g.resolve(cc, c.offline, r.getenv)
			if err != nil {
				return err
			}
			transport := newTransport()
			defer transport.CloseIdleConnections()
			c, err := client.New(base.String(), client.WithToken(r.g.token), client.WithTimeout(r.g.timeout),
				client.WithHTTPClient(&http.Client{Transport: transport}),
				client.WithUserAgent("interlock-cli/"+buildVersion()))
			if err != nil {
				return usagef(cc, "%v", err)
			}
			if r.g.idemKey != "" {
				c = c.WithIdempotencyKey(r.g.idemKey)
			}
			s := &session{runner: r, cmd: cc, json: r.g.output == "json", client: api{c}}
			return act(cc.Context(), s, pos)
		},
	}
	act = c.setup(cc.Flags())
	return cc
}

// execute runs the command line args on root and returns what went wrong, if anything.
func (r *runner) execute(ctx context.Context, root *cobra.Command, args []string) error {
	root.SetArgs(singleDash(root, args)) // never nil: cobra would read os.Args
	cmd, err := root.ExecuteContextC(ctx)
	if err == nil || cmd != root || errors.Is(err, errUsage) {
		return err
	}
	// A flag before the command words, parsed by the command it follows: pflag's error as it is.
	if errors.Is(err, pflag.ErrHelp) { // such as --help=true
		c, _, _ := root.Find(args)
		return c.Help()
	}
	return flagError(root, err)
}

// flagError is the usage error for err, pflag's, on c's command line. A flag that the root or a
// group does not know belongs after the command words.
func flagError(c *cobra.Command, err error) error {
	var notExist *pflag.NotExistError
	switch {
	case isGroup(c) && errors.As(err, &notExist):
		name := notExist.GetSpecifiedName()
		return usagef(nil, "%s%s: name the command first; its own flags come after it", strings.Repeat("-", min(len(name), 2)), truncate(name))
	case isGroup(c):
		return usagef(nil, "%v", err)
	}
	return &usageError{cmd: c, msg: err.Error()}
}

// isGroup reports whether c is the root or a group such as flags: a command that is not run.
func isGroup(c *cobra.Command) bool {
	return !c.HasParent() || slices.Contains(groups, commandName(c))
}

// singleDash is the one place that makes the single-dash form of every long flag work, as the
// flag package's did (-reason x, -http=:8080): pflag reads -reason as the one-letter flags r, e,
// a..., so it becomes --reason before cobra parses the line. One-letter flags stay as they are
// (-o json; --o becomes -o). It walks args as cobra does: the leading command words select the
// command, whose own and inherited flags say which flags take a value (the value is passed on
// untouched, so --since -5m keeps its -5m), and "--" ends the flags.
func singleDash(root *cobra.Command, args []string) []string {
	out := make([]string, 0, len(args))
	cmd, words := root, true
	for i := 0; i < len(args); i++ {
		a := args[i]
		if a == "--" {
			return append(out, args[i:]...)
		}
		if len(a) < 2 || a[0] != '-' {
			out = append(out, a)
			if sub, rest, err := cmd.Find([]string{a}); words && err == nil && len(rest) == 0 {
				cmd = sub
			} else {
				words = false
			}
			continue
		}
		name, _, hasValue := strings.Cut(strings.TrimLeft(a, "-"), "=")
		switch {
		case len(name) > 1 && a[1] != '-': // -reason
			a = "-" + a
		case len(name) == 1 && a[1] == '-' && a[2] != '-': // --o
			a = a[1:]
		}
		out = append(out, a)
		fs := cmd.Flags()
		fs.AddFlagSet(cmd.InheritedFlags()) // as cobra does before it parses
		f := fs.Lookup(name)
		if len(name) == 1 {
			f = fs.ShorthandLookup(name)
		}
		if f != nil && !hasValue && f.NoOptDefVal == "" && i+1 < len(args) {
			i++
			out = append(out, args[i])
		}
	}
	return out
}

// commandName is cmd's name after "interlock", such as "flags list".
func commandName(cmd *cobra.Command) string {
	return strings.TrimPrefix(strings.TrimPrefix(cmd.CommandPath(), "interlock"), " ")
}

// help prints the help of c: the overview for the root, the list of a group's commands, or the
// usage, flags and exit codes of one command. cmds are the client commands.
func (r *runner) help(c *cobra.Command, cmds []*command) {
	switch {
	case !c.HasParent():
		r.overview(r.stdout, cmds, c)
	case isGroup(c):
		r.groupHelp(r.stdout, commandName(c), cmds)
	default:
		r.commandHelp(r.stdout, c)
	}
}

// overview is the output of `interlock help`.
func (r *runner) overview(w io.Writer, cmds []*command, root *cobra.Command) {
	fmt.Fprint(w, `interlock runs the Interlock server (interlock serve) and is its command-line client: every
admin action on feature flags, human-readable by default, the server's JSON with -o json.

Usage:
  interlock <command> [arguments] [flags]

Commands:
`)
	list := append([]*command{{name: "serve", summary: "Run the server (interlock help serve lists its flags)."}}, cmds...)
	r.commandList(w, append(list,
		&command{name: "completion", operands: "bash|zsh|fish|powershell", summary: "Print the script that completes commands and flags in that shell."},
		&command{name: "help", operands: "[command]", summary: "Print this, or the help of one command."}))
	fmt.Fprint(w, `
Flags may come before or after the arguments. Global flags (every command):
`)
	printFlags(w, root.PersistentFlags())
	fmt.Fprint(w, "\n"+timesHelp+"\n\n"+exitCodesHelp+"\n")
}

// groupHelp is the help of a group of commands such as `interlock flags`.
func (r *runner) groupHelp(w io.Writer, group string, cmds []*command) {
	fmt.Fprintf(w, "Usage:\n  interlock %s <command> [arguments] [flags]\n\nCommands:\n", group)
	r.commandList(w, inGroup(group, cmds))
	fmt.Fprintf(w, "\nRun 'interlock help %s <command>' for the flags of one.\n", group)
}

// inGroup are the commands of cmds in group, such as flags.
func inGroup(group string, cmds []*command) []*command {
	return slices.DeleteFunc(slices.Clone(cmds), func(c *command) bool { return !strings.HasPrefix(c.name, group+" ") })
}

func (r *runner) commandList(w io.Writer, cmds []*command) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	for _, c := range cmds {
		fmt.Fprintf(tw, "  %s %s\t%s\n", c.name, c.operands, c.summary)
	}
	tw.Flush()
}

// commandHelp is the output of `interlock help CMD` and `interlock CMD --help`.
func (r *runner) commandHelp(w io.Writer, c *cobra.Command) {
	fmt.Fprintf(w, "Usage:\n  %s\n\n%s\n", c.UseLine(), c.Short)
	if c.Long != "" {
		fmt.Fprintf(w, "\n%s\n", c.Long)
	}
	if own := c.LocalNonPersistentFlags(); printFlags(io.Discard, own) > 0 {
		fmt.Fprint(w, "\nFlags:\n")
		printFlags(w, own)
	}
	fmt.Fprint(w, "\nGlobal flags:\n")
	printFlags(w, c.InheritedFlags())
	fmt.Fprintf(w, "\n%s\n", exitCodesHelp)
}

// printFlags lists the flags of fs with two dashes, but for help, which every command takes, and
// returns how many it listed.
func printFlags(w io.Writer, fs *pflag.FlagSet) int {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	n := 0
	fs.VisitAll(func(f *pflag.Flag) {
		if f.Name == "help" || f.Hidden {
			return
		}
		n++
		arg, usage := pflag.UnquoteUsage(f)
		if arg != "" {
			arg = " " + arg
		}
		name := "--" + f.Name
		if f.Shorthand != "" {
			name = "-" + f.Shorthand + ", " + name
		}
		fmt.Fprintf(tw, "  %s%s\t%s\n", name, arg, usage)
	})
	tw.Flush()
	return n
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
		setup: func(fs *pflag.FlagSet) action {
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

// Defaults of the global flags.
const (
	defaultServer  = "http://127.0.0.1:8080"
	defaultTimeout = 10 * time.Second
)

// globals are the flags every command accepts.
type globals struct {
	server  string
	token   string
	output  string
	timeout time.Duration
	// idemKey names the write a command makes (Idempotency-Key); a fresh one when empty.
	idemKey string
}

func (g *globals) register(fs *pflag.FlagSet) {
	fs.StringVar(&g.server, "server", "", "server `URL` (default $INTERLOCK_SERVER, else "+defaultServer+")")
	fs.StringVar(&g.token, "token", "", "API `TOKEN`, sent as a bearer token (default $INTERLOCK_TOKEN)")
	fs.StringVarP(&g.output, "output", "o", "table", "output `FORMAT`: table, or json for the server's JSON pretty-printed")
	fs.DurationVar(&g.timeout, "timeout", defaultTimeout, "give up on a request after `DURATION` (0: never)")
	fs.StringVar(&g.idemKey, "idempotency-key", "", "send the write under `KEY`, to settle a write of unknown outcome (default $INTERLOCK_IDEMPOTENCY_KEY, else a fresh key)")
}

// resolve applies the environment and checks the values, after parsing, and returns the server's
// base URL (the default one for an offline command). The error is a usage error.
func (g *globals) resolve(cmd *cobra.Command, offline bool, getenv func(string) string) (*url.URL, error) {
	if g.output != "table" && g.output != "json" {
		return nil, usagef(cmd, "-o %q: the output formats are table and json", g.output)
	}
	if g.timeout < 0 {
		return nil, usagef(cmd, "--timeout %s: a timeout is not negative", g.timeout)
	}
	if g.token == "" {
		g.token = getenv("INTERLOCK_TOKEN")
	}
	if g.server == "" {
		g.server = getenv("INTERLOCK_SERVER")
	}
	if g.idemKey == "" {
		g.idemKey = getenv("INTERLOCK_IDEMPOTENCY_KEY")
	}
	if g.server == "" || offline {
		g.server = defaultServer
	}
	u, err := parseServer(g.server)
	if err != nil {
		return nil, &usageError{cmd: cmd, msg: err.Error()}
	}
	return u, nil
}
