package tracker

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"testing"
	"time"

	"github.com/anacrolix/torrent/bencode"
)

type clock struct{ t time.Time }

func (c *clock) now() time.Time      { return c.t }
func (c *clock) add(d time.Duration) { c.t = c.t.Add(d) }
func newClock() *clock               { return &clock{t: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)} }
func ih(b byte) Hash                 { var h Hash; h[0] = b; return h }
func ihs(b byte) string              { h := ih(b); return string(h[:]) }
func pids(s string) string           { p := pid(s); return string(p[:]) }
func pid(s string) (p [20]byte)      { copy(p[:], s); return }
func ap(s string) netip.AddrPort     { return netip.MustParseAddrPort(s) }
func addrs(ps []Peer) (out []netip.AddrPort) {
	for _, p := range ps {
		out = append(out, p.Addr)
	}
	return
}

func TestAnnounceTable(t *testing.T) {
	seeder := ap("10.0.0.1:6881")
	const size = 1000
	type step struct {
		req       AnnounceRequest
		advance   time.Duration
		wantErr   error
		wantPeers []netip.AddrPort // exact set, order-insensitive unless seeder
		wantFirst netip.AddrPort   // first peer, if set
		wantCount int              // stored peers after the step
	}
	a := func(id, addr string, left int64, ev Event) AnnounceRequest {
		return AnnounceRequest{InfoHash: ih(1), PeerID: pid(id), Addr: ap(addr), Left: left, Event: ev, NumWant: -1}
	}
	cases := []struct {
		name  string
		cfg   Config
		steps []step
	}{
		{"unknown info hash refused", Config{}, []step{
			{req: AnnounceRequest{InfoHash: ih(9), PeerID: pid("a"), Addr: ap("10.0.0.2:1"), NumWant: -1}, wantErr: ErrUnknownTorrent},
		}},
		{"port zero refused", Config{}, []step{
			{req: a("a", "10.0.0.2:0", size, EventStarted), wantErr: ErrBadRequest},
		}},
		{"first peer gets the seeder", Config{}, []step{
			{req: a("a", "10.0.0.2:1000", size, EventStarted), wantPeers: []netip.AddrPort{seeder}, wantCount: 1},
		}},
		{"second peer gets seeder first and the first peer", Config{}, []step{
			{req: a("a", "10.0.0.2:1000", size, EventStarted), wantCount: 1},
			{req: a("b", "10.0.0.3:1000", size, EventStarted), wantFirst: seeder, wantPeers: []netip.AddrPort{seeder, ap("10.0.0.2:1000")}, wantCount: 2},
		}},
		{"seeder left out once enough peers hold data", Config{SeederOff: 2}, []step{
			{req: a("a", "10.0.0.2:1000", 0, EventCompleted), wantCount: 1},
			{req: a("b", "10.0.0.3:1000", 500, EventStarted), wantCount: 2},
			{req: a("c", "10.0.0.4:1000", size, EventStarted), wantFirst: ap("10.0.0.2:1000"), wantPeers: []netip.AddrPort{ap("10.0.0.2:1000"), ap("10.0.0.3:1000")}, wantCount: 3},
		}},
		{"empty peers do not turn the seeder off", Config{SeederOff: 2}, []step{
			{req: a("a", "10.0.0.2:1000", size, EventStarted), wantCount: 1},
			{req: a("b", "10.0.0.3:1000", size, EventStarted), wantCount: 2},
			{req: a("c", "10.0.0.4:1000", size, EventStarted), wantFirst: seeder, wantPeers: []netip.AddrPort{seeder, ap("10.0.0.2:1000"), ap("10.0.0.3:1000")}, wantCount: 3},
		}},
		{"stopped removes the peer", Config{}, []step{
			{req: a("a", "10.0.0.2:1000", size, EventStarted), wantCount: 1},
			{req: a("a", "10.0.0.2:1000", size, EventStopped), wantCount: 0},
			{req: a("b", "10.0.0.3:1000", size, EventStarted), wantPeers: []netip.AddrPort{seeder}, wantCount: 1},
		}},
		{"peers expire after the TTL", Config{PeerTTL: time.Minute}, []step{
			{req: a("a", "10.0.0.2:1000", size, EventStarted), wantCount: 1},
			{req: a("b", "10.0.0.3:1000", size, EventStarted), advance: 2 * time.Minute, wantPeers: []netip.AddrPort{seeder}, wantCount: 1},
		}},
		{"re-announce keeps one entry and updates progress", Config{SeederOff: 1}, []step{
			{req: a("a", "10.0.0.2:1000", size, EventStarted), wantCount: 1},
			{req: a("a", "10.0.0.2:1000", 10, EventNone), wantCount: 1},
			{req: a("b", "10.0.0.3:1000", size, EventStarted), wantPeers: []netip.AddrPort{ap("10.0.0.2:1000")}, wantCount: 2},
		}},
		{"registered machine then announcing is one entry", Config{}, []step{
			{req: AnnounceRequest{InfoHash: ih(1), Addr: ap("10.0.0.2:1000"), Left: size, NumWant: 0}, wantCount: 1},
			{req: a("a", "10.0.0.2:1000", size, EventStarted), wantCount: 1},
		}},
		{"store is bounded per torrent", Config{MaxPeersPerTorrent: 2}, []step{
			{req: a("a", "10.0.0.2:1000", size, EventStarted), wantCount: 1},
			{req: a("b", "10.0.0.3:1000", size, EventStarted), wantCount: 2},
			{req: a("c", "10.0.0.4:1000", size, EventStarted), wantPeers: []netip.AddrPort{seeder, ap("10.0.0.2:1000"), ap("10.0.0.3:1000")}, wantCount: 2},
		}},
		{"store is bounded per address", Config{MaxPeersPerIP: 1}, []step{
			{req: a("a", "10.0.0.2:1000", size, EventStarted), wantCount: 1},
			{req: a("b", "10.0.0.2:1001", size, EventStarted), wantCount: 1},
		}},
		{"numwant caps the reply", Config{SeederOff: 100}, []step{
			{req: a("a", "10.0.0.2:1000", size, EventStarted), wantCount: 1},
			{req: a("b", "10.0.0.3:1000", size, EventStarted), wantCount: 2},
			{req: AnnounceRequest{InfoHash: ih(1), PeerID: pid("c"), Addr: ap("10.0.0.4:1"), Left: size, NumWant: 1}, wantPeers: []netip.AddrPort{seeder}, wantCount: 3},
		}},
		{"max numwant caps a greedy client", Config{MaxNumWant: 2, SeederOff: 100}, []step{
			{req: a("a", "10.0.0.2:1000", size, EventStarted)},
			{req: a("b", "10.0.0.3:1000", size, EventStarted)},
			{req: a("c", "10.0.0.4:1000", size, EventStarted)},
			{req: AnnounceRequest{InfoHash: ih(1), PeerID: pid("d"), Addr: ap("10.0.0.5:1"), Left: size, NumWant: 1000}, wantFirst: seeder, wantCount: 4},
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := newClock()
			tc.cfg.Now = c.now
			tr := New(tc.cfg)
			tr.AddTorrent(ih(1), "debian", size, seeder)
			for i, s := range tc.steps {
				c.add(s.advance)
				resp, err := tr.Announce(s.req)
				if s.wantErr != nil {
					if !errors.Is(err, s.wantErr) {
						t.Fatalf("step %d: err %v, want %v", i, err, s.wantErr)
					}
					continue
				}
				if err != nil {
					t.Fatalf("step %d: %v", i, err)
				}
				if s.wantPeers != nil && !sameSet(addrs(resp.Peers), s.wantPeers) {
					t.Errorf("step %d: peers %v, want %v", i, addrs(resp.Peers), s.wantPeers)
				}
				if s.wantFirst.IsValid() && (len(resp.Peers) == 0 || resp.Peers[0].Addr != s.wantFirst) {
					t.Errorf("step %d: first peer %v, want %v", i, addrs(resp.Peers), s.wantFirst)
				}
				if tc.cfg.MaxNumWant > 0 && len(resp.Peers) > tc.cfg.MaxNumWant {
					t.Errorf("step %d: %d peers, more than MaxNumWant %d", i, len(resp.Peers), tc.cfg.MaxNumWant)
				}
				for _, p := range resp.Peers {
					if p.Addr == s.req.Addr {
						t.Errorf("step %d: requester got itself", i)
					}
				}
				if s.wantCount != 0 || s.req.Event == EventStopped {
					if got := tr.Count(ih(1)); got != s.wantCount {
						t.Errorf("step %d: %d peers stored, want %d", i, got, s.wantCount)
					}
				}
			}
		})
	}
}

