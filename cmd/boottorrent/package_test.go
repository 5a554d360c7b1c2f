package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/boottorrent/boottorrent/initramfs/bootapi"
	"github.com/boottorrent/boottorrent/netboot/netns"
	"github.com/boottorrent/boottorrent/netboot/netns/nstest"
)

// The Debian package tests read what `bash .ci/package` wrote to dist/
// (.ci/test builds it before the tests).
const (
	distTarget = "debian-12"
	// rootCache is a Debian 12 root with systemd and ipxe (the package's
	// dependencies) from mmdebstrap, kept as a tar: making it takes about
	// 80 s, unpacking it 2 s.
	rootCache = "/var/cache/boottorrent-test/debian-12-systemd-ipxe-root.tar"
	// unitCaps are the capabilities boottorrent.service grants.
	unitCaps = "net_bind_service,net_raw"
)

// lintianKept are the lintian warnings the package keeps, and why.
var lintianKept = map[string]string{
	// The package is built from git for the project's labs and is not
	// uploaded to Debian: there is no ITP bug to close.
	"initial-upload-closes-no-bugs": "",
}

type distFiles struct {
	dir, deb, version string
}

// dist finds the amd64 package through its latest.txt pointer.
func dist(t *testing.T) distFiles {
	t.Helper()
	dir, err := filepath.Abs("../../dist")
	if err != nil {
		t.Fatal(err)
	}
	latest := filepath.Join(dir, "boottorrent_"+distTarget+".amd64.latest.txt")
	b, err := os.ReadFile(latest)
	if err != nil {
		t.Skipf("no package to test (%v): run bash .ci/package first (.ci/test does)", err)
	}
	name := strings.TrimSpace(string(b))
	if strings.ContainsAny(name, "/\n") || !strings.HasSuffix(name, "_amd64.deb") {
		t.Fatalf("%s names %q, not a .deb in its folder", latest, b)
	}
	m := regexp.MustCompile(`^boottorrent_(.+)-1_amd64\.deb$`).FindStringSubmatch(name)
	if m == nil {
		t.Fatalf("%s: %q is not boottorrent_VERSION-1_amd64.deb", latest, name)
	}
	return distFiles{dir: dir, deb: filepath.Join(dir, name), version: m[1]}
}

func need(t *testing.T, tools ...string) {
	t.Helper()
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("needs %s (bash .ci/install installs it)", tool)
		}
	}
}

