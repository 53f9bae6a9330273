package guard_test

import (
	"errors"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/interlock-dev/interlock/guard"
)

// statTick is one tick's exposures and errors of both arms.
type statTick struct{ nT, nC, xT, xC float64 }

func closeTo(got, want, tol float64) bool {
	if math.IsInf(want, 0) || math.IsNaN(want) {
		return got == want || (math.IsNaN(got) && math.IsNaN(want))
	}
	return math.Abs(got-want) <= tol*math.Max(1, math.Abs(want))
}

// The expected values were computed independently, with mpmath at 50 digits from the textbook
// form of the formulas in docs/guard.md, "R1: the error-rate ratio" (π_k(r) and the binomial
// likelihood, no log1p rewriting).
func TestRatioTestKnownValues(t *testing.T) {
	three := []statTick{{100, 900, 5, 10}, {30, 270, 0, 4}, {50, 150, 7, 3}}
	tests := []struct {
		name    string
		reverse bool
		null    float64
		ticks   []statTick
		logE    float64
		logLik  []float64
	}{
		{name: "one tick r0=1", null: 1, ticks: three[:1], logE: 2.2312184239934624484,
			logLik: []float64{0.74532856771547626362, 1.2954730779993418639, 2.0360832057348536464,
				2.7582380914312290638, 3.0001060128523079154, 1.8851171723843067802}},
		{name: "three ticks, varying share, r0=1", null: 1, ticks: three, logE: 4.9157651515689492145},
		{name: "three ticks r0=1.2", null: 1.2, ticks: three, logE: 3.6976674537597668535},
		{name: "reverse r_max=1.5", reverse: true, null: 1.5,
			ticks: []statTick{{1000, 9000, 10, 95}, {1000, 9000, 8, 101}}, logE: 2.4089818249902039056},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var rt guard.RatioTest
			var err error
			if tc.reverse {
				rt, err = guard.NewReverseRatioTest(tc.null)
			} else {
				rt, err = guard.NewRatioTest(tc.null)
			}
			if err != nil {
				t.Fatal(err)
			}
			for _, k := range tc.ticks {
				rt.Observe(k.nT, k.nC, k.xT, k.xC)
			}
			if !closeTo(rt.LogE(), tc.logE, 1e-12) {
				t.Errorf("ln E = %.17g, want %.17g", rt.LogE(), tc.logE)
			}
			if !closeTo(rt.E(), math.Exp(tc.logE), 1e-11) {
				t.Errorf("E = %.17g, want %.17g", rt.E(), math.Exp(tc.logE))
			}
			ll := rt.LogLik()
			for j, want := range tc.logLik {
				if !closeTo(ll[j], want, 1e-12) {
					t.Errorf("ℓ(r_%d) = %.17g, want %.17g", j, ll[j], want)
				}
			}
		})
	}
}

func TestRatioTestGrid(t *testing.T) {
	tests := []struct {
		name    string
		reverse bool
		null    float64
		want    [guard.GridSize]float64
	}{
		{"r0=1", false, 1, [guard.GridSize]float64{1.25, 1.5, 2, 3, 5, 10}},
		{"r0=1.2 scales the grid", false, 1.2, [guard.GridSize]float64{1.5, 1.8, 2.4, 3.6, 6, 12}},
		{"r0<1 keeps the grid at max(1,r0)", false, 0.8, [guard.GridSize]float64{1.25, 1.5, 2, 3, 5, 10}},
		{"reverse r_max=1.5", true, 1.5, [guard.GridSize]float64{1.2, 1, 0.75, 0.5, 0.3, 0.15}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			rt, err := guard.NewRatioTest(tc.null)
			if tc.reverse {
				rt, err = guard.NewReverseRatioTest(tc.null)
			}
			if err != nil {
				t.Fatal(err)
			}
			g := rt.Grid()
			for j := range g {
				if !closeTo(g[j], tc.want[j], 1e-15) {
					t.Errorf("grid = %v, want %v", g, tc.want)
					break
				}
			}
			if rt.Reverse() != tc.reverse || rt.Null() != tc.null {
				t.Errorf("reverse, null = %v, %v", rt.Reverse(), rt.Null())
			}
		})
	}
}

