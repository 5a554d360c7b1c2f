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
//	mux.Handle(bootapi.PathTorrents, s.Handler()) // and PathOSList, PathWebSeed,
//	mux.Handle(bootapi.PathAnnounce, s.Handler()) // PathAnnounce, PathScrape
//	go httpServer.Serve(l)                         // clients may ask while hashing
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
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/anacrolix/generics"
	alog "github.com/anacrolix/log"
	"github.com/anacrolix/torrent"
	"github.com/anacrolix/torrent/metainfo"
	"github.com/anacrolix/torrent/storage"
	"golang.org/x/time/rate"

	"github.com/boottorrent/boottorrent/config"
	"github.com/boottorrent/boottorrent/netboot/bootapi"
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
}

// logPeerDone logs one finished BitTorrent connection.
func (s *Seeder) logPeerDone(pc *torrent.PeerConn) {
	v, ok := s.connStart.LoadAndDelete(pc)
	if !ok {
		return // closed before the handshake: nothing was served
	}
	if pc.Torrent() == nil {
		// Handshaken but never joined to a torrent (refused, or the
		// seeder was closing: seen when the server restarted during a
		// download). The library's Stats would dereference its nil
		// torrent, and nothing was served.
		return
	}
	d := time.Since(v.(time.Time))
	st := pc.Stats()
	osName := ""
	s.mu.Lock()
	for _, o := range s.oses {
		if o.t != nil && o.t == pc.Torrent() {
			osName = o.os.Name
		}
	}
	s.mu.Unlock()
	sent := st.BytesWrittenData.Int64()
	level := slog.LevelInfo
	if sent == 0 {
		level = slog.LevelDebug
	}
	s.log.Log(context.Background(), level, "peer done", "os", osName, "peer", fmt.Sprint(pc.RemoteAddr),
		"bytes", sent, "duration", d.Round(time.Millisecond),
		"mb_per_s", strconv.FormatFloat(float64(sent)/1e6/max(d.Seconds(), 1e-3), 'f', 1, 64))
}

// New checks the options and prepares the HTTP side; nothing listens and
// nothing is read from the images until Start.
func New(opts Options) (*Seeder, error) {
	if opts.Project == nil || opts.Project.Config == nil {
		return nil, errors.New("seeder: no project")
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	c := opts.Project.Config
	if opts.ListenAddr == "" {
		opts.ListenAddr = net.JoinHostPort(c.Server.Address, strconv.Itoa(c.Server.TorrentPort))
	}
	if _, _, err := net.SplitHostPort(opts.ListenAddr); err != nil {
		return nil, fmt.Errorf("seeder: listen address %q: %w", opts.ListenAddr, err)
	}
	log := opts.Logger.With("component", "seeder")
	s := &Seeder{
		opts:    opts,
		log:     log,
		tracker: tracker.New(tracker.Config{Logger: log}),
		web:     webseed.New(webseed.Config{Prefix: bootapi.PathWebSeed, Logger: log}),
		byName:  map[string]*osState{},
	}
	for _, o := range opts.Project.OSes {
		st := &osState{os: o}
		s.oses = append(s.oses, st)
		s.byName[o.Name] = st
	}
	s.mux = http.NewServeMux()
	s.mux.Handle(bootapi.PathTorrents, http.HandlerFunc(s.serveTorrent))
	s.mux.Handle(bootapi.PathOSList, http.HandlerFunc(s.serveOSList))
	if !opts.NoWebSeed {
		s.mux.Handle(bootapi.PathWebSeed, s.web)
	}
	s.mux.Handle(bootapi.PathAnnounce, s.tracker.AnnounceHandler())
	s.mux.Handle(bootapi.PathScrape, s.tracker.ScrapeHandler())
	return s, nil
}

// Handler serves bootapi.PathTorrents, PathOSList, PathWebSeed,
// PathAnnounce and PathScrape; mount it on those paths of the HTTP
// listener (or as a fallback handler).
func (s *Seeder) Handler() http.Handler { return s.mux }

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
		return errors.New("seeder: already started or closed")
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

// listen starts the BitTorrent client and the UDP tracker.
func (s *Seeder) listen() error {
	host, portStr, _ := net.SplitHostPort(s.opts.ListenAddr)
	port, err := strconv.Atoi(portStr)
	if err != nil {
		return fmt.Errorf("seeder: listen port %q: %w", portStr, err)
	}
	if !s.opts.NoSeed {
		cl, err := torrent.NewClient(s.clientConfig(host, port))
		if err != nil {
			return fmt.Errorf("seeder: BitTorrent client on %s: %w", s.opts.ListenAddr, err)
		}
		port = cl.LocalPort()
		s.mu.Lock()
		s.client = cl
		s.mu.Unlock()
	}
	pc, err := net.ListenPacket("udp", net.JoinHostPort(host, strconv.Itoa(port)))
	if err != nil {
		return fmt.Errorf("seeder: UDP tracker on %s: %w (is another boottorrent running?)", net.JoinHostPort(host, strconv.Itoa(port)), err)
	}
	s.mu.Lock()
	s.udp = pc
	s.udpPort = pc.LocalAddr().(*net.UDPAddr).Port
	if !s.opts.NoSeed {
		if a, err := netip.ParseAddr(s.advertisedHost()); err == nil {
			s.selfAddr = netip.AddrPortFrom(a.Unmap(), uint16(port))
		}
	}
	s.mu.Unlock()
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		if err := s.tracker.ServeUDP(pc); err != nil {
			s.log.Error("UDP tracker stopped", "err", err)
		}
	}()
	s.log.Info("listening", "bittorrent", s.selfAddr, "udp_tracker", pc.LocalAddr().String())
	return nil
}

