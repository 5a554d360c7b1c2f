package netboot

import (
	"cmp"
	"hash/fnv"
	"log/slog"
	"net/netip"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/boottorrent/boottorrent/netboot/bootapi"
)

// DefaultMaxMachines bounds the registry. A lab has tens to a few hundred
// machines; the cap keeps a flood of forged MACs (DHCP or reports) from
// growing memory without end. When full, the machine seen least recently
// is forgotten.
const DefaultMaxMachines = 4096

// progressLogEvery is how often a machine's download progress is logged
// (stage changes are always logged at once).
const progressLogEvery = 10 * time.Second

// Registry is what the server knows about every machine that is booting:
// its stage (from DHCP, TFTP and HTTP events it sees itself, then from the
// client's reports), its addresses and its download accounting. It is safe
// for concurrent use.
type Registry struct {
	log   *slog.Logger
	max   int
	now   func() time.Time
	names map[string]string // MAC → name from machines:

	mu    sync.Mutex
	byMAC map[string]*machine
	byIP  map[netip.Addr]string // last known IP → MAC

	evicted  int
	evictLog time.Time
}

type machine struct {
	m          bootapi.Machine
	ip         netip.Addr
	listenPort int
	lastLog    time.Time
}

// NewRegistry returns an empty registry holding at most max machines
// (DefaultMaxMachines if max <= 0). names maps lower-case MACs to the
// names of config machines: entries.
func NewRegistry(log *slog.Logger, max int, names map[string]string) *Registry {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if max <= 0 {
		max = DefaultMaxMachines
	}
	return &Registry{log: log, max: max, now: time.Now, names: names,
		byMAC: map[string]*machine{}, byIP: map[netip.Addr]string{}}
}

// get returns the entry for mac, creating it (and evicting the machine
// seen least recently when full). Called with r.mu held.
func (r *Registry) get(mac string, now time.Time) *machine {
	if e, ok := r.byMAC[mac]; ok {
		return e
	}
	if len(r.byMAC) >= r.max {
		var oldest string
		var ot time.Time
		for k, e := range r.byMAC {
			if oldest == "" || e.m.LastSeen.Before(ot) {
				oldest, ot = k, e.m.LastSeen
			}
		}
		if e := r.byMAC[oldest]; e != nil && e.ip.IsValid() && r.byIP[e.ip] == oldest {
			delete(r.byIP, e.ip)
		}
		delete(r.byMAC, oldest)
		r.evicted++
		if now.Sub(r.evictLog) >= time.Minute {
			r.log.Warn("machine registry full: forgetting the machines seen least recently", "mac", oldest, "max", r.max,
				"forgotten_total", r.evicted)
			r.evictLog = now
		}
	}
	e := &machine{m: bootapi.Machine{MAC: mac, Name: r.names[mac], FirstSeen: now, Stages: map[string]time.Time{}}}
	r.byMAC[mac] = e
	return e
}

func (r *Registry) setIP(e *machine, ip netip.Addr) {
	if !ip.IsValid() || ip.IsUnspecified() {
		return
	}
	ip = ip.Unmap()
	if e.ip.IsValid() && e.ip != ip && r.byIP[e.ip] == e.m.MAC {
		delete(r.byIP, e.ip)
	}
	e.ip = ip
	e.m.IP = ip.String()
	r.byIP[ip] = e.m.MAC
}

// setStage records a stage; it returns the previous stage when it changed.
// Called with r.mu held.
func (r *Registry) setStage(e *machine, stage string, now time.Time) (prev string, changed bool) {
	prev = e.m.Stage
	if prev == stage {
		return prev, false
	}
	// A machine that starts over (power cycle, failed boot retried) is
	// back at an early stage: its old download figures no longer apply.
	if stage == bootapi.StageDHCP || stage == bootapi.StageTFTP || stage == bootapi.StageIPXE {
		e.m.OS, e.m.Progress, e.m.BytesDone, e.m.BytesTotal = "", 0, 0, 0
		e.m.FromPeers, e.m.FromSeeder, e.m.FromWeb, e.m.Uploaded = 0, 0, 0, 0
		e.m.Peers, e.m.RateBps, e.m.Message, e.listenPort = 0, 0, "", 0
	}
	e.m.Stage = stage
	if _, ok := e.m.Stages[stage]; !ok || stage == bootapi.StageDHCP {
		e.m.Stages[stage] = now
	}
	return prev, true
}

