package dhcp

import (
	"math/rand/v2"
	"net"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/iana"
)

// memConn is an in-memory net.PacketConn: datagrams pushed by the test are
// read by the server; what the server writes is recorded.
type memConn struct {
	in     chan []byte
	mu     sync.Mutex
	out    [][]byte
	to     []net.Addr
	closed chan struct{}
	once   sync.Once
	block  chan struct{} // if set, ReadFrom waits on it before each read
}

func newMemConn(queue int) *memConn {
	return &memConn{in: make(chan []byte, queue), closed: make(chan struct{})}
}

func (c *memConn) ReadFrom(b []byte) (int, net.Addr, error) {
	select {
	case p := <-c.in:
		return copy(b, p), &net.UDPAddr{IP: net.IPv4(10, 0, 0, 77), Port: ClientPort}, nil
	case <-c.closed:
		return 0, nil, net.ErrClosed
	}
}

func (c *memConn) WriteTo(b []byte, addr net.Addr) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.out = append(c.out, append([]byte(nil), b...))
	c.to = append(c.to, addr)
	return len(b), nil
}

func (c *memConn) Close() error                     { c.once.Do(func() { close(c.closed) }); return nil }
func (c *memConn) LocalAddr() net.Addr              { return &net.UDPAddr{Port: ServerPort} }
func (c *memConn) SetDeadline(time.Time) error      { return nil }
func (c *memConn) SetReadDeadline(time.Time) error  { return nil }
func (c *memConn) SetWriteDeadline(time.Time) error { return nil }
func (c *memConn) written() int                     { c.mu.Lock(); defer c.mu.Unlock(); return len(c.out) }

// TestServeHostileInput: garbage, truncated and oversized datagrams, and a
// handler that panics, cost one packet each; the goroutine count stays
// flat; valid requests keep being answered; Close ends Serve.
func TestServeHostileInput(t *testing.T) {
	var panicNext atomic.Bool
	opt := testOptions(ModeProxy)
	opt.Queue = 4096 // drops are TestServeQueueBounded's subject
	opt.OnEvent = func(Event) {
		if panicNext.CompareAndSwap(true, false) {
			panic("boom")
		}
	}
	s := newTestServer(t, opt)
	c := newMemConn(64)
	before := runtime.NumGoroutine()
	done := make(chan error, 1)
	go func() { done <- s.Serve(c, nil) }()

	valid := pxeDiscover(t, iana.INTEL_X86PC, "PXEClient:Arch:00000:UNDI:002001", false).ToBytes()
	rng := rand.New(rand.NewPCG(1, 2))
	const n = 3000
	for i := range n {
		var p []byte
		switch i % 4 {
		case 0:
			p = make([]byte, rng.IntN(600))
			for j := range p {
				p[j] = byte(rng.Uint32())
			}
		case 1:
			p = valid[:rng.IntN(len(valid))]
		case 2:
			// A valid header with a hostile option area: lengths that
			// overrun, no end option.
			p = append(append([]byte(nil), valid[:240]...), 53, 1, 1, 60, 200, 'P')
		case 3:
			p = valid
		}
		c.in <- p
	}
	panicNext.Store(true)
	c.in <- valid
	deadline := time.Now().Add(10 * time.Second)
	for s.Stats().Received < n+1 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	time.Sleep(100 * time.Millisecond)
	if g := runtime.NumGoroutine(); g > before+s.opt.Workers+10 {
		t.Errorf("goroutines: %d before, %d while serving: not bounded", before, g)
	}
	st := s.Stats()
	if st.Malformed < n/2 || st.Panics != 1 || st.Answered < n/4 {
		t.Errorf("stats %+v: want >= %d malformed, 1 panic, >= %d answered", st, n/2, n/4)
	}
	// Still serving after all that.
	w := c.written()
	c.in <- valid
	for c.written() == w && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if c.written() == w {
		t.Fatal("no reply after the hostile input")
	}
	s.Close()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Serve after Close: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Serve did not return after Close")
	}
}

// slowConn makes every reply slow, so the queue fills and datagrams drop.
type slowConn struct{ *memConn }

func (c slowConn) WriteTo(b []byte, a net.Addr) (int, error) {
	time.Sleep(2 * time.Millisecond)
	return c.memConn.WriteTo(b, a)
}

// TestServeQueueBounded: when workers cannot keep up, requests are dropped
// at the queue instead of piling up goroutines or memory.
func TestServeQueueBounded(t *testing.T) {
	opt := testOptions(ModeProxy)
	opt.Workers, opt.Queue = 1, 8
	s := newTestServer(t, opt)
	c := slowConn{newMemConn(4096)}
	go s.Serve(c, nil)
	valid := pxeDiscover(t, iana.INTEL_X86PC, "PXEClient:Arch:00000:UNDI:002001", false).ToBytes()
	for range 2000 {
		c.in <- valid
	}
	deadline := time.Now().Add(10 * time.Second)
	for s.Stats().Received < 2000 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	st := s.Stats()
	if st.Dropped == 0 || st.Received != 2000 {
		t.Fatalf("stats %+v: want drops at a full queue", st)
	}
	t.Logf("2000 requests, 1 slow worker, queue 8: %d dropped, %d answered so far", st.Dropped, st.Answered)
}

// TestReplyDelay: replies are held back by ReplyDelay.
func TestReplyDelay(t *testing.T) {
	opt := testOptions(ModeProxy)
	opt.ReplyDelay = 150 * time.Millisecond
	s := newTestServer(t, opt)
	c := newMemConn(4)
	go s.Serve(c, nil)
	start := time.Now()
	c.in <- pxeDiscover(t, iana.INTEL_X86PC, "PXEClient:Arch:00000:UNDI:002001", false).ToBytes()
	for c.written() == 0 && time.Since(start) < 5*time.Second {
		time.Sleep(5 * time.Millisecond)
	}
	if d := time.Since(start); c.written() == 0 || d < opt.ReplyDelay {
		t.Fatalf("reply after %v, want at least %v", d, opt.ReplyDelay)
	}
	m, err := dhcpv4.FromBytes(c.out[0])
	if err != nil || m.MessageType() != dhcpv4.MessageTypeOffer {
		t.Fatalf("delayed reply: %v %v", m, err)
	}
}
