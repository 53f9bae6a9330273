package app

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"math"
	"net/http"
	"net/http/httptest"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/interlock-dev/interlock/events"
	"github.com/interlock-dev/interlock/guard"
	"github.com/interlock-dev/interlock/internal/await"
	"github.com/interlock-dev/interlock/internal/config"
	"github.com/interlock-dev/interlock/internal/natstest"
	"github.com/interlock-dev/interlock/projections"
)

// Several replicas of `interlock serve` against one NATS cluster: exactly one acts for the
// guard at any time, and a rollout goes on to completion when the acting replica stops, whether
// it stops gracefully (it releases the lease) or drops off NATS without a word (the lease runs
// out).

const (
	fleetToken = "replicas-test-admin-token"
	fleetEnv   = "production"
	fleetFlag  = "checkout"
	fleetPath  = "/api/v1/environments/" + fleetEnv + "/flags/" + fleetFlag
	// The traffic: every step, stepRequests requests split as the flag serves them, a share
	// errorRate of each arm's requests failing (healthy: the same rate on both arms).
	stepRequests = 200
	errorRate    = 0.05
	stepEvery    = 50 * time.Millisecond
	// lastStage is the index of the plan's last stage (100%), which the completion leaves.
	lastStage = 3
)

func TestReplicasHandOverOnGracefulStop(t *testing.T) {
	f := newFleet(t, 2)
	acting := f.rolloutUntilStage(1)
	survivor := f.replicas[1-acting]
	f.reader.Store(survivor) // the traffic follows the survivor's view from here on

	stopped := time.Now()
	if err := f.replicas[acting].Close(); err != nil {
		t.Errorf("close replica %d: %v", acting, err)
	}
	await.Eventually(t, 20*time.Second, survivor.GuardActing, "replica %d acts after replica %d stopped", 1-acting, acting)
	t.Logf("replica %d acts %v after replica %d was stopped gracefully", 1-acting, time.Since(stopped).Round(time.Millisecond), acting)

	f.waitCompleted(survivor)
	f.checkHistory(survivor)
	f.checkActs()
	if n := f.monitor.stop(); n < 2 {
		t.Errorf("%d holdings of the lease seen, want at least 2 (one per replica)", n)
	}
}

func TestReplicasTakeOverFromCrashedReplica(t *testing.T) {
	f := newFleet(t, 2)
	acting := f.rolloutUntilStage(1)
	survivor := f.replicas[1-acting]
	f.reader.Store(survivor)

	// A crash, as the cluster sees it: the replica's connection goes, nothing is released, so
	// the lease's entry stays until its TTL runs out. The process itself lives on and believes
	// it holds the lease until its validity ends (TTL − margin after its last renewal); the
	// monitor keeps sampling it, so the zombie and the new holder are never seen acting
	// together.
	stopped := time.Now()
	f.crash(acting)
	await.Eventually(t, 20*time.Second, func() bool { return !f.replicas[acting].GuardActing() }, "replica %d cut off NATS stops acting", acting)
	t.Logf("replica %d stopped believing it acts %v after it dropped off NATS", acting, time.Since(stopped).Round(time.Millisecond))
	await.Eventually(t, 40*time.Second, survivor.GuardActing, "replica %d acts after replica %d crashed", 1-acting, acting)
	t.Logf("replica %d acts %v after replica %d dropped off NATS", 1-acting, time.Since(stopped).Round(time.Millisecond), acting)

	f.waitCompleted(survivor)
	f.checkHistory(survivor)
	f.checkActs()
	if n := f.monitor.stop(); n < 2 {
		t.Errorf("%d holdings of the lease seen, want at least 2 (one per replica)", n)
	}
}

// fleet is a three-node NATS cluster, replicas of the server against it, an exposition endpoint
// whose counters follow the flag's split, and a monitor of who holds the guard's lease.
type fleet struct {
	t        *testing.T
	ctx      context.Context
	replicas []*Main
	logs     []*await.Output
	metrics  *exposition
	url      string // the exposition endpoint
	client   *http.Client
	monitor  *leaseMonitor
	crashed  map[int]bool
	// reader is the replica whose catalog the traffic follows.
	reader atomic.Pointer[Main]
}

