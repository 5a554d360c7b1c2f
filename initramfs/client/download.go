package client

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/anacrolix/torrent"
	"github.com/anacrolix/torrent/metainfo"
	pp "github.com/anacrolix/torrent/peer_protocol"
	"github.com/anacrolix/torrent/storage"

	"github.com/boottorrent/boottorrent/netboot/bootapi"
)

// peerIDPrefix marks boottorrent clients (BEP 20), so that bytes from
// another booting machine are never counted as the server's.
const peerIDPrefix = "-BT0001-"

// Progress is a snapshot of a download.
type Progress struct {
	Total, Done           int64
	FromPeers, FromSeeder int64
	FromWeb, Uploaded     int64
	Peers                 int
	Seeders               int // connections to the server's seeder
	Stalled               time.Duration
	PiecesFailed          int64
	// Wasted is piece data received that was not needed: a chunk that
	// arrived from two peers (the library asks another peer for a
	// chunk that is slow to come and cancels the first request, which
	// may already be on the wire). WastedSeeder is the part of it that
	// came from the server's seeder, whose uplink every machine shares.
	Wasted, WastedSeeder int64
	// Requests counts the chunk requests sent to peers and the seeder,
	// Rejected the rejects that came back (mostly cancels that came in
	// time), and Withdrawn the requests the library cancelled (mostly to
	// ask another peer) or dropped with their connection without a
	// reject: their chunk was usually sent anyway (see requestCounts).
	Requests, Withdrawn, Rejected int64
	// SeederDials counts the times this machine found itself without a
	// connection to the seeder it still needed and dialled it again
	// (see keepSeeder).
	SeederDials int64
	// ReportEvery is the report interval the server last asked for in a
	// Peers answer (0: the Boot answer's).
	ReportEvery time.Duration
}

// Fetched is a complete download: where the OS's files are.
type Fetched struct {
	Dir   string // the OS folder's copy: Dir/<file> for every file
	Bytes int64
}

// Path is the local path of one of the OS's files.
func (f *Fetched) Path(rel string) string { return filepath.Join(f.Dir, filepath.FromSlash(rel)) }

// downloader is one running download; the real ones are torrentDL and
// httpDL, the state machine's tests use a fake.
type downloader interface {
	// Wait returns when every byte is there and verified.
	Wait(ctx context.Context) (*Fetched, error)
	Progress() Progress
	// Seed keeps serving pieces for d, or less once no connected peer
	// still needs any (see torrentDL.Seed).
	Seed(ctx context.Context, d time.Duration)
	// Close stops all network activity; the files stay.
	Close()
}

// dlOptions configure a download.
type dlOptions struct {
	DataDir    string
	ListenPort int
	ListenHost string // "" listens on every address; tests use 127.0.0.1
	ServerHost string // the server's IP: bytes from it are the seeder's
	// Peers asks the server for peers to dial and this machine's share
	// of the seeder's pieces (bootapi.Peers).
	Peers  func(ctx context.Context) (*bootapi.Peers, error)
	Logger *slog.Logger
	// MemLimit, when >0, refuses images larger than this many bytes
	// (RAM left for the download in init mode).
	MemLimit int64
	// Combine, when set, lays the OS's initrd and the files it hands
	// over out as one combined initrd (handover.go).
	Combine func(dir string, info *metainfo.Info) (*handover, error)
}

// peerReqq is the most chunk requests this machine keeps outstanding at
// another machine (the library would keep up to 250, what the peer
// allows; in practice it keeps one or two, see ChunkSize). On a LAN a
// few chunks cover the round trip; a deep queue only lets the library's
// request stealing cancel chunks already on the wire, which arrive anyway
// and are thrown away. With 8, 20 machines threw away 4–6 % of what they
// received instead of 6–10 %, and the median machine finished about a
// second sooner (16 KiB chunks, 32 MiB at 20 Mbit/s,
// cmd/swarmbench/TUNING.md).
const peerReqq = 8