// Observe records a stage the server saw itself (DHCP, TFTP, HTTP). mac
// must be a normalised lower-case MAC; ip and arch may be empty. Attrs are
// added to the log line of a stage change.
func (r *Registry) Observe(mac string, ip netip.Addr, arch, stage string, attrs ...any) {
	if mac == "" {
		return
	}
	now := r.now()
	r.mu.Lock()
	e := r.get(mac, now)
	r.setIP(e, ip)
	if arch != "" {
		e.m.Arch = arch
	}
	e.m.LastSeen = now
	prev, changed := r.setStage(e, stage, now)
	name, ipS, archS := e.m.Name, e.m.IP, e.m.Arch
	since := now.Sub(e.m.FirstSeen)
	r.mu.Unlock()
	if changed {
		args := []any{"mac", mac, "ip", ipS, "name", name, "arch", archS, "stage", stage, "from", prev, "since_first_seen", since.Round(time.Millisecond)}
		r.log.Info("machine stage", append(args, attrs...)...)
	}
}

// Touch records a machine's address and architecture without changing its
// stage (iPXE's DHCP, lease renewals).
func (r *Registry) Touch(mac string, ip netip.Addr, arch string) {
	if mac == "" {
		return
	}
	now := r.now()
	r.mu.Lock()
	defer r.mu.Unlock()
	e := r.get(mac, now)
	r.setIP(e, ip)
	if arch != "" {
		e.m.Arch = arch
	}
	e.m.LastSeen = now
	if e.m.Stage == "" {
		e.m.Stage = bootapi.StageDHCP
		e.m.Stages[bootapi.StageDHCP] = now
	}
}

// MACForIP returns the MAC last seen at ip, if any. TFTP and the client
// file downloads carry no MAC; DHCP and the boot script request tell the
// registry which address belongs to which machine.
func (r *Registry) MACForIP(ip netip.Addr) string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.byIP[ip.Unmap()]
}

// Report records a client's report, sent from ip.
func (r *Registry) Report(ip netip.Addr, rep *bootapi.Report) {
	now := r.now()
	r.mu.Lock()
	e := r.get(rep.MAC, now)
	r.setIP(e, ip)
	e.m.LastSeen = now
	prev, changed := r.setStage(e, rep.Stage, now)
	m := &e.m
	if rep.OS != "" {
		m.OS = rep.OS
	}
	if rep.ListenPort > 0 {
		e.listenPort = rep.ListenPort
	}
	m.BytesTotal, m.BytesDone = rep.BytesTotal, rep.BytesDone
	m.FromPeers, m.FromSeeder, m.FromWeb, m.Uploaded = rep.FromPeers, rep.FromSeeder, rep.FromWeb, rep.Uploaded
	m.Peers, m.RateBps, m.Message = rep.Peers, rep.RateBps, rep.Message
	m.Progress = 0
	if rep.BytesTotal > 0 {
		m.Progress = float64(min(rep.BytesDone, rep.BytesTotal)) / float64(rep.BytesTotal)
	}
	logProgress := !changed && rep.Stage == bootapi.StageDownload && now.Sub(e.lastLog) >= progressLogEvery
	if changed || logProgress {
		e.lastLog = now
	}
	snap := *m
	since := now.Sub(m.FirstSeen)
	r.mu.Unlock()

	base := []any{"mac", snap.MAC, "ip", snap.IP, "name", snap.Name, "stage", snap.Stage}
	switch {
	case changed && rep.Stage == bootapi.StageFailed:
		r.log.Error("machine failed", append(base, "from", prev, "os", snap.OS, "message", snap.Message)...)
	case changed:
		r.log.Info("machine stage", append(base, "from", prev, "os", snap.OS, "bytes_done", snap.BytesDone,
			"bytes_total", snap.BytesTotal, "from_peers", snap.FromPeers, "from_seeder", snap.FromSeeder,
			"from_webseed", snap.FromWeb, "uploaded", snap.Uploaded, "since_first_seen", since.Round(time.Millisecond))...)
	case logProgress:
		r.log.Info("machine progress", append(base, "os", snap.OS, "percent", int(snap.Progress*100),
			"bytes_done", snap.BytesDone, "bytes_total", snap.BytesTotal, "rate_bps", int64(snap.RateBps),
			"peers", snap.Peers, "from_peers", snap.FromPeers, "from_seeder", snap.FromSeeder, "from_webseed", snap.FromWeb)...)
	}
}

