// Package seeder turns every OS folder of a project into one BitTorrent
// torrent and serves it: metainfo (hashed on all cores, cached under out/),
// an anacrolix/torrent client seeding the files in place, the embedded
// tracker (HTTP on the one listener, UDP on server.torrent_port), the BEP 19
// web seed and the JSON index of OSes.
//
// Lifecycle: New checks the options, Start hashes or verifies each OS and
// starts seeding it as soon as it is ready (the HTTP handler works from the
// moment New returns and shows OSes without an info hash until then), Close
// stops everything. Close is safe after a failed Start.
//
// Wiring in `boottorrent start`:
//
//	s, err := seeder.New(seeder.Options{Project: p, Logger: log})
//	defer s.Close()
//	s.Register(surface.Handle) // .torrent files, OS index, web seed, tracker
//	go httpServer.Serve(l)     // clients may ask while hashing
//	if err := s.Start(ctx); errors.Is(err, seeder.ErrCorrupt) {
//		// the other OSes are served; the error names OS and file
//	} else if err != nil {
//		return err // port in use, unreadable files, ...
//	}
//
// Every start reads each image once: new or changed OSes are hashed (all
// cores), unchanged ones are verified against the cached piece hashes,
// because the BitTorrent library would otherwise trust any file of the
// right size and seed corrupted data.
package seeder

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/anacrolix/torrent"
	"github.com/anacrolix/torrent/metainfo"

	"github.com/boottorrent/boottorrent/config"
	"github.com/boottorrent/boottorrent/initramfs/bootapi"
	"github.com/boottorrent/boottorrent/oss"
	"github.com/boottorrent/boottorrent/seeder/tracker"
	"github.com/boottorrent/boottorrent/seeder/webseed"
)

// Options configure a Seeder.
type Options struct {
	// Project is the validated project: Config.Server (Address, HTTPPort,
	// TorrentPort), Config.Torrent.Trackers, OSes and OutDir().
	Project *config.Project
	Logger  *slog.Logger
	// ListenAddr overrides where the BitTorrent client (TCP) and the UDP
	// tracker listen; default Server.Address:TorrentPort. Tests use
	// 127.0.0.1:0 (both then share the port the client got).
	ListenAddr string
	// UploadLimit caps the seeder's BitTorrent upload in bytes per second
	// (0: unlimited). It leaves uplink for DHCP/TFTP/HTTP on a slow link,
	// and lets tests show that clients exchange pieces among themselves.
	UploadLimit int64
	// HashWorkers is the number of goroutines hashing pieces (0: all
	// cores).
	HashWorkers int
	// NoSeed leaves the BitTorrent client out (tracker and web seed
	// only): a tested fallback, and a way to serve with the web seed
	// alone.
	NoSeed bool
	// NoWebSeed leaves the web seed out of the torrents' url-list and the
	// handler.
	NoWebSeed bool
}

// progressEvery is how often hashing logs its progress.
const progressEvery = 10 * time.Second

// osState is one OS and how far it is.
type osState struct {
	os       *oss.OS
	ready    bool
	failed   error
	infoHash metainfo.Hash
	torrent  []byte // .torrent file
	magnet   string
	t        *torrent.Torrent
	// signed is the OS's verified manifest and its bytes (trust.go); nil
	// when the OS is served unsigned.
	signed *signedOS
	// integrity watches the files after OS ready (integrity.go).
	integrity *integrity
}

// Seeder serves the project's OSes over BitTorrent and HTTP.
type Seeder struct {
	opts    Options
	log     *slog.Logger
	tracker *tracker.Tracker
	web     *webseed.Server
	mux     *http.ServeMux

	mu       sync.Mutex
	oses     []*osState
	byName   map[string]*osState
	client   *torrent.Client
	udp      net.PacketConn
	selfAddr netip.AddrPort // BitTorrent address handed out to peers
	udpPort  int
	started  bool
	closed   bool
	wg       sync.WaitGroup

	connStart sync.Map // *torrent.PeerConn -> time.Time of its handshake
	dialBacks dialBacks
	watch     watchState
}

