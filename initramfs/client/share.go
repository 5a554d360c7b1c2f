package client

import (
	"slices"
	"time"

	"github.com/boottorrent/boottorrent/initramfs/bootapi"
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
// complete it helps the next one (see steal). The advertised pieces
// change at most every remaskEvery, on the open connection (setMask).
//
// Near the end of a download the machines that completed their shares
// early help the others (steal), and each helper's connection to the
// seeder carries what one mask allows between two changes. When each
// change meant a new connection, with 2 pieces a second the server's
// uplink ran at 50–75 % for its last 4–5 s (N = 10, 20 Mbit/s), and with
// 4 pieces every half second the all-done time fell from 18.3 s to 17.7 s
// on average (12 and 10 runs, 17.4–20.2 s against 16.6–18.7 s); 8 pieces
// a second was worse (18.0–21.1 s). With the change on the open
// connection, the server's uplink stays full until its last 1–2 s, and
// 2 pieces every quarter second was no better than 4 every half second
// (N = 10: 16.9–18.3 s against 17.0–17.2 s, four runs each).

const (
	remaskEvery  = 500 * time.Millisecond
	noShareAfter = 10 * time.Second
	shareLoopTic = 250 * time.Millisecond
)

// helpAfter is how long a machine must go without data before it counts
// as idle in steal, while no connected machine is still downloading (the
// others finished or left: the seeder is the only source). helpAfterSwarm
// is the same while some connected machine is still downloading: the
// owners are then still fetching their shares, and a machine that takes
// their pieces from the seeder only makes the server send them twice. At
// N = 100 (8 MiB, 4 Mbit/s, 64 owners) a machine's first piece takes
// 8 s or more to arrive, so with 3 s every machine without a share asked
// the seeder for everything and every owner with a complete share took
// the next owner's reserved pieces: the server sent 2.37 copies of the
// image, and all machines were done after 53.6–56.8 s; with this rule,
// 1.78 copies and 46.9–47.5 s in the same hour (cmd/swarmbench/TUNING.md).
// Below N = 64 data keeps coming and neither wait is reached before the
// end.
const (
	helpAfter      = 3 * time.Second
	helpAfterSwarm = 10 * time.Second
)

// idleToHelp says whether a machine that got no data for sinceData counts
// as idle in steal, given whether a connected machine is still
// downloading.
func idleToHelp(sinceData time.Duration, peersDownloading bool) bool {
	if peersDownloading {
		return sinceData >= helpAfterSwarm
	}
	return sinceData >= helpAfter
}

// share is this machine's share of the pieces, as the server assigned it
// (bootapi.Peers): its rank index among count machines fetching the OS,
// of which owners own a share.
type share struct{ index, count, owners int }

// pieces is the piece range [from, to) this machine asks the seeder for
// (bootapi.OwnedShare).
func (s *share) pieces(np int) (from, to int) {
	owners := (&bootapi.Peers{ShareCount: s.count, ShareOwners: s.owners}).Owners()
	return bootapi.OwnedShare(s.index, s.count, owners, np)
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

// stealBatch is how many pieces of another share a machine asks the
// seeder for at a time (see steal and remaskEvery).
const stealBatch = 4

// ownerReserve is how many of a share's missing pieces, from its start,
// steal leaves to the share's owner.
const ownerReserve = 2

// stealState is what pickSteal decides from: this machine's share {index,
// count}, its complete pieces, the pieces its connected machines hold,
// whether one of them is still downloading, whether this machine is idle
// (idleToHelp) and the current extra set.
type stealState struct {
	index, count   int
	owners         int // 0: bootapi.DefaultShareOwners' cap
	complete, held []bool
	downloading    bool
	idle           bool
	stolen         []bool
}

// pickSteal decides what this machine asks the seeder for besides its own
// share. Every machine's downlink is full of its peers' uploads, so each
// connection to the seeder gets about 1/N of it; when an owner completed
// its share its connection went quiet and the server's uplink idled while
// slower owners were still fetching theirs (12 s into a 13.4 s image at
// N = 20, the server sent at half its rate). So a machine whose share is
// complete takes pieces nobody has yet from the end of the next
// unfinished share, stealBatch at a time, while the owner works from the
// start: the server keeps one busy connection per machine until every
// piece has left it once. Some pieces leave it twice (the owner asks for
// the rarest pieces first, and a stolen piece is no longer rare once this
// machine has it, but one still in flight is): at N = 20 the server sent
// 1.18 copies instead of 1.10, and the median machine finished 0.5–1 s
// sooner. A share whose owner is gone is fetched the same way. (Taking
// whole shares, or the same end of one, made helpers collide: 1.28
// copies and no gain.)
//
// A machine without a share of its own (more machines than owners) helps
// only when it sits idle: no peer has a piece it lacks and no data came
// for helpAfter (helpAfterSwarm while a peer is still downloading; see
// idleToHelp). Otherwise all of them would take pieces from the seeder
// at once, before any owner had a piece to pass on.
//
// st.stolen is the current extra set; pickSteal returns the next one and true
// when it should change: the stolen pieces are all here or held by a
// peer, and there are more to take.
func pickSteal(st stealState) ([]bool, bool) {
	np := len(st.complete)
	complete, held := st.complete, st.held
	sh := share{st.index, st.count, st.owners}
	owners := (&bootapi.Peers{ShareCount: sh.count, ShareOwners: sh.owners}).Owners()
	from, to := sh.pieces(np)
	if from == 0 && to == np {
		return nil, false // no split: the seeder offers everything already
	}
	for i := from; i < to; i++ {
		if !complete[i] {
			return nil, false
		}
	}
	for i, s := range st.stolen {
		if s && !complete[i] && !held[i] {
			return nil, false // still fetching the last batch
		}
	}
	// helpable: some connected machine holds a piece this one lacks.
	helpable := false
	for i := range np {
		if !complete[i] && held[i] {
			helpable = true
			break
		}
	}
	idle := st.idle
	if from == to && (helpable || !idle) {
		return nil, false // the peers still have work for this machine, or the owners are at work
	}
	// No connected machine holds a piece this one lacks: the seeder is
	// the only source left, so ask it for everything missing at once
	// instead of stealBatch pieces per mask change. A machine left alone
	// at the end of a run with 1 % loss otherwise fetched its last
	// 0.8 MiB at about 20 KiB/s, two pieces per new connection, and at
	// N = 20 waiting for the owners of the last pieces instead kept the
	// machines 10 s longer (cmd/swarmbench/TUNING.md). Not at the start
	// of a large swarm, though, while the owners are still fetching
	// their shares: at N = 100, where each share is 2 pieces that arrive
	// after about 8 s, the first owners to finish found nothing to take
	// from their peers and asked the seeder for the image, which it then
	// sent a second time (server egress 2.3 copies of the image, against
	// 1.8 with this rule).
	if !helpable && (!st.downloading || 2*trues(complete) >= np) {
		next := make([]bool, np)
		for i := range np {
			next[i] = !complete[i]
		}
		return next, true
	}
	// Share j is helped by the machines before it: the one at distance k
	// takes the k-th batch of its missing pieces counted from the end, so
	// machines that see the same bitfields never pick the same piece. The
	// lowest ownerReserve are left to the owner, which is fetching them,
	// unless the machine is idle (the owner may be gone).
	for k := 1; k < owners; k++ {
		j := (st.index + k) % owners
		f, t := bootapi.Share(j, owners, np)
		var col []int
		for i := t - 1; i >= f; i-- {
			if !complete[i] && !held[i] {
				col = append(col, i)
			}
		}
		skip := 0
		if !idle {
			col = col[:max(0, len(col)-ownerReserve)]
			skip = (k - 1) * stealBatch
		}
		if len(col) <= skip {
			continue
		}
		next := make([]bool, np)
		for _, i := range col[skip:min(len(col), skip+stealBatch)] {
			next[i] = true
		}
		return next, true
	}
	if slices.Contains(st.stolen, true) {
		return make([]bool, np), true // nothing left to take: drop the old batch
	}
	return nil, false
}

// trues counts the true values.
func trues(b []bool) int {
	n := 0
	for _, v := range b {
		if v {
			n++
		}
	}
	return n
}
