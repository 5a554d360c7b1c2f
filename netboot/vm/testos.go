package vm

import (
	"bytes"
	"compress/gzip"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/u-root/u-root/pkg/cpio"
)

// Busybox is the static busybox the test OS runs (Debian's busybox-static).
const Busybox = "/bin/busybox"

// TestOS is a tiny operating system for boot tests: Debian's kernel and an
// initramfs whose /init prints the kernel command line and Marker on the
// console (ttyS0 when the command line says console=ttyS0) and powers off,
// so QEMU exits.
type TestOS struct {
	Kernel    string // path of a bzImage
	Initramfs string // path of the gzip'd cpio
	Marker    string
}

// EchoArg on the kernel command line makes /init read one line from the
// console after the marker and print it back after EchoPrefix.
const (
	EchoArg    = "testos.echo"
	EchoPrefix = "testos got: "
)

// GuestArgs go on the command line of every Linux kernel the tests and
// the demo boot under QEMU. no_timer_check: under TCG on a busy host the
// kernel's early check of the IO-APIC timer can time out, and the kernel
// then panics ("IO-APIC + timer doesn't work!") before init; CI failed
// once on exactly that. (Cloud images and libvirt guests pass it too.)
const GuestArgs = "no_timer_check"

// CmdlinePrefix starts the line /init prints with /proc/cmdline, so tests
// can check what the kernel was given.
const CmdlinePrefix = "testos cmdline: "

// FindKernel returns the newest /boot/vmlinuz-* (Debian's
// linux-image-amd64), or an error naming the package to install.
func FindKernel() (string, error) {
	ks, _ := filepath.Glob("/boot/vmlinuz-*")
	var ok []string
	for _, k := range ks {
		if f, err := os.Open(k); err == nil {
			f.Close()
			ok = append(ok, k)
		}
	}
	if len(ok) == 0 {
		return "", errors.New("needs a kernel in /boot: apt-get install linux-image-amd64")
	}
	sort.Strings(ok)
	return ok[len(ok)-1], nil
}

// TestOSAvailable reports what is missing to build a TestOS, or nil.
func TestOSAvailable() error {
	if _, err := FindKernel(); err != nil {
		return err
	}
	if _, err := os.Stat(Busybox); err != nil {
		return errors.New("needs a static busybox: apt-get install busybox-static")
	}
	return nil
}

// BuildTestOS writes dir/initramfs.gz for marker and returns the test OS.
// The marker should be a string that appears nowhere else (the kernel
// echoes its command line, so do not pass the marker there).
func BuildTestOS(dir, marker string) (*TestOS, error) {
	if strings.ContainsAny(marker, "'\n\\$`\"") || marker == "" {
		return nil, fmt.Errorf("testos: marker %q must be plain text", marker)
	}
	kernel, err := FindKernel()
	if err != nil {
		return nil, err
	}
	bb, err := os.ReadFile(Busybox)
	if err != nil {
		return nil, fmt.Errorf("needs a static busybox: apt-get install busybox-static (%w)", err)
	}
	init := strings.Join([]string{
		"#!/bin/busybox sh",
		"B=/bin/busybox",
		"$B mount -t proc proc /proc",
		"$B mount -t sysfs sys /sys",
		"$B mount -t devtmpfs dev /dev 2>/dev/null",
		`echo "` + CmdlinePrefix + `$($B cat /proc/cmdline)"`,
		// Built from two halves so the script's own text never matches.
		`M1='` + marker[:len(marker)/2] + `'`,
		`M2='` + marker[len(marker)/2:] + `'`,
		`echo "${M1}${M2}"`,
		// testos.echo on the command line: read one line from the
		// console and print it back (tests of VM.SendKeys).
		`case "$($B cat /proc/cmdline)" in *testos.echo*) read -r line; echo "testos got: $line";; esac`,
		"$B sync",
		"$B poweroff -f",
		"",
	}, "\n")
	recs := []cpio.Record{
		cpio.Directory("bin", 0o755),
		cpio.Directory("dev", 0o755),
		cpio.Directory("proc", 0o755),
		cpio.Directory("sys", 0o755),
		cpio.Directory("tmp", 0o1777),
		// The kernel opens /dev/console for /init's stdio before any
		// devtmpfs is mounted.
		cpio.CharDev("dev/console", 0o600, 5, 1),
		cpio.StaticFile("bin/busybox", string(bb), 0o755),
		cpio.Symlink("bin/sh", "busybox"),
		cpio.StaticFile("init", init, 0o755),
	}
	var raw bytes.Buffer
	w := cpio.Newc.Writer(&raw)
	cpio.MakeAllReproducible(recs)
	if err := cpio.WriteRecordsAndDirs(w, recs); err != nil {
		return nil, fmt.Errorf("testos: cpio: %w", err)
	}
	if err := cpio.WriteTrailer(w); err != nil {
		return nil, fmt.Errorf("testos: cpio: %w", err)
	}
	var gz bytes.Buffer
	zw, _ := gzip.NewWriterLevel(&gz, gzip.BestSpeed)
	zw.Write(raw.Bytes())
	zw.Close()
	out := filepath.Join(dir, "initramfs.gz")
	if err := os.WriteFile(out, gz.Bytes(), 0o644); err != nil {
		return nil, err
	}
	return &TestOS{Kernel: kernel, Initramfs: out, Marker: marker}, nil
}
