package netboot

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/boottorrent/boottorrent/initramfs/bootapi"
	"github.com/boottorrent/boottorrent/netboot/dhcp"
	"github.com/boottorrent/boottorrent/netboot/netns"
	"github.com/boottorrent/boottorrent/netboot/netns/nstest"
	"github.com/boottorrent/boottorrent/netboot/vm"
)

func TestMain(m *testing.M) { nstest.Main(m) }

// lab is a virtual LAN with our server on it at 10.77.0.1, as
// `boottorrent start` would run it, serving the test OS as the boot client.
type lab struct {
	lan    *netns.LAN
	srvNS  *netns.NS
	srv    *Server
	outDir string // the project's out/
	tos    *vm.TestOS
	logs   *nstest.Buffer
	base   string
}

const (
	labServer = "10.77.0.1"
	labPrefix = "10.77.0.0/24"
	// The stand-in site DHCP server's range (proxy mode) and ours (full).
	siteFirst, siteLast = "10.77.0.100", "10.77.0.150"
	fullFirst, fullLast = "10.77.0.50", "10.77.0.90"
)

func needVM(t *testing.T, fws ...vm.Firmware) {
	t.Helper()
	if err := netns.Available(); err != nil {
		t.Skip(err)
	}
	for _, fw := range fws {
		if err := vm.Available(fw); err != nil {
			t.Skip(err)
		}
	}
	if err := vm.TestOSAvailable(); err != nil {
		t.Skip(err)
	}
	if _, err := os.Stat("/usr/lib/ipxe/undionly.kpxe"); err != nil {
		t.Skip("needs /usr/lib/ipxe: apt-get install ipxe")
	}
}

