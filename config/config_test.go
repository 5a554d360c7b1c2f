package config

import (
	"bufio"
	"errors"
	"flag"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/boottorrent/boottorrent/internal/testfile"
)

var update = flag.Bool("update", false, "rewrite golden files")

// fakeHost is a machine with lo, lab0 (10.0.0.1/24, up) and down0 (down),
// a Debian kernel with its modules, and Debian's iPXE files, all under a
// temporary root.
func fakeHost(t testing.TB) Host {
	t.Helper()
	root := t.TempDir()
	for _, f := range []string{
		"boot/vmlinuz-6.1.0-9-amd64", "lib/modules/6.1.0-9-amd64/modules.dep",
		"boot/vmlinuz-6.1.0-10-amd64", "lib/modules/6.1.0-10-amd64/modules.dep",
		"boot/vmlinuz-6.9.0-nomodules",
		"usr/lib/ipxe/undionly.kpxe", "usr/lib/ipxe/ipxe.efi",
	} {
		testfile.Write(t, filepath.Join(root, f), "x")
	}
	return Host{
		Root: root,
		Interfaces: func() ([]HostInterface, error) {
			return []HostInterface{
				{Name: "lo", Up: true, Loopback: true, Addrs: []netip.Prefix{netip.MustParsePrefix("127.0.0.1/8")}},
				{Name: "lab0", Up: true, Addrs: []netip.Prefix{netip.MustParsePrefix("fe80::1/64"), netip.MustParsePrefix("10.0.0.1/24")}},
				{Name: "down0", Up: false, Addrs: []netip.Prefix{netip.MustParsePrefix("192.168.9.1/24")}},
			}, nil
		},
		KernelRelease: func() string { return "6.18.0-host" },
	}
}

// valueCheck is one loaded value against the expected one.
type valueCheck struct {
	name      string
	got, want any
}

// checkValues reports every check whose value differs.
func checkValues(t *testing.T, checks []valueCheck) {
	t.Helper()
	for _, ch := range checks {
		if !reflect.DeepEqual(ch.got, ch.want) {
			t.Errorf("%s = %#v, want %#v", ch.name, ch.got, ch.want)
		}
	}
}

// newProject writes a project with two OSes (debian: kexec, tools: bin)
// and the given Boottorrent.yaml.
func newProject(t testing.TB, yaml string) string {
	t.Helper()
	dir := t.TempDir()
	testfile.Write(t, filepath.Join(dir, FileName), yaml)
	testfile.Write(t, filepath.Join(dir, "oss/debian/config.yaml"), "dispname: Debian 12\nmethod: kexec\nkernel: vmlinuz\ninitrd: initrd.img\ncmdline: quiet\n")
	testfile.Write(t, filepath.Join(dir, "oss/debian/vmlinuz"), "kernel")
	testfile.Write(t, filepath.Join(dir, "oss/debian/initrd.img"), "initrd")
	testfile.Write(t, filepath.Join(dir, "oss/tools/config.yaml"), "dispname: Tools\nmethod: bin\nbin: hello\nbinargs: \"-v --name 'a b'\"\n")
	testfile.Write(t, filepath.Join(dir, "oss/tools/hello"), "#!/bin/true\n")
	testfile.Write(t, filepath.Join(dir, "oss/README.md"), OSReadme)
	return dir
}

