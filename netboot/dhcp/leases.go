package dhcp

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"net/netip"
	"os"
	"slices"
	"sync"
	"time"
)

// Lease states.
const (
	stateOffered  = "offered"  // held for a client between OFFER and REQUEST; never persisted
	stateBound    = "bound"    // ACKed, until it expires
	stateReleased = "released" // the client gave it back; still preferred for that client
	stateDeclined = "declined" // a client found it in use (DHCPDECLINE): quarantined, no owner
	stateFree     = "free"     // journal only: the record is deleted
)

// offerHold is how long an offered address stays reserved for the client it
// was offered to (RFC 2131 4.3.1 leaves it to the server).
const offerHold = 60 * time.Second

// offerReclaim: when the range is exhausted, offers older than this that
// were never requested are given to new clients.
const offerReclaim = 5 * time.Second

// declineHold is how long a declined address is kept out of use. RFC 2131
// 4.3.3 says the server must mark it unavailable and should notify the
// administrator; Kea's default probation is 24 h, a lab LAN wants less.
const declineHold = time.Hour

// ErrExhausted: no address of the range is free.
var ErrExhausted = errors.New("no free address left in the range")

// lease is one address's record.
type lease struct {
	IP      netip.Addr `json:"ip"`
	MAC     string     `json:"mac,omitempty"`
	State   string     `json:"state"`
	Expires time.Time  `json:"expires"`
	Host    string     `json:"host,omitempty"`
}

type poolConfig struct {
	first, last netip.Addr
	prefix      netip.Prefix
	exclude     []netip.Addr      // server, router: never leased
	machines    map[string]string // MAC -> name: stable addresses
	file        string            // journal; empty = memory only
	log         *slog.Logger
}

// pool allocates full-mode addresses. All methods are safe for concurrent
// use; the state is in memory and every change that must survive a restart
// is appended to the lease file before the reply goes out.
type pool struct {
	mu       sync.Mutex
	first    uint32
	size     uint32 // addresses in the range
	excluded map[uint32]bool
	byIP     map[uint32]*lease
	byMAC    map[string]*lease
	// reserved: machines: MACs and their stable address.
	reserved   map[string]uint32
	reservedIP map[uint32]string
	cursor     uint32 // next offset to try for a never-used address

	file    string
	f       *os.File
	end     int64 // size of the journal up to its last complete record
	lines   int   // records in the journal since the last compaction
	log     *slog.Logger
	closed  bool
	writeFn func([]byte) error // tests inject failures
}

func u32(a netip.Addr) uint32 { b := a.As4(); return binary.BigEndian.Uint32(b[:]) }
func addr(v uint32) netip.Addr {
	var b [4]byte
	binary.BigEndian.PutUint32(b[:], v)
	return netip.AddrFrom4(b)
}

func newPool(c poolConfig, now time.Time) (*pool, error) {
	if c.log == nil {
		c.log = slog.New(slog.DiscardHandler)
	}
	p := &pool{
		first:      u32(c.first),
		size:       u32(c.last) - u32(c.first) + 1,
		excluded:   map[uint32]bool{},
		byIP:       map[uint32]*lease{},
		byMAC:      map[string]*lease{},
		reserved:   map[string]uint32{},
		reservedIP: map[uint32]string{},
		file:       c.file,
		log:        c.log,
	}
	if p.size == 0 { // 0.0.0.0-255.255.255.255 wrapped
		p.size = ^uint32(0)
	}
	for _, a := range c.exclude {
		if a.Is4() {
			p.excluded[u32(a)] = true
		}
	}
	if c.prefix.IsValid() && c.prefix.Bits() < 31 {
		net := c.prefix.Masked().Addr()
		p.excluded[u32(net)] = true                                     // network address
		p.excluded[u32(net)|(^uint32(0)>>uint(c.prefix.Bits()))] = true // broadcast address
	}
	if c.file != "" {
		if err := p.load(now); err != nil {
			return nil, err
		}
	}
	p.reserveMachines(c.machines, now)
	if c.file != "" {
		if err := p.compact(); err != nil {
			return nil, err
		}
	}
	return p, nil
}

func (p *pool) inRange(v uint32) bool { return v-p.first < p.size }

