package seeder

import (
	"fmt"
	"net"
	"net/netip"
	"slices"
	"sync"
	"testing"
	"time"

	alog "github.com/anacrolix/log"
	"github.com/anacrolix/torrent"
	"github.com/anacrolix/torrent/metainfo"
	"github.com/anacrolix/torrent/storage"

	"github.com/boottorrent/boottorrent/config"
	"github.com/boottorrent/boottorrent/seeder/btlan"
)

// seedAlpha starts a seeder, without web seed and with its upload limited
// to uploadLimit bytes/s, for a project with one OS "alpha" of files
// (name → size), and returns the project, the seeder, its log and the
// torrent.
func seedAlpha(t *testing.T, files map[string]int64, uploadLimit int64) (*config.Project, *Seeder, *logRecorder, *metainfo.MetaInfo) {
	t.Helper()
	p := makeProject(t, "127.0.0.1", 8080, testOS{"alpha", files})
	s, rec, err := startSeeder(t, p, Options{NoWebSeed: true, UploadLimit: uploadLimit})
	if err != nil {
		t.Fatal(err)
	}
	mi, err := metainfo.LoadFromFile(TorrentPath(p, "alpha"))
	if err != nil {
		t.Fatal(err)
	}
	return p, s, rec, mi
}

// leecherConfig is a plain anacrolix/torrent client on host (a loopback
// address of its own) that finds peers only as it is told.
func leecherConfig(t *testing.T, host string) *torrent.ClientConfig {
	cfg := torrent.NewDefaultClientConfig()
	cfg.ListenHost = func(string) string { return host }
	cfg.NoDHT, cfg.DisableUTP, cfg.DisableWebtorrent, cfg.DisableWebseeds, cfg.DisableTrackers = true, true, true, true, true
	cfg.NoDefaultPortForwarding, cfg.DisableIPv6 = true, true
	cfg.DefaultStorage = storage.NewFileOpts(storage.NewFileClientOpts{ClientBaseDir: t.TempDir(), PieceCompletion: storage.NewMapPieceCompletion()})
	cfg.Logger = cfg.Logger.WithFilterLevel(alog.Critical)
	return cfg
}

// startLeecher starts a client with cfg, closed when the test ends, and
// adds the torrent mi to it.
func startLeecher(t *testing.T, cfg *torrent.ClientConfig, mi *metainfo.MetaInfo) (*torrent.Client, *torrent.Torrent) {
	t.Helper()
	cl, err := torrent.NewClient(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cl.Close() })
	tt, err := cl.AddTorrent(mi)
	if err != nil {
		t.Fatal(err)
	}
	return cl, tt
}

// TestAnacrolixClientsExchange starts three anacrolix/torrent clients (the
// library of the boot client) at once on loopback addresses of their own,
// each told about the seeder and the others as the boot API does, with the
// seeder's upload capped. It checks they complete and reports how much came
// from each other rather than from the seeder; it fails if the seeder had
// to send more than 2.5 copies for 3 clients.
func TestAnacrolixClientsExchange(t *testing.T) {
	const n = 3
	p, s, rec, mi := seedAlpha(t, map[string]int64{"vmlinuz": 2 << 20, "initrd.img": 14 << 20}, 4<<20)
	seed := s.Peers("alpha", netip.Addr{}, 1)[0]
	var clients []*torrent.Client
	var ts []*torrent.Torrent
	for i := range n {
		cfg := leecherConfig(t, fmt.Sprintf("127.0.0.%d", 20+i))
		cfg.Seed = true
		cl, tt := startLeecher(t, cfg, mi)
		clients, ts = append(clients, cl), append(ts, tt)
	}
	start := time.Now()
	for i, tt := range ts {
		peers := []torrent.PeerInfo{{Addr: torrent.PeerRemoteAddr(net.TCPAddrFromAddrPort(seed)), Trusted: true}}
		for j, other := range clients {
			if j != i {
				ap := netip.MustParseAddrPort(other.ListenAddrs()[0].String())
				peers = append(peers, torrent.PeerInfo{Addr: torrent.PeerRemoteAddr(net.TCPAddrFromAddrPort(ap))})
			}
		}
		tt.AddPeers(peers)
		<-tt.GotInfo()
		tt.DownloadAll()
	}
	var wg sync.WaitGroup
	for i, tt := range ts {
		wg.Add(1)
		go func() {
			defer wg.Done()
			select {
			case <-tt.Complete().On():
				t.Logf("client %d complete after %v", i, time.Since(start).Round(time.Millisecond))
			case <-time.After(2 * time.Minute):
				t.Errorf("client %d did not complete", i)
			}
		}()
	}
	wg.Wait()
	// Each connection that ends is logged with the bytes the seeder sent;
	// the counter is read after all have ended (chunks still in flight
	// when a client completes are counted too).
	for _, c := range clients {
		c.Close()
	}
	deadline := time.Now().Add(10 * time.Second)
	for len(rec.find("peer done", "os", "alpha")) < n && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	time.Sleep(200 * time.Millisecond)
	size := p.OS("alpha").Size
	up := s.Stats()["alpha"].Uploaded
	t.Logf("%d clients x %d bytes; seeder sent %d (%.2f copies), peers the rest (%.0f%%)", n, size, up,
		float64(up)/float64(size), 100*(1-float64(up)/float64(n*size)))
	var logged int64
	for _, r := range rec.find("peer done", "os", "alpha") {
		var b int64
		fmt.Sscan(r["bytes"], &b)
		logged += b
	}
	if logged != up {
		t.Errorf("peer done lines add up to %d bytes, seeder counted %d", logged, up)
	}
	if float64(up) > 2.5*float64(size) {
		t.Fatalf("seeder sent %.2f copies for %d clients: little exchange among peers", float64(up)/float64(size), n)
	}
}

