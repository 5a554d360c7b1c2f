package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"sync/atomic"
	"syscall"
	"time"

	alog "github.com/anacrolix/log"
	"github.com/anacrolix/torrent"
	"github.com/anacrolix/torrent/bencode"
	"github.com/anacrolix/torrent/metainfo"
	pp "github.com/anacrolix/torrent/peer_protocol"
	"github.com/anacrolix/torrent/storage"

	"github.com/boottorrent/boottorrent/seeder/btlan"
)

// The "lab" helpers run anacrolix/torrent directly, with the settings the
// seeder and the boot client use, without DHCP, boot API or tracker (every
// leecher is handed the seeder and all other leechers at once). They
// separate what the library does on these links from what boottorrent
// adds around it: --engine lab.

// labMarker starts the lab leecher's final line.
const labMarker = "swarmbench-lab "

// LabResult is the lab leecher's final line.
type LabResult struct {
	Bytes        int64   `json:"bytes"`
	Seconds      float64 `json:"seconds"`
	SeedSeconds  float64 `json:"seed_seconds"`
	FromPeers    int64   `json:"from_peers"`
	FromSeeder   int64   `json:"from_seeder"`
	Wasted       int64   `json:"wasted"` // chunks received that were not useful
	Uploaded     int64   `json:"uploaded"`
	PiecesFailed int64   `json:"pieces_failed"`
	ShareSeconds float64 `json:"share_seconds,omitempty"` // own share of the pieces complete (mask)
	Unmasked     float64 `json:"unmasked,omitempty"`      // when the fallback unmasked the seeder
	Error        string  `json:"error,omitempty"`
}

func labConfig(dir string, port int, seeder bool) *torrent.ClientConfig {
	cfg := btlan.LANConfig(port)
	cfg.DisableWebseeds = true
	cfg.DataDir = dir
	cfg.DefaultStorage = storage.NewFileOpts(storage.NewFileClientOpts{
		ClientBaseDir:   dir,
		PieceCompletion: storage.NewMapPieceCompletion(),
	})
	cfg.Logger = cfg.Logger.WithFilterLevel(alog.Warning)
	if seeder {
		btlan.ManyPeers(cfg)
	}
	if v := os.Getenv("SWARMBENCH_LAB_MAXREQ"); v != "" {
		n, _ := strconv.Atoi(v)
		cfg.MaxUnverifiedBytes = int64(n)
	}
	return cfg
}

// labSeed: DIR TORRENT PORT PIECE. Hashes DIR/image.bin into TORRENT and
// seeds it until SIGTERM.
func labSeed(args []string, stdout, stderr io.Writer) int {
	if len(args) != 4 {
		fmt.Fprintln(stderr, "lab-seed: want DIR TORRENT PORT PIECE")
		return 2
	}
	dir, tpath := args[0], args[1]
	port, _ := strconv.Atoi(args[2])
	piece, err := ParseSize(args[3])
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 2
	}
	info := metainfo.Info{PieceLength: piece}
	if err := info.BuildFromFilePath(filepath.Join(dir, imageName)); err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	mi := metainfo.MetaInfo{}
	mi.InfoBytes, err = bencode.Marshal(info)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	cl, err := torrent.NewClient(labConfig(dir, port, true))
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	defer cl.Close()
	t, err := btlan.AddTorrent(cl, &mi)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	if err := t.VerifyDataContext(context.Background()); err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	<-t.Complete().On()
	f, err := os.Create(tpath + ".tmp")
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	if err := mi.Write(f); err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	f.Close()
	os.Rename(tpath+".tmp", tpath)
	fmt.Fprintln(stdout, "seeding", t.InfoHash().HexString(), "pieces", t.NumPieces())
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	<-ctx.Done()
	st := t.Stats()
	fmt.Fprintln(stdout, "uploaded", st.BytesWrittenData.Int64())
	return 0
}

