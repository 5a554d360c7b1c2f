package client

import (
	"testing"

	"github.com/anacrolix/torrent"
	pp "github.com/anacrolix/torrent/peer_protocol"
)

// TestRequestCounts drives the callbacks the way the library calls them
// (peerconn.go in v1.61): an answered request, a live request rejected, a
// cancel acknowledged by a reject (the request was deleted at the cancel),
// and a cancel whose chunk was already sent (no reject).
func TestRequestCounts(t *testing.T) {
	var c requestCounts
	cfg := torrent.NewDefaultClientConfig()
	c.register(cfg)
	send := func() {
		for _, f := range cfg.Callbacks.SentRequest {
			f(torrent.PeerRequestEvent{})
		}
	}
	deleted := func() {
		for _, f := range cfg.Callbacks.DeletedRequest {
			f(torrent.PeerRequestEvent{})
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
	sent, withdrawn, rejected := c.counts()
	if sent != 4 || withdrawn != 1 || rejected != 2 {
		t.Errorf("counts = %d sent, %d withdrawn, %d rejected; want 4, 1, 2", sent, withdrawn, rejected)
	}
	var fresh requestCounts
	if s, w, r := fresh.counts(); s != 0 || w != 0 || r != 0 {
		t.Errorf("fresh counts = %d, %d, %d", s, w, r)
	}
}
