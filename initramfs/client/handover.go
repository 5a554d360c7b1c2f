package client

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"sort"
	"strings"

	"github.com/anacrolix/torrent/metainfo"

	"github.com/boottorrent/boottorrent/initramfs/bootapi"
)

// Handing files to the booted OS (bootapi.OS.InitrdFiles): the OS boots
// with one initrd made of its own initrd, zero padding to a 4-byte
// boundary (the kernel reads the next archive's magic only there:
// without it, "invalid magic at start of compressed archive"), then an
// uncompressed newc archive with the files at their destinations and the
// trailer. The kernel unpacks both archives into the new rootfs, where
// the OS's initramfs finds the files (live-boot's live-media=, dracut's
// root=live:/….img).
//
// The combined initrd is the download's own layout: the torrent's files
// that go into it are written by the storage (ramstore.go) straight at
// their offsets inside one tmpfs file, with the archive headers written
// around them before the first piece arrives. When the download
// completes the initrd exists, and no user-space copy of the big file is
// ever made: RAM holds the image once until kexec (see bootapi.MinRAM).

// combinedPath is where the combined initrd of the OS downloaded into
// dir is kept: beside the folder, so no torrent file can collide with it.
func combinedPath(dir string) string { return dir + ".initrd" }

// handover is the layout of one combined initrd.
type handover struct {
	path    string
	size    int64
	place   map[string]int64 // torrent file (relative path) → offset in the combined file
	headers []chunk          // archive headers and trailer to write
	f       *os.File
}

type chunk struct {
	off int64
	b   []byte
}

// maxNewcFile is newc's size limit: 8 hex digits.
const maxNewcFile = 1<<32 - 1

// planHandover lays out the combined initrd of o, given the length of
// each of its files (relative slash paths). What the server sent is
// checked again here: it decides what lands where in the new root.
func planHandover(file string, o *bootapi.OS, sizes map[string]int64) (*handover, error) {
	n, ok := sizes[o.Initrd]
	if o.Initrd == "" || !ok {
		return nil, fmt.Errorf("initrd_files need the OS's initrd %q among its files", o.Initrd)
	}
	h := &handover{path: file, place: map[string]int64{o.Initrd: 0}}
	off := align4(n)
	var arch []chunk
	ino := uint32(0x7b700000) // far from the OS's own archive's inode numbers
	record := func(name string, mode uint32, size int64) {
		ino++
		nlink := 1
		if mode&0o170000 == 0o040000 {
			nlink = 2
		}
		hdr := fmt.Sprintf("070701%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x",
			ino, mode, 0, 0, nlink, 0, size, 0, 0, 0, 0, len(name)+1, 0)
		b := append([]byte(hdr), name...)
		b = append(b, 0)
		for len(b)%4 != 0 {
			b = append(b, 0)
		}
		arch = append(arch, chunk{off, b})
		off += int64(len(b))
	}
	dirs := map[string]bool{}
	var dirList []string
	for _, f := range o.InitrdFiles {
		if err := checkDest(f.As); err != nil {
			return nil, err
		}
		for d := path.Dir(f.As); d != "/" && !dirs[d]; d = path.Dir(d) {
			dirs[d] = true
			dirList = append(dirList, d)
		}
	}
	sort.Strings(dirList) // parents before children
	for _, d := range dirList {
		record(strings.TrimPrefix(d, "/"), 0o040755, 0)
	}
	for _, f := range o.InitrdFiles {
		size, ok := sizes[f.File]
		if !ok {
			return nil, fmt.Errorf("initrd_files: %q is not one of the OS's files", f.File)
		}
		if size > maxNewcFile {
			return nil, fmt.Errorf("initrd_files: %s is %d bytes, over newc's 4 GiB", f.File, size)
		}
		if _, dup := h.place[f.File]; dup {
			return nil, fmt.Errorf("initrd_files: %s is handed over twice (or is the initrd)", f.File)
		}
		record(strings.TrimPrefix(f.As, "/"), 0o100644, size)
		h.place[f.File] = off
		off = align4(off + size)
	}
	record("TRAILER!!!", 0, 0)
	h.headers = arch
	h.size = off
	return h, nil
}

// checkDest bounds a destination from the network: absolute, clean, one
// line, outside the trees mounted over before the OS reads them.
func checkDest(as string) error {
	if !path.IsAbs(as) || path.Clean(as) != as || as == "/" || len(as) > 1024 || strings.ContainsAny(as, "\x00\r\n\\") {
		return fmt.Errorf("initrd_files: destination %q is not a clean absolute path", as)
	}
	for _, f := range []string{"/run", "/proc", "/sys", "/dev"} {
		if as == f || strings.HasPrefix(as, f+"/") {
			return fmt.Errorf("initrd_files: destination %q is under %s", as, f)
		}
	}
	return nil
}

