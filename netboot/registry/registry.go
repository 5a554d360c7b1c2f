// Package registry is what the server knows about every machine that is
// booting: its stage (from the DHCP, TFTP and HTTP events the server sees
// itself, then from the boot client's reports), its addresses and its
// download accounting. It answers "which machines fetch this OS" for the
// swarm policy (seeder/swarm), which decides what to hand them; it must
// not decide peers or shares itself, nor know HTTP or DHCP.
package registry

import (
	"log/slog"
	"net/netip"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/boottorrent/boottorrent/initramfs/bootapi"
	"github.com/boottorrent/boottorrent/seeder/swarm"
)

// DefaultMax bounds the registry. A lab has tens to a few hundred
// machines; the cap keeps a flood of forged MACs (DHCP or reports) from
// growing memory without end. When full, the machine seen least recently
// is forgotten.
const DefaultMax = 4096

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

	hooks Hooks

	perSource map[netip.Addr]int // HTTP-only machines by announcing address (admission.go)
	refused   int
	refuseLog time.Time
}

type machine struct {
	m          bootapi.Machine
	ip         netip.Addr
	listenPort int
	lastLog    time.Time
	source     netip.Addr // the HTTP sender that announced it, until DHCP or TFTP sees it
	// lost is set when a Snapshot first finds the machine silent past
	// its report deadline (see lostAfter), so the verdict is counted once.
	lost bool
}

// Options configure a Registry.
type Options struct {
	Logger *slog.Logger
	// Max bounds the machines held (DefaultMax if <= 0).
	Max int
	// Names maps machines' MACs to their names (config machines:).
	Names map[bootapi.MAC]string
	// Now is the clock (time.Now if nil; tests move it).
	Now func() time.Time
	// Hooks are told of stage changes and payload bytes (metrics).
	Hooks Hooks
}

// Hooks let a part count what the registry sees (netboot/metrics) without
// the registry knowing what is done with it. They are called without the
// registry's lock held, from the goroutine that reported; each may be nil.
type Hooks struct {
	// Stage is called on every stage change, with the time spent in the
	// stage left ("" and 0 for a new machine). A lost verdict is a change
	// to bootapi.StageLost, counted when a Snapshot first sees it.
	Stage func(from, to string, in time.Duration)
	// Payload is called with the bytes a report adds to a machine's
	// totals: the difference from its previous report, or the whole
	// value when the counter went down (the client started over).
	Payload func(fromPeers, fromSeeder, fromWeb, uploaded int64)
}

