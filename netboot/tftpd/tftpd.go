// Package tftpd is the first-stage TFTP server: it hands PXE firmware that
// is not iPXE (vendor PXE ROMs, EDK II's own PXE) the iPXE binary for its
// architecture, and nothing else.
//
// The wire protocol is github.com/pin/tftp/v3. What this package adds is
// what that library leaves to its user (see LIBRARIES.md): requested names
// arrive raw, so only an allow-list of names is served and every file is
// opened through os.OpenRoot; a handler's error text goes to the client
// verbatim, so clients get generic messages and the log gets the details;
// nothing bounds concurrent transfers, so a semaphore does, with a cap per
// source address; option names and values are normalised (options.go).
package tftpd

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/pin/tftp/v3"

	"github.com/boottorrent/boottorrent/initramfs/logging"
)

// Defaults.
const (
	DefaultMaxTransfers = 64
	// DefaultMaxPerSource bounds the transfers one address may hold. A
	// PXE ROM fetches one file at a time (EDK II: a size query, then the
	// file), so 4 leaves room for retries while 500 requests from one
	// host followed by silence cannot hold every slot until they time
	// out.
	DefaultMaxPerSource = 4
	// DefaultAnticipate is the send window: blocks sent before waiting
	// for an ACK. pin/tftp has no RFC 7440 windowsize; its server-side
	// anticipation works with standard clients and was the fastest mode
	// measured here (LIBRARIES.md).
	DefaultAnticipate = 16
	DefaultTimeout    = 3 * time.Second
	DefaultRetries    = 5
)

// Errors sent to clients. They name no path and no reason beyond the
// protocol's: details go to the server's log only.
var (
	ErrNotFound = errors.New("file not found")
	ErrBusy     = errors.New("server busy, try again")
	errAccess   = errors.New("access violation")
)

// Transfer describes one finished (or failed) read request.
type Transfer struct {
	Remote   netip.AddrPort
	File     string // the allowed name the client asked for
	Bytes    int64
	Duration time.Duration
	// SizeQuery is set when the client ended the transfer right after the
	// option acknowledgement (before block 1): EDK II asks with tsize=0,
	// learns the size, aborts and asks again. Normal, not an error.
	SizeQuery bool
	Err       error
}

// Options configures a Server.
type Options struct {
	// Dir is the folder the files live in (config ipxe.dir).
	Dir string
	// Files are the names served, relative to Dir, without slashes
	// (config ipxe.bios, ipxe.uefi). Every other name is refused. A file
	// may be a symlink (Debian's /usr/lib/ipxe/ipxe.efi points into
	// /boot): the administrator's link is resolved once, here, and the
	// file is then opened through os.OpenRoot on its real folder.
	Files []string
	// Logger gets one line per transfer.
	Logger *slog.Logger
	// MaxTransfers bounds concurrent transfers (DefaultMaxTransfers).
	MaxTransfers int
	// MaxPerSource bounds concurrent transfers to one client address
	// (DefaultMaxPerSource).
	MaxPerSource int
	// Anticipate is the send window in blocks (DefaultAnticipate; 1
	// turns it off).
	Anticipate uint
	// Timeout is the retransmission timeout (DefaultTimeout).
	Timeout time.Duration
	// Identify, if set, names the machine at an address (its MAC) for the
	// log lines.
	Identify func(netip.Addr) string
	// OnTransfer, if set, is called after every transfer (the netboot
	// registry records the "tftp" stage with it).
	OnTransfer func(Transfer)
}

type servedFile struct {
	root *os.Root
	name string // inside root
}

// Server serves the allowed files over TFTP.
type Server struct {
	opts  Options
	log   *slog.Logger
	files map[string]servedFile
	sem   chan struct{}
	srv   *tftp.Server

	srcMu sync.Mutex
	bySrc map[netip.Addr]int // transfers running per client address

	closeOnce sync.Once

	limits *logging.Limiter
}

