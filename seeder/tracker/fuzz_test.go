package tracker

import (
	"net/netip"
	"net/url"
	"testing"
)

func FuzzParseAnnounceQuery(f *testing.F) {
	h := ih(1)
	p := pid("-qB4500-abcdefghijkl")
	good := "info_hash=" + url.QueryEscape(string(h[:])) + "&peer_id=" + url.QueryEscape(string(p[:])) + "&port=6881&uploaded=0&downloaded=0&left=100&event=started&compact=1&numwant=50"
	for _, s := range []string{
		good,
		good + "&port=1",
		"info_hash=%ZZ",
		"info_hash=abc&peer_id=def&port=99999",
		"left=-1",
		"",
		"&&&&==",
		"info_hash=" + url.QueryEscape(string(h[:])) + "&peer_id=" + url.QueryEscape(string(p[:])) + "&port=1&left=1&numwant=-5",
	} {
		f.Add(s)
	}
	tr := New(Config{})
	tr.AddTorrent(h, "x", 100, netip.MustParseAddrPort("10.0.0.1:1"))
	f.Fuzz(func(t *testing.T, q string) {
		req, _, _, err := ParseAnnounceQuery(q, netip.MustParseAddr("10.0.0.9"))
		if err != nil {
			return
		}
		if req.Addr.Port() == 0 || req.Left < 0 || req.Uploaded < 0 || req.Downloaded < 0 || req.NumWant < -1 {
			t.Fatalf("accepted invalid request %+v from %q", req, q)
		}
		if req.Addr.Addr() != netip.MustParseAddr("10.0.0.9") {
			t.Fatalf("address %v not from the connection", req.Addr)
		}
		resp, err := tr.Announce(req)
		if err == nil && len(resp.Peers) > tr.Config().MaxNumWant {
			t.Fatalf("%d peers", len(resp.Peers))
		}
	})
}

func FuzzParseUDPRequest(f *testing.F) {
	f.Add([]byte{0, 0, 4, 0x17, 0x27, 0x10, 0x19, 0x80, 0, 0, 0, 0, 0, 0, 0, 1})
	f.Add(make([]byte, 98))
	f.Add(append(append(make([]byte, 8), 0, 0, 0, 2, 0, 0, 0, 1), make([]byte, 40)...))
	f.Add([]byte{1, 2, 3})
	var st udpState
	tr := New(Config{})
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := ParseUDPRequest(b)
		if err == nil && r.action == actionScrape && len(r.hashes) > MaxScrapeHashes {
			t.Fatalf("%d hashes", len(r.hashes))
		}
		if reply := tr.handleUDP(&st, b, netip.MustParseAddrPort("10.0.0.9:1234")); len(reply) > maxUDPPacket*2 {
			t.Fatalf("reply of %d bytes", len(reply))
		}
	})
}

func FuzzParseScrapeQuery(f *testing.F) {
	h := ih(1)
	f.Add("info_hash=" + url.QueryEscape(string(h[:])))
	f.Add("info_hash=a&info_hash=b")
	f.Add("")
	f.Fuzz(func(t *testing.T, q string) {
		hs, err := ParseScrapeQuery(q)
		if err == nil && len(hs) > MaxScrapeHashes {
			t.Fatalf("%d hashes", len(hs))
		}
	})
}
