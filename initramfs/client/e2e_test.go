package client

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/boottorrent/boottorrent/initramfs/bootapi"
	"github.com/boottorrent/boottorrent/netboot/netns"
	"github.com/boottorrent/boottorrent/netboot/netns/nstest"
	"github.com/boottorrent/boottorrent/netboot/vm"
)

func TestMain(m *testing.M) { nstest.Main(m) }

// e2eServer is the real `boottorrent start` in a namespace of a test LAN.
type e2eServer struct {
	t      *testing.T
	binary string
	dir    string
	ns     *netns.NS
	base   string
	extra  []string // more arguments for start
	mu     sync.Mutex
	cmd    *exec.Cmd
	log    *nstest.Buffer
	done   chan struct{}
}

func (s *e2eServer) start() {
	s.t.Helper()
	lb := &nstest.Buffer{}
	cmd := s.ns.Command(context.Background(), s.binary, append([]string{"start", "--dir", s.dir}, s.extra...)...)
	cmd.Stdout, cmd.Stderr = lb, lb
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	waited, err := vm.StartLocked(cmd) // see StartLocked: Pdeathsig follows a thread
	if err != nil {
		s.t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { <-waited; close(done) }()
	s.mu.Lock()
	s.cmd, s.log, s.done = cmd, lb, done
	s.mu.Unlock()
	deadline := time.Now().Add(5 * time.Minute)
	for !strings.Contains(lb.String(), "msg=ready") {
		select {
		case <-done:
			s.t.Fatalf("boottorrent start exited:\n%s", lb.String())
		case <-time.After(200 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			s.t.Fatalf("boottorrent start not ready:\n%s", lb.String())
		}
	}
}

func (s *e2eServer) stop() {
	s.mu.Lock()
	cmd, done := s.cmd, s.done
	s.mu.Unlock()
	if cmd == nil {
		return
	}
	cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		cmd.Process.Kill()
		<-done
	}
}

// machines reads /api/v1/machines from inside the LAN.
func (s *e2eServer) machines() (map[string]bootapi.Machine, error) {
	var ms []bootapi.Machine
	// Every connection is dialed on a thread inside the LAN's namespace.
	hc := s.ns.HTTPClient(5 * time.Second)
	err := func() error {
		resp, err := hc.Get(s.base + bootapi.PathMachines)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		return json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&ms)
	}()
	out := map[string]bootapi.Machine{}
	for _, m := range ms {
		out[m.MAC] = m
	}
	return out, err
}

func writeFile(t *testing.T, p string, data []byte) {
	t.Helper()
	os.MkdirAll(filepath.Dir(p), 0o755)
	if err := os.WriteFile(p, data, 0o644); err != nil {
		t.Fatal(err)
	}
}

func copyFile(t *testing.T, src, dst string) {
	t.Helper()
	b, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, dst, b)
}

// shape limits the server's uplink (tc tbf), so that downloads take long
// enough to share pieces between machines, and to stop the server in the
// middle of one.
func shape(t *testing.T, ns *netns.NS, rate string) {
	t.Helper()
	ns.Run("tc", "qdisc", "del", "dev", "eth0", "root")
	if rate == "" {
		return
	}
	if _, err := ns.Run("tc", "qdisc", "add", "dev", "eth0", "root", "tbf", "rate", rate, "burst", "64kb", "latency", "500ms"); err != nil {
		t.Fatal(err)
	}
}

