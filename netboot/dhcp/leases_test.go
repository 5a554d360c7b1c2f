package dhcp

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

var t0 = time.Date(2026, 11, 22, 12, 0, 0, 0, time.UTC)

func mustAddr(s string) netip.Addr { return netip.MustParseAddr(s) }

func newTestPool(t *testing.T, first, last string, file string, machines map[string]string, now time.Time) *pool {
	t.Helper()
	p, err := newPool(poolConfig{
		first: mustAddr(first), last: mustAddr(last), prefix: netip.MustParsePrefix("10.0.0.0/24"),
		exclude: []netip.Addr{mustAddr("10.0.0.1")}, machines: machines, file: file,
	}, now)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.close() })
	return p
}

func mac(i int) string { return fmt.Sprintf("52:54:00:00:%02x:%02x", i>>8, i&0xff) }

// dora runs OFFER + REQUEST(selecting) for mac and returns the address.
func dora(t *testing.T, p *pool, m string, now time.Time) netip.Addr {
	t.Helper()
	ip, err := p.offer(m, netip.Addr{}, now)
	if err != nil {
		t.Fatalf("offer %s: %v", m, err)
	}
	if v, why := p.request(m, ip, true, "", time.Hour, now); v != verdictACK {
		t.Fatalf("request %s %v: verdict %v (%s)", m, ip, v, why)
	}
	return ip
}

func TestPoolExhaustionAndExpiry(t *testing.T) {
	// 10.0.0.1 is the server (excluded): the range holds 4 addresses.
	p := newTestPool(t, "10.0.0.1", "10.0.0.5", "", nil, t0)
	seen := map[netip.Addr]bool{}
	for i := range 4 {
		ip := dora(t, p, mac(i), t0)
		if seen[ip] || ip == mustAddr("10.0.0.1") {
			t.Fatalf("address %v handed out twice or the server's", ip)
		}
		seen[ip] = true
	}
	if _, err := p.offer(mac(99), netip.Addr{}, t0.Add(time.Minute)); !errors.Is(err, ErrExhausted) {
		t.Fatalf("fifth client: err %v, want ErrExhausted", err)
	}
	// After the leases expire, a new client gets the one that expired first.
	p.request(mac(0), mustAddr("10.0.0.2"), false, "", time.Minute, t0) // mac 0 renews with a short lease
	if _, err := p.offer(mac(99), netip.Addr{}, t0.Add(30*time.Second)); !errors.Is(err, ErrExhausted) {
		t.Fatalf("every lease is still live: err %v", err)
	}
	later := t0.Add(2 * time.Minute)
	ip, err := p.offer(mac(99), netip.Addr{}, later)
	if err != nil {
		t.Fatal(err)
	}
	if ip != mustAddr("10.0.0.2") {
		t.Fatalf("reused %v, want the expired 10.0.0.2", ip)
	}
	p.request(mac(99), ip, true, "", time.Hour, later)
	// The old owner now gets a NAK for it.
	if v, _ := p.request(mac(0), ip, false, "", time.Hour, later); v != verdictNAK {
		t.Fatalf("old owner of a reassigned address: verdict %v, want NAK", v)
	}
}

func TestPoolSameAddressAgainAndRequested(t *testing.T) {
	p := newTestPool(t, "10.0.0.10", "10.0.0.50", "", nil, t0)
	a := dora(t, p, mac(1), t0)
	if b := dora(t, p, mac(1), t0.Add(time.Minute)); b != a {
		t.Fatalf("same client got %v then %v", a, b)
	}
	// A free requested address (option 50) is honoured.
	ip, _ := p.offer(mac(2), mustAddr("10.0.0.42"), t0)
	if ip != mustAddr("10.0.0.42") {
		t.Fatalf("requested 10.0.0.42, offered %v", ip)
	}
	// Someone else's is not.
	ip, _ = p.offer(mac(3), a, t0)
	if ip == a {
		t.Fatalf("offered %v, which belongs to another client", ip)
	}
	// Outside the range: NAK (INIT-REBOOT from another network).
	if v, _ := p.request(mac(4), mustAddr("192.168.1.5"), false, "", time.Hour, t0); v != verdictNAK {
		t.Fatalf("foreign address: verdict %v, want NAK", v)
	}
	// SELECTING for an address that was not offered: NAK.
	if v, _ := p.request(mac(5), mustAddr("10.0.0.30"), true, "", time.Hour, t0); v != verdictNAK {
		t.Fatalf("selecting an address never offered: verdict %v, want NAK", v)
	}
	// INIT-REBOOT of a free address with no record: we are authoritative, ACK.
	if v, why := p.request(mac(6), mustAddr("10.0.0.31"), false, "", time.Hour, t0); v != verdictACK {
		t.Fatalf("free address without record: verdict %v (%s), want ACK", v, why)
	}
}

