package client

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/anacrolix/generics"
	"github.com/anacrolix/torrent"
	"github.com/anacrolix/torrent/bencode"
	"github.com/anacrolix/torrent/metainfo"
	"github.com/anacrolix/torrent/storage"
	"golang.org/x/time/rate"

	"github.com/boottorrent/boottorrent/initramfs/bootapi"
	"github.com/boottorrent/boottorrent/netboot/netns/nstest"
	"github.com/boottorrent/boottorrent/seeder/btlan"
	"github.com/boottorrent/boottorrent/seeder/tracker"
)

// testServer is a stand-in for boottorrent start on loopback: the boot
// API (boot, peers, report), the torrent, the web seed, and a real
// anacrolix seeder. It is the same contract (bootapi) the real server
// serves, so the client is tested against real BitTorrent, not a mock.
type testServer struct {
	t       *testing.T
	dir     string // parent of the OS folder
	osName  string
	files   map[string][]byte
	mi      *metainfo.MetaInfo
	seeder  *torrent.Client
	http    *httptest.Server
	boot    bootapi.Boot
	mu      sync.Mutex
	reports []bootapi.Report
	peers   map[string]string // mac → ip:port reported
	noSeed  bool
	// noPeers makes the boot API's peer list fail (503).
	noPeers bool
	// noMask makes the seeder a plain one, without
	// btlan.MaskExtension (an older server).
	noMask bool
	// uploadBps limits the seeder's upload (0: unlimited).
	uploadBps int
	// shares, when > 1, splits the pieces into that many shares, handed
	// out in the order machines first ask for peers (bootapi.Peers).
	shares   int
	shareIdx map[string]int
}

