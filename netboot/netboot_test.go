package netboot

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/boottorrent/boottorrent/initramfs/bootapi"
	"github.com/boottorrent/boottorrent/netboot/bootserver"
	"github.com/boottorrent/boottorrent/netboot/dhcp"
	"github.com/boottorrent/boottorrent/netboot/netns/nstest"
	"github.com/boottorrent/boottorrent/netboot/registry"
	"github.com/boottorrent/boottorrent/seeder/swarm"
)

// fakeCatalog is a Catalog with fixed answers.
type fakeCatalog struct {
	oses  []bootapi.OS
	peers []netip.AddrPort
}

func (f *fakeCatalog) OSes() []bootapi.OS { return f.oses }
func (f *fakeCatalog) Peers(os string, exclude netip.Addr, n int) []netip.AddrPort {
	var out []netip.AddrPort
	for _, p := range f.peers {
		if p.Addr() != exclude && len(out) < n {
			out = append(out, p)
		}
	}
	return out
}

// labOptions are a server's options on iface at addr (CIDR) with the
// defaults of Boottorrent.yaml (config.Default): proxy DHCP, TFTP on,
// HTTP on 8080, Debian's iPXE.
func labOptions(iface, addr string) Options {
	p := netip.MustParsePrefix(addr)
	return Options{
		Interface: iface, Address: p.Addr(), Prefix: p.Masked(), HTTPPort: 8080,
		DHCP: DHCP{Mode: dhcp.ModeProxy, LeaseTime: time.Hour}, TFTP: true,
		IPXE: IPXE{Dir: "/usr/lib/ipxe", BIOS: "undionly.kpxe", UEFI: "ipxe.efi"},
		Boot: bootserver.Options{Timeout: 10 * time.Second, SeedTime: 30 * time.Second},
	}
}

func testOptions() Options {
	o := labOptions("lo", "10.9.0.1/24")
	o.Boot.Menu = []string{"debian", "alpine"}
	o.Boot.DefaultOS = "alpine"
	o.Boot.Timeout = 7 * time.Second
	o.Cmdline = "quiet\nshell=1"
	o.Boot.Trackers = []string{"http://tracker.example/announce"}
	o.Machines = map[bootapi.MAC]Machine{{0x52, 0x54, 0, 0, 0, 9}: {Name: "pc9", OS: "debian"}}
	return o
}

func testServer(t testing.TB) (*Server, *fakeCatalog) { return testServerWith(t, nil) }

// testServerWith is testServer with its options changed by edit.
func testServerWith(t testing.TB, edit func(*Options)) (*Server, *fakeCatalog) {
	dir := t.TempDir()
	k := filepath.Join(dir, "vmlinuz")
	i := filepath.Join(dir, "initramfs")
	os.WriteFile(k, bytes.Repeat([]byte("K"), 10000), 0o644)
	os.WriteFile(i, []byte("0123456789abcdefghij"), 0o644)
	cat := &fakeCatalog{
		oses: []bootapi.OS{{Name: "alpine", DispName: "Alpine"}, {Name: "hidden"}, {Name: "debian", DispName: "Debian"}},
		peers: []netip.AddrPort{netip.MustParseAddrPort("10.9.0.1:6881"), netip.MustParseAddrPort("10.9.0.30:6881"),
			netip.MustParseAddrPort("10.9.0.31:6881")},
	}
	o := testOptions()
	o.Catalog, o.ClientKernel, o.ClientInitramfs = cat, k, i
	o.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	if edit != nil {
		edit(&o)
	}
	s, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	return s, cat
}

func do(t testing.TB, h http.Handler, method, target, remote string, body io.Reader, hdr ...string) *httptest.ResponseRecorder {
	t.Helper()
	r := httptest.NewRequest(method, target, body)
	r.RemoteAddr = remote
	for i := 0; i+1 < len(hdr); i += 2 {
		r.Header.Set(hdr[i], hdr[i+1])
	}
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	return w
}