func sameSet(a, b []netip.AddrPort) bool {
	if len(a) != len(b) {
		return false
	}
	m := map[netip.AddrPort]int{}
	for _, x := range a {
		m[x]++
	}
	for _, x := range b {
		m[x]--
	}
	for _, v := range m {
		if v != 0 {
			return false
		}
	}
	return true
}

func TestRateLimit(t *testing.T) {
	c := newClock()
	tr := New(Config{Rate: 1, Burst: 3, MaxSources: 2, Now: c.now})
	src := netip.MustParseAddr("10.0.0.2")
	for i := range 3 {
		if !tr.Allow(src) {
			t.Fatalf("request %d within the burst refused", i)
		}
	}
	if tr.Allow(src) {
		t.Fatal("request beyond the burst allowed")
	}
	c.add(time.Second)
	if !tr.Allow(src) {
		t.Fatal("token not refilled after a second")
	}
	if !tr.Allow(netip.MustParseAddr("10.0.0.3")) {
		t.Fatal("second source refused")
	}
	if tr.Allow(netip.MustParseAddr("10.0.0.4")) {
		t.Fatal("third source allowed beyond MaxSources")
	}
	c.add(time.Minute) // buckets refill and are swept
	if !tr.Allow(netip.MustParseAddr("10.0.0.4")) {
		t.Fatal("new source refused after idle buckets were swept")
	}
}

