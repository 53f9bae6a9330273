package cli

import (
	"errors"
	"strings"

	"github.com/interlock-dev/interlock/internal/config"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

// serveCommand is `interlock serve`: its flags are internal/config's, and it runs r.serve.
func (r *runner) serveCommand() *cobra.Command {
	flags := config.NewFlags(r.getenv)
	c := &cobra.Command{
		Use:   "serve",
		Short: "Run the server (interlock help serve lists its flags).",
		Args: func(c *cobra.Command, args []string) error {
			if len(args) > 0 {
				return usagef(c, "unexpected argument %q", truncate(args[0]))
			}
			return nil
		},
		RunE: func(c *cobra.Command, _ []string) error {
			var client []string
			c.InheritedFlags().VisitAll(func(f *pflag.Flag) {
				if f.Changed {
					client = append(client, "--"+f.Name)
				}
			})
			if len(client) > 0 {
				return usagef(c, "%s: serve does not take the client commands' flags", strings.Join(client, ", "))
			}
			cfg, err := flags.Load(r.getenv)
			if err != nil {
				return &usageError{cmd: c, msg: err.Error()}
			}
			if r.serve == nil {
				return errors.New("serve: this program has no server; run the interlock binary")
			}
			return r.serve(c.Context(), cfg, r.stdout, r.stderr)
		},
	}
	c.Flags().AddFlagSet(flags.FlagSet())
	c.SetHelpFunc(func(*cobra.Command, []string) { flags.Help(r.stdout) })
	return c
}
