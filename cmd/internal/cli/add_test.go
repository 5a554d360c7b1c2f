package cli

import (
	"bytes"
	"crypto/rand"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/boottorrent/boottorrent/internal/testfile"
)

// isoTree is a medium's layout: path → size of random content, and links.
type isoTree struct {
	files map[string]int
	links map[string]string
}

// buildISO writes the tree with random contents and packs it with Debian's
// xorriso (Rock Ridge and Joliet), as distributions' media are made. It
// returns the image's path and the folder it was made from.
func buildISO(t *testing.T, tree isoTree, volid string) (iso, src string) {
	t.Helper()
	if _, err := exec.LookPath("xorriso"); err != nil {
		t.Skip("xorriso is not installed (Debian package xorriso, listed in .ci/packages)")
	}
	dir := t.TempDir()
	src = filepath.Join(dir, "tree")
	for p, n := range tree.files {
		b := make([]byte, n)
		rand.Read(b)
		if err := os.MkdirAll(filepath.Dir(filepath.Join(src, p)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(src, p), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for p, target := range tree.links {
		if err := os.MkdirAll(filepath.Dir(filepath.Join(src, p)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink(target, filepath.Join(src, p)); err != nil {
			t.Fatal(err)
		}
	}
	iso = filepath.Join(dir, "test.iso")
	out, err := exec.Command("xorriso", "-as", "mkisofs", "-R", "-J", "-V", volid, "-o", iso, src).CombinedOutput()
	if err != nil {
		t.Fatalf("xorriso: %v\n%s", err, out)
	}
	return iso, src
}

// newProject makes a project folder as init does.
func newProject(t *testing.T) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "lab")
	env, _, errb := testEnv(t, t.TempDir())
	if code := Main([]string{"init", dir}, env); code != 0 {
		t.Fatalf("init: exit %d: %s", code, errb.String())
	}
	return dir
}

// noLeftovers checks that oss/ holds no temporary folder of a failed add.
func noLeftovers(t *testing.T, dir string) {
	t.Helper()
	ents, err := os.ReadDir(filepath.Join(dir, "oss"))
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), ".") {
			t.Errorf("oss/%s left behind", e.Name())
		}
	}
}

func sameFile(t *testing.T, got, want string) {
	t.Helper()
	a, err := os.ReadFile(got)
	if err != nil {
		t.Error(err)
		return
	}
	b, err := os.ReadFile(want)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(a, b) {
		t.Errorf("%s (%d bytes) differs from %s (%d bytes)", got, len(a), want, len(b))
	}
}

