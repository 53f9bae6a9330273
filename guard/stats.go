package guard

import (
	"fmt"
	"math"
	"time"
)

// GridSize is the number of alternatives in the mixture of an R1 or R5 e-process.
const GridSize = 6

// gridMultipliers are the alternatives of R1 as multiples of max(1, r0) (docs/guard.md, "R1: the
// error-rate ratio"). R5 uses their reciprocals as fractions of r_max.
func gridMultipliers() [GridSize]float64 {
	return [GridSize]float64{1.25, 1.5, 2, 3, 5, 10}
}

// LateStartWeight is the weight R1 gives the starts after the first when its machine has late
// starts ([RatioTest.WithLateStarts], [MachineConfig.NoLateStarts]): 5%, which costs a fresh
// regression ln(1/0.95) ≈ 0.05 of the ln(1/α) it must reach.
const LateStartWeight = 0.05

// logGridSize is ln(GridSize): the mixture's weights are equal, 1/GridSize each.
const logGridSize = 1.791759469228055

// RatioTest is the e-process of R1 (and, reversed, of R5) for one (flag, variant, segment, metric):
// a mixture of likelihood ratios for the ratio r = λT/λC of the treatment's and the control's error
// rates, each tick's treatment errors being Binomial(m_k, π_k(r)) given the tick's m_k errors, with
// π_k(r) = r·π0_k / (r·π0_k + 1 − π0_k) and π0_k the treatment's share of the tick's exposures.
//
// Forward (R1) it tests H0: r ≤ r0 against the grid {1.25, 1.5, 2, 3, 5, 10}·max(1, r0). Reversed
// (R5) it tests H0': r ≥ r_max against the grid r_max/{1.25, 1.5, 2, 3, 5, 10}. The mixture has equal
// weights; it may also mix over the tick at which the alternative begins ([RatioTest.WithLateStarts]). Everything is kept in log space (per-alternative log-likelihood ratios, combined by
// log-sum-exp), so no count of ticks or errors overflows it.
//
// The zero value is not usable; build one with [NewRatioTest] or [NewReverseRatioTest]. A RatioTest
// is a value: copying it copies the whole e-process.
type RatioTest struct {
	reverse  bool
	null     float64
	grid     [GridSize]float64
	logRatio [GridSize]float64 // ln(grid_j / null)
	gridM1   [GridSize]float64 // grid_j − 1
	logLik   [GridSize]float64 // ℓ_K(r_j)
	// late is the weight ε of the starts after the first (see [RatioTest.WithLateStarts]); logS
	// the log of each alternative's mixture over start times.
	late    float64
	logS    [GridSize]float64
	logE    float64
	maxLogE float64
	ticks   int
	// Sums of the ticks that carried information, for the pooled estimate of r.
	reqT, reqC, errT, errC float64
}

// NewRatioTest returns the R1 e-process for H0: r ≤ r0. It returns an error wrapping
// [ErrMachineConfig] if r0 is not a finite number greater than zero.
func NewRatioTest(r0 float64) (RatioTest, error) {
	if !(r0 > 0) || math.IsInf(r0, 0) {
		return RatioTest{}, fmt.Errorf("r0 %v: must be a finite number > 0: %w", r0, ErrMachineConfig)
	}
	t := RatioTest{null: r0}
	base := math.Max(1, r0)
	for j, k := range gridMultipliers() {
		t.grid[j] = k * base
	}
	t.init()
	return t, nil
}

// NewReverseRatioTest returns the R5 e-process for H0': r ≥ rMax, whose evidence means "the
// treatment is not much worse than the control". It returns an error wrapping [ErrMachineConfig]
// if rMax is not a finite number greater than zero.
func NewReverseRatioTest(rMax float64) (RatioTest, error) {
	if !(rMax > 0) || math.IsInf(rMax, 0) {
		return RatioTest{}, fmt.Errorf("r_max %v: must be a finite number > 0: %w", rMax, ErrMachineConfig)
	}
	t := RatioTest{null: rMax, reverse: true}
	for j, k := range gridMultipliers() {
		t.grid[j] = rMax / k
	}
	t.init()
	return t, nil
}

func (t *RatioTest) init() {
	for j, g := range t.grid {
		t.logRatio[j] = math.Log(g / t.null)
		t.gridM1[j] = g - 1
		t.logS[j] = math.Inf(-1)
	}
}

