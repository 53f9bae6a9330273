package projections

import (
	"bytes"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/interlock-dev/interlock/events"
)

// Saved environment states. An [Index] also keeps, for every environment, the state of its flags
// at some of the sequences it passed, so that [EnvironmentAt] starts from the newest state at or
// before the point it is asked for and folds only the events after it, instead of the
// environment's whole history.
//
// Which events count is the rule of [Point]: as of a sequence, those at or before it; as of a time,
// every message on the environment's flag subjects, in stream order, up to the first whose time is
// after the point. A state saved at sequence s holds the fold of the environment's messages up to
// s and Latest, the greatest event time among them (the messages that do not decode or that the
// fold refused included, with the time they carry, as the full fold compares them too). So:
//
//   - as of sequence q, a state at s ≤ q is a prefix of the answer;
//   - as of time T, a state whose Latest ≤ T is a prefix of the answer: the full fold meets no
//     message after T up to s, so it folds exactly these, then goes on from s+1 as the query does.
//
// Latest only grows with s, so the newest usable state is found by a binary search.
//
// A state is saved after every stateEvery messages on the environment's flag subjects. Each holds
// only the flags changed since the state before it (the first of an environment: all its flags),
// so a state is the merge of the environment's states up to it. At most maxStates are kept per
// environment: when one more is saved, every second state counting back from the newest is
// merged into the next and dropped, and the environment's interval doubles. States stay evenly
// spread over its history, at most about 2·messages/maxStates apart: an as-of query folds at most
// that many events after its state (plus up to the interval, for a point after the newest).
var (
	stateEvery = 1000
	maxStates  = 32
)

// envStates is what an index keeps of one environment.
type envStates struct {
	// latest is the greatest event time among the environment's messages so far.
	latest time.Time
	// pending counts the environment's messages since its newest state; every is its interval.
	pending int
	every   int
	// changed holds the keys of the flags changed since the newest state.
	changed map[string]bool
	states  []envState
	// raw holds the states as a checkpoint stored them, until first needed (see load); rawAt is
	// the checkpoint's sequence.
	raw   json.RawMessage
	rawAt uint64
}

// load decodes and checks the states restored from a checkpoint, the first time they are needed,
// so that a restart does not wait for them. States that do not decode or do not add up are
// dropped: queries fold from the start, and the next state saved holds every flag. The caller
// holds ix.mu for writing.
func (es *envStates) load(env string) {
	if es.raw == nil {
		return
	}
	var raws []json.RawMessage
	err := json.Unmarshal(es.raw, &raws)
	docs := make([]envStateDoc, len(raws))
	for i := range raws {
		if err == nil {
			err = json.Unmarshal(raws[i], &docs[i])
		}
	}
	if err == nil {
		err = checkStates(env, docs, es.rawAt, es.latest)
	}
	es.raw, es.states = nil, nil
	if err != nil {
		return
	}
	for i, sd := range docs {
		st := envState{Sequence: sd.Sequence, Latest: sd.Latest, Flags: make([]Flag, len(sd.Flags)), enc: raws[i]}
		for i, fd := range sd.Flags {
			st.Flags[i] = fd.Flag
			st.Flags[i].Sequence = fd.Seq
		}
		es.states = append(es.states, st)
	}
}

// envState is the environment's state after the message at Sequence: the flags changed since
// the state before it, with their state then.
type envState struct {
	Sequence uint64
	Latest   time.Time
	Flags    []Flag
	// enc is the state's JSON for a checkpoint, made when the state is, so that a checkpoint
	// taken while the runner waits only joins them.
	enc json.RawMessage
}

// encode sets st.enc.
func (st *envState) encode() {
	sd := envStateDoc{Sequence: st.Sequence, Latest: st.Latest, Flags: make([]flagDoc, len(st.Flags))}
	for i, f := range st.Flags {
		sd.Flags[i] = flagDoc{f, f.Sequence}
	}
	st.enc, _ = json.Marshal(sd) // flags and times always encode
}

// FlagState is where a runner's index reads the state of the flags it saves: *Catalog.
type FlagState interface {
	Flag(env, key string) (Flag, bool)
	Flags(env string) []Flag
}

