package config

import (
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"time"
)

// resolve fills the host-dependent defaults and checks that what the file
// names exists on this machine.
func (p *Project) resolve(d *Decoded, h Host) Problems {
	c := p.Config
	var ps Problems
	prob := func(field, msg string) {
		ps = append(ps, Problem{File: d.File, Line: d.Lines.Line(field), Field: field, Msg: msg})
	}
	if h.Interfaces != nil {
		ifs, err := h.Interfaces()
		if err != nil {
			prob("server.interface", "cannot list network interfaces: "+err.Error())
		}
		var chosen *HostInterface
		if c.Server.Interface == "" {
			for i := range ifs {
				if ifs[i].Up && !ifs[i].Loopback && hasV4(ifs[i]) {
					chosen = &ifs[i]
					break
				}
			}
			if chosen == nil && err == nil {
				prob("server.interface", "no network interface is up with an IPv4 address; bring the lab LAN's interface up or set server.interface")
			}
		} else {
			var names []string
			for i := range ifs {
				names = append(names, ifs[i].Name)
				if ifs[i].Name == c.Server.Interface {
					chosen = &ifs[i]
				}
			}
			if chosen == nil && err == nil {
				prob("server.interface", fmt.Sprintf("%q does not exist on this machine; use one of %s", c.Server.Interface, strings.Join(names, ", ")))
			} else if chosen != nil && !chosen.Up {
				prob("server.interface", fmt.Sprintf("%q is down; bring it up (ip link set %s up)", chosen.Name, chosen.Name))
			}
		}
		if chosen != nil {
			c.Server.Interface = chosen.Name
			if c.Server.Address == "" {
				for _, a := range chosen.Addrs {
					if a.Addr().Is4() {
						c.Server.Address = a.Addr().String()
						p.Prefix = a.Masked()
						break
					}
				}
				if c.Server.Address == "" {
					prob("server.address", fmt.Sprintf("interface %s has no IPv4 address; give it one or set server.address", chosen.Name))
				}
			} else if a, err := netip.ParseAddr(c.Server.Address); err == nil {
				for _, pf := range chosen.Addrs {
					if pf.Addr() == a {
						p.Prefix = pf.Masked()
					}
				}
				if !p.Prefix.IsValid() {
					prob("server.address", fmt.Sprintf("%s is not an address of interface %s; use one of its addresses or assign it (ip addr add %s/24 dev %s)", a, chosen.Name, a, chosen.Name))
				}
			}
		}
	}
	// The client kernel and its modules.
	root := h.Root
	if c.Client.Kernel == "" {
		k, m := findKernel(root, h.KernelRelease)
		if k == "" {
			prob("client.kernel", "no kernel found for the boot client: neither /boot/vmlinuz-$(uname -r) nor any /boot/vmlinuz-* with a matching /lib/modules tree; install Debian's linux-image-amd64 or set client.kernel and client.modules")
		}
		c.Client.Kernel = k
		if c.Client.Modules == "" {
			c.Client.Modules = m
		}
	} else if fi, err := os.Stat(filepath.Join(root, c.Client.Kernel)); err != nil || !fi.Mode().IsRegular() {
		prob("client.kernel", fmt.Sprintf("%s is not a readable file; point it at a Linux kernel image (bzImage), e.g. /boot/vmlinuz-...", c.Client.Kernel))
	}
	if c.Client.Modules == "" && c.Client.Kernel != "" {
		ver := strings.TrimPrefix(filepath.Base(c.Client.Kernel), "vmlinuz-")
		if fi, err := os.Stat(filepath.Join(root, "/lib/modules", ver)); err == nil && fi.IsDir() {
			c.Client.Modules = filepath.Join("/lib/modules", ver)
		} else {
			prob("client.modules", fmt.Sprintf("no module tree found for kernel %s; set client.modules to its /lib/modules/<version> folder", c.Client.Kernel))
		}
	} else if c.Client.Modules != "" {
		if _, err := os.Stat(filepath.Join(root, c.Client.Modules, "modules.dep")); err != nil {
			prob("client.modules", fmt.Sprintf("%s has no modules.dep; point it at the /lib/modules/<version> folder that matches client.kernel", c.Client.Modules))
		}
	}
	if c.TFTP.Enabled && c.DHCP.Mode != DHCPOff {
		for _, f := range []struct{ field, name string }{{"ipxe.bios", c.IPXE.BIOS}, {"ipxe.uefi", c.IPXE.UEFI}} {
			if f.name == "" || strings.ContainsAny(f.name, "/\\") {
				continue // reported by validate
			}
			if _, err := os.Stat(filepath.Join(root, c.IPXE.Dir, f.name)); err != nil {
				prob(f.field, fmt.Sprintf("%s is missing from ipxe.dir %s; install Debian's ipxe package (apt-get install ipxe) or set ipxe.dir", f.name, c.IPXE.Dir))
			}
		}
	}
	return ps
}

