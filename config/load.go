package config

import (
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"

	"github.com/boottorrent/boottorrent/config/strictyaml"
	"github.com/boottorrent/boottorrent/oss"
)

// Problem and Problems are re-exported for callers that only import config.
type (
	Problem  = strictyaml.Problem
	Problems = strictyaml.Problems
)

// ErrNoProject is returned when a folder has no Boottorrent.yaml.
var ErrNoProject = errors.New("no " + FileName + " here")

// Decoded is a settings file after decoding, before host defaults.
type Decoded struct {
	Config Config
	File   string
	Lines  strictyaml.Lines
	// Legacy is set when the file was written for the original BootTorrent;
	// Warning then explains the mapping and shows the equivalent new file.
	Legacy  bool
	Warning string
}

// Decode decodes a Boottorrent.yaml's content strictly. file is used in
// messages only.
func Decode(file string, data []byte) (*Decoded, error) {
	node, ps := strictyaml.Parse(file, data)
	if len(ps) > 0 {
		return nil, ps
	}
	d := &Decoded{Config: Default(), File: file}
	if node != nil && isLegacy(node) {
		return decodeLegacy(file, node)
	}
	lines, ps := strictyaml.Decode(file, node, &d.Config)
	d.Lines = lines
	if len(ps) > 0 {
		return nil, ps.Err()
	}
	if d.Config.Version != CurrentVersion {
		return nil, Problems{{File: file, Line: lines.Line("version"), Field: "version",
			Msg: fmt.Sprintf("%d is not a schema version this boottorrent reads; use version: %d", d.Config.Version, CurrentVersion)}}
	}
	return d, nil
}

// Host is what Resolve needs to know about the machine; tests fake it.
type Host struct {
	// Interfaces lists the network interfaces with their flags and
	// addresses, as net.Interfaces would.
	Interfaces func() ([]HostInterface, error)
	// KernelRelease is `uname -r`.
	KernelRelease func() string
	// Root prefixes /boot and /lib/modules (empty for the real root).
	Root string
}

// HostInterface is one network interface as Resolve sees it.
type HostInterface struct {
	Name     string
	Up       bool
	Loopback bool
	Addrs    []netip.Prefix
}

// RealHost describes this machine.
func RealHost() Host {
	return Host{
		Interfaces: func() ([]HostInterface, error) {
			ifs, err := net.Interfaces()
			if err != nil {
				return nil, err
			}
			var out []HostInterface
			for _, i := range ifs {
				hi := HostInterface{Name: i.Name, Up: i.Flags&net.FlagUp != 0, Loopback: i.Flags&net.FlagLoopback != 0}
				addrs, _ := i.Addrs()
				for _, a := range addrs {
					if n, ok := a.(*net.IPNet); ok {
						if ip, ok := netip.AddrFromSlice(n.IP); ok {
							ones, _ := n.Mask.Size()
							hi.Addrs = append(hi.Addrs, netip.PrefixFrom(ip.Unmap(), ones))
						}
					}
				}
				out = append(out, hi)
			}
			return out, nil
		},
		KernelRelease: kernelRelease,
	}
}

func kernelRelease() string {
	b, err := os.ReadFile("/proc/sys/kernel/osrelease")
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}

// Project is a loaded, validated project folder. It bundles the settings
// with the OS folders (package oss) because validation crosses them:
// boot.default_os, boot.menu and machines: name OSes, and every problem of
// both is reported at once. The server's parts get typed options mapped
// from it in cmd/internal/cli, not the Project (the seeder excepted).
type Project struct {
	Dir      string // absolute
	File     string // path of Boottorrent.yaml
	Config   *Config
	OSes     []*oss.OS
	Warnings []string
	// Prefix is the interface's network (address/bits), set by Resolve.
	Prefix netip.Prefix
}

// OutDir is where generated files go.
func (p *Project) OutDir() string { return filepath.Join(p.Dir, OutDirName) }

// OS returns the OS with the given folder name.
func (p *Project) OS(name string) *oss.OS {
	for _, o := range p.OSes {
		if o.Name == name {
			return o
		}
	}
	return nil
}

// MenuOSes returns the OSes the menu shows, in menu order.
func (p *Project) MenuOSes() []*oss.OS {
	var out []*oss.OS
	for _, n := range p.Config.Boot.Menu {
		if o := p.OS(n); o != nil {
			out = append(out, o)
		}
	}
	return out
}

// LoadProject reads dir/Boottorrent.yaml and dir/oss, fills defaults from
// host, and validates everything. On failure it returns what it could load
// (for the plan) together with every problem as strictyaml.Problems.
func LoadProject(dir string, host Host) (*Project, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, err
	}
	file := filepath.Join(abs, FileName)
	data, err := strictyaml.ReadFile(file)
	var readPs Problems
	if err != nil {
		switch {
		case errors.Is(err, fs.ErrNotExist):
			return nil, fmt.Errorf("%w: %s does not exist; run 'boottorrent init DIR' to create a project, or pass --dir", ErrNoProject, file)
		case !errors.As(err, &readPs):
			return nil, fmt.Errorf("read %s: %w", file, err)
		}
	}
	var d *Decoded
	var decodeErr error
	if readPs != nil {
		decodeErr = readPs
	} else {
		d, decodeErr = Decode(file, data)
	}
	// The OS folders are read even when the settings file has problems:
	// check promises every problem of every file in one run.
	var ps Problems
	oses, err := oss.LoadAll(filepath.Join(abs, "oss"))
	if err != nil {
		var ops Problems
		if !errors.As(err, &ops) {
			return nil, errors.Join(decodeErr, err)
		}
		ps = append(ps, ops...)
	}
	if decodeErr != nil {
		var dps Problems
		if !errors.As(decodeErr, &dps) {
			return nil, decodeErr
		}
		return nil, append(dps, ps...)
	}
	p := &Project{Dir: abs, File: file, Config: &d.Config, OSes: oses}
	if d.Warning != "" {
		p.Warnings = append(p.Warnings, d.Warning)
	}
	ps = append(ps, p.resolve(d, host)...)
	ps = append(ps, validate(d, p)...)
	if err := ps.Err(); err != nil {
		return p, err
	}
	return p, nil
}
