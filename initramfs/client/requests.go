package client

import (
	"sync/atomic"

	"github.com/anacrolix/torrent"
	pp "github.com/anacrolix/torrent/peer_protocol"
)

// requestCounts follows what becomes of the chunk requests a download
// sends, from the library's request callbacks: each request ends answered
// (its chunk came), rejected by the uploader, or withdrawn by the library
// (cancelled, or dropped with its connection). The library (v1.62) moves a
// request to another connection when that one has fewer requests out and
// the request is older than ClientConfig.StealRequestGrace ("work
// stealing", requesting.go), and cancels the first; the first
// chunk is often on the wire by then and arrives anyway, and one of the
// two is thrown away (Progress.Wasted). The counts show how often that
// happens (cmd/swarmbench reports them).
//
// seederOut is the requests out on the seeder's connections (sent and not
// yet deleted), which the web seed fallback's stall check needs.
type requestCounts struct {
	sent, deleted, answered, rejected atomic.Int64
	seederOut                         atomic.Int64
}

// register adds the counting callbacks to cfg; isSeeder says whether a
// peer is the server's seeder.
func (c *requestCounts) register(cfg *torrent.ClientConfig, isSeeder func(*torrent.Peer) bool) {
	cfg.Callbacks.SentRequest = append(cfg.Callbacks.SentRequest, func(ev torrent.PeerRequestEvent) {
		c.sent.Add(1)
		if isSeeder(ev.Peer) {
			c.seederOut.Add(1)
		}
	})
	cfg.Callbacks.DeletedRequest = append(cfg.Callbacks.DeletedRequest, func(ev torrent.PeerRequestEvent) {
		c.deleted.Add(1)
		if isSeeder(ev.Peer) {
			c.seederOut.Add(-1)
		}
	})
	cfg.Callbacks.ReceivedRequested = append(cfg.Callbacks.ReceivedRequested, func(torrent.PeerMessageEvent) { c.answered.Add(1) })
}

// read counts a Reject from the ReadMessage callback. Boot clients and
// the seeder never choke and never fill their request queues, so from
// them a Reject is almost always the answer to a cancel that came in time
// (BEP 6): the chunk was not sent.
func (c *requestCounts) read(m *pp.Message) {
	if m.Type == pp.Reject {
		c.rejected.Add(1)
	}
}

// counts returns the requests sent, withdrawn and rejected so far. The
// library deletes a request once: when its chunk comes, when the
// uploader rejects it, or when it cancels it or closes its connection;
// a Reject that acknowledges a cancel finds the request already deleted.
// So deleted − answered − rejected counts the cancels whose chunk was
// sent anyway (or whose connection closed). One move can withdraw two
// requests (the first, then the second when the first chunk still comes
// first) and waste one chunk: the withdrawn count is not the chunks
// thrown away, Progress.Wasted is.
func (c *requestCounts) counts() (sent, withdrawn, rejected int64) {
	sent, rejected = c.sent.Load(), c.rejected.Load()
	withdrawn = max(0, c.deleted.Load()-c.answered.Load()-rejected)
	return sent, withdrawn, rejected
}