func TestPeersForBootAPI(t *testing.T) {
	tr := New(Config{})
	tr.AddTorrent(ih(1), "debian", 100, ap("10.0.0.1:6881"))
	for i := range 5 {
		tr.Announce(AnnounceRequest{InfoHash: ih(1), PeerID: pid(fmt.Sprint(i)), Addr: ap(fmt.Sprintf("10.0.0.%d:7000", i+2)), Left: 100, NumWant: 0})
	}
	got := tr.Peers(ih(1), netip.MustParseAddr("10.0.0.2"), 10)
	if len(got) != 4 {
		t.Fatalf("got %v, want the 4 other machines", got)
	}
	for _, p := range got {
		if p.Addr() == netip.MustParseAddr("10.0.0.2") || p == ap("10.0.0.1:6881") {
			t.Fatalf("got %v: contains the excluded machine or the seeder", got)
		}
	}
	if n := len(tr.Peers(ih(1), netip.Addr{}, 2)); n != 2 {
		t.Fatalf("n=2 gave %d peers", n)
	}
}

func httpAnnounce(t *testing.T, base string, h Hash, id string, port int, left int64, extra string) map[string]any {
	t.Helper()
	q := "info_hash=" + url.QueryEscape(string(h[:])) + "&peer_id=" + url.QueryEscape(pids(id)) +
		fmt.Sprintf("&port=%d&uploaded=0&downloaded=0&left=%d", port, left) + extra
	resp, err := http.Get(base + "/announce?" + q)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var m map[string]any
	if err := bencode.Unmarshal(b, &m); err != nil {
		t.Fatalf("reply %q: %v", b, err)
	}
	return m
}

