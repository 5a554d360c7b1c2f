// Package tracker is boottorrent's embedded BitTorrent tracker: a bounded,
// expiring peer store for the info hashes the seeder serves, answered over
// HTTP (BEP 3 with BEP 23 compact replies, BEP 48 scrape) and UDP (BEP 15).
//
// Torrents are private (BEP 27), so clients find each other only through
// this tracker and the boot API: the store hands out LAN peers first and
// stops handing out the server's seeder once enough peers hold data, so the
// server's uplink is not the bottleneck of a classroom booting at once.
package tracker

import (
	"errors"
	"log/slog"
	"math/rand/v2"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// Errors an announce can fail with; they are sent to the client as the
// failure reason, so they carry no internal detail.
var (
	ErrUnknownTorrent = errors.New("unregistered torrent")
	ErrRateLimited    = errors.New("too many announces from this address; slow down")
	ErrBadRequest     = errors.New("malformed announce")
)

// Event is the announce event (BEP 3, BEP 15 numbering).
type Event int

const (
	EventNone Event = iota
	EventCompleted
	EventStarted
	EventStopped
)

func (e Event) String() string {
	switch e {
	case EventCompleted:
		return "completed"
	case EventStarted:
		return "started"
	case EventStopped:
		return "stopped"
	}
	return ""
}

// Hash is a v1 info hash.
type Hash [20]byte

// AnnounceRequest is one announce after parsing, with the peer's address
// taken from the connection (never from the request).
type AnnounceRequest struct {
	InfoHash   Hash
	PeerID     [20]byte
	Addr       netip.AddrPort
	Uploaded   int64
	Downloaded int64
	Left       int64
	Event      Event
	NumWant    int // <0: default
}

// AnnounceResponse is what a peer gets back.
type AnnounceResponse struct {
	Interval    time.Duration
	MinInterval time.Duration
	Seeders     int
	Leechers    int
	Peers       []Peer
}

// Peer is a peer as handed out.
type Peer struct {
	ID   [20]byte
	Addr netip.AddrPort
}

// Stats is one torrent's scrape.
type Stats struct {
	Complete   int // seeders, the server's seeder included
	Incomplete int
	Downloaded int // completed events seen
}

// Config holds the tracker's limits. Zero fields take the defaults of
// DefaultConfig.
type Config struct {
	// Interval is the announce interval clients are told. Booting
	// machines download for minutes and private torrents have no PEX, so
	// it is short: a lost reply (seen here behind a saturated uplink) or
	// a machine that joined later is found again within half a minute,
	// and a few hundred machines still make only ~10 announces a second.
	Interval    time.Duration
	MinInterval time.Duration
	// PeerTTL: a peer that has not announced for this long is dropped
	// (three intervals and some slack).
	PeerTTL time.Duration
	// MaxPeersPerTorrent bounds the store (a LAN has hundreds of
	// machines, not millions); beyond it new peers are answered but not
	// stored.
	MaxPeersPerTorrent int
	// MaxPeersPerIP bounds how many ports one address may register per
	// torrent, so one host cannot fill the store.
	MaxPeersPerIP int
	// MaxNumWant caps the peers in one reply; DefaultNumWant is used when
	// the client does not ask.
	MaxNumWant     int
	DefaultNumWant int
	// Rate and Burst are the token bucket per source address
	// (announces+scrapes per second).
	Rate  float64
	Burst int
	// MaxSources bounds the number of source addresses tracked for rate
	// limiting; when full, new addresses are refused until old buckets
	// refill and are swept.
	MaxSources int
	// SeederOff: the server's seeder is left out of replies once this many
	// other peers of the torrent hold data (seeds or partial).
	SeederOff int
	// OnLeecher, when set, is called for every announce of a peer that
	// still lacks data (not "stopped"), with the address it was seen
	// from and the port it listens on. It runs under the tracker's lock:
	// it must return at once and not call the Tracker.
	OnLeecher func(ih Hash, addr netip.AddrPort)
	Logger    *slog.Logger
	// Now is the clock (tests).
	Now func() time.Time
}

// DefaultConfig returns the limits used where Config says nothing.
func DefaultConfig() Config {
	return Config{
		Interval:           30 * time.Second,
		MinInterval:        10 * time.Second,
		PeerTTL:            100 * time.Second,
		MaxPeersPerTorrent: 4096,
		MaxPeersPerIP:      8,
		MaxNumWant:         200,
		DefaultNumWant:     50,
		Rate:               5,
		Burst:              20,
		MaxSources:         16384,
		SeederOff:          8,
		Now:                time.Now,
	}
}

func (c *Config) fill() {
	d := DefaultConfig()
	orDefault(&c.Interval, d.Interval)
	orDefault(&c.MinInterval, d.MinInterval)
	orDefault(&c.PeerTTL, d.PeerTTL)
	orDefault(&c.MaxPeersPerTorrent, d.MaxPeersPerTorrent)
	orDefault(&c.MaxPeersPerIP, d.MaxPeersPerIP)
	orDefault(&c.MaxNumWant, d.MaxNumWant)
	orDefault(&c.DefaultNumWant, d.DefaultNumWant)
	orDefault(&c.Rate, d.Rate)
	orDefault(&c.Burst, d.Burst)
	orDefault(&c.MaxSources, d.MaxSources)
	orDefault(&c.SeederOff, d.SeederOff)
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
}

type peer struct {
	id       [20]byte
	addr     netip.AddrPort
	left     int64
	lastSeen time.Time
}

type torrent struct {
	name       string
	size       int64
	seeder     netip.AddrPort
	peers      map[netip.AddrPort]*peer
	perIP      map[netip.Addr]int
	downloaded int
}

type bucket struct {
	tokens float64
	last   time.Time
}

// Tracker is the peer store. It is safe for concurrent use.
type Tracker struct {
	cfg Config

	mu        sync.Mutex
	torrents  map[Hash]*torrent
	sources   map[netip.Addr]*bucket
	lastSweep time.Time
	fullWarn  time.Time

	announcesHTTP, announcesUDP atomic.Uint64
}

// Announces counts the announce requests received over HTTP and UDP
// (valid or not).
func (t *Tracker) Announces() (http, udp uint64) {
	return t.announcesHTTP.Load(), t.announcesUDP.Load()
}

// New returns an empty tracker.
func New(cfg Config) *Tracker {
	cfg.fill()
	return &Tracker{cfg: cfg, torrents: map[Hash]*torrent{}, sources: map[netip.Addr]*bucket{}}
}

// Config returns the effective settings.
func (t *Tracker) Config() Config { return t.cfg }

// AddTorrent registers an info hash the tracker answers for. size is the
// torrent's total length (to tell peers holding data from empty ones);
// seeder is the server's own BitTorrent address, handed out as a seed (the
// zero value for none).
func (t *Tracker) AddTorrent(ih Hash, name string, size int64, seeder netip.AddrPort) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if tr, ok := t.torrents[ih]; ok {
		tr.name, tr.size, tr.seeder = name, size, seeder
		return
	}
	t.torrents[ih] = &torrent{name: name, size: size, seeder: seeder, peers: map[netip.AddrPort]*peer{}, perIP: map[netip.Addr]int{}}
}