// reserveMachines gives every machines: MAC a stable address: the one its
// lease already has, else one derived from a hash of the MAC, so that the
// same MAC gets the same address even when the lease file is lost (as long
// as no other machine hashes to the same address first).
func (p *pool) reserveMachines(machines map[string]string, now time.Time) {
	macs := make([]string, 0, len(machines))
	for m := range machines {
		macs = append(macs, m)
	}
	slices.Sort(macs)
	var rest []string
	for _, mac := range macs {
		if l := p.byMAC[mac]; l != nil && l.State != stateDeclined {
			v := u32(l.IP)
			if _, taken := p.reservedIP[v]; !taken {
				p.reserved[mac], p.reservedIP[v] = v, mac
				continue
			}
		}
		rest = append(rest, mac)
	}
	for _, mac := range rest {
		h := fnv.New32a()
		h.Write([]byte(mac))
		start := h.Sum32() % p.size
		for i := uint32(0); i < p.size; i++ {
			v := p.first + (start+i)%p.size
			if p.excluded[v] {
				continue
			}
			if _, taken := p.reservedIP[v]; taken {
				continue
			}
			if l := p.byIP[v]; l != nil && l.MAC != mac && !(l.State != stateDeclined && !l.Expires.After(now)) {
				continue // someone else's live lease, or quarantined
			}
			p.reserved[mac], p.reservedIP[v] = v, mac
			break
		}
		if _, ok := p.reserved[mac]; !ok {
			p.log.Warn("dhcp range too small: machine gets no stable address", "mac", mac)
		}
	}
}

// usable reports whether address v may be given to mac at now.
func (p *pool) usable(v uint32, mac string, now time.Time) bool {
	if !p.inRange(v) || p.excluded[v] {
		return false
	}
	if owner, ok := p.reservedIP[v]; ok && owner != mac {
		return false
	}
	l := p.byIP[v]
	if l == nil {
		return true
	}
	if l.State == stateDeclined {
		return !l.Expires.After(now)
	}
	return l.MAC == mac || !l.Expires.After(now)
}

// offer picks an address for mac: its reserved one, the one it had, the one
// it asks for (option 50), a never-used one, or the longest-expired one.
func (p *pool) offer(mac string, requested netip.Addr, now time.Time) (netip.Addr, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if v, ok := p.reserved[mac]; ok {
		if !p.usable(v, mac, now) {
			return netip.Addr{}, fmt.Errorf("reserved address %v is quarantined after a DECLINE", addr(v))
		}
		return p.hold(v, mac, now), nil
	}
	if l := p.byMAC[mac]; l != nil && p.usable(u32(l.IP), mac, now) {
		return p.hold(u32(l.IP), mac, now), nil
	}
	if requested.Is4() && p.usable(u32(requested), mac, now) {
		return p.hold(u32(requested), mac, now), nil
	}
	if uint64(len(p.byIP)) < uint64(p.size) { // else every address has a record
		for i := uint32(0); i < p.size; i++ {
			off := (p.cursor + i) % p.size
			v := p.first + off
			if p.excluded[v] || p.byIP[v] != nil {
				continue
			}
			if _, r := p.reservedIP[v]; r {
				continue
			}
			p.cursor = (off + 1) % p.size
			return p.hold(v, mac, now), nil
		}
	}
	// Every address has a record: reuse the one that expired first.
	// Failing that, take back the oldest offer that was never requested:
	// a real client requests within milliseconds, so offers older than
	// offerReclaim are what a flood of made-up MACs leaves behind, and
	// they must not lock real machines out for offerHold.
	var oldest, stale *lease
	for v, l := range p.byIP {
		if p.usable(v, mac, now) {
			if oldest == nil || l.Expires.Before(oldest.Expires) {
				oldest = l
			}
			continue
		}
		if l.State == stateOffered && now.Sub(l.Expires.Add(-offerHold)) >= offerReclaim {
			if _, r := p.reservedIP[v]; !r && (stale == nil || l.Expires.Before(stale.Expires)) {
				stale = l
			}
		}
	}
	if oldest == nil {
		oldest = stale
	}
	if oldest == nil {
		return netip.Addr{}, ErrExhausted
	}
	return p.hold(u32(oldest.IP), mac, now), nil
}

// hold records an offer of v to mac (in memory only). A bound lease of the
// same client is left as it is.
func (p *pool) hold(v uint32, mac string, now time.Time) netip.Addr {
	if l := p.byIP[v]; l != nil && l.MAC == mac && l.State == stateBound && l.Expires.After(now) {
		return l.IP
	}
	p.set(&lease{IP: addr(v), MAC: mac, State: stateOffered, Expires: now.Add(offerHold)})
	return addr(v)
}