// WithLateStarts returns t, before any tick, as a mixture over the time the alternative begins:
// the e-process that starts at the first informative tick with weight 1 − late, and one starting
// at every later informative tick s with weight late/((s−1)·s), weights summing to one:
//
//	S_K(r_j) = Σ_{s ≤ K} π_s · Π_{k=s..K} LR_k(r_j),   E_K = Σ_j S_K(r_j)/GridSize
//
// With the mass π_s of the starts still to come, it is a non-negative supermartingale under H0
// that begins at 1, so Ville's inequality bounds the chance that E_K ever reaches 1/α by α, as for
// the plain mixture. A regression that begins after a long healthy run no longer has to climb out
// of the deficit the healthy ticks dug: the start nearest it pays only ln(1/π_s), about 2·ln s.
// A fresh regression pays ln(1/(1 − late)). late = 0 is the plain mixture. It returns an error
// wrapping [ErrMachineConfig] if late is not in [0, 1) or t has observed a tick.
func (t RatioTest) WithLateStarts(late float64) (RatioTest, error) {
	if !(late >= 0 && late < 1) {
		return t, fmt.Errorf("late starts %v: must be in [0, 1): %w", late, ErrMachineConfig)
	}
	if t.ticks > 0 {
		return t, fmt.Errorf("late starts: the e-process has begun: %w", ErrMachineConfig)
	}
	t.late = late
	return t, nil
}

// logStartWeight is ln π_s of the s-th informative tick (s ≥ 1).
func (t *RatioTest) logStartWeight(s int) float64 {
	if s == 1 {
		return math.Log1p(-t.late)
	}
	if t.late == 0 {
		return math.Inf(-1)
	}
	return math.Log(t.late) - math.Log(float64(s-1)) - math.Log(float64(s))
}

// Observe adds one tick: nT and nC exposures (requests) and xT and xC errors of the treatment and
// the control in the tick. The counts must be finite and non-negative. A tick without errors, or
// in which one arm had no exposures, carries no information about r and leaves the e-process as it
// was; Observe reports whether the tick was used.
func (t *RatioTest) Observe(nT, nC, xT, xC float64) bool {
	m := xT + xC
	n := nT + nC
	if !(m > 0) || !(nT > 0) || !(nC > 0) || math.IsInf(n, 0) || math.IsInf(m, 0) {
		return false
	}
	pi0 := nT / n
	// ln π(r_j)/π(null) = ln(r_j/null) − ln(D_j/D_null) and ln (1−π(r_j))/(1−π(null)) =
	// −ln(D_j/D_null), with D(r) = 1 + (r−1)·π0; so the tick adds xT·ln(r_j/null) − m·ln(D_j/D_null).
	logDNull := math.Log1p((t.null - 1) * pi0)
	logPi := t.logStartWeight(t.ticks + 1)
	for j := range t.logLik {
		lr := xT*t.logRatio[j] - m*(math.Log1p(t.gridM1[j]*pi0)-logDNull)
		t.logLik[j] += lr
		t.logS[j] = lr + logAddExp(t.logS[j], logPi)
	}
	t.logE = logSumExp(&t.logS) - logGridSize
	if t.ticks == 0 || t.logE > t.maxLogE {
		t.maxLogE = t.logE
	}
	t.ticks++
	t.reqT += nT
	t.reqC += nC
	t.errT += xT
	t.errC += xC
	return true
}

// Reverse reports whether this is the R5 (H0': r ≥ r_max) e-process.
func (t *RatioTest) Reverse() bool { return t.reverse }

// Null is the boundary of the null hypothesis: r0 for R1, r_max for R5.
func (t *RatioTest) Null() float64 { return t.null }

// Grid returns the alternatives r_j of the mixture.
func (t *RatioTest) Grid() [GridSize]float64 { return t.grid }

// LogLik returns ℓ_K(r_j), the log-likelihood ratio of each alternative against the null so far.
func (t *RatioTest) LogLik() [GridSize]float64 { return t.logLik }

// LogE returns ln E_K, the log of the mixture e-value after the ticks observed so far (0 before
// any informative tick).
func (t *RatioTest) LogE() float64 { return t.logE }

// E returns the mixture e-value E_K = Σ_j exp(ℓ_K(r_j))/GridSize. It is +Inf when it overflows a
// float64; compare [RatioTest.LogE] instead.
func (t *RatioTest) E() float64 { return math.Exp(t.logE) }

// MaxLogE returns the largest ln E_k seen so far (0 before any informative tick).
func (t *RatioTest) MaxLogE() float64 { return t.maxLogE }

// P returns the always-valid p-value, 1/max_k E_k, capped at 1.
func (t *RatioTest) P() float64 {
	if t.maxLogE <= 0 {
		return 1
	}
	return math.Exp(-t.maxLogE)
}

