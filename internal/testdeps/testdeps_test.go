package testdeps

import (
	"os"
	"path/filepath"
	"testing"
)

func TestProgramFound(t *testing.T) {
	dir := t.TempDir()
	prog := filepath.Join(dir, "some-tool")
	if err := os.WriteFile(prog, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PATH", dir)
	if got := Program(t, "some-tool", "some-package"); got != prog {
		t.Fatalf("Program = %q, want %q", got, prog)
	}
}

func TestProgramMissingSkips(t *testing.T) {
	t.Setenv("PATH", t.TempDir())
	var skipped bool
	t.Run("inner", func(t *testing.T) {
		defer func() { skipped = t.Skipped() }()
		Program(t, "no-such-tool", "no-such-package")
		t.Error("Program returned for a missing program")
	})
	if !skipped {
		t.Fatal("a missing program did not skip the test")
	}
}
