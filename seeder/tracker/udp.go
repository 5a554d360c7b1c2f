package tracker

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"time"
)

// BEP 15 actions and the connect magic.
const (
	udpProtocolID   = 0x41727101980
	actionConnect   = 0
	actionAnnounce  = 1
	actionScrape    = 2
	actionError     = 3
	udpAnnounceLen  = 98
	maxUDPPacket    = 2048
	connIDValidity  = time.Minute // an id is accepted for one to two of these
	maxUDPPeersInV6 = 80          // keep a v6 reply under a 1500-byte MTU
)

// udpRequest is one parsed BEP 15 request.
type udpRequest struct {
	connID   uint64
	action   uint32
	txID     uint32
	announce AnnounceRequest // action announce; Addr holds only the port
	hashes   []Hash          // action scrape
}

// ParseUDPRequest parses one BEP 15 request datagram. Extension data after
// an announce (BEP 41) is ignored.
func ParseUDPRequest(b []byte) (udpRequest, error) {
	var r udpRequest
	if len(b) < 16 {
		return r, fmt.Errorf("%w: %d-byte packet", ErrBadRequest, len(b))
	}
	r.connID = binary.BigEndian.Uint64(b[0:8])
	r.action = binary.BigEndian.Uint32(b[8:12])
	r.txID = binary.BigEndian.Uint32(b[12:16])
	switch r.action {
	case actionConnect:
		if r.connID != udpProtocolID {
			return r, fmt.Errorf("%w: connect without the protocol id", ErrBadRequest)
		}
	case actionAnnounce:
		if len(b) < udpAnnounceLen {
			return r, fmt.Errorf("%w: %d-byte announce", ErrBadRequest, len(b))
		}
		a := &r.announce
		copy(a.InfoHash[:], b[16:36])
		copy(a.PeerID[:], b[36:56])
		a.Downloaded = int64(binary.BigEndian.Uint64(b[56:64]))
		a.Left = int64(binary.BigEndian.Uint64(b[64:72]))
		a.Uploaded = int64(binary.BigEndian.Uint64(b[72:80]))
		ev := binary.BigEndian.Uint32(b[80:84])
		if ev > uint32(EventStopped) {
			return r, fmt.Errorf("%w: event %d", ErrBadRequest, ev)
		}
		a.Event = Event(ev)
		// b[84:88] is the IP field: ignored, the source address counts.
		// b[88:92] is the key: unused, peers are keyed by address and id.
		a.NumWant = int(int32(binary.BigEndian.Uint32(b[92:96])))
		if a.NumWant < 0 {
			a.NumWant = -1
		}
		a.Addr = netip.AddrPortFrom(netip.Addr{}, binary.BigEndian.Uint16(b[96:98]))
		if a.Downloaded < 0 || a.Left < 0 || a.Uploaded < 0 {
			return r, fmt.Errorf("%w: negative counter", ErrBadRequest)
		}
	case actionScrape:
		rest := b[16:]
		if len(rest)%20 != 0 || len(rest) == 0 {
			return r, fmt.Errorf("%w: scrape of %d bytes is not a list of info hashes", ErrBadRequest, len(rest))
		}
		if len(rest)/20 > MaxScrapeHashes {
			return r, fmt.Errorf("%w: more than %d info hashes", ErrBadRequest, MaxScrapeHashes)
		}
		for i := 0; i < len(rest); i += 20 {
			r.hashes = append(r.hashes, Hash(rest[i:i+20]))
		}
	default:
		return r, fmt.Errorf("%w: action %d", ErrBadRequest, r.action)
	}
	return r, nil
}

// udpState holds the secret of the stateless connection ids: an id is an
// HMAC of the source address and the current minute, so connects cost no
// memory however many arrive.
type udpState struct {
	secret [32]byte
}

