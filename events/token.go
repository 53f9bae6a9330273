package events

import "time"

// Token event types: who issued or revoked which API token. They never carry the token itself.
const (
	TypeTokenIssued  = "io.interlock.token.issued.v1"
	TypeTokenRevoked = "io.interlock.token.revoked.v1"
)

// EntityToken is the entity of token events: an API token, by name.
const EntityToken = "token"

// GlobalEnvironment is the environment of the events that belong to no one environment: token
// events. It is not a valid environment name, so no environment's subjects (and no client
// following one environment) ever see them; only readers of every subject do.
const GlobalEnvironment = "_"

// TokenIssued records that a token was issued. Its key is the token's name.
type TokenIssued struct {
	Role string `json:"role"`
	// Environment is the token's scope; empty for every environment.
	Environment string `json:"environment,omitempty"`
	// ExpiresAt is when the token stops working; absent for never.
	ExpiresAt time.Time `json:"expiresAt,omitzero"`
}

// TokenRevoked records that every token of a name was revoked.
type TokenRevoked struct {
	Role        string `json:"role,omitempty"`
	Environment string `json:"environment,omitempty"`
}

// TokenSubject is the subject holding the events of the tokens named name.
func TokenSubject(name string) string { return subject(GlobalEnvironment, EntityToken, name) }
