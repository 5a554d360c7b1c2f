// Package nstest gives tests what every namespace test needs: a virtual
// LAN in one call that skips where it cannot be built and is deleted when
// the test ends, a TestMain that removes what killed earlier runs left, a
// log buffer safe for concurrent writers, and the static boottorrent
// binary built once per test binary.
//
// It owns the set-up and tear-down around netns for tests; what a test
// runs on the LAN, and what it asserts, stay in the test. Only _test.go
// files import it.
package nstest

import (
	"bytes"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/boottorrent/boottorrent/netboot/netns"
)

// Main runs a package's tests: first it deletes the namespaces of earlier
// runs that were killed (a test binary killed by go test's -timeout
// cannot clean up), and after the tests the binaries Static built.
// Use it as `func TestMain(m *testing.M) { nstest.Main(m) }`.
func Main(m *testing.M) {
	if netns.Available() == nil {
		netns.Sweep()
	}
	code := m.Run()
	removeBuilt()
	os.Exit(code)
}

// Skip skips the test unless this machine can build namespaces, naming
// what is missing (root, the ip command). CI has both and never skips.
func Skip(t testing.TB) {
	t.Helper()
	if err := netns.Available(); err != nil {
		t.Skip("needs network namespaces: " + err.Error())
	}
}

// LAN builds a bridge with one host for each address: a namespace whose
// eth0 has that address (a prefix such as "10.0.0.1/24"; "" leaves eth0
// unconfigured, for a DHCP client). Everything is deleted when the test
// ends, also when it fails or a later step of the set-up does. It skips
// where namespaces cannot be built (Skip).
func LAN(t testing.TB, addrs ...string) (*netns.LAN, []*netns.NS) {
	t.Helper()
	Skip(t)
	lan, err := netns.NewLAN()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { lan.Close() })
	hosts := make([]*netns.NS, 0, len(addrs))
	for _, a := range addrs {
		hosts = append(hosts, Host(t, lan, a))
	}
	return lan, hosts
}

// Host adds a host to lan as LAN does: eth0 at addr, or unconfigured for
// "". Its namespace goes with the LAN's clean-up.
func Host(t testing.TB, lan *netns.LAN, addr string) *netns.NS {
	t.Helper()
	var p netip.Prefix
	if addr != "" {
		var err error
		if p, err = netip.ParsePrefix(addr); err != nil {
			t.Fatalf("test host address %q: %v", addr, err)
		}
	}
	ns, _, err := lan.AddHost("eth0", p)
	if err != nil {
		t.Fatal(err)
	}
	return ns
}

// Buffer collects what several goroutines or processes write (a server's
// log, a process's output) and can be read while they still write.
type Buffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *Buffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

// String returns everything written so far.
func (b *Buffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// Boottorrent is the import path of the boottorrent command.
const Boottorrent = "github.com/boottorrent/boottorrent/cmd/boottorrent"

var built struct {
	sync.Mutex
	dir  string
	bins map[string]*build
}

type build struct {
	once sync.Once
	path string
	err  error
}

// Static returns the path of the command pkg (an import path, such as
// Boottorrent) built as the product ships it: static (CGO_ENABLED=0),
// stripped, without file system paths. It is built once per test binary
// and shared by every test that asks; Main removes it at the end.
func Static(t testing.TB, pkg string) string {
	t.Helper()
	built.Lock()
	if built.bins == nil {
		built.bins = map[string]*build{}
	}
	b := built.bins[pkg]
	if b == nil {
		b = &build{}
		built.bins[pkg] = b
	}
	built.Unlock()
	b.once.Do(func() { b.path, b.err = buildStatic(pkg) })
	if b.err != nil {
		t.Fatal(b.err)
	}
	return b.path
}

func buildStatic(pkg string) (string, error) {
	built.Lock()
	if built.dir == "" {
		dir, err := os.MkdirTemp("", "nstest-bin-")
		if err != nil {
			built.Unlock()
			return "", err
		}
		built.dir = dir
	}
	dir := built.dir
	built.Unlock()
	// The binary keeps the command's name, which it may print.
	sub := filepath.Join(dir, strings.ReplaceAll(pkg, "/", "_"))
	if err := os.MkdirAll(sub, 0o755); err != nil {
		return "", err
	}
	out := filepath.Join(sub, path.Base(pkg))
	cmd := exec.Command("go", "build", "-trimpath", "-ldflags=-s -w", "-o", out, pkg)
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if msg, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("build %s: %w\n%s", pkg, err, msg)
	}
	return out, nil
}

func removeBuilt() {
	built.Lock()
	defer built.Unlock()
	if built.dir != "" {
		os.RemoveAll(built.dir)
	}
}
