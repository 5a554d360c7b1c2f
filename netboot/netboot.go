// Package netboot takes PXE machines from their firmware to the boot
// client: DHCP (package dhcp: proxy or full), TFTP (package tftpd: iPXE for
// firmware that is not iPXE already), IPv6 router advertisements that end
// iPXE's waiting, and over HTTP the iPXE boot script and the client's
// kernel and initramfs. It feeds what it sees into the machine registry
// (netboot/registry) and carries the boot API (netboot/bootserver) on its
// routes. It takes typed options and must not read the project's
// configuration (cmd/internal/cli maps it) nor decide the swarm.
//
// The command wires it up as:
//
//	nb, err := netboot.New(netboot.Options{Address: a, DHCP: …, Catalog: seeder,
//		ClientKernel: k, ClientInitramfs: i})
//	err = nb.Start(ctx)        // DHCP + TFTP sockets
//	nb.Register(surface.Handle) // its routes and the boot API's, on the one listener
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
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/boottorrent/boottorrent/initramfs/bootapi"
	"github.com/boottorrent/boottorrent/initramfs/logging"
	"github.com/boottorrent/boottorrent/netboot/bootserver"
	"github.com/boottorrent/boottorrent/netboot/dhcp"
	"github.com/boottorrent/boottorrent/netboot/registry"
	"github.com/boottorrent/boottorrent/netboot/tftpd"
	"golang.org/x/sys/unix"
)

// Catalog is what the seeder offers (the seeder implements it).
type Catalog = bootserver.Catalog

// Machine is a machine the administrator named (config machines:).
type Machine = bootserver.Machine

// DHCP configures the DHCP server (config dhcp:).
type DHCP struct {
	Mode dhcp.Mode // ModeOff starts no DHCP server
	// First and Last bound the full-mode lease range (inclusive).
	First, Last netip.Addr
	LeaseTime   time.Duration
	Netmask     netip.Addr   // optional override of Options.Prefix's mask
	Router      netip.Addr   // sent only when valid
	DNS         []netip.Addr // sent only when set
	// LeaseFile persists full-mode leases; empty keeps them in memory.
	// Its folder is created when missing.
	LeaseFile string
}

// IPXE names the first-stage iPXE binaries served over TFTP.
type IPXE struct {
	Dir, BIOS, UEFI string
}

// Options configures a Server.
type Options struct {
	// Interface and Address are the LAN interface and the server's IPv4
	// address on it; Prefix is the interface's network.
	Interface string
	Address   netip.Addr
	Prefix    netip.Prefix
	// HTTPPort is the one HTTP listener's port (the boot script's URLs).
	HTTPPort int
	DHCP     DHCP
	// TFTP serves IPXE's files on port 69 (TFTPPort).
	TFTP bool
	IPXE IPXE
	// Cmdline is appended to the boot client's kernel command line.
	Cmdline string
	// Machines are the machines the administrator named.
	Machines map[bootapi.MAC]Machine
	// Boot is what the boot API tells the clients (menu, timeouts,
	// trackers); its Registry, Catalog, Logger and Machines are set by
	// New.
	Boot bootserver.Options

	Logger  *slog.Logger
	Catalog Catalog
	// ClientKernel and ClientInitramfs are the files served at
	// bootapi.PathClientKernel and PathClientInitramfs.
	ClientKernel, ClientInitramfs string

	// TFTPPort overrides port 69 (tests, unprivileged demos); 0 = 69.
	TFTPPort int
	// MaxMachines bounds the registry (registry.DefaultMax).
	MaxMachines int
	// Registry, when set, is used instead of a new one (tests).
	Registry *registry.Registry
	// NoRouterAdverts turns off the IPv6 router advertisements that end
	// iPXE's router discovery early (see RouterAdverts).
	NoRouterAdverts bool
	// Meter, if set, counts what DHCP, TFTP and the registry see
	// (netboot/metrics implements it).
	Meter Meter
}

// Meter counts what the server's parts do: the DHCP server's packets, the
// TFTP transfers and the registry's stage changes and payload bytes.
type Meter interface {
	dhcp.Meter
	TFTPTransfer(tftpd.Transfer)
	Stage(from, to string, in time.Duration)
	Payload(fromPeers, fromSeeder, fromWeb, uploaded int64)
}

