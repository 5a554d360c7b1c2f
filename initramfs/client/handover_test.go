package client

import (
	"bytes"
	"context"
	"crypto/rand"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/anacrolix/torrent/metainfo"
	"github.com/u-root/u-root/pkg/cpio"

	"github.com/boottorrent/boottorrent/initramfs/bootapi"
)

// TestHandoverLayout downloads an OS that hands two files over through
// the RAM storage, piece by piece, and checks that the combined initrd
// exists when the last piece is written: the OS's initrd, zero padding to
// 4 bytes, then a newc archive that u-root's reader parses into the
// folders and the files at their destinations, the files' bytes intact.
// The HTTP baseline's assembled copy must be the same bytes.
func TestHandoverLayout(t *testing.T) {
	src := filepath.Join(t.TempDir(), "deb")
	files := map[string][]byte{"vmlinuz": make([]byte, 5000), "initrd.img": make([]byte, 70_001),
		"live/filesystem.squashfs": make([]byte, 300_003), "udev.rules": []byte("ACTION==\"add\"\n"), "config.yaml": []byte("x")}
	for n, b := range files {
		rand.Read(b[:len(b)-1])
		os.MkdirAll(filepath.Dir(filepath.Join(src, n)), 0o755)
		os.WriteFile(filepath.Join(src, n), b, 0o644)
	}
	o := &bootapi.OS{Name: "deb", Kernel: "vmlinuz", Initrd: "initrd.img", InitrdFiles: []bootapi.InitrdFile{
		{File: "live/filesystem.squashfs", As: "/boottorrent/live/filesystem.squashfs"},
		{File: "udev.rules", As: "/etc/udev/rules.d/99-bt.rules"}}}
	info := metainfo.Info{PieceLength: 32 << 10}
	if err := info.BuildFromFilePath(src); err != nil {
		t.Fatal(err)
	}
	dst := t.TempDir()
	st := newRAMStore(dst)
	st.combine = handoverFor(o)
	ti, err := st.OpenTorrent(context.Background(), &info, metainfo.Hash{})
	if err != nil {
		t.Fatal(err)
	}
	var all []byte
	for _, f := range info.UpvertedFiles() {
		all = append(all, files[filepath.Join(f.BestPath()...)]...)
	}
	for i := info.NumPieces() - 1; i >= 0; i-- { // any order
		mp := info.Piece(i)
		if _, err := ti.Piece(mp).WriteAt(all[mp.Offset():mp.Offset()+mp.Length()], 0); err != nil {
			t.Fatal(err)
		}
		got := make([]byte, mp.Length())
		if n, err := ti.Piece(mp).ReadAt(got, 0); int64(n) != mp.Length() || (err != nil && err != io.EOF) || !bytes.Equal(got, all[mp.Offset():mp.Offset()+mp.Length()]) {
			t.Fatalf("piece %d reads back %d %v", i, n, err)
		}
	}
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dst, "deb", "live/filesystem.squashfs")); err == nil {
		t.Error("the squashfs was also written as a plain file")
	}
	combined, err := os.ReadFile(combinedPath(filepath.Join(dst, "deb")))
	if err != nil {
		t.Fatal(err)
	}
	checkCombined(t, combined, files)

	// The HTTP baseline: plain files, assembled at boot.
	f := &Fetched{Dir: src}
	r, err := openInitrd(o, f)
	if err != nil {
		t.Fatal(err)
	}
	assembled, _ := io.ReadAll(r)
	r.Close()
	if !bytes.Equal(assembled, combined) {
		t.Errorf("assembled initrd (%d bytes) differs from the downloaded layout (%d bytes)", len(assembled), len(combined))
	}
}

