package dashboard_test

import (
	"bufio"
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// The committed third-party files are exactly what `npm ci` installs from ui/package-lock.json:
// nobody edited a vendored file, and `make ui` was run after the last version change.
func TestVendoredAssetsMatchNpm(t *testing.T) {
	if _, err := os.Stat(filepath.Join("ui", "node_modules")); err != nil {
		t.Skip("ui/node_modules is absent: run `cd internal/dashboard/ui && npm ci` (or `make ui`) to check the vendored files against the lockfile")
	}
	list, err := os.ReadFile(filepath.Join("ui", "vendor.txt"))
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	sc := bufio.NewScanner(bytes.NewReader(list))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		src, dst, ok := strings.Cut(line, " ")
		if !ok {
			t.Fatalf("vendor.txt: %q is not 'source destination'", line)
		}
		want, err := os.ReadFile(filepath.Join("ui", "node_modules", src))
		if err != nil {
			t.Fatal(err)
		}
		got, err := os.ReadFile(filepath.FromSlash(strings.TrimSpace(dst)))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want) {
			t.Errorf("%s differs from node_modules/%s: run make ui", dst, src)
		}
		n++
	}
	if n == 0 {
		t.Fatal("vendor.txt lists no file")
	}
}
