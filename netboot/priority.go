package netboot

import (
	"context"
	"net"
	"net/http"
	"syscall"
	"time"

	"github.com/boottorrent/boottorrent/netboot/dhcp"
)

// The HTTP listener carries both bulk data (web seed, client files) and
// the boot API and tracker, whose short answers a booting machine waits
// for. While machines download, the server's uplink is full; marking the
// API's answers as network control (DSCP CS6, the DHCP replies' mark) lets
// switches and DSCP-aware queues send them first. At N = 100 on a
// saturated 4 Mbit/s uplink, unmarked peer lists timed out ("timeout
// awaiting response headers") and machines sat without peers for minutes.

type connKey struct{}

// ConnContext is an http.Server ConnContext that keeps the connection, so
// that the Surface can mark it.
func ConnContext(ctx context.Context, c net.Conn) context.Context {
	return context.WithValue(ctx, connKey{}, c)
}

// Surface is the appliance's one HTTP surface: every part (netboot, the
// boot API, the seeder) registers its routes on it with Handle, saying as
// it registers each one whether its answers are control traffic. A control
// answer leaves its connection marked DSCP CS6, any other unmarked (a
// kept-alive connection may carry both). The marks need ConnContext on the
// http.Server; without it, none are set.
type Surface struct {
	mux *http.ServeMux
}

// NewSurface returns a Surface whose unregistered paths are unmarked 404s.
func NewSurface() *Surface {
	m := &Surface{mux: http.NewServeMux()}
	m.Handle("/", http.NotFoundHandler(), false)
	return m
}

// Handle registers h for pattern (an http.ServeMux pattern, with its
// method); control marks its answers as network control.
func (m *Surface) Handle(pattern string, h http.Handler, control bool) {
	tos := 0
	if control {
		tos = dhcp.TOSNetworkControl
	}
	m.mux.Handle(pattern, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if c, ok := r.Context().Value(connKey{}).(syscall.Conn); ok {
			setTOS(c, tos)
		}
		h.ServeHTTP(w, r)
	}))
}

// Pattern is the pattern that serves r ("" when none does).
func (m *Surface) Pattern(r *http.Request) string {
	_, p := m.mux.Handler(r)
	return p
}

// BodyTimeout bounds how long a request's body may take to arrive, as
// http.Server's ReadHeaderTimeout bounds its headers. Every body the
// appliance accepts is small (a report is at most 16 KiB); without a
// deadline, a sender trickling one byte every few seconds holds its
// connection and goroutine for ever. http.Server's ReadTimeout is not used:
// it would also run out during long web-seed answers and cancel them.
const BodyTimeout = 10 * time.Second

func (m *Surface) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.ContentLength != 0 { // a body, of known length or chunked
		// The deadline also covers net/http's discarding of an unread
		// body after the handler; the next request on the connection
		// sets its own.
		http.NewResponseController(w).SetReadDeadline(time.Now().Add(BodyTimeout))
	}
	m.mux.ServeHTTP(w, r)
}

// setTOS sets an IPv4 connection's TOS byte (best effort).
func setTOS(c syscall.Conn, tos int) {
	raw, err := c.SyscallConn()
	if err != nil {
		return
	}
	raw.Control(func(fd uintptr) {
		syscall.SetsockoptInt(int(fd), syscall.IPPROTO_IP, syscall.IP_TOS, tos)
	})
}