func TestRatioTestRejectsBadNull(t *testing.T) {
	for _, v := range []float64{0, -1, math.NaN(), math.Inf(1)} {
		if _, err := guard.NewRatioTest(v); !errors.Is(err, guard.ErrMachineConfig) {
			t.Errorf("NewRatioTest(%v) error = %v, want ErrMachineConfig", v, err)
		}
		if _, err := guard.NewReverseRatioTest(v); !errors.Is(err, guard.ErrMachineConfig) {
			t.Errorf("NewReverseRatioTest(%v) error = %v, want ErrMachineConfig", v, err)
		}
	}
}

func TestRatioTestUninformativeTicks(t *testing.T) {
	rt, _ := guard.NewRatioTest(1)
	for _, k := range []statTick{
		{100, 900, 0, 0},             // no errors
		{0, 900, 0, 5},               // no treatment exposure
		{100, 0, 3, 0},               // no control exposure
		{0, 0, 0, 0},                 // nothing
		{math.Inf(1), 900, 1, 1},     // not finite
		{100, 900, math.Inf(1), 0.5}, // not finite
	} {
		if rt.Observe(k.nT, k.nC, k.xT, k.xC) {
			t.Errorf("Observe(%v) used the tick", k)
		}
	}
	if rt.LogE() != 0 || rt.P() != 1 || rt.Ticks() != 0 || !math.IsNaN(rt.RatioMLE()) || rt.GridArgmax() != 1 {
		t.Errorf("after no informative tick: ln E %v, p %v, ticks %d, r̂ %v, grid r̂ %v",
			rt.LogE(), rt.P(), rt.Ticks(), rt.RatioMLE(), rt.GridArgmax())
	}
}

// Splitting a tick's errors into several ticks with the same exposures' share leaves every
// ℓ(r_j), hence E, unchanged: ℓ is linear in the counts when π0 is constant.
func TestRatioTestBatchingInvariance(t *testing.T) {
	for seed := range uint64(200) {
		rng := rand.New(rand.NewPCG(seed, 1))
		share := []float64{0.01, 0.05, 0.25, 0.5, 0.95}[rng.IntN(5)]
		n := float64(1 + rng.IntN(100000))
		xT, xC := float64(rng.IntN(60)), float64(rng.IntN(400))
		for _, reverse := range []bool{false, true} {
			whole, _ := guard.NewRatioTest(1.1)
			if reverse {
				whole, _ = guard.NewReverseRatioTest(1.5)
			}
			split := whole
			whole.Observe(share*n, (1-share)*n, xT, xC)
			parts := 1 + rng.IntN(20)
			remT, remC := xT, xC
			for p := range parts {
				pt, pc := remT, remC
				if p < parts-1 {
					pt, pc = float64(rng.IntN(int(remT)+1)), float64(rng.IntN(int(remC)+1))
				}
				remT, remC = remT-pt, remC-pc
				// Exposures split in proportion, so every part has the same π0.
				frac := 1 / float64(parts)
				split.Observe(share*n*frac, (1-share)*n*frac, pt, pc)
			}
			a, b := whole.LogLik(), split.LogLik()
			for j := range a {
				if !closeTo(b[j], a[j], 1e-12) {
					t.Fatalf("seed %d reverse %v: ℓ(r_%d) whole %.17g, split into %d %.17g", seed, reverse, j, a[j], parts, b[j])
				}
			}
			if !closeTo(split.LogE(), whole.LogE(), 1e-12) {
				t.Fatalf("seed %d: ln E whole %.17g, split %.17g", seed, whole.LogE(), split.LogE())
			}
		}
	}
}

// More treatment errors never lower R1's e-value; more control errors never raise it; and the
// reverse for R5.
func TestRatioTestMonotone(t *testing.T) {
	for seed := range uint64(200) {
		rng := rand.New(rand.NewPCG(seed, 2))
		nT, nC := float64(1+rng.IntN(5000)), float64(1+rng.IntN(50000))
		xT, xC := float64(rng.IntN(50)), float64(rng.IntN(300))
		logE := func(reverse bool, xT, xC float64) float64 {
			rt, _ := guard.NewRatioTest(1)
			if reverse {
				rt, _ = guard.NewReverseRatioTest(1.5)
			}
			rt.Observe(nT, nC, xT, xC)
			return rt.LogE()
		}
		for _, reverse := range []bool{false, true} {
			base := logE(reverse, xT, xC)
			moreT := logE(reverse, xT+1, xC)
			moreC := logE(reverse, xT, xC+1)
			if !reverse && (moreT < base || moreC > base) {
				t.Fatalf("R1 seed %d: ln E %v, +1 treatment error %v, +1 control error %v", seed, base, moreT, moreC)
			}
			if reverse && (moreT > base || moreC < base) {
				t.Fatalf("R5 seed %d: ln E %v, +1 treatment error %v, +1 control error %v", seed, base, moreT, moreC)
			}
		}
	}
}

