package projections

// SetDense sets when the messages of an indexed query are read with one filtered read rather
// than fetched one by one: at least least of them, one in ratio or more of the stretch of the
// stream they span (ratio 0: never). It returns what restores the defaults.
func SetDense(ratio, least uint64) (restore func()) {
	oldRatio, oldLeast := denseRatio, minDense
	denseRatio, minDense = ratio, least
	return func() { denseRatio, minDense = oldRatio, oldLeast }
}
