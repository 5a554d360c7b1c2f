// Package netboot takes PXE machines from their firmware to the boot
// client: DHCP (package dhcp: proxy or full), TFTP (package tftpd: iPXE for
// firmware that is not iPXE already), and over HTTP the iPXE boot script,
// the client's kernel and initramfs and the boot API the client talks to.
// It keeps the registry of machines: the one place that knows every
// machine's stage, address and download progress.
//
// The command wires it up as:
//
//	nb, err := netboot.New(netboot.Options{Project: p, Logger: log, Catalog: seeder,
//		ClientKernel: k, ClientInitramfs: i})
//	err = nb.Start(ctx)                   // DHCP + TFTP sockets
//	mux.Handle("/", nb.Handler())         // next to the seeder's handler
//	defer nb.Close()
package netboot

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/boottorrent/boottorrent/config"
	"github.com/boottorrent/boottorrent/netboot/bootapi"
	"github.com/boottorrent/boottorrent/netboot/dhcp"
	"github.com/boottorrent/boottorrent/netboot/tftpd"
	"golang.org/x/sys/unix"
)

// Catalog is what the seeder offers (the seeder implements it).
type Catalog interface {
	// OSes are the menu entries with their info hashes.
	OSes() []bootapi.OS
	// Peers lists up to n peers for os, the seeder first, then tracker
	// peers, without exclude.
	Peers(os string, exclude netip.Addr, n int) []netip.AddrPort
}

// Options configures a Server.
type Options struct {
	// Project is loaded and validated: Config (server, dhcp, tftp, boot,
	// ipxe, machines), OSes, OutDir(), Prefix.
	Project *config.Project
	Logger  *slog.Logger
	Catalog Catalog
	// ClientKernel and ClientInitramfs are the files served at
	// bootapi.PathClientKernel and PathClientInitramfs.
	ClientKernel, ClientInitramfs string

	// TFTPPort overrides port 69 (tests, unprivileged demos); 0 = 69.
	TFTPPort int
	// MaxMachines bounds the registry (DefaultMaxMachines).
	MaxMachines int
	// NoRouterAdverts turns off the IPv6 router advertisements that end
	// iPXE's router discovery early (see RouterAdverts).
	NoRouterAdverts bool
}

// Sentinel errors of Start, for callers that branch (errors.Is).
// ErrPortInUse and ErrPermission are the DHCP package's, so that one
// errors.Is check covers DHCP and TFTP.
var (
	ErrPortInUse   = dhcp.ErrPortInUse
	ErrPermission  = dhcp.ErrPermission
	ErrNoInterface = errors.New("network interface not found")
)

// Server is the netboot side of boottorrent.
type Server struct {
	opts  Options
	cfg   *config.Config
	log   *slog.Logger
	reg   *Registry
	base  string // http://IP:PORT
	limit *rateLog
	arp   atomic.Pointer[neighbors] // set by Start; read without s.mu (Close holds it while transfers end)
	// dhcpEvents carries the DHCP server's events to the registry
	// (startDHCP, recordDHCPEvents); nil before Start.
	dhcpEvents chan dhcp.Event
	// dhcpEventsDropped counts events dropped at a full dhcpEvents.
	dhcpEventsDropped atomic.Uint64

	mu      sync.Mutex
	started bool
	closers []func() error
	wg      sync.WaitGroup
}

// New checks the options and builds a server; nothing is opened until
// Start, but Handler works at once.
func New(o Options) (*Server, error) {
	if o.Project == nil || o.Project.Config == nil {
		return nil, errors.New("netboot: Options.Project is required")
	}
	c := o.Project.Config
	if !c.ServerAddr().IsValid() {
		return nil, fmt.Errorf("netboot: server.address %q is not an address", c.Server.Address)
	}
	names := map[string]string{}
	for mac, m := range c.Machines {
		if hw, err := net.ParseMAC(mac); err == nil {
			names[strings.ToLower(hw.String())] = m.Name
		}
	}
	log := newLogger(o.Logger).With("component", "netboot")
	s := &Server{opts: o, cfg: c, log: log, base: c.HTTPBase(), limit: newRateLog(5 * time.Second)}
	s.reg = NewRegistry(log, o.MaxMachines, names)
	return s, nil
}

// Registry is the server's machine registry (read-only use expected).
func (s *Server) Registry() *Registry { return s.reg }

// Machines is a snapshot of the registry.
func (s *Server) Machines() []bootapi.Machine { return s.reg.Snapshot() }

// Start opens the DHCP (per dhcp.mode: ports 67 and 4011) and TFTP (port
// 69, if tftp.enabled) sockets on server.interface and serves them until
// Close or until ctx ends. It also answers booting machines' IPv6 router
// solicitations (see RouterAdverts; off with Options.NoRouterAdverts, and
// skipped with a warning when the raw socket cannot be opened). Errors say
// what to do: a port taken by another program (ErrPortInUse), missing
// privileges (ErrPermission), a missing interface (ErrNoInterface).
//
// Start may run inside a network namespace (netns.NS.Do): every socket,
// including the per-transfer TFTP sockets opened later, lives there.
func (s *Server) Start(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.started {
		return errors.New("netboot: already started")
	}
	s.started = true
	c := s.cfg
	if _, err := net.InterfaceByName(c.Server.Interface); err != nil {
		return fmt.Errorf("netboot: %w: %q (server.interface); check `ip link` and the setting", ErrNoInterface, c.Server.Interface)
	}
	arp := openNeighbors()
	s.arp.Store(arp)
	s.closers = append(s.closers, arp.close)
	if c.TFTP.Enabled {
		if err := s.startTFTP(); err != nil {
			s.closeLocked()
			return err
		}
	}
	if c.DHCP.Mode != config.DHCPOff {
		if err := s.startDHCP(); err != nil {
			s.closeLocked()
			return err
		}
	}
	if !s.opts.NoRouterAdverts {
		if err := s.startRouterAdverts(c.Server.Interface); err != nil {
			s.log.Warn(raError(err))
		}
	}
	if ctx != nil {
		stop := context.AfterFunc(ctx, func() { s.Close() })
		s.closers = append(s.closers, func() error { stop(); return nil })
	}
	return nil
}