// ChunkSize is how much one request asks a peer for (BitTorrent's
// usual 16 KiB). The library (v1.61) refills a connection's requests only
// when all have arrived, up to twice the number it added at its previous
// update, and every HAVE of a wanted piece runs an update that usually
// adds none or one: a connection therefore has one or two requests out
// (counted with the library's request callbacks, cmd/swarmbench/TUNING.md),
// and an uploader's socket often held nothing for a machine. The machines
// that happened to have fewer requests out got less of every uploader:
// with 16 KiB, at N = 20 and 5 Mbit/s, 3–4 machines finished 2–15 s after
// the others (all done 1.42–1.52× the bound). 32 KiB doubles what is in
// flight; all 20 finished within 1.5 s, at 1.28–1.31×. A request the
// library moves to another connection is thrown away whole when it
// arrives anyway: 5 % of the data with 16 KiB, 9 % with 32 KiB, 12 % with
// 64 KiB (1.36×). Every boot client and the seeder accept it (the library
// reads messages of up to four times its own chunk size); a client that
// refuses requests over 16 KiB still has the seeder and the other
// machines.
const ChunkSize = 32 << 10

// AddTorrent adds mi to cl with the boot client's request size
// (ChunkSize).
func AddTorrent(cl *torrent.Client, mi *metainfo.MetaInfo) (*torrent.Torrent, error) {
	spec, err := torrent.TorrentSpecFromMetaInfoErr(mi)
	if err != nil {
		return nil, err
	}
	spec.ChunkSize = ChunkSize
	t, _, err := cl.AddTorrentSpec(spec)
	return t, err
}

// torrentDL downloads one OS over BitTorrent.
type torrentDL struct {
	o       dlOptions
	storage storage.ClientImplCloser
	cl      *torrent.Client
	t       *torrent.Torrent
	dir     string

	fromPeers, fromSeeder, fromWeb atomic.Int64
	readSeeder                     atomic.Int64 // piece data read from the seeder, useful or not
	requests                       requestCounts
	lastData                       atomic.Int64 // unix nanos of the last useful chunk
	webSeeded                      atomic.Bool
	started                        time.Time

	np int // pieces in the torrent

	// trackers is the torrent's announce list, held back while the boot
	// API answers (see refreshPeers).
	trackers [][]string

	// share is the share {index, count} of the pieces the server
	// assigned this machine (nil: none yet); mask is what the seeder's connection is
	// made to advertise (nil: every piece). See shareLoop.
	share    atomic.Pointer[[2]int]
	reportMS atomic.Int64 // the last Peers answer's ReportMS
	mask     atomic.Pointer[[]bool]
	seederMu sync.Mutex
	seeder   []torrent.PeerInfo // the seeder's addresses, from the server

	// maxConns is the torrent's connection limit (see keepSeeder);
	// seederDials counts keepSeeder's dials, seederEvictions the
	// connections it closed to make room.
	maxConns        atomic.Int32
	seederDials     atomic.Int64
	seederEvictions atomic.Int64 // connections keepSeeder closed to make room
	// seederBack says whether a connection to the seeder was seen since
	// keepSeeder last closed a connection to make room for it, at
	// lastEvict (shareLoop's goroutine only).
	seederBack bool
	lastEvict  time.Time
	// ready says d.t is set (the library's callbacks may run before).
	ready atomic.Bool

	stop   context.CancelFunc
	wg     sync.WaitGroup
	closed sync.Once
}

// errTooLarge is returned when the image does not fit the machine's RAM.
var errTooLarge = errors.New("the OS does not fit in this machine's free memory")

