package registry

import (
	"net/netip"
	"testing"
	"time"

	"github.com/boottorrent/boottorrent/initramfs/bootapi"
	"github.com/boottorrent/boottorrent/seeder/swarm"
)

// A downloading machine that stops reporting is lost after two report
// intervals (with the clients' jitter), counted once, and leaves that
// state with its next report; a failed machine keeps its message until it
// starts over, and the payload hook sees report differences, restarts
// included.
func TestLostFailedAndPayload(t *testing.T) {
	clock := time.Date(2026, 12, 7, 10, 0, 0, 0, time.UTC)
	type change struct{ from, to string }
	var changes []change
	var peers, seeder, web, up int64
	reg := New(Options{Now: func() time.Time { return clock }, Hooks: Hooks{
		Stage: func(from, to string, in time.Duration) { changes = append(changes, change{from, to}) },
		Payload: func(p, s, w, u int64) {
			peers, seeder, web, up = peers+p, seeder+s, web+w, up+u
		},
	}})
	ip := netip.MustParseAddr("10.0.0.5")
	const mac = "52:54:00:00:00:05"
	stageOf := func() bootapi.Machine {
		t.Helper()
		s := reg.Snapshot()
		if len(s) != 1 {
			t.Fatalf("snapshot has %d machines", len(s))
		}
		return s[0]
	}
	reg.Report(ip, &bootapi.Report{MAC: mac, Stage: bootapi.StageDownload, OS: "deb", FromPeers: 100, FromSeeder: 50})
	every := swarm.ReportEvery(1)
	if m := stageOf(); m.Stage != bootapi.StageDownload || m.ReportMS != every.Milliseconds() {
		t.Fatalf("after a report: %+v", m)
	}
	clock = clock.Add(2 * every)
	if m := stageOf(); m.Stage != bootapi.StageDownload {
		t.Fatalf("lost after two intervals, within the jitter: %s", m.Stage)
	}
	clock = clock.Add(every)
	m := stageOf()
	if m.Stage != bootapi.StageLost || m.LostFrom != bootapi.StageDownload {
		t.Fatalf("silent for three intervals: stage %q from %q", m.Stage, m.LostFrom)
	}
	stageOf()
	// It comes back: its client restarted, counters from zero.
	reg.Report(ip, &bootapi.Report{MAC: mac, Stage: bootapi.StageDownload, OS: "deb", FromPeers: 30, FromWeb: 7})
	if m := stageOf(); m.Stage != bootapi.StageDownload || m.LostFrom != "" {
		t.Fatalf("reported again: %+v", m)
	}
	if peers != 130 || seeder != 50 || web != 7 || up != 0 {
		t.Errorf("payload sums: peers %d seeder %d web %d up %d", peers, seeder, web, up)
	}
	reg.Report(ip, &bootapi.Report{MAC: mac, Stage: bootapi.StageFailed, OS: "deb", Message: "disk full"})
	clock = clock.Add(time.Hour)
	if m := stageOf(); m.Stage != bootapi.StageFailed || m.Message != "disk full" {
		t.Fatalf("failed machine: %+v", m)
	}
	// It starts over: no stale failure message.
	reg.Observe(mac, ip, "bios", bootapi.StageDHCP)
	if m := stageOf(); m.Stage != bootapi.StageDHCP || m.Message != "" {
		t.Fatalf("after starting over: %+v", m)
	}
	want := []change{{"", bootapi.StageDownload}, {bootapi.StageDownload, bootapi.StageLost},
		{bootapi.StageLost, bootapi.StageDownload}, {bootapi.StageDownload, bootapi.StageFailed},
		{bootapi.StageFailed, bootapi.StageDHCP}}
	if len(changes) != len(want) {
		t.Fatalf("stage changes %v, want %v", changes, want)
	}
	for i := range want {
		if changes[i] != want[i] {
			t.Errorf("change %d: %v, want %v", i, changes[i], want[i])
		}
	}
}
