package dhcp

import (
	"sync"
	"time"
)

// DefaultMaxQueueWait is how long a received packet may wait for a worker
// before it is dropped unanswered (Options.MaxQueueWait). Every DHCP
// client sends again when its wait runs out (PXE ROMs after 4, 8, 16 and
// 32 s, iPXE after 1–8 s, the boot client after 1–16 s), so a packet that
// waited this long has a newer copy, or its sender gave up; answering it
// only delays the newer ones.
const DefaultMaxQueueWait = 10 * time.Second

// packetQueue holds received packets for the workers, newest first. Under
// a burst the server cannot keep up with (a classroom powered on at once
// on a busy server), first in, first out answers requests that have
// waited longest, which are the ones least likely still wanted: at N = 100
// on a saturated benchmark host, replies went out 48–100 s after their
// request, every machine had timed out and sent again, and the queue held
// nothing but stale copies (cmd/swarmbench/TUNING.md, 2026-11-24). So the
// workers take the newest packet; when the queue is full the oldest is
// dropped to make room, and a packet that waited longer than
// Options.MaxQueueWait is dropped when a worker reaches it. When the server keeps
// up the queue holds a packet or two and the order does not matter: one
// client's DHCP messages are answers to ours, never queued together.
type packetQueue struct {
	mu     sync.Mutex
	cond   sync.Cond
	buf    []packet // ring of capacity len(buf)
	head   int      // oldest
	n      int
	closed bool
}

func newPacketQueue(capacity int) *packetQueue {
	q := &packetQueue{buf: make([]packet, max(1, capacity))}
	q.cond.L = &q.mu
	return q
}

// push adds p as the newest packet. When the queue is full it removes the
// oldest and returns it (evicted true); the caller owns it. After close,
// push returns p itself as evicted.
func (q *packetQueue) push(p packet) (old packet, evicted bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.closed {
		return p, true
	}
	if q.n == len(q.buf) {
		old, evicted = q.buf[q.head], true
		q.buf[q.head] = packet{}
		q.head = (q.head + 1) % len(q.buf)
		q.n--
	}
	q.buf[(q.head+q.n)%len(q.buf)] = p
	q.n++
	q.cond.Signal()
	return old, evicted
}

// pop waits for a packet and returns the newest; ok is false once the
// queue is closed and empty.
func (q *packetQueue) pop() (p packet, ok bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	for q.n == 0 && !q.closed {
		q.cond.Wait()
	}
	if q.n == 0 {
		return packet{}, false
	}
	q.n--
	i := (q.head + q.n) % len(q.buf)
	p, q.buf[i] = q.buf[i], packet{}
	return p, true
}

// close wakes the workers; they drain what is queued, then pop returns
// false.
func (q *packetQueue) close() {
	q.mu.Lock()
	q.closed = true
	q.mu.Unlock()
	q.cond.Broadcast()
}
