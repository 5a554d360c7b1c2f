package dhcp

import (
	"net"
	"net/netip"
	"strings"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
)

// reply is a message ready to send, with where to send it.
type reply struct {
	msg      *dhcpv4.DHCPv4
	to       *net.UDPAddr
	event    Event
	hostname string
}

var broadcast = &net.UDPAddr{IP: net.IPv4bcast, Port: ClientPort}

// newReply starts a reply to req (RFC 2131 table 3): the request's xid,
// flags, client hardware address and relay address, the relay agent
// information (RFC 3046) and client identifier (RFC 6842) copied back.
// The library's NewReplyFromRequest first draws a random xid from
// crypto/rand with a context deadline only to overwrite it: a tenth of the
// handler's time under load.
func newReply(req *dhcpv4.DHCPv4, mt dhcpv4.MessageType) *dhcpv4.DHCPv4 {
	gi := req.GatewayIPAddr
	if gi == nil {
		gi = net.IPv4zero
	}
	d := &dhcpv4.DHCPv4{
		OpCode:        dhcpv4.OpcodeBootReply,
		HWType:        req.HWType,
		ClientHWAddr:  req.ClientHWAddr,
		TransactionID: req.TransactionID,
		Flags:         req.Flags,
		ClientIPAddr:  net.IPv4zero,
		YourIPAddr:    net.IPv4zero,
		ServerIPAddr:  net.IPv4zero,
		GatewayIPAddr: gi,
		Options:       make(dhcpv4.Options, 16),
	}
	d.UpdateOption(dhcpv4.OptMessageType(mt))
	for _, o := range []dhcpv4.OptionCode{dhcpv4.OptionRelayAgentInformation, dhcpv4.OptionClientIdentifier} {
		if v := req.Options.Get(o); v != nil {
			d.Options[o.Code()] = v
		}
	}
	return d
}

// handle answers one request; nil means stay silent. port is the local
// port it arrived on, from its source.
func (s *Server) handle(req *dhcpv4.DHCPv4, port int, from net.Addr, now time.Time) *reply {
	fw := identify(req)
	if port == PXEServerPort {
		return s.handleBootServer(req, fw, from)
	}
	if s.opt.Mode == ModeProxy {
		return s.handleProxy(req, fw)
	}
	return s.handleFull(req, fw, now)
}

// bootFor returns the boot file for a PXE/iPXE client, logging once per MAC
// why a machine is not answered.
func (s *Server) bootFor(req *dhcpv4.DHCPv4, fw firmware) (string, bool) {
	f, err := s.bootFile(fw, req.ClientHWAddr)
	if err != nil {
		if s.unsupported.first(req.ClientHWAddr.String()) {
			s.log.Warn("dhcp: not answering machine", "mac", req.ClientHWAddr.String(), "arch", fw.name,
				"vendor_class", clip(req.ClassIdentifier()), "user_class", clip(strings.Join(req.UserClass(), ",")),
				"reason", err.Error())
		}
		return "", false
	}
	return f, true
}

// clip keeps strings from the wire short in logs.
func clip(s string) string {
	if len(s) > 64 {
		return s[:64] + "…"
	}
	return s
}

// handleProxy is proxyDHCP on port 67 (PXE 2.1 section 2.2.4): the site's
// server hands out the address; we answer PXE clients only, with no address
// and the boot file.
func (s *Server) handleProxy(req *dhcpv4.DHCPv4, fw firmware) *reply {
	if !fw.pxe {
		return nil // never answer a machine that is not PXE booting
	}
	var mt dhcpv4.MessageType
	msg := "proxy offer"
	switch req.MessageType() {
	case dhcpv4.MessageTypeDiscover:
		mt = dhcpv4.MessageTypeOffer
	case dhcpv4.MessageTypeRequest:
		// Some ROMs send their request to the proxy on port 67
		// (broadcast, naming us as server) instead of 4011.
		sid := req.ServerIdentifier()
		if sid == nil || !sid.Equal(s.opt.ServerIP.AsSlice()) {
			return nil
		}
		mt = dhcpv4.MessageTypeAck
		msg = "proxy ack"
	default:
		return nil
	}
	file, ok := s.bootFor(req, fw)
	if !ok {
		return nil
	}
	resp := newReply(req, mt)
	s.addPXE(resp, req, file)
	return &reply{msg: resp, to: s.replyAddr(req, nil), event: s.event(req, fw, netip.Addr{}, file, msg)}
}