func runTool(t *testing.T, prog string, args ...string) string {
	t.Helper()
	out, err := exec.Command(prog, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", prog, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// TestPackageReleaseFiles checks what .ci/package publishes besides the
// package: latest.txt names it, SHA256SUMS covers it, and Debian's
// minisign verifies its signature, and refuses a changed file.
func TestPackageReleaseFiles(t *testing.T) {
	need(t, "minisign", "sha256sum")
	d := dist(t)
	pub := filepath.Join(d.dir, "minisign.pub")
	for _, f := range []string{d.deb, filepath.Join(d.dir, "SHA256SUMS")} {
		out := runTool(t, "minisign", "-V", "-p", pub, "-m", f)
		if !strings.Contains(out, "Signature and comment signature verified") ||
			!strings.Contains(out, filepath.Base(f)+" boottorrent "+d.version) {
			t.Errorf("minisign -V %s:\n%s", f, out)
		}
	}
	sums := runTool(t, "sh", "-c", "cd "+d.dir+" && sha256sum -c SHA256SUMS")
	if !strings.Contains(sums, filepath.Base(d.deb)+": OK") {
		t.Errorf("SHA256SUMS does not cover %s:\n%s", filepath.Base(d.deb), sums)
	}
	// One changed byte: the signature no longer verifies.
	b, err := os.ReadFile(d.deb)
	if err != nil {
		t.Fatal(err)
	}
	b[len(b)/2] ^= 1
	bad := filepath.Join(t.TempDir(), filepath.Base(d.deb))
	os.WriteFile(bad, b, 0o644)
	if out, err := exec.Command("minisign", "-V", "-p", pub, "-m", bad, "-x", d.deb+".minisig").CombinedOutput(); err == nil {
		t.Errorf("a changed package verified:\n%s", out)
	}
}

// TestPackageContents checks the control fields, the file list and
// lintian.
func TestPackageContents(t *testing.T) {
	need(t, "dpkg-deb", "lintian")
	d := dist(t)
	info := runTool(t, "dpkg-deb", "--info", d.deb)
	for _, want := range []string{
		"Package: boottorrent\n", "Version: " + d.version + "-1\n", "Architecture: amd64\n",
		"Section: net\n", "Priority: optional\n", "Depends: ipxe, systemd | systemd-standalone-sysusers\n",
		"Recommends: linux-image-amd64\n", " postinst ", " prerm ", " postrm ",
	} {
		if !strings.Contains(info, want) {
			t.Errorf("dpkg-deb --info has no %q:\n%s", want, info)
		}
	}
	contents := runTool(t, "dpkg-deb", "--contents", d.deb)
	for _, want := range []string{
		"-rwxr-xr-x root/root .* ./usr/bin/boottorrent\n",
		" ./usr/lib/systemd/system/boottorrent.service\n",
		" ./usr/lib/sysusers.d/boottorrent.conf\n",
		" ./usr/share/man/man1/boottorrent.1.gz\n",
		" ./usr/share/doc/boottorrent/README.md.gz\n",
		" ./usr/share/doc/boottorrent/changelog.Debian.gz\n",
		" ./usr/share/doc/boottorrent/copyright\n",
		" ./usr/share/doc/boottorrent/examples/lab/Boottorrent.yaml\n",
		" ./usr/share/doc/boottorrent/examples/lab/oss/debian/config.yaml\n",
		" ./usr/share/lintian/overrides/boottorrent\n",
	} {
		if !regexp.MustCompile(want).MatchString(contents) {
			t.Errorf("dpkg-deb --contents has no %q:\n%s", want, contents)
		}
	}
	out, _ := exec.Command("lintian", "--pedantic", d.deb).CombinedOutput()
	for _, line := range strings.Split(string(out), "\n") {
		f := strings.Fields(line)
		if len(f) < 3 || !strings.HasSuffix(f[0], ":") || len(f[0]) != 2 {
			continue
		}
		if _, kept := lintianKept[f[2]]; f[0] == "W:" && kept || f[0] == "I:" || f[0] == "P:" || f[0] == "N:" {
			continue
		}
		t.Errorf("lintian: %s", line)
	}
}

// installRoot unpacks a Debian 12 root with the package's dependencies
// (made once with mmdebstrap and cached) into a temporary folder.
func installRoot(t *testing.T) string {
	t.Helper()
	need(t, "mmdebstrap", "dpkg", "tar")
	if _, err := os.Stat(rootCache); err != nil {
		os.MkdirAll(filepath.Dir(rootCache), 0o755)
		tmp := rootCache + ".part.tar"
		if out, err := exec.Command("mmdebstrap", "--variant=essential", "--include=systemd,ipxe",
			"bookworm", tmp).CombinedOutput(); err != nil {
			os.Remove(tmp)
			t.Fatalf("mmdebstrap (a Debian 12 root to install into): %v\n%s", err, out)
		}
		if err := os.Rename(tmp, rootCache); err != nil {
			t.Fatal(err)
		}
	}
	root, err := os.MkdirTemp("", "debroot-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(root) })
	os.Chmod(root, 0o755) // the capability test runs its binary as nobody
	runTool(t, "tar", "-C", root, "-xf", rootCache)
	return root
}

// dpkgRoot runs dpkg on root; maintainer scripts run chrooted there.
func dpkgRoot(t *testing.T, root string, args ...string) string {
	t.Helper()
	return runTool(t, "dpkg", append([]string{"--root=" + root}, args...)...)
}

func exists(path string) bool {
	_, err := os.Lstat(path)
	return err == nil
}

// TestPackageInstall installs the package into a throw-away Debian 12
// root: files, user and unit in place, the unit verified by systemd,
// then an upgrade that keeps the state and a purge that keeps the
// administrator's project. It then runs the installed binary with the
// unit's capabilities (capabilityTest).
func TestPackageInstall(t *testing.T) {
	need(t, "systemd-analyze", "chroot")
	d := dist(t)
	root := installRoot(t)
	deb := filepath.Join(root, "tmp", filepath.Base(d.deb))
	b, err := os.ReadFile(d.deb)
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(deb, b, 0o644)
	dpkgRoot(t, root, "-i", deb)

	passwd, _ := os.ReadFile(filepath.Join(root, "etc/passwd"))
	if !regexp.MustCompile(`(?m)^boottorrent:x:\d+:\d+:[^:]*:/var/lib/boottorrent:/usr/sbin/nologin$`).Match(passwd) {
		t.Errorf("no boottorrent system user in /etc/passwd:\n%s", passwd)
	}
	for _, f := range []string{
		"usr/bin/boottorrent", "usr/lib/systemd/system/boottorrent.service",
		"etc/systemd/system/multi-user.target.wants/boottorrent.service",
		"usr/share/man/man1/boottorrent.1.gz", "var/lib/boottorrent",
	} {
		if !exists(filepath.Join(root, f)) {
			t.Errorf("/%s missing after install", f)
		}
	}
	if v := strings.TrimSpace(runTool(t, "chroot", root, "boottorrent", "version")); v != "boottorrent "+d.version {
		t.Errorf("boottorrent version = %q; the package is %s", v, d.version)
	}
	owner := runTool(t, "chroot", root, "stat", "-c", "%U:%G %a", "/var/lib/boottorrent")
	if strings.TrimSpace(owner) != "boottorrent:boottorrent 750" {
		t.Errorf("/var/lib/boottorrent is %s, want boottorrent:boottorrent 750", owner)
	}
	// The documentation key names a man page the root does not index
	// (no man-db): --man=no; the page itself is checked by lintian.
	if out, err := exec.Command("systemd-analyze", "verify", "--man=no", "--root="+root,
		"/usr/lib/systemd/system/boottorrent.service").CombinedOutput(); err != nil || len(bytes.TrimSpace(out)) > 0 {
		t.Errorf("systemd-analyze verify: %v\n%s", err, out)
	}

	// State written by a running service survives an upgrade (the same
	// package installed again runs the upgrade scripts).
	state := map[string]string{
		"Boottorrent.yaml":             "version: 1\n",
		"oss/debian/vmlinuz":           "kernel",
		"out/leases.json":              `{"mac":"52:54:00:aa:00:01"}`,
		"out/cache/hashes/debian.json": "{}",
		"out/client/initramfs":         "cpio",
	}
	lib := filepath.Join(root, "var/lib/boottorrent")
	for p, data := range state {
		os.MkdirAll(filepath.Dir(filepath.Join(lib, p)), 0o755)
		os.WriteFile(filepath.Join(lib, p), []byte(data), 0o644)
	}
	up := dpkgRoot(t, root, "-i", deb)
	if !strings.Contains(up, "over ("+d.version+"-1)") {
		t.Errorf("the second install was not an upgrade:\n%s", up)
	}
	for p, data := range state {
		if b, err := os.ReadFile(filepath.Join(lib, p)); err != nil || string(b) != data {
			t.Errorf("/var/lib/boottorrent/%s lost in the upgrade: %v", p, err)
		}
	}

	capabilityTest(t, filepath.Join(root, "usr/bin/boottorrent"))

	// Purge removes the generated out/ and the package's files; the
	// administrator's project stays.
	dpkgRoot(t, root, "--purge", "boottorrent")
	for _, gone := range []string{"var/lib/boottorrent/out", "usr/bin/boottorrent",
		"etc/systemd/system/multi-user.target.wants/boottorrent.service"} {
		if exists(filepath.Join(root, gone)) {
			t.Errorf("/%s left after purge", gone)
		}
	}
	for _, kept := range []string{"Boottorrent.yaml", "oss/debian/vmlinuz"} {
		if !exists(filepath.Join(lib, kept)) {
			t.Errorf("purge removed the administrator's /var/lib/boottorrent/%s", kept)
		}
	}
}

// capabilityTest runs the installed binary as an unprivileged user with
// exactly the unit's capabilities (as systemd's User=,
// AmbientCapabilities=, CapabilityBoundingSet= and NoNewPrivileges= do)
// in a namespace LAN: it serves DHCP, TFTP and HTTP to busybox's clients.
// Without CAP_NET_BIND_SERVICE it fails naming it; without CAP_NET_RAW it
// warns naming it and still serves IPv4.
func capabilityTest(t *testing.T, binary string) {
	need(t, "setpriv", "busybox")
	if m, _ := filepath.Glob("/boot/vmlinuz-*"); len(m) == 0 {
		t.Skip("needs a kernel for the boot client: apt-get install linux-image-amd64")
	}
	_, hosts := nstest.LAN(t, "10.78.0.1/24", "10.78.0.2/24")
	srv, cli := hosts[0], hosts[1]

	// The project, owned by nobody as /var/lib/boottorrent is by the
	// service's user.
	dir, err := os.MkdirTemp("", "capproject-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	os.WriteFile(filepath.Join(dir, "Boottorrent.yaml"), []byte(`version: 1
server:
  interface: eth0
dhcp:
  mode: full
  range: 10.78.0.100-10.78.0.120
boot:
  timeout: 0s
`), 0o644)
	os.MkdirAll(filepath.Join(dir, "oss/tiny"), 0o755)
	os.WriteFile(filepath.Join(dir, "oss/tiny/config.yaml"), []byte("method: bin\nbin: payload.bin\n"), 0o644)
	os.WriteFile(filepath.Join(dir, "oss/tiny/payload.bin"), bytes.Repeat([]byte("boottorrent"), 1000), 0o644)
	runTool(t, "chown", "-R", "nobody:nogroup", dir)
	os.Chmod(dir, 0o755)

	// journal: stderr is a pipe named in JOURNAL_STREAM, as systemd
	// connects a service's stderr to the journal.
	start := func(caps string, journal bool) (*logBuffer, chan error, func()) {
		args := []string{"--reuid=nobody", "--regid=nogroup", "--clear-groups",
			"--inh-caps=-all" + caps, "--ambient-caps=-all" + caps, "--bounding-set=-all" + caps,
			"--no-new-privs", binary, "start", "--dir", dir}
		log := &logBuffer{exited: make(chan struct{})}
		cmd := srv.Command(context.Background(), "setpriv", args...)
		cmd.Stdout, cmd.Stderr = log, log
		var copied chan struct{}
		if journal {
			r, w, err := os.Pipe()
			if err != nil {
				t.Fatal(err)
			}
			var st syscall.Stat_t
			syscall.Fstat(int(w.Fd()), &st)
			cmd.Env = append(os.Environ(), fmt.Sprintf("JOURNAL_STREAM=%d:%d", st.Dev, st.Ino))
			cmd.Stderr = w
			copied = make(chan struct{})
			go func() { io.Copy(log, r); r.Close(); close(copied) }()
			defer w.Close()
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		go func() {
			err := cmd.Wait()
			if copied != nil {
				<-copied
			}
			close(log.exited)
			done <- err
		}()
		stop := func() {
			cmd.Process.Signal(os.Interrupt)
			select {
			case <-log.exited:
			case <-time.After(20 * time.Second):
				cmd.Process.Kill()
				<-log.exited
				t.Errorf("still running 20 s after SIGINT:\n%s", log.String())
			}
		}
		t.Cleanup(func() { cmd.Process.Kill(); <-log.exited })
		return log, done, stop
	}
	all := ",+" + strings.ReplaceAll(unitCaps, ",", ",+")

	// The unit's set: DHCP, TFTP and HTTP answer.
	t0 := time.Now()
	log, _, stop := start(all, true)
	log.waitFor(t, "msg=ready", 4*time.Minute)
	t.Logf("ready as nobody with %s in %s", unitCaps, time.Since(t0).Round(time.Millisecond))
	// In the journal: priority prefixes, no second time stamp.
	if !strings.Contains(log.String(), "<6>level=INFO msg=ready") || regexp.MustCompile(`(?m)(^|[> ])time=`).MatchString(log.String()) {
		t.Errorf("log lines are not in the journal's format:\n%s", log.String())
	}
	if strings.Contains(log.String(), "router advertisements for iPXE disabled") {
		t.Errorf("router advertisements failed with CAP_NET_RAW:\n%s", log.String())
	}
	serves(t, cli)
	stop()

	// Without CAP_NET_BIND_SERVICE: start fails and says which capability.
	log, done, _ := start(",+net_raw", false)
	select {
	case err := <-done:
		if err == nil || !strings.Contains(log.String(), "CAP_NET_BIND_SERVICE") {
			t.Errorf("without CAP_NET_BIND_SERVICE: exit %v, and the message should name it:\n%s", err, log.String())
		}
		t.Logf("without CAP_NET_BIND_SERVICE: %v: %s", err, lastLine(log.String()))
	case <-time.After(2 * time.Minute):
		t.Fatalf("without CAP_NET_BIND_SERVICE it still runs:\n%s", log.String())
	}

	// Without CAP_NET_RAW: only the IPv6 router advertisements are lost,
	// and the warning names the capability. The DHCP socket's
	// SO_BINDTODEVICE needs no capability.
	log, _, stop = start(",+net_bind_service", false)
	log.waitFor(t, "msg=ready", 2*time.Minute)
	if !strings.Contains(log.String(), "CAP_NET_RAW") {
		t.Errorf("without CAP_NET_RAW the log does not name it:\n%s", log.String())
	}
	for _, l := range strings.Split(log.String(), "\n") {
		if strings.Contains(l, "CAP_NET_RAW") {
			t.Logf("without CAP_NET_RAW: %s", l)
		}
	}
	serves(t, cli)
	stop()
}

// serves has busybox's DHCP and TFTP clients and an HTTP client in ns ask
// the server at 10.78.0.1.
func serves(t *testing.T, ns *netns.NS) {
	t.Helper()
	out, err := ns.Run("busybox", "udhcpc", "-i", "eth0", "-f", "-q", "-n", "-s", "/bin/true", "-t", "5", "-T", "1")
	if err != nil || !strings.Contains(string(out), "obtained") {
		t.Errorf("udhcpc: %v\n%s", err, out)
	}
	got := filepath.Join(t.TempDir(), "undionly.kpxe")
	if out, err := ns.Run("busybox", "tftp", "-g", "-r", "undionly.kpxe", "-l", got, "10.78.0.1"); err != nil {
		t.Errorf("tftp: %v\n%s", err, out)
	} else if a, b := fileBytes(got), fileBytes("/usr/lib/ipxe/undionly.kpxe"); !bytes.Equal(a, b) || len(a) == 0 {
		t.Errorf("tftp got %d bytes, want undionly.kpxe's %d", len(a), len(b))
	}
	c := ns.HTTPClient(10 * time.Second)
	resp, err := c.Get("http://10.78.0.1:8080" + bootapi.PathBootScript + "?mac=52:54:00:00:00:01")
	if err != nil {
		t.Errorf("http: %v", err)
		return
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Errorf("http: %s", resp.Status)
	}
}

func lastLine(s string) string {
	s = strings.TrimSpace(s)
	return s[strings.LastIndex(s, "\n")+1:]
}

func fileBytes(p string) []byte {
	b, _ := os.ReadFile(p)
	return b
}
