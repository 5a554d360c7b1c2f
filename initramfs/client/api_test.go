package client

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"

	"github.com/boottorrent/boottorrent/initramfs/bootapi"
)

func TestParseBoot(t *testing.T) {
	good := `{"mac":"52:54:00:00:00:01","default_os":"a","timeout_ms":0,"seed_time_ms":-5,"report_interval_ms":0,
	  "menu":[{"name":"a","dispname":"A\u001b[2J\u0007 OS","method":"kexec","kernel":"k/vmlinuz","files":["k/vmlinuz"]}]}`
	b, err := parseBoot([]byte(good))
	if err != nil {
		t.Fatal(err)
	}
	if b.Menu[0].DispName != "A[2J OS" {
		t.Errorf("control characters must be dropped from the display name: %q", b.Menu[0].DispName)
	}
	if b.ReportMS != 3000 || b.SeedMS != 0 {
		t.Errorf("bounds not applied: report %d seed %d", b.ReportMS, b.SeedMS)
	}
	for name, doc := range map[string]string{
		"empty menu":   `{"menu":[]}`,
		"unsafe name":  `{"menu":[{"name":"../etc"}]}`,
		"escape file":  `{"menu":[{"name":"a","kernel":"../../etc/shadow"}]}`,
		"abs file":     `{"menu":[{"name":"a","files":["/etc/shadow"]}]}`,
		"not json":     `<html>`,
		"wrong type":   `{"menu":"x"}`,
		"backslash":    `{"menu":[{"name":"a","bin":"a\\b"}]}`,
		"dotdot piece": `{"menu":[{"name":"a","initrd":"x/../../y"}]}`,
	} {
		if _, err := parseBoot([]byte(doc)); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

func TestParsePeers(t *testing.T) {
	got, err := parsePeers([]byte(`{"peers":["10.0.0.1:6881","10.0.0.2:0","0.0.0.0:1","224.0.0.1:5","x:1","10.0.0.3:65536","[fe80::1]:6881","10.0.0.4:+1","10.0.0.5:06881"],"share_index":2,"share_count":5}`))
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(got.Peers, " ") != "10.0.0.1:6881 [fe80::1]:6881" {
		t.Errorf("got %v", got.Peers)
	}
	if got.ShareIndex != 2 || got.ShareCount != 5 {
		t.Errorf("share %d/%d, want 2/5", got.ShareIndex, got.ShareCount)
	}
	// A share that makes no sense is dropped: no split.
	for _, doc := range []string{`{"share_index":5,"share_count":5}`, `{"share_index":-1,"share_count":5}`, `{"share_index":0,"share_count":99999}`} {
		got, err := parsePeers([]byte(doc))
		if err != nil || got.ShareIndex != 0 || got.ShareCount != 0 {
			t.Errorf("%s: share %+v, %v; want none", doc, got, err)
		}
	}
}

func FuzzParseBoot(f *testing.F) {
	seed, _ := json.Marshal(bootapi.Boot{DefaultOS: "a", Menu: []bootapi.OS{{Name: "a", Kernel: "vmlinuz", Files: []string{"vmlinuz"}}}})
	f.Add(seed)
	f.Add([]byte(`{"menu":[{"name":"a","dispname":"\u0000\u009b"}]}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		boot, err := parseBoot(b)
		if err != nil {
			return
		}
		if len(boot.Menu) == 0 || len(boot.Menu) > maxMenuItems {
			t.Fatalf("menu of %d", len(boot.Menu))
		}
		for _, o := range boot.Menu {
			if !validName(o.Name) || strings.ContainsAny(o.DispName, "\x00\x1b\r\n") {
				t.Fatalf("unsafe entry %+v", o)
			}
		}
	})
}

func FuzzParsePeers(f *testing.F) {
	f.Add([]byte(`{"peers":["10.0.0.1:6881"]}`))
	f.Add([]byte(`{"peers":["[::1]:1",":",""]}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		ps, err := parsePeers(b)
		if err != nil {
			return
		}
		if len(ps.Peers) > maxPeers {
			t.Fatalf("%d peers", len(ps.Peers))
		}
		if ps.ShareCount != 0 && (ps.ShareIndex < 0 || ps.ShareIndex >= ps.ShareCount || ps.ShareCount > bootapi.MaxShareCount) {
			t.Fatalf("share %d/%d", ps.ShareIndex, ps.ShareCount)
		}
		for _, p := range ps.Peers {
			if _, _, err := net.SplitHostPort(p); err != nil {
				t.Fatalf("bad peer %q", p)
			}
		}
	})
}

// TestRealOffer: a proxyDHCP offer (yiaddr 0, as boottorrent's own proxy
// mode and dnsmasq's send) must never be taken.
func TestRealOffer(t *testing.T) {
	hw := net.HardwareAddr{0x52, 0x54, 0, 0, 0, 1}
	mk := func(yiaddr net.IP, mt dhcpv4.MessageType) *dhcpv4.DHCPv4 {
		p, err := dhcpv4.New(dhcpv4.WithHwAddr(hw), dhcpv4.WithReply(&dhcpv4.DHCPv4{OpCode: dhcpv4.OpcodeBootRequest, ClientHWAddr: hw}),
			dhcpv4.WithYourIP(yiaddr), dhcpv4.WithMessageType(mt), dhcpv4.WithServerIP(net.IPv4(10, 0, 0, 1)),
			dhcpv4.WithOption(dhcpv4.OptServerIdentifier(net.IPv4(10, 0, 0, 1))))
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	proxy := mk(net.IPv4zero, dhcpv4.MessageTypeOffer)
	proxy.UpdateOption(dhcpv4.OptClassIdentifier("PXEClient"))
	for name, tc := range map[string]struct {
		p    *dhcpv4.DHCPv4
		want bool
	}{
		"real offer":    {mk(net.IPv4(10, 0, 0, 100), dhcpv4.MessageTypeOffer), true},
		"proxy offer":   {proxy, false},
		"broadcast":     {mk(net.IPv4bcast, dhcpv4.MessageTypeOffer), false},
		"ack not offer": {mk(net.IPv4(10, 0, 0, 100), dhcpv4.MessageTypeAck), false},
		"nil":           {nil, false},
	} {
		if got := realOffer(tc.p); got != tc.want {
			t.Errorf("%s: realOffer = %v, want %v", name, got, tc.want)
		}
	}
	ack := realAck(net.IPv4(10, 0, 0, 1))
	if !ack(mk(net.IPv4(10, 0, 0, 100), dhcpv4.MessageTypeAck)) || ack(mk(net.IPv4zero, dhcpv4.MessageTypeAck)) || !ack(mk(net.IPv4zero, dhcpv4.MessageTypeNak)) {
		t.Error("realAck")
	}
	if realAck(net.IPv4(10, 0, 0, 2))(mk(net.IPv4(10, 0, 0, 100), dhcpv4.MessageTypeAck)) {
		t.Error("an ACK from another server was taken")
	}
}

func TestCmdlineArgs(t *testing.T) {
	var c Config
	err := c.fillDefaults("initrd=initramfs console=ttyS0 " + bootapi.ArgServer + "=http://10.0.0.1:8080 " + bootapi.ArgMAC + "=52:54:00:AB:CD:EF quiet")
	if err != nil || c.Server != "http://10.0.0.1:8080" || c.MAC != "52:54:00:ab:cd:ef" {
		t.Fatalf("%+v %v", c, err)
	}
	var d Config
	if err := d.fillDefaults("quiet"); err == nil || !strings.Contains(err.Error(), bootapi.ArgServer) {
		t.Fatalf("missing server: %v", err)
	}
}

// The server lists peers most recently seen first, so the same machines
// come back in a new order after every report: that must not count as a
// change (refreshPeers would ask again every second), while a new
// machine or a new share must.
func TestPeersKey(t *testing.T) {
	a := &bootapi.Peers{Peers: []string{"10.0.0.1:6881", "10.0.1.2:6881", "10.0.1.3:6881"}, ShareIndex: 1, ShareCount: 3}
	reordered := &bootapi.Peers{Peers: []string{"10.0.1.3:6881", "10.0.0.1:6881", "10.0.1.2:6881"}, ShareIndex: 1, ShareCount: 3}
	if peersKey(a) != peersKey(reordered) {
		t.Errorf("the same peers in another order give another key: %q, %q", peersKey(a), peersKey(reordered))
	}
	if reordered.Peers[0] != "10.0.1.3:6881" {
		t.Errorf("peersKey reordered the answer it was given: %v", reordered.Peers)
	}
	joined := &bootapi.Peers{Peers: append(slices.Clone(a.Peers), "10.0.1.4:6881"), ShareIndex: 1, ShareCount: 4}
	if peersKey(a) == peersKey(joined) {
		t.Error("a machine joining gives the same key")
	}
	moved := &bootapi.Peers{Peers: a.Peers, ShareIndex: 2, ShareCount: 3}
	if peersKey(a) == peersKey(moved) {
		t.Error("a new share gives the same key")
	}
}

// TestGetRetriesStalledAnswer: an answer that never comes is given up
// after the attempt's time limit and asked for again; a 404 is not.
func TestGetRetriesStalledAnswer(t *testing.T) {
	var calls atomic.Int32
	release := make(chan struct{})
	defer close(release)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch n := calls.Add(1); {
		case r.URL.Path == "/missing":
			http.NotFound(w, r)
		case n <= 2:
			select { // the first two attempts stall
			case <-release:
			case <-r.Context().Done():
			}
		default:
			io.WriteString(w, "torrent")
		}
	}))
	defer srv.Close()
	a, err := newAPI(srv.URL, "52:54:00:00:00:01")
	if err != nil {
		t.Fatal(err)
	}
	a.attempts = []time.Duration{200 * time.Millisecond, 200 * time.Millisecond, time.Second}
	b, err := a.get(context.Background(), "/torrents/a.torrent", nil, 100)
	if err != nil || string(b) != "torrent" {
		t.Fatalf("get = %q, %v; want the third attempt's answer", b, err)
	}
	if n := calls.Load(); n != 3 {
		t.Errorf("%d requests, want 3", n)
	}
	calls.Store(100)
	if _, err := a.get(context.Background(), "/missing", nil, 100); !errors.Is(err, errHTTP) {
		t.Fatalf("404: %v", err)
	}
	if n := calls.Load(); n != 101 {
		t.Errorf("a 404 was asked %d times, want once", n-100)
	}
	a.attempts = []time.Duration{100 * time.Millisecond, 100 * time.Millisecond}
	calls.Store(0)
	if _, err := a.get(context.Background(), "/stall", nil, 100); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("every attempt stalled: %v, want a deadline error", err)
	}
}

