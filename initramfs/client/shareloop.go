package client

import (
	"context"
	"slices"
	"time"

	"github.com/anacrolix/torrent"
	pp "github.com/anacrolix/torrent/peer_protocol"

	"github.com/boottorrent/boottorrent/seeder/btlan"
)

// maskSeeder rewrites a message from the seeder (see readMessage) to the
// current mask (btlan.MaskMessage). It runs with the library's lock held,
// so it must not call into the client.
func (d *torrentDL) maskSeeder(pc *torrent.PeerConn, m *pp.Message) {
	var mask []bool
	if p := d.mask.Load(); p != nil {
		mask = *p
	}
	btlan.MaskMessage(pc, m, mask, d.np)
}

// The share goroutine (shareLoop) owns this machine's share of the
// seeder's pieces: the share the server assigned, the seeder's addresses,
// the pieces taken from other shares (steal) and when the mask last
// changed. The peer refresh tells it each answer from the server
// (tellShare); the library's callbacks only read the mask it publishes
// (torrentDL.mask) and count.

// shareEvent is an answer from the server for the share goroutine: this
// machine's share and, with withSeeder, the seeder's addresses. applied
// is closed once the goroutine has taken it.
type shareEvent struct {
	share      share
	seeder     []torrent.PeerInfo
	withSeeder bool
	applied    chan struct{}
}

// shareState is the share goroutine's own state.
type shareState struct {
	sh     *share             // the server's share (nil: none yet)
	seeder []torrent.PeerInfo // the seeder's addresses, from the server
	stolen []bool             // pieces of other shares asked for (steal)
	// lastRemask is when the mask last changed, lastSeederDial when
	// keepSeeder last dialled the seeder.
	lastRemask, lastSeederDial time.Time
	// seederBack says whether a connection to the seeder was seen since
	// keepSeeder last closed a connection to make room for it, at
	// lastEvict.
	seederBack bool
	lastEvict  time.Time
}

func newShareState(np int) *shareState { return &shareState{stolen: make([]bool, np)} }

// tellShare hands ev to the share goroutine and waits until it is
// applied; false when ctx ended first.
func (d *torrentDL) tellShare(ctx context.Context, ev shareEvent) bool {
	ev.applied = make(chan struct{})
	select {
	case d.shares <- ev:
	case <-ctx.Done():
		return false
	}
	select {
	case <-ev.applied:
		return true
	case <-ctx.Done():
		return false
	}
}

// shareLoop is the share goroutine: it applies the server's answers and,
// until the download is complete, keeps the seeder's mask in line with
// the share and adds the pieces steal picks.
func (d *torrentDL) shareLoop(ctx context.Context, st *shareState) {
	defer d.wg.Done()
	tick := time.NewTicker(shareLoopTic)
	defer tick.Stop()
	ticks, complete := tick.C, d.t.Complete().On()
	for {
		select {
		case <-ctx.Done():
			return
		case <-complete:
			// Nothing more to ask the seeder for; the answers the peer
			// refresh still passes on are taken all the same.
			ticks, complete = nil, nil
		case ev := <-d.shares:
			d.applyShare(st, ev)
			close(ev.applied)
		case <-ticks:
			d.remask(st)
		}
	}
}

// applyShare takes an answer from the server. The first share applies at
// once, before the peer refresh adds the seeder to the library's peers
// (dropping a connection the tracker may have made); later changes wait
// for remask.
func (d *torrentDL) applyShare(st *shareState, ev shareEvent) {
	if ev.withSeeder {
		st.seeder = ev.seeder
	}
	first := st.sh == nil
	sh := ev.share
	st.sh = &sh
	if first {
		from, to := sh.pieces(d.np)
		d.setMask(st, shareMask(from, to, d.np, nil))
	}
}

