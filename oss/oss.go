// Package oss loads the operating systems a boottorrent project offers: one
// folder per OS under oss/, each with a config.yaml naming its files.
package oss

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"sort"
	"strings"

	"gopkg.in/yaml.v3"

	"github.com/boottorrent/boottorrent/config/strictyaml"
)

// ConfigName is the file in every OS folder that describes the OS.
const ConfigName = "config.yaml"

// Method is how the boot client starts an OS once it has downloaded it.
type Method string

const (
	// MethodKexec boots a Linux kernel with an initrd and a command line.
	MethodKexec Method = "kexec"
	// MethodBin runs a static binary from the OS folder.
	MethodBin Method = "bin"
	// MethodQEMU runs QEMU on the client with the OS's args.
	MethodQEMU Method = "qemu"
	// legacyQEMU is the original BootTorrent's name for MethodQEMU.
	legacyQEMU = "bin-qemu-x86_64"
)

// OS is one validated operating system entry.
type OS struct {
	Name     string // folder name: safe in URLs and file names
	Dir      string // absolute path of the folder
	DispName string // shown in the boot menu
	Method   Method
	Kernel   string   // kexec: kernel file, relative to Dir
	Initrd   string   // kexec: initrd file, relative to Dir (optional)
	Cmdline  string   // kexec: kernel command line
	Bin      string   // bin: the binary, relative to Dir
	BinArgs  []string // bin: its arguments
	Args     []string // qemu: QEMU's arguments
	// InitrdFiles (kexec with an initrd) are handed to the OS inside its
	// initramfs, in the order written (initrdfiles.go).
	InitrdFiles []InitrdFile
	// Files are the files the client downloads, relative slash paths,
	// sorted, config.yaml included. They make up the OS's torrent.
	Files []string
	Size  int64 // sum of the sizes of Files

	lines        strictyaml.Lines  // where each key was written, for messages
	initrdFields map[string]string // initrd_files item of each file, for messages
}

// Args is a list of arguments written either as a YAML list or as one
// string split on white space (the original BootTorrent's form:
// `args: "-fda odin1440.img"`). Quotes group words: `"a b" c`.
type Args []string

// UnmarshalYAML accepts a string or a list of strings.
func (a *Args) UnmarshalYAML(n *yaml.Node) error {
	switch n.Kind {
	case yaml.ScalarNode:
		words, err := splitWords(n.Value)
		if err != nil {
			return &yaml.TypeError{Errors: []string{fmt.Sprintf("line %d: %v", n.Line, err)}}
		}
		*a = words
		return nil
	case yaml.SequenceNode:
		var l []string
		if err := n.Decode(&l); err != nil {
			return err
		}
		*a = l
		return nil
	}
	return &yaml.TypeError{Errors: []string{fmt.Sprintf("line %d: must be a text value or a list of text values", n.Line)}}
}

func splitWords(s string) ([]string, error) {
	var out []string
	var cur strings.Builder
	inWord := false
	var quote rune
	for _, r := range s {
		switch {
		case quote != 0:
			if r == quote {
				quote = 0
			} else {
				cur.WriteRune(r)
			}
		case r == '"' || r == '\'':
			quote, inWord = r, true
		case r == ' ' || r == '\t' || r == '\n':
			if inWord {
				out = append(out, cur.String())
				cur.Reset()
				inWord = false
			}
		default:
			cur.WriteRune(r)
			inWord = true
		}
	}
	if quote != 0 {
		return nil, fmt.Errorf("unclosed %c quote in %q", quote, s)
	}
	if inWord {
		out = append(out, cur.String())
	}
	return out, nil
}