// TestCases loads every testdata/cases/*.yaml as a project's settings. The
// file's "# want: TEXT" lines are the problems expected (each must appear
// in exactly one reported problem, and nothing else may be reported).
func TestCases(t *testing.T) {
	files, _ := filepath.Glob("testdata/cases/*.yaml")
	if len(files) < 10 {
		t.Fatalf("found only %d cases", len(files))
	}
	for _, f := range files {
		t.Run(strings.TrimSuffix(filepath.Base(f), ".yaml"), func(t *testing.T) {
			data, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			var wants, warns []string
			sc := bufio.NewScanner(strings.NewReader(string(data)))
			for sc.Scan() {
				if w, ok := strings.CutPrefix(sc.Text(), "# want: "); ok {
					wants = append(wants, w)
				}
				if w, ok := strings.CutPrefix(sc.Text(), "# warn: "); ok {
					warns = append(warns, w)
				}
			}
			dir := newProject(t, string(data))
			// "# oss: NAME: CONTENT" adds oss/NAME/config.yaml (\n for
			// a new line), for problems in an OS's file.
			sc = bufio.NewScanner(strings.NewReader(string(data)))
			for sc.Scan() {
				if o, ok := strings.CutPrefix(sc.Text(), "# oss: "); ok {
					name, content, _ := strings.Cut(o, ": ")
					testfile.Write(t, filepath.Join(dir, "oss", name, "config.yaml"), strings.ReplaceAll(content, `\n`, "\n"))
				}
			}
			p, err := LoadProject(dir, fakeHost(t))
			// "# warn: TEXT" lines are the warnings expected, matched
			// like the problems.
			var got []string
			if p != nil {
				got = p.Warnings
			}
			usedW := make([]bool, len(got))
			for _, w := range warns {
				found := false
				for i, g := range got {
					if !usedW[i] && strings.Contains(g, w) {
						usedW[i], found = true, true
						break
					}
				}
				if !found {
					t.Errorf("missing warning %q in %q", w, got)
				}
			}
			for i, g := range got {
				if !usedW[i] {
					t.Errorf("unexpected warning: %s", g)
				}
			}
			if len(wants) == 0 {
				if err != nil {
					t.Fatalf("want no problems, got:\n%v", err)
				}
				if p == nil || p.Config == nil {
					t.Fatal("no project")
				}
				return
			}
			var ps Problems
			if !errors.As(err, &ps) {
				t.Fatalf("want problems %q, got error %v", wants, err)
			}
			used := make([]bool, len(ps))
			for _, w := range wants {
				found := false
				for i, pr := range ps {
					if !used[i] && strings.Contains(pr.String(), w) {
						used[i], found = true, true
						break
					}
				}
				if !found {
					t.Errorf("missing problem %q", w)
				}
			}
			for i, pr := range ps {
				if !used[i] {
					t.Errorf("unexpected problem: %s", pr)
				}
				if !strings.HasPrefix(pr.File, dir) {
					t.Errorf("problem does not name the file: %s", pr)
				}
			}
		})
	}
}

func TestDefaultsAndResolve(t *testing.T) {
	dir := newProject(t, "version: 1\n")
	p, err := LoadProject(dir, fakeHost(t))
	if err != nil {
		t.Fatal(err)
	}
	c := p.Config
	checkValues(t, []valueCheck{
		{"interface", c.Server.Interface, "lab0"},
		{"address", c.Server.Address, "10.0.0.1"},
		{"prefix", p.Prefix, netip.MustParsePrefix("10.0.0.0/24")},
		{"http_port", c.Server.HTTPPort, 8080},
		{"torrent_port", c.Server.TorrentPort, 6881},
		{"dhcp.mode", c.DHCP.Mode, DHCPProxy},
		{"tftp", c.TFTP.Enabled, true},
		{"timeout", c.Boot.Timeout.Duration, 10 * time.Second},
		{"seed_time", c.Boot.SeedTime.Duration, 30 * time.Second},
		{"menu", c.Boot.Menu, []string{"debian", "tools"}},
		{"default_os", c.Boot.DefaultOS, "debian"},
		// The host runs 6.18.0-host, which /boot lacks: the newest kernel
		// with modules wins, compared numerically (10 > 9), and the one
		// without modules is passed over.
		{"kernel", c.Client.Kernel, "/boot/vmlinuz-6.1.0-10-amd64"},
		{"modules", c.Client.Modules, "/lib/modules/6.1.0-10-amd64"},
		{"ipxe.dir", c.IPXE.Dir, "/usr/lib/ipxe"},
		{"ipxe.bios", c.IPXE.BIOS, "undionly.kpxe"},
		{"ipxe.uefi", c.IPXE.UEFI, "ipxe.efi"},
		{"outdir", p.OutDir(), filepath.Join(dir, "out")},
		{"oses", len(p.OSes), 2},
		{"tools args", p.OS("tools").BinArgs, []string{"-v", "--name", "a b"}},
		{"debian files", p.OS("debian").Files, []string{"config.yaml", "initrd.img", "vmlinuz"}},
	})
}

