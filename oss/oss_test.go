package oss

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/boottorrent/boottorrent/internal/testfile"
)

func TestLoadRules(t *testing.T) {
	cases := []struct {
		name   string
		folder string
		config string
		files  map[string]string // extra files in the folder
		setup  func(t *testing.T, dir string)
		want   []string // substrings, one per problem; none = valid
		check  func(t *testing.T, o *OS)
	}{
		{name: "kexec ok", config: "dispname: Debian\nmethod: kexec\nkernel: boot/vmlinuz\ninitrd: initrd.img\ncmdline: quiet splash\n",
			files: map[string]string{"boot/vmlinuz": "kk", "initrd.img": "iii"},
			check: func(t *testing.T, o *OS) {
				if !reflect.DeepEqual(o.Files, []string{"boot/vmlinuz", "config.yaml", "initrd.img"}) {
					t.Errorf("files %v", o.Files)
				}
				cfg, _ := os.Stat(filepath.Join(o.Dir, ConfigName))
				if o.Size != 5+cfg.Size() {
					t.Errorf("size %d", o.Size)
				}
			}},
		{name: "dispname defaults to folder", config: "method: kexec\nkernel: k\n", files: map[string]string{"k": "k"},
			check: func(t *testing.T, o *OS) {
				if o.DispName != o.Name {
					t.Errorf("dispname %q", o.DispName)
				}
			}},
		{name: "method missing", config: "kernel: k\n", files: map[string]string{"k": "k"}, want: []string{"method: missing; use kexec"}},
		{name: "method unknown", config: "method: pxe\n", want: []string{`method: "pxe" is not a method`}},
		{name: "kexec needs kernel", config: "method: kexec\n", want: []string{"kernel: missing"}},
		{name: "kexec forbids args", config: "method: kexec\nkernel: k\nargs: -m 512\n", files: map[string]string{"k": "k"},
			want: []string{"args: only used with method bin or qemu"}},
		{name: "bin needs bin", config: "method: bin\n", want: []string{"bin: missing"}},
		{name: "bin forbids kernel", config: "method: bin\nbin: b\nkernel: k\n", files: map[string]string{"b": "b", "k": "k"},
			want: []string{"kernel: not used with method bin"}},
		{name: "bin args as list", config: "method: bin\nbin: b\nbinargs: [-a, 'b c']\n", files: map[string]string{"b": "b"},
			check: func(t *testing.T, o *OS) {
				if !reflect.DeepEqual(o.BinArgs, []string{"-a", "b c"}) {
					t.Errorf("binargs %q", o.BinArgs)
				}
			}},
		{name: "unclosed quote", config: "method: bin\nbin: b\nbinargs: \"-a 'b\"\n", files: map[string]string{"b": "b"},
			want: []string{"unclosed ' quote"}},
		{name: "qemu needs args", config: "method: qemu\n", want: []string{"args: missing"}},
		{name: "legacy qemu, all files", config: "method: bin-qemu-x86_64\nargs: \"-fda odin1440.img\"\n",
			files: map[string]string{"odin1440.img": "fd", ".hidden": "h", "sub/disk2.img": "d2"},
			check: func(t *testing.T, o *OS) {
				if o.Method != MethodQEMU || !reflect.DeepEqual([]string(o.Args), []string{"-fda", "odin1440.img"}) {
					t.Errorf("method %s args %q", o.Method, o.Args)
				}
				if !reflect.DeepEqual(o.Files, []string{"config.yaml", "odin1440.img", "sub/disk2.img"}) {
					t.Errorf("files %v", o.Files)
				}
			}},
		{name: "qemu explicit files", config: "method: qemu\nargs: -hda a.img\nfiles: [a.img]\n", files: map[string]string{"a.img": "a", "b.img": "b"},
			check: func(t *testing.T, o *OS) {
				if !reflect.DeepEqual(o.Files, []string{"a.img", "config.yaml"}) {
					t.Errorf("files %v", o.Files)
				}
			}},
		{name: "dotdot", config: "method: kexec\nkernel: ../../etc/passwd\n", want: []string{"kernel: \"../../etc/passwd\" leaves the OS folder"}},
		{name: "absolute", config: "method: kexec\nkernel: /boot/vmlinuz\n", want: []string{"kernel: \"/boot/vmlinuz\" is absolute"}},
		{name: "missing file", config: "method: kexec\nkernel: vmlinuz\ninitrd: initrd.img\n", files: map[string]string{"vmlinuz": "k"},
			want: []string{"initrd: initrd.img does not exist"}},
		{name: "symlink escape", config: "method: kexec\nkernel: vmlinuz\n",
			setup: func(t *testing.T, dir string) {
				if err := os.Symlink("/etc/hostname", filepath.Join(dir, "vmlinuz")); err != nil {
					t.Fatal(err)
				}
			},
			want: []string{"kernel: vmlinuz is a link that leads out of the OS folder"}},
		{name: "symlink inside is fine", config: "method: kexec\nkernel: vmlinuz\n", files: map[string]string{"real": "kernel"},
			setup: func(t *testing.T, dir string) {
				if err := os.Symlink("real", filepath.Join(dir, "vmlinuz")); err != nil {
					t.Fatal(err)
				}
			}},
		{name: "not regular", config: "method: kexec\nkernel: sub\n", files: map[string]string{"sub/x": "x"},
			want: []string{"kernel: sub is not a regular file"}},
		{name: "bad folder name", folder: "my os", config: "method: kexec\nkernel: k\n", files: map[string]string{"k": "k"},
			want: []string{`folder name "my os" is not safe`}},
		{name: "unknown key", config: "method: kexec\nkernal: k\n", want: []string{`kernal: unknown key; did you mean "kernel"?`}},
		{name: "long cmdline", config: "method: kexec\nkernel: k\ncmdline: " + strings.Repeat("x", 3000) + "\n", files: map[string]string{"k": "k"},
			want: []string{"cmdline: longer than 2048 bytes"}},
		{name: "initrd_files ok", config: "method: kexec\nkernel: k\ninitrd: i\ninitrd_files:\n  - live/filesystem.squashfs\n  - {file: arch.iso, as: img/a.iso}\n  - {file: 99.rules, as: /etc/udev/rules.d/99-boottorrent.rules}\n",
			files: map[string]string{"k": "k", "i": "i", "live/filesystem.squashfs": "sq", "arch.iso": "iso", "99.rules": "r"},
			check: func(t *testing.T, o *OS) {
				want := []InitrdFile{{"live/filesystem.squashfs", "/boottorrent/live/filesystem.squashfs"},
					{"arch.iso", "/boottorrent/img/a.iso"}, {"99.rules", "/etc/udev/rules.d/99-boottorrent.rules"}}
				if !reflect.DeepEqual(o.InitrdFiles, want) {
					t.Errorf("initrd files %v", o.InitrdFiles)
				}
				if !reflect.DeepEqual(o.Files, []string{"99.rules", "arch.iso", "config.yaml", "i", "k", "live/filesystem.squashfs"}) {
					t.Errorf("files %v", o.Files)
				}
			}},
		{name: "initrd_files need kexec", config: "method: bin\nbin: b\ninitrd_files: [x]\n", files: map[string]string{"b": "b", "x": "x"},
			want: []string{"initrd_files: only used with method kexec"}},
		{name: "initrd_files need an initrd", config: "method: kexec\nkernel: k\ninitrd_files: [x]\n", files: map[string]string{"k": "k", "x": "x"},
			want: []string{"initrd_files: needs an initrd"}},
		{name: "initrd_files bad items", config: "method: kexec\nkernel: k\ninitrd: i\ninitrd_files:\n  - ../x\n  - {file: a, as: /run/a}\n  - {file: a, to: b}\n  - {as: b}\n  - [a]\n  - {file: a, as: ../../etc/x}\n  - {file: a, as: /etc/}\n  - missing.img\n",
			files: map[string]string{"k": "k", "i": "i", "a": "a"},
			want: []string{`:5: initrd_files[0]: "../x" leaves the OS folder`,
				`:6: initrd_files[1]: as: "/run/a" is under /run`,
				`:7: initrd_files[2]: unknown key "to"`,
				`:8: initrd_files[3]: file: missing`,
				`:9: initrd_files[4]: must be a file name or a mapping`,
				`:10: initrd_files[5]: as: "../../etc/x" leaves /boottorrent/`,
				`:11: initrd_files[6]: as: "/etc/" names a folder`,
				`:12: initrd_files[7]: missing.img does not exist`}},
		{name: "initrd_files same destination", config: "method: kexec\nkernel: k\ninitrd: i\ninitrd_files:\n  - a\n  - {file: b, as: a}\n  - {file: c, as: a/x}\n",
			files: map[string]string{"k": "k", "i": "i", "a": "a", "b": "b", "c": "c"},
			want: []string{"initrd_files[1]: /boottorrent/a is already where a goes",
				"initrd_files: /boottorrent/a is a file, so /boottorrent/a/x cannot be inside it"}},
		{name: "initrd_files over 4 GiB", config: "method: kexec\nkernel: k\ninitrd: i\ninitrd_files: [big.img]\n", files: map[string]string{"k": "k", "i": "i"},
			setup: func(t *testing.T, dir string) {
				f, err := os.Create(filepath.Join(dir, "big.img"))
				if err != nil {
					t.Fatal(err)
				}
				defer f.Close()
				if err := f.Truncate(1 << 32); err != nil { // sparse: no disk used
					t.Fatal(err)
				}
			},
			want: []string{"initrd_files[0]: big.img is 4294967296 bytes; the initramfs format (newc) holds files under 4 GiB"}},
		{name: "multi-line dispname", config: "dispname: \"a\\nb\"\nmethod: kexec\nkernel: k\n", files: map[string]string{"k": "k"},
			want: []string{"dispname: must be one line"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			folder := tc.folder
			if folder == "" {
				folder = "testos"
			}
			dir := filepath.Join(t.TempDir(), folder)
			testfile.Write(t, filepath.Join(dir, ConfigName), tc.config)
			for f, c := range tc.files {
				testfile.Write(t, filepath.Join(dir, f), c)
			}
			if tc.setup != nil {
				tc.setup(t, dir)
			}
			o, ps := Load(dir)
			if len(ps) != len(tc.want) {
				t.Fatalf("want %d problems %q, got %d:\n%v", len(tc.want), tc.want, len(ps), ps.Error())
			}
			for i, w := range tc.want {
				if !strings.Contains(ps[i].String(), w) {
					t.Errorf("problem %d = %q, want it to contain %q", i, ps[i], w)
				}
				if !strings.HasPrefix(ps[i].File, filepath.Dir(dir)) {
					t.Errorf("problem does not name the file: %s", ps[i])
				}
			}
			if tc.check != nil {
				if o == nil {
					t.Fatal("no OS")
				}
				tc.check(t, o)
			}
		})
	}
}

