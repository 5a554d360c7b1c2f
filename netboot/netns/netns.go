// Package netns builds throw-away virtual LANs out of Linux network
// namespaces, a bridge, veth pairs and tap devices, for tests, the demo and
// the swarm benchmark. Nothing it creates touches the machine's own
// interfaces: every address lives inside a namespace this process made.
//
// Names carry this process's PID ("bt<pid>x<n>...") so that Sweep can remove
// what a killed earlier run left behind without touching the namespaces of
// another test binary running at the same time. Root is required.
package netns

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

var seq atomic.Int64

// uniq returns a short name unique to this process: bt<pid>x<n>.
func uniq() string {
	return fmt.Sprintf("bt%dx%d", os.Getpid(), seq.Add(1))
}

// Available reports why this machine cannot build namespaces, or nil.
func Available() error {
	if os.Geteuid() != 0 {
		return errors.New("network namespaces need root (run the tests as root, as CI does)")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		return errors.New("the ip command is missing: apt-get install iproute2")
	}
	return nil
}

// NS is a network namespace created by this process.
type NS struct {
	Name string
}

// New creates a namespace with its loopback up.
func New() (*NS, error) {
	n := &NS{Name: uniq()}
	if out, err := exec.Command("ip", "netns", "add", n.Name).CombinedOutput(); err != nil {
		return nil, fmt.Errorf("ip netns add %s: %v: %s", n.Name, err, bytes.TrimSpace(out))
	}
	if _, err := n.Run("ip", "link", "set", "lo", "up"); err != nil {
		n.Close()
		return nil, err
	}
	return n, nil
}

// Close deletes the namespace (and with it every interface inside).
// Processes still running inside are killed first, so that the namespace
// really goes away.
func (n *NS) Close() error {
	if out, err := exec.Command("ip", "netns", "pids", n.Name).Output(); err == nil {
		for _, f := range strings.Fields(string(out)) {
			if pid, err := strconv.Atoi(f); err == nil && pid != os.Getpid() {
				syscall.Kill(pid, syscall.SIGKILL)
			}
		}
	}
	if out, err := exec.Command("ip", "netns", "del", n.Name).CombinedOutput(); err != nil {
		return fmt.Errorf("ip netns del %s: %v: %s", n.Name, err, bytes.TrimSpace(out))
	}
	return nil
}

// Command prepares prog to run inside the namespace.
func (n *NS) Command(ctx context.Context, prog string, args ...string) *exec.Cmd {
	return exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", n.Name, prog}, args...)...)
}

// Run runs prog inside the namespace and returns its combined output; the
// error includes the output.
func (n *NS) Run(prog string, args ...string) ([]byte, error) {
	out, err := n.Command(context.Background(), prog, args...).CombinedOutput()
	if err != nil {
		return out, fmt.Errorf("%s %s (in %s): %v: %s", prog, strings.Join(args, " "), n.Name, err, bytes.TrimSpace(out))
	}
	return out, nil
}

// Do runs fn on an OS thread switched into the namespace. Sockets fn opens
// stay in the namespace after Do returns and may be used from any
// goroutine; goroutines fn starts do not inherit the namespace.
func (n *NS) Do(fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		// The thread is never returned to the scheduler's pool: it is
		// left to die with the goroutine (LockOSThread without Unlock),
		// so no other goroutine ever runs in the namespace by accident.
		runtime.LockOSThread()
		f, err := os.Open(filepath.Join("/run/netns", n.Name))
		if err != nil {
			errc <- err
			return
		}
		defer f.Close()
		if err := unix.Setns(int(f.Fd()), unix.CLONE_NEWNET); err != nil {
			errc <- fmt.Errorf("setns %s: %w", n.Name, err)
			return
		}
		errc <- fn()
	}()
	return <-errc
}

// LAN is a virtual Ethernet segment: a bridge inside its own namespace,
// with hosts (namespaces joined by veth pairs) and taps (for QEMU) on it.
type LAN struct {
	// Bridge is the namespace that holds the bridge "br0" and the taps.
	Bridge *NS

	mu    sync.Mutex
	hosts []*NS
	n     int
}

