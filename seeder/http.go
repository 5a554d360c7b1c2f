package seeder

import (
	"encoding/hex"
	"encoding/json"
	"net/http"
	"strings"
	"time"

	"github.com/anacrolix/torrent/metainfo"

	"github.com/boottorrent/boottorrent/initramfs/bootapi"
	"github.com/boottorrent/boottorrent/seeder/webseed"
)

// Register adds the seeder's routes through handle: the .torrent files,
// the OS index and the tracker are short answers a booting machine waits
// for (control traffic); the web seed is bulk data.
func (s *Seeder) Register(handle func(pattern string, h http.Handler, control bool)) {
	handle("GET "+bootapi.PathTorrents+"{file}", http.HandlerFunc(s.serveTorrent), true)
	handle("GET "+bootapi.PathOSList, http.HandlerFunc(s.serveOSList), true)
	handle("GET "+bootapi.PathManifests, http.HandlerFunc(s.serveManifest), true)
	if !s.opts.NoWebSeed {
		handle("GET "+bootapi.PathWebSeed, s.web, false)
	}
	handle("GET "+bootapi.PathAnnounce, s.tracker.AnnounceHandler(), true)
	handle("GET "+bootapi.PathScrape, s.tracker.ScrapeHandler(), true)
}

// Handler serves Register's routes alone (tests; the appliance mounts
// them on its one HTTP surface).
func (s *Seeder) Handler() http.Handler { return s.mux }

// serveTorrent serves /torrents/<name>.torrent.
func (s *Seeder) serveTorrent(w http.ResponseWriter, r *http.Request) {
	name, ok := strings.CutSuffix(strings.TrimPrefix(r.URL.Path, bootapi.PathTorrents), ".torrent")
	s.mu.Lock()
	st := s.byName[name]
	var body []byte
	var ih metainfo.Hash
	var failed error
	ready := false
	if st != nil {
		body, ih, ready, failed = st.torrent, st.infoHash, st.ready, st.failed
	}
	s.mu.Unlock()
	switch {
	case !ok || st == nil || failed != nil:
		http.NotFound(w, r)
		return
	case !ready:
		w.Header().Set("Retry-After", "5")
		http.Error(w, "OS "+name+" is still being hashed", http.StatusServiceUnavailable)
		return
	}
	if s.watch.ctx != nil {
		if p := s.checkOS(s.watch.ctx, st); p != "" {
			w.Header().Set("Retry-After", "5")
			http.Error(w, "OS "+name+" is not served: "+p, http.StatusServiceUnavailable)
			return
		}
	}
	w.Header().Set("Content-Type", "application/x-bittorrent")
	w.Header().Set("ETag", `"`+ih.HexString()+`"`)
	w.Header().Set("Content-Disposition", `attachment; filename="`+name+`.torrent"`)
	webseed.ServeContent(w, r, "", time.Time{}, strings.NewReader(string(body)), int64(len(body)), 0)
}

// serveOSList serves the JSON index of OSes.
func (s *Seeder) serveOSList(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path != bootapi.PathOSList {
		http.NotFound(w, r)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-cache")
	json.NewEncoder(w).Encode(s.OSes())
}

// OSes returns the OSes for the boot menu, in the project's order. An OS
// still being hashed has an empty InfoHash; an OS that failed (corrupted)
// is left out.
func (s *Seeder) OSes() []bootapi.OS {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]bootapi.OS, 0, len(s.oses))
	for _, st := range s.oses {
		if st.failed != nil {
			continue
		}
		o := st.os
		b := bootapi.OS{Name: o.Name, DispName: o.DispName, Method: string(o.Method), Size: o.Size,
			Torrent: bootapi.PathTorrents + o.Name + ".torrent", Kernel: o.Kernel, Initrd: o.Initrd, Cmdline: o.Cmdline,
			Bin: o.Bin, BinArgs: o.BinArgs, Args: o.Args, Files: o.Files, InitrdFiles: bootapi.InitrdFilesOf(o.InitrdFiles)}
		if st.integrity != nil {
			b.Problem = st.integrity.problem
		}
		if st.ready && b.Problem == "" {
			b.InfoHash, b.Magnet = st.infoHash.HexString(), st.magnet
			if st.signed != nil {
				b.Manifest = bootapi.PathManifests + o.Name + ".json"
			}
		}
		out = append(out, b)
	}
	return out
}

// InfoHash returns the hex info hash of a ready OS.
func (s *Seeder) InfoHash(osName string) (string, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.byName[osName]
	if st == nil || !st.ready {
		return "", false
	}
	return hex.EncodeToString(st.infoHash[:]), true
}
