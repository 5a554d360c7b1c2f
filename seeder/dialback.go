package seeder

import (
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/anacrolix/torrent"

	"github.com/boottorrent/boottorrent/seeder/tracker"
)

// The seeder dials back a leecher that announces to the embedded tracker
// and has not connected to it a few seconds later. transmission-cli 3.00
// (Debian 12) cannot connect to a TCP-only peer: it tries uTP first, and
// when that fails its handshake code reconnects over TCP, sends the
// handshake and then, falling through to the plaintext-retry branch,
// aborts that very connection (libtransmission/handshake.c gotError, the
// same in 4.0.0), marks the peer unreachable and waits 15 minutes. It does
// accept incoming connections, so the seeder connects to it instead. A
// client that connected by itself is not dialled: the check is by address.
//
// Only the address an announce came from is dialled (at the port it
// claims), so an announce cannot make the seeder connect to a third host.
const (
	dialBackDelay = 3 * time.Second
	// maxDialBacks bounds the timers waiting at once; the tracker's
	// per-source rate limit keeps them far below it on a real LAN.
	maxDialBacks = 1024
)

// dialBacks holds the dial-backs waiting for their delay, one per address
// and torrent.
type dialBacks struct {
	mu      sync.Mutex
	pending map[dialBackKey]bool
}

type dialBackKey struct {
	ih   tracker.Hash
	addr netip.AddrPort
}

// dialBack is the tracker's OnLeecher hook: it runs under the tracker's
// lock, so it only schedules the check.
func (s *Seeder) dialBack(ih tracker.Hash, addr netip.AddrPort) {
	d := &s.dialBacks
	k := dialBackKey{ih, addr}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.pending[k] || len(d.pending) >= maxDialBacks {
		return
	}
	if d.pending == nil {
		d.pending = map[dialBackKey]bool{}
	}
	d.pending[k] = true
	time.AfterFunc(dialBackDelay, func() {
		d.mu.Lock()
		delete(d.pending, k)
		d.mu.Unlock()
		s.dialBackNow(ih, addr)
	})
}

// dialBackNow gives the library the leecher's address unless a connection
// from that host exists already; the library dials it over TCP.
func (s *Seeder) dialBackNow(ih tracker.Hash, addr netip.AddrPort) {
	var t *torrent.Torrent
	s.mu.Lock()
	closed := s.closed
	for _, st := range s.oses {
		if tracker.Hash(st.infoHash) == ih {
			t = st.t
		}
	}
	s.mu.Unlock()
	if closed || t == nil {
		return
	}
	for _, pc := range t.PeerConns() {
		if a, err := netip.ParseAddrPort(pc.RemoteAddr.String()); err == nil && a.Addr().Unmap() == addr.Addr() {
			return
		}
	}
	t.AddPeers([]torrent.PeerInfo{{Addr: &net.TCPAddr{IP: addr.Addr().AsSlice(), Port: int(addr.Port())}, Source: torrent.PeerSourceTracker}})
	s.log.Debug("dialling back a leecher that did not connect", "peer", addr)
}