// labLeech: TORRENT DATADIR PORT SEEDTIME PEER... downloads, seeds for
// SEEDTIME (less when no connected peer needs anything), prints LabResult.
func labLeech(args []string, stdout, stderr io.Writer) int {
	if len(args) < 4 {
		fmt.Fprintln(stderr, "lab-leech: want TORRENT DATADIR PORT SEEDTIME PEER...")
		return 2
	}
	start := time.Now()
	var res LabResult
	defer func() {
		b, _ := json.Marshal(res)
		fmt.Fprintln(stdout, labMarker+string(b))
	}()
	mi, err := metainfo.LoadFromFile(args[0])
	if err != nil {
		res.Error = err.Error()
		return 1
	}
	port, _ := strconv.Atoi(args[2])
	seedTime, _ := time.ParseDuration(args[3])
	seederHost, _, _ := net.SplitHostPort(args[4])
	var fromPeers, fromSeeder atomic.Int64
	cfg := labConfig(args[1], port, false)
	cfg.Callbacks.ReceivedUsefulData = append(cfg.Callbacks.ReceivedUsefulData, func(ev torrent.ReceivedUsefulDataEvent) {
		n := int64(len(ev.Message.Piece))
		if h, _, _ := net.SplitHostPort(ev.Peer.RemoteAddr.String()); h == seederHost {
			fromSeeder.Add(n)
		} else {
			fromPeers.Add(n)
		}
	})
	// SWARMBENCH_LAB_SEEDQ=N: queue at most N 16 KiB requests at the
	// seeder (it advertises reqq 1024, 16 MiB, so a leecher queues far
	// more than it needs and the seeder sends pieces others already have).
	if v := os.Getenv("SWARMBENCH_LAB_SEEDQ"); v != "" {
		q, _ := strconv.Atoi(v)
		cfg.Callbacks.ReadExtendedHandshake = func(pc *torrent.PeerConn, m *pp.ExtendedHandshakeMessage) {
			if h, _, _ := net.SplitHostPort(pc.RemoteAddr.String()); h == seederHost && q > 0 {
				m.Reqq = q
			}
		}
	}
	// SWARMBENCH_LAB_MASK=1 (with SWARMBENCH_LAB_SPREAD=SLOT/N): the
	// leecher sees the seeder holding only its own 1/N of the pieces (the
	// seeder's bitfield or HaveAll is rewritten on arrival), so that it
	// asks the seeder for nothing the other leechers will have: a
	// client-side emulation of super-seeding (BEP 16).
	var masked atomic.Bool
	from, to := 0, 0
	if os.Getenv("SWARMBENCH_LAB_MASK") != "" {
		var slot, n int
		fmt.Sscanf(os.Getenv("SWARMBENCH_LAB_SPREAD"), "%d/%d", &slot, &n)
		info, _ := mi.UnmarshalInfo()
		np := info.NumPieces()
		if n > 0 {
			from, to = slot*np/n, (slot+1)*np/n
			masked.Store(true)
			cfg.Callbacks.ReadMessage = func(pc *torrent.PeerConn, m *pp.Message) {
				if m.Type != pp.Bitfield && m.Type != pp.HaveAll || !masked.Load() {
					return
				}
				if h, _, _ := net.SplitHostPort(pc.RemoteAddr.String()); h != seederHost {
					return
				}
				bf := make([]bool, (np+7)/8*8)
				for i := from; i < to; i++ {
					bf[i] = true
				}
				m.Type, m.Bitfield = pp.Bitfield, bf
			}
		}
	}
	cl, err := torrent.NewClient(cfg)
	if err != nil {
		res.Error = err.Error()
		return 1
	}
	defer cl.Close()
	t, err := btlan.AddTorrent(cl, mi)
	if err != nil {
		res.Error = err.Error()
		return 1
	}
	var pis []torrent.PeerInfo
	for _, p := range args[4:] {
		ap, err := net.ResolveTCPAddr("tcp", p)
		if err == nil {
			pis = append(pis, torrent.PeerInfo{Addr: ap, Source: torrent.PeerSourceDirect, Trusted: ap.IP.String() == seederHost})
		}
	}
	t.AddPeers(pis)
	t.DownloadAll()
	// SWARMBENCH_LAB_SPREAD=SLOT/N: this leecher wants its own 1/N of the
	// pieces first (starting at SLOT·pieces/N), so that N leechers ask the
	// seeder for different pieces instead of all for piece 0, 1, 2...
	// (the library breaks ties among equally rare pieces by index).
	if v := os.Getenv("SWARMBENCH_LAB_SPREAD"); v != "" {
		var slot, n int
		if _, err := fmt.Sscanf(v, "%d/%d", &slot, &n); err == nil && n > 0 {
			np := t.NumPieces()
			from := slot * np / n
			to := (slot + 1) * np / n
			for i := from; i < to; i++ {
				t.Piece(i).SetPriority(torrent.PiecePriorityHigh)
			}
		}
	}
	// Wait, noting when this leecher's own share was complete; with
	// SWARMBENCH_LAB_FALLBACK, once the share is done and pieces are
	// missing that no connected leecher has (a slow or dead owner), the
	// seeder is reconnected unmasked.
	fallback := os.Getenv("SWARMBENCH_LAB_FALLBACK") != ""
	var orphanSince time.Time
	tick := time.NewTicker(250 * time.Millisecond)
wait:
	for {
		select {
		case <-t.Complete().On():
			break wait
		case <-tick.C:
		}
		if !masked.Load() {
			continue
		}
		shareDone := true
		for i := from; i < to; i++ {
			if !t.Piece(i).State().Complete {
				shareDone = false
				break
			}
		}
		if shareDone && res.ShareSeconds == 0 {
			res.ShareSeconds = time.Since(start).Seconds()
		}
		if !fallback || !shareDone {
			continue
		}
		held := make([]bool, t.NumPieces())
		for _, pc := range t.PeerConns() {
			if h, _, _ := net.SplitHostPort(pc.RemoteAddr.String()); h == seederHost {
				continue
			}
			bm := pc.PeerPieces()
			it := bm.Iterator()
			for it.HasNext() {
				if i := int(it.Next()); i < len(held) {
					held[i] = true
				}
			}
		}
		orphan := false
		for i := range held {
			if !held[i] && !t.Piece(i).State().Complete {
				orphan = true
				break
			}
		}
		switch {
		case !orphan:
			orphanSince = time.Time{}
		case orphanSince.IsZero():
			orphanSince = time.Now()
		case time.Since(orphanSince) > 2*time.Second:
			masked.Store(false)
			res.Unmasked = time.Since(start).Seconds()
			for _, pc := range t.PeerConns() {
				if h, _, _ := net.SplitHostPort(pc.RemoteAddr.String()); h == seederHost {
					pc.Close()
				}
			}
			if len(pis) > 0 {
				t.AddPeers(pis[:1])
			}
		}
	}
	tick.Stop()
	res.Seconds = time.Since(start).Seconds()
	res.Bytes = t.Length()
	t1 := time.Now()
	end := t1.Add(seedTime)
	idle := time.Now()
	for time.Now().Before(end) {
		time.Sleep(250 * time.Millisecond)
		for _, pc := range t.PeerConns() {
			if h, _, _ := net.SplitHostPort(pc.RemoteAddr.String()); h != seederHost && pc.PeerPieces().GetCardinality() < uint64(t.NumPieces()) {
				idle = time.Now()
				break
			}
		}
		if time.Since(idle) > 2*time.Second {
			break
		}
	}
	res.SeedSeconds = time.Since(t1).Seconds()
	st := t.Stats()
	res.FromPeers, res.FromSeeder = fromPeers.Load(), fromSeeder.Load()
	res.Wasted = st.ChunksReadWasted.Int64() * btlan.ChunkSize
	res.Uploaded = st.BytesWrittenData.Int64()
	res.PiecesFailed = st.PiecesDirtiedBad.Int64()
	return 0
}

func parseLabLine(line string, size int64) (outcome, bool) {
	r, ok := markedLine[LabResult](line, labMarker)
	if !ok {
		return outcome{}, false
	}
	o := outcome{Done: r.Error == "" && r.Bytes == size, Err: r.Error, FromPeers: r.FromPeers, FromSeeder: r.FromSeeder,
		SeedSeconds: r.SeedSeconds, Uploaded: r.Uploaded, PiecesFailed: r.PiecesFailed, Wasted: r.Wasted}
	if o.Err == "" && !o.Done {
		o.Err = fmt.Sprintf("got %d bytes, want %d", r.Bytes, size)
	}
	return o, true
}