func TestRatioTestEstimatesAndP(t *testing.T) {
	rt, _ := guard.NewRatioTest(1)
	rt.Observe(1000, 9000, 20, 90) // rates 2% vs 1%
	rt.Observe(1000, 9000, 20, 90)
	if got := rt.RatioMLE(); !closeTo(got, 2, 1e-15) {
		t.Errorf("r̂ = %v, want 2", got)
	}
	if got := rt.GridArgmax(); got != 2 {
		t.Errorf("grid r̂ = %v, want 2", got)
	}
	// The always-valid p is 1/max E over time: a later tick that lowers E does not raise p.
	p := rt.P()
	if !closeTo(p, math.Exp(-rt.LogE()), 1e-15) {
		t.Errorf("p = %v, want 1/E = %v", p, math.Exp(-rt.LogE()))
	}
	rt.Observe(1000, 9000, 0, 200)
	if rt.P() != p || rt.MaxLogE() <= rt.LogE() {
		t.Errorf("after a good tick: p %v (was %v), max ln E %v, ln E %v", rt.P(), p, rt.MaxLogE(), rt.LogE())
	}
}

// Log-space accumulation: a hundred thousand strongly informative ticks neither overflow nor produce NaN.
func TestRatioTestNoOverflow(t *testing.T) {
	rt, _ := guard.NewRatioTest(1)
	for range 100_000 {
		rt.Observe(1e6, 1e6, 1e6, 1)
	}
	if math.IsNaN(rt.LogE()) || math.IsInf(rt.LogE(), 0) || rt.LogE() < 1e9 {
		t.Fatalf("ln E = %v", rt.LogE())
	}
	if !math.IsInf(rt.E(), 1) || rt.P() != 0 || !rt.Exceeds(1e-300) {
		t.Errorf("E %v, p %v", rt.E(), rt.P())
	}
	rev, _ := guard.NewReverseRatioTest(1.5)
	for range 1000 {
		rev.Observe(1e6, 1e6, 1e6, 1)
	}
	if math.IsNaN(rev.LogE()) || !math.IsInf(rev.LogE(), 0) && rev.LogE() > -1e6 {
		t.Errorf("reverse ln E = %v, want a large negative number", rev.LogE())
	}
}

func TestLogMSPRT(t *testing.T) {
	tests := []struct {
		name           string
		theta, v, tau  float64
		want           float64
		wantNaN        bool
		wantLambdaForm bool
	}{
		{name: "treatment worse", theta: 0.01, v: 1e-5, tau: 0.01, want: 4.0383688482828758166, wantLambdaForm: true},
		{name: "treatment better", theta: -0.01, v: 1e-6, tau: 0.01, want: -4.8408183794983633635},
		{name: "no difference", theta: 0, v: 1e-5, tau: 0.01, want: -1.198947636399185272, wantLambdaForm: true},
		{name: "zero variance", theta: 0.1, v: 0, tau: 0.01, wantNaN: true},
		{name: "zero tau", theta: 0.1, v: 1e-5, tau: 0, wantNaN: true},
		{name: "NaN theta", theta: math.NaN(), v: 1e-5, tau: 0.01, wantNaN: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := guard.LogMSPRT(tc.theta, tc.v, tc.tau)
			if tc.wantNaN {
				if !math.IsNaN(got) {
					t.Fatalf("got %v, want NaN", got)
				}
				return
			}
			if !closeTo(got, tc.want, 1e-12) {
				t.Errorf("ln Λ = %.17g, want %.17g", got, tc.want)
			}
			if tc.wantLambdaForm {
				// The formula of docs/guard.md, "R2: the mixture SPRT on a difference", evaluated
				// directly, where it does not under- or overflow.
				v, t2 := tc.v, tc.tau*tc.tau
				z := tc.theta * tc.tau / math.Sqrt(v*(v+t2))
				lambda := 2 * math.Sqrt(v/(v+t2)) * math.Exp(tc.theta*tc.theta*t2/(2*v*(v+t2))) * 0.5 * math.Erfc(-z/math.Sqrt2)
				if !closeTo(math.Exp(got), lambda, 1e-12) {
					t.Errorf("Λ = %.17g, direct formula %.17g", math.Exp(got), lambda)
				}
			}
		})
	}
}

