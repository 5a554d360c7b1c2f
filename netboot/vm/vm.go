// Package vm runs QEMU virtual machines that network-boot on a netns.LAN,
// for the PXE tests, the boot client's end-to-end tests and the demo.
//
// A VM is plugged into the LAN through a tap device on the LAN's bridge,
// so QEMU runs inside the bridge's namespace (lan.Bridge.Command). It
// always uses TCG (-accel tcg: KVM hangs on these machines), no display,
// and the first serial port on QEMU's stdin/stdout: everything the VM
// prints there is captured (WaitFor, Output) and SendKeys types on it.
package vm

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/boottorrent/boottorrent/netboot/netns"
)

// Firmware is what the VM boots with.
type Firmware string

const (
	// BIOS is SeaBIOS with QEMU's iPXE option ROM on the NIC: the ROM is
	// iPXE, so it fetches the boot script over HTTP without TFTP.
	BIOS Firmware = "bios"
	// UEFI is OVMF with QEMU's iPXE (EFI) option ROM on the NIC.
	UEFI Firmware = "uefi"
	// UEFIPXE is OVMF with the NIC's option ROM removed: EDK II's own PXE
	// stack boots, which is not iPXE, so the first stage (ipxe.efi) comes
	// over TFTP as on real hardware with a vendor PXE ROM.
	UEFIPXE Firmware = "uefi-pxe"
)

// Paths of the Debian files the harness uses.
const (
	QEMU       = "qemu-system-x86_64"
	OVMFCode   = "/usr/share/OVMF/OVMF_CODE.fd"
	OVMFVars   = "/usr/share/OVMF/OVMF_VARS.fd"
	IPXEROM    = "/usr/lib/ipxe/qemu/efi-virtio.rom" // BIOS + EFI iPXE for virtio-net
	SeaBIOS    = "/usr/share/seabios/bios-256k.bin"
	DefaultNIC = "virtio-net-pci"
)

// Available reports what is missing to run a VM with fw, with the Debian
// package that provides it, or nil.
func Available(fw Firmware) error {
	if err := netns.Available(); err != nil {
		return err
	}
	if _, err := exec.LookPath(QEMU); err != nil {
		return errors.New("needs qemu-system-x86_64: apt-get install qemu-system-x86")
	}
	need := map[string]string{}
	switch fw {
	case BIOS:
		need[SeaBIOS] = "seabios"
		need[IPXEROM] = "ipxe-qemu"
	case UEFI:
		need[OVMFCode] = "ovmf"
		need[OVMFVars] = "ovmf"
		need[IPXEROM] = "ipxe-qemu"
	case UEFIPXE:
		need[OVMFCode] = "ovmf"
		need[OVMFVars] = "ovmf"
	default:
		return fmt.Errorf("unknown firmware %q", fw)
	}
	for f, pkg := range need {
		if _, err := os.Stat(f); err != nil {
			return fmt.Errorf("needs %s: apt-get install %s", f, pkg)
		}
	}
	return nil
}

// Config describes one VM.
type Config struct {
	// LAN is the virtual LAN the VM's NIC is plugged into (required).
	LAN      *netns.LAN
	Firmware Firmware
	// MAC of the NIC; default a random 52:54:00:xx:xx:xx.
	MAC net.HardwareAddr
	// MemoryMB defaults to 512.
	MemoryMB int
	// Dir holds the VM's files (OVMF variables, serial log); default a
	// new temporary folder, removed by Close.
	Dir string
	// NIC is the QEMU device model; default virtio-net-pci.
	NIC string
	// Name appears in errors and the serial log's file name.
	Name string
	// Console, if set, also receives everything the VM prints on its
	// serial port (e.g. a test's log, or os.Stdout in the demo).
	Console io.Writer
	// ExtraArgs are appended to QEMU's command line.
	ExtraArgs []string
}

// VM is a running QEMU.
type VM struct {
	cfg     Config
	cmd     *exec.Cmd
	stdin   io.WriteCloser
	started time.Time
	tmpDir  string
	tap     string
	logFile *os.File

	mu      sync.Mutex
	out     bytes.Buffer
	changed chan struct{} // closed and replaced on every write
	exited  chan struct{}
	exitErr error

	closeOnce sync.Once
}

// RandomMAC returns a locally administered unicast MAC in QEMU's range.
func RandomMAC() net.HardwareAddr {
	b := make([]byte, 3)
	rand.Read(b)
	return net.HardwareAddr{0x52, 0x54, 0x00, b[0], b[1], b[2]}
}

