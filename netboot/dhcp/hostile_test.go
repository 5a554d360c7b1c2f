package dhcp

import (
	"bytes"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/boottorrent/boottorrent/netboot/netns/nstest"
	"github.com/insomniacslk/dhcp/dhcpv4"
)

// TestFullModeRefusesInvalidChaddr: full mode leases by client hardware
// address, so an address no NIC has (all zero, broadcast, multicast) gets
// no OFFER and no lease; the request is counted as malformed. A valid
// client sent after them is answered.
func TestFullModeRefusesInvalidChaddr(t *testing.T) {
	cases := []struct {
		name string
		mac  net.HardwareAddr
	}{
		{"all zero", net.HardwareAddr{0, 0, 0, 0, 0, 0}},
		{"broadcast", net.HardwareAddr{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}},
		{"multicast", net.HardwareAddr{0x01, 0x00, 0x5e, 0, 0, 1}},
	}
	s := newTestServer(t, testOptions(ModeFull))
	c := newMemConn(16)
	done := make(chan error, 1)
	go func() { done <- s.Serve(c, nil) }()
	for _, tc := range cases {
		d, err := dhcpv4.NewDiscovery(tc.mac)
		if err != nil {
			t.Fatal(err)
		}
		c.in <- d.ToBytes()
	}
	good := plainDiscover(t)
	c.in <- good.ToBytes()
	deadline := time.Now().Add(5 * time.Second)
	for c.written() < 1 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	time.Sleep(50 * time.Millisecond) // a late reply to a bad request would show up here
	s.Close()
	<-done
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.out) != 1 {
		t.Fatalf("%d replies, want 1 (the valid client's)", len(c.out))
	}
	r, err := dhcpv4.FromBytes(c.out[0])
	if err != nil || !bytes.Equal(r.ClientHWAddr, testMAC) || r.MessageType() != dhcpv4.MessageTypeOffer {
		t.Fatalf("reply %v (%v), want an OFFER to %v", r, err, testMAC)
	}
	if n := s.pool.len(); n != 1 {
		t.Fatalf("%d addresses held, want 1", n)
	}
	if got := s.malformed.Load(); got != uint64(len(cases)) {
		t.Fatalf("%d requests counted malformed, want %d", got, len(cases))
	}
	for _, tc := range cases {
		if _, err := parseRequest(mustDiscover(t, tc.mac).ToBytes()); err == nil {
			t.Errorf("%s: chaddr %v accepted", tc.name, tc.mac)
		}
	}
}

func mustDiscover(t *testing.T, mac net.HardwareAddr) *dhcpv4.DHCPv4 {
	t.Helper()
	d, err := dhcpv4.NewDiscovery(mac)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// TestPlainClientHasNoArch: a DHCP client that is not a PXE ROM and sends
// no option 93 (udhcpc, an OS) is not logged or reported as BIOS.
func TestPlainClientHasNoArch(t *testing.T) {
	var logs nstest.Buffer
	opt := testOptions(ModeFull)
	opt.Logger = slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	s := newTestServer(t, opt)
	r := s.handle(roundTrip(t, plainDiscover(t)), ServerPort, nil, t0)
	if r == nil {
		t.Fatal("no offer to a plain client")
	}
	if r.event.Arch != "" {
		t.Fatalf("plain client's event names arch %q", r.event.Arch)
	}
	s.report(plainDiscover(t), r, 300, time.Millisecond)
	if strings.Contains(logs.String(), "arch=") {
		t.Fatalf("plain client logged with an arch: %s", logs.String())
	}
}

// TestLogAttrsByMode: the start-up line names the lease range only in the
// mode that has one; proxy mode printed range="invalid IP-invalid IP".
func TestLogAttrsByMode(t *testing.T) {
	line := func(o Options) string {
		var b bytes.Buffer
		slog.New(slog.NewTextHandler(&b, nil)).Info("dhcp listening", o.LogAttrs()...)
		return b.String()
	}
	proxy := testOptions(ModeProxy)
	proxy.First, proxy.Last = netip.Addr{}, netip.Addr{}
	if l := line(proxy); strings.Contains(l, "range") || strings.Contains(l, "invalid") || !strings.Contains(l, "mode=proxy") {
		t.Errorf("proxy mode: %s", l)
	}
	if l := line(testOptions(ModeFull)); !strings.Contains(l, "range=10.0.0.100-10.0.0.199") || !strings.Contains(l, "lease_time=1h0m0s") {
		t.Errorf("full mode: %s", l)
	}
}