func newTestServer(t *testing.T, size int, seed bool) *testServer {
	t.Helper()
	s := &testServer{t: t, dir: t.TempDir(), osName: "testos", files: map[string][]byte{}, peers: map[string]string{}}
	osDir := filepath.Join(s.dir, s.osName)
	os.MkdirAll(osDir, 0o755)
	kernel := make([]byte, size)
	rand.Read(kernel)
	s.files["vmlinuz"] = kernel
	s.files["config.yaml"] = []byte("dispname: Test OS\nmethod: kexec\nkernel: vmlinuz\n")
	for n, b := range s.files {
		if err := os.WriteFile(filepath.Join(osDir, n), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	info := metainfo.Info{PieceLength: 64 << 10}
	if err := info.BuildFromFilePath(osDir); err != nil {
		t.Fatal(err)
	}
	ib, err := bencode.Marshal(info)
	if err != nil {
		t.Fatal(err)
	}
	s.mi = &metainfo.MetaInfo{InfoBytes: ib}
	mux := http.NewServeMux()
	mux.HandleFunc(bootapi.PathBoot, func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		b := s.boot
		s.mu.Unlock()
		b.MAC = r.URL.Query().Get("mac")
		json.NewEncoder(w).Encode(b)
	})
	mux.HandleFunc(bootapi.PathPeers, func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		if s.noPeers {
			s.mu.Unlock()
			http.Error(w, "peer list unavailable", http.StatusServiceUnavailable)
			return
		}
		var p bootapi.Peers
		if s.seeder != nil && !s.noSeed {
			p.Peers = append(p.Peers, fmt.Sprintf("127.0.0.1:%d", s.seeder.LocalPort()))
		}
		me := r.URL.Query().Get("mac")
		for mac, a := range s.peers {
			if mac != me {
				p.Peers = append(p.Peers, a)
			}
		}
		if s.shares > 1 {
			if s.shareIdx == nil {
				s.shareIdx = map[string]int{}
			}
			if _, ok := s.shareIdx[me]; !ok {
				s.shareIdx[me] = len(s.shareIdx) % s.shares
			}
			p.ShareIndex, p.ShareCount = s.shareIdx[me], s.shares
		}
		s.mu.Unlock()
		json.NewEncoder(w).Encode(p)
	})
	mux.HandleFunc(bootapi.PathReport, func(w http.ResponseWriter, r *http.Request) {
		rep, err := bootapi.DecodeReport(r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		s.mu.Lock()
		s.reports = append(s.reports, *rep)
		if rep.ListenPort > 0 {
			s.peers[rep.MAC] = fmt.Sprintf("127.0.0.1:%d", rep.ListenPort)
		}
		s.mu.Unlock()
		w.WriteHeader(http.StatusNoContent)
	})
	mux.HandleFunc(bootapi.PathTorrents, func(w http.ResponseWriter, r *http.Request) {
		s.mi.Write(w)
	})
	mux.Handle(bootapi.PathWebSeed, http.StripPrefix(bootapi.PathWebSeed, http.FileServer(http.Dir(s.dir))))
	s.http = httptest.NewServer(mux)
	t.Cleanup(s.http.Close)
	s.boot = bootapi.Boot{DefaultOS: s.osName, TimeoutMS: 0, SeedMS: 0, ReportMS: 500,
		Menu: []bootapi.OS{{Name: s.osName, DispName: "Test OS", Method: "kexec", Size: int64(size + len(s.files["config.yaml"])),
			InfoHash: s.mi.HashInfoBytes().HexString(), Torrent: bootapi.PathTorrents + s.osName + ".torrent", Kernel: "vmlinuz",
			Files: []string{"config.yaml", "vmlinuz"}}}}
	if seed {
		s.startSeeder()
	}
	return s
}

func (s *testServer) startSeeder() {
	cfg := torrent.NewDefaultClientConfig()
	if s.uploadBps > 0 {
		// A slow server uplink, so the clients' pieces matter.
		cfg.UploadRateLimiter = rate.NewLimiter(rate.Limit(s.uploadBps), 256<<10)
	}
	cfg.Seed, cfg.NoDHT, cfg.DisableIPv6, cfg.DisableUTP, cfg.NoDefaultPortForwarding, cfg.DisableWebtorrent = true, true, true, true, true, true
	cfg.ListenHost = func(string) string { return "127.0.0.1" }
	cfg.ListenPort = 0
	cfg.DefaultStorage = storage.NewFileOpts(storage.NewFileClientOpts{ClientBaseDir: s.dir, PieceCompletion: storage.NewMapPieceCompletion(), UsePartFiles: generics.Some(false)})
	if !s.noMask {
		btlan.AnswerMaskRequests(cfg)
	}
	cl, err := torrent.NewClient(cfg)
	if err != nil {
		s.t.Fatal(err)
	}
	s.t.Cleanup(func() { cl.Close() })
	tt, err := cl.AddTorrent(s.mi)
	if err != nil {
		s.t.Fatal(err)
	}
	if err := tt.VerifyDataContext(context.Background()); err != nil {
		s.t.Fatal(err)
	}
	s.mu.Lock()
	s.seeder = cl
	s.mu.Unlock()
}

func (s *testServer) setWebSeed() {
	s.mi.UrlList = []string{s.http.URL + bootapi.PathWebSeed}
}

func (s *testServer) check(t *testing.T, dir string) {
	t.Helper()
	for n, want := range s.files {
		got, err := os.ReadFile(filepath.Join(dir, "os", s.osName, n))
		if err != nil {
			t.Fatalf("downloaded %s: %v", n, err)
		}
		if !bytes.Equal(got, want) {
			t.Fatalf("downloaded %s differs from the server's", n)
		}
	}
}

// runClient runs one client in process mode and returns its result line.
func runClient(t *testing.T, ctx context.Context, s *testServer, mac string, mod func(*Config)) (*Result, string, error) {
	t.Helper()
	dir := t.TempDir()
	cfg := &Config{Server: s.http.URL, MAC: mac, NoKexec: true, DataDir: dir, ListenHost: "127.0.0.1", MaxAttempts: 3}
	if mod != nil {
		mod(cfg)
	}
	var console, result nstest.Buffer
	log := slog.New(slog.NewTextHandler(io.MultiWriter(&console, testWriter{t}), nil))
	err := Run(ctx, cfg, log, &console, &result)
	if err == nil {
		s.check(t, dir)
	}
	// Nothing may keep the downloaded files open: kexec_file_load
	// refuses a kernel open for writing, and open files pin their RAM.
	if fds, _ := os.ReadDir("/proc/self/fd"); len(fds) > 0 {
		for _, fd := range fds {
			if target, err := os.Readlink("/proc/self/fd/" + fd.Name()); err == nil && strings.HasPrefix(target, dir+"/") {
				t.Errorf("fd %s still open on %s after the client ended", fd.Name(), target)
			}
		}
	}
	line := strings.TrimSpace(result.String())
	if !strings.HasPrefix(line, ResultPrefix) {
		return nil, console.String(), fmt.Errorf("no result line (err %v); console:\n%s", err, console.String())
	}
	var r Result
	if err := json.Unmarshal([]byte(strings.TrimPrefix(line, ResultPrefix)), &r); err != nil {
		return nil, console.String(), err
	}
	return &r, console.String(), err
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// TestSwarmLoopback: a real seeder and two real clients on loopback. Both
// get every byte; the second, started when the first is seeding, is
// handed the first by the peers API and receives pieces from it.
// runClients runs n clients against s at once (MACs from macFormat and
// 1…n) and returns their results and errors, index by index.
func runClients(t *testing.T, s *testServer, n int, macFormat string) ([]*Result, []error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	results := make([]*Result, n)
	errs := make([]error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			results[i], _, errs[i] = runClient(t, ctx, s, fmt.Sprintf(macFormat, i+1), nil)
		}()
	}
	wg.Wait()
	return results, errs
}

func TestSwarmLoopback(t *testing.T) {
	s := newTestServer(t, 8<<20, false)
	s.uploadBps = 3 << 20
	s.startSeeder()
	s.setWebSeed() // held back: BitTorrent delivers, so it must stay unused
	s.boot.SeedMS = 4000
	results, errs := runClients(t, s, 2, "52:54:00:00:00:%02x")
	var total Result
	for i, r := range results {
		if errs[i] != nil {
			t.Fatalf("client %d: %v", i, errs[i])
		}
		if r.Bytes != s.boot.Menu[0].Size || r.Mode != "torrent" {
			t.Fatalf("client %d: result %+v", i, r)
		}
		if r.FromPeers+r.FromSeeder+r.FromWeb < r.Bytes {
			t.Errorf("client %d: sources add to %d < %d", i, r.FromPeers+r.FromSeeder+r.FromWeb, r.Bytes)
		}
		if r.FromWeb != 0 {
			t.Errorf("client %d used the web seed (%d bytes) while BitTorrent delivered", i, r.FromWeb)
		}
		total.FromPeers += r.FromPeers
		total.FromSeeder += r.FromSeeder
		t.Logf("client %d: %.2fs download, peers %d seeder %d web %d up %d", i, r.DownloadSeconds, r.FromPeers, r.FromSeeder, r.FromWeb, r.Uploaded)
	}
	if total.FromSeeder == 0 {
		t.Error("no bytes counted from the seeder")
	}
	if total.FromPeers == 0 {
		t.Error("the clients received nothing from each other")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	stages := map[string]bool{}
	for _, r := range s.reports {
		stages[r.Stage] = true
	}
	for _, st := range []string{bootapi.StageNetwork, bootapi.StageDownload, bootapi.StageSeeding, bootapi.StageBooting} {
		if !stages[st] {
			t.Errorf("no %s report reached the server (got %v)", st, stages)
		}
	}
}

// TestSwarmShares: with the pieces split into shares, the seeder sends
// about one copy in all, and a share whose machine never comes (3 shares,
// 2 machines) is fetched by a machine that finished its own.
func TestSwarmShares(t *testing.T) {
	for _, c := range []struct {
		name            string
		clients, shares int
		maxSeederCopies float64
	}{
		// The bound on server egress. On a quiet host 1.1–1.2;
		// on one ten times slower, 1.32 once, as steal
		// takes pieces a slow peer has not passed on yet.
		{"all shares owned", 3, 3, 1.5},
		{"one owner missing", 2, 3, 1.7},
	} {
		t.Run(c.name, func(t *testing.T) {
			s := newTestServer(t, 8<<20, false)
			s.uploadBps = 3 << 20
			s.shares = c.shares
			s.startSeeder()
			s.boot.SeedMS = 3000
			results, errs := runClients(t, s, c.clients, "52:54:00:00:01:%02x")
			var fromSeeder int64
			for i, r := range results {
				if errs[i] != nil {
					t.Fatalf("client %d: %v", i, errs[i])
				}
				if r.Bytes != s.boot.Menu[0].Size {
					t.Fatalf("client %d: %d bytes, want %d", i, r.Bytes, s.boot.Menu[0].Size)
				}
				fromSeeder += r.FromSeeder
				t.Logf("client %d: %.2fs, peers %d seeder %d web %d", i, r.DownloadSeconds, r.FromPeers, r.FromSeeder, r.FromWeb)
			}
			copies := float64(fromSeeder) / float64(s.boot.Menu[0].Size)
			t.Logf("the seeder sent %.2f copies", copies)
			if copies > c.maxSeederCopies {
				t.Errorf("the seeder sent %.2f copies of the image, want at most %.1f", copies, c.maxSeederCopies)
			}
		})
	}
}

func TestShareRange(t *testing.T) {
	for _, c := range []struct{ index, count, pieces, from, to int }{
		{0, 0, 100, 0, 100},      // no split
		{0, 1, 100, 0, 100},      // alone
		{1, 4, 100, 25, 50},      // one of four owners
		{63, 100, 512, 504, 512}, // the last of maxOwners owners
		{64, 100, 512, 0, 0},     // beyond maxOwners: everything from the peers
		{99, 100, 512, 0, 0},
	} {
		if from, to := bootapi.OwnedShare(c.index, c.count, bootapi.DefaultShareOwners, c.pieces); from != c.from || to != c.to {
			t.Errorf("OwnedShare(%d, %d, 64, %d) = [%d, %d), want [%d, %d)", c.index, c.count, c.pieces, from, to, c.from, c.to)
		}
	}
}

func TestShareMask(t *testing.T) {
	if m := shareMask(0, 10, 10, nil); m != nil {
		t.Errorf("whole range: mask %v, want none", *m)
	}
	m := shareMask(2, 4, 10, []bool{8: true})
	if m == nil || len(*m) != 16 {
		t.Fatalf("mask %v, want 16 bits", m)
	}
	for i, b := range *m {
		if want := i == 2 || i == 3 || i == 8; b != want {
			t.Errorf("bit %d = %v, want %v", i, b, want)
		}
	}
	if m := shareMask(0, 5, 10, []bool{5: true, 6: true, 7: true, 8: true, 9: true}); m != nil {
		t.Errorf("share plus extra cover everything: mask %v, want none", *m)
	}
}

// TestHTTPBaseline: --http fetches the same files from the web seed.
func TestHTTPBaseline(t *testing.T) {
	s := newTestServer(t, 3<<20, false)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	r, _, err := runClient(t, ctx, s, "52:54:00:00:00:10", func(c *Config) { c.HTTP = true })
	if err != nil {
		t.Fatal(err)
	}
	if r.Mode != "http" || r.FromWeb != r.Bytes || r.Bytes != s.boot.Menu[0].Size {
		t.Fatalf("result %+v", r)
	}
}

// TestWebSeedFallback: no seeder and no peers; the torrent's web seed
// alone completes the download.
func TestWebSeedFallback(t *testing.T) {
	s := newTestServer(t, 2<<20, false)
	s.setWebSeed()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	r, _, err := runClient(t, ctx, s, "52:54:00:00:00:11", nil)
	if err != nil {
		t.Fatal(err)
	}
	if r.FromWeb == 0 || r.FromSeeder != 0 {
		t.Fatalf("want bytes from the web seed only: %+v", r)
	}
}

// TestTrackerFallback: a client takes its peers from the boot API, not
// from the torrent's tracker; when the peer list fails for TrackerAfter,
// it announces to the tracker after all and finds the seeder there. (No
// web seed: without the tracker nothing could bring the data. Without
// the boot API the client has no share either, so the seeder offers it
// pieces only after noShareAfter.)
func TestTrackerFallback(t *testing.T) {
	const size = 2 << 20
	s := newTestServer(t, size, true)
	s.noPeers = true
	tr := tracker.New(tracker.DefaultConfig())
	ts := httptest.NewServer(tr.AnnounceHandler())
	t.Cleanup(ts.Close)
	ih := tracker.Hash(s.mi.HashInfoBytes())
	tr.AddTorrent(ih, s.osName, size, netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), uint16(s.seeder.LocalPort())))
	s.mi.Announce = ts.URL + "/announce"
	// The library (v1.62) sends the completed announce in the
	// background and forgets it when the torrent closes first: with no
	// seed time the machine boots at once and the announce was lost in
	// one CI run. A machine seeds for a while by default (seed_time).
	s.boot.SeedMS = 1000
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	r, console, err := runClient(t, ctx, s, "52:54:00:00:00:13", func(c *Config) { c.TrackerAfter = time.Second })
	if err != nil {
		t.Fatal(err)
	}
	if r.FromSeeder == 0 || r.FromWeb != 0 {
		t.Errorf("want the data from the seeder the tracker named: %+v", r)
	}
	if !strings.Contains(console, "asking the tracker for peers") {
		t.Errorf("the client never said it asked the tracker:\n%s", console)
	}
	// The client announces its completion (the library does so in the
	// background, after the download returns).
	st := tr.Scrape([]tracker.Hash{ih})[ih]
	for end := time.Now().Add(10 * time.Second); st.Downloaded != 1 && time.Now().Before(end); {
		time.Sleep(50 * time.Millisecond)
		st = tr.Scrape([]tracker.Hash{ih})[ih]
	}
	if st.Downloaded != 1 {
		t.Errorf("tracker stats %+v: the client's completed announce is missing", st)
	}
}

