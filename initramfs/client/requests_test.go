package client

import (
	"testing"

	"github.com/anacrolix/torrent"
	pp "github.com/anacrolix/torrent/peer_protocol"
)

// TestRequestCounts drives the callbacks the way the library calls them
// (peerconn.go in v1.62): an answered request, a live request rejected, a
// cancel acknowledged by a reject (the request was deleted at the cancel),
// and a cancel whose chunk was already sent (no reject).
func TestRequestCounts(t *testing.T) {
	var c requestCounts
	cfg := torrent.NewDefaultClientConfig()
	seeder := &torrent.Peer{}
	c.register(cfg, func(p *torrent.Peer) bool { return p == seeder })
	send := func() {
		for _, f := range cfg.Callbacks.SentRequest {
			f(torrent.PeerRequestEvent{Peer: seeder})
		}
	}
	deleted := func() {
		for _, f := range cfg.Callbacks.DeletedRequest {
			f(torrent.PeerRequestEvent{Peer: seeder})
		}
	}
	answered := func() {
		for _, f := range cfg.Callbacks.ReceivedRequested {
			f(torrent.PeerMessageEvent{})
		}
	}
	reject := &pp.Message{Type: pp.Reject}
	for range 4 {
		send()
	}
	answered() // 1: its chunk came
	deleted()
	c.read(reject) // 2: rejected while live
	deleted()
	deleted() // 3: cancelled, then the uploader's reject acknowledges it
	c.read(reject)
	deleted() // 4: cancelled, its chunk came anyway
	c.read(&pp.Message{Type: pp.Piece})
	if out := c.seederOut.Load(); out != 0 {
		t.Errorf("%d requests out on the seeder after all ended, want 0", out)
	}
	for _, f := range cfg.Callbacks.SentRequest {
		f(torrent.PeerRequestEvent{Peer: &torrent.Peer{}}) // another machine
	}
	send()
	if out := c.seederOut.Load(); out != 1 {
		t.Errorf("%d requests out on the seeder, want 1 (the other machine's does not count)", out)
	}
	sent, withdrawn, rejected := c.counts()
	if sent != 6 || withdrawn != 1 || rejected != 2 {
		t.Errorf("counts = %d sent, %d withdrawn, %d rejected; want 6, 1, 2", sent, withdrawn, rejected)
	}
	var fresh requestCounts
	if s, w, r := fresh.counts(); s != 0 || w != 0 || r != 0 {
		t.Errorf("fresh counts = %d, %d, %d", s, w, r)
	}
}
