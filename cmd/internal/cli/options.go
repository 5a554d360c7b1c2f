package cli

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"path/filepath"

	"github.com/boottorrent/boottorrent/config"
	"github.com/boottorrent/boottorrent/initramfs/bootapi"
	"github.com/boottorrent/boottorrent/netboot"
	"github.com/boottorrent/boottorrent/netboot/bootserver"
	"github.com/boottorrent/boottorrent/netboot/dhcp"
)

// netbootOptions maps a loaded, validated project onto netboot's typed
// options: the one place where Boottorrent.yaml's strings become
// addresses, MACs and modes. Validation has checked every value, so an
// error here means a project that skipped it.
func netbootOptions(p *config.Project) (netboot.Options, error) {
	c := p.Config
	var errs []error
	addr := func(field, v string) netip.Addr {
		if v == "" {
			return netip.Addr{}
		}
		a, err := netip.ParseAddr(v)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s %q: %w", field, v, err))
		}
		return a
	}
	o := netboot.Options{
		Interface: c.Server.Interface,
		Address:   addr("server.address", c.Server.Address),
		Prefix:    p.Prefix,
		HTTPPort:  c.Server.HTTPPort,
		TFTP:      c.TFTP.Enabled,
		IPXE:      netboot.IPXE{Dir: c.IPXE.Dir, BIOS: c.IPXE.BIOS, UEFI: c.IPXE.UEFI},
		Cmdline:   c.Client.Cmdline,
		Machines:  map[bootapi.MAC]netboot.Machine{},
		Boot: bootserver.Options{DefaultOS: c.Boot.DefaultOS, Timeout: c.Boot.Timeout.Duration,
			SeedTime: c.Boot.SeedTime.Duration, Trackers: c.Torrent.Trackers, Menu: c.Boot.Menu},
	}
	mode, err := dhcpMode(c.DHCP.Mode)
	if err != nil {
		errs = append(errs, err)
	}
	o.DHCP = netboot.DHCP{Mode: mode, First: c.DHCP.First, Last: c.DHCP.Last, LeaseTime: c.DHCP.LeaseTime.Duration,
		Netmask: addr("dhcp.netmask", c.DHCP.Netmask), Router: addr("dhcp.router", c.DHCP.Router)}
	for _, d := range c.DHCP.DNS {
		if a := addr("dhcp.dns", d); a.IsValid() {
			o.DHCP.DNS = append(o.DHCP.DNS, a)
		}
	}
	if mode == dhcp.ModeFull && p.Dir != "" {
		o.DHCP.LeaseFile = filepath.Join(p.OutDir(), netboot.LeaseFileName)
	}
	for mac, m := range c.Machines {
		hw, err := net.ParseMAC(mac)
		if err != nil || len(hw) != 6 {
			continue // validation reported it
		}
		o.Machines[bootapi.MAC(hw)] = netboot.Machine{Name: m.Name, OS: m.OS}
	}
	if err := errors.Join(errs...); err != nil {
		return o, fmt.Errorf("%s: %w", config.FileName, err)
	}
	return o, nil
}

// dhcpMode reads dhcp.mode.
func dhcpMode(s string) (dhcp.Mode, error) {
	switch m := dhcp.Mode(s); m {
	case dhcp.ModeProxy, dhcp.ModeFull, dhcp.ModeOff:
		return m, nil
	}
	return "", fmt.Errorf("dhcp.mode %q: must be %q, %q or %q", s, dhcp.ModeProxy, dhcp.ModeFull, dhcp.ModeOff)
}