// NewLAN creates the bridge namespace.
func NewLAN() (*LAN, error) {
	if err := Available(); err != nil {
		return nil, err
	}
	br, err := New()
	if err != nil {
		return nil, err
	}
	l := &LAN{Bridge: br}
	for _, args := range [][]string{
		{"link", "add", "br0", "type", "bridge", "forward_delay", "0", "stp_state", "0"},
		{"link", "set", "br0", "up"},
	} {
		if _, err := br.Run("ip", args...); err != nil {
			br.Close()
			return nil, err
		}
	}
	// Let bridged frames pass even where br_netfilter is loaded.
	br.Run("sysctl", "-qw", "net.bridge.bridge-nf-call-iptables=0")
	return l, nil
}

// AddHost creates a namespace joined to the bridge by a veth pair. Inside,
// the interface is called ifname (e.g. "eth0") and gets addr, unless addr
// is the zero Prefix (a DHCP client will configure it). It returns the
// namespace and the name of the bridge-side end (for tc shaping).
func (l *LAN) AddHost(ifname string, addr netip.Prefix) (*NS, string, error) {
	ns, err := New()
	if err != nil {
		return nil, "", err
	}
	l.mu.Lock()
	l.n++
	idx := l.n
	l.hosts = append(l.hosts, ns)
	l.mu.Unlock()
	peer := fmt.Sprintf("v%d", idx)
	tmp := fmt.Sprintf("%.10sh%d", ns.Name, idx)
	steps := [][]string{
		{"link", "add", tmp, "type", "veth", "peer", "name", peer, "netns", l.Bridge.Name},
		{"link", "set", tmp, "name", ifname},
		{"link", "set", ifname, "up"},
	}
	if addr.IsValid() {
		steps = append(steps, []string{"addr", "add", addr.String(), "dev", ifname})
	}
	for _, s := range steps {
		if _, err := ns.Run("ip", s...); err != nil {
			return nil, "", err
		}
	}
	for _, s := range [][]string{{"link", "set", peer, "master", "br0"}, {"link", "set", peer, "up"}} {
		if _, err := l.Bridge.Run("ip", s...); err != nil {
			return nil, "", err
		}
	}
	return ns, peer, nil
}

// AddTap creates a tap device on the bridge for a QEMU VM. QEMU must run in
// l.Bridge (l.Bridge.Command) with -netdev tap,ifname=NAME,script=no,downscript=no.
func (l *LAN) AddTap() (string, error) {
	l.mu.Lock()
	l.n++
	name := fmt.Sprintf("tap%d", l.n)
	l.mu.Unlock()
	for _, s := range [][]string{
		{"tuntap", "add", "dev", name, "mode", "tap"},
		{"link", "set", name, "master", "br0"},
		{"link", "set", name, "up"},
	} {
		if _, err := l.Bridge.Run("ip", s...); err != nil {
			return "", err
		}
	}
	return name, nil
}

// Close deletes every namespace of the LAN. It is safe to call twice.
func (l *LAN) Close() error {
	l.mu.Lock()
	hosts := l.hosts
	l.hosts = nil
	br := l.Bridge
	l.Bridge = nil
	l.mu.Unlock()
	var errs []error
	for _, h := range hosts {
		errs = append(errs, h.Close())
	}
	if br != nil {
		errs = append(errs, br.Close())
	}
	return errors.Join(errs...)
}

var ourName = regexp.MustCompile(`^bt(\d+)x\d+$`)

// Sweep deletes namespaces left by earlier runs of this package whose
// process is gone (a test binary killed by a timeout cannot clean up).
func Sweep() {
	ents, err := os.ReadDir("/run/netns")
	if err != nil {
		return
	}
	for _, e := range ents {
		m := ourName.FindStringSubmatch(e.Name())
		if m == nil {
			continue
		}
		pid, _ := strconv.Atoi(m[1])
		if pid == os.Getpid() || syscall.Kill(pid, 0) == nil {
			continue
		}
		(&NS{Name: e.Name()}).Close()
	}
}

// DialContext opens a connection from inside the namespace. The socket is
// made on a thread switched into the namespace (Do) and keeps it after.
func (n *NS) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	var c net.Conn
	err := n.Do(func() error {
		var err error
		c, err = (&net.Dialer{}).DialContext(ctx, network, addr)
		return err
	})
	return c, err
}

// HTTPClient returns an HTTP client whose connections open inside the
// namespace, for tests and tools that talk to servers on a virtual LAN.
func (n *NS) HTTPClient(timeout time.Duration) *http.Client {
	return &http.Client{Timeout: timeout, Transport: &http.Transport{
		DisableKeepAlives: true,
		DialContext:       n.DialContext,
	}}
}
