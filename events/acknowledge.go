package events

// TypeIntegrityAcknowledged records that an operator looked at the messages the projections
// refused (see [Verifier]) up to a stream sequence, and accepts them as refused: readiness stops
// reporting them. Problems after that sequence are reported again.
const TypeIntegrityAcknowledged = "io.interlock.integrity.acknowledged.v1"

// EntityIntegrity is the entity of integrity acknowledgements. Like token events they live in
// [GlobalEnvironment], on one subject ([IntegritySubject]).
const EntityIntegrity = "integrity"

// IntegrityKey is the key of the one subject that holds every acknowledgement.
const IntegrityKey = "acknowledgements"

// IntegrityAcknowledged acknowledges every integrity problem at or below stream sequence Through.
// The event's actor is who acknowledged, its reason (required) why.
type IntegrityAcknowledged struct {
	Through uint64 `json:"through"`
	// Problems is how many problems the writer's projections had recorded at or below Through
	// and not yet acknowledged, for the audit trail.
	Problems uint64 `json:"problems,omitempty"`
}

// IntegritySubject is the subject holding the integrity acknowledgements.
func IntegritySubject() string { return subject(GlobalEnvironment, EntityIntegrity, IntegrityKey) }

// IsGlobal reports whether events of entity belong to no environment but to
// [GlobalEnvironment]: token events and integrity acknowledgements.
func IsGlobal(entity string) bool { return entity == EntityToken || entity == EntityIntegrity }
