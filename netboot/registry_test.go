package netboot

import (
	"fmt"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/boottorrent/boottorrent/netboot/bootapi"
)

// With more machines than a Peers answer lists, each machine must get a
// subset that stays the same while the machines stay (its client asks
// again only when the answer changes), that other reports do not
// reorder, and that differs from machine to machine.
func TestRegistryPeersStableSubset(t *testing.T) {
	const machines, n = 100, 50
	clock := time.Now()
	reg := NewRegistry(nil, 0, nil)
	reg.now = func() time.Time { return clock }
	mac := func(i int) string { return fmt.Sprintf("52:54:00:00:%02x:%02x", i/256, i%256) }
	ip := func(i int) netip.Addr { return netip.AddrFrom4([4]byte{10, 9, byte(1 + i/250), byte(1 + i%250)}) }
	report := func(i int) {
		reg.Report(ip(i), &bootapi.Report{MAC: mac(i), Stage: bootapi.StageDownload, OS: "debian", ListenPort: 6881})
	}
	for i := range machines {
		report(i)
		clock = clock.Add(10 * time.Millisecond)
	}
	first := reg.Peers("debian", mac(0), n)
	if len(first) != n {
		t.Fatalf("got %d peers, want %d", len(first), n)
	}
	if slices.Contains(first, netip.AddrPortFrom(ip(0), 6881)) {
		t.Errorf("machine 0 is handed itself: %v", first)
	}
	// Every other machine reports again, most recent last.
	for i := machines - 1; i >= 1; i-- {
		report(i)
		clock = clock.Add(10 * time.Millisecond)
	}
	if again := reg.Peers("debian", mac(0), n); !slices.Equal(first, again) {
		t.Errorf("new reports changed machine 0's peers:\n%v\n%v", first, again)
	}
	// Another machine gets another subset, and together the machines
	// are handed every machine.
	if other := reg.Peers("debian", mac(1), n); slices.Equal(first, other) {
		t.Error("machines 0 and 1 get the same subset")
	}
	seen := map[netip.AddrPort]bool{}
	for i := range machines {
		for _, p := range reg.Peers("debian", mac(i), n) {
			seen[p] = true
		}
	}
	if len(seen) != machines {
		t.Errorf("%d of %d machines are handed to anyone", len(seen), machines)
	}
	// One machine leaving changes machine 0's answer by at most that
	// machine (replaced by the next in its order).
	gone := -1
	for i := range machines {
		if netip.AddrPortFrom(ip(i), 6881) == first[0] {
			gone = i
		}
	}
	reg.Report(ip(gone), &bootapi.Report{MAC: mac(gone), Stage: bootapi.StageBooting, OS: "debian"})
	after := reg.Peers("debian", mac(0), n)
	kept := 0
	for _, p := range after {
		if slices.Contains(first, p) {
			kept++
		}
	}
	if kept != n-1 || slices.Contains(after, first[0]) {
		t.Errorf("after %v left, %d of machine 0's %d peers kept (want %d), list %v", first[0], kept, n, n-1, after)
	}
}
