package netboot

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/boottorrent/boottorrent/initramfs/bootapi"
	"github.com/boottorrent/boottorrent/netboot/netns"
	"github.com/boottorrent/boottorrent/netboot/netns/nstest"
)

// hostileHTTP is the appliance's HTTP side as start runs it (the one
// Surface, the same http.Server limits) on a namespace LAN, and a host
// on that LAN to attack it from.
type hostileHTTP struct {
	srv     *Server
	base    string
	addr    string
	attack  *netns.NS
	serving *http.Server
}

func startHostileHTTP(t *testing.T) *hostileHTTP {
	t.Helper()
	_, hosts := nstest.LAN(t, "10.79.0.1/24", "10.79.0.2/24")
	s, _ := testServer(t)
	h := &hostileHTTP{srv: s, addr: "10.79.0.1:8080", base: "http://10.79.0.1:8080", attack: hosts[1]}
	h.serving = &http.Server{Handler: s.Handler(), ConnContext: ConnContext,
		ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 2 * time.Minute}
	if err := hosts[0].Do(func() error {
		ln, err := net.Listen("tcp4", h.addr)
		if err != nil {
			return err
		}
		go h.serving.Serve(ln)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.serving.Close() })
	return h
}

func (h *hostileHTTP) dial(t *testing.T) net.Conn {
	t.Helper()
	c, err := h.attack.DialContext(context.Background(), "tcp4", h.addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// TestHostileSlowBodies: 50 connections that send a report's headers at
// once and then its body one byte every 5 s are all dropped within
// BodyTimeout (plus a margin), and a real report still gets through.
func TestHostileSlowBodies(t *testing.T) {
	h := startHostileHTTP(t)
	const conns = 50
	var wg sync.WaitGroup
	dropped := make(chan time.Duration, conns)
	t0 := time.Now()
	for range conns {
		c := h.dial(t)
		fmt.Fprintf(c, "POST %s HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n", bootapi.PathReport)
		wg.Add(1)
		go func() {
			defer wg.Done()
			// Trickle, and notice when the server hangs up.
			go func() {
				io.Copy(io.Discard, c)
				dropped <- time.Since(t0)
				c.Close()
			}()
			for range 20 {
				if _, err := c.Write([]byte(" ")); err != nil {
					return
				}
				time.Sleep(5 * time.Second)
			}
		}()
	}
	limit := BodyTimeout + 5*time.Second
	for i := range conns {
		select {
		case d := <-dropped:
			if d > limit {
				t.Errorf("connection %d dropped after %s, want within %s", i, d.Round(time.Millisecond), limit)
			}
		case <-time.After(time.Until(t0.Add(limit + 5*time.Second))):
			t.Fatalf("%d of %d slow-body connections still held after %s", conns-i, conns, time.Since(t0).Round(time.Second))
		}
	}
	body := `{"mac":"52:54:00:00:00:42","stage":"menu"}`
	c := h.dial(t)
	fmt.Fprintf(c, "POST %s HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s", bootapi.PathReport, len(body), body)
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil || resp.StatusCode != http.StatusNoContent {
		t.Errorf("a real report after the slow ones: %v %v", resp, err)
	}
	c.Close()
	wg.Wait()
}

// TestHostileHTTP is the suite of hostile HTTP requests the appliance
// must survive, each sent raw over a socket from another namespace: what
// it sends and the status it must get (0: the connection is closed
// without an answer). After every case the server must still answer a
// real request (no crash), and nothing outside the served files may come
// back (no escape).
func TestHostileHTTP(t *testing.T) {
	h := startHostileHTTP(t)
	big := strings.Repeat("a", 20<<10)
	ranges := "bytes=0-0" + strings.Repeat(",1-1", 20)
	cases := []struct {
		name, send string
		want       int
	}{
		// ServeMux answers a path with dot segments with a redirect to
		// its clean form, which is then a 404 (next case).
		{"traversal in the client path", "GET /client/../../etc/passwd HTTP/1.1\r\nHost: x\r\n\r\n", 307},
		{"the cleaned traversal", "GET /etc/passwd HTTP/1.1\r\nHost: x\r\n\r\n", 404},
		{"encoded traversal", "GET /client/%2e%2e/%2e%2e/etc/passwd HTTP/1.1\r\nHost: x\r\n\r\n", 404},
		{"traversal in the web seed", "GET /oss/../../etc/passwd HTTP/1.1\r\nHost: x\r\n\r\n", 307},
		{"boot API without mac", "GET /api/v1/boot HTTP/1.1\r\nHost: x\r\n\r\n", 400},
		{"boot API with the zero mac", "GET /api/v1/boot?mac=00:00:00:00:00:00 HTTP/1.1\r\nHost: x\r\n\r\n", 400},
		{"boot API with the broadcast mac", "GET /api/v1/boot?mac=ff:ff:ff:ff:ff:ff HTTP/1.1\r\nHost: x\r\n\r\n", 400},
		{"boot API with a 5,000-byte mac", "GET /api/v1/boot?mac=" + strings.Repeat("a", 5000) + " HTTP/1.1\r\nHost: x\r\n\r\n", 400},
		{"report that is not JSON", "POST /api/v1/report HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello", 400},
		{"report larger than 16 KiB", fmt.Sprintf("POST /api/v1/report HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n{\"mac\":\"%s\"}", len(big)+10, big), 400},
		{"report with an unknown stage", "POST /api/v1/report HTTP/1.1\r\nHost: x\r\nContent-Length: 43\r\n\r\n{\"mac\":\"52:54:00:00:00:01\",\"stage\":\"pwned\"}", 400},
		{"report with negative counters", "POST /api/v1/report HTTP/1.1\r\nHost: x\r\nContent-Length: 60\r\n\r\n{\"mac\":\"52:54:00:00:00:01\",\"stage\":\"menu\",\"bytes_done\":-1}  ", 400},
		{"21 ranges of the client kernel", "GET /client/vmlinuz HTTP/1.1\r\nHost: x\r\nRange: " + ranges + "\r\n\r\n", 416},
		{"a 2 MiB header", "GET / HTTP/1.1\r\nHost: x\r\nX: " + strings.Repeat("b", 2<<20) + "\r\n\r\n", 431},
		{"garbage request line", "\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n", 400},
		{"unknown method on the boot script", "DELETE /boot.ipxe HTTP/1.1\r\nHost: x\r\n\r\n", 404},
	}
	crashes, escapes := 0, 0
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := h.dial(t)
			c.SetDeadline(time.Now().Add(20 * time.Second))
			go io.WriteString(c, tc.send)
			resp, err := http.ReadResponse(bufio.NewReader(c), nil)
			got := 0
			if err == nil {
				got = resp.StatusCode
				b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
				if strings.Contains(string(b), "root:") {
					escapes++
					t.Errorf("answer holds /etc/passwd")
				}
			}
			if got != tc.want {
				t.Errorf("sent %.60q: status %d, want %d (%v)", tc.send, got, tc.want, err)
			}
			r, err := h.attack.HTTPClient(5 * time.Second).Get(h.base + bootapi.PathBootScript + "?mac=52:54:00:00:00:01")
			if err != nil || r.StatusCode != 200 {
				crashes++
				t.Errorf("the server does not answer after the case: %v", err)
			} else {
				r.Body.Close()
			}
		})
	}
	// 5,000 reports with random MACs from one address: at most
	// registry.MaxPerSource machines registered.
	t.Run("report flood from one address", func(t *testing.T) {
		before := h.srv.reg.Len()
		hc := h.attack.HTTPClient(5 * time.Second)
		for i := range 5000 {
			body := fmt.Sprintf(`{"mac":"02:00:%02x:%02x:%02x:01","stage":"menu"}`, i>>16&0xff, i>>8&0xff, i&0xff)
			r, err := hc.Post(h.base+bootapi.PathReport, "application/json", strings.NewReader(body))
			if err != nil {
				t.Fatal(err)
			}
			io.Copy(io.Discard, r.Body)
			r.Body.Close()
		}
		if n := h.srv.reg.Len() - before; n > 8 {
			t.Errorf("one address registered %d machines", n)
		}
	})
	t.Logf("hostile HTTP cases: %d tried, %d crashes, %d escapes", len(cases)+1, crashes, escapes)
}
