// Command interlock-subscriber is an example of another service consuming Interlock's events with
// its own durable consumer (package events/subscribe). It prints every event as one JSON line on
// standard output: the event's envelope and data, its stream sequence, and how many times the
// server has delivered it. Stopped and started again with the same --durable, it carries on after
// the last event it acknowledged.
//
// Against Interlock's embedded NATS server it authenticates with an Interlock token (--token or
// INTERLOCK_TOKEN; a reader's is enough), and its durable must be one the token owns: named after
// the token, or the token's name, '@' and more. Against an operator's cluster it takes a NATS
// credentials file (--nats-creds).
//
//	INTERLOCK_TOKEN=... interlock-subscriber --durable audit-printer --env production
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/interlock-dev/interlock/events"
	"github.com/interlock-dev/interlock/events/subscribe"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// line is what the subscriber prints for one event.
type line struct {
	events.Event
	// Deliveries is 1 the first time the server delivers the event; more means this is a
	// redelivery of an event that was not acknowledged (at least once).
	Deliveries uint64 `json:"deliveries"`
}

// run is the whole program: 0 when stopped by ctx, 1 on a failure, 2 on a usage error.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("interlock-subscriber", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: interlock-subscriber --durable NAME [flags]\n\n"+
			"Prints every Interlock event as a JSON line, from a durable consumer that resumes where it left off.\n\n")
		fs.PrintDefaults()
	}
	var (
		url        = fs.String("nats-url", "nats://127.0.0.1:4222", "NATS server URL(s), comma-separated")
		token      = fs.String("token", os.Getenv("INTERLOCK_TOKEN"), "Interlock token for the embedded NATS server, a reader's is enough (env INTERLOCK_TOKEN)")
		creds      = fs.String("nats-creds", "", "NATS credentials file, for an operator's NATS cluster")
		durable    = fs.String("durable", "", "name of this subscriber's durable consumer (required)")
		env        = fs.String("env", "", "only events of this environment (default: every environment)")
		entity     = fs.String("entity", "", "only events of flags or of segments: flag or segment")
		keys       = fs.String("keys", "", "only events of these comma-separated keys (needs --entity)")
		stream     = fs.String("stream", events.DefaultStreamName, "the event stream")
		deliverNew = fs.Bool("new-only", false, "a new durable starts with the next event instead of the first")
		retries    = fs.Int("max-retries", 0, "in-process retries of a failed event before it is poisoned (0: default 3, -1: none)")
		noPoison   = fs.Bool("no-poison-queue", false, "redeliver a failing event until it succeeds instead of poisoning it")
		ackWait    = fs.Duration("ack-wait", subscribe.DefaultAckWait, "how long one event may take")
		verbose    = fs.Bool("v", false, "debug logs")
	)
	fs.StringVar(creds, "creds", "", "same as --nats-creds")
	inbox := fs.String("nats-inbox", "", "reply subject prefix the NATS user may subscribe to, for an operator's NATS cluster (see deploy/nats-cluster.conf)")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "interlock-subscriber: unexpected arguments %q\n", fs.Args())
		return 2
	}
	level := slog.LevelInfo
	if *verbose {
		level = slog.LevelDebug
	}
	logger := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))

	cfg := subscribe.Config{
		URL:           *url,
		Stream:        *stream,
		Durable:       *durable,
		Token:         *token,
		Environment:   *env,
		Entity:        *entity,
		DeliverNew:    *deliverNew,
		MaxRetries:    *retries,
		NoPoisonQueue: *noPoison,
		AckWait:       *ackWait,
		Logger:        logger,
	}
	if *keys != "" {
		cfg.Keys = strings.Split(*keys, ",")
	}
	if *creds != "" {
		cfg.Options = append(cfg.Options, nats.UserCredentials(*creds))
	}
	if *inbox != "" {
		cfg.Options = append(cfg.Options, nats.CustomInboxPrefix(*inbox))
	}

	ctx, stop := context.WithCancel(ctx)
	defer stop()
	writeErr := make(chan error, 1)
	sub, err := subscribe.New(cfg, func(hctx context.Context, ev events.Event) error {
		d, _ := subscribe.DeliveryFrom(hctx)
		b, err := json.Marshal(line{Event: ev, Deliveries: d.NumDelivered})
		if err != nil {
			return fmt.Errorf("%w: encode event %d: %w", subscribe.ErrPermanent, ev.Sequence, err)
		}
		if _, err := stdout.Write(append(b, '\n')); err != nil {
			// Nobody reads us any more: stop without acknowledging, so that the event is
			// delivered again next time rather than poisoned.
			select {
			case writeErr <- err:
			default:
			}
			stop()
			return fmt.Errorf("write event %d: %w", ev.Sequence, err)
		}
		return nil
	})
	if err != nil {
		fmt.Fprintf(stderr, "interlock-subscriber: %v\n", err)
		return 2
	}
	logger.Info("subscribing", "nats", *url, "durable", *durable, "filter", sub.FilterSubjects())
	start := time.Now()
	err = sub.Run(ctx)
	select {
	case werr := <-writeErr:
		fmt.Fprintf(stderr, "interlock-subscriber: stdout: %v\n", werr)
		return 1
	default:
	}
	if err != nil {
		fmt.Fprintf(stderr, "interlock-subscriber: %v\n", err)
		return 1
	}
	logger.Info("stopped", "after", time.Since(start).Round(time.Millisecond))
	return 0
}
