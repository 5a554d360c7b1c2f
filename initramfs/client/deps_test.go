package client

import (
	"os/exec"
	"strings"
	"testing"
)

// TestClientDeps keeps the client's own imports lean: it is linked into
// the binary every machine loads, so it must not pull in the server's
// packages (only the bootapi contract). (anacrolix/torrent itself links
// net/http/pprof through envpprof; nothing serves DefaultServeMux in the
// client.)
func TestClientDeps(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", "github.com/boottorrent/boottorrent/initramfs/client").Output()
	if err != nil {
		t.Skipf("needs the go command to list packages: %v", err)
	}
	for _, p := range strings.Fields(string(out)) {
		switch {
		case strings.HasPrefix(p, "github.com/boottorrent/boottorrent/") &&
			p != "github.com/boottorrent/boottorrent/netboot/bootapi" &&
			!strings.HasPrefix(p, "github.com/boottorrent/boottorrent/initramfs/"):
			t.Errorf("the client imports the server package %s", p)
		case strings.HasPrefix(p, "github.com/boottorrent/boottorrent/cmd"):
			t.Errorf("the client imports %s", p)
		}
	}
}
