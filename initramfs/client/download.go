package client

import (
	"context"
	"log/slog"
	"path/filepath"
	"time"

	"github.com/anacrolix/torrent/metainfo"
	"github.com/boottorrent/boottorrent/initramfs/bootapi"
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
	// TrackerAfter is how long Peers may fail before the torrent's
	// trackers are asked instead (0: defaultTrackerAfter).
	TrackerAfter time.Duration
	// MaxConns is the connection limit keepSeeder and makeSeederRoom
	// make room under (0: the library's, btlan.MaxConns). Tests lower
	// it to fill a machine with one connection.
	MaxConns int
}