func TestProportionDiff(t *testing.T) {
	theta, v := guard.ProportionDiff(30, 1000, 20, 2000)
	if !closeTo(theta, 0.02, 1e-15) || !closeTo(v, 0.03*0.97/1000+0.01*0.99/2000, 1e-15) {
		t.Errorf("θ̂, V = %v, %v", theta, v)
	}
	theta, v = guard.ProportionDiff(5, 0, 1, 10)
	if !math.IsNaN(theta) || !math.IsNaN(v) {
		t.Errorf("no trials: θ̂, V = %v, %v, want NaN", theta, v)
	}
	// More events than trials (counters read at slightly different times) clamps to 1.
	if theta, _ = guard.ProportionDiff(12, 10, 0, 10); theta != 1 {
		t.Errorf("clamped θ̂ = %v, want 1", theta)
	}
}

func TestNormalLogCDF(t *testing.T) {
	tests := []struct{ z, want float64 }{
		{3, -0.0013508099647481937988},
		{0, -0.69314718055994530942},
		{-10, -53.231285150512470578},
		{-20, -203.91715537109726394},
		{-40, -804.60844201375378817},
		{-100, -5005.5242086942050886},
	}
	for _, tc := range tests {
		if got := guard.NormalLogCDF(tc.z); !closeTo(got, tc.want, 1e-12) {
			t.Errorf("ln Φ(%v) = %.17g, want %.17g", tc.z, got, tc.want)
		}
	}
	// The two branches meet at z = −37.
	a, b := guard.NormalLogCDF(-36.999999), guard.NormalLogCDF(-37.000001)
	if !(a > b) || a-b > 1e-4 {
		t.Errorf("ln Φ around −37: %v, %v", a, b)
	}
	if !math.IsInf(guard.NormalLogCDF(math.Inf(-1)), -1) || guard.NormalLogCDF(math.Inf(1)) != 0 || !math.IsNaN(guard.NormalLogCDF(math.NaN())) {
		t.Error("ln Φ at ±Inf or NaN")
	}
}

func TestNormalQuantile(t *testing.T) {
	if got := guard.NormalQuantile(0.999); !closeTo(got, 3.0902323061678135415, 1e-12) {
		t.Errorf("z(0.999) = %.17g", got)
	}
	if got := guard.NormalQuantile(0.975); !closeTo(got, 1.959963984540054, 1e-12) {
		t.Errorf("z(0.975) = %.17g", got)
	}
	for _, p := range []float64{0, 1, -1, math.NaN()} {
		if !math.IsNaN(guard.NormalQuantile(p)) {
			t.Errorf("z(%v) not NaN", p)
		}
	}
}

func TestWilsonLower(t *testing.T) {
	tests := []struct {
		name    string
		x, n, z float64
		want    float64
	}{
		// 10/100 at 95% two-sided: the textbook interval is [0.0552, 0.1744].
		{"10 of 100 at z=1.96", 10, 100, 1.959963984540054, 0.05522913706067508901},
		{"30 of 250 one-sided 99.9%", 30, 250, 3.0902323061678135415, 0.070100197853802705007},
		{"no errors", 0, 1000, 3.09, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := guard.WilsonLower(tc.x, tc.n, tc.z); !closeTo(got, tc.want, 1e-12) {
				t.Errorf("got %.17g, want %.17g", got, tc.want)
			}
		})
	}
	if !math.IsNaN(guard.WilsonLower(1, 0, 3)) {
		t.Error("n = 0: want NaN")
	}
	if got := guard.WilsonLower(15, 10, 3); !(got > 0 && got < 1) {
		t.Errorf("x > n: got %v, want the bound of p̂ = 1", got)
	}
	// Monotone in the errors at fixed requests.
	prev := -1.0
	for x := 0.0; x <= 200; x++ {
		got := guard.WilsonLower(x, 200, 3.09)
		if got < prev {
			t.Fatalf("WilsonLower(%v, 200) = %v < WilsonLower(%v, 200) = %v", x, got, x-1, prev)
		}
		prev = got
	}
}

