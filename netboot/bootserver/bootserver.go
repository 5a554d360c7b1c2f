// Package bootserver is the server side of the boot API (initramfs/bootapi)
// that boot clients talk to: the boot settings and menu (PathBoot), the
// peers and share for a download (PathPeers), the clients' reports
// (PathReport) and the list of machines (PathMachines). It records what it
// hears in the machine registry and asks the swarm policy (seeder/swarm)
// what to hand out; it must not decide peers or shares itself, nor know
// DHCP, TFTP or the project's configuration file.
package bootserver

import (
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"net/http"
	"net/netip"
	"slices"
	"time"

	"github.com/boottorrent/boottorrent/initramfs/bootapi"
	"github.com/boottorrent/boottorrent/initramfs/logging"
	"github.com/boottorrent/boottorrent/netboot/registry"
	"github.com/boottorrent/boottorrent/seeder/swarm"
)

// maxCatalogPeers bounds how many of the tracker's peers PeersFor reads to
// choose from.
const maxCatalogPeers = 4096

// Catalog is what the seeder offers (the seeder implements it).
type Catalog interface {
	// OSes are the menu entries with their info hashes.
	OSes() []bootapi.OS
	// Peers lists up to n peers for os, the seeder first, then tracker
	// peers, without exclude.
	Peers(os string, exclude netip.Addr, n int) []netip.AddrPort
}

// Machine is a machine the administrator named (config machines:).
type Machine struct {
	Name string
	OS   string // booted without the menu when set
}

// Options configure a Server.
type Options struct {
	Registry *registry.Registry
	Catalog  Catalog
	Logger   *slog.Logger
	// Limiter rate-limits the warnings bad requests cause (shared with
	// the rest of the appliance); nil makes one.
	Limiter *logging.Limiter

	DefaultOS string
	// Timeout is the menu's countdown; negative waits forever.
	Timeout  time.Duration
	SeedTime time.Duration
	Trackers []string
	// Menu lists the OSes shown, in order (empty: the catalog's all).
	Menu     []string
	Machines map[bootapi.MAC]Machine
}

// Server answers the boot API.
type Server struct {
	o     Options
	log   *slog.Logger
	reg   *registry.Registry
	limit *logging.Limiter
}

// New returns a Server; o.Registry is required.
func New(o Options) (*Server, error) {
	if o.Registry == nil {
		return nil, errors.New("no machine registry")
	}
	s := &Server{o: o, log: logging.OrDiscard(o.Logger), reg: o.Registry, limit: o.Limiter}
	if s.limit == nil {
		s.limit = logging.NewLimiter(5 * time.Second)
	}
	return s, nil
}

// Register adds the boot API's routes through handle; every answer is
// short and a booting machine waits for it, so all are control traffic.
func (s *Server) Register(handle func(pattern string, h http.Handler, control bool)) {
	handle("GET "+bootapi.PathBoot, http.HandlerFunc(s.serveBoot), true)
	handle("GET "+bootapi.PathPeers, http.HandlerFunc(s.servePeers), true)
	handle("POST "+bootapi.PathReport, http.HandlerFunc(s.serveReport), true)
	handle("GET "+bootapi.PathMachines, http.HandlerFunc(s.serveMachines), true)
}

// RemoteIP is the client's address; the boot network has no proxies, so
// forwarded headers are not trusted.
func RemoteIP(r *http.Request) netip.Addr {
	ap, err := netip.ParseAddrPort(r.RemoteAddr)
	if err != nil {
		return netip.Addr{}
	}
	return ap.Addr().Unmap()
}

// WriteJSON writes v as an uncached, indented JSON answer.
func WriteJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(v)
}

// requireMAC reads the mac query; a missing or malformed one is a 400.
func requireMAC(w http.ResponseWriter, r *http.Request) (string, bool) {
	mac, err := bootapi.MACFromQuery(r.URL.RawQuery)
	if err == nil && mac == "" {
		err = errors.New("mac query parameter missing")
	}
	if err != nil {
		http.Error(w, "bad request: "+err.Error(), http.StatusBadRequest)
		return "", false
	}
	return mac, true
}

// BootFor is the boot API's answer for one machine (GET PathBoot).
func (s *Server) BootFor(mac string) bootapi.Boot {
	b := bootapi.Boot{
		MAC:       mac,
		DefaultOS: s.o.DefaultOS,
		TimeoutMS: s.o.Timeout.Milliseconds(),
		SeedMS:    s.o.SeedTime.Milliseconds(),
		ReportMS:  swarm.ReportInterval.Milliseconds(),
		Trackers:  slices.Clone(s.o.Trackers),
		Menu:      []bootapi.OS{},
	}
	if s.o.Timeout < 0 {
		b.TimeoutMS = -1
	}
	if hw, err := bootapi.ParseMAC(mac); err == nil {
		if m, ok := s.o.Machines[hw]; ok {
			b.Machine, b.PinnedOS = m.Name, m.OS
		}
	}
	b.Menu = s.menu()
	return b
}

