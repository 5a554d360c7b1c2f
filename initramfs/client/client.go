// Package client is the boot client: the program that runs as /init in the
// client initramfs (and, for tests and the swarm benchmark, as the hidden
// `boottorrent client` subcommand).
//
// As /init it mounts /proc, /sys, /dev and a tmpfs, loads the NIC drivers
// matching the machine's PCI devices, takes a DHCP lease, fetches the menu
// from the server's boot API, shows it on the VGA and serial consoles,
// downloads the chosen OS into RAM over BitTorrent (the server's seeder,
// the other booting machines, the web seed as fallback), seeds it for
// boot.seed_time and boots it with kexec (or runs its binary, or QEMU).
//
// Where each role lives:
//   - PID 1 (mounts, modules, consoles, rescue shell): init.go, console.go,
//     shell.go; the boot itself (kexec, binary, QEMU): boot.go.
//   - The stages and their retries, behind an env interface: machine.go;
//     the server's boot API: api.go, dhcp.go, menu.go.
//   - The downloaders, behind one interface (downloader, download.go):
//     BitTorrent (torrent.go, peers.go, webseed.go, requests.go, its RAM
//     storage ramstore.go) and the resuming HTTP baseline (httpdl.go).
//   - The share of the seeder's pieces: the pure decisions in share.go,
//     and the one goroutine that owns the share's state and the seeder's
//     mask, fed by the peer refresh's events, in shareloop.go.
//
// The client is loaded by every booting machine: it imports no server
// package (cmd/internal/cli/deps_test.go).
package client

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"runtime/pprof"
	"strings"
	"syscall"
	"time"

	"github.com/anacrolix/torrent/metainfo"

	"github.com/boottorrent/boottorrent/initramfs/bootapi"
)

// Config is the client's settings: flags, or the kernel command line in
// init mode.
type Config struct {
	Server      string // http://IP:PORT of the server
	MAC         string // this machine's MAC, as the server knows it
	Iface       string // interface to take a DHCP lease on ("" = none)
	NoDHCP      bool
	OS          string // skip the menu
	NoKexec     bool   // stop before booting
	DataDir     string // where the OS is downloaded
	HTTP        bool   // baseline: plain HTTP from the web seed
	ListenPort  int    // BitTorrent port (0: any)
	ListenHost  string // BitTorrent listen address ("": all)
	MaxAttempts int    // give up after this many failed attempts (0: never)
	Init        bool   // running as PID 1
	Verbose     bool
	CPUProfile  string // file for a CPU profile of the run (outside /init)
	Trust       string // trust settings file (trust.go; as /init the baked-in one)
	// TrackerAfter is how long the boot API's peer list may fail before
	// the torrent's trackers are asked (0: 15 s).
	TrackerAfter time.Duration
}