func TestBootScript(t *testing.T) {
	s, _ := testServer(t)
	h := s.Handler()
	w := do(t, h, "GET", "/boot.ipxe?mac=52-54-00-12-34-56", "10.9.0.50:1234", nil)
	body := w.Body.String()
	if w.Code != 200 || !strings.HasPrefix(body, "#!ipxe\n") {
		t.Fatalf("status %d body %q", w.Code, body)
	}
	for _, want := range []string{
		"kernel http://10.9.0.1:8080/client/vmlinuz initrd=initramfs console=tty0 console=ttyS0,115200 boottorrent.server=http://10.9.0.1:8080 boottorrent.mac=52:54:00:12:34:56 quiet shell=1 || goto retry\n",
		"initrd --name initramfs http://10.9.0.1:8080/client/initramfs || goto retry\n",
		"boot || goto retry\n", "dhcp && goto load\n", "goto dhcp\n", "imgfree\n",
	} {
		if !strings.Contains(body, want) {
			t.Errorf("script lacks %q:\n%s", want, body)
		}
	}
	// The request told the registry who this is.
	if got := s.reg.MACForIP(netip.MustParseAddr("10.9.0.50")); got != "52:54:00:12:34:56" {
		t.Errorf("MACForIP = %q", got)
	}
	ms := s.Machines()
	if len(ms) != 1 || ms[0].Stage != bootapi.StageIPXE || ms[0].IP != "10.9.0.50" {
		t.Errorf("machines = %+v", ms)
	}

	// A hostile mac never reaches the script; iPXE's own variable does.
	for _, q := range []string{"mac=%0Achain%20http://evil/", "mac=${net0/mac}", "", "mac=1&mac=2", "%zz"} {
		w := do(t, h, "GET", "/boot.ipxe?"+q, "10.9.0.77:1", nil)
		if w.Code != 200 || !strings.Contains(w.Body.String(), "boottorrent.mac=${net0/mac} ") || strings.Contains(w.Body.String(), "evil") {
			t.Errorf("query %q: %d %q", q, w.Code, w.Body.String())
		}
	}
}

func TestClientFiles(t *testing.T) {
	s, _ := testServer(t)
	h := s.Handler()
	// Known machine: the initramfs download records the client stage.
	do(t, h, "GET", "/boot.ipxe?mac=52:54:00:12:34:56", "10.9.0.50:1", nil)
	w := do(t, h, "GET", bootapi.PathClientKernel, "10.9.0.50:2", nil)
	if w.Code != 200 || w.Body.Len() != 10000 {
		t.Fatalf("kernel: %d, %d bytes", w.Code, w.Body.Len())
	}
	w = do(t, h, "GET", bootapi.PathClientInitramfs, "10.9.0.50:3", nil, "Range", "bytes=10-13")
	if w.Code != http.StatusPartialContent || w.Body.String() != "abcd" {
		t.Fatalf("range: %d %q", w.Code, w.Body.String())
	}
	if st := s.Machines()[0].Stage; st != bootapi.StageIPXE {
		t.Errorf("a partial download moved the stage to %s", st)
	}
	w = do(t, h, "GET", bootapi.PathClientInitramfs, "10.9.0.50:3", nil)
	if w.Code != 200 || w.Body.String() != "0123456789abcdefghij" {
		t.Fatalf("initramfs: %d %q", w.Code, w.Body.String())
	}
	if st := s.Machines()[0].Stage; st != bootapi.StageClient {
		t.Errorf("stage after initramfs = %s", st)
	}
	// Many ranges: a 416 (webseed.ServeContent, the one range rule),
	// not a multipart body larger than the file.
	rs := "bytes=0-0"
	for i := 1; i < 100; i++ {
		rs += fmt.Sprintf(",%d-%d", i%20, i%20)
	}
	w = do(t, h, "GET", bootapi.PathClientKernel, "10.9.0.51:1", nil, "Range", rs)
	if w.Code != 416 || w.Body.Len() > 100 {
		t.Errorf("many ranges: %d, %d bytes", w.Code, w.Body.Len())
	}
	// Paths beneath the client files do not exist.
	for _, p := range []string{bootapi.PathClientKernel + "/../../etc/passwd", "/client/../etc/passwd", "/client/", "/client/vmlinuz/x"} {
		w = do(t, h, "GET", p, "10.9.0.51:1", nil)
		if w.Code == 200 {
			t.Errorf("GET %s: 200 %q", p, bootapi.Truncate(w.Body.String(), 40))
		}
	}
	// A missing file is a clear 503, not a path in the body.
	s.opts.ClientInitramfs = filepath.Join(t.TempDir(), "gone")
	w = do(t, h, "GET", bootapi.PathClientInitramfs, "10.9.0.51:1", nil)
	if w.Code != 503 || strings.Contains(w.Body.String(), "gone") {
		t.Errorf("missing file: %d %q", w.Code, w.Body.String())
	}
}

