package client

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/dhcpv4/server4"

	"github.com/boottorrent/boottorrent/netboot/netns"
	"github.com/boottorrent/boottorrent/netboot/netns/nstest"
)

// TestDHCPLeaseIgnoresProxyOffer takes a lease on a test LAN where a
// proxyDHCP-style server answers every DISCOVER at once with yiaddr
// 0.0.0.0, and a real DHCP server (dnsmasq) answers a second later with
// an address. The client must skip the first offer, configure the
// second, and end with the real address on its link.
func TestDHCPLeaseIgnoresProxyOffer(t *testing.T) {
	if _, err := exec.LookPath("dnsmasq"); err != nil {
		t.Skip("needs dnsmasq: apt-get install dnsmasq-base")
	}
	_, hosts := nstest.LAN(t, "10.81.0.1/24", "10.81.0.2/24", "")
	srv, proxy, cli := hosts[0], hosts[1], hosts[2]

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	dm := srv.Command(ctx, "dnsmasq", "--no-daemon", "--port=0", "--interface=eth0", "--bind-interfaces",
		"--dhcp-range=10.81.0.50,10.81.0.60,1h", "--dhcp-reply-delay=1", "--leasefile-ro", "--no-resolv", "--no-hosts",
		"--pid-file=", "--log-dhcp")
	var dmLog nstest.Buffer
	dm.Stdout, dm.Stderr = &dmLog, &dmLog
	if err := dm.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { dm.Process.Kill(); dm.Wait() })

	var proxyOffers atomic.Int32
	serveDHCP(t, proxy, func(m *dhcpv4.DHCPv4) *dhcpv4.DHCPv4 {
		if m.MessageType() != dhcpv4.MessageTypeDiscover {
			return nil
		}
		resp, err := dhcpv4.NewReplyFromRequest(m, dhcpv4.WithMessageType(dhcpv4.MessageTypeOffer),
			dhcpv4.WithServerIP(net.IPv4(10, 81, 0, 2)),
			dhcpv4.WithOption(dhcpv4.OptServerIdentifier(net.IPv4(10, 81, 0, 2))),
			dhcpv4.WithOption(dhcpv4.OptClassIdentifier("PXEClient")))
		if err != nil {
			return nil
		}
		proxyOffers.Add(1)
		return resp
	})

	log := slog.New(slog.NewTextHandler(io.MultiWriter(testWriter{t}), nil))
	if err := cli.Do(func() error { return dhcpLease(ctx, "eth0", log) }); err != nil {
		t.Fatalf("lease: %v\ndnsmasq:\n%s", err, dmLog.String())
	}
	if proxyOffers.Load() == 0 {
		t.Fatal("the proxy never offered: the test proved nothing")
	}
	out, err := cli.Run("ip", "-4", "-o", "addr", "show", "dev", "eth0")
	if err != nil {
		t.Fatal(err)
	}
	if !hasAddrIn(string(out), netip.MustParseAddr("10.81.0.50"), netip.MustParseAddr("10.81.0.60")) {
		t.Fatalf("eth0 has no address from dnsmasq's range 10.81.0.50-10.81.0.60: %s", out)
	}
	t.Logf("proxy offers ignored: %d; %s", proxyOffers.Load(), strings.TrimSpace(string(out)))
}

// hasAddrIn reports whether the output of "ip -4 -o addr show" holds an
// IPv4 address in [lo, hi].
func hasAddrIn(ipOut string, lo, hi netip.Addr) bool {
	f := strings.Fields(ipOut)
	for i := 0; i+1 < len(f); i++ {
		if f[i] != "inet" {
			continue
		}
		p, err := netip.ParsePrefix(f[i+1])
		if err != nil {
			continue
		}
		if a := p.Addr(); a.Compare(lo) >= 0 && a.Compare(hi) <= 0 {
			return true
		}
	}
	return false
}

func TestHasAddrIn(t *testing.T) {
	lo, hi := netip.MustParseAddr("10.81.0.50"), netip.MustParseAddr("10.81.0.60")
	for _, c := range []struct {
		out  string
		want bool
	}{
		{"2: eth0    inet 10.81.0.60/24 brd 10.81.0.255 scope global eth0", true},
		{"2: eth0    inet 10.81.0.50/24 brd 10.81.0.255 scope global eth0", true},
		{"2: eth0    inet 10.81.0.5/24 brd 10.81.0.255 scope global eth0", false},
		{"2: eth0    inet 10.81.0.61/24 brd 10.81.0.255 scope global eth0", false},
		{"", false},
	} {
		if got := hasAddrIn(c.out, lo, hi); got != c.want {
			t.Errorf("hasAddrIn(%q) = %v, want %v", c.out, got, c.want)
		}
	}
}

