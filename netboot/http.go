package netboot

import (
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/boottorrent/boottorrent/netboot/bootapi"
)

// Limits on what the boot API answers and accepts.
const (
	// MaxPeers is the most peers one PathPeers answer lists: the seeder
	// and 19 machines. Twenty peers keep the pieces varied; more only
	// multiply the HAVE messages each machine receives, and with them
	// the request updates (at N = 100 on this benchmark's 2 cores, 50
	// peers took 5.7–5.9× T* and 20 peers 3.5–3.8×; cmd/swarmbench/TUNING.md).
	MaxPeers = 20
	// maxCatalogPeers bounds how many of the tracker's peers PeersFor
	// reads to choose from.
	maxCatalogPeers = 4096
	// maxRanges bounds the ranges of one Range request: net/http answers
	// thousands of one-byte ranges with a multipart body larger than the
	// file. Beyond it the whole file is sent.
	maxRanges = 8
	// ReportInterval is how often clients are asked to report, and
	// MaxReportInterval how rarely in a large class: PathPeers answers
	// stretch it by one ReportInterval per reportMachines machines
	// fetching the OS (reportEvery), so the server's uplink, which the
	// seeder's bulk data fills, answers about reportMachines/2 reports a
	// second however many machines boot. Registry.Peers still hears from
	// every machine three times within PeerMaxAge.
	ReportInterval    = 2 * time.Second
	MaxReportInterval = 10 * time.Second
	reportMachines    = 20
)

// reportEvery is the report interval for a class of n machines fetching
// one OS.
func reportEvery(n int) time.Duration {
	k := max(1, (n+reportMachines-1)/reportMachines)
	return min(time.Duration(k)*ReportInterval, MaxReportInterval)
}

// Handler serves the boot script, the client's kernel and initramfs and
// the boot API on the one HTTP listener (the lead mounts it next to the
// seeder's handler).
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET "+bootapi.PathBootScript, s.serveBootScript)
	mux.HandleFunc("GET "+bootapi.PathClientKernel, func(w http.ResponseWriter, r *http.Request) {
		s.serveClientFile(w, r, "kernel", s.opts.ClientKernel)
	})
	mux.HandleFunc("GET "+bootapi.PathClientInitramfs, func(w http.ResponseWriter, r *http.Request) {
		s.serveClientFile(w, r, "initramfs", s.opts.ClientInitramfs)
	})
	mux.HandleFunc("GET "+bootapi.PathBoot, s.serveBoot)
	mux.HandleFunc("GET "+bootapi.PathPeers, s.servePeers)
	mux.HandleFunc("POST "+bootapi.PathReport, s.serveReport)
	mux.HandleFunc("GET "+bootapi.PathMachines, s.serveMachines)
	return mux
}

// remoteIP is the client's address; the boot network has no proxies, so
// forwarded headers are not trusted.
func remoteIP(r *http.Request) netip.Addr {
	ap, err := netip.ParseAddrPort(r.RemoteAddr)
	if err != nil {
		return netip.Addr{}
	}
	return ap.Addr().Unmap()
}

func (s *Server) serveBootScript(w http.ResponseWriter, r *http.Request) {
	ip := remoteIP(r)
	mac, err := MACFromQuery(r.URL.RawQuery)
	if err != nil {
		// Serve the script anyway: iPXE fills in the MAC itself, and a
		// machine that boots is better than one stranded by a bad URL.
		s.limit.warn(s.log, "bad mac", "boot script: ignoring bad mac query", "remote", ip, "err", err)
		mac = ""
	}
	if mac == "" {
		mac = s.macFor(ip)
	}
	script := BootScript(ScriptOptions{Base: s.base, MAC: mac, Cmdline: s.cfg.Client.Cmdline})
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	io.WriteString(w, script)
	if mac != "" {
		s.reg.Observe(mac, ip, "", bootapi.StageIPXE, "file", bootapi.PathBootScript)
	} else {
		s.log.Info("boot script sent", "remote", ip, "mac", "unknown")
	}
}

// countingWriter counts the body bytes written.
type countingWriter struct {
	http.ResponseWriter
	n      int64
	status int
}

func (c *countingWriter) WriteHeader(code int) {
	c.status = code
	c.ResponseWriter.WriteHeader(code)
}

func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.ResponseWriter.Write(p)
	c.n += int64(n)
	return n, err
}

// Unwrap lets http.ResponseController reach the real writer.
func (c *countingWriter) Unwrap() http.ResponseWriter { return c.ResponseWriter }