func TestBootAPI(t *testing.T) {
	s, _ := testServer(t)
	h := s.Handler()
	w := do(t, h, "GET", "/api/v1/boot?mac=52:54:00:00:00:09", "10.9.0.9:1", nil)
	var b bootapi.Boot
	if err := json.Unmarshal(w.Body.Bytes(), &b); err != nil || w.Code != 200 {
		t.Fatalf("%d %v %s", w.Code, err, w.Body)
	}
	if b.MAC != "52:54:00:00:00:09" || b.Machine != "pc9" || b.PinnedOS != "debian" || b.DefaultOS != "alpine" ||
		b.TimeoutMS != 7000 || b.SeedMS != 30000 || b.ReportMS != 2000 || len(b.Trackers) != 1 {
		t.Errorf("boot = %+v", b)
	}
	if len(b.Menu) != 2 || b.Menu[0].Name != "debian" || b.Menu[1].Name != "alpine" {
		t.Errorf("menu not in boot.menu order without hidden: %+v", b.Menu)
	}
	w = do(t, h, "GET", "/api/v1/boot?mac=52:54:00:00:00:10", "10.9.0.10:1", nil)
	b = bootapi.Boot{}
	json.Unmarshal(w.Body.Bytes(), &b)
	if b.PinnedOS != "" || b.Machine != "" {
		t.Errorf("unpinned machine got %+v", b)
	}
	forever, _ := testServerWith(t, func(o *Options) { o.Boot.Timeout = -time.Second })
	w = do(t, forever.Handler(), "GET", "/api/v1/boot?mac=52:54:00:00:00:10", "10.9.0.10:1", nil)
	json.Unmarshal(w.Body.Bytes(), &b)
	if b.TimeoutMS != -1 {
		t.Errorf("forever timeout = %d", b.TimeoutMS)
	}
	for _, q := range []string{"", "?mac=zz", "?mac=" + strings.Repeat("a", 5000), "?mac=00:00:00:00:00:00", "?mac=ff:ff:ff:ff:ff:ff"} {
		if w := do(t, h, "GET", "/api/v1/boot"+q, "10.9.0.10:1", nil); w.Code != 400 {
			t.Errorf("boot%s: %d", q, w.Code)
		}
	}
	// The all-zero and broadcast MACs are no machine's: the boot script
	// ignores them and nothing registers them.
	for _, mac := range []string{"00:00:00:00:00:00", "ff:ff:ff:ff:ff:ff"} {
		w := do(t, h, "GET", "/boot.ipxe?mac="+mac, "10.9.0.11:1", nil)
		if w.Code != 200 || strings.Contains(w.Body.String(), mac) {
			t.Errorf("boot.ipxe?mac=%s: %d, script names it:\n%s", mac, w.Code, w.Body)
		}
		if code := report(t, h, "10.9.0.11:1", bootapi.Report{MAC: mac, Stage: bootapi.StageMenu}); code != 400 {
			t.Errorf("report from %s: %d, want 400", mac, code)
		}
	}
	for _, m := range s.reg.Snapshot() {
		if m.MAC == "00:00:00:00:00:00" || m.MAC == "ff:ff:ff:ff:ff:ff" {
			t.Errorf("registry holds %s", m.MAC)
		}
	}
}

func report(t testing.TB, h http.Handler, remote string, r bootapi.Report) int {
	b, _ := json.Marshal(r)
	return do(t, h, "POST", bootapi.PathReport, remote, bytes.NewReader(b)).Code
}