// Snapshot returns every machine, sorted by MAC, as copies.
func (r *Registry) Snapshot() []bootapi.Machine {
	r.mu.Lock()
	out := make([]bootapi.Machine, 0, len(r.byMAC))
	for _, e := range r.byMAC {
		m := e.m
		m.Stages = make(map[string]time.Time, len(e.m.Stages))
		for k, v := range e.m.Stages {
			m.Stages[k] = v
		}
		out = append(out, m)
	}
	r.mu.Unlock()
	sort.Slice(out, func(i, j int) bool { return out[i].MAC < out[j].MAC })
	return out
}

// Len is the number of machines known.
func (r *Registry) Len() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.byMAC)
}

// PeerMaxAge is how recently a machine must have reported to be handed out
// as a peer: clients report every ReportInterval, so a machine silent for
// this long has booted its OS or gone away.
const PeerMaxAge = 30 * time.Second

// Peers returns the BitTorrent addresses of machines that reported they
// are downloading or seeding os within PeerMaxAge, except the machine
// excludeMAC: every one of them when they are at most n, otherwise at
// most n chosen by ringPeers. A machine is handed the same peers while
// the machines stay, and the answer changes only when one comes or goes
// near it. (Listing the most recently seen first, as before, changed the
// answer of more than n machines with every report: at N = 100 each
// machine then asked again every second, and the answers filled a
// 1 Mbit/s server uplink on their own; cmd/swarmbench/TUNING.md.)
func (r *Registry) Peers(os, excludeMAC string, n int) []netip.AddrPort {
	now := r.now()
	var cs []ringMember
	r.mu.Lock()
	for mac, e := range r.byMAC {
		if mac == excludeMAC || !strings.EqualFold(e.m.OS, os) || e.listenPort == 0 || !e.ip.IsValid() {
			continue
		}
		if e.m.Stage != bootapi.StageDownload && e.m.Stage != bootapi.StageSeeding {
			continue
		}
		if now.Sub(e.m.LastSeen) > PeerMaxAge {
			continue
		}
		cs = append(cs, ringMember{macHash(mac), netip.AddrPortFrom(e.ip, uint16(e.listenPort))})
	}
	r.mu.Unlock()
	if len(cs) <= n {
		out := make([]netip.AddrPort, len(cs))
		for i, c := range cs {
			out[i] = c.addr
		}
		sortByRank(excludeMAC, out)
		return out
	}
	return ringPeers(excludeMAC, cs, n)
}

// ringMember is a machine ringPeers places on its rings.
type ringMember struct {
	mac  uint64 // macHash
	addr netip.AddrPort
}

// ringPeers chooses at most n of the machines cs for the machine asker:
// its two neighbours on each of n/2 rings, every ring an order of all the
// machines (cs and asker) by a hash of the ring's number and the MAC.
// The choice is symmetric: a machine's neighbour on a ring has it as its
// neighbour on that ring, so two machines list each other or neither.
// Each boot client keeps at most 25 connections (initramfs/client
// LANConfig), and when a machine dials in beyond that the library closes
// one of its connections, usually the seeder's, which brings the
// machine's share: with each machine's own top 19 of a hash order
// (rendezvous hashing, as before), a machine was also dialled by the
// machines that listed it without being on its list, about 25 machines
// at N = 30 and 34 at N = 100, and at N = 30 (8 MiB, 1 Mbit/s) the
// machines closed their seeder connection 15–28 times a run
// (cmd/swarmbench/TUNING.md). With symmetric lists a machine has at most
// n machines to connect to. Random rings mix the swarm as a random
// graph does (a few hops from any machine to any other), and a machine
// coming or going changes the answers of its neighbours only.
func ringPeers(asker string, cs []ringMember, n int) []netip.AddrPort {
	out := make([]netip.AddrPort, 0, n)
	seen := make(map[netip.AddrPort]bool, n)
	add := func(k int) {
		if k >= 0 && !seen[cs[k].addr] {
			seen[cs[k].addr] = true
			out = append(out, cs[k].addr)
		}
	}
	self := macHash(asker)
	for ring := range max(1, n/2) {
		me := ringKey(ring, self)
		next, prev := -1, -1
		var dn, dp uint64
		for k, c := range cs {
			h := ringKey(ring, c.mac)
			// Distances along the ring, forward and back (wrapping).
			if f := h - me; next < 0 || f < dn || f == dn && c.addr.Compare(cs[next].addr) < 0 {
				next, dn = k, f
			}
			if b := me - h; prev < 0 || b < dp || b == dp && c.addr.Compare(cs[prev].addr) < 0 {
				prev, dp = k, b
			}
		}
		add(next)
		add(prev)
	}
	return out
}

