package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os/exec"
	"strings"
)

// The kinds of the server's egress that countRules tells apart.
const (
	// KindSeederData is piece data from the seeder: IPv4 TCP packets
	// from seederPort longer than smallPacket.
	KindSeederData = "seeder_data"
	// KindSeederSmall is the seeder's other packets: ACKs, HAVE and
	// keep-alive messages, handshakes, bitfields.
	KindSeederSmall = "seeder_small"
	// KindHTTP is everything from the HTTP port: boot API answers, the
	// .torrent, the web seed and, in the HTTP phase, the baseline's
	// downloads.
	KindHTTP = "http"
	// KindOther is every other IPv4 packet: DHCP, the UDP tracker's
	// answers, ICMP.
	KindOther = "other"
)

// egressKinds lists the kinds in the order reports show them.
var egressKinds = []string{KindSeederData, KindSeederSmall, KindHTTP, KindOther}

// Ports the server listens on in every engine: boottorrent's defaults
// (config.Server's TorrentPort and HTTPPort), which the lab and harness
// helpers use too (runner.go).
const (
	seederPort = 6881
	httpPort   = 8080
)

// smallPacket is the IP total length up to which a packet counts as
// small: no piece data (a BitTorrent chunk is 16 KiB), only control
// messages. controlRules uses the same limit to pick packets that go
// before bulk data.
const smallPacket = 256

// countTable is the nftables table (family netdev, in the bridge's
// namespace) that holds the counters.
const countTable = "swarmbench_count"

// countRules is an nftables script that counts, by kind, the IPv4 packets
// the bridge receives on dev (the bridge-side end of the server's link:
// what the server sent) in named counters, one per kind, that
// LAN.ServerEgressKinds reads. Its chain comes before lossRules' on the
// same hook (priority -10 against 0): a packet lost on the wire was still
// sent, and the link's TxBytes counts it too. It only counts: every rule
// accepts, which ends this chain, not the packet's way through the others.
func countRules(dev string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "table netdev %s {\n", countTable)
	for _, k := range egressKinds {
		fmt.Fprintf(&b, "\tcounter %s {\n\t}\n", k)
	}
	fmt.Fprintf(&b, `	chain in {
		type filter hook ingress device %[1]q priority -10; policy accept;
		meta protocol ip tcp sport %[2]d ip length > %[4]d counter name %[5]q accept
		meta protocol ip tcp sport %[2]d counter name %[6]q accept
		meta protocol ip tcp sport %[3]d counter name %[7]q accept
		meta protocol ip counter name %[8]q
	}
}
`, dev, seederPort, httpPort, smallPacket, KindSeederData, KindSeederSmall, KindHTTP, KindOther)
	return b.String()
}

// KindCount is one kind's share of the server's egress.
type KindCount struct {
	Bytes   int64 `json:"bytes"`
	Packets int64 `json:"packets"`
}

// EgressKinds is the server's egress by kind (KindSeederData and so on),
// counted by countRules where the bridge receives the server's link, so it
// is what the link carried. (Counted in the server's own namespace, at
// postrouting, it also held what the server's shaped queue dropped and
// TCP sent again at once, a local drop being no loss on the wire: 1.4 and
// 2.1 times the link's bytes in two runs of the harness smoke test.)
//
// The counts are IP bytes and packets, without the Ethernet header. With
// segmentation offloads on (LinkShape.Offload) a GSO packet of up to 64
// KiB crosses the veth whole and counts once, with its full length and one
// set of headers, as the veth's own counters count it; with offloads off
// every packet is one Ethernet frame. Only IPv4 is counted: ARP and IPv6
// (router advertisements) are in the link's TxBytes alone. Reports show
// both counts side by side, as they are, rather than scale one to the
// other.
type EgressKinds map[string]KindCount

// Sub returns what k counted since before (every kind in k).
func (k EgressKinds) Sub(before EgressKinds) EgressKinds {
	out := make(EgressKinds, len(k))
	for name, c := range k {
		b := before[name]
		out[name] = KindCount{Bytes: c.Bytes - b.Bytes, Packets: c.Packets - b.Packets}
	}
	return out
}

// Bytes is the sum of every kind's bytes.
func (k EgressKinds) Bytes() int64 {
	var n int64
	for _, c := range k {
		n += c.Bytes
	}
	return n
}

// ServerEgressKinds reads the counters of countRules, which NewLAN loads
// for the server's link.
func (l *LAN) ServerEgressKinds() (EgressKinds, error) {
	out, err := l.lan.Bridge.Command(context.Background(), "nft", "-j", "list", "counters", "table", "netdev", countTable).Output()
	if err != nil {
		if ee := (*exec.ExitError)(nil); errors.As(err, &ee) {
			err = fmt.Errorf("%w: %s", err, bytes.TrimSpace(ee.Stderr))
		}
		return nil, fmt.Errorf("nft list counters in %s: %w", l.lan.Bridge.Name, err)
	}
	return parseNFTCounters(out)
}

// parseNFTCounters reads the output of `nft -j list counters table netdev
// swarmbench_count`: a metainfo object, then one object per named
// counter. Every kind must be there (a missing one means the table is
// not the one countRules loads); counters of other tables, or unknown
// names, are left out.
func parseNFTCounters(data []byte) (EgressKinds, error) {
	var doc struct {
		Nftables []struct {
			Counter *struct {
				Family  string `json:"family"`
				Table   string `json:"table"`
				Name    string `json:"name"`
				Packets int64  `json:"packets"`
				Bytes   int64  `json:"bytes"`
			} `json:"counter"`
		} `json:"nftables"`
	}
	if err := json.Unmarshal(data, &doc); err != nil {
		return nil, fmt.Errorf("nft -j list counters: %w", err)
	}
	out := make(EgressKinds, len(egressKinds))
	for _, o := range doc.Nftables {
		c := o.Counter
		if c == nil || c.Family != "netdev" || c.Table != countTable {
			continue
		}
		for _, k := range egressKinds {
			if c.Name == k {
				out[k] = KindCount{Bytes: c.Bytes, Packets: c.Packets}
			}
		}
	}
	var missing []string
	for _, k := range egressKinds {
		if _, ok := out[k]; !ok {
			missing = append(missing, k)
		}
	}
	if len(missing) > 0 {
		return nil, fmt.Errorf("nft -j list counters: table netdev %s lacks counters %s", countTable, strings.Join(missing, ", "))
	}
	return out, nil
}

// formatKinds is one line of a report: every kind's bytes, share of the
// kinds' sum and packets.
func formatKinds(k EgressKinds) string {
	total := float64(k.Bytes())
	parts := make([]string, 0, len(egressKinds))
	for _, name := range egressKinds {
		c := k[name]
		parts = append(parts, fmt.Sprintf("%s %s (%.0f %%, %d pkts)",
			strings.ReplaceAll(name, "_", " "), FormatBytes(float64(c.Bytes)), 100*ratio(float64(c.Bytes), total), c.Packets))
	}
	return strings.Join(parts, ", ")
}