// clientConfig is the anacrolix client tuned for a LAN seeder facing
// hundreds of machines that all boot at once.
func (s *Seeder) clientConfig(host string, port int) *torrent.ClientConfig {
	cfg := torrent.NewDefaultClientConfig()
	cfg.ListenHost = func(string) string { return host }
	cfg.ListenPort = port
	cfg.Seed = true
	cfg.NoDHT = true                   // private torrents: the tracker and the boot API find peers
	cfg.NoDefaultPortForwarding = true // no UPnP multicast on the lab LAN
	cfg.DisableUTP = true              // uTP was 15-25x slower than TCP on a LAN here
	cfg.DisableWebtorrent = true
	cfg.DisableWebseeds = true // we have every byte; never fetch
	if a, err := netip.ParseAddr(host); err == nil && a.Is4() {
		cfg.DisableIPv6 = true
	}
	// Booting machines arrive together: accept them all, keep them all.
	cfg.EstablishedConnsPerTorrent = 1000
	cfg.HalfOpenConnsPerTorrent = 100
	cfg.TotalHalfOpenConns = 400
	cfg.TorrentPeersHighWater = 2000
	cfg.DisableAcceptRateLimiting = true
	cfg.DialRateLimiter = rate.NewLimiter(200, 200)
	cfg.DropDuplicatePeerIds = true
	cfg.HandshakesTimeout = 10 * time.Second
	// Header obfuscation (MSE) costs a Diffie-Hellman exchange per
	// connection and hides nothing on a lab LAN: plain handshakes, while
	// still accepting obfuscated ones from other clients.
	cfg.HeaderObfuscationPolicy = torrent.HeaderObfuscationPolicy{Preferred: false, RequirePreferred: false}
	// Piece requests are 16 KiB (32 KiB from boot clients); let a peer
	// queue a few MiB so one connection can fill a gigabit link.
	cfg.MaxAllocPeerRequestDataPerConn = 4 << 20
	if s.opts.UploadLimit > 0 {
		cfg.UploadRateLimiter = rate.NewLimiter(rate.Limit(s.opts.UploadLimit), int(max(s.opts.UploadLimit, 4<<20)))
	}
	// No default storage is used (each torrent gets its own, in place),
	// but keep the library's default from creating files in the cwd.
	cfg.DefaultStorage = storage.NewFileOpts(storage.NewFileClientOpts{
		ClientBaseDir:   filepath.Join(s.opts.Project.OutDir(), "cache", "seeder", "unused"),
		PieceCompletion: storage.NewMapPieceCompletion(),
	})
	// One line per machine connection when it ends: who got how much from
	// the seeder, how fast. The callbacks run with the library's locks
	// held, so the stats are read on a goroutine of their own.
	cfg.Callbacks.CompletedHandshake = func(pc *torrent.PeerConn, _ torrent.InfoHash) {
		s.connStart.Store(pc, time.Now())
	}
	cfg.Callbacks.PeerConnClosed = func(pc *torrent.PeerConn) { go s.logPeerDone(pc) }
	AnswerMaskRequests(cfg)
	cfg.Slogger = slog.New(levelAtLeast{s.log.Handler(), slog.LevelWarn}).With("part", "anacrolix")
	cfg.Logger = cfg.Logger.WithFilterLevel(alog.Warning)
	return cfg
}

