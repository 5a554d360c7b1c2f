package dhcp

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/boottorrent/boottorrent/netboot/netns"
	"github.com/boottorrent/boottorrent/netboot/netns/nstest"
)

func TestMain(m *testing.M) { nstest.Main(m) }

// testLAN is a bridge with our server's namespace on it (10.0.0.1/24, eth0).
type testLAN struct {
	lan    *netns.LAN
	server *netns.NS
}

func newTestLAN(t *testing.T) *testLAN {
	t.Helper()
	lan, hosts := nstest.LAN(t, "10.0.0.1/24")
	return &testLAN{lan: lan, server: hosts[0]}
}

// client adds a namespace with an unconfigured eth0 and returns it with its MAC.
func (l *testLAN) client(t *testing.T) (*netns.NS, string) {
	t.Helper()
	ns := nstest.Host(t, l.lan, "")
	out, err := ns.Run("cat", "/sys/class/net/eth0/address")
	if err != nil {
		t.Fatal(err)
	}
	return ns, strings.TrimSpace(string(out))
}

// running is a Server serving in the server namespace.
type running struct {
	*Server
	done    chan error
	logs    *nstest.Buffer
	stopped sync.Once
}

// start runs a server with opt in the server namespace, on real sockets
// opened by Listen.
func (l *testLAN) start(t *testing.T, opt Options) *running {
	t.Helper()
	return l.startTap(t, opt, nil)
}

// startTap is start with a tap that sees every received datagram.
func (l *testLAN) startTap(t *testing.T, opt Options, tap func(port int, data []byte)) *running {
	t.Helper()
	logs := &nstest.Buffer{}
	opt.Logger = slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	opt.Interface = "eth0"
	s, err := New(opt)
	if err != nil {
		t.Fatal(err)
	}
	s.tap = tap
	var c67, c4011 net.PacketConn
	err = l.server.Do(func() error {
		var err error
		if c67, err = Listen("eth0", ServerPort); err != nil {
			return err
		}
		c4011, err = Listen("eth0", PXEServerPort)
		return err
	})
	if err != nil {
		if c67 != nil {
			c67.Close()
		}
		t.Fatal(err)
	}
	r := &running{Server: s, done: make(chan error, 1), logs: logs}
	go func() { r.done <- s.Serve(c67, c4011) }()
	t.Cleanup(func() {
		r.stop(t)
		if t.Failed() {
			t.Logf("server log:\n%s", logs.String())
		}
	})
	return r
}

func (r *running) stop(t *testing.T) {
	r.stopped.Do(func() {
		r.Close()
		select {
		case err := <-r.done:
			if err != nil {
				t.Errorf("Serve: %v", err)
			}
		case <-time.After(5 * time.Second):
			t.Error("Serve did not return after Close")
		}
	})
}

// dhcpClient is a real DHCP client running in a namespace, whose hook
// script appends "EVENT IP" lines to a file.
type dhcpClient struct {
	cmd    *exec.Cmd
	events string
	out    *nstest.Buffer
	done   chan struct{}
}

// udhcpcScript configures eth0 like a real hook would (renewals are sent
// unicast from the leased address) and records each event.
const udhcpcScript = `#!/bin/sh
case "$1" in
bound|renew) ip addr replace "$ip/${mask:-24}" dev "$interface"; echo "$1 $ip" >> "$EVENTS" ;;
deconfig) ip addr flush dev "$interface"; echo "deconfig -" >> "$EVENTS" ;;
*) echo "$1 ${ip:--}" >> "$EVENTS" ;;
esac
exit 0
`

const dhclientScript = `#!/bin/sh
case "$reason" in
BOUND|RENEW|REBIND|REBOOT) ip addr replace "$new_ip_address/$new_subnet_mask" dev "$interface"; echo "$reason $new_ip_address" >> "$EVENTS" ;;
*) echo "$reason ${new_ip_address:--}" >> "$EVENTS" ;;
esac
exit 0
`

