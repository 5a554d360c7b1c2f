package bench

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net/netip"
	"os/exec"
	"strconv"
	"strings"
	"time"

	"github.com/boottorrent/boottorrent/netboot/netns"
)

// Addresses of the emulated LAN. The server has a fixed address; clients
// get theirs from the server's DHCP, or fixed ones from ClientAddr when the
// run uses no DHCP (the harness's own HTTP baseline).
var (
	ServerPrefix = netip.MustParsePrefix("10.213.0.1/16")
	// LeaseRange is the full-DHCP range handed to boottorrent.
	LeaseRange = "10.213.1.1-10.213.1.254"
)

// ClientAddr is client i's fixed address (i from 0), outside LeaseRange.
func ClientAddr(i int) netip.Prefix {
	return netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 213, 2 + byte(i/250), 1 + byte(i%250)}), 16)
}

// Shape is what one direction of a link does to packets.
type Shape struct {
	Rate  float64       // bits/s
	Delay time.Duration // one way, this direction only (needs sch_netem)
	Loss  float64       // fraction of packets dropped
}

// queueTime is how much data, in time at the link's rate, a shaped port
// buffers before it drops: about what a small office switch holds. A
// deeper queue would hide the cost of a saturated uplink (lost tracker
// replies, late control messages) that the benchmark is meant to show.
const queueTime = 100 * time.Millisecond

// shapeCmds are the tc command lines that shape dev's egress: an HTB class
// at the rate (HTB and TBF are what every kernel built with NET_SCHED has;
// this machine's kernel has no netem), holding a byte FIFO of queueTime,
// or netem when a delay is asked for. With control, the class has two
// FIFOs: one served first for control packets (controlRules picks them),
// one for the rest.
func shapeCmds(dev string, s Shape, control bool) [][]string {
	limit := int(math.Max(16<<10, s.Rate*queueTime.Seconds()/8))
	rate := fmt.Sprintf("%.0fbit", s.Rate)
	leaf := []string{"bfifo", "limit", strconv.Itoa(limit)}
	if s.Delay > 0 {
		// netem's limit counts packets, including those held for the delay.
		pkts := int(math.Ceil(s.Rate * (queueTime + s.Delay).Seconds() / 8 / 1514))
		leaf = []string{"netem", "limit", strconv.Itoa(max(64, pkts)), "delay", fmt.Sprintf("%dus", s.Delay.Microseconds())}
	}
	if !control {
		return [][]string{
			{"qdisc", "replace", "dev", dev, "root", "handle", "1:", "htb", "default", "1"},
			{"class", "add", "dev", dev, "parent", "1:", "classid", "1:1", "htb", "rate", rate, "ceil", rate, "quantum", "1514"},
			append([]string{"qdisc", "add", "dev", dev, "parent", "1:1", "handle", "10:"}, leaf...),
		}
	}
	// HTB serves classes under their rate first, by prio; only then
	// lends what is left. The control class gets nearly the whole rate,
	// so that it is always served first; bulk gets the rest of the rate
	// and borrows the rest. (A control class guaranteed 1/20 of the rate
	// queued and dropped the server's API answers behind bulk at N = 100.)
	ctl := s.Rate * 0.95
	return [][]string{
		{"qdisc", "replace", "dev", dev, "root", "handle", "1:", "htb", "default", "20"},
		{"class", "add", "dev", dev, "parent", "1:", "classid", "1:1", "htb", "rate", rate, "ceil", rate, "quantum", "1514"},
		{"class", "add", "dev", dev, "parent", "1:1", "classid", "1:10", "htb", "rate", fmt.Sprintf("%.0fbit", ctl), "ceil", rate, "prio", "0", "quantum", "1514"},
		{"class", "add", "dev", dev, "parent", "1:1", "classid", "1:20", "htb", "rate", fmt.Sprintf("%.0fbit", s.Rate-ctl), "ceil", rate, "prio", "1", "quantum", "1514"},
		append([]string{"qdisc", "add", "dev", dev, "parent", "1:10", "handle", "10:"}, leaf...),
		append([]string{"qdisc", "add", "dev", dev, "parent", "1:20", "handle", "20:"}, leaf...),
	}
}

