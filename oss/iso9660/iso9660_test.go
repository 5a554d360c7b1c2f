package iso9660

import (
	"bytes"
	"compress/gzip"
	"crypto/rand"
	"errors"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/boottorrent/boottorrent/internal/testfile"
)

// buildISO writes files (path → content) and links (path → target) into a
// folder and packs it with Debian's xorriso using args (e.g. "-R", "-J").
func buildISO(t *testing.T, files, links map[string]string, args ...string) string {
	t.Helper()
	xorriso, err := exec.LookPath("xorriso")
	if err != nil {
		t.Skip("xorriso is not installed (Debian package xorriso, listed in .ci/packages)")
	}
	dir := t.TempDir()
	tree := filepath.Join(dir, "tree")
	for p, c := range files {
		testfile.Write(t, filepath.Join(tree, p), c)
	}
	for p, target := range links {
		if err := os.MkdirAll(filepath.Dir(filepath.Join(tree, p)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink(target, filepath.Join(tree, p)); err != nil {
			t.Fatal(err)
		}
	}
	iso := filepath.Join(dir, "test.iso")
	cmd := exec.Command(xorriso, append(append([]string{"-as", "mkisofs", "-V", "TEST_VOL", "-o", iso}, args...), tree)...)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("xorriso: %v\n%s", err, out)
	}
	return iso
}

func openISO(t *testing.T, p string) *Image {
	t.Helper()
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	st, err := f.Stat()
	if err != nil {
		t.Fatal(err)
	}
	im, err := Open(f, st.Size())
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	return im
}

func TestNamings(t *testing.T) {
	files := map[string]string{
		"live/vmlinuz-6.1.0-18-amd64":           "kernel bytes",
		"live/filesystem.squashfs":              "squash",
		"Mixed Case Dir/a long file name.image": "long",
	}
	for _, tc := range []struct {
		name   string
		args   []string
		names  Names
		expect map[string]string // path → content, as the naming shows it
	}{
		{"rock ridge and joliet", []string{"-R", "-J"}, NamesRockRidge, map[string]string{
			"live/vmlinuz-6.1.0-18-amd64": "kernel bytes", "live/filesystem.squashfs": "squash",
			"Mixed Case Dir/a long file name.image": "long"}},
		{"rock ridge only", []string{"-R"}, NamesRockRidge, map[string]string{
			"live/filesystem.squashfs": "squash", "Mixed Case Dir/a long file name.image": "long"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			im := openISO(t, buildISO(t, files, nil, tc.args...))
			if im.Names() != tc.names || im.VolumeID() != "TEST_VOL" {
				t.Errorf("names %v volume %q, want %v TEST_VOL", im.Names(), im.VolumeID(), tc.names)
			}
			for p, want := range tc.expect {
				got, err := fs.ReadFile(im.FS(), p)
				if err != nil || string(got) != want {
					t.Errorf("%s: %q, %v; want %q", p, got, err, want)
				}
			}
		})
	}
}

// TestJolietAndPlain builds images without Rock Ridge (xorriso's native
// commands; its mkisofs emulation always writes Rock Ridge).
func TestJolietAndPlain(t *testing.T) {
	if _, err := exec.LookPath("xorriso"); err != nil {
		t.Skip("xorriso is not installed (Debian package xorriso, listed in .ci/packages)")
	}
	dir := t.TempDir()
	testfile.Write(t, filepath.Join(dir, "tree/casper/minimal.standard.live.squashfs"), "layer")
	for _, tc := range []struct {
		joliet string
		names  Names
		path   string
	}{
		{"on", NamesJoliet, "casper/minimal.standard.live.squashfs"},
		{"off", NamesPlain, "casper/minimal_standard_live.squashfs"},
	} {
		iso := filepath.Join(dir, "j"+tc.joliet+".iso")
		out, err := exec.Command("xorriso", "-outdev", iso, "-rockridge", "off", "-joliet", tc.joliet,
			"-map", filepath.Join(dir, "tree"), "/").CombinedOutput()
		if err != nil {
			t.Fatalf("xorriso: %v\n%s", err, out)
		}
		im := openISO(t, iso)
		if im.Names() != tc.names {
			t.Errorf("joliet %s: names %v, want %v", tc.joliet, im.Names(), tc.names)
		}
		if got, err := fs.ReadFile(im.FS(), tc.path); err != nil || string(got) != "layer" {
			t.Errorf("joliet %s: %s: %q, %v", tc.joliet, tc.path, got, err)
		}
	}
}

func TestLinks(t *testing.T) {
	iso := buildISO(t, map[string]string{"live/vmlinuz-6.1": "kernel", "boot/x": "x"}, map[string]string{
		"live/vmlinuz":   "vmlinuz-6.1",
		"live/up":        "../boot/x",
		"dirlink":        "live",
		"live/out":       "../../etc/passwd",
		"live/abs":       "/etc/passwd",
		"live/loop":      "loop",
		"live/dangling":  "nothing",
		"live/selfdir/x": "../../live/vmlinuz",
	}, "-R")
	fsys := openISO(t, iso).FS()
	for p, want := range map[string]string{"live/vmlinuz": "kernel", "live/up": "x", "dirlink/vmlinuz-6.1": "kernel", "live/selfdir/x": "kernel"} {
		if got, err := fs.ReadFile(fsys, p); err != nil || string(got) != want {
			t.Errorf("%s: %q, %v; want %q", p, got, err, want)
		}
	}
	for p, want := range map[string]error{"live/out": ErrEscape, "live/abs": ErrEscape, "live/loop": ErrMalformed, "live/dangling": fs.ErrNotExist} {
		if _, err := fs.ReadFile(fsys, p); !errors.Is(err, want) {
			t.Errorf("%s: %v, want %v", p, err, want)
		}
	}
	ents, err := fs.ReadDir(fsys, "live")
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		if e.Name() == "vmlinuz" && e.Type() != fs.ModeSymlink {
			t.Errorf("ReadDir shows live/vmlinuz as %v, want a link", e.Type())
		}
	}
}

