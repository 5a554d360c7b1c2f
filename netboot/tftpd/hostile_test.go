package tftpd

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// rrq builds a read request: name, mode octet, then option name/value pairs.
func rrq(name string, opts ...string) []byte {
	p := []byte{0, 1}
	for _, s := range append([]string{name, "octet"}, opts...) {
		p = append(append(p, s...), 0)
	}
	return p
}

// firstReply sends p from a new socket on src and returns the server's
// first packet.
func firstReply(t *testing.T, src net.IP, to *net.UDPAddr, p []byte) []byte {
	t.Helper()
	c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: src})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.WriteTo(p, to)
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 70000)
	n, from, err := c.ReadFrom(buf)
	if err != nil {
		t.Fatalf("no reply to %q: %v", p, err)
	}
	// End the transfer at once, as EDK II does after a size query.
	c.WriteTo(append([]byte{0, 5, 0, 0}, "done\x00"...), from)
	return buf[:n]
}

// oack parses an OACK packet into its options; nil when p is not an OACK.
func oack(p []byte) map[string]string {
	if len(p) < 2 || binary.BigEndian.Uint16(p) != 6 {
		return nil
	}
	parts := bytes.Split(bytes.TrimSuffix(p[2:], []byte{0}), []byte{0})
	m := map[string]string{}
	for i := 0; i+1 < len(parts); i += 2 {
		m[string(parts[i])] = string(parts[i+1])
	}
	return m
}

// TestOptionNamesAnyCase: RFC 2347 option names are case-insensitive;
// "TSIZE" and "BlkSize" are honoured like "tsize" and "blksize". It also
// pins the reach into pin/tftp's options (normalizeOptions): after an
// upgrade that moves them this fails. The block size asked is 512: a
// request that races the server's start is clamped to 512 by pin/tftp
// (no interface MTU known yet), and an acknowledged 512 still shows the
// option was read.
func TestOptionNamesAnyCase(t *testing.T) {
	f := newFixture(t, DefaultAnticipate, nil)
	for _, names := range [][2]string{{"TSIZE", "BLKSIZE"}, {"TSize", "BlkSize"}, {"tsize", "blksize"}} {
		got := oack(firstReply(t, net.IPv4(127, 0, 0, 1), f.addr, rrq("ipxe.efi", names[0], "0", names[1], "512")))
		want := map[string]string{"tsize": fmt.Sprint(len(f.uefi)), "blksize": "512"}
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("options %v: OACK %v, want %v", names, got, want)
		}
	}
}

// TestBadOptionValues: a value that is not a number is not echoed back
// (the library answered "tsize abc" with "tsize abc"); the option is left
// out of the OACK and the file is still served.
func TestBadOptionValues(t *testing.T) {
	f := newFixture(t, DefaultAnticipate, nil)
	cases := []struct {
		name string
		opts []string
		want map[string]string // nil: no OACK, data at once
	}{
		{"tsize abc", []string{"tsize", "abc"}, nil},
		{"tsize negative", []string{"tsize", "-5"}, nil},
		{"tsize huge", []string{"tsize", "99999999999999999999999"}, nil},
		{"tsize nonzero", []string{"tsize", "123"}, map[string]string{"tsize": fmt.Sprint(len(f.bios))}},
		{"blksize abc", []string{"blksize", "abc", "tsize", "0"}, map[string]string{"tsize": fmt.Sprint(len(f.bios))}},
		{"both cases", []string{"TSIZE", "abc", "tsize", "0"}, map[string]string{"tsize": fmt.Sprint(len(f.bios))}},
	}
	for _, tc := range cases {
		p := firstReply(t, net.IPv4(127, 0, 0, 1), f.addr, rrq("undionly.kpxe", tc.opts...))
		if bytes.Contains(p, []byte("abc")) || bytes.Contains(p, []byte("-5")) {
			t.Errorf("%s: bad value echoed: %q", tc.name, p)
			continue
		}
		got := oack(p)
		if tc.want == nil {
			if got != nil || binary.BigEndian.Uint16(p) != 3 {
				t.Errorf("%s: first reply %q, want DATA block 1", tc.name, p[:min(len(p), 40)])
			}
			continue
		}
		if fmt.Sprint(got) != fmt.Sprint(tc.want) {
			t.Errorf("%s: OACK %v, want %v", tc.name, got, tc.want)
		}
	}
}

// TestPerSourceCap: 500 read requests from one address that then go
// silent hold at most MaxPerSource slots; another machine is served at
// once, with a real client, while they wait to time out.
func TestPerSourceCap(t *testing.T) {
	needTool(t, "atftp", "atftp")
	dir := t.TempDir()
	data := randBytes(200_000)
	os.WriteFile(filepath.Join(dir, "undionly.kpxe"), data, 0o644)
	_, addr := serveLoopback(t, Options{Dir: dir, Files: []string{"undionly.kpxe"}, Timeout: 300 * time.Millisecond})

	// The flood comes from 127.0.0.2, from one socket, and never ACKs.
	flood, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 2)})
	if err != nil {
		t.Fatal(err)
	}
	defer flood.Close()
	for range 500 {
		flood.WriteTo(rrq("undionly.kpxe", "blksize", "1468"), addr)
	}
	busy, started := 0, 0
	seen := map[string]bool{}
	buf := make([]byte, 2048)
	flood.SetReadDeadline(time.Now().Add(250 * time.Millisecond))
	for {
		n, from, err := flood.ReadFrom(buf)
		if err != nil {
			break
		}
		if seen[from.String()] {
			continue // a retransmission
		}
		seen[from.String()] = true
		switch binary.BigEndian.Uint16(buf) {
		case 5:
			if bytes.Contains(buf[:n], []byte("busy")) {
				busy++
			}
		case 3, 6:
			started++
		}
	}
	// Some replies are lost to socket buffers under the burst; what
	// matters is that no more than the cap ever started.
	if started > DefaultMaxPerSource || busy < 100 {
		t.Errorf("one address: %d transfers started, %d refused as busy; want at most %d started", started, busy, DefaultMaxPerSource)
	}
	// Meanwhile a real machine is served in full.
	out := filepath.Join(t.TempDir(), "o")
	begin := time.Now()
	if _, err := atftpGet(t, addr, "undionly.kpxe", out, "blksize 1468"); err != nil {
		t.Fatalf("another machine during the flood: %v", err)
	}
	if got, _ := os.ReadFile(out); !bytes.Equal(got, data) {
		t.Fatalf("another machine got %d bytes, want %d identical", len(got), len(data))
	}
	t.Logf("flood: %d started, %d busy; other machine served in %v", started, busy, time.Since(begin).Round(time.Millisecond))
}
