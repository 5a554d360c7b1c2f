package dhcp

import (
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/iana"
)

// parseRequest decodes a datagram and keeps only what a DHCP server can
// answer: a BOOTREQUEST from an Ethernet client with a message type.
func parseRequest(data []byte) (*dhcpv4.DHCPv4, error) {
	if len(data) < 240 {
		return nil, fmt.Errorf("%d bytes: shorter than a DHCP header", len(data))
	}
	req, err := dhcpv4.FromBytes(data)
	if err != nil {
		return nil, err
	}
	if req.OpCode != dhcpv4.OpcodeBootRequest {
		return nil, fmt.Errorf("op %d is not a BOOTREQUEST", req.OpCode)
	}
	if req.HWType != iana.HWTypeEthernet || len(req.ClientHWAddr) != 6 {
		return nil, fmt.Errorf("hardware type %d length %d: only Ethernet is served", req.HWType, len(req.ClientHWAddr))
	}
	if req.MessageType() == dhcpv4.MessageTypeNone {
		return nil, errors.New("no DHCP message type (BOOTP is not served)")
	}
	if hw := req.ClientHWAddr; hw[0]&1 == 1 {
		// The group bit: multicast, and ff:ff:ff:ff:ff:ff, broadcast.
		return nil, fmt.Errorf("client MAC %s is a multicast address", hw)
	}
	if hw := req.ClientHWAddr; [6]byte(hw) == [6]byte{} {
		// No NIC has the all-zero address; a lease for it would be one
		// every forged request could renew or release.
		return nil, fmt.Errorf("client MAC %s is the all-zero address", hw)
	}
	return req, nil
}

// firmware is what a request tells us about the machine that sent it.
type firmware struct {
	pxe  bool      // vendor class (option 60) starts with "PXEClient"
	ipxe bool      // iPXE: user class "iPXE" or option 175
	arch iana.Arch // option 93, else the Arch field of option 60, else BIOS for a PXE ROM
	name string    // archName(arch); empty for a plain client that names no architecture
}

// iPXE's encapsulated options (https://ipxe.org/howto/dhcpd).
const optionIPXEEncap = 175

func identify(req *dhcpv4.DHCPv4) firmware {
	var fw firmware
	vc := req.ClassIdentifier()
	fw.pxe = strings.HasPrefix(vc, "PXEClient")
	for _, uc := range req.UserClass() {
		if uc == "iPXE" {
			fw.ipxe = true
		}
	}
	if req.Options.Has(dhcpv4.GenericOptionCode(optionIPXEEncap)) {
		fw.ipxe = true
	}
	if archs := req.ClientArch(); len(archs) > 0 {
		fw.arch = archs[0]
	} else if a, ok := archFromVendorClass(vc); ok {
		fw.arch = a
	} else if fw.pxe || fw.ipxe {
		// PXE 2.1 makes option 93 mandatory; ROMs that omit it are
		// old BIOS ROMs.
		fw.arch = iana.INTEL_X86PC
	} else {
		// A plain DHCP client (an OS, the boot client) says nothing
		// about its firmware: no name, so logs and the registry do not
		// call it BIOS.
		return fw
	}
	fw.name = archName(fw.arch)
	return fw
}

// archFromVendorClass reads "PXEClient:Arch:00007:UNDI:003016".
func archFromVendorClass(vc string) (iana.Arch, bool) {
	rest, ok := strings.CutPrefix(vc, "PXEClient:Arch:")
	if !ok || len(rest) < 5 {
		return 0, false
	}
	n, err := strconv.ParseUint(rest[:5], 10, 16)
	if err != nil {
		return 0, false
	}
	return iana.Arch(n), true
}

// archName is the short name used in logs and events.
func archName(a iana.Arch) string {
	switch a {
	case iana.INTEL_X86PC:
		return "bios"
	case iana.EFI_X86_64, iana.EFI_BC:
		// RFC 4578 lists 7 as "EFI BC" and 9 as "EFI x86-64", but
		// x86-64 UEFI firmware sends 7 (RFC 4578 errata 4624); both are
		// x86-64 in practice.
		return "uefi-x64"
	case iana.EFI_IA32:
		return "uefi-ia32"
	case iana.EFI_ARM64:
		return "uefi-arm64"
	case iana.EFI_ARM32:
		return "uefi-arm32"
	case iana.EFI_X86_64_HTTP:
		return "uefi-x64-http"
	default:
		return fmt.Sprintf("arch-%d", uint16(a))
	}
}

// ipxeURL is the boot file an iPXE client gets: its script, with its MAC so
// the server knows which machine is booting.
func ipxeURL(base string, mac net.HardwareAddr) string {
	return strings.TrimSuffix(base, "/") + "/boot.ipxe?mac=" + mac.String()
}

// errNoBoot explains why a machine gets no boot file.
type errNoBoot struct{ reason string }

func (e errNoBoot) Error() string { return e.reason }

// bootFile chooses what the machine loads next: the iPXE script over HTTP
// when it already runs iPXE, else the first-stage iPXE binary over TFTP for
// its architecture.
func (s *Server) bootFile(fw firmware, mac net.HardwareAddr) (string, error) {
	if fw.ipxe {
		return ipxeURL(s.opt.HTTPBase, mac), nil
	}
	var f string
	switch fw.name {
	case "bios":
		f = s.opt.BIOSFile
	case "uefi-x64":
		f = s.opt.UEFIFile
	default:
		return "", errNoBoot{fmt.Sprintf("architecture %s (option 93 = %d) has no iPXE binary configured: only BIOS (0) and UEFI x86-64 (7, 9) are served", fw.name, uint16(fw.arch))}
	}
	if !s.opt.TFTP {
		return "", errNoBoot{fmt.Sprintf("%s firmware without iPXE needs %s over TFTP, and TFTP is disabled (tftp.enabled: false)", fw.name, f)}
	}
	if f == "" {
		return "", errNoBoot{fmt.Sprintf("no iPXE binary configured for %s", fw.name)}
	}
	return f, nil
}

// PXE vendor options (option 43) per the PXE 2.1 specification, section 2.4.
const (
	pxeDiscoveryControl = 6
	// Bit 3: "if set, and a boot file name is present in the initial
	// DHCP or ProxyDHCP offer packet, download the boot file (do not
	// prompt/menu/discover)".
	pxeUseBootFile = 1 << 3
)

// pxeVendorOptions is option 43 for PXE clients: skip boot-server discovery
// and use the boot file in this packet.
var pxeVendorOptions = []byte{pxeDiscoveryControl, 1, pxeUseBootFile, 255}