func TestTruncatedAndNotISO(t *testing.T) {
	iso := buildISO(t, map[string]string{"live/filesystem.squashfs": string(bytes.Repeat([]byte("s"), 300_000))}, nil, "-R", "-no-pad")
	data, err := os.ReadFile(iso)
	if err != nil {
		t.Fatal(err)
	}
	// Cut inside the squashfs's data: the directories still read, the file
	// is refused as lying past the end.
	cut := data[:len(data)-200_000]
	im, err := Open(bytes.NewReader(cut), int64(len(cut)))
	if err != nil {
		t.Fatalf("Open of a truncated image: %v", err)
	}
	if _, err := fs.ReadFile(im.FS(), "live/filesystem.squashfs"); !errors.Is(err, ErrMalformed) {
		t.Errorf("truncated file: %v, want ErrMalformed", err)
	}
	if _, err := Open(bytes.NewReader(data[:17*sectorSize]), 17*sectorSize); err == nil {
		t.Error("an image cut after its descriptors opened")
	}
	junk := make([]byte, 64*sectorSize)
	rand.Read(junk)
	if _, err := Open(bytes.NewReader(junk), int64(len(junk))); !errors.Is(err, ErrNotISO) {
		t.Errorf("random bytes: %v, want ErrNotISO", err)
	}
	if _, err := Open(bytes.NewReader(nil), 0); !errors.Is(err, ErrNotISO) {
		t.Errorf("empty: %v, want ErrNotISO", err)
	}
}

// TestBadName patches a Rock Ridge name into ".." and one into "a/b": both
// are refused instead of being handed to a caller as a path.
func TestBadName(t *testing.T) {
	iso := buildISO(t, map[string]string{"live/zz": "x", "live/yyy": "y"}, nil, "-R")
	data, err := os.ReadFile(iso)
	if err != nil {
		t.Fatal(err)
	}
	for old, repl := range map[string]string{"NM\x07\x01\x00zz": "NM\x07\x01\x00..", "NM\x08\x01\x00yyy": "NM\x08\x01\x00a/b"} {
		bad := bytes.Replace(data, []byte(old), []byte(repl), 1)
		if bytes.Equal(bad, data) {
			t.Fatalf("NM entry %q not found in xorriso's image", old)
		}
		im, err := Open(bytes.NewReader(bad), int64(len(bad)))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := fs.ReadDir(im.FS(), "live"); !errors.Is(err, ErrEscape) {
			t.Errorf("name %q: %v, want ErrEscape", repl[5:], err)
		}
	}
}

