package main

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/boottorrent/boottorrent/netboot/netns"
	"github.com/boottorrent/boottorrent/netboot/netns/nstest"
)

// serverLab is the set-up the tests of the real binary share: it skips
// without namespaces or a kernel for the boot client, builds the static
// binary, and makes a LAN with a server host at srvAddr and a client
// host at cliAddr (CIDR), and an empty project folder with a writer for
// its files.
func serverLab(t *testing.T, srvAddr, cliAddr string) (binary string, srv, cli *netns.NS, dir string, write func(p string, data []byte)) {
	t.Helper()
	nstest.Skip(t)
	if m, _ := filepath.Glob("/boot/vmlinuz-*"); len(m) == 0 {
		t.Skip("needs a kernel for the boot client: apt-get install linux-image-amd64")
	}
	binary = nstest.Static(t, nstest.Boottorrent)
	_, hosts := nstest.LAN(t, srvAddr, cliAddr)
	dir = t.TempDir()
	write = func(p string, data []byte) {
		t.Helper()
		os.MkdirAll(filepath.Dir(filepath.Join(dir, p)), 0o755)
		if err := os.WriteFile(filepath.Join(dir, p), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return binary, hosts[0], hosts[1], dir, write
}
