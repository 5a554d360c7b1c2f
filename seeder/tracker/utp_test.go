package tracker

import (
	"encoding/binary"
	"net"
	"testing"
	"time"
)

// TestUTPSynGetsReset: a uTP (BEP 29) SYN on the UDP tracker's port, which
// is the seeder's BitTorrent port number, is answered with an ST_RESET
// carrying the SYN's connection id and acknowledging its sequence number,
// so a uTP-first client (Transmission) gives up on uTP for this peer. It
// used to get a tracker error ("connect without the protocol id"). A
// BEP 15 connect on the same socket still works.
func TestUTPSynGetsReset(t *testing.T) {
	tr := New(Config{})
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- tr.ServeUDP(pc) }()
	t.Cleanup(func() { pc.Close(); <-done })
	c, err := net.Dial("udp", pc.LocalAddr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()

	// A SYN as libutp sends it: type 4, version 1, no extension,
	// connection id 0x1234, timestamp, window, seq_nr 0x0777.
	syn := make([]byte, 20)
	syn[0] = 0x41
	binary.BigEndian.PutUint16(syn[2:], 0x1234)
	binary.BigEndian.PutUint32(syn[4:], 1000)
	binary.BigEndian.PutUint32(syn[12:], 1<<20)
	binary.BigEndian.PutUint16(syn[16:], 0x0777)
	r := udpCall(t, c, syn)
	if len(r) != 20 || r[0] != 0x31 || binary.BigEndian.Uint16(r[2:]) != 0x1234 || binary.BigEndian.Uint16(r[18:]) != 0x0777 {
		t.Fatalf("reply to a uTP SYN: %x, want an ST_RESET (0x31) for connection 0x1234 acking 0x0777", r)
	}
	// The tracker still answers BEP 15.
	conn := binary.BigEndian.AppendUint64(nil, udpProtocolID)
	conn = binary.BigEndian.AppendUint32(conn, actionConnect)
	conn = binary.BigEndian.AppendUint32(conn, 7)
	if r := udpCall(t, c, conn); len(r) != 16 || binary.BigEndian.Uint32(r[4:]) != 7 {
		t.Fatalf("connect after a uTP SYN: %x", r)
	}
	// A short packet starting like a SYN is not one: no reset.
	c.Write(syn[:12])
	c.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
	if n, err := c.Read(make([]byte, 64)); err == nil && n > 0 && (n == 20) {
		t.Fatalf("a 12-byte packet got a %d-byte reply", n)
	}
}
