package seeder

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
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
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/anacrolix/torrent"
	"github.com/anacrolix/torrent/metainfo"

	"github.com/boottorrent/boottorrent/config"
	"github.com/boottorrent/boottorrent/initramfs/bootapi"
	"github.com/boottorrent/boottorrent/oss"
)

// testOS describes one OS folder to create: file name -> size.
type testOS struct {
	name  string
	files map[string]int64
}

// makeProject writes a project with the given OS folders (kexec OSes with
// random kernel/initrd content) and loads it as boottorrent would.
func makeProject(t testing.TB, addr string, httpPort int, oses ...testOS) *config.Project {
	t.Helper()
	dir := t.TempDir()
	for _, o := range oses {
		d := filepath.Join(dir, "oss", o.name)
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
		var extra []string
		for f, size := range o.files {
			writeRandom(t, filepath.Join(d, f), size)
			if f != "vmlinuz" && f != "initrd.img" {
				extra = append(extra, f)
			}
		}
		cfg := fmt.Sprintf("dispname: %s test\nmethod: kexec\nkernel: vmlinuz\ninitrd: initrd.img\ncmdline: console=ttyS0\n", o.name)
		if len(extra) > 0 {
			cfg += "files: [" + strings.Join(extra, ", ") + "]\n"
		}
		if err := os.WriteFile(filepath.Join(d, oss.ConfigName), []byte(cfg), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	all, err := oss.LoadAll(filepath.Join(dir, "oss"))
	if err != nil {
		t.Fatal(err)
	}
	c := config.Default()
	c.Server.Address = addr
	c.Server.HTTPPort = httpPort
	c.Server.Interface = "lo"
	return &config.Project{Dir: dir, File: filepath.Join(dir, config.FileName), Config: &c, OSes: all}
}

func writeRandom(t testing.TB, path string, size int64) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	r := rand.NewChaCha8([32]byte([]byte(fmt.Sprintf("%-32s", filepath.Base(path)))))
	if _, err := io.CopyN(f, r, size); err != nil {
		t.Fatal(err)
	}
}

// logRecorder keeps every log record for assertions, and prints them with
// t.Log.
type logRecorder struct {
	mu   sync.Mutex
	recs []map[string]string
	t    testing.TB
}

func (l *logRecorder) Enabled(context.Context, slog.Level) bool { return true }
func (l *logRecorder) Handle(_ context.Context, r slog.Record) error {
	m := map[string]string{"msg": r.Message, "level": r.Level.String()}
	r.Attrs(func(a slog.Attr) bool { m[a.Key] = a.Value.String(); return true })
	l.mu.Lock()
	l.recs = append(l.recs, m)
	l.mu.Unlock()
	if os.Getenv("SEEDER_TEST_VERBOSE") != "" {
		fmt.Fprintf(os.Stderr, "%s %v\n", time.Now().Format("15:04:05.000"), m)
	}
	return nil
}
func (l *logRecorder) WithAttrs([]slog.Attr) slog.Handler { return l }
func (l *logRecorder) WithGroup(string) slog.Handler      { return l }

func (l *logRecorder) find(msg, key, val string) []map[string]string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []map[string]string
	for _, r := range l.recs {
		if r["msg"] == msg && (key == "" || r[key] == val) {
			out = append(out, r)
		}
	}
	return out
}

func TestPieceLength(t *testing.T) {
	for _, c := range []struct{ size, want int64 }{
		{0, 64 << 10}, {10 << 20, 64 << 10}, {128 << 20, 64 << 10}, {256 << 20, 128 << 10},
		{512 << 20, 256 << 10}, {1 << 30, 512 << 10},
		{2 << 30, 1 << 20}, {8 << 30, 4 << 20}, {100 << 30, 4 << 20},
	} {
		if got := pieceLength(c.size); got != c.want {
			t.Errorf("pieceLength(%d) = %d, want %d", c.size, got, c.want)
		}
	}
}