func TestPoolReleaseAndDecline(t *testing.T) {
	p := newTestPool(t, "10.0.0.10", "10.0.0.12", "", nil, t0)
	a := dora(t, p, mac(1), t0)
	if p.release(mac(2), a, t0) {
		t.Fatal("another client released mac 1's address")
	}
	if !p.release(mac(1), a, t0) {
		t.Fatal("release by the owner refused")
	}
	// Released: the owner gets it back first.
	if b := dora(t, p, mac(1), t0.Add(time.Second)); b != a {
		t.Fatalf("after release got %v, want %v back", b, a)
	}
	// Decline by a stranger is ignored; by the owner it quarantines.
	if p.decline(mac(9), a, t0) {
		t.Fatal("a client that does not hold the address declined it")
	}
	if !p.decline(mac(1), a, t0) {
		t.Fatal("decline by the owner refused")
	}
	for i := 2; i < 10; i++ {
		ip, err := p.offer(mac(i), netip.Addr{}, t0.Add(time.Minute))
		if err != nil {
			break
		}
		if ip == a {
			t.Fatalf("quarantined %v offered to %s", a, mac(i))
		}
		p.request(mac(i), ip, true, "", time.Hour, t0.Add(time.Minute))
	}
	if v, _ := p.request(mac(1), a, false, "", time.Hour, t0.Add(time.Minute)); v != verdictNAK {
		t.Fatal("quarantined address was ACKed")
	}
	// After the hold it is usable again.
	ip, err := p.offer(mac(20), a, t0.Add(declineHold+time.Minute))
	if err != nil || ip != a {
		t.Fatalf("after quarantine: %v %v, want %v", ip, err, a)
	}
}

func TestPoolMachinesStable(t *testing.T) {
	machines := map[string]string{mac(7): "pc07", mac(8): "pc08"}
	dir := t.TempDir()
	p1 := newTestPool(t, "10.0.0.10", "10.0.0.200", "", machines, t0)
	p2 := newTestPool(t, "10.0.0.10", "10.0.0.200", filepath.Join(dir, "l.json"), machines, t0)
	// Other clients first, asking for the machine's address too.
	r7 := addr(p1.reserved[mac(7)])
	for i := range 20 {
		ip, _ := p1.offer(mac(100+i), r7, t0)
		if ip == r7 {
			t.Fatalf("reserved address %v offered to %s", ip, mac(100+i))
		}
	}
	a := dora(t, p1, mac(7), t0)
	b := dora(t, p2, mac(7), t0)
	if a != b || a != r7 {
		t.Fatalf("machine got %v and %v from two fresh pools, want its stable %v", a, b, r7)
	}
	// The machine cannot take another address.
	if v, _ := p1.request(mac(7), mustAddr("10.0.0.199"), false, "", time.Hour, t0); v != verdictNAK {
		t.Fatal("machine allowed off its reserved address")
	}
}

