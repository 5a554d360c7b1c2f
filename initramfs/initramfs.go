// Package initramfs builds the boot client's initramfs: the static
// boottorrent binary itself as /init (the client is a mode of the same
// binary), the NIC driver modules the client may need with their
// dependencies, modules.dep and modules.alias, packed with u-root's cpio
// writer into reproducible bytes and compressed with zstd.
//
// Why zstd: Debian's kernel decompresses gzip, xz and zstd initramfs
// images (CONFIG_RD_*). Measured on the 23 MB stripped boottorrent binary
// (the bulk of the image): xz -9 6.5 MB, zstd -19 7.1 MB, this encoder's
// best level 8.0 MB, gzip -9 8.7 MB. xz would save about 1.5 MB per
// machine on the wire (about 12 ms at 1 Gb/s), but xz inflates about six
// times slower than zstd (here, in user space: 1.7 s against 0.3 s for
// that binary; gzip 0.4 s) — a cost paid by every machine at every boot,
// and much worse on slow CPUs and under QEMU's TCG. zstd is
// written by the pure-Go klauspost/compress encoder (already linked for
// kmodule) with one encoder goroutine, so the bytes are reproducible and
// no external tool is needed at boottorrent start.
package initramfs

import (
	"bufio"
	"context"
	"crypto/sha256"
	"debug/elf"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/klauspost/compress/zstd"
	"github.com/u-root/u-root/pkg/cpio"

	"github.com/boottorrent/boottorrent/initramfs/kmod"
	"github.com/boottorrent/boottorrent/oss/manifest"
)

// Options are the builder's inputs. Build is cached on all of them.
type Options struct {
	// Kernel and Modules are the client kernel (/boot/vmlinuz-V) and its
	// module tree (/lib/modules/V): config client.kernel / client.modules.
	Kernel, Modules string
	// ExtraModules are module names packed besides the default NIC set
	// (config client.extra_modules).
	ExtraModules []string
	// Self is the static boottorrent binary packed as /init.
	Self string
	// OutDir is the project's out/ folder; the result goes to
	// OutDir/client/initramfs.
	OutDir string
	// QEMU adds qemu-system-x86_64, its libraries and firmware, for OSes
	// booted with method qemu.
	QEMU bool
	// Trust is the content of /etc/boottorrent/trust.json (policy and
	// keys for signed OSes, oss/manifest.Trust); nil leaves it out.
	Trust  []byte
	Logger *slog.Logger
}

// Result describes a built (or cached) client.
type Result struct {
	Kernel    string // path of the client kernel (Options.Kernel)
	Initramfs string // path of the compressed initramfs
	Size      int64  // kernel + initramfs bytes, what every machine loads
	Cached    bool   // true when the initramfs was already up to date
}

// DefaultModules are the NIC drivers packed by default: QEMU's virtio and
// e1000, Intel's gigabit and 10G families, Realtek, Broadcom and a few
// other common wired chips. Server NICs (i40e, bnxt_en, mlx5_core) and
// drivers that need firmware files (bnx2, bnx2x) are left to
// client.extra_modules: they are large, and Debian ships the
// firmware separately.
var DefaultModules = []string{
	"virtio_pci", "virtio_net",
	"e1000", "e1000e", "igb", "igc", "ixgbe",
	"r8169", "8139too", "8139cp",
	"tg3", "b44",
	"atl1c", "alx", "sky2", "forcedeth", "vmxnet3", "pcnet32", "ne2k_pci",
}

// ErrNotBuilt is returned by Inspect when no fresh initramfs exists.
var ErrNotBuilt = errors.New("client initramfs not built for these inputs")

// ErrNotStatic is returned when Self is a dynamically linked program: as
// /init there is no dynamic loader or libc in the initramfs.
var ErrNotStatic = errors.New("not a static binary")

// formatVersion changes whenever the layout changes, so old caches are
// rebuilt.
const formatVersion = "boottorrent-initramfs-1"