func startTorrent(ctx context.Context, mi *metainfo.MetaInfo, o dlOptions) (*torrentDL, error) {
	info, err := mi.UnmarshalInfo()
	if err != nil {
		return nil, fmt.Errorf("torrent info: %w", err)
	}
	if !validName(info.BestName()) {
		return nil, fmt.Errorf("torrent name %q is not a safe folder name", info.BestName())
	}
	for _, f := range info.UpvertedFiles() {
		if p := strings.Join(f.BestPath(), "/"); info.IsDir() && !validRel(p) {
			return nil, fmt.Errorf("torrent file %q leaves its folder", p)
		}
	}
	if o.MemLimit > 0 && info.TotalLength() > o.MemLimit {
		return nil, fmt.Errorf("%w: it needs %d MiB, %d MiB are free; give the machine more RAM or boot a smaller OS", errTooLarge, info.TotalLength()>>20, o.MemLimit>>20)
	}
	if err := os.MkdirAll(o.DataDir, 0o755); err != nil {
		return nil, err
	}
	d := &torrentDL{o: o, started: time.Now(), np: info.NumPieces()}
	d.lastData.Store(time.Now().UnixNano())
	if o.Peers != nil {
		// Until the server says which share is this machine's, a seeder
		// connection (made through the tracker) offers nothing: asking it
		// for everything is what the shares are there to avoid. See
		// shareLoop for when no answer comes.
		d.mask.Store(shareMask(0, 0, info.NumPieces(), nil))
	}
	if err := CheckTorrentEnv(); err != nil {
		return nil, err
	}
	cfg := LANConfig(o.ListenPort)
	if o.ListenHost != "" {
		cfg.ListenHost = func(string) string { return o.ListenHost }
	}
	cfg.Bep20 = peerIDPrefix
	cfg.DataDir = o.DataDir
	rs := newRAMStore(o.DataDir)
	rs.combine = o.Combine
	d.storage = rs
	cfg.DefaultStorage = d.storage
	if o.Logger != nil {
		// The library's warnings ("unlock handlers took a long time")
		// would bury the progress line on the console: errors only.
		cfg.Slogger = slog.New(minLevel{o.Logger.Handler(), slog.LevelError}).With("part", "torrent")
	}
	cfg.Callbacks.ReceivedUsefulData = append(cfg.Callbacks.ReceivedUsefulData, func(ev torrent.ReceivedUsefulDataEvent) {
		n := int64(len(ev.Message.Piece))
		d.lastData.Store(time.Now().UnixNano())
		switch d.source(ev.Peer) {
		case srcWeb:
			d.fromWeb.Add(n)
		case srcSeeder:
			d.fromSeeder.Add(n)
		default:
			d.fromPeers.Add(n)
		}
	})
	cfg.Callbacks.ReadMessage = d.readMessage
	d.requests.register(cfg, func(p *torrent.Peer) bool { return d.source(p) == srcSeeder })
	cfg.Callbacks.PeerConnAdded = append(cfg.Callbacks.PeerConnAdded, advertiseMask)
	seederReqq := max(8, int(info.PieceLength/ChunkSize))
	cfg.Callbacks.ReadExtendedHandshake = func(pc *torrent.PeerConn, m *pp.ExtendedHandshakeMessage) {
		// An uploader serves a connection's queued requests in no
		// particular order. With the library's deep queue (up to ~1000
		// chunks) every piece of this machine's share would complete at
		// the seeder only at the end, and could be passed on only then:
		// a few pieces in flight there (8 chunks, or one piece) make them
		// complete one by one. See peerReqq for the other machines.
		limit := peerReqq
		if d.source(&pc.Peer) == srcSeeder {
			limit = seederReqq
		}
		if m.Reqq == 0 || m.Reqq > limit {
			m.Reqq = limit
		}
	}
	cfg.Callbacks.CompletedHandshake = func(pc *torrent.PeerConn, _ torrent.InfoHash) { d.makeSeederRoom(pc) }
	d.maxConns.Store(int32(cfg.EstablishedConnsPerTorrent))
	cl, err := torrent.NewClient(cfg)
	if err != nil {
		d.storage.Close()
		return nil, fmt.Errorf("start BitTorrent on port %d: %w", o.ListenPort, err)
	}
	// The web seed is held back as a fallback: every byte it serves
	// comes from the server's uplink and is never shared the way
	// BitTorrent pieces are, so it is only added when BitTorrent brings
	// nothing (see webSeedFallback).
	webSeeds := mi.UrlList
	bare := *mi
	bare.UrlList = nil
	if o.Peers != nil {
		// The boot API hands out the peers (refreshPeers); the
		// tracker is the fallback for when it stops answering
		// (trackerAfter). The tracker's answers are every machine
		// in random order, and with them the library kept dialling
		// machines that were full and refused it: at N = 100 (8 MiB,
		// 4 Mbit/s) the machines accepted 8,400 connections and
		// refused 6,137 of them (cmd/swarmbench/TUNING.md).
		d.trackers = bare.UpvertedAnnounceList()
		bare.Announce, bare.AnnounceList = "", nil
	}
	t, err := AddTorrent(cl, &bare)
	if err != nil {
		cl.Close()
		d.storage.Close()
		return nil, fmt.Errorf("add torrent: %w", err)
	}
	d.cl, d.t = cl, t
	d.ready.Store(true)
	d.dir = filepath.Join(o.DataDir, info.BestName())
	if !info.IsDir() {
		d.dir = o.DataDir
	}
	t.DownloadAll()
	ctx, d.stop = context.WithCancel(context.Background())
	d.wg.Add(3)
	go d.refreshPeers(ctx)
	go d.webSeedFallback(ctx, webSeeds)
	go d.shareLoop(ctx)
	return d, nil
}

type source int

