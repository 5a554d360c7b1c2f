// Command bootdemo shows boottorrent working end to end on this machine
// without touching a real LAN: it builds a virtual LAN out of network
// namespaces (a bridge, the server's veth, one tap per VM), runs the real
// `boottorrent start` on it in full DHCP mode with a sample OS (Debian's
// kernel + a tiny initramfs that prints a marker), and boots QEMU machines
// (one BIOS, one UEFI by default) through the whole chain: DHCP → iPXE →
// HTTP → boot client → BitTorrent → kexec. It prints the server's log,
// each machine's stages from /api/v1/machines, and the OS's first line.
//
// With --direct it then stops boottorrent and boots the same machines the
// way a plain iPXE setup would (DHCP, then iPXE loading the demo OS's
// kernel and initrd straight over HTTP from the server's address) and
// prints each machine's time through boottorrent over that baseline: on
// one machine, where no swarm can help, what boottorrent's chain costs.
//
// Run it with `bash .ci/demo` (installs, builds, runs; `bash .ci/demo
// --direct` for the baseline too). Root is required.
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/netip"
	"os"
	"os/signal"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/boottorrent/boottorrent/initramfs/bootapi"
	"github.com/boottorrent/boottorrent/netboot/netns"
	"github.com/boottorrent/boottorrent/netboot/vm"
)

const marker = "BOOTTORRENT-DEMO-OS-IS-UP"

// serverPrefix is the server's address on the demo LAN.
var serverPrefix = netip.MustParsePrefix("10.0.0.1/24")

func main() {
	if err := run(); err != nil {
		fmt.Fprintf(os.Stderr, "bootdemo: %v\n", err)
		os.Exit(1)
	}
}

type options struct {
	binary  string
	dir     string
	vms     []vm.Firmware
	timeout time.Duration
	verbose bool
	direct  bool
}

func run() error {
	var o options
	var vmList string
	flag.StringVar(&o.binary, "boottorrent", "bin/boottorrent", "the static boottorrent binary to run")
	flag.StringVar(&o.dir, "dir", "", "project folder to create (default: a temporary folder, removed at the end)")
	flag.StringVar(&vmList, "vms", "bios,uefi", "machines to boot: bios, uefi (iPXE ROM) or uefi-pxe (EDK II's own PXE, first stage over TFTP)")
	flag.DurationVar(&o.timeout, "timeout", 10*time.Minute, "give up after this long")
	flag.BoolVar(&o.verbose, "v", false, "print every line of the machines' serial consoles")
	flag.BoolVar(&o.direct, "direct", false, "then stop boottorrent and boot the same machines the way a plain iPXE setup would (DHCP, then iPXE loading the demo OS's kernel and initrd straight over HTTP from the server's address: no boot client, no BitTorrent), and print each machine's time through boottorrent over that baseline")
	flag.Usage = func() {
		fmt.Fprintf(flag.CommandLine.Output(), "Usage: bootdemo [flags]\n\nBoots QEMU machines through boottorrent on a virtual LAN (root required).\n\nFlags:\n")
		flag.PrintDefaults()
	}
	flag.Parse()
	for _, f := range strings.Split(vmList, ",") {
		fw := vm.Firmware(strings.TrimSpace(f))
		if err := vm.Available(fw); err != nil {
			return fmt.Errorf("machine %q: %w", f, err)
		}
		if o.direct && fw == vm.UEFIPXE {
			return fmt.Errorf("machine %q: --direct boots only machines whose NIC ROM is iPXE (bios, uefi); %s needs a first stage over TFTP, which the baseline does not serve", f, fw)
		}
		o.vms = append(o.vms, fw)
	}
	if err := vm.TestOSAvailable(); err != nil {
		return err
	}
	bin, err := filepath.Abs(o.binary)
	if err != nil {
		return err
	}
	if _, err := os.Stat(bin); err != nil {
		return fmt.Errorf("%s: %w (build it: CGO_ENABLED=0 go build -o bin/boottorrent ./cmd/boottorrent)", o.binary, err)
	}
	o.binary = bin
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	ctx, cancel := context.WithTimeout(ctx, o.timeout)
	defer cancel()
	return demo(ctx, o)
}

