// Package dhcp answers PXE firmware and iPXE on the lab LAN: as a proxyDHCP
// server next to the site's own DHCP server (mode "proxy", RFC 4578 and the
// PXE 2.1 specification), or as the LAN's only DHCP server with a lease range
// persisted on disk (mode "full", RFC 2131).
//
// The wire format comes from github.com/insomniacslk/dhcp; everything else is
// here, because that library's server4.Serve starts an unbounded goroutine per
// packet without recover and binds with SO_REUSEPORT (a second instance would
// silently share the port). Server reads its injected sockets itself, hands
// each packet to a fixed pool of workers through a bounded queue, recovers
// per packet, and drops what it cannot parse with a rate-limited log line.
//
// Decisions worth knowing:
//
//   - Which boot file: iPXE (user class "iPXE" or option 175) gets
//     HTTPBase+"/boot.ipxe?mac=MAC"; other firmware gets BIOSFile (option 93
//     = 0) or UEFIFile (7 or 9) from our TFTP server. Any other
//     architecture, or non-iPXE firmware while TFTP is off, is not answered
//     and is logged once per MAC with the reason.
//   - Proxy replies carry option 43 with PXE discovery control bit 3 ("use
//     the boot file in this packet"): SeaBIOS+iPXE and OVMF's own EDK II PXE
//     then boot from the port 67 offer directly (TestFirmware); port 4011
//     is still answered for ROMs that ask there.
//   - Replies go to the relay (giaddr:67), to ciaddr:68 when the client
//     has an address (renewals, INFORM, port 4011 to its source), else
//     broadcast. Unicasting to an address the client does not hold yet
//     would need ARP cache writes; RFC 2131 4.1 allows the broadcast.
//   - Full mode is authoritative for its range: a REQUEST for an address
//     it cannot grant is NAKed. Relays inside our own network are served
//     (Kea's perfdhcp poses as one); relays from other networks are not.
//   - Leases are journaled (lease file, JSON lines) before the ACK is sent
//     and compacted atomically; a write failure means no ACK.
//   - Options.ReplyDelay exists for firmware that drops replies arriving
//     too soon (dnsmasq's --dhcp-reply-delay). Default 0: iPXE waits only
//     about 2 s for proxy offers, and no firmware tested here needs it.
package dhcp

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"

	"github.com/boottorrent/boottorrent/initramfs/logging"
)

// Ports: DHCP server, DHCP client, and the PXE boot-server port on which
// firmware and iPXE send their follow-up request to a proxyDHCP server.
const (
	ServerPort    = 67
	ClientPort    = 68
	PXEServerPort = 4011
)

// Errors callers may branch on.
var (
	// ErrPortInUse: another process (often a second boottorrent, dnsmasq
	// or a DHCP server) already holds the port on this interface.
	ErrPortInUse = errors.New("port already in use")
	// ErrPermission: binding ports below 1024 needs privileges.
	ErrPermission = errors.New("needs root or CAP_NET_BIND_SERVICE")
	// ErrConfig: Options are not usable.
	ErrConfig = errors.New("invalid dhcp options")
)

// Event describes one reply to a machine.
type Event struct {
	MAC      net.HardwareAddr
	IP       netip.Addr // address leased (full mode) or the client's own (4011, renewals); invalid in a proxy offer
	Arch     string     // "bios", "uefi-x64", … (see archName)
	IPXE     bool       // the request came from iPXE
	BootFile string     // boot file or URL we sent; empty for plain leases
	Message  string     // "offer", "ack", "nak", "proxy offer", "proxy ack"
}

// Meter counts what the server does (netboot/metrics implements it). Its
// methods run on the read loops and workers: they must not block. mode is
// "proxy" or "full"; msgType is the DHCP message type ("discover", "ack").
type Meter interface {
	Received(msgType, mode string)
	Answered(msgType, mode string, took time.Duration)
	// Dropped: reason is queue_full, stale, malformed or panic.
	Dropped(reason string)
}