// file is the config.yaml schema. The limit tags bound its lists (see
// strictyaml); maxArgs also bounds arguments written as one string.
type file struct {
	DispName string   `yaml:"dispname"`
	Method   string   `yaml:"method"`
	Kernel   string   `yaml:"kernel"`
	Initrd   string   `yaml:"initrd"`
	Cmdline  string   `yaml:"cmdline"`
	Bin      string   `yaml:"bin"`
	BinArgs  Args     `yaml:"binargs" limit:"1024"`
	Args     Args     `yaml:"args" limit:"1024"`
	Files    []string `yaml:"files" limit:"10000"`
	// InitrdFiles: see InitrdFile.
	InitrdFiles []initrdFileYAML `yaml:"initrd_files" limit:"1024"`
}

// maxArgs bounds binargs and args, as a list or as one string: far more
// than any program takes, far less than would burden the client's menu.
const maxArgs = 1024

// nameRe keeps OS names safe in URLs, torrent names, file names and iPXE
// scripts without any escaping.
var nameRe = regexp.MustCompile(`^[a-zA-Z0-9][a-zA-Z0-9._-]{0,62}$`)

// ValidName reports whether name may be used as an OS folder name.
func ValidName(name string) bool { return nameRe.MatchString(name) && !strings.HasSuffix(name, ".") }

// LoadAll loads every OS folder in dir (a project's oss/ folder), sorted by
// name. Entries that are not folders (README.md) are skipped. All problems
// in all folders are reported together.
func LoadAll(dir string) ([]*OS, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, strictyaml.Problems{{File: dir, Msg: "the oss/ folder is missing; create it and add one folder per operating system (see oss/README.md from 'boottorrent init')"}}
		}
		return nil, fmt.Errorf("read %s: %w", dir, err)
	}
	var all []*OS
	var ps strictyaml.Problems
	disp := map[string]string{}
	for _, e := range ents {
		if !e.IsDir() || strings.HasPrefix(e.Name(), ".") {
			continue
		}
		o, p := Load(filepath.Join(dir, e.Name()))
		ps = append(ps, p...)
		if o == nil {
			continue
		}
		if other, dup := disp[o.DispName]; dup {
			ps = append(ps, strictyaml.Problem{File: filepath.Join(dir, e.Name(), ConfigName), Field: "dispname",
				Msg: fmt.Sprintf("%q is already the display name of %s; give each OS its own name so the menu can tell them apart", o.DispName, other)})
		}
		disp[o.DispName] = o.Name
		all = append(all, o)
	}
	sort.Slice(all, func(i, j int) bool { return all[i].Name < all[j].Name })
	if err := ps.Err(); err != nil {
		return all, err
	}
	return all, nil
}

// Load loads and checks one OS folder. It returns the OS (nil when its
// config could not be read) and every problem found.
func Load(dir string) (*OS, strictyaml.Problems) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, strictyaml.Problems{{File: dir, Msg: err.Error()}}
	}
	name := filepath.Base(abs)
	cfgPath := filepath.Join(dir, ConfigName)
	var ps strictyaml.Problems
	if !ValidName(name) {
		ps = append(ps, strictyaml.Problem{File: dir, Msg: fmt.Sprintf("folder name %q is not safe in URLs and file names; rename it using only letters, digits, '.', '_' and '-' (at most 63, starting with a letter or digit)", name)})
	}
	data, err := strictyaml.ReadFile(cfgPath)
	if err != nil {
		var rps strictyaml.Problems
		switch {
		case errors.Is(err, fs.ErrNotExist):
			return nil, append(ps, strictyaml.Problem{File: cfgPath, Msg: "missing; every OS folder needs a config.yaml (dispname, method, and the files to boot)"})
		case errors.As(err, &rps):
			return nil, append(ps, rps...)
		}
		return nil, append(ps, strictyaml.Problem{File: cfgPath, Msg: err.Error()})
	}
	o, p := Parse(cfgPath, data)
	ps = append(ps, p...)
	if o == nil {
		return nil, ps
	}
	o.Name, o.Dir = name, abs
	if o.DispName == "" {
		o.DispName = name
	}
	ps = append(ps, o.checkFiles(cfgPath)...)
	return o, ps
}

