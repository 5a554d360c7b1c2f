package client

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/anacrolix/torrent"
	"github.com/anacrolix/torrent/metainfo"
	pp "github.com/anacrolix/torrent/peer_protocol"
	"github.com/anacrolix/torrent/storage"

	"github.com/boottorrent/boottorrent/initramfs/logging"
	"github.com/boottorrent/boottorrent/seeder/btlan"
)

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

// torrentDL downloads one OS over BitTorrent. The library's callbacks,
// the peer refresh, the web seed fallback and Progress share only
// counters (atomics) and the mask snapshot; the share of the seeder's
// pieces, the seeder's addresses and the steal state belong to the share
// goroutine (shareLoop), which the peer refresh feeds with events.
type torrentDL struct {
	o       dlOptions
	storage storage.ClientImplCloser
	cl      *torrent.Client
	t       *torrent.Torrent
	dir     string
	started time.Time
	np      int // pieces in the torrent
	// maxConns is the torrent's connection limit (see keepSeeder).
	maxConns int

	// Counters, written by the library's callbacks and the goroutines,
	// read by Progress.
	fromPeers, fromSeeder, fromWeb atomic.Int64
	readSeeder                     atomic.Int64 // piece data read from the seeder, useful or not
	requests                       requestCounts
	lastData                       atomic.Int64 // unix nanos of the last useful chunk
	reportMS                       atomic.Int64 // the last Peers answer's ReportMS
	// seederDials counts keepSeeder's dials, seederEvictions the
	// connections keepSeeder and makeSeederRoom closed to make room.
	seederDials, seederEvictions atomic.Int64

	// trackers is the torrent's announce list, held back while the boot
	// API answers (refreshPeers' goroutine only).
	trackers [][]string

	// shares carries the server's answers to the share goroutine
	// (shareLoop); mask is what the seeder's connection is made to
	// advertise (nil: every piece), written by that goroutine only and
	// read by maskSeeder in the library's callback.
	shares chan shareEvent
	mask   atomic.Pointer[[]bool]
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
	if o.TrackerAfter <= 0 {
		o.TrackerAfter = defaultTrackerAfter
	}
	d := &torrentDL{o: o, started: time.Now(), np: info.NumPieces(), shares: make(chan shareEvent, 1)}
	d.lastData.Store(time.Now().UnixNano())
	if o.Peers != nil {
		// Until the server says which share is this machine's, a seeder
		// connection (made through the tracker) offers nothing: asking it
		// for everything is what the shares are there to avoid. See
		// remask for when no answer comes.
		d.mask.Store(shareMask(0, 0, info.NumPieces(), nil))
	}
	if err := btlan.CheckTorrentEnv(); err != nil {
		return nil, err
	}
	cfg := btlan.LANConfig(o.ListenPort)
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
		cfg.Slogger = slog.New(logging.MinLevel(o.Logger.Handler(), slog.LevelError)).With("part", "torrent")
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
	cfg.Callbacks.PeerConnAdded = append(cfg.Callbacks.PeerConnAdded, btlan.AdvertiseMask)
	seederReqq := max(8, int(info.PieceLength/btlan.ChunkSize))
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
	d.maxConns = cfg.EstablishedConnsPerTorrent
	if o.MaxConns > 0 {
		d.maxConns = o.MaxConns
	}
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
		// (TrackerAfter). The tracker's answers are every machine
		// in random order, and with them the library kept dialling
		// machines that were full and refused it: at N = 100 (8 MiB,
		// 4 Mbit/s) the machines accepted 8,400 connections and
		// refused 6,137 of them (cmd/swarmbench/TUNING.md).
		d.trackers = bare.UpvertedAnnounceList()
		bare.Announce, bare.AnnounceList = "", nil
	}
	t, err := btlan.AddTorrent(cl, &bare)
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
	go d.shareLoop(ctx, newShareState(d.np))
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

// sinceData is how long ago the last useful chunk arrived (or the
// download started).
func (d *torrentDL) sinceData() time.Duration {
	return time.Since(time.Unix(0, d.lastData.Load()))
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