// HTTPBase is the HTTP listener's URL, http://ADDRESS:PORT.
func (o *Options) HTTPBase() string {
	return "http://" + netip.AddrPortFrom(o.Address, uint16(o.HTTPPort)).String()
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
	log   *slog.Logger
	reg   *registry.Registry
	api   *bootserver.Server
	base  string // http://IP:PORT
	limit *logging.Limiter
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
// Start, but the routes work at once.
func New(o Options) (*Server, error) {
	if !o.Address.Is4() {
		return nil, fmt.Errorf("server address %v is not an IPv4 address", o.Address)
	}
	names := map[bootapi.MAC]string{}
	for mac, m := range o.Machines {
		names[mac] = m.Name
	}
	log := logging.OrDiscard(o.Logger).With("component", "netboot")
	s := &Server{opts: o, log: log, base: o.HTTPBase(), limit: logging.NewLimiter(5 * time.Second)}
	s.reg = o.Registry
	if s.reg == nil {
		ro := registry.Options{Logger: log, Max: o.MaxMachines, Names: names}
		if o.Meter != nil {
			ro.Hooks = registry.Hooks{Stage: o.Meter.Stage, Payload: o.Meter.Payload}
		}
		s.reg = registry.New(ro)
	}
	b := o.Boot
	b.Registry, b.Catalog, b.Logger, b.Limiter, b.Machines = s.reg, o.Catalog, log, s.limit, o.Machines
	api, err := bootserver.New(b)
	if err != nil {
		return nil, err
	}
	s.api = api
	return s, nil
}

// Registry is the server's machine registry (read-only use expected).
func (s *Server) Registry() *registry.Registry { return s.reg }

// API is the server side of the boot API.
func (s *Server) API() *bootserver.Server { return s.api }

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
		return errors.New("already started")
	}
	s.started = true
	o := &s.opts
	if _, err := net.InterfaceByName(o.Interface); err != nil {
		return fmt.Errorf("%w: %q (server.interface); check `ip link` and the setting", ErrNoInterface, o.Interface)
	}
	arp := openNeighbors()
	s.arp.Store(arp)
	s.closers = append(s.closers, arp.close)
	if o.TFTP {
		if err := s.startTFTP(); err != nil {
			s.closeLocked()
			return err
		}
	}
	if o.DHCP.Mode != dhcp.ModeOff {
		if err := s.startDHCP(); err != nil {
			s.closeLocked()
			return err
		}
	}
	if !s.opts.NoRouterAdverts {
		if err := s.startRouterAdverts(o.Interface); err != nil {
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
		return fmt.Errorf("%s port %d (%s): %w: another program serves it (another boottorrent, dnsmasq, a TFTP or DHCP server); stop it (ss -ulpn 'sport = :%d' shows which) or turn this service off in Boottorrent.yaml",
			proto, port, what, ErrPortInUse, port)
	case errors.Is(err, syscall.EACCES), errors.Is(err, syscall.EPERM):
		return fmt.Errorf("%s port %d (%s): %w: ports below 1024 need root or CAP_NET_BIND_SERVICE (sudo boottorrent start, or setcap cap_net_bind_service,cap_net_raw+ep on the binary)",
			proto, port, what, ErrPermission)
	}
	return fmt.Errorf("%s port %d (%s): %w", proto, port, what, err)
}

func (s *Server) startTFTP() error {
	x := s.opts.IPXE
	port := s.opts.TFTPPort
	if port == 0 {
		port = 69
	}
	srv, err := tftpd.New(tftpd.Options{
		Dir:      x.Dir,
		Files:    []string{x.BIOS, x.UEFI},
		Logger:   s.log.With("service", "tftp"),
		Identify: s.macFor,
		OnTransfer: func(t tftpd.Transfer) {
			if s.opts.Meter != nil {
				s.opts.Meter.TFTPTransfer(t)
			}
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
		return fmt.Errorf("%w (ipxe.dir, ipxe.bios, ipxe.uefi; apt-get install ipxe)", err)
	}
	// Bound to the server's address: TFTP requests are unicast to it,
	// and pin/tftp opens each transfer's socket on the address the
	// request came to.
	conn, err := net.ListenUDP("udp4", net.UDPAddrFromAddrPort(netip.AddrPortFrom(s.opts.Address, uint16(port))))
	if err != nil {
		srv.Close()
		return ListenError("udp", port, "TFTP", err)
	}
	enter, err := callerNetns()
	if err != nil {
		conn.Close()
		srv.Close()
		return err
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
	s.log.Info("tftp listening", "addr", conn.LocalAddr().String(), "files", []string{x.BIOS, x.UEFI}, "dir", x.Dir)
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