// Main runs the client and returns the process exit code. args are the
// flags after `boottorrent client`; when the binary runs as PID 1 the
// caller passes nil and Main switches to init mode.
func Main(args []string) int {
	if os.Getpid() == 1 {
		return initMain()
	}
	cfg, err := parseFlags(args, os.Stderr)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	level := slog.LevelInfo
	if cfg.Verbose {
		level = slog.LevelDebug
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	if cfg.CPUProfile != "" {
		f, err := os.Create(cfg.CPUProfile)
		if err == nil {
			err = pprof.StartCPUProfile(f)
		}
		if err != nil {
			fmt.Fprintf(os.Stderr, "boottorrent client: --cpuprofile: %v\n", err)
			return 2
		}
		defer func() {
			pprof.StopCPUProfile()
			f.Close()
		}()
	}
	if err := Run(ctx, cfg, log, os.Stderr, os.Stdout); err != nil {
		fmt.Fprintf(os.Stderr, "boottorrent client: %v\n", err)
		return 1
	}
	return 0
}

func parseFlags(args []string, out io.Writer) (*Config, error) {
	cfg := &Config{}
	fs := flag.NewFlagSet("boottorrent client", flag.ContinueOnError)
	fs.SetOutput(out)
	fs.StringVar(&cfg.Server, "server", "", "server URL http://IP:PORT (default: "+bootapi.ArgServer+" from /proc/cmdline)")
	fs.StringVar(&cfg.MAC, "mac", "", "this machine's MAC (default: "+bootapi.ArgMAC+" from /proc/cmdline, else --iface's)")
	fs.StringVar(&cfg.Iface, "iface", "", "interface to take a DHCP lease on (e.g. eth0)")
	fs.BoolVar(&cfg.NoDHCP, "no-dhcp", false, "the interface is configured already: take no lease")
	fs.StringVar(&cfg.OS, "os", "", "boot this OS without the menu")
	fs.BoolVar(&cfg.NoKexec, "no-kexec", false, "stop before booting: report booting, exit 0 after the seed time")
	fs.StringVar(&cfg.DataDir, "data-dir", "", "download folder (default: a new temporary folder)")
	fs.BoolVar(&cfg.HTTP, "http", false, "baseline: download over plain HTTP from the web seed instead of BitTorrent")
	fs.IntVar(&cfg.ListenPort, "listen-port", 0, "BitTorrent listen port (0: any free port)")
	fs.StringVar(&cfg.ListenHost, "listen-host", "", "BitTorrent listen address (default: every address)")
	fs.IntVar(&cfg.MaxAttempts, "attempts", 5, "give up after this many failed attempts (0: never)")
	fs.BoolVar(&cfg.Verbose, "v", false, "debug logs")
	fs.StringVar(&cfg.Trust, "trust", "", "trust settings file: policy and keys for signed OSes (as /init: the initramfs's)")
	fs.StringVar(&cfg.CPUProfile, "cpuprofile", "", "write a Go CPU profile of the whole run to this file (tuning)")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(out, "unexpected arguments: %q\n", fs.Args())
		return nil, errors.New("unexpected arguments")
	}
	if cfg.ListenPort < 0 || cfg.ListenPort > 65535 {
		fmt.Fprintln(out, "--listen-port must be 0..65535")
		return nil, errors.New("bad port")
	}
	return cfg, nil
}

// cmdlineArgs reads key=value pairs from a kernel command line.
func cmdlineArgs(s string) map[string]string {
	m := map[string]string{}
	for _, f := range strings.Fields(s) {
		if k, v, ok := strings.Cut(f, "="); ok {
			m[k] = v
		}
	}
	return m
}

// fillDefaults completes the server and MAC from /proc/cmdline and the
// interface.
func (c *Config) fillDefaults(cmdline string) error {
	args := cmdlineArgs(cmdline)
	if c.Server == "" {
		c.Server = args[bootapi.ArgServer]
	}
	if c.MAC == "" {
		c.MAC = args[bootapi.ArgMAC]
	}
	if c.MAC == "" && c.Iface != "" {
		if ifc, err := net.InterfaceByName(c.Iface); err == nil {
			c.MAC = ifc.HardwareAddr.String()
		}
	}
	if c.Server == "" {
		return fmt.Errorf("no server: pass --server http://IP:PORT or boot with %s=… on the kernel command line", bootapi.ArgServer)
	}
	if c.MAC == "" {
		return errors.New("no MAC: pass --mac or --iface")
	}
	hw, err := net.ParseMAC(c.MAC)
	if err != nil {
		return fmt.Errorf("mac %q: %w", c.MAC, err)
	}
	c.MAC = hw.String()
	return nil
}

