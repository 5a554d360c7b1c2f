package dashboard

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/boottorrent/boottorrent/initramfs/bootapi"
)

// Stream defaults (Options overrides them).
const (
	// DefaultInterval is how often the machines are compared and changes
	// sent: at most two messages a second, whatever the number of reports.
	DefaultInterval = 500 * time.Millisecond
	// DefaultMaxReaders bounds the open streams; a page beyond it is
	// refused (503) and its browser retries.
	DefaultMaxReaders = 256
	// readerBuffer is how many messages wait for one reader; a reader
	// that falls further behind gets a fresh snapshot instead of them.
	readerBuffer = 8
	// replay is how many change messages are kept for a page that
	// reconnects with Last-Event-ID.
	replay = 64
	// maxEvents is the length of the recent events list.
	maxEvents = 50
	// heartbeat is how often an idle stream sends a comment, so that
	// proxies and the browser see it alive.
	heartbeat = 15 * time.Second
	// writeTimeout drops a reader whose connection accepts nothing.
	writeTimeout = 10 * time.Second
)

// Event is one entry of the recent events list: a machine's stage change.
type Event struct {
	At      time.Time `json:"at"`
	MAC     string    `json:"mac"`
	Name    string    `json:"name,omitempty"`
	From    string    `json:"from,omitempty"`
	To      string    `json:"to"`
	Message string    `json:"message,omitempty"`
}

// Message is one Server-Sent Event's data: "snapshot" (every machine) or
// "changes" (the machines that changed, and those forgotten), each with
// the class summary and the events since the previous message.
type Message struct {
	Kind     string            `json:"kind"`
	Now      time.Time         `json:"now"`
	Machines []bootapi.Machine `json:"machines"`
	Removed  []string          `json:"removed,omitempty"`
	Summary  Summary           `json:"summary"`
	Events   []Event           `json:"events"`
}

// message is an encoded Message with its sequence number.
type message struct {
	seq  uint64
	data []byte // "id: …\nevent: …\ndata: …\n\n"
}

type reader struct {
	ch     chan message
	behind atomic.Bool
}

// stream compares the machines every interval and fans the changes out to
// the readers without ever waiting for one.
type stream struct {
	src        Source
	now        func() time.Time
	interval   time.Duration
	maxReaders int
	epoch      string

	mu      sync.Mutex
	readers map[*reader]struct{}
	seq     uint64
	cur     []bootapi.Machine
	enc     map[string][]byte // MAC → the machine's JSON as last sent
	summary Summary
	events  []Event
	ring    []message
	meter   Meter

	sent atomic.Int64 // bytes written to readers (tests, measurements)
}

func newStream(src Source, now func() time.Time, interval time.Duration, maxReaders int) *stream {
	return &stream{src: src, now: now, interval: interval, maxReaders: maxReaders,
		epoch:   strconv.FormatInt(now().UnixNano(), 36),
		readers: map[*reader]struct{}{}, enc: map[string][]byte{}}
}

// run compares and publishes every interval until done is closed.
func (s *stream) run(done <-chan struct{}) {
	t := time.NewTicker(s.interval)
	defer t.Stop()
	s.tick()
	for {
		select {
		case <-done:
			return
		case <-t.C:
			s.tick()
		}
	}
}

// tick takes a snapshot, finds what changed since the last one and sends
// it to every reader that has room.
func (s *stream) tick() {
	ms := s.src.Snapshot()
	now := s.now()
	s.mu.Lock()
	defer s.mu.Unlock()
	var changed []bootapi.Machine
	var evs []Event
	seen := make(map[string]bool, len(ms))
	old := make(map[string]*bootapi.Machine, len(s.cur))
	for i := range s.cur {
		old[s.cur[i].MAC] = &s.cur[i]
	}
	for _, m := range ms {
		seen[m.MAC] = true
		b, err := json.Marshal(m)
		if err != nil {
			continue
		}
		if bytes.Equal(b, s.enc[m.MAC]) {
			continue
		}
		s.enc[m.MAC] = b
		changed = append(changed, m)
		from := ""
		if o := old[m.MAC]; o != nil {
			from = o.Stage
		}
		if from != m.Stage {
			evs = append(evs, Event{At: now, MAC: m.MAC, Name: m.Name, From: from, To: m.Stage, Message: m.Message})
		}
	}
	var removed []string
	for mac := range s.enc {
		if !seen[mac] {
			removed = append(removed, mac)
			delete(s.enc, mac)
		}
	}
	s.cur = ms
	s.summary = Summarize(ms, now, &s.meter)
	s.events = append(s.events, evs...)
	if n := len(s.events) - maxEvents; n > 0 {
		s.events = append([]Event(nil), s.events[n:]...)
	}
	if len(changed) == 0 && len(removed) == 0 {
		return
	}
	s.seq++
	msg := s.encode("changes", Message{Kind: "changes", Now: now, Machines: changed, Removed: removed,
		Summary: s.summary, Events: evs})
	s.ring = append(s.ring, msg)
	if len(s.ring) > replay {
		s.ring = s.ring[1:]
	}
	for r := range s.readers {
		select {
		case r.ch <- msg:
		default:
			r.behind.Store(true)
		}
	}
}