// set installs l as the record of its address, dropping the records it
// replaces from byMAC.
func (p *pool) set(l *lease) {
	v := u32(l.IP)
	if old := p.byIP[v]; old != nil && old.MAC != "" && p.byMAC[old.MAC] == old {
		delete(p.byMAC, old.MAC)
	}
	if l.MAC != "" {
		if old := p.byMAC[l.MAC]; old != nil && old != l && p.byIP[u32(old.IP)] == old {
			// The client moves: its old address is free again.
			delete(p.byIP, u32(old.IP))
			if old.State != stateOffered {
				p.journal(lease{IP: old.IP, State: stateFree})
			}
		}
		p.byMAC[l.MAC] = l
	}
	p.byIP[v] = l
}

type verdict int

const (
	verdictIgnore verdict = iota // not ours to answer (RFC 2131 4.3.2: stay silent)
	verdictACK
	verdictNAK
)

// request handles DHCPREQUEST for ip. selecting is true when the client
// names a server (option 54), i.e. it answers an OFFER.
func (p *pool) request(mac string, ip netip.Addr, selecting bool, host string, leaseTime time.Duration, now time.Time) (verdict, string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !ip.Is4() {
		return verdictIgnore, "no address requested"
	}
	v := u32(ip)
	if r, ok := p.reserved[mac]; ok && r != v {
		return verdictNAK, fmt.Sprintf("%v is not this machine's reserved address %v", ip, addr(r))
	}
	if !p.inRange(v) || p.excluded[v] {
		return verdictNAK, fmt.Sprintf("%v is outside the lease range", ip)
	}
	if selecting {
		if l := p.byMAC[mac]; l == nil || l.IP != ip {
			return verdictNAK, fmt.Sprintf("%v was not offered to this client", ip)
		}
	}
	if !p.usable(v, mac, now) {
		return verdictNAK, fmt.Sprintf("%v is in use by another client or quarantined", ip)
	}
	l := &lease{IP: ip, MAC: mac, State: stateBound, Expires: now.Add(leaseTime), Host: host}
	if err := p.journal(*l); err != nil {
		// Never ACK what a restart would forget.
		return verdictIgnore, err.Error()
	}
	p.set(l)
	return verdictACK, ""
}

// release frees ip if mac holds it (DHCPRELEASE, RFC 2131 4.3.4). The
// record stays so the client gets the same address next time if it is
// still free.
func (p *pool) release(mac string, ip netip.Addr, now time.Time) bool {
	return p.replaceHeld(mac, ip, func(held *lease) *lease {
		return &lease{IP: ip, MAC: mac, State: stateReleased, Expires: now, Host: held.Host}
	})
}

// decline quarantines ip (DHCPDECLINE, RFC 2131 4.3.3): the client found it
// in use. Only the client the address was offered or leased to can decline
// it, so a hostile client cannot empty the range.
func (p *pool) decline(mac string, ip netip.Addr, now time.Time) bool {
	return p.replaceHeld(mac, ip, func(*lease) *lease {
		return &lease{IP: ip, State: stateDeclined, Expires: now.Add(declineHold)}
	})
}

// replaceHeld journals and sets the record next makes of ip's record, if
// mac holds ip (offered or leased, not declined); it reports whether it
// did. Only the holder may give an address back, so that a client cannot
// free or quarantine another's.
func (p *pool) replaceHeld(mac string, ip netip.Addr, next func(held *lease) *lease) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !ip.Is4() {
		return false
	}
	l := p.byIP[u32(ip)]
	if l == nil || l.MAC != mac || l.State == stateDeclined {
		return false
	}
	nl := next(l)
	p.journal(*nl)
	p.set(nl)
	return true
}

// cancelOffer drops an offer the client turned down (it chose another
// server).
func (p *pool) cancelOffer(mac string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if l := p.byMAC[mac]; l != nil && l.State == stateOffered {
		delete(p.byMAC, mac)
		delete(p.byIP, u32(l.IP))
	}
}

func (p *pool) len() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.byIP)
}

// lookup returns a copy of the record of ip (tests, logs).
func (p *pool) lookup(ip netip.Addr) (lease, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	l := p.byIP[u32(ip)]
	if l == nil {
		return lease{}, false
	}
	return *l, true
}