// TestDHCPRetransmitsLostDiscover takes a lease from a DHCP server that
// ignores the first DISCOVER it hears, as when a packet is lost on the
// way. The client must send again after dhcpFirstWait, not after the 4 s
// a routed network would need: one machine that waits 4 s makes a whole
// class of booting machines wait for it.
func TestDHCPRetransmitsLostDiscover(t *testing.T) {
	_, hosts := nstest.LAN(t, "10.82.0.1/24", "")
	srv, cli := hosts[0], hosts[1]
	serverIP, clientIP := net.IPv4(10, 82, 0, 1), net.IPv4(10, 82, 0, 50)
	var mu sync.Mutex
	var discovers []time.Time // when the server heard each DISCOVER
	serveDHCP(t, srv, func(m *dhcpv4.DHCPv4) *dhcpv4.DHCPv4 {
		var typ dhcpv4.MessageType
		switch m.MessageType() {
		case dhcpv4.MessageTypeDiscover:
			mu.Lock()
			discovers = append(discovers, time.Now())
			lost := len(discovers) == 1
			mu.Unlock()
			if lost {
				return nil
			}
			typ = dhcpv4.MessageTypeOffer
		case dhcpv4.MessageTypeRequest:
			typ = dhcpv4.MessageTypeAck
		default:
			return nil
		}
		resp, err := dhcpv4.NewReplyFromRequest(m, dhcpv4.WithMessageType(typ),
			dhcpv4.WithYourIP(clientIP), dhcpv4.WithServerIP(serverIP),
			dhcpv4.WithOption(dhcpv4.OptServerIdentifier(serverIP)),
			dhcpv4.WithOption(dhcpv4.OptSubnetMask(net.CIDRMask(24, 32))),
			dhcpv4.WithOption(dhcpv4.OptIPAddressLeaseTime(time.Hour)))
		if err != nil {
			return nil
		}
		return resp
	})

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	log := slog.New(slog.NewTextHandler(io.MultiWriter(testWriter{t}), nil))
	if err := cli.Do(func() error { return dhcpLease(ctx, "eth0", log) }); err != nil {
		t.Fatalf("lease: %v", err)
	}
	mu.Lock()
	heard := slices.Clone(discovers)
	mu.Unlock()
	if len(heard) < 2 {
		t.Fatalf("the server heard %d DISCOVER, want the lost one and its retransmission", len(heard))
	}
	gap := heard[1].Sub(heard[0])
	if gap < dhcpFirstWait/2 || gap > 2*dhcpFirstWait {
		t.Fatalf("the client sent its DISCOVER again after %v, want about %v", gap, dhcpFirstWait)
	}
	out, err := cli.Run("ip", "-4", "-o", "addr", "show", "dev", "eth0")
	if err != nil {
		t.Fatal(err)
	}
	if !hasAddrIn(string(out), netip.MustParseAddr("10.82.0.50"), netip.MustParseAddr("10.82.0.50")) {
		t.Fatalf("eth0 has not the leased 10.82.0.50: %s", out)
	}
	t.Logf("DISCOVER sent again after %v; %s", gap.Round(time.Millisecond), strings.TrimSpace(string(out)))
}

// serveDHCP runs a DHCP server on ns's eth0 until the test ends: reply
// gives the answer to a client's message (nil: none), which is broadcast.
func serveDHCP(t *testing.T, ns *netns.NS, reply func(m *dhcpv4.DHCPv4) *dhcpv4.DHCPv4) {
	t.Helper()
	var srv *server4.Server
	err := ns.Do(func() error {
		var err error
		srv, err = server4.NewServer("eth0", &net.UDPAddr{Port: 67}, func(conn net.PacketConn, _ net.Addr, m *dhcpv4.DHCPv4) {
			if resp := reply(m); resp != nil {
				conn.WriteTo(resp.ToBytes(), &net.UDPAddr{IP: net.IPv4bcast, Port: 68})
			}
		})
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve()
	t.Cleanup(func() { srv.Close() })
}
