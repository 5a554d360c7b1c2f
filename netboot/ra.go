package netboot

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/net/icmp"
	"golang.org/x/net/ipv6"

	"github.com/boottorrent/boottorrent/netboot/dhcp"
)

// ICMPv6 message types (RFC 4861 section 4).
const (
	icmpRouterSolicitation  = 133
	icmpRouterAdvertisement = 134
	ndpOptSourceLinkAddr    = 1
)

// raWindow is how long after its last DHCP, TFTP or boot-script request a
// machine counts as booting through us (and gets a router advertisement).
const raWindow = 5 * time.Minute

// RouterAdverts answers IPv6 router solicitations from machines that are
// PXE-booting through us with a router advertisement that says nothing:
// router lifetime 0 (we are not a router), no prefixes, no M/O flags.
//
// Why: iPXE configures IPv4 (DHCP) and IPv6 (router discovery) together
// and reports "Configuring (net0 …) ok" only when both have finished. On
// a LAN without an IPv6 router, router discovery runs until it times out,
// about 14 s measured here under TCG, on every boot, after DHCP has long
// succeeded. iPXE ends router discovery at the first solicited
// advertisement it receives (src/net/ndp.c, ipv6conf_rx_router_advertisement),
// and one with lifetime 0 and no options gives it no route and no address.
//
// Only the machines the caller's answer function accepts are answered
// (the server: those the registry saw booting within raWindow, or anyone
// in dhcp.mode off; see startRouterAdverts), by
// unicast to their link-local address, so the rest of the LAN never hears
// from us. Where the site has an IPv6 router, its advertisement usually
// arrives first and ours changes nothing.
type RouterAdverts struct {
	conn   *icmp.PacketConn
	p      *ipv6.PacketConn
	ifi    *net.Interface
	answer func(mac string) bool
	log    *slog.Logger
	warn   func(msg string, args ...any)
	closed chan struct{}
	done   chan struct{}
}

// StartRouterAdverts opens the ICMPv6 socket on ifname and answers the
// solicitations of the machines answer accepts (by MAC, lower case) until
// Close. warn reports an advertisement that could not be sent (the
// server rate-limits it). It needs root (or CAP_NET_RAW), like the DHCP
// sockets, and runs in the network namespace of the calling thread.
func StartRouterAdverts(ifname string, answer func(mac string) bool, log *slog.Logger, warn func(msg string, args ...any)) (*RouterAdverts, error) {
	ifi, err := net.InterfaceByName(ifname)
	if err != nil {
		return nil, err
	}
	c, err := icmp.ListenPacket("ip6:ipv6-icmp", "::")
	if err != nil {
		return nil, err
	}
	p := c.IPv6PacketConn()
	var f ipv6.ICMPFilter
	f.SetAll(true)
	f.Accept(ipv6.ICMPTypeRouterSolicitation)
	errs := []error{
		p.SetICMPFilter(&f),
		// RFC 4861 section 6.1.1: a solicitation is valid only with hop
		// limit 255 (it cannot have crossed a router).
		p.SetControlMessage(ipv6.FlagInterface|ipv6.FlagHopLimit, true),
		p.JoinGroup(ifi, &net.IPAddr{IP: net.ParseIP("ff02::2")}),
		p.SetHopLimit(255),
		p.SetMulticastHopLimit(255),
	}
	if err := errors.Join(errs...); err != nil {
		c.Close()
		return nil, err
	}
	ra := &RouterAdverts{conn: c, p: p, ifi: ifi, answer: answer, log: log, warn: warn,
		closed: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(ra.done)
		ra.serve()
	}()
	return ra, nil
}

// Close stops answering and waits for the reader to return.
func (ra *RouterAdverts) Close() error {
	close(ra.closed)
	err := ra.conn.Close()
	<-ra.done
	return err
}

// startRouterAdverts answers the machines the registry saw booting
// within raWindow, or, with dhcp.mode off, every machine on the interface.
// In off mode an iPXE-ROM machine is first seen at /boot.ipxe, after
// iPXE's IPv6 wait, so the filter would cost each one ~13 s. Answering
// anyone is harmless: the reply is unicast to the solicitor and says only
// "no router here" (lifetime 0, no prefixes, no flags): it gives no
// route and no address, and RFC 4861 has a host drop a lifetime-0 sender
// from its router list. With DHCP on, every PXE machine is seen at DHCP before it
// solicits, so the filter costs nothing and the rest of the LAN never
// hears from us.
func (s *Server) startRouterAdverts(ifname string) error {
	answer := func(mac string) bool { return s.reg.RecentlyBooting(mac, raWindow) }
	if s.opts.DHCP.Mode == dhcp.ModeOff {
		answer = func(string) bool { return true }
	}
	ra, err := StartRouterAdverts(ifname, answer, s.log,
		func(msg string, args ...any) { s.limit.Warn(s.log, "ra send", msg, args...) })
	if err != nil {
		return err
	}
	s.closers = append(s.closers, ra.Close)
	return nil
}

