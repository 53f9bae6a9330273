// Package testdeps finds the programs from Debian packages that some tests need (Prometheus,
// Chromium). `make test` runs .ci/test-deps first, which installs them where it can; where a
// program is still missing, the test that needs it skips, saying which package to install.
package testdeps

import (
	"os/exec"
	"testing"
)

// Program returns the path of the program name, from the Debian package pkg. When it is not
// installed the test is skipped, with a reason naming the package.
func Program(tb testing.TB, name, pkg string) string {
	tb.Helper()
	path, err := exec.LookPath(name)
	if err != nil {
		tb.Skipf("skipping: %s is not installed (Debian package %s; `make test` installs it when run as root with apt-get, see .ci/test-deps)", name, pkg)
	}
	return path
}