func checkCombined(t *testing.T, combined []byte, files map[string][]byte) {
	t.Helper()
	n := len(files["initrd.img"])
	if !bytes.Equal(combined[:n], files["initrd.img"]) {
		t.Fatal("the combined initrd does not start with the OS's initrd")
	}
	if pad := combined[n:align4i(n)]; !bytes.Equal(pad, make([]byte, len(pad))) || len(pad) != 3 {
		t.Fatalf("padding %v", pad)
	}
	rr := cpio.Newc.Reader(bytes.NewReader(combined[align4i(n):]))
	recs, err := cpio.ReadAllRecords(rr)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string][]byte{}
	var names []string
	for _, r := range recs {
		names = append(names, r.Name)
		if r.Mode&cpio.S_IFMT == cpio.S_IFREG {
			got[r.Name], _ = io.ReadAll(io.NewSectionReader(r.ReaderAt, 0, int64(r.FileSize)))
		}
	}
	want := []string{"boottorrent", "boottorrent/live", "etc", "etc/udev", "etc/udev/rules.d",
		"boottorrent/live/filesystem.squashfs", "etc/udev/rules.d/99-bt.rules"}
	if len(names) != len(want) {
		t.Fatalf("records %q, want %q", names, want)
	}
	for i := range want {
		if names[i] != want[i] {
			t.Fatalf("records %q, want %q", names, want)
		}
	}
	if !bytes.Equal(got["boottorrent/live/filesystem.squashfs"], files["live/filesystem.squashfs"]) || !bytes.Equal(got["etc/udev/rules.d/99-bt.rules"], files["udev.rules"]) {
		t.Error("file contents differ")
	}
	if !bytes.HasSuffix(bytes.TrimRight(combined, "\x00"), []byte("TRAILER!!!")) {
		t.Error("no trailer at the end")
	}
}

func align4i(n int) int { return (n + 3) &^ 3 }

// TestPlanHandoverRefuses checks what a hostile or wrong server could
// send: destinations outside the rules, unknown files, a file twice.
func TestPlanHandoverRefuses(t *testing.T) {
	sizes := map[string]int64{"i": 10, "a": 5, "big": 1 << 32}
	for _, tc := range []struct {
		name string
		fs   []bootapi.InitrdFile
	}{
		{"relative", []bootapi.InitrdFile{{File: "a", As: "boottorrent/a"}}},
		{"dotdot", []bootapi.InitrdFile{{File: "a", As: "/boottorrent/../run/a"}}},
		{"run", []bootapi.InitrdFile{{File: "a", As: "/run/a"}}},
		{"proc", []bootapi.InitrdFile{{File: "a", As: "/proc"}}},
		{"unknown", []bootapi.InitrdFile{{File: "nope", As: "/boottorrent/nope"}}},
		{"twice", []bootapi.InitrdFile{{File: "a", As: "/x"}, {File: "a", As: "/y"}}},
		{"initrd", []bootapi.InitrdFile{{File: "i", As: "/x"}}},
		{"4 GiB", []bootapi.InitrdFile{{File: "big", As: "/x"}}},
	} {
		if _, err := planHandover("/nonexistent", &bootapi.OS{Initrd: "i", InitrdFiles: tc.fs}, sizes); err == nil {
			t.Errorf("%s: accepted", tc.name)
		}
	}
}

func TestBootCmdline(t *testing.T) {
	files := []bootapi.InitrdFile{{File: "live/filesystem.squashfs", As: "/boottorrent/live/filesystem.squashfs"}}
	for _, c := range []struct {
		cmdline string
		files   []bootapi.InitrdFile
		want    string
	}{
		{"boot=live live-media=/boottorrent", files, "boot=live live-media=/boottorrent rootfstype=ramfs"},
		{"", files, "rootfstype=ramfs"},
		{"root=live:/boottorrent/LiveOS/squashfs.img rd.live.image", files, "root=live:/boottorrent/LiveOS/squashfs.img rd.live.image"},
		{"boot=live rootfstype=tmpfs", files, "boot=live rootfstype=tmpfs"},
		{"priority=critical", nil, "priority=critical"},
		{"boot=live noroot=1", files, "boot=live noroot=1 rootfstype=ramfs"},
	} {
		if got := bootCmdline(&bootapi.OS{Cmdline: c.cmdline, InitrdFiles: c.files}); got != c.want {
			t.Errorf("bootCmdline(%q, %d files) = %q, want %q", c.cmdline, len(c.files), got, c.want)
		}
	}
}
