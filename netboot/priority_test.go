package netboot

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"syscall"
	"testing"

	"github.com/boottorrent/boottorrent/netboot/bootapi"
	"github.com/boottorrent/boottorrent/netboot/dhcp"
)

// TestControlPriority: the boot API's answers leave marked DSCP CS6, the
// web seed's unmarked, also on one kept-alive connection.
func TestControlPriority(t *testing.T) {
	srv := httptest.NewUnstartedServer(ControlPriority(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c := r.Context().Value(connKey{}).(syscall.Conn)
		raw, err := c.SyscallConn()
		if err != nil {
			t.Error(err)
			return
		}
		tos := -1
		raw.Control(func(fd uintptr) { tos, _ = syscall.GetsockoptInt(int(fd), syscall.IPPROTO_IP, syscall.IP_TOS) })
		io.WriteString(w, strconv.Itoa(tos))
	})))
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
		{bootapi.PathTorrents + "a.iso", 0},
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