// remask is one tick of the share goroutine: it changes the mask to the
// share plus what steal picks, at most every remaskEvery, and keeps a
// connection to the seeder (keepSeeder).
func (d *torrentDL) remask(st *shareState) {
	if st.sh == nil && time.Since(d.started) >= noShareAfter {
		// No answer from the boot API: take the seeder's every piece
		// rather than wait on it (the web seed is the next fallback).
		st.sh = &share{0, 1, 1}
		if d.o.Logger != nil {
			d.o.Logger.Warn("no share from the server: asking the seeder for any piece", "stage", "download", "after", noShareAfter)
		}
	}
	if st.sh == nil {
		return // no answer from the server yet
	}
	np := d.np
	from, to := st.sh.pieces(np)
	cur := d.mask.Load()
	if cur != nil && time.Since(st.lastRemask) >= remaskEvery {
		if next, ok := d.steal(*st.sh, st.stolen); ok {
			if d.o.Logger != nil {
				d.o.Logger.Debug("own share complete: asking the server for pieces no peer has yet", "stage", "download", "pieces", trues(next))
			}
			st.stolen = next
		}
	}
	want := shareMask(from, to, np, st.stolen)
	same := want == nil && cur == nil || want != nil && cur != nil && slices.Equal(*want, *cur)
	if time.Since(st.lastSeederDial) >= seederRedialEvery && d.keepSeeder(st) {
		st.lastSeederDial = time.Now()
	}
	if same || time.Since(st.lastRemask) < remaskEvery {
		return
	}
	st.lastRemask = time.Now()
	d.setMask(st, want)
}

// setMask makes mask what the seeder advertises (nil: every piece). On a
// connection to a seeder that supports btlan.MaskExtension it sends a
// mask request, and maskSeeder turns the answer into a Bitfield of the
// new mask: the connection and its requests in flight stay. Otherwise
// (a seeder without the extension) it closes the connections to the
// seeder and dials it again, so that the new connection's bitfield is
// rewritten with it; closing threw away what was in flight, and at N = 20
// the server's uplink ran below its rate in its last seconds
// (cmd/swarmbench/TUNING.md).
func (d *torrentDL) setMask(st *shareState, mask *[]bool) {
	d.mask.Store(mask)
	redial := true
	for _, pc := range d.t.PeerConns() {
		if d.source(&pc.Peer) != srcSeeder {
			continue
		}
		if btlan.RequestMask(pc) == nil {
			redial = false
			continue
		}
		pc.Close()
	}
	if !redial {
		return
	}
	d.t.AddPeers(st.seeder)
}

// seederRedialEvery is how often keepSeeder may dial the seeder again:
// its handshake answer shares the server's busy uplink. evictRetry is
// how long it waits before it closes another machine's connection for
// the seeder when the last place it made went unused.
const (
	seederRedialEvery = 2 * time.Second
	evictRetry        = 15 * time.Second
)

// keepSeeder dials the seeder again when this machine has no connection
// to it and still lacks pieces the mask lets it ask the seeder for, and
// reports whether it did. The library keeps at most
// EstablishedConnsPerTorrent connections (25, LANConfig): when a machine
// dials in and the connections out outnumber those in, it closes the
// connection out that delivered nothing useful for the longest, and the
// seeder's connection, which gets 1/N of the server's uplink, is usually
// that one. Nor does the library dial the seeder again while it is at
// its limit. So from N ≈ 25 on, owners lost the connection that brings
// their share: N = 30 (8 MiB, 1 Mbit/s), 18–28 seeder connections
// closed by the machines and 150–400 machine-seconds without one, one
// machine 55 s, which then took 960 KiB from the web seed
// (cmd/swarmbench/TUNING.md). At the limit, keepSeeder closes the
// connection to the machine that holds the fewest pieces this one
// lacks, so that the seeder (a trusted peer, dialled before the others)
// gets the place. It waits while a dial is under way (the library's
// half-open connections): the seeder's may be that one.
func (d *torrentDL) keepSeeder(st *shareState) bool {
	conns := d.t.PeerConns()
	for _, pc := range conns {
		if d.source(&pc.Peer) == srcSeeder {
			st.seederBack = true
			return false
		}
	}
	if len(st.seeder) == 0 {
		return false // no address from the server yet
	}
	complete := d.completed()
	mask := d.mask.Load()
	need := false
	for i, c := range complete {
		need = need || !c && (mask == nil || i < len(*mask) && (*mask)[i])
	}
	if !need {
		return false
	}
	if d.t.Stats().HalfOpenPeers > 0 {
		return false // a dial is under way, maybe the seeder's: let it finish
	}
	// The seeder goes into the library's list before a connection is
	// closed: the place the close frees is dialled from that list at
	// once, trusted peers first.
	d.seederDials.Add(1)
	d.t.AddPeers(st.seeder)
	// A place made for the seeder that it did not take (the server is
	// unreachable, or another machine dialled in first) is made again
	// only after evictRetry: a machine must not shed its peers every
	// few seconds while the server is down.
	if len(conns) >= d.maxConns && (st.seederBack || time.Since(st.lastEvict) >= evictRetry) {
		st.seederBack, st.lastEvict = false, time.Now()
		conns[leastUseful(conns, complete)].Close()
		d.seederEvictions.Add(1)
	}
	if d.o.Logger != nil {
		d.o.Logger.Debug("no connection to the seeder: dialling it again", "stage", "download", "connections", len(conns))
	}
	return true
}

