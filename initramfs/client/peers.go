package client

import (
	"context"
	"fmt"
	"net"
	"slices"
	"strconv"
	"time"

	"github.com/anacrolix/torrent"

	"github.com/boottorrent/boottorrent/initramfs/bootapi"
)

// refreshPeers hands the torrent client the peers the server knows, at
// once and then periodically, so a lost tracker reply never leaves the
// client idle (the 75 s stall seen with announces alone).
func (d *torrentDL) refreshPeers(ctx context.Context) {
	defer d.wg.Done()
	if d.o.Peers == nil {
		return
	}
	wait := time.Duration(0)
	failing := false
	var failingSince time.Time
	lastKey := ""
	for {
		select {
		case <-ctx.Done():
			return
		case <-time.After(jittered(wait)):
		}
		ans, err := d.o.Peers(ctx)
		switch {
		case err != nil && ctx.Err() != nil:
			return // closing
		case err != nil:
			if !failing {
				failingSince = time.Now()
				if d.o.Logger != nil {
					d.o.Logger.Warn("peer list unavailable", "stage", "download", "err", err)
				}
			}
			failing = true
			wait = 3 * time.Second
			if len(d.trackers) > 0 && time.Since(failingSince) >= d.o.TrackerAfter {
				if d.o.Logger != nil {
					d.o.Logger.Warn("peer list unavailable: asking the tracker for peers", "stage", "download", "after", d.o.TrackerAfter)
				}
				d.t.AddTrackers(d.trackers)
				d.trackers = nil
			}
			continue
		case err == nil:
			if failing && d.o.Logger != nil {
				d.o.Logger.Info("peer list available again", "stage", "download", "peers", len(ans.Peers))
			}
			failing = false
		}
		var pis, seeder []torrent.PeerInfo
		for _, s := range ans.Peers {
			host, port, err := net.SplitHostPort(s)
			if err != nil {
				continue
			}
			pn, _ := strconv.Atoi(port)
			pi := torrent.PeerInfo{
				Addr:    &net.TCPAddr{IP: net.ParseIP(host), Port: pn},
				Source:  torrent.PeerSourceDirect,
				Trusted: host == d.o.ServerHost,
			}
			pis = append(pis, pi)
			if pi.Trusted {
				seeder = append(seeder, pi)
			}
		}
		// The share goroutine takes the share and the seeder's addresses
		// before the peers are added: the first share applies before the
		// seeder is dialled (see shareState.apply).
		if !d.tellShare(ctx, shareEvent{share: share{ans.ShareIndex, ans.ShareCount, ans.Owners()}, seeder: seeder, withSeeder: true}) {
			return // closing
		}
		d.t.AddPeers(pis)
		d.reportMS.Store(ans.ReportMS)
		// Every second while the answer changes (machines switched on
		// one after another, shares handed out), then less and less
		// often up to every 10 s: a hundred machines asking every
		// second took a third of a 4 Mbit/s server uplink.
		key := peersKey(ans)
		if key != lastKey {
			wait = time.Second
		} else {
			wait = min(2*wait, 10*time.Second)
		}
		lastKey = key
	}
}

// defaultTrackerAfter is how long the boot API may fail to answer before
// the client announces to the torrent's trackers for peers instead
// (Config.TrackerAfter overrides it).
const defaultTrackerAfter = 15 * time.Second

// peersKey says what in a Peers answer refreshPeers acts on: the share
// and the set of peers, not their order. Servers used to list the peers
// most recently seen first, so the order changed with every machine's
// report; comparing it made every machine ask again each second for the
// whole download, and those answers took 7 % of a 5 Mbit/s server
// uplink at N = 20 (server egress 1.19–1.20 copies of the image against
// 1.11–1.13 with this key, cmd/swarmbench/TUNING.md). The server now
// keeps each machine's list stable too (netboot Registry.Peers).
func peersKey(ans *bootapi.Peers) string {
	peers := slices.Clone(ans.Peers)
	slices.Sort(peers)
	return fmt.Sprint(ans.ShareIndex, ans.ShareCount, peers)
}