// macHash is the MAC's hash, before any ring's mixing (ringKey).
func macHash(mac string) uint64 {
	h := fnv.New64a()
	h.Write([]byte(strings.ToLower(mac)))
	return h.Sum64()
}

// ringKey is the place on ring number ring of the machine whose MAC
// hashes to mac (macHash): the hash mixed with the ring's number by
// SplitMix64's finaliser, so that the rings' orders are unrelated (FNV
// alone, with the ring's number in front of the MAC, gave nearly the
// same order on every ring).
func ringKey(ring int, mac uint64) uint64 {
	z := mac + uint64(ring+1)*0x9e3779b97f4a7c15
	z = (z ^ z>>30) * 0xbf58476d1ce4e5b9
	z = (z ^ z>>27) * 0x94d049bb133111eb
	return z ^ z>>31
}

// sortByRank orders candidates for the machine asker by peerRank (then by
// address, for equal ranks): an order of its own for every machine that
// stays the same however the candidates came in.
func sortByRank(asker string, candidates []netip.AddrPort) {
	rank := make(map[netip.AddrPort]uint64, len(candidates))
	for _, c := range candidates {
		rank[c] = peerRank(asker, c)
	}
	slices.SortFunc(candidates, func(a, b netip.AddrPort) int {
		if c := cmp.Compare(rank[a], rank[b]); c != 0 {
			return c
		}
		return a.Compare(b)
	})
}

// peerRank is candidate's place in the peer list handed to the machine
// asker (Peers): lowest first.
func peerRank(asker string, candidate netip.AddrPort) uint64 {
	h := fnv.New64a()
	h.Write([]byte(strings.ToLower(asker)))
	h.Write([]byte{0})
	b, _ := candidate.MarshalBinary()
	h.Write(b)
	return h.Sum64()
}

// Share returns which share of os's pieces the machine mac should fetch
// from the seeder (bootapi.Peers): its rank among the machines that
// reported downloading or seeding os within PeerMaxAge, in the order they
// started downloading, and how many there are. A machine not yet among
// them counts as the last. Machines that finished keep their share: they
// hold those pieces for the others.
func (r *Registry) Share(os, mac string) (index, count int) {
	now := r.now()
	type cand struct {
		mac   string
		since time.Time
	}
	var cs []cand
	r.mu.Lock()
	for m, e := range r.byMAC {
		if m == mac || !strings.EqualFold(e.m.OS, os) || now.Sub(e.m.LastSeen) > PeerMaxAge {
			continue
		}
		if e.m.Stage != bootapi.StageDownload && e.m.Stage != bootapi.StageSeeding {
			continue
		}
		cs = append(cs, cand{m, fetchingSince(e)})
	}
	self := cand{mac, now}
	if e, ok := r.byMAC[mac]; ok && strings.EqualFold(e.m.OS, os) && (e.m.Stage == bootapi.StageDownload || e.m.Stage == bootapi.StageSeeding) {
		self.since = fetchingSince(e)
	}
	r.mu.Unlock()
	cs = append(cs, self)
	sort.Slice(cs, func(i, j int) bool {
		if !cs[i].since.Equal(cs[j].since) {
			return cs[i].since.Before(cs[j].since)
		}
		return cs[i].mac < cs[j].mac
	})
	count = min(len(cs), bootapi.MaxShareCount)
	for i, c := range cs {
		if c.mac == mac {
			return i % count, count
		}
	}
	return 0, count
}

// fetchingSince is when a machine started downloading (or, if it never
// reported downloading, seeding) its OS.
func fetchingSince(e *machine) time.Time {
	if t, ok := e.m.Stages[bootapi.StageDownload]; ok {
		return t
	}
	return e.m.Stages[bootapi.StageSeeding]
}