// New returns an empty registry.
func New(o Options) *Registry {
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Max <= 0 {
		o.Max = DefaultMax
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	names := make(map[string]string, len(o.Names))
	for mac, name := range o.Names {
		names[mac.String()] = name
	}
	return &Registry{log: o.Logger, max: o.Max, now: o.Now, names: names, hooks: o.Hooks,
		byMAC: map[string]*machine{}, byIP: map[netip.Addr]string{}, perSource: map[netip.Addr]int{}}
}

// get returns the entry for mac, creating it (and evicting the machine
// seen least recently when full). Called with r.mu held.
func (r *Registry) get(mac string, now time.Time) *machine {
	if e, ok := r.byMAC[mac]; ok {
		return e
	}
	if len(r.byMAC) >= r.max {
		oldest := r.victim()
		if e := r.byMAC[oldest]; e != nil && e.ip.IsValid() && r.byIP[e.ip] == oldest {
			delete(r.byIP, e.ip)
		}
		if e := r.byMAC[oldest]; e != nil && e.source.IsValid() {
			r.unsource(e)
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

// setStage records a stage; it returns the previous stage and how long
// the machine was in it when it changed. A lost machine that is heard from
// again is no longer lost. Called with r.mu held.
func (r *Registry) setStage(e *machine, stage string, now time.Time) (prev string, in time.Duration, changed bool) {
	prev = e.m.Stage
	wasLost := e.lost
	e.lost = false
	if prev == stage {
		if wasLost {
			return bootapi.StageLost, now.Sub(e.m.StageSince), true
		}
		return prev, 0, false
	}
	if !e.m.StageSince.IsZero() {
		in = now.Sub(e.m.StageSince)
	}
	if wasLost {
		prev = bootapi.StageLost
	}
	e.m.StageSince = now
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
	return prev, in, true
}

// stageHook calls Hooks.Stage; called without r.mu.
func (r *Registry) stageHook(changed bool, from, to string, in time.Duration) {
	if changed && r.hooks.Stage != nil {
		r.hooks.Stage(from, to, in)
	}
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
	e := r.admit(mac, ip, witnessedStage(stage), now)
	if e == nil {
		r.mu.Unlock()
		return
	}
	r.setIP(e, ip)
	if arch != "" {
		e.m.Arch = arch
	}
	e.m.LastSeen = now
	prev, in, changed := r.setStage(e, stage, now)
	name, ipS, archS := e.m.Name, e.m.IP, e.m.Arch
	since := now.Sub(e.m.FirstSeen)
	r.mu.Unlock()
	r.stageHook(changed, prev, stage, in)
	if changed {
		args := []any{"mac", mac, "ip", ipS, "name", name, "arch", archS, "stage", stage, "from", prev, "since_first_seen", since.Round(time.Millisecond)}
		r.log.Info("machine stage", append(args, attrs...)...)
	}
}

// Touch records a machine's address and architecture without changing its
// stage (iPXE's DHCP, lease renewals): the server saw it on the wire.
func (r *Registry) Touch(mac string, ip netip.Addr, arch string) {
	if mac == "" {
		return
	}
	now := r.now()
	r.mu.Lock()
	defer r.mu.Unlock()
	e := r.admit(mac, ip, true, now)
	r.setIP(e, ip)
	if arch != "" {
		e.m.Arch = arch
	}
	e.m.LastSeen = now
	if e.m.Stage == "" {
		e.m.Stage = bootapi.StageDHCP
		e.m.Stages[bootapi.StageDHCP] = now
		e.m.StageSince = now
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
	e := r.admit(rep.MAC, ip, false, now)
	if e == nil {
		r.mu.Unlock()
		return
	}
	r.setIP(e, ip)
	e.m.LastSeen = now
	prev, in, changed := r.setStage(e, rep.Stage, now)
	m := &e.m
	dPeers, dSeeder, dWeb, dUp := grew(m.FromPeers, rep.FromPeers), grew(m.FromSeeder, rep.FromSeeder),
		grew(m.FromWeb, rep.FromWeb), grew(m.Uploaded, rep.Uploaded)
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
	r.stageHook(changed, prev, rep.Stage, in)
	if h := r.hooks.Payload; h != nil && dPeers+dSeeder+dWeb+dUp > 0 {
		h(dPeers, dSeeder, dWeb, dUp)
	}

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

// grew is how much a counter a client reports added since its previous
// report: the difference, or the whole new value when it went down (the
// client restarted and counts from zero again).
func grew(old, cur int64) int64 {
	if cur >= old {
		return cur - old
	}
	return cur
}

// Snapshot returns every machine, sorted by MAC, as copies, with the
// server's verdicts applied: a machine silent past its report deadline
// (lostAfter) is bootapi.StageLost, with LostFrom the stage it was in.
func (r *Registry) Snapshot() []bootapi.Machine {
	now := r.now()
	r.mu.Lock()
	every := r.reportEvery()
	out := make([]bootapi.Machine, 0, len(r.byMAC))
	var newlyLost []string
	var lostIn []time.Duration
	for _, e := range r.byMAC {
		m := e.m
		m.Stages = make(map[string]time.Time, len(e.m.Stages))
		for k, v := range e.m.Stages {
			m.Stages[k] = v
		}
		if reports(m.Stage) {
			iv := every[strings.ToLower(m.OS)]
			m.ReportMS = iv.Milliseconds()
			if now.Sub(m.LastSeen) > lostAfter(iv) {
				if !e.lost {
					e.lost = true
					newlyLost = append(newlyLost, m.Stage)
					lostIn = append(lostIn, now.Sub(m.StageSince))
					r.log.Warn("machine lost: no report for two report intervals", "mac", m.MAC, "ip", m.IP, "name", m.Name,
						"stage", m.Stage, "os", m.OS, "last_seen", now.Sub(m.LastSeen).Round(time.Second))
				}
				m.LostFrom, m.Stage = m.Stage, bootapi.StageLost
			}
		}
		out = append(out, m)
	}
	r.mu.Unlock()
	for i, from := range newlyLost {
		r.stageHook(true, from, bootapi.StageLost, lostIn[i])
	}
	sort.Slice(out, func(i, j int) bool { return out[i].MAC < out[j].MAC })
	return out
}

// reports says whether a client in stage reports on its own every
// report interval: only while it downloads or seeds (the other client
// stages send one report each; the first stages the server sees itself).
func reports(stage string) bool {
	return stage == bootapi.StageDownload || stage == bootapi.StageSeeding
}

// reportEvery is the report interval of each OS's class (lower-case
// name), as the swarm policy sets it for the machines fetching it. Called
// with r.mu held.
func (r *Registry) reportEvery() map[string]time.Duration {
	n := map[string]int{}
	for _, e := range r.byMAC {
		if reports(e.m.Stage) {
			n[strings.ToLower(e.m.OS)]++
		}
	}
	out := make(map[string]time.Duration, len(n))
	for os, k := range n {
		out[os] = swarm.ReportEvery(k)
	}
	return out
}

// ReportJitter is how much later than its interval a client may report:
// clients spread their reports over 0.75–1.25 intervals
// (initramfs/client), so a report is missed only past 1.25 intervals.
const ReportJitter = 1.25

// lostAfter is how long a reporting machine may stay silent before it is
// lost: two report intervals, each with the clients' jitter.
func lostAfter(every time.Duration) time.Duration {
	return time.Duration(2 * ReportJitter * float64(every))
}

// Len is the number of machines known.
func (r *Registry) Len() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.byMAC)
}

// Peers returns the BitTorrent addresses of machines that reported they
// are downloading or seeding os within swarm.PeerMaxAge, except the
// machine excludeMAC, as swarm.Peers chooses at most n of them for it.
func (r *Registry) Peers(os, excludeMAC string, n int) []netip.AddrPort {
	now := r.now()
	var cs []swarm.Member
	r.mu.Lock()
	for mac, e := range r.byMAC {
		if mac == excludeMAC || !strings.EqualFold(e.m.OS, os) || e.listenPort == 0 || !e.ip.IsValid() {
			continue
		}
		if !fetching(e, now) {
			continue
		}
		cs = append(cs, swarm.Member{MAC: mac, Addr: netip.AddrPortFrom(e.ip, uint16(e.listenPort))})
	}
	r.mu.Unlock()
	return swarm.Peers(excludeMAC, cs, n)
}

// fetching says whether a machine counts as fetching its OS at now: it
// reported downloading or seeding within swarm.PeerMaxAge.
func fetching(e *machine, now time.Time) bool {
	return (e.m.Stage == bootapi.StageDownload || e.m.Stage == bootapi.StageSeeding) && now.Sub(e.m.LastSeen) <= swarm.PeerMaxAge
}

// Share returns which share of os's pieces the machine mac should fetch
// from the seeder (bootapi.Peers), as swarm.Share ranks it among the
// machines fetching os. A machine not yet among them counts as starting
// now.
func (r *Registry) Share(os, mac string) (index, count int) {
	now := r.now()
	var cs []swarm.Fetcher
	self := swarm.Fetcher{MAC: mac, Since: now}
	r.mu.Lock()
	for m, e := range r.byMAC {
		if !strings.EqualFold(e.m.OS, os) {
			continue
		}
		if m == mac {
			if e.m.Stage == bootapi.StageDownload || e.m.Stage == bootapi.StageSeeding {
				self.Since = fetchingSince(e)
			}
			continue
		}
		if fetching(e, now) {
			cs = append(cs, swarm.Fetcher{MAC: m, Since: fetchingSince(e)})
		}
	}
	r.mu.Unlock()
	return swarm.Share(mac, append(cs, self))
}

// fetchingSince is when a machine started downloading (or, if it never
// reported downloading, seeding) its OS.
func fetchingSince(e *machine) time.Time {
	if t, ok := e.m.Stages[bootapi.StageDownload]; ok {
		return t
	}
	return e.m.Stages[bootapi.StageSeeding]
}

// RecentlyBooting says whether mac is at an early boot stage (DHCP, TFTP,
// boot script) and was seen within d.
func (r *Registry) RecentlyBooting(mac string, d time.Duration) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	e, ok := r.byMAC[mac]
	if !ok || r.now().Sub(e.m.LastSeen) > d {
		return false
	}
	switch e.m.Stage {
	case bootapi.StageDHCP, bootapi.StageTFTP, bootapi.StageIPXE:
		return true
	}
	return false
}
