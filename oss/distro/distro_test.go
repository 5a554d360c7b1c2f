package distro

import (
	"errors"
	"io/fs"
	"slices"
	"strings"
	"testing"
	"testing/fstest"
	"unicode/utf8"

	"gopkg.in/yaml.v3"
)

func mapFS(paths ...string) fstest.MapFS {
	m := fstest.MapFS{}
	for _, p := range paths {
		if target, ok := strings.CutPrefix(p, "link:"); ok {
			name, to, _ := strings.Cut(target, "->")
			m[name] = &fstest.MapFile{Data: []byte(to), Mode: fs.ModeSymlink}
			continue
		}
		m[p] = &fstest.MapFile{Data: []byte(p)}
	}
	return m
}

func TestDetect(t *testing.T) {
	for _, tc := range []struct {
		name        string
		fsys        fstest.MapFS
		family      string // "" = unrecognised
		kernel      string
		initrd      string
		copy        []string
		initrdFiles []InitrdFile
		cmdline     string
	}{
		{name: "debian live versioned",
			fsys:   mapFS("live/vmlinuz-6.1.0-9-amd64", "live/initrd.img-6.1.0-9-amd64", "live/vmlinuz-6.1.0-18-amd64", "live/initrd.img-6.1.0-18-amd64", "live/filesystem.squashfs", "install/vmlinuz", "isolinux/isolinux.cfg"),
			family: "live-boot", kernel: "live/vmlinuz-6.1.0-18-amd64", initrd: "live/initrd.img-6.1.0-18-amd64",
			copy:        []string{"live/vmlinuz-6.1.0-18-amd64", "live/initrd.img-6.1.0-18-amd64", "live/filesystem.squashfs"},
			initrdFiles: []InitrdFile{{File: "live/filesystem.squashfs"}}, cmdline: "boot=live live-media=/boottorrent"},
		{name: "kali and clonezilla",
			fsys:   mapFS("live/vmlinuz", "live/initrd.img", "live/filesystem.squashfs", "live/filesystem.packages"),
			family: "live-boot", kernel: "live/vmlinuz", initrd: "live/initrd.img",
			copy:        []string{"live/vmlinuz", "live/initrd.img", "live/filesystem.squashfs"},
			initrdFiles: []InitrdFile{{File: "live/filesystem.squashfs"}}, cmdline: "boot=live live-media=/boottorrent"},
		{name: "live-boot kernel behind a link",
			fsys:   mapFS("live/vmlinuz-6.1", "link:live/vmlinuz->vmlinuz-6.1", "live/initrd.img", "live/filesystem.squashfs"),
			family: "live-boot", kernel: "live/vmlinuz", initrd: "live/initrd.img",
			copy:        []string{"live/vmlinuz", "live/initrd.img", "live/filesystem.squashfs"},
			initrdFiles: []InitrdFile{{File: "live/filesystem.squashfs"}}, cmdline: "boot=live live-media=/boottorrent"},
		{name: "live-boot several images with a module list",
			fsys:   mapFS("live/vmlinuz", "live/initrd.img", "live/filesystem.squashfs", "live/extra.squashfs", "live/filesystem.module"),
			family: "live-boot", kernel: "live/vmlinuz", initrd: "live/initrd.img",
			copy:        []string{"live/vmlinuz", "live/initrd.img", "live/extra.squashfs", "live/filesystem.squashfs", "live/filesystem.module"},
			initrdFiles: []InitrdFile{{File: "live/extra.squashfs"}, {File: "live/filesystem.squashfs"}, {File: "live/filesystem.module"}},
			cmdline:     "boot=live live-media=/boottorrent"},
		{name: "ubuntu layered",
			fsys: mapFS("casper/vmlinuz", "casper/initrd", "casper/hwe-vmlinuz", "casper/minimal.squashfs", "casper/minimal.standard.squashfs",
				"casper/minimal.standard.live.squashfs", "casper/minimal.en.squashfs", "casper/install-sources.yaml", "casper/minimal.squashfs.gpg", "casper/minimal.size"),
			family: "casper", kernel: "casper/vmlinuz", initrd: "casper/initrd",
			copy: []string{"casper/vmlinuz", "casper/initrd", "casper/minimal.en.squashfs", "casper/minimal.squashfs", "casper/minimal.standard.live.squashfs",
				"casper/minimal.standard.squashfs", "casper/install-sources.yaml"},
			initrdFiles: []InitrdFile{{File: "casper/minimal.en.squashfs"}, {File: "casper/minimal.squashfs"}, {File: "casper/minimal.standard.live.squashfs"},
				{File: "casper/minimal.standard.squashfs"}, {File: "casper/install-sources.yaml"}},
			cmdline: "boot=casper live-media=/boottorrent"},
		{name: "ubuntu old single image",
			fsys:   mapFS("casper/vmlinuz.efi", "casper/initrd.lz", "casper/filesystem.squashfs"),
			family: "casper", kernel: "casper/vmlinuz.efi", initrd: "casper/initrd.lz",
			copy:        []string{"casper/vmlinuz.efi", "casper/initrd.lz", "casper/filesystem.squashfs"},
			initrdFiles: []InitrdFile{{File: "casper/filesystem.squashfs"}}, cmdline: "boot=casper live-media=/boottorrent"},
		{name: "fedora live",
			fsys:   mapFS("images/pxeboot/vmlinuz", "images/pxeboot/initrd.img", "LiveOS/squashfs.img", "EFI/BOOT/grub.cfg", "boot/grub2/grub.cfg"),
			family: "dracut-live", kernel: "images/pxeboot/vmlinuz", initrd: "images/pxeboot/initrd.img",
			copy:        []string{"images/pxeboot/vmlinuz", "images/pxeboot/initrd.img", "LiveOS/squashfs.img"},
			initrdFiles: []InitrdFile{{File: "LiveOS/squashfs.img"}}, cmdline: "root=live:/boottorrent/LiveOS/squashfs.img rd.live.image"},
		{name: "older dracut live under isolinux",
			fsys:   mapFS("isolinux/vmlinuz", "isolinux/initrd.img", "LiveOS/squashfs.img"),
			family: "dracut-live", kernel: "isolinux/vmlinuz", initrd: "isolinux/initrd.img",
			copy:        []string{"isolinux/vmlinuz", "isolinux/initrd.img", "LiveOS/squashfs.img"},
			initrdFiles: []InitrdFile{{File: "LiveOS/squashfs.img"}}, cmdline: "root=live:/boottorrent/LiveOS/squashfs.img rd.live.image"},
		{name: "arch",
			fsys: mapFS("arch/boot/x86_64/vmlinuz-linux", "arch/boot/x86_64/initramfs-linux.img", "arch/x86_64/airootfs.sfs",
				"arch/boot/intel-ucode.img", "boot/syslinux/syslinux.cfg"),
			family: "archiso", kernel: "arch/boot/x86_64/vmlinuz-linux", initrd: "arch/boot/x86_64/initramfs-linux.img",
			copy: []string{"arch/boot/x86_64/vmlinuz-linux", "arch/boot/x86_64/initramfs-linux.img"},
			initrdFiles: []InitrdFile{{File: "archiso.iso"},
				{File: "boottorrent-archiso.rules", As: "/etc/udev/rules.d/99-boottorrent-archiso.rules"}},
			cmdline: "archisobasedir=arch archisodevice=/dev/loop0 copytoram=n"},
		{name: "debian netinst",
			fsys:   mapFS("install.amd/vmlinuz", "install.amd/initrd.gz", "install.amd/gtk/vmlinuz", "pool/main/a/apt/apt.deb"),
			family: "debian-installer", kernel: "install.amd/vmlinuz", initrd: "install.amd/initrd.gz",
			copy: []string{"install.amd/vmlinuz", "install.amd/initrd.gz"}},
		{name: "live medium that also carries an installer",
			fsys:   mapFS("live/vmlinuz", "live/initrd.img", "live/filesystem.squashfs", "install.amd/vmlinuz", "install.amd/initrd.gz"),
			family: "live-boot", kernel: "live/vmlinuz", initrd: "live/initrd.img",
			copy:        []string{"live/vmlinuz", "live/initrd.img", "live/filesystem.squashfs"},
			initrdFiles: []InitrdFile{{File: "live/filesystem.squashfs"}}, cmdline: "boot=live live-media=/boottorrent"},
		{name: "live without root filesystem", fsys: mapFS("live/vmlinuz", "live/initrd.img")},
		{name: "live with two unversioned kernels and no preference", fsys: mapFS("live/vmlinuz1", "live/vmlinuz2", "live/initrd.img", "live/filesystem.squashfs")},
		{name: "fedora without kernel", fsys: mapFS("LiveOS/squashfs.img")},
		{name: "arch without airootfs", fsys: mapFS("arch/boot/x86_64/vmlinuz-linux", "arch/boot/x86_64/initramfs-linux.img")},
		{name: "squashfs that is a directory", fsys: fstest.MapFS{"casper/vmlinuz": {}, "casper/initrd": {}, "casper/x.squashfs/y": {}}},
		{name: "windows", fsys: mapFS("sources/install.wim", "bootmgr")},
		{name: "empty", fsys: fstest.MapFS{}},
		// fs.ValidPath refuses names that are not UTF-8: such files are not
		// there for detection (config.yaml could not name them).
		{name: "kernel name not UTF-8", fsys: mapFS("live/vmlinuz-\xff", "live/initrd.img-\xff", "live/filesystem.squashfs")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, err := Detect(tc.fsys)
			if tc.family == "" {
				if !errors.Is(err, ErrUnrecognised) {
					t.Fatalf("Detect = %+v, %v; want ErrUnrecognised", p, err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if p.Family.ID != tc.family || p.Kernel != tc.kernel || p.Initrd != tc.initrd || p.Cmdline != tc.cmdline {
				t.Errorf("got %s kernel %s initrd %s cmdline %q\nwant %s kernel %s initrd %s cmdline %q",
					p.Family.ID, p.Kernel, p.Initrd, p.Cmdline, tc.family, tc.kernel, tc.initrd, tc.cmdline)
			}
			if !slices.Equal(p.Copy, tc.copy) {
				t.Errorf("copy %q, want %q", p.Copy, tc.copy)
			}
			if !slices.Equal(p.InitrdFiles, tc.initrdFiles) {
				t.Errorf("initrd_files %+v, want %+v", p.InitrdFiles, tc.initrdFiles)
			}
		})
	}
}

func TestLookedForNamesEveryFamily(t *testing.T) {
	s := LookedFor()
	for _, want := range []string{"live/vmlinuz*", "casper/*.squashfs", "LiveOS/squashfs.img", "images/pxeboot/vmlinuz",
		"arch/boot/x86_64/vmlinuz-linux", "arch/x86_64/airootfs.sfs", "install.amd/vmlinuz"} {
		if !strings.Contains(s, want) {
			t.Errorf("LookedFor does not name %s:\n%s", want, s)
		}
	}
}

// TestConfigReadsBack decodes the written config.yaml with a YAML parser:
// hostile names from the medium stay one value each.
func TestConfigReadsBack(t *testing.T) {
	p := &Plan{Family: Families[3], Kernel: "live/vm: linuz", Initrd: "live/#initrd", Cmdline: "boot=live live-media=/boottorrent",
		InitrdFiles: []InitrdFile{{File: "live/yes"}, {File: "x\"y", As: "/etc/a b"}}}
	out := p.Config(Source{File: "evil\nname.iso", VolumeID: "VOL\x1b[2J", Size: 3 << 30}, "true")
	var got struct {
		DispName    string `yaml:"dispname"`
		Kernel      string `yaml:"kernel"`
		Initrd      string `yaml:"initrd"`
		Cmdline     string `yaml:"cmdline"`
		InitrdFiles []any  `yaml:"initrd_files"`
	}
	if err := yaml.Unmarshal(out, &got); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	if got.DispName != "true" || got.Kernel != "live/vm: linuz" || got.Initrd != "live/#initrd" || len(got.InitrdFiles) != 2 {
		t.Errorf("read back %+v from\n%s", got, out)
	}
	if got.InitrdFiles[0] != "live/yes" {
		t.Errorf("initrd_files[0] = %#v", got.InitrdFiles[0])
	}
	for _, line := range strings.Split(string(out), "\n") {
		if strings.ContainsRune(line, 0x1b) {
			t.Errorf("control character in %q", line)
		}
	}
	if !strings.Contains(string(out), "# Written by 'boottorrent add' from evil?name.iso (3.0 GiB") {
		t.Errorf("first comment line:\n%s", out)
	}
}

func TestCompareVersions(t *testing.T) {
	in := []string{"vmlinuz-6.1.0-18-amd64", "vmlinuz-6.1.0-9-amd64", "vmlinuz-5.10.0-28-amd64", "vmlinuz-6.1.0-18-amd64-rt"}
	slices.SortFunc(in, compareVersions)
	want := []string{"vmlinuz-5.10.0-28-amd64", "vmlinuz-6.1.0-9-amd64", "vmlinuz-6.1.0-18-amd64", "vmlinuz-6.1.0-18-amd64-rt"}
	if !slices.Equal(in, want) {
		t.Errorf("%q, want %q", in, want)
	}
}

func TestDisplayName(t *testing.T) {
	for in, want := range map[string]string{"d-live 12.5.0 st amd64 ": "d-live 12.5.0 st amd64", "": "", "a\x00b": "", strings.Repeat("x", 81): ""} {
		if got := DisplayName(in); got != want {
			t.Errorf("DisplayName(%q) = %q, want %q", in, got, want)
		}
	}
}

// FuzzConfig writes config.yaml from hostile names (file names and the
// volume id come from the medium) and reads it back: each stays one value.
func FuzzConfig(f *testing.F) {
	f.Add("live/vmlinuz", "d-live 12.5.0 st amd64", "true")
	f.Add("a: b #c", "\n- x", "\"'")
	f.Fuzz(func(t *testing.T, file, volid, disp string) {
		p := &Plan{Family: Families[0], Kernel: file, Initrd: file + "2", Cmdline: "x",
			InitrdFiles: []InitrdFile{{File: file}, {File: file, As: disp}}}
		out := p.Config(Source{File: volid, VolumeID: volid, Size: 1}, disp)
		var got struct {
			DispName    string `yaml:"dispname"`
			Kernel      string `yaml:"kernel"`
			InitrdFiles []any  `yaml:"initrd_files"`
		}
		if !utf8.ValidString(file) || !utf8.ValidString(disp) {
			return // Detect refuses names that are not UTF-8, DisplayName too
		}
		if err := yaml.Unmarshal(out, &got); err != nil {
			t.Fatalf("%v\n%s", err, out)
		}
		if got.DispName != disp || got.Kernel != file || len(got.InitrdFiles) != 2 {
			t.Fatalf("read back %+v from\n%s", got, out)
		}
	})
}
