package dhcp

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"time"
)

// Mode is how the appliance answers DHCP: the spellings of dhcp.mode in
// Boottorrent.yaml (config.DHCPProxy, config.DHCPFull, config.DHCPOff).
type Mode string

// Modes. A Server serves ModeProxy or ModeFull; ModeOff means no DHCP
// server is started (the site's DHCP points machines at iPXE itself).
const (
	ModeProxy Mode = "proxy"
	ModeFull  Mode = "full"
	ModeOff   Mode = "off"
)

// MaxBootFileLen is the longest boot file name a DHCP reply can carry: the
// BOOTP "file" field is 128 bytes with a terminating NUL, and the library
// cuts longer names silently (and a cut URL boots nothing).
const MaxBootFileLen = 127

// Options configure a Server. Zero values mean "not configured" unless a
// default is stated.
type Options struct {
	Mode      Mode         // ModeProxy or ModeFull
	Interface string       // the LAN interface, e.g. "eth0" (only for logs here; Listen binds)
	ServerIP  netip.Addr   // our address on the LAN: server identifier, TFTP next-server
	Prefix    netip.Prefix // the interface's network (full mode: netmask, range check)
	// First and Last bound the full-mode lease range (inclusive).
	First, Last netip.Addr
	LeaseTime   time.Duration // full mode; default 1h
	Netmask     netip.Addr    // optional override of Prefix's mask
	Router      netip.Addr    // sent only when valid
	DNS         []netip.Addr  // sent only when set
	// Machines maps a lower-case MAC ("aa:bb:cc:dd:ee:ff") to a host name
	// (config machines:). In full mode these MACs get an address that
	// stays theirs, and their name as option 12.
	Machines map[string]string
	// LeaseFile persists full-mode leases (e.g. out/leases.json). Empty
	// keeps leases in memory only (tests); a restart then forgets them.
	LeaseFile string
	// BIOSFile and UEFIFile are the first-stage iPXE binaries on our TFTP
	// server ("undionly.kpxe", "ipxe.efi").
	BIOSFile, UEFIFile string
	// TFTP says whether our TFTP server serves the first stage. Without it
	// only firmware that is already iPXE can be booted.
	TFTP bool
	// HTTPBase is the HTTP listener's URL ("http://10.0.0.1:8080"); iPXE
	// gets HTTPBase+"/boot.ipxe?mac=<mac>" as its boot file.
	HTTPBase string
	// ReplyDelay holds every reply back this long. Some PXE ROMs drop a
	// reply that arrives too soon after their request (dnsmasq has
	// --dhcp-reply-delay for them); iPXE waits only about 2 s for
	// proxyDHCP offers, so keep it well below 1s. Default 0.
	ReplyDelay time.Duration
	Logger     *slog.Logger
	// OnEvent, if set, is called after every reply sent to a machine. It
	// runs on a worker: it must not block.
	OnEvent func(Event)
	// Meter, if set, counts packets, answer times and drops.
	Meter Meter
	// Workers is the number of packet handlers (default max(4, GOMAXPROCS)).
	Workers int
	// Queue is how many received packets may wait for a worker; when it
	// is full the oldest is dropped (default 512). Workers take the
	// newest first (see packetQueue).
	Queue int
	// MaxQueueWait is how long a packet may wait for a worker before it
	// is dropped unanswered (default DefaultMaxQueueWait).
	MaxQueueWait time.Duration
}

// LogAttrs are the settings worth one start-up log line: the lease range
// and lease time only in full mode, the one mode that uses them (in proxy
// mode they are unset and printed as "invalid IP").
func (o Options) LogAttrs() []any {
	attrs := []any{"mode", o.Mode, "interface", o.Interface, "server", o.ServerIP}
	if o.Mode == ModeFull {
		attrs = append(attrs, "range", fmt.Sprintf("%v-%v", o.First, o.Last), "lease_time", o.LeaseTime.Round(time.Second))
	}
	return attrs
}

