package dhcp

import (
	"context"
	"encoding/hex"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/boottorrent/boottorrent/netboot/netns"
	"github.com/boottorrent/boottorrent/netboot/netns/nstest"
)

var update = flag.Bool("update", false, "rewrite testdata: firmware captures (needs root and QEMU) and golden replies")

// vmSpec is one kind of real firmware.
type vmSpec struct {
	name   string // bios-ipxe, uefi-ipxe, uefi-pxe
	mac    string
	uefi   bool
	native bool // NIC option ROM disabled: EDK II's own PXE, not iPXE
}

var firmwares = []vmSpec{
	{name: "bios-ipxe", mac: "52:54:00:b7:00:01"},
	{name: "uefi-ipxe", mac: "52:54:00:b7:00:02", uefi: true},
	{name: "uefi-pxe", mac: "52:54:00:b7:00:03", uefi: true, native: true},
}

const (
	ovmfCode = "/usr/share/OVMF/OVMF_CODE.fd"
	ovmfVars = "/usr/share/OVMF/OVMF_VARS.fd"
)

func needQEMU(t *testing.T) {
	t.Helper()
	if testing.Short() {
		t.Skip("QEMU firmware boots take about a minute under TCG; skipped with -short")
	}
	if err := netns.Available(); err != nil {
		t.Skip("needs network namespaces: " + err.Error())
	}
	if _, err := exec.LookPath("qemu-system-x86_64"); err != nil {
		t.Skip("needs qemu-system-x86_64: apt-get install qemu-system-x86 ipxe-qemu")
	}
	if _, err := os.Stat(ovmfCode); err != nil {
		t.Skip("needs OVMF firmware: apt-get install ovmf")
	}
}

// startVM boots a VM on a new tap of the LAN, network boot first.
func startVM(t *testing.T, l *netns.LAN, vm vmSpec, dir string) {
	t.Helper()
	tap, err := l.AddTap()
	if err != nil {
		t.Fatal(err)
	}
	dev := "virtio-net-pci,netdev=n0,mac=" + vm.mac + ",bootindex=1"
	if vm.native {
		dev += ",romfile="
	}
	args := []string{"-accel", "tcg", "-m", "512", "-nodefaults", "-display", "none", "-no-reboot",
		"-serial", "file:" + filepath.Join(dir, vm.name+".serial"),
		"-netdev", "tap,id=n0,ifname=" + tap + ",script=no,downscript=no", "-device", dev}
	if vm.uefi {
		vars := filepath.Join(dir, vm.name+"-vars.fd")
		data, err := os.ReadFile(ovmfVars)
		if err != nil {
			t.Fatal(err)
		}
		os.WriteFile(vars, data, 0o644)
		args = append(args, "-drive", "if=pflash,format=raw,readonly=on,file="+ovmfCode,
			"-drive", "if=pflash,format=raw,file="+vars)
	} else {
		args = append(args, "-boot", "n")
	}
	ctx, cancel := context.WithCancel(context.Background())
	cmd := l.Bridge.Command(ctx, "qemu-system-x86_64", args...)
	startLogged(t, cmd, cancel, "qemu "+vm.name)
}

// startLogged starts cmd, made with the context cancel ends, and at the
// end of the test stops it and, if the test failed, logs its output under
// name.
func startLogged(t *testing.T, cmd *exec.Cmd, cancel context.CancelFunc, name string) {
	t.Helper()
	var out nstest.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		cancel()
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cancel()
		cmd.Wait()
		if t.Failed() {
			t.Logf("%s:\n%s", name, out.String())
		}
	})
}

// nextStep records what firmware does after our DHCP reply: TFTP read
// requests and HTTP requests, in the server's namespace.
type nextStep struct {
	mu   sync.Mutex
	tftp []string // file names
	http []string // request URIs
}

func (n *nextStep) serve(t *testing.T, ns *netns.NS) {
	t.Helper()
	var tftp net.PacketConn
	var ln net.Listener
	err := ns.Do(func() error {
		var err error
		if tftp, err = net.ListenPacket("udp4", "0.0.0.0:69"); err != nil {
			return err
		}
		ln, err = net.Listen("tcp4", "10.0.0.1:8080")
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tftp.Close(); ln.Close() })
	go func() {
		buf := make([]byte, 1500)
		for {
			k, from, err := tftp.ReadFrom(buf)
			if err != nil {
				return
			}
			if k > 4 && buf[1] == 1 { // RRQ: record the name, answer "file not found"
				name, _, _ := strings.Cut(string(buf[2:k]), "\x00")
				n.mu.Lock()
				n.tftp = append(n.tftp, name)
				n.mu.Unlock()
				tftp.WriteTo(append([]byte{0, 5, 0, 1}, "not here\x00"...), from)
			}
		}
	}()
	go http.Serve(ln, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n.mu.Lock()
		// iPXE escapes the colons of the MAC (%3A): compare decoded.
		n.http = append(n.http, r.URL.Path+"?mac="+r.URL.Query().Get("mac"))
		n.mu.Unlock()
		io.WriteString(w, "#!ipxe\nshell\n")
	}))
}