func TestRunningKernelPreferred(t *testing.T) {
	h := fakeHost(t)
	h.KernelRelease = func() string { return "6.1.0-9-amd64" }
	p, err := LoadProject(newProject(t, "version: 1\n"), h)
	if err != nil {
		t.Fatal(err)
	}
	if p.Config.Client.Kernel != "/boot/vmlinuz-6.1.0-9-amd64" {
		t.Errorf("kernel = %s, want the running one", p.Config.Client.Kernel)
	}
}

func TestNoKernel(t *testing.T) {
	h := fakeHost(t)
	os.RemoveAll(filepath.Join(h.Root, "lib"))
	_, err := LoadProject(newProject(t, "version: 1\n"), h)
	if err == nil || !strings.Contains(err.Error(), "client.kernel: no kernel found for the boot client") {
		t.Fatalf("want a clear no-kernel error, got %v", err)
	}
}

func TestValidFull(t *testing.T) {
	data, _ := os.ReadFile("testdata/cases/valid-full.yaml")
	p, err := LoadProject(newProject(t, string(data)), fakeHost(t))
	if err != nil {
		t.Fatal(err)
	}
	c := p.Config
	if c.DHCP.First != netip.MustParseAddr("10.0.0.50") || c.DHCP.Last != netip.MustParseAddr("10.0.0.150") {
		t.Errorf("range parsed as %s-%s", c.DHCP.First, c.DHCP.Last)
	}
	if c.Boot.Timeout.Duration >= 0 {
		t.Errorf("timeout %s, want negative (wait forever)", c.Boot.Timeout)
	}
	if got := p.MenuOSes(); len(got) != 2 || got[0].Name != "tools" {
		t.Errorf("menu order %v", got)
	}
	// MACs are normalized to lower case.
	m, ok := c.Machines["52:54:00:aa:bb:cc"]
	if !ok || m.Name != "node01" || m.OS != "debian" {
		t.Errorf("machines = %#v", c.Machines)
	}
}

func TestNoProject(t *testing.T) {
	_, err := LoadProject(t.TempDir(), fakeHost(t))
	if !errors.Is(err, ErrNoProject) || !strings.Contains(err.Error(), "boottorrent init") {
		t.Fatalf("got %v", err)
	}
}

func TestNoOS(t *testing.T) {
	dir := t.TempDir()
	testfile.Write(t, filepath.Join(dir, FileName), "version: 1\n")
	os.Mkdir(filepath.Join(dir, "oss"), 0o755)
	_, err := LoadProject(dir, fakeHost(t))
	if err == nil || !strings.Contains(err.Error(), "no operating system yet") {
		t.Fatalf("got %v", err)
	}
}

