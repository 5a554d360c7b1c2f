package config

import (
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/boottorrent/boottorrent/internal/testfile"
)

// TestHostileFiles loads projects whose Boottorrent.yaml or an OS's
// config.yaml is something other than a small regular file. Each must give
// a clear problem naming the file quickly, with bounded memory: before
// 2026-12-07 a FIFO hung check for ever and /dev/zero or a 100 MB list ran
// it out of memory.
func TestHostileFiles(t *testing.T) {
	big := func(t *testing.T, path string) {
		f, err := os.Create(path)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		line := []byte(strings.Repeat("- debian\n", 1000))
		if _, err := f.WriteString("version: 1\nboot:\n  menu:\n"); err != nil {
			t.Fatal(err)
		}
		for n := 0; n < 100<<20; n += len(line) {
			if _, err := f.Write(line); err != nil {
				t.Fatal(err)
			}
		}
	}
	fifo := func(t *testing.T, path string) {
		if err := syscall.Mkfifo(path, 0o644); err != nil {
			t.Skipf("cannot make a FIFO here (%v); the test needs a filesystem that allows one", err)
		}
	}
	link := func(target string) func(*testing.T, string) {
		return func(t *testing.T, path string) {
			if _, err := os.Stat(target); err != nil {
				t.Skipf("%s is missing (%v); the test needs it", target, err)
			}
			if err := os.Symlink(target, path); err != nil {
				t.Fatal(err)
			}
		}
	}
	dir := func(t *testing.T, path string) {
		if err := os.Mkdir(path, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	// list writes head followed by n copies of item.
	list := func(head, item string) func(n int) func(*testing.T, string) {
		return func(n int) func(*testing.T, string) {
			return func(t *testing.T, path string) {
				testfile.Write(t, path, head+strings.Repeat(item, n))
			}
		}
	}
	// Indented by one space so that 100,000 entries fit under the size
	// limit and the list limit is what refuses them.
	menu := list("version: 1\nboot:\n menu:\n", " - debian\n")
	osFiles := list("method: kexec\nkernel: vmlinuz\nfiles:\n", "- vmlinuz\n")
	cases := []struct {
		name   string
		osFile bool // make oss/debian/config.yaml hostile instead of Boottorrent.yaml
		make   func(*testing.T, string)
		want   []string
	}{
		{"fifo", false, fifo, []string{FileName + ": is a named pipe (FIFO), not a regular file"}},
		{"os fifo", true, fifo, []string{"oss/debian/config.yaml: is a named pipe (FIFO), not a regular file"}},
		{"dev zero link", false, link("/dev/zero"), []string{FileName + ": is a device, not a regular file"}},
		{"os dev urandom link", true, link("/dev/urandom"), []string{"config.yaml: is a device, not a regular file"}},
		{"directory", false, dir, []string{FileName + ": is a folder, not a regular file"}},
		{"100 MB", false, big, []string{FileName + ": 104859025 bytes, more than the limit of 1048576"}},
		{"100000-entry menu", false, menu(100000), []string{FileName + ":3: boot.menu: 100000 entries, more than the limit of 256"}},
		{"os 20000 files", true, osFiles(20000), []string{"config.yaml:3: files: 20000 entries, more than the limit of 10000"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			proj := newProject(t, "version: 1\n")
			path := filepath.Join(proj, FileName)
			if c.osFile {
				path = filepath.Join(proj, "oss/debian/config.yaml")
			}
			if err := os.Remove(path); err != nil {
				t.Fatal(err)
			}
			c.make(t, path)
			var before, after runtime.MemStats
			runtime.GC()
			runtime.ReadMemStats(&before)
			done := make(chan error, 1)
			start := time.Now()
			go func() {
				_, err := LoadProject(proj, fakeHost(t))
				done <- err
			}()
			var err error
			select {
			case err = <-done:
			case <-time.After(10 * time.Second):
				// Unblock a reader stuck on the FIFO so the goroutine
				// ends with the test.
				if w, e := os.OpenFile(path, os.O_WRONLY|syscall.O_NONBLOCK, 0); e == nil {
					w.Close()
				}
				t.Fatalf("LoadProject still running after 10 s")
			}
			took := time.Since(start)
			runtime.ReadMemStats(&after)
			if err == nil {
				t.Fatal("no problem reported")
			}
			for _, w := range c.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("want %q in:\n%v", w, err)
				}
			}
			if alloc := after.TotalAlloc - before.TotalAlloc; alloc > 256<<20 {
				t.Errorf("allocated %d MiB to refuse it; want at most 256", alloc>>20)
			}
			if took > 5*time.Second {
				t.Errorf("took %v; want a quick refusal", took)
			}
			t.Logf("%v, %d KiB allocated: %s", took.Round(time.Millisecond), (after.TotalAlloc-before.TotalAlloc)>>10, strings.SplitN(err.Error(), "\n", 2)[0])
		})
	}
}
