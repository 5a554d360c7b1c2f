package netboot

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"

	"github.com/boottorrent/boottorrent/config"
	"github.com/boottorrent/boottorrent/netboot/bootapi"
	"github.com/boottorrent/boottorrent/netboot/dhcp"
)

// LeaseFileName is the full-mode lease file, under the project's out/.
const LeaseFileName = "leases.json"

// dhcpOptions maps the project's settings onto the DHCP server's.
func (s *Server) dhcpOptions() (dhcp.Options, error) {
	c := s.cfg
	machines := map[string]string{}
	for mac, m := range c.Machines {
		hw, err := net.ParseMAC(mac)
		if err != nil {
			continue // config validation reported it
		}
		name := m.Name
		if name == "" {
			name = strings.ReplaceAll(hw.String(), ":", "")
		}
		machines[strings.ToLower(hw.String())] = name
	}
	o := dhcp.Options{
		Mode:      c.DHCP.Mode,
		Interface: c.Server.Interface,
		ServerIP:  c.ServerAddr(),
		Prefix:    s.opts.Project.Prefix,
		First:     c.DHCP.First,
		Last:      c.DHCP.Last,
		LeaseTime: c.DHCP.LeaseTime.Duration,
		Machines:  machines,
		BIOSFile:  c.IPXE.BIOS,
		UEFIFile:  c.IPXE.UEFI,
		TFTP:      c.TFTP.Enabled,
		HTTPBase:  s.base,
		Logger:    s.log.With("service", "dhcp"),
		OnEvent:   s.queueDHCPEvent,
	}
	var errs []error
	parse := func(field, v string) netip.Addr {
		if v == "" {
			return netip.Addr{}
		}
		a, err := netip.ParseAddr(v)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s %q: %w", field, v, err))
		}
		return a
	}
	o.Netmask = parse("dhcp.netmask", c.DHCP.Netmask)
	o.Router = parse("dhcp.router", c.DHCP.Router)
	for _, d := range c.DHCP.DNS {
		if a := parse("dhcp.dns", d); a.IsValid() {
			o.DNS = append(o.DNS, a)
		}
	}
	if c.DHCP.Mode == config.DHCPFull {
		out := s.opts.Project.OutDir()
		if s.opts.Project.Dir != "" {
			if err := os.MkdirAll(out, 0o755); err != nil {
				errs = append(errs, fmt.Errorf("create %s for the lease file: %w", out, err))
			}
			o.LeaseFile = filepath.Join(out, LeaseFileName)
		}
	}
	return o, errors.Join(errs...)
}

// dhcpEvent records what the DHCP server answered. Only the firmware's own
// PXE request (a boot file, not from iPXE) starts a boot over; iPXE's
// DHCP, renewals and the boot client's plain lease only tell the registry
// the machine's address, so its stage does not go backwards.
func (s *Server) dhcpEvent(ev dhcp.Event) {
	mac := strings.ToLower(ev.MAC.String())
	if len(ev.MAC) != 6 {
		return
	}
	if ev.BootFile != "" && !ev.IPXE && (ev.Message == "offer" || ev.Message == "proxy offer") {
		s.reg.Observe(mac, ev.IP, ev.Arch, bootapi.StageDHCP, "boot_file", ev.BootFile, "reply", ev.Message)
		return
	}
	// A plain lease (the boot client's own DHCP carries no option 93)
	// must not relabel a UEFI machine as BIOS: only PXE requests, which
	// get a boot file, say what the firmware is.
	arch := ""
	if ev.BootFile != "" {
		arch = ev.Arch
	}
	s.reg.Touch(mac, ev.IP, arch)
}

// dhcpEventQueue is how many DHCP events may wait for the registry.
const dhcpEventQueue = 1024

// queueDHCPEvent is the DHCP server's OnEvent: it hands the event to
// recordDHCPEvents and returns at once. A DHCP worker must not wait for
// the registry's lock, which every boot API request takes: at N = 100 on
// a saturated host the four workers sat behind 60 reports waiting for
// that lock, no machine got a lease for minutes, and machines timed out
// and started over (cmd/swarmbench/TUNING.md, session 17). The reply is
// already sent when OnEvent runs; a dropped event (a full queue) only
// delays what the registry shows until the machine's next request.
func (s *Server) queueDHCPEvent(ev dhcp.Event) {
	if s.dhcpEvents == nil {
		s.dhcpEvent(ev)
		return
	}
	select {
	case s.dhcpEvents <- ev:
	default:
		n := s.dhcpEventsDropped.Add(1)
		s.limit.warn(s.log, "dhcp events", "registry behind the DHCP server, machine event dropped", "mac", ev.MAC.String(), "dropped_total", n)
	}
}

// recordDHCPEvents applies queued DHCP events to the registry, in order,
// until done is closed.
func (s *Server) recordDHCPEvents(done <-chan struct{}) {
	for {
		select {
		case ev := <-s.dhcpEvents:
			s.dhcpEvent(ev)
		case <-done:
			return
		}
	}
}

// startDHCP opens ports 67 and 4011 on server.interface and serves them.
func (s *Server) startDHCP() error {
	s.dhcpEvents = make(chan dhcp.Event, dhcpEventQueue)
	o, err := s.dhcpOptions()
	if err != nil {
		return fmt.Errorf("netboot: dhcp settings: %w", err)
	}
	srv, err := dhcp.New(o)
	if err != nil {
		return fmt.Errorf("netboot: %w", err)
	}
	c67, err := dhcp.Listen(o.Interface, dhcp.ServerPort)
	if err != nil {
		srv.Close()
		return fmt.Errorf("netboot: %w", err)
	}
	c4011, err := dhcp.Listen(o.Interface, dhcp.PXEServerPort)
	if err != nil {
		c67.Close()
		srv.Close()
		return fmt.Errorf("netboot: %w", err)
	}
	done := make(chan struct{})
	s.wg.Add(2)
	go func() {
		defer s.wg.Done()
		s.recordDHCPEvents(done)
	}()
	go func() {
		defer s.wg.Done()
		if err := srv.Serve(c67, c4011); err != nil {
			s.log.Error("dhcp server stopped", "err", err)
		}
	}()
	s.closers = append(s.closers, func() error {
		err := srv.Close()
		c67.Close()
		c4011.Close()
		close(done)
		return err
	})
	s.log.Info("dhcp listening", o.LogAttrs()...)
	return nil
}
