package netboot

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"syscall"
	"testing"

	"github.com/boottorrent/boottorrent/initramfs/bootapi"
	"github.com/boottorrent/boottorrent/netboot/dhcp"
)

// TestControlPriority: the answers of routes registered as control leave
// marked DSCP CS6, the others' unmarked, also on one kept-alive
// connection.
func TestControlPriority(t *testing.T) {
	echo := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c := r.Context().Value(connKey{}).(syscall.Conn)
		raw, err := c.SyscallConn()
		if err != nil {
			t.Error(err)
			return
		}
		tos := -1
		raw.Control(func(fd uintptr) { tos, _ = syscall.GetsockoptInt(int(fd), syscall.IPPROTO_IP, syscall.IP_TOS) })
		io.WriteString(w, strconv.Itoa(tos))
	})
	m := NewSurface()
	m.Handle("GET "+bootapi.PathPeers, echo, true)
	m.Handle("GET "+bootapi.PathWebSeed, echo, false)
	m.Handle("GET "+bootapi.PathBoot, echo, true)
	m.Handle("GET "+bootapi.PathClientInitramfs, echo, false)
	m.Handle("GET "+bootapi.PathTorrents+"{file}", echo, true)
	m.Handle("GET "+bootapi.PathOSList, echo, true)
	srv := httptest.NewUnstartedServer(m)
	srv.Config.ConnContext = ConnContext
	srv.Start()
	defer srv.Close()
	for _, c := range []struct {
		path string
		tos  int
	}{
		{bootapi.PathPeers + "?os=a", dhcp.TOSNetworkControl},
		{bootapi.PathWebSeed + "a/vmlinuz", 0},
		{bootapi.PathBoot, dhcp.TOSNetworkControl},
		{bootapi.PathClientInitramfs, 0},
		{bootapi.PathTorrents + "a.torrent", dhcp.TOSNetworkControl},
		{bootapi.PathOSList, dhcp.TOSNetworkControl},
	} {
		resp, err := srv.Client().Get(srv.URL + c.path)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if string(b) != strconv.Itoa(c.tos) {
			t.Errorf("%s: TOS %s, want %d", c.path, b, c.tos)
		}
	}
}
