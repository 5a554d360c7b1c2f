// Package distro recognises a Linux distribution's install or live medium
// from the files it holds, and plans the boottorrent OS folder that boots
// it: which files to copy out, which of them the boot client hands to the
// distribution's initramfs (config.yaml's initrd_files, under /boottorrent/),
// the kernel command line that makes the initramfs find them, and the
// config.yaml itself. Detection and planning are pure functions of an
// fs.FS, so they are tested with fstest.MapFS; reading the ISO is package
// iso9660's, copying is the add command's. It must not know how an image is
// stored or how files travel to a machine.
package distro

import (
	"errors"
	"fmt"
	"io/fs"
	"path"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/boottorrent/boottorrent/oss"
)

// Prefix is where the boot client places initrd_files inside the OS's
// initramfs (oss.InitrdPrefix, the one home of that rule).
const Prefix = oss.InitrdPrefix

// ErrUnrecognised means no family's layout was found on the medium.
var ErrUnrecognised = errors.New("no supported distribution layout found")

// InitrdFile is one entry of config.yaml's initrd_files.
type InitrdFile struct {
	File string // path inside the OS folder
	As   string // destination; "" means Prefix + File
}

// Generated is a small file add writes into the OS folder itself.
type Generated struct {
	Path    string
	Content string
	Why     string // one line for config.yaml's comment
}

// Plan is what add writes for one medium.
type Plan struct {
	Family      *Family
	Kernel      string   // path in the medium and in the OS folder
	Initrd      string   // idem
	Copy        []string // files copied with their path in the medium, kernel and initrd first
	WholeISO    string   // when set, the medium itself is copied to this name in the folder
	Generated   []Generated
	InitrdFiles []InitrdFile
	Cmdline     string
	Notes       []string // extra comment lines for config.yaml
}

// Family is a layout add recognises.
type Family struct {
	ID    string // short name used in messages and comments
	Name  string // the distributions that use it
	Looks string // the paths looked for, for the unrecognised message
	// Source is the initramfs script that takes the command line written
	// here, cited in config.yaml's comment.
	Source string
	plan   func(fsys fs.FS) (*Plan, error) // nil, nil when the layout is absent
}

// Families are tried in this order; the first whose layout is complete
// wins. archiso and dracut come first because their paths are the most
// specific; the Debian installer last because live media carry one too.
var Families = []*Family{
	{
		ID: "archiso", Name: "Arch Linux",
		Looks:  "arch/boot/x86_64/vmlinuz-linux, arch/boot/x86_64/initramfs-linux.img, arch/x86_64/airootfs.sfs (or .erofs)",
		Source: "archiso's initcpio hooks archiso (archisodevice, archisobasedir, copytoram) in archlinux/mkinitcpio-archiso",
		plan:   planArchiso,
	},
	{
		ID: "dracut-live", Name: "Fedora and other dracut (dmsquash-live) live media",
		Looks:  "LiveOS/squashfs.img, images/pxeboot/vmlinuz, images/pxeboot/initrd.img (or isolinux/vmlinuz, isolinux/initrd.img)",
		Source: "dracut modules.d/90dmsquash-live/dmsquash-live-root.sh: a root=live: path that is a file in the initramfs is used as the image, \"no mount needed\"",
		plan:   planDracut,
	},
	{
		ID: "casper", Name: "Ubuntu and its flavours",
		Looks:  "casper/vmlinuz*, casper/initrd*, casper/*.squashfs",
		Source: "casper scripts/casper: live-media= names the medium, casper/ under it holds the images (every layer of a layered image)",
		plan:   planCasper,
	},
	{
		ID: "live-boot", Name: "Debian live, Kali, Clonezilla and other live-boot media",
		Looks:  "live/vmlinuz*, live/initrd*, live/*.squashfs",
		Source: "live-boot components/9990-misc-helpers.sh: check_dev bind-mounts a directory given as live-media=, live/ under it holds the images",
		plan:   planLiveBoot,
	},
	{
		ID: "debian-installer", Name: "Debian installer (netinst, DVD)",
		Looks:  "install.amd/vmlinuz, install.amd/initrd.gz",
		Source: "debian-installer: the kernel and initrd boot the installer's first screen",
		plan:   planDebianInstaller,
	},
}

