package cli

import (
	"bytes"
	"flag"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/boottorrent/boottorrent/config"
	"github.com/boottorrent/boottorrent/internal/testfile"
)

var update = flag.Bool("update", false, "rewrite golden files")

// testEnv is a fake machine: interface lab0 (10.0.0.1/24), a Debian kernel
// with modules and iPXE under a temporary root, and output buffers.
func testEnv(t *testing.T, wd string) (*Env, *bytes.Buffer, *bytes.Buffer) {
	t.Helper()
	root := t.TempDir()
	for _, f := range []string{"boot/vmlinuz-6.1.0-9-amd64", "lib/modules/6.1.0-9-amd64/modules.dep",
		"usr/lib/ipxe/undionly.kpxe", "usr/lib/ipxe/ipxe.efi"} {
		testfile.Write(t, filepath.Join(root, f), "x")
	}
	var out, errb bytes.Buffer
	return &Env{
		Stdout: &out, Stderr: &errb,
		Host: config.Host{
			Root: root,
			Interfaces: func() ([]config.HostInterface, error) {
				return []config.HostInterface{
					{Name: "lo", Up: true, Loopback: true, Addrs: []netip.Prefix{netip.MustParsePrefix("127.0.0.1/8")}},
					{Name: "lab0", Up: true, Addrs: []netip.Prefix{netip.MustParsePrefix("10.0.0.1/24")}},
				}, nil
			},
			KernelRelease: func() string { return "6.1.0-9-amd64" },
		},
		Getwd: func() (string, error) { return wd, nil },
	}, &out, &errb
}

func TestHelp(t *testing.T) {
	for _, args := range [][]string{{"--help"}, {"help"}, {"init", "--help"}, {"check", "--help"}, {"start", "--help"}, {"version", "--help"}, {"add", "--help"}, {"help", "start"}} {
		env, out, _ := testEnv(t, t.TempDir())
		if code := Main(args, env); code != 0 {
			t.Errorf("%v: exit %d", args, code)
		}
		if !strings.Contains(out.String(), "Usage") && !strings.Contains(out.String(), "Usage:") {
			t.Errorf("%v: no usage in %q", args, out.String())
		}
	}
	env, out, _ := testEnv(t, t.TempDir())
	Main([]string{"--help"}, env)
	if strings.Contains(out.String(), "client") {
		t.Error("the hidden client command is listed")
	}
}

func TestUnknownCommandAndFlags(t *testing.T) {
	env, _, errb := testEnv(t, t.TempDir())
	if code := Main([]string{"strat"}, env); code != 2 || !strings.Contains(errb.String(), `unknown command "strat"`) {
		t.Errorf("exit %d, stderr %q", code, errb.String())
	}
	env, _, errb = testEnv(t, t.TempDir())
	if code := Main([]string{"check", "--dri", "x"}, env); code != 2 || !strings.Contains(errb.String(), "flag provided but not defined: -dri") {
		t.Errorf("exit %d, stderr %q", code, errb.String())
	}
	env, _, errb = testEnv(t, t.TempDir())
	if code := Main([]string{"init"}, env); code != 2 || !strings.Contains(errb.String(), "name the folder") {
		t.Errorf("exit %d, stderr %q", code, errb.String())
	}
}

func TestVersion(t *testing.T) {
	env, out, _ := testEnv(t, t.TempDir())
	if Main([]string{"version"}, env) != 0 || !strings.HasPrefix(out.String(), "boottorrent ") {
		t.Errorf("version printed %q", out.String())
	}
}