// TestSeederLateRecovers: the seeder is not there when the client
// starts (server restarting); the client warns and completes once it is.
func TestSeederLateRecovers(t *testing.T) {
	s := newTestServer(t, 2<<20, false)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	go func() {
		time.Sleep(stallWarn + 3*time.Second)
		s.startSeeder()
	}()
	r, console, err := runClient(t, ctx, s, "52:54:00:00:00:12", nil)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(console, "no data for") {
		t.Errorf("the console never said the download stalled:\n%s", console)
	}
	if r.FromSeeder == 0 {
		t.Errorf("result %+v", r)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	warned := false
	for _, rep := range s.reports {
		warned = warned || strings.Contains(rep.Message, "no data for")
	}
	if !warned {
		t.Error("the stall was not reported to the server")
	}
}

// The web seed comes from the server's uplink like the seeder's pieces
// and is never shared the way pieces are: it is added when the seeder is
// unreachable or its connection stalled with requests out, not merely
// because a connected seeder is slow to deliver the first piece, and as a
// last resort after a long silence.
func TestWebSeedDue(t *testing.T) {
	for _, c := range []struct {
		sinceData, sinceSeeder, stalled time.Duration
		want                            bool
	}{
		{0, 0, 0, false},
		{webSeedAfter, webSeedAfter, 0, true},                    // no seeder connection, no data
		{webSeedAfter, 0, 0, false},                              // seeder connected, first piece still coming
		{webSeedLastResort, 0, 0, false},                         // connected and reading: slow, not stalled
		{webSeedLastResort, 0, webSeedLastResort, true},          // connected but stalled
		{webSeedLastResort - time.Second, 0, time.Minute, false}, // stalled, but data came from the peers
		{time.Second, webSeedLastResort, 0, false},               // data from the peers
		{webSeedAfter - time.Second, webSeedAfter, 0, false},     // data a moment ago
		{webSeedNoData - time.Second, 0, 0, false},               // waiting for the owners
		{webSeedNoData, 0, 0, true},                              // the last resort
	} {
		if got := webSeedDue(c.sinceData, c.sinceSeeder, c.stalled); got != c.want {
			t.Errorf("webSeedDue(no data for %v, seeder gone for %v, stalled for %v) = %v, want %v", c.sinceData, c.sinceSeeder, c.stalled, got, c.want)
		}
	}
}

// TestStallWatch: the seeder's connection counts as stalled only while
// requests are out on it and it reads nothing.
func TestStallWatch(t *testing.T) {
	var w stallWatch
	t0 := time.Unix(1000, 0)
	at := func(s int) time.Time { return t0.Add(time.Duration(s) * time.Second) }
	steps := []struct {
		at        int
		read, out int64
		want      int // seconds stalled
	}{
		{0, 0, 4, 0},
		{5, 0, 4, 5},     // requests out, nothing read
		{6, 100, 4, 0},   // a few bytes: moving
		{20, 100, 4, 14}, // nothing since
		{21, 100, 0, 0},  // nothing requested: waiting, not stalled
		{30, 100, 0, 0},
		{31, 100, 2, 1}, // requests again: the clock runs from the last look with none out
		{47, 100, 2, 17},
		{48, 0, 2, 0}, // the connection was replaced: a new count
	}
	for _, s := range steps {
		if got := w.observe(at(s.at), s.read, s.out); got != time.Duration(s.want)*time.Second {
			t.Errorf("at %ds (read %d, %d out): stalled %v, want %ds", s.at, s.read, s.out, got, s.want)
		}
	}
}

// TestIdleToHelp: a machine helps with the owners' pieces after a short
// silence only when no connected machine is still downloading; while one
// is, the owners are still fetching and it waits longer (at N = 100 the
// short wait made the server send 2.37 copies of the image).
func TestIdleToHelp(t *testing.T) {
	for _, c := range []struct {
		sinceData   time.Duration
		downloading bool
		want        bool
	}{
		{0, false, false},
		{helpAfter - time.Millisecond, false, false},
		{helpAfter, false, true}, // the others finished or left
		{helpAfter, true, false}, // the owners are still at work
		{helpAfterSwarm - time.Millisecond, true, false},
		{helpAfterSwarm, true, true}, // a long silence: an owner may be gone
	} {
		if got := idleToHelp(c.sinceData, c.downloading); got != c.want {
			t.Errorf("idleToHelp(no data for %v, peers downloading %v) = %v, want %v", c.sinceData, c.downloading, got, c.want)
		}
	}
}

// TestPickSteal: what a machine whose own share is complete asks the
// seeder for, at N = 100 (64 owners of 2 pieces each, 129 pieces).
func TestPickSteal(t *testing.T) {
	const np, count = 129, 100
	base := func() stealState {
		st := stealState{index: 0, count: count, complete: make([]bool, np), held: make([]bool, np)}
		st.complete[0], st.complete[1] = true, true // share 0 is [0, 2)
		return st
	}
	pieces := func(b []bool) []int {
		var out []int
		for i, v := range b {
			if v {
				out = append(out, i)
			}
		}
		return out
	}
	// The owners are still fetching their shares and no peer has a piece
	// for this machine yet: it waits for them, it does not ask the
	// seeder for the image.
	st := base()
	st.downloading = true
	if next, ok := pickSteal(st); ok {
		t.Fatalf("peers still downloading, nothing to take from them: took %d pieces, want none", len(pieces(next)))
	}
	// The others finished or left: everything missing, at once.
	st = base()
	if next, ok := pickSteal(st); !ok || len(pieces(next)) != np-2 {
		t.Fatalf("alone: took %v, want all %d missing pieces", pieces(next), np-2)
	}
	// Half the image here, peers still downloading but none holds a
	// missing piece: the end of a run, everything missing at once.
	st = base()
	st.downloading = true
	for i := 2; i < 65; i++ {
		st.complete[i] = true
	}
	if next, ok := pickSteal(st); !ok || len(pieces(next)) != np-65 {
		t.Fatalf("half done, nothing from peers: took %d pieces, want all %d missing", len(pieces(next)), np-65)
	}
	// Idle for long while the others still download (an owner may be
	// gone): the next share's pieces, reserve included.
	st = base()
	st.downloading, st.idle = true, true
	if next, ok := pickSteal(st); !ok || !slices.Equal(pieces(next), []int{2, 3}) {
		t.Fatalf("idle: took %v, want the next share [2 3]", pieces(next))
	}
	// Own share incomplete: nothing else.
	st = base()
	st.complete[1] = false
	if _, ok := pickSteal(st); ok {
		t.Fatal("own share incomplete: took other pieces")
	}
	// A non-owner (rank beyond maxOwners) with peers that have pieces
	// for it takes nothing from the seeder.
	st = base()
	st.index, st.complete[0], st.complete[1] = 80, false, false
	st.held[5], st.downloading = true, true
	if _, ok := pickSteal(st); ok {
		t.Fatal("non-owner with work from its peers asked the seeder")
	}
}

// TestSeederMaskChange: when the pieces this machine may ask the seeder
// for change (its share, then pieces of other shares, see steal), a
// seeder with btlan.MaskExtension gets a mask request on the open
// connection, and the library's view of the seeder changes to the new
// mask on that same connection: the requests in flight stay. A seeder
// without the extension (an older server) is dialled again instead, and
// the new connection carries the new mask.
func TestSeederMaskChange(t *testing.T) {
	for _, c := range []struct {
		name     string
		noMask   bool
		sameConn bool
	}{
		{"in band", false, true},
		{"redial", true, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			s := newTestServer(t, 4<<20, false)
			s.noMask = c.noMask
			s.uploadBps = 256 << 10 // still downloading when the mask changes
			s.startSeeder()
			info, err := s.mi.UnmarshalInfo()
			if err != nil {
				t.Fatal(err)
			}
			np := info.NumPieces()
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			seederAddr := fmt.Sprintf("127.0.0.1:%d", s.seeder.LocalPort())
			var answer atomic.Pointer[[2]int] // what the server answers
			answer.Store(&[2]int{0, 2})
			d, err := startTorrent(ctx, s.mi, dlOptions{
				DataDir: t.TempDir(), ListenHost: "127.0.0.1", ServerHost: "127.0.0.1",
				Peers: func(context.Context) (*bootapi.Peers, error) {
					sh := answer.Load()
					return &bootapi.Peers{Peers: []string{seederAddr}, ShareIndex: sh[0], ShareCount: sh[1]}, nil
				},
			})
			if err != nil {
				t.Fatal(err)
			}
			defer d.Close()
			// seederView waits until the library sees, on one connection
			// to the seeder, exactly the pieces [from, to).
			seederView := func(from, to int) *torrent.PeerConn {
				t.Helper()
				var last string
				for ctx.Err() == nil {
					for _, pc := range d.t.PeerConns() {
						if d.source(&pc.Peer) != srcSeeder {
							continue
						}
						bm := pc.PeerPieces()
						ok := int(bm.GetCardinality()) == to-from
						for i := from; ok && i < to; i++ {
							ok = bm.Contains(uint32(i))
						}
						if ok {
							return pc
						}
						last = "no pieces" // yet: a new connection before its bitfield
						if !bm.IsEmpty() {
							last = fmt.Sprintf("%d pieces from %d", bm.GetCardinality(), bm.Minimum())
						}
					}
					time.Sleep(20 * time.Millisecond)
				}
				t.Fatalf("the seeder's connection never offered pieces [%d, %d) (last: %s)", from, to, last)
				return nil
			}
			first := seederView(0, np/2)
			// The server hands this machine the other share; shareLoop
			// applies it (without waiting for the next peer list).
			setShare := func(index, count int) {
				answer.Store(&[2]int{index, count})
				d.tellShare(ctx, shareEvent{share: share{index, count, count}})
			}
			setShare(1, 2)
			second := seederView(np/2, np)
			if got := second == first; got != c.sameConn {
				t.Errorf("same connection after the mask change: %v, want %v", got, c.sameConn)
			}
			// No split any more: every piece (no mask).
			setShare(0, 1)
			third := seederView(0, np)
			if got := third == second; got != c.sameConn {
				t.Errorf("same connection after dropping the mask: %v, want %v", got, c.sameConn)
			}
		})
	}
}