// ListenError turns a bind failure into an error that says what to do.
func ListenError(proto string, port int, what string, err error) error {
	switch {
	case errors.Is(err, syscall.EADDRINUSE):
		return fmt.Errorf("netboot: %s port %d (%s): %w: another program serves it (another boottorrent, dnsmasq, a TFTP or DHCP server); stop it (ss -ulpn 'sport = :%d' shows which) or turn this service off in Boottorrent.yaml",
			proto, port, what, ErrPortInUse, port)
	case errors.Is(err, syscall.EACCES), errors.Is(err, syscall.EPERM):
		return fmt.Errorf("netboot: %s port %d (%s): %w: ports below 1024 need root or CAP_NET_BIND_SERVICE (sudo boottorrent start, or setcap cap_net_bind_service,cap_net_raw+ep on the binary)",
			proto, port, what, ErrPermission)
	}
	return fmt.Errorf("netboot: %s port %d (%s): %w", proto, port, what, err)
}

func (s *Server) startTFTP() error {
	c := s.cfg
	port := s.opts.TFTPPort
	if port == 0 {
		port = 69
	}
	srv, err := tftpd.New(tftpd.Options{
		Dir:      c.IPXE.Dir,
		Files:    []string{c.IPXE.BIOS, c.IPXE.UEFI},
		Logger:   s.log.With("service", "tftp"),
		Identify: s.macFor,
		OnTransfer: func(t tftpd.Transfer) {
			if t.Err != nil {
				return
			}
			if t.SizeQuery {
				return
			}
			mac := s.macFor(t.Remote.Addr())
			if mac == "" {
				return
			}
			s.reg.Observe(mac, t.Remote.Addr(), "", bootapi.StageTFTP, "file", t.File, "bytes", t.Bytes, "duration", t.Duration)
		},
	})
	if err != nil {
		return fmt.Errorf("netboot: %w (ipxe.dir, ipxe.bios, ipxe.uefi; apt-get install ipxe)", err)
	}
	// Bound to the server's address: TFTP requests are unicast to it,
	// and pin/tftp opens each transfer's socket on the address the
	// request came to.
	conn, err := net.ListenUDP("udp4", net.UDPAddrFromAddrPort(netip.AddrPortFrom(c.ServerAddr(), uint16(port))))
	if err != nil {
		srv.Close()
		return ListenError("udp", port, "TFTP", err)
	}
	enter, err := callerNetns()
	if err != nil {
		conn.Close()
		srv.Close()
		return fmt.Errorf("netboot: %w", err)
	}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		// pin/tftp opens a socket per transfer from this goroutine: it
		// must run in the network namespace Start was called in.
		if err := enter(); err != nil {
			s.log.Error("tftp: cannot enter the network namespace", "err", err)
			conn.Close()
			return
		}
		srv.Serve(conn)
	}()
	s.closers = append(s.closers, srv.Close)
	s.log.Info("tftp listening", "addr", conn.LocalAddr().String(), "files", []string{c.IPXE.BIOS, c.IPXE.UEFI}, "dir", c.IPXE.Dir)
	return nil
}

// macFor names the machine at ip: from the registry, else from the
// kernel's ARP table.
func (s *Server) macFor(ip netip.Addr) string {
	if mac := s.reg.MACForIP(ip); mac != "" {
		return mac
	}
	return s.arp.Load().lookup(ip)
}

// callerNetns captures the network namespace of the calling thread and
// returns a function that moves the calling goroutine's thread into it for
// good (the thread stays locked and dies with the goroutine). Start may be
// called inside a namespace (tests, the demo's virtual LAN, netns.NS.Do);
// goroutines it starts would otherwise run in whatever namespace their
// thread happens to be in. When both are the same, nothing is switched.
func callerNetns() (func() error, error) {
	f, err := os.Open("/proc/thread-self/ns/net")
	if err != nil {
		// No /proc: there is only the one namespace we run in.
		return func() error { return nil }, nil
	}
	want, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, err
	}
	return func() error {
		defer f.Close()
		runtime.LockOSThread()
		if cur, err := os.Stat("/proc/thread-self/ns/net"); err == nil && os.SameFile(cur, want) {
			runtime.UnlockOSThread()
			return nil
		}
		return unix.Setns(int(f.Fd()), unix.CLONE_NEWNET)
	}, nil
}

// Close stops every service Start opened. It is safe to call more than
// once and before Start.
func (s *Server) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closeLocked()
}

func (s *Server) closeLocked() error {
	var errs []error
	for i := len(s.closers) - 1; i >= 0; i-- {
		errs = append(errs, s.closers[i]())
	}
	s.closers = nil
	s.wg.Wait()
	return errors.Join(errs...)
}