func newFleet(t *testing.T, n int) *fleet {
	t.Helper()
	await.Goroutines(t, 10*time.Second, nil) // first, so that it runs after every other cleanup
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	servers := natstest.RunCluster(t)
	urls := make([]string, len(servers))
	for i, s := range servers {
		urls[i] = s.ClientURL()
	}
	f := &fleet{
		t: t, ctx: ctx,
		metrics: &exposition{values: map[string]float64{}},
		crashed: map[int]bool{},
		client:  &http.Client{Transport: &http.Transport{}, Timeout: 30 * time.Second},
	}
	srv := httptest.NewServer(f.metrics)
	t.Cleanup(srv.Close)
	t.Cleanup(f.client.CloseIdleConnections)
	f.url = srv.URL + "/metrics"

	keyFile := natstest.SigningKeyFile(t)
	for i := range n {
		cfg := config.Default()
		cfg.SigningKey = keyFile // replicas share one key
		cfg.NATSURL = strings.Join(urls, ",")
		cfg.NATSListen = ""
		cfg.Replicas = 3
		cfg.HTTP = "127.0.0.1:0"
		cfg.AdminToken = fleetToken
		logs := &await.Output{}
		logger := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelInfo})).With("replica", i)
		m, err := Start(ctx, cfg, logger, io.Discard)
		if err != nil {
			t.Fatalf("start replica %d: %v", i, err)
		}
		t.Cleanup(func() {
			// A replica cut off NATS may stop with the error that cut it.
			if err := m.Close(); err != nil && !f.crashed[i] {
				t.Errorf("close replica %d: %v", i, err)
			}
		})
		f.replicas = append(f.replicas, m)
		f.logs = append(f.logs, logs)
	}
	t.Cleanup(func() {
		if t.Failed() {
			for i, l := range f.logs {
				t.Logf("replica %d logs:\n%s", i, l.String())
			}
		}
	})
	for i, m := range f.replicas {
		await.Eventually(t, 20*time.Second, m.Ready, "replica %d ready", i)
	}
	f.reader.Store(f.replicas[0])
	f.monitor = startMonitor(t, f.replicas)
	f.startTraffic()
	return f
}

// crash cuts replica i off NATS without letting it release anything: what a crash or a
// partition looks like to the cluster.
func (f *fleet) crash(i int) {
	f.crashed[i] = true
	f.replicas[i].nc.Close()
}

// rolloutUntilStage creates the flag and its rollout through the HTTP API, starts it, waits
// until the guard has advanced it to stage (or further, short of completion) with exactly one
// replica acting, and returns the index of the acting replica.
func (f *fleet) rolloutUntilStage(stage int) int {
	t := f.t
	t.Helper()
	await.Eventually(t, 20*time.Second, func() bool { return len(f.acting()) == 1 }, "exactly one replica acts")

	base := "http://" + f.replicas[0].HTTPAddr()
	flag := `{"key":"` + fleetFlag + `","kind":"release","variants":{"on":true,"off":false},` +
		`"defaultVariant":"off","offVariant":"off","enabled":true}`
	f.call("POST", base+"/api/v1/environments/"+fleetEnv+"/flags", flag, nil, http.StatusCreated)
	plan := `{"treatment":"on","control":"off","tick":"1s",` +
		`"stages":[{"percent":20,"minHold":"2s"},{"percent":50,"minHold":"2s"},{"percent":80,"minHold":"2s"},{"percent":100,"minHold":"2s"}],` +
		`"metrics":[{"name":"errors","requests":"requests_total","errors":"errors_total"}],` +
		`"source":{"type":"scrape","url":"` + f.url + `"}}`
	etag := f.call("POST", base+fleetPath+"/rollout", plan, map[string]string{"X-Interlock-Reason": "replicas test"}, http.StatusCreated)
	f.call("POST", base+fleetPath+"/rollout/start", "", map[string]string{"If-Match": etag}, http.StatusOK)

	var fl projections.Flag
	await.Eventually(t, 60*time.Second, func() bool {
		fl = f.flag(f.replicas[0])
		return fl.Rollout != nil && fl.Rollout.Stage >= stage
	}, "rollout at stage %d", stage)
	if fl.Rollout.Status != projections.RolloutRunning {
		t.Fatalf("rollout %s at stage %d, want it running", fl.Rollout.Status, fl.Rollout.Stage)
	}
	var acting []int
	await.Eventually(t, 20*time.Second, func() bool { acting = f.acting(); return len(acting) == 1 }, "exactly one replica acts")
	t.Logf("rollout at stage %d; replica %d acts", fl.Rollout.Stage, acting[0])
	return acting[0]
}