func startClient(t *testing.T, ns *netns.NS, kind string, dir string, extra ...string) *dhcpClient {
	t.Helper()
	var prog string
	var args []string
	script := filepath.Join(dir, kind+".sh")
	switch kind {
	case "udhcpc":
		prog = "busybox"
		if _, err := exec.LookPath(prog); err != nil {
			t.Skip("needs busybox udhcpc: apt-get install busybox-static")
		}
		os.WriteFile(script, []byte(strings.ReplaceAll(udhcpcScript, "$EVENTS", filepath.Join(dir, kind+".events"))), 0o755)
		args = append([]string{"udhcpc", "-i", "eth0", "-f", "-s", script, "-t", "4", "-T", "1", "-A", "1"}, extra...)
	case "dhclient":
		prog = "dhclient"
		if _, err := exec.LookPath(prog); err != nil {
			t.Skip("needs ISC dhclient: apt-get install isc-dhcp-client")
		}
		os.WriteFile(script, []byte(strings.ReplaceAll(dhclientScript, "$EVENTS", filepath.Join(dir, kind+".events"))), 0o755)
		// Give up after 10 s instead of 60 s (proxy mode: no answer).
		conf := filepath.Join(dir, "dhclient.conf")
		os.WriteFile(conf, []byte("timeout 10;\nretry 60;\n"), 0o644)
		args = append([]string{"-4", "-d", "-v", "-cf", conf, "-sf", script, "-lf", filepath.Join(dir, "dhclient.leases"),
			"-pf", filepath.Join(dir, "dhclient.pid")}, extra...)
		args = append(args, "eth0")
	}
	c := &dhcpClient{events: filepath.Join(dir, kind+".events"), out: &nstest.Buffer{}, done: make(chan struct{})}
	os.Remove(c.events)
	c.cmd = ns.Command(context.Background(), prog, args...)
	c.cmd.Stdout, c.cmd.Stderr = c.out, c.out
	c.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := c.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { c.cmd.Wait(); close(c.done) }()
	t.Cleanup(func() {
		c.kill()
		if t.Failed() {
			t.Logf("%s output:\n%s", kind, c.out.String())
		}
	})
	return c
}

// kill stops the client without letting it release its lease (a machine
// switched off, or a crash).
func (c *dhcpClient) kill() {
	if c.cmd.Process != nil {
		syscall.Kill(-c.cmd.Process.Pid, syscall.SIGKILL)
	}
	<-c.done
}

// waitEvent waits for a line starting with one of kinds and returns its IP.
func (c *dhcpClient) waitEvent(t *testing.T, timeout time.Duration, skip int, kinds ...string) string {
	t.Helper()
	ip, err := c.wait(timeout, skip, kinds...)
	if err != nil {
		t.Fatal(err)
	}
	return ip
}

