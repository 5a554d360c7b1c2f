package client

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"

	"github.com/u-root/u-root/pkg/boot/kexec"

	"github.com/boottorrent/boottorrent/initramfs/bootapi"
)

// errNoKexecHere refuses to replace the running system from a process
// that is not /init.
var errNoKexecHere = errors.New("refusing to kexec: this client is not /init (pass --no-kexec to stop before booting)")

// Start boots the downloaded OS.
func (e *realEnv) Start(ctx context.Context, o *bootapi.OS, f *Fetched, dl downloader) error {
	if e.cfg.NoKexec {
		dl.Close()
		return nil
	}
	switch o.Method {
	case "kexec":
		if !e.cfg.Init {
			dl.Close()
			return errNoKexecHere
		}
		return e.kexec(o, f, dl)
	case "bin":
		dl.Close()
		return e.runAndEnd(ctx, f, exec.CommandContext(ctx, f.Path(o.Bin), o.BinArgs...))
	case "qemu":
		// QEMU runs from the downloaded folder (its args name the files
		// relative to it) while the client keeps seeding.
		defer dl.Close()
		return e.runAndEnd(ctx, f, exec.CommandContext(ctx, "qemu-system-x86_64", o.Args...))
	}
	dl.Close()
	return fmt.Errorf("unknown method %q", o.Method)
}

// kexec loads the kernel straight from the downloaded files (loadKernel:
// kexec_load from a mapping of the initrd, kexec_file_load as fallback),
// so the image is never copied in the client (pkg/boot's LinuxImage.Load
// would first copy both to $TMPDIR); the downloaded files are removed
// before jumping.
func (e *realEnv) kexec(o *bootapi.OS, f *Fetched, dl downloader) error {
	dl.Close()
	kernel, err := os.Open(f.Path(o.Kernel))
	if err != nil {
		return fmt.Errorf("kernel: %w", err)
	}
	defer kernel.Close()
	initrd, err := openInitrd(o, f)
	if err != nil {
		return fmt.Errorf("initrd: %w", err)
	}
	if initrd != nil {
		defer initrd.Close()
	}
	if err := e.loadKernel(kernel, initrd, bootCmdline(o)); err != nil {
		return fmt.Errorf("loading %s: %w", o.Kernel, err)
	}
	kernel.Close()
	if initrd != nil {
		initrd.Close()
	}
	os.RemoveAll(f.Dir)
	os.Remove(combinedPath(f.Dir))
	e.log.Info("kexec", "stage", "booting", "os", o.Name, "kernel", o.Kernel, "initrd", o.Initrd)
	if err := kexec.Reboot(); err != nil {
		return fmt.Errorf("kexec reboot: %w", err)
	}
	return errors.New("kexec reboot returned")
}

// runAndEnd runs the OS's program on the console in its folder. A clean
// exit ends the client (nil); a failure is returned.
func (e *realEnv) runAndEnd(ctx context.Context, f *Fetched, cmd *exec.Cmd) error {
	cmd.Dir = f.Dir
	stdin, stdout, stderr, done := e.stdio()
	defer done()
	cmd.Stdin, cmd.Stdout, cmd.Stderr = stdin, stdout, stderr
	if filepath.Base(cmd.Path) != "qemu-system-x86_64" {
		os.Chmod(cmd.Path, 0o755)
	}
	e.log.Info("exec", "stage", "booting", "path", cmd.Path, "args", cmd.Args[1:])
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("%s: %w", filepath.Base(cmd.Path), err)
	}
	return nil
}

// stdio is what a started program gets: in init mode /dev/console (the
// last console= of the kernel command line: the serial port when there is
// one, as iPXE's script sets it), with the client's own key readers
// stopped so that every key reaches the program; this process's own
// otherwise. done gives the console back.
func (e *realEnv) stdio() (stdin, stdout, stderr *os.File, done func()) {
	if e.keys == nil {
		return os.Stdin, os.Stdout, os.Stderr, func() {}
	}
	c, err := os.OpenFile("/dev/console", os.O_RDWR, 0)
	if err != nil {
		return os.Stdin, os.Stdout, os.Stderr, func() {}
	}
	e.keys.stop()
	return c, c, c, func() {
		c.Close()
		e.keys.start(context.Background())
	}
}
