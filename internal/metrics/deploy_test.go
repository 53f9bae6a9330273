package metrics_test

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"go.yaml.in/yaml/v2"

	"github.com/interlock-dev/interlock/internal/testdeps"
)

const (
	promDir       = "../../deploy/prometheus"
	promConfig    = promDir + "/prometheus.yml"
	dashboardFile = "../../deploy/grafana/interlock.json"
	metricsDoc    = "../../docs/metrics.md"
)

// TestPrometheusConfigAndRules checks deploy/prometheus with promtool: the configuration, every
// rule file it loads, and the rules' unit tests.
func TestPrometheusConfigAndRules(t *testing.T) {
	promtool := testdeps.Program(t, "promtool", "prometheus")
	run := func(args ...string) {
		t.Helper()
		out, err := exec.Command(promtool, args...).CombinedOutput()
		if err != nil {
			t.Fatalf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	// Syntax only: the scrape job's token file exists only where Prometheus runs.
	run("check", "config", "--syntax-only", promConfig)
	files := ruleFiles(t)
	if len(files) == 0 {
		t.Fatal("prometheus.yml loads no rule files")
	}
	for _, f := range files {
		run("check", "rules", f)
	}
	tests, err := filepath.Glob(filepath.Join(promDir, "*.test.yml"))
	if err != nil || len(tests) == 0 {
		t.Fatalf("no rule unit tests in %s: %v", promDir, err)
	}
	for _, f := range tests {
		run("test", "rules", f)
	}
}

// ruleFiles are the rule files prometheus.yml loads.
func ruleFiles(t *testing.T) []string {
	t.Helper()
	raw, err := os.ReadFile(promConfig)
	if err != nil {
		t.Fatal(err)
	}
	var cfg struct {
		RuleFiles []string `yaml:"rule_files"`
	}
	if err := yaml.Unmarshal(raw, &cfg); err != nil {
		t.Fatalf("prometheus.yml: %v", err)
	}
	var out []string
	for _, f := range cfg.RuleFiles {
		out = append(out, filepath.Join(promDir, f))
	}
	return out
}

// dashboard is the part of a Grafana dashboard the test reads.
type dashboard struct {
	UID, Title string
	Panels     []struct {
		ID      int
		Type    string
		Title   string
		Targets []struct {
			RefID string `json:"refId"`
			Expr  string
		}
	}
	Templating struct {
		List []struct {
			Name       string
			Type       string
			Definition string
		}
	}
}

// TestDashboardIsValid reads deploy/grafana's dashboard as JSON: unique panel ids, a query in
// every graph, the variables its queries use.
func TestDashboardIsValid(t *testing.T) {
	d := readDashboard(t)
	if d.UID == "" || d.Title == "" {
		t.Errorf("uid %q, title %q", d.UID, d.Title)
	}
	ids := map[int]bool{}
	for _, p := range d.Panels {
		if ids[p.ID] {
			t.Errorf("panel id %d twice", p.ID)
		}
		ids[p.ID] = true
		if p.Type != "row" && len(p.Targets) == 0 {
			t.Errorf("panel %q has no query", p.Title)
		}
		for _, tg := range p.Targets {
			if tg.Expr == "" || tg.RefID == "" {
				t.Errorf("panel %q: a target without expr or refId", p.Title)
			}
		}
	}
	var vars []string
	for _, v := range d.Templating.List {
		vars = append(vars, v.Name)
	}
	for _, want := range []string{"datasource", "job", "instance"} {
		if !slices.Contains(vars, want) {
			t.Errorf("no $%s variable", want)
		}
	}
}

func readDashboard(t *testing.T) dashboard {
	t.Helper()
	raw, err := os.ReadFile(dashboardFile)
	if err != nil {
		t.Fatal(err)
	}
	var d dashboard
	if err := json.Unmarshal(raw, &d); err != nil {
		t.Fatalf("%s is not JSON: %v", dashboardFile, err)
	}
	return d
}

// metricName finds the metric names in a PromQL expression: the server's own (interlock_), the
// Go and process collectors', and the scrape's up.
var metricName = regexp.MustCompile(`\b(?:(?:interlock|go|process)_[a-zA-Z0-9_]+|up)\b`)

// TestDeployedQueriesNameExportedMetrics boots the real server, uses it, and scrapes /metrics:
// every metric the dashboard and the rules query is one it exports, and docs/metrics.md lists
// every metric it exports, and no other.
func TestDeployedQueriesNameExportedMetrics(t *testing.T) {
	s := boot(t, nil)
	stop := s.use()
	defer stop()
	fams := s.scrape()
	exported := func(name string) bool {
		if name == "up" {
			return true // Prometheus's own, per target
		}
		if _, ok := fams[name]; ok {
			return true
		}
		for _, suffix := range []string{"_bucket", "_sum", "_count"} {
			if base, ok := strings.CutSuffix(name, suffix); ok {
				if mf, ok := fams[base]; ok && mf.GetType().String() == "HISTOGRAM" {
					return true
				}
			}
		}
		return false
	}

	queries := map[string][]string{} // where → expressions
	d := readDashboard(t)
	for _, p := range d.Panels {
		for _, tg := range p.Targets {
			queries["dashboard panel "+p.Title] = append(queries["dashboard panel "+p.Title], tg.Expr)
		}
	}
	for _, v := range d.Templating.List {
		if v.Definition != "" {
			queries["dashboard variable "+v.Name] = append(queries["dashboard variable "+v.Name], v.Definition)
		}
	}
	for _, f := range ruleFiles(t) {
		raw, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		var rules struct {
			Groups []struct {
				Rules []struct {
					Record, Alert, Expr string
				}
			}
		}
		if err := yaml.Unmarshal(raw, &rules); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		for _, g := range rules.Groups {
			for _, r := range g.Rules {
				queries["rule "+r.Record+r.Alert] = append(queries["rule "+r.Record+r.Alert], r.Expr)
			}
		}
	}
	used := map[string]bool{}
	for where, exprs := range queries {
		for _, e := range exprs {
			names := metricName.FindAllString(e, -1)
			if len(names) == 0 {
				t.Errorf("%s: no metric in %q", where, e)
			}
			for _, n := range names {
				used[n] = true
				if !exported(n) {
					t.Errorf("%s: %s is not a metric the server exports", where, n)
				}
			}
		}
	}

	// The documentation lists every interlock_ metric the server exports, and only those.
	doc, err := os.ReadFile(metricsDoc)
	if err != nil {
		t.Fatal(err)
	}
	documented := map[string]bool{}
	for _, m := range regexp.MustCompile("`(interlock_[a-z0-9_]+)`").FindAllStringSubmatch(string(doc), -1) {
		documented[m[1]] = true
	}
	for name := range fams {
		if strings.HasPrefix(name, "interlock_") && !documented[name] {
			t.Errorf("%s is exported but not in docs/metrics.md", name)
		}
	}
	for name := range documented {
		if !exported(name) {
			t.Errorf("docs/metrics.md lists %s, which the server does not export", name)
		}
	}
	t.Logf("%d metrics used by %d queries", len(used), len(queries))
}