// handleBootServer answers the PXE boot-server request on port 4011 (PXE
// 2.1 section 2.2.5): the client has its address and asks the proxy for
// its boot file, unicast. iPXE and EDK II both do this after a proxy offer.
func (s *Server) handleBootServer(req *dhcpv4.DHCPv4, fw firmware, from net.Addr) *reply {
	if !fw.pxe && !fw.ipxe {
		return nil
	}
	mt := req.MessageType()
	if mt != dhcpv4.MessageTypeRequest && mt != dhcpv4.MessageTypeInform {
		return nil
	}
	ua, ok := from.(*net.UDPAddr)
	if !ok || ua.IP.To4() == nil || ua.IP.IsUnspecified() {
		return nil
	}
	file, ok := s.bootFor(req, fw)
	if !ok {
		return nil
	}
	resp := newReply(req, dhcpv4.MessageTypeAck)
	resp.ClientIPAddr = req.ClientIPAddr
	s.addPXE(resp, req, file)
	ip, _ := netip.AddrFromSlice(ua.IP.To4())
	to := &net.UDPAddr{IP: ua.IP, Port: ua.Port}
	return &reply{msg: resp, to: to, event: s.event(req, fw, ip, file, "proxy ack")}
}

// addPXE puts the PXE boot options into a reply (PXE 2.1 section 2.2.4,
// RFC 4578): next server, server identifier, vendor class "PXEClient", the
// discovery-control option 43, the client's machine identifier (97) echoed,
// and the boot file in the header and in option 67.
func (s *Server) addPXE(resp, req *dhcpv4.DHCPv4, file string) {
	server := s.opt.ServerIP.AsSlice()
	resp.ServerIPAddr = net.IP(server)
	resp.UpdateOption(dhcpv4.OptServerIdentifier(net.IP(server)))
	resp.BootFileName = file
	resp.UpdateOption(dhcpv4.OptBootFileName(file))
	if !strings.Contains(file, "://") {
		resp.UpdateOption(dhcpv4.OptTFTPServerName(s.opt.ServerIP.String()))
	}
	resp.UpdateOption(dhcpv4.OptClassIdentifier("PXEClient"))
	resp.UpdateOption(dhcpv4.OptGeneric(dhcpv4.OptionVendorSpecificInformation, pxeVendorOptions))
	if uuid := req.GetOneOption(dhcpv4.OptionClientMachineIdentifier); uuid != nil {
		resp.UpdateOption(dhcpv4.OptGeneric(dhcpv4.OptionClientMachineIdentifier, uuid))
	}
}

// replyAddr is where a reply to req goes (RFC 2131 section 4.1): to the
// relay, to the client's own address when it has one, else broadcast. A
// server that unicasts to an address the client does not yet have must
// write the ARP cache first; broadcasting is the fallback the RFC allows
// and costs nothing on a lab LAN.
func (s *Server) replyAddr(req *dhcpv4.DHCPv4, resp *dhcpv4.DHCPv4) *net.UDPAddr {
	if gi := req.GatewayIPAddr; gi != nil && !gi.IsUnspecified() {
		return &net.UDPAddr{IP: gi, Port: ServerPort}
	}
	if resp != nil && resp.MessageType() != dhcpv4.MessageTypeNak {
		if ci := req.ClientIPAddr; ci != nil && !ci.IsUnspecified() {
			return &net.UDPAddr{IP: ci, Port: ClientPort}
		}
	}
	return broadcast
}

