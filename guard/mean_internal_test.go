package guard

import (
	"math"
	"math/rand/v2"
	"testing"
)

// The variance of one observation, estimated from successive per-tick means, is the
// distribution's when the mean is stable; a step of 25 standard errors halfway adds one term of
// 400 (under 2×), where the spread around the overall mean counts the whole step as noise.
func TestMeanAccVarianceIgnoresSteps(t *testing.T) {
	const sd = 0.02
	for _, step := range []float64{0, 0.05} {
		rng := rand.New(rand.NewPCG(11, 3))
		var a meanAcc
		var spread [3]float64 // n, Σx, Σx² over the per-tick means, weighted by n
		for k := range 400 {
			mu := 0.05
			if k >= 200 {
				mu += step
			}
			n := 50 + rng.IntN(100)
			s := 0.0
			for range n {
				s += mu + sd*rng.NormFloat64()
			}
			a.add(float64(n), s)
			a.add(0, 0) // a tick without observations changes nothing
			m := s / float64(n)
			spread[0] += float64(n)
			spread[1] += s
			spread[2] += float64(n) * m * m
		}
		_, v := a.mean()
		naive := (spread[2] - spread[1]*spread[1]/spread[0]) / (a.k - 1)
		t.Logf("step %v: successive-difference variance %.3g, spread around the mean %.3g, true %.3g", step, v, naive, sd*sd)
		if step == 0 && math.Abs(v/(sd*sd)-1) > 0.2 {
			t.Errorf("stable: variance %.3g, want within 20%% of %.3g", v, sd*sd)
		}
		if step > 0 && (v < sd*sd*0.8 || v > 2*sd*sd) {
			t.Errorf("step %v: variance %.3g, want between 0.8 and 2 times %.3g", step, v, sd*sd)
		}
		if step > 0 && naive < 10*sd*sd {
			t.Errorf("step %v: the spread around the mean (%.3g) should have been fooled: the test shows nothing", step, naive)
		}
	}
}