// Paths of the output inside OutDir.
const (
	dirName   = "client"
	imageName = "initramfs"
	keyName   = "initramfs.json"
)

// trustFile is where the client reads its trust settings.
var trustFile = strings.TrimPrefix(manifest.TrustPath, "/")

// stamp is the cache record written next to the image.
type stamp struct {
	Key     string   `json:"key"`
	Size    int64    `json:"size"`
	CPIO    int64    `json:"cpio_bytes"`
	Init    int64    `json:"init_bytes"`
	Modules []string `json:"modules"`
	QEMU    bool     `json:"qemu"`
}

// plan is what goes into the image, and the cache key of all of it.
type plan struct {
	release string   // module tree's kernel release (basename of Modules)
	modules []string // relative paths in the tree
	files   []hostFile
	trust   []byte
	key     string
}

// hostFile is a file copied from the host into the image.
type hostFile struct {
	src, dst string
	mode     uint64
}

func (o *Options) logger() *slog.Logger {
	if o.Logger != nil {
		return o.Logger
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// Build writes OutDir/client/initramfs unless a fresh one exists.
func Build(ctx context.Context, o Options) (*Result, error) {
	log := o.logger()
	t0 := time.Now()
	p, err := makePlan(o)
	if err != nil {
		return nil, err
	}
	dir := filepath.Join(o.OutDir, dirName)
	img := filepath.Join(dir, imageName)
	if r, err := fresh(o, p, img); err == nil {
		log.Info("client initramfs up to date", "stage", "client", "path", img, "bytes", r.Size-fileSize(o.Kernel))
		return r, nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	tmp, err := os.CreateTemp(dir, ".initramfs-*")
	if err != nil {
		return nil, err
	}
	defer os.Remove(tmp.Name())
	st, err := write(ctx, tmp, p)
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return nil, fmt.Errorf("write client initramfs: %w", err)
	}
	if err := os.Rename(tmp.Name(), img); err != nil {
		return nil, err
	}
	st.Key, st.QEMU = p.key, o.QEMU
	st.Size = fileSize(img)
	js, _ := json.MarshalIndent(st, "", "  ")
	if err := os.WriteFile(filepath.Join(dir, keyName), append(js, '\n'), 0o644); err != nil {
		return nil, err
	}
	log.Info("client initramfs built", "stage", "client", "path", img, "bytes", st.Size, "cpio_bytes", st.CPIO,
		"init_bytes", st.Init, "modules", len(p.modules), "qemu", o.QEMU, "duration", time.Since(t0).Round(time.Millisecond))
	return &Result{Kernel: o.Kernel, Initramfs: img, Size: st.Size + fileSize(o.Kernel)}, nil
}

// Inspect reports the cached client's size without building; it returns
// ErrNotBuilt when the inputs changed since the last Build. A client
// built with QEMU counts as fresh for a caller that does not know
// whether some OS uses method qemu (boottorrent check).
func Inspect(o Options) (*Result, error) {
	p, err := makePlan(o)
	if err != nil {
		return nil, err
	}
	img := filepath.Join(o.OutDir, dirName, imageName)
	r, err := fresh(o, p, img)
	if err != nil && !o.QEMU {
		o.QEMU = true
		if p2, err2 := makePlan(o); err2 == nil {
			if r2, err2 := fresh(o, p2, img); err2 == nil {
				return r2, nil
			}
		}
	}
	return r, err
}

func fresh(o Options, p *plan, img string) (*Result, error) {
	b, err := os.ReadFile(filepath.Join(filepath.Dir(img), keyName))
	if err != nil {
		return nil, ErrNotBuilt
	}
	var st stamp
	if json.Unmarshal(b, &st) != nil || st.Key != p.key || fileSize(img) != st.Size || st.Size == 0 {
		return nil, ErrNotBuilt
	}
	return &Result{Kernel: o.Kernel, Initramfs: img, Size: st.Size + fileSize(o.Kernel), Cached: true}, nil
}

func fileSize(p string) int64 {
	fi, err := os.Stat(p)
	if err != nil {
		return 0
	}
	return fi.Size()
}

// CheckStatic refuses a binary that needs a dynamic loader.
func CheckStatic(p string) error {
	f, err := elf.Open(p)
	if err != nil {
		return fmt.Errorf("%s: %w", p, err)
	}
	defer f.Close()
	if f.Machine != elf.EM_X86_64 {
		return fmt.Errorf("%s is built for %v; the client runs on x86-64 machines", p, f.Machine)
	}
	for _, prog := range f.Progs {
		if prog.Type == elf.PT_INTERP {
			return fmt.Errorf("%s: %w (it needs a dynamic loader and libc, which the initramfs does not have): build boottorrent with CGO_ENABLED=0", p, ErrNotStatic)
		}
	}
	if libs, _ := f.ImportedLibraries(); len(libs) > 0 {
		return fmt.Errorf("%s: %w (needs %s): build boottorrent with CGO_ENABLED=0", p, ErrNotStatic, strings.Join(libs, ", "))
	}
	return nil
}

func makePlan(o Options) (*plan, error) {
	if o.Self == "" || o.OutDir == "" || o.Kernel == "" || o.Modules == "" {
		return nil, errors.New("initramfs: Self, OutDir, Kernel and Modules are required")
	}
	if fi, err := os.Stat(o.Kernel); err != nil || !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("client kernel %s: not a readable file (set client.kernel, or apt-get install linux-image-amd64)", o.Kernel)
	}
	if err := CheckStatic(o.Self); err != nil {
		return nil, err
	}
	depf, err := os.Open(filepath.Join(o.Modules, "modules.dep"))
	if err != nil {
		return nil, fmt.Errorf("client modules %s: %w (set client.modules to the /lib/modules/VERSION of client.kernel; run depmod if modules.dep is missing)", o.Modules, err)
	}
	deps, err := kmod.ParseDeps(depf)
	depf.Close()
	if err != nil {
		return nil, err
	}
	builtin := readBuiltin(filepath.Join(o.Modules, "modules.builtin"))
	paths, missing := deps.Closure(append(append([]string{}, DefaultModules...), o.ExtraModules...))
	extra := map[string]bool{}
	for _, m := range o.ExtraModules {
		extra[kmod.Name(m)] = true
	}
	for _, m := range missing {
		if extra[kmod.Name(m)] && !builtin[kmod.Name(m)] {
			return nil, fmt.Errorf("client.extra_modules: %q is not a module of %s (nor built into the kernel); check the name with: modinfo -k %s %s", m, o.Modules, filepath.Base(o.Modules), m)
		}
	}
	p := &plan{release: filepath.Base(filepath.Clean(o.Modules)), modules: paths, trust: o.Trust}
	p.files = append(p.files, hostFile{src: o.Self, dst: "init", mode: 0o755})
	for _, m := range paths {
		p.files = append(p.files, hostFile{src: filepath.Join(o.Modules, m), dst: path.Join("lib/modules", p.release, m), mode: 0o644})
	}
	if o.QEMU {
		qf, err := qemuFiles()
		if err != nil {
			return nil, err
		}
		p.files = append(p.files, qf...)
	}
	sort.Slice(p.files, func(i, j int) bool { return p.files[i].dst < p.files[j].dst })

	// The key covers every byte that goes into the image: the binary and
	// each file by content, the module list, and the format.
	h := sha256.New()
	fmt.Fprintf(h, "%s\n%s\nqemu=%v\n", formatVersion, p.release, o.QEMU)
	if o.Trust != nil {
		fmt.Fprintf(h, "trust %x\n", sha256.Sum256(o.Trust))
	}
	for _, f := range p.files {
		fh, err := hashFile(f.src)
		if err != nil {
			return nil, err
		}
		fmt.Fprintf(h, "%s %o %s\n", f.dst, f.mode, fh)
	}
	for _, n := range []string{"modules.dep", "modules.alias", "modules.builtin"} {
		fh, _ := hashFile(filepath.Join(o.Modules, n))
		fmt.Fprintf(h, "%s %s\n", n, fh)
	}
	p.key = hex.EncodeToString(h.Sum(nil))
	return p, nil
}

func hashFile(p string) (string, error) {
	f, err := os.Open(p)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", fmt.Errorf("read %s: %w", p, err)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

func readBuiltin(p string) map[string]bool {
	m := map[string]bool{}
	b, err := os.ReadFile(p)
	if err != nil {
		return m
	}
	for _, l := range strings.Fields(string(b)) {
		m[kmod.Name(l)] = true
	}
	return m
}

// write packs the plan: newc cpio, zstd.
func write(ctx context.Context, out io.Writer, p *plan) (*stamp, error) {
	st := &stamp{}
	enc, err := zstd.NewWriter(out, zstd.WithEncoderLevel(zstd.SpeedBestCompression), zstd.WithEncoderConcurrency(1),
		zstd.WithEncoderCRC(true), zstd.WithWindowSize(8<<20))
	if err != nil {
		return nil, err
	}
	cw := &countWriter{w: bufio.NewWriterSize(enc, 1<<20)}
	w := cpio.Newc.Writer(cw)
	recs := []cpio.Record{
		cpio.Directory("dev", 0o755),
		cpio.CharDev("dev/console", 0o600, 5, 1),
		cpio.CharDev("dev/null", 0o666, 1, 3),
		cpio.Directory("proc", 0o555),
		cpio.Directory("sys", 0o555),
		cpio.Directory("tmp", 0o1777),
		cpio.Directory("run", 0o755),
		cpio.Directory("etc", 0o755),
		cpio.StaticFile("etc/os-release", "NAME=boottorrent-client\nID=boottorrent\n", 0o644),
	}
	if p.trust != nil {
		recs = append(recs, cpio.Directory(path.Dir(trustFile), 0o755), cpio.StaticFile(trustFile, string(p.trust), 0o644))
	}
	for _, f := range p.files {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		b, err := os.ReadFile(f.src)
		if err != nil {
			return nil, err
		}
		if f.dst == "init" {
			st.Init = int64(len(b))
		}
		recs = append(recs, cpio.StaticRecord(b, cpio.Info{Name: f.dst, Mode: cpio.S_IFREG | f.mode}))
	}
	// The module indexes, cut to the packed modules: the client matches
	// only drivers it has, and loads with u-root's kmodule from
	// modules.dep.
	dep, alias, err := indexes(p)
	if err != nil {
		return nil, err
	}
	mdir := path.Join("lib/modules", p.release)
	recs = append(recs,
		cpio.StaticFile(path.Join(mdir, "modules.dep"), dep, 0o644),
		cpio.StaticFile(path.Join(mdir, "modules.alias"), alias, 0o644),
	)
	sort.SliceStable(recs, func(i, j int) bool { return recs[i].Name < recs[j].Name })
	for i := range recs {
		recs[i] = cpio.MakeReproducible(recs[i])
	}
	if err := cpio.WriteRecordsAndDirs(w, recs); err != nil {
		return nil, err
	}
	if err := cpio.WriteTrailer(w); err != nil {
		return nil, err
	}
	if err := cw.w.(*bufio.Writer).Flush(); err != nil {
		return nil, err
	}
	if err := enc.Close(); err != nil {
		return nil, err
	}
	st.CPIO = cw.n
	for _, m := range p.modules {
		st.Modules = append(st.Modules, kmod.Name(m))
	}
	return st, nil
}

// indexes cuts modules.dep and modules.alias to the packed modules.
func indexes(p *plan) (dep, alias string, err error) {
	var modsDir string
	for _, f := range p.files {
		if strings.HasPrefix(f.dst, "lib/modules/") {
			modsDir = strings.TrimSuffix(f.src, strings.TrimPrefix(f.dst, path.Join("lib/modules", p.release)+"/"))
			break
		}
	}
	if modsDir == "" {
		return "", "", nil
	}
	packed := map[string]bool{}
	names := map[string]bool{}
	for _, m := range p.modules {
		packed[m] = true
		names[kmod.Name(m)] = true
	}
	df, err := os.Open(filepath.Join(modsDir, "modules.dep"))
	if err != nil {
		return "", "", err
	}
	deps, err := kmod.ParseDeps(df)
	df.Close()
	if err != nil {
		return "", "", err
	}
	var db strings.Builder
	for _, m := range p.modules {
		fmt.Fprintf(&db, "%s:", m)
		for _, d := range deps[m] {
			if packed[d] {
				fmt.Fprintf(&db, " %s", d)
			}
		}
		db.WriteString("\n")
	}
	af, err := os.Open(filepath.Join(modsDir, "modules.alias"))
	if err != nil {
		return "", "", err
	}
	defer af.Close()
	aliases, _, err := kmod.ParseAliases(af)
	if err != nil {
		return "", "", err
	}
	var ab strings.Builder
	for _, a := range aliases {
		if names[a.Module] {
			fmt.Fprintf(&ab, "alias %s %s\n", a.Pattern, a.Module)
		}
	}
	return db.String(), ab.String(), nil
}

type countWriter struct {
	w io.Writer
	n int64
}

func (c *countWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

// qemuFiles lists qemu-system-x86_64, the libraries ldd finds for it, and
// QEMU's firmware folder (SeaBIOS, option ROMs), copied from the server.
func qemuFiles() ([]hostFile, error) {
	bin, err := exec.LookPath("qemu-system-x86_64")
	if err != nil {
		return nil, errors.New("an OS uses method qemu but qemu-system-x86_64 is not installed on the server: apt-get install qemu-system-x86")
	}
	out, err := exec.Command("ldd", bin).Output()
	if err != nil {
		return nil, fmt.Errorf("ldd %s: %w", bin, err)
	}
	files := []hostFile{{src: bin, dst: "usr/bin/qemu-system-x86_64", mode: 0o755}}
	seen := map[string]bool{}
	for _, l := range strings.Split(string(out), "\n") {
		// "libz.so.1 => /lib/x86_64-linux-gnu/libz.so.1 (0x…)" or
		// "/lib64/ld-linux-x86-64.so.2 (0x…)"
		var lib string
		if _, rest, ok := strings.Cut(l, "=> "); ok {
			lib = strings.Fields(rest)[0]
		} else if f := strings.Fields(l); len(f) > 0 && strings.HasPrefix(f[0], "/") {
			lib = f[0]
		}
		if lib == "" || !strings.HasPrefix(lib, "/") || seen[lib] {
			continue
		}
		seen[lib] = true
		real, err := filepath.EvalSymlinks(lib)
		if err != nil {
			return nil, err
		}
		files = append(files, hostFile{src: real, dst: strings.TrimPrefix(lib, "/"), mode: 0o755})
	}
	for _, dir := range []string{"/usr/share/qemu", "/usr/share/seabios", "/usr/lib/ipxe/qemu"} {
		filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
			if err != nil || d.IsDir() {
				return nil
			}
			real, err := filepath.EvalSymlinks(p)
			if err != nil {
				return nil
			}
			if fi, err := os.Stat(real); err == nil && fi.Mode().IsRegular() {
				files = append(files, hostFile{src: real, dst: strings.TrimPrefix(p, "/"), mode: 0o644})
			}
			return nil
		})
	}
	return dedup(files), nil
}

func dedup(fs []hostFile) []hostFile {
	seen := map[string]bool{}
	var out []hostFile
	for _, f := range fs {
		if !seen[f.dst] {
			seen[f.dst] = true
			out = append(out, f)
		}
	}
	return out
}