// TestAddFamilies runs add on xorriso images in each family's real layout
// and compares config.yaml with testdata/add/FAMILY.yaml (-update rewrites
// them) and every copied file with the original, byte for byte.
func TestAddFamilies(t *testing.T) {
	const big = 3<<20 + 517 // several extents' worth of sectors, not a multiple of 2048
	for _, tc := range []struct {
		family string
		volid  string
		tree   isoTree
		copied []string // files expected in oss/NAME, compared with the tree
	}{
		{family: "live-boot", volid: "d-live 12.5.0 st amd64", tree: isoTree{files: map[string]int{
			"live/vmlinuz-6.1.0-18-amd64": 7000, "live/initrd.img-6.1.0-18-amd64": 9000, "live/filesystem.squashfs": big,
			"live/filesystem.packages": 100, "install/vmlinuz": 10, "isolinux/isolinux.cfg": 10}},
			copied: []string{"live/vmlinuz-6.1.0-18-amd64", "live/initrd.img-6.1.0-18-amd64", "live/filesystem.squashfs"}},
		{family: "kali", volid: "Kali Live", tree: isoTree{
			files: map[string]int{"live/vmlinuz-6.6.9-amd64": 7000, "live/initrd.img-6.6.9-amd64": 9000, "live/filesystem.squashfs": big},
			links: map[string]string{"live/vmlinuz": "vmlinuz-6.6.9-amd64", "live/initrd.img": "initrd.img-6.6.9-amd64"}},
			copied: []string{"live/vmlinuz", "live/initrd.img", "live/filesystem.squashfs"}},
		{family: "casper", volid: "Ubuntu 24.04.1 LTS amd64", tree: isoTree{files: map[string]int{
			"casper/vmlinuz": 7000, "casper/initrd": 9000, "casper/minimal.squashfs": big, "casper/minimal.standard.squashfs": 40000,
			"casper/minimal.standard.live.squashfs": 30000, "casper/install-sources.yaml": 300, "casper/minimal.squashfs.gpg": 100, ".disk/info": 50}},
			copied: []string{"casper/vmlinuz", "casper/initrd", "casper/minimal.squashfs", "casper/minimal.standard.squashfs",
				"casper/minimal.standard.live.squashfs", "casper/install-sources.yaml"}},
		{family: "dracut-live", volid: "Fedora-WS-Live-41-1-4", tree: isoTree{files: map[string]int{
			"images/pxeboot/vmlinuz": 7000, "images/pxeboot/initrd.img": 9000, "LiveOS/squashfs.img": big, "boot/grub2/grub.cfg": 100}},
			copied: []string{"images/pxeboot/vmlinuz", "images/pxeboot/initrd.img", "LiveOS/squashfs.img"}},
		{family: "archiso", volid: "ARCH_202412", tree: isoTree{files: map[string]int{
			"arch/boot/x86_64/vmlinuz-linux": 7000, "arch/boot/x86_64/initramfs-linux.img": 9000, "arch/x86_64/airootfs.sfs": big,
			"arch/boot/intel-ucode.img": 100, "boot/syslinux/syslinux.cfg": 100}},
			copied: []string{"arch/boot/x86_64/vmlinuz-linux", "arch/boot/x86_64/initramfs-linux.img"}},
		{family: "debian-installer", volid: "Debian 12.8.0 amd64 n", tree: isoTree{files: map[string]int{
			"install.amd/vmlinuz": 7000, "install.amd/initrd.gz": 9000, "pool/main/a/apt/apt_2.6.1_amd64.deb": 1000}},
			copied: []string{"install.amd/vmlinuz", "install.amd/initrd.gz"}},
	} {
		t.Run(tc.family, func(t *testing.T) {
			iso, src := buildISO(t, tc.tree, tc.volid)
			dir := newProject(t)
			env, out, errb := testEnv(t, dir)
			if code := Main([]string{"add", iso, "myos"}, env); code != 0 {
				t.Fatalf("add: exit %d\nstdout: %s\nstderr: %s", code, out, errb)
			}
			osDir := filepath.Join(dir, "oss", "myos")
			got, err := os.ReadFile(filepath.Join(osDir, "config.yaml"))
			if err != nil {
				t.Fatal(err)
			}
			golden := filepath.Join("testdata", "add", tc.family+".yaml")
			if *update {
				testfile.Write(t, golden, string(got))
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, want) {
				t.Errorf("config.yaml differs from %s:\n%s", golden, got)
			}
			for _, f := range tc.copied {
				sameFile(t, filepath.Join(osDir, f), filepath.Join(src, f))
			}
			if tc.family == "archiso" {
				sameFile(t, filepath.Join(osDir, "archiso.iso"), iso)
				rule, err := os.ReadFile(filepath.Join(osDir, "boottorrent-archiso.rules"))
				if err != nil || !bytes.Contains(rule, []byte("losetup -r -f /boottorrent/archiso.iso")) {
					t.Errorf("udev rule: %q, %v", rule, err)
				}
			}
			var n int
			filepath.WalkDir(osDir, func(p string, d os.DirEntry, err error) error {
				if err == nil && d.Type().IsRegular() {
					n++
				}
				return nil
			})
			extra := 1 // config.yaml
			if tc.family == "archiso" {
				extra += 2
			}
			if n != len(tc.copied)+extra {
				t.Errorf("oss/myos holds %d files, want %d", n, len(tc.copied)+extra)
			}
			noLeftovers(t, dir)
			if !strings.Contains(out.String(), "Created ") {
				t.Errorf("stdout: %s", out)
			}
			// The folder add wrote is a valid OS: check passes on it and
			// shows what the OS receives in its initramfs.
			cenv, cout, cerr := testEnv(t, dir)
			if code := Main([]string{"check", "--dir", dir}, cenv); code != 0 {
				t.Fatalf("check after add: exit %d\nstdout: %s\nstderr: %s", code, cout, cerr)
			}
			if tc.family != "debian-installer" && !strings.Contains(cout.String(), "receives in its initramfs") {
				t.Errorf("check's plan does not show the handed-over files:\n%s", cout)
			}
		})
	}
}