func (s *Server) event(req *dhcpv4.DHCPv4, fw firmware, ip netip.Addr, file, msg string) Event {
	return Event{MAC: req.ClientHWAddr, IP: ip, Arch: fw.name, IPXE: fw.ipxe, BootFile: file, Message: msg}
}

// handleFull is the DHCP server of RFC 2131 section 4.3 for an isolated
// lab LAN: it is authoritative for the range.
func (s *Server) handleFull(req *dhcpv4.DHCPv4, fw firmware, now time.Time) *reply {
	if gi := req.GatewayIPAddr; gi != nil && !gi.IsUnspecified() {
		// RFC 2131 4.3.1: the relay's address selects the subnet. We
		// have one range, on our own LAN: a relay on that LAN (or a
		// load tester such as Kea's perfdhcp, which poses as one) is
		// served, relays from other networks are not.
		ga, _ := netip.AddrFromSlice(gi.To4())
		if !s.opt.Prefix.Contains(ga) {
			s.limits.Warn(s.log, "relayed", "dhcp: request relayed from another network ignored (full mode serves only its own LAN)",
				"mac", req.ClientHWAddr.String(), "relay", gi.String())
			return nil
		}
	}
	mac := req.ClientHWAddr.String()
	boot := fw.pxe || fw.ipxe
	file := ""
	if boot {
		var ok bool
		if file, ok = s.bootFor(req, fw); !ok {
			return nil
		}
	}
	switch req.MessageType() {
	case dhcpv4.MessageTypeDiscover:
		var requested netip.Addr
		if r := req.RequestedIPAddress(); r != nil {
			requested, _ = netip.AddrFromSlice(r.To4())
		}
		ip, err := s.pool.offer(mac, requested, now)
		if err != nil {
			s.limits.Warn(s.log, "exhausted", "dhcp: no address to offer", "mac", mac, "err", err)
			return nil
		}
		return s.leaseReply(req, fw, dhcpv4.MessageTypeOffer, ip, file, "offer")

	case dhcpv4.MessageTypeRequest:
		sid := req.ServerIdentifier()
		if sid != nil && !sid.Equal(s.opt.ServerIP.AsSlice()) {
			// RFC 2131 4.3.2: the client chose another server.
			s.pool.cancelOffer(mac)
			return nil
		}
		var ip netip.Addr
		if r := req.RequestedIPAddress(); r != nil {
			ip, _ = netip.AddrFromSlice(r.To4()) // SELECTING, INIT-REBOOT
		} else if ci := req.ClientIPAddr; ci != nil && !ci.IsUnspecified() {
			ip, _ = netip.AddrFromSlice(ci.To4()) // RENEWING, REBINDING
		}
		if !ip.Is4() {
			return nil
		}
		v, why := s.pool.request(mac, ip, sid != nil, s.hostFor(mac, req), s.opt.LeaseTime, now)
		switch v {
		case verdictACK:
			return s.leaseReply(req, fw, dhcpv4.MessageTypeAck, ip, file, "ack")
		case verdictNAK:
			s.log.Info("dhcp nak", "mac", mac, "requested", ip.String(), "reason", why)
			return s.nak(req, fw, why)
		default:
			if why != "" {
				s.limits.Warn(s.log, "ignore", "dhcp: request not answered", "mac", mac, "requested", ip.String(), "reason", why)
			}
			return nil
		}

	case dhcpv4.MessageTypeRelease:
		ip, _ := netip.AddrFromSlice(req.ClientIPAddr.To4())
		if s.pool.release(mac, ip, now) {
			s.log.Info("dhcp release", "mac", mac, "ip", ip.String())
		}
		return nil

	case dhcpv4.MessageTypeDecline:
		var ip netip.Addr
		if r := req.RequestedIPAddress(); r != nil {
			ip, _ = netip.AddrFromSlice(r.To4())
		}
		if s.pool.decline(mac, ip, now) {
			s.log.Warn("dhcp decline: address in use by an unknown host, quarantined", "mac", mac, "ip", ip.String(),
				"for", declineHold.String())
		}
		return nil

	case dhcpv4.MessageTypeInform:
		ci, ok := netip.AddrFromSlice(req.ClientIPAddr.To4())
		if !ok || !ci.Is4() || ci.IsUnspecified() {
			return nil
		}
		r := s.leaseReply(req, fw, dhcpv4.MessageTypeAck, netip.Addr{}, file, "ack")
		// RFC 2131 4.3.5: no lease time, no yiaddr in an INFORM reply.
		r.msg.Options.Del(dhcpv4.OptionIPAddressLeaseTime)
		r.msg.Options.Del(dhcpv4.OptionRenewTimeValue)
		r.msg.Options.Del(dhcpv4.OptionRebindingTimeValue)
		r.event.IP = ci
		return r
	}
	return nil
}