// flagSubject returns the environment and key of a flag's subject, ok false for another subject.
func flagSubject(subject string) (env, key string, ok bool) {
	parts := strings.SplitN(subject, ".", 4)
	if len(parts) != 4 || parts[0] != "interlock" || parts[2] != events.EntityFlag {
		return "", "", false
	}
	return parts[1], parts[3], true
}

// track records, after the catalog handled it, the message at seq on subject with its time (zero
// when it carries none), and saves the environment's state when its interval is reached. A
// message at or before the index's sequence was tracked already; call it after add.
func (ix *Index) track(subject string, t time.Time, seq uint64, c FlagState) {
	env, key, ok := flagSubject(subject)
	if !ok {
		return
	}
	ix.mu.Lock()
	defer ix.mu.Unlock()
	if seq != ix.seq {
		return
	}
	es := ix.envs[env]
	if es == nil {
		es = &envStates{every: stateEvery, changed: make(map[string]bool)}
		ix.envs[env] = es
	}
	if t.After(es.latest) {
		es.latest = t
	}
	es.changed[key] = true
	if es.pending++; es.pending < es.every {
		return
	}
	es.load(env)
	st := envState{Sequence: seq, Latest: es.latest}
	if len(es.states) == 0 {
		// The first state of an environment (also after a restore from a checkpoint that kept
		// none) holds every flag.
		st.Flags = c.Flags(env)
	} else {
		for _, k := range slices.Sorted(maps.Keys(es.changed)) {
			if f, ok := c.Flag(env, k); ok {
				st.Flags = append(st.Flags, f)
			}
		}
	}
	st.encode()
	es.states = append(es.states, st)
	es.pending = 0
	clear(es.changed)
	if len(es.states) > maxStates {
		es.states = thin(es.states)
		es.every *= 2
	}
}

// thin drops every second state counting back from the newest, merging each into the next.
func thin(states []envState) []envState {
	out := make([]envState, 0, len(states)/2+1)
	for i := len(states) - 1; i >= 0; i-- {
		if (len(states)-1-i)%2 == 0 {
			out = append(out, states[i])
			continue
		}
		// states[i] is dropped: the flags it holds that the next one does not join the next.
		next := &out[len(out)-1]
		have := make(map[string]bool, len(next.Flags))
		for _, f := range next.Flags {
			have[f.Key] = true
		}
		for _, f := range states[i].Flags {
			if !have[f.Key] {
				next.Flags = append(next.Flags, f)
			}
		}
		slices.SortFunc(next.Flags, func(a, b Flag) int { return strings.Compare(a.Key, b.Key) })
		next.encode()
	}
	slices.Reverse(out)
	return out
}

// stateAt returns the flags of env in the newest saved state from which a fold reaches the point
// at (see above), and the sequence of that state; seq 0 when none applies.
func (ix *Index) stateAt(env string, at Point) (flags []Flag, seq uint64) {
	ix.mu.RLock()
	es := ix.envs[env]
	if es != nil && es.raw != nil {
		ix.mu.RUnlock()
		ix.mu.Lock()
		es.load(env)
		ix.mu.Unlock()
		ix.mu.RLock()
	}
	defer ix.mu.RUnlock()
	if es == nil {
		return nil, 0
	}
	// n is how many states are usable: a prefix of the list, as both bounds only grow.
	n, _ := slices.BinarySearchFunc(es.states, at, func(st envState, at Point) int {
		if at.Sequence != 0 && st.Sequence > at.Sequence || !at.Time.IsZero() && st.Latest.After(at.Time) {
			return 1
		}
		return -1
	})
	if n == 0 {
		return nil, 0
	}
	byKey := make(map[string]Flag)
	for _, st := range es.states[:n] {
		for _, f := range st.Flags {
			byKey[f.Key] = f
		}
	}
	return slices.Collect(maps.Values(byKey)), es.states[n-1].Sequence
}

// States returns how many states the index keeps for env and how many flags they hold in all.
func (ix *Index) States(env string) (states, flags int) {
	ix.mu.Lock()
	defer ix.mu.Unlock()
	if es := ix.envs[env]; es != nil {
		es.load(env)
		for _, st := range es.states {
			flags += len(st.Flags)
		}
		return len(es.states), flags
	}
	return 0, 0
}