// Detect finds the medium's family and plans its OS folder. When no
// family is recognised and a path looked at could not be read for another
// reason than its absence (a link leading out of the medium, a truncated
// image), that error is returned instead of ErrUnrecognised: it is the
// reason.
func Detect(fsys fs.FS) (*Plan, error) {
	rec := &recordingFS{FS: fsys}
	for _, f := range Families {
		p, err := f.plan(rec)
		if err != nil {
			return nil, fmt.Errorf("%s layout: %w", f.ID, err)
		}
		if p != nil {
			p.Family = f
			for _, name := range append(p.Copy, p.Kernel, p.Initrd) {
				// config.yaml is text: a name that is not UTF-8 cannot be
				// written in it and read back as the same bytes.
				if !utf8.ValidString(name) {
					return nil, fmt.Errorf("%s layout: the file name %q is not UTF-8; copy and rename it by hand", f.ID, name)
				}
			}
			return p, nil
		}
	}
	if rec.err != nil {
		return nil, rec.err
	}
	return nil, ErrUnrecognised
}

// recordingFS keeps the first error other than "does not exist" that a
// Stat met, so that detection can treat the path as absent and still tell
// why nothing was recognised.
type recordingFS struct {
	fs.FS
	err error
}

func (r *recordingFS) Stat(name string) (fs.FileInfo, error) {
	fi, err := fs.Stat(r.FS, name)
	if err != nil && !errors.Is(err, fs.ErrNotExist) && r.err == nil {
		r.err = err
	}
	return fi, err
}

func (r *recordingFS) ReadDir(name string) ([]fs.DirEntry, error) {
	ents, err := fs.ReadDir(r.FS, name)
	if err != nil && !errors.Is(err, fs.ErrNotExist) && r.err == nil {
		r.err = err
	}
	return ents, err
}

// LookedFor lists every family and the paths it needs, one per line, for
// the message given when nothing is recognised.
func LookedFor() string {
	var b strings.Builder
	for _, f := range Families {
		fmt.Fprintf(&b, "  %s: %s\n      %s\n", f.ID, f.Name, f.Looks)
	}
	return b.String()
}

// regular reports whether p is a regular file (links inside the medium
// followed).
func regular(fsys fs.FS, p string) bool {
	fi, err := fs.Stat(fsys, p)
	return err == nil && fi.Mode().IsRegular()
}

