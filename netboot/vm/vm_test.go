package vm

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/boottorrent/boottorrent/netboot/netns/nstest"
)

func TestMain(m *testing.M) { nstest.Main(m) }

// TestDirectBoot boots the test OS with QEMU's -kernel (no network boot):
// the harness captures the console, finds the marker, types on the
// serial console, and sees QEMU exit when the guest powers off.
func TestDirectBoot(t *testing.T) {
	if err := Available(BIOS); err != nil {
		t.Skip(err)
	}
	if err := TestOSAvailable(); err != nil {
		t.Skip(err)
	}
	tos, err := BuildTestOS(t.TempDir(), "DIRECT-BOOT-OK-4711")
	if err != nil {
		t.Fatal(err)
	}
	lan, _ := nstest.LAN(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	v, err := Start(ctx, Config{LAN: lan, Firmware: BIOS, Dir: t.TempDir(), ExtraArgs: []string{
		"-kernel", tos.Kernel, "-initrd", tos.Initramfs, "-append", "console=ttyS0,115200 quiet " + GuestArgs + " " + EchoArg}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { v.Close() })
	d, err := v.WaitFor(ctx, tos.Marker)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("marker after %v", d.Round(time.Millisecond))
	if !strings.Contains(v.Output(), CmdlinePrefix+"console=ttyS0,115200 quiet "+GuestArgs+" "+EchoArg) {
		t.Errorf("cmdline line missing:\n%s", v.Tail(2000))
	}
	if err := v.SendKeys("hello vm\r"); err != nil {
		t.Fatal(err)
	}
	if _, err := v.WaitFor(ctx, EchoPrefix+"hello vm"); err != nil {
		t.Fatal(err)
	}
	if err := v.Wait(ctx); err != nil {
		t.Errorf("QEMU exit after poweroff: %v", err)
	}
	if b, err := os.ReadFile(v.LogFile()); err != nil || !strings.Contains(string(b), tos.Marker) {
		t.Errorf("serial log file: %v", err)
	}
}

func TestBuildTestOSReproducible(t *testing.T) {
	if err := TestOSAvailable(); err != nil {
		t.Skip(err)
	}
	a, err := BuildTestOS(t.TempDir(), "M1")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := BuildTestOS(t.TempDir(), "M1")
	x, _ := os.ReadFile(a.Initramfs)
	y, _ := os.ReadFile(b.Initramfs)
	if len(x) < 1000 || string(x) != string(y) {
		t.Errorf("initramfs not reproducible: %d vs %d bytes", len(x), len(y))
	}
	if _, err := BuildTestOS(t.TempDir(), "bad'marker"); err == nil {
		t.Error("quote in marker accepted")
	}
}