// Peers asks with the last answer's ETag and reuses that answer on a 304;
// a 304 it did not ask for is an error, not an empty answer.
func TestPeersNotModified(t *testing.T) {
	answer := `{"peers":["10.0.0.1:6881","10.0.0.2:6881"],"share_index":1,"share_count":3,"report_interval_ms":4000}`
	const tag = `"0123456789abcdef"`
	var sent []string // If-None-Match of each request
	var mu sync.Mutex
	bogus304 := false
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		sent = append(sent, r.Header.Get("If-None-Match"))
		b := bogus304
		mu.Unlock()
		w.Header().Set("ETag", tag)
		if b || r.Header.Get("If-None-Match") == tag {
			w.WriteHeader(http.StatusNotModified)
			return
		}
		io.WriteString(w, answer)
	}))
	defer srv.Close()
	a, err := newAPI(srv.URL, "52:54:00:00:00:01")
	if err != nil {
		t.Fatal(err)
	}
	first, err := a.Peers(context.Background(), "debian")
	if err != nil {
		t.Fatal(err)
	}
	if len(first.Peers) != 2 || first.ShareCount != 3 || first.ReportMS != 4000 {
		t.Fatalf("first answer %+v", first)
	}
	first.Peers[0] = "changed by the caller"
	second, err := a.Peers(context.Background(), "debian")
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(second.Peers, " ") != "10.0.0.1:6881 10.0.0.2:6881" || second.ShareIndex != 1 || second.ShareCount != 3 || second.ReportMS != 4000 {
		t.Errorf("answer from the 304: %+v, want the first answer as it came", second)
	}
	mu.Lock()
	if len(sent) != 2 || sent[0] != "" || sent[1] != tag {
		t.Errorf("If-None-Match sent: %q, want none then %s", sent, tag)
	}
	bogus304 = true
	mu.Unlock()
	// Another OS has no cached answer: a 304 for it is the server's
	// mistake.
	if _, err := a.Peers(context.Background(), "alpine"); !errors.Is(err, errHTTP) {
		t.Errorf("unasked 304: %v, want an HTTP status error", err)
	}
}

func TestParsePeersReportInterval(t *testing.T) {
	for doc, want := range map[string]int64{
		`{"report_interval_ms":10000}`:   10000,
		`{"report_interval_ms":0}`:       0,
		`{"report_interval_ms":-5}`:      0,
		`{"report_interval_ms":3600000}`: 0, // beyond maxReportMS: the Boot answer's stays
		`{}`:                             0,
	} {
		got, err := parsePeers([]byte(doc))
		if err != nil || got.ReportMS != want {
			t.Errorf("%s: report interval %d, %v; want %d", doc, got.ReportMS, err, want)
		}
	}
}
