package dashboard

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/boottorrent/boottorrent/initramfs/bootapi"
)

// fakeSource is a class the test changes at will.
type fakeSource struct {
	mu sync.Mutex
	ms []bootapi.Machine
}

func (f *fakeSource) Snapshot() []bootapi.Machine {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]bootapi.Machine(nil), f.ms...)
}

func (f *fakeSource) set(i int, fn func(m *bootapi.Machine)) {
	f.mu.Lock()
	fn(&f.ms[i])
	f.mu.Unlock()
}

func newClass(n int) *fakeSource {
	f := &fakeSource{}
	for i := range n {
		f.ms = append(f.ms, bootapi.Machine{MAC: fmt.Sprintf("52:54:00:00:%02x:%02x", i/256, i%256), Stage: bootapi.StageDownload,
			OS: "deb", BytesTotal: 1 << 30, FirstSeen: time.Now(), LastSeen: time.Now()})
	}
	return f
}

func serve(t *testing.T, src Source, o Options) (*Dashboard, *httptest.Server) {
	t.Helper()
	o.Source = src
	if o.Interval == 0 {
		o.Interval = 20 * time.Millisecond
	}
	d := New(o)
	d.Start()
	mux := http.NewServeMux()
	d.Register(func(p string, h http.Handler, _ bool) { mux.Handle(p, h) })
	srv := httptest.NewServer(mux)
	t.Cleanup(func() { srv.Close(); d.Close() })
	return d, srv
}

type sse struct {
	id, event string
	msg       Message
}

// events reads Server-Sent Events from r onto a channel until it ends.
func events(t *testing.T, r io.Reader) <-chan sse {
	ch := make(chan sse, 1024)
	go func() {
		defer close(ch)
		br := bufio.NewReaderSize(r, 1<<20)
		var cur sse
		for {
			line, err := br.ReadString('\n')
			if err != nil {
				return
			}
			line = strings.TrimSuffix(line, "\n")
			switch {
			case line == "":
				if cur.event != "" {
					ch <- cur
				}
				cur = sse{}
			case strings.HasPrefix(line, "id: "):
				cur.id = line[4:]
			case strings.HasPrefix(line, "event: "):
				cur.event = line[7:]
			case strings.HasPrefix(line, "data: "):
				if err := json.Unmarshal([]byte(line[6:]), &cur.msg); err != nil {
					t.Errorf("event data is not JSON: %v", err)
				}
			}
		}
	}()
	return ch
}