func TestReportsAndPeers(t *testing.T) {
	var skew atomic.Int64 // the registry's clock runs ahead by this much
	s, _ := testServerWith(t, func(o *Options) {
		o.Registry = registry.New(registry.Options{Now: func() time.Time { return time.Now().Add(time.Duration(skew.Load())) }})
	})
	h := s.Handler()
	macA, macB, macC := "52:54:00:00:00:0a", "52:54:00:00:00:0b", "52:54:00:00:00:0c"
	if c := report(t, h, "10.9.0.30:5", bootapi.Report{MAC: strings.ToUpper(macA), Stage: bootapi.StageDownload, OS: "debian",
		ListenPort: 6881, BytesTotal: 1000, BytesDone: 250, FromPeers: 100, FromSeeder: 150}); c != 204 {
		t.Fatalf("report: %d", c)
	}
	report(t, h, "10.9.0.40:5", bootapi.Report{MAC: strings.ReplaceAll(macB, ":", "-"), Stage: bootapi.StageSeeding, OS: "debian", ListenPort: 7000, BytesTotal: 1000, BytesDone: 1000})
	report(t, h, "10.9.0.41:5", bootapi.Report{MAC: macC, Stage: bootapi.StageDownload, OS: "alpine", ListenPort: 7000})

	w := do(t, h, "GET", "/api/v1/peers?os=debian&mac="+macA, "10.9.0.30:9", nil)
	var p bootapi.Peers
	json.Unmarshal(w.Body.Bytes(), &p)
	// The seeder first, the registry's machines on the same OS, then the
	// catalog's other peers (the asker excluded), no duplicates.
	want := []string{"10.9.0.1:6881", "10.9.0.40:7000", "10.9.0.31:6881"}
	if fmt.Sprint(p.Peers) != fmt.Sprint(want) {
		t.Errorf("peers = %v, want %v", p.Peers, want)
	}
	// A reported first, B second: two shares of debian's pieces; alpine's
	// machine has a share of its own OS only.
	if p.ShareIndex != 0 || p.ShareCount != 2 {
		t.Errorf("share of A = %d/%d, want 0/2", p.ShareIndex, p.ShareCount)
	}
	if i, n := s.reg.Share("debian", macB); i != 1 || n != 2 {
		t.Errorf("share of B = %d/%d, want 1/2", i, n)
	}
	if i, n := s.reg.Share("alpine", macC); i != 0 || n != 1 {
		t.Errorf("share of C = %d/%d, want 0/1", i, n)
	}
	// A machine that has not reported yet comes last.
	if i, n := s.reg.Share("debian", "52:54:00:00:00:0d"); i != 2 || n != 3 {
		t.Errorf("share of a newcomer = %d/%d, want 2/3", i, n)
	}
	for _, q := range []string{"?os=debian", "?mac=" + macA, "?os=nope&mac=" + macA, "?os=" + strings.Repeat("x", 100) + "&mac=" + macA} {
		if w := do(t, h, "GET", "/api/v1/peers"+q, "10.9.0.30:9", nil); w.Code < 400 {
			t.Errorf("peers%s: %d", q, w.Code)
		}
	}

	var ms []bootapi.Machine
	w = do(t, h, "GET", bootapi.PathMachines, "127.0.0.1:1", nil)
	if err := json.Unmarshal(w.Body.Bytes(), &ms); err != nil || len(ms) != 3 {
		t.Fatalf("machines: %v %s", err, w.Body)
	}
	a := ms[0]
	if a.MAC != macA || a.IP != "10.9.0.30" || a.Progress != 0.25 || a.FromPeers != 100 || a.FromSeeder != 150 || a.OS != "debian" {
		t.Errorf("machine a = %+v", a)
	}
	if _, ok := a.Stages[bootapi.StageDownload]; !ok {
		t.Errorf("stages = %v", a.Stages)
	}

	// Bad reports are refused and change nothing.
	for _, body := range []string{
		`{"mac":"52:54:00:00:00:0a","stage":"nonsense"}`,
		`{"mac":"52:54:00:00:00:0a","stage":"download","bytes_done":-1}`,
		`{"mac":"xx","stage":"download"}`,
		`{"mac":"00:00:00:00:fe:80:00:00:00:00:00:00:02:00:5e:10:00:00:00:01","stage":"download"}`,
		`{"mac":"52:54:00:00:00:0a","stage":"download","extra":1}`,
		`{"mac":"52:54:00:00:00:0a","stage":"download","message":"` + strings.Repeat("x", 20000) + `"}`,
		`not json`,
	} {
		w := do(t, h, "POST", bootapi.PathReport, "10.9.0.30:5", strings.NewReader(body))
		if w.Code != 400 {
			t.Errorf("report %q: %d", bootapi.Truncate(body, 60), w.Code)
		}
	}
	if m := s.Machines()[0]; m.Stage != bootapi.StageDownload || m.BytesDone != 250 {
		t.Errorf("bad report changed the machine: %+v", m)
	}
	// Starting over (a new DHCP) clears the download figures.
	s.reg.Observe(macA, netip.MustParseAddr("10.9.0.30"), "bios", bootapi.StageDHCP)
	if m := s.Machines()[0]; m.Stage != bootapi.StageDHCP || m.BytesDone != 0 || m.OS != "" || m.Arch != "bios" {
		t.Errorf("after restart: %+v", m)
	}
	if got := s.reg.Peers("debian", "", 10); len(got) != 1 {
		t.Errorf("registry peers after restart = %v", got)
	}
	// A machine silent for longer than swarm.PeerMaxAge is no longer a peer.
	skew.Store(int64(swarm.PeerMaxAge + time.Second))
	if got := s.reg.Peers("debian", "", 10); len(got) != 0 {
		t.Errorf("stale peers handed out: %v", got)
	}
	if i, n := s.reg.Share("debian", macA); i != 0 || n != 1 {
		t.Errorf("share with only stale machines = %d/%d, want 0/1", i, n)
	}
}