// makeSeederRoom runs when a connection's handshake completed, before
// the library adds it to the torrent. At its limit the library refuses
// a new connection ("don't want conn") unless one it has is bad, and the
// place keepSeeder freed for the seeder can go to a machine whose dial
// was quicker: the seeder's handshake answer waits behind the server's
// busy uplink (seen in the tests on a loaded host: seven dials, none
// kept, while a machine took the place each time). So when the seeder's
// handshake completes and this machine, still downloading, is at its
// limit without a connection to the seeder, it closes the connection to
// the machine that holds the fewest pieces this one lacks, and the
// seeder's takes that place.
func (d *torrentDL) makeSeederRoom(pc *torrent.PeerConn) {
	if !d.ready.Load() || d.source(&pc.Peer) != srcSeeder || d.t.Complete().Bool() {
		return
	}
	conns := d.t.PeerConns()
	if len(conns) < d.maxConns {
		return
	}
	for _, c := range conns {
		if d.source(&c.Peer) == srcSeeder {
			return // one is enough
		}
	}
	victim := conns[leastUseful(conns, d.completed())]
	victim.Close()
	d.seederEvictions.Add(1)
	// The library forgets a closed connection only when its reader
	// stops, and until then counts it against the limit: the seeder's
	// would still be refused. This goroutine is the seeder's handshake,
	// run without the library's lock; it may wait a little.
	for deadline := time.Now().Add(seederRoomWait); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		if !slices.Contains(d.t.PeerConns(), victim) {
			return
		}
	}
}

// seederRoomWait bounds makeSeederRoom's wait for the connection it
// closed to be gone.
const seederRoomWait = 2 * time.Second

// leastUseful returns the index of the connection whose peer holds the
// fewest of the pieces this machine lacks (complete[i] false); the
// first of equals.
func leastUseful(conns []*torrent.PeerConn, complete []bool) int {
	k, least := 0, -1
	for j, pc := range conns {
		n := 0
		bm := pc.PeerPieces()
		for it := bm.Iterator(); it.HasNext(); {
			if i := int(it.Next()); i < len(complete) && !complete[i] {
				n++
			}
		}
		if least < 0 || n < least {
			k, least = j, n
		}
	}
	return k
}

// steal gathers what pickSteal decides from: the pieces complete here,
// those the connected machines hold, whether one of them is still
// downloading and whether this machine is idle (idleToHelp).
func (d *torrentDL) steal(sh share, stolen []bool) ([]bool, bool) {
	np := d.t.NumPieces()
	st := stealState{index: sh.index, count: sh.count, owners: sh.owners, stolen: stolen,
		complete: d.completed(), held: make([]bool, np)}
	for _, pc := range d.t.PeerConns() {
		if d.source(&pc.Peer) == srcSeeder {
			continue
		}
		bm := pc.PeerPieces()
		st.downloading = st.downloading || bm.GetCardinality() < uint64(np)
		for it := bm.Iterator(); it.HasNext(); {
			if i := int(it.Next()); i < np {
				st.held[i] = true
			}
		}
	}
	st.idle = idleToHelp(d.sinceData(), st.downloading)
	return pickSteal(st)
}

// completed says for every piece whether it is complete here.
func (d *torrentDL) completed() []bool {
	c := make([]bool, d.t.NumPieces())
	for i := range c {
		c[i] = d.t.Piece(i).State().Complete
	}
	return c
}
