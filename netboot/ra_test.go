package netboot

import (
	"errors"
	"io"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/icmp"
	"golang.org/x/net/ipv6"

	"github.com/boottorrent/boottorrent/netboot/netns"
	"github.com/boottorrent/boottorrent/netboot/netns/nstest"
)

// TestRouterAdvertsAnswerOnlyAccepted: a machine the answer function
// accepts gets a router advertisement back for its solicitation (type
// 134, router lifetime 0, unicast to its link-local address); one it
// does not accept gets nothing; after Close nobody does.
func TestRouterAdvertsAnswerOnlyAccepted(t *testing.T) {
	lan, hosts := nstest.LAN(t, "10.78.0.1/24")
	srv := hosts[0]
	type machine struct {
		ns   *netns.NS
		mac  string
		conn *ipv6.PacketConn
		ifi  *net.Interface
	}
	var ms []*machine
	for i := range 2 {
		ns := nstest.Host(t, lan, "10.78.0."+strconv.Itoa(10+i)+"/24")
		m := &machine{ns: ns}
		err := ns.Do(func() error {
			var err error
			if m.ifi, err = net.InterfaceByName("eth0"); err != nil {
				return err
			}
			m.mac = m.ifi.HardwareAddr.String()
			c, err := icmp.ListenPacket("ip6:ipv6-icmp", "::")
			if err != nil {
				return err
			}
			t.Cleanup(func() { c.Close() })
			m.conn = c.IPv6PacketConn()
			var f ipv6.ICMPFilter
			f.SetAll(true)
			f.Accept(ipv6.ICMPTypeRouterAdvertisement)
			return errors.Join(m.conn.SetICMPFilter(&f), m.conn.SetMulticastHopLimit(255), m.conn.SetHopLimit(255))
		})
		if err != nil {
			t.Fatal(err)
		}
		ms = append(ms, m)
	}
	waitLinkLocal(t, srv)
	for _, m := range ms {
		waitLinkLocal(t, m.ns)
	}
	var ra *RouterAdverts
	if err := srv.Do(func() error {
		var err error
		ra, err = StartRouterAdverts("eth0", func(mac string) bool { return mac == ms[0].mac },
			slog.New(slog.NewTextHandler(io.Discard, nil)), func(string, ...any) {})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	// solicit sends a router solicitation with the machine's link-layer
	// address and reports whether an advertisement came back in time.
	solicit := func(m *machine) bool {
		t.Helper()
		hw := m.ifi.HardwareAddr
		rs := append([]byte{133, 0, 0, 0, 0, 0, 0, 0, ndpOptSourceLinkAddr, 1}, hw...)
		dst := &net.IPAddr{IP: net.ParseIP("ff02::2"), Zone: strconv.Itoa(m.ifi.Index)}
		if _, err := m.conn.WriteTo(rs, &ipv6.ControlMessage{HopLimit: 255, IfIndex: m.ifi.Index}, dst); err != nil {
			t.Fatalf("send solicitation: %v", err)
		}
		buf := make([]byte, 1500)
		m.conn.SetReadDeadline(time.Now().Add(time.Second))
		for {
			n, _, src, err := m.conn.ReadFrom(buf)
			if err != nil {
				return false
			}
			if n >= 8 && buf[0] == icmpRouterAdvertisement {
				if buf[6] != 0 || buf[7] != 0 {
					t.Errorf("advertisement with router lifetime %d, want 0", int(buf[6])<<8|int(buf[7]))
				}
				if a, ok := src.(*net.IPAddr); !ok || !a.IP.IsLinkLocalUnicast() {
					t.Errorf("advertisement from %v, want the server's link-local address", src)
				}
				return true
			}
		}
	}
	if !solicit(ms[0]) {
		t.Error("the accepted machine got no router advertisement")
	}
	if solicit(ms[1]) {
		t.Error("a machine the answer function refused got a router advertisement")
	}
	if err := ra.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	if solicit(ms[0]) {
		t.Error("a router advertisement after Close")
	}
}

// waitLinkLocal waits until eth0 in ns has a link-local address that has
// finished duplicate address detection (a tentative one cannot send).
func waitLinkLocal(t *testing.T, ns *netns.NS) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		out, err := ns.Run("ip", "-6", "addr", "show", "dev", "eth0", "scope", "link")
		if err == nil && strings.Contains(string(out), "fe80::") && !strings.Contains(string(out), "tentative") {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("no usable link-local address on eth0 in %s after 10 s: %s %v", ns.Name, out, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