type noMeter struct{}

func (noMeter) Received(string, string)                {}
func (noMeter) Answered(string, string, time.Duration) {}
func (noMeter) Dropped(string)                         {}

// Server is a proxyDHCP or full DHCP server. Create it with New, run it with
// Serve, stop it with Close.
type Server struct {
	opt    Options
	log    *slog.Logger
	pool   *pool // full mode only
	mask   net.IPMask
	now    func() time.Time
	limits *logging.Limiter

	unsupported seenSet // MACs already logged for an architecture we cannot serve

	mu      sync.Mutex
	conns   []net.PacketConn
	closed  bool
	serving bool
	done    chan struct{}
	wg      sync.WaitGroup

	pendingDelayed atomic.Int64

	// tap, if set before Serve, sees every datagram received (tests
	// record real firmware requests with it).
	tap func(port int, data []byte)

	// Counters (read with Stats).
	received, dropped, malformed, answered, panics atomic.Uint64
}

// Stats are counters since New.
type Stats struct {
	Received  uint64 // packets read
	Dropped   uint64 // packets dropped unanswered: the oldest when the queue was full, or after waiting over MaxQueueWait
	Malformed uint64 // packets that did not parse as DHCP requests
	Answered  uint64 // replies sent
	Panics    uint64 // handler panics recovered
	Leases    int    // full mode: leases held (any state)
}

// Stats returns the counters.
func (s *Server) Stats() Stats {
	st := Stats{
		Received:  s.received.Load(),
		Dropped:   s.dropped.Load(),
		Malformed: s.malformed.Load(),
		Answered:  s.answered.Load(),
		Panics:    s.panics.Load(),
	}
	if s.pool != nil {
		st.Leases = s.pool.len()
	}
	return st
}

// New validates opt and, in full mode, loads the lease file. Every problem
// with opt is reported at once, wrapped in ErrConfig.
func New(opt Options) (*Server, error) {
	if opt.Logger == nil {
		opt.Logger = slog.New(slog.DiscardHandler)
	}
	if opt.LeaseTime <= 0 {
		opt.LeaseTime = time.Hour
	}
	if opt.Meter == nil {
		opt.Meter = noMeter{}
	}
	if opt.Workers <= 0 {
		opt.Workers = max(4, runtime.GOMAXPROCS(0))
	}
	if opt.MaxQueueWait <= 0 {
		opt.MaxQueueWait = DefaultMaxQueueWait
	}
	if opt.Queue <= 0 {
		opt.Queue = 512
	}
	if err := opt.validate(); err != nil {
		return nil, err
	}
	s := &Server{
		opt:    opt,
		log:    opt.Logger.With("iface", opt.Interface, "mode", opt.Mode),
		now:    time.Now,
		limits: logging.NewLimiter(5 * time.Second),
		done:   make(chan struct{}),
	}
	s.unsupported.max = 4096
	if opt.Mode == ModeFull {
		if opt.Netmask.IsValid() {
			m := opt.Netmask.As4()
			s.mask = net.IPv4Mask(m[0], m[1], m[2], m[3])
		} else {
			s.mask = net.CIDRMask(opt.Prefix.Bits(), 32)
		}
		p, err := newPool(poolConfig{
			first: opt.First, last: opt.Last, prefix: opt.Prefix,
			exclude:  []netip.Addr{opt.ServerIP, opt.Router},
			machines: opt.Machines, file: opt.LeaseFile, log: s.log,
		}, s.now())
		if err != nil {
			return nil, err
		}
		s.pool = p
	}
	return s, nil
}

// packet is one datagram waiting for a worker.
type packet struct {
	buf  *[]byte
	n    int
	from net.Addr
	conn net.PacketConn
	port int // local port the datagram arrived on (ServerPort or PXEServerPort)
	at   time.Time
}

const readBufSize = 2048 // larger than any DHCP message on an Ethernet LAN