func TestHTTPAnnounceAndScrape(t *testing.T) {
	tr := New(Config{})
	tr.AddTorrent(ih(1), "debian", 100, ap("10.0.0.1:6881"))
	mux := http.NewServeMux()
	mux.Handle("/announce", tr.AnnounceHandler())
	mux.Handle("/scrape", tr.ScrapeHandler())
	srv := httptest.NewServer(mux)
	defer srv.Close()

	m := httpAnnounce(t, srv.URL, ih(1), "a", 7001, 100, "&event=started&compact=1")
	if peers, _ := m["peers"].(string); len(peers) != 6 {
		t.Fatalf("compact reply peers %q, want the seeder's 6 bytes: %v", peers, m)
	} else if got := netip.AddrPortFrom(netip.AddrFrom4([4]byte([]byte(peers[:4]))), binary.BigEndian.Uint16([]byte(peers[4:]))); got != ap("10.0.0.1:6881") {
		t.Fatalf("compact peer %v, want the seeder", got)
	}
	m = httpAnnounce(t, srv.URL, ih(1), "b", 7002, 0, "&event=completed&compact=0")
	list, ok := m["peers"].([]any)
	if !ok || len(list) != 2 {
		t.Fatalf("non-compact reply: %v", m)
	}
	found := false
	for _, e := range list {
		d := e.(map[string]any)
		if d["ip"] == "127.0.0.1" && d["port"] == int64(7001) && d["peer id"] == pids("a") {
			found = true
		}
	}
	if !found {
		t.Fatalf("first peer (127.0.0.1:7001, from RemoteAddr) missing in %v", list)
	}
	if m = httpAnnounce(t, srv.URL, ih(7), "a", 7001, 100, ""); m["failure reason"] != ErrUnknownTorrent.Error() {
		t.Fatalf("unknown torrent: %v", m)
	}
	if m = httpAnnounce(t, srv.URL, ih(1), "a", 0, 100, ""); m["failure reason"] == nil {
		t.Fatalf("port 0 accepted: %v", m)
	}

	resp, err := http.Get(srv.URL + "/scrape?info_hash=" + url.QueryEscape(ihs(1)))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	var sc struct {
		Files map[string]struct {
			Complete   int `bencode:"complete"`
			Incomplete int `bencode:"incomplete"`
			Downloaded int `bencode:"downloaded"`
		} `bencode:"files"`
	}
	if err := bencode.Unmarshal(b, &sc); err != nil {
		t.Fatal(err)
	}
	f := sc.Files[ihs(1)]
	// seeder + peer b complete, peer a incomplete, one completed event.
	if f.Complete != 2 || f.Incomplete != 1 || f.Downloaded != 1 {
		t.Fatalf("scrape %+v, want complete 2 incomplete 1 downloaded 1", f)
	}
}

// udpCall sends one request and waits for the reply.
func udpCall(t *testing.T, c net.Conn, req []byte) []byte {
	t.Helper()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Write(req); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 2048)
	n, err := c.Read(buf)
	if err != nil {
		t.Fatal(err)
	}
	return buf[:n]
}

