package client

import (
	"context"
	"slices"
	"time"

	"github.com/anacrolix/torrent"
	pp "github.com/anacrolix/torrent/peer_protocol"

	"github.com/boottorrent/boottorrent/netboot/bootapi"
)

// Sharing the seeder's pieces.
//
// The server's uplink is the one link every booting machine shares, so it
// should send each piece about once. Left alone, machines that start
// together all ask the seeder for the same rare pieces, and the library
// moves outstanding requests onto the seeder's connection: the server sent
// 2.4 copies of the image for 20 machines (cmd/swarmbench/TUNING.md). The
// server therefore gives every machine a share of the pieces
// (bootapi.Peers); the machine makes the seeder's connection advertise only
// its share, so it asks the seeder for nothing another machine will have,
// and gets the rest from the other machines. Once its own share is
// complete it helps the next one (see orphans). Changing the advertised
// pieces means dialling the seeder again, at most every remaskEvery.

const (
	remaskEvery  = time.Second
	helpAfter    = 3 * time.Second
	noShareAfter = 10 * time.Second
	shareLoopTic = 500 * time.Millisecond
)

// maxOwners bounds how many machines fetch a share from the seeder; the
// others get every piece from the machines. The seeder's uplink is split
// among the connections that ask it for pieces, so with 100 owners each
// got 1/100 of it and the first 64 KiB piece anyone could pass on took
// 13 s at 4 Mbit/s: machines sat idle and the swarm started late. With at
// most maxOwners, pieces leave the server at 1/16 of its uplink or more.
const maxOwners = 16

// shareRange is the piece range [from, to) this machine asks the seeder
// for, share index of count (bootapi.Peers): empty for a machine ranked
// beyond maxOwners, everything when there is no split.
func shareRange(index, count, pieces int) (from, to int) {
	owners := min(count, maxOwners)
	if count > 1 && index >= owners {
		return 0, 0
	}
	return bootapi.Share(index, owners, pieces)
}

// shareMask returns the bitfield the seeder's connection advertises:
// pieces [from, to) and those marked in extra, padded to whole bytes as on
// the wire; nil when that is every piece (no rewriting).
func shareMask(from, to, pieces int, extra []bool) *[]bool {
	bf := make([]bool, (pieces+7)/8*8)
	all := true
	for i := range pieces {
		bf[i] = i >= from && i < to || i < len(extra) && extra[i]
		all = all && bf[i]
	}
	if all {
		return nil
	}
	return &bf
}

// maskSeeder is the ReadMessage callback: it rewrites the seeder's
// Bitfield or HaveAll to the current mask before the library reads it. It
// runs with the library's lock held, so it must not call into the client.
func (d *torrentDL) maskSeeder(pc *torrent.PeerConn, m *pp.Message) {
	if m.Type != pp.Bitfield && m.Type != pp.HaveAll {
		return
	}
	mask := d.mask.Load()
	if mask == nil || d.source(&pc.Peer) != srcSeeder {
		return
	}
	bf := slices.Clone(*mask)
	if m.Type == pp.Bitfield {
		// Advertise only what the seeder really has.
		for i := range bf {
			bf[i] = bf[i] && i < len(m.Bitfield) && m.Bitfield[i]
		}
	}
	m.Type, m.Bitfield = pp.Bitfield, bf
}

// setMask makes mask what the seeder advertises (nil: every piece): it
// closes the connections to the seeder and dials it again, so that the
// new connection's bitfield is rewritten with it.
func (d *torrentDL) setMask(mask *[]bool) {
	d.mask.Store(mask)
	for _, pc := range d.t.PeerConns() {
		if d.source(&pc.Peer) == srcSeeder {
			pc.Close()
		}
	}
	d.seederMu.Lock()
	s := d.seeder
	d.seederMu.Unlock()
	d.t.AddPeers(s)
}