// TestHashMatchesLibrary checks the parallel hasher against the
// library's own single-threaded GeneratePieces, with files that end in the
// middle of pieces, an empty file and a file smaller than a piece.
func TestHashMatchesLibrary(t *testing.T) {
	dir := t.TempDir()
	files := []string{"a", "b", "c", "d/e"}
	sizes := []int64{300 << 10, 0, 17, 1<<20 + 5}
	os.MkdirAll(filepath.Join(dir, "d"), 0o755)
	for i, f := range files {
		writeRandom(t, filepath.Join(dir, f), sizes[i])
	}
	d, err := openData(dir, files)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	for _, workers := range []int{1, 2, 7} {
		got, err := hashPieces(context.Background(), d, 256<<10, workers)
		if err != nil {
			t.Fatal(err)
		}
		info := metainfo.Info{PieceLength: 256 << 10}
		for i, f := range files {
			info.Files = append(info.Files, metainfo.FileInfo{Length: sizes[i], Path: strings.Split(f, "/")})
		}
		if err := info.GeneratePieces(func(fi metainfo.FileInfo) (io.ReadCloser, error) {
			return os.Open(filepath.Join(append([]string{dir}, fi.Path...)...))
		}); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, info.Pieces) {
			t.Fatalf("workers=%d: %d bytes of piece hashes differ from the library's %d", workers, len(got), len(info.Pieces))
		}
	}
}

// newSeeder makes a seeder of p with opts, logging to the test, and
// closes it when the test ends.
func newSeeder(t testing.TB, p *config.Project, opts Options) (*Seeder, *logRecorder) {
	t.Helper()
	rec := &logRecorder{t: t}
	opts.Project, opts.Logger = p, slog.New(rec)
	s, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s, rec
}

func startSeeder(t testing.TB, p *config.Project, opts Options) (*Seeder, *logRecorder, error) {
	t.Helper()
	if opts.ListenAddr == "" {
		opts.ListenAddr = "127.0.0.1:0"
	}
	s, rec := newSeeder(t, p, opts)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	return s, rec, s.Start(ctx)
}

