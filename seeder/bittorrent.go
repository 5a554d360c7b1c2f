package seeder

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"path/filepath"
	"strconv"
	"time"

	"github.com/anacrolix/generics"
	alog "github.com/anacrolix/log"
	"github.com/anacrolix/torrent"
	"github.com/anacrolix/torrent/metainfo"
	"github.com/anacrolix/torrent/storage"

	"github.com/boottorrent/boottorrent/initramfs/logging"
	"github.com/boottorrent/boottorrent/oss"
	"github.com/boottorrent/boottorrent/seeder/btlan"
)

// listen starts the BitTorrent client and the UDP tracker.
func (s *Seeder) listen() error {
	host, portStr, _ := net.SplitHostPort(s.opts.ListenAddr)
	port, err := strconv.Atoi(portStr)
	if err != nil {
		return fmt.Errorf("listen port %q: %w", portStr, err)
	}
	if !s.opts.NoSeed {
		cl, err := torrent.NewClient(s.clientConfig(host, port))
		if err != nil {
			return fmt.Errorf("BitTorrent client on %s: %w", s.opts.ListenAddr, err)
		}
		port = cl.LocalPort()
		s.mu.Lock()
		s.client = cl
		s.mu.Unlock()
	}
	pc, err := net.ListenPacket("udp", net.JoinHostPort(host, strconv.Itoa(port)))
	if err != nil {
		return fmt.Errorf("UDP tracker on %s: %w (is another boottorrent running?)", net.JoinHostPort(host, strconv.Itoa(port)), err)
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

// clientConfig is the seeder's anacrolix client (btlan.SeederConfig)
// with its storage, its per-connection log lines and the mask extension.
func (s *Seeder) clientConfig(host string, port int) *torrent.ClientConfig {
	cfg := btlan.SeederConfig(host, port, s.opts.UploadLimit)
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
	btlan.AnswerMaskRequests(cfg)
	// The library logs every connection at info level.
	cfg.Slogger = slog.New(logging.MinLevel(s.log.Handler(), slog.LevelWarn)).With("part", "anacrolix")
	cfg.Logger = cfg.Logger.WithFilterLevel(alog.Warning)
	return cfg
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
		Storage:                  s.checkedStorage(s.byName[o.Name], stor),
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

func (verifiedCompletion) Close() error { return nil }

func (verifiedCompletion) Persistent() bool { return false }
