package oss

import "github.com/boottorrent/boottorrent/oss/manifest"

// ManifestBoot is what a signed manifest says about how o boots; the
// client compares it with the boot API's entry.
func (o *OS) ManifestBoot() manifest.Boot {
	return manifest.Boot{Method: string(o.Method), Kernel: o.Kernel, Initrd: o.Initrd, Cmdline: o.Cmdline,
		Bin: o.Bin, BinArgs: o.BinArgs, Args: o.Args}
}

// isManifestFile reports whether a path of the OS folder is its signed
// manifest, which describes the torrent and so is never one of its files.
func isManifestFile(p string) bool { return p == manifest.FileName || p == manifest.SigName }
