// Package heraldbin builds the herald binary for tests that run it as a
// real process.
package heraldbin

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// Main is a TestMain: it builds the herald command in pkgDir (relative to
// the test's package) with the race detector into a temporary directory,
// sets *path to the binary, runs the tests, removes the binary and exits.
func Main(m *testing.M, pkgDir string, path *string) {
	dir, err := os.MkdirTemp("", "herald-bin")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	*path = filepath.Join(dir, "herald")
	build := exec.Command("go", "build", "-race", "-o", *path, pkgDir)
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "build herald:", err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}
