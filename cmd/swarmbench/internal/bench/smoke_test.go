package bench

import (
	"context"
	"log/slog"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/boottorrent/boottorrent/netboot/netns/nstest"
)

func TestMain(m *testing.M) {
	// The smoke test runs this test binary as the harness's HTTP server
	// and client inside the namespaces.
	if h := os.Getenv(HelperEnv); h != "" {
		os.Exit(Helper(h, os.Args[1:], os.Stdout, os.Stderr))
	}
	nstest.Main(m)
}

// ourNamespaces lists the namespaces this process created.
func ourNamespaces(t *testing.T) []string {
	ents, _ := os.ReadDir("/run/netns")
	var out []string
	prefix := "bt" + strconv.Itoa(os.Getpid()) + "x"
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), prefix) {
			out = append(out, e.Name())
		}
	}
	return out
}

// needLAN skips a test that builds a shaped LAN where that cannot work,
// naming what is missing (CI runs as root with every tool installed).
func needLAN(t *testing.T) {
	t.Helper()
	nstest.Skip(t)
	for _, tool := range []string{"tc", "ethtool", "nft"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("needs %s: apt-get install iproute2 ethtool nftables", tool)
		}
	}
}

// TestHarnessSmoke builds a real shaped LAN with two clients, runs the
// harness's own HTTP baseline over it (no boottorrent), and checks that the
// shaping holds (nothing beats the physical bound), the counters see the
// bytes, the report is complete, and nothing is left behind.
func TestHarnessSmoke(t *testing.T) {
	needLAN(t)
	const size = 4 << 20
	rep, c := runOneCase(t, 90*time.Second, Options{
		Engine: EngineHarness, Clients: []int{2}, Size: size, Rate: 20e6, ServerRate: 20e6, Loss: 0.001,
		Timeout: 60 * time.Second,
	})
	if c.HTTPCompleted != 2 || c.HTTPAllCompleteS <= 0 {
		t.Fatalf("HTTP baseline did not complete: %+v", c)
	}
	// Two 4 MiB copies through a 20 Mbit/s server link need at least
	// 3.36 s; if the shaping did not hold, loopback-speed veths would
	// finish in milliseconds.
	if c.HTTPAllCompleteS < 0.95*c.HTTPBoundS {
		t.Errorf("HTTP took %.2f s, below the bound %.2f s: the links are not shaped", c.HTTPAllCompleteS, c.HTTPBoundS)
	}
	if c.HTTPServerEgressBytes < 2*size {
		t.Errorf("server egress %d bytes, want at least %d", c.HTTPServerEgressBytes, 2*size)
	}
	// The harness serves both copies from its HTTP port and runs no
	// seeder. Offloads are off (loss), so every counted IP packet is one
	// frame: the kinds add up to the link's count less the Ethernet
	// headers (and ARP, IPv6), read a few milliseconds apart.
	k := c.HTTPServerEgressKinds
	if k[KindHTTP].Bytes < 2*size {
		t.Errorf("http egress %d bytes, want at least %d: %v", k[KindHTTP].Bytes, 2*size, k)
	}
	if k[KindSeederData].Packets != 0 || k[KindSeederSmall].Packets != 0 {
		t.Errorf("seeder egress without a seeder: %v", k)
	}
	if r := float64(k.Bytes()) / float64(c.HTTPServerEgressBytes); r < 0.9 || r > 1.05 {
		t.Errorf("the kinds add up to %d bytes, %.3f of the link's %d", k.Bytes(), r, c.HTTPServerEgressBytes)
	}
	if c.ServerEgressKinds != nil {
		t.Errorf("egress kinds of a BitTorrent phase that did not run: %v", c.ServerEgressKinds)
	}
	if c.MeasuredS <= 0 || c.MemPeakBytes <= 0 {
		t.Errorf("machine not sampled: %+v", c)
	}
	logReportLines(t, rep, "egress by kind")
}