// Args returns QEMU's command line (without the program) for cfg and the
// given tap device; exported so a demo can print what it runs.
func Args(cfg Config, tap, varsFile string) []string {
	nic := cfg.NIC
	if nic == "" {
		nic = DefaultNIC
	}
	dev := fmt.Sprintf("%s,netdev=n0,mac=%s", nic, cfg.MAC)
	if nic == DefaultNIC {
		// Debian's iPXE ROM for virtio declares only the modern device
		// ID (1af4:1041); a transitional device (1af4:1000, QEMU's
		// default on a conventional PCI slot) makes SeaBIOS skip the
		// ROM and never try the network.
		dev += ",disable-legacy=on"
	}
	switch cfg.Firmware {
	case UEFIPXE:
		dev += ",romfile="
	default:
		if nic == DefaultNIC {
			dev += ",romfile=" + IPXEROM
		}
	}
	args := []string{
		"-accel", "tcg",
		"-machine", "q35",
		"-m", fmt.Sprint(cfg.MemoryMB),
		"-smp", "1",
		"-nographic", "-monitor", "none", "-serial", "stdio",
		"-no-reboot",
		"-netdev", fmt.Sprintf("tap,id=n0,ifname=%s,script=no,downscript=no", tap),
		"-device", dev,
		"-boot", "order=n",
	}
	if cfg.Firmware == UEFI || cfg.Firmware == UEFIPXE {
		args = append(args,
			"-drive", "if=pflash,format=raw,unit=0,readonly=on,file="+OVMFCode,
			"-drive", "if=pflash,format=raw,unit=1,file="+varsFile)
	}
	return append(args, cfg.ExtraArgs...)
}

// Start boots a VM. ctx bounds its whole life: when ctx ends, QEMU is
// killed. Close it (t.Cleanup) to kill it and remove its files.
func Start(ctx context.Context, cfg Config) (*VM, error) {
	if cfg.LAN == nil || cfg.LAN.Bridge == nil {
		return nil, errors.New("vm: Config.LAN is required")
	}
	if cfg.Firmware == "" {
		cfg.Firmware = BIOS
	}
	if err := Available(cfg.Firmware); err != nil {
		return nil, err
	}
	if cfg.MAC == nil {
		cfg.MAC = RandomMAC()
	}
	if cfg.MemoryMB <= 0 {
		cfg.MemoryMB = 512
	}
	if cfg.Name == "" {
		cfg.Name = fmt.Sprintf("%s-%s", cfg.Firmware, strings.ReplaceAll(cfg.MAC.String(), ":", ""))
	}
	v := &VM{cfg: cfg, changed: make(chan struct{}), exited: make(chan struct{})}
	if cfg.Dir == "" {
		d, err := os.MkdirTemp("", "boottorrent-vm-")
		if err != nil {
			return nil, err
		}
		v.tmpDir, v.cfg.Dir = d, d
	}
	vars := filepath.Join(v.cfg.Dir, "OVMF_VARS.fd")
	if cfg.Firmware != BIOS {
		data, err := os.ReadFile(OVMFVars)
		if err == nil {
			err = os.WriteFile(vars, data, 0o644)
		}
		if err != nil {
			v.cleanupFiles()
			return nil, fmt.Errorf("vm: copy OVMF variables: %w", err)
		}
	}
	tap, err := cfg.LAN.AddTap()
	if err != nil {
		v.cleanupFiles()
		return nil, fmt.Errorf("vm: %w", err)
	}
	v.tap = tap
	lf, err := os.Create(filepath.Join(v.cfg.Dir, v.cfg.Name+".serial.log"))
	if err != nil {
		v.cleanupFiles()
		return nil, err
	}
	v.logFile = lf
	cmd := cfg.LAN.Bridge.Command(ctx, QEMU, Args(v.cfg, tap, vars)...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	cmd.Cancel = func() error { return cmd.Process.Kill() }
	stdin, err := cmd.StdinPipe()
	if err != nil {
		v.cleanupFiles()
		return nil, err
	}
	v.stdin = stdin
	cmd.Stdout = consoleWriter{v}
	cmd.Stderr = consoleWriter{v}
	v.cmd = cmd
	v.started = time.Now()
	done, err := StartLocked(cmd)
	if err != nil {
		v.cleanupFiles()
		return nil, fmt.Errorf("vm: start %s: %w", QEMU, err)
	}
	go func() {
		err := <-done
		v.mu.Lock()
		v.exitErr = err
		v.mu.Unlock()
		close(v.exited)
	}()
	return v, nil
}

// StartLocked starts cmd and returns a channel that receives cmd.Wait's
// error. Pdeathsig (SIGKILL when the parent dies, so that no QEMU outlives
// a killed test) follows the OS *thread* that forked the child, not the
// process, and Go ends threads: a goroutine that switched network
// namespace (netns.NS.Do) exits locked to its thread, which is then
// destroyed. A QEMU forked from such a thread was killed mid-test
// ("signal: killed"). So cmd is started from a goroutine locked to its own
// thread that lives until cmd has exited.
func StartLocked(cmd *exec.Cmd) (<-chan error, error) {
	started := make(chan error, 1)
	done := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread ends after cmd
		if err := cmd.Start(); err != nil {
			started <- err
			return
		}
		started <- nil
		done <- cmd.Wait()
	}()
	if err := <-started; err != nil {
		return nil, err
	}
	return done, nil
}

