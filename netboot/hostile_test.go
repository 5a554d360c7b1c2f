package netboot

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
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
