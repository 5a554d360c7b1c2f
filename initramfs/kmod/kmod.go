// Package kmod reads the module tree's index files: modules.alias, to find
// the driver for a device from its modalias (what modprobe and udev do,
// and what u-root's kmodule leaves out), and modules.dep, to know which
// modules a driver needs. The client uses it to load the NIC drivers for
// the machine's PCI devices; the builder uses it to pack a driver with its
// dependencies.
package kmod

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
)

// Alias is one "alias PATTERN MODULE" line of modules.alias.
type Alias struct {
	Pattern string // shell glob over a modalias: * ? [...]
	Module  string // module name, '-' normalized to '_'
}

// Limits for index files: a Debian kernel's modules.alias has about
// 26,000 lines; the limits keep a corrupt file from taking all memory.
const (
	maxLines   = 1 << 20
	maxLineLen = 4096
)

// Name normalizes a module name as the kernel does ('-' and '_' are the
// same), and strips a path and a .ko[.gz|.xz|.zst] suffix.
func Name(s string) string {
	s = path.Base(filepath.ToSlash(s))
	for _, ext := range []string{".gz", ".xz", ".zst"} {
		s = strings.TrimSuffix(s, ext)
	}
	s = strings.TrimSuffix(s, ".ko")
	return strings.ReplaceAll(s, "-", "_")
}

// ParseAliases reads modules.alias. Malformed lines are skipped; the
// count of skipped lines is returned so callers can log it.
func ParseAliases(r io.Reader) (aliases []Alias, skipped int, err error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 4096), maxLineLen)
	n := 0
	for sc.Scan() {
		n++
		if n > maxLines {
			return aliases, skipped, fmt.Errorf("modules.alias: more than %d lines", maxLines)
		}
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' {
			continue
		}
		f := strings.Fields(line)
		if len(f) != 3 || f[0] != "alias" || !validPattern(f[1]) {
			skipped++
			continue
		}
		aliases = append(aliases, Alias{Pattern: f[1], Module: Name(f[2])})
	}
	return aliases, skipped, sc.Err()
}

// validPattern rejects patterns path.Match cannot compile, so Match never
// meets an error on a line it accepted.
func validPattern(p string) bool {
	_, err := path.Match(p, "")
	return err == nil
}

// Match returns the modules whose alias pattern matches modalias, in the
// order of the file (the kernel's depmod order), without duplicates.
// Matching is a shell glob (fnmatch), as modprobe does.
func Match(aliases []Alias, modalias string) []string {
	modalias = strings.TrimSpace(modalias)
	if modalias == "" || len(modalias) > maxLineLen {
		return nil
	}
	var out []string
	seen := map[string]bool{}
	for _, a := range aliases {
		// A cheap prefix test before the glob: patterns start with the
		// bus ("pci:v…"), and most do not share it.
		if i := strings.IndexAny(a.Pattern, "*?["); i > 0 && !strings.HasPrefix(modalias, a.Pattern[:i]) {
			continue
		}
		if ok, _ := path.Match(a.Pattern, modalias); ok && !seen[a.Module] {
			seen[a.Module] = true
			out = append(out, a.Module)
		}
	}
	return out
}

// Deps is modules.dep: module path (relative to the module tree) → the
// paths of the modules it needs, in load order (deepest last, as
// modules.dep lists them).
type Deps map[string][]string

// ParseDeps reads modules.dep ("kernel/a.ko: kernel/b.ko kernel/c.ko").
func ParseDeps(r io.Reader) (Deps, error) {
	d := Deps{}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 4096), 64<<10)
	n := 0
	for sc.Scan() {
		n++
		if n > maxLines {
			return d, fmt.Errorf("modules.dep: more than %d lines", maxLines)
		}
		mod, deps, ok := strings.Cut(sc.Text(), ":")
		mod = strings.TrimSpace(mod)
		if !ok || mod == "" || !safeRel(mod) {
			continue
		}
		var ds []string
		for _, dep := range strings.Fields(deps) {
			if safeRel(dep) {
				ds = append(ds, dep)
			}
		}
		d[mod] = ds
	}
	return d, sc.Err()
}

func safeRel(p string) bool {
	return !strings.HasPrefix(p, "/") && !strings.Contains(p, "..") && !strings.ContainsRune(p, 0)
}

// ByName maps module names to their path in the tree.
func (d Deps) ByName() map[string]string {
	m := make(map[string]string, len(d))
	for p := range d {
		m[Name(p)] = p
	}
	return m
}

// Closure returns the paths of the named modules and everything they
// need, sorted. Names not in the tree are returned in missing (built into
// the kernel, or a typo in client.extra_modules).
func (d Deps) Closure(names []string) (paths, missing []string) {
	by := d.ByName()
	set := map[string]bool{}
	for _, n := range names {
		p, ok := by[Name(n)]
		if !ok {
			missing = append(missing, n)
			continue
		}
		set[p] = true
		for _, dep := range d[p] {
			set[dep] = true
		}
	}
	for p := range set {
		paths = append(paths, p)
	}
	sort.Strings(paths)
	return paths, missing
}

// DeviceModaliases reads the modalias of every device on every bus under
// sysfs (normally "/sys"), sorted by path: PCI devices, and the devices
// that appear once a bus driver is loaded (virtio_pci makes the
// virtio-net device that virtio_net drives).
func DeviceModaliases(sysfs string) ([]string, error) {
	devs, err := filepath.Glob(filepath.Join(sysfs, "bus/*/devices/*/modalias"))
	if err != nil {
		return nil, err
	}
	sort.Strings(devs)
	var out []string
	for _, f := range devs {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		if s := strings.TrimSpace(string(b)); s != "" {
			out = append(out, s)
		}
	}
	return out, nil
}

// IsNetClass reports whether a PCI modalias is a network controller (PCI
// base class 0x02), read from its "bc" field.
func IsNetClass(modalias string) bool {
	i := strings.Index(modalias, "bc")
	return i >= 0 && strings.HasPrefix(modalias[i+2:], "02")
}
