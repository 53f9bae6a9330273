package interlock_test

import (
	"bufio"
	"bytes"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"strings"
	"testing"
)

const module = "github.com/interlock-dev/interlock/"

// allowed is the rule of docs/architecture.md: the module's own packages each package's
// non-test files may import. A package missing here fails the test, so a new package is placed
// on purpose.
var allowed = map[string][]string{
	"events":                   nil,
	"events/subscribe":         {"events"},
	"projections":              {"events"},
	"targeting":                {"events", "projections"},
	"local":                    {"events", "projections", "targeting"},
	"local/openfeature":        {"events", "projections", "targeting", "local"},
	"guard":                    {"events", "projections", "guard/source", "internal/command"},
	"guard/source":             nil,
	"apiv1":                    {"events", "projections"},
	"client":                   {"events", "apiv1"},
	"internal/command":         {"events", "projections"},
	"internal/api":             {"events", "projections", "apiv1", "internal/auth", "internal/command", "internal/presence"},
	"internal/ofrep":           {"events", "targeting", "internal/auth"},
	"internal/dashboard":       {"events", "projections", "guard", "internal/auth", "internal/command", "internal/presence"},
	"internal/auth":            {"events"},
	"internal/perimeter":       {"events", "internal/auth", "local"},
	"internal/presence":        {"local", "apiv1"},
	"internal/snapshot":        {"events", "projections", "local"},
	"internal/metrics":         {"events", "projections", "targeting", "guard", "internal/command"},
	"internal/lease":           nil,
	"internal/edge":            nil,
	"internal/embedded":        nil,
	"internal/config":          {"events", "internal/edge"},
	"internal/cli":             {"events", "projections", "apiv1", "client", "internal/auth", "internal/config"},
	"internal/app":             {"*"},
	"internal/natstest":        {"events", "internal/await"},
	"internal/await":           nil,
	"internal/testdeps":        nil,
	"internal/promtest":        {"internal/await", "internal/testdeps"},
	"cmd/interlock":            {"internal/app", "internal/cli", "internal/config"},
	"cmd/interlock-subscriber": {"events", "events/subscribe"},
	"cmd/interlock-demo":       {"events", "projections", "targeting", "local"},
	"cmd/interlock-loadtest":   {"internal/app", "internal/auth", "internal/config"},
	"e2e":                      nil,
	"deploy":                   nil,
}

// TestImportRules holds every package's imports to the table in docs/architecture.md.
func TestImportRules(t *testing.T) {
	out, err := exec.Command("go", "list", "-f", "{{.ImportPath}} {{join .Imports \" \"}}", "./...").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	seen := map[string]bool{}
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		pkg, ok := strings.CutPrefix(fields[0], module)
		if !ok {
			continue // the module's root: this test
		}
		seen[pkg] = true
		rule, known := allowed[pkg]
		if !known {
			t.Errorf("%s is not in the import rules: place it in docs/architecture.md and in allowed", pkg)
			continue
		}
		for _, imp := range fields[1:] {
			dep, own := strings.CutPrefix(imp, module)
			if !own {
				continue
			}
			switch {
			case slices.Contains(rule, dep):
			case slices.Contains(rule, "*") && dep != "internal/cli" && !strings.HasPrefix(dep, "cmd/"):
			default:
				t.Errorf("%s imports %s, which docs/architecture.md does not allow", pkg, dep)
			}
		}
	}
	for pkg := range allowed {
		if !seen[pkg] {
			t.Errorf("the import rules name %s, which is not a package of the module", pkg)
		}
	}
}

// TestArchitectureDocNamesEveryPackage checks the map in docs/architecture.md both ways against
// the import rules: every package has a row, and every row is a package.
func TestArchitectureDocNamesEveryPackage(t *testing.T) {
	doc, err := os.ReadFile("docs/architecture.md")
	if err != nil {
		t.Fatal(err)
	}
	row := regexp.MustCompile("(?m)^\\| `([a-z0-9/-]+)` \\|")
	rows := map[string]bool{}
	for _, m := range row.FindAllStringSubmatch(string(doc), -1) {
		rows[m[1]] = true
	}
	for pkg := range allowed {
		if !rows[pkg] {
			t.Errorf("docs/architecture.md has no row for %s", pkg)
		}
	}
	for pkg := range rows {
		if _, ok := allowed[pkg]; !ok {
			t.Errorf("docs/architecture.md has a row for %s, which the import rules do not know", pkg)
		}
	}
}