const (
	srcPeer source = iota
	srcSeeder
	srcWeb
)

func (d *torrentDL) source(p *torrent.Peer) source {
	if p.Network == "http" || p.Network == "https" {
		return srcWeb
	}
	if pc, ok := p.TryAsPeerConn(); ok && strings.HasPrefix(string(pc.PeerID[:]), peerIDPrefix) {
		return srcPeer
	}
	if host, _, err := net.SplitHostPort(p.RemoteAddr.String()); err == nil && host == d.o.ServerHost {
		return srcSeeder
	}
	return srcPeer
}

// refreshPeers hands the torrent client the peers the server knows, at
// once and then periodically, so a lost tracker reply never leaves the
// client idle (the 75 s stall seen with announces alone).
func (d *torrentDL) refreshPeers(ctx context.Context) {
	defer d.wg.Done()
	if d.o.Peers == nil {
		return
	}
	wait := time.Duration(0)
	failing := false
	var failingSince time.Time
	lastKey := ""
	for {
		select {
		case <-ctx.Done():
			return
		case <-time.After(jittered(wait)):
		}
		ans, err := d.o.Peers(ctx)
		switch {
		case err != nil && ctx.Err() != nil:
			return // closing
		case err != nil:
			if !failing {
				failingSince = time.Now()
				if d.o.Logger != nil {
					d.o.Logger.Warn("peer list unavailable", "stage", "download", "err", err)
				}
			}
			failing = true
			wait = 3 * time.Second
			if len(d.trackers) > 0 && time.Since(failingSince) >= trackerAfter {
				if d.o.Logger != nil {
					d.o.Logger.Warn("peer list unavailable: asking the tracker for peers", "stage", "download", "after", trackerAfter)
				}
				d.t.AddTrackers(d.trackers)
				d.trackers = nil
			}
			continue
		case err == nil:
			if failing && d.o.Logger != nil {
				d.o.Logger.Info("peer list available again", "stage", "download", "peers", len(ans.Peers))
			}
			failing = false
		}
		var pis, seeder []torrent.PeerInfo
		for _, s := range ans.Peers {
			host, port, err := net.SplitHostPort(s)
			if err != nil {
				continue
			}
			pn, _ := strconv.Atoi(port)
			pi := torrent.PeerInfo{
				Addr:    &net.TCPAddr{IP: net.ParseIP(host), Port: pn},
				Source:  torrent.PeerSourceDirect,
				Trusted: host == d.o.ServerHost,
			}
			pis = append(pis, pi)
			if pi.Trusted {
				seeder = append(seeder, pi)
			}
		}
		d.seederMu.Lock()
		d.seeder = seeder
		d.seederMu.Unlock()
		if d.share.Swap(&[2]int{ans.ShareIndex, ans.ShareCount}) == nil {
			from, to := shareRange(ans.ShareIndex, ans.ShareCount, d.t.NumPieces())
			// The first share applies before the seeder is dialled
			// (dropping a connection the tracker may have made);
			// later changes go through shareLoop.
			d.setMask(shareMask(from, to, d.t.NumPieces(), nil))
		}
		d.t.AddPeers(pis)
		d.reportMS.Store(ans.ReportMS)
		// Every second while the answer changes (machines switched on
		// one after another, shares handed out), then less and less
		// often up to every 10 s: a hundred machines asking every
		// second took a third of a 4 Mbit/s server uplink.
		key := peersKey(ans)
		if key != lastKey {
			wait = time.Second
		} else {
			wait = min(2*wait, 10*time.Second)
		}
		lastKey = key
	}
}

// trackerAfter is how long the boot API may fail to answer before the
// client announces to the torrent's trackers for peers instead (a
// variable for the tests).
var trackerAfter = 15 * time.Second

// peersKey says what in a Peers answer refreshPeers acts on: the share
// and the set of peers, not their order. Servers used to list the peers
// most recently seen first, so the order changed with every machine's
// report; comparing it made every machine ask again each second for the
// whole download, and those answers took 7 % of a 5 Mbit/s server
// uplink at N = 20 (server egress 1.19–1.20 copies of the image against
// 1.11–1.13 with this key, cmd/swarmbench/TUNING.md). The server now
// keeps each machine's list stable too (netboot Registry.Peers).
func peersKey(ans *bootapi.Peers) string {
	peers := slices.Clone(ans.Peers)
	slices.Sort(peers)
	return fmt.Sprint(ans.ShareIndex, ans.ShareCount, peers)
}