// RemoveTorrent forgets an info hash and its peers.
func (t *Tracker) RemoveTorrent(ih Hash) {
	t.mu.Lock()
	delete(t.torrents, ih)
	t.mu.Unlock()
}

// Allow takes one token from src's bucket. It is called once per request
// (HTTP or UDP packet) before any other work.
func (t *Tracker) Allow(src netip.Addr) bool {
	now := t.cfg.Now()
	t.mu.Lock()
	defer t.mu.Unlock()
	t.maybeSweep(now)
	b, ok := t.sources[src]
	if !ok {
		if len(t.sources) >= t.cfg.MaxSources {
			if now.Sub(t.fullWarn) > time.Minute {
				t.fullWarn = now
				t.cfg.Logger.Warn("tracker: too many source addresses, refusing new ones", "limit", t.cfg.MaxSources, "src", src)
			}
			return false
		}
		b = &bucket{tokens: float64(t.cfg.Burst), last: now}
		t.sources[src] = b
	}
	b.tokens = min(float64(t.cfg.Burst), b.tokens+now.Sub(b.last).Seconds()*t.cfg.Rate)
	b.last = now
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}

// Announce records the peer and returns peers for it.
func (t *Tracker) Announce(req AnnounceRequest) (AnnounceResponse, error) {
	now := t.cfg.Now()
	if !req.Addr.IsValid() || req.Addr.Port() == 0 || req.Left < 0 {
		return AnnounceResponse{}, ErrBadRequest
	}
	req.Addr = netip.AddrPortFrom(req.Addr.Addr().Unmap(), req.Addr.Port())
	t.mu.Lock()
	defer t.mu.Unlock()
	t.maybeSweep(now)
	tr, ok := t.torrents[req.InfoHash]
	if !ok {
		return AnnounceResponse{}, ErrUnknownTorrent
	}
	// Peers are keyed by address and port, both from the connection (the
	// port is the one the peer listens on): a client cannot overwrite
	// another machine's entry, and a machine registered through the boot
	// API and later announcing itself stays one entry.
	key := req.Addr
	p, known := tr.peers[key]
	switch {
	case req.Event == EventStopped:
		if known {
			tr.remove(key)
		}
	case known:
		if req.Event == EventCompleted && p.left > 0 {
			tr.downloaded++
		}
		p.left, p.lastSeen = req.Left, now
		if req.PeerID != ([20]byte{}) {
			p.id = req.PeerID
		}
	case len(tr.peers) < t.cfg.MaxPeersPerTorrent && tr.perIP[key.Addr()] < t.cfg.MaxPeersPerIP:
		if req.Event == EventCompleted {
			tr.downloaded++
		}
		tr.peers[key] = &peer{id: req.PeerID, addr: req.Addr, left: req.Left, lastSeen: now}
		tr.perIP[key.Addr()]++
	}
	if t.cfg.OnLeecher != nil && req.Event != EventStopped && req.Left > 0 && req.Addr != tr.seeder {
		t.cfg.OnLeecher(req.InfoHash, req.Addr)
	}
	resp := AnnounceResponse{Interval: t.cfg.Interval, MinInterval: t.cfg.MinInterval}
	st := tr.stats()
	resp.Seeders, resp.Leechers = st.Complete, st.Incomplete
	if req.Event == EventStopped {
		return resp, nil
	}
	n := req.NumWant
	if n < 0 {
		n = t.cfg.DefaultNumWant
	}
	n = min(n, t.cfg.MaxNumWant)
	resp.Peers = t.selectPeers(tr, req.Addr, n)
	return resp, nil
}