// TestSeederRedialedAtLimit: a machine at its connection limit, with no
// connection to the seeder and pieces still to get, closes a machine's
// connection and dials the seeder (keepSeeder). The library alone does
// not dial while at its limit, so without keepSeeder the seeder never
// comes back here. The other machine listens on 127.0.0.2, so that only
// the seeder has the server's address.
func TestSeederRedialedAtLimit(t *testing.T) {
	s := newTestServer(t, 2<<20, false)
	// The machines are still downloading at the end: 2 MiB take 16 s,
	// longer than the boot API refresh's longest wait (10 s) after the
	// server starts listing the seeder, even when the first connection
	// came late on a loaded host.
	s.uploadBps = 128 << 10
	s.startSeeder()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	seederAddr := fmt.Sprintf("127.0.0.1:%d", s.seeder.LocalPort())
	other, err := startTorrent(ctx, s.mi, dlOptions{
		DataDir: t.TempDir(), ListenHost: "127.0.0.2", ServerHost: "127.0.0.1",
		Peers: func(context.Context) (*bootapi.Peers, error) {
			return &bootapi.Peers{Peers: []string{seederAddr}}, nil
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	otherAddr := fmt.Sprintf("127.0.0.2:%d", other.cl.LocalPort())
	var withSeeder atomic.Bool // the server lists the seeder
	d, err := startTorrent(ctx, s.mi, dlOptions{
		DataDir: t.TempDir(), ListenHost: "127.0.0.3", ServerHost: "127.0.0.1", MaxConns: 1,
		Peers: func(context.Context) (*bootapi.Peers, error) {
			p := &bootapi.Peers{Peers: []string{otherAddr}}
			if withSeeder.Load() {
				p.Peers = append(p.Peers, seederAddr)
			}
			return p, nil
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	d.t.SetMaxEstablishedConns(1)
	waitMachineConn(ctx, d)
	// The one place is the other machine's; now the server lists the
	// seeder too.
	withSeeder.Store(true)
	for ctx.Err() == nil {
		if sd, m := connCounts(d); sd == 1 {
			if m != 0 {
				t.Errorf("%d connections to machines next to the seeder's, limit 1", m)
			}
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if ctx.Err() != nil {
		t.Fatalf("the seeder was never dialled while the machine was at its connection limit (%d of %d bytes; %d seeder dials, %d connections closed for it)",
			d.t.BytesCompleted(), d.t.Length(), d.seederDials.Load(), d.seederEvictions.Load())
	}
	if n := d.seederDials.Load(); n < 1 {
		t.Errorf("seeder dials counted: %d, want at least 1", n)
	}
	select {
	case <-d.t.Complete().On():
	case <-ctx.Done():
		t.Fatalf("download incomplete after the seeder came back: %d of %d bytes", d.t.BytesCompleted(), d.t.Length())
	}
}

// connCounts counts d's connections to the seeder and to machines.
func connCounts(d *torrentDL) (seeders, machines int) {
	for _, pc := range d.t.PeerConns() {
		if d.source(&pc.Peer) == srcSeeder {
			seeders++
		} else {
			machines++
		}
	}
	return seeders, machines
}

// waitMachineConn waits until d has one connection to a machine, or ctx
// ends.
func waitMachineConn(ctx context.Context, d *torrentDL) {
	for ctx.Err() == nil {
		if _, m := connCounts(d); m == 1 {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestSeederHandshakeMakesRoom: when the seeder's handshake completes
// while a machine is at its connection limit, the machine closes a
// connection to another machine so that the seeder's is kept
// (makeSeederRoom). The library's own limit is left above the
// machine's, so without makeSeederRoom both connections stay.
func TestSeederHandshakeMakesRoom(t *testing.T) {
	s := newTestServer(t, 2<<20, false)
	s.uploadBps = 128 << 10 // the machines are still downloading at the end
	s.startSeeder()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	seederAddr := &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: s.seeder.LocalPort()}
	other, err := startTorrent(ctx, s.mi, dlOptions{
		DataDir: t.TempDir(), ListenHost: "127.0.0.2", ServerHost: "127.0.0.1",
		Peers: func(context.Context) (*bootapi.Peers, error) {
			return &bootapi.Peers{Peers: []string{seederAddr.String()}}, nil
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	otherAddr := fmt.Sprintf("127.0.0.2:%d", other.cl.LocalPort())
	var listOther atomic.Bool // the server lists the other machine
	listOther.Store(true)
	d, err := startTorrent(ctx, s.mi, dlOptions{
		DataDir: t.TempDir(), ListenHost: "127.0.0.3", ServerHost: "127.0.0.1", MaxConns: 1,
		// The seeder is never listed: keepSeeder stays out of it.
		Peers: func(context.Context) (*bootapi.Peers, error) {
			p := &bootapi.Peers{}
			if listOther.Load() {
				p.Peers = []string{otherAddr}
			}
			return p, nil
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	waitMachineConn(ctx, d)
	first := d.t.PeerConns()
	listOther.Store(false)
	d.t.AddPeers([]torrent.PeerInfo{{Addr: seederAddr, Source: torrent.PeerSourceDirect, Trusted: true}})
	for ctx.Err() == nil {
		if sd, _ := connCounts(d); sd == 1 {
			// The library's limit is higher: the other machine may
			// be dialled again from its list, on a new connection.
			// The one it had must be gone.
			for _, pc := range d.t.PeerConns() {
				if slices.Contains(first, pc) {
					t.Errorf("the connection to %v stayed next to the seeder's, limit 1", pc.RemoteAddr)
				}
			}
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if ctx.Err() != nil {
		t.Fatalf("no connection to the seeder (%d of %d bytes)", d.t.BytesCompleted(), d.t.Length())
	}
	if n := d.seederEvictions.Load(); n != 1 {
		t.Errorf("connections closed for the seeder: %d, want 1", n)
	}
}

// TestSeederUnreachableKeepsPeers: while the seeder cannot be reached,
// a machine at its connection limit does not keep closing its
// connections to other machines to make room for it (keepSeeder closes
// one, then waits evictRetry).
func TestSeederUnreachableKeepsPeers(t *testing.T) {
	s := newTestServer(t, 2<<20, false)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	deadSeeder := ln.Addr().String()
	ln.Close() // dials to it are refused
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var dAddr atomic.Pointer[string]
	other, err := startTorrent(ctx, s.mi, dlOptions{
		DataDir: t.TempDir(), ListenHost: "127.0.0.2", ServerHost: "127.0.0.1",
		Peers: func(context.Context) (*bootapi.Peers, error) {
			p := &bootapi.Peers{}
			if a := dAddr.Load(); a != nil {
				p.Peers = append(p.Peers, *a) // it dials back when dropped
			}
			return p, nil
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	otherAddr := fmt.Sprintf("127.0.0.2:%d", other.cl.LocalPort())
	d, err := startTorrent(ctx, s.mi, dlOptions{
		DataDir: t.TempDir(), ListenHost: "127.0.0.3", ServerHost: "127.0.0.1", MaxConns: 1,
		Peers: func(context.Context) (*bootapi.Peers, error) {
			return &bootapi.Peers{Peers: []string{deadSeeder, otherAddr}}, nil
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	a := fmt.Sprintf("127.0.0.3:%d", d.cl.LocalPort())
	dAddr.Store(&a)
	d.t.SetMaxEstablishedConns(1)
	// Eight seconds: four of keepSeeder's dials, and less than evictRetry.
	time.Sleep(8 * time.Second)
	if n := d.seederDials.Load(); n < 2 {
		t.Errorf("seeder dials in 8 s: %d, want several (it is retried every %s)", n, seederRedialEvery)
	}
	if n := d.seederEvictions.Load(); n > 1 {
		t.Errorf("connections closed to make room for an unreachable seeder in 8 s: %d, want at most 1", n)
	}
}