// Parse decodes and checks a config.yaml's content (everything that does
// not need the folder). The result has Name and Dir unset.
func Parse(cfgPath string, data []byte) (*OS, strictyaml.Problems) {
	node, ps := strictyaml.Parse(cfgPath, data)
	if len(ps) > 0 {
		return nil, ps
	}
	var f file
	lines, ps := strictyaml.Decode(cfgPath, node, &f)
	if len(ps) > 0 {
		return nil, ps
	}
	prob := func(field, msg string) {
		ps = append(ps, strictyaml.Problem{File: cfgPath, Line: lines.Line(field), Field: field, Msg: msg})
	}
	o := &OS{DispName: strings.TrimSpace(f.DispName), Kernel: f.Kernel, Initrd: f.Initrd, Cmdline: f.Cmdline,
		Bin: f.Bin, BinArgs: f.BinArgs, Args: f.Args, lines: lines}
	for _, a := range []struct {
		field string
		args  Args
	}{{"binargs", f.BinArgs}, {"args", f.Args}} {
		if len(a.args) > maxArgs {
			prob(a.field, fmt.Sprintf("%d arguments, more than the limit of %d; shorten it", len(a.args), maxArgs))
		}
	}
	if strings.ContainsAny(o.DispName, "\x00\r\n\t") || len(o.DispName) > 80 {
		prob("dispname", "must be one line of at most 80 characters")
	}
	switch f.Method {
	case string(MethodKexec), string(MethodBin), string(MethodQEMU):
		o.Method = Method(f.Method)
	case legacyQEMU:
		o.Method = MethodQEMU
	case "":
		prob("method", "missing; use kexec (a Linux kernel + initrd), bin (a binary) or qemu (run QEMU on the client)")
	default:
		prob("method", fmt.Sprintf("%q is not a method; use kexec, bin or qemu", f.Method))
	}
	switch o.Method {
	case MethodKexec:
		if f.Kernel == "" {
			prob("kernel", "missing; method kexec needs the kernel file, e.g. kernel: vmlinuz")
		}
		if strings.ContainsAny(f.Cmdline, "\x00\r\n") {
			prob("cmdline", "must be one line")
		}
		if len(f.Cmdline) > 2048 {
			prob("cmdline", "longer than 2048 bytes, the x86 kernel's limit; shorten it")
		}
		for _, k := range []string{"bin", "binargs", "args"} {
			if _, ok := lines[k]; ok {
				prob(k, "only used with method bin or qemu; remove it for kexec")
			}
		}
	case MethodBin:
		if f.Bin == "" {
			prob("bin", "missing; method bin needs the binary to run, e.g. bin: hello")
		}
		for _, k := range []string{"kernel", "initrd", "cmdline", "args"} {
			if _, ok := lines[k]; ok {
				prob(k, "not used with method bin; remove it")
			}
		}
	case MethodQEMU:
		if len(f.Args) == 0 {
			prob("args", "missing; method qemu needs QEMU's arguments, e.g. args: \"-fda disk.img\"")
		}
		for _, k := range []string{"kernel", "initrd", "cmdline", "bin", "binargs"} {
			if _, ok := lines[k]; ok {
				prob(k, "not used with method qemu; remove it (name the files in args, and under files: if any)")
			}
		}
	}
	named := map[string]string{"kernel": f.Kernel, "initrd": f.Initrd, "bin": f.Bin}
	for _, k := range []string{"kernel", "initrd", "bin"} {
		if v := named[k]; v != "" {
			if msg := checkRel(v); msg != "" {
				prob(k, msg)
			}
		}
	}
	for i, v := range f.Files {
		if msg := checkRel(v); msg != "" {
			prob(fmt.Sprintf("files[%d]", i), msg)
		} else if isManifestFile(path.Clean(v)) {
			prob(fmt.Sprintf("files[%d]", i), fmt.Sprintf("%s is the OS's signed manifest, which describes the files and is fetched apart; remove it from files", v))
		}
	}
	o.parseInitrdFiles(f.InitrdFiles, prob)
	files := map[string]bool{ConfigName: true}
	for _, it := range o.InitrdFiles {
		files[it.File] = true
	}
	for _, v := range append([]string{f.Kernel, f.Initrd, f.Bin}, f.Files...) {
		if v != "" && checkRel(v) == "" {
			files[path.Clean(v)] = true
		}
	}
	for v := range files {
		o.Files = append(o.Files, v)
	}
	sort.Strings(o.Files)
	if o.Method == MethodQEMU && len(f.Files) == 0 {
		o.Files = nil // filled from the folder by checkFiles: QEMU's args name files we cannot parse
	}
	return o, ps
}

