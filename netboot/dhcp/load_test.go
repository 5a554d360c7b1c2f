package dhcp

import (
	"context"
	"encoding/hex"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/boottorrent/boottorrent/netboot/netns/nstest"
	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/iana"
)

// BenchmarkPerfdhcp runs Kea's perfdhcp in a namespace against full mode
// (10.0.0.0/16, a range of 65,000 addresses, lease file on disk), with
// many simulated MACs sending PXE options (60 PXEClient, 93 BIOS): DORA
// exchanges per second, drops, and the server's heap and RSS before and
// after. Run it alone, it loads the machine:
//
//	go test ./netboot/dhcp -run XXX -bench Perfdhcp -benchtime 1x
//
// PERFDHCP_RATE (default 0 = as fast as possible), PERFDHCP_SECONDS
// (default 10) and PERFDHCP_CLIENTS (default 20000) tune it.
func BenchmarkPerfdhcp(b *testing.B) {
	nstest.Skip(b)
	if _, err := exec.LookPath("perfdhcp"); err != nil {
		b.Skip("needs Kea's perfdhcp: apt-get install kea-admin")
	}
	rate := envInt("PERFDHCP_RATE", 0)
	seconds := envInt("PERFDHCP_SECONDS", 10)
	clients := envInt("PERFDHCP_CLIENTS", 20000)

	_, hosts := nstest.LAN(b, "10.0.0.1/16", "10.0.0.2/16")
	srvNS, cliNS := hosts[0], hosts[1]
	dir := b.TempDir()
	opt := Options{
		Mode: ModeFull, Interface: "eth0", ServerIP: mustAddr("10.0.0.1"), Prefix: netip.MustParsePrefix("10.0.0.0/16"),
		First: mustAddr("10.0.1.0"), Last: mustAddr("10.0.255.254"), LeaseTime: time.Hour,
		LeaseFile: filepath.Join(dir, "leases.json"),
		BIOSFile:  "undionly.kpxe", UEFIFile: "ipxe.efi", TFTP: true, HTTPBase: "http://10.0.0.1:8080",
		Logger: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})),
	}
	s, err := New(opt)
	if err != nil {
		b.Fatal(err)
	}
	var c67 net.PacketConn
	if err := srvNS.Do(func() error { c67, err = Listen("eth0", ServerPort); return err }); err != nil {
		b.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- s.Serve(c67, nil) }()
	defer func() { s.Close(); <-done }()

	heap0, rss0 := memNow()
	args := []string{"-4", "-l", "10.0.0.2", "-R", strconv.Itoa(clients), "-p", strconv.Itoa(seconds),
		"-o", "60," + hex.EncodeToString([]byte("PXEClient:Arch:00000:UNDI:002001")), "-o", "93,0000",
		"-x", "e"}
	if rate > 0 {
		args = append(args, "-r", strconv.Itoa(rate))
	}
	args = append(args, "10.0.0.1")
	b.ResetTimer()
	ctx, cancel := context.WithTimeout(context.Background(), time.Duration(seconds+60)*time.Second)
	defer cancel()
	out, err := cliNS.Command(ctx, "perfdhcp", args...).CombinedOutput()
	b.StopTimer()
	// perfdhcp exits 3 when packets were dropped; the figures are what counts.
	if err != nil && !strings.Contains(string(out), "received packets") {
		b.Fatalf("perfdhcp: %v\n%s", err, out)
	}
	heap1, rss1 := memNow()
	st := s.Stats()

	sent := allInts(`sent packets: (\d+)`, out)
	recv := allInts(`received packets: (\d+)`, out)
	drops := allInts(`drops: (\d+)`, out)
	if len(sent) < 2 || len(recv) < 2 {
		b.Fatalf("cannot read perfdhcp's report:\n%s", out)
	}
	acks := recv[1]
	b.ReportMetric(float64(acks)/float64(seconds), "leases/s")
	b.ReportMetric(float64(drops[0]+drops[1]), "drops")
	b.ReportMetric(float64(heap1-heap0)/(1<<20), "heapMB-growth")
	b.Logf("perfdhcp -R %d -p %d rate %d: DISCOVER sent %d, OFFER received %d (drops %d); REQUEST sent %d, ACK received %d (drops %d); %.0f leases/s",
		clients, seconds, rate, sent[0], recv[0], drops[0], sent[1], recv[1], drops[1], float64(acks)/float64(seconds))
	b.Logf("server: %+v", st)
	b.Logf("server memory: heap %.1f MB -> %.1f MB, RSS %.1f MB -> %.1f MB (the test binary's process)",
		float64(heap0)/(1<<20), float64(heap1)/(1<<20), float64(rss0)/(1<<20), float64(rss1)/(1<<20))
	if m := regexp.MustCompile(`(?m)^Rate: .*$`).Find(out); m != nil {
		b.Logf("perfdhcp %s", m)
	}
}

func envInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil {
		return v
	}
	return def
}

func allInts(re string, out []byte) []int {
	var r []int
	for _, m := range regexp.MustCompile(re).FindAllSubmatch(out, -1) {
		n, _ := strconv.Atoi(string(m[1]))
		r = append(r, n)
	}
	return r
}

// memNow is the live heap after a GC and the process's resident set.
func memNow() (heap, rss uint64) {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	if data, err := os.ReadFile("/proc/self/status"); err == nil {
		for _, line := range strings.Split(string(data), "\n") {
			if f := strings.Fields(line); len(f) >= 2 && f[0] == "VmRSS:" {
				kb, _ := strconv.ParseUint(f[1], 10, 64)
				rss = kb * 1024
			}
		}
	}
	return ms.HeapAlloc, rss
}

// BenchmarkHandleDORA measures the handler alone (no sockets): one
// DISCOVER and one REQUEST from a new PXE client per iteration, with the
// lease journal on disk.
func BenchmarkHandleDORA(b *testing.B) {
	opt := testOptions(ModeFull)
	opt.Prefix = netip.MustParsePrefix("10.0.0.0/8")
	opt.First, opt.Last = mustAddr("10.1.0.0"), mustAddr("10.255.255.254")
	opt.LeaseFile = filepath.Join(b.TempDir(), "leases.json")
	s, err := New(opt)
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	now := time.Now()
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		mac := net.HardwareAddr{0x02, 0, byte(i >> 24), byte(i >> 16), byte(i >> 8), byte(i)}
		d, _ := dhcpv4.NewDiscovery(mac, dhcpv4.WithOption(dhcpv4.OptClassIdentifier("PXEClient:Arch:00000:UNDI:002001")),
			dhcpv4.WithOption(dhcpv4.OptClientArch(iana.INTEL_X86PC)))
		req, _ := parseRequest(d.ToBytes())
		offer := s.handle(req, ServerPort, nil, now)
		if offer == nil {
			b.Fatal("no offer")
		}
		offer.msg.ToBytes()
		rq, _ := dhcpv4.NewRequestFromOffer(offer.msg)
		req, _ = parseRequest(rq.ToBytes())
		if ack := s.handle(req, ServerPort, nil, now); ack == nil || ack.msg.MessageType() != dhcpv4.MessageTypeAck {
			b.Fatal(fmt.Sprint("no ack: ", ack))
		}
	}
}
