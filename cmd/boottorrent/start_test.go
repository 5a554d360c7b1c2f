package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/boottorrent/boottorrent/initramfs/bootapi"
	"github.com/boottorrent/boottorrent/netboot/netns"
	"github.com/boottorrent/boottorrent/netboot/netns/nstest"
)

func TestMain(m *testing.M) { nstest.Main(m) }

// logBuffer collects a process's stderr and lets a test wait for a line.
type logBuffer struct {
	nstest.Buffer
	exited chan struct{} // closed when the process ends, if set
}

func (l *logBuffer) waitFor(t *testing.T, s string, d time.Duration) {
	t.Helper()
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		if strings.Contains(l.String(), s) {
			return
		}
		select {
		case <-l.exited:
			t.Fatalf("the process exited before %q; log:\n%s", s, l.String())
		case <-time.After(200 * time.Millisecond):
		}
	}
	t.Fatalf("no %q after %s; log:\n%s", s, d, l.String())
}

func get(t *testing.T, c *http.Client, url string) []byte {
	t.Helper()
	resp, err := c.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		t.Fatalf("GET %s: %s: %s", url, resp.Status, b)
	}
	return b
}

// TestStartLifecycle runs the real binary's `start` in a namespace on a
// virtual LAN (full DHCP mode), checks what it serves from a second
// namespace, that a second instance refuses to start, and that SIGTERM
// stops it cleanly; then that a restart reuses the cached work.
func TestStartLifecycle(t *testing.T) {
	binary, srv, cli, dir, write := serverLab(t, "10.77.0.1/24", "10.77.0.2/24")
	write("Boottorrent.yaml", []byte(`version: 1
server:
  interface: eth0
dhcp:
  mode: full
  range: 10.77.0.100-10.77.0.120
boot:
  timeout: 0s
`))
	payload := make([]byte, 3<<20)
	rand.Read(payload)
	write("oss/tiny/config.yaml", []byte("dispname: Tiny\nmethod: bin\nbin: payload.bin\n"))
	write("oss/tiny/payload.bin", payload)

	run := func() (*exec.Cmd, *logBuffer, chan error) {
		log := &logBuffer{exited: make(chan struct{})}
		cmd := srv.Command(context.Background(), binary, "start", "--dir", dir)
		cmd.Stderr, cmd.Stdout = log, log
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		go func() { err := cmd.Wait(); close(log.exited); done <- err }()
		t.Cleanup(func() { cmd.Process.Kill(); <-log.exited })
		return cmd, log, done
	}
	first, log, done := run()
	log.waitFor(t, "msg=ready", 4*time.Minute)

	c := cli.HTTPClient(20 * time.Second)
	base := "http://10.77.0.1:8080"
	var oses []bootapi.OS
	if err := json.Unmarshal(get(t, c, base+bootapi.PathOSList), &oses); err != nil {
		t.Fatal(err)
	}
	if len(oses) != 1 || oses[0].Name != "tiny" || len(oses[0].InfoHash) != 40 {
		t.Fatalf("os list: %+v", oses)
	}
	script := string(get(t, c, base+bootapi.PathBootScript+"?mac=52:54:00:00:00:01"))
	if !strings.HasPrefix(script, "#!ipxe") || !strings.Contains(script, bootapi.PathClientKernel) {
		t.Fatalf("boot script:\n%s", script)
	}
	if tor := get(t, c, base+bootapi.PathTorrents+"tiny.torrent"); !bytes.HasPrefix(tor, []byte("d")) {
		t.Fatalf("torrent is not bencoded: %q", tor[:min(len(tor), 40)])
	}
	if got := get(t, c, base+bootapi.PathWebSeed+"tiny/payload.bin"); !bytes.Equal(got, payload) {
		t.Fatal("web seed returned other bytes")
	}
	var boot bootapi.Boot
	if err := json.Unmarshal(get(t, c, base+bootapi.PathBoot+"?mac=52:54:00:00:00:01"), &boot); err != nil {
		t.Fatal(err)
	}
	if boot.DefaultOS != "tiny" || boot.TimeoutMS != 0 || len(boot.Menu) != 1 {
		t.Fatalf("boot api: %+v", boot)
	}

	// A machine leases an address before the second start.
	leaseFile := filepath.Join(dir, "out/leases.json")
	lease(t, cli, "52:54:00:aa:00:01")
	before := statFile(t, leaseFile)

	// A second instance on the same project must refuse and touch nothing
	// in out/, even with other ports and TFTP off (so that no port is
	// found taken before DHCP's): loading and compacting out/leases.json would replace the
	// file under the running server, which would lose every later lease.
	orig, _ := os.ReadFile(filepath.Join(dir, "Boottorrent.yaml"))
	write("Boottorrent.yaml", bytes.Replace(orig, []byte("  interface: eth0\n"),
		[]byte("  interface: eth0\n  http_port: 8081\n  torrent_port: 6882\ntftp:\n  enabled: false\n"), 1))
	second := srv.Command(context.Background(), binary, "start", "--dir", dir)
	out, err := second.CombinedOutput()
	write("Boottorrent.yaml", orig)
	if err == nil {
		t.Fatalf("a second instance started:\n%s", out)
	}
	if want := fmt.Sprintf("another boottorrent (pid %d) is serving this project", first.Process.Pid); !strings.Contains(string(out), want) {
		// ip netns exec runs the program in place (exec), so the pid is the binary's.
		t.Errorf("second instance's error does not say %q:\n%s", want, out)
	}
	if after := statFile(t, leaseFile); after != before {
		t.Errorf("the second start changed %s: %+v, was %+v", leaseFile, after, before)
	}
	// Leases granted after the refused start survive the first's restart.
	granted := []string{"52:54:00:aa:00:02", "52:54:00:aa:00:03", "52:54:00:aa:00:04"}
	for _, mac := range granted {
		lease(t, cli, mac)
	}

	// SIGTERM stops it cleanly.
	first.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("exit after SIGTERM: %v\n%s", err, log.String())
		}
	case <-time.After(20 * time.Second):
		t.Fatalf("still running 20 s after SIGTERM:\n%s", log.String())
	}
	if !strings.Contains(log.String(), "msg=stopped") {
		t.Errorf("no 'stopped' line:\n%s", log.String())
	}
	for _, f := range []string{"out/torrents/tiny.torrent", "out/client/initramfs"} {
		if _, err := os.Stat(filepath.Join(dir, f)); err != nil {
			t.Errorf("generated file missing: %v", err)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "oss/tiny/out")); err == nil {
		t.Error("generated files next to the images")
	}

	// A restart is quick: the client and the hashes are cached.
	t0 := time.Now()
	_, log2, _ := run()
	log2.waitFor(t, "msg=ready", 2*time.Minute)
	leases, _ := os.ReadFile(leaseFile)
	for _, mac := range append(granted, "52:54:00:aa:00:01") {
		if !strings.Contains(string(leases), `"mac":"`+mac+`"`) {
			t.Errorf("the lease of %s was lost across the restart; %s:\n%s", mac, leaseFile, leases)
		}
	}
	t.Logf("first start:\n%s", firstLines(log.String(), 30))
	t.Logf("restart took %s:\n%s", time.Since(t0).Round(time.Millisecond), firstLines(log2.String(), 30))
}

// fileID is what a second start must not change in a file.
type fileID struct {
	Ino, Size int64
	Mtime     time.Time
}

func statFile(t *testing.T, path string) fileID {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fileID{int64(fi.Sys().(*syscall.Stat_t).Ino), fi.Size(), fi.ModTime()}
}

// lease has busybox udhcpc in ns lease one address for mac and exits
// (-q), leaving the namespace's own address as it was (-s /bin/true).
func lease(t *testing.T, ns *netns.NS, mac string) {
	t.Helper()
	if out, err := ns.Run("ip", "link", "set", "eth0", "address", mac); err != nil {
		t.Fatalf("set %s: %v: %s", mac, err, out)
	}
	out, err := ns.Run("busybox", "udhcpc", "-i", "eth0", "-f", "-q", "-n", "-s", "/bin/true", "-t", "5", "-T", "1")
	if err != nil || !strings.Contains(string(out), "obtained") {
		t.Fatalf("udhcpc as %s: %v\n%s", mac, err, out)
	}
}

func firstLines(s string, n int) string {
	var out []string
	sc := bufio.NewScanner(strings.NewReader(s))
	for sc.Scan() && len(out) < n {
		out = append(out, sc.Text())
	}
	return strings.Join(out, "\n")
}