// New checks the options and prepares the HTTP side; nothing listens and
// nothing is read from the images until Start.
func New(opts Options) (*Seeder, error) {
	if opts.Project == nil || opts.Project.Config == nil {
		return nil, errors.New("no project")
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	c := opts.Project.Config
	if opts.ListenAddr == "" {
		opts.ListenAddr = net.JoinHostPort(c.Server.Address, strconv.Itoa(c.Server.TorrentPort))
	}
	if _, _, err := net.SplitHostPort(opts.ListenAddr); err != nil {
		return nil, fmt.Errorf("listen address %q: %w", opts.ListenAddr, err)
	}
	log := opts.Logger.With("component", "seeder")
	s := &Seeder{
		opts:   opts,
		log:    log,
		byName: map[string]*osState{},
	}
	s.web = webseed.New(webseed.Config{Prefix: bootapi.PathWebSeed, Logger: log, Check: s.webSeedCheck})
	s.tracker = tracker.New(tracker.Config{Logger: log, OnLeecher: s.dialBack})
	for _, o := range opts.Project.OSes {
		st := &osState{os: o}
		s.oses = append(s.oses, st)
		s.byName[o.Name] = st
	}
	s.mux = http.NewServeMux()
	s.Register(func(pattern string, h http.Handler, _ bool) { s.mux.Handle(pattern, h) })
	return s, nil
}

// Tracker is the embedded tracker (metrics, tests).
func (s *Seeder) Tracker() *tracker.Tracker { return s.tracker }

// WebSeed is the web seed (metrics, tests).
func (s *Seeder) WebSeed() *webseed.Server { return s.web }

// advertised returns the host to put in URLs: the server address, or the
// listen address's host when the server address is unset or the listen
// address names a specific one (tests on loopback).
func (s *Seeder) advertisedHost() string {
	host, _, _ := net.SplitHostPort(s.opts.ListenAddr)
	if a, err := netip.ParseAddr(host); err == nil && !a.IsUnspecified() {
		return host
	}
	return s.opts.Project.Config.Server.Address
}

// Start prepares every OS and starts serving it. Each OS is hashed (new or
// changed files) or verified against its cached hashes (unchanged files,
// since the BitTorrent library would otherwise trust a file of the right
// size without reading it), then seeded, then listed. An OS whose data
// does not match is not served; Start goes on with the others and returns
// an error wrapping ErrCorrupt (a *CorruptError per OS) at the end. ctx
// bounds the preparation only; serving runs until Close.
func (s *Seeder) Start(ctx context.Context) error {
	s.mu.Lock()
	if s.started || s.closed {
		s.mu.Unlock()
		return errors.New("already started or closed")
	}
	s.started = true
	s.mu.Unlock()
	if err := s.listen(); err != nil {
		return err
	}
	var errs []error
	for _, st := range s.oses {
		if err := s.prepare(ctx, st); err != nil {
			s.mu.Lock()
			st.failed = err
			s.mu.Unlock()
			if ctx.Err() != nil {
				return ctx.Err()
			}
			s.log.Error("OS not served", "os", st.os.Name, "err", err)
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// urls returns the announce tiers and the web seed URL for the torrents.
func (s *Seeder) urls() ([][]string, string) {
	c := s.opts.Project.Config
	host := s.advertisedHost()
	httpBase := "http://" + net.JoinHostPort(host, strconv.Itoa(c.Server.HTTPPort))
	s.mu.Lock()
	udpPort := s.udpPort
	s.mu.Unlock()
	// HTTP first, in a tier of its own (BEP 12: clients try tiers in
	// order): it is on the listener every client already reached, and
	// transmission-cli 3.00 cannot resolve UDP trackers at all ("getaddrinfo_async
	// with no evdns_base") and shuffles a shared tier, which left it without
	// peers. UDP (BEP 15) is the second tier.
	announce := [][]string{{httpBase + bootapi.PathAnnounce}}
	if udpPort != 0 {
		announce = append(announce, []string{"udp://" + net.JoinHostPort(host, strconv.Itoa(udpPort)) + bootapi.PathAnnounce})
	}
	if len(c.Torrent.Trackers) > 0 {
		announce = append(announce, append([]string(nil), c.Torrent.Trackers...))
	}
	web := ""
	if !s.opts.NoWebSeed {
		web = httpBase + bootapi.PathWebSeed
	}
	return announce, web
}

// prepare hashes or verifies one OS, writes its .torrent and serves it.
func (s *Seeder) prepare(ctx context.Context, st *osState) error {
	o := st.os
	p := s.opts.Project
	start := time.Now()
	cached, keys, err := loadCache(p, o)
	if err != nil {
		return fmt.Errorf("OS %s: %w", o.Name, err)
	}
	d, err := openData(o.Dir, o.Files)
	if err != nil {
		return fmt.Errorf("OS %s: %w", o.Name, err)
	}
	defer d.Close()
	workers := s.opts.HashWorkers
	if workers <= 0 {
		workers = runtime.GOMAXPROCS(0)
	}
	// Large images take a while: say how far hashing is every few
	// seconds, so the administrator knows start is not stuck.
	var done atomic.Int64
	stopProgress := make(chan struct{})
	defer close(stopProgress)
	go func() {
		tick := time.NewTicker(progressEvery)
		defer tick.Stop()
		for {
			select {
			case <-stopProgress:
				return
			case <-tick.C:
				n := done.Load()
				s.log.Info("reading OS", "os", o.Name, "bytes", n, "of", d.total,
					"percent", strconv.FormatFloat(100*float64(n)/float64(max(d.total, 1)), 'f', 0, 64),
					"mb_per_s", strconv.FormatFloat(float64(n)/1e6/time.Since(start).Seconds(), 'f', 1, 64))
			}
		}
	}()
	infoBytes, how, err := infoFor(ctx, p, o, d, cached, keys, workers, &done, start)
	if errors.Is(err, errCacheNotWritten) {
		s.log.Warn("hash cache not written; the OS will be hashed again at the next start", "os", o.Name, "err", err)
		err = nil
	}
	if err != nil {
		return err
	}
	dur := time.Since(start)
	ih := metainfo.HashBytes(infoBytes)
	signed, err := s.checkTrust(st, ih)
	if err != nil {
		return err
	}
	announce, web := s.urls()
	tb, mi, err := metaInfoBytes(infoBytes, announce, web)
	if err != nil {
		return fmt.Errorf("OS %s: %w", o.Name, err)
	}
	if err := oss.WriteFileAtomic(TorrentPath(p, o.Name), tb); err != nil {
		return fmt.Errorf("OS %s: write torrent: %w", o.Name, err)
	}
	var info metainfo.Info
	if err := decodeInfo(infoBytes, &info); err != nil {
		return fmt.Errorf("OS %s: %w", o.Name, err)
	}
	var t *torrent.Torrent
	s.mu.Lock()
	cl := s.client
	s.mu.Unlock()
	if cl != nil {
		t, err = s.seed(ctx, cl, o, ih, infoBytes)
		if err != nil {
			return fmt.Errorf("OS %s: seed: %w", o.Name, err)
		}
	}
	if !s.opts.NoWebSeed {
		if err := s.web.Add(o.Name, o.Dir, o.Files); err != nil {
			return fmt.Errorf("OS %s: %w", o.Name, err)
		}
	}
	s.mu.Lock()
	self := s.selfAddr
	st.infoHash, st.torrent, st.t, st.ready = ih, tb, t, true
	st.signed = signed
	st.magnet = mi.Magnet(&ih, &info).String()
	s.mu.Unlock()
	s.tracker.AddTorrent(tracker.Hash(ih), o.Name, d.total, self)
	s.log.Info("OS ready", "os", o.Name, "how", how, "bytes", d.total, "files", len(o.Files),
		"pieces", len(info.Pieces)/20, "piece_length", info.PieceLength, "duration", dur.Round(time.Millisecond),
		"mb_per_s", strconv.FormatFloat(float64(d.total)/1e6/max(dur.Seconds(), 1e-9), 'f', 1, 64),
		"info_hash", ih.HexString(), "torrent", TorrentPath(p, o.Name))
	s.watchOS(st, keys, infoBytes, &info)
	return nil
}

// Peers returns up to n BitTorrent peers for a client about to download
// os: the seeder's own address first, then machines the tracker knows for
// that OS, never the asking machine (exclude).
func (s *Seeder) Peers(osName string, exclude netip.Addr, n int) []netip.AddrPort {
	s.mu.Lock()
	st := s.byName[osName]
	self := s.selfAddr
	s.mu.Unlock()
	if st == nil || n <= 0 {
		return nil
	}
	s.mu.Lock()
	ready, ih := st.ready, st.infoHash
	s.mu.Unlock()
	if !ready {
		return nil
	}
	var out []netip.AddrPort
	if self.IsValid() && self.Addr() != exclude {
		out = append(out, self)
	}
	return append(out, s.tracker.Peers(tracker.Hash(ih), exclude.Unmap(), n-len(out))...)
}

// RegisterPeer adds a booting machine's BitTorrent address to the tracker
// for osName before the machine has announced (the boot client's report
// carries its listen port), so Peers and announces hand it out at once.
// left is the bytes it still needs (the OS size when unknown).
func (s *Seeder) RegisterPeer(osName string, addr netip.AddrPort, left int64) error {
	s.mu.Lock()
	st := s.byName[osName]
	var ih metainfo.Hash
	ready := false
	if st != nil {
		ih, ready = st.infoHash, st.ready
	}
	s.mu.Unlock()
	if !ready {
		return fmt.Errorf("OS %q is not being served", osName)
	}
	return s.tracker.Register(tracker.Hash(ih), addr, left)
}

// TrackerAnnounces counts the embedded tracker's announces over HTTP and
// UDP.
func (s *Seeder) TrackerAnnounces() (http, udp uint64) { return s.tracker.Announces() }

// Stats is one OS's serving counters.
type Stats struct {
	Uploaded  int64 // BitTorrent payload bytes the seeder sent
	PeerConns int
}

// Stats returns the seeder's counters per OS.
func (s *Seeder) Stats() map[string]Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := map[string]Stats{}
	for _, st := range s.oses {
		if st.t == nil {
			continue
		}
		ts := st.t.Stats()
		out[st.os.Name] = Stats{Uploaded: ts.BytesWrittenData.Int64(), PeerConns: ts.ActivePeers}
	}
	return out
}

// Close stops seeding, the UDP tracker and the web seed.
func (s *Seeder) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	cl, pc := s.client, s.udp
	s.mu.Unlock()
	var errs []error
	if pc != nil {
		errs = append(errs, pc.Close())
	}
	if cl != nil {
		for _, err := range cl.Close() {
			errs = append(errs, err)
		}
	}
	s.stopWatching()
	s.web.Close()
	s.wg.Wait()
	return errors.Join(errs...)
}