// Ticks returns the number of informative ticks observed.
func (t *RatioTest) Ticks() int { return t.ticks }

// Exceeds reports whether E_K ≥ 1/alpha.
func (t *RatioTest) Exceeds(alpha float64) bool { return t.logE >= -math.Log(alpha) }

// RatioMLE returns the maximum-likelihood estimate of r under constant per-request error rates in
// both arms over the informative ticks: (ΣxT/ΣnT)/(ΣxC/ΣnC). It is +Inf when the control had no
// errors and the treatment had some, and NaN when neither had any.
func (t *RatioTest) RatioMLE() float64 {
	return (t.errT / t.reqT) / (t.errC / t.reqC)
}

// GridArgmax returns the alternative with the largest log-likelihood ratio, or the null itself
// when no alternative beats it (ℓ ≤ 0): the grid's maximum-likelihood estimate of r.
func (t *RatioTest) GridArgmax() float64 {
	best, bestL := t.null, 0.0
	for j, l := range t.logLik {
		if l > bestL {
			best, bestL = t.grid[j], l
		}
	}
	return best
}

// logAddExp returns ln(eᵃ + eᵇ).
func logAddExp(a, b float64) float64 {
	if a < b {
		a, b = b, a
	}
	if math.IsInf(b, -1) {
		return a
	}
	return a + math.Log1p(math.Exp(b-a))
}

// LateStarts returns the weight of the starts after the first: 0 for the plain mixture.
func (t *RatioTest) LateStarts() float64 { return t.late }

// LogS returns ln S_K(r_j), each alternative's mixture over start times (ℓ_K(r_j) + ln(1 − late)
// while no later start has come into play; ℓ_K(r_j) exactly when late = 0).
func (t *RatioTest) LogS() [GridSize]float64 { return t.logS }

func logSumExp(ls *[GridSize]float64) float64 {
	mx := ls[0]
	for _, l := range ls[1:] {
		if l > mx {
			mx = l
		}
	}
	if math.IsInf(mx, 0) {
		return mx
	}
	var s float64
	for _, l := range ls {
		s += math.Exp(l - mx)
	}
	return mx + math.Log(s)
}

// ProportionDiff returns, for xT events in nT trials of the treatment and xC in nC of the control,
// the difference of proportions θ̂ = p̂T − p̂C and its variance V = p̂T(1−p̂T)/nT + p̂C(1−p̂C)/nC,
// with each proportion clamped to [0, 1]. Both are NaN if a trial count is not positive.
func ProportionDiff(xT, nT, xC, nC float64) (theta, v float64) {
	if !(nT > 0) || !(nC > 0) {
		return math.NaN(), math.NaN()
	}
	pT := clamp01(xT / nT)
	pC := clamp01(xC / nC)
	return pT - pC, pT*(1-pT)/nT + pC*(1-pC)/nC
}

func clamp01(p float64) float64 {
	switch {
	case p < 0:
		return 0
	case p > 1:
		return 1
	}
	return p
}

// LogMSPRT returns ln Λ of R2, the one-sided normal mixture SPRT of H0: θ ≤ 0 with a half-normal
// mixing distribution of scale tau:
//
//	Λ = 2·√(V/(V+τ²)) · exp(θ̂²τ²/(2V(V+τ²))) · Φ(θ̂τ/√(V(V+τ²)))
//
// computed in log space. It returns NaN when v or tau is not a finite positive number or theta is
// not finite.
func LogMSPRT(theta, v, tau float64) float64 {
	if !(v > 0) || !(tau > 0) || math.IsInf(v, 0) || math.IsInf(tau, 0) || math.IsNaN(theta) || math.IsInf(theta, 0) {
		return math.NaN()
	}
	t2 := tau * tau
	vt := v + t2
	return math.Ln2 + 0.5*math.Log(v/vt) + theta*theta*t2/(2*v*vt) + NormalLogCDF(theta*tau/math.Sqrt(v*vt))
}

// NormalLogCDF returns ln Φ(z) for the standard normal distribution, accurate far into both tails
// (it does not underflow to −Inf for very negative z).
func NormalLogCDF(z float64) float64 {
	switch {
	case math.IsNaN(z):
		return math.NaN()
	case z > 0:
		return math.Log1p(-0.5 * math.Erfc(z/math.Sqrt2))
	case z > -37:
		return math.Log(0.5 * math.Erfc(-z/math.Sqrt2))
	case math.IsInf(z, -1):
		return math.Inf(-1)
	}
	// Asymptotic expansion of Mills' ratio; at z ≤ −37 the first omitted term is below 1e-13.
	z2 := z * z
	s := 1 - 1/z2 + 3/(z2*z2) - 15/(z2*z2*z2) + 105/(z2*z2*z2*z2)
	return -z2/2 - math.Log(-z) - 0.5*math.Log(2*math.Pi) + math.Log(s)
}