// controlRules is an nftables script that sends the packets leaving dev
// that a host's default queue (fq_codel: a sparse flow is served before
// the bulk flows) or a DSCP-aware port would not hold behind bulk data to
// shapeCmds' control class 1:10: those marked DSCP CS6 (the DHCP server's
// replies), ARP, and small IP packets (TCP handshakes and ACKs, BitTorrent
// requests, short API answers). HTB takes a packet whose priority names
// one of its classes straight to that class. With a plain FIFO instead,
// at N = 100 ARP replies and SYN-ACKs from the saturated server were
// dropped and machines with a lease never reached its HTTP port.
func controlRules(dev string) string {
	return fmt.Sprintf(`table ip swarmbench_control {
	chain post {
		type filter hook postrouting priority 0; policy accept;
		oifname %[1]q ip dscp cs6 meta priority set 1:10
		oifname %[1]q ip length <= %[2]d meta priority set 1:10
	}
}
table arp swarmbench_control {
	chain out {
		type filter hook output priority 0; policy accept;
		meta priority set 1:10
	}
}
`, dev, smallPacket)
}

// lossRules is an nftables script that drops a random fraction of the
// packets arriving on dev. Loss is applied where packets are received, so
// the sender's TCP sees a packet lost on the wire (a drop in the sender's
// own egress path is reported to TCP as a local error and retried at once,
// which is not what a lossy cable does).
func lossRules(dev string, loss float64) string {
	return fmt.Sprintf(`table netdev swarmbench_%[1]s {
	chain loss {
		type filter hook ingress device %[1]q priority 0;
		numgen random mod 1000000 < %[2]d drop
	}
}
`, dev, int(math.Round(loss*1e6)))
}

// CheckDelay reports whether this kernel can delay packets (sch_netem).
func CheckDelay() error {
	ns, err := netns.New()
	if err != nil {
		return err
	}
	defer ns.Close()
	if _, err := ns.Run("ip", "link", "add", "d0", "type", "veth", "peer", "name", "d1"); err != nil {
		return err
	}
	if _, err := ns.Run("tc", "qdisc", "add", "dev", "d0", "root", "netem", "delay", "1ms"); err != nil {
		return fmt.Errorf("this kernel cannot delay packets (no sch_netem, CONFIG_NET_SCH_NETEM): use --latency 0")
	}
	return nil
}

// Host is one end of the emulated LAN.
type Host struct {
	NS *netns.NS
	// BridgeVeth is the bridge-side end of the host's link: its egress is
	// the host's download, its rx counters are what the host sent.
	BridgeVeth string
	Addr       netip.Prefix // zero when DHCP configures it
}

// LAN is the shaped benchmark network: one server and N clients.
type LAN struct {
	lan     *netns.LAN
	restore []func() // host-wide settings to put back, in order
	Server  Host
	Clients []Host
}

// LinkShape describes every link of the LAN: up is the host's upload
// (shaped on its own eth0), down its download (shaped on the bridge side).
type LinkShape struct {
	ServerUp, ServerDown Shape
	ClientUp, ClientDown Shape
	// Congestion is every host's TCP congestion control ("" keeps
	// this machine's default; see congestion.go).
	Congestion string
	// Offload keeps the veths' segmentation offloads on (as on a real
	// NIC): fewer, larger packets through the emulation, so less of
	// this machine's CPU goes to it. NewLAN refuses it with loss.
	Offload bool
}