// selectPeers picks up to n peers other than the requester: seeds first,
// then peers holding part of the data, then empty ones, each group in
// random order so load spreads. The server's seeder comes first while fewer
// than SeederOff peers hold data; after that the LAN serves itself and the
// seeder's uplink is kept for pieces the swarm does not have yet (peers
// that already talk to the seeder keep their connection).
func (t *Tracker) selectPeers(tr *torrent, self netip.AddrPort, n int) []Peer {
	if n <= 0 {
		return nil
	}
	var seeds, partial, empty []Peer
	for _, p := range tr.peers {
		if p.addr == self || p.addr == tr.seeder {
			continue
		}
		pp := Peer{ID: p.id, Addr: p.addr}
		switch {
		case p.left == 0:
			seeds = append(seeds, pp)
		case p.left < tr.size:
			partial = append(partial, pp)
		default:
			empty = append(empty, pp)
		}
	}
	out := make([]Peer, 0, min(n, len(tr.peers)+1))
	if tr.seeder.IsValid() && tr.seeder != self && len(seeds)+len(partial) < t.cfg.SeederOff {
		out = append(out, Peer{Addr: tr.seeder})
	}
	for _, g := range [][]Peer{seeds, partial, empty} {
		rand.Shuffle(len(g), func(i, j int) { g[i], g[j] = g[j], g[i] })
		for _, p := range g {
			if len(out) >= n {
				return out
			}
			out = append(out, p)
		}
	}
	return out
}