// out serializes the demo's output lines from many goroutines.
var outMu sync.Mutex

func say(format string, args ...any) {
	outMu.Lock()
	defer outMu.Unlock()
	fmt.Printf(format+"\n", args...)
}

// prefixWriter prints each complete line with a prefix, optionally only
// the lines a filter keeps.
type prefixWriter struct {
	prefix string
	keep   func(string) bool
	mu     sync.Mutex
	buf    []byte
}

func (w *prefixWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf = append(w.buf, p...)
	for {
		i := strings.IndexByte(string(w.buf), '\n')
		if i < 0 {
			break
		}
		line := strings.TrimRight(string(w.buf[:i]), "\r")
		w.buf = w.buf[i+1:]
		line = stripANSI(line)
		if strings.TrimSpace(line) != "" && (w.keep == nil || w.keep(line)) {
			say("%s%s", w.prefix, line)
		}
	}
	return len(p), nil
}

func stripANSI(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == 0x1b {
			for i++; i < len(s) && !(s[i] >= '@' && s[i] <= '~' && s[i] != '['); i++ {
			}
			continue
		}
		if s[i] >= 0x20 || s[i] == '\t' {
			b.WriteByte(s[i])
		}
	}
	return b.String()
}

func demo(ctx context.Context, o options) error {
	netns.Sweep()
	t0 := time.Now()
	say("== building a virtual LAN (network namespaces + bridge; this machine's interfaces are not touched)")
	lan, err := netns.NewLAN()
	if err != nil {
		return err
	}
	defer lan.Close()
	srv, _, err := lan.AddHost("eth0", serverPrefix)
	if err != nil {
		return err
	}

	dir := o.dir
	if dir == "" {
		d, err := os.MkdirTemp("", "boottorrent-demo-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(d)
		dir = filepath.Join(d, "lab")
	}
	if err := writeProject(dir); err != nil {
		return err
	}
	say("== project %s: dhcp full %s, OS \"demo\" (Debian kernel + a tiny initramfs)", dir, rangeText())

	say("== boottorrent start (in the server's namespace, 10.0.0.1)")
	server := srv.Command(ctx, o.binary, "start", "--dir", dir)
	var ready sync.Once
	readyc := make(chan struct{})
	server.Stdout = &prefixWriter{prefix: "server │ "}
	server.Stderr = io.MultiWriter(&prefixWriter{prefix: "server │ "}, lineHook(func(l string) {
		if strings.Contains(l, "msg=ready") {
			ready.Do(func() { close(readyc) })
		}
	}))
	server.Cancel = func() error { return server.Process.Signal(syscall.SIGTERM) }
	server.WaitDelay = 15 * time.Second
	if err := server.Start(); err != nil {
		return err
	}
	var serverErr error
	serverDone := make(chan struct{}) // closed when the server has exited (serverErr)
	go func() {
		serverErr = server.Wait()
		close(serverDone)
	}()
	var stopOnce sync.Once
	stopServer := func() {
		stopOnce.Do(func() {
			server.Process.Signal(syscall.SIGTERM)
			select {
			case <-serverDone:
			case <-time.After(15 * time.Second):
				server.Process.Kill()
				<-serverDone
			}
		})
	}
	defer stopServer()
	select {
	case <-readyc:
	case <-serverDone:
		return fmt.Errorf("boottorrent start exited: %v", serverErr)
	case <-ctx.Done():
		return fmt.Errorf("boottorrent start did not become ready: %w", ctx.Err())
	}

	client := srv.HTTPClient(5 * time.Second)
	go watchMachines(ctx, client, t0)

	say("== booting %d machines (QEMU, software emulation: about a minute each)", len(o.vms))
	times, failed := bootMachines(ctx, o, lan, func(fw vm.Firmware) string { return string(fw) })
	say("")
	say("== summary")
	for i, fw := range o.vms {
		if times[i] > 0 {
			say("  %-8s power-on to the OS's first line in %.1f s", fw, times[i].Seconds())
		}
	}
	printMachines(client)
	if failed != nil {
		return failed
	}
	say("== every machine booted its OS through boottorrent (%.0f s in all).", time.Since(t0).Seconds())
	if o.direct {
		stopServer()
		direct, err := bootDirect(ctx, o, lan, srv, filepath.Join(dir, "oss", "demo"))
		if err != nil {
			return err
		}
		say("")
		say("== one machine, whole chain: boottorrent against iPXE loading the same kernel and initrd directly over HTTP")
		for i, fw := range o.vms {
			say("  %s", ratioLine(string(fw), times[i], direct[i]))
		}
	}
	say("== cleaning up the virtual LAN.")
	return nil
}

// bootMachines boots one QEMU machine per firmware of o.vms, all at once,
// and returns each one's time from power-on to the OS's first line (zero
// for a machine that did not get there) and what went wrong.
func bootMachines(ctx context.Context, o options, lan *netns.LAN, name func(vm.Firmware) string) ([]time.Duration, error) {
	var wg sync.WaitGroup
	times := make([]time.Duration, len(o.vms))
	var failed error
	var fmu sync.Mutex
	for i, fw := range o.vms {
		wg.Add(1)
		go func(i int, fw vm.Firmware) {
			defer wg.Done()
			vmName := name(fw)
			keep := func(l string) bool {
				return o.verbose || strings.Contains(l, marker) || strings.Contains(l, "boottorrent") ||
					strings.Contains(l, "iPXE") || strings.Contains(l, "http://") || strings.Contains(l, "%")
			}
			m, err := vm.Start(ctx, vm.Config{LAN: lan, Firmware: fw, Name: vmName, MemoryMB: 768,
				Console: &prefixWriter{prefix: fmt.Sprintf("%-8s │ ", vmName), keep: keep}})
			if err != nil {
				fmu.Lock()
				failed = errors.Join(failed, fmt.Errorf("%s: %w", vmName, err))
				fmu.Unlock()
				return
			}
			defer m.Close()
			d, err := m.WaitFor(ctx, marker)
			if err != nil {
				fmu.Lock()
				failed = errors.Join(failed, fmt.Errorf("%s (MAC %s) did not reach the OS: %w; last console lines:\n%s", vmName, m.MAC(), err, m.Tail(25)))
				fmu.Unlock()
				return
			}
			say("%-8s │ MAC %s: power-on to the OS's first line in %.1f s", vmName, m.MAC(), d.Seconds())
			times[i] = d
		}(i, fw)
	}
	wg.Wait()
	return times, failed
}

// bootDirect boots the machines again through the direct baseline
// (startDirect) on the server's namespace, after boottorrent has stopped.
func bootDirect(ctx context.Context, o options, lan *netns.LAN, srv *netns.NS, osDir string) ([]time.Duration, error) {
	say("")
	say("== the baseline: DHCP and iPXE loading the demo OS directly over HTTP from 10.0.0.1 (boottorrent stopped)")
	log := slog.New(slog.NewTextHandler(&prefixWriter{prefix: "direct │ "}, &slog.HandlerOptions{Level: slog.LevelInfo}))
	ds, err := startDirect(srv, serverPrefix, osDir, log)
	if err != nil {
		return nil, fmt.Errorf("the direct baseline's servers: %w", err)
	}
	defer ds.close()
	times, err := bootMachines(ctx, o, lan, directName)
	if err != nil {
		return nil, fmt.Errorf("the direct baseline: %w", err)
	}
	return times, nil
}

func writeProject(dir string) error {
	if err := os.MkdirAll(filepath.Join(dir, "oss", "demo"), 0o755); err != nil {
		return err
	}
	if _, err := os.Stat(filepath.Join(dir, "Boottorrent.yaml")); err == nil {
		return fmt.Errorf("%s already holds a project; pass a new --dir", dir)
	}
	tos, err := vm.BuildTestOS(filepath.Join(dir, "oss", "demo"), marker)
	if err != nil {
		return err
	}
	if err := copyFile(tos.Kernel, filepath.Join(dir, "oss", "demo", demoKernel)); err != nil {
		return err
	}
	if err := os.Rename(tos.Initramfs, filepath.Join(dir, "oss", "demo", demoInitrd)); err != nil {
		return err
	}
	files := map[string]string{
		"Boottorrent.yaml": `# The demo lab: an isolated virtual LAN, so boottorrent is its DHCP server.
version: 1
server:
  interface: eth0
dhcp:
  mode: full
  range: ` + rangeText() + `
boot:
  default_os: demo
  timeout: 3s
  seed_time: 5s
# The demo's machines are QEMU guests under software emulation.
client:
  cmdline: quiet ` + vm.GuestArgs + `
`,
		"oss/demo/config.yaml": `dispname: Demo OS (Debian kernel + tiny initramfs)
method: kexec
kernel: ` + demoKernel + `
initrd: ` + demoInitrd + `
cmdline: ` + demoCmdline() + `
`,
	}
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			return err
		}
	}
	return nil
}