func TestLegacyProject(t *testing.T) {
	h := fakeHost(t)
	base := h.Interfaces
	h.Interfaces = func() ([]HostInterface, error) {
		ifs, err := base()
		return ifs, err
	}
	// The legacy file names interface lab0 with host_ip 10.0.0.1.
	p, err := LoadProject("testdata/legacy", h)
	if err != nil {
		t.Fatal(err)
	}
	c := p.Config
	checkValues(t, []valueCheck{
		{"mode", c.DHCP.Mode, DHCPFull},
		{"range", c.DHCP.Range, "10.0.0.50-10.0.0.150"},
		{"lease", c.DHCP.LeaseTime.Duration, 12 * time.Hour},
		{"address", c.Server.Address, "10.0.0.1"},
		{"interface", c.Server.Interface, "lab0"},
		{"tftp", c.TFTP.Enabled, true},
		{"timeout", c.Boot.Timeout.Duration < 0, true},
		{"seed", c.Boot.SeedTime.Duration, 45 * time.Second},
		{"default", c.Boot.DefaultOS, "freedos"},
		{"menu", c.Boot.Menu, []string{"testos", "freedos"}},
		{"freedos method", string(p.OS("freedos").Method), "qemu"},
		{"freedos args", []string(p.OS("freedos").Args), []string{"-fda", "odin1440.img"}},
		{"freedos files", p.OS("freedos").Files, []string{"config.yaml", "odin1440.img"}},
		{"testos cmdline", p.OS("testos").Cmdline, "break"},
		{"warnings", len(p.Warnings), 1},
	})
	if len(p.Warnings) == 1 {
		w := p.Warnings[0]
		for _, s := range []string{"original BootTorrent", "mode: full", "range: 10.0.0.50-10.0.0.150",
			"opentracker.port: the tracker is built in", "dnsmasq.user:", "aria2.console_log_level:", "transmission.rpc_port:"} {
			if !strings.Contains(w, s) {
				t.Errorf("warning lacks %q:\n%s", s, w)
			}
		}
		// The equivalent file shown in the warning must itself load.
		var eq []string
		for _, l := range strings.Split(w, "\n") {
			if strings.HasPrefix(l, "    ") {
				eq = append(eq, strings.TrimPrefix(l, "    "))
			}
		}
		if _, err := Decode("equivalent.yaml", []byte(strings.Join(eq, "\n"))); err != nil {
			t.Errorf("the warning's equivalent file does not decode: %v\n%s", err, strings.Join(eq, "\n"))
		}
	}
}

func TestLegacyMappings(t *testing.T) {
	cases := []struct {
		name, yaml string
		check      func(*Decoded) bool
		wantErr    string
	}{
		{"dhcp off means proxy", "boottorrent: {version: 0}\ndnsmasq: {enable_dhcp: false, dhcp_range: '1,2,3h'}\n",
			func(d *Decoded) bool {
				return d.Config.DHCP.Mode == DHCPProxy && d.Config.DHCP.Range == "" && strings.Contains(d.Warning, "dnsmasq.dhcp_range:")
			}, ""},
		{"zero timeout boots at once", "boottorrent: {version: 0, timeout: 0}\n",
			func(d *Decoded) bool { return d.Config.Boot.Timeout.Duration == 0 }, ""},
		{"lease in days", "dnsmasq: {enable_dhcp: true, dhcp_range: '10.0.0.5,10.0.0.9,2d'}\n",
			func(d *Decoded) bool { return d.Config.DHCP.LeaseTime.Duration == 48*time.Hour }, ""},
		{"tftp off", "dnsmasq: {enable_tftp: false}\n",
			func(d *Decoded) bool { return !d.Config.TFTP.Enabled }, ""},
		{"bad lease", "dnsmasq: {enable_dhcp: true, dhcp_range: '10.0.0.5,10.0.0.9,soon'}\n", nil, "lease time \"soon\""},
		{"range missing", "dnsmasq: {enable_dhcp: true}\n", nil, "dnsmasq.dhcp_range: required when enable_dhcp is true"},
		{"unknown legacy key", "boottorrent: {version: 0, colour: red}\n", nil, "boottorrent.colour: unknown key"},
		{"wrong version", "boottorrent: {version: 3}\n", nil, "boottorrent.version: 3 is not a version"},
		{"negative seed", "boottorrent: {seed_time: -1}\n", nil, "boottorrent.seed_time: must not be negative"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			d, err := Decode("B.yaml", []byte(tc.yaml))
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("want error %q, got %v", tc.wantErr, err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !d.Legacy || !tc.check(d) {
				t.Errorf("mapping wrong: %+v\nwarning: %s", d.Config, d.Warning)
			}
		})
	}
}