func open(t *testing.T, ctx context.Context, url, lastID string) <-chan sse {
	t.Helper()
	req, _ := http.NewRequestWithContext(ctx, "GET", url+bootapi.PathEvents, nil)
	if lastID != "" {
		req.Header.Set("Last-Event-ID", lastID)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "text/event-stream" {
		t.Fatalf("events: %s %s", resp.Status, resp.Header.Get("Content-Type"))
	}
	t.Cleanup(func() { resp.Body.Close() })
	return events(t, resp.Body)
}

func next(t *testing.T, ch <-chan sse) sse {
	t.Helper()
	select {
	case e, ok := <-ch:
		if !ok {
			t.Fatal("stream ended")
		}
		return e
	case <-time.After(5 * time.Second):
		t.Fatal("no event in 5 s")
	}
	return sse{}
}

// A page that reconnects with Last-Event-ID gets the changes it missed,
// not a snapshot; an ID the server no longer has (or never had) gets a
// snapshot.
func TestStreamResume(t *testing.T) {
	src := newClass(3)
	_, srv := serve(t, src, Options{})
	ctx, cancel := context.WithCancel(context.Background())
	ch := open(t, ctx, srv.URL, "")
	first := next(t, ch)
	if first.event != "snapshot" || len(first.msg.Machines) != 3 || first.msg.Summary.Total != 3 {
		t.Fatalf("first event: %s with %d machines", first.event, len(first.msg.Machines))
	}
	src.set(0, func(m *bootapi.Machine) { m.BytesDone = 100 })
	ch1 := next(t, ch)
	if ch1.event != "changes" || len(ch1.msg.Machines) != 1 || ch1.msg.Machines[0].BytesDone != 100 {
		t.Fatalf("change: %+v", ch1)
	}
	cancel()
	// While the page is away: two changes, a failure among them.
	src.set(1, func(m *bootapi.Machine) { m.Stage, m.Message = bootapi.StageFailed, "disk full" })
	time.Sleep(100 * time.Millisecond)
	src.set(2, func(m *bootapi.Machine) { m.BytesDone = 7 })
	time.Sleep(100 * time.Millisecond)

	ch = open(t, context.Background(), srv.URL, ch1.id)
	a, b := next(t, ch), next(t, ch)
	if a.event != "changes" || b.event != "changes" {
		t.Fatalf("resumed with %s, %s; want the two changes", a.event, b.event)
	}
	if m := a.msg.Machines[0]; m.Stage != bootapi.StageFailed || m.Message != "disk full" {
		t.Errorf("first missed change: %+v", m)
	}
	if len(a.msg.Events) != 1 || a.msg.Events[0].To != bootapi.StageFailed {
		t.Errorf("events of the failure: %+v", a.msg.Events)
	}
	if b.msg.Machines[0].BytesDone != 7 {
		t.Errorf("second missed change: %+v", b.msg.Machines[0])
	}
	for _, id := range []string{"0-1", "garbage", strings.Repeat("9", 200)} {
		if e := next(t, open(t, context.Background(), srv.URL, id)); e.event != "snapshot" || len(e.msg.Machines) != 3 {
			t.Errorf("Last-Event-ID %q: %s", id, e.event)
		}
	}
}

// A reader that reads nothing blocks neither the server nor the other
// readers; when it reads again it starts from a fresh snapshot.
func TestStreamSlowReader(t *testing.T) {
	src := newClass(300)
	for i := range src.ms {
		src.ms[i].Message = strings.Repeat("x", 1000) // big messages fill the socket fast
	}
	d, srv := serve(t, src, Options{Interval: 5 * time.Millisecond})
	// The slow reader: a raw connection
	// that sends its request and then reads nothing.
	c, err := net.Dial("tcp", strings.TrimPrefix(srv.URL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: x\r\n\r\n", bootapi.PathEvents)

	fast := open(t, context.Background(), srv.URL, "")
	if e := next(t, fast); e.event != "snapshot" {
		t.Fatal(e.event)
	}
	// Fewer rounds than the write timeout lasts: past it the server
	// drops the reader, and its browser reconnects.
	const rounds = 40
	start := d.StreamBytes()
	for round := 1; round <= rounds; round++ {
		for i := range src.ms {
			src.set(i, func(m *bootapi.Machine) { m.BytesDone = int64(round) })
		}
		// The fast reader sees every round's value promptly (it may
		// get a round merged with the next, never a stale one).
		deadline := time.After(5 * time.Second)
		for done := false; !done; {
			select {
			case e := <-fast:
				if e.event == "snapshot" {
					t.Fatalf("round %d: the fast reader fell behind", round)
				}
				done = e.msg.Machines[0].BytesDone == int64(round)
			case <-deadline:
				t.Fatalf("round %d: the fast reader got nothing for 5 s: the slow one blocks it", round)
			}
		}
	}
	t.Logf("streams wrote %d MB while one reader read nothing", (d.StreamBytes()-start)>>20)
	// The slow reader now reads: after what was buffered it gets a
	// snapshot (it fell behind) with the last round's values.
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	br := bufio.NewReaderSize(c, 4<<20)
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			t.Fatalf("slow reader: no snapshot after catching up: %v", err)
		}
		if line == "event: snapshot\n" {
			line, _ = br.ReadString('\n')
			var m Message
			if err := json.Unmarshal([]byte(strings.TrimPrefix(line, "data: ")), &m); err != nil {
				continue // the first snapshot, cut by chunked framing
			}
			if m.Machines[0].BytesDone == rounds {
				return
			}
		}
	}
}

// 100 pages at once each get the snapshot and the changes.
func TestStream100Readers(t *testing.T) {
	src := newClass(50)
	_, srv := serve(t, src, Options{})
	const readers = 100
	var chs []<-chan sse
	for range readers {
		chs = append(chs, open(t, context.Background(), srv.URL, ""))
	}
	for _, ch := range chs {
		if e := next(t, ch); e.event != "snapshot" || len(e.msg.Machines) != 50 {
			t.Fatalf("%s with %d machines", e.event, len(e.msg.Machines))
		}
	}
	src.set(7, func(m *bootapi.Machine) { m.Stage = bootapi.StageSeeding })
	for i, ch := range chs {
		e := next(t, ch)
		if e.event != "changes" || e.msg.Machines[0].Stage != bootapi.StageSeeding || e.msg.Summary.Stages[bootapi.StageSeeding] != 1 {
			t.Fatalf("reader %d: %+v", i, e)
		}
	}
	// Beyond the bound, a page is refused and told when to retry.
	_, small := serve(t, src, Options{MaxReaders: 1})
	open(t, context.Background(), small.URL, "")
	resp, err := http.Get(small.URL + bootapi.PathEvents)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") == "" {
		t.Errorf("reader beyond the bound: %s", resp.Status)
	}
}

// The page carries the CSP; curl gets the text index.
func TestPageHeaders(t *testing.T) {
	_, srv := serve(t, newClass(1), Options{Text: func(w io.Writer) { io.WriteString(w, "index\n") }})
	req, _ := http.NewRequest("GET", srv.URL+"/", nil)
	req.Header.Set("Accept", "text/html,application/xhtml+xml")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.Header.Get("Content-Security-Policy") != CSP || !strings.Contains(string(body), "/dashboard/app.js") {
		t.Errorf("page: %s %q", resp.Header, body[:min(len(body), 100)])
	}
	for _, f := range []string{"app.js", "style.css"} {
		resp, err := http.Get(srv.URL + bootapi.PathDashboardFiles + f)
		if err != nil || resp.StatusCode != 200 || resp.Header.Get("Content-Security-Policy") == "" {
			t.Errorf("%s: %v %v", f, err, resp.Status)
		}
		resp.Body.Close()
	}
	resp, err = http.Get(srv.URL + "/")
	if err != nil {
		t.Fatal(err)
	}
	body, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(body) != "index\n" {
		t.Errorf("curl's index: %q", body)
	}
}