// NewLAN builds the server and n clients, shapes every link in both
// directions, and, unless shape.Offload, turns off segmentation offloads
// so that loss and rate act on real Ethernet-sized packets (with GSO a
// "packet" can be a 64 KiB burst, and 1 % loss would drop 1 % of bursts).
// HTB charges a GSO packet for all its segments' bytes, so the rate holds
// either way; offloads only save this machine's CPU. staticClients gives
// clients fixed addresses instead of leaving them to DHCP. Close removes
// everything, also after a failure half way.
func NewLAN(ctx context.Context, n int, shape LinkShape, staticClients bool) (_ *LAN, err error) {
	if _, err := exec.LookPath("tc"); err != nil {
		return nil, fmt.Errorf("tc is missing: apt-get install iproute2")
	}
	if _, err := exec.LookPath("ethtool"); err != nil {
		return nil, fmt.Errorf("ethtool is missing: apt-get install ethtool")
	}
	if _, err := exec.LookPath("nft"); err != nil {
		return nil, fmt.Errorf("nft is missing: apt-get install nftables")
	}
	if shape.Offload && (shape.ServerUp.Loss > 0 || shape.ServerDown.Loss > 0 || shape.ClientUp.Loss > 0 || shape.ClientDown.Loss > 0) {
		return nil, errors.New("offloads with loss: a lost GSO packet is up to 64 KiB of segments; run lossy links without offloads")
	}
	restore, err := raiseNeighLimits(neighDir, n+1)
	if err != nil {
		return nil, err
	}
	restores := []func(){restore}
	if shape.Congestion != "" {
		allowed, err := allowCongestion(congestionDir, shape.Congestion)
		if err != nil {
			restore()
			return nil, err
		}
		restores = append(restores, allowed)
	}
	l, err := netns.NewLAN()
	if err != nil {
		for _, f := range restores {
			f()
		}
		return nil, err
	}
	out := &LAN{lan: l, restore: restores}
	defer func() {
		if err != nil {
			out.Close()
		}
	}()
	add := func(addr netip.Prefix, up, down Shape) (Host, error) {
		if err := ctx.Err(); err != nil {
			return Host{}, err
		}
		ns, veth, err := l.AddHost("eth0", addr)
		if err != nil {
			return Host{}, err
		}
		h := Host{NS: ns, BridgeVeth: veth, Addr: addr}
		// A command to run in a namespace.
		type step struct {
			ns   *netns.NS
			prog string
			args []string
		}
		var steps []step
		if !shape.Offload {
			steps = append(steps,
				step{ns, "ethtool", []string{"-K", "eth0", "tso", "off", "gso", "off", "gro", "off"}},
				step{l.Bridge, "ethtool", []string{"-K", veth, "tso", "off", "gso", "off", "gro", "off"}})
		}
		if shape.Congestion != "" {
			// /proc/sys/net shows the namespace of the process that
			// opens it. The name goes in as an argument, never into the
			// script.
			steps = append(steps, step{ns, "sh", []string{"-c", `echo "$1" > /proc/sys/net/ipv4/tcp_congestion_control`, "sh", shape.Congestion}})
		}
		// The server's upload is the link saturated by bulk data while
		// machines still ask for leases.
		control := addr == ServerPrefix
		for _, a := range shapeCmds("eth0", up, control) {
			steps = append(steps, step{ns, "tc", a})
		}
		for _, a := range shapeCmds(veth, down, false) {
			steps = append(steps, step{l.Bridge, "tc", a})
		}
		for _, step := range steps {
			if _, err := step.ns.Run(step.prog, step.args...); err != nil {
				return Host{}, err
			}
		}
		if control {
			if err := nft(ns, controlRules("eth0")); err != nil {
				return Host{}, err
			}
			// What the server's link carried, by kind: counted where
			// the bridge receives it (see EgressKinds).
			if err := nft(l.Bridge, countRules(veth)); err != nil {
				return Host{}, err
			}
		}
		// Upload loss where the bridge receives, download loss where the
		// host receives.
		if up.Loss > 0 {
			if err := nft(l.Bridge, lossRules(veth, up.Loss)); err != nil {
				return Host{}, err
			}
		}
		if down.Loss > 0 {
			if err := nft(ns, lossRules("eth0", down.Loss)); err != nil {
				return Host{}, err
			}
		}
		return h, nil
	}
	if out.Server, err = add(ServerPrefix, shape.ServerUp, shape.ServerDown); err != nil {
		return nil, err
	}
	for i := range n {
		var addr netip.Prefix
		if staticClients {
			addr = ClientAddr(i)
		}
		h, err := add(addr, shape.ClientUp, shape.ClientDown)
		if err != nil {
			return nil, err
		}
		out.Clients = append(out.Clients, h)
	}
	return out, nil
}