func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.Create(dst)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

// lineHook calls f for each line written.
func lineHook(f func(string)) io.Writer {
	pr, pw := io.Pipe()
	go func() {
		sc := bufio.NewScanner(pr)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			f(sc.Text())
		}
		io.Copy(io.Discard, pr)
	}()
	return pw
}

const api = "http://10.0.0.1:8080"

func machines(c *http.Client) ([]bootapi.Machine, error) {
	resp, err := c.Get(api + bootapi.PathMachines)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var ms []bootapi.Machine
	return ms, json.NewDecoder(resp.Body).Decode(&ms)
}

// watchMachines prints every stage change the server records.
func watchMachines(ctx context.Context, c *http.Client, t0 time.Time) {
	seen := map[string]string{}
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		ms, err := machines(c)
		if err != nil {
			continue
		}
		for _, m := range ms {
			state := m.Stage
			if m.Stage == bootapi.StageDownload && m.BytesTotal > 0 {
				state = fmt.Sprintf("%s %3.0f%%", m.Stage, 100*m.Progress)
			}
			if seen[m.MAC] == state {
				continue
			}
			seen[m.MAC] = state
			extra := ""
			if m.IP != "" {
				extra = " ip " + m.IP
			}
			if m.FromPeers+m.FromSeeder+m.FromWeb > 0 {
				extra += fmt.Sprintf(" (from peers %s, seeder %s, web seed %s)", kib(m.FromPeers), kib(m.FromSeeder), kib(m.FromWeb))
			}
			if m.Message != "" {
				extra += " — " + m.Message
			}
			say("machines │ +%5.1fs %s %-14s%s", time.Since(t0).Seconds(), m.MAC, state, extra)
		}
	}
}

func kib(n int64) string { return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20)) }

func printMachines(c *http.Client) {
	ms, err := machines(c)
	if err != nil {
		say("  (could not read /api/v1/machines: %v)", err)
		return
	}
	sort.Slice(ms, func(i, j int) bool { return ms[i].MAC < ms[j].MAC })
	for _, m := range ms {
		var stages []string
		type st struct {
			name string
			at   time.Time
		}
		var list []st
		for n, at := range m.Stages {
			list = append(list, st{n, at})
		}
		sort.Slice(list, func(i, j int) bool { return list[i].at.Before(list[j].at) })
		for _, s := range list {
			stages = append(stages, fmt.Sprintf("%s +%.1fs", s.name, s.at.Sub(m.FirstSeen).Seconds()))
		}
		say("  %s %s: %s; bytes from peers %s, seeder %s, web seed %s", m.MAC, m.Arch, strings.Join(stages, " → "),
			kib(m.FromPeers), kib(m.FromSeeder), kib(m.FromWeb))
	}
}
