package events

import (
	"errors"
	"testing"
	"time"
)

func TestTokenEventRoundTrip(t *testing.T) {
	ev, err := NewEvent(TypeTokenIssued, GlobalEnvironment, "ci.deploy", TokenIssued{Role: "writer", Environment: "staging", ExpiresAt: time.Date(2027, 1, 1, 0, 0, 0, 0, time.UTC)})
	if err != nil {
		t.Fatal(err)
	}
	ev.Actor, ev.Version = "admin", 1
	if err := ev.Validate(); err != nil {
		t.Fatalf("validate: %v", err)
	}
	if got := ev.Subject(); got != "interlock._.token.ci.deploy" || got != TokenSubject("ci.deploy") {
		t.Fatalf("subject = %q", got)
	}
	msg := ev.Msg()
	back, err := Decode(msg.Subject, msg.Header, msg.Data)
	if err != nil {
		t.Fatalf("decode: %v", err)
	}
	p, err := back.Payload()
	if err != nil {
		t.Fatal(err)
	}
	if got := p.(*TokenIssued); back.Entity != EntityToken || got.Role != "writer" || got.Environment != "staging" || got.ExpiresAt.IsZero() {
		t.Fatalf("decoded %+v, payload %+v", back, got)
	}
}

func TestGlobalEnvironmentIsForTokensOnly(t *testing.T) {
	flag, _ := NewEvent(TypeFlagKilled, GlobalEnvironment, "checkout", FlagKilled{})
	flag.Actor, flag.Version = "admin", 1
	if err := flag.Validate(); !errors.Is(err, ErrInvalid) {
		t.Errorf("a flag event in %q validated: %v", GlobalEnvironment, err)
	}
	tok, _ := NewEvent(TypeTokenRevoked, "production", "ci", TokenRevoked{})
	tok.Actor, tok.Version = "admin", 1
	if err := tok.Validate(); !errors.Is(err, ErrInvalid) {
		t.Errorf("a token event in production validated: %v", err)
	}
	if err := ValidateEnvironment(GlobalEnvironment); err == nil {
		t.Errorf("%q is a valid environment name: an environment could shadow the token events", GlobalEnvironment)
	}
}