func hasV4(i HostInterface) bool {
	for _, a := range i.Addrs {
		if a.Addr().Is4() {
			return true
		}
	}
	return false
}

// findKernel picks the host's running kernel if its image is in /boot, else
// the newest /boot/vmlinuz-* that has a matching /lib/modules tree.
func findKernel(root string, release func() string) (kernel, modules string) {
	ok := func(ver string) bool {
		if _, err := os.Stat(filepath.Join(root, "/boot/vmlinuz-"+ver)); err != nil {
			return false
		}
		_, err := os.Stat(filepath.Join(root, "/lib/modules", ver, "modules.dep"))
		return err == nil
	}
	if release != nil {
		if r := release(); r != "" && ok(r) {
			return "/boot/vmlinuz-" + r, "/lib/modules/" + r
		}
	}
	matches, _ := filepath.Glob(filepath.Join(root, "/boot/vmlinuz-*"))
	var vers []string
	for _, m := range matches {
		v := strings.TrimPrefix(filepath.Base(m), "vmlinuz-")
		if ok(v) {
			vers = append(vers, v)
		}
	}
	if len(vers) == 0 {
		return "", ""
	}
	sort.Slice(vers, func(i, j int) bool { return versionLess(vers[i], vers[j]) })
	v := vers[len(vers)-1]
	return "/boot/vmlinuz-" + v, "/lib/modules/" + v
}

var numRe = regexp.MustCompile(`\d+|\D+`)

// versionLess compares kernel versions numerically part by part, so that
// 6.1.0-10 sorts after 6.1.0-9.
func versionLess(a, b string) bool {
	pa, pb := numRe.FindAllString(a, -1), numRe.FindAllString(b, -1)
	for i := 0; i < len(pa) && i < len(pb); i++ {
		if pa[i] == pb[i] {
			continue
		}
		var na, nb int
		_, ea := fmt.Sscanf(pa[i], "%d", &na)
		_, eb := fmt.Sscanf(pb[i], "%d", &nb)
		if ea == nil && eb == nil {
			return na < nb
		}
		return pa[i] < pb[i]
	}
	return len(pa) < len(pb)
}

var hostnameRe = regexp.MustCompile(`^[a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?$`)

// maxClientCmdline bounds client.cmdline (see its check).
const maxClientCmdline = 1024