func align4(n int64) int64 { return (n + 3) &^ 3 }

// handoverFor returns the function the storage calls when it opens the
// torrent, or nil when o hands nothing over.
func handoverFor(o *bootapi.OS) func(dir string, info *metainfo.Info) (*handover, error) {
	if len(o.InitrdFiles) == 0 {
		return nil
	}
	return func(dir string, info *metainfo.Info) (*handover, error) {
		sizes := map[string]int64{}
		for _, f := range info.UpvertedFiles() {
			sizes[strings.Join(f.BestPath(), "/")] = f.Length
		}
		h, err := planHandover(combinedPath(dir), o, sizes)
		if err != nil {
			return nil, err
		}
		return h, h.create()
	}
}

// create makes the combined file at its final size (a sparse tmpfs file:
// pages are taken as the pieces arrive) and writes the archive headers.
func (h *handover) create() error {
	f, err := os.OpenFile(h.path, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return fmt.Errorf("combined initrd: %w", err)
	}
	if err := f.Truncate(h.size); err != nil {
		f.Close()
		return fmt.Errorf("combined initrd of %d bytes: %w", h.size, err)
	}
	for _, c := range h.headers {
		if _, err := f.WriteAt(c.b, c.off); err != nil {
			f.Close()
			return fmt.Errorf("combined initrd: %w", err)
		}
	}
	h.f = f
	return nil
}

// openInitrd opens the initrd to boot o with: the combined one when o
// hands files over. A download that did not lay it out (the HTTP
// baseline writes plain files) has it assembled here, by copying: that
// path holds the image twice for a moment.
func openInitrd(o *bootapi.OS, f *Fetched) (*os.File, error) {
	if o.Initrd == "" {
		return nil, nil
	}
	if len(o.InitrdFiles) == 0 {
		return os.Open(f.Path(o.Initrd))
	}
	p := combinedPath(f.Dir)
	if _, err := os.Stat(p); errors.Is(err, os.ErrNotExist) {
		if err := assemble(o, f, p); err != nil {
			os.Remove(p)
			return nil, err
		}
	}
	return os.Open(p)
}

// assemble writes the combined initrd from the downloaded files, each
// removed once copied so that RAM holds at most one file twice.
func assemble(o *bootapi.OS, f *Fetched, p string) error {
	sizes := map[string]int64{}
	for _, rel := range append([]string{o.Initrd}, filesOf(o)...) {
		fi, err := os.Stat(f.Path(rel))
		if err != nil {
			return fmt.Errorf("initrd_files: %w", err)
		}
		sizes[rel] = fi.Size()
	}
	h, err := planHandover(p, o, sizes)
	if err != nil {
		return err
	}
	if err := h.create(); err != nil {
		return err
	}
	defer h.f.Close()
	for rel, off := range h.place {
		src, err := os.Open(f.Path(rel))
		if err != nil {
			return err
		}
		_, err = io.Copy(io.NewOffsetWriter(h.f, off), src)
		src.Close()
		if err != nil {
			return fmt.Errorf("combined initrd: %w", err)
		}
		if rel != o.Initrd {
			os.Remove(f.Path(rel))
		}
	}
	return h.f.Close()
}

func filesOf(o *bootapi.OS) []string {
	var l []string
	for _, f := range o.InitrdFiles {
		l = append(l, f.File)
	}
	return l
}

// bootCmdline is the command line o's kernel boots with. When o hands
// files over and its command line names neither root= nor rootfstype=
// (live-boot, casper), the kernel's rootfs is a tmpfs capped at half the
// RAM the kernel counts while it unpacks, which leaves out the initrd
// itself: a 140 MiB live OS (its squashfs and its own initrd unpacked,
// 238 MiB) failed with "Initramfs unpacking failed: write error" and a
// corrupt squashfs at 600 MiB of RAM, and passed at 681 MiB by 6 MiB
// (2026-12-08). rootfstype=ramfs makes the rootfs a ramfs, bounded by
// the RAM alone (bootapi.MinRAM); the initramfs scripts that read it
// (initramfs-tools' ROOTFSTYPE) use it only for a local root, which a
// live system does not mount.
func bootCmdline(o *bootapi.OS) string {
	if len(o.InitrdFiles) == 0 {
		return o.Cmdline
	}
	for _, f := range strings.Fields(o.Cmdline) {
		if strings.HasPrefix(f, "root=") || strings.HasPrefix(f, "rootfstype=") {
			return o.Cmdline
		}
	}
	return strings.TrimSpace(o.Cmdline + " rootfstype=ramfs")
}