func (s *udpState) connID(src netip.Addr, slot int64) uint64 {
	m := hmac.New(sha256.New, s.secret[:])
	b, _ := src.MarshalBinary()
	m.Write(b)
	var t [8]byte
	binary.BigEndian.PutUint64(t[:], uint64(slot))
	m.Write(t[:])
	return binary.BigEndian.Uint64(m.Sum(nil))
}

func (s *udpState) valid(src netip.Addr, id uint64, now time.Time) bool {
	slot := now.UnixNano() / int64(connIDValidity)
	return id == s.connID(src, slot) || id == s.connID(src, slot-1)
}

// ServeUDP answers BEP 15 requests on pc until pc is closed. Each datagram
// is handled in the read loop itself: the work per packet is small and
// bounded, so a flood costs CPU time on one goroutine and no memory.
func (t *Tracker) ServeUDP(pc net.PacketConn) error {
	var st udpState
	if _, err := rand.Read(st.secret[:]); err != nil {
		return err
	}
	buf := make([]byte, maxUDPPacket)
	failures := 0
	for {
		n, from, err := pc.ReadFrom(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return nil
			}
			// A read error on a UDP socket is transient (an ICMP
			// error queued by the kernel, a timeout); only a socket
			// that keeps failing is dead.
			if failures++; failures > 100 {
				return err
			}
			t.cfg.Logger.Warn("tracker: udp read", "err", err)
			time.Sleep(10 * time.Millisecond)
			continue
		}
		failures = 0
		ua, ok := from.(*net.UDPAddr)
		if !ok {
			continue
		}
		src := ua.AddrPort()
		src = netip.AddrPortFrom(src.Addr().Unmap(), src.Port())
		if reply := t.handleUDP(&st, buf[:n], src); reply != nil {
			pc.WriteTo(reply, from)
		}
	}
}

// handleUDP returns the reply to one datagram, or nil to drop it.
func (t *Tracker) handleUDP(st *udpState, pkt []byte, src netip.AddrPort) []byte {
	if !t.Allow(src.Addr()) {
		return nil // no reply: answering would amplify a flood
	}
	if isUTPSyn(pkt) && !st.valid(src.Addr(), binary.BigEndian.Uint64(pkt[0:8]), t.cfg.Now()) {
		t.cfg.Logger.Debug("tracker: uTP connect refused with a reset", "src", src)
		return utpReset(pkt, t.cfg.Now())
	}
	req, err := ParseUDPRequest(pkt)
	if err != nil {
		t.cfg.Logger.Info("tracker: bad udp request", "src", src, "bytes", len(pkt), "err", err)
		if len(pkt) >= 16 {
			return udpError(binary.BigEndian.Uint32(pkt[12:16]), "malformed request")
		}
		return nil
	}
	now := t.cfg.Now()
	if req.action == actionAnnounce {
		t.announcesUDP.Add(1)
	}
	if req.action == actionConnect {
		out := make([]byte, 16)
		binary.BigEndian.PutUint32(out[0:], actionConnect)
		binary.BigEndian.PutUint32(out[4:], req.txID)
		binary.BigEndian.PutUint64(out[8:], st.connID(src.Addr(), now.UnixNano()/int64(connIDValidity)))
		return out
	}
	if !st.valid(src.Addr(), req.connID, now) {
		return udpError(req.txID, "connection id expired; connect again")
	}
	switch req.action {
	case actionAnnounce:
		a := req.announce
		a.Addr = netip.AddrPortFrom(src.Addr(), a.Addr.Port())
		if src.Addr().Is6() && (a.NumWant < 0 || a.NumWant > maxUDPPeersInV6) {
			a.NumWant = maxUDPPeersInV6
		}
		resp, err := t.Announce(a)
		if err != nil {
			t.cfg.Logger.Info("tracker: announce refused", "src", src, "proto", "udp", "info_hash", hex.EncodeToString(a.InfoHash[:]), "err", err)
			return udpError(req.txID, err.Error())
		}
		out := make([]byte, 20, 20+18*len(resp.Peers))
		binary.BigEndian.PutUint32(out[0:], actionAnnounce)
		binary.BigEndian.PutUint32(out[4:], req.txID)
		binary.BigEndian.PutUint32(out[8:], uint32(resp.Interval/time.Second))
		binary.BigEndian.PutUint32(out[12:], uint32(resp.Leechers))
		binary.BigEndian.PutUint32(out[16:], uint32(resp.Seeders))
		// BEP 15: the address family of the reply's peers is the one the
		// request came over.
		for _, p := range resp.Peers {
			pa := p.Addr.Addr().Unmap()
			if pa.Is4() != src.Addr().Is4() {
				continue
			}
			out = append(out, compactPeer(pa, p.Addr.Port())...)
		}
		t.cfg.Logger.Debug("tracker: announce", "src", a.Addr, "proto", "udp", "info_hash", hex.EncodeToString(a.InfoHash[:]),
			"event", a.Event.String(), "left", a.Left, "peers", len(resp.Peers))
		return out
	case actionScrape:
		stats := t.Scrape(req.hashes)
		out := make([]byte, 8, 8+12*len(req.hashes))
		binary.BigEndian.PutUint32(out[0:], actionScrape)
		binary.BigEndian.PutUint32(out[4:], req.txID)
		for _, ih := range req.hashes {
			s := stats[ih] // unknown hashes scrape as zeros
			out = binary.BigEndian.AppendUint32(out, uint32(s.Complete))
			out = binary.BigEndian.AppendUint32(out, uint32(s.Downloaded))
			out = binary.BigEndian.AppendUint32(out, uint32(s.Incomplete))
		}
		return out
	}
	return nil
}

