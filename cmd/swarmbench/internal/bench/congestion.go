package bench

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// Every namespace starts with the TCP congestion control this machine
// was configured with, which need not be what the machines of a lab run:
// the development machine's default is BBR, while the boot client's
// kernel and a Debian server use Linux's default, CUBIC. It matters on
// these links: with BBR (which does not back off on loss) and 19 peers
// sending into one client's 100 ms switch queue, retransmissions and
// duplicates made clients' uplinks carry 1.47 bytes per useful byte at
// 5 Mbit/s, against 1.26 with CUBIC (TUNING.md). swarmbench therefore
// sets every host's congestion control (--congestion, default cubic).

// DefaultCongestion is Linux's default congestion control, which the
// boot client's kernel and a Debian server use.
const DefaultCongestion = "cubic"

// congestionDir is where the host-wide lists live; tests pass a
// temporary folder to allowCongestion and checkCongestion instead.
const congestionDir = "/proc/sys/net/ipv4"

// allowCongestion makes algo settable inside namespaces: outside the
// initial namespace Linux lets a process pick only an algorithm from
// net.ipv4.tcp_allowed_congestion_control. It checks that the kernel has
// algo, adds it to the allowed list in dir (congestionDir) when missing,
// and returns a function that puts the list back.
func allowCongestion(dir, algo string) (restore func(), err error) {
	noop := func() {}
	if err := checkCongestion(dir, algo); err != nil {
		return noop, err
	}
	path := filepath.Join(dir, "tcp_allowed_congestion_control")
	b, err := os.ReadFile(path)
	if err != nil {
		return noop, fmt.Errorf("--congestion: %w", err)
	}
	old := strings.TrimSpace(string(b))
	if slices.Contains(strings.Fields(old), algo) {
		return noop, nil
	}
	if err := os.WriteFile(path, []byte(strings.TrimSpace(old+" "+algo)), 0o644); err != nil {
		return noop, fmt.Errorf("--congestion: allow %s in %s: %w", algo, path, err)
	}
	return func() { os.WriteFile(path, []byte(old), 0o644) }, nil
}

// CheckCongestion reports whether this kernel has the congestion control
// algo (net.ipv4.tcp_available_congestion_control), so that a bad
// --congestion is refused before the image is written and the LAN built.
func CheckCongestion(algo string) error { return checkCongestion(congestionDir, algo) }

// checkCongestion is CheckCongestion with the lists in dir.
func checkCongestion(dir, algo string) error {
	path := filepath.Join(dir, "tcp_available_congestion_control")
	avail, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("--congestion: %w", err)
	}
	if !slices.Contains(strings.Fields(string(avail)), algo) {
		return fmt.Errorf("--congestion %q: this kernel offers %s (%s); load its module (modprobe tcp_%s) or pick one of those",
			algo, strings.TrimSpace(string(avail)), path, algo)
	}
	return nil
}
