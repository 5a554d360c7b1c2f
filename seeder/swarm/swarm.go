// Package swarm is the swarm policy of boottorrent: which peers a booting
// machine is handed (rings of machines, a rank of the others), which share
// of an image's pieces it fetches from the seeder (its rank among the
// machines fetching, and how many of them own a share at all) and how often
// it reports. The server (netboot/bootserver, netboot/registry) calls it
// and hands its answers to the boot clients over the boot API, so that
// changing a knob here needs no new client.
//
// It is pure: no I/O, no clock, no BitTorrent library. It must not know
// HTTP, the registry's locking or the wire format beyond bootapi's limits.
package swarm

import (
	"cmp"
	"hash/fnv"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/boottorrent/boottorrent/initramfs/bootapi"
)

const (
	// MaxPeers is the most peers one Peers answer lists: the seeder and
	// 19 machines. Twenty peers keep the pieces varied; more only
	// multiply the HAVE messages each machine receives, and with them the
	// request updates (cmd/swarmbench/TUNING.md).
	MaxPeers = 20
	// MaxOwners bounds how many machines fetch a share from the seeder
	// (bootapi.Peers.ShareOwners); the others get every piece from the
	// machines. An owner must pass each piece of its share to the N−1
	// others, so fewer owners overload them; more owners each get too
	// little of the server's uplink for the first pieces to start the
	// swarm (cmd/swarmbench/TUNING.md).
	MaxOwners = 64
	// ReportInterval is how often clients are asked to report, and
	// MaxReportInterval how rarely in a large class: see ReportEvery.
	ReportInterval    = 2 * time.Second
	MaxReportInterval = 10 * time.Second
	reportMachines    = 20
	// PeerMaxAge is how recently a machine must have reported to be
	// handed out as a peer or counted for a share: clients report at
	// least every MaxReportInterval, so a machine silent for this long
	// has booted its OS or gone away.
	PeerMaxAge = 30 * time.Second
)

// ReportEvery is the report interval for a class of n machines fetching
// one OS: one ReportInterval more per reportMachines machines, so that the
// server's uplink, which the seeder's bulk data fills, answers about
// reportMachines/2 reports a second however many machines boot.
func ReportEvery(n int) time.Duration {
	k := max(1, (n+reportMachines-1)/reportMachines)
	return min(time.Duration(k)*ReportInterval, MaxReportInterval)
}

// Owners is how many of count machines own a share of the seeder's
// pieces.
func Owners(count int) int { return min(count, MaxOwners) }

// Member is a machine fetching or seeding an OS, as the peer choice sees
// it.
type Member struct {
	MAC  string
	Addr netip.AddrPort
}

// Peers chooses at most n of the machines cs for the machine asker (not
// among them): all of them, ordered by SortByRank, when they are at most
// n, otherwise its neighbours on rings (see rings). A machine is handed
// the same peers while the machines stay, and the answer changes only when
// one comes or goes near it: answers that change make every client ask
// again (cmd/swarmbench/TUNING.md).
func Peers(asker string, cs []Member, n int) []netip.AddrPort {
	if len(cs) <= n {
		out := make([]netip.AddrPort, len(cs))
		for i, c := range cs {
			out[i] = c.Addr
		}
		SortByRank(asker, out)
		return out
	}
	return rings(asker, cs, n)
}

