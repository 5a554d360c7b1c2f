package client

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/dhcpv4/nclient4"
	"github.com/u-root/u-root/pkg/dhclient"
	"github.com/vishvananda/netlink"
)

// realOffer matches only DHCP offers that hand out an address. A
// proxyDHCP server (boottorrent's own in proxy mode, RFC 4578 / PXE 2.1)
// answers every PXE client with yiaddr 0.0.0.0; nclient4 would take that
// first offer and the link would never get an address.
func realOffer(p *dhcpv4.DHCPv4) bool {
	if p == nil || p.OpCode != dhcpv4.OpcodeBootReply || p.MessageType() != dhcpv4.MessageTypeOffer {
		return false
	}
	return usableAddr(p.YourIPAddr)
}

// realAck matches the ACK (with an address) or NAK to our request.
func realAck(server net.IP) nclient4.Matcher {
	return func(p *dhcpv4.DHCPv4) bool {
		if p == nil || p.OpCode != dhcpv4.OpcodeBootReply {
			return false
		}
		if sid := p.ServerIdentifier(); server != nil && sid != nil && !sid.Equal(server) {
			return false
		}
		switch p.MessageType() {
		case dhcpv4.MessageTypeNak:
			return true
		case dhcpv4.MessageTypeAck:
			return usableAddr(p.YourIPAddr)
		}
		return false
	}
}

func usableAddr(ip net.IP) bool {
	ip4 := ip.To4()
	return ip4 != nil && !ip4.IsUnspecified() && !ip4.IsLoopback() && !ip4.IsMulticast() && !ip4.Equal(net.IPv4bcast)
}

// dhcpFirstWait is how long the client waits for a DHCP answer before it
// sends again; each further wait doubles (1, 2, 4, 8, 16 s, within the
// 45 s limit). RFC 2131 suggests 4 s, for networks of routers and relays;
// a boot server is one hop away and answers in milliseconds. With 1 %
// packet loss on the links, one machine in a class of 20 lost a DHCP
// packet in about half the runs, started 4 s late and finished 4 s after
// the others (cmd/swarmbench/TUNING.md).
const dhcpFirstWait = time.Second

// dhcpLease brings iface up, takes a lease (ignoring proxy offers) and
// configures the address and default route with u-root's dhclient.
func dhcpLease(ctx context.Context, iface string, log *slog.Logger) error {
	t0 := time.Now()
	link, err := dhclient.IfUp(iface, 20*time.Second)
	if err != nil {
		return fmt.Errorf("link %s: %w", iface, err)
	}
	c, err := nclient4.New(iface, nclient4.WithTimeout(dhcpFirstWait), nclient4.WithRetry(6))
	if err != nil {
		return fmt.Errorf("dhcp on %s: %w", iface, err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(ctx, 45*time.Second)
	defer cancel()
	discover, err := dhcpv4.NewDiscovery(c.InterfaceAddr(), dhcpv4.WithOption(dhcpv4.OptMaxMessageSize(nclient4.MaxMessageSize)),
		dhcpv4.WithOption(dhcpv4.OptClassIdentifier("boottorrent")))
	if err != nil {
		return err
	}
	var ignored int
	offer, err := c.SendAndRead(ctx, nclient4.DefaultServers, discover, func(p *dhcpv4.DHCPv4) bool {
		if realOffer(p) {
			return true
		}
		ignored++
		return false
	})
	if ignored > 0 {
		log.Info("dhcp offers without an address ignored (proxyDHCP)", "stage", "network", "iface", iface, "count", ignored)
	}
	if err != nil {
		return fmt.Errorf("no DHCP offer with an address on %s (%d offers without one ignored): %w", iface, ignored, err)
	}
	req, err := dhcpv4.NewRequestFromOffer(offer, dhcpv4.WithOption(dhcpv4.OptMaxMessageSize(nclient4.MaxMessageSize)))
	if err != nil {
		return err
	}
	ack, err := c.SendAndRead(ctx, nclient4.DefaultServers, req, realAck(offer.ServerIdentifier()))
	if err != nil {
		return fmt.Errorf("no DHCP ACK on %s: %w", iface, err)
	}
	if ack.MessageType() == dhcpv4.MessageTypeNak {
		return fmt.Errorf("DHCP server %v refused the address %v (NAK: %s)", ack.ServerIdentifier(), offer.YourIPAddr, ack.Message())
	}
	// Configure4 also writes the lease's DNS servers to /etc/resolv.conf.
	// As /init that file is ours; run as an ordinary process (tests, the
	// swarm benchmark) inside a network namespace, /etc is still the
	// host's, and the host's resolver must not be overwritten.
	configure := dhclient.Configure4
	if os.Getpid() != 1 {
		configure = configureNoDNS
	}
	if err := configure(link, ack); err != nil {
		return fmt.Errorf("configure %s with %v: %w", iface, ack.YourIPAddr, err)
	}
	log.Info("dhcp lease", "stage", "network", "iface", iface, "ip", ack.YourIPAddr, "server", ack.ServerIdentifier(),
		"router", ack.Router(), "lease", ack.IPAddressLeaseTime(time.Hour), "duration", time.Since(t0).Round(time.Millisecond))
	return nil
}

// configureNoDNS sets the lease's address and default route like
// dhclient.Configure4, without touching /etc/resolv.conf.
func configureNoDNS(link netlink.Link, ack *dhcpv4.DHCPv4) error {
	l := dhclient.NewPacket4(link, ack).Lease()
	if l == nil {
		return fmt.Errorf("packet has no IP lease")
	}
	if err := netlink.AddrReplace(link, &netlink.Addr{IPNet: l}); err != nil {
		return fmt.Errorf("add %s: %w", l, err)
	}
	if gw := ack.Router(); len(gw) > 0 {
		if err := netlink.RouteReplace(&netlink.Route{LinkIndex: link.Attrs().Index, Gw: gw[0]}); err != nil {
			return fmt.Errorf("default route via %s: %w", gw[0], err)
		}
	}
	return nil
}
