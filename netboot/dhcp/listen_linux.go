package dhcp

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

const rcvBuf = 4 << 20

// Listen opens a UDP socket on 0.0.0.0:port bound to the device ifname
// (SO_BINDTODEVICE), able to send broadcasts. Binding 0.0.0.0 is needed to
// receive broadcasts; binding the device keeps us off other interfaces.
//
// Unlike the library's server4.NewIPv4UDPConn it sets neither SO_REUSEADDR
// nor SO_REUSEPORT: with them a second boottorrent (or any server setting
// SO_REUSEPORT) binds the same port without error and the kernel splits the
// requests between the two. Without them the second bind fails, and Listen
// says who holds the port (ErrPortInUse). EACCES is reported as
// ErrPermission.
//
// Call it in the network namespace the socket should live in.
func Listen(ifname string, port int) (net.PacketConn, error) {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, unix.IPPROTO_UDP)
	if err != nil {
		return nil, fmt.Errorf("dhcp: udp socket: %w", err)
	}
	f := os.NewFile(uintptr(fd), fmt.Sprintf("udp:%d", port))
	defer f.Close() // net.FilePacketConn dups the descriptor
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_BROADCAST, 1); err != nil {
		return nil, fmt.Errorf("dhcp: SO_BROADCAST: %w", err)
	}
	// A burst of machines switched on together (or a flood) must wait in
	// the socket, not be dropped by the kernel before the worker pool
	// sees it: ask for 4 MiB (SO_RCVBUFFORCE passes net.core.rmem_max as
	// root; otherwise the kernel caps SO_RCVBUF there).
	if unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, rcvBuf) != nil {
		unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUF, rcvBuf)
	}
	// Replies are control traffic: a machine that gets no lease cannot
	// boot, and while other machines download, the server's uplink is
	// full. DSCP CS6 (network control) lets switches and DSCP-aware
	// queues send them first; SO_PRIORITY 6 (TC_PRIO_INTERACTIVE, set
	// after IP_TOS, which overwrites it) puts them in the first band of
	// the host's own pfifo_fast. Best effort: a reply still goes out
	// unmarked.
	unix.SetsockoptInt(fd, unix.IPPROTO_IP, unix.IP_TOS, TOSNetworkControl)
	unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_PRIORITY, 6)
	if ifname != "" {
		if err := unix.BindToDevice(fd, ifname); err != nil {
			if errors.Is(err, unix.EPERM) {
				return nil, fmt.Errorf("dhcp: bind to interface %s: %w", ifname, ErrPermission)
			}
			if errors.Is(err, unix.ENODEV) {
				return nil, fmt.Errorf("dhcp: interface %s does not exist", ifname)
			}
			return nil, fmt.Errorf("dhcp: bind to interface %s: %w", ifname, err)
		}
	}
	if err := unix.Bind(fd, &unix.SockaddrInet4{Port: port}); err != nil {
		switch {
		case errors.Is(err, unix.EADDRINUSE):
			holder := portHolder(port)
			if holder == "" {
				holder = "another process"
			}
			return nil, fmt.Errorf("dhcp: UDP port %d on %s is held by %s (a second boottorrent, dnsmasq, or a DHCP server?): stop it, or set dhcp.mode: off: %w",
				port, ifaceOrAll(ifname), holder, ErrPortInUse)
		case errors.Is(err, unix.EACCES):
			return nil, fmt.Errorf("dhcp: bind UDP port %d: %w", port, ErrPermission)
		}
		return nil, fmt.Errorf("dhcp: bind UDP port %d: %w", port, err)
	}
	c, err := net.FilePacketConn(f)
	if err != nil {
		return nil, fmt.Errorf("dhcp: %w", err)
	}
	return c, nil
}

func ifaceOrAll(ifname string) string {
	if ifname == "" {
		return "all interfaces"
	}
	return ifname
}

// portHolder names the processes with a UDP socket on port, from
// /proc/thread-self/net/udp (the calling thread's network namespace) and
// the descriptors in /proc/*/fd. It returns "" when it cannot tell.
func portHolder(port int) string {
	inodes := map[string]bool{}
	f, err := os.Open("/proc/thread-self/net/udp")
	if err != nil {
		return ""
	}
	sc := bufio.NewScanner(f)
	want := fmt.Sprintf(":%04X", port)
	for sc.Scan() {
		fs := strings.Fields(sc.Text())
		if len(fs) > 9 && strings.HasSuffix(fs[1], want) {
			inodes["socket:["+fs[9]+"]"] = true
		}
	}
	f.Close()
	if len(inodes) == 0 {
		return ""
	}
	var names []string
	procs, _ := filepath.Glob("/proc/[0-9]*")
	for _, p := range procs {
		fds, err := os.ReadDir(p + "/fd")
		if err != nil {
			continue
		}
		for _, fd := range fds {
			if l, err := os.Readlink(p + "/fd/" + fd.Name()); err == nil && inodes[l] {
				comm, _ := os.ReadFile(p + "/comm")
				pid, _ := strconv.Atoi(filepath.Base(p))
				names = append(names, fmt.Sprintf("%s (pid %d)", strings.TrimSpace(string(comm)), pid))
				break
			}
		}
		if len(names) >= 3 {
			break
		}
	}
	return strings.Join(names, ", ")
}