// rings chooses at most n of the machines cs for the machine asker: its
// two neighbours on each of n/2 rings, every ring an order of all the
// machines (cs and asker) by a hash of the ring's number and the MAC.
// The choice is symmetric: a machine's neighbour on a ring has it as its
// neighbour on that ring, so two machines list each other or neither, and
// a machine is dialled by no more machines than it lists. A boot client
// keeps few connections (seeder/btlan) and drops one, often the seeder's,
// when dialled beyond them. Random rings mix the swarm as a random graph
// does, and a machine coming or going changes its neighbours' answers
// only.
func rings(asker string, cs []Member, n int) []netip.AddrPort {
	out := make([]netip.AddrPort, 0, n)
	seen := make(map[netip.AddrPort]bool, n)
	add := func(k int) {
		if k >= 0 && !seen[cs[k].Addr] {
			seen[cs[k].Addr] = true
			out = append(out, cs[k].Addr)
		}
	}
	hashes := make([]uint64, len(cs))
	for k, c := range cs {
		hashes[k] = macHash(c.MAC)
	}
	self := macHash(asker)
	for ring := range max(1, n/2) {
		me := ringKey(ring, self)
		next, prev := -1, -1
		var dn, dp uint64
		for k, c := range cs {
			h := ringKey(ring, hashes[k])
			// Distances along the ring, forward and back (wrapping).
			if f := h - me; next < 0 || f < dn || f == dn && c.Addr.Compare(cs[next].Addr) < 0 {
				next, dn = k, f
			}
			if b := me - h; prev < 0 || b < dp || b == dp && c.Addr.Compare(cs[prev].Addr) < 0 {
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
// hashes to mac: the hash mixed with the ring's number by SplitMix64's
// finaliser, so that the rings' orders are unrelated (FNV alone, with the
// ring's number in front of the MAC, gave nearly the same order on every
// ring).
func ringKey(ring int, mac uint64) uint64 {
	z := mac + uint64(ring+1)*0x9e3779b97f4a7c15
	z = (z ^ z>>30) * 0xbf58476d1ce4e5b9
	z = (z ^ z>>27) * 0x94d049bb133111eb
	return z ^ z>>31
}

// SortByRank orders candidates for the machine asker by rank (then by
// address, for equal ranks): an order of its own for every machine that
// stays the same however the candidates came in.
func SortByRank(asker string, candidates []netip.AddrPort) {
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
// asker: lowest first.
func peerRank(asker string, candidate netip.AddrPort) uint64 {
	h := fnv.New64a()
	h.Write([]byte(strings.ToLower(asker)))
	h.Write([]byte{0})
	b, _ := candidate.MarshalBinary()
	h.Write(b)
	return h.Sum64()
}

// PeerList is the answer to a machine asker at self: the seeder's
// addresses first, then the machines (Peers' choice), then other peers
// the tracker knows (BitTorrent clients that are not boot clients) in an
// order fixed per machine; without the asker, ports 0 and duplicates, at
// most MaxPeers, as "ip:port".
func PeerList(asker string, self netip.Addr, seeder, machines, others []netip.AddrPort) []string {
	others = slices.Clone(others) // the caller's slice is not ours to reorder
	SortByRank(asker, others)
	seen := map[netip.AddrPort]bool{}
	out := []string{}
	for _, ap := range slices.Concat(seeder, machines, others) {
		ap = netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
		if !ap.IsValid() || ap.Port() == 0 || seen[ap] || (self.IsValid() && ap.Addr() == self) {
			continue
		}
		seen[ap] = true
		out = append(out, ap.String())
		if len(out) >= MaxPeers {
			break
		}
	}
	return out
}

// Fetcher is a machine fetching or seeding an OS, as the share choice
// sees it: Since is when it started downloading.
type Fetcher struct {
	MAC   string
	Since time.Time
}

// Share ranks the machine mac among the machines fetching an OS, in the
// order they started (then by MAC), and returns its share index and the
// share count (bootapi.Peers). fetching must include mac. Machines that
// finished keep their share: they hold those pieces for the others.
// Beyond bootapi.MaxShareCount the machines share in groups.
func Share(mac string, fetching []Fetcher) (index, count int) {
	if len(fetching) == 0 {
		return 0, 0
	}
	cs := slices.Clone(fetching)
	slices.SortFunc(cs, func(a, b Fetcher) int {
		if c := a.Since.Compare(b.Since); c != 0 {
			return c
		}
		return strings.Compare(a.MAC, b.MAC)
	})
	count = min(len(cs), bootapi.MaxShareCount)
	for i, c := range cs {
		if c.MAC == mac {
			return i % count, count
		}
	}
	return 0, count
}