// validate checks every rule that does not depend on the host, filling the
// defaults that depend on the OS list (menu, default OS).
func validate(d *Decoded, p *Project) Problems {
	c := p.Config
	var ps Problems
	prob := func(field, msg string) {
		ps = append(ps, Problem{File: d.File, Line: d.Lines.Line(field), Field: field, Msg: msg})
	}
	if c.Server.Address != "" {
		if a, err := netip.ParseAddr(c.Server.Address); err != nil || !a.Is4() {
			prob("server.address", fmt.Sprintf("%q is not an IPv4 address; write it as four numbers, e.g. 10.0.0.1", c.Server.Address))
		}
	}
	port := func(field string, v int) {
		if v < 1 || v > 65535 {
			prob(field, fmt.Sprintf("%d is not a port; use 1-65535", v))
		}
	}
	port("server.http_port", c.Server.HTTPPort)
	port("server.torrent_port", c.Server.TorrentPort)
	if c.Server.HTTPPort == c.Server.TorrentPort {
		prob("server.torrent_port", "must differ from server.http_port")
	}
	for _, pt := range []int{67, 69, 4011} {
		if c.Server.HTTPPort == pt || c.Server.TorrentPort == pt {
			prob("server", fmt.Sprintf("port %d is used by DHCP/TFTP/PXE; choose another for http_port and torrent_port", pt))
		}
	}

	switch c.DHCP.Mode {
	case DHCPProxy, DHCPOff:
		// Settings only full mode uses are a warning, not an error, so an
		// administrator can try another mode by changing one line. They
		// are cleared so that nothing downstream reads them.
		for _, k := range []string{"dhcp.range", "dhcp.lease_time", "dhcp.netmask", "dhcp.router", "dhcp.dns"} {
			if line, ok := d.Lines[k]; ok {
				p.Warnings = append(p.Warnings, Problem{File: d.File, Line: line, Field: k,
					Msg: fmt.Sprintf("ignored in %s mode (only full mode leases addresses); remove it or set dhcp.mode: full", c.DHCP.Mode)}.String())
			}
		}
		mode := c.DHCP.Mode
		c.DHCP = Default().DHCP
		c.DHCP.Mode = mode
	case DHCPFull:
		if c.DHCP.Range == "" {
			prob("dhcp.range", "required in full mode: the addresses to lease, e.g. range: 10.0.0.50-10.0.0.150")
			break
		}
		first, last, err := ParseRange(c.DHCP.Range)
		if err != nil {
			prob("dhcp.range", err.Error())
			break
		}
		c.DHCP.First, c.DHCP.Last = first, last
		if p.Prefix.IsValid() {
			if !p.Prefix.Contains(first) || !p.Prefix.Contains(last) {
				prob("dhcp.range", fmt.Sprintf("%s is not inside the server's network %s; lease addresses from that network", c.DHCP.Range, p.Prefix))
			}
		}
		if a := c.ServerAddr(); a.IsValid() && !a.Less(first) && !last.Less(a) {
			prob("dhcp.range", fmt.Sprintf("contains the server's own address %s; start the range after it or end it before", a))
		}
		if c.DHCP.LeaseTime.Duration < time.Minute {
			prob("dhcp.lease_time", fmt.Sprintf("%s is too short; use at least 1m (default 1h)", c.DHCP.LeaseTime))
		}
	default:
		prob("dhcp.mode", fmt.Sprintf("%q is not a mode; use proxy (next to the site's DHCP server), full (our own leases, isolated LAN) or off", c.DHCP.Mode))
	}
	if c.DHCP.Netmask != "" {
		if m, err := netip.ParseAddr(c.DHCP.Netmask); err != nil || !m.Is4() || !isMask(m) {
			prob("dhcp.netmask", fmt.Sprintf("%q is not a netmask; write e.g. 255.255.255.0", c.DHCP.Netmask))
		}
	}
	if c.DHCP.Router != "" {
		if a, err := netip.ParseAddr(c.DHCP.Router); err != nil || !a.Is4() {
			prob("dhcp.router", fmt.Sprintf("%q is not an IPv4 address", c.DHCP.Router))
		}
	}
	for i, s := range c.DHCP.DNS {
		if a, err := netip.ParseAddr(s); err != nil || !a.Is4() {
			prob(fmt.Sprintf("dhcp.dns[%d]", i), fmt.Sprintf("%q is not an IPv4 address", s))
		}
	}
	for _, f := range []struct{ field, v string }{{"ipxe.bios", c.IPXE.BIOS}, {"ipxe.uefi", c.IPXE.UEFI}} {
		if f.v == "" || strings.ContainsAny(f.v, "/\\") || strings.HasPrefix(f.v, ".") {
			prob(f.field, fmt.Sprintf("%q must be a file name inside ipxe.dir, e.g. undionly.kpxe or ipxe.efi", f.v))
		}
	}
	if len(c.IPXE.UEFI) > 100 || len(c.IPXE.BIOS) > 100 {
		prob("ipxe", "boot file names must be shorter than 100 bytes (DHCP's file field holds 128)")
	}

	// OS choices.
	names := map[string]bool{}
	var sorted []string
	for _, o := range p.OSes {
		names[o.Name] = true
		sorted = append(sorted, o.Name)
	}
	if len(p.OSes) == 0 {
		ps = append(ps, Problem{File: filepath.Join(p.Dir, "oss"), Msg: "no operating system yet; add a folder oss/<name>/ with config.yaml and the OS's files (see oss/README.md)"})
	}
	unknownOS := func(field, name string) {
		prob(field, fmt.Sprintf("%q is not an OS folder in oss/; use one of %s", name, strings.Join(sorted, ", ")))
	}
	if len(c.Boot.Menu) == 0 {
		c.Boot.Menu = sorted
	} else {
		seen := map[string]bool{}
		for i, n := range c.Boot.Menu {
			f := fmt.Sprintf("boot.menu[%d]", i)
			if seen[n] {
				prob(f, fmt.Sprintf("%q is listed twice; list each OS once", n))
			}
			seen[n] = true
			if !names[n] && len(sorted) > 0 {
				unknownOS(f, n)
			}
		}
	}
	if c.Boot.DefaultOS == "" {
		if len(c.Boot.Menu) > 0 {
			c.Boot.DefaultOS = c.Boot.Menu[0]
		}
	} else if !names[c.Boot.DefaultOS] && len(sorted) > 0 {
		unknownOS("boot.default_os", c.Boot.DefaultOS)
	}
	if c.Boot.SeedTime.Duration < 0 {
		prob("boot.seed_time", "must not be negative; use 0s to boot right after the download")
	}
	ps = append(ps, validateTrust(d, p)...)
	for i, t := range c.Torrent.Trackers {
		u, err := url.Parse(t)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https" && u.Scheme != "udp") || u.Host == "" {
			prob(fmt.Sprintf("torrent.trackers[%d]", i), fmt.Sprintf("%q is not a tracker URL; use http://host:port/announce or udp://host:port", t))
		}
	}
	for i, m := range c.Client.ExtraModules {
		if !regexp.MustCompile(`^[a-zA-Z0-9_-]+$`).MatchString(m) {
			prob(fmt.Sprintf("client.extra_modules[%d]", i), fmt.Sprintf("%q is not a module name; write the name without .ko, e.g. tg3", m))
		}
	}
	if strings.ContainsAny(c.Client.Cmdline, "\x00\r\n") {
		prob("client.cmdline", "must be one line")
	}
	// It goes into every /boot.ipxe answer and shares the kernel's
	// 2048-byte x86 command line with what boottorrent adds (initrd=,
	// the server's address): half of it is the administrator's.
	if len(c.Client.Cmdline) > maxClientCmdline {
		prob("client.cmdline", fmt.Sprintf("%d bytes, longer than %d (the kernel's 2048-byte line also carries boottorrent's own parameters); shorten it", len(c.Client.Cmdline), maxClientCmdline))
	}

	// Machines: normalize MACs, check names and OSes.
	norm := map[string]Machine{}
	machineNames := map[string]string{}
	for mac, m := range c.Machines {
		field := "machines." + mac
		hw, err := net.ParseMAC(mac)
		if err != nil || len(hw) != 6 {
			prob(field, fmt.Sprintf("%q is not a MAC address; write six hex pairs, e.g. 52:54:00:12:34:56", mac))
			continue
		}
		key := strings.ToLower(hw.String())
		if _, dup := norm[key]; dup {
			prob(field, fmt.Sprintf("MAC %s is listed twice (in different spellings); keep one", key))
		}
		if m.Name != "" {
			if !hostnameRe.MatchString(m.Name) {
				prob(field+".name", fmt.Sprintf("%q is not a valid host name; use letters, digits and '-'", m.Name))
			} else if other, dup := machineNames[m.Name]; dup {
				prob(field+".name", fmt.Sprintf("%q is also the name of %s; give each machine its own name", m.Name, other))
			}
			machineNames[m.Name] = key
		}
		if m.OS == "" {
			prob(field+".os", "missing; name the oss/ folder this machine boots")
		} else if !names[m.OS] && len(sorted) > 0 {
			unknownOS(field+".os", m.OS)
		}
		norm[key] = m
	}
	c.Machines = norm
	return ps
}

func isMask(m netip.Addr) bool {
	b := m.As4()
	v := uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
	return v != 0 && (^v)&((^v)+1) == 0
}

// ParseRange parses "FIRST-LAST" (IPv4, FIRST ≤ LAST).
func ParseRange(s string) (first, last netip.Addr, err error) {
	a, b, ok := strings.Cut(s, "-")
	if !ok {
		return first, last, fmt.Errorf("%q is not a range; write FIRST-LAST, e.g. 10.0.0.50-10.0.0.150", s)
	}
	first, err1 := netip.ParseAddr(strings.TrimSpace(a))
	last, err2 := netip.ParseAddr(strings.TrimSpace(b))
	if err1 != nil || err2 != nil || !first.Is4() || !last.Is4() {
		return first, last, fmt.Errorf("%q is not a range of IPv4 addresses; write FIRST-LAST, e.g. 10.0.0.50-10.0.0.150", s)
	}
	if last.Less(first) {
		return first, last, fmt.Errorf("%q ends before it starts; write the lower address first", s)
	}
	return first, last, nil
}