// TestInitCheckGolden runs init, adds an OS, and compares check's plan
// with testdata/check.golden (go test -update rewrites it).
func TestInitCheckGolden(t *testing.T) {
	base := t.TempDir()
	env, out, errb := testEnv(t, base)
	if code := Main([]string{"init", filepath.Join(base, "lab")}, env); code != 0 {
		t.Fatalf("init: exit %d: %s", code, errb.String())
	}
	if !strings.Contains(out.String(), "Serving on lab0 (10.0.0.1)") {
		t.Errorf("init output: %s", out.String())
	}
	dir := filepath.Join(base, "lab")
	// An empty project fails check, naming the fix.
	env, _, errb = testEnv(t, dir)
	if code := Main([]string{"check"}, env); code != 1 || !strings.Contains(errb.String(), "no operating system yet") {
		t.Fatalf("empty project check: exit %d: %s", code, errb.String())
	}
	testfile.Write(t, filepath.Join(dir, "oss/debian/config.yaml"), "dispname: Debian 12\nmethod: kexec\nkernel: vmlinuz\ninitrd: initrd.img\ncmdline: boot=live live-media=/boottorrent\ninitrd_files: [live/filesystem.squashfs]\n")
	testfile.Write(t, filepath.Join(dir, "oss/debian/live/filesystem.squashfs"), strings.Repeat("s", 2<<20))
	testfile.Write(t, filepath.Join(dir, "oss/debian/vmlinuz"), strings.Repeat("k", 5000))
	testfile.Write(t, filepath.Join(dir, "oss/debian/initrd.img"), strings.Repeat("i", 3<<20))
	testfile.Write(t, filepath.Join(dir, "oss/hello/config.yaml"), "dispname: Hello\nmethod: bin\nbin: hello\n")
	testfile.Write(t, filepath.Join(dir, "oss/hello/hello"), "#!/bin/true\n")
	data, _ := os.ReadFile(filepath.Join(dir, config.FileName))
	data = append(data, []byte("  52:54:00:00:00:01: {name: node01, os: hello}\n")...)
	testfile.Write(t, filepath.Join(dir, config.FileName), string(data))

	env, out, errb = testEnv(t, "/nonexistent")
	env.InfoHashes = func(*config.Project) map[string]string {
		return map[string]string{"debian": "0123456789abcdef0123456789abcdef01234567"}
	}
	env.ClientSummary = func(*config.Project) string { return "client: 7.9 MiB kernel + 8.1 MiB initramfs (built)" }
	if code := Main([]string{"check", "--dir", dir}, env); code != 0 {
		t.Fatalf("check: exit %d: %s", code, errb.String())
	}
	got := strings.ReplaceAll(out.String(), dir, "$PROJECT")
	golden := filepath.Join("testdata", "check.golden")
	if *update {
		testfile.Write(t, golden, got)
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatalf("%v (run go test -update to create it)", err)
	}
	if got != string(want) {
		t.Errorf("check output differs from %s (go test -update rewrites it):\n--- got\n%s\n--- want\n%s", golden, got, want)
	}
}

// checkFiles writes files (path in the project: content) into a new
// project folder and runs boottorrent check in it.
func checkFiles(t *testing.T, files map[string]string) (dir string, code int, stdout, stderr string) {
	t.Helper()
	dir = t.TempDir()
	for p, content := range files {
		testfile.Write(t, filepath.Join(dir, p), content)
	}
	env, out, errb := testEnv(t, dir)
	code = Main([]string{"check"}, env)
	return dir, code, out.String(), errb.String()
}

func TestCheckReportsAllProblems(t *testing.T) {
	_, code, _, msg := checkFiles(t, map[string]string{
		config.FileName:       "version: 1\ndhcp:\n  mode: ful\nboot:\n  default_os: nope\n",
		"oss/bad/config.yaml": "method: kexec\nkernel: ../vmlinuz\n",
		"oss/ok/config.yaml":  "method: bin\nbin: b\n",
		"oss/ok/b":            "b",
	})
	if code != 1 {
		t.Fatalf("exit %d", code)
	}
	for _, w := range []string{"3 problems in", "Boottorrent.yaml:3: dhcp.mode", "Boottorrent.yaml:5: boot.default_os", "oss/bad/config.yaml:2: kernel: \"../vmlinuz\" leaves the OS folder"} {
		if !strings.Contains(msg, w) {
			t.Errorf("missing %q in:\n%s", w, msg)
		}
	}
}

func TestCheckLegacyWarns(t *testing.T) {
	_, code, out, errb := checkFiles(t, map[string]string{
		config.FileName:       "boottorrent:\n  version: 0\n  timeout: 5\n  host_ip: 10.0.0.1\ndnsmasq:\n  enable_dhcp: False\n  interface: lab0\nopentracker:\n  enable: True\n  port: 10001\n",
		"oss/fd/config.yaml":  "dispname: FreeDOS\nmethod: bin-qemu-x86_64\nargs: \"-fda odin1440.img\"\n",
		"oss/fd/odin1440.img": "img",
	})
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errb)
	}
	if n := strings.Count(errb, "warning:"); n != 1 || !strings.Contains(errb, "opentracker.port") {
		t.Errorf("want one warning naming ignored keys, got:\n%s", errb)
	}
	if !strings.Contains(out, "fd    qemu") && !strings.Contains(out, "qemu") {
		t.Errorf("plan lacks the qemu OS:\n%s", out)
	}
}

// TestCheckWarnsIgnoredDHCP: switching dhcp.mode away from full leaves the
// full-mode settings in place as warnings, and check passes.
func TestCheckWarnsIgnoredDHCP(t *testing.T) {
	dir, code, _, errb := checkFiles(t, map[string]string{
		config.FileName:      "version: 1\ndhcp:\n  mode: proxy\n  range: 10.0.0.50-10.0.0.60\n",
		"oss/ok/config.yaml": "method: bin\nbin: b\n",
		"oss/ok/b":           "b",
	})
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errb)
	}
	if !strings.Contains(errb, "warning: "+filepath.Join(dir, config.FileName)+":4: dhcp.range: ignored in proxy mode") {
		t.Errorf("want a warning that dhcp.range is ignored, got:\n%s", errb)
	}
}
