package client

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"runtime/debug"
	"strings"
	"sync"
	"time"

	"github.com/u-root/u-root/pkg/kmodule"
	"github.com/u-root/u-root/pkg/libinit"
	"golang.org/x/sys/unix"

	"github.com/boottorrent/boottorrent/initramfs/bootapi"
	"github.com/boottorrent/boottorrent/initramfs/kmod"
)

// consoles are the terminals the client writes to and reads keys from in
// init mode: the VGA console and the first serial port.
var consoles = []string{"/dev/tty0", "/dev/ttyS0"}

// multiConsole writes to every console that accepts it: a serial port
// with nothing attached must not stop the VGA console.
type multiConsole struct {
	mu  sync.Mutex
	out []*os.File
}

func (c *multiConsole) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, f := range c.out {
		f.Write(p)
	}
	return len(p), nil
}

// initMain is the client as PID 1. It never returns while the machine
// runs: PID 1 exiting panics the kernel, so every failure loops back.
func initMain() int {
	libinit.CreateRootfs()
	// The kernel starts init with only HOME and TERM: QEMU (method qemu)
	// and the rescue shell's programs are found through PATH.
	os.Setenv("PATH", "/usr/bin:/bin:/usr/sbin:/sbin")
	libinit.NetInit()
	con := &multiConsole{}
	in := make(chan []byte, 16)
	ctx := context.Background()
	var names []string
	for _, name := range consoles {
		f, err := os.OpenFile(name, os.O_RDWR|unix.O_NOCTTY, 0)
		if err != nil {
			continue
		}
		if !isTerminal(int(f.Fd())) {
			f.Close()
			continue
		}
		makeRaw(int(f.Fd()))
		con.out = append(con.out, f)
		names = append(names, name)
	}
	if len(con.out) == 0 {
		con.out = []*os.File{os.Stdout}
	}
	keys := &keyReaders{names: names, ch: in, outs: con.out}
	keys.start(ctx)
	log := slog.New(slog.NewTextHandler(con, &slog.HandlerOptions{Level: slog.LevelInfo}))
	cmdline, _ := os.ReadFile("/proc/cmdline")
	args := cmdlineArgs(string(cmdline))
	fmt.Fprintf(con, "\r\nboottorrent client (%s)\r\n", strings.TrimSpace(string(cmdline)))

	for attempt := 1; ; attempt++ {
		err := runInit(ctx, con, keys, log, args)
		if err == nil {
			fmt.Fprint(con, "\r\nthe OS ended; powering off\r\n")
			unix.Sync()
			unix.Reboot(unix.LINUX_REBOOT_CMD_POWER_OFF)
			select {}
		}
		fmt.Fprintf(con, "\r\n!! the boot client stopped: %v\r\n   starting again in 10 s (r: rescue shell)\r\n", err)
		select {
		case b := <-in:
			if ks, _ := decodeKeys(b); len(ks) > 0 && ks[0] == keyRescue {
				(&realEnv{console: con, in: in, keys: keys, log: log}).Shell(ctx)
			}
		case <-time.After(10 * time.Second):
		}
	}
}

// runInit is one run of the state machine as /init; a panic anywhere is
// turned into an error so PID 1 survives it.
func runInit(ctx context.Context, con io.Writer, keys *keyReaders, log *slog.Logger, args map[string]string) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("internal error: %v\n%s", r, debug.Stack())
		}
	}()
	dataDir := "/run/boottorrent"
	if err := mountRAMDisk(dataDir); err != nil {
		log.Warn("RAM disk for the OS", "err", err)
		dataDir = "/tmp/boottorrent"
	}
	cfg := &Config{Init: true, DataDir: dataDir, Server: args[bootapi.ArgServer], MAC: args[bootapi.ArgMAC],
		OS: args["boottorrent.os"], ListenPort: 6881, NoKexec: args["boottorrent.nokexec"] == "1"}
	if cfg.Server == "" {
		return fmt.Errorf("no %s= on the kernel command line: the iPXE script from boottorrent start sets it; check the boot chain", bootapi.ArgServer)
	}
	if cfg.MAC != "" {
		if hw, err := net.ParseMAC(cfg.MAC); err == nil {
			cfg.MAC = hw.String()
		}
	}
	a, err := newAPI(cfg.Server, cfg.MAC)
	if err != nil {
		return err
	}
	log = log.With("mac", cfg.MAC)
	e := &realEnv{cfg: cfg, api: a, log: log, console: con, in: keys.ch, keys: keys}
	e.network = func(ctx context.Context) error { return e.initNetwork(ctx) }
	tr, err := newClientTrust(cfg, e)
	if err != nil {
		return err
	}
	m := &machine{env: e, cfg: cfg, log: log, console: con, result: con, now: time.Now, sleep: sleepCtx, trust: tr}
	return m.run(ctx)
}

// mountRAMDisk mounts a tmpfs for the downloaded OS, allowed to grow to
// 90% of RAM (a plain tmpfs stops at half).
func mountRAMDisk(dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	var st unix.Statfs_t
	if unix.Statfs(dir, &st) == nil && st.Type == unix.TMPFS_MAGIC {
		if _, err := os.Stat(filepath.Join(dir, ".bt")); err == nil {
			return nil
		}
	}
	if err := unix.Mount("tmpfs", dir, "tmpfs", 0, "size=90%,mode=0755"); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, ".bt"), nil, 0o644)
}

