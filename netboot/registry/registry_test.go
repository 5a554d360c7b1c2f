package registry

import (
	"bytes"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/boottorrent/boottorrent/initramfs/bootapi"
)

// With more machines than a Peers answer lists, each machine must get a
// subset that stays the same while the machines stay (its client asks
// again only when the answer changes), that other reports do not
// reorder, that differs from machine to machine, and that is symmetric:
// a machine lists the machines that list it (each boot client keeps at
// most 25 connections, see swarm.Peers).
func TestRegistryPeersStableSubset(t *testing.T) {
	const machines, n = 100, 19
	clock := time.Now()
	reg := New(Options{Now: func() time.Time { return clock }})
	mac := func(i int) string { return fmt.Sprintf("52:54:00:00:%02x:%02x", i/256, i%256) }
	ip := func(i int) netip.Addr { return netip.AddrFrom4([4]byte{10, 9, byte(1 + i/250), byte(1 + i%250)}) }
	addr := func(i int) netip.AddrPort { return netip.AddrPortFrom(ip(i), 6881) }
	report := func(i int) {
		reg.Report(ip(i), &bootapi.Report{MAC: mac(i), Stage: bootapi.StageDownload, OS: "debian", ListenPort: 6881})
	}
	for i := range machines {
		report(i)
		clock = clock.Add(10 * time.Millisecond)
	}
	first := reg.Peers("debian", mac(0), n)
	// Nine rings, two neighbours on each, some of them the same machine.
	if len(first) > n-1 || len(first) < n/2 {
		t.Fatalf("got %d peers, want %d to %d", len(first), n/2, n-1)
	}
	if slices.Contains(first, addr(0)) {
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
	// are handed every machine; every list is answered by the other side.
	if other := reg.Peers("debian", mac(1), n); slices.Equal(first, other) {
		t.Error("machines 0 and 1 get the same subset")
	}
	lists := map[netip.AddrPort][]netip.AddrPort{}
	total := 0
	for i := range machines {
		lists[addr(i)] = reg.Peers("debian", mac(i), n)
		total += len(lists[addr(i)])
	}
	for a, l := range lists {
		for _, p := range l {
			if !slices.Contains(lists[p], a) {
				t.Errorf("%v lists %v, which does not list it", a, p)
			}
		}
	}
	if len(lists) != machines {
		t.Errorf("%d of %d machines are handed to anyone", len(lists), machines)
	}
	if mean := float64(total) / machines; mean < 15 {
		t.Errorf("a machine is handed %.1f machines on average, want at least 15 of %d", mean, n-1)
	}
	// One machine leaving changes machine 0's answer only where it was:
	// every other machine on the list stays.
	gone := -1
	for i := range machines {
		if addr(i) == first[0] {
			gone = i
		}
	}
	reg.Report(ip(gone), &bootapi.Report{MAC: mac(gone), Stage: bootapi.StageBooting, OS: "debian"})
	after := reg.Peers("debian", mac(0), n)
	for _, p := range first[1:] {
		if !slices.Contains(after, p) {
			t.Errorf("after %v left, machine 0 lost %v too: %v", first[0], p, after)
		}
	}
	if slices.Contains(after, first[0]) {
		t.Errorf("after %v left, machine 0 is still handed it: %v", first[0], after)
	}
}

func TestRegistryBounded(t *testing.T) {
	now := time.Unix(1000, 0)
	r := New(Options{Max: 3, Now: func() time.Time { now = now.Add(time.Second); return now }})
	for i := range 5 {
		r.Observe(fmt.Sprintf("52:54:00:00:00:%02x", i), netip.AddrFrom4([4]byte{10, 0, 0, byte(i)}), "", bootapi.StageDHCP)
	}
	// Machine 1 is seen again, so machine 2 is the oldest now.
	r.Observe("52:54:00:00:00:02", netip.Addr{}, "", bootapi.StageTFTP)
	r.Observe("52:54:00:00:00:05", netip.Addr{}, "", bootapi.StageDHCP)
	var macs []string
	for _, m := range r.Snapshot() {
		macs = append(macs, m.MAC[15:])
	}
	if fmt.Sprint(macs) != "[02 04 05]" || r.Len() != 3 {
		t.Errorf("kept %v", macs)
	}
	if r.MACForIP(netip.MustParseAddr("10.0.0.0")) != "" || r.MACForIP(netip.MustParseAddr("10.0.0.2")) != "52:54:00:00:00:02" {
		t.Error("evicted machine's address still mapped")
	}
}

// TestRegistryLogs: one line per stage change, progress at most every
// progressLogEvery while downloading.
func TestRegistryLogs(t *testing.T) {
	var buf bytes.Buffer // the registry logs on the test's goroutine
	now := time.Unix(1000, 0)
	r := New(Options{Logger: slog.New(slog.NewTextHandler(&buf, nil)), Now: func() time.Time { return now },
		Names: map[bootapi.MAC]string{{0x52, 0x54, 0, 0, 0, 1}: "pc1"}})
	ip := netip.MustParseAddr("10.0.0.5")
	mac := "52:54:00:00:00:01"
	r.Observe(mac, ip, "bios", bootapi.StageDHCP)
	r.Observe(mac, ip, "", bootapi.StageDHCP) // no change, no line
	for i := range 30 {                       // a report every second for 30 s
		now = now.Add(time.Second)
		r.Report(ip, &bootapi.Report{MAC: mac, Stage: bootapi.StageDownload, OS: "debian", BytesTotal: 100, BytesDone: int64(i)})
	}
	r.Report(ip, &bootapi.Report{MAC: mac, Stage: bootapi.StageFailed, Message: "kexec refused"})
	logs := buf.String()
	for _, c := range []struct {
		what string
		n    int
	}{{`msg="machine stage"`, 2}, {`msg="machine progress"`, 2}, {`msg="machine failed"`, 1}, {"name=pc1", 5}} {
		if got := strings.Count(logs, c.what); got != c.n {
			t.Errorf("%d lines with %s, want %d:\n%s", got, c.what, c.n, logs)
		}
	}
	if !strings.Contains(logs, `message="kexec refused"`) {
		t.Errorf("failure message not logged:\n%s", logs)
	}
}

// TestRegistryReportFloodFromOneSource: 5,000 reports with random MACs
// from one address register at most MaxPerSource machines and evict no
// machine DHCP saw; another address still registers its machine, and a
// full registry forgets HTTP-only machines before DHCP-seen ones.
func TestRegistryReportFloodFromOneSource(t *testing.T) {
	r := New(Options{Max: 64})
	var real []string
	for i := range 40 {
		mac := fmt.Sprintf("52:54:00:00:01:%02x", i)
		real = append(real, mac)
		r.Observe(mac, netip.AddrFrom4([4]byte{10, 0, 1, byte(i)}), "bios", bootapi.StageDHCP)
	}
	flooder := netip.MustParseAddr("10.0.9.9")
	for i := range 5000 {
		mac := fmt.Sprintf("02:%02x:%02x:%02x:00:01", i>>16&0xff, i>>8&0xff, i&0xff)
		r.Report(flooder, &bootapi.Report{MAC: mac, Stage: bootapi.StageDownload})
		r.Asked(fmt.Sprintf("06:%02x:%02x:%02x:00:01", i>>16&0xff, i>>8&0xff, i&0xff), flooder)
	}
	if n := r.Len(); n != 40+MaxPerSource {
		t.Errorf("registry holds %d machines after the flood, want %d real + %d from the flooder", n, 40, MaxPerSource)
	}
	have := map[string]bool{}
	for _, m := range r.Snapshot() {
		have[m.MAC] = true
	}
	for _, mac := range real {
		if !have[mac] {
			t.Errorf("real machine %s evicted by the flood", mac)
		}
	}
	// A real machine that reports from its own address still registers.
	r.Report(netip.MustParseAddr("10.0.2.1"), &bootapi.Report{MAC: "52:54:00:00:02:01", Stage: bootapi.StageMenu})
	if r.MACForIP(netip.MustParseAddr("10.0.2.1")) != "52:54:00:00:02:01" {
		t.Error("a machine's own report was refused after another address's flood")
	}
	// Fill the registry from many addresses: the DHCP-seen machines stay.
	for i := range 200 {
		r.Report(netip.AddrFrom4([4]byte{10, 1, byte(i >> 8), byte(i)}), &bootapi.Report{
			MAC: fmt.Sprintf("0a:00:00:00:%02x:%02x", i>>8, i&0xff), Stage: bootapi.StageDownload})
	}
	have = map[string]bool{}
	for _, m := range r.Snapshot() {
		have[m.MAC] = true
	}
	for _, mac := range real {
		if !have[mac] {
			t.Errorf("DHCP-seen machine %s evicted before machines only heard over HTTP", mac)
		}
	}
}