// Peers returns up to n peers of a torrent that are not at address
// exclude, in the order an announce would hand them out (the seeder is
// not included; the caller puts it first).
func (t *Tracker) Peers(ih Hash, exclude netip.Addr, n int) []netip.AddrPort {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.maybeSweep(t.cfg.Now())
	tr, ok := t.torrents[ih]
	if !ok || n <= 0 {
		return nil
	}
	saved := tr.seeder
	tr.seeder = netip.AddrPort{}
	ps := t.selectPeers(tr, netip.AddrPortFrom(exclude, 0), len(tr.peers))
	tr.seeder = saved
	var out []netip.AddrPort
	for _, p := range ps {
		if p.Addr.Addr() == exclude {
			continue
		}
		if len(out) == n {
			break
		}
		out = append(out, p.Addr)
	}
	return out
}

// Scrape returns the stats of the given info hashes that are ours (all of
// them when none are given).
func (t *Tracker) Scrape(ihs []Hash) map[Hash]Stats {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.maybeSweep(t.cfg.Now())
	out := map[Hash]Stats{}
	if len(ihs) == 0 {
		for ih, tr := range t.torrents {
			out[ih] = tr.stats()
		}
		return out
	}
	for _, ih := range ihs {
		if tr, ok := t.torrents[ih]; ok {
			out[ih] = tr.stats()
		}
	}
	return out
}

// Known reports whether ih is one of our torrents.
func (t *Tracker) Known(ih Hash) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	_, ok := t.torrents[ih]
	return ok
}

// Hashes returns our info hashes, sorted.
func (t *Tracker) Hashes() []Hash {
	t.mu.Lock()
	defer t.mu.Unlock()
	var out []Hash
	for ih := range t.torrents {
		out = append(out, ih)
	}
	slices.SortFunc(out, func(a, b Hash) int { return slices.Compare(a[:], b[:]) })
	return out
}

func (tr *torrent) stats() Stats {
	var s Stats
	if tr.seeder.IsValid() {
		s.Complete++
	}
	for _, p := range tr.peers {
		if p.left == 0 {
			s.Complete++
		} else {
			s.Incomplete++
		}
	}
	s.Downloaded = tr.downloaded
	return s
}

func (tr *torrent) remove(k netip.AddrPort) {
	delete(tr.peers, k)
	if tr.perIP[k.Addr()]--; tr.perIP[k.Addr()] <= 0 {
		delete(tr.perIP, k.Addr())
	}
}

// Sweep drops expired peers and full rate buckets now.
func (t *Tracker) Sweep() {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.sweep(t.cfg.Now())
}

// maybeSweep runs sweep at most every few seconds, so expiry costs no
// timer goroutine and is bounded per call by the store's size.
func (t *Tracker) maybeSweep(now time.Time) {
	if now.Sub(t.lastSweep) >= 5*time.Second {
		t.sweep(now)
	}
}

func (t *Tracker) sweep(now time.Time) {
	t.lastSweep = now
	for ih, tr := range t.torrents {
		for k, p := range tr.peers {
			if now.Sub(p.lastSeen) > t.cfg.PeerTTL {
				tr.remove(k)
				t.cfg.Logger.Debug("tracker: peer expired", "os", tr.name, "peer", p.addr, "info_hash", ih)
			}
		}
	}
	full := time.Duration(float64(t.cfg.Burst) / t.cfg.Rate * float64(time.Second))
	for a, b := range t.sources {
		if now.Sub(b.last) >= full {
			delete(t.sources, a)
		}
	}
}

// Count returns the number of stored peers of a torrent (tests, metrics).
func (t *Tracker) Count(ih Hash) int {
	t.mu.Lock()
	defer t.mu.Unlock()
	if tr, ok := t.torrents[ih]; ok {
		return len(tr.peers)
	}
	return 0
}

// Register records a machine the server learned about outside the
// tracker (the boot client's progress report names its BitTorrent port),
// so other machines get it as a peer before it has announced. It counts
// like an announce for expiry and limits.
func (t *Tracker) Register(ih Hash, addr netip.AddrPort, left int64) error {
	_, err := t.Announce(AnnounceRequest{InfoHash: ih, Addr: addr, Left: left, NumWant: 0})
	return err
}

// orDefault replaces a zero or negative setting with its default.
func orDefault[T int | float64 | time.Duration](v *T, def T) {
	if *v <= 0 {
		*v = def
	}
}