func TestLoadAll(t *testing.T) {
	dir := t.TempDir()
	testfile.Write(t, filepath.Join(dir, "README.md"), "not an OS")
	testfile.Write(t, filepath.Join(dir, "b/config.yaml"), "dispname: Same\nmethod: bin\nbin: x\n")
	testfile.Write(t, filepath.Join(dir, "b/x"), "x")
	testfile.Write(t, filepath.Join(dir, "a/config.yaml"), "dispname: Same\nmethod: bin\nbin: x\n")
	testfile.Write(t, filepath.Join(dir, "a/x"), "x")
	testfile.Write(t, filepath.Join(dir, "c/vmlinuz"), "no config")
	testfile.Write(t, filepath.Join(dir, ".git/config.yaml"), "ignored")
	oses, err := LoadAll(dir)
	if err == nil {
		t.Fatal("want problems")
	}
	msg := err.Error()
	for _, w := range []string{`dispname: "Same" is already the display name of a`, "c/config.yaml: missing"} {
		if !strings.Contains(msg, w) {
			t.Errorf("missing %q in:\n%s", w, msg)
		}
	}
	if len(oses) != 2 || oses[0].Name != "a" || oses[1].Name != "b" {
		t.Errorf("oses %v", oses)
	}
	if _, err := LoadAll(filepath.Join(dir, "nope")); err == nil || !strings.Contains(err.Error(), "oss/ folder is missing") {
		t.Errorf("missing folder: %v", err)
	}
}

