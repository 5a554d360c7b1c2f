package main

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/dhcpv4/nclient4"

	"github.com/boottorrent/boottorrent/netboot/netns/nstest"
	"github.com/boottorrent/boottorrent/netboot/vm"
)

// TestDirectScript: the baseline loads the demo OS's two files from the
// server and boots them with the command line the boot client would
// kexec them with, naming the initrd for UEFI's iPXE.
func TestDirectScript(t *testing.T) {
	s := directScript("http://10.0.0.1:8080")
	want := []string{
		"#!ipxe\n",
		"kernel http://10.0.0.1:8080/demo/vmlinuz initrd=initrd.img console=ttyS0,115200 quiet " + vm.GuestArgs + "\n",
		"initrd --name initrd.img http://10.0.0.1:8080/demo/initrd.img\n",
		"boot\n",
	}
	if s != strings.Join(want, "") {
		t.Errorf("script:\n%s\nwant:\n%s", s, strings.Join(want, ""))
	}
}

// TestDirectServer runs the baseline's servers in a namespace and plays
// iPXE from another: a DHCP exchange with iPXE's user class gets a lease
// in the demo range and the script's URL, and HTTP serves the script and
// the demo OS's files byte for byte.
func TestDirectServer(t *testing.T) {
	_, hosts := nstest.LAN(t, serverPrefix.String(), "10.0.0.9/24")
	srv, machine := hosts[0], hosts[1]
	osDir := t.TempDir()
	files := map[string][]byte{demoKernel: bytes.Repeat([]byte("k"), 300<<10), demoInitrd: []byte("initrd")}
	for name, b := range files {
		if err := os.WriteFile(filepath.Join(osDir, name), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	ds, err := startDirect(srv, serverPrefix, osDir, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ds.close() })

	var c *nclient4.Client
	if err := machine.Do(func() error {
		var err error
		c, err = nclient4.New("eth0", nclient4.WithTimeout(2*time.Second), nclient4.WithRetry(3))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	lease, err := c.Request(ctx, dhcpv4.WithUserClass("iPXE", false))
	if err != nil {
		t.Fatalf("DHCP with iPXE's user class: %v", err)
	}
	first, last := dhcpRange()
	ip, _ := netip.AddrFromSlice(lease.ACK.YourIPAddr.To4())
	if ip.Less(first) || last.Less(ip) {
		t.Errorf("leased %v, want an address in %v-%v", ip, first, last)
	}
	if want := "http://10.0.0.1:8080/boot.ipxe?mac="; !strings.HasPrefix(lease.ACK.BootFileName, want) {
		t.Errorf("boot file %q, want %s…", lease.ACK.BootFileName, want)
	}

	hc := machine.HTTPClient(5 * time.Second)
	get := func(url string) []byte {
		t.Helper()
		resp, err := hc.Get(url)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if err != nil || resp.StatusCode != 200 {
			t.Fatalf("GET %s: %v %v", url, resp.Status, err)
		}
		return b
	}
	if got := string(get(lease.ACK.BootFileName)); got != directScript("http://10.0.0.1:8080") {
		t.Errorf("script served:\n%s", got)
	}
	for name, b := range files {
		if got := get("http://10.0.0.1:8080/demo/" + name); !bytes.Equal(got, b) {
			t.Errorf("%s: got %d bytes, want the file's %d", name, len(got), len(b))
		}
	}
	if err := ds.close(); err != nil {
		t.Errorf("close: %v", err)
	}
}