// Run runs the client in process mode (tests, the swarm benchmark): the
// console is console, the result line goes to result.
func Run(ctx context.Context, cfg *Config, log *slog.Logger, console, result io.Writer) error {
	// Flags first; then boottorrent.server= and boottorrent.mac= from
	// the kernel command line (a machine booted by iPXE with them).
	cmdline, _ := os.ReadFile("/proc/cmdline")
	if err := cfg.fillDefaults(string(cmdline)); err != nil {
		return err
	}
	if cfg.DataDir == "" {
		d, err := os.MkdirTemp("", "boottorrent-client-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(d)
		cfg.DataDir = d
	}
	a, err := newAPI(cfg.Server, cfg.MAC)
	if err != nil {
		return err
	}
	log = log.With("mac", cfg.MAC)
	e := &realEnv{cfg: cfg, api: a, log: log, console: console}
	if !cfg.Init {
		e.in = stdinKeys(ctx)
	}
	tr, err := newClientTrust(cfg, e)
	if err != nil {
		return err
	}
	m := &machine{env: e, cfg: cfg, log: log, console: console, result: result, now: time.Now, sleep: sleepCtx, trust: tr}
	return m.run(ctx)
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// realEnv is the client's real world.
type realEnv struct {
	cfg     *Config
	api     *api
	log     *slog.Logger
	console io.Writer
	in      <-chan []byte // console input, nil when there is none
	network func(ctx context.Context) error
	keys    *keyReaders // init mode: the consoles' key readers
	drivers []string    // init mode: modules loaded (nil until tried)
}

func (e *realEnv) Network(ctx context.Context) error {
	if e.network != nil {
		return e.network(ctx)
	}
	if e.cfg.Iface == "" || e.cfg.NoDHCP {
		return nil
	}
	return dhcpLease(ctx, e.cfg.Iface, e.log)
}

func (e *realEnv) Boot(ctx context.Context) (*bootapi.Boot, error) { return e.api.Boot(ctx) }

func (e *realEnv) Report(ctx context.Context, r *bootapi.Report) error {
	if r.ListenPort == 0 {
		r.ListenPort = e.cfg.ListenPort
	}
	return e.api.Report(ctx, r)
}

func (e *realEnv) Download(ctx context.Context, b *bootapi.Boot, o *bootapi.OS) (downloader, error) {
	if e.cfg.Init {
		if err := checkRAM(o); err != nil {
			return nil, err
		}
	}
	dataDir := filepath.Join(e.cfg.DataDir, "os")
	// A new attempt starts clean: a half-written file from an attempt
	// that failed is not trusted (pieces are verified, but the space is
	// needed in RAM).
	os.RemoveAll(dataDir)
	if e.cfg.HTTP {
		return startHTTP(ctx, e.api, o, dataDir)
	}
	raw, err := e.api.Torrent(ctx, o)
	if err != nil {
		return nil, fmt.Errorf("fetch torrent: %w", err)
	}
	mi, err := metainfo.Load(strings.NewReader(string(raw)))
	if err != nil {
		return nil, fmt.Errorf("torrent of %s: %w", o.Name, err)
	}
	if o.InfoHash != "" && !strings.EqualFold(mi.HashInfoBytes().HexString(), o.InfoHash) {
		return nil, fmt.Errorf("torrent of %s: info hash %s, the boot API said %s", o.Name, mi.HashInfoBytes().HexString(), o.InfoHash)
	}
	var memLimit int64
	if e.cfg.Init {
		memLimit = memAvailable() - 64<<20
	}
	d, err := startTorrent(ctx, mi, dlOptions{
		DataDir:      dataDir,
		ListenPort:   e.cfg.ListenPort,
		ListenHost:   e.cfg.ListenHost,
		ServerHost:   e.api.host(),
		Peers:        func(ctx context.Context) (*bootapi.Peers, error) { return e.api.Peers(ctx, o.Name) },
		Logger:       e.log,
		MemLimit:     memLimit,
		TrackerAfter: e.cfg.TrackerAfter,
		Combine:      handoverFor(o),
	})
	if err != nil {
		return nil, err
	}
	if e.cfg.ListenPort == 0 {
		e.cfg.ListenPort = d.cl.LocalPort()
	}
	return d, nil
}

// memAvailable is MemAvailable from /proc/meminfo, in bytes (0 if unknown).
func memAvailable() int64 {
	b, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		return 0
	}
	for _, l := range strings.Split(string(b), "\n") {
		var kb int64
		if _, err := fmt.Sscanf(l, "MemAvailable: %d kB", &kb); err == nil {
			return kb << 10
		}
	}
	return 0
}