func seedImage(t testing.TB) []byte {
	f, err := os.Open("testdata/seed.iso.gz")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	z, err := gzip.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(z)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestSeed reads the fuzz seed (xorriso -R -J: live/vmlinuz → vmlinuz-6.1,
// live/filesystem.squashfs, d/out → ../../x) so the seed is known to be a
// real image.
func TestSeed(t *testing.T) {
	b := seedImage(t)
	im, err := Open(bytes.NewReader(b), int64(len(b)))
	if err != nil {
		t.Fatal(err)
	}
	if got, err := fs.ReadFile(im.FS(), "live/vmlinuz"); err != nil || string(got) != "kernel\n" {
		t.Errorf("live/vmlinuz: %q, %v", got, err)
	}
	if _, err := fs.ReadFile(im.FS(), "d/out"); !errors.Is(err, ErrEscape) {
		t.Errorf("d/out: %v, want ErrEscape", err)
	}
}

// FuzzImage feeds mutated images to the reader: it must return errors,
// never panic, hang or allocate past its bounds. The input is the image
// from sector 16 on (the system area before it is never read), which keeps
// inputs small enough for the fuzzer to mutate quickly.
func FuzzImage(f *testing.F) {
	seed := seedImage(f)[firstDescriptor*sectorSize:]
	f.Add(seed)
	f.Add(seed[:3*sectorSize])
	f.Fuzz(func(t *testing.T, tail []byte) {
		data := append(make([]byte, firstDescriptor*sectorSize), tail...)
		im, err := Open(bytes.NewReader(data), int64(len(data)))
		if err != nil {
			return
		}
		fsys := im.FS()
		n := 0
		_ = fs.WalkDir(fsys, ".", func(p string, d fs.DirEntry, err error) error {
			if err != nil {
				return nil
			}
			if n++; n > 1000 {
				return fs.SkipAll
			}
			if d.Type().IsRegular() {
				if f, err := fsys.Open(p); err == nil {
					io.Copy(io.Discard, io.LimitReader(f, 64<<10))
					f.Close()
				}
			}
			return nil
		})
		for _, p := range []string{"live/vmlinuz", "d/out", "live/filesystem.squashfs"} {
			fs.ReadFile(fsys, p)
		}
	})
}

// TestMultiExtent joins a file's sections (ECMA-119 9.1.6: flag bit 7 on
// every record but the last, same name). xorriso writes them only for
// files of 4 GiB and more, so two small files are patched into one: the
// first record gets the flag and the second file's names become the
// first's. A real 4.6 GiB file from xorriso -iso-level 3 read back with the
// same SHA-256 on 2026-12-07 (too large for a unit test).
func TestMultiExtent(t *testing.T) {
	a, b := strings.Repeat("A", 2048), strings.Repeat("B", 100)
	iso := buildISO(t, map[string]string{"d/zz1": a, "d/zz2": b}, nil, "-R")
	data, err := os.ReadFile(iso)
	if err != nil {
		t.Fatal(err)
	}
	patch := func(old, repl string) {
		i := bytes.Index(data, []byte(old))
		if i < 0 {
			t.Fatalf("%q not found in xorriso's image", old)
		}
		copy(data[i:], repl)
	}
	i := bytes.Index(data, []byte("ZZ1.;1"))
	if i < 33 {
		t.Fatal("record of zz1 not found")
	}
	data[i-33+25] |= 0x80
	patch("ZZ2.;1", "ZZ1.;1")
	patch("NM\x08\x01\x00zz2", "NM\x08\x01\x00zz1")
	im, err := Open(bytes.NewReader(data), int64(len(data)))
	if err != nil {
		t.Fatal(err)
	}
	ents, err := fs.ReadDir(im.FS(), "d")
	if err != nil || len(ents) != 1 || ents[0].Name() != "zz1" {
		t.Fatalf("ReadDir: %v, %v", ents, err)
	}
	if fi, _ := ents[0].Info(); fi.Size() != 2148 {
		t.Errorf("size %d, want 2148", fi.Size())
	}
	if got, err := fs.ReadFile(im.FS(), "d/zz1"); err != nil || string(got) != a+b {
		t.Errorf("read %d bytes, %v; want the two sections joined", len(got), err)
	}
	// Without its last section, the file is refused.
	data[i-33+25+bytes.Index(data[i+1:], []byte("ZZ1.;1"))+1] |= 0x80
	im, err = Open(bytes.NewReader(data), int64(len(data)))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := fs.ReadDir(im.FS(), "d"); !errors.Is(err, ErrMalformed) {
		t.Errorf("missing final extent: %v, want ErrMalformed", err)
	}
}