// AnswerMaskRequests makes a client configured with cfg support
// bootapi.MaskExtension: it advertises the extension on every connection
// and answers its messages with an empty one. The payload is ignored.
// Requests that arrive while a connection's answer is being written get
// one more answer after it (the client only needs one answer after its
// latest request): a peer that sends many gets at most as many answers, a
// few bytes each, and holds at most one writing goroutine.
func AnswerMaskRequests(cfg *torrent.ClientConfig) {
	var pending sync.Map // *torrent.PeerConn → *atomic.Int32, requests not yet answered
	cfg.Callbacks.PeerConnAdded = append(cfg.Callbacks.PeerConnAdded, advertiseMask)
	cfg.Callbacks.PeerConnReadExtensionMessage = append(cfg.Callbacks.PeerConnReadExtensionMessage, func(ev torrent.PeerConnReadExtensionMessageEvent) {
		pc := ev.PeerConn
		if name, _, err := pc.LocalLtepProtocolMap.LookupId(ev.ExtensionNumber); err != nil || name != bootapi.MaskExtension {
			return
		}
		v, _ := pending.LoadOrStore(pc, new(atomic.Int32))
		n := v.(*atomic.Int32)
		if n.Add(1) > 1 {
			return // the writer below answers it
		}
		// The callback runs with the library's lock held, and writing
		// takes it.
		go func() {
			for {
				k := n.Load()
				if pc.WriteExtendedMessage(bootapi.MaskExtension, nil) != nil || n.Add(-k) == 0 {
					pending.Delete(pc)
					return
				}
			}
		}()
	})
}

// advertiseMask is a PeerConnAdded callback that adds
// bootapi.MaskExtension to what pc advertises, in a copy of the library's
// list of extensions, which all connections share. (The boot client has
// its own, initramfs/client advertiseMask: it may not import the server's
// packages.)
func advertiseMask(pc *torrent.PeerConn) {
	m := &torrent.LocalLtepProtocolMap{Index: slices.Clone(pc.LocalLtepProtocolMap.Index), NumBuiltin: pc.LocalLtepProtocolMap.NumBuiltin}
	m.AddUserProtocol(bootapi.MaskExtension)
	pc.LocalLtepProtocolMap = m
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
	var infoBytes []byte
	how := "verified"
	if cached != nil {
		var info metainfo.Info
		if err := decodeInfo(cached.Info, &info); err != nil {
			cached = nil
		} else if err := verifyPieces(ctx, o.Name, d, info.PieceLength, info.Pieces, workers, &done); err != nil {
			return err
		} else {
			infoBytes = cached.Info
		}
	}
	if cached == nil {
		how = "hashed"
		info, err := buildInfo(ctx, o, d, workers, &done)
		if err != nil {
			return fmt.Errorf("OS %s: hash: %w", o.Name, err)
		}
		infoBytes, err = encodeInfo(info)
		if err != nil {
			return err
		}
		// The files may have changed while we read them; the cache is
		// keyed by what we saw before, which is then stale and makes
		// the next start hash again.
		c := &cacheEntry{Format: cacheFormat, Name: o.Name, PieceLength: info.PieceLength, Files: keys,
			InfoHash: metainfo.HashBytes(infoBytes).HexString(), Info: infoBytes, HashedAt: time.Now().UTC(),
			HashSecs: time.Since(start).Seconds(), TotalSize: d.total}
		if err := saveCache(p, c); err != nil {
			s.log.Warn("hash cache not written; the OS will be hashed again at the next start", "os", o.Name, "err", err)
		}
	}
	dur := time.Since(start)
	ih := metainfo.HashBytes(infoBytes)
	announce, web := s.urls()
	tb, mi, err := metaInfoBytes(infoBytes, announce, web)
	if err != nil {
		return fmt.Errorf("OS %s: %w", o.Name, err)
	}
	if err := writeFileAtomic(TorrentPath(p, o.Name), tb); err != nil {
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
	st.magnet = mi.Magnet(&ih, &info).String()
	s.mu.Unlock()
	s.tracker.AddTorrent(tracker.Hash(ih), o.Name, d.total, self)
	s.log.Info("OS ready", "os", o.Name, "how", how, "bytes", d.total, "files", len(o.Files),
		"pieces", len(info.Pieces)/20, "piece_length", info.PieceLength, "duration", dur.Round(time.Millisecond),
		"mb_per_s", strconv.FormatFloat(float64(d.total)/1e6/max(dur.Seconds(), 1e-9), 'f', 1, 64),
		"info_hash", ih.HexString(), "torrent", TorrentPath(p, o.Name))
	return nil
}

// seed adds one verified OS to the client with storage in its own folder.
// The piece-completion store reports every piece complete: the data was
// just hashed or verified, and the library must not hash it again.
func (s *Seeder) seed(ctx context.Context, cl *torrent.Client, o *oss.OS, ih metainfo.Hash, infoBytes []byte) (*torrent.Torrent, error) {
	stor := storage.NewFileOpts(storage.NewFileClientOpts{
		ClientBaseDir:   o.Dir,
		TorrentDirMaker: func(base string, _ *metainfo.Info, _ metainfo.Hash) string { return base },
		FilePathMaker: func(opts storage.FilePathMakerOpts) string {
			return filepath.Join(opts.File.BestPath()...)
		},
		PieceCompletion: verifiedCompletion{},
	})
	t, _ := cl.AddTorrentOpt(torrent.AddTorrentOpts{
		InfoHash:                 ih,
		InfoBytes:                infoBytes,
		Storage:                  stor,
		DisableInitialPieceCheck: true,
	})
	select {
	case <-t.GotInfo():
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	if extra := s.opts.Project.Config.Torrent.Trackers; len(extra) > 0 {
		t.AddTrackers([][]string{extra})
	}
	select {
	case <-t.Complete().On():
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-time.After(30 * time.Second):
		return nil, errors.New("the BitTorrent client does not see the data as complete")
	}
	return t, nil
}

// verifiedCompletion tells the library every piece is complete. It is used
// only for torrents whose data the seeder has just hashed or verified.
type verifiedCompletion struct{}

func (verifiedCompletion) Get(metainfo.PieceKey) (storage.Completion, error) {
	return storage.Completion{Ok: true, Complete: true}, nil
}
func (verifiedCompletion) Set(metainfo.PieceKey, generics.Option[bool]) error { return nil }
func (verifiedCompletion) Close() error                                       { return nil }
func (verifiedCompletion) Persistent() bool                                   { return false }

// OSes returns the OSes for the boot menu, in the project's order. An OS
// still being hashed has an empty InfoHash; an OS that failed (corrupted)
// is left out.
func (s *Seeder) OSes() []bootapi.OS {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]bootapi.OS, 0, len(s.oses))
	for _, st := range s.oses {
		if st.failed != nil {
			continue
		}
		o := st.os
		b := bootapi.OS{Name: o.Name, DispName: o.DispName, Method: string(o.Method), Size: o.Size,
			Torrent: bootapi.PathTorrents + o.Name + ".torrent", Kernel: o.Kernel, Initrd: o.Initrd, Cmdline: o.Cmdline,
			Bin: o.Bin, BinArgs: o.BinArgs, Args: o.Args, Files: o.Files, InitrdFiles: bootapi.InitrdFilesOf(o.InitrdFiles)}
		if st.ready {
			b.InfoHash, b.Magnet = st.infoHash.HexString(), st.magnet
		}
		out = append(out, b)
	}
	return out
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
		return fmt.Errorf("seeder: OS %q is not being served", osName)
	}
	return s.tracker.Register(tracker.Hash(ih), addr, left)
}

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
	s.web.Close()
	s.wg.Wait()
	return errors.Join(errs...)
}

