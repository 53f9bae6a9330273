// Command interlock runs the Interlock server (`interlock serve`) and is its command-line client
// (every other subcommand; `interlock help` lists them).
package main

import (
	"context"
	"errors"
	"fmt"
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
	if len(args) > 0 && args[0] == "serve" {
		return serve(ctx, args[1:], stdout, stderr, getenv)
	}
	if len(args) == 2 && args[0] == "help" && args[1] == "serve" {
		return serve(ctx, []string{"--help"}, stdout, stdout, getenv)
	}
	return cli.Run(ctx, args, stdin, stdout, stderr, getenv)
}

func serve(ctx context.Context, args []string, stdout, stderr io.Writer, getenv func(string) string) int {
	cfg, err := config.Load(args, getenv, stderr)
	if errors.Is(err, config.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintf(stderr, "interlock serve: %v\n", err)
		return 2
	}
	logger := cfg.Logger(stderr)
	m, err := app.Start(ctx, cfg, logger, stdout)
	if err != nil {
		fmt.Fprintf(stderr, "interlock serve: %v\n", err)
		return 1
	}
	done := make(chan error, 1)
	go func() { done <- m.Wait() }()
	select {
	case <-ctx.Done():
		logger.Info("shutting down")
	case err := <-done:
		logger.Error("server stopped", "err", err)
	}
	if err := m.Close(); err != nil {
		fmt.Fprintf(stderr, "interlock serve: %v\n", err)
		return 1
	}
	return 0
}
