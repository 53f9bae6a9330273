package dashboard

import (
	"sync"
	"time"

	"github.com/interlock-dev/interlock/events"
)

// note is what the catalog does not keep about a flag's last event: its type and reason.
type note struct {
	Type   string
	Actor  string
	Reason string
	Time   time.Time
	Guard  bool
}

// flagNotes are the notes of one flag: its last change, and its last kill.
type flagNotes struct {
	last note
	kill note
}

// notes observes the catalog and remembers, per flag, who changed it last and why, and who
// killed it. It is written by the catalog's applying goroutine and read by handlers.
type notes struct {
	mu sync.RWMutex
	m  map[string]flagNotes // by env + "\x00" + key
}

func newNotes() *notes { return &notes{m: make(map[string]flagNotes)} }

func noteKey(env, key string) string { return env + "\x00" + key }

func (n *notes) observe(ev events.Event) {
	if ev.Entity != events.EntityFlag {
		return
	}
	nt := note{Type: ev.Type, Actor: ev.Actor, Reason: ev.Reason, Time: ev.Time, Guard: ev.Actor == "guard"}
	k := noteKey(ev.Environment, ev.Key)
	n.mu.Lock()
	fn := n.m[k]
	fn.last = nt
	switch ev.Type {
	case events.TypeFlagKilled:
		fn.kill = nt
	case events.TypeFlagEnabled:
		fn.kill = note{}
	case events.TypeFlagUpdated, events.TypeFlagRestored:
		// Either may turn the flag on again; then the kill no longer says why it is off.
		if enabledAfter(ev) {
			fn.kill = note{}
		}
	}
	n.m[k] = fn
	n.mu.Unlock()
}

func (n *notes) get(env, key string) flagNotes {
	n.mu.RLock()
	defer n.mu.RUnlock()
	return n.m[noteKey(env, key)]
}

// enabledAfter reports whether an update or restore leaves the flag enabled.
func enabledAfter(ev events.Event) bool {
	p, err := ev.Payload()
	if err != nil {
		return false
	}
	switch p := p.(type) {
	case *events.FlagUpdated:
		return p.Flag.Enabled
	case *events.FlagRestored:
		return p.Flag.Enabled
	}
	return false
}