// pendingStates returns the bytes of the states restored from a checkpoint and not decoded yet.
func (ix *Index) pendingStates() (bytes int) {
	ix.mu.RLock()
	defer ix.mu.RUnlock()
	for _, es := range ix.envs {
		bytes += len(es.raw)
	}
	return bytes
}

// envStatesDoc is what a checkpoint holds of one environment's states.
type envStatesDoc struct {
	Environment string    `json:"environment"`
	Latest      time.Time `json:"latest"`
	Pending     int       `json:"pending"`
	Every       int       `json:"every"`
	Changed     []string  `json:"changed"`
	// States are a list of envStateDoc, checked when first used.
	States json.RawMessage `json:"states"`
}

type envStateDoc struct {
	Sequence uint64    `json:"sequence"`
	Latest   time.Time `json:"latest"`
	Flags    []flagDoc `json:"flags"`
}

// envDocs copies the states for a checkpoint, sorted by environment. The caller holds ix.mu.
func (ix *Index) envDocs() []envStatesDoc {
	out := make([]envStatesDoc, 0, len(ix.envs))
	for env, es := range ix.envs {
		d := envStatesDoc{Environment: env, Latest: es.latest, Pending: es.pending, Every: es.every,
			Changed: slices.Sorted(maps.Keys(es.changed)), States: es.raw}
		if es.raw == nil {
			encs := make([][]byte, len(es.states))
			for i, st := range es.states {
				encs[i] = st.enc
			}
			d.States = slices.Concat([]byte("["), bytes.Join(encs, []byte(",")), []byte("]"))
		}
		out = append(out, d)
	}
	slices.SortFunc(out, func(a, b envStatesDoc) int { return strings.Compare(a.Environment, b.Environment) })
	return out
}

// checkEnvs reports an error wrapping ErrBadCheckpoint unless every environment is named once
// and validly, with a positive interval. Its states are checked when first used (see load).
func checkEnvs(docs []envStatesDoc) error {
	seen := make(map[string]bool, len(docs))
	for _, d := range docs {
		if events.ValidateEnvironment(d.Environment) != nil || seen[d.Environment] {
			return fmt.Errorf("%w: saved states of environment %q twice or invalid", ErrBadCheckpoint, truncate(d.Environment))
		}
		seen[d.Environment] = true
		if d.Every <= 0 || d.Pending < 0 {
			return fmt.Errorf("%w: saved states of %s every %d, %d pending", ErrBadCheckpoint, d.Environment, d.Every, d.Pending)
		}
	}
	return nil
}

// checkStates reports an error unless the states of env are ascending in sequence and latest
// time, none after at nor later than latest, and hold valid flags of env.
func checkStates(env string, docs []envStateDoc, at uint64, latest time.Time) error {
	var prev envStateDoc
	for i, st := range docs {
		if st.Sequence == 0 || st.Sequence > at || i > 0 && (st.Sequence <= prev.Sequence || st.Latest.Before(prev.Latest)) || st.Latest.After(latest) {
			return fmt.Errorf("%w: saved state of %s at sequence %d out of order", ErrBadCheckpoint, env, st.Sequence)
		}
		keys := make(map[string]bool, len(st.Flags))
		for _, f := range st.Flags {
			if f.Environment != env {
				return fmt.Errorf("%w: saved state of %s holds a flag of %q", ErrBadCheckpoint, env, truncate(f.Environment))
			}
			if err := checkEntry("flag", f.Environment, f.Key, f.Version, f.Seq, st.Sequence, keys); err != nil {
				return err
			}
		}
		prev = st
	}
	return nil
}

// restoreEnvs turns checked documents of a checkpoint at sequence at back into states, left
// encoded until first used.
func restoreEnvs(docs []envStatesDoc, at uint64) map[string]*envStates {
	m := make(map[string]*envStates, len(docs))
	for _, d := range docs {
		es := &envStates{latest: d.Latest, pending: d.Pending, every: d.Every, changed: make(map[string]bool, len(d.Changed)),
			raw: d.States, rawAt: at}
		if len(es.raw) == 0 || string(es.raw) == "null" {
			es.raw = nil
		}
		for _, k := range d.Changed {
			es.changed[k] = true
		}
		m[d.Environment] = es
	}
	return m
}
