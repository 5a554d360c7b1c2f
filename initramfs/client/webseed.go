package client

import (
	"context"
	"time"
)

// webSeedAfter is how long BitTorrent may bring no data, with no
// connection to the seeder, before the web seed is added;
// webSeedLastResort is how long the seeder's connection may read nothing
// while this machine has requests out on it (it stalled: one machine
// alone at 5 Mbit/s once waited 50 s on a live seeder connection before
// TCP sent again); webSeedNoData is how long without any useful data adds
// it whatever the connections look like.
const (
	webSeedAfter      = 8 * time.Second
	webSeedLastResort = 15 * time.Second
	webSeedNoData     = 60 * time.Second
)

// webSeedDue says whether to add the web seed, given how long ago the
// last useful data came (sinceData), how long ago this machine last had a
// connection to the seeder (sinceSeeder) and how long the seeder's
// connection has read nothing with requests out on it (seederStalled,
// see stallWatch): when no data came for webSeedAfter and the seeder has
// been unreachable as long (its port filtered, the server's BitTorrent
// side restarting), when the seeder's connection stalled for
// webSeedLastResort, or after webSeedNoData without data at all.
//
// A connection that delivers slowly is not stalled. While the seeder is
// connected, a slow start is the server's uplink being shared, and the
// web seed, served from the same uplink and never shared the way pieces
// are, only adds to it: at N = 100 on 1 Mbit/s links, where a machine's
// first piece takes longer than 8 s to arrive, 99 of 100 machines added
// it and the server sent 15 copies of the image. With 64 owners sharing
// a 1 Mbit/s uplink a 64 KiB piece takes 34 s, past the 15 s that used
// to count as a stall whatever the connection did: in such a run the web
// seed sent 3 copies (cmd/swarmbench/TUNING.md). A
// machine without requests on the seeder (no share, waiting for the
// owners) is waiting, not stalled.
func webSeedDue(sinceData, sinceSeeder, seederStalled time.Duration) bool {
	switch {
	case sinceData >= webSeedAfter && sinceSeeder >= webSeedAfter:
		return true
	case sinceData >= webSeedLastResort && seederStalled >= webSeedLastResort:
		return true
	}
	return sinceData >= webSeedNoData
}

// stallWatch measures how long the seeder's connections have read
// nothing while requests were out on them.
type stallWatch struct {
	read  int64     // bytes the seeder's connections had read
	moved time.Time // when they last read, or had nothing requested
}

// observe takes the bytes the seeder's connections have read so far and
// the requests out on them, at now, and returns how long they have been
// stalled.
func (w *stallWatch) observe(now time.Time, read, outstanding int64) time.Duration {
	if w.moved.IsZero() || read != w.read || outstanding <= 0 {
		w.read, w.moved = read, now
	}
	return now.Sub(w.moved)
}

// webSeedFallback adds the torrent's web seeds when webSeedDue says so.
func (d *torrentDL) webSeedFallback(ctx context.Context, urls []string) {
	defer d.wg.Done()
	if len(urls) == 0 {
		return
	}
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	lastSeeder := d.started
	var watch stallWatch
	for {
		select {
		case <-ctx.Done():
			return
		case <-d.t.Complete().On():
			return
		case <-tick.C:
		}
		var read int64
		for _, pc := range d.t.PeerConns() {
			if d.source(&pc.Peer) == srcSeeder {
				lastSeeder = time.Now()
				st := pc.Stats()
				read += st.BytesRead.Int64()
			}
		}
		// Connections that close take their counts with them; a new one
		// starts from zero, which counts as movement.
		stalled := watch.observe(time.Now(), read, d.requests.seederOut.Load())
		noData, noSeeder := d.sinceData(), time.Since(lastSeeder)
		if webSeedDue(noData, noSeeder, stalled) {
			if d.o.Logger != nil {
				d.o.Logger.Warn("no BitTorrent data: adding the web seed", "stage", "download", "no_data_for", noData.Round(time.Second),
					"seeder_unreachable_for", noSeeder.Round(time.Second), "seeder_stalled_for", stalled.Round(time.Second), "urls", len(urls))
			}
			d.t.AddWebSeeds(urls)
			return
		}
	}
}
