package dhcp

import (
	"bytes"
	"errors"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/iana"
)

func testOptions(mode Mode) Options {
	return Options{
		Mode: mode, Interface: "eth0",
		ServerIP: mustAddr("10.0.0.1"), Prefix: netip.MustParsePrefix("10.0.0.1/24"),
		First: mustAddr("10.0.0.100"), Last: mustAddr("10.0.0.199"), LeaseTime: time.Hour,
		BIOSFile: "undionly.kpxe", UEFIFile: "ipxe.efi", TFTP: true,
		HTTPBase: "http://10.0.0.1:8080",
	}
}

func newTestServer(t *testing.T, opt Options) *Server {
	t.Helper()
	s, err := New(opt)
	if err != nil {
		t.Fatal(err)
	}
	s.now = func() time.Time { return t0 }
	t.Cleanup(func() { s.Close() })
	return s
}

var testMAC = net.HardwareAddr{0x52, 0x54, 0x00, 0x12, 0x34, 0x56}

// Client kinds for table tests.
func pxeDiscover(t *testing.T, arch iana.Arch, vendor string, ipxe bool) *dhcpv4.DHCPv4 {
	t.Helper()
	mods := []dhcpv4.Modifier{
		dhcpv4.WithOption(dhcpv4.OptClassIdentifier(vendor)),
		dhcpv4.WithOption(dhcpv4.OptClientArch(arch)),
		dhcpv4.WithGeneric(dhcpv4.OptionClientMachineIdentifier, []byte{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16}),
	}
	if ipxe {
		mods = append(mods, dhcpv4.WithUserClass("iPXE", false))
	}
	d, err := dhcpv4.NewDiscovery(testMAC, mods...)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func plainDiscover(t *testing.T) *dhcpv4.DHCPv4 {
	d, err := dhcpv4.NewDiscovery(testMAC, dhcpv4.WithOption(dhcpv4.OptClassIdentifier("udhcp 1.35.0")))
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// roundTrip serializes and parses req as the server would receive it.
func roundTrip(t *testing.T, req *dhcpv4.DHCPv4) *dhcpv4.DHCPv4 {
	t.Helper()
	r, err := parseRequest(req.ToBytes())
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func TestBootFileChoice(t *testing.T) {
	const url = "http://10.0.0.1:8080/boot.ipxe?mac=52:54:00:12:34:56"
	cases := []struct {
		name   string
		arch   iana.Arch
		vendor string
		ipxe   bool
		tftp   bool
		want   string // "" = not answered
	}{
		{"bios", iana.INTEL_X86PC, "PXEClient:Arch:00000:UNDI:002001", false, true, "undionly.kpxe"},
		{"uefi x64 (7)", iana.EFI_X86_64, "PXEClient:Arch:00007:UNDI:003016", false, true, "ipxe.efi"},
		{"uefi x64 (9)", iana.EFI_BC, "PXEClient:Arch:00009:UNDI:003016", false, true, "ipxe.efi"},
		{"ipxe bios", iana.INTEL_X86PC, "PXEClient:Arch:00000:UNDI:002001", true, true, url},
		{"ipxe uefi", iana.EFI_X86_64, "PXEClient:Arch:00007:UNDI:003010", true, true, url},
		{"ipxe without tftp", iana.INTEL_X86PC, "PXEClient:Arch:00000:UNDI:002001", true, false, url},
		{"bios without tftp", iana.INTEL_X86PC, "PXEClient:Arch:00000:UNDI:002001", false, false, ""},
		{"uefi arm64", iana.EFI_ARM64, "PXEClient:Arch:00011:UNDI:003000", false, true, ""},
		{"uefi ia32", iana.EFI_IA32, "PXEClient:Arch:00006:UNDI:003000", false, true, ""},
	}
	for _, mode := range []Mode{ModeProxy, ModeFull} {
		for _, c := range cases {
			t.Run(string(mode)+"/"+c.name, func(t *testing.T) {
				opt := testOptions(mode)
				opt.TFTP = c.tftp
				s := newTestServer(t, opt)
				r := s.handle(roundTrip(t, pxeDiscover(t, c.arch, c.vendor, c.ipxe)), ServerPort, nil, t0)
				if c.want == "" {
					if r != nil {
						t.Fatalf("answered with %q, want silence", r.msg.BootFileName)
					}
					return
				}
				if r == nil {
					t.Fatal("not answered")
				}
				if r.msg.BootFileName != c.want || r.msg.BootFileNameOption() != c.want {
					t.Fatalf("boot file %q / option 67 %q, want %q", r.msg.BootFileName, r.msg.BootFileNameOption(), c.want)
				}
				if r.event.IPXE != c.ipxe || r.event.BootFile != c.want {
					t.Fatalf("event %+v", r.event)
				}
			})
		}
	}
}

func TestArchFromVendorClassWithoutOption93(t *testing.T) {
	d, _ := dhcpv4.NewDiscovery(testMAC, dhcpv4.WithOption(dhcpv4.OptClassIdentifier("PXEClient:Arch:00007:UNDI:003000")))
	s := newTestServer(t, testOptions(ModeProxy))
	r := s.handle(roundTrip(t, d), ServerPort, nil, t0)
	if r == nil || r.msg.BootFileName != "ipxe.efi" {
		t.Fatalf("arch from option 60: %v", r)
	}
}

func TestProxyOffer(t *testing.T) {
	s := newTestServer(t, testOptions(ModeProxy))
	req := roundTrip(t, pxeDiscover(t, iana.INTEL_X86PC, "PXEClient:Arch:00000:UNDI:002001", false))
	r := s.handle(req, ServerPort, nil, t0)
	if r == nil {
		t.Fatal("PXE discover not answered")
	}
	m := r.msg
	check := func(what string, ok bool) {
		t.Helper()
		if !ok {
			t.Errorf("proxy offer: %s\n%s", what, m.Summary())
		}
	}
	check("type OFFER", m.MessageType() == dhcpv4.MessageTypeOffer)
	check("yiaddr 0", m.YourIPAddr.IsUnspecified())
	check("siaddr = server", m.ServerIPAddr.Equal(net.IPv4(10, 0, 0, 1)))
	check("option 54 = server", m.ServerIdentifier().Equal(net.IPv4(10, 0, 0, 1)))
	check("option 60 PXEClient", m.ClassIdentifier() == "PXEClient")
	check("option 43 discovery control", bytes.Equal(m.GetOneOption(dhcpv4.OptionVendorSpecificInformation), pxeVendorOptions))
	check("option 97 echoed", bytes.Equal(m.GetOneOption(dhcpv4.OptionClientMachineIdentifier), req.GetOneOption(dhcpv4.OptionClientMachineIdentifier)))
	check("no lease time", !m.Options.Has(dhcpv4.OptionIPAddressLeaseTime))
	check("no netmask", !m.Options.Has(dhcpv4.OptionSubnetMask))
	check("xid echoed", m.TransactionID == req.TransactionID)
	check("broadcast", r.to.IP.Equal(net.IPv4bcast) && r.to.Port == ClientPort)

	// Never answer a non-PXE client, whatever it sends.
	for _, mt := range []dhcpv4.MessageType{dhcpv4.MessageTypeDiscover, dhcpv4.MessageTypeRequest, dhcpv4.MessageTypeInform} {
		d := plainDiscover(t)
		d.UpdateOption(dhcpv4.OptMessageType(mt))
		d.UpdateOption(dhcpv4.OptServerIdentifier(net.IPv4(10, 0, 0, 1)))
		if r := s.handle(roundTrip(t, d), ServerPort, nil, t0); r != nil {
			t.Fatalf("proxy mode answered a non-PXE %v", mt)
		}
	}
	// A PXE REQUEST for the site's server is not ours.
	rq := pxeDiscover(t, iana.INTEL_X86PC, "PXEClient:Arch:00000:UNDI:002001", false)
	rq.UpdateOption(dhcpv4.OptMessageType(dhcpv4.MessageTypeRequest))
	rq.UpdateOption(dhcpv4.OptServerIdentifier(net.IPv4(10, 0, 0, 254)))
	rq.UpdateOption(dhcpv4.OptRequestedIPAddress(net.IPv4(10, 0, 0, 77)))
	if r := s.handle(roundTrip(t, rq), ServerPort, nil, t0); r != nil {
		t.Fatal("proxy mode answered a REQUEST addressed to the site's DHCP server")
	}
}

func TestBootServerPort(t *testing.T) {
	for _, mode := range []Mode{ModeProxy, ModeFull} {
		s := newTestServer(t, testOptions(mode))
		rq := pxeDiscover(t, iana.EFI_X86_64, "PXEClient:Arch:00007:UNDI:003016", true)
		rq.UpdateOption(dhcpv4.OptMessageType(dhcpv4.MessageTypeRequest))
		rq.ClientIPAddr = net.IPv4(10, 0, 0, 77)
		from := &net.UDPAddr{IP: net.IPv4(10, 0, 0, 77), Port: 68}
		r := s.handle(roundTrip(t, rq), PXEServerPort, from, t0)
		if r == nil {
			t.Fatalf("%s: 4011 request not answered", mode)
		}
		if r.msg.MessageType() != dhcpv4.MessageTypeAck || !r.to.IP.Equal(from.IP) || r.to.Port != 68 ||
			!strings.HasSuffix(r.msg.BootFileName, "/boot.ipxe?mac=52:54:00:12:34:56") || !r.msg.YourIPAddr.IsUnspecified() {
			t.Fatalf("%s: 4011 reply to %v: %s", mode, r.to, r.msg.Summary())
		}
	}
}

func TestFullModeExchange(t *testing.T) {
	opt := testOptions(ModeFull)
	opt.Router = mustAddr("10.0.0.254")
	opt.DNS = []netip.Addr{mustAddr("10.0.0.53")}
	opt.Machines = map[string]string{testMAC.String(): "pc01"}
	s := newTestServer(t, opt)

	// A plain client gets a plain lease: no PXE options.
	d := plainDiscover(t)
	offer := s.handle(roundTrip(t, d), ServerPort, nil, t0)
	if offer == nil || offer.msg.MessageType() != dhcpv4.MessageTypeOffer {
		t.Fatal("no offer")
	}
	ip := offer.msg.YourIPAddr
	if !opt.Prefix.Contains(netip.AddrFrom4([4]byte(ip.To4()))) || offer.msg.BootFileName != "" ||
		offer.msg.Options.Has(dhcpv4.OptionVendorSpecificInformation) || offer.msg.ClassIdentifier() != "" {
		t.Fatalf("plain offer: %s", offer.msg.Summary())
	}
	if offer.msg.HostName() != "pc01" || !offer.msg.Router()[0].Equal(net.IPv4(10, 0, 0, 254)) ||
		!offer.msg.DNS()[0].Equal(net.IPv4(10, 0, 0, 53)) || offer.msg.SubnetMask().String() != "ffffff00" ||
		offer.msg.IPAddressLeaseTime(0) != time.Hour || offer.msg.IPAddressRenewalTime(0) != 30*time.Minute {
		t.Fatalf("offer options: %s", offer.msg.Summary())
	}
	rq, _ := dhcpv4.NewRequestFromOffer(offer.msg)
	ack := s.handle(roundTrip(t, rq), ServerPort, nil, t0)
	if ack == nil || ack.msg.MessageType() != dhcpv4.MessageTypeAck || !ack.msg.YourIPAddr.Equal(ip) {
		t.Fatalf("ack: %v", ack)
	}
	// Renewal (unicast, ciaddr set) goes back unicast.
	renew, _ := dhcpv4.NewRenewFromAck(ack.msg)
	r := s.handle(roundTrip(t, renew), ServerPort, nil, t0)
	if r == nil || r.msg.MessageType() != dhcpv4.MessageTypeAck || !r.to.IP.Equal(ip) {
		t.Fatalf("renewal: %v", r)
	}
	// Asking for another address: NAK (machines: entry is pinned).
	rb := plainDiscover(t)
	rb.UpdateOption(dhcpv4.OptMessageType(dhcpv4.MessageTypeRequest))
	rb.UpdateOption(dhcpv4.OptRequestedIPAddress(net.IPv4(10, 0, 0, 150)))
	if r := s.handle(roundTrip(t, rb), ServerPort, nil, t0); r == nil || r.msg.MessageType() != dhcpv4.MessageTypeNak || !r.to.IP.Equal(net.IPv4bcast) {
		t.Fatalf("wrong address: %v", r)
	}
	// A PXE client in full mode gets the lease and the boot options together.
	px := pxeDiscover(t, iana.INTEL_X86PC, "PXEClient:Arch:00000:UNDI:002001", false)
	r = s.handle(roundTrip(t, px), ServerPort, nil, t0)
	if r == nil || !r.msg.YourIPAddr.Equal(ip) || r.msg.BootFileName != "undionly.kpxe" || r.msg.ClassIdentifier() != "PXEClient" {
		t.Fatalf("PXE offer in full mode: %v", r)
	}
	if r.event.Message != "offer" || r.event.Arch != "bios" || r.event.BootFile != "undionly.kpxe" || r.event.IP.String() != ip.String() {
		t.Fatalf("event: %+v", r.event)
	}
}

func TestOptionsValidation(t *testing.T) {
	long := testOptions(ModeProxy)
	long.HTTPBase = "http://" + strings.Repeat("a", 100) + ".example:8080"
	longFile := testOptions(ModeProxy)
	longFile.UEFIFile = strings.Repeat("x", 128)
	badRange := testOptions(ModeFull)
	badRange.First, badRange.Last = mustAddr("10.0.1.5"), mustAddr("10.0.1.9")
	badMAC := testOptions(ModeFull)
	badMAC.Machines = map[string]string{"AA-BB-CC-DD-EE-FF": "x"}
	for name, o := range map[string]Options{"long url": long, "long file": longFile, "range": badRange, "mac": badMAC,
		"mode": {Mode: "auto"}} {
		if _, err := New(o); !errors.Is(err, ErrConfig) {
			t.Errorf("%s: err %v, want ErrConfig", name, err)
		}
	}
}

// TestRelayedFullMode: a relay on our own LAN (perfdhcp poses as one) is
// answered at its address on port 67; a relay from another network is not.
func TestRelayedFullMode(t *testing.T) {
	s := newTestServer(t, testOptions(ModeFull))
	d := plainDiscover(t)
	d.GatewayIPAddr = net.IPv4(10, 0, 0, 2)
	r := s.handle(roundTrip(t, d), ServerPort, nil, t0)
	if r == nil || !r.to.IP.Equal(net.IPv4(10, 0, 0, 2)) || r.to.Port != ServerPort || !r.msg.GatewayIPAddr.Equal(net.IPv4(10, 0, 0, 2)) {
		t.Fatalf("relayed from our LAN: %v", r)
	}
	d.GatewayIPAddr = net.IPv4(192, 168, 7, 1)
	if r := s.handle(roundTrip(t, d), ServerPort, nil, t0); r != nil {
		t.Fatalf("relayed from another network answered: %s", r.msg.Summary())
	}
}

// TestFullModeReleaseDeclineInform drives RELEASE, DECLINE and INFORM
// through the packet handler.
func TestFullModeReleaseDeclineInform(t *testing.T) {
	s := newTestServer(t, testOptions(ModeFull))
	offer := s.handle(roundTrip(t, plainDiscover(t)), ServerPort, nil, t0)
	rq, _ := dhcpv4.NewRequestFromOffer(offer.msg)
	ack := s.handle(roundTrip(t, rq), ServerPort, nil, t0)
	ip := ack.msg.YourIPAddr
	addr, _ := netip.AddrFromSlice(ip.To4())

	// INFORM from a configured client: options, no lease, unicast back.
	inf, _ := dhcpv4.NewInform(testMAC, ip)
	r := s.handle(roundTrip(t, inf), ServerPort, nil, t0)
	if r == nil || r.msg.MessageType() != dhcpv4.MessageTypeAck || !r.msg.YourIPAddr.IsUnspecified() ||
		r.msg.Options.Has(dhcpv4.OptionIPAddressLeaseTime) || !r.to.IP.Equal(ip) {
		t.Fatalf("inform: %v", r)
	}

	rel, _ := dhcpv4.NewReleaseFromACK(ack.msg)
	if r := s.handle(roundTrip(t, rel), ServerPort, nil, t0); r != nil {
		t.Fatal("RELEASE answered")
	}
	if l, _ := s.pool.lookup(addr); l.State != stateReleased {
		t.Fatalf("after RELEASE: %+v", l)
	}

	// Take it again, then DECLINE it: quarantined, never offered again soon.
	offer = s.handle(roundTrip(t, plainDiscover(t)), ServerPort, nil, t0)
	rq, _ = dhcpv4.NewRequestFromOffer(offer.msg)
	s.handle(roundTrip(t, rq), ServerPort, nil, t0)
	dec, _ := dhcpv4.New(dhcpv4.WithMessageType(dhcpv4.MessageTypeDecline), dhcpv4.WithHwAddr(testMAC),
		dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(ip)), dhcpv4.WithOption(dhcpv4.OptServerIdentifier(net.IPv4(10, 0, 0, 1))))
	if r := s.handle(roundTrip(t, dec), ServerPort, nil, t0); r != nil {
		t.Fatal("DECLINE answered")
	}
	if l, _ := s.pool.lookup(addr); l.State != stateDeclined {
		t.Fatalf("after DECLINE: %+v", l)
	}
	offer = s.handle(roundTrip(t, plainDiscover(t)), ServerPort, nil, t0.Add(time.Second))
	if offer == nil || offer.msg.YourIPAddr.Equal(ip) {
		t.Fatalf("declined address offered again: %v", offer)
	}
}