// encode frames m as one event with the current sequence number. Called
// with s.mu held.
func (s *stream) encode(kind string, m Message) message {
	if m.Machines == nil {
		m.Machines = []bootapi.Machine{}
	}
	if m.Events == nil {
		m.Events = []Event{}
	}
	b, _ := json.Marshal(m)
	var buf bytes.Buffer
	fmt.Fprintf(&buf, "id: %s-%d\nevent: %s\ndata: ", s.epoch, s.seq, kind)
	buf.Write(b)
	buf.WriteString("\n\n")
	return message{seq: s.seq, data: buf.Bytes()}
}

// snapshot is every machine as last compared. Called with s.mu held.
func (s *stream) snapshot() message {
	return s.encode("snapshot", Message{Kind: "snapshot", Now: s.now(), Machines: s.cur, Summary: s.summary,
		Events: s.events})
}

// resume returns what a reader that last saw lastID needs: the change
// messages after it, or a snapshot when they are gone (or the ID is from
// another run of the server). Called with s.mu held.
func (s *stream) resume(lastID string) []message {
	epoch, n, ok := strings.Cut(lastID, "-")
	seq, err := strconv.ParseUint(n, 10, 64)
	if !ok || err != nil || epoch != s.epoch || seq > s.seq {
		return []message{s.snapshot()}
	}
	if seq == s.seq {
		return nil
	}
	if len(s.ring) == 0 || s.ring[0].seq > seq+1 {
		return []message{s.snapshot()}
	}
	var out []message
	for _, m := range s.ring {
		if m.seq > seq {
			out = append(out, m)
		}
	}
	return out
}

// ServeHTTP is the event stream (bootapi.PathEvents).
func (s *stream) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	rc := http.NewResponseController(w)
	rd := &reader{ch: make(chan message, readerBuffer)}
	s.mu.Lock()
	if len(s.readers) >= s.maxReaders {
		s.mu.Unlock()
		w.Header().Set("Retry-After", "10")
		http.Error(w, "too many event streams open", http.StatusServiceUnavailable)
		return
	}
	s.readers[rd] = struct{}{}
	lastID := r.Header.Get("Last-Event-ID")
	if lastID == "" {
		lastID = r.URL.Query().Get("last_event_id")
	}
	first := s.resume(bootapi.Truncate(lastID, 64))
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.readers, rd)
		s.mu.Unlock()
	}()

	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	var last uint64
	write := func(b []byte) bool {
		rc.SetWriteDeadline(time.Now().Add(writeTimeout))
		n, err := w.Write(b)
		s.sent.Add(int64(n))
		return err == nil && rc.Flush() == nil
	}
	// A browser reconnects after this many milliseconds.
	if !write([]byte("retry: 2000\n\n")) {
		return
	}
	for _, m := range first {
		if !write(m.data) {
			return
		}
		last = m.seq
	}
	beat := time.NewTicker(heartbeat)
	defer beat.Stop()
	for {
		select {
		case <-r.Context().Done():
			return
		case <-beat.C:
			if !write([]byte(": heartbeat\n\n")) {
				return
			}
		case m := <-rd.ch:
			if rd.behind.Swap(false) {
				// Messages were dropped for this reader: start it afresh.
				s.mu.Lock()
				m = s.snapshot()
				s.mu.Unlock()
				for len(rd.ch) > 0 {
					<-rd.ch
				}
			} else if m.seq <= last {
				continue
			}
			if !write(m.data) {
				return
			}
			last = m.seq
		}
	}
}
