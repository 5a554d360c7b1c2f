// Package config reads, checks and writes Boottorrent.yaml, the settings of
// a boottorrent project, and loads the project (settings + oss/ folders).
//
// Loading has three steps, kept apart so each can be tested alone:
// decode (strict: unknown keys and wrong types are errors with their line),
// resolve (fill host-dependent defaults: interface, address, client kernel)
// and validate (every rule, every problem reported at once).
package config

import (
	"fmt"
	"net"
	"net/netip"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/boottorrent/boottorrent/oss/manifest"
)

// FileName is the project's settings file.
const FileName = "Boottorrent.yaml"

// CurrentVersion is the schema version this build writes and reads.
const CurrentVersion = 1

// OutDirName is the folder, inside the project, for everything boottorrent
// generates (torrents, hash cache, initramfs, leases), so nothing is ever
// written next to the user's images.
const OutDirName = "out"

// Config is Boottorrent.yaml. After Load every default is filled in.
type Config struct {
	Version int     `yaml:"version"`
	Server  Server  `yaml:"server"`
	DHCP    DHCP    `yaml:"dhcp"`
	TFTP    TFTP    `yaml:"tftp"`
	Boot    Boot    `yaml:"boot"`
	Client  Client  `yaml:"client"`
	IPXE    IPXE    `yaml:"ipxe"`
	Torrent Torrent `yaml:"torrent"`
	Trust   Trust   `yaml:"trust"`
	// Machines holds at most as many machines as the server's registry.
	Machines map[string]Machine `yaml:"machines" limit:"4096"`
}

// Server is where the appliance listens.
type Server struct {
	Interface   string `yaml:"interface"`
	Address     string `yaml:"address"`
	HTTPPort    int    `yaml:"http_port"`
	TorrentPort int    `yaml:"torrent_port"`
}

// DHCP modes.
const (
	DHCPProxy = "proxy"
	DHCPFull  = "full"
	DHCPOff   = "off"
)

// DHCP configures proxy or full DHCP.
type DHCP struct {
	Mode string `yaml:"mode"`
	// Range is "FIRST-LAST" for full mode.
	Range     string   `yaml:"range"`
	LeaseTime Duration `yaml:"lease_time"`
	// Netmask for full mode; default: the interface's prefix.
	Netmask string `yaml:"netmask"`
	// Router and DNS are handed out in full mode only when set.
	Router string   `yaml:"router"`
	DNS    []string `yaml:"dns" limit:"8"`

	// First and Last are Range parsed; set by validation.
	First netip.Addr `yaml:"-"`
	Last  netip.Addr `yaml:"-"`
}

// TFTP configures the first-stage TFTP server.
type TFTP struct {
	Enabled bool `yaml:"enabled"`
}

// Boot is what the boot client's menu does.
type Boot struct {
	DefaultOS string   `yaml:"default_os"`
	Timeout   Duration `yaml:"timeout"`
	Menu      []string `yaml:"menu" limit:"256"` // one screen of the boot menu
	SeedTime  Duration `yaml:"seed_time"`
}

// Client is the boot client's kernel and the drivers packed with it.
type Client struct {
	Kernel  string `yaml:"kernel"`
	Modules string `yaml:"modules"`
	// ExtraModules are driver modules packed in addition to the default
	// set of common wired NIC drivers (by module name, e.g. "tg3").
	ExtraModules []string `yaml:"extra_modules" limit:"256"`
	// Cmdline is appended to the client kernel's command line.
	Cmdline string `yaml:"cmdline"`
}

// IPXE says where iPXE's binaries are and which one each firmware gets.
type IPXE struct {
	Dir  string `yaml:"dir"`
	BIOS string `yaml:"bios"`
	UEFI string `yaml:"uefi"`
}

// Torrent holds BitTorrent settings beyond the embedded tracker.
type Torrent struct {
	// Trackers are announced in addition to the embedded tracker.
	Trackers []string `yaml:"trackers" limit:"16"`
}

// Machine pins one machine (by MAC) to a name and an OS.
type Machine struct {
	Name string `yaml:"name"`
	OS   string `yaml:"os"`
}

// Duration is a time.Duration written as a Go duration ("10s", "1m30s").
type Duration struct{ time.Duration }

// UnmarshalYAML reads a Go duration string. A bare number is refused with a
// hint, since "10" could mean seconds or nanoseconds.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode {
		return typeErr(n, "must be a duration such as 10s, 1m or 0s")
	}
	v, err := time.ParseDuration(strings.TrimSpace(n.Value))
	if err != nil {
		hint := ""
		if _, e := fmt.Sscanf(n.Value, "%d", new(int)); e == nil {
			hint = fmt.Sprintf(" (write %ss for seconds)", strings.TrimSpace(n.Value))
		}
		return typeErr(n, fmt.Sprintf("%q is not a duration; use a number with a unit such as 10s, 1m or 0s%s", n.Value, hint))
	}
	d.Duration = v
	return nil
}

// typeErr reports a bad value as a *yaml.TypeError, which yaml.v3 collects
// and continues past, so that every problem of a file is reported at once.
func typeErr(n *yaml.Node, msg string) error {
	return &yaml.TypeError{Errors: []string{fmt.Sprintf("line %d: %s", n.Line, msg)}}
}

// MarshalYAML writes the duration as a string.
func (d Duration) MarshalYAML() (any, error) { return d.String(), nil }

// Default returns the settings used where the file says nothing.
// Host-dependent settings (interface, address, client kernel) stay empty
// here and are filled by Resolve.
func Default() Config {
	return Config{
		Version: CurrentVersion,
		Server:  Server{HTTPPort: 8080, TorrentPort: 6881},
		DHCP:    DHCP{Mode: DHCPProxy, LeaseTime: Duration{time.Hour}},
		TFTP:    TFTP{Enabled: true},
		Boot:    Boot{Timeout: Duration{10 * time.Second}, SeedTime: Duration{30 * time.Second}},
		IPXE:    IPXE{Dir: "/usr/lib/ipxe", BIOS: "undionly.kpxe", UEFI: "ipxe.efi"},
		Trust:   Trust{Policy: manifest.PolicyIfPresent},
	}
}

// ServerAddr is the parsed server address (valid after Resolve).
func (c *Config) ServerAddr() netip.Addr {
	a, _ := netip.ParseAddr(c.Server.Address)
	return a
}

// HTTPBase is the URL prefix clients use to reach the HTTP listener.
func (c *Config) HTTPBase() string {
	return fmt.Sprintf("http://%s", net.JoinHostPort(c.Server.Address, fmt.Sprint(c.Server.HTTPPort)))
}

// MachineFor returns the machines: entry for a MAC, if any.
func (c *Config) MachineFor(mac net.HardwareAddr) (Machine, bool) {
	m, ok := c.Machines[strings.ToLower(mac.String())]
	return m, ok
}
