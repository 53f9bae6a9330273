// Command interlock runs the Interlock server (`interlock serve`) and is its command-line client
// (every other subcommand; `interlock help` lists them).
package main

import (
	"context"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/interlock-dev/interlock/internal/app"
	"github.com/interlock-dev/interlock/internal/cli"
	"github.com/interlock-dev/interlock/internal/config"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdin, os.Stdout, os.Stderr, os.Getenv))
}

func run(args []string, stdin io.Reader, stdout, stderr io.Writer, getenv func(string) string) int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return cli.Main(ctx, args, stdin, stdout, stderr, getenv, serve)
}

// serve runs the server until ctx ends or it stops by itself.
func serve(ctx context.Context, cfg config.Config, stdout, stderr io.Writer) error {
	logger := cfg.Logger(stderr)
	m, err := app.Start(ctx, cfg, logger, stdout)
	if err != nil {
		return err
	}
	done := make(chan error, 1)
	go func() { done <- m.Wait() }()
	select {
	case <-ctx.Done():
		logger.Info("shutting down")
	case err := <-done:
		logger.Error("server stopped", "err", err)
	}
	return m.Close()
}
