package seeder

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"testing"
	"time"

	alog "github.com/anacrolix/log"
	"github.com/anacrolix/torrent"
	"github.com/anacrolix/torrent/metainfo"
	"github.com/anacrolix/torrent/storage"
)

// benchSize is the OS size of the benchmarks (the issue asks for 256 MiB).
const benchSize = 256 << 20

// BenchmarkHash measures piece hashing of a 256 MiB OS on one core and on
// all cores (MB/s is reported by -bench as the throughput).
func BenchmarkHash(b *testing.B) {
	dir := b.TempDir()
	writeRandom(b, filepath.Join(dir, "initrd.img"), benchSize-8<<20)
	writeRandom(b, filepath.Join(dir, "vmlinuz"), 8<<20)
	d, err := openData(dir, []string{"initrd.img", "vmlinuz"})
	if err != nil {
		b.Fatal(err)
	}
	defer d.Close()
	for _, workers := range []int{1, runtime.GOMAXPROCS(0)} {
		b.Run(fmt.Sprintf("workers=%d", workers), func(b *testing.B) {
			b.SetBytes(d.total)
			for b.Loop() {
				if _, err := hashPieces(context.Background(), d, pieceLength(d.total), workers); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkAria2cLoopback times Debian's aria2c downloading a 256 MiB OS
// over loopback from the seeder alone (no web seed) and from the web seed
// alone (no BitTorrent seeder). Run with -benchtime=1x or 3x: each
// iteration is a full download.
func BenchmarkAria2cLoopback(b *testing.B) {
	needTools(b, map[string]string{"aria2c": "aria2"})
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	p := makeProject(b, "127.0.0.1", port, testOS{"big", map[string]int64{"vmlinuz": 8 << 20, "initrd.img": benchSize - 8<<20}})
	var h http.Handler
	hs := &http.Server{ReadHeaderTimeout: 10 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { h.ServeHTTP(w, r) })}
	go hs.Serve(l)
	defer hs.Close()
	for _, m := range []struct {
		name string
		opts Options
	}{{"seeder", Options{NoWebSeed: true}}, {"webseed", Options{NoSeed: true}}} {
		b.Run(m.name, func(b *testing.B) {
			s, _, err := startSeeder(b, p, m.opts)
			if err != nil {
				b.Fatal(err)
			}
			defer s.Close()
			h = s.Handler()
			b.SetBytes(benchSize)
			for b.Loop() {
				dir := b.TempDir()
				args := aria2Args(dir, "0", "http://127.0.0.1:"+strconv.Itoa(port)+"/torrents/big.torrent")
				args = append(args, "--interface=lo", "--listen-port="+strconv.Itoa(freePort(b)), "--log-level=warn")
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
				start := time.Now()
				out, err := exec.CommandContext(ctx, "aria2c", args...).CombinedOutput()
				cancel()
				if err != nil {
					b.Fatalf("aria2c: %v\n%s", err, out)
				}
				b.ReportMetric(time.Since(start).Seconds(), "s/download")
				b.StopTimer()
				os.RemoveAll(dir)
				b.StartTimer()
			}
		})
	}
}

// BenchmarkAnacrolixLoopback times an anacrolix/torrent client (the
// library the boot client uses) downloading a 256 MiB OS over loopback from
// the seeder alone, with the peer handed over as the boot API does (no
// tracker round trip, no web seed).
func BenchmarkAnacrolixLoopback(b *testing.B) {
	p := makeProject(b, "127.0.0.1", 8080, testOS{"big", map[string]int64{"vmlinuz": 8 << 20, "initrd.img": benchSize - 8<<20}})
	s, _, err := startSeeder(b, p, Options{NoWebSeed: true})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	mi, err := metainfo.LoadFromFile(TorrentPath(p, "big"))
	if err != nil {
		b.Fatal(err)
	}
	peer := s.Peers("big", netip.Addr{}, 1)[0]
	b.SetBytes(benchSize)
	for b.Loop() {
		dir := b.TempDir()
		cfg := torrent.NewDefaultClientConfig()
		cfg.ListenHost = func(string) string { return "127.0.0.1" }
		cfg.ListenPort = 0
		cfg.NoDHT, cfg.DisableUTP, cfg.DisableWebtorrent, cfg.DisableWebseeds, cfg.DisableTrackers = true, true, true, true, true
		cfg.NoDefaultPortForwarding, cfg.DisableIPv6 = true, true
		cfg.DefaultStorage = storage.NewFileOpts(storage.NewFileClientOpts{ClientBaseDir: dir, PieceCompletion: storage.NewMapPieceCompletion()})
		cfg.Logger = cfg.Logger.WithFilterLevel(alog.Critical)
		cl, err := torrent.NewClient(cfg)
		if err != nil {
			b.Fatal(err)
		}
		start := time.Now()
		t, err := cl.AddTorrent(mi)
		if err != nil {
			b.Fatal(err)
		}
		t.AddPeers([]torrent.PeerInfo{{Addr: torrent.PeerRemoteAddr(net.TCPAddrFromAddrPort(peer)), Trusted: true}})
		<-t.GotInfo()
		t.DownloadAll()
		select {
		case <-t.Complete().On():
		case <-time.After(5 * time.Minute):
			b.Fatal("download did not complete")
		}
		b.ReportMetric(time.Since(start).Seconds(), "s/download")
		b.StopTimer()
		cl.Close()
		os.RemoveAll(dir)
		b.StartTimer()
	}
}