// NormalQuantile returns z such that Φ(z) = p, for 0 < p < 1 (NaN otherwise).
func NormalQuantile(p float64) float64 {
	if !(p > 0 && p < 1) {
		return math.NaN()
	}
	return math.Sqrt2 * math.Erfinv(2*p-1)
}

// WilsonLower returns the lower end of the Wilson score interval for x successes in n trials at
// normal quantile z (one-sided: z = Φ⁻¹(confidence)); the observed proportion is clamped to
// [0, 1]. It returns NaN if n is not positive.
func WilsonLower(x, n, z float64) float64 {
	if !(n > 0) {
		return math.NaN()
	}
	p := clamp01(x / n)
	z2 := z * z
	center := p + z2/(2*n)
	half := z * math.Sqrt(p*(1-p)/n+z2/(4*n*n))
	return math.Max(0, (center-half)/(1+z2/n))
}

// SRM returns Pearson's χ² statistic (1 degree of freedom) of nT treatment and nC control
// exposures against the configured treatment share, and its p-value. It returns NaN for both when
// there are no exposures or share is not strictly between 0 and 1.
func SRM(nT, nC, share float64) (chi2, p float64) {
	n := nT + nC
	if !(n > 0) || !(share > 0 && share < 1) {
		return math.NaN(), math.NaN()
	}
	d := nT - n*share
	chi2 = d * d / (n * share * (1 - share))
	return chi2, ChiSquare1Survival(chi2)
}

// ChiSquare1Survival returns P(X ≥ x) for X χ²-distributed with one degree of freedom:
// erfc(√(x/2)). It is 1 for x ≤ 0 and NaN for NaN.
func ChiSquare1Survival(x float64) float64 {
	switch {
	case math.IsNaN(x):
		return math.NaN()
	case x <= 0:
		return 1
	}
	return math.Erfc(math.Sqrt(x / 2))
}

// windowEntry is one tick's deltas of requests and errors, at the tick's time.
type windowEntry struct {
	at       time.Time
	req, err float64
}

// window keeps per-tick deltas, oldest first, for sums over the last W: R3's floor window of a
// [Machine], and a [Valve]'s short and long windows.
type window struct {
	buf  []windowEntry
	head int
}

// push appends e. With a limit, a window that holds limit entries first merges its two oldest:
// the sums are kept, and the pair leaves the window a little later than its older half would
// have.
func (w *window) push(e windowEntry, limit int) {
	if limit > 0 && len(w.buf)-w.head >= limit {
		w.buf[w.head+1].req += w.buf[w.head].req
		w.buf[w.head+1].err += w.buf[w.head].err
		w.head++
	}
	if w.head > 0 && w.head >= len(w.buf)/2 {
		n := copy(w.buf, w.buf[w.head:])
		w.buf = w.buf[:n]
		w.head = 0
	}
	w.buf = append(w.buf, e)
}

// drop forgets the entries at or before cutoff.
func (w *window) drop(cutoff time.Time) {
	for w.head < len(w.buf) && !w.buf[w.head].at.After(cutoff) {
		w.head++
	}
}

// sums returns the sums of the entries after cutoff.
func (w *window) sums(cutoff time.Time) (req, errs float64) {
	for i := len(w.buf) - 1; i >= w.head && w.buf[i].at.After(cutoff); i-- {
		req += w.buf[i].req
		errs += w.buf[i].err
	}
	return req, errs
}

// copyFrom makes w a copy of src's entries in w's own buffer.
func (w *window) copyFrom(src *window) {
	w.buf = append(w.buf[:0], src.buf[src.head:]...)
	w.head = 0
}

// meanAcc accumulates one arm's observations of a KindMean metric tick by tick: n observations
// with sum s over k ticks that had any. The variance of one observation is estimated from the
// differences of successive per-tick means (von Neumann's mean square successive difference):
// a step or a slow drift in the mean, such as the regression the test looks for, moves only the
// differences around it, where the spread around the overall mean would grow with it and hide
// the regression. q sums the squared differences, each divided by its variance in units of σ²
// (1/nₖ + 1/nₖ₋₁); lastMean and lastN are the previous tick's.
type meanAcc struct {
	n, s, k, q      float64
	lastMean, lastN float64
}

