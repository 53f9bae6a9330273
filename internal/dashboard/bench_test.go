package dashboard_test

import (
	"fmt"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"
)

// TestMeasure measures what docs/benchmarks.md records: the flag list with 10,000 flags (server
// time, and time to first render in Chromium), the page weight, and the latency from a kill's
// acknowledgement to the change in the page's DOM over 200 kills. It only prints numbers, and
// runs only when asked: INTERLOCK_MEASURE=1 go test -run TestMeasure -v ./internal/dashboard/
func TestMeasure(t *testing.T) {
	if os.Getenv("INTERLOCK_MEASURE") == "" {
		t.Skip("measurements run with INTERLOCK_MEASURE=1")
	}
	const flags, kills = 10_000, 200
	_, base := server(t, "--no-sync")

	start := time.Now()
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Go(func() {
			for i := w; i < flags; i += 4 {
				createFlag(t, base, env, flagDoc(fmt.Sprintf("team%02d.story%05d", i%40, i), "flag number "+strconv.Itoa(i), i%3 != 0))
			}
		})
	}
	wg.Wait()
	createFlag(t, base, env, flagDoc("bench.live", "the flag killed 200 times", true))
	t.Logf("seeded %d flags in %v", flags+1, time.Since(start).Round(time.Millisecond))

	// Server time: a signed-in client, the page and a search.
	c := client(t)
	resp, err := c.PostForm(base+"/signin", url.Values{"token": {adminToken}})
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	for _, path := range []string{flagsAt, flagsAt + "?page=50", flagsAt + "?q=story0999", flagsAt + "?sort=-updated&state=off"} {
		var times []time.Duration
		size := 0
		for range 30 {
			t0 := time.Now()
			resp, body := fetch(t, c, base+path)
			times = append(times, time.Since(t0))
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("%s: %d", path, resp.StatusCode)
			}
			size = len(body)
		}
		slices.Sort(times)
		t.Logf("server: GET %s with %d flags: median %v, p90 %v (%d bytes of HTML)", path, flags+1, times[len(times)/2].Round(10*time.Microsecond), times[len(times)*9/10].Round(10*time.Microsecond), size)
	}

	ctx := browser(t)
	signIn(t, ctx, base, adminToken)
	type timing struct {
		TTFB, DOM, FCP, Load float64
		Bytes, JSCSS         float64
	}
	const perf = `(() => {
		const n = performance.getEntriesByType('navigation')[0];
		const fcp = performance.getEntriesByName('first-contentful-paint')[0];
		const res = performance.getEntriesByType('resource');
		const jscss = res.filter(r => /\.(js|css)(\?|$)/.test(r.name)).reduce((s, r) => s + r.decodedBodySize, 0);
		return {TTFB: n.responseStart - n.requestStart, DOM: n.domContentLoadedEventEnd - n.startTime,
			FCP: fcp ? fcp.startTime : -1, Load: n.loadEventEnd - n.startTime,
			Bytes: n.decodedBodySize + res.reduce((s, r) => s + r.decodedBodySize, 0), JSCSS: jscss};
	})()`
	do(t, ctx, "cold list", navigate(base+flagsAt), visible("#results"), poll(`performance.getEntriesByType('navigation')[0].loadEventEnd > 0`))
	cold := eval[timing](t, ctx, perf)
	t.Logf("page weight: %.0f bytes (HTML of 100 rows, JS, CSS; served uncompressed), of which JS+CSS %.0f bytes", cold.Bytes, cold.JSCSS)
	var fcps []float64
	for range 10 {
		do(t, ctx, "list", navigate(base+flagsAt), visible("#results"), poll(`performance.getEntriesByType('navigation')[0].loadEventEnd > 0`))
		tm := eval[timing](t, ctx, perf)
		if tm.FCP > 0 {
			fcps = append(fcps, tm.FCP)
		}
		t.Logf("chromium: list of %d flags: TTFB %.1f ms, DOMContentLoaded %.1f ms, first contentful paint %.1f ms", flags+1, tm.TTFB, tm.DOM, tm.FCP)
	}
	slices.Sort(fcps)
	t.Logf("chromium: first contentful paint median %.1f ms over %d loads", fcps[len(fcps)/2], len(fcps))

	// Live: the same flag killed and enabled again, 200 times; only the kills are timed.
	do(t, ctx, "live page", navigate(base+flagsAt+"?q=bench.live"), visible(`[id="row-bench.live"]`),
		poll(`document.getElementById('conn').dataset.state === 'live'`))
	eval[bool](t, ctx, `window.__want = ''; window.__seen = 0; new MutationObserver(() => {
		const el = document.querySelector('[id="row-bench.live"] .serving');
		if (window.__want && !window.__seen && el && el.textContent.includes(window.__want)) window.__seen = Date.now();
	}).observe(document.getElementById('results'), {subtree: true, childList: true, characterData: true}); true`)
	var lat []time.Duration
	path := "/api/v1/environments/" + env + "/flags/bench.live/"
	for i := range kills {
		eval[bool](t, ctx, `window.__seen = 0; window.__want = 'killed by'; true`)
		call(t, base, adminToken, "POST", path+"kill", map[string]string{"reason": "measure " + strconv.Itoa(i)}, &map[string]any{})
		ack := time.Now()
		do(t, ctx, "kill seen", poll(`window.__seen > 0`))
		lat = append(lat, time.UnixMilli(int64(eval[float64](t, ctx, `window.__seen`))).Sub(ack))
		eval[bool](t, ctx, `window.__want = ''; true`)
		call(t, base, adminToken, "POST", path+"enable", nil, &map[string]any{})
		do(t, ctx, "enable seen", poll(`!document.querySelector('[id="row-bench.live"] .serving').textContent.includes('killed by')`))
	}
	slices.Sort(lat)
	t.Logf("live: kill acknowledged → row changed in the DOM, over %d kills: p50 %v, p99 %v, max %v", kills,
		lat[len(lat)/2], lat[len(lat)*99/100], lat[len(lat)-1])
}
