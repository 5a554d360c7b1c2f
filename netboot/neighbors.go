package netboot

import (
	"bufio"
	"bytes"
	"io"
	"net"
	"net/netip"
	"os"
	"strings"
	"sync"
)

// neighbors reads the kernel's ARP table, to name the machine behind an
// address when nothing else did. In proxy mode a firmware may go from the
// proxy offer straight to TFTP without the PXE boot-server request that
// would tell us its address, and a boot script may be fetched without a
// MAC; the kernel has just exchanged packets with that address, so its
// neighbour entry holds the MAC.
//
// The file is opened once, in Start's network namespace: a proc net file
// keeps reading the namespace it was opened in, whichever thread reads it.
type neighbors struct {
	mu sync.Mutex
	f  *os.File
}

func openNeighbors() *neighbors {
	f, err := os.Open("/proc/thread-self/net/arp")
	if err != nil {
		f, err = os.Open("/proc/net/arp")
		if err != nil {
			return nil
		}
	}
	return &neighbors{f: f}
}

// lookup returns the lower-case MAC of ip, or "".
func (n *neighbors) lookup(ip netip.Addr) string {
	if n == nil || !ip.Is4() {
		return ""
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if _, err := n.f.Seek(0, io.SeekStart); err != nil {
		return ""
	}
	data, err := io.ReadAll(io.LimitReader(n.f, 4<<20))
	if err != nil {
		return ""
	}
	return parseARP(data, ip)
}

func (n *neighbors) close() error {
	if n == nil {
		return nil
	}
	return n.f.Close()
}

// parseARP finds ip in the text of /proc/net/arp:
//
//	IP address       HW type     Flags       HW address            Mask     Device
//	10.77.0.140      0x1         0x2         52:54:00:ab:64:cd     *        eth0
//
// Incomplete entries (flags 0x0) and all-zero MACs are ignored.
func parseARP(data []byte, ip netip.Addr) string {
	sc := bufio.NewScanner(bytes.NewReader(data))
	want := ip.String()
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 6 || f[0] != want || f[2] == "0x0" {
			continue
		}
		hw, err := net.ParseMAC(f[3])
		if err != nil || len(hw) != 6 || bytes.Equal(hw, make([]byte, 6)) {
			continue
		}
		return strings.ToLower(hw.String())
	}
	return ""
}