// files lists the regular files of dir whose names match re, sorted.
func files(fsys fs.FS, dir string, re *regexp.Regexp) ([]string, error) {
	ents, err := fs.ReadDir(fsys, dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var out []string
	for _, e := range ents {
		p := path.Join(dir, e.Name())
		if re.MatchString(e.Name()) && regular(fsys, p) {
			out = append(out, p)
		}
	}
	slices.Sort(out)
	return out, nil
}

// pick returns the first of the preferred names that exists in dir, else
// the only file matching re, else "" (none, or several with no preference).
func pick(fsys fs.FS, dir string, preferred []string, re *regexp.Regexp) (string, error) {
	for _, n := range preferred {
		if p := path.Join(dir, n); regular(fsys, p) {
			return p, nil
		}
	}
	all, err := files(fsys, dir, re)
	if err != nil || len(all) != 1 {
		return "", err
	}
	return all[0], nil
}

var (
	vmlinuzRe = regexp.MustCompile(`^vmlinuz`)
	initrdRe  = regexp.MustCompile(`^initrd`)
	squashRe  = regexp.MustCompile(`\.squashfs$`)
	// versionedKernelRe matches Debian's live/vmlinuz-6.1.0-18-amd64.
	versionedKernelRe = regexp.MustCompile(`^vmlinuz-(.+)$`)
)

func planLiveBoot(fsys fs.FS) (*Plan, error) {
	images, err := files(fsys, "live", squashRe)
	if err != nil || len(images) == 0 {
		return nil, err
	}
	kernel, err := pick(fsys, "live", []string{"vmlinuz"}, vmlinuzRe)
	if err != nil {
		return nil, err
	}
	initrd, err := pick(fsys, "live", []string{"initrd.img", "initrd.lz", "initrd.gz", "initrd"}, initrdRe)
	if err != nil {
		return nil, err
	}
	var notes []string
	if kernel == "" || initrd == "" {
		// Debian live names both after the kernel version; with several
		// kernels, the newest pair (by version order) is taken.
		ks, err := files(fsys, "live", versionedKernelRe)
		if err != nil {
			return nil, err
		}
		slices.SortFunc(ks, compareVersions)
		for i := len(ks) - 1; i >= 0; i-- {
			v := versionedKernelRe.FindStringSubmatch(path.Base(ks[i]))[1]
			if ird := "live/initrd.img-" + v; regular(fsys, ird) {
				kernel, initrd = ks[i], ird
				if len(ks) > 1 {
					notes = append(notes, fmt.Sprintf("The medium has %d kernels; the newest with a matching initrd was taken.", len(ks)))
				}
				break
			}
		}
	}
	if kernel == "" || initrd == "" {
		return nil, nil
	}
	p := &Plan{Kernel: kernel, Initrd: initrd, Copy: append([]string{kernel, initrd}, images...),
		Cmdline: "boot=live live-media=" + strings.TrimSuffix(Prefix, "/"), Notes: notes}
	for _, im := range images {
		p.InitrdFiles = append(p.InitrdFiles, InitrdFile{File: im})
	}
	if len(images) > 1 {
		// live-boot stacks every image of live/ (in filesystem.module's order
		// when the medium has one).
		if regular(fsys, "live/filesystem.module") {
			p.Copy = append(p.Copy, "live/filesystem.module")
			p.InitrdFiles = append(p.InitrdFiles, InitrdFile{File: "live/filesystem.module"})
		}
	}
	return p, nil
}

func planCasper(fsys fs.FS) (*Plan, error) {
	images, err := files(fsys, "casper", squashRe)
	if err != nil || len(images) == 0 {
		return nil, err
	}
	kernel, err := pick(fsys, "casper", []string{"vmlinuz", "vmlinuz.efi"}, vmlinuzRe)
	if err != nil {
		return nil, err
	}
	initrd, err := pick(fsys, "casper", []string{"initrd", "initrd.lz", "initrd.gz", "initrd.img"}, initrdRe)
	if err != nil || kernel == "" || initrd == "" {
		return nil, err
	}
	p := &Plan{Kernel: kernel, Initrd: initrd, Copy: append([]string{kernel, initrd}, images...),
		Cmdline: "boot=casper live-media=" + strings.TrimSuffix(Prefix, "/")}
	for _, im := range images {
		p.InitrdFiles = append(p.InitrdFiles, InitrdFile{File: im})
	}
	// A layered image (Ubuntu 23.10 and later) names its layers and the
	// default one in install-sources.yaml next to them.
	if regular(fsys, "casper/install-sources.yaml") {
		p.Copy = append(p.Copy, "casper/install-sources.yaml")
		p.InitrdFiles = append(p.InitrdFiles, InitrdFile{File: "casper/install-sources.yaml"})
	}
	if len(images) > 1 {
		p.Notes = append(p.Notes, fmt.Sprintf("A layered image: all %d layers of casper/ are handed over.", len(images)))
	}
	return p, nil
}

func planDracut(fsys fs.FS) (*Plan, error) {
	const image = "LiveOS/squashfs.img"
	if !regular(fsys, image) {
		return nil, nil
	}
	for _, dir := range []string{"images/pxeboot", "isolinux"} {
		k, i := dir+"/vmlinuz", dir+"/initrd.img"
		if regular(fsys, k) && regular(fsys, i) {
			// dmsquash-live takes root=live:PATH as the image itself when PATH
			// is a file ending .img or .iso in the initramfs.
			return &Plan{Kernel: k, Initrd: i, Copy: []string{k, i, image},
				InitrdFiles: []InitrdFile{{File: image}},
				Cmdline:     "root=live:" + Prefix + image + " rd.live.image"}, nil
		}
	}
	return nil, nil
}

// archisoISO is the medium's name in the OS folder and under Prefix.
const archisoISO = "archiso.iso"

// archisoRule is the udev rule the boot client places in the initramfs.
// archiso's hook mounts archisodevice, which must be a block device
// (_mnt_dev waits for it with poll_device), so the rule attaches the ISO
// handed over under /boottorrent/ to the first free loop device — loop0,
// as nothing in the initramfs uses a loop device before udev's coldplug.
// It runs on /dev/null's add event, which udev's coldplug replays on every
// boot, and loads the loop driver first as it may be a module.
const archisoRule = `# Written by boottorrent add: attach the ISO the boot client placed in the
# initramfs to /dev/loop0, the archisodevice= of the kernel command line.
ACTION=="add", SUBSYSTEM=="mem", KERNEL=="null", RUN+="/bin/sh -c 'modprobe -q loop; losetup -r -f ` + Prefix + archisoISO + `'"
`

func planArchiso(fsys fs.FS) (*Plan, error) {
	const k, i = "arch/boot/x86_64/vmlinuz-linux", "arch/boot/x86_64/initramfs-linux.img"
	if !regular(fsys, k) || !regular(fsys, i) || !(regular(fsys, "arch/x86_64/airootfs.sfs") || regular(fsys, "arch/x86_64/airootfs.erofs")) {
		return nil, nil
	}
	const rule = "boottorrent-archiso.rules"
	p := &Plan{Kernel: k, Initrd: i, Copy: []string{k, i}, WholeISO: archisoISO,
		Generated: []Generated{{Path: rule, Content: archisoRule, Why: "attaches " + archisoISO + " to /dev/loop0 in the initramfs"}},
		InitrdFiles: []InitrdFile{
			{File: archisoISO},
			{File: rule, As: "/etc/udev/rules.d/99-boottorrent-archiso.rules"},
		},
		// copytoram=n: the ISO is in RAM already, inside the initramfs.
		Cmdline: "archisobasedir=arch archisodevice=/dev/loop0 copytoram=n"}
	if regular(fsys, "arch/boot/intel-ucode.img") || regular(fsys, "arch/boot/amd-ucode.img") {
		p.Notes = append(p.Notes, "The CPU microcode images (arch/boot/*-ucode.img) are not used: one initrd per OS.")
	}
	return p, nil
}

func planDebianInstaller(fsys fs.FS) (*Plan, error) {
	const k, i = "install.amd/vmlinuz", "install.amd/initrd.gz"
	if !regular(fsys, k) || !regular(fsys, i) {
		return nil, nil
	}
	return &Plan{Kernel: k, Initrd: i, Copy: []string{k, i},
		Notes: []string{
			"This is the installer of a CD/DVD: it looks for the installation medium",
			"on a drive and stops when there is none. For installs over the network",
			"use the netboot installer (debian-installer-12-netboot-amd64), see README.",
		}}, nil
}

// compareVersions orders vmlinuz-6.1.0-9-amd64 before vmlinuz-6.1.0-18-amd64:
// runs of digits compare as numbers.
func compareVersions(a, b string) int {
	for a != "" && b != "" {
		da, db := digitsPrefix(a), digitsPrefix(b)
		if da != "" && db != "" {
			na, _ := strconv.ParseUint(da, 10, 64)
			nb, _ := strconv.ParseUint(db, 10, 64)
			if na != nb {
				if na < nb {
					return -1
				}
				return 1
			}
			a, b = a[len(da):], b[len(db):]
			continue
		}
		if a[0] != b[0] {
			return strings.Compare(a[:1], b[:1])
		}
		a, b = a[1:], b[1:]
	}
	return strings.Compare(a, b)
}

func digitsPrefix(s string) string {
	i := 0
	for i < len(s) && i < 18 && s[i] >= '0' && s[i] <= '9' {
		i++
	}
	return s[:i]
}
