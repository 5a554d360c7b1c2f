package dhcp

import (
	"net"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/iana"
)

func TestPacketQueue(t *testing.T) {
	q := newPacketQueue(3)
	in := func(n int) packet { return packet{n: n} }
	for i := 1; i <= 3; i++ {
		if _, ev := q.push(in(i)); ev {
			t.Fatalf("push %d evicted with room left", i)
		}
	}
	old, ev := q.push(in(4))
	if !ev || old.n != 1 {
		t.Fatalf("push into a full queue: evicted %v, packet %d; want the oldest (1)", ev, old.n)
	}
	var got []int
	p, _ := q.pop()
	got = append(got, p.n)
	q.push(in(5))
	q.close()
	for {
		p, ok := q.pop()
		if !ok {
			break
		}
		got = append(got, p.n)
	}
	if want := []int{4, 5, 3, 2}; !slices.Equal(got, want) {
		t.Fatalf("popped %v, want newest first %v", got, want)
	}
	if p, ev := q.push(in(6)); !ev || p.n != 6 {
		t.Fatalf("push after close: %v %d, want the packet back", ev, p.n)
	}
}

// TestPacketQueueWakes: a waiting pop returns when a packet is pushed and
// when the queue is closed.
func TestPacketQueueWakes(t *testing.T) {
	q := newPacketQueue(4)
	got := make(chan int, 2)
	var wg sync.WaitGroup
	for range 2 {
		wg.Go(func() {
			p, ok := q.pop()
			if ok {
				got <- p.n
			} else {
				got <- -1
			}
		})
	}
	time.Sleep(20 * time.Millisecond)
	q.push(packet{n: 7})
	if n := <-got; n != 7 {
		t.Fatalf("first waiter got %d, want 7", n)
	}
	q.close()
	if n := <-got; n != -1 {
		t.Fatalf("second waiter got %d after close, want none", n)
	}
	wg.Wait()
}

// gatedConn holds every reply until the test opens the gate, so the
// worker stays busy with its first request while the queue fills.
type gatedConn struct {
	*memConn
	gate    chan struct{}
	started chan struct{}
	once    sync.Once
}

func (c *gatedConn) WriteTo(b []byte, a net.Addr) (int, error) {
	c.once.Do(func() { close(c.started) })
	<-c.gate
	return c.memConn.WriteTo(b, a)
}

// gatedServer serves a gatedConn with one worker and the given queue;
// send queues a PXE discover with transaction ID xid.
func gatedServer(t *testing.T, queue int, maxWait time.Duration) (*Server, *gatedConn, func(xid byte)) {
	t.Helper()
	opt := testOptions(ModeProxy)
	opt.Workers, opt.Queue, opt.MaxQueueWait = 1, queue, maxWait
	s := newTestServer(t, opt)
	c := &gatedConn{memConn: newMemConn(64), gate: make(chan struct{}), started: make(chan struct{})}
	go s.Serve(c, nil)
	req := pxeDiscover(t, iana.INTEL_X86PC, "PXEClient:Arch:00000:UNDI:002001", false)
	return s, c, func(xid byte) {
		req.TransactionID = dhcpv4.TransactionID{0, 0, 0, xid}
		c.in <- req.ToBytes()
	}
}

// TestServeNewestFirst: when requests arrive faster than the workers
// answer them, the newest are answered first and the oldest are dropped,
// rather than the server answering only requests whose senders have long
// since sent again (the FIFO it had before: N = 100 in the swarm
// benchmark, replies 48–100 s late).
func TestServeNewestFirst(t *testing.T) {
	s, c, send := gatedServer(t, 4, 0)
	send(1)
	<-c.started // the worker is writing the reply to 1
	for xid := byte(2); xid <= 10; xid++ {
		send(xid)
	}
	deadline := time.Now().Add(5 * time.Second)
	for s.Stats().Received < 10 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	close(c.gate)
	for c.written() < 5 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	time.Sleep(50 * time.Millisecond) // nothing more should come
	c.mu.Lock()
	var xids []byte
	for _, b := range c.out {
		m, err := dhcpv4.FromBytes(b)
		if err != nil {
			t.Fatal(err)
		}
		xids = append(xids, m.TransactionID[3])
	}
	c.mu.Unlock()
	if want := []byte{1, 10, 9, 8, 7}; !slices.Equal(xids, want) {
		t.Fatalf("answered %v, want the one in progress, then the newest four, newest first: %v", xids, want)
	}
	if st := s.Stats(); st.Dropped != 5 {
		t.Fatalf("dropped %d, want the 5 oldest that did not fit (stats %+v)", st.Dropped, st)
	}
}

// TestServeDropsStale: a request that waited longer than MaxQueueWait for
// a worker is dropped unanswered; later ones are answered.
func TestServeDropsStale(t *testing.T) {
	const maxQueueWait = 100 * time.Millisecond
	s, c, send := gatedServer(t, 8, maxQueueWait)
	send(1)
	<-c.started
	send(2)
	send(3)
	time.Sleep(3 * maxQueueWait) // 2 and 3 go stale behind 1
	close(c.gate)
	deadline := time.Now().Add(5 * time.Second)
	for s.Stats().Dropped < 2 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	send(4)
	for c.written() < 2 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	c.mu.Lock()
	n := len(c.out)
	last, err := dhcpv4.FromBytes(c.out[n-1])
	c.mu.Unlock()
	if err != nil {
		t.Fatal(err)
	}
	if st := s.Stats(); n != 2 || st.Dropped != 2 || last.TransactionID[3] != 4 {
		t.Fatalf("%d replies (last xid %d), stats %+v: want 1 and 4 answered, 2 and 3 dropped as stale", n, last.TransactionID[3], st)
	}
}
