package bench

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// The kernel's ARP and IPv6 neighbour tables are one table each for the
// whole machine, shared by every network namespace, with the limits of
// net.ipv{4,6}.neigh.default.gc_thresh{1,2,3} (128/512/1024 by default).
// On a real LAN every machine has its own table; here N machines that all
// talk to each other need about N² entries in one table. At N = 30 that
// passes gc_thresh2, and the kernel keeps evicting entries that are in use
// (TCP then waits for ARP again); at N = 100 it passes gc_thresh3, and
// the kernel drops packets it cannot resolve a neighbour for ("neighbor
// table overflow!" in dmesg): among them the DHCP server's broadcast
// replies, which is why a quarter of the machines took their lease minutes
// late. neighLimits raises the limits for the run and puts them back.

// neighDir is where the limits live; tests pass a temporary folder to
// raiseNeighLimits instead.
const neighDir = "/proc/sys/net"

// neighThresholds returns gc_thresh1, 2 and 3 for hosts machines that all
// talk to each other: thresh1 (below which nothing is collected) holds
// every pair with room to spare.
func neighThresholds(hosts int) [3]int {
	need := hosts*hosts + 4*hosts
	return [3]int{2 * need, 4 * need, 8 * need}
}

// raiseNeighLimits raises the neighbour-table limits of IPv4 and IPv6
// under dir (neighDir) to at least neighThresholds(hosts) and returns a function that restores
// the old values. Limits already higher are left alone.
func raiseNeighLimits(dir string, hosts int) (restore func(), err error) {
	want := neighThresholds(hosts)
	type saved struct {
		path string
		old  string
	}
	var done []saved
	restore = func() {
		for i := len(done) - 1; i >= 0; i-- {
			os.WriteFile(done[i].path, []byte(done[i].old), 0o644)
		}
	}
	for _, family := range []string{"ipv4", "ipv6"} {
		if _, err := os.Stat(filepath.Join(dir, family)); family == "ipv6" && errors.Is(err, fs.ErrNotExist) {
			continue // a kernel without IPv6
		}
		// thresh3 first when raising: the kernel wants 1 ≤ 2 ≤ 3.
		for k := 3; k >= 1; k-- {
			path := filepath.Join(dir, family, "neigh", "default", fmt.Sprintf("gc_thresh%d", k))
			b, err := os.ReadFile(path)
			if err != nil {
				restore()
				return nil, fmt.Errorf("neighbour table limits: %w", err)
			}
			old := strings.TrimSpace(string(b))
			cur, err := strconv.Atoi(old)
			if err != nil {
				restore()
				return nil, fmt.Errorf("neighbour table limits: %s: %q is not a number", path, old)
			}
			if cur >= want[k-1] {
				continue
			}
			if err := os.WriteFile(path, []byte(strconv.Itoa(want[k-1])), 0o644); err != nil {
				restore()
				return nil, fmt.Errorf("neighbour table limits: raise %s to %d: %w", path, want[k-1], err)
			}
			done = append(done, saved{path, old})
		}
	}
	return restore, nil
}
