package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/boottorrent/boottorrent/config"
	"github.com/boottorrent/boottorrent/oss"
	"github.com/boottorrent/boottorrent/oss/distro"
	"github.com/boottorrent/boottorrent/oss/iso9660"
)

func runAdd(env *Env, args []string) error {
	fs := newFlags(env, "add", "boottorrent add [--dir DIR] FILE.iso NAME",
		`Adds an operating system from a distribution's ISO image: reads the image
(no mounting, no root needed), recognises its family, copies the kernel, the
initrd and the root filesystem image into oss/NAME/ and writes
oss/NAME/config.yaml with the command line that makes the distribution's
initramfs find the root filesystem the boot client hands it.

Recognised:
`+distro.LookedFor()+`
Anything else: follow the README's manual recipe ("Booting real
distributions"). Refuses to replace an existing oss/NAME.`)
	dir := fs.String("dir", "", "project folder (default: the current folder)")
	pos, err := parseInterleaved(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 2 {
		fmt.Fprintln(env.Stderr, "boottorrent add: name the ISO and the new OS, e.g. boottorrent add debian-live-12.5.0-amd64-standard.iso debian")
		return errUsage
	}
	isoPath, name := pos[0], pos[1]
	if !oss.ValidName(name) {
		return fmt.Errorf("NAME %q is not safe in URLs and file names; use only letters, digits, '.', '_' and '-' (at most 63, starting with a letter or digit)", name)
	}
	d, err := projectDir(env, *dir)
	if err != nil {
		return err
	}
	if _, err := os.Stat(filepath.Join(d, config.FileName)); err != nil {
		return fmt.Errorf("%s is not a boottorrent project (no %s); run 'boottorrent init DIR' first, or pass --dir", d, config.FileName)
	}
	ossDir := filepath.Join(d, "oss")
	if err := os.MkdirAll(ossDir, 0o755); err != nil {
		return err
	}
	if _, err := os.Lstat(filepath.Join(ossDir, name)); err == nil {
		return fmt.Errorf("%s exists already; choose another NAME or remove that folder first", filepath.Join(ossDir, name))
	}

	f, err := os.Open(isoPath)
	if err != nil {
		return err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return err
	}
	if !st.Mode().IsRegular() {
		return fmt.Errorf("%s is not a regular file; give the path of an ISO image", isoPath)
	}
	img, err := iso9660.Open(f, st.Size())
	if err != nil {
		if errors.Is(err, iso9660.ErrNotISO) {
			return fmt.Errorf("%s is not an ISO 9660 image (a .img for USB sticks or a disk image cannot be read; use the distribution's .iso)", isoPath)
		}
		return fmt.Errorf("read %s: %w", isoPath, err)
	}
	plan, err := distro.Detect(img.FS())
	if errors.Is(err, distro.ErrUnrecognised) {
		return fmt.Errorf("%s (volume id %q) has none of the layouts add knows; it looked for:\n%sFor other media, copy the kernel, initrd and root filesystem by hand and write oss/%s/config.yaml as the README's \"Booting real distributions\" recipes show",
			isoPath, img.VolumeID(), distro.LookedFor(), name)
	}
	if err != nil {
		return fmt.Errorf("read %s: %w", isoPath, err)
	}
	dispname := distro.DisplayName(img.VolumeID())
	if dispname == "" {
		dispname = name
	}
	cfg := plan.Config(distro.Source{File: filepath.Base(isoPath), VolumeID: img.VolumeID(), Size: st.Size()}, dispname)

	fmt.Fprintf(env.Stdout, "%s: %s (%s names, volume id %q)\n", filepath.Base(isoPath), plan.Family.Name, img.Names(), img.VolumeID())
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	total, err := distro.Install(ctx, distro.Medium{FS: img.FS(), ISO: f, Size: st.Size()}, plan, ossDir, name, cfg, newProgress(env.Stderr))
	if err != nil {
		if errors.Is(err, context.Canceled) {
			return fmt.Errorf("interrupted; nothing was written to %s", filepath.Join(ossDir, name))
		}
		return err
	}
	fmt.Fprintf(env.Stdout, "Created %s (%s): kernel %s, initrd %s", filepath.Join(ossDir, name), humanBytes(total), plan.Kernel, plan.Initrd)
	if len(plan.InitrdFiles) > 0 {
		var names []string
		for _, f := range plan.InitrdFiles {
			names = append(names, f.File)
		}
		fmt.Fprintf(env.Stdout, ", handed to the initramfs: %s", strings.Join(names, ", "))
	}
	cmdline := plan.Cmdline
	if cmdline == "" {
		cmdline = "(none)"
	}
	fmt.Fprintf(env.Stdout, ".\nCommand line: %s\nNext: boottorrent check (when %s lists boot.menu, add %s to it).\n", cmdline, config.FileName, name)
	return nil
}

// parseInterleaved parses flags that may come before, between or after the
// positional arguments (boottorrent add FILE NAME --dir lab) and returns
// the positional ones.
func parseInterleaved(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return nil, err
			}
			return nil, errUsage
		}
		rest := fs.Args()
		if len(rest) == 0 {
			return pos, nil
		}
		if rest[0] == "--" {
			return append(pos, rest[1:]...), nil
		}
		pos = append(pos, rest[0])
		args = rest[1:]
	}
}

// newProgress reports copies: a bar redrawn on a terminal, otherwise a log
// line when a large file (64 MiB or more) starts and one when it ends.
func newProgress(w io.Writer) distro.Progress {
	term := false
	if f, ok := w.(*os.File); ok {
		if st, err := f.Stat(); err == nil && st.Mode()&os.ModeCharDevice != 0 {
			term = true
		}
	}
	var cur string
	var start, last time.Time
	return func(file string, done, total int64) {
		now := time.Now()
		if file != cur {
			cur, start, last = file, now, time.Time{}
			if !term && total >= 64<<20 {
				fmt.Fprintf(w, "copying %s (%s)\n", file, humanBytes(total))
			}
		}
		end := done == total
		if term && (end || now.Sub(last) >= 200*time.Millisecond) {
			last = now
			const width = 30
			filled := width
			if total > 0 {
				filled = int(int64(width) * done / total)
			}
			rate := ""
			if s := now.Sub(start).Seconds(); s > 0.5 {
				rate = fmt.Sprintf("  %s/s", humanBytes(int64(float64(done)/s)))
			}
			fmt.Fprintf(w, "\r  %-40.40s [%s%s] %s / %s%s\x1b[K", file, strings.Repeat("#", filled), strings.Repeat(".", width-filled),
				humanBytes(done), humanBytes(total), rate)
			if end {
				fmt.Fprintln(w)
			}
			return
		}
		if !term && end && total >= 64<<20 {
			fmt.Fprintf(w, "copied %s (%s) in %s\n", file, humanBytes(total), now.Sub(start).Round(time.Millisecond))
		}
	}
}