// TestSeederAnswersMaskRequests: the seeder advertises
// btlan.MaskExtension and answers each message of it with one of its
// own, which is how a boot client changes the pieces it asks the seeder
// for without a new connection (initramfs/client/share.go).
func TestSeederAnswersMaskRequests(t *testing.T) {
	// A slow seeder (after the limiter's 4 MiB burst): the client is
	// still downloading, and so connected, when it asks.
	_, s, _, mi := seedAlpha(t, map[string]int64{"vmlinuz": 8 << 20, "initrd.img": 1 << 20}, 64<<10)
	answers := make(chan []byte, 100)
	cfg := leecherConfig(t, "127.0.0.30")
	cfg.Callbacks.PeerConnAdded = append(cfg.Callbacks.PeerConnAdded, btlan.AdvertiseMask)
	cfg.Callbacks.PeerConnReadExtensionMessage = append(cfg.Callbacks.PeerConnReadExtensionMessage, func(ev torrent.PeerConnReadExtensionMessageEvent) {
		if name, _, err := ev.PeerConn.LocalLtepProtocolMap.LookupId(ev.ExtensionNumber); err == nil && name == btlan.MaskExtension {
			answers <- slices.Clone(ev.Payload)
		}
	})
	_, tt := startLeecher(t, cfg, mi)
	seed := s.Peers("alpha", netip.Addr{}, 1)[0]
	tt.AddPeers([]torrent.PeerInfo{{Addr: torrent.PeerRemoteAddr(net.TCPAddrFromAddrPort(seed)), Trusted: true}})
	tt.DownloadAll() // a client that wants nothing dials no one
	// Ask once the seeder's extended handshake is in (before it, the
	// client does not know the seeder's number for the extension).
	var pc *torrent.PeerConn
	deadline := time.Now().Add(10 * time.Second)
	for pc == nil && time.Now().Before(deadline) {
		for _, c := range tt.PeerConns() {
			if c.WriteExtendedMessage(btlan.MaskExtension, []byte("ignored")) == nil {
				pc = c
				break
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	if pc == nil {
		t.Fatal("the seeder's connection never offered the mask extension")
	}
	wait := func(what string) {
		t.Helper()
		select {
		case a := <-answers:
			if len(a) != 0 {
				t.Errorf("%s: the answer has a payload of %d bytes, want none", what, len(a))
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("%s: no answer", what)
		}
	}
	wait("one request")
	// A burst: answers may be merged, but one comes, and no more than
	// were asked for.
	const burst = 20
	for range burst {
		if err := pc.WriteExtendedMessage(btlan.MaskExtension, nil); err != nil {
			t.Fatal(err)
		}
	}
	wait("a burst")
	got := 1
	for more := true; more; {
		select {
		case <-answers:
			got++
		case <-time.After(time.Second):
			more = false
		}
	}
	if got > burst {
		t.Errorf("%d answers to %d requests", got, burst)
	}
	t.Logf("%d answers to a burst of %d requests", got, burst)
}
