package config

import (
	"fmt"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/boottorrent/boottorrent/config/strictyaml"
)

// legacyFile is the original BootTorrent's Boottorrent.yaml (seed 003):
// a Python program driving dnsmasq, opentracker and aria2/transmission.
type legacyFile struct {
	BootTorrent struct {
		Version    int      `yaml:"version"`
		DisplayOSs []string `yaml:"display_oss"`
		Timeout    *int     `yaml:"timeout"`
		DefaultOS  string   `yaml:"default_os"`
		SeedTime   *int     `yaml:"seed_time"`
		HostIP     string   `yaml:"host_ip"`
	} `yaml:"boottorrent"`
	Dnsmasq struct {
		EnableDHCP     *bool  `yaml:"enable_dhcp"`
		User           string `yaml:"user"`
		Interface      string `yaml:"interface"`
		BindInterfaces *bool  `yaml:"bind_interfaces"`
		DHCPRange      string `yaml:"dhcp_range"`
		EnableTFTP     *bool  `yaml:"enable_tftp"`
	} `yaml:"dnsmasq"`
	Opentracker struct {
		Enable *bool `yaml:"enable"`
		Port   *int  `yaml:"port"`
	} `yaml:"opentracker"`
	Transmission struct {
		RPCPort    *int  `yaml:"rpc_port"`
		DHTEnabled *bool `yaml:"dht_enabled"`
		LPDEnabled *bool `yaml:"lpd_enabled"`
	} `yaml:"transmission"`
	Aria2 struct {
		BTEnableLPD        *bool  `yaml:"bt_enable_lpd"`
		EnableDHT          *bool  `yaml:"enable_dht"`
		CheckIntegrity     *bool  `yaml:"check_integrity"`
		EnablePeerExchange *bool  `yaml:"enable_peer_exchange"`
		ConsoleLogLevel    string `yaml:"console_log_level"`
	} `yaml:"aria2"`
}

func isLegacy(n *yaml.Node) bool {
	if n.Kind != yaml.MappingNode {
		return false
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		switch n.Content[i].Value {
		case "boottorrent", "dnsmasq", "opentracker", "aria2", "transmission":
			return true
		}
	}
	return false
}