var bufPool = sync.Pool{New: func() any { b := make([]byte, readBufSize); return &b }}

// Serve answers requests arriving on conn67 (port 67) and conn4011 (the PXE
// boot-server port; may be nil). It returns nil after Close, or an error if
// a socket dies. It may be called once.
func (s *Server) Serve(conn67, conn4011 net.PacketConn) error {
	if conn67 == nil {
		return errors.New("dhcp: Serve needs the port 67 socket")
	}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	if s.serving {
		s.mu.Unlock()
		return errors.New("dhcp: Serve called twice")
	}
	s.serving = true
	s.conns = append(s.conns, conn67)
	if conn4011 != nil {
		s.conns = append(s.conns, conn4011)
	}
	s.mu.Unlock()

	queue := newPacketQueue(s.opt.Queue)
	var workers sync.WaitGroup
	for range s.opt.Workers {
		workers.Go(func() {
			for {
				p, ok := queue.pop()
				if !ok {
					return
				}
				if waited := time.Since(p.at); waited > s.opt.MaxQueueWait {
					bufPool.Put(p.buf)
					s.dropped.Add(1)
					s.opt.Meter.Dropped("stale")
					s.limits.Warn(s.log, "stale", "dhcp request waited too long for a worker, dropped (the server is overloaded; newer requests are answered first)",
						"port", p.port, "waited", waited.Round(time.Millisecond), "dropped_total", s.dropped.Load())
					continue
				}
				s.process(p)
			}
		})
	}
	s.log.Info("dhcp serving", "server", s.opt.ServerIP, "pxe_port", conn4011 != nil,
		"workers", s.opt.Workers, "tftp", s.opt.TFTP)

	errc := make(chan error, 2)
	var readers sync.WaitGroup
	readers.Go(func() { errc <- s.readLoop(conn67, ServerPort, queue) })
	if conn4011 != nil {
		readers.Go(func() { errc <- s.readLoop(conn4011, PXEServerPort, queue) })
	}
	// The first reader to end (Close or a dead socket) ends the server.
	err := <-errc
	s.Close()
	readers.Wait()
	queue.close()
	workers.Wait()
	s.wg.Wait() // delayed replies
	return err
}

// readLoop reads datagrams until the socket is closed. A full queue drops
// its oldest datagram (see packetQueue): under a flood, work and memory
// stay bounded, and the newest requests are the ones answered.
func (s *Server) readLoop(conn net.PacketConn, port int, queue *packetQueue) error {
	consecutive := 0
	for {
		bp := bufPool.Get().(*[]byte)
		n, from, err := conn.ReadFrom(*bp)
		if err != nil {
			bufPool.Put(bp)
			if s.isClosed() || errors.Is(err, net.ErrClosed) {
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			consecutive++
			if consecutive > 100 {
				return fmt.Errorf("dhcp: reading port %d: %w", port, err)
			}
			s.limits.Warn(s.log, "read error", "dhcp read error", "port", port, "err", err)
			time.Sleep(10 * time.Millisecond)
			continue
		}
		consecutive = 0
		s.received.Add(1)
		if old, evicted := queue.push(packet{buf: bp, n: n, from: from, conn: conn, port: port, at: time.Now()}); evicted {
			bufPool.Put(old.buf)
			s.dropped.Add(1)
			s.opt.Meter.Dropped("queue_full")
			s.limits.Warn(s.log, "queue full", "dhcp queue full, dropping the oldest requests (the server is overloaded; newer requests are answered first)",
				"port", old.port, "dropped_total", s.dropped.Load())
		}
	}
}

func (s *Server) isClosed() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closed
}

