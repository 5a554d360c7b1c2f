// Package webseed serves the OS folders over HTTP as a BEP 19 web seed:
// GET /oss/<name>/<file> with Range, for the files an OS's torrent lists
// and nothing else.
//
// BEP 19 puts the torrent's name and the file's path after the url-list
// URL of a multi-file torrent, so url-list http://SERVER:PORT/oss/ and the
// torrent name <name> give exactly these paths.
package webseed

import (
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net/http"
	"net/netip"
	"os"
	"path"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Config holds the web seed's limits; zero fields take defaults.
type Config struct {
	// Prefix is the URL path the folders are served under ("/oss/").
	Prefix string
	// MaxRanges caps the ranges of one request: Go's http.ServeContent
	// would answer 10,000 one-byte ranges with a multipart body larger
	// than the file. BitTorrent web seed clients ask for one range.
	MaxRanges int
	// MaxConcurrent caps the transfers running at once; more get 503 and
	// Retry-After, and BitTorrent clients fetch those pieces elsewhere.
	MaxConcurrent int
	// IdleTimeout ends a transfer whose client has not taken any data
	// for this long (not a total timeout: a large image may take minutes).
	IdleTimeout time.Duration
	Logger      *slog.Logger
	// Check, if set, is asked about every opened file before a byte of
	// it is sent (the seeder: is it still as it was verified?); an error
	// is a 503 that names it.
	Check func(name, file string, fi os.FileInfo) error
}

func (c *Config) fill() {
	if c.Prefix == "" {
		c.Prefix = "/oss/"
	}
	if c.MaxRanges <= 0 {
		c.MaxRanges = DefaultMaxRanges
	}
	if c.MaxConcurrent <= 0 {
		c.MaxConcurrent = 64
	}
	if c.IdleTimeout <= 0 {
		c.IdleTimeout = 30 * time.Second
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
}

type folder struct {
	root  *os.Root
	files map[string]bool
}

// Server is the web seed. Folders are added as their torrents become
// ready, so a client never gets data for an OS that is not verified.
type Server struct {
	cfg Config
	sem chan struct{}

	mu      sync.RWMutex
	folders map[string]*folder

	bytes    atomic.Int64
	requests atomic.Int64
}

// New returns a web seed with no folders.
func New(cfg Config) *Server {
	cfg.fill()
	return &Server{cfg: cfg, sem: make(chan struct{}, cfg.MaxConcurrent), folders: map[string]*folder{}}
}

// Add serves dir as /<prefix>/<name>/, limited to files (relative slash
// paths). The folder is opened with os.OpenRoot, so neither a request nor a
// symlink placed in it later can reach outside.
func (s *Server) Add(name, dir string, files []string) error {
	root, err := os.OpenRoot(dir)
	if err != nil {
		return fmt.Errorf("web seed: %w", err)
	}
	f := &folder{root: root, files: map[string]bool{}}
	for _, p := range files {
		f.files[path.Clean(p)] = true
	}
	s.mu.Lock()
	old := s.folders[name]
	s.folders[name] = f
	s.mu.Unlock()
	if old != nil {
		old.root.Close()
	}
	return nil
}

// Remove stops serving a folder.
func (s *Server) Remove(name string) {
	s.mu.Lock()
	f := s.folders[name]
	delete(s.folders, name)
	s.mu.Unlock()
	if f != nil {
		f.root.Close()
	}
}

// Close stops serving every folder.
func (s *Server) Close() error {
	s.mu.Lock()
	fs := s.folders
	s.folders = map[string]*folder{}
	s.mu.Unlock()
	for _, f := range fs {
		f.root.Close()
	}
	return nil
}

// BytesServed is the number of body bytes sent so far.
func (s *Server) BytesServed() int64 { return s.bytes.Load() }

// Requests is the number of file requests answered so far.
func (s *Server) Requests() int64 { return s.requests.Load() }

// ServeHTTP serves one file request.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	src := r.RemoteAddr
	if ap, err := netip.ParseAddrPort(r.RemoteAddr); err == nil {
		src = ap.Addr().Unmap().String()
	}
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(w, "use GET", http.StatusMethodNotAllowed)
		return
	}
	rest, ok := strings.CutPrefix(r.URL.Path, s.cfg.Prefix)
	if !ok {
		http.NotFound(w, r)
		return
	}
	name, file, ok := strings.Cut(rest, "/")
	s.mu.RLock()
	f := s.folders[name]
	s.mu.RUnlock()
	if !ok || f == nil || !fs.ValidPath(file) || !f.files[file] {
		http.NotFound(w, r)
		return
	}
	select {
	case s.sem <- struct{}{}:
		defer func() { <-s.sem }()
	default:
		s.cfg.Logger.Warn("web seed: busy, refusing", "src", src, "os", name, "file", file, "limit", s.cfg.MaxConcurrent)
		w.Header().Set("Retry-After", "2")
		http.Error(w, "busy", http.StatusServiceUnavailable)
		return
	}
	fh, err := f.root.Open(file)
	if err != nil {
		// Missing since the OS was hashed, or a symlink leading out of
		// the folder: the administrator learns which, the client only
		// that it is not here.
		s.cfg.Logger.Warn("web seed: cannot open listed file", "src", src, "os", name, "file", file, "err", err)
		http.NotFound(w, r)
		return
	}
	defer fh.Close()
	fi, err := fh.Stat()
	if err != nil || !fi.Mode().IsRegular() {
		http.NotFound(w, r)
		return
	}
	if s.cfg.Check != nil {
		if err := s.cfg.Check(name, file, fi); err != nil {
			w.Header().Set("Retry-After", "5")
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
			return
		}
	}
	w.Header().Set("ETag", ETag(fi))
	w.Header().Set("Cache-Control", "no-cache")
	iw := &idleWriter{ResponseWriter: w, rc: http.NewResponseController(w), idle: s.cfg.IdleTimeout}
	if err := ServeContent(iw, r, path.Base(file), fi.ModTime(), fh, fi.Size(), s.cfg.MaxRanges); err != nil {
		s.cfg.Logger.Info("web seed: refused range", "src", src, "os", name, "file", file, "err", err)
		return
	}
	s.requests.Add(1)
	s.bytes.Add(iw.n)
	s.cfg.Logger.Debug("web seed: served", "src", src, "os", name, "file", file, "range", r.Header.Get("Range"),
		"bytes", iw.n, "duration", time.Since(start))
}