// newLab builds the LAN and starts the server in mode; marker is what the
// test OS prints. With withhold, the client kernel is missing until
// withheldMachines machines have been refused it (see releaseKernel).
func newLab(t *testing.T, mode dhcp.Mode, marker string, withhold bool) *lab {
	t.Helper()
	l := &lab{logs: &nstest.Buffer{}}
	tos, err := vm.BuildTestOS(t.TempDir(), marker)
	if err != nil {
		t.Fatal(err)
	}
	l.tos = tos
	lan, hosts := nstest.LAN(t, labServer+"/24")
	l.lan, l.srvNS = lan, hosts[0]

	o := labOptions("eth0", labServer+"/24")
	o.DHCP.Mode = mode
	o.Cmdline = vm.GuestArgs
	l.outDir = filepath.Join(t.TempDir(), "out")
	if mode == dhcp.ModeFull {
		o.DHCP.First, o.DHCP.Last = netip.MustParseAddr(fullFirst), netip.MustParseAddr(fullLast)
		o.DHCP.LeaseFile = filepath.Join(l.outDir, LeaseFileName)
	}
	l.base = o.HTTPBase()
	log := slog.New(slog.NewTextHandler(l.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	kernel := tos.Kernel
	if withhold {
		kernel = filepath.Join(t.TempDir(), "vmlinuz")
	}
	o.Logger, o.ClientKernel, o.ClientInitramfs = log, kernel, tos.Initramfs
	srv, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	l.srv = srv
	ctx, cancel := context.WithCancel(context.Background())
	var hs *http.Server
	err = l.srvNS.Do(func() error {
		if err := srv.Start(ctx); err != nil {
			return err
		}
		ln, err := net.Listen("tcp4", net.JoinHostPort(labServer, fmt.Sprint(o.HTTPPort)))
		if err != nil {
			return err
		}
		hs = &http.Server{Handler: srv.Handler(), ReadHeaderTimeout: 10 * time.Second}
		go hs.Serve(ln)
		return nil
	})
	t.Cleanup(func() {
		cancel()
		if hs != nil {
			hs.Close()
		}
		srv.Close()
		if t.Failed() {
			t.Logf("server log:\n%s", l.logs.String())
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	return l
}

var refusedRe = regexp.MustCompile(`msg="client file unavailable".* mac=(\S+)`)

// releaseKernel waits until the server has refused the client kernel to n
// different machines (as while a server restarts or before the client is
// built), then puts the kernel in place: the iPXE script's retry loop must
// take every machine to the boot client without help.
func (l *lab) releaseKernel(t *testing.T, ctx context.Context, n int) {
	for ctx.Err() == nil {
		macs := map[string]bool{}
		for _, m := range refusedRe.FindAllStringSubmatch(l.logs.String(), -1) {
			macs[m[1]] = true
		}
		if len(macs) >= n {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	data, err := os.ReadFile(l.tos.Kernel)
	if err == nil {
		tmp := l.srv.opts.ClientKernel + ".tmp"
		if err = os.WriteFile(tmp, data, 0o644); err == nil {
			err = os.Rename(tmp, l.srv.opts.ClientKernel)
		}
	}
	if err != nil {
		t.Error(err)
	}
}

// siteDHCP runs dnsmasq as the site's DHCP server on its own host of the
// LAN, handing out addresses only (no PXE options), as in a lab where
// boottorrent runs in proxy mode next to the existing DHCP server.
func (l *lab) siteDHCP(t *testing.T) string {
	t.Helper()
	if _, err := exec.LookPath("dnsmasq"); err != nil {
		t.Skip("needs dnsmasq: apt-get install dnsmasq-base")
	}
	ns, _, err := l.lan.AddHost("eth0", netip.MustParsePrefix("10.77.0.2/24"))
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	leases := filepath.Join(dir, "dnsmasq.leases")
	cmd := ns.Command(context.Background(), "dnsmasq", "--no-daemon", "--port=0", "--user=root",
		"--interface=eth0", "--bind-interfaces", "--no-resolv", "--no-hosts", "--log-dhcp",
		"--dhcp-range="+siteFirst+","+siteLast+",255.255.255.0,1h",
		"--dhcp-leasefile="+leases, "--pid-file="+filepath.Join(dir, "pid"))
	out := &nstest.Buffer{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
		if t.Failed() {
			t.Logf("dnsmasq (site DHCP) log:\n%s", out.String())
		}
	})
	return leases
}

// bootResult is one VM's boot.
type bootResult struct {
	fw      vm.Firmware
	mac     string
	started time.Time
	elapsed time.Duration
	err     error
	console string
}

// bootVMs boots one VM per firmware at once and waits for each to print
// the marker.
func (l *lab) bootVMs(t *testing.T, fws ...vm.Firmware) []bootResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	res := make([]bootResult, len(fws))
	var wg sync.WaitGroup
	for i, fw := range fws {
		v, err := vm.Start(ctx, vm.Config{LAN: l.lan, Firmware: fw, Dir: t.TempDir()})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { v.Close() })
		res[i] = bootResult{fw: fw, mac: v.MAC().String(), started: v.Started()}
		wg.Go(func() {
			d, err := v.WaitFor(ctx, l.tos.Marker)
			res[i].elapsed, res[i].err, res[i].console = d, err, v.Output()
			if err != nil {
				cancel() // no need to wait for the other one
			}
		})
	}
	wg.Wait()
	for _, r := range res {
		if r.err != nil {
			t.Errorf("%s VM %s: %v", r.fw, r.mac, r.err)
			continue
		}
		t.Logf("%s VM %s: marker after %v", r.fw, r.mac, r.elapsed.Round(100*time.Millisecond))
	}
	if t.Failed() {
		t.FailNow()
	}
	return res
}

// checkBoot checks what the test OS saw and what the server recorded.
func (l *lab) checkBoot(t *testing.T, r bootResult, wantStages ...string) bootapi.Machine {
	t.Helper()
	var cmdline string
	for _, line := range strings.Split(r.console, "\n") {
		if i := strings.Index(line, vm.CmdlinePrefix); i >= 0 {
			cmdline = strings.TrimSpace(line[i+len(vm.CmdlinePrefix):])
		}
	}
	for _, want := range []string{"initrd=initramfs", "console=ttyS0,115200",
		bootapi.ArgServer + "=" + l.base, bootapi.ArgMAC + "=" + r.mac} {
		if !strings.Contains(" "+cmdline+" ", " "+want+" ") {
			t.Errorf("%s: kernel command line %q lacks %q", r.fw, cmdline, want)
		}
	}
	var m *bootapi.Machine
	for _, x := range l.srv.Machines() {
		if x.MAC == r.mac {
			m = &x
		}
	}
	if m == nil {
		t.Fatalf("%s: machine %s not in the registry", r.fw, r.mac)
	}
	for _, st := range wantStages {
		if _, ok := m.Stages[st]; !ok {
			t.Errorf("%s: registry has no %q stage: %+v", r.fw, st, m)
		}
	}
	if m.Stage != bootapi.StageClient {
		t.Errorf("%s: final stage %q, want %q", r.fw, m.Stage, bootapi.StageClient)
	}
	// Where the time went, from QEMU's start.
	var b strings.Builder
	for _, st := range []string{bootapi.StageDHCP, bootapi.StageTFTP, bootapi.StageIPXE, bootapi.StageClient} {
		if at, ok := m.Stages[st]; ok {
			fmt.Fprintf(&b, " %s=%.1fs", st, at.Sub(r.started).Seconds())
		}
	}
	t.Logf("%s VM %s stages:%s marker=%.1fs", r.fw, r.mac, b.String(), r.elapsed.Seconds())
	// iPXE's IPv6 router discovery was cut short (see RouterAdverts).
	if !strings.Contains(l.logs.String(), "router advertisement sent (ends iPXE's router discovery)\" component=netboot mac="+r.mac) {
		t.Errorf("%s: no router advertisement sent to %s", r.fw, r.mac)
	}
	return *m
}

// machinesOverHTTP reads /api/v1/machines the way the demo and the client
// tests do, from a host on the LAN.
func (l *lab) machinesOverHTTP(t *testing.T) []bootapi.Machine {
	t.Helper()
	var ms []bootapi.Machine
	// The connection is made on a thread inside the namespace; an
	// http.Client would dial from another goroutine, outside it.
	var conn net.Conn
	err := l.srvNS.Do(func() error {
		var err error
		conn, err = net.DialTimeout("tcp4", strings.TrimPrefix(l.base, "http://"), 10*time.Second)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	fmt.Fprintf(conn, "GET %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n", bootapi.PathMachines, labServer)
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(resp.Body).Decode(&ms); err != nil {
		t.Fatal(err)
	}
	return ms
}

func inRange(ip, first, last string) bool {
	a, err := netip.ParseAddr(ip)
	if err != nil {
		return false
	}
	return !a.Less(netip.MustParseAddr(first)) && !netip.MustParseAddr(last).Less(a)
}

// TestPXEProxy: proxy mode next to a site DHCP server (dnsmasq handing out
// addresses only). A BIOS VM (SeaBIOS + QEMU's iPXE ROM: no TFTP needed)
// and a UEFI VM whose firmware's own PXE is EDK II's (TFTP for ipxe.efi,
// then iPXE, then HTTP) boot at once to the test OS.
func TestPXEProxy(t *testing.T) {
	needVM(t, vm.BIOS, vm.UEFIPXE)
	l := newLab(t, dhcp.ModeProxy, "BOOTTORRENT-PXE-PROXY-OK", false)
	leases := l.siteDHCP(t)
	res := l.bootVMs(t, vm.BIOS, vm.UEFIPXE)

	bios := l.checkBoot(t, res[0], bootapi.StageIPXE, bootapi.StageClient)
	uefi := l.checkBoot(t, res[1], bootapi.StageDHCP, bootapi.StageTFTP, bootapi.StageIPXE, bootapi.StageClient)
	if uefi.Arch != "uefi-x64" {
		t.Errorf("EDK II machine's arch = %q", uefi.Arch)
	}
	// The addresses came from the site's server, none from us.
	for _, m := range []bootapi.Machine{bios, uefi} {
		if !inRange(m.IP, siteFirst, siteLast) {
			t.Errorf("%s has address %q, not from the site DHCP range", m.MAC, m.IP)
		}
	}
	if b, err := os.ReadFile(leases); err != nil || !strings.Contains(string(b), res[0].mac) || !strings.Contains(string(b), res[1].mac) {
		t.Errorf("site DHCP leases: %v\n%s", err, b)
	}
	if _, err := os.Stat(filepath.Join(l.outDir, LeaseFileName)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("proxy mode wrote a lease file: %v", err)
	}
	logs := l.logs.String()
	if !strings.Contains(logs, `msg="tftp sent"`) || !strings.Contains(logs, "file=ipxe.efi") {
		t.Errorf("no TFTP transfer of ipxe.efi logged")
	}
	if ms := l.machinesOverHTTP(t); len(ms) != 2 {
		t.Errorf("/api/v1/machines lists %d machines, want 2", len(ms))
	}
}

// TestPXEFull: full mode, our server is the LAN's only DHCP server. A UEFI
// VM with QEMU's iPXE ROM and one with EDK II's own PXE boot at once; the
// leases are persisted under out/. The client kernel is missing when they
// first ask for it (a server restarting): the boot script's retry loop
// (imgfree, sleep, a fresh dhcp, load again) must bring both through.
func TestPXEFull(t *testing.T) {
	needVM(t, vm.UEFI, vm.UEFIPXE)
	l := newLab(t, dhcp.ModeFull, "BOOTTORRENT-PXE-FULL-OK", true)
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	released := make(chan struct{})
	go func() { defer close(released); l.releaseKernel(t, ctx, 2) }()
	res := l.bootVMs(t, vm.UEFI, vm.UEFIPXE)
	<-released
	for _, r := range res {
		if !strings.Contains(r.console, "download failed; retrying") {
			t.Errorf("%s: the console shows no retry:\n%s", r.fw, r.console[max(0, len(r.console)-3000):])
		}
	}

	ipxe := l.checkBoot(t, res[0], bootapi.StageIPXE, bootapi.StageClient)
	edk := l.checkBoot(t, res[1], bootapi.StageDHCP, bootapi.StageTFTP, bootapi.StageIPXE, bootapi.StageClient)
	for _, m := range []bootapi.Machine{ipxe, edk} {
		if !inRange(m.IP, fullFirst, fullLast) {
			t.Errorf("%s has address %q, not from our range", m.MAC, m.IP)
		}
		if m.Arch != "uefi-x64" {
			t.Errorf("%s arch = %q", m.MAC, m.Arch)
		}
	}
	b, err := os.ReadFile(filepath.Join(l.outDir, LeaseFileName))
	if err != nil || !strings.Contains(string(b), res[0].mac) || !strings.Contains(string(b), res[1].mac) {
		t.Errorf("lease file: %v\n%s", err, b)
	}
}