func TestCacheRehashesOnlyChangedOS(t *testing.T) {
	p := makeProject(t, "127.0.0.1", 8080,
		testOS{"alpha", map[string]int64{"vmlinuz": 3 << 20, "initrd.img": 5<<20 + 3}},
		testOS{"beta", map[string]int64{"vmlinuz": 2 << 20, "initrd.img": 1 << 20}})
	if got := CachedInfo(p); len(got) != 0 {
		t.Fatalf("CachedInfo before any start: %v", got)
	}
	s, rec, err := startSeeder(t, p, Options{})
	if err != nil {
		t.Fatal(err)
	}
	first := map[string]string{}
	for _, o := range []string{"alpha", "beta"} {
		r := rec.find("OS ready", "os", o)
		if len(r) != 1 || r[0]["how"] != "hashed" {
			t.Fatalf("first start, %s: %v, want hashed", o, r)
		}
		first[o] = r[0]["info_hash"]
		mi, err := metainfo.LoadFromFile(TorrentPath(p, o))
		if err != nil {
			t.Fatal(err)
		}
		info, _ := mi.UnmarshalInfo()
		if info.Name != o || info.Private == nil || !*info.Private || len(mi.UrlList) != 1 || !strings.HasSuffix(mi.UrlList[0], "/oss/") ||
			mi.HashInfoBytes().HexString() != first[o] || len(mi.UpvertedAnnounceList()) == 0 {
			t.Fatalf("%s.torrent: name %q private %v url-list %v announce %v", o, info.Name, info.Private, mi.UrlList, mi.UpvertedAnnounceList())
		}
	}
	s.Close()
	if got := CachedInfo(p); got["alpha"] != first["alpha"] || got["beta"] != first["beta"] {
		t.Fatalf("CachedInfo %v, want %v", got, first)
	}

	_, rec, err = startSeeder(t, p, Options{})
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range []string{"alpha", "beta"} {
		if r := rec.find("OS ready", "os", o); len(r) != 1 || r[0]["how"] != "verified" || r[0]["info_hash"] != first[o] {
			t.Fatalf("second start, %s: %v, want verified with the same info hash", o, r)
		}
	}

	// Change beta's initrd (new content, new mtime): only beta is hashed.
	time.Sleep(10 * time.Millisecond)
	writeRandom(t, filepath.Join(p.Dir, "oss", "beta", "initrd.img.new"), 1<<20)
	os.Rename(filepath.Join(p.Dir, "oss", "beta", "initrd.img.new"), filepath.Join(p.Dir, "oss", "beta", "initrd.img"))
	f, _ := os.OpenFile(filepath.Join(p.Dir, "oss", "beta", "initrd.img"), os.O_WRONLY, 0)
	f.WriteAt([]byte("changed"), 0)
	f.Close()
	if got := CachedInfo(p); got["alpha"] != first["alpha"] || got["beta"] != "" {
		t.Fatalf("CachedInfo after changing beta: %v", got)
	}
	_, rec, err = startSeeder(t, p, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if r := rec.find("OS ready", "os", "alpha"); len(r) != 1 || r[0]["how"] != "verified" {
		t.Fatalf("third start, alpha: %v, want verified", r)
	}
	if r := rec.find("OS ready", "os", "beta"); len(r) != 1 || r[0]["how"] != "hashed" || r[0]["info_hash"] == first["beta"] {
		t.Fatalf("third start, beta: %v, want hashed with a new info hash", r)
	}
}

func TestCorruptedOSIsNotServed(t *testing.T) {
	p := makeProject(t, "127.0.0.1", 8080,
		testOS{"good", map[string]int64{"vmlinuz": 1 << 20, "initrd.img": 1 << 20}},
		testOS{"bad", map[string]int64{"vmlinuz": 1 << 20, "initrd.img": 2 << 20}})
	s, _, err := startSeeder(t, p, Options{})
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	// Flip bytes in the middle of bad's initrd, same size, same mtime:
	// bit rot, or a copy that kept the timestamp.
	path := filepath.Join(p.Dir, "oss", "bad", "initrd.img")
	fi, _ := os.Stat(path)
	f, _ := os.OpenFile(path, os.O_WRONLY, 0)
	f.WriteAt([]byte("garbage!"), 1<<20+12345)
	f.Close()
	os.Chtimes(path, fi.ModTime(), fi.ModTime())

	s, rec, err := startSeeder(t, p, Options{})
	var ce *CorruptError
	if !errors.Is(err, ErrCorrupt) || !errors.As(err, &ce) || ce.OS != "bad" || len(ce.Files) != 1 || ce.Files[0] != "initrd.img" || ce.Pieces != 1 {
		t.Fatalf("Start: %v, want a CorruptError for bad naming initrd.img", err)
	}
	if !strings.Contains(err.Error(), "bad") || !strings.Contains(err.Error(), "initrd.img") {
		t.Fatalf("message %q does not name the OS and the file", err)
	}
	if len(rec.find("OS not served", "os", "bad")) != 1 {
		t.Fatal("no log line for the corrupted OS")
	}
	var names []string
	for _, o := range s.OSes() {
		names = append(names, o.Name)
		if o.InfoHash == "" {
			t.Errorf("%s listed without an info hash", o.Name)
		}
	}
	if strings.Join(names, ",") != "good" {
		t.Fatalf("OSes() = %v, want only good", names)
	}
	srv := httptest.NewServer(s.Handler())
	defer srv.Close()
	for path, want := range map[string]int{
		"/torrents/bad.torrent":   404,
		"/oss/bad/initrd.img":     404,
		"/torrents/good.torrent":  200,
		"/oss/good/vmlinuz":       200,
		"/torrents/other.torrent": 404,
	} {
		resp, err := http.Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Errorf("%s: %d, want %d", path, resp.StatusCode, want)
		}
	}
	if ps := s.Peers("bad", netipZero, 5); len(ps) != 0 {
		t.Errorf("Peers for the corrupted OS: %v", ps)
	}
}

