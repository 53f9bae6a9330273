// Package perimeter closes the embedded NATS server to everyone but Interlock and the holders of
// Interlock tokens. It answers nats-server's auth callout: a client presents a token (as its NATS
// token, or as the password of any user name), the token is checked like a bearer token of the
// HTTP API, and the client is admitted as a NATS user whose permissions follow from the token's
// scope ([Permissions]): it may follow its environments' events and read snapshots, never write
// events, buckets or streams. A revoked token's connections are closed ([Revocations]); an
// expiring token's NATS user expires with it. Durable consumers belong to the token that names
// them ([Warden]).
package perimeter

import (
	"encoding/base64"
	"strings"

	"github.com/nats-io/jwt/v2"

	"github.com/interlock-dev/interlock/events"
	"github.com/interlock-dev/interlock/internal/auth"
	"github.com/interlock-dev/interlock/local"
)

// Subjects of the JetStream API and of the parts of Interlock a token holder's client uses.
const (
	jsAPI = "$JS.API."
	// snapshotStream is the stream behind the snapshot object store.
	snapshotStream = "OBJ_" + local.DefaultSnapshotBucket
	// snapshotObjects prefixes the subjects of the snapshot object store.
	snapshotObjects = "$O." + local.DefaultSnapshotBucket
)

// Permissions are the NATS permissions of a client admitted with a token of principal p, whose
// replies come to inbox+".>" (see events.InboxPrefix). Every role gets the same set: over NATS a
// token only reads, since every change goes through the command path of the HTTP API, which
// validates, authorises and records it. A token scoped to an environment reads that environment
// only; an unscoped one reads them all.
//
// The client may:
//   - follow the event stream with ordered or durable consumers whose filter is within its scope
//     (creating them, fetching from them, acknowledging, asking for their info), and get the last
//     event of a subject within its scope;
//   - read the snapshot of its environment (every environment's when unscoped);
//   - publish its presence heartbeats, and dead events on the poison subjects of its durables;
//   - subscribe to its own inbox.
//
// Anything else is refused by the server: publishing on an event subject, any access to the
// token, lease and guard status buckets, creating, changing, purging or deleting streams, listing
// or deleting the stream's consumers, and subscribing to anything but its inbox.
func Permissions(p auth.Principal, inbox string) jwt.Permissions {
	stream := events.DefaultStreamName
	scope := events.AllSubjects
	env := "*"
	if p.Environment != "" {
		scope = events.EnvironmentSubjects(p.Environment)
		env = p.Environment
	}
	pub := []string{
		jsAPI + "INFO",
		// The last event of a subject within the scope (the stream allows direct gets).
		jsAPI + "DIRECT.GET." + stream + "." + scope,
		// Consumers whose one filter is within the scope: the filter is part of the subject.
		jsAPI + "CONSUMER.CREATE." + stream + ".*." + scope,
		jsAPI + "CONSUMER.MSG.NEXT." + stream + ".*",
		jsAPI + "CONSUMER.INFO." + stream + ".*",
		"$JS.ACK." + stream + ".*.>",
		// Snapshots: the object's metadata by name, then its chunks through an ordered push
		// consumer with flow control.
		jsAPI + "STREAM.INFO." + snapshotStream,
		jsAPI + "CONSUMER.CREATE." + snapshotStream + ".*." + snapshotObjects + ".C.*",
		jsAPI + "CONSUMER.DELETE." + snapshotStream + ".*",
		jsAPI + "CONSUMER.INFO." + snapshotStream + ".*",
		"$JS.FC." + snapshotStream + ".>",
		local.PresencePrefix + "." + env + ".*",
		// The subscriber of events/subscribe finds the stream of its poison subject by name.
		jsAPI + "STREAM.NAMES",
		"_INTERLOCK.poison.*",
	}
	if p.Environment == "" {
		// Consumers with several filters (events/subscribe with Keys) name them in the request
		// only; for an unscoped token every filter is within its scope.
		pub = append(pub, jsAPI+"CONSUMER.CREATE."+stream+".*",
			jsAPI+"DIRECT.GET."+snapshotStream+"."+snapshotObjects+".M.*")
	} else {
		pub = append(pub, jsAPI+"DIRECT.GET."+snapshotStream+"."+snapshotObjects+".M."+objectName(p.Environment))
	}
	var perms jwt.Permissions
	perms.Pub.Allow.Add(pub...)
	perms.Sub.Allow.Add(inbox + ".>")
	return perms
}

// objectName is how the object store names an object in its subjects.
func objectName(name string) string { return base64.URLEncoding.EncodeToString([]byte(name)) }

// DurableSeparator separates a token's name from the rest of the name of a durable it owns
// ("checkout@audit"). Token names cannot hold it, so no token owns another's durables.
const DurableSeparator = "@"

// OwnsDurable reports whether the token named token may have a durable consumer named durable:
// one named after the token ("checkout"), or after the token, [DurableSeparator] and more
// ("checkout@audit"). A token whose name holds a '.' (which consumer names cannot) owns no
// durable.
func OwnsDurable(token, durable string) bool {
	if token == "" || strings.Contains(token, ".") {
		return false
	}
	rest, ok := strings.CutPrefix(durable, token)
	return ok && (rest == "" || strings.HasPrefix(rest, DurableSeparator) && len(rest) > 1)
}
