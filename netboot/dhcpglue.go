package netboot

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/boottorrent/boottorrent/initramfs/bootapi"
	"github.com/boottorrent/boottorrent/netboot/dhcp"
)

// LeaseFileName is the full-mode lease file's name, under the project's
// out/ (cmd/internal/cli sets DHCP.LeaseFile).
const LeaseFileName = "leases.json"

// dhcpOptions maps the server's options onto the DHCP server's.
func (s *Server) dhcpOptions() (dhcp.Options, error) {
	o := &s.opts
	machines := map[string]string{}
	for mac, m := range o.Machines {
		name := m.Name
		if name == "" {
			name = strings.ReplaceAll(mac.String(), ":", "")
		}
		machines[mac.String()] = name
	}
	d := dhcp.Options{
		Mode:      o.DHCP.Mode,
		Interface: o.Interface,
		ServerIP:  o.Address,
		Prefix:    o.Prefix,
		First:     o.DHCP.First,
		Last:      o.DHCP.Last,
		LeaseTime: o.DHCP.LeaseTime,
		Netmask:   o.DHCP.Netmask,
		Router:    o.DHCP.Router,
		DNS:       o.DHCP.DNS,
		Machines:  machines,
		BIOSFile:  o.IPXE.BIOS,
		UEFIFile:  o.IPXE.UEFI,
		TFTP:      o.TFTP,
		HTTPBase:  s.base,
		Logger:    s.log.With("service", "dhcp"),
		OnEvent:   s.queueDHCPEvent,
	}
	if o.Meter != nil {
		d.Meter = o.Meter
	}
	if o.DHCP.Mode == dhcp.ModeFull && o.DHCP.LeaseFile != "" {
		dir := filepath.Dir(o.DHCP.LeaseFile)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return d, fmt.Errorf("create %s for the lease file: %w", dir, err)
		}
		d.LeaseFile = o.DHCP.LeaseFile
	}
	return d, nil
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
// and started over (cmd/swarmbench/TUNING.md, 2026-11-24). The reply is
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
		s.limit.Warn(s.log, "dhcp events", "registry behind the DHCP server, machine event dropped", "mac", ev.MAC.String(), "dropped_total", n)
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
		return fmt.Errorf("dhcp settings: %w", err)
	}
	srv, err := dhcp.New(o)
	if err != nil {
		return err
	}
	c67, err := dhcp.Listen(o.Interface, dhcp.ServerPort)
	if err != nil {
		srv.Close()
		return err
	}
	c4011, err := dhcp.Listen(o.Interface, dhcp.PXEServerPort)
	if err != nil {
		c67.Close()
		srv.Close()
		return err
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
