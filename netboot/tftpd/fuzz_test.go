package tftpd

import (
	"bytes"
	"encoding/binary"
	"net"
	"testing"
	"time"
)

// FuzzRequest sends arbitrary datagrams to a running server on loopback.
// Whatever arrives, the server must not crash, and it may only start a
// transfer (DATA or OACK) for a request whose file name is exactly an
// allowed one.
func FuzzRequest(f *testing.F) {
	rrq := func(parts ...string) []byte {
		b := []byte{0, 1}
		for _, p := range parts {
			b = append(append(b, p...), 0)
		}
		return b
	}
	f.Add(rrq("undionly.kpxe", "octet"))
	f.Add(rrq("ipxe.efi", "octet", "tsize", "0", "blksize", "1468"))
	f.Add(rrq("../other.bin", "octet"))
	f.Add(rrq("/etc/passwd", "netascii"))
	f.Add(rrq("undionly.kpxe", "octet", "blksize", "99999999999999999999"))
	f.Add([]byte{0, 2, 'x', 0, 'o', 'c', 't', 'e', 't', 0}) // WRQ
	f.Add([]byte{0, 5, 0, 1, 0})
	f.Add([]byte{0})
	fx := newFixture(f, DefaultAnticipate, nil)
	f.Fuzz(func(t *testing.T, pkt []byte) {
		if len(pkt) > 1500 {
			return
		}
		// A fresh socket per input: late packets of an earlier
		// transfer never reach this one.
		c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.WriteTo(pkt, fx.addr)
		buf := make([]byte, 2048)
		c.SetReadDeadline(time.Now().Add(30 * time.Millisecond))
		n, from, err := c.ReadFrom(buf)
		if err != nil {
			return
		}
		op := binary.BigEndian.Uint16(buf[:2])
		if op == 3 || op == 6 { // DATA or OACK: a transfer started
			name := ""
			if len(pkt) > 2 && binary.BigEndian.Uint16(pkt) == 1 {
				before, _, _ := bytes.Cut(pkt[2:], []byte{0})
				name = string(before)
			}
			if _, ok := fx.srv.files[name]; !ok {
				t.Fatalf("transfer started for %q (reply %q)", name, buf[:n])
			}
			// End it at once so transfers do not pile up.
			c.WriteTo([]byte{0, 5, 0, 0, 0}, from)
		}
	})
}
