// Package btlan is BitTorrent on a lab LAN as boottorrent speaks it: the
// anacrolix/torrent settings the boot client, the seeder and the swarm
// benchmark share (LANConfig, SeederConfig, ChunkSize), and both halves of
// the piece-mask extension (MaskExtension) by which a boot client changes,
// on an open connection, which of the seeder's pieces it may ask for.
//
// It is linked into the boot client, so it must not import the server's
// packages (netboot, the rest of seeder, config); it knows no swarm
// policy (which pieces a machine takes: seeder/swarm and the client).
package btlan

import (
	"fmt"
	"net/netip"
	"os"
	"time"

	"github.com/anacrolix/torrent"
	"github.com/anacrolix/torrent/metainfo"
	"golang.org/x/time/rate"
)

// ChunkSize is how much one request asks a peer for: twice BitTorrent's
// usual 16 KiB. The library refills a connection's requests slowly, so a
// connection has one or two requests out; 32 KiB doubles what is in
// flight, and machines finished together instead of a few seconds apart,
// while 64 KiB threw away more than it gained (cmd/swarmbench/TUNING.md).
// Every boot client and the seeder accept it (the library reads messages
// of up to four times its own chunk size).
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

// MaxConns is how many connections a boot client keeps per torrent. The
// boot API lists the seeder and at most 19 machines (seeder/swarm
// MaxPeers), and those machines list this one back: 25 leave room for
// peers that are not boot clients, without the HAVE traffic and request
// updates of the library's 50 (cmd/swarmbench/TUNING.md).
const MaxConns = 25

// LANConfig is the anacrolix/torrent configuration every boot client uses
// on a lab LAN (../shared/LIBRARIES.md): always upload (Seed; a
// non-seeding client stops uploading to a peer it is ahead of), no DHT,
// IPv6, uTP (15–25× slower than TCP here), UPnP, webtorrent, header
// obfuscation or peer exchange, and one connection per pair of peers.
// The swarm benchmark's lab engine starts from it too, so that it
// measures the product's settings. Call CheckTorrentEnv first.
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
	// full.
	cfg.DisablePEX = true
	// Header obfuscation (MSE) hides nothing on a LAN and costs a
	// Diffie-Hellman exchange per connection. Plain handshakes only, in
	// both directions: after a failed plain handshake the library would
	// otherwise dial again with MSE. Every peer of a boot client is
	// another boot client or our seeder.
	cfg.HeaderObfuscationPolicy = torrent.HeaderObfuscationPolicy{Preferred: false, RequirePreferred: true}
	cfg.ListenPort = port
	cfg.EstablishedConnsPerTorrent = MaxConns
	// No cap on the pieces considered for requests: the library walks the
	// wanted pieces in its order and stops after MaxUnverifiedBytes
	// (64 MiB) of them whether or not the peer has them, so with the
	// seeder's connection masked to this machine's share, a share past the
	// first 64 MiB of an OS was never asked for (2026-12-08,
	// cmd/swarmbench/TUNING.md). Every byte lands in RAM anyway.
	cfg.MaxUnverifiedBytes = 0
	if os.Getenv(StealGraceEnv) == "" {
		cfg.StealRequestGrace = StealGrace
	}
	return cfg
}

// SeederConfig is the anacrolix/torrent configuration of the server's
// seeder on host:port, facing hundreds of machines that all boot at once;
// uploadLimit caps its upload in bytes per second (0: unlimited). The
// caller adds storage, callbacks and logging. Call CheckTorrentEnv first.
func SeederConfig(host string, port int, uploadLimit int64) *torrent.ClientConfig {
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
	ManyPeers(cfg)
	cfg.DropDuplicatePeerIds = true
	cfg.HandshakesTimeout = 10 * time.Second
	// Header obfuscation (MSE) costs a Diffie-Hellman exchange per
	// connection and hides nothing on a lab LAN: plain handshakes, while
	// still accepting obfuscated ones from other clients.
	cfg.HeaderObfuscationPolicy = torrent.HeaderObfuscationPolicy{Preferred: false, RequirePreferred: false}
	if uploadLimit > 0 {
		cfg.UploadRateLimiter = rate.NewLimiter(rate.Limit(uploadLimit), int(max(uploadLimit, 4<<20)))
	}
	return cfg
}

// ManyPeers sets cfg up for a seeder that every booting machine dials at
// once: accept them all, keep them all, and let each queue a few MiB of
// requests (16 KiB, or ChunkSize from boot clients) so that one connection
// can fill a gigabit link.
func ManyPeers(cfg *torrent.ClientConfig) {
	cfg.EstablishedConnsPerTorrent = 1000
	cfg.HalfOpenConnsPerTorrent = 100
	cfg.TotalHalfOpenConns = 400
	cfg.TorrentPeersHighWater = 2000
	cfg.DisableAcceptRateLimiting = true
	cfg.DialRateLimiter = rate.NewLimiter(200, 200)
	cfg.MaxAllocPeerRequestDataPerConn = 4 << 20
}

// StealGrace is how long a chunk request stays with the connection it was
// sent on before the library may move it to a connection with fewer
// requests out (ClientConfig.StealRequestGrace). A moved request is
// cancelled, and if its chunk is already on the wire it arrives anyway
// and is thrown away; on slow links shared by many uploaders a chunk takes
// seconds to cross, and a longer grace threw away less
// (cmd/swarmbench/TUNING.md).
const StealGrace = 8 * time.Second

// StealGraceEnv is the library's own override of the grace (a
// time.ParseDuration value); when it is set and not empty, LANConfig keeps
// the library's reading of it, so swarmbench can sweep the grace with
// --client-env.
const StealGraceEnv = "TORRENT_STEAL_REQUEST_GRACE"

// CheckTorrentEnv reports a malformed TORRENT_STEAL_REQUEST_GRACE as an
// error naming the variable. The library parses it in
// NewDefaultClientConfig and panics when it does not parse; as /init, a
// panic would stop the machine (the kernel passes unknown NAME=value words
// of its command line to init as environment). Call it before LANConfig,
// SeederConfig or torrent.NewDefaultClientConfig.
func CheckTorrentEnv() error {
	v := os.Getenv(StealGraceEnv)
	if v == "" {
		return nil
	}
	if _, err := time.ParseDuration(v); err != nil {
		return fmt.Errorf("environment variable %s=%q is not a duration (for example 3s or 500ms): correct it or unset it", StealGraceEnv, v)
	}
	return nil
}