// TestLabSmoke runs the lab engine (anacrolix/torrent's seeder and
// leechers, this test binary as the helpers) with two clients over a
// shaped LAN and checks the server's egress by kind: every piece leaves
// the seeder at least once (the lab has no web seed, and the clients
// only the seeder to get them from at first), as piece data.
func TestLabSmoke(t *testing.T) {
	needLAN(t)
	const size = 4 << 20
	rep, c := runOneCase(t, 150*time.Second, Options{
		Engine: EngineLab, Clients: []int{2}, Size: size, Rate: 20e6, ServerRate: 20e6, LabPiece: 256 << 10,
		Timeout: 90 * time.Second, SeedTime: time.Second, SkipHTTP: true,
	})
	k := c.ServerEgressKinds
	if k[KindSeederData].Bytes < size*8/10 {
		t.Errorf("seeder data %d bytes, want at least 80 %% of the image's %d: %v", k[KindSeederData].Bytes, size, k)
	}
	if k[KindSeederSmall].Packets == 0 {
		t.Errorf("no small packets from the seeder (handshakes, ACKs): %v", k)
	}
	// Offloads are off by default here, so an IP packet is a frame; the
	// link also counts Ethernet headers, ARP and IPv6.
	if r := float64(k.Bytes()) / float64(c.ServerEgressBytes); r < 0.9 || r > 1.05 {
		t.Errorf("the kinds add up to %d bytes, %.3f of the link's %d: %v", k.Bytes(), r, c.ServerEgressBytes, k)
	}
	logReportLines(t, rep, "egress by kind")
}

// runOneCase runs the benchmark for one case (o.Clients holds one count)
// within limit, with this test binary as the helpers, its output in a
// temporary folder and its log in the test's, and checks that it left no
// namespace behind and that the case ran without errors.
func runOneCase(t *testing.T, limit time.Duration, o Options) (*Report, Case) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), limit)
	defer cancel()
	o.Out, o.Self = t.TempDir(), os.Args[0]
	o.Log = slog.New(slog.NewTextHandler(testWriter{t}, nil))
	rep, err := Run(ctx, o)
	if err != nil {
		t.Fatal(err)
	}
	if left := ourNamespaces(t); len(left) != 0 {
		t.Errorf("namespaces left behind: %v", left)
	}
	if len(rep.Cases) != 1 {
		t.Fatalf("%d cases", len(rep.Cases))
	}
	c := rep.Cases[0]
	if len(c.Errors) > 0 {
		t.Fatalf("errors: %v", c.Errors)
	}
	return rep, c
}

// logReportLines logs the report's lines that hold substr, so that a
// test run shows what a real report says.
func logReportLines(t *testing.T, rep *Report, substr string) {
	t.Helper()
	var b strings.Builder
	if err := rep.WriteTable(&b); err != nil {
		t.Fatal(err)
	}
	found := false
	for _, line := range strings.Split(b.String(), "\n") {
		if strings.Contains(line, substr) {
			t.Log(line)
			found = true
		}
	}
	if !found {
		t.Errorf("report has no line with %q:\n%s", substr, b.String())
	}
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

// TestLANCongestion builds a one-client LAN with --congestion reno (an
// algorithm every kernel has, and not this machine's or Linux's default,
// so a namespace that kept the default would show) and checks that both
// hosts run it, that the case can be torn down, and that the host-wide
// allowed list is as it was.
func TestLANCongestion(t *testing.T) {
	needLAN(t)
	const allowedPath = "/proc/sys/net/ipv4/tcp_allowed_congestion_control"
	before, err := os.ReadFile(allowedPath)
	if err != nil {
		t.Fatal(err)
	}
	link := Shape{Rate: 20e6}
	lan, err := NewLAN(context.Background(), 1, LinkShape{ServerUp: link, ServerDown: link, ClientUp: link, ClientDown: link, Congestion: "reno"}, true)
	if err != nil {
		t.Fatal(err)
	}
	for _, h := range []Host{lan.Server, lan.Clients[0]} {
		out, err := h.NS.Run("cat", "/proc/sys/net/ipv4/tcp_congestion_control")
		if err != nil {
			t.Error(err)
		} else if got := strings.TrimSpace(string(out)); got != "reno" {
			t.Errorf("%s runs %q, want reno", h.NS.Name, got)
		}
	}
	if err := lan.Close(); err != nil {
		t.Error(err)
	}
	if left := ourNamespaces(t); len(left) != 0 {
		t.Errorf("namespaces left behind: %v", left)
	}
	after, err := os.ReadFile(allowedPath)
	if err != nil {
		t.Fatal(err)
	}
	if string(after) != string(before) {
		t.Errorf("allowed list %q after the run, was %q", after, before)
	}
}