// shareLoop keeps the seeder's mask in line with the share the server
// assigned and adds orphaned pieces to it (see above).
func (d *torrentDL) shareLoop(ctx context.Context) {
	defer d.wg.Done()
	tick := time.NewTicker(shareLoopTic)
	defer tick.Stop()
	np := d.t.NumPieces()
	extra := make([]bool, np)
	var lastRedial time.Time
	for {
		select {
		case <-ctx.Done():
			return
		case <-d.t.Complete().On():
			return
		case <-tick.C:
		}
		sh := d.share.Load()
		if sh == nil && time.Since(d.started) >= noShareAfter {
			// No answer from the boot API: take the seeder's every
			// piece rather than wait on it (the web seed is the next
			// fallback).
			if d.share.CompareAndSwap(nil, &[2]int{0, 1}) && d.o.Logger != nil {
				d.o.Logger.Warn("no share from the server: asking the seeder for any piece", "stage", "download", "after", noShareAfter)
			}
			sh = d.share.Load()
		}
		if sh == nil {
			continue // no answer from the server yet
		}
		index, count := sh[0], sh[1]
		from, to := shareRange(index, count, np)
		cur := d.mask.Load()
		if cur != nil && time.Since(lastRedial) >= remaskEvery {
			if orphans := d.orphans(index, count, *cur); len(orphans) > 0 {
				for _, i := range orphans {
					extra[i] = true
				}
				if d.o.Logger != nil {
					d.o.Logger.Debug("helping another share: asking the server for pieces no peer offers", "stage", "download", "pieces", len(orphans))
				}
			}
		}
		want := shareMask(from, to, np, extra)
		same := want == nil && cur == nil || want != nil && cur != nil && slices.Equal(*want, *cur)
		if same || time.Since(lastRedial) < remaskEvery {
			continue
		}
		lastRedial = time.Now()
		d.setMask(want)
	}
}

// orphans returns pieces this machine should add to what it asks the
// seeder for: once its own share is complete, no connected machine has a
// piece it lacks and no data came for helpAfter, it sits idle, so it helps
// the next share
// (index+1, then index+2, … once that one is complete here) with the
// pieces of it that it lacks and that neither the seeder's mask nor any
// connected machine offers. That share's owner may be slow (the seeder's
// uplink is not shared evenly among connections), gone, or not among this
// machine's peers; only one machine helps each share first, and only at
// the end, so the server sends few pieces twice. (Helping as soon as the
// own share was complete made the helpers the slowest machines: the
// pieces they took from the seeder came at a fraction of its uplink,
// while the owner was fetching them too. Without the wait, machines with
// an empty share — more machines than pieces — all helped at once, before
// any owner had a piece: 16 copies at N = 100 with 16 pieces.) nil when
// there is nothing to add.
func (d *torrentDL) orphans(index, count int, mask []bool) []int {
	np := d.t.NumPieces()
	from, to := shareRange(index, count, np)
	if from == 0 && to == np {
		return nil // no split: the seeder offers everything already
	}
	complete := make([]bool, np)
	for i := range np {
		complete[i] = d.t.Piece(i).State().Complete
	}
	for i := from; i < to; i++ {
		if !complete[i] {
			return nil
		}
	}
	held := make([]bool, np)
	for _, pc := range d.t.PeerConns() {
		if d.source(&pc.Peer) == srcSeeder {
			continue
		}
		bm := pc.PeerPieces()
		for it := bm.Iterator(); it.HasNext(); {
			if i := int(it.Next()); i < np {
				held[i] = true
			}
		}
	}
	for i := range np {
		if !complete[i] && held[i] {
			return nil // the peers still have work for this machine
		}
	}
	if d.sinceData() < helpAfter {
		return nil // data still arrives: the owners are at work
	}
	owners := min(count, maxOwners)
	for k := range owners {
		j := (index + k) % owners
		if j == index {
			continue // this machine's own share, complete
		}
		f, t := bootapi.Share(j, owners, np)
		var out []int
		missing := false
		for i := f; i < t; i++ {
			if complete[i] || mask[i] {
				continue
			}
			missing = true
			if !held[i] {
				out = append(out, i)
			}
		}
		if missing {
			return out // this share first, even if the peers have it all
		}
	}
	return nil
}
