package netboot

import (
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/boottorrent/boottorrent/netboot/dhcp"
	"github.com/boottorrent/boottorrent/netboot/registry"
)

// TestDHCPEventDoesNotWaitForRegistry: the DHCP server's event callback
// returns while the registry is busy (its lock held by boot API requests,
// under load; here its clock blocks), and the registry records the event
// once it is free; a full queue drops events instead of blocking.
func TestDHCPEventDoesNotWaitForRegistry(t *testing.T) {
	busy := make(chan struct{})
	var free sync.Once
	release := func() { free.Do(func() { close(busy) }) }
	defer release()
	o := testOptions()
	o.Registry = registry.New(registry.Options{Now: func() time.Time { <-busy; return time.Now() }})
	s, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	s.dhcpEvents = make(chan dhcp.Event, 2)
	done := make(chan struct{})
	stopped := make(chan struct{})
	go func() { s.recordDHCPEvents(done); close(stopped) }()
	defer func() { close(done); <-stopped }()

	mac := net.HardwareAddr{0x52, 0x54, 0, 0, 0, 1}
	ev := dhcp.Event{MAC: mac, IP: netip.MustParseAddr("10.0.0.100"), Message: "ack"}
	returned := make(chan struct{})
	go func() {
		for range 10 { // the consumer takes one and blocks; 2 wait; the rest drop
			s.queueDHCPEvent(ev)
		}
		close(returned)
	}()
	select {
	case <-returned:
	case <-time.After(5 * time.Second):
		release()
		t.Fatal("queueDHCPEvent blocked while the registry was busy")
	}
	release()
	if d := s.dhcpEventsDropped.Load(); d < 7 {
		t.Errorf("%d events dropped, want at least 7 of 10 with a queue of 2", d)
	}
	deadline := time.Now().Add(5 * time.Second)
	for s.reg.MACForIP(ev.IP) == "" {
		if time.Now().After(deadline) {
			t.Fatal("the registry never recorded the queued event")
		}
		time.Sleep(5 * time.Millisecond)
	}
	if got := s.reg.MACForIP(ev.IP); got != mac.String() {
		t.Fatalf("registry has %q at %v, want %s", got, ev.IP, mac)
	}
}