// add takes one tick's delta: n observations summing to s. A tick without observations does
// not count.
func (a *meanAcc) add(n, s float64) {
	if !(n > 0) {
		return
	}
	m := s / n
	if a.k > 0 {
		d := m - a.lastMean
		a.q += d * d / (1/n + 1/a.lastN)
	}
	a.n += n
	a.s += s
	a.k++
	a.lastMean, a.lastN = m, n
}

// mean returns the mean of the observations, and the estimate of one observation's variance,
// q/(k − 1), whose expectation is σ² for independent observations of a stable mean.
func (a *meanAcc) mean() (mean, variance float64) {
	if a.n <= 0 {
		return 0, 0
	}
	mean = a.s / a.n
	if a.k > 1 {
		variance = a.q / (a.k - 1)
	}
	return mean, variance
}

// meanTest is R2's state for a KindMean metric: each arm's accumulation, and the comparison
// stratified by tick. Tick k, where both arms have observations, gives the difference of the
// arms' means dₖ = m_Tₖ − m_Cₖ with weight wₖ = 1/(1/n_Tₖ + 1/n_Cₖ); the estimate of μT − μC is
// D = Σwₖdₖ/W. Comparing within ticks, like R1's per-tick likelihood, makes the comparison immune
// to what both arms share: a drift over the day does not bias it even when the split, and so the
// arms' weights over time, changes between stages. Its variance is (σT²·A_T + σC²·A_C)/W², with
// A_T = Σwₖ²/n_Tₖ and A_C = Σwₖ²/n_Cₖ.
//
// Like R1, the test also mixes over later starts: the comparison from the first paired tick has
// weight 1 − [LateStartWeight], the one beginning at the p-th weight LateStartWeight/((p−1)p), so
// that a regression after a long healthy run is not diluted by it. Keeping every start would
// cost a tick in proportion to the run's length; a start is kept while p is a multiple of
// 2^⌊log2(age/meanStartsDense)⌋, age being how many paired ticks ago it began: all starts of the
// last few ticks, every other one before that, every fourth before that, and so on, about
// 2·meanStartsDense·log2(ticks) of them. Leaving starts out only lowers the sum, so the bound
// on false trips holds.
type meanTest struct {
	arm   [2]meanAcc
	all   meanStart   // the comparison from the first paired tick
	late  []meanStart // later starts, oldest first
	pairs float64
}

// meanStart is the tick-stratified comparison from one start: over the paired ticks since the
// start-th, W = Σwₖ, WD = Σwₖdₖ, AT = Σwₖ²/n_Tₖ and AC = Σwₖ²/n_Cₖ.
type meanStart struct {
	start         float64 // the paired tick it began at, from 1
	w, wd, aT, aC float64
}

// meanStartsDense is how many of the latest starts are all kept; older ones thin out by halves.
const meanStartsDense = 2

func (c *meanStart) add(w, wd, aT, aC float64) {
	c.w += w
	c.wd += wd
	c.aT += aT
	c.aC += aC
}

// observe takes one tick's deltas of both arms: observations and their sums.
func (t *meanTest) observe(nT, sT, nC, sC float64) {
	t.arm[armT].add(nT, sT)
	t.arm[armC].add(nC, sC)
	if !(nT > 0 && nC > 0) {
		return
	}
	w := 1 / (1/nT + 1/nC)
	wd, aT, aC := w*(sT/nT-sC/nC), w*w/nT, w*w/nC
	t.pairs++
	t.all.add(w, wd, aT, aC)
	for i := range t.late {
		t.late[i].add(w, wd, aT, aC)
	}
	if t.pairs > 1 {
		t.late = append(t.late, meanStart{start: t.pairs, w: w, wd: wd, aT: aT, aC: aC})
	}
	kept := t.late[:0]
	for _, c := range t.late {
		if keepStart(c.start, t.pairs) {
			kept = append(kept, c)
		}
	}
	t.late = kept
}

// keepStart says whether the start at paired tick start is kept at paired tick now: always
// within the last meanStartsDense ticks, and then while start is a multiple of 2^j for the j
// with 2^j ≤ age/meanStartsDense < 2^(j+1). As now grows j grows, so a start once dropped is
// never wanted again.
func keepStart(start, now float64) bool {
	age := now - start
	if age < meanStartsDense {
		return true
	}
	step := math.Exp2(math.Floor(math.Log2(age / meanStartsDense)))
	return math.Mod(start, step) == 0
}

// copyFrom makes t a copy of src in t's own buffer.
func (t *meanTest) copyFrom(src *meanTest) {
	late := t.late
	*t = *src
	t.late = append(late[:0], src.late...)
}
