package client

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"log"
	"os"
	"runtime"
	"runtime/debug"
	"unsafe"

	"github.com/u-root/u-root/pkg/boot/bzimage"
	"github.com/u-root/u-root/pkg/boot/kexec"
	"github.com/u-root/u-root/pkg/boot/purgatory"
	"golang.org/x/sys/unix"
)

// kexec_load without a copy of the initrd in the client.
//
// kexec_file_load reads the initrd into a kernel buffer of its own and
// then copies it into the kexec segment: with the tmpfs file that is
// three copies of the initrd at once. u-root's kexec_load path
// (linux.KexecLoad) maps the file but kexec.Load's alignment step
// copies every segment into the Go heap, the initrd included: the same
// three copies, and a 140 MiB OS ran out of memory there (2026-12-07).
// Here the small segments (the kernel's ELF segments, the command line,
// the boot parameters, the purgatory) are aligned and merged by u-root,
// and the initrd's segment is added afterwards, page-aligned, pointing
// at a read-only shared mapping of the tmpfs file: the kernel copies it
// once into the segment, two copies in all.

// errNoKexecLoad says kexec_load itself was refused (EPERM: Secure Boot
// lockdown allows only kexec_file_load of a signed kernel; ENOSYS).
var errNoKexecLoad = errors.New("kexec_load refused")

// kexecLoadMapped loads kernel (a bzImage) with initrd and cmdline for
// the next kexec reboot through kexec_load, the initrd straight from a
// mapping of the file.
func kexecLoadMapped(kernel, initrd *os.File, cmdline string) error {
	bp, err := os.ReadFile("/sys/kernel/boot_params/data")
	if err != nil {
		return fmt.Errorf("boot parameters: %w", err)
	}
	lp := &bzimage.LinuxParams{}
	if err := lp.UnmarshalBinary(bp); err != nil {
		return fmt.Errorf("boot parameters: %w", err)
	}
	kmem, entry, err := kernelSegments(kernel)
	if err != nil {
		return err
	}
	// The bzImage and the kernel it unpacked (tens of MiB) are garbage
	// now: hand them back before the initrd's segment is copied.
	runtime.GC()
	debug.FreeOSMemory()
	var initrdSeg *kexec.Segment
	if initrd != nil {
		fi, err := initrd.Stat()
		if err != nil {
			return err
		}
		size := fi.Size()
		if size > 0 {
			data, err := unix.Mmap(int(initrd.Fd()), 0, int(size), unix.PROT_READ, unix.MAP_SHARED)
			if err != nil {
				return fmt.Errorf("mapping the initrd: %w", err)
			}
			defer unix.Munmap(data)
			// Below 4 GiB: the boot protocol's initrd address and size
			// fields are 32 bits (the ext_ fields are not set here).
			r, err := kmem.AvailableRAM().FindSpace(uint(size),
				kexec.WithMinimumAddr(kexec.M1), kexec.WithinRange(kexec.RangeFromInterval(kexec.M1, 1<<32)),
				kexec.WithAlignment(uint(os.Getpagesize())))
			if err != nil {
				return fmt.Errorf("no room below 4 GiB for a %d-byte initrd: %w", size, err)
			}
			seg := kexec.NewSegment(data, kexec.Range{Start: r.Start, Size: uint(pageUp(size))})
			kmem.Segments.Insert(seg) // later segments go around it
			initrdSeg = &seg
			lp.Initrdstart, lp.Initrdsize = uint32(r.Start), uint32(size)
		}
	}
	cl := []byte(cmdline + "\x00")
	clRange, err := kmem.AddKexecSegment(cl)
	if err != nil {
		return fmt.Errorf("command line segment: %w", err)
	}
	lp.CLPtr, lp.CmdLineSize = uint32(clRange.Start), uint32(len(cl))
	params, err := lp.MarshalBinary()
	if err != nil {
		return fmt.Errorf("boot parameters: %w", err)
	}
	// The kernel's 64-bit entry takes its boot parameters anywhere
	// below 4 GiB.
	setup, err := kmem.AddPhysSegment(params, kexec.RangeFromInterval(4096, 1<<32-1))
	if err != nil {
		return fmt.Errorf("boot parameters segment: %w", err)
	}
	// purgatory.Load logs its ELF header with the standard logger.
	log.SetOutput(io.Discard)
	pEntry, err := purgatory.Load(kmem, entry, setup.Start)
	log.SetOutput(os.Stderr)
	if err != nil {
		return fmt.Errorf("purgatory: %w", err)
	}
	var small kexec.Segments
	for _, s := range kmem.Segments {
		if initrdSeg == nil || s.Phys != initrdSeg.Phys {
			small = append(small, s)
		}
	}
	// Page-aligns and merges the small segments (copying them, a few
	// MiB); the initrd's is page-aligned already and stays a mapping.
	small, err = kexec.AlignAndMerge(small)
	if err != nil {
		return fmt.Errorf("kexec segments: %w", err)
	}
	if !small.PhysContains(pEntry) {
		return fmt.Errorf("purgatory entry %#x is in no segment", pEntry)
	}
	segs := small
	if initrdSeg != nil {
		segs = append(segs, *initrdSeg)
	}
	kmem = nil
	runtime.GC()
	debug.FreeOSMemory()
	return rawKexecLoad(pEntry, segs)
}