func udpError(txID uint32, msg string) []byte {
	out := make([]byte, 8, 8+len(msg))
	binary.BigEndian.PutUint32(out[0:], actionError)
	binary.BigEndian.PutUint32(out[4:], txID)
	return append(out, msg...)
}

// uTP (BEP 29) packet types and version, for the refusal below.
const (
	utpVersion   = 1
	utpStSyn     = 4
	utpStReset   = 3
	utpHeaderLen = 20
)

// isUTPSyn recognises a uTP connection request. The UDP tracker shares the
// seeder's BitTorrent port number, and clients that speak uTP (Transmission
// first of all) dial UDP on a peer's TCP port: their SYN lands here. A
// BEP 15 connect starts with a zero byte, and an announce or scrape with a
// connection id this tracker issued, which the caller checks first.
func isUTPSyn(pkt []byte) bool {
	return len(pkt) >= utpHeaderLen && pkt[0] == utpStSyn<<4|utpVersion
}

// utpReset is the ST_RESET answer to a uTP SYN: the seeder speaks TCP
// only, and a reset is how BEP 29 refuses a connection, so a client fails
// its uTP dial at once instead of waiting out retransmissions (libtorrent,
// as qbittorrent-nox 4.5, then uses TCP). It carries the SYN's connection
// id (the initiator's receive id) and acknowledges its sequence number,
// which is how libutp finds the socket to fail. It is no larger than the
// SYN, so it amplifies nothing. transmission-cli 3.00 fails its uTP dial
// on the reset but then aborts its own TCP fallback; the seeder reaches it
// by dialling back (seeder/dialback.go).
func utpReset(syn []byte, now time.Time) []byte {
	out := make([]byte, utpHeaderLen)
	out[0] = utpStReset<<4 | utpVersion
	copy(out[2:4], syn[2:4]) // connection_id
	us := uint32(now.UnixMicro())
	binary.BigEndian.PutUint32(out[4:8], us)
	binary.BigEndian.PutUint32(out[8:12], us-binary.BigEndian.Uint32(syn[4:8]))
	copy(out[18:20], syn[16:18]) // ack_nr = the SYN's seq_nr
	return out
}
