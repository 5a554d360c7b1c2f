package netboot

import (
	"io"
	"net/http"
	"net/netip"
	"os"
	"time"

	"github.com/boottorrent/boottorrent/initramfs/bootapi"
	"github.com/boottorrent/boottorrent/netboot/bootserver"
	"github.com/boottorrent/boottorrent/seeder/webseed"
)

// Register adds the server's routes through handle (the boot script and
// the client's files), then the boot API's (bootserver). The boot script
// is a few hundred bytes a machine waits for: control traffic; the
// client's files are bulk.
func (s *Server) Register(handle func(pattern string, h http.Handler, control bool)) {
	handle("GET "+bootapi.PathBootScript, http.HandlerFunc(s.serveBootScript), true)
	handle("GET "+bootapi.PathClientKernel, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.serveClientFile(w, r, "kernel", s.opts.ClientKernel)
	}), false)
	handle("GET "+bootapi.PathClientInitramfs, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.serveClientFile(w, r, "initramfs", s.opts.ClientInitramfs)
	}), false)
	s.api.Register(handle)
}

// Handler serves Register's routes alone (tests; the appliance mounts
// them on its one Surface with the seeder's).
func (s *Server) Handler() http.Handler {
	m := NewSurface()
	s.Register(m.Handle)
	return m
}

func remoteIP(r *http.Request) netip.Addr { return bootserver.RemoteIP(r) }

func (s *Server) serveBootScript(w http.ResponseWriter, r *http.Request) {
	ip := remoteIP(r)
	mac, err := bootapi.MACFromQuery(r.URL.RawQuery)
	if err != nil {
		// Serve the script anyway: iPXE fills in the MAC itself, and a
		// machine that boots is better than one stranded by a bad URL.
		s.limit.Warn(s.log, "bad mac", "boot script: ignoring bad mac query", "remote", ip, "err", err)
		mac = ""
	}
	if mac == "" {
		mac = s.macFor(ip)
	}
	script := BootScript(ScriptOptions{Base: s.base, MAC: mac, Cmdline: s.opts.Cmdline})
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
	cw := &countingWriter{ResponseWriter: w, status: http.StatusOK}
	webseed.ServeContent(cw, r, "", fi.ModTime(), f, fi.Size(), 0)
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