// Close stops Serve and closes the sockets given to it and the lease file.
// It is safe to call more than once.
func (s *Server) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	close(s.done)
	conns := s.conns
	s.mu.Unlock()
	var errs []error
	for _, c := range conns {
		if err := c.Close(); err != nil && !errors.Is(err, net.ErrClosed) {
			errs = append(errs, err)
		}
	}
	if s.pool != nil {
		// Wait for in-flight handlers only through Serve; the pool's
		// own lock makes a late write after close fail cleanly.
		errs = append(errs, s.pool.close())
	}
	return errors.Join(errs...)
}

// process handles one datagram on a worker. A panic in the handler (a bug,
// or a library parser tripping over hostile input) costs only this packet.
func (s *Server) process(p packet) {
	defer bufPool.Put(p.buf)
	defer func() {
		if r := recover(); r != nil {
			s.panics.Add(1)
			s.opt.Meter.Dropped("panic")
			s.limits.Warn(s.log, "panic", "dhcp handler panic (packet dropped)", "from", p.from, "panic", fmt.Sprint(r))
		}
	}()
	data := (*p.buf)[:p.n]
	if s.tap != nil {
		s.tap(p.port, data)
	}
	req, err := parseRequest(data)
	if err != nil {
		s.malformed.Add(1)
		s.opt.Meter.Dropped("malformed")
		s.limits.Warn(s.log, "malformed", "dhcp malformed packet dropped", "from", p.from, "port", p.port,
			"bytes", p.n, "err", err)
		return
	}
	mode := string(s.opt.Mode)
	s.opt.Meter.Received(strings.ToLower(req.MessageType().String()), mode)
	r := s.handle(req, p.port, p.from, s.now())
	if r == nil {
		return
	}
	out := r.msg.ToBytes()
	send := func() {
		if _, err := p.conn.WriteTo(out, r.to); err != nil {
			if !s.isClosed() {
				s.limits.Warn(s.log, "write error", "dhcp reply not sent", "mac", req.ClientHWAddr, "to", r.to, "err", err)
			}
			return
		}
		s.answered.Add(1)
		s.opt.Meter.Answered(strings.ToLower(r.msg.MessageType().String()), mode, time.Since(p.at))
		s.report(req, r, len(out), time.Since(p.at))
	}
	if s.opt.ReplyDelay <= 0 {
		send()
		return
	}
	// Delayed replies are bounded too: past 1024 pending ones the delay
	// is skipped rather than piling up timers.
	if s.pendingDelayed.Add(1) > 1024 {
		s.pendingDelayed.Add(-1)
		send()
		return
	}
	s.wg.Add(1)
	time.AfterFunc(s.opt.ReplyDelay, func() {
		defer s.wg.Done()
		defer s.pendingDelayed.Add(-1)
		select {
		case <-s.done:
		default:
			send()
		}
	})
}

// report logs one line for the reply and calls OnEvent.
func (s *Server) report(req *dhcpv4.DHCPv4, r *reply, n int, took time.Duration) {
	ev := r.event
	level := slog.LevelInfo
	if ev.Message == "offer" {
		// In full mode the ACK is the event an administrator cares
		// about; the OFFER before it is detail.
		level = slog.LevelDebug
	}
	if s.log.Enabled(context.Background(), level) {
		attrs := []any{"mac", ev.MAC.String(), "msg", ev.Message, "xid", req.TransactionID.String()}
		if ev.IP.IsValid() {
			attrs = append(attrs, "ip", ev.IP.String())
		}
		if ev.Arch != "" {
			attrs = append(attrs, "arch", ev.Arch)
		}
		attrs = append(attrs, "ipxe", ev.IPXE)
		if ev.BootFile != "" {
			attrs = append(attrs, "bootfile", ev.BootFile)
		}
		if h := r.hostname; h != "" {
			attrs = append(attrs, "host", h)
		}
		attrs = append(attrs, "to", r.to.String(), "bytes", n, "took", took.Round(time.Microsecond))
		s.log.Log(context.Background(), level, "dhcp reply", attrs...)
	}
	if s.opt.OnEvent != nil {
		s.opt.OnEvent(ev)
	}
}
