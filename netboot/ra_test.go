package netboot

import (
	"context"
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

	"github.com/boottorrent/boottorrent/netboot/dhcp"
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
	var ms []*raMachine
	for i := range 2 {
		ms = append(ms, newRAMachine(t, nstest.Host(t, lan, "10.78.0."+strconv.Itoa(10+i)+"/24")))
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
	if !ms[0].solicit(t) {
		t.Error("the accepted machine got no router advertisement")
	}
	if ms[1].solicit(t) {
		t.Error("a machine the answer function refused got a router advertisement")
	}
	if err := ra.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	if ms[0].solicit(t) {
		t.Error("a router advertisement after Close")
	}
}

// raMachine is a machine on the test LAN that sends router
// solicitations and listens for advertisements.
type raMachine struct {
	ns   *netns.NS
	mac  string
	conn *ipv6.PacketConn
	ifi  *net.Interface
}

func newRAMachine(t *testing.T, ns *netns.NS) *raMachine {
	t.Helper()
	m := &raMachine{ns: ns}
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
	return m
}

// solicit sends a router solicitation with the machine's link-layer
// address and reports whether an advertisement came back in time.
func (m *raMachine) solicit(t *testing.T) bool {
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

// TestRouterAdvertsDHCPModes: with dhcp.mode off the server has not seen
// an iPXE-ROM machine before its router solicitation (it first shows up
// at /boot.ipxe, after iPXE's IPv6 wait), so a solicitation from a machine
// the server never saw is answered; in proxy mode the server sees every
// PXE machine at DHCP first and answers only those.
func TestRouterAdvertsDHCPModes(t *testing.T) {
	for _, mode := range []dhcp.Mode{dhcp.ModeOff, dhcp.ModeProxy} {
		t.Run(string(mode), func(t *testing.T) {
			lan, hosts := nstest.LAN(t, "10.78.0.1/24")
			srvNS := hosts[0]
			m := newRAMachine(t, nstest.Host(t, lan, "10.78.0.10/24"))
			waitLinkLocal(t, srvNS)
			waitLinkLocal(t, m.ns)
			o := labOptions("eth0", "10.78.0.1/24")
			o.DHCP.Mode, o.TFTP = mode, false
			o.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
			s, err := New(o)
			if err != nil {
				t.Fatal(err)
			}
			if err := srvNS.Do(func() error { return s.Start(context.Background()) }); err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			got := m.solicit(t)
			if want := mode == dhcp.ModeOff; got != want {
				t.Errorf("dhcp.mode %s: an unseen machine's solicitation answered: %v, want %v", mode, got, want)
			}
		})
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