func TestUDPTracker(t *testing.T) {
	tr := New(Config{})
	tr.AddTorrent(ih(1), "debian", 100, ap("10.0.0.1:6881"))
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- tr.ServeUDP(pc) }()
	t.Cleanup(func() {
		pc.Close()
		if err := <-done; err != nil {
			t.Error(err)
		}
	})
	c, err := net.Dial("udp", pc.LocalAddr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()

	conn := binary.BigEndian.AppendUint64(nil, udpProtocolID)
	conn = binary.BigEndian.AppendUint32(conn, actionConnect)
	conn = binary.BigEndian.AppendUint32(conn, 42)
	r := udpCall(t, c, conn)
	if len(r) != 16 || binary.BigEndian.Uint32(r) != actionConnect || binary.BigEndian.Uint32(r[4:]) != 42 {
		t.Fatalf("connect reply %x", r)
	}
	cid := binary.BigEndian.Uint64(r[8:])

	announce := func(cid uint64, h Hash, left uint64) []byte {
		b := binary.BigEndian.AppendUint64(nil, cid)
		b = binary.BigEndian.AppendUint32(b, actionAnnounce)
		b = binary.BigEndian.AppendUint32(b, 7)
		b = append(b, h[:]...)
		p := pid("udp-peer")
		b = append(b, p[:]...)
		b = binary.BigEndian.AppendUint64(b, 0)
		b = binary.BigEndian.AppendUint64(b, left)
		b = binary.BigEndian.AppendUint64(b, 0)
		b = binary.BigEndian.AppendUint32(b, uint32(EventStarted))
		b = binary.BigEndian.AppendUint32(b, 0x01020304) // ip: ignored
		b = binary.BigEndian.AppendUint32(b, 0)
		b = binary.BigEndian.AppendUint32(b, 0xffffffff) // numwant -1
		b = binary.BigEndian.AppendUint16(b, 7777)
		return b
	}
	r = udpCall(t, c, announce(cid, ih(1), 100))
	if binary.BigEndian.Uint32(r) != actionAnnounce || len(r) != 26 {
		t.Fatalf("announce reply %x", r)
	}
	if got := netip.AddrPortFrom(netip.AddrFrom4([4]byte(r[20:24])), binary.BigEndian.Uint16(r[24:])); got != ap("10.0.0.1:6881") {
		t.Fatalf("peer %v, want the seeder", got)
	}
	if ps := tr.Peers(ih(1), netip.Addr{}, 10); len(ps) != 1 || ps[0] != ap("127.0.0.1:7777") {
		t.Fatalf("stored %v, want 127.0.0.1:7777 (source address, not the ip field)", ps)
	}
	r = udpCall(t, c, announce(cid^1, ih(1), 100))
	if binary.BigEndian.Uint32(r) != actionError {
		t.Fatalf("forged connection id accepted: %x", r)
	}
	r = udpCall(t, c, announce(cid, ih(5), 100))
	if binary.BigEndian.Uint32(r) != actionError || string(r[8:]) != ErrUnknownTorrent.Error() {
		t.Fatalf("unknown torrent: %x", r)
	}
	sc := binary.BigEndian.AppendUint64(nil, cid)
	sc = binary.BigEndian.AppendUint32(sc, actionScrape)
	sc = binary.BigEndian.AppendUint32(sc, 9)
	h := ih(1)
	sc = append(sc, h[:]...)
	r = udpCall(t, c, sc)
	if len(r) != 20 || binary.BigEndian.Uint32(r) != actionScrape || binary.BigEndian.Uint32(r[8:]) != 1 || binary.BigEndian.Uint32(r[16:]) != 1 {
		t.Fatalf("scrape reply %x, want 1 seeder 1 leecher", r)
	}
}

func TestAnnounceFloodIsBounded(t *testing.T) {
	tr := New(Config{MaxPeersPerTorrent: 100, MaxSources: 1000})
	tr.AddTorrent(ih(1), "debian", 100, netip.AddrPort{})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for i := 0; i < 100000 && ctx.Err() == nil; i++ {
		a := netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)})
		if tr.Allow(a) {
			tr.Announce(AnnounceRequest{InfoHash: ih(1), PeerID: pid(fmt.Sprint(i)), Addr: netip.AddrPortFrom(a, 1), Left: 1, NumWant: -1})
		}
	}
	if n := tr.Count(ih(1)); n > 100 {
		t.Fatalf("%d peers stored, limit 100", n)
	}
	tr.mu.Lock()
	n := len(tr.sources)
	tr.mu.Unlock()
	if n > 1000 {
		t.Fatalf("%d rate buckets, limit 1000", n)
	}
}

// TestOnLeecher: the hook hears every announce of a peer that lacks data,
// and nothing from seeds, stopped peers or the server's own seeder.
func TestOnLeecher(t *testing.T) {
	var got []netip.AddrPort
	tr := New(Config{OnLeecher: func(_ Hash, a netip.AddrPort) { got = append(got, a) }})
	tr.AddTorrent(ih(1), "debian", 100, ap("10.0.0.1:6881"))
	for _, r := range []AnnounceRequest{
		{InfoHash: ih(1), Addr: ap("10.0.0.11:51413"), Left: 100, Event: EventStarted},
		{InfoHash: ih(1), Addr: ap("10.0.0.12:51413"), Left: 0, Event: EventStarted},
		{InfoHash: ih(1), Addr: ap("10.0.0.13:51413"), Left: 50, Event: EventStopped},
		{InfoHash: ih(1), Addr: ap("10.0.0.1:6881"), Left: 1},
	} {
		if _, err := tr.Announce(r); err != nil {
			t.Fatal(err)
		}
	}
	if len(got) != 1 || got[0] != ap("10.0.0.11:51413") {
		t.Errorf("hook heard %v, want only 10.0.0.11:51413", got)
	}
}