// serveClientFile serves one of the two client files. The path is fixed by
// the server's options; nothing from the request names a file.
func (s *Server) serveClientFile(w http.ResponseWriter, r *http.Request, what, path string) {
	start := time.Now()
	ip := remoteIP(r)
	mac := s.macFor(ip)
	if path == "" {
		s.log.Error("client file requested but not configured", "file", what, "remote", ip, "mac", mac)
		http.Error(w, "boot client not available", http.StatusServiceUnavailable)
		return
	}
	f, err := os.Open(path)
	if err != nil {
		s.log.Error("client file unavailable", "file", what, "remote", ip, "mac", mac, "err", err)
		http.Error(w, "boot client not available", http.StatusServiceUnavailable)
		return
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil || !fi.Mode().IsRegular() {
		s.log.Error("client file unavailable", "file", what, "remote", ip, "mac", mac, "err", err)
		http.Error(w, "boot client not available", http.StatusServiceUnavailable)
		return
	}
	if rg := r.Header.Get("Range"); rg != "" && strings.Count(rg, ",") >= maxRanges {
		r.Header.Del("Range")
	}
	cw := &countingWriter{ResponseWriter: w, status: http.StatusOK}
	http.ServeContent(cw, r, "", fi.ModTime(), f)
	d := time.Since(start)
	attrs := []any{"remote", ip, "mac", mac, "file", what, "status", cw.status, "bytes", cw.n, "size", fi.Size(),
		"duration", d.Round(time.Millisecond)}
	if cw.status >= 400 {
		s.log.Warn("client file request failed", attrs...)
		return
	}
	if what == "initramfs" && mac != "" && cw.n == fi.Size() {
		s.reg.Observe(mac, ip, "", bootapi.StageClient, attrs[4:]...)
	}
	s.log.Info("client file sent", attrs...)
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(v)
}

// requireMAC reads the mac query; a missing or malformed one is a 400.
func requireMAC(w http.ResponseWriter, r *http.Request) (string, bool) {
	mac, err := MACFromQuery(r.URL.RawQuery)
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
	c := s.cfg
	b := bootapi.Boot{
		MAC:       mac,
		DefaultOS: c.Boot.DefaultOS,
		TimeoutMS: c.Boot.Timeout.Milliseconds(),
		SeedMS:    c.Boot.SeedTime.Milliseconds(),
		ReportMS:  ReportInterval.Milliseconds(),
		Trackers:  slices.Clone(c.Torrent.Trackers),
		Menu:      []bootapi.OS{},
	}
	if c.Boot.Timeout.Duration < 0 {
		b.TimeoutMS = -1
	}
	if hw, err := net.ParseMAC(mac); err == nil {
		if m, ok := c.MachineFor(hw); ok {
			b.Machine, b.PinnedOS = m.Name, m.OS
		}
	}
	b.Menu = s.menu()
	return b
}

// menu is the catalog's OSes in config boot.menu order; an OS that is not
// in boot.menu is not shown (boot.menu lists every OS by default). A
// missing catalog falls back to the project's OSes, without info hashes.
func (s *Server) menu() []bootapi.OS {
	var all []bootapi.OS
	if s.opts.Catalog != nil {
		all = s.opts.Catalog.OSes()
	} else if s.opts.Project != nil {
		for _, o := range s.opts.Project.OSes {
			all = append(all, bootapi.OS{Name: o.Name, DispName: o.DispName, Method: string(o.Method), Size: o.Size,
				Kernel: o.Kernel, Initrd: o.Initrd, Cmdline: o.Cmdline, Bin: o.Bin, BinArgs: o.BinArgs, Args: o.Args,
				Files: o.Files, InitrdFiles: bootapi.InitrdFilesOf(o.InitrdFiles), Torrent: bootapi.PathTorrents + o.Name + ".torrent"})
		}
	}
	menu := s.cfg.Boot.Menu
	if len(menu) == 0 {
		return all
	}
	out := make([]bootapi.OS, 0, len(menu))
	for _, name := range menu {
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
	writeJSON(w, b)
	// The client asks from the address its own lease gave it.
	s.reg.Touch(mac, remoteIP(r), "")
	s.log.Debug("boot settings sent", "mac", mac, "remote", remoteIP(r), "menu", len(b.Menu), "pinned_os", b.PinnedOS)
}

// PeersFor lists the BitTorrent peers a machine at ip (mac) should dial for
// os: the catalog's first (the seeder), then the machines the registry
// knows are downloading or seeding it (its stable subset for this
// machine), then other peers the tracker knows (BitTorrent clients that
// are not boot clients) in an order fixed per machine; without the asker
// and without duplicates, at most MaxPeers. The answer stays the same
// while the same machines boot: the tracker hands out peers in random
// order, and a client asks again soon whenever its answer changes.
func (s *Server) PeersFor(osName, mac string, ip netip.Addr) []string {
	var first, others []netip.AddrPort
	if s.opts.Catalog != nil {
		cat := s.opts.Catalog.Peers(osName, ip, maxCatalogPeers)
		if len(cat) > 0 {
			first, others = cat[:1], cat[1:]
		}
	}
	others = slices.Clone(others) // the catalog's slice is not ours to reorder
	sortByRank(mac, others)
	// The machines' share leaves room for the seeder, so that every
	// machine the registry lists is in the answer (its lists are
	// symmetric only whole, see Registry.Peers).
	all := slices.Concat(first, s.reg.Peers(osName, mac, MaxPeers-len(first)), others)
	seen := map[netip.AddrPort]bool{}
	out := []string{}
	for _, ap := range all {
		ap = netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
		if !ap.IsValid() || ap.Port() == 0 || seen[ap] || (ip.IsValid() && ap.Addr() == ip) {
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
	body, err := json.Marshal(bootapi.Peers{Peers: s.PeersFor(osName, mac, remoteIP(r)), ShareIndex: idx, ShareCount: n,
		ReportMS: reportEvery(n).Milliseconds()})
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
	ip := remoteIP(r)
	body := http.MaxBytesReader(w, r.Body, bootapi.MaxReportBytes)
	rep, err := bootapi.DecodeReport(body)
	if err == nil {
		// One spelling per machine in the registry: 52-54-00-… and
		// 52:54:00:… are the same NIC; 20-byte InfiniBand addresses are
		// not machines we boot.
		rep.MAC, err = ParseMAC(rep.MAC)
	}
	if err != nil {
		s.limit.warn(s.log, "bad report", "bad client report", "remote", ip, "err", truncate(err.Error(), 200))
		http.Error(w, fmt.Sprintf("bad report: %s", truncate(err.Error(), 200)), http.StatusBadRequest)
		return
	}
	s.reg.Report(ip, rep)
	w.WriteHeader(http.StatusNoContent)
}

func (s *Server) serveMachines(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, s.reg.Snapshot())
}

// newLogger returns l or a logger that discards.
func newLogger(l *slog.Logger) *slog.Logger {
	if l == nil {
		return slog.New(slog.DiscardHandler)
	}
	return l
}