// sinceData is how long ago the last useful chunk arrived (or the
// download started).
func (d *torrentDL) sinceData() time.Duration {
	return time.Since(time.Unix(0, d.lastData.Load()))
}

// webSeedAfter is how long BitTorrent may bring no data, with no
// connection to the seeder, before the web seed is added;
// webSeedLastResort is how long the seeder's connection may read nothing
// while this machine has requests out on it (it stalled: one machine
// alone at 5 Mbit/s once waited 50 s on a live seeder connection before
// TCP sent again); webSeedNoData is how long without any useful data adds
// it whatever the connections look like.
const (
	webSeedAfter      = 8 * time.Second
	webSeedLastResort = 15 * time.Second
	webSeedNoData     = 60 * time.Second
)

// webSeedDue says whether to add the web seed, given how long ago the
// last useful data came (sinceData), how long ago this machine last had a
// connection to the seeder (sinceSeeder) and how long the seeder's
// connection has read nothing with requests out on it (seederStalled,
// see stallWatch): when no data came for webSeedAfter and the seeder has
// been unreachable as long (its port filtered, the server's BitTorrent
// side restarting), when the seeder's connection stalled for
// webSeedLastResort, or after webSeedNoData without data at all.
//
// A connection that delivers slowly is not stalled. While the seeder is
// connected, a slow start is the server's uplink being shared, and the
// web seed, served from the same uplink and never shared the way pieces
// are, only adds to it: at N = 100 on 1 Mbit/s links, where a machine's
// first piece takes longer than 8 s to arrive, 99 of 100 machines added
// it and the server sent 15 copies of the image. With 64 owners sharing
// a 1 Mbit/s uplink a 64 KiB piece takes 34 s, past the 15 s that used
// to count as a stall whatever the connection did: in such a run the web
// seed sent 3 copies (cmd/swarmbench/TUNING.md, sessions 6 and 13). A
// machine without requests on the seeder (no share, waiting for the
// owners) is waiting, not stalled.
func webSeedDue(sinceData, sinceSeeder, seederStalled time.Duration) bool {
	switch {
	case sinceData >= webSeedAfter && sinceSeeder >= webSeedAfter:
		return true
	case sinceData >= webSeedLastResort && seederStalled >= webSeedLastResort:
		return true
	}
	return sinceData >= webSeedNoData
}

// stallWatch measures how long the seeder's connections have read
// nothing while requests were out on them.
type stallWatch struct {
	read  int64     // bytes the seeder's connections had read
	moved time.Time // when they last read, or had nothing requested
}

// observe takes the bytes the seeder's connections have read so far and
// the requests out on them, at now, and returns how long they have been
// stalled.
func (w *stallWatch) observe(now time.Time, read, outstanding int64) time.Duration {
	if w.moved.IsZero() || read != w.read || outstanding <= 0 {
		w.read, w.moved = read, now
	}
	return now.Sub(w.moved)
}

// webSeedFallback adds the torrent's web seeds when webSeedDue says so.
func (d *torrentDL) webSeedFallback(ctx context.Context, urls []string) {
	defer d.wg.Done()
	if len(urls) == 0 {
		return
	}
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	lastSeeder := d.started
	var watch stallWatch
	for {
		select {
		case <-ctx.Done():
			return
		case <-d.t.Complete().On():
			return
		case <-tick.C:
		}
		var read int64
		for _, pc := range d.t.PeerConns() {
			if d.source(&pc.Peer) == srcSeeder {
				lastSeeder = time.Now()
				st := pc.Stats()
				read += st.BytesRead.Int64()
			}
		}
		// Connections that close take their counts with them; a new one
		// starts from zero, which counts as movement.
		stalled := watch.observe(time.Now(), read, d.requests.seederOut.Load())
		noData, noSeeder := d.sinceData(), time.Since(lastSeeder)
		if webSeedDue(noData, noSeeder, stalled) {
			if d.o.Logger != nil {
				d.o.Logger.Warn("no BitTorrent data: adding the web seed", "stage", "download", "no_data_for", noData.Round(time.Second),
					"seeder_unreachable_for", noSeeder.Round(time.Second), "seeder_stalled_for", stalled.Round(time.Second), "urls", len(urls))
			}
			d.t.AddWebSeeds(urls)
			d.webSeeded.Store(true)
			return
		}
	}
}

