package netboot

import (
	"context"
	"crypto/rand"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/boottorrent/boottorrent/netboot/dhcp"
	"github.com/boottorrent/boottorrent/netboot/netns/nstest"
)

// BenchmarkTFTPOverLAN measures what atftp, on another host of a virtual
// LAN (veth + bridge, MTU 1500), gets from the server started as
// `boottorrent start` starts it: 32 MiB, blksize 512 (RFC 1350 clients)
// and 1468 (what iPXE and EDK II negotiate on Ethernet).
func BenchmarkTFTPOverLAN(b *testing.B) {
	nstest.Skip(b)
	if _, err := exec.LookPath("atftp"); err != nil {
		b.Skip("needs atftp: apt-get install atftp")
	}
	_, hosts := nstest.LAN(b, "10.79.0.1/24", "10.79.0.2/24")
	srvNS, cliNS := hosts[0], hosts[1]
	dir := b.TempDir()
	big := make([]byte, 32<<20)
	rand.Read(big)
	os.WriteFile(filepath.Join(dir, "big.bin"), big, 0o644)
	o := labOptions("eth0", "10.79.0.1/24")
	o.DHCP.Mode = dhcp.ModeOff
	o.IPXE = IPXE{Dir: dir, BIOS: "big.bin", UEFI: "big.bin"}
	s, err := New(o)
	if err != nil {
		b.Fatal(err)
	}
	if err := srvNS.Do(func() error { return s.Start(context.Background()) }); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { s.Close() })
	out := filepath.Join(b.TempDir(), "o")
	for _, bs := range []int{512, 1468} {
		b.Run(fmt.Sprintf("blksize=%d", bs), func(b *testing.B) {
			b.SetBytes(int64(len(big)))
			for range b.N {
				if msg, err := cliNS.Run("atftp", "-g", "-r", "big.bin", "-l", out, "--option", fmt.Sprintf("blksize %d", bs), "10.79.0.1"); err != nil {
					b.Fatalf("%v %s", err, msg)
				}
			}
			if fi, err := os.Stat(out); err != nil || fi.Size() != int64(len(big)) {
				b.Fatalf("short transfer: %v", err)
			}
		})
	}
}