func TestPoolPersistsAcrossRestart(t *testing.T) {
	file := filepath.Join(t.TempDir(), "out", "leases.json")
	p := newTestPool(t, "10.0.0.10", "10.0.0.20", file, nil, t0)
	a := dora(t, p, mac(1), t0)
	b := dora(t, p, mac(2), t0)
	p.release(mac(2), b, t0)
	c := dora(t, p, mac(3), t0)
	p.decline(mac(3), c, t0)
	p.close()

	// A crash mid-write leaves a torn last line: ignored.
	f, err := os.OpenFile(file, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteString(`{"ip":"10.0.0.1`)
	f.Close()

	q := newTestPool(t, "10.0.0.10", "10.0.0.20", file, nil, t0.Add(time.Minute))
	if l, ok := q.lookup(a); !ok || l.MAC != mac(1) || l.State != stateBound {
		t.Fatalf("after restart %v: %+v %v, want bound to %s", a, l, ok, mac(1))
	}
	if l, ok := q.lookup(c); !ok || l.State != stateDeclined {
		t.Fatalf("after restart declined %v: %+v", c, l)
	}
	// A new client never gets the taken address, even asking for it.
	for i := 10; i < 20; i++ {
		ip, err := q.offer(mac(i), a, t0.Add(time.Minute))
		if err != nil {
			break
		}
		if ip == a || ip == c {
			t.Fatalf("after restart %v offered to %s", ip, mac(i))
		}
	}
	// The old client renews.
	if v, why := q.request(mac(1), a, false, "", time.Hour, t0.Add(time.Minute)); v != verdictACK {
		t.Fatalf("renewal after restart: %v %s", v, why)
	}
	data, _ := os.ReadFile(file)
	if !strings.HasPrefix(string(data), leaseFileHeader+"\n") {
		t.Fatalf("lease file header missing: %.60q", data)
	}
}

func TestPoolRefusesForeignFile(t *testing.T) {
	file := filepath.Join(t.TempDir(), "leases.json")
	os.WriteFile(file, []byte("lease 10.0.0.5 {\n"), 0o644)
	_, err := newPool(poolConfig{first: mustAddr("10.0.0.10"), last: mustAddr("10.0.0.20"), file: file}, t0)
	if err == nil || !strings.Contains(err.Error(), "not a boottorrent lease file") {
		t.Fatalf("foreign lease file: err %v", err)
	}
}

func TestPoolNoACKWhenJournalFails(t *testing.T) {
	p := newTestPool(t, "10.0.0.10", "10.0.0.20", filepath.Join(t.TempDir(), "l.json"), nil, t0)
	p.writeFn = func([]byte) error { return errors.New("disk full") }
	ip, _ := p.offer(mac(1), netip.Addr{}, t0)
	if v, _ := p.request(mac(1), ip, true, "", time.Hour, t0); v == verdictACK {
		t.Fatal("ACKed a lease the lease file did not record")
	}
}

func TestPoolCompaction(t *testing.T) {
	file := filepath.Join(t.TempDir(), "l.json")
	p := newTestPool(t, "10.0.0.10", "10.0.0.20", file, nil, t0)
	ip := dora(t, p, mac(1), t0)
	for i := range 3000 { // renewals: one journal line each
		p.request(mac(1), ip, false, "", time.Hour, t0.Add(time.Duration(i)*time.Second))
	}
	st, _ := os.Stat(file)
	if st.Size() > 200*1024 {
		t.Fatalf("journal not compacted: %d bytes", st.Size())
	}
	p.close()
	q := newTestPool(t, "10.0.0.10", "10.0.0.20", file, nil, t0)
	if l, ok := q.lookup(ip); !ok || !l.Expires.Equal(t0.Add(2999*time.Second+time.Hour)) {
		t.Fatalf("after compaction: %+v", l)
	}
}

// TestPoolFloodOfOffers: DISCOVERs from made-up MACs fill the range with
// offers; a real machine arriving a few seconds later still gets an
// address, and bound leases are never taken.
func TestPoolFloodOfOffers(t *testing.T) {
	p := newTestPool(t, "10.0.0.10", "10.0.0.29", "", nil, t0)
	bound := dora(t, p, mac(1), t0)
	for i := 100; i < 200; i++ {
		p.offer(mac(i), netip.Addr{}, t0) // never requested
	}
	if _, err := p.offer(mac(2), netip.Addr{}, t0.Add(time.Second)); !errors.Is(err, ErrExhausted) {
		t.Fatalf("fresh offers were taken back at once: %v", err)
	}
	ip, err := p.offer(mac(2), netip.Addr{}, t0.Add(offerReclaim+time.Second))
	if err != nil {
		t.Fatalf("after a flood of offers a real client gets: %v", err)
	}
	if ip == bound {
		t.Fatal("a bound lease was taken back")
	}
	if v, why := p.request(mac(2), ip, true, "", time.Hour, t0.Add(offerReclaim+time.Second)); v != verdictACK {
		t.Fatalf("request after reclaim: %v %s", v, why)
	}
}