func TestHandlerIndexAndPeers(t *testing.T) {
	p := makeProject(t, "127.0.0.1", 8080, testOS{"alpha", map[string]int64{"vmlinuz": 100 << 10, "initrd.img": 200 << 10}})
	s, _, err := startSeeder(t, p, Options{})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(s.Handler())
	defer srv.Close()
	resp, err := http.Get(srv.URL + bootapi.PathOSList)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(b), `"name":"alpha"`) || !strings.Contains(string(b), `"magnet":"magnet:?xt=urn:btih:`) ||
		!strings.Contains(string(b), `"torrent":"/torrents/alpha.torrent"`) {
		t.Fatalf("index: %s", b)
	}
	ih, _ := s.InfoHash("alpha")
	resp, err = http.Get(srv.URL + "/torrents/alpha.torrent")
	if err != nil {
		t.Fatal(err)
	}
	mi, err := metainfo.Load(resp.Body)
	resp.Body.Close()
	if err != nil || mi.HashInfoBytes().HexString() != ih || resp.Header.Get("Content-Type") != "application/x-bittorrent" {
		t.Fatalf("torrent: %v %v", err, resp.Header)
	}
	ps := s.Peers("alpha", netipZero, 5)
	if len(ps) != 1 || ps[0].Addr().String() != "127.0.0.1" || ps[0].Port() == 0 {
		t.Fatalf("Peers = %v, want the seeder on 127.0.0.1", ps)
	}
	if s.Peers("nosuch", netipZero, 5) != nil {
		t.Fatal("peers for an unknown OS")
	}
}

// sha256File is the checksum the download tests compare.
func sha256File(t testing.TB, path string) string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	io.Copy(h, f)
	return hex.EncodeToString(h.Sum(nil))
}

func freePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

var netipZero netip.Addr

func TestLifecycle(t *testing.T) {
	p := makeProject(t, "127.0.0.1", 8080, testOS{"alpha", map[string]int64{"vmlinuz": 64 << 10, "initrd.img": 64 << 10}})
	// Close without Start, twice.
	s, err := New(Options{Project: p, ListenAddr: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s.Close()
	if _, err := New(Options{Project: p, ListenAddr: "no-port"}); err == nil {
		t.Fatal("bad listen address accepted")
	}

	first, _, err := startSeeder(t, p, Options{})
	if err != nil {
		t.Fatal(err)
	}
	// A second instance on the same port must fail (anacrolix does not set
	// SO_REUSEPORT by default, and the UDP tracker does not either), and
	// Close must work after the failed Start.
	addr := first.Peers("alpha", netipZero, 1)[0]
	second, err := New(Options{Project: p, ListenAddr: addr.String()})
	if err != nil {
		t.Fatal(err)
	}
	if err := second.Start(context.Background()); err == nil {
		t.Fatalf("second seeder on %v started", addr)
	} else {
		t.Logf("second seeder: %v", err)
	}
	if err := second.Close(); err != nil {
		t.Logf("close after failed start: %v", err)
	}

	// A machine registered through the boot API is handed out at once,
	// after the seeder.
	m := netip.MustParseAddrPort("127.0.0.5:7000")
	if err := first.RegisterPeer("alpha", m, 100); err != nil {
		t.Fatal(err)
	}
	if ps := first.Peers("alpha", netip.MustParseAddr("127.0.0.9"), 5); len(ps) != 2 || ps[0] != addr || ps[1] != m {
		t.Fatalf("Peers = %v, want [seeder %v, %v]", ps, addr, m)
	}
	if ps := first.Peers("alpha", m.Addr(), 5); len(ps) != 1 || ps[0] != addr {
		t.Fatalf("Peers excluding the machine = %v", ps)
	}
	if err := first.RegisterPeer("nosuch", m, 1); err == nil {
		t.Fatal("registered a peer for an unknown OS")
	}
}

// TestLogPeerDoneWithoutTorrent: a connection that completed its
// handshake but never joined a torrent (refused, or the seeder was
// closing: CI saw it when the server restarted mid-download) ends
// without a log line, instead of the library's Stats dereferencing its
// nil torrent and taking the server down.
func TestLogPeerDoneWithoutTorrent(t *testing.T) {
	var logs bytes.Buffer
	s := &Seeder{log: slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))}
	pc := &torrent.PeerConn{}
	s.connStart.Store(pc, time.Now())
	s.logPeerDone(pc)
	if logs.Len() != 0 {
		t.Errorf("logged a connection that served nothing: %s", logs.String())
	}
	if _, ok := s.connStart.Load(pc); ok {
		t.Error("the connection's start time was kept")
	}
}
