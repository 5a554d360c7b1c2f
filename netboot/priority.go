package netboot

import (
	"context"
	"net"
	"net/http"
	"strings"
	"syscall"

	"github.com/boottorrent/boottorrent/netboot/bootapi"
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
// that ControlPriority can mark it.
func ConnContext(ctx context.Context, c net.Conn) context.Context {
	return context.WithValue(ctx, connKey{}, c)
}

// controlPaths are the answers marked as control traffic.
var controlPaths = map[string]bool{
	bootapi.PathBoot: true, bootapi.PathPeers: true, bootapi.PathReport: true,
	bootapi.PathAnnounce: true, bootapi.PathScrape: true, bootapi.PathBootScript: true,
	bootapi.PathOSList: true,
}

// isControl says whether the answer to path is control traffic: the
// boot API, the tracker, the boot script and the .torrent files (a few
// KiB each; a boot client cannot start its download without one).
func isControl(path string) bool {
	return controlPaths[path] || strings.HasPrefix(path, bootapi.PathTorrents) && strings.HasSuffix(path, ".torrent")
}

// ControlPriority wraps the listener's handler: requests for the boot API,
// the tracker, the boot script and .torrent files are answered with the connection marked
// DSCP CS6, everything else unmarked (a kept-alive connection may carry
// both). It needs ConnContext on the server; without it, it does nothing.
func ControlPriority(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if c, ok := r.Context().Value(connKey{}).(syscall.Conn); ok {
			tos := 0
			if isControl(r.URL.Path) {
				tos = dhcp.TOSNetworkControl
			}
			setTOS(c, tos)
		}
		h.ServeHTTP(w, r)
	})
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