// decodeLegacy maps the original BootTorrent's settings onto ours. What has
// a meaning here is carried over; what does not is named in the warning
// with the reason, next to the equivalent new file.
func decodeLegacy(file string, node *yaml.Node) (*Decoded, error) {
	var lf legacyFile
	lines, ps := strictyaml.Decode(file, node, &lf)
	if len(ps) > 0 {
		return nil, ps.Err()
	}
	d := &Decoded{Config: Default(), File: file, Lines: lines, Legacy: true}
	c := &d.Config
	prob := func(field, msg string) {
		ps = append(ps, Problem{File: file, Line: lines.Line(field), Field: field, Msg: msg})
	}
	var ignored []string
	ignore := func(key, why string) {
		if _, ok := lines[key]; ok {
			ignored = append(ignored, fmt.Sprintf("  %s: %s", key, why))
		}
	}
	bt := lf.BootTorrent
	if bt.Version != 0 {
		prob("boottorrent.version", fmt.Sprintf("%d is not a version of the original BootTorrent format (0); for the new format write version: %d at the top level", bt.Version, CurrentVersion))
	}
	if bt.Timeout != nil {
		c.Boot.Timeout = legacySeconds(*bt.Timeout)
	}
	if bt.SeedTime != nil {
		if *bt.SeedTime < 0 {
			prob("boottorrent.seed_time", "must not be negative")
		} else {
			c.Boot.SeedTime = Duration{time.Duration(*bt.SeedTime) * time.Second}
		}
	}
	c.Boot.DefaultOS = bt.DefaultOS
	c.Boot.Menu = bt.DisplayOSs
	c.Server.Address = bt.HostIP
	c.Server.Interface = lf.Dnsmasq.Interface
	dm := lf.Dnsmasq
	if dm.EnableDHCP != nil && *dm.EnableDHCP {
		c.DHCP.Mode = DHCPFull
		parts := strings.Split(dm.DHCPRange, ",")
		switch {
		case dm.DHCPRange == "":
			prob("dnsmasq.dhcp_range", "required when enable_dhcp is true: \"FIRST,LAST,LEASETIME\", e.g. \"192.168.1.50,192.168.1.150,12h\"")
		case len(parts) < 2:
			prob("dnsmasq.dhcp_range", fmt.Sprintf("%q is not FIRST,LAST[,LEASETIME]", dm.DHCPRange))
		default:
			c.DHCP.Range = strings.TrimSpace(parts[0]) + "-" + strings.TrimSpace(parts[1])
			if len(parts) >= 3 {
				lt, err := parseDnsmasqTime(strings.TrimSpace(parts[2]))
				if err != nil {
					prob("dnsmasq.dhcp_range", err.Error())
				} else {
					c.DHCP.LeaseTime = Duration{lt}
				}
			}
		}
	} else {
		c.DHCP.Mode = DHCPProxy
		ignore("dnsmasq.dhcp_range", "DHCP is disabled, so we answer PXE clients only, as proxyDHCP next to the site's DHCP server")
	}
	if dm.EnableTFTP != nil {
		c.TFTP.Enabled = *dm.EnableTFTP
	}
	ignore("dnsmasq.user", "boottorrent is one program; it needs root or CAP_NET_BIND_SERVICE+CAP_NET_RAW, not a dnsmasq user")
	ignore("dnsmasq.bind_interfaces", "boottorrent always binds to server.interface only")
	ignore("opentracker.enable", "the tracker is built in (HTTP /announce on server.http_port, UDP on server.torrent_port)")
	ignore("opentracker.port", "the tracker is built in (HTTP /announce on server.http_port, UDP on server.torrent_port)")
	ignore("transmission.rpc_port", "transmission is not used; the seeder is built in")
	ignore("transmission.dht_enabled", "DHT is always off: torrents are private to the lab")
	ignore("transmission.lpd_enabled", "local peer discovery is replaced by the boot API, which hands each client its peers")
	ignore("aria2.bt_enable_lpd", "local peer discovery is replaced by the boot API, which hands each client its peers")
	ignore("aria2.enable_dht", "DHT is always off: torrents are private to the lab")
	ignore("aria2.check_integrity", "every piece is always verified")
	ignore("aria2.enable_peer_exchange", "peer exchange is always on among booting machines")
	ignore("aria2.console_log_level", "aria2 is not used; the client reports progress to the server's log")
	if err := ps.Err(); err != nil {
		return nil, err
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%s is in the original BootTorrent's format (version 0); it was read as the settings below. Write them to %s to use the new format:\n\n", file, FileName)
	b.WriteString(indent(legacyEquivalent(c), "    "))
	if len(ignored) > 0 {
		b.WriteString("\nThese keys have no meaning in boottorrent and were ignored:\n")
		b.WriteString(strings.Join(ignored, "\n"))
		b.WriteString("\n")
	}
	d.Warning = b.String()
	return d, nil
}

// legacySeconds maps the original's integer timeout: negative waits forever.
func legacySeconds(s int) Duration {
	if s < 0 {
		return Duration{-1 * time.Second}
	}
	return Duration{time.Duration(s) * time.Second}
}

// parseDnsmasqTime reads dnsmasq's lease time: 45m, 12h, 1d, infinite, or
// seconds.
func parseDnsmasqTime(s string) (time.Duration, error) {
	if s == "infinite" {
		return 365 * 24 * time.Hour, nil
	}
	if s == "" {
		return time.Hour, nil
	}
	mult := time.Second
	switch s[len(s)-1] {
	case 'm':
		mult, s = time.Minute, s[:len(s)-1]
	case 'h':
		mult, s = time.Hour, s[:len(s)-1]
	case 'd':
		mult, s = 24*time.Hour, s[:len(s)-1]
	case 'w':
		mult, s = 7*24*time.Hour, s[:len(s)-1]
	}
	var n int
	if _, err := fmt.Sscanf(s, "%d", &n); err != nil || n <= 0 || fmt.Sprint(n) != s {
		return 0, fmt.Errorf("lease time %q is not dnsmasq's form (e.g. 45m, 12h, 1d)", s)
	}
	return time.Duration(n) * mult, nil
}

// legacyEquivalent renders the settings a legacy file mapped to, as a new
// Boottorrent.yaml (only the keys that were set).
func legacyEquivalent(c *Config) string {
	var b strings.Builder
	fmt.Fprintf(&b, "version: %d\n", CurrentVersion)
	if c.Server.Interface != "" || c.Server.Address != "" {
		b.WriteString("server:\n")
		if c.Server.Interface != "" {
			fmt.Fprintf(&b, "  interface: %s\n", c.Server.Interface)
		}
		if c.Server.Address != "" {
			fmt.Fprintf(&b, "  address: %s\n", c.Server.Address)
		}
	}
	fmt.Fprintf(&b, "dhcp:\n  mode: %s\n", c.DHCP.Mode)
	if c.DHCP.Mode == DHCPFull {
		fmt.Fprintf(&b, "  range: %s\n  lease_time: %s\n", c.DHCP.Range, c.DHCP.LeaseTime)
	}
	fmt.Fprintf(&b, "tftp:\n  enabled: %t\n", c.TFTP.Enabled)
	b.WriteString("boot:\n")
	if c.Boot.DefaultOS != "" {
		fmt.Fprintf(&b, "  default_os: %s\n", c.Boot.DefaultOS)
	}
	fmt.Fprintf(&b, "  timeout: %s\n", c.Boot.Timeout)
	if len(c.Boot.Menu) > 0 {
		fmt.Fprintf(&b, "  menu: [%s]\n", strings.Join(c.Boot.Menu, ", "))
	}
	fmt.Fprintf(&b, "  seed_time: %s\n", c.Boot.SeedTime)
	return b.String()
}

func indent(s, pre string) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	for i := range lines {
		lines[i] = pre + lines[i]
	}
	return strings.Join(lines, "\n") + "\n"
}
