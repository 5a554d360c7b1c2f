package initramfs

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/boottorrent/boottorrent/netboot/netns/nstest"
	"github.com/klauspost/compress/zstd"
	"github.com/u-root/u-root/pkg/cpio"
)

// hostKernel finds a Debian kernel and its modules, or skips.
func hostKernel(t *testing.T) (kernel, modules string) {
	t.Helper()
	ks, _ := filepath.Glob("/boot/vmlinuz-*")
	for _, k := range ks {
		rel := strings.TrimPrefix(filepath.Base(k), "vmlinuz-")
		m := filepath.Join("/lib/modules", rel)
		if _, err := os.Stat(filepath.Join(m, "modules.dep")); err == nil {
			return k, m
		}
	}
	t.Skip("needs a kernel with modules in /boot and /lib/modules: apt-get install linux-image-amd64")
	return "", ""
}

func TestMain(m *testing.M) { nstest.Main(m) }

// TestBuildReproducibleAndCached: two builds in different folders give
// the same bytes; a second Build in the same folder is a cache hit;
// changing an input rebuilds; the image holds /init and the drivers.
func TestBuildReproducibleAndCached(t *testing.T) {
	kernel, modules := hostKernel(t)
	self := nstest.Static(t, nstest.Boottorrent)
	ctx := context.Background()
	o := Options{Kernel: kernel, Modules: modules, Self: self, OutDir: t.TempDir()}
	if _, err := Inspect(o); !errors.Is(err, ErrNotBuilt) {
		t.Fatalf("Inspect before Build: %v, want ErrNotBuilt", err)
	}
	r1, err := Build(ctx, o)
	if err != nil {
		t.Fatal(err)
	}
	if r1.Cached {
		t.Fatal("first build reported cached")
	}
	o2 := o
	o2.OutDir = t.TempDir()
	r2, err := Build(ctx, o2)
	if err != nil {
		t.Fatal(err)
	}
	b1, _ := os.ReadFile(r1.Initramfs)
	b2, _ := os.ReadFile(r2.Initramfs)
	if !bytes.Equal(b1, b2) {
		t.Fatal("two builds of the same inputs differ")
	}
	r3, err := Build(ctx, o)
	if err != nil || !r3.Cached || r3.Size != r1.Size {
		t.Fatalf("second build: %+v %v, want cached", r3, err)
	}
	ri, err := Inspect(o)
	if err != nil || ri.Size != r1.Size {
		t.Fatalf("Inspect: %+v %v", ri, err)
	}
	kfi, _ := os.Stat(kernel)
	if r1.Size != int64(len(b1))+kfi.Size() {
		t.Fatalf("Size %d, want initramfs %d + kernel %d", r1.Size, len(b1), kfi.Size())
	}
	t.Logf("initramfs %d bytes (zstd), kernel %d bytes, total %d", len(b1), kfi.Size(), r1.Size)

	// Contents.
	zr, err := zstd.NewReader(bytes.NewReader(b1))
	if err != nil {
		t.Fatal(err)
	}
	raw, err := zr.DecodeAll(b1, nil)
	if err != nil {
		t.Fatal(err)
	}
	recs, err := cpio.ReadAllRecords(cpio.Newc.Reader(bytes.NewReader(raw)))
	if err != nil {
		t.Fatal(err)
	}
	byName := map[string]cpio.Record{}
	for _, r := range recs {
		byName[r.Name] = r
		if r.MTime != 0 || r.UID != 0 {
			t.Errorf("%s: mtime %d uid %d, want 0 (reproducible)", r.Name, r.MTime, r.UID)
		}
	}
	selfFI, _ := os.Stat(self)
	if r, ok := byName["init"]; !ok || int64(r.FileSize) != selfFI.Size() || r.Mode&0o111 == 0 {
		t.Fatalf("init record: %+v", r.Info)
	}
	if _, ok := byName["dev/console"]; !ok {
		t.Error("no dev/console: the kernel could not open the initial console")
	}
	rel := filepath.Base(modules)
	alias := readRecord(t, byName, "lib/modules/"+rel+"/modules.alias")
	dep := readRecord(t, byName, "lib/modules/"+rel+"/modules.dep")
	for _, m := range []string{"virtio_net", "e1000", "e1000e", "r8169"} {
		if !strings.Contains(alias, " "+m+"\n") {
			t.Errorf("modules.alias has no alias for %s", m)
		}
	}
	for _, l := range strings.Split(strings.TrimSpace(dep), "\n") {
		mod, _, _ := strings.Cut(l, ":")
		if _, ok := byName["lib/modules/"+rel+"/"+mod]; !ok {
			t.Errorf("modules.dep lists %s, which is not packed", mod)
		}
	}

	// A changed input rebuilds.
	o.ExtraModules = []string{"tun"}
	r4, err := Build(ctx, o)
	if err != nil || r4.Cached {
		t.Fatalf("build with extra module: %+v %v, want a rebuild", r4, err)
	}
}

func readRecord(t *testing.T, m map[string]cpio.Record, name string) string {
	t.Helper()
	r, ok := m[name]
	if !ok {
		t.Fatalf("%s missing from the image", name)
	}
	b := make([]byte, r.FileSize)
	if _, err := r.ReadAt(b, 0); err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestRefusesDynamicBinary: a binary that needs libc cannot be /init.
func TestRefusesDynamicBinary(t *testing.T) {
	kernel, modules := hostKernel(t)
	_, err := Build(context.Background(), Options{Kernel: kernel, Modules: modules, Self: "/bin/ls", OutDir: t.TempDir()})
	if !errors.Is(err, ErrNotStatic) || !strings.Contains(err.Error(), "CGO_ENABLED=0") {
		t.Fatalf("Build with /bin/ls: %v, want ErrNotStatic with the fix", err)
	}
}

// TestUnknownExtraModule names the bad config entry.
func TestUnknownExtraModule(t *testing.T) {
	kernel, modules := hostKernel(t)
	_, err := Build(context.Background(), Options{Kernel: kernel, Modules: modules, Self: nstest.Static(t, nstest.Boottorrent), OutDir: t.TempDir(), ExtraModules: []string{"no_such_nic"}})
	if err == nil || !strings.Contains(err.Error(), "client.extra_modules") {
		t.Fatalf("err %v, want a client.extra_modules error", err)
	}
}