// ETag is a validator for a file made of its size and modification time,
// so it changes whenever the content can have changed.
func ETag(fi os.FileInfo) string {
	return `"` + strconv.FormatInt(fi.Size(), 16) + "-" + strconv.FormatInt(fi.ModTime().UnixNano(), 16) + `"`
}

// idleWriter extends the connection's write deadline while data flows, so
// a stalled client is dropped after the idle timeout but a slow large
// download is not cut.
type idleWriter struct {
	http.ResponseWriter
	rc       *http.ResponseController
	idle     time.Duration
	extended time.Time
	n        int64
}

func (w *idleWriter) Write(b []byte) (int, error) {
	if now := time.Now(); now.Sub(w.extended) > w.idle/4 {
		w.extended = now
		w.rc.SetWriteDeadline(now.Add(w.idle))
	}
	n, err := w.ResponseWriter.Write(b)
	w.n += int64(n)
	return n, err
}

func (w *idleWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// Range is one byte range, [Start, Start+Length).
type Range struct {
	Start, Length int64
}

// Range parsing errors.
var (
	ErrRangeSyntax      = errors.New("malformed Range header")
	ErrUnsatisfiable    = errors.New("range not satisfiable")
	ErrTooManyRanges    = errors.New("too many ranges")
	errRangeUnitUnknown = fmt.Errorf("%w: unit is not bytes", ErrRangeSyntax)
)

// ParseRange parses an HTTP Range header (RFC 9110 section 14.1.2) for a
// representation of size bytes, allowing at most max ranges. Ranges that
// start beyond the end are dropped; if none is left the error is
// ErrUnsatisfiable.
func ParseRange(h string, size int64, max int) ([]Range, error) {
	spec, ok := strings.CutPrefix(h, "bytes=")
	if !ok {
		return nil, errRangeUnitUnknown
	}
	if strings.Count(spec, ",")+1 > max {
		return nil, fmt.Errorf("%w: more than %d", ErrTooManyRanges, max)
	}
	var out []Range
	for part := range strings.SplitSeq(spec, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue // RFC 9110 allows empty list elements
		}
		first, last, ok := strings.Cut(part, "-")
		if !ok {
			return nil, fmt.Errorf("%w: %q has no '-'", ErrRangeSyntax, part)
		}
		first, last = strings.TrimSpace(first), strings.TrimSpace(last)
		var r Range
		if first == "" {
			// suffix range: the last N bytes
			n, err := parseDigits(last)
			if err != nil {
				return nil, err
			}
			if n == 0 {
				continue
			}
			n = min(n, size)
			r = Range{Start: size - n, Length: n}
		} else {
			a, err := parseDigits(first)
			if err != nil {
				return nil, err
			}
			if a >= size {
				continue
			}
			end := size - 1
			if last != "" {
				b, err := parseDigits(last)
				if err != nil {
					return nil, err
				}
				if b < a {
					return nil, fmt.Errorf("%w: %q ends before it starts", ErrRangeSyntax, part)
				}
				end = min(b, size-1)
			}
			r = Range{Start: a, Length: end - a + 1}
		}
		if r.Length > 0 {
			out = append(out, r)
		}
	}
	if len(out) == 0 {
		return nil, ErrUnsatisfiable
	}
	return out, nil
}

func parseDigits(s string) (int64, error) {
	if s == "" || len(s) > 19 {
		return 0, fmt.Errorf("%w: %q is not a byte position", ErrRangeSyntax, s)
	}
	for _, c := range s {
		if c < '0' || c > '9' {
			return 0, fmt.Errorf("%w: %q is not a byte position", ErrRangeSyntax, s)
		}
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("%w: %q is not a byte position", ErrRangeSyntax, s)
	}
	return n, nil
}
