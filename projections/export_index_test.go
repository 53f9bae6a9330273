package projections

// SetDenseRatio sets how dense the messages of an indexed query must be to be read with one
// filtered read rather than fetched one by one (0: never), and returns what restores it.
func SetDenseRatio(r uint64) (restore func()) {
	old := denseRatio
	denseRatio = r
	return func() { denseRatio = old }
}