// kernelSegments parses a bzImage and returns the memory layout with its
// ELF segments, and its entry point.
func kernelSegments(kernel *os.File) (*kexec.Memory, uintptr, error) {
	kb, err := io.ReadAll(io.LimitReader(kernel, 256<<20))
	if err != nil {
		return nil, 0, fmt.Errorf("reading the kernel: %w", err)
	}
	var bz bzimage.BzImage
	if err := bz.UnmarshalBinary(kb); err != nil {
		return nil, 0, fmt.Errorf("not a bzImage kernel: %w", err)
	}
	if bz.Header.Protocolversion < 0x0205 || bz.Header.RelocatableKernel == 0 {
		return nil, 0, fmt.Errorf("kernel boot protocol %#x (relocatable %d): kexec_load needs 2.05+ and a relocatable kernel", bz.Header.Protocolversion, bz.Header.RelocatableKernel)
	}
	kelf, err := bz.ELF()
	if err != nil {
		return nil, 0, fmt.Errorf("kernel ELF: %w", err)
	}
	mm, err := kexec.MemoryMapFromSysfsMemmap()
	if err != nil {
		return nil, 0, fmt.Errorf("memory map: %w", err)
	}
	kmem := &kexec.Memory{Phys: mm}
	if _, err := kmem.LoadElfSegments(bytes.NewReader(bz.KernelCode)); err != nil {
		return nil, 0, fmt.Errorf("kernel ELF segments: %w", err)
	}
	return kmem, uintptr(kelf.Entry), nil
}

// kexecSegment is struct kexec_segment of kexec_load(2).
type kexecSegment struct {
	buf   uintptr
	bufsz uint
	mem   uintptr
	memsz uint
}

// rawKexecLoad calls kexec_load(2) with segs, whose physical ranges are
// page-aligned and disjoint.
func rawKexecLoad(entry uintptr, segs kexec.Segments) error {
	ks := make([]kexecSegment, len(segs))
	for i, s := range segs {
		ks[i] = kexecSegment{mem: s.Phys.Start, memsz: s.Phys.Size, bufsz: uint(len(s.Buf))}
		if len(s.Buf) > 0 {
			ks[i].buf = uintptr(unsafe.Pointer(&s.Buf[0]))
		}
	}
	_, _, errno := unix.Syscall6(unix.SYS_KEXEC_LOAD, entry, uintptr(len(ks)), uintptr(unsafe.Pointer(&ks[0])), 0, 0, 0)
	runtime.KeepAlive(segs)
	runtime.KeepAlive(ks)
	switch errno {
	case 0:
		return nil
	case unix.EPERM, unix.ENOSYS:
		return fmt.Errorf("%w: %v", errNoKexecLoad, errno)
	}
	return fmt.Errorf("kexec_load of %d segments: %w", len(ks), errno)
}

func pageUp(n int64) int64 {
	p := int64(os.Getpagesize())
	return (n + p - 1) / p * p
}