// hostFor is the name a machine gets: its machines: entry, else the name it
// sent (option 12), kept only for the lease file.
func (s *Server) hostFor(mac string, req *dhcpv4.DHCPv4) string {
	if n, ok := s.opt.Machines[mac]; ok {
		return n
	}
	h := req.HostName()
	if len(h) > 63 || strings.ContainsFunc(h, func(r rune) bool { return r < 0x21 || r > 0x7e }) {
		return ""
	}
	return h
}

// leaseReply builds an OFFER or ACK for ip with the network settings, and
// the PXE options when file is set.
func (s *Server) leaseReply(req *dhcpv4.DHCPv4, fw firmware, mt dhcpv4.MessageType, ip netip.Addr, file, msg string) *reply {
	resp := newReply(req, mt)
	if mt == dhcpv4.MessageTypeAck {
		resp.ClientIPAddr = req.ClientIPAddr // RFC 2131 table 3
	}
	if ip.IsValid() {
		resp.YourIPAddr = net.IP(ip.AsSlice())
	}
	resp.UpdateOption(dhcpv4.OptServerIdentifier(net.IP(s.opt.ServerIP.AsSlice())))
	resp.UpdateOption(dhcpv4.OptSubnetMask(s.mask))
	lt := s.opt.LeaseTime
	resp.UpdateOption(dhcpv4.OptIPAddressLeaseTime(lt))
	// RFC 2131 4.4.5 defaults: T1 = 0.5, T2 = 0.875 of the lease.
	resp.UpdateOption(dhcpv4.OptRenewTimeValue(lt / 2))
	resp.UpdateOption(dhcpv4.OptRebindingTimeValue(lt * 7 / 8))
	if s.opt.Router.IsValid() {
		resp.UpdateOption(dhcpv4.OptRouter(net.IP(s.opt.Router.AsSlice())))
	}
	if len(s.opt.DNS) > 0 {
		ips := make([]net.IP, len(s.opt.DNS))
		for i, d := range s.opt.DNS {
			ips[i] = net.IP(d.AsSlice())
		}
		resp.UpdateOption(dhcpv4.OptDNS(ips...))
	}
	host := ""
	if n, ok := s.opt.Machines[req.ClientHWAddr.String()]; ok {
		host = n
		resp.UpdateOption(dhcpv4.OptHostName(n))
	}
	if file != "" {
		s.addPXE(resp, req, file)
	}
	return &reply{msg: resp, to: s.replyAddr(req, resp), event: s.event(req, fw, ip, file, msg), hostname: host}
}

// nak refuses a REQUEST (RFC 2131 4.3.2, table 3): broadcast, no address.
func (s *Server) nak(req *dhcpv4.DHCPv4, fw firmware, why string) *reply {
	resp := newReply(req, dhcpv4.MessageTypeNak)
	resp.UpdateOption(dhcpv4.OptServerIdentifier(net.IP(s.opt.ServerIP.AsSlice())))
	resp.UpdateOption(dhcpv4.OptMessage(why))
	if req.GatewayIPAddr != nil && !req.GatewayIPAddr.IsUnspecified() {
		resp.SetBroadcast()
	}
	return &reply{msg: resp, to: s.replyAddr(req, resp), event: s.event(req, fw, netip.Addr{}, "", "nak")}
}