// readMessage is the ReadMessage callback, run for every message before
// the library reads it: it counts rejects and the seeder's piece data
// (Progress) and lets maskSeeder rewrite the seeder's messages. The
// message's source is worked out once: this runs for every chunk.
func (d *torrentDL) readMessage(pc *torrent.PeerConn, m *pp.Message) {
	if m.Keepalive {
		return
	}
	d.requests.read(m)
	if d.source(&pc.Peer) != srcSeeder {
		return
	}
	if m.Type == pp.Piece {
		d.readSeeder.Add(int64(len(m.Piece)))
		return
	}
	d.maskSeeder(pc, m)
}

func (d *torrentDL) Wait(ctx context.Context) (*Fetched, error) {
	select {
	case <-d.t.Complete().On():
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	return &Fetched{Dir: d.dir, Bytes: d.t.Length()}, nil
}

func (d *torrentDL) Progress() Progress {
	st := d.t.Stats()
	p := Progress{
		Total:        d.t.Length(),
		Done:         d.t.BytesCompleted(),
		FromPeers:    d.fromPeers.Load(),
		FromSeeder:   d.fromSeeder.Load(),
		FromWeb:      d.fromWeb.Load(),
		Uploaded:     st.BytesWrittenData.Int64(),
		PiecesFailed: st.PiecesDirtiedBad.Int64(),
		Wasted:       max(0, st.BytesReadData.Int64()-st.BytesReadUsefulData.Int64()),
		WastedSeeder: max(0, d.readSeeder.Load()-d.fromSeeder.Load()),
	}
	p.Requests, p.Withdrawn, p.Rejected = d.requests.counts()
	p.SeederDials = d.seederDials.Load()
	p.ReportEvery = time.Duration(d.reportMS.Load()) * time.Millisecond
	for _, pc := range d.t.PeerConns() {
		if d.source(&pc.Peer) == srcSeeder {
			p.Seeders++
		} else {
			p.Peers++
		}
	}
	if p.Done < p.Total {
		p.Stalled = d.sinceData()
	}
	return p
}

// Seed serves pieces to the other booting machines for at most dur. It
// ends early once dur/3 has passed and no connected peer (other than the
// server's seeder) has been missing a piece for a while: lingering then
// helps nobody and delays this machine's boot.
func (d *torrentDL) Seed(ctx context.Context, dur time.Duration) {
	if dur <= 0 {
		return
	}
	end := time.Now().Add(dur)
	idleSince := time.Now()
	tick := time.NewTicker(500 * time.Millisecond)
	defer tick.Stop()
	for time.Now().Before(end) {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		needy := false
		for _, pc := range d.t.PeerConns() {
			if d.source(&pc.Peer) == srcSeeder {
				continue
			}
			if pc.PeerPieces().GetCardinality() < uint64(d.t.NumPieces()) {
				needy = true
				break
			}
		}
		if needy {
			idleSince = time.Now()
		}
		if time.Since(idleSince) > 3*time.Second && time.Until(end) < dur*2/3 {
			return
		}
	}
}

func (d *torrentDL) Close() {
	d.closed.Do(func() {
		d.stop()
		d.wg.Wait()
		d.cl.Close()
		// The client does not close the storage it was given; ramStore
		// closes every file, so kexec_file_load can read the kernel.
		d.storage.Close()
	})
}

// httpDL is the baseline: the same files over plain HTTP from the web
// seed, one after another (what every machine did before BitTorrent).
type httpDL struct {
	dir    string
	total  int64
	done   atomic.Int64
	last   atomic.Int64
	errc   chan error
	cancel context.CancelFunc
}

func startHTTP(ctx context.Context, a *api, o *bootapi.OS, dataDir string) (*httpDL, error) {
	d := &httpDL{dir: filepath.Join(dataDir, o.Name), total: o.Size, errc: make(chan error, 1)}
	d.last.Store(time.Now().UnixNano())
	ctx, d.cancel = context.WithCancel(ctx)
	go func() { d.errc <- d.run(ctx, a, o) }()
	return d, nil
}

func (d *httpDL) run(ctx context.Context, a *api, o *bootapi.OS) error {
	for _, f := range o.Files {
		if err := d.one(ctx, a.hc, a.WebSeedURL(o.Name, f), filepath.Join(d.dir, filepath.FromSlash(f))); err != nil {
			return fmt.Errorf("web seed %s: %w", f, err)
		}
	}
	return nil
}

// httpResumes is how many times in a row one file's transfer may be cut
// short without a byte of progress before httpDL gives up (and the
// machine starts the stage over); httpResumePause is the wait before each
// resumption.
const (
	httpResumes     = 3
	httpResumePause = time.Second
)

// one fetches url into dst. A transfer cut short goes on from where it
// stopped with a Range request (If-Range: the ETag of the first answer),
// as wget -c or curl -C - would: on a slow link shared by many machines
// TCP can starve one transfer long enough for the server to drop it as
// idle (the web seed's IdleTimeout, 30 s), and starting the file over
// would make the baseline slower than plain HTTP is.
func (d *httpDL) one(ctx context.Context, hc *http.Client, url, dst string) error {
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return err
	}
	f, err := os.Create(dst)
	if err != nil {
		return err
	}
	var off int64
	etag := ""
	for stuck := 0; ; {
		before := off
		err := d.fetch(ctx, hc, url, f, &off, &etag)
		if err == nil {
			return f.Close()
		}
		if off > before {
			stuck = 0
		} else {
			stuck++
		}
		if ctx.Err() != nil || errors.Is(err, errHTTP) || stuck >= httpResumes {
			f.Close()
			return err
		}
		select {
		case <-time.After(httpResumePause):
		case <-ctx.Done():
			f.Close()
			return ctx.Err()
		}
	}
}