func TestAddRefusals(t *testing.T) {
	unknownISO, _ := buildISO(t, isoTree{files: map[string]int{"sources/install.wim": 5000, "bootmgr": 100}}, "CCCOMA_X64FRE")
	escapeISO, _ := buildISO(t, isoTree{
		files: map[string]int{"live/initrd.img": 100, "live/filesystem.squashfs": 5000},
		links: map[string]string{"live/vmlinuz": "../../../etc/passwd"}}, "EVIL")
	liveISO, _ := buildISO(t, isoTree{files: map[string]int{"live/vmlinuz": 100, "live/initrd.img": 100, "live/filesystem.squashfs": 300_000}}, "LIVE")
	data, err := os.ReadFile(liveISO)
	if err != nil {
		t.Fatal(err)
	}
	truncated := filepath.Join(t.TempDir(), "truncated.iso")
	// xorriso pads 300 KiB at the end: cut into the squashfs itself.
	if err := os.WriteFile(truncated, data[:len(data)-300<<10-100_000], 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		args []string // "DIR" is replaced by the project
		code int
		want []string
	}{
		{"unrecognised", []string{"add", unknownISO, "win", "--dir", "DIR"}, 1,
			[]string{"none of the layouts", "live/vmlinuz*", "casper/*.squashfs", "LiveOS/squashfs.img", "arch/boot/x86_64/vmlinuz-linux", "Booting real distributions"}},
		{"link out of the image", []string{"add", "--dir", "DIR", escapeISO, "evil"}, 1, []string{"leads out of the image"}},
		{"truncated", []string{"add", "--dir", "DIR", truncated, "cut"}, 1, []string{"live/filesystem.squashfs", "past the image's end"}},
		{"not an ISO", []string{"add", "--dir", "DIR", "/etc/hostname", "x"}, 1, []string{"not an ISO 9660 image"}},
		{"bad name", []string{"add", "--dir", "DIR", liveISO, "../x"}, 1, []string{"not safe in URLs"}},
		{"missing NAME", []string{"add", "--dir", "DIR", liveISO}, 2, []string{"name the ISO and the new OS"}},
		{"not a project", []string{"add", "--dir", "/nonexistent-project", liveISO, "x"}, 1, []string{"not a boottorrent project"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := newProject(t)
			env, out, errb := testEnv(t, dir)
			args := append([]string{}, tc.args...)
			for i, a := range args {
				if a == "DIR" {
					args[i] = dir
				}
			}
			if code := Main(args, env); code != tc.code {
				t.Errorf("exit %d, want %d\nstdout: %s\nstderr: %s", code, tc.code, out, errb)
			}
			for _, w := range tc.want {
				if !strings.Contains(errb.String(), w) {
					t.Errorf("stderr does not say %q:\n%s", w, errb)
				}
			}
			ents, _ := os.ReadDir(filepath.Join(dir, "oss"))
			for _, e := range ents {
				if e.IsDir() {
					t.Errorf("oss/%s exists after a refused add", e.Name())
				}
			}
		})
	}
	t.Run("existing NAME", func(t *testing.T) {
		dir := newProject(t)
		testfile.Write(t, filepath.Join(dir, "oss", "live", "keep"), "mine")
		env, _, errb := testEnv(t, dir)
		if code := Main([]string{"add", liveISO, "live"}, env); code != 1 || !strings.Contains(errb.String(), "exists already") {
			t.Errorf("exit %d, stderr %s", code, errb)
		}
		if b, _ := os.ReadFile(filepath.Join(dir, "oss", "live", "keep")); string(b) != "mine" {
			t.Error("the existing folder was touched")
		}
		noLeftovers(t, dir)
	})
}

// TestProgressLog checks the log lines written when stderr is not a
// terminal: only large files, one line when they start and one at the end.
func TestProgressLog(t *testing.T) {
	var b bytes.Buffer
	p := newProgress(&b)
	p("live/vmlinuz", 100, 100)
	for done := int64(0); done < 100<<20; done += 4 << 20 {
		p("live/filesystem.squashfs", done+4<<20, 100<<20)
	}
	lines := strings.Split(strings.TrimSpace(b.String()), "\n")
	if len(lines) != 2 || !strings.HasPrefix(lines[0], "copying live/filesystem.squashfs (100.0 MiB)") ||
		!strings.HasPrefix(lines[1], "copied live/filesystem.squashfs (100.0 MiB) in ") {
		t.Errorf("log:\n%s", b.String())
	}
}
