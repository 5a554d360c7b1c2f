package tftpd

import (
	"bytes"
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/boottorrent/boottorrent/netboot/netns/nstest"
)

// fixture is a folder like /usr/lib/ipxe: a regular file, a symlink to a
// file elsewhere (Debian's ipxe.efi -> /boot/ipxe.efi) and a file that is
// not served.
type fixture struct {
	dir     string
	bios    []byte
	uefi    []byte
	secret  string
	mu      sync.Mutex
	done    []Transfer
	srv     *Server
	addr    *net.UDPAddr
	logsBuf *nstest.Buffer
}

func newFixture(t testing.TB, anticipate uint, extra map[string][]byte) *fixture {
	t.Helper()
	f := &fixture{dir: t.TempDir(), logsBuf: &nstest.Buffer{}}
	other := t.TempDir()
	f.bios = randBytes(74213)
	f.uefi = randBytes(850528)
	os.WriteFile(filepath.Join(f.dir, "undionly.kpxe"), f.bios, 0o644)
	os.WriteFile(filepath.Join(other, "ipxe.efi"), f.uefi, 0o644)
	os.Symlink(filepath.Join(other, "ipxe.efi"), filepath.Join(f.dir, "ipxe.efi"))
	f.secret = "SECRET-" + rand.Text()
	os.WriteFile(filepath.Join(f.dir, "other.bin"), []byte(f.secret), 0o644)
	os.WriteFile(filepath.Join(filepath.Dir(f.dir), "outside.txt"), []byte(f.secret), 0o644)
	files := []string{"undionly.kpxe", "ipxe.efi"}
	for name, data := range extra {
		os.WriteFile(filepath.Join(f.dir, name), data, 0o644)
		files = append(files, name)
	}
	f.srv, f.addr = serveLoopback(t, Options{Dir: f.dir, Files: files, Anticipate: anticipate,
		Logger: slog.New(slog.NewTextHandler(f.logsBuf, &slog.HandlerOptions{Level: slog.LevelDebug})),
		OnTransfer: func(tr Transfer) {
			f.mu.Lock()
			f.done = append(f.done, tr)
			f.mu.Unlock()
		}})
	return f
}

// serveLoopback starts a server with o on a port of 127.0.0.1, closed
// when the test ends.
func serveLoopback(t testing.TB, o Options) (*Server, *net.UDPAddr) {
	t.Helper()
	srv, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	conn, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(conn)
	t.Cleanup(func() { srv.Close() })
	return srv, conn.LocalAddr().(*net.UDPAddr)
}

