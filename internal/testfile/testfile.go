// Package testfile writes the files a test sets up: a project, an OS
// folder, a golden file. It owns only that; what the files hold, and what
// the test asserts about them, stay in the test. Only _test.go files
// import it.
package testfile

import (
	"os"
	"path/filepath"
	"testing"
)

// Write writes content to path, creating its folders, and fails the test
// if it cannot.
func Write(t testing.TB, path, content string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}