// initNetwork loads the NIC drivers, finds the booting interface (by the
// MAC iPXE booted from, else the first Ethernet link) and takes a lease.
func (e *realEnv) initNetwork(ctx context.Context) error {
	t0 := time.Now()
	if e.drivers == nil {
		loaded, err := loadDrivers(e.log)
		if err != nil {
			e.log.Warn("drivers", "stage", "network", "err", err)
		}
		e.drivers = append(loaded, "") // loaded once, even if none matched
	}
	loaded := e.drivers[:len(e.drivers)-1]
	ifname, err := findIface(ctx, e.cfg.MAC, 10*time.Second)
	if err != nil {
		return fmt.Errorf("%w (drivers loaded: %s)", err, strings.Join(loaded, ", "))
	}
	if e.cfg.MAC == "" {
		ifc, _ := net.InterfaceByName(ifname)
		e.cfg.MAC = ifc.HardwareAddr.String()
		e.api.mac = e.cfg.MAC
	}
	e.log.Info("link", "stage", "network", "iface", ifname, "drivers", strings.Join(loaded, ","), "duration", time.Since(t0).Round(time.Millisecond))
	return dhcpLease(ctx, ifname, e.log)
}

// loadDrivers loads the packed modules matching the machine's devices.
// It scans again after each round: a bus driver (virtio_pci) makes new
// devices (virtio-net) appear.
func loadDrivers(log *slog.Logger) ([]string, error) {
	var u unix.Utsname
	unix.Uname(&u)
	rel := unix.ByteSliceToString(u.Release[:])
	dir := filepath.Join("/lib/modules", rel)
	f, err := os.Open(filepath.Join(dir, "modules.alias"))
	if err != nil {
		found, _ := filepath.Glob("/lib/modules/*")
		return nil, fmt.Errorf("no modules for kernel %s (%v; packed: %v): client.modules must match client.kernel", rel, err, found)
	}
	aliases, _, err := kmod.ParseAliases(f)
	f.Close()
	if err != nil {
		return nil, err
	}
	prober, err := kmodule.NewProber(kmodule.ProbeOpts{KVer: rel})
	if err != nil {
		return nil, err
	}
	done := map[string]bool{}
	var loaded []string
	var errs []error
	for round := 0; round < 4; round++ {
		mas, _ := kmod.DeviceModaliases("/sys")
		progress := false
		for _, ma := range mas {
			for _, mod := range kmod.Match(aliases, ma) {
				if done[mod] {
					continue
				}
				done[mod] = true
				t0 := time.Now()
				if err := prober.Probe(mod, ""); err != nil && !errors.Is(err, unix.EEXIST) {
					errs = append(errs, fmt.Errorf("%s: %w", mod, err))
					continue
				}
				log.Info("driver loaded", "stage", "network", "module", mod, "device", ma, "duration", time.Since(t0).Round(time.Millisecond))
				loaded = append(loaded, mod)
				progress = true
			}
		}
		if !progress {
			break
		}
		time.Sleep(200 * time.Millisecond) // let the new devices register
	}
	return loaded, errors.Join(errs...)
}

// findIface waits for the interface with the given MAC (or, without one,
// the first non-loopback Ethernet interface) to appear.
func findIface(ctx context.Context, mac string, wait time.Duration) (string, error) {
	deadline := time.Now().Add(wait)
	for {
		ifs, _ := net.Interfaces()
		var names []string
		for _, i := range ifs {
			if i.Flags&net.FlagLoopback != 0 || len(i.HardwareAddr) != 6 {
				continue
			}
			names = append(names, i.Name+" "+i.HardwareAddr.String())
			if mac == "" || strings.EqualFold(i.HardwareAddr.String(), mac) {
				return i.Name, nil
			}
		}
		if time.Now().After(deadline) {
			if mac != "" {
				return "", fmt.Errorf("no network interface with MAC %s (found: %s): its driver may be missing; add it to client.extra_modules", mac, strings.Join(names, "; "))
			}
			return "", errors.New("no Ethernet interface: the NIC's driver is not in the client; add it to client.extra_modules")
		}
		if err := sleepCtx(ctx, 250*time.Millisecond); err != nil {
			return "", err
		}
	}
}

// loadOne loads a module by name with its dependencies (the shell's
// modprobe).
func loadOne(out io.Writer, name string) {
	if name == "" {
		fmt.Fprint(out, "modprobe NAME\r\n")
		return
	}
	if err := kmodule.Probe(name, ""); err != nil {
		fmt.Fprintf(out, "%v\r\n", err)
	}
}

// keyReaders read the consoles' keys into one channel. A program the
// client starts (bin, qemu, the rescue shell's) gets the console for
// itself: stop closes the readers' descriptors (which ends their blocked
// reads) and start opens them again afterwards.
type keyReaders struct {
	names []string
	ch    chan []byte
	outs  []*os.File // to put back in raw mode after a program changed it
	mu    sync.Mutex
	open  []*os.File
}

func (k *keyReaders) start(ctx context.Context) {
	k.mu.Lock()
	defer k.mu.Unlock()
	for _, f := range k.outs {
		makeRaw(int(f.Fd()))
	}
	for _, name := range k.names {
		f, err := os.OpenFile(name, os.O_RDONLY|unix.O_NOCTTY, 0)
		if err != nil {
			continue
		}
		k.open = append(k.open, f)
		go readKeys(ctx, f, k.ch)
	}
}

func (k *keyReaders) stop() {
	k.mu.Lock()
	defer k.mu.Unlock()
	for _, f := range k.open {
		f.Close()
	}
	k.open = nil
}
