package dashboard

import (
	"sort"
	"strings"
	"time"

	"github.com/boottorrent/boottorrent/initramfs/bootapi"
)

// Stages are the columns of the class summary, in boot order, then the
// two that need the administrator.
var Stages = []string{bootapi.StageDHCP, bootapi.StageTFTP, bootapi.StageIPXE, bootapi.StageClient,
	bootapi.StageNetwork, bootapi.StageMenu, bootapi.StageDownload, bootapi.StageSeeding, bootapi.StageBooting,
	bootapi.StageFailed, bootapi.StageLost}

// Summary is the class at a glance: what the page's header and `status`
// show above the machine table.
type Summary struct {
	Total  int            `json:"total"`
	Done   int            `json:"done"` // handed over to their OS (booting)
	Stages map[string]int `json:"stages"`
	// FirstSeen is when the first machine of the class was seen.
	FirstSeen time.Time `json:"first_seen,omitzero"`
	// ETA is when the slowest downloading machine finishes at its rate.
	ETA time.Time `json:"eta,omitzero"`
	// ServerBps and PeersBps are payload bytes per second the machines
	// received from the server (seeder + web seed) and from each other.
	ServerBps float64 `json:"server_bps"`
	PeersBps  float64 `json:"peers_bps"`
	// FromPeers and FromServer are payload bytes so far; PeerShare is
	// FromPeers' share of both (0..1).
	FromPeers  int64   `json:"from_peers"`
	FromServer int64   `json:"from_server"`
	PeerShare  float64 `json:"peer_share"`
	OS         []OS    `json:"os"`
}

// OS is one OS's machines downloading and seeding it.
type OS struct {
	Name        string `json:"name"`
	Downloading int    `json:"downloading"`
	Seeding     int    `json:"seeding"`
}

// Meter turns successive snapshots into the swarm's rates. Its zero value
// is ready; it is not safe for concurrent use.
type Meter struct {
	prev                map[string][2]int64 // MAC → from peers, from server
	at                  time.Time
	peersBps, serverBps float64
}

// rates returns the smoothed rates at now for machines.
func (mt *Meter) rates(ms []bootapi.Machine, now time.Time) (peers, server float64) {
	cur := make(map[string][2]int64, len(ms))
	var dp, ds int64
	for _, m := range ms {
		c := [2]int64{m.FromPeers, m.FromSeeder + m.FromWeb}
		cur[m.MAC] = c
		p := mt.prev[m.MAC]
		dp += grew(p[0], c[0])
		ds += grew(p[1], c[1])
	}
	if mt.prev != nil {
		if dt := now.Sub(mt.at).Seconds(); dt > 0 {
			// Reports arrive every few seconds: smooth over about five.
			a := min(1, dt/5)
			mt.peersBps = (1-a)*mt.peersBps + a*float64(dp)/dt
			mt.serverBps = (1-a)*mt.serverBps + a*float64(ds)/dt
		}
	}
	mt.prev, mt.at = cur, now
	return mt.peersBps, mt.serverBps
}

func grew(old, cur int64) int64 {
	if cur >= old {
		return cur - old
	}
	return cur
}

// Summarize sums up machines at now; mt, when not nil, adds the rates
// since its previous call.
func Summarize(ms []bootapi.Machine, now time.Time, mt *Meter) Summary {
	s := Summary{Total: len(ms), Stages: map[string]int{}}
	oses := map[string]*OS{}
	var slowest time.Duration
	for _, m := range ms {
		s.Stages[m.Stage]++
		if m.Stage == bootapi.StageBooting {
			s.Done++
		}
		if s.FirstSeen.IsZero() || m.FirstSeen.Before(s.FirstSeen) {
			s.FirstSeen = m.FirstSeen
		}
		s.FromPeers += m.FromPeers
		s.FromServer += m.FromSeeder + m.FromWeb
		if m.OS != "" && (m.Stage == bootapi.StageDownload || m.Stage == bootapi.StageSeeding) {
			k := strings.ToLower(m.OS)
			o := oses[k]
			if o == nil {
				o = &OS{Name: m.OS}
				oses[k] = o
			}
			if m.Stage == bootapi.StageDownload {
				o.Downloading++
			} else {
				o.Seeding++
			}
		}
		if m.Stage == bootapi.StageDownload && m.RateBps > 0 && m.BytesTotal > m.BytesDone {
			slowest = max(slowest, time.Duration(float64(m.BytesTotal-m.BytesDone)/m.RateBps*float64(time.Second)))
		}
	}
	if slowest > 0 {
		s.ETA = now.Add(slowest).Truncate(time.Second)
	}
	if all := s.FromPeers + s.FromServer; all > 0 {
		s.PeerShare = float64(s.FromPeers) / float64(all)
	}
	if mt != nil {
		s.PeersBps, s.ServerBps = mt.rates(ms, now)
	}
	for _, o := range oses {
		s.OS = append(s.OS, *o)
	}
	sort.Slice(s.OS, func(i, j int) bool { return s.OS[i].Name < s.OS[j].Name })
	return s
}

// Pinned says whether a machine needs the administrator (failed or lost):
// the page and `status` list those first.
func Pinned(m *bootapi.Machine) bool {
	return m.Stage == bootapi.StageFailed || m.Stage == bootapi.StageLost
}

// Order sorts machines for display: failed and lost first, then by name
// (machines without one by MAC).
func Order(ms []bootapi.Machine) {
	key := func(m *bootapi.Machine) string {
		if m.Name != "" {
			return m.Name
		}
		return "~" + m.MAC
	}
	sort.SliceStable(ms, func(i, j int) bool {
		pi, pj := Pinned(&ms[i]), Pinned(&ms[j])
		if pi != pj {
			return pi
		}
		return key(&ms[i]) < key(&ms[j])
	})
}