// wait waits until n transfers were reported.
func (f *fixture) wait(t testing.TB, n int) {
	deadline := time.Now().Add(10 * time.Second)
	for {
		f.mu.Lock()
		got := len(f.done)
		f.mu.Unlock()
		if got >= n || time.Now().After(deadline) {
			return
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func randBytes(n int) []byte {
	b := make([]byte, n)
	rand.Read(b)
	return b
}

func needTool(t testing.TB, name, pkg string) {
	if _, err := exec.LookPath(name); err != nil {
		t.Skipf("needs %s: apt-get install %s", name, pkg)
	}
}

// atftpGet fetches name with the real atftp client.
func atftpGet(t testing.TB, addr *net.UDPAddr, name, out string, opts ...string) ([]byte, error) {
	args := []string{"-g", "-r", name, "-l", out}
	for _, o := range opts {
		args = append(args, "--option", o)
	}
	args = append(args, addr.IP.String(), fmt.Sprint(addr.Port))
	cmd := exec.Command("atftp", args...)
	msg, err := cmd.CombinedOutput()
	if err != nil {
		return msg, fmt.Errorf("atftp %v: %v: %s", args, err, msg)
	}
	return msg, nil
}

func TestRealClientsFetchBootFiles(t *testing.T) {
	needTool(t, "atftp", "atftp")
	needTool(t, "tftp", "tftp-hpa")
	f := newFixture(t, DefaultAnticipate, nil)
	tmp := t.TempDir()
	for _, tc := range []struct {
		name string
		want []byte
		opts []string
	}{
		{"undionly.kpxe", f.bios, nil},
		{"undionly.kpxe", f.bios, []string{"blksize 1428", "tsize 0"}},
		{"ipxe.efi", f.uefi, []string{"blksize 1468"}},
		{"ipxe.efi", f.uefi, []string{"blksize 512"}},
	} {
		out := filepath.Join(tmp, "out")
		os.Remove(out)
		if _, err := atftpGet(t, f.addr, tc.name, out, tc.opts...); err != nil {
			t.Fatal(err)
		}
		got, _ := os.ReadFile(out)
		if !bytes.Equal(got, tc.want) {
			t.Errorf("atftp %s %v: got %d bytes, want %d identical", tc.name, tc.opts, len(got), len(tc.want))
		}
	}
	// tftp-hpa, plain RFC 1350 (512-byte blocks, no options).
	out := filepath.Join(tmp, "hpa")
	cmd := exec.Command("tftp", "-m", "binary", f.addr.IP.String(), fmt.Sprint(f.addr.Port), "-c", "get", "ipxe.efi", out)
	if msg, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("tftp-hpa: %v: %s", err, msg)
	}
	if got, _ := os.ReadFile(out); !bytes.Equal(got, f.uefi) {
		t.Errorf("tftp-hpa got %d bytes", len(got))
	}
	// The client may finish before the server's handler returns.
	f.wait(t, 5)
	f.mu.Lock()
	n := len(f.done)
	var ok int
	for _, tr := range f.done {
		if tr.Err == nil && tr.Bytes > 0 && tr.Remote.Addr().String() == "127.0.0.1" {
			ok++
		}
	}
	f.mu.Unlock()
	if n != 5 || ok != 5 {
		t.Errorf("OnTransfer saw %d transfers, %d good; want 5", n, ok)
	}
}

func TestRefusesEverythingElse(t *testing.T) {
	needTool(t, "atftp", "atftp")
	f := newFixture(t, DefaultAnticipate, nil)
	tmp := t.TempDir()
	for _, name := range []string{
		"../outside.txt", "/etc/passwd", "other.bin", "../../../../../../etc/passwd",
		"/" + filepath.Join(f.dir, "undionly.kpxe"), "./undionly.kpxe", "UNDIONLY.KPXE", `..\outside.txt`, "",
	} {
		out := filepath.Join(tmp, "out")
		os.Remove(out)
		msg, err := atftpGet(t, f.addr, name, out)
		if err == nil {
			t.Errorf("%q was served", name)
			continue
		}
		got, _ := os.ReadFile(out)
		if bytes.Contains(got, []byte(f.secret)) || bytes.Contains(got, []byte("root:")) {
			t.Errorf("%q leaked content", name)
		}
		if bytes.Contains(msg, []byte(f.dir)) || bytes.Contains(msg, []byte("/etc")) && !strings.Contains(name, "/etc") {
			t.Errorf("%q: error names a path: %s", name, msg)
		}
	}
	// Nine refusals within 5 s make one log line, not nine.
	f.wait(t, 9)
	if n := strings.Count(f.logsBuf.String(), "not a served file"); n != 1 {
		t.Errorf("%d log lines for 9 refused requests", n)
	}
	// Writes are refused.
	src := filepath.Join(tmp, "up")
	os.WriteFile(src, []byte("x"), 0o644)
	cmd := exec.Command("atftp", "-p", "-l", src, "-r", "undionly.kpxe", f.addr.IP.String(), fmt.Sprint(f.addr.Port))
	if err := cmd.Run(); err == nil {
		t.Error("write request accepted")
	}
	if got, _ := os.ReadFile(filepath.Join(f.dir, "undionly.kpxe")); !bytes.Equal(got, f.bios) {
		t.Error("served file changed")
	}
}

func TestBusy(t *testing.T) {
	needTool(t, "atftp", "atftp")
	f := newFixture(t, DefaultAnticipate, nil)
	for range cap(f.srv.sem) {
		f.srv.sem <- struct{}{}
	}
	msg, err := atftpGet(t, f.addr, "undionly.kpxe", filepath.Join(t.TempDir(), "o"))
	if err == nil || !bytes.Contains(msg, []byte("busy")) {
		t.Errorf("full server: err %v, %s", err, msg)
	}
	<-f.srv.sem
	if _, err := atftpGet(t, f.addr, "undionly.kpxe", filepath.Join(t.TempDir(), "o")); err != nil {
		t.Errorf("after a slot freed: %v", err)
	}
}

// TestSizeQuery plays EDK II: RRQ with tsize=0 and blksize, read the
// OACK, answer with an ERROR (it only wanted the size), then fetch for
// real. The first is not a failure.
func TestSizeQuery(t *testing.T) {
	f := newFixture(t, DefaultAnticipate, nil)
	c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	rrq := []byte{0, 1}
	for _, s := range []string{"ipxe.efi", "octet", "tsize", "0", "blksize", "1468"} {
		rrq = append(append(rrq, s...), 0)
	}
	c.WriteTo(rrq, f.addr)
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 2048)
	n, from, err := c.ReadFrom(buf)
	if err != nil {
		t.Fatal(err)
	}
	if binary.BigEndian.Uint16(buf) != 6 || !bytes.Contains(buf[:n], []byte(fmt.Sprintf("tsize\x00%d\x00", len(f.uefi)))) {
		t.Fatalf("want OACK with tsize %d, got %q", len(f.uefi), buf[:n])
	}
	c.WriteTo(append([]byte{0, 5, 0, 8}, "tsize only\x00"...), from)
	f.wait(t, 1)
	f.mu.Lock()
	if len(f.done) != 1 || !f.done[0].SizeQuery || f.done[0].Err != nil {
		t.Errorf("size query reported as %+v", f.done)
	}
	f.mu.Unlock()
	if strings.Contains(f.logsBuf.String(), "level=WARN") || strings.Contains(f.logsBuf.String(), "level=ERROR") {
		t.Errorf("size query logged as a problem:\n%s", f.logsBuf)
	}
}

func TestNewChecksFiles(t *testing.T) {
	dir := t.TempDir()
	for _, files := range [][]string{{"missing.efi"}, {"../x"}, {"/etc/passwd"}, {"."}} {
		if s, err := New(Options{Dir: dir, Files: files}); err == nil {
			s.Close()
			t.Errorf("%v accepted", files)
		}
	}
}

// BenchmarkAtftp measures what a real client (atftp) gets from the server
// on loopback, per send window and block size: MB/s of payload.
func BenchmarkAtftp(b *testing.B) {
	needTool(b, "atftp", "atftp")
	big := randBytes(32 << 20)
	for _, win := range []uint{1, 16, 32} {
		for _, bs := range []int{512, 1468} {
			b.Run(fmt.Sprintf("window=%d/blksize=%d", win, bs), func(b *testing.B) {
				f := newFixture(b, win, map[string][]byte{"big.bin": big})
				out := filepath.Join(b.TempDir(), "o")
				b.SetBytes(int64(len(big)))
				b.ResetTimer()
				for range b.N {
					if _, err := atftpGet(b, f.addr, "big.bin", out, fmt.Sprintf("blksize %d", bs)); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}
