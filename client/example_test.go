package client_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"os"

	"github.com/interlock-dev/interlock/apiv1"
	"github.com/interlock-dev/interlock/client"
)

// The on-call path: kill a flag, and tell apart what went wrong by its code.
func Example() {
	c, err := client.New("http://localhost:8080", client.WithToken(os.Getenv("INTERLOCK_TOKEN")))
	if err != nil {
		log.Fatal(err)
	}
	f, err := c.KillFlag(context.Background(), "production", "checkout-v2", "error rate above 5% since the 14:02 deploy")
	var ae *apiv1.Error
	switch {
	case errors.Is(err, apiv1.ErrNotFound):
		log.Fatal("no such flag")
	case errors.Is(err, apiv1.ErrOutcomeUnknown) && errors.As(err, &ae):
		// Settle it later: the same write under the same key is written once.
		f, err = c.WithIdempotencyKey(ae.IdempotencyKey).KillFlag(context.Background(), "production", "checkout-v2", "retry")
	}
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(f.Key, "is at version", f.Version)
}
