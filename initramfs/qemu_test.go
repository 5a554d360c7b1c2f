package initramfs

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/boottorrent/boottorrent/netboot/netns/nstest"
	"github.com/klauspost/compress/zstd"
	"github.com/u-root/u-root/pkg/cpio"
)

// TestQEMUPacked: with Options.QEMU the image carries a QEMU that starts
// on its own: unpacked into a folder and run chrooted there (no host
// library to fall back on), it prints its version and lists its
// firmware-dependent machine types.
func TestQEMUPacked(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("chroot needs root (run the tests as root, as CI does)")
	}
	if _, err := exec.LookPath("qemu-system-x86_64"); err != nil {
		t.Skip("needs qemu-system-x86_64: apt-get install qemu-system-x86")
	}
	kernel, modules := hostKernel(t)
	r, err := Build(context.Background(), Options{Kernel: kernel, Modules: modules, Self: nstest.Static(t, nstest.Boottorrent), OutDir: t.TempDir(), QEMU: true})
	if err != nil {
		t.Fatal(err)
	}
	img, _ := os.ReadFile(r.Initramfs)
	t.Logf("initramfs with QEMU: %d bytes", len(img))
	zr, err := zstd.NewReader(nil)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := zr.DecodeAll(img, nil)
	if err != nil {
		t.Fatal(err)
	}
	root := t.TempDir()
	recs, err := cpio.ReadAllRecords(cpio.Newc.Reader(bytes.NewReader(raw)))
	if err != nil {
		t.Fatal(err)
	}
	for _, rec := range recs {
		if rec.Name == "dev/console" || rec.Name == "dev/null" {
			continue
		}
		if err := cpio.CreateFileInRoot(rec, root, false); err != nil {
			t.Fatalf("unpack %s: %v", rec.Name, err)
		}
	}
	out, err := exec.Command("chroot", root, "/usr/bin/qemu-system-x86_64", "--version").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "QEMU emulator version") {
		t.Fatalf("packed QEMU does not start: %v\n%s", err, out)
	}
	for _, fw := range []string{"usr/share/seabios/bios-256k.bin", "usr/share/qemu/kvmvapic.bin", "usr/lib/ipxe/qemu/efi-virtio.rom"} {
		if _, err := os.Stat(filepath.Join(root, fw)); err != nil {
			t.Errorf("firmware %s missing: %v", fw, err)
		}
	}
}