func FuzzMACFromQuery(f *testing.F) {
	for _, s := range []string{"mac=52:54:00:12:34:56", "mac=52-54-00-12-34-56", "mac=", "mac=%00", "a=b&mac=zz", "%", "mac=${net0/mac}"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, q string) {
		mac, err := bootapi.MACFromQuery(q)
		if err != nil {
			return
		}
		if mac != "" && (len(mac) != 17 || strings.Trim(mac, "0123456789abcdef:") != "") {
			t.Fatalf("accepted %q as %q", q, mac)
		}
		script := BootScript(ScriptOptions{Base: "http://10.0.0.1:8080", MAC: mac})
		if strings.Count(script, "\n") != strings.Count(BootScript(ScriptOptions{Base: "http://10.0.0.1:8080", MAC: "52:54:00:00:00:00"}), "\n") {
			t.Fatalf("query %q changed the script's shape", q)
		}
	})
}

func FuzzReport(f *testing.F) {
	f.Add([]byte(`{"mac":"52:54:00:00:00:0a","stage":"download","os":"debian","listen_port":6881,"bytes_total":10,"bytes_done":5}`))
	f.Add([]byte(`{"mac":"52:54:00:00:00:0a","stage":"failed","message":"kexec refused"}`))
	f.Add([]byte(`{"mac":"52:54:00:00:00:0a","stage":"seeding","bytes_total":1,"bytes_done":99999}`))
	f.Add([]byte(`{}`))
	f.Add([]byte(`[`))
	s, _ := testServer(f)
	h := s.Handler()
	f.Fuzz(func(t *testing.T, body []byte) {
		w := do(t, h, "POST", bootapi.PathReport, "10.9.0.30:5", bytes.NewReader(body))
		if w.Code != 204 && w.Code != 400 {
			t.Fatalf("status %d", w.Code)
		}
		for _, m := range s.Machines() {
			if m.Progress < 0 || m.Progress > 1 {
				t.Fatalf("progress %v", m.Progress)
			}
		}
	})
}

func TestParseARP(t *testing.T) {
	table := []byte(`IP address       HW type     Flags       HW address            Mask     Device
10.77.0.140      0x1         0x2         52:54:00:AB:64:cd     *        eth0
10.77.0.141      0x1         0x0         00:00:00:00:00:00     *        eth0
10.77.0.142      0x1         0x2         00:00:00:00:00:00     *        eth0
garbage
`)
	for ip, want := range map[string]string{"10.77.0.140": "52:54:00:ab:64:cd", "10.77.0.141": "", "10.77.0.142": "", "10.77.0.14": ""} {
		if got := parseARP(table, netip.MustParseAddr(ip)); got != want {
			t.Errorf("%s: %q, want %q", ip, got, want)
		}
	}
	// The real table of this namespace parses (loopback has no entries).
	if n := openNeighbors(); n != nil {
		defer n.close()
		if got := n.lookup(netip.MustParseAddr("127.0.0.1")); got != "" {
			t.Errorf("loopback in ARP: %q", got)
		}
	}
}

var update = flag.Bool("update", false, "rewrite golden files in testdata/")