func TestChiSquare1Survival(t *testing.T) {
	tests := []struct{ x, want float64 }{
		{3.841458820694124, 0.050000000000000058397},
		{6.634896601021214, 0.010000000000000006391},
		{10.827566170662733, 0.00099999999999999961822},
		{0, 1},
		{-1, 1},
	}
	for _, tc := range tests {
		if got := guard.ChiSquare1Survival(tc.x); !closeTo(got, tc.want, 1e-12) {
			t.Errorf("P(χ² ≥ %v) = %.17g, want %.17g", tc.x, got, tc.want)
		}
	}
	if !math.IsNaN(guard.ChiSquare1Survival(math.NaN())) {
		t.Error("NaN: want NaN")
	}
}

func TestSRM(t *testing.T) {
	chi2, p := guard.SRM(1100, 8900, 0.1)
	if !closeTo(chi2, 11.111111111111111111, 1e-13) || !closeTo(p, 0.00085812066639367496613, 1e-11) {
		t.Errorf("χ², p = %.17g, %.17g", chi2, p)
	}
	if chi2, p = guard.SRM(1000, 9000, 0.1); chi2 != 0 || p != 1 {
		t.Errorf("exact split: χ², p = %v, %v", chi2, p)
	}
	for _, bad := range []struct{ nT, nC, share float64 }{{0, 0, 0.5}, {10, 10, 0}, {10, 10, 1}} {
		if chi2, p := guard.SRM(bad.nT, bad.nC, bad.share); !math.IsNaN(chi2) || !math.IsNaN(p) {
			t.Errorf("SRM(%v) = %v, %v, want NaN", bad, chi2, p)
		}
	}
}

func BenchmarkRatioTestObserve(b *testing.B) {
	rt, _ := guard.NewRatioTest(1)
	b.ReportAllocs()
	for b.Loop() {
		rt.Observe(75, 1425, 1, 7)
	}
}

// Late starts: with weight 0 the e-process is the plain mixture; the weights are checked; the
// first start's part is the plain mixture times 1 − late, and a start at tick s adds its own
// product of likelihood ratios weighted late/((s−1)s), computed here by brute force.
func TestRatioTestLateStarts(t *testing.T) {
	plain, _ := guard.NewRatioTest(1)
	zero, err := plain.WithLateStarts(0)
	if err != nil {
		t.Fatal(err)
	}
	late, err := plain.WithLateStarts(0.05)
	if err != nil {
		t.Fatal(err)
	}
	for _, bad := range []float64{-0.1, 1, 2, math.NaN()} {
		if _, err := plain.WithLateStarts(bad); !errors.Is(err, guard.ErrMachineConfig) {
			t.Errorf("late starts %v: %v, want ErrMachineConfig", bad, err)
		}
	}
	rng := rand.New(rand.NewPCG(3, 3))
	var ticks []statTick
	for range 40 {
		tk := statTick{nT: 100, nC: 900, xT: float64(rng.IntN(4)), xC: float64(rng.IntN(20))}
		ticks = append(ticks, tk)
		plain.Observe(tk.nT, tk.nC, tk.xT, tk.xC)
		zero.Observe(tk.nT, tk.nC, tk.xT, tk.xC)
		late.Observe(tk.nT, tk.nC, tk.xT, tk.xC)
	}
	if zero.LogE() != plain.LogE() || zero.LogS() != plain.LogLik() {
		t.Errorf("weight 0: ln E %v, want the plain mixture's %v", zero.LogE(), plain.LogE())
	}
	if _, err := late.WithLateStarts(0.1); !errors.Is(err, guard.ErrMachineConfig) {
		t.Errorf("late starts after a tick: %v, want ErrMachineConfig", err)
	}
	// Brute force: Σ_s π_s Π_{k≥s} LR_k for each alternative, over the informative ticks.
	grid := plain.Grid()
	var want float64
	for _, r := range grid {
		lr := func(tk statTick) float64 {
			pi0 := tk.nT / (tk.nT + tk.nC)
			p := r * pi0 / (r*pi0 + 1 - pi0)
			return math.Pow(p/pi0, tk.xT) * math.Pow((1-p)/(1-pi0), tk.xC)
		}
		var informative []statTick
		for _, tk := range ticks {
			if tk.xT+tk.xC > 0 {
				informative = append(informative, tk)
			}
		}
		for s := 1; s <= len(informative); s++ {
			w := 1 - 0.05
			if s > 1 {
				w = 0.05 / float64((s-1)*s)
			}
			prod := 1.0
			for _, tk := range informative[s-1:] {
				prod *= lr(tk)
			}
			want += w * prod / guard.GridSize
		}
	}
	if !closeTo(late.LogE(), math.Log(want), 1e-9) {
		t.Errorf("ln E with late starts %v, brute force %v", late.LogE(), math.Log(want))
	}
	if late.LogE() < plain.LogE()+math.Log1p(-0.05)-1e-12 {
		t.Errorf("ln E with late starts %v below the first start's part %v", late.LogE(), plain.LogE()+math.Log1p(-0.05))
	}
}