// fetch asks for url from *off on (the whole file at 0) and writes what
// comes at its offset in f, advancing *off. A server that answers a range
// request with the whole file (it ignores ranges, or the file changed
// since *etag) starts the file over.
func (d *httpDL) fetch(ctx context.Context, hc *http.Client, url string, f *os.File, off *int64, etag *string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	if *off > 0 {
		req.Header.Set("Range", fmt.Sprintf("bytes=%d-", *off))
		if *etag != "" {
			req.Header.Set("If-Range", *etag)
		}
	}
	resp, err := hc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	switch {
	case resp.StatusCode == http.StatusOK:
		if *off > 0 {
			if err := f.Truncate(0); err != nil {
				return err
			}
			d.done.Add(-*off)
			*off = 0
		}
		*etag = resp.Header.Get("ETag")
	case resp.StatusCode == http.StatusPartialContent && *off > 0:
		if want := fmt.Sprintf("bytes %d-", *off); !strings.HasPrefix(resp.Header.Get("Content-Range"), want) {
			return fmt.Errorf("%w: asked for bytes from %d, got Content-Range %.60q", errHTTP, *off, resp.Header.Get("Content-Range"))
		}
	default:
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 200))
		return fmt.Errorf("%w %s: %s", errHTTP, resp.Status, bytes.TrimSpace(msg))
	}
	buf := make([]byte, 256<<10)
	for {
		n, rerr := resp.Body.Read(buf)
		if n > 0 {
			if _, err := f.WriteAt(buf[:n], *off); err != nil {
				return err
			}
			*off += int64(n)
			d.done.Add(int64(n))
			d.last.Store(time.Now().UnixNano())
		}
		if rerr == io.EOF {
			return nil
		}
		if rerr != nil {
			return rerr
		}
	}
}

