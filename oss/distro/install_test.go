package distro

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"testing/fstest"
)

func liveMedium() (Medium, *Plan) {
	fsys := fstest.MapFS{
		"live/vmlinuz":             {Data: []byte("kernel")},
		"live/initrd.img":          {Data: []byte("initrd")},
		"live/filesystem.squashfs": {Data: bytes.Repeat([]byte("s"), 3*chunk+5)},
	}
	p, err := Detect(fsys)
	if err != nil {
		panic(err)
	}
	iso := []byte("the medium")
	return Medium{FS: fsys, ISO: bytes.NewReader(iso), Size: int64(len(iso))}, p
}

func TestInstall(t *testing.T) {
	m, p := liveMedium()
	dir := t.TempDir()
	var calls []string
	total, err := Install(context.Background(), m, p, dir, "debian", []byte("method: kexec\n"), func(f string, done, size int64) {
		calls = append(calls, f)
	})
	if err != nil {
		t.Fatal(err)
	}
	if total != 3*chunk+5+12 {
		t.Errorf("total %d", total)
	}
	for _, f := range []string{"live/vmlinuz", "live/initrd.img", "live/filesystem.squashfs", "config.yaml"} {
		if _, err := os.Stat(filepath.Join(dir, "debian", f)); err != nil {
			t.Error(err)
		}
	}
	// 1 call per small file, one per 4 MiB chunk of the squashfs.
	if n := strings.Count(strings.Join(calls, " "), "live/filesystem.squashfs"); n != 4 {
		t.Errorf("%d progress calls for the squashfs, want 4", n)
	}
	if fi, _ := os.Stat(filepath.Join(dir, "debian")); fi.Mode().Perm() != 0o755 {
		t.Errorf("folder mode %v", fi.Mode())
	}
	if _, err := Install(context.Background(), m, p, dir, "debian", nil, nil); err == nil || !strings.Contains(err.Error(), "exists already") {
		t.Errorf("second install: %v", err)
	}
}

// TestInstallInterrupted cancels during the big file's copy: nothing is
// left in oss/, neither the folder nor its temporary twin.
func TestInstallInterrupted(t *testing.T) {
	m, p := liveMedium()
	dir := t.TempDir()
	ctx, cancel := context.WithCancel(context.Background())
	_, err := Install(ctx, m, p, dir, "debian", nil, func(f string, done, size int64) {
		if done == chunk {
			cancel()
		}
	})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("err %v, want context.Canceled", err)
	}
	ents, _ := os.ReadDir(dir)
	if len(ents) != 0 {
		t.Errorf("left behind: %v", ents)
	}
}

// TestInstallTooLarge refuses a root filesystem the newc archive cannot
// hold, before copying anything.
func TestInstallTooLarge(t *testing.T) {
	m, p := liveMedium()
	p.WholeISO = "big.iso"
	p.InitrdFiles = append(p.InitrdFiles, InitrdFile{File: "big.iso"})
	m.Size = 5 << 30
	dir := t.TempDir()
	if _, err := Install(context.Background(), m, p, dir, "x", nil, nil); err == nil || !strings.Contains(err.Error(), "under 4 GiB") {
		t.Errorf("err %v", err)
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 0 {
		t.Errorf("left behind: %v", ents)
	}
}