// The point of late starts: after a long healthy run, the plain mixture needs many ticks to trip
// a 2× regression, the late starts few. Counts are fixed (400 treatment and 3,600 control
// requests a tick, 1% errors, then 2% on the treatment), so the numbers of ticks are exact.
func TestRatioTestLateStartsAfterHealthyHistory(t *testing.T) {
	ticksToTrip := func(late float64, healthy int) int {
		r, _ := guard.NewRatioTest(1)
		r, _ = r.WithLateStarts(late)
		for range healthy {
			r.Observe(400, 3600, 4, 36)
		}
		n := 0
		for ; !r.Exceeds(0.01) && n < 10_000; n++ {
			r.Observe(400, 3600, 8, 36)
		}
		return n
	}
	fresh, freshLate := ticksToTrip(0, 0), ticksToTrip(guard.LateStartWeight, 0)
	plainDay, lateDay := ticksToTrip(0, 960), ticksToTrip(guard.LateStartWeight, 960)
	t.Logf("ticks to trip 2×: fresh %d (late starts %d); after 4 h healthy %d (late starts %d)", fresh, freshLate, plainDay, lateDay)
	if freshLate > fresh+1 {
		t.Errorf("late starts slow a fresh regression: %d ticks against %d", freshLate, fresh)
	}
	if lateDay > 3*fresh+10 || plainDay < 5*lateDay {
		t.Errorf("after 4 h healthy: %d ticks with late starts, %d without", lateDay, plainDay)
	}
}

// Late starts keep R1's guarantee: over long healthy runs (the null at its boundary, r = 1) the
// share of runs whose e-value ever reaches 1/α stays within α plus three standard errors.
func TestRatioTestLateStartsFalseTrips(t *testing.T) {
	const runs, ticks, alpha = 1000, 2000, 0.05
	trips := 0
	for seed := range uint64(runs) {
		rng := rand.New(rand.NewPCG(seed, 99))
		r, _ := guard.NewRatioTest(1)
		r, _ = r.WithLateStarts(guard.LateStartWeight)
		for range ticks {
			// 10% treatment share, 20 errors a tick on average, each the treatment's with
			// probability 0.1: exactly the null.
			m := 10 + rng.IntN(21)
			xT := 0
			for range m {
				if rng.Float64() < 0.1 {
					xT++
				}
			}
			r.Observe(100, 900, float64(xT), float64(m-xT))
			if r.Exceeds(alpha) {
				trips++
				break
			}
		}
	}
	bound := alpha + 3*math.Sqrt(alpha*(1-alpha)/runs)
	t.Logf("late starts, %d null runs of %d ticks: %d reached 1/α (%.2f%%, bound %.2f%%)", runs, ticks, trips, 100*float64(trips)/runs, 100*bound)
	if float64(trips)/runs > bound {
		t.Errorf("false-trip rate %d/%d above %.4f", trips, runs, bound)
	}
}
