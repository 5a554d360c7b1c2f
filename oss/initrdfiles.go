package oss

import (
	"fmt"
	"io/fs"
	"path"
	"sort"
	"strings"

	"gopkg.in/yaml.v3"

	"github.com/boottorrent/boottorrent/config/strictyaml"
)

// InitrdPrefix is where a relative destination of initrd_files lands in
// the booted OS's initramfs. It is not under /run: every initramfs
// framework (initramfs-tools, dracut, archiso) mounts a tmpfs over /run,
// which would hide the file.
const InitrdPrefix = "/boottorrent/"

// MaxInitrdFile is the largest file initrd_files may hand over: newc, the
// cpio format the kernel unpacks, writes a file's size in 8 hex digits.
const MaxInitrdFile = 1<<32 - 1

// forbiddenDest are the trees a destination may not name: the kernel or
// the OS's initramfs mounts proc, sysfs, devtmpfs and a tmpfs over them
// before anything reads the file.
var forbiddenDest = []string{"/run", "/proc", "/sys", "/dev"}

// InitrdFile is a file of the OS folder that the boot client hands to the
// booted OS inside its initramfs (a newc archive appended to the OS's
// initrd), so that the OS finds its root filesystem image in RAM instead
// of fetching it over HTTP after the kernel starts.
type InitrdFile struct {
	File string // the file, relative to the OS folder (slash path)
	As   string // its absolute path in the OS's initramfs
}

// initrdFileYAML is one item of initrd_files: a relative file name, or a
// mapping {file: REL, as: DEST}.
type initrdFileYAML struct {
	File string
	As   string
	line int
	bad  string // what is wrong with the item's shape, if anything
}

// UnmarshalYAML accepts `live/filesystem.squashfs` or
// `{file: arch.iso, as: /etc/udev/rules.d/99-x.rules}`. Shape errors are
// kept and reported with the other problems, naming the item.
func (f *initrdFileYAML) UnmarshalYAML(n *yaml.Node) error {
	f.line = n.Line
	switch n.Kind {
	case yaml.ScalarNode:
		f.File = n.Value
		return nil
	case yaml.MappingNode:
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			if v.Kind != yaml.ScalarNode {
				f.bad = fmt.Sprintf("%s: must be a text value", k.Value)
				return nil
			}
			switch k.Value {
			case "file":
				f.File = v.Value
			case "as":
				f.As = v.Value
			default:
				f.bad = fmt.Sprintf("unknown key %q; an item is a file name or {file: NAME, as: DEST}", k.Value)
				return nil
			}
		}
		if f.File == "" {
			f.bad = "file: missing; an item is a file name or {file: NAME, as: DEST}"
		}
		return nil
	}
	f.bad = "must be a file name or a mapping {file: NAME, as: DEST}"
	return nil
}

// parseInitrdFiles checks initrd_files against the method and the rules
// of the destination; the files themselves are checked with the folder
// (checkInitrdFiles).
func (o *OS) parseInitrdFiles(items []initrdFileYAML, prob func(field, msg string)) {
	if len(items) == 0 {
		return
	}
	if o.Method != MethodKexec {
		prob("initrd_files", "only used with method kexec (the files are appended to the OS's initrd); remove it")
		return
	}
	if o.Initrd == "" {
		prob("initrd_files", "needs an initrd: the files are appended to the OS's own initrd, whose init finds them; add initrd: FILE")
		return
	}
	dests := map[string]string{}
	for i, it := range items {
		field := fmt.Sprintf("initrd_files[%d]", i)
		if it.bad != "" {
			prob(field, it.bad)
			continue
		}
		if msg := checkRel(it.File); msg != "" {
			prob(field, msg)
			continue
		}
		file := path.Clean(it.File)
		dest, msg := initrdDest(file, it.As)
		if msg != "" {
			prob(field, msg)
			continue
		}
		if other, dup := dests[dest]; dup {
			prob(field, fmt.Sprintf("%s is already where %s goes; give each file its own destination with as:", dest, other))
			continue
		}
		dests[dest] = file
		o.InitrdFiles = append(o.InitrdFiles, InitrdFile{File: file, As: dest})
		if o.initrdFields == nil {
			o.initrdFields = map[string]string{}
		}
		o.initrdFields[file] = field
	}
	// A destination that is a folder of another (a/b and a/b/c) cannot
	// be unpacked: one of them would not be a file.
	sorted := make([]string, 0, len(dests))
	for d := range dests {
		sorted = append(sorted, d)
	}
	sort.Strings(sorted)
	for i := 1; i < len(sorted); i++ {
		if strings.HasPrefix(sorted[i], sorted[i-1]+"/") {
			prob("initrd_files", fmt.Sprintf("%s is a file, so %s cannot be inside it; choose other destinations", sorted[i-1], sorted[i]))
		}
	}
}

// initrdDest is the absolute destination of file: as, else the file's
// own relative path, under InitrdPrefix when relative.
func initrdDest(file, as string) (string, string) {
	if as == "" {
		as = file
	}
	if strings.ContainsRune(as, 0) || strings.ContainsRune(as, '\\') || strings.ContainsAny(as, "\r\n") {
		return "", fmt.Sprintf("as: %q contains a NUL, backslash or line break; use a plain path with '/'", as)
	}
	if len(as) > 1024 {
		return "", "as: longer than 1024 bytes; shorten it"
	}
	if !path.IsAbs(as) {
		c := path.Clean(as)
		if !fs.ValidPath(c) || c == "." {
			return "", fmt.Sprintf("as: %q leaves %s; name a path inside it, or an absolute path", as, InitrdPrefix)
		}
		return InitrdPrefix + c, ""
	}
	c := path.Clean(as)
	if c == "/" || strings.HasSuffix(as, "/") {
		return "", fmt.Sprintf("as: %q names a folder; name the file, e.g. %s", as, path.Join(c, path.Base(file)))
	}
	for _, f := range forbiddenDest {
		if c == f || strings.HasPrefix(c, f+"/") {
			return "", fmt.Sprintf("as: %q is under %s, which the kernel or the OS's initramfs mounts over before reading it; use a relative path (it lands under %s) or another absolute path", as, f, InitrdPrefix)
		}
	}
	return c, ""
}

// checkInitrdFiles checks, with the folder, that each file handed over
// fits newc's size field. Existence and regularity are checked with the
// other files (they are in Files).
func (o *OS) checkInitrdFiles(cfgPath string, size func(string) (int64, bool)) strictyaml.Problems {
	var ps strictyaml.Problems
	for _, f := range o.InitrdFiles {
		n, ok := size(f.File)
		if !ok {
			continue
		}
		if n > MaxInitrdFile {
			field := o.initrdFields[f.File]
			ps = append(ps, strictyaml.Problem{File: cfgPath, Line: o.lines.Line(field), Field: field,
				Msg: fmt.Sprintf("%s is %d bytes; the initramfs format (newc) holds files under 4 GiB: hand over a smaller image, or split the OS's root filesystem", f.File, n)})
		}
	}
	return ps
}
