package cli

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"net/url"
	"strings"
	"time"
)

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

func (g *globals) register(fs *flag.FlagSet) {
	fs.StringVar(&g.server, "server", "", "server `URL` (default $INTERLOCK_SERVER, else "+defaultServer+")")
	fs.StringVar(&g.token, "token", "", "API `TOKEN`, sent as a bearer token (default $INTERLOCK_TOKEN)")
	fs.StringVar(&g.output, "o", "table", "output `FORMAT`: table, or json for the server's JSON pretty-printed")
	fs.StringVar(&g.output, "output", "table", "output `FORMAT` (same as -o)")
	fs.DurationVar(&g.timeout, "timeout", defaultTimeout, "give up on a request after `DURATION` (0: never)")
	fs.StringVar(&g.idemKey, "idempotency-key", "", "send the write under `KEY`, to settle a write of unknown outcome (default $INTERLOCK_IDEMPOTENCY_KEY, else a fresh key)")
}

// resolve applies the environment and checks the values, after parsing, and returns the server's
// base URL (the default one for an offline command). The error is a usage error.
func (g *globals) resolve(cmd *command, getenv func(string) string) (*url.URL, error) {
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
	if g.server == "" || cmd.offline {
		g.server = defaultServer
	}
	u, err := parseServer(g.server)
	if err != nil {
		return nil, &usageError{cmd: cmd, msg: err.Error()}
	}
	return u, nil
}

// newFlagSet returns a flag set for cmd with the global flags registered, printing nothing itself:
// errors come back from parse.
func newFlagSet(name string, g *globals) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	g.register(fs)
	return fs
}

// isFlag reports whether a command-line argument is a flag rather than a positional argument.
// "-" alone is positional (it names standard input); "--" ends the flags.
func isFlag(arg string) bool {
	return len(arg) > 1 && arg[0] == '-' && arg != "--"
}

// flagName is the name of a flag argument without dashes and without an "=value".
func flagName(arg string) (name string, hasValue bool) {
	name = strings.TrimPrefix(strings.TrimPrefix(arg, "-"), "-")
	name, _, hasValue = strings.Cut(name, "=")
	return name, hasValue
}

// takesValue reports whether the flag named by arg consumes the next argument as its value.
func takesValue(fs *flag.FlagSet, arg string) bool {
	name, hasValue := flagName(arg)
	if hasValue {
		return false
	}
	f := fs.Lookup(name)
	if f == nil {
		return false
	}
	if b, ok := f.Value.(interface{ IsBoolFlag() bool }); ok && b.IsBoolFlag() {
		return false
	}
	return true
}

// parseArgs parses flags and positional arguments in any order — `kill prod/checkout --reason x`
// as well as `kill --reason x prod/checkout` — and returns the positional ones. Everything after
// "--" is positional. The error is a usage error; it wraps flag.ErrHelp for -h and --help.
func parseArgs(cmd *command, fs *flag.FlagSet, args []string) ([]string, error) {
	var flags, pos []string
	for i := 0; i < len(args); i++ {
		a := args[i]
		switch {
		case a == "--":
			pos = append(pos, args[i+1:]...)
			i = len(args)
		case !isFlag(a):
			pos = append(pos, a)
		default:
			flags = append(flags, a)
			if takesValue(fs, a) && i+1 < len(args) {
				flags = append(flags, args[i+1])
				i++
			}
		}
	}
	if err := fs.Parse(flags); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil, flag.ErrHelp
		}
		return nil, usagef(cmd, "%s", dashes(err.Error()))
	}
	return pos, nil
}

// dashes rewrites the flag package's "-name" in its messages to the "--name" this CLI documents
// (one-letter flags such as -o keep one dash).
func dashes(msg string) string {
	for _, prefix := range []string{"flag provided but not defined: -", "flag needs an argument: -", " for flag -", " for -"} {
		i := strings.Index(msg, prefix)
		if i < 0 {
			continue
		}
		j := i + len(prefix)
		name := msg[j:]
		if k := strings.IndexAny(name, ": "); k >= 0 {
			name = name[:k]
		}
		if len(name) > 1 {
			return msg[:j] + "-" + msg[j:]
		}
		return msg
	}
	return msg
}

// isSet reports whether the flag called name was given on the command line.
func isSet(fs *flag.FlagSet, name string) bool {
	set := false
	fs.Visit(func(f *flag.Flag) {
		if f.Name == name {
			set = true
		}
	})
	return set
}

// stringList is a flag that may be repeated; each use adds one value.
type stringList []string

func (l *stringList) String() string { return strings.Join(*l, ",") }

func (l *stringList) Set(v string) error {
	*l = append(*l, v)
	return nil
}

// versionFlag is a flag holding a flag version: a positive integer.
type versionFlag struct {
	v   uint64
	set bool
}

func (f *versionFlag) String() string {
	if !f.set {
		return ""
	}
	return fmt.Sprint(f.v)
}

func (f *versionFlag) Set(s string) error {
	v, err := parseVersion(s)
	if err != nil {
		return err
	}
	f.v, f.set = v, true
	return nil
}