// checkRel rejects paths that could leave the OS folder.
func checkRel(p string) string {
	switch {
	case strings.ContainsRune(p, 0) || strings.ContainsRune(p, '\\'):
		return fmt.Sprintf("%q contains a NUL or backslash; use a plain relative path with '/'", p)
	case path.IsAbs(p):
		return fmt.Sprintf("%q is absolute; name a file inside the OS folder, relative to it", p)
	case !fs.ValidPath(path.Clean(p)) || path.Clean(p) == ".":
		return fmt.Sprintf("%q leaves the OS folder; copy the file into the folder and name it relative to it", p)
	}
	return ""
}

// checkFiles checks that every file exists inside the folder (no symlink
// escape), is regular, and adds up the size. For qemu without an explicit
// files list, every regular file in the folder is taken.
func (o *OS) checkFiles(cfgPath string) (ps strictyaml.Problems) {
	root, err := os.OpenRoot(o.Dir)
	if err != nil {
		return strictyaml.Problems{{File: o.Dir, Msg: err.Error()}}
	}
	defer root.Close()
	if o.Files == nil {
		err := fs.WalkDir(root.FS(), ".", func(p string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			if d.IsDir() && p != "." && strings.HasPrefix(d.Name(), ".") {
				return fs.SkipDir
			}
			if d.Type().IsRegular() && !strings.HasPrefix(d.Name(), ".") && !isManifestFile(p) {
				o.Files = append(o.Files, p)
			}
			return nil
		})
		if err != nil {
			ps = append(ps, strictyaml.Problem{File: o.Dir, Msg: err.Error()})
		}
		sort.Strings(o.Files)
	}
	o.Size = 0
	sizes := map[string]int64{}
	defer func() {
		ps = append(ps, o.checkInitrdFiles(cfgPath, func(f string) (int64, bool) { n, ok := sizes[f]; return n, ok })...)
	}()
	for _, f := range o.Files {
		fi, err := root.Stat(f)
		if err != nil {
			msg := fmt.Sprintf("%s: cannot be read: %v", f, err)
			if errors.Is(err, fs.ErrNotExist) {
				msg = fmt.Sprintf("%s does not exist in %s; copy it there or fix the name", f, o.Dir)
			} else if strings.Contains(err.Error(), "escapes") {
				msg = fmt.Sprintf("%s is a link that leads out of the OS folder; copy the file into the folder instead", f)
			}
			field := fieldFor(o, f)
			ps = append(ps, strictyaml.Problem{File: cfgPath, Line: o.lines.Line(field), Field: field, Msg: msg})
			continue
		}
		if !fi.Mode().IsRegular() {
			field := fieldFor(o, f)
			ps = append(ps, strictyaml.Problem{File: cfgPath, Line: o.lines.Line(field), Field: field, Msg: fmt.Sprintf("%s is not a regular file", f)})
			continue
		}
		o.Size += fi.Size()
		sizes[f] = fi.Size()
	}
	return ps
}

func fieldFor(o *OS, f string) string {
	switch f {
	case path.Clean(o.Kernel):
		return "kernel"
	case path.Clean(o.Initrd):
		return "initrd"
	case path.Clean(o.Bin):
		return "bin"
	}
	if field, ok := o.initrdFields[f]; ok {
		return field
	}
	return "files"
}
