package projections

import "time"

// SetDense sets when the messages of an indexed query are read with one filtered read rather
// than fetched one by one: at least least of them, one in ratio or more of the stretch of the
// stream they span (ratio 0: never). It returns what restores the defaults.
func SetDense(ratio, least uint64) (restore func()) {
	oldRatio, oldLeast := denseRatio, minDense
	denseRatio, minDense = ratio, least
	return func() { denseRatio, minDense = oldRatio, oldLeast }
}

// SetStates sets how often an index saves an environment's state (every that many of its
// messages) and how many it keeps. It returns what restores the defaults.
func SetStates(every, keep int) (restore func()) {
	oldEvery, oldKeep := stateEvery, maxStates
	stateEvery, maxStates = every, keep
	return func() { stateEvery, maxStates = oldEvery, oldKeep }
}

// StatePoints returns, for every state ix saved for env, the points on either side of it: its
// sequence and the one before, its latest event time and the instant before.
func StatePoints(ix *Index, env string) []Point {
	ix.mu.Lock()
	defer ix.mu.Unlock()
	var out []Point
	if es := ix.envs[env]; es != nil {
		es.load(env)
		for _, st := range es.states {
			out = append(out, Point{Sequence: st.Sequence}, Point{Sequence: st.Sequence - 1}, Point{Sequence: st.Sequence + 1},
				Point{Time: st.Latest}, Point{Time: st.Latest.Add(-time.Nanosecond)})
		}
	}
	return out
}