// call sends an admin request and checks its status; it returns the answer's ETag.
func (f *fleet) call(method, url, body string, header map[string]string, want int) string {
	f.t.Helper()
	req, err := http.NewRequestWithContext(f.ctx, method, url, strings.NewReader(body))
	if err != nil {
		f.t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+fleetToken)
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	for k, v := range header {
		req.Header.Set(k, v)
	}
	resp, err := f.client.Do(req)
	if err != nil {
		f.t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	got, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != want {
		f.t.Fatalf("%s %s: %d, want %d: %s", method, url, resp.StatusCode, want, got)
	}
	return resp.Header.Get("ETag")
}

// flag is the flag as replica m's catalog has it.
func (f *fleet) flag(m *Main) projections.Flag {
	fl, _ := m.Catalog().Flag(fleetEnv, fleetFlag)
	return fl
}

// acting lists the replicas that hold the lease now.
func (f *fleet) acting() []int {
	var out []int
	for i, m := range f.replicas {
		if m.GuardActing() {
			out = append(out, i)
		}
	}
	return out
}

// waitCompleted waits until m's catalog shows the rollout completed, the flag serving the
// treatment.
func (f *fleet) waitCompleted(m *Main) {
	f.t.Helper()
	var fl projections.Flag
	await.Eventually(f.t, 90*time.Second, func() bool {
		fl = f.flag(m)
		return fl.Rollout != nil && !fl.Rollout.Active()
	}, "rollout finished")
	if fl.Rollout.Status != projections.RolloutCompleted || !fl.Enabled || fl.DefaultServe == nil || fl.DefaultServe.Variant != "on" {
		f.t.Fatalf("rollout %s at stage %d, guard %+v; flag enabled %v serving %+v; want it completed serving the treatment",
			fl.Rollout.Status, fl.Rollout.Stage, fl.Rollout.Guard, fl.Enabled, fl.DefaultServe)
	}
}

// checkHistory reads the flag's whole history through m and checks what the guard wrote: every
// stage transition once, every guard event by the guard, every transition caused by a decision
// of the guard recorded before it, no decision recorded twice.
func (f *fleet) checkHistory(m *Main) {
	t := f.t
	t.Helper()
	ctx, cancel := context.WithTimeout(f.ctx, 20*time.Second)
	defer cancel()
	hist, err := m.store.Load(ctx, fleetEnv, fleetFlag)
	if err != nil {
		t.Fatal(err)
	}
	var rollout string
	decided := map[string]*events.GuardDecided{} // by event id
	decisionIDs := map[string]string{}           // evidence decision id → event id
	eventIDs := map[string]bool{}
	transitions := map[string]int{} // "advanced 0→1", "completed"
	var decisions, steps int
	for i := range hist {
		ev := &hist[i]
		if eventIDs[ev.ID] {
			t.Errorf("event id %s appears twice", ev.ID)
		}
		eventIDs[ev.ID] = true
		p, err := ev.Payload()
		if err != nil {
			t.Fatalf("event %d (%s): %v", i, ev.Type, err)
		}
		switch ev.Type {
		case events.TypeFlagCreated, events.TypeRolloutCreated, events.TypeRolloutStarted:
			if ev.Actor != "admin" {
				t.Errorf("%s by %q, want admin", ev.Type, ev.Actor)
			}
			if ev.Type == events.TypeRolloutCreated {
				rollout = p.(*events.RolloutCreated).ID
			}
			continue
		case events.TypeGuardDecided:
			decisions++
			d := p.(*events.GuardDecided)
			decided[ev.ID] = d
			var calls []guard.Evidence
			if err := json.Unmarshal(d.Evidence, &calls); err != nil || len(calls) == 0 {
				t.Errorf("decision %s: evidence %v, %d calls", ev.ID, err, len(calls))
			}
			for _, c := range calls {
				if other, ok := decisionIDs[c.DecisionID]; ok {
					t.Errorf("decision id %s recorded by events %s and %s", c.DecisionID, other, ev.ID)
				}
				decisionIDs[c.DecisionID] = ev.ID
			}
			if d.Rollout != rollout {
				t.Errorf("decision %s names rollout %s, want %s", ev.ID, d.Rollout, rollout)
			}
		case events.TypeRolloutAdvanced, events.TypeRolloutCompleted:
			steps++
			from, key := lastStage, "completed"
			if a, ok := p.(*events.RolloutAdvanced); ok {
				from, key = a.From, fmt.Sprintf("advanced %d→%d", a.From, a.To)
			}
			transitions[key]++
			d := decided[ev.CausationID]
			switch {
			case ev.CausationID == "":
				t.Errorf("%s (%s) has no causation", key, ev.ID)
			case d == nil:
				t.Errorf("%s (%s): causation %s names no guard decision recorded before it", key, ev.ID, ev.CausationID)
			case d.Stage != from || (d.Action != string(guard.ActionAdvance) && d.Action != "complete"):
				t.Errorf("%s (%s) caused by decision %s to %s at stage %d", key, ev.ID, ev.CausationID, d.Action, d.Stage)
			}
			if ev.CorrelationID != rollout {
				t.Errorf("%s (%s) correlation %q, want the rollout %s", key, ev.ID, ev.CorrelationID, rollout)
			}
		default:
			// A healthy rollout is neither stepped back, paused, aborted, killed nor re-armed.
			t.Errorf("unexpected %s by %q: %s", ev.Type, ev.Actor, ev.Reason)
		}
		if ev.Actor != guard.Actor {
			t.Errorf("%s (%s) by %q, want the guard", ev.Type, ev.ID, ev.Actor)
		}
	}
	want := map[string]int{"advanced 0→1": 1, "advanced 1→2": 1, "advanced 2→3": 1, "completed": 1}
	if !maps.Equal(transitions, want) {
		t.Errorf("stage transitions %v, want each of %v once", transitions, want)
	}
	t.Logf("history: %d events, %d guard decisions, %d stage transitions", len(hist), decisions, steps)
	var line strings.Builder
	for _, ev := range hist {
		fmt.Fprintf(&line, "\n  %s %-40s %s", ev.Time.Format("15:04:05.000"), ev.Type, ev.Reason)
	}
	t.Logf("timeline:%s", line.String())
	f.metrics.mu.Lock()
	sc := f.metrics.scrapes
	var gaps []string
	for i := 1; i < len(sc); i++ {
		gaps = append(gaps, sc[i].Sub(sc[i-1]).Round(10*time.Millisecond).String())
	}
	f.metrics.mu.Unlock()
	t.Logf("%d scrapes, gaps %v", len(sc), gaps)
}

// checkActs reads every replica's log: a replica's guard acts (a command written) only after it
// said that it holds the lease, and not after it said that it lost it. A guard that ignored
// the lease would act from the replica that waits. How many acts there were is judged by the
// stream (checkHistory), not here: a crashed replica's command may reach the stream while its
// log line does not get out.
func (f *fleet) checkActs() {
	f.t.Helper()
	total := 0
	for i, l := range f.logs {
		held := false
		for _, line := range strings.Split(l.String(), "\n") {
			switch {
			case strings.Contains(line, `msg="guard lease held: this replica acts"`):
				held = true
			case strings.Contains(line, `msg="guard lease lost: another replica acts"`):
				held = false
			case strings.Contains(line, `msg="guard acted"`):
				total++
				if !held {
					f.t.Errorf("replica %d acted without the lease: %s", i, line)
				}
			}
		}
	}
	f.t.Logf("%d acts of the guard logged", total)
}

// startTraffic runs the traffic until the test ends: every step it reads the flag's split from
// the reader's catalog and adds the step's requests and errors to the counters.
func (f *fleet) startTraffic() {
	ctx, cancel := context.WithCancel(f.ctx)
	done := make(chan struct{})
	f.t.Cleanup(func() { cancel(); <-done })
	go func() {
		defer close(done)
		tick := time.NewTicker(stepEvery)
		defer tick.Stop()
		var requests [2]int // on, off
		for {
			share := treatmentShare(f.flag(f.reader.Load()))
			nT := int(math.Round(stepRequests * share))
			requests[0] += nT
			requests[1] += stepRequests - nT
			f.metrics.set(requests, errorRate)
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
		}
	}()
}

// treatmentShare is the share of the flag's traffic that gets "on", as it stands.
func treatmentShare(fl projections.Flag) float64 {
	switch s := fl.DefaultServe; {
	case !fl.Enabled || s == nil:
		return 0
	case s.Variant == "on":
		return 1
	case s.Split != nil:
		total := 0
		for _, w := range s.Split {
			total += w
		}
		if total > 0 {
			return float64(s.Split["on"]) / float64(total)
		}
	}
	return 0
}

// exposition serves requests_total and errors_total of the flag per variant.
type exposition struct {
	mu      sync.Mutex
	values  map[string]float64
	scrapes []time.Time
}

// set moves the counters to requests per arm (on, off), errors a rate of them.
func (e *exposition) set(requests [2]int, rate float64) {
	e.mu.Lock()
	defer e.mu.Unlock()
	for i, variant := range []string{"on", "off"} {
		e.values[fmt.Sprintf("requests_total{flag=%q,variant=%q}", fleetFlag, variant)] = float64(requests[i])
		e.values[fmt.Sprintf("errors_total{flag=%q,variant=%q}", fleetFlag, variant)] = math.Floor(float64(requests[i]) * rate)
	}
}

func (e *exposition) ServeHTTP(w http.ResponseWriter, _ *http.Request) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.scrapes = append(e.scrapes, time.Now())
	keys := make([]string, 0, len(e.values))
	for k := range e.values {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	w.Header().Set("Content-Type", "text/plain; version=0.0.4")
	fmt.Fprintln(w, "# TYPE requests_total counter")
	fmt.Fprintln(w, "# TYPE errors_total counter")
	for _, k := range keys {
		fmt.Fprintf(w, "%s %g\n", k, e.values[k])
	}
}

// leaseMonitor samples every replica's lease until stopped and records any two replicas seen
// holding it at the same moment.
//
// Two replicas read one after the other are not read at the same moment: a hand-over between
// the reads would look like an overlap. So each sample reads every replica twice in order, and
// counts an overlap only when a replica held the lease in one holding (same epoch) at both its
// reads and another replica held it at a read that fell in between.
type leaseMonitor struct {
	t        *testing.T
	stopOnce sync.Once
	cancel   context.CancelFunc
	done     chan struct{}

	mu       sync.Mutex
	samples  int
	overlaps []string
	holdings []holding // in the order first seen
}

// holding is one replica's holding of the lease.
type holding struct {
	replica int
	epoch   uint64
}

func startMonitor(t *testing.T, replicas []*Main) *leaseMonitor {
	ctx, cancel := context.WithCancel(context.Background())
	lm := &leaseMonitor{t: t, cancel: cancel, done: make(chan struct{})}
	t.Cleanup(func() { lm.stop() })
	go func() {
		defer close(lm.done)
		tick := time.NewTicker(2 * time.Millisecond)
		defer tick.Stop()
		for {
			lm.sample(replicas)
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
		}
	}()
	return lm
}

func (lm *leaseMonitor) sample(replicas []*Main) {
	type read struct {
		held  bool
		epoch uint64
	}
	first := make([]read, len(replicas))
	second := make([]read, len(replicas))
	for _, pass := range [][]read{first, second} {
		for i, m := range replicas {
			pass[i].held, pass[i].epoch = m.lease.Held()
		}
	}
	lm.mu.Lock()
	defer lm.mu.Unlock()
	lm.samples++
	for i := range replicas {
		for _, r := range []read{first[i], second[i]} {
			if r.held && !slices.Contains(lm.holdings, holding{i, r.epoch}) {
				lm.holdings = append(lm.holdings, holding{i, r.epoch})
			}
		}
		if !first[i].held || !second[i].held || first[i].epoch != second[i].epoch {
			continue
		}
		for j := range replicas {
			// j's read that fell between i's two: its first when read after i, else its second.
			between := second[j]
			if j > i {
				between = first[j]
			}
			if j != i && between.held {
				lm.overlaps = append(lm.overlaps, fmt.Sprintf("sample %d: replicas %d (epoch %d) and %d (epoch %d) both hold the lease",
					lm.samples, i, first[i].epoch, j, between.epoch))
			}
		}
	}
}

// stop ends the sampling, reports what it saw, and returns how many holdings it saw.
func (lm *leaseMonitor) stop() int {
	lm.stopOnce.Do(func() {
		lm.cancel()
		<-lm.done
		lm.mu.Lock()
		defer lm.mu.Unlock()
		for _, o := range lm.overlaps[:min(len(lm.overlaps), 10)] {
			lm.t.Error(o)
		}
		if len(lm.overlaps) > 0 {
			lm.t.Errorf("%d of %d samples saw two replicas acting", len(lm.overlaps), lm.samples)
		}
		// Epochs are fencing tokens: each holding's is larger than every earlier one's.
		for i := 1; i < len(lm.holdings); i++ {
			if lm.holdings[i].epoch <= lm.holdings[i-1].epoch {
				lm.t.Errorf("holdings %v: epochs do not grow", lm.holdings)
				break
			}
		}
		lm.t.Logf("lease monitor: %d samples, holdings (replica, epoch) %v", lm.samples, lm.holdings)
	})
	lm.mu.Lock()
	defer lm.mu.Unlock()
	return len(lm.holdings)
}