// serveTorrent serves /torrents/<name>.torrent.
func (s *Seeder) serveTorrent(w http.ResponseWriter, r *http.Request) {
	name, ok := strings.CutSuffix(strings.TrimPrefix(r.URL.Path, bootapi.PathTorrents), ".torrent")
	s.mu.Lock()
	st := s.byName[name]
	var body []byte
	var ih metainfo.Hash
	var failed error
	ready := false
	if st != nil {
		body, ih, ready, failed = st.torrent, st.infoHash, st.ready, st.failed
	}
	s.mu.Unlock()
	switch {
	case !ok || st == nil || failed != nil:
		http.NotFound(w, r)
		return
	case !ready:
		w.Header().Set("Retry-After", "5")
		http.Error(w, "OS "+name+" is still being hashed", http.StatusServiceUnavailable)
		return
	}
	w.Header().Set("Content-Type", "application/x-bittorrent")
	w.Header().Set("ETag", `"`+ih.HexString()+`"`)
	w.Header().Set("Content-Disposition", `attachment; filename="`+name+`.torrent"`)
	http.ServeContent(w, r, "", time.Time{}, strings.NewReader(string(body)))
}

// serveOSList serves the JSON index of OSes.
func (s *Seeder) serveOSList(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path != bootapi.PathOSList {
		http.NotFound(w, r)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-cache")
	json.NewEncoder(w).Encode(s.OSes())
}

// InfoHash returns the hex info hash of a ready OS.
func (s *Seeder) InfoHash(osName string) (string, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.byName[osName]
	if st == nil || !st.ready {
		return "", false
	}
	return hex.EncodeToString(st.infoHash[:]), true
}

// levelAtLeast filters a handler to records at or above min (the library
// logs every connection at info level).
type levelAtLeast struct {
	slog.Handler
	min slog.Level
}

func (h levelAtLeast) Enabled(ctx context.Context, l slog.Level) bool {
	return l >= h.min && h.Handler.Enabled(ctx, l)
}
func (h levelAtLeast) WithAttrs(a []slog.Attr) slog.Handler {
	return levelAtLeast{h.Handler.WithAttrs(a), h.min}
}
func (h levelAtLeast) WithGroup(n string) slog.Handler {
	return levelAtLeast{h.Handler.WithGroup(n), h.min}
}