func TestInitThenLoad(t *testing.T) {
	h := fakeHost(t)
	dir := filepath.Join(t.TempDir(), "lab")
	iface, addr := DetectLAN(h)
	if iface != "lab0" || addr != "10.0.0.1" {
		t.Fatalf("DetectLAN = %s %s", iface, addr)
	}
	if err := Init(dir, iface, addr); err != nil {
		t.Fatal(err)
	}
	// Without an OS the project is incomplete, and says how to fix it.
	if _, err := LoadProject(dir, h); err == nil || !strings.Contains(err.Error(), "no operating system yet") {
		t.Fatalf("fresh project: %v", err)
	}
	testfile.Write(t, filepath.Join(dir, "oss/debian/config.yaml"), "method: kexec\nkernel: vmlinuz\n")
	testfile.Write(t, filepath.Join(dir, "oss/debian/vmlinuz"), "k")
	p, err := LoadProject(dir, h)
	if err != nil {
		t.Fatalf("init's skeleton does not load: %v", err)
	}
	if p.Config.Server.Interface != "lab0" || p.Config.Server.Address != "10.0.0.1" {
		t.Errorf("skeleton server = %+v", p.Config.Server)
	}
	// The skeleton's settings equal the defaults, key for key.
	def := Default()
	if p.Config.Server.HTTPPort != def.Server.HTTPPort || p.Config.Boot.Timeout != def.Boot.Timeout ||
		p.Config.Boot.SeedTime != def.Boot.SeedTime || p.Config.DHCP.Mode != def.DHCP.Mode || p.Config.IPXE != def.IPXE {
		t.Errorf("skeleton differs from defaults: %+v", p.Config)
	}
	// A second init refuses and changes nothing.
	before, _ := os.ReadFile(filepath.Join(dir, FileName))
	if err := Init(dir, "x", "1.2.3.4"); !errors.Is(err, ErrProjectExists) {
		t.Fatalf("second init: %v", err)
	}
	after, _ := os.ReadFile(filepath.Join(dir, FileName))
	if string(before) != string(after) {
		t.Error("second init changed Boottorrent.yaml")
	}
}

func TestSkeletonWithoutLAN(t *testing.T) {
	d, err := Decode("B.yaml", []byte(Skeleton("", "")))
	if err != nil {
		t.Fatal(err)
	}
	if d.Config.Server.Interface != "" || d.Config.Server.Address != "" {
		t.Errorf("interface/address should stay unset: %+v", d.Config.Server)
	}
}

func TestParseRange(t *testing.T) {
	for _, tc := range []struct {
		in string
		ok bool
	}{
		{"10.0.0.1-10.0.0.9", true}, {"10.0.0.1 - 10.0.0.1", true}, {"10.0.0.9-10.0.0.1", false},
		{"10.0.0.1", false}, {"::1-::2", false}, {"a-b", false},
	} {
		_, _, err := ParseRange(tc.in)
		if (err == nil) != tc.ok {
			t.Errorf("ParseRange(%q) err=%v", tc.in, err)
		}
	}
}

func TestVersionLess(t *testing.T) {
	if !versionLess("6.1.0-9-amd64", "6.1.0-10-amd64") || versionLess("6.10.0", "6.9.0") {
		t.Error("kernel versions compare wrongly")
	}
}

// FuzzDecode feeds arbitrary bytes to both decoders (new and legacy); they
// must return a config or problems, never panic.
func FuzzDecode(f *testing.F) {
	for _, p := range []string{"testdata/legacy/Boottorrent.yaml"} {
		if b, err := os.ReadFile(p); err == nil {
			f.Add(b)
		}
	}
	files, _ := filepath.Glob("testdata/cases/*.yaml")
	for _, p := range files {
		b, _ := os.ReadFile(p)
		f.Add(b)
	}
	f.Add([]byte(Skeleton("eth0", "10.0.0.1")))
	f.Add([]byte("boottorrent:\n  timeout: -1\ndnsmasq:\n  dhcp_range: ',,'\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		d, err := Decode("fuzz.yaml", data)
		if err == nil && d == nil {
			t.Fatal("nil result without error")
		}
		if err != nil {
			var ps Problems
			if errors.As(err, &ps) && len(ps) == 0 {
				t.Fatal("empty problem list as error")
			}
		}
	})
}
