package client

import (
	"fmt"
	"os"
	"runtime"
	"runtime/debug"
	"strings"
	"sync/atomic"
	"time"

	"github.com/u-root/u-root/pkg/boot/kexec"

	"github.com/boottorrent/boottorrent/initramfs/bootapi"
)

// kernelReserve is RAM the kernel keeps for itself that MemTotal does not
// count (its code, the memory map, the crash kernel area): the RAM rule
// speaks of the machine's RAM, /proc/meminfo of what is left.
const kernelReserve = 96 << 20

// meminfo reads fields of /proc/meminfo, in bytes (0 when missing).
func meminfo(keys ...string) map[string]int64 {
	m := map[string]int64{}
	b, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		return m
	}
	for _, l := range strings.Split(string(b), "\n") {
		k, v, ok := strings.Cut(l, ":")
		if !ok {
			continue
		}
		for _, want := range keys {
			if k == want {
				var kb int64
				fmt.Sscanf(strings.TrimSpace(v), "%d kB", &kb)
				m[k] = kb << 10
			}
		}
	}
	return m
}

// checkRAM refuses, before anything is downloaded, an OS this machine
// cannot boot: past the rule the kernel either kills the client or
// deadlocks inside kexec ("System is deadlocked on memory"), and
// nothing reaches the server. The message names both numbers and the fix.
func checkRAM(o *bootapi.OS) error {
	m := meminfo("MemTotal", "MemAvailable")
	total := m["MemTotal"]
	if total == 0 {
		return nil // no /proc: not a machine we boot
	}
	need, factor := bootapi.MinRAM(o.Size), bootapi.RAMFactor
	if lockedDown() {
		need, factor = bootapi.MinRAMLockdown(o.Size), bootapi.RAMFactorLockdown
	}
	if have := total + kernelReserve; have < need {
		return fmt.Errorf("%w: this machine has %d MiB of RAM, %s (%d MiB) needs about %d MiB (%.1f x its size + %d MiB, see the README's RAM rule); give the machine more RAM or boot a smaller OS",
			errTooLarge, have>>20, o.Name, o.Size>>20, need>>20, factor, bootapi.RAMOverhead>>20)
	}
	return nil
}

// lockedDown says whether the kernel is in Secure Boot lockdown, where
// kexec_load is refused and kexec_file_load needs a third copy of the
// initrd (bootapi.RAMFactorLockdown).
func lockedDown() bool {
	b, err := os.ReadFile("/sys/kernel/security/lockdown")
	return err == nil && !strings.Contains(string(b), "[none]")
}

// loadKernel loads the next kernel with kexec_load from a mapping of the
// initrd file (kexecLoadMapped: two copies of the initrd at the peak,
// the tmpfs file and the kexec segment), and with kexec_file_load when
// kexec_load is refused (Secure Boot lockdown) or fails: the kernel then
// reads the initrd into a buffer of its own and copies it into the
// segment while the tmpfs file is still there, three copies. The lowest
// MemAvailable seen while loading is logged and shown on the console to
// keep the RAM rule (bootapi.MinRAM) honest.
func (e *realEnv) loadKernel(kernel, initrd *os.File, cmdline string) error {
	// The torrent client is closed: hand its heap back to the kernel
	// before asking for the segment. Measured 2026-12-07: without this
	// the client still held about 390 MiB (transparent huge pages) and
	// a 140 MiB OS ran out of memory inside kexec_load at 709 MiB.
	runtime.GC()
	debug.FreeOSMemory()
	before := meminfo("MemAvailable")["MemAvailable"]
	if e.cfg.Init {
		fmt.Fprintf(e.console, "kexec: loading, %d MiB of RAM available\r\n", before>>20)
	}
	var low atomic.Int64
	low.Store(before)
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(5 * time.Millisecond)
		defer t.Stop()
		for {
			if a := meminfo("MemAvailable")["MemAvailable"]; a > 0 && a < low.Load() {
				low.Store(a)
			}
			select {
			case <-stop:
				return
			case <-t.C:
			}
		}
	}()
	how := "kexec_load"
	err := kexecLoadMapped(kernel, initrd, cmdline)
	if err != nil {
		e.log.Warn("kexec_load failed: trying kexec_file_load", "stage", "booting", "err", err)
		if e.cfg.Init {
			fmt.Fprintf(e.console, "kexec: kexec_load failed (%v), trying kexec_file_load\r\n", err)
		}
		how = "kexec_file_load"
		err = kexec.FileLoad(kernel, initrd, cmdline)
	}
	close(stop)
	<-done
	after := meminfo("MemAvailable")["MemAvailable"]
	var size int64
	if initrd != nil {
		if fi, serr := initrd.Stat(); serr == nil {
			size = fi.Size()
		}
	}
	e.log.Info("kernel loaded", "stage", "booting", "syscall", how, "initrd_bytes", size,
		"mem_available_before", before, "mem_available_lowest", low.Load(), "mem_available_after", after)
	if e.cfg.Init {
		fmt.Fprintf(e.console, "kexec: %s, initrd %d MiB, RAM used while loading: %d MiB at the peak, %d MiB after\r\n",
			how, size>>20, (before-low.Load())>>20, (before-after)>>20)
	}
	if err != nil {
		return fmt.Errorf("%s: %w", how, err)
	}
	return nil
}