func TestValidName(t *testing.T) {
	for name, ok := range map[string]bool{"debian": true, "debian-12.5_amd64": true, "a": true,
		"": false, ".hidden": false, "-x": false, "a b": false, "a/b": false, "ä": false, "x.": false, strings.Repeat("a", 64): false} {
		if ValidName(name) != ok {
			t.Errorf("ValidName(%q) = %v", name, !ok)
		}
	}
}

// FuzzParse: config.yaml content from anywhere must give an OS or problems.
func FuzzParse(f *testing.F) {
	for _, s := range []string{
		"dispname: Debian\nmethod: kexec\nkernel: vmlinuz\ninitrd: initrd.img\ncmdline: quiet\n",
		"method: bin-qemu-x86_64\nargs: \"-fda odin1440.img\"\n",
		"method: bin\nbin: hello\nbinargs: [a, 'b c']\n",
		"method: kexec\nkernel: ../x\nfiles: [/etc/passwd]\n",
		"args: \"'unclosed\"\n", "- a\n- b\n", "{", "",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		o, ps := Parse("config.yaml", data)
		if o == nil && len(ps) == 0 && len(data) > 0 && strings.TrimSpace(string(data)) != "" {
			// An empty document is an OS with nothing set; anything else
			// yields an OS or problems.
			t.Logf("nil OS without problems for %q", data)
		}
		if o != nil {
			for _, f := range o.Files {
				if strings.HasPrefix(f, "/") || strings.HasPrefix(f, "..") {
					if len(ps) == 0 {
						t.Fatalf("path %q accepted without a problem", f)
					}
				}
			}
		}
	})
}

func TestSizeText(t *testing.T) {
	for n, want := range map[int64]string{
		0:         "0 B",
		1023:      "1023 B",
		1024:      "1.0 KiB",
		1536:      "1.5 KiB",
		32 << 20:  "32.0 MiB",
		4<<30 - 1: "4.0 GiB",
		5 << 40:   "5.0 TiB",
		7 << 60:   "7.0 EiB",
	} {
		if got := SizeText(n); got != want {
			t.Errorf("SizeText(%d) = %q, want %q", n, got, want)
		}
	}
}