func (o *Options) validate() error {
	var errs []error
	bad := func(format string, args ...any) {
		errs = append(errs, fmt.Errorf(format, args...))
	}
	switch o.Mode {
	case ModeProxy, ModeFull:
	default:
		bad("mode %q: must be %q or %q", o.Mode, ModeProxy, ModeFull)
	}
	if !o.ServerIP.Is4() {
		bad("server address %v: must be an IPv4 address of the LAN interface", o.ServerIP)
	}
	if o.HTTPBase == "" {
		bad("http base URL is empty: iPXE needs http://SERVER:PORT to fetch its script")
	} else if !strings.HasPrefix(o.HTTPBase, "http://") && !strings.HasPrefix(o.HTTPBase, "https://") {
		bad("http base URL %q: must start with http://", o.HTTPBase)
	}
	// The longest URL we will ever send: base + path + a MAC.
	if u := ipxeURL(o.HTTPBase, net.HardwareAddr{0, 0, 0, 0, 0, 0}); len(u) > MaxBootFileLen {
		bad("iPXE script URL %q is %d bytes: a DHCP boot file name holds at most %d; use a shorter server address", u, len(u), MaxBootFileLen)
	}
	for what, f := range map[string]string{"bios": o.BIOSFile, "uefi": o.UEFIFile} {
		if len(f) > MaxBootFileLen {
			bad("ipxe.%s file name is %d bytes: a DHCP boot file name holds at most %d", what, len(f), MaxBootFileLen)
		}
		if o.TFTP && f == "" {
			bad("ipxe.%s file name is empty while TFTP is enabled", what)
		}
	}
	for mac := range o.Machines {
		hw, err := net.ParseMAC(mac)
		if err != nil || len(hw) != 6 {
			bad("machines: %q is not a MAC address like aa:bb:cc:dd:ee:ff", mac)
		} else if hw.String() != mac {
			bad("machines: %q must be written lower-case with colons (%s)", mac, hw)
		}
	}
	if o.Mode == ModeFull {
		switch {
		case !o.Prefix.IsValid() || !o.Prefix.Addr().Is4():
			bad("full mode needs the interface's IPv4 network (prefix), got %v", o.Prefix)
		case !o.First.Is4() || !o.Last.Is4():
			bad("full mode needs an IPv4 range FIRST-LAST, got %v-%v", o.First, o.Last)
		case o.Last.Less(o.First):
			bad("range %v-%v: the first address is after the last", o.First, o.Last)
		case !o.Prefix.Contains(o.First) || !o.Prefix.Contains(o.Last):
			bad("range %v-%v is not inside the interface's network %v", o.First, o.Last, o.Prefix.Masked())
		}
		if o.ServerIP.Is4() && o.Prefix.IsValid() && !o.Prefix.Contains(o.ServerIP) {
			bad("server address %v is not inside the network %v", o.ServerIP, o.Prefix.Masked())
		}
		if o.Netmask.IsValid() {
			if !o.Netmask.Is4() {
				bad("netmask %v: must be IPv4", o.Netmask)
			} else {
				m := o.Netmask.As4()
				if ones, bits := net.IPv4Mask(m[0], m[1], m[2], m[3]).Size(); ones == 0 && bits == 0 {
					bad("netmask %v is not a contiguous mask", o.Netmask)
				}
			}
		}
		if o.Router.IsValid() && !o.Router.Is4() {
			bad("router %v: must be IPv4", o.Router)
		}
		for _, d := range o.DNS {
			if !d.Is4() {
				bad("dns %v: must be IPv4", d)
			}
		}
	}
	if o.ReplyDelay < 0 || o.ReplyDelay > 2*time.Second {
		bad("reply delay %v: must be between 0 and 2s (iPXE gives up on proxy replies after about 2s)", o.ReplyDelay)
	}
	if len(errs) > 0 {
		return fmt.Errorf("%w: %w", ErrConfig, errors.Join(errs...))
	}
	return nil
}
