// Package initramfs builds the boot client's initramfs: the static
// boottorrent binary itself as /init (the client is a mode of the same
// binary), the NIC driver modules the client may need with their
// dependencies, modules.dep and modules.alias, packed with u-root's cpio
// writer into reproducible bytes and compressed.
package initramfs

import (
	"context"
	"errors"
	"log/slog"
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
	QEMU   bool
	Logger *slog.Logger
}

// Result describes a built (or cached) client.
type Result struct {
	Kernel    string // path of the client kernel (Options.Kernel)
	Initramfs string // path of the compressed initramfs
	Size      int64  // kernel + initramfs bytes, what every machine loads
	Cached    bool   // true when the initramfs was already up to date
}

// ErrNotBuilt is returned by Inspect when no fresh initramfs exists.
var ErrNotBuilt = errors.New("client initramfs not built for these inputs")

// Build writes the initramfs unless a fresh one exists.
func Build(ctx context.Context, o Options) (*Result, error) {
	return nil, errors.New("initramfs.Build: not implemented yet")
}

// Inspect reports the cached client's size without building; it returns
// ErrNotBuilt when the inputs changed since the last Build.
func Inspect(o Options) (*Result, error) {
	return nil, ErrNotBuilt
}