// warn logs one line per kind every 5 s at most, so that a flood of bad
// requests cannot flood the log.
func (s *Server) warn(kind, msg string, args ...any) { s.limits.Warn(s.log, kind, msg, args...) }

// New checks the files and prepares a server. It fails when a file is
// missing or unreadable, so the administrator learns at start, not when
// the first machine boots.
func New(o Options) (*Server, error) {
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.MaxTransfers <= 0 {
		o.MaxTransfers = DefaultMaxTransfers
	}
	if o.MaxPerSource <= 0 {
		o.MaxPerSource = DefaultMaxPerSource
	}
	if o.Anticipate == 0 {
		o.Anticipate = DefaultAnticipate
	}
	if o.Timeout <= 0 {
		o.Timeout = DefaultTimeout
	}
	s := &Server{opts: o, log: o.Logger, files: map[string]servedFile{}, sem: make(chan struct{}, o.MaxTransfers),
		limits: logging.NewLimiter(5 * time.Second), bySrc: map[netip.Addr]int{}}
	for _, name := range o.Files {
		if name == "" {
			continue
		}
		if strings.ContainsAny(name, `/\`) || name == "." || name == ".." {
			s.closeRoots()
			return nil, fmt.Errorf("tftp: %q must be a file name inside %s, without slashes", name, o.Dir)
		}
		real, err := filepath.EvalSymlinks(filepath.Join(o.Dir, name))
		if err != nil {
			s.closeRoots()
			return nil, fmt.Errorf("tftp: %s: %w", filepath.Join(o.Dir, name), err)
		}
		root, err := os.OpenRoot(filepath.Dir(real))
		if err != nil {
			s.closeRoots()
			return nil, fmt.Errorf("tftp: %w", err)
		}
		f, err := root.Open(filepath.Base(real))
		if err == nil {
			var fi os.FileInfo
			fi, err = f.Stat()
			f.Close()
			if err == nil && !fi.Mode().IsRegular() {
				err = errors.New("not a regular file")
			}
		}
		if err != nil {
			root.Close()
			s.closeRoots()
			return nil, fmt.Errorf("tftp: %s: %w", filepath.Join(o.Dir, name), err)
		}
		s.files[name] = servedFile{root: root, name: filepath.Base(real)}
	}
	s.srv = tftp.NewServer(s.read, nil)
	s.srv.SetTimeout(o.Timeout)
	s.srv.SetRetries(DefaultRetries)
	s.srv.SetAnticipate(o.Anticipate)
	return s, nil
}

func (s *Server) closeRoots() {
	for _, f := range s.files {
		f.root.Close()
	}
}

// Serve answers read requests on conn until Close. Write requests are
// refused by the library (no write handler).
func (s *Server) Serve(conn net.PacketConn) error {
	return s.srv.Serve(conn)
}

// Close stops the server and waits for running transfers (each ends within
// its retransmission timeouts).
func (s *Server) Close() error {
	s.closeOnce.Do(func() {
		s.srv.Shutdown()
		s.closeRoots()
	})
	return nil
}

// Lookup says whether name is served and returns the canonical name. The
// comparison is exact: TFTP names are case-sensitive on our side, and a
// leading slash, "..", or a backslash never match.
func (s *Server) Lookup(name string) (string, bool) {
	_, ok := s.files[name]
	return name, ok
}

func (s *Server) read(name string, rf io.ReaderFrom) error {
	start := time.Now()
	var remote netip.AddrPort
	if ot, ok := rf.(tftp.OutgoingTransfer); ok {
		ra := ot.RemoteAddr()
		remote = ra.AddrPort()
		remote = netip.AddrPortFrom(remote.Addr().Unmap(), remote.Port())
	}
	shown := strings.ToValidUTF8(name, "?")
	if len(shown) > 80 {
		shown = shown[:80] + "…"
	}
	sf, ok := s.files[name]
	if !ok {
		s.warn("refused", "tftp request refused: not a served file", "remote", remote, "file", shown)
		s.done(Transfer{Remote: remote, File: shown, Duration: time.Since(start), Err: ErrNotFound})
		return ErrNotFound
	}
	if !s.takeSource(remote.Addr()) {
		s.warn("busy source", "tftp request refused: too many transfers to one address", "remote", remote, "file", name, "max", s.opts.MaxPerSource)
		s.done(Transfer{Remote: remote, File: name, Duration: time.Since(start), Err: ErrBusy})
		return ErrBusy
	}
	defer s.releaseSource(remote.Addr())
	select {
	case s.sem <- struct{}{}:
		defer func() { <-s.sem }()
	default:
		s.warn("busy", "tftp request refused: too many transfers", "remote", remote, "file", name, "max", s.opts.MaxTransfers)
		s.done(Transfer{Remote: remote, File: name, Duration: time.Since(start), Err: ErrBusy})
		return ErrBusy
	}
	f, err := sf.root.Open(sf.name)
	if err != nil {
		s.log.Error("tftp open failed", "remote", remote, "file", name, "err", err)
		s.done(Transfer{Remote: remote, File: name, Duration: time.Since(start), Err: err})
		return errAccess
	}
	defer f.Close()
	if ot, ok := rf.(tftp.OutgoingTransfer); ok {
		normalizeOptions(ot)
		// RFC 2349: the OACK's tsize is the file's size, whatever
		// number the request carried.
		if fi, err := f.Stat(); err == nil {
			ot.SetSize(fi.Size())
		}
	}
	n, err := rf.ReadFrom(f)
	t := Transfer{Remote: remote, File: name, Bytes: n, Duration: time.Since(start), Err: err}
	mac := ""
	if s.opts.Identify != nil {
		mac = s.opts.Identify(remote.Addr())
	}
	switch {
	case err == nil:
		s.log.Info("tftp sent", "remote", remote, "mac", mac, "file", name, "bytes", n,
			"duration", t.Duration.Round(time.Millisecond), "mbps", mbps(n, t.Duration))
	case isSizeQuery(n, err):
		t.SizeQuery, t.Err = true, nil
		s.log.Debug("tftp size query answered", "remote", remote, "mac", mac, "file", name)
	default:
		s.log.Warn("tftp transfer failed", "remote", remote, "mac", mac, "file", name, "bytes", n,
			"duration", t.Duration.Round(time.Millisecond), "err", err)
	}
	s.done(t)
	// ReadFrom has already sent the client its error packet; returning
	// nil keeps the library from sending a second one.
	return nil
}

// takeSource counts a transfer against its client address; false when
// that address already holds MaxPerSource.
func (s *Server) takeSource(a netip.Addr) bool {
	s.srcMu.Lock()
	defer s.srcMu.Unlock()
	if s.bySrc[a] >= s.opts.MaxPerSource {
		return false
	}
	s.bySrc[a]++
	return true
}

func (s *Server) releaseSource(a netip.Addr) {
	s.srcMu.Lock()
	defer s.srcMu.Unlock()
	if s.bySrc[a]--; s.bySrc[a] <= 0 {
		delete(s.bySrc, a)
	}
}

func (s *Server) done(t Transfer) {
	if s.opts.OnTransfer != nil {
		s.opts.OnTransfer(t)
	}
}

// isSizeQuery recognises a client that ended the transfer with an ERROR
// packet right after our OACK: pin/tftp reports it as an error while
// "sending block 0". EDK II does this on purpose (tsize=0 first).
func isSizeQuery(n int64, err error) bool {
	return n == 0 && err != nil && strings.Contains(err.Error(), "sending block 0:")
}

func mbps(n int64, d time.Duration) float64 {
	if d <= 0 {
		return 0
	}
	return float64(int64(float64(n)*8/d.Seconds()/1e4)) / 100
}
