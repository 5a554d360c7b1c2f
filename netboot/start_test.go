package netboot

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/boottorrent/boottorrent/initramfs/bootapi"
	"github.com/boottorrent/boottorrent/netboot/netns/nstest"
)

// TestStartInNamespace starts the server in a namespace (proxy DHCP + TFTP
// + the HTTP handler) and talks to it from another host on the LAN with
// real clients: atftp fetches the BIOS iPXE binary, busybox wget the boot
// script and the client kernel. A second server on the same host must
// refuse to start instead of sharing the ports.
func TestStartInNamespace(t *testing.T) {
	nstest.Skip(t)
	for _, tool := range [][2]string{{"atftp", "atftp"}, {"busybox", "busybox-static"}} {
		if _, err := exec.LookPath(tool[0]); err != nil {
			t.Skipf("needs %s: apt-get install %s", tool[0], tool[1])
		}
	}
	if _, err := os.Stat("/usr/lib/ipxe/undionly.kpxe"); err != nil {
		t.Skip("needs /usr/lib/ipxe: apt-get install ipxe")
	}
	_, hosts := nstest.LAN(t, "10.78.0.1/24", "10.78.0.20/24")
	srvNS, cliNS := hosts[0], hosts[1]
	o := labOptions("eth0", "10.78.0.1/24")
	dir := t.TempDir()
	kernel := filepath.Join(dir, "vmlinuz")
	os.WriteFile(kernel, []byte(strings.Repeat("kernel!", 5000)), 0o644)
	logs := &nstest.Buffer{}
	mk := func() *Server {
		o := o
		o.ClientKernel, o.ClientInitramfs = kernel, kernel
		o.Logger = slog.New(slog.NewTextHandler(logs, nil))
		s, err := New(o)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	srv := mk()
	t.Cleanup(func() {
		srv.Close()
		if t.Failed() {
			t.Logf("server log:\n%s", logs)
		}
	})
	var hs *http.Server
	if err := srvNS.Do(func() error {
		if err := srv.Start(context.Background()); err != nil {
			return err
		}
		ln, err := net.Listen("tcp4", "10.78.0.1:8080")
		if err != nil {
			return err
		}
		hs = &http.Server{Handler: srv.Handler()}
		go hs.Serve(ln)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { hs.Close() })

	out := filepath.Join(t.TempDir(), "undionly.kpxe")
	if msg, err := cliNS.Run("atftp", "-g", "-r", "undionly.kpxe", "-l", out, "--option", "blksize 1468", "10.78.0.1"); err != nil {
		t.Fatalf("atftp: %v %s", err, msg)
	}
	want, _ := os.ReadFile("/usr/lib/ipxe/undionly.kpxe")
	if got, _ := os.ReadFile(out); string(got) != string(want) {
		t.Errorf("atftp got %d bytes, want %d", len(got), len(want))
	}
	if _, err := cliNS.Run("atftp", "-g", "-r", "../../etc/passwd", "-l", out+".x", "10.78.0.1"); err == nil {
		t.Error("../../etc/passwd served")
	}
	script, err := cliNS.Run("busybox", "wget", "-q", "-O", "-", "http://10.78.0.1:8080/boot.ipxe")
	if err != nil || !strings.HasPrefix(string(script), "#!ipxe") {
		t.Fatalf("boot script: %v %s", err, script)
	}
	// No mac in the query: the server named the machine from its ARP
	// table, and the TFTP transfer before it too.
	cliMAC := strings.TrimSpace(string(must(cliNS.Run("cat", "/sys/class/net/eth0/address"))))
	if !strings.Contains(string(script), "boottorrent.mac="+cliMAC+" ") {
		t.Errorf("script does not carry the client's MAC %s:\n%s", cliMAC, script)
	}
	kout := filepath.Join(t.TempDir(), "k")
	if _, err := cliNS.Run("busybox", "wget", "-q", "-O", kout, "http://10.78.0.1:8080"+bootapi.PathClientKernel); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(kout); err != nil || fi.Size() != 35000 {
		t.Errorf("kernel download: %v", err)
	}
	ms := srv.Machines()
	if len(ms) != 1 || ms[0].MAC != cliMAC || ms[0].IP != "10.78.0.20" {
		t.Fatalf("machines = %+v", ms)
	}
	if !strings.Contains(logs.String(), "mac="+cliMAC+" file=undionly.kpxe bytes=") {
		t.Errorf("tftp log line without the client's MAC:\n%s", logs)
	}
	for _, st := range []string{bootapi.StageTFTP, bootapi.StageIPXE} {
		if _, ok := ms[0].Stages[st]; !ok {
			t.Errorf("no %s stage: %+v", st, ms[0])
		}
	}

	// A second boottorrent on the same host.
	second := mk()
	defer second.Close()
	err = srvNS.Do(func() error { return second.Start(context.Background()) })
	if !errors.Is(err, ErrPortInUse) {
		t.Errorf("second server: %v, want ErrPortInUse", err)
	}
	t.Logf("second server: %v", err)
	// Without TFTP, the DHCP ports are the ones taken.
	o2 := o
	o2.TFTP = false
	third, err := New(o2)
	if err != nil {
		t.Fatal(err)
	}
	defer third.Close()
	err = srvNS.Do(func() error { return third.Start(context.Background()) })
	if !errors.Is(err, ErrPortInUse) || !strings.Contains(err.Error(), "67") {
		t.Errorf("third server: %v, want ErrPortInUse on 67", err)
	}
}

func must(b []byte, err error) []byte {
	if err != nil {
		panic(err)
	}
	return b
}

func TestStartErrors(t *testing.T) {
	s, err := New(labOptions("bt-no-such-if0", "10.78.0.1/24"))
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(context.Background()); !errors.Is(err, ErrNoInterface) || !strings.Contains(err.Error(), "bt-no-such-if0") {
		t.Errorf("missing interface: %v", err)
	}
	if err := ListenError("udp", 69, "TFTP", fmt.Errorf("listen: %w", syscall.EACCES)); !errors.Is(err, ErrPermission) ||
		!strings.Contains(err.Error(), "CAP_NET_BIND_SERVICE") {
		t.Errorf("EACCES: %v", err)
	}
	if _, err := New(Options{}); err == nil {
		t.Error("New without an address")
	}
}