// menu is the catalog's OSes in Options.Menu order; an OS that is not in
// the menu is not shown (boot.menu lists every OS by default).
func (s *Server) menu() []bootapi.OS {
	var all []bootapi.OS
	if s.o.Catalog != nil {
		all = s.o.Catalog.OSes()
	}
	if len(s.o.Menu) == 0 {
		return all
	}
	out := make([]bootapi.OS, 0, len(s.o.Menu))
	for _, name := range s.o.Menu {
		for _, o := range all {
			if o.Name == name {
				out = append(out, o)
				break
			}
		}
	}
	return out
}

func (s *Server) serveBoot(w http.ResponseWriter, r *http.Request) {
	mac, ok := requireMAC(w, r)
	if !ok {
		return
	}
	b := s.BootFor(mac)
	WriteJSON(w, b)
	// The client asks from the address its own lease gave it.
	s.reg.Asked(mac, RemoteIP(r))
	s.log.Debug("boot settings sent", "mac", mac, "remote", RemoteIP(r), "menu", len(b.Menu), "pinned_os", b.PinnedOS)
}

// PeersFor lists the BitTorrent peers a machine at ip (mac) should dial for
// os (swarm.PeerList): the catalog's first (the seeder), then the machines
// the registry knows are downloading or seeding it (swarm.Peers' choice
// for this machine), then other peers the tracker knows. The answer stays
// the same while the same machines boot: a client asks again soon
// whenever its answer changes.
func (s *Server) PeersFor(osName, mac string, ip netip.Addr) []string {
	var first, others []netip.AddrPort
	if s.o.Catalog != nil {
		cat := s.o.Catalog.Peers(osName, ip, maxCatalogPeers)
		if len(cat) > 0 {
			first, others = cat[:1], cat[1:]
		}
	}
	// The machines' part leaves room for the seeder, so that every
	// machine the registry lists is in the answer (its lists are
	// symmetric only whole, see swarm.Peers).
	return swarm.PeerList(mac, ip, first, s.reg.Peers(osName, mac, swarm.MaxPeers-len(first)), others)
}

func (s *Server) servePeers(w http.ResponseWriter, r *http.Request) {
	mac, ok := requireMAC(w, r)
	if !ok {
		return
	}
	osName := r.URL.Query().Get("os")
	if osName == "" || len(osName) > 64 {
		http.Error(w, "bad request: os query parameter missing or too long", http.StatusBadRequest)
		return
	}
	known := false
	for _, o := range s.menu() {
		if o.Name == osName {
			known = true
		}
	}
	if !known {
		http.Error(w, "unknown os", http.StatusNotFound)
		return
	}
	idx, n := s.reg.Share(osName, mac)
	body, err := json.Marshal(bootapi.Peers{Peers: s.PeersFor(osName, mac, RemoteIP(r)), ShareIndex: idx, ShareCount: n,
		ShareOwners: swarm.Owners(n), ReportMS: swarm.ReportEvery(n).Milliseconds()})
	if err != nil {
		http.Error(w, "encoding the answer: "+err.Error(), http.StatusInternalServerError)
		return
	}
	// Each machine asks every few seconds for as long as it downloads,
	// over the uplink the seeder fills, and mostly gets the answer it
	// had: it sends that answer's ETag, and an unchanged answer is a 304
	// without a body.
	h := fnv.New64a()
	h.Write(body)
	etag := fmt.Sprintf(`"%016x"`, h.Sum64())
	w.Header().Set("ETag", etag)
	w.Header().Set("Cache-Control", "no-cache")
	if r.Header.Get("If-None-Match") == etag {
		w.WriteHeader(http.StatusNotModified)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Write(body)
}

func (s *Server) serveReport(w http.ResponseWriter, r *http.Request) {
	ip := RemoteIP(r)
	body := http.MaxBytesReader(w, r.Body, bootapi.MaxReportBytes)
	rep, err := bootapi.DecodeReport(body)
	if err == nil {
		// One spelling per machine in the registry: 52-54-00-… and
		// 52:54:00:… are the same NIC; 20-byte InfiniBand addresses are
		// not machines we boot.
		var m bootapi.MAC
		m, err = bootapi.ParseMAC(rep.MAC)
		rep.MAC = m.String()
	}
	if err != nil {
		s.limit.Warn(s.log, "bad report", "bad client report", "remote", ip, "err", bootapi.Truncate(err.Error(), 200))
		http.Error(w, fmt.Sprintf("bad report: %s", bootapi.Truncate(err.Error(), 200)), http.StatusBadRequest)
		return
	}
	s.reg.Report(ip, rep)
	w.WriteHeader(http.StatusNoContent)
}

func (s *Server) serveMachines(w http.ResponseWriter, r *http.Request) {
	WriteJSON(w, s.reg.Snapshot())
}