type consoleWriter struct{ v *VM }

func (c consoleWriter) Write(p []byte) (int, error) {
	v := c.v
	v.mu.Lock()
	v.out.Write(p)
	if v.logFile != nil {
		v.logFile.Write(p)
	}
	close(v.changed)
	v.changed = make(chan struct{})
	w := v.cfg.Console
	v.mu.Unlock()
	if w != nil {
		w.Write(p)
	}
	return len(p), nil
}

// MAC is the VM's NIC address.
func (v *VM) MAC() net.HardwareAddr { return v.cfg.MAC }

// Name is the VM's name.
func (v *VM) Name() string { return v.cfg.Name }

// Started is when QEMU was started.
func (v *VM) Started() time.Time { return v.started }

// LogFile is the path of the serial console's log.
func (v *VM) LogFile() string { return filepath.Join(v.cfg.Dir, v.cfg.Name+".serial.log") }

// Output is everything the VM printed so far (serial console and QEMU's
// own messages).
func (v *VM) Output() string {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.out.String()
}

// Tail is the last n bytes of Output, for error messages.
func (v *VM) Tail(n int) string {
	s := v.Output()
	if len(s) > n {
		s = "…" + s[len(s)-n:]
	}
	return s
}

// ErrExited is returned by WaitFor when QEMU ended before the marker.
var ErrExited = errors.New("vm: QEMU exited")

// WaitFor waits until the console shows marker, and returns the time
// since Start. It fails when ctx ends or QEMU exits first; the error
// carries the end of the console output.
func (v *VM) WaitFor(ctx context.Context, marker string) (time.Duration, error) {
	from := 0 // only new output (and a marker's length before it) is searched again
	for {
		v.mu.Lock()
		buf := v.out.Bytes()
		found := bytes.Contains(buf[from:], []byte(marker))
		from = max(0, len(buf)-len(marker))
		ch := v.changed
		v.mu.Unlock()
		if found {
			return time.Since(v.started), nil
		}
		select {
		case <-ch:
		case <-v.exited:
			if bytes.Contains([]byte(v.Output()), []byte(marker)) {
				return time.Since(v.started), nil
			}
			return 0, fmt.Errorf("%w before %q was printed (%v); console:\n%s", ErrExited, marker, v.exitErr, v.Tail(3000))
		case <-ctx.Done():
			return 0, fmt.Errorf("vm %s: %q not printed after %v: %w; console:\n%s", v.cfg.Name, marker,
				time.Since(v.started).Round(time.Second), ctx.Err(), v.Tail(3000))
		}
	}
}

// SendKeys types s on the serial console ("\r" is Enter; arrow keys are
// ANSI sequences such as "\x1b[B" for down).
func (v *VM) SendKeys(s string) error {
	_, err := io.WriteString(v.stdin, s)
	return err
}

// Exited is closed when QEMU has exited.
func (v *VM) Exited() <-chan struct{} { return v.exited }

// Wait waits for QEMU to exit (e.g. after the guest powers off) and
// returns its exit error.
func (v *VM) Wait(ctx context.Context) error {
	select {
	case <-v.exited:
		v.mu.Lock()
		defer v.mu.Unlock()
		return v.exitErr
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Close kills QEMU if it still runs, waits for it, and removes the VM's
// temporary files. It is safe to call more than once.
func (v *VM) Close() error {
	v.closeOnce.Do(func() {
		if v.cmd != nil && v.cmd.Process != nil {
			select {
			case <-v.exited:
			default:
				v.cmd.Process.Kill()
				select {
				case <-v.exited:
				case <-time.After(10 * time.Second):
				}
			}
		}
		if v.stdin != nil {
			v.stdin.Close()
		}
		v.mu.Lock()
		if v.logFile != nil {
			v.logFile.Close()
			v.logFile = nil
		}
		v.mu.Unlock()
		if v.tap != "" && v.cfg.LAN.Bridge != nil {
			v.cfg.LAN.Bridge.Run("ip", "link", "del", v.tap)
		}
		v.cleanupFiles()
	})
	return nil
}

func (v *VM) cleanupFiles() {
	if v.tmpDir != "" {
		os.RemoveAll(v.tmpDir)
	}
}