func (d *httpDL) Wait(ctx context.Context) (*Fetched, error) {
	select {
	case err := <-d.errc:
		if err != nil {
			return nil, err
		}
		return &Fetched{Dir: d.dir, Bytes: d.done.Load()}, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

func (d *httpDL) Progress() Progress {
	p := Progress{Total: d.total, Done: d.done.Load(), FromWeb: d.done.Load()}
	if p.Done < p.Total {
		p.Stalled = time.Since(time.Unix(0, d.last.Load()))
	}
	return p
}

func (d *httpDL) Seed(context.Context, time.Duration) {}
func (d *httpDL) Close()                              { d.cancel() }

// minLevel drops records below a level.
type minLevel struct {
	slog.Handler
	min slog.Level
}

func (h minLevel) Enabled(ctx context.Context, l slog.Level) bool {
	return l >= h.min && h.Handler.Enabled(ctx, l)
}

func (h minLevel) WithAttrs(as []slog.Attr) slog.Handler {
	return minLevel{h.Handler.WithAttrs(as), h.min}
}
func (h minLevel) WithGroup(n string) slog.Handler { return minLevel{h.Handler.WithGroup(n), h.min} }

// LANConfig is the anacrolix/torrent configuration every boot client uses
// on a lab LAN (../shared/LIBRARIES.md): always upload (Seed; a
// non-seeding client stops uploading to a peer it is ahead of), no DHT,
// IPv6, uTP (15–25× slower than TCP here), UPnP, webtorrent, header
// obfuscation or peer exchange, and one connection per pair of peers.
// The swarm benchmark's lab engine starts from it too, so that it
// measures the product's settings.
func LANConfig(port int) *torrent.ClientConfig {
	cfg := torrent.NewDefaultClientConfig()
	cfg.Seed = true
	cfg.NoDHT = true
	cfg.DisableIPv6 = true
	cfg.DisableUTP = true
	cfg.NoDefaultPortForwarding = true
	cfg.DisableWebtorrent = true
	cfg.DropDuplicatePeerIds = true
	// Peer exchange would spread every machine's address to every
	// other: the boot API already hands each machine its own stable set
	// of peers, and machines that dialled beyond it found their peers
	// full (see download's tracker fallback).
	cfg.DisablePEX = true
	// Header obfuscation (MSE) hides nothing on a LAN and costs a
	// Diffie-Hellman exchange per connection. Plain handshakes only, in
	// both directions: when a plain handshake fails (a duplicate
	// connection dropped mid-handshake), the library would otherwise
	// dial again with MSE, and those exchanges were still 8–9 % of every
	// boot client's CPU with 20 machines. Every peer of a boot client is
	// another boot client or our seeder.
	cfg.HeaderObfuscationPolicy = torrent.HeaderObfuscationPolicy{Preferred: false, RequirePreferred: true}
	cfg.ListenPort = port
	// The boot API lists the seeder and at most 19 machines
	// (netboot.MaxPeers), and those machines list this one back
	// (netboot.Registry.Peers): 25 connections leave room for peers that
	// are not boot clients, without the HAVE traffic and request
	// updates of the library's 50 (at N = 100, 5.7–5.9× T* with 50
	// against 3.5–3.8×). When a machine is dialled beyond the limit
	// anyway, keepSeeder gets the seeder's connection back.
	cfg.EstablishedConnsPerTorrent = 25
	// No cap on the pieces considered for requests. The library walks the
	// wanted pieces in its order (rarest first) and stops after 64 MiB of
	// them (MaxUnverifiedBytes) whether or not the peer has them; with the
	// seeder's connection masked to this machine's share, the share lay
	// past those 64 MiB for an OS over 64 MiB, and two machines booting a
	// 140 MiB Debian live system together asked the seeder and each other
	// for nothing until the web seed took over (2026-12-08). Every byte
	// lands in RAM anyway: the cap bounds nothing here.
	cfg.MaxUnverifiedBytes = 0
	if os.Getenv(stealGraceEnv) == "" {
		cfg.StealRequestGrace = stealGrace
	}
	return cfg
}

// CheckTorrentEnv reports a malformed TORRENT_STEAL_REQUEST_GRACE as an
// error naming the variable. The library parses it in
// NewDefaultClientConfig and panics when it does not parse; as /init,
// a panic would stop the machine (the kernel passes unknown
// NAME=value words of its command line to init as environment).
// Call it before LANConfig or torrent.NewDefaultClientConfig.
func CheckTorrentEnv() error {
	v := os.Getenv(stealGraceEnv)
	if v == "" {
		return nil
	}
	if _, err := time.ParseDuration(v); err != nil {
		return fmt.Errorf("environment variable %s=%q is not a duration (for example 3s or 500ms): correct it or unset it", stealGraceEnv, v)
	}
	return nil
}

// stealGrace is how long a chunk request stays with the connection it was
// sent on before the library may move it to a connection with fewer
// requests out (ClientConfig.StealRequestGrace, anacrolix/torrent v1.62;
// without it, v1.61 moved requests whenever queue depths differed by one).
// A moved request is cancelled, and if its chunk is already on the wire
// it arrives anyway and is thrown away. On a lab LAN a chunk crosses a
// busy connection in well under a second at 20 Mbit/s but in seconds on
// slow links shared by many uploaders: at N = 20, 8 MiB, 1 Mbit/s the
// machines threw away 37 MiB without a grace, 30 MiB with 3 s and 20 MiB
// with 8 s (cmd/swarmbench/TUNING.md, session 14).
const stealGrace = 8 * time.Second

// stealGraceEnv is the library's own override of the grace
// (a time.ParseDuration value); when it is set and not empty, LANConfig
// keeps the library's reading of it, so swarmbench can sweep the grace
// with --client-env.
const stealGraceEnv = "TORRENT_STEAL_REQUEST_GRACE"