// Close deletes every namespace (and kills what still runs inside).
func (l *LAN) Close() error {
	if l == nil || l.lan == nil {
		return nil
	}
	err := l.lan.Close()
	for _, f := range l.restore {
		f()
	}
	return err
}

// LinkCounters are a host's interface byte counters.
type LinkCounters struct {
	TxBytes, RxBytes int64
	at               time.Time // when they were read
}

// Counters reads the byte counters of the host's eth0. tx is everything
// the host sent, headers included.
func (h Host) Counters() (LinkCounters, error) {
	out, err := exec.Command("ip", "-n", h.NS.Name, "-j", "-s", "link", "show", "dev", "eth0").Output()
	if err != nil {
		return LinkCounters{}, fmt.Errorf("ip -s link in %s: %w", h.NS.Name, err)
	}
	c, err := parseIPLinkStats(out)
	c.at = time.Now()
	return c, err
}

func parseIPLinkStats(data []byte) (LinkCounters, error) {
	links, err := parseIPLinks(data)
	if err != nil {
		return LinkCounters{}, err
	}
	if len(links) != 1 {
		return LinkCounters{}, fmt.Errorf("ip -j -s link: %d links, want 1", len(links))
	}
	var c LinkCounters
	for _, c = range links {
	}
	return c, nil
}

// parseIPLinks reads the output of `ip -j -s link show`: each link's byte
// counters by name.
func parseIPLinks(data []byte) (map[string]LinkCounters, error) {
	var links []struct {
		Name    string `json:"ifname"`
		Stats64 struct {
			Rx struct {
				Bytes int64 `json:"bytes"`
			} `json:"rx"`
			Tx struct {
				Bytes int64 `json:"bytes"`
			} `json:"tx"`
		} `json:"stats64"`
	}
	if err := json.Unmarshal(data, &links); err != nil {
		return nil, fmt.Errorf("ip -j -s link: %w", err)
	}
	out := make(map[string]LinkCounters, len(links))
	for _, l := range links {
		out[l.Name] = LinkCounters{TxBytes: l.Stats64.Tx.Bytes, RxBytes: l.Stats64.Rx.Bytes}
	}
	return out, nil
}

// Sent is what the server and all clients have sent so far, headers
// included: what the bridge received from their links.
func (l *LAN) Sent() (server, clients int64, err error) {
	out, err := exec.Command("ip", "-n", l.lan.Bridge.Name, "-j", "-s", "link", "show").Output()
	if err != nil {
		return 0, 0, fmt.Errorf("ip -s link in %s: %w", l.lan.Bridge.Name, err)
	}
	links, err := parseIPLinks(out)
	if err != nil {
		return 0, 0, err
	}
	for _, h := range l.Clients {
		clients += links[h.BridgeVeth].RxBytes
	}
	return links[l.Server.BridgeVeth].RxBytes, clients, nil
}

// nft loads an nftables script inside ns.
func nft(ns *netns.NS, script string) error {
	cmd := ns.Command(context.Background(), "nft", "-f", "-")
	cmd.Stdin = strings.NewReader(script)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("nft in %s: %v: %s", ns.Name, err, strings.TrimSpace(string(out)))
	}
	return nil
}