func (ra *RouterAdverts) serve() {
	buf := make([]byte, 1500)
	for {
		n, cm, src, err := ra.p.ReadFrom(buf)
		if err != nil {
			select {
			case <-ra.closed:
				return
			default:
			}
			if errors.Is(err, net.ErrClosed) {
				return
			}
			time.Sleep(10 * time.Millisecond)
			continue
		}
		if cm == nil || cm.IfIndex != ra.ifi.Index || cm.HopLimit != 255 {
			continue
		}
		mac, ok := parseRouterSolicitation(buf[:n], src)
		if !ok || !ra.answer(mac) {
			continue
		}
		dst, ok := src.(*net.IPAddr)
		if !ok {
			continue
		}
		// A numeric zone: a name would be looked up in the network
		// namespace of whatever thread runs this goroutine.
		dst = &net.IPAddr{IP: dst.IP, Zone: strconv.Itoa(ra.ifi.Index)}
		msg := routerAdvertisement(ra.ifi.HardwareAddr)
		if _, err := ra.p.WriteTo(msg, &ipv6.ControlMessage{HopLimit: 255, IfIndex: ra.ifi.Index}, dst); err != nil {
			ra.warn("ipv6 router advertisement not sent", "mac", mac, "err", err)
			continue
		}
		ra.log.Debug("ipv6 router advertisement sent (ends iPXE's router discovery)", "mac", mac, "to", dst.String())
	}
}

// parseRouterSolicitation checks an ICMPv6 router solicitation and returns
// the sender's MAC from its source link-layer address option, or else from
// the EUI-64 interface identifier of its link-local source address.
func parseRouterSolicitation(b []byte, src net.Addr) (string, bool) {
	if len(b) < 8 || b[0] != icmpRouterSolicitation || b[1] != 0 {
		return "", false
	}
	for opts := b[8:]; len(opts) >= 2; {
		l := int(opts[1]) * 8
		if l == 0 || l > len(opts) {
			return "", false // malformed: RFC 4861 says discard
		}
		if opts[0] == ndpOptSourceLinkAddr && l == 8 {
			return strings.ToLower(net.HardwareAddr(opts[2:8]).String()), true
		}
		opts = opts[l:]
	}
	if ia, ok := src.(*net.IPAddr); ok {
		if a, ok := netip.AddrFromSlice(ia.IP); ok && a.Is6() && a.IsLinkLocalUnicast() {
			x := a.As16()
			if x[11] == 0xff && x[12] == 0xfe {
				mac := net.HardwareAddr{x[8] ^ 0x02, x[9], x[10], x[13], x[14], x[15]}
				return strings.ToLower(mac.String()), true
			}
		}
	}
	return "", false
}

// routerAdvertisement builds an RA that ends router discovery and
// configures nothing: router lifetime 0, no flags, no prefixes; only our
// link-layer address. The kernel fills in the ICMPv6 checksum.
func routerAdvertisement(hw net.HardwareAddr) []byte {
	var b bytes.Buffer
	b.Write([]byte{icmpRouterAdvertisement, 0, 0, 0}) // type, code, checksum
	b.Write([]byte{0, 0})                             // cur hop limit: unspecified; flags: none
	binary.Write(&b, binary.BigEndian, uint16(0))     // router lifetime: not a router
	binary.Write(&b, binary.BigEndian, uint32(0))     // reachable time: unspecified
	binary.Write(&b, binary.BigEndian, uint32(0))     // retrans timer: unspecified
	if len(hw) == 6 {
		b.Write([]byte{ndpOptSourceLinkAddr, 1})
		b.Write(hw)
	}
	return b.Bytes()
}

// raError explains why the advertisements could not start; they only save
// time, so Start goes on without them.
func raError(err error) string {
	if errors.Is(err, syscall.EPERM) || errors.Is(err, syscall.EACCES) {
		return fmt.Sprintf("ipv6 router advertisements for iPXE disabled: the ICMPv6 socket needs root or CAP_NET_RAW (boots wait ~14 s for IPv6 router discovery where the LAN has no IPv6 router): %v", err)
	}
	return fmt.Sprintf("ipv6 router advertisements for iPXE disabled (boots wait ~14 s for IPv6 router discovery where the LAN has no IPv6 router): %v", err)
}