// TestQEMUBoot boots VMs through the whole chain — PXE, iPXE, the client
// kernel + this initramfs, the menu, the BitTorrent download, kexec —
// against the real `boottorrent start`:
//
//  1. BIOS VM pinned by machines: (boots without the menu) and a UEFI VM
//     that chooses on the serial console with arrows and Enter, while the
//     BIOS one downloads;
//     both reach the test OS's marker and the server's accounting shows
//     pieces passed between them;
//  2. a BIOS VM chooses an OS whose kernel is not a kernel (the kexec
//     failure is shown and reported, the menu comes back), then the bin
//     OS by number;
//  3. a BIOS VM whose server is stopped mid-download: the client says so,
//     and completes and boots once the server is back;
//  4. a BIOS VM chooses an OS of method qemu: start packs QEMU into the
//     client initramfs, and the client runs it with the OS's args.
func TestQEMUBoot(t *testing.T) {
	for _, fw := range []vm.Firmware{vm.BIOS, vm.UEFI} {
		if err := vm.Available(fw); err != nil {
			t.Skip(err)
		}
	}
	if err := vm.TestOSAvailable(); err != nil {
		t.Skip(err)
	}
	if _, err := exec.LookPath("tc"); err != nil {
		t.Skip("needs tc: apt-get install iproute2")
	}
	// The whole test took 8 minutes on a quiet host and over 20 on one ten
	// times slower (2026-11-23, b97de03): let it run until shortly before go test's
	// own -timeout, keeping a couple of minutes to print consoles and clean up.
	deadline := time.Now().Add(40 * time.Minute)
	if d, ok := t.Deadline(); ok {
		deadline = d.Add(-2 * time.Minute)
	}
	ctx, cancel := context.WithDeadline(context.Background(), deadline)
	defer cancel()
	binary := nstest.Static(t, nstest.Boottorrent)
	lan, hosts := nstest.LAN(t, "10.79.0.1/24")
	srvNS := hosts[0]

	dir := t.TempDir()
	marker := "TESTOS-" + fmt.Sprint(time.Now().UnixNano()) + "-REACHED"
	binMarker := "BINOS-RAN-" + fmt.Sprint(time.Now().UnixNano())
	tos, err := vm.BuildTestOS(t.TempDir(), marker)
	if err != nil {
		t.Fatal(err)
	}
	copyFile(t, tos.Kernel, filepath.Join(dir, "oss/testos/vmlinuz"))
	copyFile(t, tos.Initramfs, filepath.Join(dir, "oss/testos/initrd.img"))
	// Enough to take a while at the server's 8–48 Mbit/s (machines share
	// pieces; the server can be stopped mid-download), not so much that
	// a guest under TCG on a slow host takes minutes: on one ten times
	// slower than usual, 40 MiB took 7 minutes.
	filler := make([]byte, 16<<20)
	rand.Read(filler)
	writeFile(t, filepath.Join(dir, "oss/testos/filler.bin"), filler)
	writeFile(t, filepath.Join(dir, "oss/testos/config.yaml"), []byte(`dispname: Test OS
method: kexec
kernel: vmlinuz
initrd: initrd.img
cmdline: console=ttyS0,115200 panic=-1 `+vm.GuestArgs+`
files: [filler.bin]
`))
	copyFile(t, vm.Busybox, filepath.Join(dir, "oss/binos/busybox"))
	writeFile(t, filepath.Join(dir, "oss/binos/config.yaml"), []byte(fmt.Sprintf(`dispname: Bin OS
method: bin
bin: busybox
binargs: [sh, -c, "echo %s-A%s"]
`, binMarker[:8], binMarker[8:])))
	notKernel := make([]byte, 1<<20)
	rand.Read(notKernel)
	writeFile(t, filepath.Join(dir, "oss/badkernel/vmlinuz"), notKernel)
	writeFile(t, filepath.Join(dir, "oss/badkernel/config.yaml"), []byte("dispname: Not A Kernel\nmethod: kexec\nkernel: vmlinuz\n"))

	pinned := vm.RandomMAC()
	writeFile(t, filepath.Join(dir, "Boottorrent.yaml"), []byte(fmt.Sprintf(`version: 1
server:
  interface: eth0
dhcp:
  mode: full
  range: 10.79.0.100-10.79.0.150
boot:
  default_os: testos
  timeout: 120s
  seed_time: 40s
  menu: [testos, binos, badkernel]
client:
  cmdline: %s
machines:
  "%s": {name: pinned-pc, os: testos}
`, vm.GuestArgs, pinned)))

	s := &e2eServer{t: t, binary: binary, dir: dir, ns: srvNS, base: "http://10.79.0.1:8080"}
	s.start()
	t.Cleanup(s.stop)
	shape(t, srvNS, "48mbit")

	startVM := func(t *testing.T, name string, fw vm.Firmware, mac net.HardwareAddr) *vm.VM {
		t.Helper()
		v, err := vm.Start(ctx, vm.Config{LAN: lan, Firmware: fw, MAC: mac, Name: name, MemoryMB: 768})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			if t.Failed() {
				t.Logf("%s serial console (last lines):\n%s", name, v.Tail(60))
			}
			v.Close()
		})
		return v
	}
	// slow is how many times slower than a quiet host this one runs QEMU
	// (set by the first boot): every wait after it is that much longer.
	slow := 1.0
	wait := func(t *testing.T, v *vm.VM, what string, d time.Duration) time.Duration {
		t.Helper()
		c, cancel := context.WithTimeout(ctx, time.Duration(float64(d)*slow))
		defer cancel()
		el, err := v.WaitFor(c, what)
		if err != nil {
			t.Fatalf("%s: waiting for %q: %v\nserver log tail:\n%s", v.Name(), what, err, tail(s.log.String(), 30))
		}
		return el
	}

	// 1. Pinned BIOS + UEFI with a menu choice, downloading at once.
	t.Run("pinned-bios-and-menu-uefi", func(t *testing.T) {
		b := startVM(t, "uefi-menu", vm.UEFI, vm.RandomMAC())
		stages := map[string]time.Duration{}
		stages["b client"] = wait(t, b, "boottorrent client", 6*time.Minute)
		// On a quiet host the client's banner comes about 20 s after
		// power-on (README, "One machine, whole chain").
		slow = min(max(1, stages["b client"].Seconds()/20), 10)
		t.Logf("first client banner after %s: waits are %.1f× longer", stages["b client"].Round(time.Second), slow)
		wait(t, b, "any key stops", 6*time.Minute)
		b.SendKeys("\x1b[B") // down: Bin OS, stops the countdown
		wait(t, b, "Selected: Bin OS", time.Minute)
		// The UEFI machine chooses once the BIOS one downloads, so that
		// they download at once and pass pieces to each other. (Started
		// together, on a slow host the BIOS machine had booted before the
		// UEFI firmware had even asked for DHCP.)
		a := startVM(t, "bios-pinned", vm.BIOS, pinned)
		stages["a client"] = wait(t, a, "boottorrent client", 6*time.Minute)
		stages["a download"] = wait(t, a, "downloading Test OS", 4*time.Minute)
		b.SendKeys("\x1b[A\r") // up: Test OS, Enter
		stages["a kexec"] = wait(t, a, "msg=kexec", 6*time.Minute)
		stages["a marker"] = wait(t, a, marker, 6*time.Minute)
		stages["b marker"] = wait(t, b, marker, 6*time.Minute)
		t.Logf("BIOS pinned: client %s, download start %s, kexec %s, marker %s; UEFI menu: marker %s",
			stages["a client"].Round(time.Second), stages["a download"].Round(time.Second), stages["a kexec"].Round(time.Second),
			stages["a marker"].Round(time.Second), stages["b marker"].Round(time.Second))
		if strings.Contains(a.Output(), "any key stops") {
			t.Error("the pinned machine showed the menu")
		}
		ms, err := s.machines()
		if err != nil {
			t.Fatal(err)
		}
		var peers, seeder int64
		for _, v := range []*vm.VM{a, b} {
			m, ok := ms[v.MAC().String()]
			if !ok || m.Stages[bootapi.StageBooting].IsZero() || m.OS != "testos" {
				t.Fatalf("%s: machines entry %+v", v.Name(), m)
			}
			t.Logf("%s: from peers %d, from seeder %d, web %d, uploaded %d; %s", v.Name(), m.FromPeers, m.FromSeeder, m.FromWeb, m.Uploaded, stageTimes(v, m))
			peers += m.FromPeers
			seeder += m.FromSeeder
		}
		if peers == 0 {
			t.Error("the two machines received nothing from each other")
		}
		if seeder == 0 {
			t.Error("nothing came from the server's seeder")
		}
	})

	// 2. kexec failure, then the bin OS by number.
	t.Run("kexec-failure-then-bin", func(t *testing.T) {
		c := startVM(t, "bios-fail", vm.BIOS, vm.RandomMAC())
		wait(t, c, "any key stops", 6*time.Minute)
		c.SendKeys("3")
		wait(t, c, "kexec_file_load", 4*time.Minute)
		// The report follows the console line; give it a moment.
		for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(500 * time.Millisecond) {
			ms, err := s.machines()
			if err != nil {
				t.Fatal(err)
			}
			m := ms[c.MAC().String()]
			if strings.Contains(m.Message, "kexec") {
				t.Logf("server: stage %s, message %q", m.Stage, m.Message)
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("server has no kexec failure for the machine: %+v", m)
			}
		}
		wait(t, c, "last attempt:", 2*time.Minute)
		c.SendKeys("2")
		wait(t, c, binMarker[:8]+"-A"+binMarker[8:], 4*time.Minute)
	})

	// 3. The server stops mid-download and comes back.
	t.Run("server-restart-mid-download", func(t *testing.T) {
		shape(t, srvNS, "8mbit")
		d := startVM(t, "bios-restart", vm.BIOS, vm.RandomMAC())
		wait(t, d, "any key stops", 6*time.Minute)
		d.SendKeys("1")
		deadline := time.Now().Add(4 * time.Minute)
		for {
			ms, _ := s.machines()
			if m := ms[d.MAC().String()]; m.Stage == bootapi.StageDownload && m.BytesDone > 0 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatal("the download never started")
			}
			time.Sleep(300 * time.Millisecond)
		}
		s.stop()
		wait(t, d, "no data for", 2*time.Minute)
		shape(t, srvNS, "")
		s.start()
		el := wait(t, d, marker, 6*time.Minute)
		t.Logf("restart VM: marker after %s", el.Round(time.Second))
	})

	// 4. Method qemu: with an OS that uses it, start packs QEMU into the
	// client, and the client starts it with the OS's args.
	t.Run("qemu-method", func(t *testing.T) {
		s.stop()
		writeFile(t, filepath.Join(dir, "oss/qemuos/config.yaml"), []byte("dispname: QEMU OS\nmethod: qemu\nargs: \"-version\"\n"))
		cfgPath := filepath.Join(dir, "Boottorrent.yaml")
		b, _ := os.ReadFile(cfgPath)
		writeFile(t, cfgPath, []byte(strings.Replace(string(b), "menu: [testos, binos, badkernel]", "menu: [testos, binos, badkernel, qemuos]", 1)))
		s.start()
		e := startVM(t, "bios-qemu", vm.BIOS, vm.RandomMAC())
		wait(t, e, "any key stops", 8*time.Minute)
		e.SendKeys("4")
		el := wait(t, e, "QEMU emulator version", 4*time.Minute)
		wait(t, e, "the OS ended", time.Minute)
		t.Logf("qemu VM: QEMU ran on the client after %s", el.Round(time.Second))
	})
}

func tail(s string, n int) string {
	var lines []string
	sc := bufio.NewScanner(strings.NewReader(s))
	for sc.Scan() {
		lines = append(lines, sc.Text())
	}
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// stageTimes lists when the server saw each stage, counted from the VM's
// power-on: the breakdown of power-on → OS.
func stageTimes(v *vm.VM, m bootapi.Machine) string {
	type st struct {
		name string
		at   time.Duration
	}
	var l []st
	for n, at := range m.Stages {
		l = append(l, st{n, at.Sub(v.Started())})
	}
	sort.Slice(l, func(i, j int) bool { return l[i].at < l[j].at })
	var b strings.Builder
	for _, x := range l {
		fmt.Fprintf(&b, "%s@%.1fs ", x.name, x.at.Seconds())
	}
	return strings.TrimSpace(b.String())
}