// TestBootScriptGolden keeps the exact script iPXE runs in
// testdata/boot.ipxe.golden (go test -run Golden -update rewrites it).
func TestBootScriptGolden(t *testing.T) {
	got := BootScript(ScriptOptions{Base: "http://10.0.0.1:8080", MAC: "52:54:00:12:34:56", Cmdline: "quiet"}) +
		"#--- without a MAC\n" + BootScript(ScriptOptions{Base: "http://10.0.0.1:8080"})
	file := filepath.Join("testdata", "boot.ipxe.golden")
	if *update {
		if err := os.WriteFile(file, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(file)
	if err != nil {
		t.Fatalf("%v (run with -update to create it)", err)
	}
	if got != string(want) {
		t.Errorf("boot script changed; if intended, run go test -run Golden -update\ngot:\n%s\nwant:\n%s", got, want)
	}
}

func TestBadInputLogsAreRateLimited(t *testing.T) {
	var buf nstest.Buffer
	s, _ := testServerWith(t, func(o *Options) { o.Logger = slog.New(slog.NewTextHandler(&buf, nil)) })
	h := s.Handler()
	for range 100 {
		do(t, h, "POST", bootapi.PathReport, "10.9.0.30:5", strings.NewReader(`{"mac":"zz","stage":"download"}`))
		do(t, h, "GET", "/boot.ipxe?mac=zz", "10.9.0.30:5", nil)
	}
	logs := buf.String()
	if n := strings.Count(logs, "bad client report"); n != 1 {
		t.Errorf("%d report warnings for 100 bad reports", n)
	}
	if n := strings.Count(logs, "ignoring bad mac"); n != 1 {
		t.Errorf("%d mac warnings for 100 bad queries", n)
	}
}

func TestRouterSolicitation(t *testing.T) {
	rs := []byte{133, 0, 0, 0, 0, 0, 0, 0, 1, 1, 0x52, 0x54, 0, 0xab, 0xcd, 0xef}
	if mac, ok := parseRouterSolicitation(rs, nil); !ok || mac != "52:54:00:ab:cd:ef" {
		t.Errorf("with option: %q %v", mac, ok)
	}
	ll := &net.IPAddr{IP: net.ParseIP("fe80::5054:ff:fe8f:c155")}
	if mac, ok := parseRouterSolicitation(rs[:8], ll); !ok || mac != "52:54:00:8f:c1:55" {
		t.Errorf("from EUI-64: %q %v", mac, ok)
	}
	for _, bad := range [][]byte{rs[:4], {134, 0, 0, 0, 0, 0, 0, 0}, {133, 1, 0, 0, 0, 0, 0, 0}, append(rs[:8:8], 1, 0, 1, 2)} {
		if mac, ok := parseRouterSolicitation(bad, nil); ok {
			t.Errorf("%x accepted as %q", bad, mac)
		}
	}
	ra := routerAdvertisement(net.HardwareAddr{2, 0, 0, 0, 0, 1})
	if len(ra) != 24 || ra[0] != 134 || ra[6] != 0 || ra[7] != 0 || ra[5] != 0 {
		t.Errorf("RA %x: want type 134, router lifetime 0, no flags", ra)
	}
}

func FuzzRouterSolicitation(f *testing.F) {
	f.Add([]byte{133, 0, 0, 0, 0, 0, 0, 0, 1, 1, 0x52, 0x54, 0, 0xab, 0xcd, 0xef}, "fe80::1")
	f.Add([]byte{133, 0, 0, 0, 0, 0, 0, 0}, "fe80::5054:ff:fe8f:c155")
	f.Add([]byte{133, 0, 0, 0, 0, 0, 0, 0, 3, 0}, "::")
	f.Fuzz(func(t *testing.T, b []byte, src string) {
		var a net.Addr
		if ip := net.ParseIP(src); ip != nil {
			a = &net.IPAddr{IP: ip}
		}
		mac, ok := parseRouterSolicitation(b, a)
		if ok {
			if _, err := bootapi.ParseMAC(mac); err != nil {
				t.Fatalf("returned %q: %v", mac, err)
			}
		}
	})
}

// shufflingCatalog answers like the seeder's tracker: the seeder first,
// then its peers in a new random order every time.
type shufflingCatalog struct {
	fakeCatalog
	rng *rand.Rand
}

func (c *shufflingCatalog) Peers(os string, exclude netip.Addr, n int) []netip.AddrPort {
	ps := slices.Clone(c.peers[1:])
	c.rng.Shuffle(len(ps), func(i, j int) { ps[i], ps[j] = ps[j], ps[i] })
	out := []netip.AddrPort{c.peers[0]}
	for _, p := range ps {
		if p.Addr() != exclude && len(out) < n {
			out = append(out, p)
		}
	}
	return out
}

// TestPeersForStable: with more machines than one answer lists, a
// machine's answer is the seeder and then the same peers every time,
// whatever order the tracker hands them out in, and different machines
// get different peers.
func TestPeersForStable(t *testing.T) {
	seeder := netip.MustParseAddrPort("10.9.0.1:6881")
	cat := &shufflingCatalog{fakeCatalog{peers: []netip.AddrPort{seeder}}, rand.New(rand.NewPCG(1, 2))}
	s, _ := testServerWith(t, func(o *Options) { o.Catalog = cat })
	h := s.Handler()
	const n = 100
	for i := range n {
		ip := netip.AddrFrom4([4]byte{10, 9, 0, byte(100 + i)})
		cat.peers = append(cat.peers, netip.AddrPortFrom(ip, 6881))
		// Half the machines report (the registry knows them), the others
		// only announced to the tracker.
		if i%2 == 0 {
			report(t, h, ip.String()+":5", bootapi.Report{MAC: fmt.Sprintf("52:54:00:00:01:%02x", i), Stage: bootapi.StageDownload,
				OS: "debian", ListenPort: 6881, BytesTotal: 1000})
		}
	}
	ask := func(i int) []string {
		ip := netip.AddrFrom4([4]byte{10, 9, 0, byte(100 + i)})
		return s.API().PeersFor("debian", fmt.Sprintf("52:54:00:00:01:%02x", i), ip)
	}
	a := ask(3)
	if len(a) != swarm.MaxPeers || a[0] != seeder.String() {
		t.Fatalf("answer = %v: want %d peers, the seeder first", a, swarm.MaxPeers)
	}
	if slices.Contains(a, "10.9.0.103:6881") {
		t.Errorf("the asker is in its own answer: %v", a)
	}
	for range 5 {
		if b := ask(3); !slices.Equal(a, b) {
			t.Fatalf("the answer changed between two asks:\n%v\n%v", a, b)
		}
	}
	if b := ask(4); slices.Equal(a[1:], b[1:]) {
		t.Errorf("two machines got the same peers: %v", a)
	}
}

// An unchanged Peers answer is a 304 without a body when the client sends
// the ETag it got; a change in the class is a 200 with a new ETag. The
// report interval grows with the class.
func TestPeersNotModified(t *testing.T) {
	s, _ := testServer(t)
	h := s.Handler()
	macA := "52:54:00:00:00:0a"
	report(t, h, "10.9.0.30:5", bootapi.Report{MAC: macA, Stage: bootapi.StageDownload, OS: "debian", ListenPort: 6881})
	target := "/api/v1/peers?os=debian&mac=" + macA
	w := do(t, h, "GET", target, "10.9.0.30:9", nil)
	tag := w.Header().Get("ETag")
	if w.Code != 200 || tag == "" || w.Body.Len() == 0 {
		t.Fatalf("first answer: %d, ETag %q, %d bytes", w.Code, tag, w.Body.Len())
	}
	var p bootapi.Peers
	if err := json.Unmarshal(w.Body.Bytes(), &p); err != nil || p.ReportMS != swarm.ReportInterval.Milliseconds() {
		t.Fatalf("answer %s: %v, report interval %d ms, want %d", w.Body, err, p.ReportMS, swarm.ReportInterval.Milliseconds())
	}
	w = do(t, h, "GET", target, "10.9.0.30:9", nil, "If-None-Match", tag)
	if w.Code != http.StatusNotModified || w.Body.Len() != 0 || w.Header().Get("ETag") != tag {
		t.Fatalf("unchanged answer: %d, %d bytes, ETag %q (want 304, empty, %q)", w.Code, w.Body.Len(), w.Header().Get("ETag"), tag)
	}
	if w = do(t, h, "GET", target, "10.9.0.30:9", nil, "If-None-Match", `"0000000000000000"`); w.Code != 200 || w.Body.Len() == 0 {
		t.Fatalf("stale ETag: %d, %d bytes, want the full answer", w.Code, w.Body.Len())
	}
	// Another machine arrives: the answer changes.
	report(t, h, "10.9.0.40:5", bootapi.Report{MAC: "52:54:00:00:00:0b", Stage: bootapi.StageDownload, OS: "debian", ListenPort: 7000})
	w = do(t, h, "GET", target, "10.9.0.30:9", nil, "If-None-Match", tag)
	if w.Code != 200 || w.Header().Get("ETag") == tag || !strings.Contains(w.Body.String(), "10.9.0.40:7000") {
		t.Fatalf("changed answer: %d, ETag %q (old %q): %s", w.Code, w.Header().Get("ETag"), tag, w.Body)
	}
}
