package oss

import (
	"os"
	"path/filepath"
	"testing"
)

func TestWriteFileAtomic(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "sub", "f.json")
	for _, want := range []string{"first", "second, longer"} {
		if err := WriteFileAtomic(p, []byte(want)); err != nil {
			t.Fatal(err)
		}
		got, err := os.ReadFile(p)
		if err != nil || string(got) != want {
			t.Fatalf("read back %q, %v; want %q", got, err, want)
		}
	}
	ents, _ := os.ReadDir(filepath.Dir(p))
	if len(ents) != 1 {
		t.Errorf("folder holds %d entries, want only f.json (no temporary file left)", len(ents))
	}
	// A folder where the file should be: the write fails and leaves nothing.
	if err := WriteFileAtomic(filepath.Dir(p), []byte("x")); err == nil {
		t.Error("writing over a folder succeeded")
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 1 {
		t.Errorf("a failed write left %d entries in %s", len(ents), dir)
	}
}