// wait is waitEvent for goroutines other than the test's.
func (c *dhcpClient) wait(timeout time.Duration, skip int, kinds ...string) (string, error) {
	deadline := time.Now().Add(timeout)
	exited := false
	for time.Now().Before(deadline) {
		data, _ := os.ReadFile(c.events)
		n := 0
		for _, line := range strings.Split(string(data), "\n") {
			f := strings.Fields(line)
			if len(f) == 2 && contains(kinds, f[0]) {
				if n == skip {
					return f[1], nil
				}
				n++
			}
		}
		if exited {
			return "", fmt.Errorf("client exited before %v: events:\n%s", kinds, data)
		}
		select {
		case <-c.done:
			exited = true // read the file once more: the hook ran before the exit
		case <-time.After(100 * time.Millisecond):
		}
	}
	data, _ := os.ReadFile(c.events)
	return "", fmt.Errorf("no %v event in %v; events:\n%s", kinds, timeout, data)
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func fullOptions(leaseFile string) Options {
	o := testOptions(ModeFull)
	o.LeaseFile = leaseFile
	o.LeaseTime = 6 * time.Second // renewals (T1 = 3 s) within the test
	o.Router = mustAddr("10.0.0.1")
	return o
}

// TestRealClientsFullMode: busybox udhcpc and ISC dhclient get a lease,
// renew it (unicast, RENEWING), and after our server restarts from its
// lease file get the same address, while a newcomer gets another one.
func TestRealClientsFullMode(t *testing.T) {
	t.Parallel()
	l := newTestLAN(t)
	dir := t.TempDir()
	leases := filepath.Join(dir, "out", "leases.json")
	srv := l.start(t, fullOptions(leases))

	type result struct{ kind, mac, ip string }
	kinds := []string{"udhcpc", "dhclient"}
	nss := map[string]*netns.NS{}
	res := make([]result, len(kinds))
	var wg sync.WaitGroup
	for i, kind := range kinds {
		ns, mac := l.client(t)
		nss[kind] = ns
		cdir := filepath.Join(dir, kind)
		os.MkdirAll(cdir, 0o755)
		c := startClient(t, ns, kind, cdir)
		wg.Go(func() {
			bound, err := c.wait(20*time.Second, 0, "bound", "BOUND")
			if err != nil {
				t.Errorf("%s: %v", kind, err)
				return
			}
			// udhcpc clamps leases to at least 16 s: renewal after 8 s.
			renewed, err := c.wait(30*time.Second, 0, "renew", "RENEW")
			if err != nil {
				t.Errorf("%s: %v", kind, err)
				return
			}
			if renewed != bound {
				t.Errorf("%s: bound %s, renewed %s", kind, bound, renewed)
			}
			c.kill()
			res[i] = result{kind, mac, bound}
		})
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	if res[0].ip == res[1].ip {
		t.Fatalf("both clients got %s", res[0].ip)
	}
	for _, r := range res {
		if !strings.HasPrefix(r.ip, "10.0.0.1") || r.ip == "10.0.0.1" {
			t.Fatalf("%s got %s, outside the range", r.kind, r.ip)
		}
		if !strings.Contains(srv.logs.String(), "mac="+r.mac+" msg=ack") {
			t.Errorf("no ack log line for %s", r.mac)
		}
	}
	if st := srv.Stats(); st.Answered < 6 || st.Malformed != 0 || st.Panics != 0 {
		t.Errorf("stats after two DORA + renewals: %+v", st)
	}
	srv.stop(t)

	// Restart: a newcomer asks first; it must not get a taken address.
	srv2 := l.start(t, fullOptions(leases))
	ns3, _ := l.client(t)
	c3 := startClient(t, ns3, "udhcpc", t.TempDir(), "-q", "-n", "-r", res[0].ip)
	ip3 := c3.waitEvent(t, 20*time.Second, 0, "bound")
	if ip3 == res[0].ip || ip3 == res[1].ip {
		t.Fatalf("after restart a new machine got %s, leased to another machine", ip3)
	}
	for i, kind := range kinds {
		cdir := filepath.Join(dir, kind)
		once := []string{"-1"} // dhclient: try once; it asks for its old address (INIT-REBOOT)
		if kind == "udhcpc" {
			once = []string{"-q", "-n"} // udhcpc starts over with a DISCOVER: we must remember it
		}
		c := startClient(t, nss[kind], kind, cdir, once...)
		got := c.waitEvent(t, 20*time.Second, 0, "bound", "BOUND", "REBOOT")
		if got != res[i].ip {
			t.Errorf("%s after server restart: got %s, want %s", kind, got, res[i].ip)
		}
	}
	_ = srv2
}

// TestRealClientsProxyMode: in proxy mode, plain DHCP clients get nothing
// from us (they time out), and nothing is sent.
func TestRealClientsProxyMode(t *testing.T) {
	t.Parallel()
	l := newTestLAN(t)
	srv := l.start(t, testOptions(ModeProxy))
	var wg sync.WaitGroup
	for _, kind := range []string{"udhcpc", "dhclient"} {
		ns, _ := l.client(t)
		dir := t.TempDir()
		var c *dhcpClient
		if kind == "udhcpc" {
			c = startClient(t, ns, kind, dir, "-q", "-n", "-t", "3")
		} else {
			c = startClient(t, ns, kind, dir, "-1")
		}
		wg.Go(func() {
			select {
			case <-c.done:
			case <-time.After(90 * time.Second):
				t.Errorf("%s still waiting after 90s", kind)
				return
			}
			data, _ := os.ReadFile(c.events)
			if bytes.Contains(data, []byte("bound")) || bytes.Contains(data, []byte("BOUND")) {
				t.Errorf("%s got a lease in proxy mode:\n%s", kind, data)
			}
		})
	}
	wg.Wait()
	st := srv.Stats()
	if st.Received == 0 {
		t.Fatal("the server saw no request at all: the test proves nothing")
	}
	if st.Answered != 0 {
		t.Fatalf("proxy mode answered %d replies to non-PXE clients", st.Answered)
	}
}

// TestListenRefusesSecondInstance: a second server on the same port and
// interface fails with ErrPortInUse and names the holder, also when the
// first one used SO_REUSEPORT like the library does.
func TestListenRefusesSecondInstance(t *testing.T) {
	t.Parallel()
	l := newTestLAN(t)
	err := l.server.Do(func() error {
		c, err := Listen("eth0", ServerPort)
		if err != nil {
			return err
		}
		defer c.Close()
		// Replies are marked as network control (see Listen).
		raw, err := c.(syscall.Conn).SyscallConn()
		if err != nil {
			return err
		}
		var tos, prio int
		var serr error
		raw.Control(func(fd uintptr) {
			if tos, serr = syscall.GetsockoptInt(int(fd), syscall.IPPROTO_IP, syscall.IP_TOS); serr == nil {
				prio, serr = syscall.GetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_PRIORITY)
			}
		})
		if serr != nil || tos != TOSNetworkControl || prio != 6 {
			return fmt.Errorf("socket TOS %#x priority %d (%v), want %#x and 6", tos, prio, serr, TOSNetworkControl)
		}
		_, err = Listen("eth0", ServerPort)
		if !errors.Is(err, ErrPortInUse) {
			return fmt.Errorf("second Listen: %v, want ErrPortInUse", err)
		}
		if !strings.Contains(err.Error(), fmt.Sprintf("pid %d", os.Getpid())) {
			return fmt.Errorf("error does not name the holder: %v", err)
		}
		_, err = Listen("", ServerPort)
		if !errors.Is(err, ErrPortInUse) {
			return fmt.Errorf("Listen on all interfaces: %v, want ErrPortInUse", err)
		}
		_, err = Listen("nosuch0", ServerPort)
		if err == nil || !strings.Contains(err.Error(), "does not exist") {
			return fmt.Errorf("missing interface: %v", err)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	// The other way round: a SO_REUSEPORT socket (as the library opens it)
	// holds the port, and we refuse to join it.
	err = l.server.Do(func() error {
		fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_DGRAM, 0)
		if err != nil {
			return err
		}
		defer syscall.Close(fd)
		syscall.SetsockoptInt(fd, syscall.SOL_SOCKET, syscall.SO_REUSEADDR, 1)
		syscall.SetsockoptInt(fd, syscall.SOL_SOCKET, 0xf /* SO_REUSEPORT */, 1)
		if err := syscall.Bind(fd, &syscall.SockaddrInet4{Port: PXEServerPort}); err != nil {
			return err
		}
		_, err = Listen("eth0", PXEServerPort)
		if !errors.Is(err, ErrPortInUse) {
			return fmt.Errorf("Listen next to a SO_REUSEPORT socket: %v, want ErrPortInUse", err)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