// reached reports whether vm has taken the step after DHCP.
func (n *nextStep) reached(vm vmSpec) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	if vm.native {
		for _, f := range n.tftp {
			if f == "ipxe.efi" {
				return true
			}
		}
		return false
	}
	for _, u := range n.http {
		if u == "/boot.ipxe?mac="+vm.mac {
			return true
		}
	}
	return false
}

// capture keeps the raw requests each VM sent, per MAC.
type capture struct {
	mu   sync.Mutex
	pkts map[string][]string // MAC -> "port hex"
}

func (c *capture) tap(port int, data []byte) {
	if len(data) < 34 {
		return
	}
	mac := net.HardwareAddr(data[28:34]).String()
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.pkts[mac]) < 16 {
		c.pkts[mac] = append(c.pkts[mac], fmt.Sprintf("%d %s", port, hex.EncodeToString(data)))
	}
}

// TestFirmware boots real firmware in QEMU against our server, in full mode
// (all three firmwares on one LAN) and in proxy mode (next to dnsmasq as the
// site's DHCP server), and checks that each one takes the next step with
// what we sent: iPXE fetches /boot.ipxe?mac=<its MAC> over HTTP, EDK II's
// own PXE asks our TFTP server for ipxe.efi. With -update the requests the
// server received are stored in testdata/firmware/ for the golden tests.
func TestFirmware(t *testing.T) {
	needQEMU(t)
	for _, mode := range []Mode{ModeFull, ModeProxy} {
		t.Run(string(mode), func(t *testing.T) {
			l := newTestLAN(t)
			dir := t.TempDir()
			opt := testOptions(mode)
			opt.LeaseFile = filepath.Join(dir, "leases.json")
			vms := firmwares
			if mode == ModeProxy {
				if _, err := exec.LookPath("dnsmasq"); err != nil {
					t.Skip("needs dnsmasq as the site's DHCP server: apt-get install dnsmasq-base")
				}
				startSiteDHCP(t, l.lan, dir)
				// Proxy mode is about the PXE handshake on 67 and 4011;
				// one iPXE and EDK II's own PXE cover both paths.
				vms = []vmSpec{firmwares[0], firmwares[2]}
			}
			var steps nextStep
			steps.serve(t, l.server)
			capt := &capture{pkts: map[string][]string{}}
			srv := l.startTap(t, opt, capt.tap)
			started := time.Now()
			for _, vm := range vms {
				startVM(t, l.lan, vm, dir)
			}
			took := map[string]time.Duration{}
			deadline := time.Now().Add(150 * time.Second)
			for len(took) < len(vms) && time.Now().Before(deadline) {
				for _, vm := range vms {
					if _, ok := took[vm.name]; !ok && steps.reached(vm) {
						took[vm.name] = time.Since(started)
					}
				}
				time.Sleep(200 * time.Millisecond)
			}
			for _, vm := range vms {
				d, ok := took[vm.name]
				if !ok {
					steps.mu.Lock()
					t.Errorf("%s (%s mode) did not take the next step; TFTP %q, HTTP %q", vm.name, mode, steps.tftp, steps.http)
					steps.mu.Unlock()
					continue
				}
				t.Logf("%s, %s mode: DHCP done, next step after %.1fs (TCG)", vm.name, mode, d.Seconds())
			}
			if st := srv.Stats(); st.Malformed != 0 || st.Panics != 0 {
				t.Errorf("stats: %+v", st)
			}
			if *update && !t.Failed() {
				capt.mu.Lock()
				defer capt.mu.Unlock()
				for _, vm := range vms {
					p := filepath.Join("testdata", "firmware", string(mode)+"-"+vm.name+".txt")
					os.MkdirAll(filepath.Dir(p), 0o755)
					body := fmt.Sprintf("# Requests %s firmware (QEMU %s, MAC %s) sent to our %s-mode server.\n# One per line: local port, packet in hex. Captured by TestFirmware -update.\n",
						vm.name, map[bool]string{true: "OVMF", false: "SeaBIOS"}[vm.uefi], vm.mac, mode)
					body += strings.Join(capt.pkts[vm.mac], "\n") + "\n"
					if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
						t.Fatal(err)
					}
				}
			}
		})
	}
}

// startSiteDHCP runs dnsmasq in its own namespace as the LAN's ordinary
// DHCP server (10.0.0.2, addresses .50-.99, no PXE options).
func startSiteDHCP(t *testing.T, l *netns.LAN, dir string) {
	t.Helper()
	ns := nstest.Host(t, l, "10.0.0.2/24")
	ctx, cancel := context.WithCancel(context.Background())
	cmd := ns.Command(ctx, "dnsmasq", "--no-daemon", "--conf-file=/dev/null", "--port=0", "--user=root",
		"--interface=eth0", "--bind-interfaces", "--dhcp-range=10.0.0.50,10.0.0.99,255.255.255.0,1h",
		"--dhcp-leasefile="+filepath.Join(dir, "dnsmasq.leases"), "--pid-file="+filepath.Join(dir, "dnsmasq.pid"), "--log-dhcp")
	startLogged(t, cmd, cancel, "dnsmasq")
}
